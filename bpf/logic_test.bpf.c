// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * Test harness, never loaded by scantrace itself: programs that run the
 * kernel-side decision logic of scan.bpf.h on the real verifier through
 * BPF_PROG_TEST_RUN (tests/unit/test_bpf_logic.cpp). Each takes its inputs,
 * `now` included, from the user-supplied context; for SEC("syscall") the
 * kernel copies the context back after the run.
 */
#include "vmlinux.h"
#include "common.bpf.h"
#include "scan.bpf.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* ---- st_technique ------------------------------------------------------ */

struct st_t_technique_ctx {
	__u8 flags;	/* TCP flags byte */
	__u8 doff;	/* header length in 32-bit words */
	__u8 technique; /* out */
	__u8 _pad;
};

SEC("syscall")
int st_test_technique(struct st_t_technique_ctx *ctx)
{
	ctx->technique = st_technique(ctx->flags, ctx->doff);
	return 0;
}

/* ---- st_portset_insert ------------------------------------------------- */

#define ST_T_BATCH 4096

/* Inputs and per-port results of one batch; userspace fills and reads them
 * through the skeleton's mmap'ed .bss. */
__u16 st_t_ports[ST_T_BATCH];
__u8 st_t_new[ST_T_BATCH];

/* The port set under test. Userspace zeroes it between scenarios. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct st_src_val);
} st_t_val SEC(".maps");

struct st_t_portset_ctx {
	__u32 n;	/* ports in st_t_ports[] to insert, in order */
	__u32 inserted; /* out: how many inserts returned true */
	__s32 err;	/* out: 0, or why the batch did not run */
	__u32 _pad;
};

static long st_t_insert_one(__u64 i, void *data)
{
	struct st_t_portset_ctx *out = data;
	struct st_src_val *v;
	__u32 zero = 0;
	bool is_new;

	if (i >= ST_T_BATCH)
		return 1;
	v = bpf_map_lookup_elem(&st_t_val, &zero);
	if (!v)
		return 1;
	is_new = st_portset_insert(v, st_t_ports[i]);
	st_t_new[i] = is_new;
	out->inserted += is_new;
	return 0;
}

SEC("syscall")
int st_test_portset(struct st_t_portset_ctx *ctx)
{
	/* bpf_loop passes its callback a pointer to the stack only. */
	struct st_t_portset_ctx res = {};
	__u32 n = ctx->n;
	long ran;

	if (n > ST_T_BATCH) {
		ctx->err = -7; /* E2BIG */
		return 0;
	}
	ran = bpf_loop(n, st_t_insert_one, &res, 0);
	ctx->inserted = res.inserted;
	ctx->err = ran == n ? 0 : -5; /* EIO: a callback stopped early */
	return 0;
}

/* ---- st_record_probe --------------------------------------------------- */

/* struct st_probe with explicit layout, plus the clock. */
struct st_t_probe_ctx {
	__u64 now;
	__u32 netns;
	__u16 family;
	__u16 dport;
	__u8 saddr[16];
	__u8 daddr[16];
	__u8 technique;
	__u8 outcome;
	__u8 create;
	__u8 _pad[5];
};

/*
 * Not SEC("syscall"): the kernel only accepts sleepable syscall programs
 * ("Syscall programs can only be sleepable"), and sleepable programs may not
 * use LPM tries, which st_record_probe does (st_ignore). A raw_tp program is
 * non-sleepable like the softirq hooks that call st_record_probe in
 * scantrace, and BPF_PROG_TEST_RUN runs it without attaching, with up to 96
 * bytes of read-only context.
 */
SEC("raw_tp")
int st_test_record_probe(struct st_t_probe_ctx *ctx)
{
	struct st_probe p = {};

	p.netns = ctx->netns;
	p.family = ctx->family;
	p.dport = ctx->dport;
	__builtin_memcpy(p.saddr, ctx->saddr, sizeof(p.saddr));
	__builtin_memcpy(p.daddr, ctx->daddr, sizeof(p.daddr));
	p.technique = ctx->technique;
	p.outcome = ctx->outcome;
	p.create = ctx->create;
	st_record_probe(&p, ctx->now);
	return 0;
}
