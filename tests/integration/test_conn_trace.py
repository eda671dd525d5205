"""scantrace traces real TCP connections between two network namespaces.

Run (root): /usr/bin/python3 tests/integration/test_conn_trace.py --binary build/scantrace [-k NAME]
"""

import os
import re
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import lab  # noqa: E402
from lab import NetnsLab, Tracer, fmt  # noqa: E402

NBYTES = 1000
SOCK_RE = re.compile(r"^(0x)?[0-9a-fA-F]+$")


class ConnTraceTest(unittest.TestCase):
    maxDiff = None

    # -- helpers -----------------------------------------------------------
    def wait_listen(self, tr, lab_, ns, listener, event):
        netns = lab_.netns_inode(ns)
        return tr.wait_for(lambda r: r["type"] == "listen" and r.get("event") == event
                           and r.get("netns") == netns and r.get("lport") == listener.port
                           and r.get("proto") == "tcp",
                           15, f"a listen/{event} record for port {listener.port} in netns {netns}")

    def check_listen(self, rec, lab_, ns, listener, family, laddr, exposure, event):
        what = f"listen record for [{laddr}]:{listener.port}\n{fmt([rec])}"
        self.assertEqual(rec["event"], event, what)
        self.assertEqual(rec["proto"], "tcp", what)
        self.assertEqual(rec["family"], family, what)
        self.assertEqual(rec["laddr"], laddr, what)
        self.assertEqual(rec["lport"], listener.port, what)
        self.assertEqual(rec["exposure"], exposure, what)
        self.assertIn("service", rec, what)
        self.assertTrue(rec["service"] is None or isinstance(rec["service"], str), what)
        self.assertEqual(rec["netns"], lab_.netns_inode(ns), what)
        lab.check_process(self, rec["process"], listener.pid, "python3", what)
        if event == "inventory":
            self.assertEqual(rec["process"]["tid"], listener.pid, f"inventory tid == pid: {what}")

    def side(self, records, laddr, lport, raddr, rport):
        """Every state/close record of one side of a connection: those with
        its 4-tuple, plus the others of the same socket (the connect side's
        CLOSE->SYN_SENT fires before the kernel picks the local port)."""
        tuple_recs = [r for r in records if r["type"] in ("state", "close") and r.get("laddr") == laddr
                      and r.get("lport") == lport and r.get("raddr") == raddr and r.get("rport") == rport]
        keys = {(r.get("netns"), r.get("sock")) for r in tuple_recs}
        return [r for r in records if r["type"] in ("state", "close")
                and (r in tuple_recs or (r.get("netns"), r.get("sock")) in keys)]

    def check_side(self, recs, tup, *, who, netns, family, direction, pid, not_pid, need, all_records,
                   lifecycle):
        """Checks every state/close record of one side of one connection."""
        ctx = f"{who} side\n{fmt(recs)}"
        self.assertTrue(recs, f"no state/close records for the {who} side; all records:\n{fmt(all_records, 60)}")
        laddr, lport, raddr, rport = tup
        for r in recs:
            got = (r.get("laddr"), r.get("lport"), r.get("raddr"), r.get("rport"))
            if (r["type"], r.get("old"), r.get("new")) == ("state", "CLOSE", "SYN_SENT"):
                # connect() sets SYN_SENT before the kernel binds the local port.
                self.assertIn(got, (tup, (laddr, 0, raddr, rport)), f"4-tuple: {ctx}")
            else:
                self.assertEqual(got, tup, f"4-tuple: {ctx}")
        socks = {r.get("sock") for r in recs}
        self.assertEqual(len(socks), 1, f"one stable sock id expected: {ctx}")
        sock = socks.pop()
        self.assertTrue(isinstance(sock, str) and SOCK_RE.match(sock), f"sock is not hex: {ctx}")
        for r in recs:
            self.assertEqual(r["netns"], netns, f"netns: {ctx}")
            self.assertEqual(r["family"], family, f"family: {ctx}")
            self.assertEqual(r["direction"], direction, f"direction: {ctx}")
            self.assertEqual(r["peer_scope"], "private", f"peer_scope: {ctx}")
            lab.check_process(self, r["process"], pid, "python3", f"{who} owner: {ctx}")
            self.assertNotEqual(r["process"]["pid"], not_pid, f"{who} attributed to the peer: {ctx}")
        seen = lab.transitions(recs)
        if lifecycle:
            # Default mode: the one ESTABLISHED record (the connection was held
            # open past a sweep), and the close record; no other transition.
            self.assertEqual(seen, need, f"{who}: default mode reports only the way into ESTABLISHED: {ctx}")
        for t in need:
            self.assertIn(t, seen, f"{who}: transition {t[0]}->{t[1]} missing: {ctx}")
        for old, new in seen:
            self.assertIsInstance(old, str, ctx)
            self.assertIsInstance(new, str, ctx)
        closes = [r for r in recs if r["type"] == "close"]
        self.assertEqual(len(closes), 1, f"{who}: exactly one close record expected: {ctx}")
        c = closes[0]
        cctx = f"{who} close record\n{fmt([c])}"
        self.assertGreaterEqual(c["bytes_sent"], NBYTES, cctx)
        self.assertGreaterEqual(c["bytes_received"], NBYTES, cctx)
        self.assertTrue(lab.is_number(c["duration_ms"]) and c["duration_ms"] >= 0,
                        f"duration_ms must be a number for a connection seen from its start: {cctx}")
        for key in ("retransmits", "rtt_us"):
            self.assertTrue(lab.is_int(c[key]) and c[key] >= 0, f"{key}: {cctx}")
        self.assertIsInstance(c["last_state"], str, cctx)

    def exchange_and_check(self, tr, lab_, listener, *, family, server_addr, client_addr, client_family,
                           all_states=True):
        """One client connection from the client namespace to `listener`,
        then every assertion on both sides. Returns all records. The tracer
        runs with --all-states unless all_states is False: then the client
        holds the connection open long enough for the sweep that reports it
        as ESTABLISHED (every 250 ms)."""
        client = lab.run_client(lab_, "client", server_addr, listener.port, family=client_family,
                                n_out=NBYTES, n_in=NBYTES, hold=0 if all_states else 1.5)
        self.assertEqual(client.received, NBYTES)
        served = listener.wait_served()
        self.assertEqual(served["received"], NBYTES)
        self.assertEqual(client.laddr, client_addr, "the client's own view of its address")
        cli_ns, srv_ns = lab_.netns_inode("client"), lab_.netns_inode("server")
        tr.wait_for(lambda r: r["type"] == "close" and r.get("netns") == cli_ns
                    and r.get("lport") == client.lport and r.get("rport") == listener.port,
                    15, f"the client-side close record (lport {client.lport})")
        tr.wait_for(lambda r: r["type"] == "close" and r.get("netns") == srv_ns
                    and r.get("lport") == listener.port and r.get("rport") == client.lport,
                    15, f"the server-side close record (rport {client.lport})")
        records = tr.stop()

        tup = (client_addr, client.lport, server_addr, listener.port)
        self.check_side(self.side(records, *tup), tup, who="client", netns=cli_ns, family=family,
                        direction="outbound", pid=client.pid, not_pid=listener.pid,
                        need=[("CLOSE", "SYN_SENT"), ("SYN_SENT", "ESTABLISHED")] if all_states
                        else [("SYN_SENT", "ESTABLISHED")], all_records=records, lifecycle=not all_states)
        tup = (server_addr, listener.port, client_addr, client.lport)
        self.check_side(self.side(records, *tup), tup, who="server", netns=srv_ns, family=family,
                        direction="inbound", pid=listener.pid, not_pid=client.pid,
                        need=[("LISTEN", "SYN_RECV"), ("SYN_RECV", "ESTABLISHED")] if all_states
                        else [("SYN_RECV", "ESTABLISHED")], all_records=records, lifecycle=not all_states)
        return records

    # -- tests -------------------------------------------------------------
    def test_start_and_final_stats(self):
        with Tracer() as tr:
            start = tr.start
            records = tr.stop()
        ctx = fmt([start])
        self.assertIs(records[0], start, "start must be the first record")
        self.assertIsInstance(start.get("version"), str, ctx)
        self.assertTrue(start["version"], ctx)
        self.assertEqual(start.get("schema"), 1, ctx)
        self.assertEqual(start.get("kernel"), os.uname().release, ctx)
        self.assertEqual(start.get("pid"), tr.proc.pid, ctx)
        self.assertIsInstance(start.get("config"), dict, ctx)
        hooks = start.get("hooks")
        self.assertIsInstance(hooks, list, ctx)
        for h in hooks:
            self.assertIsInstance(h, dict, ctx)
            self.assertIsInstance(h.get("name"), str, ctx)
            self.assertIn(h.get("state"), ("attached", "unavailable"), ctx)
            if h["state"] == "attached":
                self.assertIsInstance(h.get("program"), str, f"attached hook without program: {ctx}")
                self.assertIsInstance(h.get("attach"), str, f"attached hook without attach: {ctx}")
            else:
                self.assertIsInstance(h.get("reason"), str, f"unavailable hook without reason: {ctx}")
        self.assertTrue(any(h.get("name") == "inet_sock_set_state" and h.get("state") == "attached"
                            for h in hooks), f"inet_sock_set_state is not attached: {ctx}")
        self.assertEqual(sum(1 for r in records if r["type"] == "start"), 1, fmt(records))
        lab.check_stats(self, records[-1], final=True)

    def test_ipv4_connection(self):
        with NetnsLab() as lb, Tracer(["--all-states"]) as tr:
            srv = lab.start_listener(lb, "server", lb.server_ip4, n_in=NBYTES, n_out=NBYTES)
            any4 = lab.start_listener(lb, "server", "0.0.0.0")
            lo4 = lab.start_listener(lb, "server", "127.0.0.1")
            for lst, laddr, exposure in ((srv, lb.server_ip4, "address"), (any4, "0.0.0.0", "all-interfaces"),
                                         (lo4, "127.0.0.1", "loopback-only")):
                rec = self.wait_listen(tr, lb, "server", lst, "open")
                self.check_listen(rec, lb, "server", lst, "ipv4", laddr, exposure, "open")
            self.exchange_and_check(tr, lb, srv, family="ipv4", server_addr=lb.server_ip4,
                                    client_addr=lb.client_ip4, client_family=4)

    def test_ipv6_connection(self):
        with NetnsLab() as lb, Tracer(["--all-states"]) as tr:
            srv = lab.start_listener(lb, "server", lb.server_ip6, family=6, n_in=NBYTES, n_out=NBYTES)
            any6 = lab.start_listener(lb, "server", "::", family=6, v6only=True)
            lo6 = lab.start_listener(lb, "server", "::1", family=6)
            for lst, laddr, exposure in ((srv, lb.server_ip6, "address"), (any6, "::", "all-interfaces"),
                                         (lo6, "::1", "loopback-only")):
                rec = self.wait_listen(tr, lb, "server", lst, "open")
                self.check_listen(rec, lb, "server", lst, "ipv6", laddr, exposure, "open")
            self.exchange_and_check(tr, lb, srv, family="ipv6", server_addr=lb.server_ip6,
                                    client_addr=lb.client_ip6, client_family=6)

    def test_inventory_listener(self):
        with NetnsLab() as lb:
            srv = lab.start_listener(lb, "server", lb.server_ip4, n_in=NBYTES, n_out=NBYTES)
            with Tracer(["--all-states"]) as tr:
                rec = self.wait_listen(tr, lb, "server", srv, "inventory")
                self.check_listen(rec, lb, "server", srv, "ipv4", lb.server_ip4, "address", "inventory")
                records = self.exchange_and_check(tr, lb, srv, family="ipv4", server_addr=lb.server_ip4,
                                                  client_addr=lb.client_ip4, client_family=4)
            opens = [r for r in records if r["type"] == "listen" and r.get("event") == "open"
                     and r.get("netns") == lb.netns_inode("server") and r.get("lport") == srv.port]
            self.assertEqual(opens, [], "a listener that predates scantrace is inventory, not open")

    def test_default_mode_one_close_per_side_at_most_one_state(self):
        """Without --all-states, short connections over IPv4 and IPv6: every
        connection side gets exactly one close record and at most one state
        record, into ESTABLISHED, never after its close (whether a state
        record comes depends on a sweep falling inside the connection;
        test_default_mode_held_connection checks that it does)."""
        with NetnsLab() as lb, Tracer() as tr:
            self.assertFalse(tr.start["config"]["all_states"], fmt([tr.start]))
            for fam, srv_addr, cli_addr, name in ((4, lb.server_ip4, lb.client_ip4, "ipv4"),
                                                  (6, lb.server_ip6, lb.client_ip6, "ipv6")):
                srv = lab.start_listener(lb, "server", srv_addr, family=fam, n_in=NBYTES, n_out=NBYTES)
                self.wait_listen(tr, lb, "server", srv, "open")
                client = lab.run_client(lb, "client", srv_addr, srv.port, family=fam, n_out=NBYTES, n_in=NBYTES)
                srv.wait_served()
                cli_ns = lb.netns_inode("client")
                tr.wait_for(lambda r: r["type"] == "close" and r.get("netns") == cli_ns
                            and r.get("lport") == client.lport, 15, "the short connection's close record")
            records = tr.stop()
            inodes = (lb.netns_inode("client"), lb.netns_inode("server"))
        by_sock = {}
        for r in records:
            if r["type"] in ("state", "close") and r.get("netns") in inodes:
                by_sock.setdefault(r["sock"], []).append(r)
        self.assertTrue(by_sock, f"no connection records:\n{fmt(records, 60)}")
        for sock, recs in by_sock.items():
            ctx = fmt(recs)
            self.assertEqual([r["type"] for r in recs if r["type"] == "close"], ["close"], ctx)
            states = [r for r in recs if r["type"] == "state"]
            self.assertLessEqual(len(states), 1, f"at most one state record per connection side: {ctx}")
            for r in states:
                self.assertEqual(r["new"], "ESTABLISHED", ctx)
                self.assertIn(r["old"], ("SYN_SENT", "SYN_RECV"), ctx)
                self.assertLessEqual(r["ts"], recs[-1]["ts"], f"ESTABLISHED after the close: {ctx}")
        stats = records[-1]
        self.assertEqual(stats["lost"]["ringbuf"], 0, fmt([stats]))

    def test_default_mode_held_connection(self):
        """A connection held open past a sweep, default mode: both sides get
        their ESTABLISHED record (from the st_conns sweep) with the right
        4-tuple, direction and owner, then their close."""
        with NetnsLab() as lb, Tracer() as tr:
            srv = lab.start_listener(lb, "server", lb.server_ip4, n_in=NBYTES, n_out=NBYTES)
            self.wait_listen(tr, lb, "server", srv, "open")
            self.exchange_and_check(tr, lb, srv, family="ipv4", server_addr=lb.server_ip4,
                                    client_addr=lb.client_ip4, client_family=4, all_states=False)

    def test_dual_stack_listener(self):
        with NetnsLab() as lb, Tracer(["--all-states"]) as tr:
            inodes = (lb.netns_inode("server"), lb.netns_inode("client"))
            srv = lab.start_listener(lb, "server", "::", family=6, v6only=False, n_in=NBYTES, n_out=NBYTES)
            rec = self.wait_listen(tr, lb, "server", srv, "open")
            self.check_listen(rec, lb, "server", srv, "ipv6", "::", "all-interfaces", "open")
            records = self.exchange_and_check(tr, lb, srv, family="ipv4", server_addr=lb.server_ip4,
                                              client_addr=lb.client_ip4, client_family=4)
        mapped = [r for r in records if r.get("netns") in inodes
                  and "::ffff:" in str(r.get("laddr")) + str(r.get("raddr"))]
        self.assertEqual(mapped, [], f"IPv4-mapped addresses must print as IPv4:\n{fmt(mapped)}")


if __name__ == "__main__":
    lab.main()
