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
"""
import argparse
import datetime
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
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


def med(xs):
    return statistics.median(xs) if xs else float("nan")


def spread(xs, fmt="{:.0f}"):
    return f"{fmt.format(med(xs))} ({fmt.format(min(xs))}–{fmt.format(max(xs))})" if xs else "n/a"


# ---------------------------------------------------------------- churn ---
def churn_rounds(args, runner, label):
    """Alternate off/on rounds; returns (off rates, on rates, ratios per pair)."""
    off, on, ratios = [], [], []
    for i in range(args.rounds):
        # Alternate which goes first so drift hits both sides alike.
        order = ("off", "on") if i % 2 == 0 else ("on", "off")
        got = {}
        for mode in order:
            tracer = Tracer(args.binary) if mode == "on" else None
            try:
                got[mode] = runner()
            finally:
                if tracer:
                    recs = tracer.stop()
                    final = [r for r in recs if r["type"] == "stats" and r.get("final")]
                    if final and final[-1]["lost"]["ringbuf"]:
                        print(f"  {label}: ringbuf lost {final[-1]['lost']['ringbuf']}", file=sys.stderr)
        off.append(got["off"])
        on.append(got["on"])
        ratios.append(got["on"] / got["off"])
        print(f"  {label} round {i + 1}: off {got['off']:.0f}/s on {got['on']:.0f}/s", file=sys.stderr)
    return off, on, ratios


def bench_churn(args, rows):
    churn = os.path.join(args.build, "bench", "churn")

    def loopback():
        out = subprocess.run([churn, "--self", "--seconds", str(args.seconds), "--threads", "2"],
                             capture_output=True, text=True, check=True).stdout
        return json.loads(out)["conns_per_s"]

    off, on, ratios = churn_rounds(args, loopback, "loopback churn")
    rows.append(("Connection churn, loopback (conn/s)", spread(off), spread(on), spread(ratios, "{:.3f}")))

    with lab.NetnsLab() as L:
        srv = L.popen_in("server", [churn, "--listen", f"{L.server_ip4}:9000"])
        time.sleep(0.3)

        def veth():
            out = L.run_in("client", [churn, "--connect", f"{L.server_ip4}:9000", "--seconds", str(args.seconds),
                                      "--threads", "2"]).stdout
            return json.loads(out)["conns_per_s"]

        off, on, ratios = churn_rounds(args, veth, "veth churn")
        rows.append(("Connection churn, veth between namespaces (conn/s)", spread(off), spread(on),
                     spread(ratios, "{:.3f}")))
        srv.kill()


# -------------------------------------------------------------- bpfcost ---
def prog_stats():
    out = subprocess.run(["bpftool", "-j", "prog", "show"], capture_output=True, text=True, check=True).stdout
    return {p["id"]: p for p in json.loads(out) if p.get("name", "").startswith("st_")}


def bench_bpfcost(args, rows):
    old = open("/proc/sys/kernel/bpf_stats_enabled").read().strip()
    churn = os.path.join(args.build, "bench", "churn")
    tracer = Tracer(args.binary, ["--scan-quiet", "1"])
    try:
        with open("/proc/sys/kernel/bpf_stats_enabled", "w") as f:
            f.write("1")
        before = prog_stats()
        subprocess.run([churn, "--self", "--seconds", "2", "--threads", "2"], capture_output=True, check=True)
        with lab.NetnsLab() as L:
            L.run_in("client", ["nmap", "-n", "-Pn", "-sS", "-T4", "--max-retries", "0", "-p", "1-3000",
                                L.server_ip4], timeout=120)
            L.run_in("client", ["nmap", "-n", "-Pn", "-sU", "-T5", "--max-retries", "0", "-p", "1-200",
                                L.server_ip4], timeout=120)
        after = prog_stats()
    finally:
        with open("/proc/sys/kernel/bpf_stats_enabled", "w") as f:
            f.write(old)
        tracer.stop()
    for pid, p in sorted(after.items(), key=lambda kv: kv[1]["name"]):
        b = before.get(pid, {})
        cnt = p.get("run_cnt", 0) - b.get("run_cnt", 0)
        ns = p.get("run_time_ns", 0) - b.get("run_time_ns", 0)
        if cnt:
            rows.append((f"BPF `{p['name']}` ({p.get('type')}) ns/event", f"{cnt} events", f"{ns / cnt:.0f}", ""))


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


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", required=True)
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--seconds", type=float, default=2.0)
    ap.add_argument("--latency-runs", type=int, default=30)
    ap.add_argument("--only", action="append", choices=["churn", "bpfcost", "latency", "serial"])
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    args.binary = os.path.join(args.build, "scantrace")
    sections = args.only or ["churn", "bpfcost", "latency", "serial"]

    rows = []
    for name in sections:
        print(f"bench: {name}", file=sys.stderr)
        globals()[f"bench_{name}"](args, rows)

    now = datetime.datetime.now(datetime.timezone.utc)
    head = (f"# scantrace benchmarks\n\n{now:%Y-%m-%d %H:%M} UTC, kernel {platform.release()}, "
            f"{os.cpu_count()} CPUs, host {socket.gethostname()}\n\n"
            "Medians with (min–max); off/on rounds alternate within this one run.\n\n")
    table = "| measure | off | on | on/off |\n|---|---|---|---|\n" + "\n".join(
        f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows) + "\n"
    text = head + table
    print(text)
    out = args.out or os.path.join(HERE, "results", f"{now:%Y-%m-%d}.md")
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with open(out, "w") as f:
        f.write(text)
    print(f"bench: wrote {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
