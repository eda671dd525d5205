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

/* Set by userspace before load (--attach-only, a benchmark aid): every
 * program returns at once, so what remains is the cost of the hooks alone.
 * Being read-only data, the verifier prunes the check away when false. */
const volatile bool cfg_attach_only = false;

/* Set by userspace before load: pending ring-buffer bytes at which a routine
 * record wakes the reader (a quarter of the buffer). */
const volatile __u64 cfg_wakeup_bytes = 1 << 20;

/* Routine records (state, close, listen) wake nobody: userspace drains on a
 * short timer, which turns a wakeup per record under load into a few per
 * second. Only a buffer filling up past cfg_wakeup_bytes wakes it early. */
static __always_inline void st_submit_lazy(void *rec)
{
	__u64 flags = BPF_RB_NO_WAKEUP;

	if (bpf_ringbuf_query(&st_events, BPF_RB_AVAIL_DATA) >= cfg_wakeup_bytes)
		flags = BPF_RB_FORCE_WAKEUP;
	bpf_ringbuf_submit(rec, flags);
}

/* Alerts wake the reader at once, even with routine records queued before
 * them (the default policy would only wake it for the first record). */
static __always_inline void st_submit_now(void *rec)
{
	bpf_ringbuf_submit(rec, BPF_RB_FORCE_WAKEUP);
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
