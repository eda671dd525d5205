"""SYN floods with spoofed sources (hping3), local scanners and distributed
scans, on real kernels between two network namespaces.

Floods stay inside the lab: the attacker ("client") namespace has no
interface but its loopback and the veth, does not forward, and every flood
is bounded by `timeout`. The victim ("server") namespace gets a default
route via the veth peer so that its answers to random sources have a route
(and are then dropped by the attacker namespace).

Run (root): /usr/bin/python3 tests/integration/test_scan_flood.py --binary build/scantrace [-k NAME]
"""

import json
import os
import shutil
import subprocess
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import lab  # noqa: E402
from lab import NetnsLab, Tracer, fmt  # noqa: E402

HPING3 = shutil.which("hping3", path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin") or "/usr/sbin/hping3"
FLOOD_PORT = 8080
CLOSED_PORT = 9
MAX_SOURCES = 4096
FLOOD_S = 4
# Generous: they only cost time when a test fails, and scripts/vmtest runs
# this file under TCG, 10-50x slower (the verifier alone takes seconds).
START_TIMEOUT = 240
WAIT_S = 60

# TCP listener that accepts and closes; prints {"pid"}, runs until killed.
_LISTENER = r"""
import json, os, socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2])))
s.listen(128)
print(json.dumps({"pid": os.getpid()}), flush=True)
while True:
    try:
        s.accept()[0].close()
    except OSError:
        pass
"""

# connect() to closed ports as fast as possible: argv[1] JSON list of
# [source or "", host, port]. Prints {"pid"} first, {"refused": n, "seconds":
# from the first connect to the last} at the end.
_CONNECTS = r"""
import json, os, socket, sys, time
print(json.dumps({"pid": os.getpid()}), flush=True)
refused = 0
t0 = time.monotonic()
for src, host, port in json.loads(sys.argv[1]):
    c = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    c.settimeout(5)
    if src:
        c.bind((src, 0))
    try:
        c.connect((host, port))
    except ConnectionRefusedError:
        refused += 1
    c.close()
print(json.dumps({"refused": refused, "seconds": time.monotonic() - t0}), flush=True)
"""


def add_addresses(lb, ns, ifname, cidrs):
    batch = "".join(f"addr add {c} dev {ifname}\n" for c in cidrs)
    res = subprocess.run([lab.IP, "-n", lb.name(ns), "-batch", "-"], input=batch, text=True,
                         capture_output=True, timeout=30)
    if res.returncode != 0:
        raise RuntimeError(f"adding addresses in {lb.name(ns)} failed: {res.stderr.strip()}")


def run_connects(lb, ns, targets, timeout=300):
    """Runs the connect helper to completion; returns (pid, refused, seconds)."""
    proc = lb.popen_in(ns, [lab.PYTHON, "-c", _CONNECTS, json.dumps(targets)])
    out, err = proc.communicate(timeout=timeout)
    if proc.returncode != 0:
        raise AssertionError(f"connect helper in {lb.name(ns)} exited {proc.returncode}: {err.strip()}")
    lines = [json.loads(line) for line in out.splitlines()]
    assert lines[0]["pid"] == proc.pid, (lines, proc.pid)
    return proc.pid, lines[-1]["refused"], lines[-1]["seconds"]


class FloodAndSpreadTest(unittest.TestCase):
    """SYN floods, local processes scanning others, distributed scans."""

    # -- helpers -----------------------------------------------------------
    def flood_lab(self):
        """A lab ready for spoofed floods from the client namespace."""
        lb = self.enterContext(NetnsLab())
        links = lb.run_in("client", [lab.IP, "-o", "link", "show"]).stdout
        names = sorted(line.split(":")[1].strip().split("@")[0] for line in links.splitlines())
        self.assertEqual(names, sorted(["lo", lb.CLIENT_IF]),
                         f"the attacker namespace must have nothing but lo and the veth:\n{links}")
        fwd = lb.run_in("client", ["sysctl", "-n", "net.ipv4.ip_forward"]).stdout.strip()
        self.assertEqual(fwd, "0", "the attacker namespace must not forward")
        lb.run_in("server", ["sysctl", "-qw", "net.ipv4.conf.all.rp_filter=0",
                             "net.ipv4.conf.default.rp_filter=0", f"net.ipv4.conf.{lb.SERVER_IF}.rp_filter=0"])
        lb.run_in("server", [lab.IP, "route", "add", "default", "via", lb.client_ip4, "dev", lb.SERVER_IF])
        return lb

    def start_listener(self, lb, ns, host, port):
        proc = lb.popen_in(ns, [lab.PYTHON, "-c", _LISTENER, host, str(port)])
        lab.read_json_line(proc, 60, "the listener's ready line")
        return proc

    def start_flood(self, lb, port, seconds=FLOOD_S):
        return lb.popen_in("client", ["timeout", str(seconds), HPING3, "-q", "-S", "-p", str(port),
                                      "--flood", "--rand-source", lb.server_ip4])

    def end_flood(self, proc):
        try:
            _, err = proc.communicate(timeout=FLOOD_S + 10)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise AssertionError("hping3 outlived its timeout") from None
        # timeout(1) ends hping3 with SIGTERM: 124.
        self.assertIn(proc.returncode, (0, 124), f"hping3 failed: {err.strip()}")
        return err

    # -- tests -------------------------------------------------------------
    def test_spoofed_flood_memory_stays_bounded(self):
        """A random-source SYN flood to a closed port: every spoofed address
        is a new source; with --max-sources 4096 the kernel's LRU keeps at
        most 4096 and evicts the rest. Nothing is reported as a scan."""
        lb = self.flood_lab()
        victim = lb.netns_inode("server")
        with Tracer(["--max-sources", MAX_SOURCES, "--scan-quiet", "2"], start_timeout=START_TIMEOUT) as tr:
            mem = tr.start.get("memory")
            ctx = fmt([tr.start])
            self.assertIsInstance(mem, dict, ctx)
            self.assertLessEqual(mem["total_bytes"], mem["limit_bytes"], ctx)
            self.assertGreaterEqual(mem["total_bytes"], sum(mem["maps"].values()), ctx)
            # Sized from --max-sources: about 1 KiB per source, not the default 65,536.
            self.assertGreater(mem["maps"].get("st_sources", 0), 0, ctx)
            self.assertLessEqual(mem["maps"]["st_sources"], MAX_SOURCES * 1024, ctx)
            flood = self.start_flood(lb, CLOSED_PORT)
            err = self.end_flood(flood)
            time.sleep(0.5)
            records = tr.stop(timeout=60)
        final = records[-1]
        print(f"\nhping3: {err.strip()}\nfinal stats: {json.dumps(final)}", file=sys.stderr)
        lab.check_stats(self, final, final=True)
        k, lost = final["kernel"], final["lost"]
        ctx = fmt([final])
        self.assertLessEqual(k["sources_live"], MAX_SOURCES, f"LRU bound exceeded: {ctx}")
        self.assertGreater(k["sources_created"], MAX_SOURCES,
                           f"a {FLOOD_S} s random-source flood must create more than {MAX_SOURCES} sources: {ctx}")
        self.assertGreater(lost["sources_evicted"], 0, f"sources were created beyond the bound: {ctx}")
        self.assertEqual(lost["source_map_full"], 0, f"an LRU map never refuses an insert: {ctx}")
        alerts = [r for r in records if r.get("netns") == victim
                  and r["type"] in ("scan", "scan_progress", "scan_end", "distributed_scan")]
        self.assertEqual(alerts, [], "one probe per spoofed source to one port is not a scan "
                                     f"(nor a distributed one):\n{fmt(alerts)}")

    def test_syn_flood_to_open_port(self):
        """hping3 --flood --rand-source to a listening port: a syn_flood
        record for that port while it lasts, a syn_flood_end after."""
        lb = self.flood_lab()
        victim = lb.netns_inode("server")
        self.start_listener(lb, "server", "0.0.0.0", FLOOD_PORT)
        with Tracer(["--max-sources", MAX_SOURCES], start_timeout=START_TIMEOUT) as tr:
            flood = self.start_flood(lb, FLOOD_PORT)
            try:
                rec = tr.wait_for(lambda r: r["type"] == "syn_flood" and r.get("netns") == victim
                                  and r.get("port") == FLOOD_PORT, FLOOD_S + 4,
                                  f"a syn_flood record for port {FLOOD_PORT} in netns {victim}")
            finally:
                err = self.end_flood(flood)
            print(f"\nhping3: {err.strip()}", file=sys.stderr)
            ctx = fmt([rec])
            self.assertEqual(rec.get("service"), "http-alt", ctx)
            self.assertTrue(rec.get("half_open", 0) > 0 or rec.get("syn_rate", 0) > 0, ctx)
            for key in ("syn_rate", "synack_retransmits_per_s"):
                self.assertTrue(lab.is_number(rec.get(key)) and rec[key] >= 0, f"{key}: {ctx}")
            for key in ("half_open", "syncookies_sent", "listen_drops", "listen_overflows"):
                self.assertTrue(lab.is_int(rec.get(key)) and rec[key] >= 0, f"{key}: {ctx}")
            self.assertIsInstance(rec.get("syncookies"), bool, ctx)
            end = tr.wait_for(lambda r: r["type"] == "syn_flood_end" and r.get("netns") == victim
                              and r.get("port") == FLOOD_PORT, 15, "the syn_flood_end record")
            ectx = fmt([rec, end])
            self.assertEqual(end.get("service"), "http-alt", ectx)
            self.assertTrue(lab.is_number(end.get("duration_s")) and end["duration_s"] > 0, ectx)
            self.assertTrue(end.get("peak_syn_rate", 0) > 0 or end.get("peak_half_open", 0) > 0, ectx)
            records = tr.stop(timeout=60)
        final = records[-1]
        print(f"final stats: {json.dumps(final)}", file=sys.stderr)
        self.assertLessEqual(final["kernel"]["sources_live"], MAX_SOURCES, fmt([final]))

    def test_local_scan(self):
        """A process in the victim namespace connecting to 30 closed ports of
        the other namespace is a local scanner."""
        lb = self.enterContext(NetnsLab())
        ns = lb.netns_inode("server")
        ports = list(range(22001, 22031))
        with Tracer(["--scan-quiet", "2"], start_timeout=START_TIMEOUT) as tr:
            pid, refused, seconds = run_connects(lb, "server", [["", lb.client_ip4, p] for p in ports])
            self.assertEqual(refused, len(ports), "every connect must have been refused")
            self.assertLess(seconds, 10, "the connects must fall within one 10 s window")
            rec = tr.wait_for(lambda r: r["type"] == "local_scan" and r.get("netns") == ns, WAIT_S,
                              f"a local_scan record in netns {ns}")
            tr.stop(timeout=60)
        ctx = fmt([rec])
        lab.check_process(self, rec.get("process"), pid, "python3", f"local_scan owner: {ctx}")
        self.assertGreaterEqual(rec.get("targets", 0), 20, ctx)
        self.assertEqual(rec.get("hosts"), 1, ctx)
        self.assertGreaterEqual(rec.get("ports", 0), 20, ctx)
        self.assertEqual(rec.get("window_s"), 10.0, ctx)
        sample = rec.get("sample_targets")
        self.assertIsInstance(sample, list, ctx)
        self.assertTrue(sample, ctx)
        for t in sample:
            self.assertEqual(t.get("address"), lb.client_ip4, ctx)
            self.assertIn(t.get("port"), ports, ctx)

    def test_distributed_scan(self):
        """40 sources, each probing 2 closed ports (80 ports together), within
        a few seconds: one distributed_scan, and no per-source scan."""
        lb = self.enterContext(NetnsLab())
        victim = lb.netns_inode("server")
        sources = [f"10.231.{lb.x}.{i}" for i in range(100, 140)]
        add_addresses(lb, "client", lb.CLIENT_IF, [f"{a}/24" for a in sources])
        targets = [[src, lb.server_ip4, 23000 + 2 * i + j] for i, src in enumerate(sources) for j in (0, 1)]
        with Tracer(["--scan-quiet", "2"], start_timeout=START_TIMEOUT) as tr:
            _, refused, seconds = run_connects(lb, "client", targets)
            self.assertEqual(refused, len(targets), "every connect must have been refused")
            self.assertLess(seconds, 8, "the probes must fall within one 10 s window")
            rec = tr.wait_for(lambda r: r["type"] == "distributed_scan" and r.get("netns") == victim, WAIT_S,
                              f"a distributed_scan record in netns {victim}")
            # The per-source view stays quiet: 2 ports each.
            time.sleep(0.5)
            records = tr.stop(timeout=60)
        ctx = fmt([rec])
        self.assertGreaterEqual(rec.get("sources", 0), 30, ctx)
        self.assertLessEqual(rec["sources"], len(sources), ctx)
        self.assertGreaterEqual(rec.get("ports", 0), 10, ctx)
        self.assertLessEqual(rec["ports"], len(targets), ctx)
        self.assertEqual(rec.get("window_s"), 10.0, ctx)
        self.assertTrue(isinstance(rec.get("window_start"), str) and lab.TS_RE.match(rec["window_start"]), ctx)
        sample = rec.get("sample_sources")
        self.assertIsInstance(sample, list, ctx)
        self.assertTrue(0 < len(sample) <= rec["sources"], ctx)
        self.assertTrue(set(sample) <= set(sources), f"sample_sources must be among the probers: {ctx}")
        self.assertEqual(len([r for r in records if r["type"] == "distributed_scan"
                              and r.get("netns") == victim]), 1, f"one alert per window: {ctx}")
        per_source = [r for r in records if r["type"] in ("scan", "scan_progress", "scan_end")
                      and r.get("source") in sources]
        self.assertEqual(per_source, [], f"2 ports per source is no scan:\n{fmt(per_source)}")


if __name__ == "__main__":
    lab.main()
