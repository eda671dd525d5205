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

/* The IP and TCP/UDP headers at head + nh and head + th, for both read modes:
 * one probe read covers an IPv4 or IPv6 header and the first 14 transport
 * bytes when the transport header follows right after (no IP options, no
 * IPv6 extension header); anything else takes a second read. Reading past
 * the packet stays inside the skb head (skb_shared_info follows it). */
#define ST_HDR_READ 56

static __always_inline bool st_parse_headers(const unsigned char *head, __u16 nh, __u16 th, struct st_pkt *pk)
{
	__u8 buf[ST_HDR_READ], thdr[14];
	const __u8 *t = NULL;
	__u8 ver;

	if (!head || nh == (__u16)~0U || th == (__u16)~0U || th <= nh)
		return false;
	if (bpf_probe_read_kernel(buf, sizeof(buf), head + nh))
		return false;
	ver = buf[0] >> 4;
	__builtin_memset(pk->saddr, 0, 16);
	__builtin_memset(pk->daddr, 0, 16);
	if (ver == 4) {
		pk->family = ST_AF_INET;
		pk->proto = buf[9];
		__builtin_memcpy(pk->saddr, buf + 12, 4);
		__builtin_memcpy(pk->daddr, buf + 16, 4);
		if (th - nh == 20)
			t = buf + 20;
	} else if (ver == 6) {
		pk->family = ST_AF_INET6;
		pk->proto = buf[6]; /* next header; extension headers fail the proto check below */
		__builtin_memcpy(pk->saddr, buf + 8, 16);
		__builtin_memcpy(pk->daddr, buf + 24, 16);
		if (th - nh == 40)
			t = buf + 40;
	} else {
		return false;
	}
	if (pk->proto != IPPROTO_TCP && pk->proto != IPPROTO_UDP)
		return false;
	if (!t) {
		if (bpf_probe_read_kernel(thdr, sizeof(thdr), head + th))
			return false;
		t = thdr;
	}
	pk->sport = (t[0] << 8) | t[1];
	pk->dport = (t[2] << 8) | t[3];
	if (pk->proto == IPPROTO_TCP) {
		pk->doff = t[12] >> 4;
		pk->flags = t[13];
	} else {
		pk->doff = 0;
		pk->flags = 0;
	}
	return true;
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

/* ---- SYNs reaching listeners: per-port counters ----------------------- */

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


/* ---- silent drops ------------------------------------------------------ */

/* Drop reasons are an enum whose values move between kernels (CO-RE). */
static __always_inline bool st_drop_tcp_flags(int reason)
{
	return bpf_core_enum_value_exists(enum skb_drop_reason, SKB_DROP_REASON_TCP_FLAGS) &&
	       reason == bpf_core_enum_value(enum skb_drop_reason, SKB_DROP_REASON_TCP_FLAGS);
}

static __always_inline bool st_drop_no_socket(int reason)
{
	return bpf_core_enum_value_exists(enum skb_drop_reason, SKB_DROP_REASON_NO_SOCKET) &&
	       reason == bpf_core_enum_value(enum skb_drop_reason, SKB_DROP_REASON_NO_SOCKET);
}

/* The handlers, once with direct loads (tp_btf and fentry: BTF-typed
 * arguments) and once with probe reads (kprobe, raw_tp). */
#define ST_TEMPLATE "probe_handler.bpf.h"
#include "instantiate.bpf.h"

/* ---- closed ports and listener resets --------------------------------- */

SEC("tp_btf/tcp_send_reset")
int BPF_PROG(st_rst_btf, const struct sock *sk, const struct sk_buff *skb)
{
	return st_on_reset_btf(sk, skb);
}

SEC("fentry/tcp_v4_send_reset")
int BPF_PROG(st_rst4_fentry, const struct sock *sk, struct sk_buff *skb)
{
	return st_on_reset_btf(sk, skb);
}

SEC("fentry/tcp_v6_send_reset")
int BPF_PROG(st_rst6_fentry, const struct sock *sk, struct sk_buff *skb)
{
	return st_on_reset_btf(sk, skb);
}

SEC("kprobe/tcp_v4_send_reset")
int BPF_KPROBE(st_rst4_kprobe, const struct sock *sk, struct sk_buff *skb)
{
	return st_on_reset_probe(sk, skb);
}

SEC("kprobe/tcp_v6_send_reset")
int BPF_KPROBE(st_rst6_kprobe, const struct sock *sk, struct sk_buff *skb)
{
	return st_on_reset_probe(sk, skb);
}

/* ---- SYNs reaching listeners (open ports) ------------------------------ */

SEC("fentry/tcp_v4_conn_request")
int BPF_PROG(st_syn4_fentry, struct sock *sk, struct sk_buff *skb)
{
	return st_on_conn_request_btf(sk, skb);
}

SEC("fentry/tcp_v6_conn_request")
int BPF_PROG(st_syn6_fentry, struct sock *sk, struct sk_buff *skb)
{
	return st_on_conn_request_btf(sk, skb);
}

SEC("kprobe/tcp_v4_conn_request")
int BPF_KPROBE(st_syn4_kprobe, struct sock *sk, struct sk_buff *skb)
{
	return st_on_conn_request_probe(sk, skb);
}

SEC("kprobe/tcp_v6_conn_request")
int BPF_KPROBE(st_syn6_kprobe, struct sock *sk, struct sk_buff *skb)
{
	return st_on_conn_request_probe(sk, skb);
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

SEC("tp_btf/kfree_skb")
int BPF_PROG(st_drop_btf_rxsk, struct sk_buff *skb, void *location, int reason, const struct sock *rx_sk)
{
	return st_on_drop_btf(skb, reason, rx_sk);
}

SEC("tp_btf/kfree_skb")
int BPF_PROG(st_drop_btf, struct sk_buff *skb, void *location, int reason)
{
	return st_on_drop_btf(skb, reason, NULL);
}

SEC("raw_tp/kfree_skb")
int BPF_PROG(st_drop_raw, struct sk_buff *skb, void *location, int reason)
{
	return st_on_drop_probe(skb, reason, NULL);
}

/* ---- SYN-ACK retransmits (a SYN flood's half-open connections) --------- */

SEC("tp_btf/tcp_retransmit_synack")
int BPF_PROG(st_synack_btf, const struct sock *sk, const struct request_sock *req)
{
	struct st_listener_key k;
	struct st_syn_val *v;

	if (cfg_attach_only)
		return 0;
	k.netns = st_sock_netns_btf(sk);
	k.port = st_sock_lport_btf(sk);
	k.proto = ST_PROTO_TCP;
	k._pad = 0;
	v = bpf_map_lookup_elem(&st_syn, &k);
	if (v) {
		__sync_fetch_and_add(&v->synack_retrans, 1);
		v->half_open = st_listener_half_open(sk);
	}
	return 0;
}
