#!/usr/bin/python3
"""scantrace benchmarks: run by scripts/bench (root). Prints a markdown table
and writes it to bench/results/<date>.md.

Every comparison alternates "off" and "on" rounds in one run and reports
medians with min-max: the machine is shared and noisy, so only side-by-side
ratios mean much. Traffic stays on loopback or inside namespaces this script
creates (tests/integration/lab.py) and removes.

Sections (each can be chosen with --only):
  churn     loopback and veth connect/write/close rate, scantrace off vs on
  bpfcost   mean BPF run time per event and program (kernel.bpf_stats_enabled,
            on for the measured window only, then restored)
  latency   threshold-crossing probe -> `scan` line on stdout
  serial    decode + JSON writer records/s (synthetic, one core)
  probes    closed-port probe path: hping3 SYN flood from a namespace, RSTs/s
            the victim namespace sent (its Tcp OutRsts), scantrace off vs on
  e2e       state records/s through scantrace into a pipe that is read and
            discarded (loopback churn), with lost.ringbuf from the final stats
  memory    scantrace's RSS (idle, churn, spoofed-source flood), BPF map
            memory (start record, bpftool during the flood), source table
  comparators  loopback churn with scantrace, a bpftrace script, BCC and
            libbpf-tools tcpstates, tcpdump + `ss -tanp` every second, each in
            turn against "off" in the same rounds
"""
import argparse
import contextlib
import datetime
import fcntl
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))
import lab  # noqa: E402

PY = "/usr/bin/python3"


class Tracer:
    """scantrace with stdout lines timestamped on arrival (time.time())."""

    def __init__(self, binary, args=()):
        self.proc = subprocess.Popen([binary, "--stats-interval", "0", *args], stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
        self.lines = []  # (arrival time, record)
        self.cond = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()
        self.wait(lambda r: r["type"] == "start", 30)

    def _read(self):
        for raw in self.proc.stdout:
            t = time.time()
            try:
                rec = json.loads(raw)
            except ValueError:
                continue
            with self.cond:
                self.lines.append((t, rec))
                self.cond.notify_all()

    def wait(self, pred, timeout):
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                for t, r in self.lines:
                    if pred(r):
                        return t, r
                left = deadline - time.monotonic()
                if left <= 0 or self.proc.poll() is not None:
                    raise RuntimeError("scantrace: no matching record; stderr: " +
                                       self.proc.stderr.read().decode(errors="replace")[-500:])
                self.cond.wait(left)

    def stop(self):
        self.proc.send_signal(2)
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        time.sleep(0.1)
        return [r for _, r in self.lines]


class Drain:
    """A program whose stdout goes into a pipe that a thread reads in large
    chunks and throws away, counting lines (and lines holding `count`, e.g.
    b'"type":"state"') and keeping the last bytes: a sink as cheap as a
    consumer can be, the same for scantrace and for every comparator. stderr
    goes to a temporary file (read for readiness and error lines).

    ready: None (started), "line" (first stdout line), or a bytes pattern
    that must appear on stdout or stderr."""

    TAIL = 1 << 18

    def __init__(self, argv, ready="line", count=None, timeout=60):
        self.argv = argv
        self.err = tempfile.TemporaryFile()
        # SIGTERM when bench.py dies, however it dies (lab.py's helper).
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=self.err,
                                     preexec_fn=lab._die_with_parent(signal.SIGTERM))
        try:
            fcntl.fcntl(self.proc.stdout.fileno(), 1031, 1 << 20)  # F_SETPIPE_SZ: 1 MiB
        except OSError:
            pass
        self.pattern = count
        self.lines = 0
        self.matches = 0
        self.head = b""
        self.tail = b""
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()
        if ready is not None:
            self._wait_ready(ready, timeout)

    def _read(self):
        fd = self.proc.stdout.fileno()
        keep = len(self.pattern) - 1 if self.pattern else 0
        prev = b""
        while True:
            chunk = os.read(fd, 1 << 20)
            if not chunk:
                break
            n = chunk.count(b"\n")
            m = (prev + chunk).count(self.pattern) if self.pattern else 0
            with self.lock:
                self.lines += n
                self.matches += m
                if len(self.head) < 65536:
                    self.head += chunk[:65536]
                self.tail = (self.tail + chunk)[-self.TAIL:]
            if keep:
                prev = chunk[-keep:]

    def stderr(self):
        self.err.seek(0)
        return self.err.read().decode(errors="replace")

    def output(self):
        """stderr and the first stdout bytes (BCC, e.g., says why it fails on stdout)."""
        with self.lock:
            head = self.head
        return self.stderr() + "\n" + head.decode(errors="replace")

    def _wait_ready(self, ready, timeout):
        deadline = time.monotonic() + timeout
        while True:
            with self.lock:
                head = self.head
            if ready == "line" and b"\n" in head:
                return
            if isinstance(ready, bytes) and (ready in head or ready.decode() in self.stderr()):
                return
            if self.proc.poll() is not None:
                raise RuntimeError(f"{os.path.basename(self.argv[0])} exited {self.proc.returncode} before it was "
                                   f"ready: {error_line(self.output())}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"{os.path.basename(self.argv[0])} not ready within {timeout}s: "
                                   f"{error_line(self.output())}")
            time.sleep(0.02)

    def counts(self):
        with self.lock:
            return self.lines, self.matches

    def stop(self, sig=signal.SIGINT, timeout=20):
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.thread.join(timeout=10)
        self.proc.stdout.close()
        return self.proc.returncode

    def records(self):
        """JSON records among the last bytes (scantrace)."""
        out = []
        for raw in self.tail.split(b"\n"):
            try:
                out.append(json.loads(raw))
            except ValueError:
                pass
        return out

    def final_stats(self):
        for r in reversed(self.records()):
            if isinstance(r, dict) and r.get("type") == "stats" and r.get("final"):
                return r
        raise RuntimeError(f"no final stats record from {self.argv}; stderr: {error_line(self.output())}")

    def start_record(self):
        return json.loads(self.head.split(b"\n", 1)[0])


def error_line(text):
    """The telling lines of an error output: up to two that say 'unable',
    'cannot', 'failed', 'error' or 'not found' (in that order of preference),
    else the last non-empty one."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    words = ("unable", "cannot", "failed", "error", "not found")
    hits = []
    for w in words:
        hits += [ln for ln in lines if w in ln.lower() and ln not in hits]
    return " / ".join(hits[:2]) if hits else (lines[-1] if lines else "(no output)")


def loopback_poke():
    """One loopback connection that carries a byte (listener, connect, send,
    accept, read, close): a few state records and no scan probe (a connection
    closed without data would count as a connect-scan probe from 127.0.0.1,
    and then every later SYN from 127.0.0.1 would too)."""
    with socket.socket() as lsn:
        lsn.bind(("127.0.0.1", 0))
        lsn.listen(1)
        with socket.create_connection(lsn.getsockname(), timeout=2) as c:
            c.sendall(b"x")
            a, _ = lsn.accept()
            with a:
                a.settimeout(2)
                a.recv(1)


def scantrace_drain(args, extra=(), timeout=30, count=b'"type":"close"'):
    """scantrace writing into a Drain, returned once it consumes kernel
    records: the `start` line comes before the listener inventory, and until
    that is done the ring buffer is not read (a load started right after
    `start` loses records, and that start-up gap is not what is measured
    here). So: loopback connections every 20 ms until a `count` line (a close
    record by default; pass b'"type":"state"' with --all-states to count
    state records) arrives. With --attach-only nothing ever arrives: the
    hooks are attached once `start` is out, which is all that is needed."""
    d = Drain([args.binary, "--stats-interval", "0", *extra], ready="line", count=count)
    t0 = time.monotonic()
    while d.counts()[1] == 0 and "--attach-only" not in extra:
        if d.proc.poll() is not None or time.monotonic() - t0 > timeout:
            d.stop()
            raise RuntimeError(f"scantrace wrote no state record within {timeout}s: {error_line(d.output())}")
        loopback_poke()
        time.sleep(0.02)
    d.ready_s = time.monotonic() - t0
    return d

def med(xs):
    return statistics.median(xs) if xs else float("nan")


def spread(xs, fmt="{:.0f}"):
    return f"{fmt.format(med(xs))} ({fmt.format(min(xs))}–{fmt.format(max(xs))})" if xs else "n/a"


# ---------------------------------------------------------------- churn ---
def churn_self(args, threads=2, seconds=None):
    exe = os.path.join(args.build, "bench", "churn")
    seconds = seconds or args.seconds
    out = subprocess.run([exe, "--self", "--seconds", str(seconds), "--threads", str(threads)],
                         capture_output=True, text=True, check=True, timeout=seconds + 30).stdout
    return json.loads(out)


# scantrace configurations the churn section compares, each against the same
# round's churn without scantrace.
CHURN_MODES = (
    ("default", ()),
    ("--all-states", ("--all-states",)),
    ("--attach-only (every hook attached, every program returns at once: the floor)", ("--attach-only",)),
)


PROBE_MODES = (
    ("default", ()),
    ("--attach-only (every program returns at once: the floor)", ("--attach-only",)),
)


def churn_modes(args, runner, label, modes=CHURN_MODES, rounds=None):
    """Every round runs the workload once without scantrace and once per
    entry of modes ((name, extra arguments), ...), in an order rotated by one
    per round; returns the off rates and {mode: (rates, ratios to the round's
    off, lost.ringbuf per round)}."""
    names = ["off"] + [m for m, _ in modes]
    extra = dict(modes)
    res = {m: ([], [], []) for m in names[1:]}
    off = []
    for i in range(rounds or args.rounds):
        order = names[i % len(names):] + names[:i % len(names)]
        got = {}
        for mode in order:
            tracer = scantrace_drain(args, extra[mode]) if mode != "off" else None
            try:
                got[mode] = runner()
            finally:
                if tracer:
                    tracer.stop()
                    res[mode][2].append(tracer.final_stats()["lost"]["ringbuf"])
        off.append(got["off"])
        for m in names[1:]:
            res[m][0].append(got[m])
            res[m][1].append(got[m] / got["off"])
        print(f"  {label} round {i + 1}: " + ", ".join(f"{m.split(' ')[0]} {got[m]:.0f}/s" for m in names),
              file=sys.stderr)
    return off, res


def bench_churn(args, rows):
    churn = os.path.join(args.build, "bench", "churn")

    def add_rows(where, off, res):
        for mode, (rates, ratios, lost) in res.items():
            rows.append((f"Connection churn, {where}, scantrace {mode} (conn/s; lost.ringbuf {sum(lost)})",
                         spread(off), spread(rates), spread(ratios, "{:.3f}"),
                         "on/off ≥ 0.98" if mode == "default" else ""))

    def loopback():
        return churn_self(args)["conns_per_s"]

    add_rows("loopback", *churn_modes(args, loopback, "loopback churn"))

    with lab.NetnsLab() as L:
        srv = L.popen_in("server", [churn, "--listen", f"{L.server_ip4}:9000"])
        time.sleep(0.3)

        def veth():
            out = L.run_in("client", [churn, "--connect", f"{L.server_ip4}:9000", "--seconds", str(args.seconds),
                                      "--threads", "2"]).stdout
            return json.loads(out)["conns_per_s"]

        add_rows("veth between namespaces", *churn_modes(args, veth, "veth churn"))
        srv.kill()


# -------------------------------------------------------------- bpfcost ---
def prog_stats():
    out = subprocess.run(["bpftool", "-j", "prog", "show"], capture_output=True, text=True, check=True).stdout
    return {p["id"]: p for p in json.loads(out) if p.get("name", "").startswith("st_")}


@contextlib.contextmanager
def bpf_run_stats():
    """kernel.bpf_stats_enabled=1 for the block only (then restored); yields a
    list that receives, at the end, (name, type, events, run ns) per
    scantrace program that ran in the block."""
    path = "/proc/sys/kernel/bpf_stats_enabled"
    old = open(path).read().strip()
    out = []
    with open(path, "w") as f:
        f.write("1")
    try:
        before = prog_stats()
        yield out
        after = prog_stats()
    finally:
        with open(path, "w") as f:
            f.write(old)
    for pid, p in sorted(after.items(), key=lambda kv: kv[1]["name"]):
        b = before.get(pid, {})
        cnt = p.get("run_cnt", 0) - b.get("run_cnt", 0)
        if cnt:
            out.append((p["name"], p.get("type"), cnt, p.get("run_time_ns", 0) - b.get("run_time_ns", 0)))


def bench_bpfcost(args, rows):
    churn = os.path.join(args.build, "bench", "churn")
    # A Drain, not the JSON-parsing Tracer: a busy reader preempts the
    # programs it measures (tracing programs are preemptible here), and
    # bpf_stats counts that time as run time.
    tracer = scantrace_drain(args, ("--scan-quiet", "1"))
    try:
        with bpf_run_stats() as ran:
            subprocess.run([churn, "--self", "--seconds", "2", "--threads", "2"], capture_output=True, check=True)
            with lab.NetnsLab() as L:
                L.run_in("client", ["nmap", "-n", "-Pn", "-sS", "-T4", "--max-retries", "0", "-p", "1-3000",
                                    L.server_ip4], timeout=120)
                L.run_in("client", ["nmap", "-n", "-Pn", "-sU", "-T5", "--max-retries", "0", "-p", "1-200",
                                    L.server_ip4], timeout=120)
    finally:
        tracer.stop()
    for name, ptype, cnt, ns in ran:
        rows.append((f"BPF `{name}` ({ptype}) ns/event", f"{cnt} events", f"{ns / cnt:.0f}", "", "≤ 50"))
    # The floor: the same programs returning at once (--attach-only) over the
    # same churn. What bpf_stats shows then is its own clock reads plus the
    # programs' entry, below which no handler can go.
    tracer = scantrace_drain(args, ("--attach-only",))
    try:
        with bpf_run_stats() as ran:
            subprocess.run([churn, "--self", "--seconds", "2", "--threads", "2"], capture_output=True, check=True)
    finally:
        tracer.stop()
    for name, ptype, cnt, ns in ran:
        rows.append((f"BPF `{name}` ({ptype}) ns/event with --attach-only (returns at once: the floor)",
                     f"{cnt} events", f"{ns / cnt:.0f}", ""))


# -------------------------------------------------------------- latency ---
SENDER = r"""
import socket, sys, time
src, dst, first_port, n = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
def probe(port):
    s = socket.socket(); s.bind((src, 0))
    try: s.connect((dst, port))
    except OSError: pass
    s.close()
for p in range(first_port, first_port + n - 1):
    probe(p)
time.sleep(0.05)
t = time.time(); probe(first_port + n - 1)
print(repr(t), flush=True)
"""


def bench_latency(args, rows):
    threshold = 20
    lat, klat = [], []
    tracer = Tracer(args.binary, ["--scan-ports", str(threshold), "--scan-quiet", "1"])
    try:
        with lab.NetnsLab() as L:
            base = L.client_ip4.rsplit(".", 1)[0]
            for i in range(args.latency_runs):
                src = f"{base}.{100 + i}"
                L.run_in("client", ["ip", "addr", "add", f"{src}/24", "dev", L.CLIENT_IF])
                out = L.run_in("client", [PY, "-c", SENDER, src, L.server_ip4, str(2000 + 40 * i),
                                          str(threshold)]).stdout
                t_send = float(out.strip())
                t_line, rec = tracer.wait(lambda r: r["type"] == "scan" and r["source"] == src, 10)
                lat.append((t_line - t_send) * 1e3)
                k = datetime.datetime.strptime(rec["ts"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(
                    tzinfo=datetime.timezone.utc).timestamp()
                klat.append((t_line - k) * 1e3)
    finally:
        tracer.stop()
    rows.append((f"Alert latency: crossing probe sent -> `scan` line read (ms, {len(lat)} runs)",
                 "", f"median {med(lat):.2f}, max {max(lat):.2f}", ""))
    rows.append((f"Alert latency: kernel saw the crossing -> line read (ms, {len(klat)} runs)",
                 "", f"median {med(klat):.2f}, max {max(klat):.2f}", ""))


# --------------------------------------------------------------- serial ---
def bench_serial(args, rows):
    exe = os.path.join(args.build, "bench", "serializer_bench")
    out = json.loads(subprocess.run([exe, "1000000"], capture_output=True, text=True, check=True).stdout)
    rows.append(("Serializer: decode + JSON, records/s (one core, 5 rounds)", "",
                 f"{out['records_per_s_median']:.0f} ({out['min']:.0f}–{out['max']:.0f})", ""))

# --------------------------------------------------------------- probes ---
HPING = "/usr/sbin/hping3"
CLOSED_PORT = 9  # nothing listens in a fresh namespace


def ns_snmp_tcp(pid):
    """Tcp counters of the namespace `pid` lives in (/proc/PID/net/snmp)."""
    rows = [ln.split() for ln in open(f"/proc/{pid}/net/snmp") if ln.startswith("Tcp:")]
    return dict(zip(rows[0][1:], (int(v) for v in rows[1][1:])))


def ns_rx_packets(pid, ifname):
    for ln in open(f"/proc/{pid}/net/dev"):
        name, _, rest = ln.partition(":")
        if name.strip() == ifname:
            return int(rest.split()[1])
    raise RuntimeError(f"no {ifname} in /proc/{pid}/net/dev")


def park(L, role):
    """A `sleep` inside a lab namespace, returned once it is in there: its
    /proc/PID/net shows that namespace's counters."""
    proc = L.popen_in(role, ["sleep", "3600"])
    want, deadline = L.netns_inode(role), time.monotonic() + 10
    while os.stat(f"/proc/{proc.pid}/ns/net").st_ino != want:
        if time.monotonic() > deadline or proc.poll() is not None:
            raise RuntimeError(f"could not start a process in {L.name(role)}")
        time.sleep(0.01)
    return proc


def stop_proc(proc, sig=signal.SIGINT, timeout=5):
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def bench_probes(args, rows):
    """hping3 -S --flood at a closed port from the client namespace. Measured
    on the victim: the server namespace's Tcp OutRsts, read from
    /proc/<pid>/net/snmp of a process parked there, over a fixed window after a
    warm-up. Each RST is one SYN the victim's stack fully handled down the
    closed-port path (scantrace's tcp_reset hook runs in it), so RSTs/s is
    exactly the probe rate the victim sustained; the veth's rx_packets is
    reported too (packets that reached the victim's stack)."""
    rx = []
    with lab.NetnsLab() as L:
        anchor = park(L, "server")

        def flood():
            h = L.popen_in("client", ["timeout", "-s", "INT", str(args.probe_seconds + 5), HPING, "-q", "-S",
                                      "--flood", "-p", str(CLOSED_PORT), L.server_ip4])
            try:
                time.sleep(0.5)  # hping3 up and the path warm
                r0, p0, t0 = ns_snmp_tcp(anchor.pid)["OutRsts"], ns_rx_packets(anchor.pid, L.SERVER_IF), \
                    time.monotonic()
                time.sleep(args.probe_seconds)
                r1, p1, t1 = ns_snmp_tcp(anchor.pid)["OutRsts"], ns_rx_packets(anchor.pid, L.SERVER_IF), \
                    time.monotonic()
            finally:
                stop_proc(h)
            if r1 - r0 <= 0:
                raise RuntimeError(f"hping3 flood produced no RST on the victim: {h.stderr.read()[-300:]}")
            rx.append((p1 - p0) / (t1 - t0))
            return (r1 - r0) / (t1 - t0)

        off, res = churn_modes(args, flood, "closed-port SYN flood", modes=PROBE_MODES, rounds=args.probe_rounds)
        rx_rounds = list(rx)
        # Where the "on" time goes: one more on-round with BPF run-time stats.
        tracer = scantrace_drain(args)
        try:
            with bpf_run_stats() as ran:
                t0 = time.monotonic()
                rate = flood()
                dt = time.monotonic() - t0
        finally:
            tracer.stop()
        cost = [f"`{name}` {cnt / dt:.0f}/s × {ns / cnt:.0f} ns = {ns / dt / 1e7:.1f} % of a CPU"
                for name, _, cnt, ns in ran]
    for mode, (on, ratios, lost) in res.items():
        rows.append((f"Closed-port probe path, scantrace {mode}: victim RSTs/s under hping3 -S --flood (one source; "
                     f"victim rx {med(rx_rounds):.0f} packets/s median; lost.ringbuf {sum(lost)})",
                     spread(off), spread(on), spread(ratios, "{:.3f}"), "on/off ≥ 0.97" if mode == "default" else ""))
    rows.append((f"Closed-port probe path, one more on-round with kernel.bpf_stats_enabled ({rate:.0f} RSTs/s): "
                 "BPF programs that ran, events/s × mean ns = CPU share", "", "; ".join(cost), ""))


# ------------------------------------------------------------------ e2e ---
def proc_cpu_s(pid):
    """utime + stime of a process in seconds (/proc/PID/stat)."""
    fields = open(f"/proc/{pid}/stat").read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def bench_e2e(args, rows):
    """Loopback churn (bench/churn --self, --e2e-threads) with scantrace's
    stdout in a Drain. State records/s = `"type":"state"` lines the drain read
    while churn ran, over that window (lines still buffered at its end are not
    counted: a slight underestimate); all of them reach the sink (final
    records.state, compared with kernel.state_events), lost.ringbuf must be
    0. Alternates with churn alone (off) for the cost on the workload."""

    def series(extra, label):
        off, on, ratios, rates, lost, written, cpu = [], [], [], [], [], [], []
        for i in range(args.e2e_rounds):
            order = ("off", "on") if i % 2 == 0 else ("on", "off")
            got = {}
            for mode in order:
                if mode == "off":
                    got["off"] = churn_self(args, args.e2e_threads, args.e2e_seconds)["conns_per_s"]
                    continue
                d = scantrace_drain(args, extra, count=b'"type":"state"')
                try:
                    _, s0 = d.counts()
                    c0, t0 = proc_cpu_s(d.proc.pid), time.monotonic()
                    res = churn_self(args, args.e2e_threads, args.e2e_seconds)
                    c1, t1 = proc_cpu_s(d.proc.pid), time.monotonic()
                    _, s1 = d.counts()
                finally:
                    d.stop()
                st = d.final_stats()
                got["on"] = res["conns_per_s"]
                rates.append((s1 - s0) / (t1 - t0))
                lost.append(st["lost"]["ringbuf"])
                written.append((st["records"]["state"], st["kernel"]["state_events"]))
                cpu.append((c1 - c0) / (t1 - t0))
            off.append(got["off"])
            on.append(got["on"])
            ratios.append(got["on"] / got["off"])
            print(f"  e2e {label} round {i + 1}: {rates[-1]:.0f} state records/s, lost.ringbuf {lost[-1]}, "
                  f"state records {written[-1][0]} of {written[-1][1]} kernel events, scantrace CPU "
                  f"{cpu[-1] * 100:.0f}%; churn off {got['off']:.0f} on {got['on']:.0f} conn/s", file=sys.stderr)
        rows.append((f"End to end, {label}: state records/s into a discarding pipe (loopback churn, "
                     f"{args.e2e_threads} threads; lost.ringbuf per round {lost}; state records written / kernel "
                     f"state_events per round {[round(w / k, 3) if k else None for w, k in written]}; scantrace CPU "
                     f"{spread([c * 100 for c in cpu])} %)",
                     "", spread(rates), "", "≥ 200000/s, lost 0"))
        rows.append((f"End to end, {label}: the churn itself (conn/s)", spread(off), spread(on),
                     spread(ratios, "{:.3f}")))
        return sum(lost)

    backlog_drain(args, rows)
    if series(("--all-states",), "--all-states, default ring buffer") or args.e2e_big_ringbuf:
        # 6 MiB more than the default 2 MiB ring buffer: over the default
        # 64 MiB --max-memory, which is raised to match.
        series(("--all-states", "--ringbuf-size", "8388608", "--max-memory", "72"),
               "--all-states --ringbuf-size 8388608 --max-memory 72")


def backlog_drain(args, rows):
    """What the reader sustains when the workload is not the limit: scantrace
    (--all-states, a 64 MiB ring buffer) is stopped with SIGSTOP while 1 s of
    loopback churn fills the ring buffer, then continued; rate = state lines
    that reached the pipe / time from SIGCONT to the last one (polled every
    2 ms). The workload cannot go faster than the 2 cores allow with both
    ends traced, so the churn-bound e2e rate below understates the reader."""
    rates, lost, counts = [], [], []
    for _ in range(args.e2e_rounds):
        d = scantrace_drain(args, ("--all-states", "--ringbuf-size", str(64 << 20), "--max-memory", "130"),
                            count=b'"type":"state"')
        try:
            time.sleep(0.3)
            os.kill(d.proc.pid, signal.SIGSTOP)
            time.sleep(0.1)
            _, s0 = d.counts()
            churn_self(args, 2, 1.0)
            t0 = time.monotonic()
            os.kill(d.proc.pid, signal.SIGCONT)
            last, t_last, quiet_since = s0, t0, t0
            while time.monotonic() - quiet_since < 0.5:
                time.sleep(0.002)
                _, n = d.counts()
                if n != last:
                    last, t_last = n, time.monotonic()
                    quiet_since = t_last
        finally:
            d.stop()
        st = d.final_stats()
        lost.append(st["lost"]["ringbuf"])
        counts.append(last - s0)
        rates.append((last - s0) / (t_last - t0) if t_last > t0 else 0)
        print(f"  e2e backlog: {last - s0} state lines in {t_last - t0:.3f} s, lost.ringbuf {lost[-1]}",
              file=sys.stderr)
    rows.append((f"End to end, backlog drain: state records/s from a full ring buffer to the pipe (--all-states "
                 f"--ringbuf-size 64 MiB; scantrace stopped during 1 s of loopback churn, then continued; state "
                 f"records per round {counts}; lost.ringbuf per round {lost})", "", spread(rates), "",
                 "≥ 200000/s, lost 0"))


# --------------------------------------------------------------- memory ---
def proc_status_kib(pid):
    out = {}
    for ln in open(f"/proc/{pid}/status"):
        k, _, v = ln.partition(":")
        if v.strip().endswith("kB"):
            out[k] = int(v.split()[0])
    return out


class RssSampler:
    """Max VmRSS (and its parts at that moment) sampled every 50 ms."""

    def __init__(self, pid):
        self.pid, self.max, self.at_max, self.stop_ev = pid, 0, {}, threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while not self.stop_ev.is_set():
            try:
                st = proc_status_kib(self.pid)
            except OSError:
                return
            if st.get("VmRSS", 0) > self.max:
                self.max, self.at_max = st["VmRSS"], st
            self.stop_ev.wait(0.05)

    def stop(self):
        self.stop_ev.set()
        self.thread.join()


def map_memlock(pid):
    """bytes_memlock (bpftool) of the BPF maps this pid holds, found by the
    map_id in its fds' fdinfo: (st_* maps, all of them, per-map dict)."""
    ids = set()
    for fd in os.listdir(f"/proc/{pid}/fdinfo"):
        try:
            for ln in open(f"/proc/{pid}/fdinfo/{fd}"):
                if ln.startswith("map_id:"):
                    ids.add(int(ln.split()[1]))
        except OSError:
            pass
    maps = json.loads(subprocess.run(["bpftool", "-j", "map", "show"], capture_output=True, text=True,
                                     check=True).stdout)
    mine = {m["name"]: m.get("bytes_memlock", 0) for m in maps if m["id"] in ids}
    entries = {m["name"]: m.get("max_entries") for m in maps if m["id"] in ids}
    return sum(v for k, v in mine.items() if k.startswith("st_")), sum(mine.values()), mine, entries


def bpf_mmap_rss_kib(pid):
    """Resident kB of the process's mappings of BPF objects (the ring buffer:
    its data pages are mapped twice), from /proc/PID/smaps."""
    total, in_bpf = 0, False
    for ln in open(f"/proc/{pid}/smaps"):
        first = ln.split(None, 1)[0]
        if "-" in first and not first.endswith(":"):
            in_bpf = "bpf" in ln.split(None, 5)[-1] if len(ln.split()) >= 6 else False
        elif in_bpf and first == "Rss:":
            total += int(ln.split()[1])
    return total


MIB = 1024 * 1024


def bench_memory(args, rows):
    """Userspace: VmHWM of scantrace reset (/proc/PID/clear_refs 5) once the
    start record is out, so each phase's peak excludes the start-up one, which
    is reported apart; VmRSS sampled every 50 ms. A fresh scantrace per phase.
    Kernel: the start record's memory, bpftool's memlock of the maps the
    process holds, during the flood."""
    results = {}

    def phase(name, workload):
        d = scantrace_drain(args)
        pid = d.proc.pid
        try:
            startup_hwm = proc_status_kib(pid)["VmHWM"]
            with open(f"/proc/{pid}/clear_refs", "w") as f:
                f.write("5")
            sampler = RssSampler(pid)
            info = workload(d) or {}
            hwm = proc_status_kib(pid)["VmHWM"]
            sampler.stop()
            bpf_kib = bpf_mmap_rss_kib(pid)
        finally:
            d.stop()
        results[name] = dict(startup_hwm=startup_hwm, hwm=hwm, rss=sampler.max, parts=sampler.at_max,
                             start=d.start_record(), final=d.final_stats(), bpf_kib=bpf_kib, **info)
        print(f"  memory {name}: VmHWM {hwm} kB (start-up {startup_hwm} kB), max VmRSS {sampler.max} kB",
              file=sys.stderr)

    phase("idle", lambda d: time.sleep(args.memory_idle_seconds))
    phase("churn", lambda d: {"churn": churn_self(args, args.e2e_threads, args.memory_churn_seconds)})

    def flood(d):
        with lab.NetnsLab() as L:
            # RSTs to the spoofed sources leave through the client (which drops
            # them): the victim answers like a host with a default route, and
            # needs one neighbour entry, not one per source.
            L.run_in("server", ["ip", "route", "add", "default", "via", L.client_ip4])
            anchor = park(L, "server")
            r0, p0 = ns_snmp_tcp(anchor.pid)["OutRsts"], ns_rx_packets(anchor.pid, L.SERVER_IF)
            t0 = time.monotonic()
            h = L.popen_in("client", ["timeout", "-s", "INT", str(args.flood_seconds + 5), HPING, "-q", "-S",
                                      "--rand-source", "--flood", "-p", str(CLOSED_PORT), L.server_ip4])
            memlock = None
            try:
                while time.monotonic() - t0 < args.flood_seconds:
                    if ns_rx_packets(anchor.pid, L.SERVER_IF) - p0 >= args.flood_packets:
                        break
                    if memlock is None and time.monotonic() - t0 > 1:
                        memlock = map_memlock(d.proc.pid)
                    time.sleep(0.05)
                late = map_memlock(d.proc.pid)
            finally:
                stop_proc(h)
            t1 = time.monotonic()
            time.sleep(0.3)
            r1, p1 = ns_snmp_tcp(anchor.pid)["OutRsts"], ns_rx_packets(anchor.pid, L.SERVER_IF)
        return {"flood": dict(rx=p1 - p0, rsts=r1 - r0, seconds=t1 - t0), "memlock": memlock or late,
                "memlock_late": late}

    phase("flood", flood)

    def rss_cell(r):
        p = r["parts"]
        return (f"VmHWM {r['hwm'] / 1024:.1f}, max VmRSS {r['rss'] / 1024:.1f} "
                f"(anon {p.get('RssAnon', 0) / 1024:.1f}, file {p.get('RssFile', 0) / 1024:.1f}, "
                f"shmem {p.get('RssShmem', 0) / 1024:.1f}; BPF ring buffer mmap {r['bpf_kib'] / 1024:.1f} of it); "
                f"start-up VmHWM {r['startup_hwm'] / 1024:.1f}")

    ch = results["churn"]["churn"]
    fl = results["flood"]["flood"]
    descr = {"idle": f"idle {args.memory_idle_seconds:g} s",
             "churn": f"loopback churn, {ch['conns_per_s']:.0f} conn/s for {ch['seconds']:.1f} s",
             "flood": (f"spoofed-source SYN flood to a closed port, victim rx {fl['rx']} packets / "
                       f"{fl['rsts']} RSTs in {fl['seconds']:.1f} s")}
    for name in ("idle", "churn", "flood"):
        r = results[name]
        rows.append((f"scantrace userspace memory (MiB), {descr[name]}", "", rss_cell(r), "",
                     "≤ 16 MiB steady (max VmRSS)"))
    mem = results["idle"]["start"]["memory"]
    rows.append(("BPF map memory, `start` record memory.total_bytes vs limit_bytes (MiB)", "",
                 f"{mem['total_bytes'] / MIB:.2f} of {mem['limit_bytes'] / MIB:.2f}", "", "total ≤ limit"))
    st_sum, all_sum, mine, entries = results["flood"]["memlock"]
    late_st, late_all, _, _ = results["flood"]["memlock_late"]
    rows.append(("BPF map memory during the flood, `bpftool map show` bytes_memlock of the maps scantrace holds "
                 "(MiB)", "", f"st_* maps {st_sum / MIB:.2f} ({late_st / MIB:.2f} at the end of the flood), all "
                 f"{all_sum / MIB:.2f}; largest: " + ", ".join(
                     f"{k} {v / MIB:.2f}" for k, v in sorted(mine.items(), key=lambda kv: -kv[1])[:3]), "",
                 f"≤ {mem['limit_bytes'] / MIB:.0f} MiB"))
    fin = results["flood"]["final"]
    rows.append(("Spoofed-source flood, final stats: sources_created / sources_live / sources_evicted / "
                 "source_map_full / lost.ringbuf", "",
                 f"{fin['kernel'].get('sources_created')} / {fin['kernel'].get('sources_live')} / "
                 f"{fin['lost'].get('sources_evicted')} / {fin['lost'].get('source_map_full')} / "
                 f"{fin['lost'].get('ringbuf')} (st_sources max_entries {entries.get('st_sources')})", ""))


# ---------------------------------------------------------- comparators ---
TRACEFS = "/sys/kernel/tracing"


def wait_attached(proc, timeout=60):
    """Until the process holds a BPF link or perf event fd (its probes are
    attached; its stdout, a pipe, is block-buffered and says nothing), then
    half a second for the rest."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        try:
            fds = os.listdir(f"/proc/{proc.pid}/fd")
            kinds = {os.readlink(f"/proc/{proc.pid}/fd/{fd}") for fd in fds}
        except OSError:
            kinds = set()
        if kinds & {"anon_inode:bpf_link", "anon_inode:[perf_event]"}:
            time.sleep(0.5)
            return proc.poll() is None
        time.sleep(0.05)
    return False


class ToolRun:
    """One comparator (or scantrace) running while churn runs."""

    def __init__(self, drains, poller=None):
        self.drains, self.poller, self.stop_ev = drains, poller, threading.Event()
        if poller:
            self.thread = threading.Thread(target=self._poll, daemon=True)
            self.thread.start()

    def _poll(self):
        while not self.stop_ev.is_set():
            t = time.monotonic()
            subprocess.run(self.poller, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
            self.stop_ev.wait(max(0.0, 1.0 - (time.monotonic() - t)))

    def lines(self):
        return sum(d.counts()[0] for d in self.drains)

    def stop(self):
        self.stop_ev.set()
        if self.poller:
            self.thread.join()
        for d in self.drains:
            d.stop()


def start_attached(argv):
    d = Drain(argv, ready=None)
    if not wait_attached(d.proc):
        d.stop()
        raise RuntimeError(f"{argv[0]} exited {d.proc.returncode} before attaching: {error_line(d.output())}")
    return d


COMPARATORS = [
    ("scantrace", "scantrace (default: a record per connection opened past a sweep and per close; "
                  "JSON lines into a discarding pipe)",
     lambda args: ToolRun([scantrace_drain(args)])),
    ("scantrace-all", "scantrace --all-states (a line per state change, like the tcpstates tools)",
     lambda args: ToolRun([scantrace_drain(args, ("--all-states",), count=b'"type":"state"')])),
    ("bpftrace", "bpftrace script (bench/tcpstates.bt: a line per state change, RSTs counted per source)",
     lambda args: ToolRun([start_attached(["bpftrace", os.path.join(HERE, "tcpstates.bt")])])),
    ("bcc", "BCC tcpstates-bpfcc (bpfcc-tools)",
     lambda args: ToolRun([start_attached(["tcpstates-bpfcc"])])),
    ("libbpf", "libbpf-tools tcpstates",
     lambda args: ToolRun([start_attached(["/usr/sbin/tcpstates"])])),
    ("tcpdump", "tcpdump -ni lo 'tcp[tcpflags] & tcp-syn != 0' -w /dev/null + `ss -tanp` every second",
     lambda args: ToolRun([Drain(["tcpdump", "-ni", "lo", "tcp[tcpflags] & tcp-syn != 0", "-w", "/dev/null"],
                                 ready=b"listening on")], poller=["ss", "-tanp"])),
]


def bench_comparators(args, rows):
    """Loopback churn (as in `churn`) with nothing, scantrace, or one
    comparator running; every tool's stdout goes into a Drain. Each round runs
    every mode once, in an order rotated by one per round; ratios are against
    the same round's "off"."""
    mounted = False
    if not os.path.isdir(os.path.join(TRACEFS, "events")):
        subprocess.run(["mount", "-t", "tracefs", "tracefs", TRACEFS], check=True)
        mounted = True
    try:
        usable, unusable = [], []
        for key, label, start in COMPARATORS:
            if args.comparators and key not in args.comparators:
                continue
            # Trial start: tells whether the tool runs here at all.
            try:
                start(args).stop()
                usable.append((key, label, start))
            except (RuntimeError, OSError) as e:
                unusable.append((label, str(e)))
                print(f"  comparator {key}: cannot run: {e}", file=sys.stderr)
        modes = [("off", "nothing", None)] + usable
        rates = {k: [] for k, _, _ in modes}
        lines = {k: [] for k, _, _ in modes}
        st_lost = {}
        for i in range(args.comparator_rounds):
            order = modes[i % len(modes):] + modes[:i % len(modes)]
            for key, _, start in order:
                run = start(args) if start else None
                try:
                    l0 = run.lines() if run else 0
                    t0 = time.monotonic()
                    rates[key].append(churn_self(args)["conns_per_s"])
                    dt = time.monotonic() - t0
                    lines[key].append(((run.lines() if run else 0) - l0) / dt)
                finally:
                    if run:
                        run.stop()
                        if key.startswith("scantrace"):
                            st_lost.setdefault(key, []).append(run.drains[0].final_stats()["lost"]["ringbuf"])
            print("  comparators round {}: ".format(i + 1) + ", ".join(
                f"{k} {rates[k][-1]:.0f}" for k, _, _ in modes), file=sys.stderr)
        off = rates["off"]
        rows.append(("Comparators: loopback churn with nothing running (conn/s)", spread(off), "", ""))
        for key, label, _ in usable:
            ratios = [a / b for a, b in zip(rates[key], off)]
            extra = f"; lost.ringbuf {sum(st_lost.get(key, []))}" if key.startswith("scantrace") else ""
            rows.append((f"Comparators: loopback churn with {label} (conn/s; its stdout lines/s "
                         f"{med(lines[key]):.0f}{extra})", spread(off), spread(rates[key]), spread(ratios, "{:.3f}")))
        for label, why in unusable:
            rows.append((f"Comparators: {label}: could not run here: {why}", "", "", ""))
    finally:
        if mounted:
            subprocess.run(["umount", TRACEFS], check=False)



def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", required=True)
    ap.add_argument("--rounds", type=int, default=8, help="churn: rounds (each runs off and every scantrace mode)")
    ap.add_argument("--seconds", type=float, default=2.0, help="churn / comparators: seconds of churn per round")
    ap.add_argument("--latency-runs", type=int, default=30)
    ap.add_argument("--probe-rounds", type=int, default=10)
    ap.add_argument("--probe-seconds", type=float, default=2.0, help="probes: measured window per round")
    ap.add_argument("--e2e-rounds", type=int, default=4)
    ap.add_argument("--e2e-seconds", type=float, default=3.0)
    ap.add_argument("--e2e-threads", type=int, default=4, help="e2e / memory: churn threads (client and server)")
    ap.add_argument("--e2e-big-ringbuf", action="store_true",
                    help="e2e: also run with --ringbuf-size 8388608 when the default lost nothing")
    ap.add_argument("--memory-idle-seconds", type=float, default=3.0)
    ap.add_argument("--memory-churn-seconds", type=float, default=3.0)
    ap.add_argument("--flood-packets", type=int, default=1_000_000, help="memory: stop the flood after this many "
                    "packets reached the victim ...")
    ap.add_argument("--flood-seconds", type=float, default=20.0, help="... or after this many seconds")
    ap.add_argument("--comparator-rounds", type=int, default=5)
    ap.add_argument("--comparator", dest="comparators", action="append",
                    choices=[k for k, _, _ in COMPARATORS], help="comparators: only these (repeatable)")
    ap.add_argument("--only", action="append", choices=SECTIONS, help="run only these sections (repeatable)")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    args.binary = os.path.join(args.build, "scantrace")
    sections = args.only or SECTIONS

    rows = []
    t_start = time.monotonic()
    for name in sections:
        print(f"bench: {name} ({time.monotonic() - t_start:.0f} s in)", file=sys.stderr)
        globals()[f"bench_{name}"](args, rows)

    now = datetime.datetime.now(datetime.timezone.utc)
    head = (f"# scantrace benchmarks\n\n{now:%Y-%m-%d %H:%M} UTC, kernel {platform.release()}, "
            f"{os.cpu_count()} CPUs, host {socket.gethostname()}; sections: {', '.join(sections)}; "
            f"{time.monotonic() - t_start:.0f} s\n\n"
            "Medians with (min–max); off/on rounds alternate within this one run.\n\n")
    table = "| measure | off | on | on/off | target |\n|---|---|---|---|---|\n" + "\n".join(
        "| " + " | ".join((list(r) + [""] * 5)[:5]) + " |" for r in rows) + "\n"
    text = head + table
    print(text)
    out = args.out or os.path.join(HERE, "results", f"{now:%Y-%m-%d}.md")
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with open(out, "w") as f:
        f.write(text)
    print(f"bench: wrote {out}", file=sys.stderr)


# Default order: the sections that make the most loopback TIME_WAIT sockets
# (churn, comparators) come after the ones whose figures depend on how many
# sockets the namespace holds (e2e, memory: scantrace's SYN-flood check reads
# /proc/net/tcp*).
SECTIONS = ["serial", "latency", "probes", "e2e", "memory", "churn", "comparators", "bpfcost"]


if __name__ == "__main__":
    main()
