/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * CO-RE reads of struct sock / tcp_sock; kernel struct drift is handled here
 * and nowhere else.
 *
 * A template: include it after defining
 *   ST_SFX       a suffix for the function names (e.g. btf, probe), and
 *   ST_R(expr)   how to read a kernel field: ST_READ_DIRECT for BTF-typed
 *                programs (tp_btf, fentry: plain loads the verifier turns
 *                into faulting-safe PROBE_MEM loads, no helper call), or
 *                ST_READ_PROBE for untyped ones (raw_tp, kprobe).
 *   ST_RCOPY(dst, field, n)  likewise for byte arrays.
 *   ST_TCP_SOCK(sk)  a struct tcp_sock pointer: bpf_skc_to_tcp_sock() where
 *                direct loads are type-checked, a plain cast otherwise.
 * vmlinux.h marks every struct preserve_access_index, so both forms get CO-RE
 * relocations.
 */
#include <bpf/bpf_core_read.h>
#include <scantrace/events.h>

#ifndef SCANTRACE_SOCK_BPF_H_ONCE
#define SCANTRACE_SOCK_BPF_H_ONCE

#define ST_READ_DIRECT(e) (e)
/* typeof of a cast drops the field's qualifiers (C11 6.5.4). */
#define ST_READ_PROBE(e)                                       \
	({                                                     \
		typeof((typeof(e))0) __st_v;                   \
		bpf_core_read(&__st_v, sizeof(__st_v), &(e));  \
		__st_v;                                        \
	})
#define ST_RCOPY_DIRECT(dst, field, n) __builtin_memcpy(dst, &(field), n)
#define ST_RCOPY_PROBE(dst, field, n) bpf_core_read(dst, n, &(field))
#define ST_TCP_SOCK_DIRECT(sk) bpf_skc_to_tcp_sock((void *)(sk))
#define ST_TCP_SOCK_PROBE(sk) ((struct tcp_sock *)(sk))

#define ST_CAT_(a, b) a##_##b
#define ST_CAT(a, b) ST_CAT_(a, b)
#define ST_NAME(x) ST_CAT(x, ST_SFX)

struct st_tcp_info {
	__u64 bytes_acked;
	__u64 bytes_received;
	__u32 total_retrans;
	__u32 srtt_us;
};
#endif

/* Local port. At a transition to CLOSE the kernel has already released the
 * port (inet_put_port zeroes inet_num) but inet_sport keeps it; before
 * connect() picks an ephemeral port (CLOSE->SYN_SENT) both are 0. */
static __always_inline __u16 ST_NAME(st_sock_lport)(const struct sock *sk)
{
	__u16 num = ST_R(sk->__sk_common.skc_num);
	struct tcp_sock *tp;

	if (num)
		return num;
	tp = ST_TCP_SOCK(sk);
	return tp ? bpf_ntohs(ST_R(tp->inet_conn.icsk_inet.inet_sport)) : 0;
}

static __always_inline __u32 ST_NAME(st_sock_netns)(const struct sock *sk)
{
	struct net *net = ST_R(sk->__sk_common.skc_net.net);

	return ST_R(net->ns.inum);
}

/* Remember the cookie -> inode pair of the socket's namespace (see
 * st_netns_cookie). The net_cookie field is a u64 since Linux 5.12. */
static __always_inline void ST_NAME(st_note_netns_cookie)(const struct sock *sk)
{
	struct net *net = ST_R(sk->__sk_common.skc_net.net);
	__u64 cookie = ST_R(net->net_cookie);
	__u32 inum = ST_R(net->ns.inum);

	bpf_map_update_elem(&st_netns_cookie, &cookie, &inum, BPF_ANY);
}

/* Local/remote addresses and ports as the socket holds them. */
static __always_inline void ST_NAME(st_sock_tuple)(const struct sock *sk, __u16 family, struct st_tuple *t)
{
	t->family = family;
	t->_pad = 0;
	t->lport = ST_NAME(st_sock_lport)(sk);
	t->rport = bpf_ntohs(ST_R(sk->__sk_common.skc_dport));
	if (family == ST_AF_INET) {
		__u32 l = ST_R(sk->__sk_common.skc_rcv_saddr);
		__u32 r = ST_R(sk->__sk_common.skc_daddr);

		__builtin_memset(t->laddr, 0, sizeof(t->laddr));
		__builtin_memset(t->raddr, 0, sizeof(t->raddr));
		__builtin_memcpy(t->laddr, &l, 4);
		__builtin_memcpy(t->raddr, &r, 4);
	} else {
		ST_RCOPY(t->laddr, sk->__sk_common.skc_v6_rcv_saddr, 16);
		ST_RCOPY(t->raddr, sk->__sk_common.skc_v6_daddr, 16);
	}
}

static __always_inline void ST_NAME(st_tcp_info)(const struct sock *sk, struct st_tcp_info *ti)
{
	const struct tcp_sock *tp = ST_TCP_SOCK(sk);

	if (!tp) {
		__builtin_memset(ti, 0, sizeof(*ti));
		return;
	}
	ti->bytes_acked = ST_R(tp->bytes_acked);
	ti->bytes_received = ST_R(tp->bytes_received);
	ti->total_retrans = ST_R(tp->total_retrans);
	/* srtt_us holds 8 * the smoothed RTT (tcp_rtt_estimator). */
	ti->srtt_us = ST_R(tp->srtt_us) >> 3;
}
