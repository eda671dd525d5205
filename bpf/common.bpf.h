/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/* BPF-only helpers shared by every scantrace object: the ring buffer, the
 * loss counters and the owner of the current task. */
#ifndef SCANTRACE_COMMON_BPF_H
#define SCANTRACE_COMMON_BPF_H

#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_endian.h>

#include <scantrace/events.h>

/* Size set by userspace before load (--ringbuf-size). */
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 4 << 20);
} st_events SEC(".maps");

/* Per-CPU so the hot path never contends on a shared cache line. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, ST_CNT_MAX);
	__type(key, __u32);
	__type(value, __u64);
} st_counters SEC(".maps");

static __always_inline void st_count(__u32 idx)
{
	__u64 *v = bpf_map_lookup_elem(&st_counters, &idx);

	if (v)
		*v += 1;
}

/* Reserve a ring-buffer record; a failure is counted, never silent. */
static __always_inline void *st_reserve(__u32 size, __u16 type, __u32 flags, __u64 now)
{
	struct st_hdr *h = bpf_ringbuf_reserve(&st_events, size, 0);

	if (!h) {
		st_count(ST_CNT_RB_LOST);
		return NULL;
	}
	h->type = type;
	h->size = size;
	h->flags = flags;
	h->ts_ns = now;
	return h;
}

/* Only valid in process context (listen(), connect()): in softirq the current
 * task is whoever happened to be on the CPU. */
static __always_inline void st_owner_from_current(struct st_owner *o)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();

	o->tgid = pid_tgid >> 32;
	o->pid = (__u32)pid_tgid;
	o->uid = (__u32)bpf_get_current_uid_gid();
	o->_pad = 0;
	o->cgroup_id = bpf_get_current_cgroup_id();
	bpf_get_current_comm(o->comm, sizeof(o->comm));
}

#endif /* SCANTRACE_COMMON_BPF_H */
