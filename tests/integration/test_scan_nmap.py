"""scantrace detects real nmap scans between two network namespaces.

One lab and one tracer serve every test of the class: each scan comes from
its own source address (extra addresses on the attacker's veth, nmap -S/-e),
so the records of one test never mix with another's. The victim ("server"
namespace) runs TCP listeners on 8080 (IPv4 only) and 80 (dual-stack [::])
and a UDP socket on 37; the attacker ("client" namespace) runs nmap.

Run (root): /usr/bin/python3 tests/integration/test_scan_nmap.py --binary build/scantrace [-k NAME]
"""

import contextlib
import json
import os
import shutil
import subprocess
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import lab  # noqa: E402
from lab import NetnsLab, Tracer, fmt  # noqa: E402

NMAP = shutil.which("nmap") or "/usr/bin/nmap"

TCP_V4_ONLY = 8080  # listener on 0.0.0.0
TCP_DUAL = 80       # listener on [::], IPV6_V6ONLY off
UDP_OPEN = 37       # UDP socket on 0.0.0.0
SERVICE = {80: "http", 8080: "http-alt"}

TCP_RANGE = "1-200,8080"  # 201 ports; 80 and 8080 open over IPv4, 80 over IPv6
UDP_RANGE = "1-40"        # 37 open (UDP)

QUIET_S = 2
# Generous: they only cost time when a test fails, and scripts/vmtest runs
# this file under TCG, 10-50x slower (the verifier alone takes seconds).
START_TIMEOUT = 240
WAIT_S = 60
FAST_PORTS, FAST_WINDOW = 20, 10.0  # the defaults
OUTCOMES = {"closed", "open", "dropped", "reset"}
TECHNIQUES = {"syn", "connect", "fin", "null", "xmas", "ack", "maimon", "udp", "other"}

# The variant each hook may use (src/loader/loader.cpp), and the one the
# loader picks on the development kernel, Linux 6.18 (fentry on
# tcp_v4_conn_request is refused there and there are no kprobes). Other
# kernels' choices are checked against their facts by tests/vm/test_hooks.py.
HOOK_VARIANTS = {"inet_sock_set_state": {"tp_btf", "raw_tp"}, "tcp_reset": {"tp_btf", "fentry", "kprobe"},
                 "tcp_syn": {"fentry", "kprobe", "sock_ops"}, "skb_drop": {"tp_btf", "raw_tp"},
                 "tcp_retransmit_synack": {"tp_btf"}}
HOOKS_LINUX_6_18 = {"inet_sock_set_state": "tp_btf", "tcp_reset": "tp_btf", "tcp_syn": "sock_ops",
                    "skb_drop": "tp_btf", "tcp_retransmit_synack": "tp_btf"}

# Helper run in the victim namespace: TCP listeners that accept and close at
# once (whatever the peer does, nmap -sT resets), UDP sockets that read and
# drop. argv[1]: JSON list of [proto, family, host, port, v6only or null].
# Prints {"pid"} once everything is bound. Runs until killed.
_SERVICES = r"""
import json, os, select, socket, sys
socks = {}
for proto, fam, host, port, v6only in json.loads(sys.argv[1]):
    af = socket.AF_INET6 if fam == 6 else socket.AF_INET
    s = socket.socket(af, socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if af == socket.AF_INET6 and v6only is not None:
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, int(v6only))
    s.bind((host, port))
    if proto == "tcp":
        s.listen(128)
    s.setblocking(False)
    socks[s.fileno()] = (proto, s)
print(json.dumps({"pid": os.getpid()}), flush=True)
while True:
    ready, _, _ = select.select(list(socks), [], [])
    for fd in ready:
        proto, s = socks[fd]
        try:
            if proto == "tcp":
                s.accept()[0].close()
            else:
                s.recvfrom(65536)
        except OSError:
            pass
"""


def port_set(spec):
    """'1-200,8080' -> {1, ..., 200, 8080}"""
    out = set()
    for part in spec.split(","):
        lo, _, hi = part.partition("-")
        out.update(range(int(lo), int(hi or lo) + 1))
    return out


def add_addresses(lb, ns, ifname, cidrs):
    """Adds addresses to an interface of a lab namespace (IPv6 with nodad:
    usable at once)."""
    batch = "".join(f"addr add {c} dev {ifname}{' nodad' if ':' in c else ''}\n" for c in cidrs)
    res = subprocess.run([lab.IP, "-n", lb.name(ns), "-batch", "-"], input=batch, text=True,
                         capture_output=True, timeout=30)
    if res.returncode != 0:
        raise RuntimeError(f"adding addresses in {lb.name(ns)} failed: {res.stderr.strip()}")


def start_services(lb, ns, specs):
    proc = lb.popen_in(ns, [lab.PYTHON, "-c", _SERVICES, json.dumps(specs)])
    info = lab.read_json_line(proc, 60, "the services helper's ready line")
    assert info["pid"] == proc.pid, (info, proc.pid)
    return proc


class NmapScanTest(unittest.TestCase):
    maxDiff = None

    @classmethod
    def setUpClass(cls):
        stack = contextlib.ExitStack()
        cls.addClassCleanup(stack.close)
        cls.lab = lb = stack.enter_context(NetnsLab())
        cls.victim = lb.netns_inode("server")
        cls.attacker = lb.netns_inode("client")
        # Source addresses: one per scan, never reused.
        cls.v4_sources = [f"10.231.{lb.x}.{i}" for i in range(10, 40)]
        cls.v6_sources = [f"fd00:231:{lb.x}::{i:x}" for i in range(0x10, 0x20)]
        add_addresses(lb, "client", lb.CLIENT_IF,
                      [f"{a}/24" for a in cls.v4_sources] + [f"{a}/64" for a in cls.v6_sources])
        # nmap -sU waits for ICMP port unreachables: do not rate-limit them.
        lb.run_in("server", ["sysctl", "-qw", "net.ipv4.icmp_ratelimit=0", "net.ipv6.icmp.ratelimit=0"])
        start_services(lb, "server", [["tcp", 4, "0.0.0.0", TCP_V4_ONLY, None],
                                      ["tcp", 6, "::", TCP_DUAL, False],
                                      ["udp", 4, "0.0.0.0", UDP_OPEN, None]])
        cls.tracer = Tracer(["--scan-quiet", QUIET_S], start_timeout=START_TIMEOUT)
        stack.callback(cls.tracer.kill)
        cls.tracer.__enter__()

    @classmethod
    def tearDownClass(cls):
        # The shared tracer must still be healthy and end cleanly.
        records = cls.tracer.stop(timeout=60)
        final = records[-1]
        print(f"\nfinal stats: {json.dumps(final)}", file=sys.stderr)
        lab.check_stats(unittest.TestCase(), final, final=True)

    # -- helpers -----------------------------------------------------------
    def next_source(self, v6=False):
        pool = self.v6_sources if v6 else self.v4_sources
        self.assertTrue(pool, "out of attacker source addresses")
        return pool.pop(0)

    def nmap(self, src, args, v6=False):
        target = self.lab.server_ip6 if v6 else self.lab.server_ip4
        argv = [NMAP, "-n", "-Pn", "-T4", "--max-retries", "1", *(["-6"] if v6 else []),
                "-S", src, "-e", self.lab.CLIENT_IF, *args, target]
        res = self.lab.run_in("client", argv, timeout=300)
        print(f"\n$ {' '.join(argv)}\n{res.stdout.strip()}", file=sys.stderr)
        return res.stdout

    def of_source(self, src, types=("scan", "scan_progress", "scan_end")):
        return [r for r in self.tracer.snapshot() if r["type"] in types and r.get("source") == src]

    def wait_scan(self, src, kind, timeout):
        return self.tracer.wait_for(lambda r: r["type"] == kind and r.get("netns") == self.victim
                                    and r.get("source") == src, timeout,
                                    f"a `{kind}` record for source {src} in netns {self.victim}")

    def check_scan_record(self, rec, *, kind, src, family, dst, technique, scanned, ctx):
        """The fields every scan / scan_progress / scan_end record carries."""
        self.assertEqual(rec["type"], kind, ctx)
        self.assertEqual(rec.get("netns"), self.victim, f"netns must be the victim's: {ctx}")
        self.assertEqual(rec.get("source"), src, ctx)
        self.assertEqual(rec.get("family"), family, ctx)
        self.assertEqual(rec.get("destinations"), [dst], ctx)
        self.assertEqual(rec.get("technique"), technique, f"dominant technique: {ctx}")
        techs, counts = rec.get("techniques"), rec.get("technique_probes")
        self.assertIsInstance(techs, list, ctx)
        self.assertIsInstance(counts, dict, ctx)
        self.assertEqual(techs[0], technique, ctx)
        self.assertEqual(set(techs), set(counts), f"techniques vs technique_probes: {ctx}")
        self.assertTrue(set(techs) <= TECHNIQUES, ctx)
        self.assertTrue(all(lab.is_int(n) and n > 0 for n in counts.values()), ctx)
        self.assertEqual([counts[t] for t in techs], sorted(counts.values(), reverse=True),
                         f"techniques must be ordered by probe count: {ctx}")
        for key in ("ports", "probes"):
            self.assertTrue(lab.is_int(rec.get(key)) and rec[key] > 0, f"{key}: {ctx}")
        self.assertIsInstance(rec.get("ports_exact"), bool, ctx)
        self.assertEqual(rec["ports_exact"], rec["ports"] <= 63,
                         f"ports_exact must be true exactly while fewer than 64 ports were seen: {ctx}")
        self.assertLessEqual(rec["first_seen"], rec["last_seen"], ctx)
        self.assertTrue(lab.TS_RE.match(rec["first_seen"]) and lab.TS_RE.match(rec["last_seen"]), ctx)
        sample = rec.get("sample_ports")
        self.assertIsInstance(sample, list, ctx)
        self.assertTrue(0 < len(sample) <= 32, f"sample_ports: {ctx}")
        self.assertEqual(len(sample), len(set(sample)), f"sample_ports has duplicates: {ctx}")
        self.assertTrue(set(sample) <= scanned, f"sample_ports outside what nmap scanned: {ctx}")
        outcomes = rec.get("outcomes")
        self.assertIsInstance(outcomes, list, ctx)
        self.assertTrue(outcomes and set(outcomes) <= OUTCOMES, ctx)
        self.assertIsInstance(rec.get("open_ports"), list, ctx)
        for op in rec["open_ports"]:
            self.assertEqual(set(op), {"port", "service"}, ctx)
            self.assertTrue(op["service"] is None or isinstance(op["service"], str), ctx)
            if op["port"] in SERVICE:
                self.assertEqual(op["service"], SERVICE[op["port"]], ctx)
        self.assertNotIn("::ffff:", json.dumps(rec), f"IPv4-mapped address in a scan record: {ctx}")

    def run_and_check(self, nmap_args, *, technique, spec=TCP_RANGE, v6=False, src=None):
        """Scans from a fresh source; checks the streamed `scan` record and
        the `scan_end`. Returns (scan, scan_end)."""
        src = src or self.next_source(v6)
        family, dst = ("ipv6", self.lab.server_ip6) if v6 else ("ipv4", self.lab.server_ip4)
        scanned = port_set(spec)
        self.nmap(src, [*nmap_args, "-p", spec], v6=v6)
        start = self.wait_scan(src, "scan", WAIT_S)
        end = self.wait_scan(src, "scan_end", QUIET_S + WAIT_S)
        recs = self.of_source(src)
        ctx = f"nmap {' '.join(nmap_args)} -p {spec} from {src}; its records:\n{fmt(recs)}"

        self.check_scan_record(start, kind="scan", src=src, family=family, dst=dst, technique=technique,
                               scanned=scanned, ctx=ctx)
        self.assertEqual(start.get("rule"), "fast", ctx)
        self.assertEqual(start.get("threshold"), FAST_PORTS, ctx)
        self.assertEqual(start.get("window_s"), FAST_WINDOW, ctx)
        self.assertGreaterEqual(start["ports"], FAST_PORTS, f"alert below the threshold: {ctx}")

        self.check_scan_record(end, kind="scan_end", src=src, family=family, dst=dst, technique=technique,
                               scanned=scanned, ctx=ctx)
        self.assertEqual(end.get("reason"), "quiet", ctx)
        self.assertEqual(end["first_seen"], start["first_seen"], f"one episode: {ctx}")
        self.assertGreaterEqual(end["probes"], start["probes"], ctx)
        self.assertGreaterEqual(end["ports"], start["ports"], ctx)
        self.assertLessEqual(end["ports"], end["probes"], f"more distinct ports than probes: {ctx}")
        # SYNs seen only through a request socket (the sock_ops hook) count
        # as probes without a technique.
        self.assertLessEqual(sum(end["technique_probes"].values()), end["probes"],
                             f"technique_probes cannot exceed probes: {ctx}")
        self.assertGreater(sum(end["technique_probes"].values()), 0, ctx)
        self.assertTrue(lab.is_number(end.get("duration_s")) and end["duration_s"] >= 0, ctx)
        self.assertTrue(lab.is_number(end.get("probes_per_s")) and end["probes_per_s"] > 0, ctx)
        n = len(scanned)
        if n <= 64:
            self.assertEqual(end["ports"], n, f"nmap probed {n} ports: {ctx}")
        else:
            self.assertTrue(abs(end["ports"] - n) <= 0.05 * n,
                            f"nmap probed {n} ports, scan_end says {end['ports']} (more than 5% off): {ctx}")
        self.assertEqual(len([r for r in recs if r["type"] == "scan"]), 1, f"one scan record: {ctx}")
        self.assertEqual(len([r for r in recs if r["type"] == "scan_end"]), 1, f"one scan_end: {ctx}")
        # Nothing about this source in any other namespace.
        elsewhere = [r for r in recs if r.get("netns") != self.victim]
        self.assertEqual(elsewhere, [], f"records for {src} outside the victim namespace: {ctx}")
        return start, end, ctx

    def open_ports(self, rec):
        return {op["port"] for op in rec["open_ports"]}

    # -- tests -------------------------------------------------------------
    def test_start_record_hooks_and_memory(self):
        start = self.tracer.start
        ctx = fmt([start])
        hooks = {h.get("name"): h for h in start.get("hooks", [])}
        on_6_18 = os.uname().release.startswith("6.18.")
        for name, variants in HOOK_VARIANTS.items():
            self.assertIn(name, hooks, f"hook {name} missing: {ctx}")
            h = hooks[name]
            self.assertEqual(h.get("state"), "attached", f"{name}: {ctx}")
            self.assertIn(h.get("attach"), variants, f"{name}: {ctx}")
            if on_6_18:
                self.assertEqual(h.get("attach"), HOOKS_LINUX_6_18[name],
                                 f"{name} attach type on {os.uname().release}: {ctx}")
            self.assertIsInstance(h.get("covers"), str, f"{name}: {ctx}")
            self.assertIsInstance(h.get("program"), str, f"{name}: {ctx}")
            self.assertIsInstance(h.get("programs"), list, f"{name}: {ctx}")
            self.assertIn(h["program"], h["programs"], f"{name}: {ctx}")
        mem = start.get("memory")
        self.assertIsInstance(mem, dict, ctx)
        self.assertTrue(all(lab.is_int(v) and v >= 0 for v in mem["maps"].values()), ctx)
        self.assertIn("st_sources", mem["maps"], ctx)
        self.assertTrue(lab.is_int(mem.get("total_bytes")) and lab.is_int(mem.get("limit_bytes")), ctx)
        self.assertGreaterEqual(mem["total_bytes"], sum(mem["maps"].values()), ctx)
        self.assertLessEqual(mem["total_bytes"], mem["limit_bytes"], ctx)

    def test_syn_scan(self):
        """nmap -sS: raw SYNs, the kernel resets the closed ports."""
        _, end, ctx = self.run_and_check(["-sS"], technique="syn")
        self.assertEqual(set(end["technique_probes"]), {"syn"}, ctx)
        self.assertIn("closed", end["outcomes"], ctx)
        self.assertTrue(self.open_ports(end) <= {TCP_V4_ONLY, TCP_DUAL}, ctx)

    def test_syn_scan_lists_open_ports(self):
        """nmap -sS over a small range: the SYNs that reach the two listeners
        are probes too (outcome open), and their ports are listed."""
        _, end, ctx = self.run_and_check(["-sS"], technique="syn", spec="1-30,80,8080")
        self.assertIn("open", end["outcomes"], ctx)
        self.assertEqual(self.open_ports(end), {TCP_V4_ONLY, TCP_DUAL}, ctx)

    def test_connect_scan(self):
        """nmap -sT: full connect()s from the OS stack. A completed handshake
        only adds to a source that is already probing (every client connects
        that way), so -r (ports in numeric order) makes closed ports come
        before the open ones."""
        before = len(self.tracer.snapshot())
        _, end, ctx = self.run_and_check(["-sT", "-r"], technique="connect")
        self.assertEqual(set(end["technique_probes"]), {"connect"}, ctx)
        self.assertTrue({"closed", "open"} <= set(end["outcomes"]), ctx)
        self.assertEqual(self.open_ports(end), {TCP_V4_ONLY, TCP_DUAL}, ctx)
        # On the attacker's side, nmap itself is a local scanner: its
        # connect()s to the closed ports were refused.
        local = [r for r in self.tracer.snapshot()[before:]
                 if r["type"] == "local_scan" and r.get("netns") == self.attacker]
        lctx = f"local_scan records in the attacker namespace:\n{fmt(local)}"
        self.assertEqual(len(local), 1, lctx)
        self.assertEqual(local[0]["process"]["comm"], "nmap", lctx)
        self.assertGreaterEqual(local[0]["targets"], 20, lctx)
        self.assertEqual(local[0]["hosts"], 1, lctx)
        self.assertTrue(all(t["address"] == self.lab.server_ip4 for t in local[0]["sample_targets"]), lctx)

    def check_stealth(self, flag, technique):
        """FIN/NULL/Xmas: closed ports reset, listeners drop the segment."""
        _, end, ctx = self.run_and_check([flag], technique=technique)
        self.assertEqual(set(end["technique_probes"]), {technique}, ctx)
        self.assertTrue({"closed", "dropped"} <= set(end["outcomes"]), ctx)
        self.assertEqual(self.open_ports(end), {TCP_V4_ONLY, TCP_DUAL}, ctx)

    def test_fin_scan(self):
        self.check_stealth("-sF", "fin")

    def test_null_scan(self):
        self.check_stealth("-sN", "null")

    def test_xmas_scan(self):
        self.check_stealth("-sX", "xmas")

    def test_ack_scan(self):
        """nmap -sA: open and closed ports alike answer with a RST; the
        listeners' resets show as outcome "reset"."""
        _, end, ctx = self.run_and_check(["-sA"], technique="ack")
        self.assertEqual(set(end["technique_probes"]), {"ack"}, ctx)
        self.assertTrue({"closed", "reset"} <= set(end["outcomes"]), ctx)
        self.assertEqual(self.open_ports(end), {TCP_V4_ONLY, TCP_DUAL}, ctx)

    def test_udp_scan(self):
        """nmap -sU over 40 ports, one of them a bound UDP socket."""
        src = self.next_source()
        scanned = port_set(UDP_RANGE)
        self.nmap(src, ["-sU", "-p", UDP_RANGE])
        start = self.wait_scan(src, "scan", WAIT_S)
        end = self.wait_scan(src, "scan_end", QUIET_S + WAIT_S)
        recs = self.of_source(src)
        ctx = f"nmap -sU -p {UDP_RANGE} from {src}; its records:\n{fmt(recs)}"
        for rec, kind in ((start, "scan"), (end, "scan_end")):
            self.check_scan_record(rec, kind=kind, src=src, family="ipv4", dst=self.lab.server_ip4,
                                   technique="udp", scanned=scanned, ctx=ctx)
            self.assertEqual(set(rec["technique_probes"]), {"udp"}, ctx)
            self.assertEqual(rec["outcomes"], ["closed"], ctx)
        self.assertEqual(start.get("rule"), "fast", ctx)
        self.assertGreaterEqual(start["ports"], FAST_PORTS, ctx)
        # Exact: every probed port, or every closed one (a datagram that a
        # bound socket accepts is not visible to the drop hook).
        self.assertIn(end["ports"], (len(scanned), len(scanned - {UDP_OPEN})), ctx)
        self.assertIs(end["ports_exact"], True, ctx)
        self.assertLessEqual(end["ports"], end["probes"], ctx)
        self.assertTrue(set(end["sample_ports"]) <= scanned, ctx)
        self.assertEqual(end.get("reason"), "quiet", ctx)

    def test_ipv6_syn_scan(self):
        """nmap -6 -sS against the victim's IPv6 address."""
        _, end, ctx = self.run_and_check(["-sS"], technique="syn", v6=True)
        self.assertEqual(set(end["technique_probes"]), {"syn"}, ctx)
        self.assertIn("closed", end["outcomes"], ctx)
        self.assertTrue(self.open_ports(end) <= {TCP_DUAL}, ctx)

    def test_dual_stack_listener_ipv4_source(self):
        """An IPv4 connect scan that includes the dual-stack [::] listener
        reports an IPv4 source and lists the port; no record of the victim
        namespace carries an IPv4-mapped address."""
        src = self.next_source()
        _, end, ctx = self.run_and_check(["-sT", "-r"], technique="connect", spec=f"1-30,{TCP_DUAL}",
                                         src=src)
        self.assertEqual(end["source"], src, ctx)
        self.assertEqual(end["family"], "ipv4", ctx)
        self.assertIn(TCP_DUAL, self.open_ports(end), ctx)
        mapped = [r for r in self.tracer.snapshot()
                  if r.get("netns") in (self.victim, self.attacker) and "::ffff:" in json.dumps(r)]
        self.assertEqual(mapped, [], f"IPv4-mapped addresses must print as IPv4:\n{fmt(mapped)}")


if __name__ == "__main__":
    lab.main()
