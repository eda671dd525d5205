/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/* CO-RE reads of struct sock / tcp_sock. Kernel struct drift is handled here
 * and nowhere else. */
#ifndef SCANTRACE_SOCK_BPF_H
#define SCANTRACE_SOCK_BPF_H

#include <bpf/bpf_core_read.h>
#include <scantrace/events.h>

/* Local port. At a transition to CLOSE the kernel has already released the
 * port (inet_put_port zeroes inet_num) but inet_sport keeps it; before
 * connect() picks an ephemeral port (CLOSE->SYN_SENT) both are 0. */
static __always_inline __u16 st_sock_lport(const struct sock *sk)
{
	__u16 num = BPF_CORE_READ(sk, __sk_common.skc_num);

	if (num)
		return num;
	return bpf_ntohs(BPF_CORE_READ((const struct inet_sock *)sk, inet_sport));
}

static __always_inline __u32 st_sock_netns(const struct sock *sk)
{
	return BPF_CORE_READ(sk, __sk_common.skc_net.net, ns.inum);
}

/* Local/remote addresses and ports as the socket holds them. */
static __always_inline void st_sock_tuple(const struct sock *sk, __u16 family, struct st_tuple *t)
{
	t->family = family;
	t->_pad = 0;
	t->lport = st_sock_lport(sk);
	t->rport = bpf_ntohs(BPF_CORE_READ(sk, __sk_common.skc_dport));
	if (family == ST_AF_INET) {
		__u32 l = BPF_CORE_READ(sk, __sk_common.skc_rcv_saddr);
		__u32 r = BPF_CORE_READ(sk, __sk_common.skc_daddr);

		__builtin_memset(t->laddr, 0, sizeof(t->laddr));
		__builtin_memset(t->raddr, 0, sizeof(t->raddr));
		__builtin_memcpy(t->laddr, &l, 4);
		__builtin_memcpy(t->raddr, &r, 4);
	} else {
		BPF_CORE_READ_INTO(&t->laddr, sk, __sk_common.skc_v6_rcv_saddr.in6_u.u6_addr8);
		BPF_CORE_READ_INTO(&t->raddr, sk, __sk_common.skc_v6_daddr.in6_u.u6_addr8);
	}
}

struct st_tcp_info {
	__u64 bytes_acked;
	__u64 bytes_received;
	__u32 total_retrans;
	__u32 srtt_us;
};

static __always_inline void st_tcp_info(const struct sock *sk, struct st_tcp_info *ti)
{
	const struct tcp_sock *tp = (const struct tcp_sock *)sk;

	ti->bytes_acked = BPF_CORE_READ(tp, bytes_acked);
	ti->bytes_received = BPF_CORE_READ(tp, bytes_received);
	ti->total_retrans = BPF_CORE_READ(tp, total_retrans);
	/* srtt_us holds 8 * the smoothed RTT (tcp_rtt_estimator). */
	ti->srtt_us = BPF_CORE_READ(tp, srtt_us) >> 3;
}

#endif /* SCANTRACE_SOCK_BPF_H */
