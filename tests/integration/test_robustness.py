"""scantrace under hostile input, closed pipes, signals, bad command lines,
missing privileges, and its filters and text output.

Run (root): /usr/bin/python3 tests/integration/test_robustness.py --binary build/scantrace [-k NAME]
"""

import json
import os
import select
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import lab  # noqa: E402
from lab import NetnsLab, Tracer, fmt  # noqa: E402

# What the JSON writer must make of lab.HOSTILE_NAME (docs/schema.md): ESC
# escaped (parses back to ESC), each invalid byte -> U+FFFD, U+202E escaped
# (parses back to U+202E), the newline escaped.
HOSTILE_COMM = "\x1b[31m\ufffd\ufffd\u202eevil\n"

# Fixed ports below the ephemeral range, so that no client port collides.
PORT_KEPT = 24001
PORT_DROPPED = 24002


def run_binary(args, timeout=10, **kw):
    return subprocess.run([lab.BINARY, *args], stdin=subprocess.DEVNULL, capture_output=True,
                          timeout=timeout, **kw)


def binary_for_nobody(tmpdir):
    """The binary, or a copy in tmpdir when uid 65534 cannot reach it."""
    path = lab.BINARY
    reachable = True
    d = os.path.dirname(path)
    while True:
        if not os.stat(d).st_mode & stat.S_IXOTH:
            reachable = False
        if d == "/":
            break
        d = os.path.dirname(d)
    mode = os.stat(path).st_mode
    if reachable and mode & stat.S_IXOTH and mode & stat.S_IROTH:
        return path
    os.chmod(tmpdir, 0o755)
    copy = os.path.join(tmpdir, "scantrace")
    shutil.copy2(path, copy)
    os.chmod(copy, 0o755)
    return copy


class RobustnessTest(unittest.TestCase):
    maxDiff = None

    def test_hostile_process_name(self):
        with NetnsLab() as lb, Tracer(["--all-states"]) as tr:
            proc, info = lab.start_hostile(lb, "server", "127.0.0.1")
            self.assertEqual(bytes.fromhex(info["comm_hex"]), lab.HOSTILE_NAME, "prctl did not rename")
            self.assertEqual(lab.read_json_line(proc, 15, "the hostile helper's end"), {"done": True})
            pid, netns = info["pid"], lb.netns_inode("server")
            for lport, rport in ((info["lport"], info["port"]), (info["port"], info["lport"])):
                tr.wait_for(lambda r, lp=lport, rp=rport: r["type"] == "close" and r.get("netns") == netns
                            and r.get("lport") == lp and r.get("rport") == rp,
                            15, f"the close record of 127.0.0.1:{lport} -> {rport}")
            records = tr.stop()
        mine = [r for r in records if isinstance(r.get("process"), dict) and r["process"].get("pid") == pid]
        self.assertTrue(mine, f"no record attributed to the hostile pid {pid}:\n{fmt(records)}")
        types = {r["type"] for r in mine}
        for t in ("listen", "state", "close"):
            self.assertIn(t, types, f"no {t} record of the hostile process:\n{fmt(mine)}")
        for r in mine:
            self.assertIn("evil", r["process"]["comm"], f"the name's information was lost:\n{fmt([r])}")
            self.assertEqual(r["process"]["comm"], HOSTILE_COMM, f"comm not escaped as documented:\n{fmt([r])}")
        raw = [line for line in tr.raw_lines if b"evil" in line]
        self.assertTrue(raw)
        for line in raw:
            for bad in (b"\x1b", b"\xe2\x80\xae", b"\xff", b"\xfe", b"\x01"):
                self.assertNotIn(bad, line, f"raw byte {bad!r} in output line {line!r}")
            self.assertIn(b"\\u202", line.lower(), f"U+202E not written as an escape: {line!r}")

    def test_stdout_closed_by_reader(self):
        # A shell pipeline, exactly as a user would write it.
        proc = subprocess.Popen(["/bin/bash", "-c", 'set -o pipefail; "$0" | head -n 1', lab.BINARY],
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                start_new_session=True)
        try:
            ready, _, _ = select.select([proc.stdout], [], [], 30)
            self.assertTrue(ready, "no output from `scantrace | head -1` within 30 s")
            line = proc.stdout.readline()
            t0 = time.monotonic()
            try:
                rc = proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.fail("`scantrace | head -1` still running 5 s after head printed its line: "
                          "scantrace did not notice its reader went away")
            elapsed = time.monotonic() - t0
            rest = proc.stdout.read()
            err = proc.stderr.read().decode("utf-8", "replace")
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=5)
            proc.stdout.close()
            proc.stderr.close()
        try:
            rec = lab.parse_record(line)
        except ValueError as e:
            self.fail(f"head's line is not a valid record ({e}): {line!r}")
        self.assertEqual(rec["type"], "start", f"head's line is not the start record: {line!r}")
        self.assertEqual(rest, b"", "head printed more than one line")
        self.assertEqual(rc, 0, f"pipeline (pipefail) exit {rc} after {elapsed:.1f}s; expected scantrace to "
                                f"exit 0 when its reader closes stdout; stderr: {err.strip()!r}")

    def test_sigterm_exits_cleanly(self):
        with Tracer() as tr:
            records = tr.stop(sig=signal.SIGTERM)
        lab.check_stats(self, records[-1], final=True)
        finals = [r for r in records if r["type"] == "stats" and r.get("final")]
        self.assertEqual(len(finals), 1, fmt(records))

    def test_periodic_stats(self):
        with Tracer(["--stats-interval", "1"]) as tr:
            rec = tr.wait_for(lambda r: r["type"] == "stats", 5, "a periodic stats record (--stats-interval 1)")
            lab.check_stats(self, rec, final=False)
            records = tr.stop()
        lab.check_stats(self, records[-1], final=True)

    def assert_usage_error(self, args, one_line):
        res = run_binary(args)
        err = res.stderr.decode("utf-8", "replace")
        ctx = f"scantrace {' '.join(args)}: exit {res.returncode}, stdout {res.stdout[:300]!r}, stderr {err!r}"
        self.assertEqual(res.returncode, 2, ctx)
        self.assertEqual(res.stdout, b"", f"errors belong on stderr, stdout stays JSON: {ctx}")
        self.assertTrue(err.strip(), f"no message: {ctx}")
        if one_line:
            self.assertEqual(len(err.splitlines()), 1, f"one stderr line expected: {ctx}")

    def test_bad_flag(self):
        self.assert_usage_error(["--no-such-flag"], one_line=True)

    def test_bad_values(self):
        for args in (["--port", "70000"], ["--state", "NOPE"], ["--peer-scope", "nope"],
                     ["--format", "xml"], ["--stats-interval", "-1"]):
            with self.subTest(args=args):
                self.assert_usage_error(args, one_line=True)

    def test_without_privileges(self):
        with tempfile.TemporaryDirectory() as tmp:
            binary = binary_for_nobody(tmp)
            res = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                                  "--inh-caps=-all", "--bounding-set=-all", binary],
                                 stdin=subprocess.DEVNULL, capture_output=True, timeout=10)
        err = res.stderr.decode("utf-8", "replace")
        ctx = f"exit {res.returncode}, stdout {res.stdout[:300]!r}, stderr {err!r}"
        self.assertEqual(res.returncode, 3, ctx)
        self.assertEqual(res.stdout, b"", ctx)
        self.assertEqual(len(err.splitlines()), 1, f"one stderr line expected: {ctx}")
        self.assertTrue("CAP_BPF" in err or "root" in err, f"the message should say what is missing: {ctx}")

    def test_port_filter(self):
        with NetnsLab() as lb, Tracer(["--all-states", "--port", PORT_KEPT]) as tr:
            dropped = lab.start_listener(lb, "server", lb.server_ip4, port=PORT_DROPPED)
            kept = lab.start_listener(lb, "server", lb.server_ip4, port=PORT_KEPT)
            lab.run_client(lb, "client", lb.server_ip4, PORT_DROPPED)
            dropped.wait_served()
            client = lab.run_client(lb, "client", lb.server_ip4, PORT_KEPT)
            kept.wait_served()
            srv_ns, cli_ns = lb.netns_inode("server"), lb.netns_inode("client")
            tr.wait_for(lambda r: r["type"] == "close" and r.get("netns") == cli_ns
                        and r.get("lport") == client.lport and r.get("rport") == PORT_KEPT,
                        15, "the client-side close record of the kept port")
            tr.wait_for(lambda r: r["type"] == "close" and r.get("netns") == srv_ns
                        and r.get("lport") == PORT_KEPT and r.get("rport") == client.lport,
                        15, "the server-side close record of the kept port")
            records = tr.stop()
        leaked = [r for r in records if ("lport" in r or "rport" in r)
                  and PORT_KEPT not in (r.get("lport"), r.get("rport"))]
        self.assertEqual(leaked, [], f"--port {PORT_KEPT} let other ports through:\n{fmt(leaked)}")
        ours = [r for r in records if r.get("netns") in (srv_ns, cli_ns)]
        for t in ("listen", "state", "close"):
            self.assertTrue(any(r["type"] == t for r in ours), f"no {t} record for the kept port:\n{fmt(ours)}")
        self.assertGreater(records[-1]["filtered"], 0, f"filtered records are counted:\n{fmt(records[-1:])}")

    def test_no_loopback_filter(self):
        with NetnsLab() as lb, Tracer(["--no-loopback"]) as tr:
            srv_ns, cli_ns = lb.netns_inode("server"), lb.netns_inode("client")
            for host, family in (("127.0.0.1", 4), ("::1", 6)):
                lo = lab.start_listener(lb, "server", host, family=family)
                lab.run_client(lb, "server", host, lo.port, family=family)
                lo.wait_served()
            priv = lab.start_listener(lb, "server", lb.server_ip4)
            client = lab.run_client(lb, "client", lb.server_ip4, priv.port)
            priv.wait_served()
            tr.wait_for(lambda r: r["type"] == "close" and r.get("netns") == cli_ns
                        and r.get("lport") == client.lport and r.get("rport") == priv.port,
                        15, "the client-side close record of the private connection")
            tr.wait_for(lambda r: r["type"] == "close" and r.get("netns") == srv_ns
                        and r.get("lport") == priv.port and r.get("rport") == client.lport,
                        15, "the server-side close record of the private connection")
            records = tr.stop()
        loopback = [r for r in records if r.get("peer_scope") == "loopback"
                    or r.get("raddr") in ("127.0.0.1", "::1")]
        self.assertEqual(loopback, [], f"--no-loopback let loopback peers through:\n{fmt(loopback)}")
        self.assertGreater(records[-1]["filtered"], 0, f"filtered records are counted:\n{fmt(records[-1:])}")

    def test_text_format(self):
        with NetnsLab() as lb, Tracer(["--all-states", "--format", "text"], expect_json=False) as tr:
            srv = lab.start_listener(lb, "server", lb.server_ip4)
            client = lab.run_client(lb, "client", lb.server_ip4, srv.port)
            srv.wait_served()
            tr.wait_for(lambda line: lb.client_ip4 in line and lb.server_ip4 in line
                        and str(client.lport) in line, 15, "a text line about the lab connection")
            time.sleep(0.5)
            lines = tr.stop()
        self.assertTrue(lines)
        for raw in tr.raw_lines:
            text = raw.decode("utf-8")  # raises if not UTF-8
            ctrl = [c for c in text.rstrip("\n") if ord(c) < 0x20 and c != "\t" or ord(c) == 0x7f]
            self.assertEqual(ctrl, [], f"control characters in a text line: {raw!r}")
        as_json = []
        for line in lines:
            try:
                if isinstance(json.loads(line), (dict, list)):
                    as_json.append(line)
            except ValueError:
                pass
        self.assertEqual(as_json, [], "--format text printed JSON:\n" + "\n".join(as_json[:10]))
        conn = [line for line in lines if lb.client_ip4 in line and lb.server_ip4 in line]
        self.assertGreaterEqual(len(conn), 4, "expected several lines (state changes, close) about the "
                                "lab connection:\n" + "\n".join(lines[-40:]))
        # Aligned columns: on every line about the connection (same comm, same
        # pid widths) both addresses start at the same offsets.
        for nth in (0, 1):
            offsets = {sorted(line.find(a) for a in (lb.client_ip4, lb.server_ip4))[nth] for line in conn}
            self.assertEqual(len(offsets), 1, f"address column {nth + 1} is not aligned:\n" + "\n".join(conn))


if __name__ == "__main__":
    lab.main()
