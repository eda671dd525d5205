"""What scantrace must NOT report as a scan: busy clients of one service, many
clients at once, a scan slower than the fast rule (the slow rule catches it),
and sources under --ignore.

Every negative check is closed by a control scan from another source: its
`scan` record proves that detection was live, and since the kernel's alerts
reach userspace in order, anything the traffic before it had triggered would
have arrived first.

Run (root): /usr/bin/python3 tests/integration/test_scan_negative.py --binary build/scantrace [-k NAME]
"""

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
HTTP_PORT = 8080
SCAN_TYPES = ("scan", "scan_progress", "scan_end")
# Generous: they only cost time when a test fails, and scripts/vmtest runs
# this file under TCG, 10-50x slower (the verifier alone takes seconds).
START_TIMEOUT = 240
WAIT_S = 60
ALERT_TYPES = SCAN_TYPES + ("distributed_scan", "local_scan")

# A tiny HTTP server: per connection (one thread each) reads the request
# head, answers, closes. Prints {"pid"} when listening, runs until killed.
_HTTPD = r"""
import json, os, socket, sys, threading
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2])))
s.listen(512)
print(json.dumps({"pid": os.getpid()}), flush=True)
def serve(c):
    try:
        c.settimeout(10)
        data = b""
        while b"\r\n\r\n" not in data:
            d = c.recv(4096)
            if not d:
                return
            data += d
        c.sendall(b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok")
    except OSError:
        pass
    finally:
        c.close()
while True:
    c, _ = s.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
"""

# HTTP-like client: argv[1] JSON list of source addresses, argv[2] server,
# argv[3] port, argv[4] requests per source. Each request: connect (bound to
# the source), send, read the whole answer, close. Prints {"ok": n,
# "seconds": from the first connect to the last close}.
_HTTP_CLIENTS = r"""
import json, socket, sys, time
sources, host, port, n = json.loads(sys.argv[1]), sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
ok = 0
t0 = time.monotonic()
for i in range(n):
    for src in sources:
        c = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        c.settimeout(10)
        c.bind((src, 0))
        c.connect((host, port))
        c.sendall(b"GET /item/%d HTTP/1.0\r\nHost: lab\r\n\r\n" % i)
        got = b""
        while True:
            d = c.recv(4096)
            if not d:
                break
            got += d
        c.close()
        if got.startswith(b"HTTP/1.0 200 OK") and got.endswith(b"ok"):
            ok += 1
print(json.dumps({"ok": ok, "seconds": time.monotonic() - t0}), flush=True)
"""

# Paced connect() probes to closed ports: argv[1] source, argv[2] target,
# argv[3] JSON list of ports, argv[4] seconds between probes. Prints one
# {"t": monotonic, "port", "refused": bool} per probe.
_PACED = r"""
import json, socket, sys, time
src, host, ports, gap = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), float(sys.argv[4])
t0 = time.monotonic()
for i, p in enumerate(ports):
    delay = t0 + i * gap - time.monotonic()
    if delay > 0:
        time.sleep(delay)
    c = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    c.settimeout(5)
    c.bind((src, 0))
    try:
        c.connect((host, p))
        refused = False
    except ConnectionRefusedError:
        refused = True
    c.close()
    print(json.dumps({"t": time.monotonic(), "port": p, "refused": refused}), flush=True)
"""


def add_addresses(lb, ns, ifname, cidrs):
    batch = "".join(f"addr add {c} dev {ifname}\n" for c in cidrs)
    res = subprocess.run([lab.IP, "-n", lb.name(ns), "-batch", "-"], input=batch, text=True,
                         capture_output=True, timeout=30)
    if res.returncode != 0:
        raise RuntimeError(f"adding addresses in {lb.name(ns)} failed: {res.stderr.strip()}")


def run_py(lb, ns, code, args, timeout=300):
    res = lb.run_in(ns, [lab.PYTHON, "-c", code, *[str(a) for a in args]], timeout=timeout)
    return [json.loads(line) for line in res.stdout.splitlines()]


class NegativeScanTest(unittest.TestCase):
    maxDiff = None

    # -- helpers -----------------------------------------------------------
    def lab_with_http(self):
        lb = self.enterContext(NetnsLab())
        proc = lb.popen_in("server", [lab.PYTHON, "-c", _HTTPD, "0.0.0.0", str(HTTP_PORT)])
        lab.read_json_line(proc, 60, "the HTTP server's ready line")
        return lb

    def control_scan(self, tr, lb, src):
        """A real scan from `src`; returns its `scan` record (the barrier)."""
        add_addresses(lb, "client", lb.CLIENT_IF, [f"{src}/24"])
        lb.run_in("client", [NMAP, "-n", "-Pn", "-T4", "--max-retries", "1", "-sS", "-S", src,
                             "-e", lb.CLIENT_IF, "-p", "20001-20030", lb.server_ip4], timeout=300)
        victim = lb.netns_inode("server")
        return tr.wait_for(lambda r: r["type"] == "scan" and r.get("netns") == victim
                           and r.get("source") == src, WAIT_S,
                           f"the control scan from {src} (detection must be live)")

    def lab_records(self, tr, lb, types=ALERT_TYPES):
        inodes = (lb.netns_inode("server"), lb.netns_inode("client"))
        return [r for r in tr.snapshot() if r["type"] in types and r.get("netns") in inodes]

    def assert_no_alerts(self, tr, lb, sources, what, control_src):
        recs = self.lab_records(tr, lb)
        bad = [r for r in recs if r.get("source") in sources
               or r["type"] in ("distributed_scan", "local_scan")]
        self.assertEqual(bad, [], f"{what} must not be reported; alerts in the lab's namespaces:\n{fmt(recs)}\n"
                                  f"{tr.describe(5)}")
        # The control scan itself, and nothing else.
        others = [r for r in recs if r.get("source") != control_src]
        self.assertEqual(others, [], f"unexpected alerts:\n{fmt(others)}")

    # -- tests -------------------------------------------------------------
    def test_busy_http_client_is_not_a_scan(self):
        """300 HTTP requests from one client to one open port."""
        lb = self.lab_with_http()
        with Tracer(["--scan-quiet", "2"], start_timeout=START_TIMEOUT) as tr:
            out = run_py(lb, "client", _HTTP_CLIENTS, [json.dumps([lb.client_ip4]), lb.server_ip4, HTTP_PORT, 300])
            self.assertEqual([o["ok"] for o in out], [300], f"every request must have been served: {out}")
            control = f"10.231.{lb.x}.200"
            self.control_scan(tr, lb, control)
            self.assert_no_alerts(tr, lb, {lb.client_ip4}, "300 requests to one port", control)
            records = tr.stop(timeout=60)
        print(f"\nfinal stats: {json.dumps(records[-1])}", file=sys.stderr)

    def test_many_clients_are_not_a_scan(self):
        """40 clients (distinct addresses), 3 requests each, to one open port:
        no scan, and no distributed scan either (nobody probed a closed port)."""
        lb = self.lab_with_http()
        sources = [f"10.231.{lb.x}.{i}" for i in range(100, 140)]
        add_addresses(lb, "client", lb.CLIENT_IF, [f"{a}/24" for a in sources])
        with Tracer(["--scan-quiet", "2"], start_timeout=START_TIMEOUT) as tr:
            out = run_py(lb, "client", _HTTP_CLIENTS, [json.dumps(sources), lb.server_ip4, HTTP_PORT, 3])
            self.assertEqual([o["ok"] for o in out], [120], f"every request must have been served: {out}")
            self.assertLess(out[0]["seconds"], 10, f"the 120 requests must fall within one distributed window: {out}")
            control = f"10.231.{lb.x}.200"
            self.control_scan(tr, lb, control)
            self.assert_no_alerts(tr, lb, set(sources), "40 clients of one service", control)
            records = tr.stop(timeout=60)
        print(f"\nfinal stats: {json.dumps(records[-1])}", file=sys.stderr)

    def test_slow_scan_trips_only_the_slow_rule(self):
        """40 closed ports at 5 ports/s: under the fast rule (20 in 2 s), over
        the slow one (30 in 60 s)."""
        lb = self.enterContext(NetnsLab())
        src = f"10.231.{lb.x}.50"
        add_addresses(lb, "client", lb.CLIENT_IF, [f"{src}/24"])
        victim = lb.netns_inode("server")
        ports = list(range(21001, 21041))
        with Tracer(["--scan-ports", 20, "--scan-window", 2, "--slow-scan-ports", 30,
                     "--slow-scan-window", 60, "--scan-quiet", 2], start_timeout=START_TIMEOUT) as tr:
            probes = run_py(lb, "client", _PACED, [src, lb.server_ip4, json.dumps(ports), 0.2])
            # The test's own premise: every probe refused, never 20 in 2 s.
            self.assertEqual([p["port"] for p in probes], ports)
            self.assertTrue(all(p["refused"] for p in probes), probes)
            ts = [p["t"] for p in probes]
            densest = max(sum(1 for u in ts if t <= u < t + 2.0) for t in ts)
            self.assertLess(densest, 15, f"probes were not paced: {densest} within 2 s")
            slow = tr.wait_for(lambda r: r["type"] == "scan" and r.get("netns") == victim
                               and r.get("source") == src, WAIT_S, f"a scan record for {src}")
            end = tr.wait_for(lambda r: r["type"] == "scan_end" and r.get("netns") == victim
                              and r.get("source") == src, WAIT_S, f"the scan_end for {src}")
            recs = [r for r in tr.snapshot() if r["type"] in SCAN_TYPES and r.get("source") == src]
            ctx = f"40 paced probes from {src} over {ts[-1] - ts[0]:.1f} s; its records:\n{fmt(recs)}"
            self.assertEqual(slow.get("rule"), "slow", ctx)
            self.assertEqual(slow.get("threshold"), 30, ctx)
            self.assertEqual(slow.get("window_s"), 60.0, ctx)
            self.assertEqual(slow.get("technique"), "connect", ctx)
            self.assertEqual(slow.get("destinations"), [lb.server_ip4], ctx)
            self.assertGreaterEqual(slow["ports"], 30, ctx)
            self.assertTrue(set(slow["sample_ports"]) <= set(ports), ctx)
            fast = [r for r in recs if r.get("rule") == "fast"]
            self.assertEqual(fast, [], f"the fast rule must not fire: {ctx}")
            self.assertEqual(len([r for r in recs if r["type"] == "scan"]), 1, ctx)
            self.assertEqual(end.get("reason"), "quiet", ctx)
            self.assertEqual(end["ports"], 40, ctx)
            self.assertIs(end["ports_exact"], True, ctx)
            self.assertEqual(end["technique_probes"], {"connect": 40}, ctx)
            tr.stop(timeout=60)

    def test_ignored_source_is_not_reported(self):
        """--ignore CIDR: a real nmap -sS from inside it is not reported, but
        its probes are counted as ignored."""
        lb = self.enterContext(NetnsLab())
        ignored_net = f"10.231.{lb.x}.16/28"
        src = f"10.231.{lb.x}.20"
        add_addresses(lb, "client", lb.CLIENT_IF, [f"{src}/24"])
        with Tracer(["--scan-quiet", "2", "--ignore", ignored_net], start_timeout=START_TIMEOUT) as tr:
            lb.run_in("client", [NMAP, "-n", "-Pn", "-T4", "--max-retries", "1", "-sS", "-S", src,
                                 "-e", lb.CLIENT_IF, "-p", "1-200", lb.server_ip4], timeout=300)
            control = f"10.231.{lb.x}.40"
            self.control_scan(tr, lb, control)
            self.assert_no_alerts(tr, lb, {src}, f"a scan from {src} under --ignore {ignored_net}", control)
            records = tr.stop(timeout=60)
        final = records[-1]
        print(f"\nfinal stats: {json.dumps(final)}", file=sys.stderr)
        # 200 closed ports, each answered by a reset: at least 200 probes.
        self.assertGreaterEqual(final["kernel"].get("ignored_probes", 0), 200, fmt([final]))


if __name__ == "__main__":
    lab.main()
