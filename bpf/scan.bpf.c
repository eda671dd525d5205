// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * Probe hooks for scan and SYN-flood detection. Each concern has a primary
 * program and fallbacks in this one object; the loader probes the kernel and
 * autoloads one per concern (see src/loader/loader.cpp):
 *
 *   closed TCP ports  tp_btf/tcp_send_reset (fires without a socket since the
 *                     tracepoint gained its reason argument), else fentry or
 *                     kprobe on tcp_v4_send_reset / tcp_v6_send_reset
 *   open TCP ports    fentry or kprobe on tcp_v4_conn_request /
 *                     tcp_v6_conn_request, else a sock_ops program on the
 *                     cgroup v2 root (request sockets, BPF_SOCK_OPS_TIMEOUT_INIT)
 *   FIN/NULL/Xmas to open ports, UDP to closed ports
 *                     tp_btf/kfree_skb (drop reasons TCP_FLAGS, NO_SOCKET),
 *                     else raw_tp/kfree_skb
 *   SYN-ACK retransmits tp_btf/tcp_retransmit_synack
 *
 * Every hook here runs in softirq context on the victim side, where the
 * current task is the prober's or unrelated: nothing is taken from it. The
 * namespace comes from the packet's device or the socket.
 */
#include "vmlinux.h"
#include "common.bpf.h"
#include "scan.bpf.h"

/* kprobe variants share these helpers: probe reads throughout. */
#define ST_SFX probe
#define ST_R ST_READ_PROBE
#define ST_RCOPY ST_RCOPY_PROBE
#define ST_TCP_SOCK ST_TCP_SOCK_PROBE
#include "sock.bpf.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* What the incoming segment says. */
struct st_pkt {
	__u16 family;
	__u8 proto;
	__u8 flags; /* TCP flags byte */
	__u8 doff;  /* TCP header length in 32-bit words */
	__u16 sport, dport;
	__u8 saddr[16], daddr[16];
};

/* Parse the IP and transport headers of a received skb. */
static __always_inline bool st_parse_skb(const struct sk_buff *skb, struct st_pkt *pk)
{
	unsigned char *head = BPF_CORE_READ(skb, head);
	__u16 nh = BPF_CORE_READ(skb, network_header);
	__u16 th = BPF_CORE_READ(skb, transport_header);
	__u8 ver;

	if (!head || nh == (__u16)~0U || th == (__u16)~0U || th <= nh)
		return false;
	if (bpf_probe_read_kernel(&ver, 1, head + nh))
		return false;
	ver >>= 4;
	__builtin_memset(pk->saddr, 0, 16);
	__builtin_memset(pk->daddr, 0, 16);
	if (ver == 4) {
		struct iphdr ip;

		if (bpf_probe_read_kernel(&ip, sizeof(ip), head + nh))
			return false;
		pk->family = ST_AF_INET;
		pk->proto = ip.protocol;
		__builtin_memcpy(pk->saddr, &ip.saddr, 4);
		__builtin_memcpy(pk->daddr, &ip.daddr, 4);
	} else if (ver == 6) {
		struct ipv6hdr ip6;

		if (bpf_probe_read_kernel(&ip6, sizeof(ip6), head + nh))
			return false;
		pk->family = ST_AF_INET6;
		pk->proto = ip6.nexthdr; /* extension headers: see proto check below */
		__builtin_memcpy(pk->saddr, &ip6.saddr, 16);
		__builtin_memcpy(pk->daddr, &ip6.daddr, 16);
	} else {
		return false;
	}
	if (pk->proto == IPPROTO_TCP) {
		__u8 hdr[14];

		if (bpf_probe_read_kernel(hdr, sizeof(hdr), head + th))
			return false;
		pk->sport = (hdr[0] << 8) | hdr[1];
		pk->dport = (hdr[2] << 8) | hdr[3];
		pk->doff = hdr[12] >> 4;
		pk->flags = hdr[13];
	} else if (pk->proto == IPPROTO_UDP) {
		__u8 hdr[4];

		if (bpf_probe_read_kernel(hdr, sizeof(hdr), head + th))
			return false;
		pk->sport = (hdr[0] << 8) | hdr[1];
		pk->dport = (hdr[2] << 8) | hdr[3];
		pk->doff = 0;
		pk->flags = 0;
	} else {
		return false;
	}
	return true;
}

/* The namespace a received packet is in. skb->dev is not kept on every
 * path (TCP reuses the field once a socket is found), so prefer a socket. */
static __always_inline __u32 st_skb_netns(const struct sk_buff *skb, const struct sock *rx_sk)
{
	struct net_device *dev;
	struct sock *sk;

	if (rx_sk)
		return st_sock_netns_probe(rx_sk);
	sk = BPF_CORE_READ(skb, sk);
	if (sk)
		return st_sock_netns_probe(sk);
	dev = BPF_CORE_READ(skb, dev);
	if (!dev) {
		/* The input route still names the device (low bit: noref flag). */
		unsigned long refdst = BPF_CORE_READ(skb, _skb_refdst);
		struct dst_entry *dst = (struct dst_entry *)(refdst & ~1UL);

		if (dst)
			dev = BPF_CORE_READ(dst, dev);
	}
	return dev ? BPF_CORE_READ(dev, nd_net.net, ns.inum) : 0;
}

static __always_inline void st_probe_from_pkt(const struct st_pkt *pk, __u32 netns, __u8 technique, __u8 outcome,
					      bool create, struct st_probe *p)
{
	p->netns = netns;
	p->family = pk->family;
	p->dport = pk->dport;
	__builtin_memcpy(p->saddr, pk->saddr, 16);
	__builtin_memcpy(p->daddr, pk->daddr, 16);
	p->technique = technique;
	p->outcome = outcome;
	p->create = create;
}

/* ---- closed ports and listener resets --------------------------------- */

/* The kernel is about to answer skb with a RST. sk is NULL when no socket
 * matched (a closed port), the listener when a listener resets (ACK or
 * Maimon probe to an open port). */
static __always_inline int st_on_reset(const struct sock *sk, const struct sk_buff *skb)
{
	struct st_probe p;
	struct st_pkt pk;
	__u8 outcome;
	__u32 netns;

	if (cfg_attach_only || !skb || !st_parse_skb(skb, &pk) || pk.proto != IPPROTO_TCP)
		return 0;
	/* Never an answer to a RST; fentry/kprobe also see those calls. */
	if (pk.flags & ST_TH_RST)
		return 0;
	if (!sk) {
		outcome = ST_OUT_CLOSED;
		netns = st_skb_netns(skb, NULL);
	} else {
		if (BPF_CORE_READ(sk, __sk_common.skc_state) != TCP_LISTEN)
			return 0;
		outcome = ST_OUT_RESET;
		netns = st_sock_netns_probe(sk);
	}
	st_probe_from_pkt(&pk, netns, st_technique(pk.flags, pk.doff), outcome, true, &p);
	st_record_probe(&p, bpf_ktime_get_boot_ns());
	return 0;
}

SEC("tp_btf/tcp_send_reset")
int BPF_PROG(st_rst_btf, const struct sock *sk, const struct sk_buff *skb)
{
	return st_on_reset(sk, skb);
}

SEC("fentry/tcp_v4_send_reset")
int BPF_PROG(st_rst4_fentry, const struct sock *sk, struct sk_buff *skb)
{
	return st_on_reset(sk, skb);
}

SEC("fentry/tcp_v6_send_reset")
int BPF_PROG(st_rst6_fentry, const struct sock *sk, struct sk_buff *skb)
{
	return st_on_reset(sk, skb);
}

SEC("kprobe/tcp_v4_send_reset")
int BPF_KPROBE(st_rst4_kprobe, const struct sock *sk, struct sk_buff *skb)
{
	return st_on_reset(sk, skb);
}

SEC("kprobe/tcp_v6_send_reset")
int BPF_KPROBE(st_rst6_kprobe, const struct sock *sk, struct sk_buff *skb)
{
	return st_on_reset(sk, skb);
}

/* ---- SYNs reaching listeners (open ports) ------------------------------ */

/* Half-open connections of a listener: its request queue length. */
static __always_inline __u32 st_listener_half_open(const struct sock *listener)
{
	const struct inet_connection_sock *icsk = (const struct inet_connection_sock *)listener;

	return BPF_CORE_READ(icsk, icsk_accept_queue.qlen.counter);
}

static __always_inline void st_count_syn(__u32 netns, __u16 port, const struct sock *listener)
{
	struct st_listener_key k = { .netns = netns, .port = port, .proto = ST_PROTO_TCP };
	struct st_syn_val *v = bpf_map_lookup_elem(&st_syn, &k);

	if (v) {
		__sync_fetch_and_add(&v->syns, 1);
		if (listener)
			v->half_open = st_listener_half_open(listener);
		return;
	}
	struct st_syn_val nv = { .syns = 1 };

	if (listener)
		nv.half_open = st_listener_half_open(listener);

	if (bpf_map_update_elem(&st_syn, &k, &nv, BPF_NOEXIST) && !bpf_map_lookup_elem(&st_syn, &k))
		st_count(ST_CNT_SYN_MAP_FULL);
}

/* A SYN to a listener (fentry/kprobe on tcp_v{4,6}_conn_request): sees SYN
 * cookies too, and the packet, so the technique is exact. */
static __always_inline int st_on_conn_request(const struct sock *sk, const struct sk_buff *skb)
{
	struct st_probe p;
	struct st_pkt pk;
	__u32 netns;
	__u8 tech;

	if (cfg_attach_only || !skb || !st_parse_skb(skb, &pk) || pk.proto != IPPROTO_TCP)
		return 0;
	netns = st_sock_netns_probe(sk);
	st_count_syn(netns, pk.dport, sk);
	/* A SYN to an open port from an OS stack (a client, or a connect()
	 * scan) only adds to a source already probing: every legitimate client
	 * connects this way. A raw scanner's SYN may start one. */
	tech = st_technique(pk.flags, pk.doff);
	st_probe_from_pkt(&pk, netns, tech, ST_OUT_OPEN, tech == ST_TECH_SYN, &p);
	st_record_probe(&p, bpf_ktime_get_boot_ns());
	return 0;
}

SEC("fentry/tcp_v4_conn_request")
int BPF_PROG(st_syn4_fentry, struct sock *sk, struct sk_buff *skb)
{
	return st_on_conn_request(sk, skb);
}

SEC("fentry/tcp_v6_conn_request")
int BPF_PROG(st_syn6_fentry, struct sock *sk, struct sk_buff *skb)
{
	return st_on_conn_request(sk, skb);
}

SEC("kprobe/tcp_v4_conn_request")
int BPF_KPROBE(st_syn4_kprobe, struct sock *sk, struct sk_buff *skb)
{
	return st_on_conn_request(sk, skb);
}

SEC("kprobe/tcp_v6_conn_request")
int BPF_KPROBE(st_syn6_kprobe, struct sock *sk, struct sk_buff *skb)
{
	return st_on_conn_request(sk, skb);
}

/* Fallback where neither fentry nor kprobes work: the request socket that a
 * SYN to a listener creates passes BPF_SOCK_OPS_TIMEOUT_INIT. Attached with
 * BPF_F_ALLOW_MULTI semantics to the cgroup v2 root; it returns 1 and leaves
 * reply alone, so other sock_ops programs and the kernel's defaults are
 * untouched.
 *
 * For request sockets skops->sk is NULL (only full sockets are exposed):
 * addresses and ports come from the context, the namespace from its cookie.
 * The SYN's options are out of reach here, so an OS stack's SYN cannot be
 * told from a raw scanner's: these only add to sources already probing.
 * SYN cookies bypass request sockets: floods are measured with the kernel's
 * own counters in userspace. */
SEC("sockops")
int st_sockops(struct bpf_sock_ops *skops)
{
	struct st_probe p = {};
	__u64 cookie;
	__u32 *inum;

	/* TIMEOUT_INIT also runs for connect()ing (full) sockets: only request
	 * sockets, never full, are SYNs that reached a listener. */
	if (cfg_attach_only || skops->op != BPF_SOCK_OPS_TIMEOUT_INIT || skops->is_fullsock)
		return 1;
	cookie = bpf_get_netns_cookie(skops);
	inum = bpf_map_lookup_elem(&st_netns_cookie, &cookie);
	p.netns = inum ? *inum : 0;
	p.family = skops->family;
	p.dport = (__u16)skops->local_port;
	st_count_syn(p.netns, p.dport, NULL);
	/* ctx fields must be read at their own offsets (the verifier rejects a
	 * load through an adjusted ctx pointer), hence one load per word. */
	if (p.family == ST_AF_INET) {
		__u32 r = skops->remote_ip4;
		__u32 l = skops->local_ip4;

		__builtin_memcpy(p.saddr, &r, 4);
		__builtin_memcpy(p.daddr, &l, 4);
	} else if (p.family == ST_AF_INET6) {
		__u32 w;

		w = skops->remote_ip6[0]; barrier_var(w); __builtin_memcpy(p.saddr, &w, 4);
		w = skops->remote_ip6[1]; barrier_var(w); __builtin_memcpy(p.saddr + 4, &w, 4);
		w = skops->remote_ip6[2]; barrier_var(w); __builtin_memcpy(p.saddr + 8, &w, 4);
		w = skops->remote_ip6[3]; barrier_var(w); __builtin_memcpy(p.saddr + 12, &w, 4);
		w = skops->local_ip6[0]; barrier_var(w); __builtin_memcpy(p.daddr, &w, 4);
		w = skops->local_ip6[1]; barrier_var(w); __builtin_memcpy(p.daddr + 4, &w, 4);
		w = skops->local_ip6[2]; barrier_var(w); __builtin_memcpy(p.daddr + 8, &w, 4);
		w = skops->local_ip6[3]; barrier_var(w); __builtin_memcpy(p.daddr + 12, &w, 4);
	} else {
		return 1;
	}
	p.technique = ST_TECH_UNKNOWN;
	p.outcome = ST_OUT_OPEN;
	p.create = false;
	st_record_probe(&p, bpf_ktime_get_boot_ns());
	return 1;
}

/* ---- silent drops: FIN/NULL/Xmas to open ports, UDP to closed ports ---- */

static __always_inline int st_on_drop(const struct sk_buff *skb, int reason, const struct sock *rx_sk)
{
	struct st_probe p;
	struct st_pkt pk;
	bool tcp_flags = false, no_socket = false;

	if (cfg_attach_only)
		return 0;
	/* Drop reasons are an enum whose values move between kernels. */
	if (bpf_core_enum_value_exists(enum skb_drop_reason, SKB_DROP_REASON_TCP_FLAGS))
		tcp_flags = reason == bpf_core_enum_value(enum skb_drop_reason, SKB_DROP_REASON_TCP_FLAGS);
	if (bpf_core_enum_value_exists(enum skb_drop_reason, SKB_DROP_REASON_NO_SOCKET))
		no_socket = reason == bpf_core_enum_value(enum skb_drop_reason, SKB_DROP_REASON_NO_SOCKET);
	if (!tcp_flags && !no_socket)
		return 0;
	if (!st_parse_skb(skb, &pk))
		return 0;
	if (tcp_flags && pk.proto == IPPROTO_TCP) {
		/* A listener dropped a segment without SYN/ACK/RST. */
		if (pk.flags & (ST_TH_SYN | ST_TH_ACK | ST_TH_RST))
			return 0;
		st_probe_from_pkt(&pk, st_skb_netns(skb, rx_sk), st_technique(pk.flags, pk.doff), ST_OUT_DROPPED, true,
				  &p);
	} else if (no_socket && pk.proto == IPPROTO_UDP) {
		st_probe_from_pkt(&pk, st_skb_netns(skb, rx_sk), ST_TECH_UDP, ST_OUT_CLOSED, true, &p);
	} else {
		/* TCP NO_SOCKET is counted by the reset hook. */
		return 0;
	}
	st_record_probe(&p, bpf_ktime_get_boot_ns());
	return 0;
}

/* Since Linux 6.12 the tracepoint also passes the receiving socket. */
SEC("tp_btf/kfree_skb")
int BPF_PROG(st_drop_btf_rxsk, struct sk_buff *skb, void *location, int reason, const struct sock *rx_sk)
{
	return st_on_drop(skb, reason, rx_sk);
}

SEC("tp_btf/kfree_skb")
int BPF_PROG(st_drop_btf, struct sk_buff *skb, void *location, int reason)
{
	return st_on_drop(skb, reason, NULL);
}

SEC("raw_tp/kfree_skb")
int BPF_PROG(st_drop_raw, struct sk_buff *skb, void *location, int reason)
{
	return st_on_drop(skb, reason, NULL);
}

/* ---- SYN-ACK retransmits (a SYN flood's half-open connections) --------- */

SEC("tp_btf/tcp_retransmit_synack")
int BPF_PROG(st_synack_btf, const struct sock *sk, const struct request_sock *req)
{
	struct st_listener_key k;
	struct st_syn_val *v;

	if (cfg_attach_only)
		return 0;
	k.netns = st_sock_netns_probe(sk);
	k.port = st_sock_lport_probe(sk);
	k.proto = ST_PROTO_TCP;
	k._pad = 0;
	v = bpf_map_lookup_elem(&st_syn, &k);
	if (v) {
		__sync_fetch_and_add(&v->synack_retrans, 1);
		v->half_open = st_listener_half_open(sk);
	}
	return 0;
}
