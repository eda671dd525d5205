// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * TCP connection tracing: every state transition of every TCP socket, with the
 * process that owns it, and the listening-socket lifecycle.
 *
 * Attribution: inbound transitions run in softirq context where the current
 * task is unrelated (the client, swapper, ksoftirqd), so the owner of an
 * inbound connection is the owner of the listener it arrived on, remembered
 * in st_listeners at CLOSE->LISTEN (process context) or seeded by userspace
 * from procfs for sockets that listened before we started. An outbound
 * connection's owner is the task calling connect() (CLOSE->SYN_SENT, process
 * context). Both are then kept per socket in st_conns until CLOSE.
 */
#include "vmlinux.h"
#include "common.bpf.h"
#include "scan.bpf.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* Sizes set by userspace before load (--max-conns). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, __u64); /* socket address */
	__type(value, struct st_conn_val);
} st_conns SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, struct st_listener_key);
	__type(value, struct st_listener_val);
} st_listeners SEC(".maps");

/* Set by userspace before load: the new states whose transitions are reported
 * (bit per TCP state). Lifecycle mode (default): CLOSE only, ESTABLISHED is
 * left in st_conns for userspace to sweep; --all-states: every one. */
const volatile __u32 cfg_report_states = ~0u;

static __always_inline bool st_reported(int newstate)
{
	return cfg_report_states & (1u << (newstate & 31));
}

/* Pure decision: a transition the handler can ignore outright. It is not
 * reported and neither starts tracking (SYN_SENT, SYN_RECV), marks it for
 * the sweep (ESTABLISHED), ends it (CLOSE) nor belongs to a listener. In
 * lifecycle mode that is FIN_WAIT1/2, CLOSE_WAIT, LAST_ACK, CLOSING and
 * TIME_WAIT: no map is touched for them. */
static __always_inline bool st_skippable(int oldstate, int newstate)
{
	if (oldstate == TCP_LISTEN || newstate == TCP_LISTEN || newstate == TCP_CLOSE ||
	    newstate == TCP_SYN_SENT || newstate == TCP_SYN_RECV || newstate == TCP_ESTABLISHED)
		return false;
	return !st_reported(newstate);
}

enum st_transition {
	ST_T_IGNORE = 0,
	ST_T_LISTEN_OPEN,
	ST_T_LISTEN_CLOSE,
	ST_T_CONN,
};

/* Pure decision: what a transition means. */
static __always_inline enum st_transition st_classify_transition(int oldstate, int newstate)
{
	if (newstate == TCP_LISTEN)
		return oldstate == TCP_LISTEN ? ST_T_IGNORE : ST_T_LISTEN_OPEN;
	if (oldstate == TCP_LISTEN && newstate == TCP_CLOSE)
		return ST_T_LISTEN_CLOSE;
	/* close() of a socket that never connected: not a connection. */
	if (oldstate == TCP_CLOSE && newstate == TCP_CLOSE)
		return ST_T_IGNORE;
	return ST_T_CONN;
}

/* Pure decision: the direction of a socket seen for the first time. */
static __always_inline __u8 st_first_direction(int oldstate, int newstate)
{
	if (oldstate == TCP_CLOSE && newstate == TCP_SYN_SENT)
		return ST_DIR_OUTBOUND;
	if (oldstate == TCP_LISTEN && newstate == TCP_SYN_RECV)
		return ST_DIR_INBOUND;
	return ST_DIR_UNKNOWN;
}

/* The handler, once with direct loads for the BTF-typed tracepoint and once
 * with probe reads for the raw tracepoint fallback. */
#define ST_TEMPLATE "conn_handler.bpf.h"
#include "instantiate.bpf.h"

/* Primary: BTF-typed raw tracepoint. No tracefs needed, and cheaper than the
 * classic tracepoint (no perf-buffer argument marshalling). */
SEC("tp_btf/inet_sock_set_state")
int BPF_PROG(st_state_btf, const struct sock *sk, int oldstate, int newstate)
{
	return st_handle_state_btf(sk, oldstate, newstate);
}

/* Fallback for kernels whose BTF lacks the tracepoint's typedef. */
SEC("raw_tp/inet_sock_set_state")
int BPF_PROG(st_state_raw, const struct sock *sk, int oldstate, int newstate)
{
	return st_handle_state_probe(sk, oldstate, newstate);
}
