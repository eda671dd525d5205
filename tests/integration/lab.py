"""Shared harness for scantrace's integration tests (Python 3 stdlib only).

What it provides:

* NetnsLab: two network namespaces, "server" and "client", joined by a veth
  pair. Names are unique per run (they hold the test process's pid):
  ``scantrace-<pid>-<n>-server`` / ``-client``. Addresses, with X unique per
  lab: server 10.231.X.1/24 and fd00:231:X::1/64, client 10.231.X.2/24 and
  fd00:231:X::2/64 (IPv6 with ``nodad``: usable at once). Loopback is up in
  both. Cleanup is guaranteed: ``with`` / try-finally, an atexit hook, SIGTERM
  and SIGHUP turned into KeyboardInterrupt so that finally blocks run, every
  child started with PR_SET_PDEATHSIG, and namespaces left behind by a run that
  was SIGKILLed (its pid no longer alive) removed when the next lab starts.
  Traffic only ever flows inside these namespaces (veth or their loopback).

* Tracer: runs the scantrace binary, reads stdout in a background thread and
  checks that every line is one valid JSON object carrying ``type``, ``v`` and
  ``ts`` (docs/schema.md). Any violation fails the test at the next
  wait_for(), stop() or exit of the ``with`` block.

* Helper programs (start_listener, run_client, ...): small Python programs
  run as ``/usr/bin/python3 -c`` inside a namespace, so their comm is
  "python3" and, because ``ip netns exec`` execs in place, Popen.pid is their
  pid.

* main(): what every test file calls. It parses ``--binary PATH`` (the rest of
  argv goes to unittest, e.g. ``-k ipv6``) and runs unittest.

Self-test of the lab alone (no scantrace binary needed, root):

    /usr/bin/python3 tests/integration/lab.py --selftest
"""

import argparse
import atexit
import ctypes
import itertools
import json
import os
import re
import select
import shutil
import signal
import subprocess
import sys
import threading
import time
import unittest

PYTHON = "/usr/bin/python3"
IP = shutil.which("ip", path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin:/usr/bin:/bin") or "/usr/sbin/ip"

BINARY = os.environ.get("SCANTRACE_BINARY")  # set by main() from --binary

NS_PREFIX = "scantrace-"
_NS_RE = re.compile(r"^scantrace-(\d+)-\d+-(server|client)$")

# Resolved once here: the preexec_fn below runs in a forked child, where it
# should do nothing but the one system call.
_prctl = ctypes.CDLL(None, use_errno=True).prctl
_prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
_prctl.restype = ctypes.c_int
_PR_SET_PDEATHSIG = 1


# ---------------------------------------------------------------------------
# Processes
# ---------------------------------------------------------------------------

def _die_with_parent(sig):
    """preexec_fn: the child gets `sig` when this test process dies, even by
    SIGKILL (a ctest timeout), so no tracer or helper outlives the test."""
    sig_num = int(sig)

    def preexec():
        _prctl(_PR_SET_PDEATHSIG, sig_num, 0, 0, 0)
    return preexec


def _kill(proc, grace=2.0):
    """Stops a Popen: SIGTERM, then SIGKILL after `grace` seconds."""
    if proc.poll() is not None:
        return
    try:
        proc.terminate()
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=5)
    except ProcessLookupError:
        pass


def read_line(proc, timeout, what="a line"):
    """One line from proc.stdout within `timeout` seconds. Reads the pipe's fd
    directly (never through Python's buffer, which could hide a second line
    from select()); what follows the line is kept for the next call."""
    buf = getattr(proc, "_line_buf", b"")
    deadline = time.monotonic() + timeout
    fd = proc.stdout.fileno()
    while b"\n" not in buf:
        left = deadline - time.monotonic()
        if left <= 0:
            proc._line_buf = buf
            raise AssertionError(f"timed out after {timeout}s waiting for {what} from pid {proc.pid}")
        ready, _, _ = select.select([fd], [], [], left)
        if not ready:
            continue
        chunk = os.read(fd, 65536)
        if not chunk:
            proc._line_buf = buf
            try:
                rc = proc.wait(timeout=5)
                err = proc.stderr.read() if proc.stderr else ""
            except subprocess.TimeoutExpired:
                rc, err = "still running", ""
            raise AssertionError(f"pid {proc.pid} closed stdout before {what} (exit {rc}); "
                                 f"partial output {buf!r}; stderr: {str(err).strip()!r}")
        buf += chunk
    line, _, proc._line_buf = buf.partition(b"\n")
    return line.decode("utf-8", "replace") + "\n"


def read_json_line(proc, timeout, what="a JSON line"):
    line = read_line(proc, timeout, what)
    try:
        return json.loads(line)
    except ValueError:
        raise AssertionError(f"pid {proc.pid} printed {line!r}, expected {what}") from None


# ---------------------------------------------------------------------------
# The lab: two namespaces and a veth pair
# ---------------------------------------------------------------------------

_live_labs = set()
_live_tracers = set()
_lab_counter = itertools.count()
_stale_swept = False


def _ip(*args, check=True, timeout=20):
    res = subprocess.run([IP, *args], stdin=subprocess.DEVNULL, capture_output=True, text=True,
                         timeout=timeout)
    if check and res.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)} failed ({res.returncode}): {res.stderr.strip()}")
    return res


def _pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _delete_netns(name):
    """Kills whatever still runs in one of OUR namespaces, then removes it.
    Deleting the namespace also destroys the veth pair."""
    res = _ip("netns", "pids", name, check=False)
    for tok in res.stdout.split():
        try:
            os.kill(int(tok), signal.SIGKILL)
        except (ValueError, ProcessLookupError):
            pass
    res = _ip("netns", "del", name, check=False)
    if res.returncode != 0 and os.path.exists(f"/run/netns/{name}"):
        raise RuntimeError(f"cannot delete netns {name}: {res.stderr.strip()}")


def sweep_stale_namespaces():
    """Removes scantrace-<pid>-* namespaces whose creator is gone (a run that
    was SIGKILLed, e.g. by a ctest timeout)."""
    try:
        names = os.listdir("/run/netns")
    except FileNotFoundError:
        return
    for name in names:
        m = _NS_RE.match(name)
        if m and int(m.group(1)) != os.getpid() and not _pid_alive(int(m.group(1))):
            try:
                _delete_netns(name)
            except RuntimeError as e:
                print(f"lab: {e}", file=sys.stderr)


class NetnsLab:
    """Two namespaces joined by a veth pair; see the module docstring.

    Roles are "server" and "client"; every method taking `ns` accepts a role
    or a full namespace name."""

    SERVER_IF = "st-srv"
    CLIENT_IF = "st-cli"

    def __init__(self):
        global _stale_swept
        if not _stale_swept:
            _stale_swept = True
            sweep_stale_namespaces()
        n = next(_lab_counter)
        pid = os.getpid()
        # X only has to differ between labs that may coexist; 2..251.
        self.x = (pid * 7 + n) % 250 + 2
        base = f"{NS_PREFIX}{pid}-{n}"
        self.names = {"server": f"{base}-server", "client": f"{base}-client"}
        self.server_ip4 = f"10.231.{self.x}.1"
        self.client_ip4 = f"10.231.{self.x}.2"
        self.server_ip6 = f"fd00:231:{self.x}::1"
        self.client_ip6 = f"fd00:231:{self.x}::2"
        self._procs = []
        self._created = []
        self._closed = False

    # -- lifecycle ---------------------------------------------------------
    def __enter__(self):
        _live_labs.add(self)
        try:
            self._create()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, exc_type, exc, tb):
        try:
            self.close()
        except RuntimeError as e:
            if exc_type is None:
                raise
            # Do not hide the test's own failure behind a cleanup problem.
            print(f"lab: {e}", file=sys.stderr)
        return False

    def _create(self):
        srv, cli = self.names["server"], self.names["client"]
        for name in (srv, cli):
            _ip("netns", "add", name)
            self._created.append(name)
        # Both ends are created directly inside their namespaces, so the fixed
        # interface names never collide in the root namespace.
        _ip("link", "add", "name", self.SERVER_IF, "netns", srv, "type", "veth",
            "peer", "name", self.CLIENT_IF, "netns", cli)
        for name, ifname, ip4, ip6 in ((srv, self.SERVER_IF, self.server_ip4, self.server_ip6),
                                       (cli, self.CLIENT_IF, self.client_ip4, self.client_ip6)):
            _ip("-n", name, "link", "set", "lo", "up")
            _ip("-n", name, "addr", "add", f"{ip4}/24", "dev", ifname)
            _ip("-n", name, "-6", "addr", "add", f"{ip6}/64", "dev", ifname, "nodad")
            _ip("-n", name, "link", "set", ifname, "up")
        self._wait_carrier()

    def _wait_carrier(self, timeout=10):
        deadline = time.monotonic() + timeout
        for role, ifname in (("server", self.SERVER_IF), ("client", self.CLIENT_IF)):
            while True:
                out = _ip("-n", self.names[role], "-o", "link", "show", ifname).stdout
                if "LOWER_UP" in out and "state UP" in out:
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{ifname} in {self.names[role]} never came up: {out.strip()}")
                time.sleep(0.05)

    def close(self):
        """Kills the lab's processes and deletes both namespaces. Idempotent;
        never raises before everything was attempted."""
        if self._closed:
            return
        self._closed = True
        errors = []
        for proc in self._procs:
            try:
                _kill(proc, grace=1.0)
            except Exception as e:
                errors.append(f"pid {proc.pid}: {e}")
            for f in (proc.stdout, proc.stderr, proc.stdin):
                if f:
                    f.close()
        for name in reversed(self._created):
            try:
                _delete_netns(name)
            except Exception as e:
                errors.append(str(e))
        _live_labs.discard(self)
        if errors:
            raise RuntimeError("lab cleanup: " + "; ".join(errors))

    # -- queries -----------------------------------------------------------
    def name(self, ns):
        return self.names.get(ns, ns)

    def netns_inode(self, ns):
        """The namespace inode, as scantrace reports it in `netns`."""
        return os.stat(f"/run/netns/{self.name(ns)}").st_ino

    # -- running things inside -------------------------------------------
    def _argv(self, ns, argv):
        return [IP, "netns", "exec", self.name(ns), *argv]

    def run_in(self, ns, argv, timeout=30, check=True, **kw):
        """subprocess.run inside a namespace (text mode, output captured)."""
        kw.setdefault("capture_output", True)
        kw.setdefault("text", True)
        kw.setdefault("stdin", subprocess.DEVNULL)
        res = subprocess.run(self._argv(ns, argv), timeout=timeout,
                             preexec_fn=_die_with_parent(signal.SIGKILL), **kw)
        if check and res.returncode != 0:
            raise AssertionError(f"{argv} in {self.name(ns)} exited {res.returncode}: "
                                 f"stdout={res.stdout!r} stderr={res.stderr!r}")
        return res

    def popen_in(self, ns, argv, **kw):
        """subprocess.Popen inside a namespace; killed when the lab closes.
        `ip netns exec` execs in place, so .pid is the program's own pid."""
        kw.setdefault("stdin", subprocess.DEVNULL)
        kw.setdefault("stdout", subprocess.PIPE)
        kw.setdefault("stderr", subprocess.PIPE)
        kw.setdefault("text", True)
        proc = subprocess.Popen(self._argv(ns, argv), preexec_fn=_die_with_parent(signal.SIGKILL), **kw)
        self._procs.append(proc)
        return proc


def _cleanup_everything():
    for tracer in list(_live_tracers):
        tracer.kill()
    for lab in list(_live_labs):
        try:
            lab.close()
        except Exception as e:
            print(f"lab: {e}", file=sys.stderr)


atexit.register(_cleanup_everything)


def _on_signal(signum, _frame):
    # Restore the default first: a second signal ends the process at once.
    signal.signal(signum, signal.SIG_DFL)
    raise KeyboardInterrupt(f"signal {signum}")


def install_signal_handlers():
    """SIGTERM/SIGHUP unwind like Ctrl-C, so every finally block and context
    manager runs and the namespaces go away. Main thread only."""
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _on_signal)


# ---------------------------------------------------------------------------
# Helper programs (run with /usr/bin/python3 -c, so comm is "python3")
# ---------------------------------------------------------------------------

# argv: family(4|6) host port n_in n_out v6only(0|1|-)
# Prints {"pid","port"} once listening, then per connection: reads n_in bytes,
# writes n_out bytes, waits for the client's FIN (the client closes first),
# closes, prints {"peer","rport","received"}. Runs until killed.
_LISTENER = r"""
import json, os, socket, sys
fam, host, port, n_in, n_out, v6only = sys.argv[1:7]
af = socket.AF_INET6 if fam == "6" else socket.AF_INET
s = socket.socket(af, socket.SOCK_STREAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
if af == socket.AF_INET6 and v6only != "-":
    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, int(v6only))
s.bind((host, int(port)))
s.listen(64)
print(json.dumps({"pid": os.getpid(), "port": s.getsockname()[1]}), flush=True)
while True:
    c, peer = s.accept()
    c.settimeout(20)
    got = 0
    while got < int(n_in):
        d = c.recv(65536)
        if not d:
            break
        got += len(d)
    c.sendall(b"s" * int(n_out))
    while c.recv(65536):
        pass
    c.close()
    print(json.dumps({"peer": peer[0], "rport": peer[1], "received": got}), flush=True)
"""

# argv: family(4|6) host port n_out n_in hold_s
# Connects, prints {"pid","laddr","lport"}, writes n_out bytes, reads n_in
# bytes, stays connected hold_s seconds, closes first, prints {"received"}.
_CLIENT = r"""
import json, os, socket, sys, time
fam, host, port, n_out, n_in, hold = sys.argv[1:7]
s = socket.socket(socket.AF_INET6 if fam == "6" else socket.AF_INET, socket.SOCK_STREAM)
s.settimeout(20)
s.connect((host, int(port)))
la = s.getsockname()
print(json.dumps({"pid": os.getpid(), "laddr": la[0], "lport": la[1]}), flush=True)
s.sendall(b"c" * int(n_out))
got = 0
while got < int(n_in):
    d = s.recv(65536)
    if not d:
        break
    got += len(d)
time.sleep(float(hold))
s.close()
print(json.dumps({"received": got}), flush=True)
"""

# argv: name_hex host n_bytes
# Renames itself (prctl PR_SET_NAME) to arbitrary bytes, listens on host:0,
# connects to itself, exchanges n_bytes each way, closes both ends. Prints
# {"pid","port","lport","comm_hex"} after connecting and {"done":true} at the end.
_HOSTILE = r"""
import ctypes, json, os, socket, sys
name = bytes.fromhex(sys.argv[1])
libc = ctypes.CDLL(None, use_errno=True)
if libc.prctl(15, ctypes.c_char_p(name), 0, 0, 0) != 0:
    sys.exit("prctl(PR_SET_NAME) failed: errno %d" % ctypes.get_errno())
host, n = sys.argv[2], int(sys.argv[3])
srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
srv.bind((host, 0))
srv.listen(4)
port = srv.getsockname()[1]
cli = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
cli.settimeout(20)
cli.connect((host, port))
acc, _ = srv.accept()
acc.settimeout(20)
with open("/proc/self/comm", "rb") as f:
    comm = f.read()[:-1]  # the kernel appends one newline; the name may end in one too
print(json.dumps({"pid": os.getpid(), "port": port, "lport": cli.getsockname()[1],
                  "comm_hex": comm.hex()}), flush=True)
cli.sendall(b"h" * n)
got = 0
while got < n:
    got += len(acc.recv(65536))
acc.sendall(b"H" * n)
got = 0
while got < n:
    got += len(cli.recv(65536))
cli.close()
while acc.recv(65536):
    pass
acc.close()
srv.close()
print(json.dumps({"done": True}), flush=True)
"""


class Listener:
    """A listener helper running in a lab namespace."""

    def __init__(self, proc, info):
        self.proc = proc
        self.pid = info["pid"]
        self.port = info["port"]
        assert self.pid == proc.pid, f"helper pid {self.pid} != Popen pid {proc.pid}"

    def wait_served(self, timeout=15):
        """Waits until the listener has fully served (and closed) one
        connection; returns its report."""
        return read_json_line(self.proc, timeout, "the listener's end-of-connection report")

    def stop(self):
        _kill(self.proc)


def start_listener(lab, ns, host, port=0, family=4, n_in=1000, n_out=1000, v6only=None):
    argv = [PYTHON, "-c", _LISTENER, str(family), host, str(port), str(n_in), str(n_out),
            "-" if v6only is None else str(int(v6only))]
    proc = lab.popen_in(ns, argv)
    return Listener(proc, read_json_line(proc, 15, "the listener's ready line"))


class ClientResult:
    def __init__(self, pid, laddr, lport, received):
        self.pid, self.laddr, self.lport, self.received = pid, laddr, lport, received

    def __repr__(self):
        return f"ClientResult(pid={self.pid}, laddr={self.laddr}, lport={self.lport}, received={self.received})"


def run_client(lab, ns, host, port, family=4, n_out=1000, n_in=1000, hold=0.0, timeout=30):
    """Runs one client connection to completion (held open `hold` seconds
    after the exchange); raises if it fails."""
    proc = lab.popen_in(ns, [PYTHON, "-c", _CLIENT, str(family), host, str(port), str(n_out), str(n_in),
                             str(hold)])
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill(proc)
        raise AssertionError(f"client to [{host}]:{port} in {lab.name(ns)} hung for {timeout}s") from None
    if proc.returncode != 0:
        raise AssertionError(f"client to [{host}]:{port} in {lab.name(ns)} exited {proc.returncode}: {err.strip()}")
    lines = [json.loads(line) for line in out.splitlines()]
    info, done = lines[0], lines[-1]
    assert info["pid"] == proc.pid, f"client pid {info['pid']} != Popen pid {proc.pid}"
    return ClientResult(info["pid"], info["laddr"], info["lport"], done["received"])


HOSTILE_NAME = b"\x1b[31m\xff\xfe\xe2\x80\xaeevil\n\x01"[:15]


def start_hostile(lab, ns, host="127.0.0.1", name=HOSTILE_NAME, n=1000):
    """Starts the renamed self-connecting helper; returns (proc, info)."""
    proc = lab.popen_in(ns, [PYTHON, "-c", _HOSTILE, name.hex(), host, str(n)])
    return proc, read_json_line(proc, 15, "the hostile helper's ready line")


# ---------------------------------------------------------------------------
# Record checks
# ---------------------------------------------------------------------------

TS_RE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z$")
# Code points docs/schema.md says must only ever appear as \uXXXX escapes, and
# DEL, which the writer escapes like the other control bytes.
DECEPTIVE = set("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
                "\u200e\u200f\u2028\u2029\ufeff\x7f")


def _reject_constant(name):
    raise ValueError(f"{name} is not valid JSON")


def _no_duplicate_keys(pairs):
    obj = {}
    for k, v in pairs:
        if k in obj:
            raise ValueError(f"duplicate key {k!r}")
        obj[k] = v
    return obj


def parse_record(raw):
    """Parses one raw stdout line (bytes) strictly; raises ValueError saying
    what is wrong."""
    if not raw.endswith(b"\n"):
        raise ValueError("line is not terminated by a newline")
    text = raw[:-1].decode("utf-8")  # UnicodeDecodeError is a ValueError
    if text != text.strip(" \t\r"):
        raise ValueError("leading or trailing whitespace")
    bad = sorted({f"U+{ord(ch):04X}" for ch in text if ch in DECEPTIVE})
    if bad:
        raise ValueError(f"unescaped {', '.join(bad)} in the line")
    rec = json.loads(text, parse_constant=_reject_constant, object_pairs_hook=_no_duplicate_keys)
    if not isinstance(rec, dict):
        raise ValueError(f"a JSON {type(rec).__name__}, not an object")
    if not isinstance(rec.get("type"), str):
        raise ValueError("no string field 'type'")
    if type(rec.get("v")) is not int or rec["v"] != 1:
        raise ValueError(f"'v' is {rec.get('v')!r}, expected 1")
    if not isinstance(rec.get("ts"), str) or not TS_RE.match(rec["ts"]):
        raise ValueError(f"'ts' is {rec.get('ts')!r}, expected RFC 3339 UTC with microseconds")
    return rec


def fmt(records, limit=40):
    """Records for an assertion message, one per line (the last `limit`)."""
    records = list(records)
    head = f"({len(records)} records, last {limit} shown)\n" if len(records) > limit else ""
    return head + "\n".join(json.dumps(r, ensure_ascii=True) if not isinstance(r, str) else repr(r)
                            for r in records[-limit:])


def is_int(v):
    return type(v) is int


def is_number(v):
    return type(v) in (int, float)


def check_process(tc, proc, pid, comm=None, what=""):
    """Asserts a `process` object belongs to `pid` and is well formed."""
    tc.assertIsInstance(proc, dict, f"{what}: process is {proc!r}, expected the owner pid {pid}")
    for key in ("pid", "tid", "uid", "cgroup_id"):
        tc.assertTrue(is_int(proc.get(key)), f"{what}: process.{key} is {proc.get(key)!r}")
    tc.assertIsInstance(proc.get("comm"), str, f"{what}: process.comm")
    tc.assertEqual(proc["pid"], pid, f"{what}: process.pid")
    if comm is not None:
        tc.assertEqual(proc["comm"], comm, f"{what}: process.comm")


def check_stats(tc, rec, final):
    """Asserts the shape of a stats record."""
    tc.assertEqual(rec.get("type"), "stats", fmt([rec]))
    tc.assertIs(rec.get("final"), final, f"stats.final: {fmt([rec])}")
    tc.assertTrue(is_number(rec.get("uptime_s")) and rec["uptime_s"] >= 0, f"uptime_s: {fmt([rec])}")
    tc.assertIsInstance(rec.get("kernel"), dict, fmt([rec]))
    tc.assertTrue(is_int(rec["kernel"].get("state_events")), f"kernel.state_events: {fmt([rec])}")
    tc.assertIsInstance(rec.get("records"), dict, fmt([rec]))
    tc.assertTrue(all(is_int(v) for v in rec["records"].values()), f"records: {fmt([rec])}")
    tc.assertTrue(is_int(rec.get("filtered")), f"filtered: {fmt([rec])}")
    lost = rec.get("lost")
    tc.assertIsInstance(lost, dict, fmt([rec]))
    for key in ("ringbuf", "conn_map_full", "listener_map_full", "decode", "output"):
        tc.assertTrue(is_int(lost.get(key)), f"lost.{key} missing or not an integer: {fmt([rec])}")


# ---------------------------------------------------------------------------
# The tracer under test
# ---------------------------------------------------------------------------

class Tracer:
    """Runs scantrace with `args` and collects its output.

    JSON mode (default): every stdout line is checked with parse_record();
    __enter__ returns once the `start` record arrived (start_timeout).
    Text mode (expect_json=False): lines are kept as text and not checked;
    __enter__ returns once the process holds a BPF link (hooks attached) or
    printed a line.
    """

    def __init__(self, args=(), binary=None, expect_json=True, start_timeout=30):
        self.binary = binary or BINARY
        if not self.binary:
            raise RuntimeError("no scantrace binary: pass --binary")
        self.args = [str(a) for a in args]
        self.expect_json = expect_json
        self.start_timeout = start_timeout
        self.proc = None
        self.records = []      # parsed records (JSON mode) or text lines
        self.raw_lines = []    # every stdout line as bytes
        self.errors = []       # schema violations: (line number, reason, raw)
        self.start = None
        self.returncode = None
        self._stderr = []
        self._cond = threading.Condition()
        self._eof = False
        self._stopped = False
        self._threads = []

    # -- lifecycle ---------------------------------------------------------
    def __enter__(self):
        self.proc = subprocess.Popen([self.binary, *self.args], stdin=subprocess.DEVNULL,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     preexec_fn=_die_with_parent(signal.SIGTERM))
        _live_tracers.add(self)
        for target in (self._read_stdout, self._read_stderr):
            t = threading.Thread(target=target, daemon=True)
            t.start()
            self._threads.append(t)
        try:
            if self.expect_json:
                self.start = self.wait_for(lambda r: r["type"] == "start", self.start_timeout,
                                           "the start record")
                first = self.records[0]
                if first["type"] != "start":
                    raise AssertionError(f"the first record is not `start`:\n{fmt([first])}")
            else:
                self._wait_attached()
        except BaseException:
            self.kill()
            raise
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None and not self._stopped:
            self.stop()
        else:
            self.kill()
        if exc_type is None:
            self._check_errors()
        return False

    def kill(self):
        """Ends the tracer without any check (cleanup paths)."""
        if self.proc is not None and self.proc.poll() is None:
            try:
                self.proc.send_signal(signal.SIGINT)
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        self._join()
        _live_tracers.discard(self)

    def stop(self, sig=signal.SIGINT, timeout=10):
        """Sends `sig`, waits up to `timeout` s, asserts exit code 0 and (JSON)
        a final stats record last. Returns every record."""
        if self._stopped:
            return self.records
        self._stopped = True
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            self.returncode = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5)
            self._join()
            raise AssertionError(f"scantrace did not exit within {timeout}s of signal {int(sig)}\n"
                                 + self.describe()) from None
        self._join()
        _live_tracers.discard(self)
        self._check_errors()
        if self.returncode != 0:
            raise AssertionError(f"scantrace exited {self.returncode} after signal {int(sig)}, "
                                 f"expected 0\n{self.describe()}")
        if self.expect_json:
            last = self.records[-1] if self.records else None
            if not last or last["type"] != "stats" or last.get("final") is not True:
                raise AssertionError("the last record is not the final stats record (final: true)\n"
                                     + self.describe())
        return self.records

    def _join(self):
        for t in self._threads:
            t.join(timeout=5)
        if not any(t.is_alive() for t in self._threads):
            for f in (self.proc.stdout, self.proc.stderr):
                f.close()

    # -- readers -----------------------------------------------------------
    def _read_stdout(self):
        n = 0
        for raw in self.proc.stdout:
            n += 1
            with self._cond:
                self.raw_lines.append(raw)
                if self.expect_json:
                    try:
                        self.records.append(parse_record(raw))
                    except ValueError as e:
                        self.errors.append((n, str(e), raw))
                else:
                    self.records.append(raw.decode("utf-8", "replace").rstrip("\n"))
                self._cond.notify_all()
        with self._cond:
            self._eof = True
            self._cond.notify_all()

    def _read_stderr(self):
        for raw in self.proc.stderr:
            with self._cond:
                self._stderr.append(raw.decode("utf-8", "replace"))

    @property
    def stderr(self):
        with self._cond:
            return "".join(self._stderr)

    def _check_errors(self):
        with self._cond:
            errors = list(self.errors)
        if errors:
            lines = "\n".join(f"  line {n}: {why}: {raw[:300]!r}" for n, why, raw in errors[:10])
            raise AssertionError(f"scantrace wrote {len(errors)} line(s) that are not valid schema "
                                 f"JSON:\n{lines}")

    def describe(self, limit=40):
        with self._cond:
            recs = list(self.records)
        state = "running" if self.proc.poll() is None else f"exited {self.proc.returncode}"
        err = self.stderr.strip()
        return (f"scantrace {' '.join(self.args)} ({state}); last records:\n{fmt(recs, limit)}\n"
                f"stderr:\n{err[-3000:] if err else '(empty)'}")

    # -- queries -----------------------------------------------------------
    def wait_for(self, pred, timeout=10, what="a matching record"):
        """Returns the first record (or text line) satisfying pred, waiting up
        to `timeout` seconds. Raises AssertionError with a dump otherwise."""
        deadline = time.monotonic() + timeout
        seen = 0
        with self._cond:
            while True:
                self._check_errors()
                for rec in self.records[seen:]:
                    if pred(rec):
                        return rec
                seen = len(self.records)
                left = deadline - time.monotonic()
                if self._eof or left <= 0:
                    break
                self._cond.wait(min(left, 0.5))
        why = "scantrace closed its stdout" if self._eof else f"timed out after {timeout}s"
        raise AssertionError(f"{why} waiting for {what}\n{self.describe()}")

    def snapshot(self):
        with self._cond:
            return list(self.records)

    def _wait_attached(self):
        deadline = time.monotonic() + self.start_timeout
        fd_dir = f"/proc/{self.proc.pid}/fd"
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"scantrace exited {self.proc.returncode} at start\n{self.describe()}")
            with self._cond:
                if self.records:
                    break
            try:
                if any(os.readlink(os.path.join(fd_dir, fd)) == "anon_inode:bpf_link"
                       for fd in os.listdir(fd_dir)):
                    break
            except OSError:
                pass
            time.sleep(0.05)
        else:
            raise AssertionError(f"scantrace attached nothing within {self.start_timeout}s\n{self.describe()}")
        time.sleep(0.5)  # the remaining hooks attach right after the first


def conn_records(records, netns, lport, rport, types=("state", "close")):
    """The records of one connection as seen from one side."""
    return [r for r in records if r["type"] in types and r.get("netns") == netns
            and r.get("lport") == lport and r.get("rport") == rport]


def transitions(records):
    return [(r.get("old"), r.get("new")) for r in records if r["type"] == "state"]


# ---------------------------------------------------------------------------
# Entry point for test files
# ---------------------------------------------------------------------------

def main(description="scantrace integration tests (root)"):
    """Parses --binary (the rest of argv goes to unittest), checks it and
    root, and runs the tests of the calling module."""
    global BINARY
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--binary", required=True, help="path to the scantrace binary (build/scantrace)")
    args, rest = parser.parse_known_args()
    BINARY = os.path.abspath(args.binary)
    if os.geteuid() != 0:
        sys.exit(f"{sys.argv[0]}: these tests need root (BPF, network namespaces)")
    if not os.access(BINARY, os.X_OK):
        sys.exit(f"{sys.argv[0]}: {BINARY} is not an executable file: build it first (scripts/setup)")
    install_signal_handlers()
    unittest.main(module="__main__", argv=[sys.argv[0], *rest], verbosity=2)


# ---------------------------------------------------------------------------
# Self-test of the lab (no scantrace needed)
# ---------------------------------------------------------------------------

def selftest():
    if os.geteuid() != 0:
        sys.exit("lab self-test needs root")
    install_signal_handlers()
    with NetnsLab() as lab:
        print(f"lab {lab.names} x={lab.x}", file=sys.stderr)
        ino = {role: lab.netns_inode(role) for role in ("server", "client")}
        assert ino["server"] != ino["client"] != os.stat("/proc/self/ns/net").st_ino
        out = lab.run_in("server", [PYTHON, "-c", "import os; print(os.stat('/proc/self/ns/net').st_ino)"])
        assert int(out.stdout) == ino["server"], (out.stdout, ino)
        # (listener ns, bind address, family, client ns, address to connect to)
        cases = [("server", lab.server_ip4, 4, "client", lab.server_ip4),
                 ("client", lab.client_ip4, 4, "server", lab.client_ip4),
                 ("server", lab.server_ip6, 6, "client", lab.server_ip6),
                 ("client", lab.client_ip6, 6, "server", lab.client_ip6),
                 ("server", "::", 6, "client", lab.server_ip4),  # dual-stack, IPv4 client
                 ("server", "127.0.0.1", 4, "server", "127.0.0.1"),
                 ("client", "::1", 6, "client", "::1")]
        for lns, bind, family, cns, host in cases:
            lst = start_listener(lab, lns, bind, family=family, v6only=False if bind == "::" else None)
            with open(f"/proc/{lst.pid}/comm") as f:
                assert f.read().strip() == "python3"
            res = run_client(lab, cns, host, lst.port, family=4 if "." in host else 6)
            served = lst.wait_served()
            assert res.received == 1000 and served["received"] == 1000, (res, served)
            print(f"tcp {cns} -> {lns} [{bind}]:{lst.port}: {res}, served {served}", file=sys.stderr)
            lst.stop()
        proc, info = start_hostile(lab, "server")
        assert bytes.fromhex(info["comm_hex"]) == HOSTILE_NAME, info
        assert read_json_line(proc, 15) == {"done": True}
        print(f"hostile helper: comm {bytes.fromhex(info['comm_hex'])!r}", file=sys.stderr)
        names = list(lab.names.values())
    left = [n for n in names if os.path.exists(f"/run/netns/{n}")]
    assert not left, f"namespaces left behind: {left}"
    print("lab self-test: ok", file=sys.stderr)


if __name__ == "__main__":
    if sys.argv[1:] == ["--selftest"]:
        selftest()
    else:
        sys.exit("usage: lab.py --selftest (test files import this module)")
