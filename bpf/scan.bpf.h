/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * Scan aggregation: per-source port sets, rules and threshold alerts.
 * Included by scan.bpf.c (probe hooks) and conn.bpf.c (connect probes); the
 * loader makes both objects share one instance of every map here.
 *
 * No record per probe ever reaches userspace: the kernel aggregates, and
 * emits one small alert when a source crosses a rule in a window. Userspace
 * reads the aggregate from st_sources for the details.
 */
#ifndef SCANTRACE_SCAN_BPF_H
#define SCANTRACE_SCAN_BPF_H

#include "common.bpf.h"
#include <scantrace/portset.h>

/* Policy, set by userspace before load. */
const volatile __u64 cfg_fast_window_ns = 10ULL * 1000000000ULL;
const volatile __u32 cfg_fast_threshold = 20;
const volatile __u64 cfg_slow_window_ns = 900ULL * 1000000000ULL;
const volatile __u32 cfg_slow_threshold = 60;
const volatile __u64 cfg_dist_window_ns = 10ULL * 1000000000ULL;
const volatile __u32 cfg_dist_sources = 30;
const volatile __u32 cfg_dist_ports = 10;
const volatile bool cfg_group_v6_64 = false;
const volatile bool cfg_have_ignores = false;

/* Sized from --max-sources. LRU: a flood of spoofed sources evicts the
 * oldest; userspace derives and reports evictions. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct st_src_key);
	__type(value, struct st_src_val);
} st_sources SEC(".maps");

/* Open-port probes of sources that have no entry yet (see st_pending_val). */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 2048);
	__type(key, struct st_src_key);
	__type(value, struct st_pending_val);
} st_pending SEC(".maps");

/* A zeroed st_dist_val, for the same reason. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct st_dist_val);
} st_dist_zero SEC(".maps");

/* A zeroed value to create entries from: st_src_val does not fit the
 * 512-byte BPF stack. Never written. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct st_src_val);
} st_zero SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 256);
	__type(key, __u32); /* netns */
	__type(value, struct st_dist_val);
} st_dist SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, struct st_listener_key);
	__type(value, struct st_syn_val);
} st_syn SEC(".maps");

/* Network namespace cookie -> inode. sock_ops programs see request sockets
 * only through their context (skops->sk is NULL for them), which offers the
 * namespace's cookie, while every record names namespaces by inode. Filled
 * by the kernel when a socket starts listening and by userspace at start for
 * namespaces that already had listeners. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, __u64);
	__type(value, __u32);
} st_netns_cookie SEC(".maps");

/* --ignore prefixes; IPv4 as ::ffff:a.b.c.d with prefix + 96. */
struct st_lpm_key {
	__u32 prefixlen;
	__u8 addr[16];
};

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 256);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct st_lpm_key);
	__type(value, __u8);
} st_ignore SEC(".maps");

/* One observed probe. */
struct st_probe {
	__u32 netns;
	__u16 family; /* of the addresses below */
	__u16 dport;
	__u8 saddr[16]; /* the prober */
	__u8 daddr[16]; /* the probed address (this host) */
	__u8 technique;
	__u8 outcome;
	bool create; /* may start a new source entry */
};

#define ST_TH_FIN 0x01
#define ST_TH_SYN 0x02
#define ST_TH_RST 0x04
#define ST_TH_PSH 0x08
#define ST_TH_ACK 0x10
#define ST_TH_URG 0x20

/* Pure: the scan technique a TCP segment's flags (and header length, in
 * 32-bit words) stand for. */
static __always_inline __u8 st_technique(__u8 flags, __u8 doff)
{
	__u8 f = flags & (ST_TH_FIN | ST_TH_SYN | ST_TH_RST | ST_TH_PSH | ST_TH_ACK | ST_TH_URG);

	if ((f & ST_TH_SYN) && !(f & (ST_TH_ACK | ST_TH_RST | ST_TH_FIN)))
		/* An OS stack's SYN carries MSS, SACK, timestamps and window
		 * scaling (40 bytes); raw scanners send 20-24. */
		return doff > 6 ? ST_TECH_CONNECT : ST_TECH_SYN;
	if (f == 0)
		return ST_TECH_NULL;
	if (f == ST_TH_FIN)
		return ST_TECH_FIN;
	if ((f & (ST_TH_FIN | ST_TH_PSH | ST_TH_URG)) == (ST_TH_FIN | ST_TH_PSH | ST_TH_URG) &&
	    !(f & (ST_TH_SYN | ST_TH_ACK | ST_TH_RST)))
		return ST_TECH_XMAS;
	if ((f & ST_TH_ACK) && !(f & (ST_TH_SYN | ST_TH_FIN | ST_TH_RST)))
		return ST_TECH_ACK;
	if ((f & (ST_TH_FIN | ST_TH_ACK)) == (ST_TH_FIN | ST_TH_ACK) && !(f & (ST_TH_SYN | ST_TH_RST)))
		return ST_TECH_MAIMON;
	return ST_TECH_OTHER;
}

/* Pure: add a port to a source's set; true if it was not in it before.
 * Exact while fewer than 64 distinct ports were seen: a clear bm_a bit
 * proves the port is new, a set one is checked against ports[]. */
static __always_inline bool st_portset_insert(struct st_src_val *v, __u16 port)
{
	__u16 q = st_port_perm(port);
	__u32 ia = q >> ST_BM_A_SHIFT;
	__u64 bit = 1ULL << (ia & 63);
	__u64 *word = &v->bm_a[(ia >> 6) & 63];
	bool maybe_seen = *word & bit;
	__u32 i;

	*word |= bit;
	if (st_port_sampled(port)) {
		__u32 ib = port >> ST_BM_B_SHIFT;

		v->bm_b[(ib >> 6) & 15] |= 1ULL << (ib & 63);
	}
	if (maybe_seen) {
		/* Past 64 ports only the first unknown one is searched for:
		 * it decides whether the count is still exact. */
		if (v->n_exact >= ST_PORTS_EXACT && (v->alerted & ST_SRC_OVERFLOW))
			return false; /* beyond exactness: assume seen */
		for (i = 0; i < ST_PORTS_EXACT; i++) {
			if (i >= v->n_exact)
				break;
			if (v->ports[i] == port)
				return false;
		}
	}
	if (v->n_exact < ST_PORTS_EXACT) {
		v->ports[v->n_exact & (ST_PORTS_EXACT - 1)] = port;
		v->n_exact++;
	} else {
		v->alerted |= ST_SRC_OVERFLOW;
	}
	return true;
}

static __always_inline bool st_is_v4_mapped(const __u8 *a)
{
	const __u32 *w = (const __u32 *)a;

	return w[0] == 0 && w[1] == 0 && w[2] == bpf_htonl(0xffff);
}

/* The aggregation key: IPv4-mapped sources fold into IPv4 so that one
 * prober is one source whichever listener family it hit. */
static __always_inline void st_src_key_of(const struct st_probe *p, struct st_src_key *k)
{
	__builtin_memset(k, 0, sizeof(*k));
	k->netns = p->netns;
	if (p->family == ST_AF_INET6 && st_is_v4_mapped(p->saddr)) {
		k->family = ST_AF_INET;
		__builtin_memcpy(k->addr, p->saddr + 12, 4);
	} else if (p->family == ST_AF_INET) {
		k->family = ST_AF_INET;
		__builtin_memcpy(k->addr, p->saddr, 4);
	} else {
		k->family = ST_AF_INET6;
		__builtin_memcpy(k->addr, p->saddr, 8);
		if (!cfg_group_v6_64)
			__builtin_memcpy(k->addr + 8, p->saddr + 8, 8);
	}
}

/* --ignore is matched against the prober's own address, not the (possibly
 * /64-grouped) aggregation key. */
static __always_inline bool st_ignored(const struct st_probe *p)
{
	struct st_lpm_key lk = {};

	if (!cfg_have_ignores)
		return false;
	lk.prefixlen = 128;
	if (p->family == ST_AF_INET) {
		lk.addr[10] = lk.addr[11] = 0xff;
		__builtin_memcpy(lk.addr + 12, p->saddr, 4);
	} else {
		__builtin_memcpy(lk.addr, p->saddr, 16); /* v4-mapped is already ::ffff:a.b.c.d */
	}
	return bpf_map_lookup_elem(&st_ignore, &lk) != NULL;
}

/* Time differences between CPUs: a probe handled on one CPU may carry a
 * slightly earlier timestamp than what another CPU already stored. Signed,
 * so "earlier" is a small negative age, never a huge unsigned one. */
static __always_inline __s64 st_age(__u64 now, __u64 then)
{
	return (__s64)(now - then);
}

static __always_inline void st_emit_scan_alert(const struct st_src_key *k, __u32 rule, __u32 distinct,
					       const struct st_probe *p, __u64 now)
{
	struct st_scan_alert *a = st_reserve(sizeof(*a), ST_REC_SCAN_ALERT, 0, now);

	if (!a)
		return;
	a->key = *k;
	a->rule = rule;
	a->distinct = distinct;
	a->dport = p->dport;
	a->technique = p->technique;
	__builtin_memset(a->_pad, 0, sizeof(a->_pad));
	st_submit_now(a);
}

/* Many sources probing closed ports in one namespace within the window. */
static __always_inline void st_dist_note(const struct st_src_key *k, bool new_source, __u16 port, __u64 now)
{
	struct st_dist_val *d;
	__u16 q;
	__u32 ib;
	__u64 bit, *word;

	d = bpf_map_lookup_elem(&st_dist, &k->netns);
	if (!d) {
		/* From a zeroed map value: 344 bytes on the stack would push the
		 * probe path past the 512-byte limit of the whole call chain. */
		__u32 zero = 0;
		const struct st_dist_val *z = bpf_map_lookup_elem(&st_dist_zero, &zero);

		if (!z || bpf_map_update_elem(&st_dist, &k->netns, z, BPF_NOEXIST))
			return;
		d = bpf_map_lookup_elem(&st_dist, &k->netns);
		if (!d)
			return;
		d->window_start_ns = now;
	}
	if (st_age(now, d->window_start_ns) > (__s64)cfg_dist_window_ns) {
		d->window_start_ns = now;
		d->new_sources = 0;
		d->ports_seen = 0;
		d->alerted = 0;
		__builtin_memset(d->ports_bm, 0, sizeof(d->ports_bm));
	}
	if (new_source) {
		if (d->new_sources < ST_DIST_SAMPLES)
			d->samples[d->new_sources & (ST_DIST_SAMPLES - 1)] = *k;
		d->new_sources++;
	}
	q = st_port_perm(port);
	ib = q >> ST_BM_B_SHIFT;
	bit = 1ULL << (ib & 63);
	word = &d->ports_bm[(ib >> 6) & 15];
	if (!(*word & bit)) {
		*word |= bit;
		d->ports_seen++;
	}
	if (!d->alerted && d->new_sources >= cfg_dist_sources && d->ports_seen >= cfg_dist_ports) {
		struct st_dist_alert *a;

		d->alerted = 1;
		a = st_reserve(sizeof(*a), ST_REC_DIST_ALERT, 0, now);
		if (a) {
			a->netns = k->netns;
			a->sources = d->new_sources;
			a->window_start_ns = d->window_start_ns;
			a->ports_seen = d->ports_seen;
			a->_pad = 0;
			st_submit_now(a);
		}
	}
}

/* Account one probe to its source and apply the rules. */
static __always_inline void st_add_open_port(struct st_src_val *v, __u16 port)
{
	__u32 i;
	bool known = false;

	for (i = 0; i < ST_OPEN_PORTS; i++) {
		if (i >= v->n_open)
			break;
		if (v->open_ports[i] == port)
			known = true;
	}
	if (!known && v->n_open < ST_OPEN_PORTS) {
		v->open_ports[v->n_open & (ST_OPEN_PORTS - 1)] = port;
		v->n_open++;
	}
}

static __always_inline void st_pending_note(const struct st_src_key *k, __u16 port, __u64 now)
{
	struct st_pending_val *pv = bpf_map_lookup_elem(&st_pending, k);
	__u32 i;

	if (!pv) {
		struct st_pending_val nv = { .first_ns = now, .n = 1 };

		nv.ports[0] = port;
		bpf_map_update_elem(&st_pending, k, &nv, BPF_ANY);
		return;
	}
	if (st_age(now, pv->first_ns) > (__s64)cfg_fast_window_ns) {
		pv->first_ns = now;
		pv->n = 0;
	}
	for (i = 0; i < ST_PENDING_PORTS; i++) {
		if (i >= pv->n)
			break;
		if (pv->ports[i] == port)
			return;
	}
	if (pv->n < ST_PENDING_PORTS) {
		pv->ports[pv->n & (ST_PENDING_PORTS - 1)] = port;
		pv->n++;
	}
}

/* A source just started probing: count the open ports it reached first. */
static __always_inline void st_pending_merge(const struct st_src_key *k, struct st_src_val *v, __u64 now)
{
	struct st_pending_val *pv = bpf_map_lookup_elem(&st_pending, k);
	__u32 i;

	if (!pv)
		return;
	if (st_age(now, pv->first_ns) <= (__s64)cfg_fast_window_ns) {
		for (i = 0; i < ST_PENDING_PORTS; i++) {
			if (i >= pv->n)
				break;
			v->probes++;
			v->outcomes |= 1u << ST_OUT_OPEN;
			st_add_open_port(v, pv->ports[i]);
			if (st_portset_insert(v, pv->ports[i])) {
				v->fast_new++;
				v->slow_new++;
			}
		}
	}
	bpf_map_delete_elem(&st_pending, k);
}

/* Window starts are u32 milliseconds after first_ns: 49 days. */
#define ST_EPISODE_MAX_NS (40ULL * 86400ULL * 1000000000ULL)

/* A subprogram, not inlined: callers keep their own stack frame small. */
static __noinline void st_record_probe(const struct st_probe *p, __u64 now)
{
	struct st_src_key k;
	struct st_src_val *v;
	bool created = false, is_new;
	__u32 zero = 0, age_ms;

	st_src_key_of(p, &k);
	if (st_ignored(p)) {
		st_count(ST_CNT_IGNORED);
		return;
	}
	st_count(ST_CNT_PROBES);

	v = bpf_map_lookup_elem(&st_sources, &k);
	if (!v) {
		const struct st_src_val *z;

		if (!p->create) {
			if (p->outcome == ST_OUT_OPEN)
				st_pending_note(&k, p->dport, now);
			return;
		}
		z = bpf_map_lookup_elem(&st_zero, &zero);
		if (!z)
			return;
		if (bpf_map_update_elem(&st_sources, &k, z, BPF_NOEXIST) == 0) {
			created = true;
			st_count(ST_CNT_SRC_NEW);
		}
		v = bpf_map_lookup_elem(&st_sources, &k);
		if (!v) {
			st_count(ST_CNT_SRC_MAP_FULL);
			return;
		}
	} else if (st_age(now, v->last_ns) > (__s64)cfg_slow_window_ns ||
		   st_age(now, v->first_ns) > (__s64)ST_EPISODE_MAX_NS) {
		/* Idle for a whole slow window (or older than the window offsets
		 * can express): a new episode. */
		const struct st_src_val *z = bpf_map_lookup_elem(&st_zero, &zero);

		if (!z)
			return;
		__builtin_memcpy(v, z, sizeof(*v));
		created = true;
	}
	if (created) {
		v->first_ns = now;
		v->dst_family = p->family;
		__builtin_memcpy(v->dst_addr, p->daddr, 16);
		st_pending_merge(&k, v, now);
	}

	if (st_age(now, v->last_ns) > 0)
		v->last_ns = now;
	v->probes++;
	if (p->technique < ST_TECH_MAX && v->tech_count[p->technique] < 0xffff)
		v->tech_count[p->technique]++;
	v->outcomes |= 1u << (p->outcome & 7);
	if (p->outcome == ST_OUT_OPEN || p->outcome == ST_OUT_RESET || p->outcome == ST_OUT_DROPPED)
		st_add_open_port(v, p->dport);

	is_new = st_portset_insert(v, p->dport);

	age_ms = st_age(now, v->first_ns) > 0 ? (now - v->first_ns) / 1000000 : 0;
	if (age_ms > v->fast_start_ms && (age_ms - v->fast_start_ms) * 1000000ULL > cfg_fast_window_ns) {
		v->fast_start_ms = age_ms;
		v->fast_new = 0;
		v->alerted &= ~ST_RULE_FAST;
	}
	if (age_ms > v->slow_start_ms && (age_ms - v->slow_start_ms) * 1000000ULL > cfg_slow_window_ns) {
		v->slow_start_ms = age_ms;
		v->slow_new = 0;
		v->alerted &= ~ST_RULE_SLOW;
	}
	if (is_new) {
		v->fast_new++;
		v->slow_new++;
	}
	if (v->fast_new >= cfg_fast_threshold && !(v->alerted & ST_RULE_FAST)) {
		v->alerted |= ST_RULE_FAST;
		st_emit_scan_alert(&k, ST_RULE_FAST, v->n_exact, p, now);
	}
	if (v->slow_new >= cfg_slow_threshold && !(v->alerted & ST_RULE_SLOW)) {
		v->alerted |= ST_RULE_SLOW;
		st_emit_scan_alert(&k, ST_RULE_SLOW, v->n_exact, p, now);
	}

	/* A port this source already probed is in the namespace's set already
	 * (or was, in an earlier window, by a source that is no longer new):
	 * floods at one port skip the st_dist lookup. */
	if (p->outcome == ST_OUT_CLOSED && (is_new || created))
		st_dist_note(&k, created, p->dport, now);
}

#endif /* SCANTRACE_SCAN_BPF_H */
