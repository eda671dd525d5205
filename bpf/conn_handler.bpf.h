/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * The inet_sock_set_state handler, a template instantiated once per read
 * mode (see sock.bpf.h): conn.bpf.c includes it for tp_btf (direct loads)
 * and raw_tp (probe reads). Decisions live in conn.bpf.c as pure functions.
 */
#include "sock.bpf.h"

static __always_inline void ST_NAME(st_emit_listen)(const struct sock *sk, __u16 family, __u32 netns, __u8 action,
					   const struct st_owner *owner, __u64 now)
{
	struct st_listen_event *e;

	e = st_reserve(sizeof(*e), ST_REC_LISTEN, owner ? ST_F_OWNER_KNOWN : 0, now);
	if (!e)
		return;
	ST_NAME(st_sock_tuple)(sk, family, &e->tuple);
	if (owner)
		e->owner = *owner;
	else
		__builtin_memset(&e->owner, 0, sizeof(e->owner));
	e->netns = netns;
	e->proto = ST_PROTO_TCP;
	e->action = action;
	e->_pad[0] = e->_pad[1] = 0;
	st_submit_lazy(e);
}

static __always_inline void ST_NAME(st_listen_open)(const struct sock *sk, __u16 family, struct st_listener_key *key, __u64 now)
{
	struct st_listener_val *v, nv = {};

	st_owner_from_current(&nv.owner);
	ST_NAME(st_note_netns_cookie)(sk);
	v = bpf_map_lookup_elem(&st_listeners, key);
	if (v) {
		/* v4 + v6 sockets or SO_REUSEPORT on one port: the newest owner wins. */
		v->owner = nv.owner;
		__sync_fetch_and_add(&v->nsockets, 1);
	} else {
		nv.nsockets = 1;
		if (bpf_map_update_elem(&st_listeners, key, &nv, BPF_NOEXIST))
			st_count(ST_CNT_LISTEN_MAP_FULL);
	}
	ST_NAME(st_emit_listen)(sk, family, key->netns, ST_LISTEN_OPEN, &nv.owner, now);
}

static __always_inline void ST_NAME(st_listen_close)(const struct sock *sk, __u16 family, struct st_listener_key *key, __u64 now)
{
	struct st_listener_val *v = bpf_map_lookup_elem(&st_listeners, key);
	struct st_owner owner;

	if (!v) {
		ST_NAME(st_emit_listen)(sk, family, key->netns, ST_LISTEN_CLOSE, NULL, now);
		return;
	}
	owner = v->owner;
	/* listen()/close() on one port are rare and serialised by the socket
	 * lock of each socket; a plain read-modify-write is enough here. */
	if (v->nsockets <= 1)
		bpf_map_delete_elem(&st_listeners, key);
	else
		__sync_fetch_and_add(&v->nsockets, -1);
	ST_NAME(st_emit_listen)(sk, family, key->netns, ST_LISTEN_CLOSE, &owner, now);
}

/* A full handshake to an open port that ends at once with nothing received
 * is a connect() scan probe. It only adds to a source already probing. */
#ifndef ST_CONNECT_PROBE_MAX_NS
#define ST_CONNECT_PROBE_MAX_NS (3ULL * 1000000000ULL)
#endif

static __always_inline bool ST_NAME(st_connect_probe_of)(const struct sock *sk, __u16 family, __u32 netns,
							 __u64 age_ns, struct st_probe *p)
{
	struct tcp_sock *tp = ST_TCP_SOCK(sk);
	struct st_tuple t;

	if (age_ns > ST_CONNECT_PROBE_MAX_NS || !tp || ST_R(tp->bytes_received) != 0)
		return false;
	ST_NAME(st_sock_tuple)(sk, family, &t);
	p->netns = netns;
	p->family = family;
	p->dport = t.lport;
	__builtin_memcpy(p->saddr, t.raddr, 16);
	__builtin_memcpy(p->daddr, t.laddr, 16);
	p->technique = ST_TECH_CONNECT;
	p->outcome = ST_OUT_OPEN;
	p->create = false;
	return true;
}

/* One state record; false if the ring buffer was full (counted). */
static __always_inline bool ST_NAME(st_emit_conn)(const struct sock *sk, __u16 family, __u32 netns,
						  const struct st_conn_val *c, __u64 id, int oldstate, int newstate,
						  __u64 ts)
{
	struct st_conn_event *e;
	__u32 flags = c->flags & ~ST_F_DEFERRED;

	if (newstate == TCP_CLOSE)
		flags |= ST_F_TCP_INFO;
	e = st_reserve(sizeof(*e), ST_REC_CONN, flags, ts);
	if (!e)
		return false;
	ST_NAME(st_sock_tuple)(sk, family, &e->tuple);
	e->owner = c->owner;
	e->sk_id = id;
	e->start_ns = c->start_ns;
	if (newstate == TCP_CLOSE) {
		struct st_tcp_info ti;

		ST_NAME(st_tcp_info)(sk, &ti);
		e->bytes_acked = ti.bytes_acked;
		e->bytes_received = ti.bytes_received;
		e->total_retrans = ti.total_retrans;
		e->srtt_us = ti.srtt_us;
	} else {
		e->bytes_acked = e->bytes_received = 0;
		e->total_retrans = e->srtt_us = 0;
	}
	e->netns = netns;
	e->oldstate = oldstate;
	e->newstate = newstate;
	e->direction = c->direction;
	e->_pad = 0;
	st_submit_lazy(e);
	return true;
}

/* lk: the socket's (netns, local port), the key its listener would have. */
static __always_inline void ST_NAME(st_conn_transition)(const struct sock *sk, __u16 family,
							const struct st_listener_key *lk, int oldstate, int newstate,
							__u64 now)
{
	__u32 netns = lk->netns;
	__u64 id = (__u64)sk;
	struct st_conn_val *cv, c = {};
	struct st_probe p = {};
	bool tracked, probe = false;

	cv = bpf_map_lookup_elem(&st_conns, &id);
	tracked = cv != NULL;
	if (cv && newstate == TCP_ESTABLISHED && !st_reported(TCP_ESTABLISHED)) {
		/* Left for userspace's sweep: written in place, flag last. */
		cv->est_ns = now;
		cv->est_from = oldstate;
		cv->netns = netns;
		ST_NAME(st_sock_tuple)(sk, family, &cv->tuple);
		barrier();
		cv->flags |= ST_F_ESTABLISHED;
		return;
	}
	if (cv) {
		c = *cv;
	} else {
		c.direction = st_first_direction(oldstate, newstate);
		if (c.direction == ST_DIR_OUTBOUND) {
			st_owner_from_current(&c.owner);
			c.flags = ST_F_OWNER_KNOWN | ST_F_START_KNOWN;
		} else {
			/* Inbound, or a connection that predates us: if its local
			 * port has a listener, that listener's owner owns it. */
			struct st_listener_val *lv = bpf_map_lookup_elem(&st_listeners, lk);

			if (lv) {
				c.owner = lv->owner;
				c.flags = ST_F_OWNER_KNOWN;
				c.direction = ST_DIR_INBOUND;
			}
			if (oldstate == TCP_LISTEN && newstate == TCP_SYN_RECV)
				c.flags |= ST_F_START_KNOWN;
		}
		c.start_ns = now;
		/* Only connections we saw start are remembered: one that predates
		 * us gets the same answer from st_listeners on every transition. */
		if ((c.flags & ST_F_START_KNOWN) && newstate != TCP_CLOSE) {
			if (bpf_map_update_elem(&st_conns, &id, &c, BPF_NOEXIST))
				st_count(ST_CNT_CONN_MAP_FULL);
		}
	}

	/* Some kernels (6.1) set SYN_RECV on a new child before copying the
	 * peer's address into it: report that transition with the next one,
	 * when the tuple is complete, under its own time. */
	if (!tracked && oldstate == TCP_LISTEN && newstate == TCP_SYN_RECV && st_reported(TCP_SYN_RECV) &&
	    !ST_R(sk->__sk_common.skc_dport)) {
		c.flags |= ST_F_DEFERRED;
		if (bpf_map_update_elem(&st_conns, &id, &c, BPF_ANY))
			st_count(ST_CNT_CONN_MAP_FULL);
		return;
	}
	if (c.flags & ST_F_DEFERRED) {
		c.flags &= ~ST_F_DEFERRED;
		ST_NAME(st_emit_conn)(sk, family, netns, &c, id, TCP_LISTEN, TCP_SYN_RECV, c.start_ns);
		if (newstate != TCP_CLOSE)
			bpf_map_update_elem(&st_conns, &id, &c, BPF_EXIST);
	}
	/* Gone from the map before its close record is out: a sweep that reads
	 * the map after userspace got the close cannot report it as open. */
	if (newstate == TCP_CLOSE && tracked)
		bpf_map_delete_elem(&st_conns, &id);
	if (st_reported(newstate))
		ST_NAME(st_emit_conn)(sk, family, netns, &c, id, oldstate, newstate, now);
	if (newstate == TCP_CLOSE && c.direction == ST_DIR_INBOUND && (c.flags & ST_F_START_KNOWN))
		probe = ST_NAME(st_connect_probe_of)(sk, family, netns, now - c.start_ns, &p);
	if (probe)
		st_record_probe(&p, now);
}

static __always_inline int ST_NAME(st_handle_state)(const struct sock *sk, int oldstate, int newstate)
{
	struct st_listener_key key;
	__u16 family;
	__u64 now;

#ifdef ST_BENCH_SPIN_NS
	/* Benchmark calibration only (never in a normal build): burn this many
	 * ns per state event, with --attach-only, to measure what a known amount
	 * of BPF work per connection costs the churn (bench/README.md). */
	{
		__u64 t0 = bpf_ktime_get_ns();

		for (int i = 0; i < 4096; i++)
			if (bpf_ktime_get_ns() - t0 >= ST_BENCH_SPIN_NS)
				break;
	}
#endif
	if (cfg_attach_only || ST_R(sk->sk_protocol) != IPPROTO_TCP)
		return 0;
	st_count(ST_CNT_STATE_EVENTS);
	if (st_skippable(oldstate, newstate))
		return 0;
	family = ST_R(sk->__sk_common.skc_family);
	if (family != ST_AF_INET && family != ST_AF_INET6)
		return 0;

	now = bpf_ktime_get_boot_ns();
	key.netns = ST_NAME(st_sock_netns)(sk);
	key.port = ST_NAME(st_sock_lport)(sk);
	key.proto = ST_PROTO_TCP;
	key._pad = 0;

	switch (st_classify_transition(oldstate, newstate)) {
	case ST_T_LISTEN_OPEN:
		ST_NAME(st_listen_open)(sk, family, &key, now);
		break;
	case ST_T_LISTEN_CLOSE:
		ST_NAME(st_listen_close)(sk, family, &key, now);
		break;
	case ST_T_CONN:
		ST_NAME(st_conn_transition)(sk, family, &key, oldstate, newstate, now);
		break;
	default:
		break;
	}
	return 0;
}

