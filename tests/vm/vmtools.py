"""Shared helpers of the second-kernel tests (tests/vm), Python 3 stdlib only.

* load_variants(): builds tests/vm/load_variants.c with a direct ``cc ...
  -lbpf`` (into /tmp/scantrace-vm-tools, rebuilt when the source is newer)
  and runs it: the kernel facts that decide which hook variants can work, and
  a load (and attach) attempt of every BPF program alone.
* kernel_facts(): only the facts.
* main(): parses ``--binary PATH`` (the rest of argv goes to unittest) and
  runs the calling module's tests.

The facts come from the kernel's BTF and sysfs, the same probes the loader
makes, so the tests that use them hold on any kernel: in the 6.1 guest of
scripts/vmtest and on a developer's newer kernel alike.
"""

import json
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
SOURCE = os.path.join(HERE, "load_variants.c")
TOOLS_DIR = os.environ.get("SCANTRACE_VM_TOOLS_DIR", "/tmp/scantrace-vm-tools")

# The integration harness (Tracer, NetnsLab) and its --binary handling.
sys.path.insert(0, os.path.join(REPO, "tests", "integration"))
import lab  # noqa: E402


def build_dir():
    """The build directory of the binary under test (it holds bpf/*.bpf.o)."""
    return os.path.dirname(lab.BINARY)


def bpf_objects():
    return [os.path.join(build_dir(), "bpf", f"{name}.bpf.o") for name in ("conn", "scan")]


def tool():
    """Path of the compiled load_variants, built on first use."""
    exe = os.path.join(TOOLS_DIR, "load_variants")
    if os.path.exists(exe) and os.path.getmtime(exe) >= os.path.getmtime(SOURCE):
        return exe
    os.makedirs(TOOLS_DIR, exist_ok=True)
    tmp = f"{exe}.{os.getpid()}"
    res = subprocess.run(["cc", "-O2", "-Wall", "-Wextra", "-o", tmp, SOURCE, "-lbpf"],
                         stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=600)
    if res.returncode != 0:
        raise RuntimeError(f"cc {SOURCE} failed ({res.returncode}):\n{res.stderr}")
    os.replace(tmp, exe)
    return exe


def load_variants(objects=None, attach=True, timeout=900):
    """Runs load_variants; returns (facts, [one dict per program])."""
    argv = [tool(), *(["--attach"] if attach else []), *(objects or ["--facts"])]
    res = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout)
    if res.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited {res.returncode}: {res.stderr.strip()}")
    lines = [json.loads(line) for line in res.stdout.splitlines() if line.strip()]
    facts = [line for line in lines if line.get("facts")]
    if len(facts) != 1:
        raise RuntimeError(f"expected one facts line from load_variants, got {len(facts)}:\n{res.stdout}")
    return facts[0], [line for line in lines if not line.get("facts")]


_facts = None


def kernel_facts():
    global _facts
    if _facts is None:
        _facts, _ = load_variants(attach=False, timeout=120)  # no object: facts only
    return _facts


def note(msg):
    """A line for the stage's report (stderr, next to unittest's output)."""
    print(f"vm-test: {msg}", file=sys.stderr, flush=True)


def main():
    lab.main("scantrace second-kernel tests (root)")
