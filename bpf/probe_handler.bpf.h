/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * The probe handlers of scan.bpf.c, a template instantiated once per read
 * mode (see sock.bpf.h): direct loads for BTF-typed programs (tp_btf,
 * fentry), probe reads for kprobe and raw_tp. The kernel structs (skb, sock,
 * net_device) are read field by field in the chosen mode; the packet bytes
 * always take one bpf_probe_read_kernel() (st_parse_headers).
 */
#include "sock.bpf.h"

/* Parse the IP and transport headers of a received skb. */
static __always_inline bool ST_NAME(st_parse_skb)(const struct sk_buff *skb, struct st_pkt *pk)
{
	unsigned char *head = ST_R(skb->head);
	__u16 nh = ST_R(skb->network_header);
	__u16 th = ST_R(skb->transport_header);

	return st_parse_headers(head, nh, th, pk);
}

/* The namespace a received packet is in. skb->dev is not kept on every
 * path (TCP reuses the field once a socket is found), so prefer a socket. */
static __always_inline __u32 ST_NAME(st_skb_netns)(const struct sk_buff *skb, const struct sock *rx_sk)
{
	struct net_device *dev;
	struct sock *sk;
	struct net *net;

	if (rx_sk)
		return ST_NAME(st_sock_netns)(rx_sk);
	sk = ST_R(skb->sk);
	if (sk)
		return ST_NAME(st_sock_netns)(sk);
	dev = ST_R(skb->dev);
	if (dev) {
		net = ST_R(dev->nd_net.net);
		return ST_R(net->ns.inum);
	}
	/* The input route still names the device (low bit: noref flag); a
	 * pointer made from an integer takes probe reads in either mode. */
	{
		unsigned long refdst = ST_R(skb->_skb_refdst);
		struct dst_entry *dst = (struct dst_entry *)(refdst & ~1UL);

		if (dst)
			dev = BPF_CORE_READ(dst, dev);
	}
	return dev ? BPF_CORE_READ(dev, nd_net.net, ns.inum) : 0;
}

/* The TCP packet a reset or conn_request hook is about to act on; false
 * with --attach-only, for no skb, or for anything else. */
static __always_inline bool ST_NAME(st_tcp_pkt)(const struct sk_buff *skb, struct st_pkt *pk)
{
	return !cfg_attach_only && skb && ST_NAME(st_parse_skb)(skb, pk) && pk->proto == IPPROTO_TCP;
}

/* The kernel is about to answer skb with a RST. sk is NULL when no socket
 * matched (a closed port), the listener when a listener resets (ACK or
 * Maimon probe to an open port). */
static __always_inline int ST_NAME(st_on_reset)(const struct sock *sk, const struct sk_buff *skb)
{
	struct st_probe p;
	struct st_pkt pk;
	__u8 outcome;
	__u32 netns;

	if (!ST_NAME(st_tcp_pkt)(skb, &pk))
		return 0;
	/* Never an answer to a RST; fentry/kprobe also see those calls. */
	if (pk.flags & ST_TH_RST)
		return 0;
	if (!sk) {
		outcome = ST_OUT_CLOSED;
		netns = ST_NAME(st_skb_netns)(skb, NULL);
	} else {
		if (ST_R(sk->__sk_common.skc_state) != TCP_LISTEN)
			return 0;
		outcome = ST_OUT_RESET;
		netns = ST_NAME(st_sock_netns)(sk);
	}
	st_probe_from_pkt(&pk, netns, st_technique(pk.flags, pk.doff), outcome, true, &p);
	st_record_probe(&p, bpf_ktime_get_boot_ns());
	return 0;
}

/* A SYN to a listener (fentry/kprobe on tcp_v{4,6}_conn_request): sees SYN
 * cookies too, and the packet, so the technique is exact. */
static __always_inline int ST_NAME(st_on_conn_request)(const struct sock *sk, const struct sk_buff *skb)
{
	struct st_probe p;
	struct st_pkt pk;
	__u32 netns;
	__u8 tech;

	if (!ST_NAME(st_tcp_pkt)(skb, &pk))
		return 0;
	netns = ST_NAME(st_sock_netns)(sk);
	st_count_syn(netns, pk.dport, sk);
	/* A SYN to an open port from an OS stack (a client, or a connect()
	 * scan) only adds to a source already probing: every legitimate client
	 * connects this way. A raw scanner's SYN may start one. */
	tech = st_technique(pk.flags, pk.doff);
	st_probe_from_pkt(&pk, netns, tech, ST_OUT_OPEN, tech == ST_TECH_SYN, &p);
	st_record_probe(&p, bpf_ktime_get_boot_ns());
	return 0;
}

/* Silent drops: FIN/NULL/Xmas to open ports, UDP to closed ports. */
static __always_inline int ST_NAME(st_on_drop)(const struct sk_buff *skb, int reason, const struct sock *rx_sk)
{
	struct st_probe p;
	struct st_pkt pk;
	bool tcp_flags;

	if (cfg_attach_only)
		return 0;
	tcp_flags = st_drop_tcp_flags(reason);
	if (!tcp_flags && !st_drop_no_socket(reason))
		return 0;
	if (!ST_NAME(st_parse_skb)(skb, &pk))
		return 0;
	if (tcp_flags && pk.proto == IPPROTO_TCP) {
		/* A listener dropped a segment without SYN/ACK/RST. */
		if (pk.flags & (ST_TH_SYN | ST_TH_ACK | ST_TH_RST))
			return 0;
		st_probe_from_pkt(&pk, ST_NAME(st_skb_netns)(skb, rx_sk), st_technique(pk.flags, pk.doff),
				  ST_OUT_DROPPED, true, &p);
	} else if (!tcp_flags && pk.proto == IPPROTO_UDP) {
		st_probe_from_pkt(&pk, ST_NAME(st_skb_netns)(skb, rx_sk), ST_TECH_UDP, ST_OUT_CLOSED, true, &p);
	} else {
		/* TCP NO_SOCKET is counted by the reset hook. */
		return 0;
	}
	st_record_probe(&p, bpf_ktime_get_boot_ns());
	return 0;
}
