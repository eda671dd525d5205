/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * The kernel <-> userspace contract of scantrace.
 *
 * This header is compiled twice: as BPF C (the bpf/ sources, after vmlinux.h
 * already included) and as C++ (src/). Rules:
 *   - fixed-width __u8..__u64 fields only, explicit padding, and a
 *     _Static_assert on every record size, so both compilers agree on layout;
 *   - every ring-buffer record starts with struct st_hdr;
 *   - enum values are explicit and only ever grow (the schema is append-only);
 *   - names are prefixed st_/ST_ because vmlinux.h already defines many
 *     generic ones.
 * The build rebuilds BPF objects and skeletons whenever this file changes
 * (clang -MD + CMake DEPFILE).
 */
#ifndef SCANTRACE_EVENTS_H
#define SCANTRACE_EVENTS_H

#ifndef __VMLINUX_H__
#include <linux/types.h>
#endif

#ifdef __cplusplus
#define ST_STATIC_ASSERT(cond, msg) static_assert(cond, msg)
#else
#define ST_STATIC_ASSERT(cond, msg) _Static_assert(cond, msg)
#endif

#define ST_COMM_LEN 16

/* Address families as the kernel spells them (AF_INET / AF_INET6). */
#define ST_AF_INET 2
#define ST_AF_INET6 10

#define ST_PROTO_TCP 6
#define ST_PROTO_UDP 17

/* Ring-buffer record types. Append only. */
enum st_record_type {
	ST_REC_CONN = 1,   /* struct st_conn_event: one TCP state transition */
	ST_REC_LISTEN = 2, /* struct st_listen_event: a socket starts/stops listening */
	ST_REC_SCAN_ALERT = 3, /* struct st_scan_alert: a source crossed a scan rule */
	ST_REC_DIST_ALERT = 4, /* struct st_dist_alert: many sources probing closed ports */
};

/* st_hdr.flags */
enum st_hdr_flags {
	ST_F_OWNER_KNOWN = 1u << 0, /* owner holds the owning process */
	ST_F_START_KNOWN = 1u << 1, /* start_ns is the connection's first transition */
	ST_F_TCP_INFO = 1u << 2,    /* bytes/retransmits/rtt were read from tcp_sock */
	ST_F_DEFERRED = 1u << 3,    /* st_conn_val only: LISTEN->SYN_RECV still to be reported */
	ST_F_ESTABLISHED = 1u << 4, /* st_conn_val only: est_* and tuple are set, for userspace to report */
};

struct st_hdr {
	__u16 type; /* enum st_record_type */
	__u16 size; /* sizeof the whole record, checked by userspace */
	__u32 flags;
	__u64 ts_ns; /* bpf_ktime_get_boot_ns() */
};
ST_STATIC_ASSERT(sizeof(struct st_hdr) == 16, "st_hdr layout");

/* The process that owns a socket. For inbound connections this is the
 * listener's owner, never the task that happened to run the softirq. */
struct st_owner {
	__u32 tgid; /* process id */
	__u32 pid;  /* thread id */
	__u32 uid;
	__u32 _pad;
	__u64 cgroup_id; /* cgroup v2 id (inode of the cgroup directory) */
	char comm[ST_COMM_LEN];
};
ST_STATIC_ASSERT(sizeof(struct st_owner) == 40, "st_owner layout");

/* Addresses as the socket holds them. IPv4 uses the first 4 bytes of the
 * 16-byte arrays; userspace folds ::ffff:a.b.c.d into IPv4. */
struct st_tuple {
	__u8 laddr[16];
	__u8 raddr[16];
	__u16 lport; /* host byte order */
	__u16 rport; /* host byte order */
	__u16 family; /* ST_AF_INET / ST_AF_INET6 */
	__u16 _pad;
};
ST_STATIC_ASSERT(sizeof(struct st_tuple) == 40, "st_tuple layout");

enum st_direction {
	ST_DIR_UNKNOWN = 0,
	ST_DIR_INBOUND = 1,  /* accepted from a listener */
	ST_DIR_OUTBOUND = 2, /* connect()ed by a local process */
};

struct st_conn_event {
	struct st_hdr hdr;
	struct st_tuple tuple;
	struct st_owner owner;
	__u64 sk_id;    /* kernel socket address, only as an opaque id */
	__u64 start_ns; /* valid with ST_F_START_KNOWN */
	/* valid with ST_F_TCP_INFO (always filled on a transition to CLOSE) */
	__u64 bytes_acked;
	__u64 bytes_received;
	__u32 total_retrans;
	__u32 srtt_us;
	__u32 netns; /* inode of the socket's network namespace */
	__u8 oldstate;
	__u8 newstate;
	__u8 direction; /* enum st_direction */
	__u8 _pad;
};
ST_STATIC_ASSERT(sizeof(struct st_conn_event) == 144, "st_conn_event layout");

enum st_listen_action {
	ST_LISTEN_OPEN = 1,
	ST_LISTEN_CLOSE = 2,
};

struct st_listen_event {
	struct st_hdr hdr;
	struct st_tuple tuple; /* local side only */
	struct st_owner owner;
	__u32 netns;
	__u8 proto;  /* ST_PROTO_TCP / ST_PROTO_UDP */
	__u8 action; /* enum st_listen_action */
	__u8 _pad[2];
};
ST_STATIC_ASSERT(sizeof(struct st_listen_event) == 104, "st_listen_event layout");

/* Key of the listener-owner map: who listens on (netns, proto, port).
 * Filled by the kernel at CLOSE->LISTEN (process context, so current is the
 * owner) and seeded by userspace from /proc at start for sockets that were
 * already listening. Inbound children look their owner up here. */
struct st_listener_key {
	__u32 netns;
	__u16 port;
	__u8 proto;
	__u8 _pad;
};
ST_STATIC_ASSERT(sizeof(struct st_listener_key) == 8, "st_listener_key layout");

struct st_listener_val {
	struct st_owner owner;
	__u32 nsockets; /* listening sockets on this key (v4 + v6, reuseport) */
	__u32 _pad;
};
ST_STATIC_ASSERT(sizeof(struct st_listener_val) == 48, "st_listener_val layout");

/* Per-socket connection state, keyed by the kernel socket address.
 *
 * Without --all-states the kernel reports no ESTABLISHED transition itself:
 * it fills est_ns, est_from, netns and tuple and then sets ST_F_ESTABLISHED,
 * and userspace, sweeping the map, reports the connections still open. A
 * connection that closes before the next sweep costs one record, its close. */
struct st_conn_val {
	struct st_owner owner;
	__u64 start_ns;
	__u32 flags; /* ST_F_* */
	__u8 direction;
	__u8 est_from; /* the state ESTABLISHED was entered from */
	__u8 _pad[2];
	__u64 est_ns;
	struct st_tuple tuple;
	__u32 netns;
	__u32 _pad2;
};
ST_STATIC_ASSERT(sizeof(struct st_conn_val) == 112, "st_conn_val layout");

/* ---- scan detection ---------------------------------------------------- */

/* How a probe looked, from its TCP flags (and, for SYNs, its header length:
 * a SYN with the full option set of an OS stack is a connect() probe, raw
 * scanners send 20-24 byte headers). Append only. */
enum st_technique {
	ST_TECH_SYN = 0,
	ST_TECH_CONNECT = 1,
	ST_TECH_FIN = 2,
	ST_TECH_NULL = 3,
	ST_TECH_XMAS = 4,
	ST_TECH_ACK = 5,
	ST_TECH_MAIMON = 6,
	ST_TECH_UDP = 7,
	ST_TECH_OTHER = 8,
	ST_TECH_MAX = 9,
	/* A probe whose technique cannot be known (a SYN seen only through
	 * its request socket): counts its port, not a technique. */
	ST_TECH_UNKNOWN = 0xff,
};

/* Which port state the probe revealed. */
enum st_outcome {
	ST_OUT_CLOSED = 0,  /* RST or ICMP unreachable / NO_SOCKET drop */
	ST_OUT_OPEN = 1,    /* reached a listener (SYN to a listening port) */
	ST_OUT_DROPPED = 2, /* silently dropped by a listener (FIN/NULL/Xmas) */
	ST_OUT_RESET = 3,   /* a listener answered with RST (ACK/Maimon) */
};

/* Open-port probes from a source not (yet) probing anything else, kept
 * briefly so that a scan whose first probes hit open ports is counted whole
 * once its first closed-port probe creates the source. */
#define ST_PENDING_PORTS 4
struct st_pending_val {
	__u64 first_ns;
	__u16 ports[ST_PENDING_PORTS];
	__u32 n;
	__u32 _pad;
};

/* A probe source: per network namespace and address (IPv6 optionally
 * grouped per /64, since scanners rotate inside a prefix). */
struct st_src_key {
	__u32 netns;
	__u16 family;
	__u16 _pad;
	__u8 addr[16];
};
ST_STATIC_ASSERT(sizeof(struct st_src_key) == 24, "st_src_key layout");

/* st_src_val.alerted bits: a rule fired in its current window. */
#define ST_RULE_FAST 1u
#define ST_RULE_SLOW 2u
/* ... and, in the same byte: a port beyond the first 64 was seen, so the
 * count is no longer exact even if ports[] holds exactly 64. */
#define ST_SRC_OVERFLOW 0x80u

#define ST_OPEN_PORTS 8

/* One source's activity; see scantrace/portset.h for the port set. Sized so
 * that 65,536 sources (856 B + the kernel's 104 B per LRU entry) and every
 * other map fit in the default 64 MiB. */
struct st_src_val {
	__u64 first_ns;
	__u64 last_ns;
	__u32 fast_start_ms; /* window starts, in ms after first_ns */
	__u32 slow_start_ms;
	__u32 probes;
	__u16 n_exact;  /* entries used in ports[] */
	__u16 fast_new; /* new distinct ports in the current fast window */
	__u16 slow_new; /* ... in the current slow window */
	__u8 alerted;   /* ST_RULE_* fired in the current window */
	__u8 n_open;    /* entries used in open_ports[] */
	__u8 dst_family;
	__u8 outcomes;  /* bit per enum st_outcome seen */
	__u16 tech_count[ST_TECH_MAX]; /* saturating */
	__u8 dst_addr[16]; /* the first victim address probed */
	__u16 open_ports[ST_OPEN_PORTS];
	__u16 ports[64];
	__u64 bm_a[64]; /* 4096 bits */
	__u64 bm_b[16]; /* 1024 bits */
};
ST_STATIC_ASSERT(sizeof(struct st_src_val) == 856, "st_src_val layout");

struct st_scan_alert {
	struct st_hdr hdr;
	struct st_src_key key;
	__u32 rule; /* ST_RULE_FAST or ST_RULE_SLOW */
	__u32 distinct; /* distinct ports at the crossing (ports[] count, at most 64) */
	__u16 dport;    /* the probe that crossed */
	__u8 technique;
	__u8 _pad[5];
};
ST_STATIC_ASSERT(sizeof(struct st_scan_alert) == 56, "st_scan_alert layout");

#define ST_DIST_SAMPLES 8

/* Per network namespace: sources probing closed ports in the current
 * window, and the distinct ports they probed together (1024-bit sample of
 * perm(port) >> 6, counted as bits are set). Requiring many ports as well as
 * many sources keeps "a service is down and its clients retry" quiet. */
struct st_dist_val {
	__u64 window_start_ns;
	__u32 new_sources;
	__u32 ports_seen; /* bits set in ports_bm */
	__u32 alerted;
	__u32 _pad;
	struct st_src_key samples[ST_DIST_SAMPLES]; /* the first sources seen */
	__u64 ports_bm[16];
};
ST_STATIC_ASSERT(sizeof(struct st_dist_val) == 344, "st_dist_val layout");

struct st_dist_alert {
	struct st_hdr hdr;
	__u32 netns;
	__u32 sources;
	__u64 window_start_ns;
	__u32 ports_seen;
	__u32 _pad;
};
ST_STATIC_ASSERT(sizeof(struct st_dist_alert) == 40, "st_dist_alert layout");

/* SYN-flood signals per listening port (keyed by st_listener_key). */
struct st_syn_val {
	__u64 syns;           /* SYNs that reached the listener */
	__u64 synack_retrans; /* SYN-ACK retransmits */
	__u32 half_open;      /* the listener's request queue (qlen) when last seen */
	__u32 _pad;
};
ST_STATIC_ASSERT(sizeof(struct st_syn_val) == 24, "st_syn_val layout");

/* Kernel-side counters, a per-CPU array indexed by this enum; userspace sums
 * the CPUs. Append only; ST_CNT_MAX sizes the map. */
enum st_counter {
	ST_CNT_STATE_EVENTS = 0,   /* inet_sock_set_state hits for TCP */
	ST_CNT_RB_LOST = 1,        /* failed bpf_ringbuf_reserve */
	ST_CNT_CONN_MAP_FULL = 2,  /* st_conns insert failed */
	ST_CNT_LISTEN_MAP_FULL = 3, /* st_listeners insert failed */
	ST_CNT_PROBES = 4,         /* scan probe events seen (all hooks) */
	ST_CNT_SRC_NEW = 5,        /* source entries created */
	ST_CNT_SRC_MAP_FULL = 6,   /* st_sources insert failed */
	ST_CNT_SYN_MAP_FULL = 7,   /* st_syn insert failed */
	ST_CNT_IGNORED = 8,        /* probes from --ignore prefixes */
	ST_CNT_MAX = 16,
};

#endif /* SCANTRACE_EVENTS_H */
