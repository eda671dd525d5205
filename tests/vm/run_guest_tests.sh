#!/usr/bin/env bash
# The second-kernel test suite. scripts/vmtest runs it by default inside its
# Linux 6.1 guest; it runs on any kernel as root too (the expectations follow
# from the kernel's facts, see tests/vm/test_hooks.py):
#
#   scripts/vmtest                          # in the 6.1 guest
#   sudo bash tests/vm/run_guest_tests.sh   # on this kernel
#
# What runs, in order, each file in its own process under `timeout`:
#   tests/vm/test_hooks.py        which hook variants the loader picks
#   tests/vm/test_variants.py     every BPF program loaded (and attached) alone
#   tests/integration/test_conn_trace.py
#   tests/integration/test_scan_*.py (those that exist)
# Every file gets --binary $SCANTRACE_BUILD_DIR/scantrace (default build/).
# The end is a per-test table and one line "N passed, N failed, N skipped".
#
# Environment:
#   SCANTRACE_BUILD_DIR         build directory (default: build/)
#   SCANTRACE_VM_ONLY           space-separated file names to run, e.g.
#                               "test_hooks.py test_conn_trace.py" (default: all)
#   SCANTRACE_VM_FILE_TIMEOUT   seconds per file (default: per file, below)
#
# Exit: 0 when every test passed (or was skipped), 1 otherwise.
set -euo pipefail

repo=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/../.." && pwd -P)
build=${SCANTRACE_BUILD_DIR:-$repo/build}
binary=$build/scantrace
py=/usr/bin/python3
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
cd -- "$repo"

say() { printf 'guest-tests: %s\n' "$*" >&2; }

((EUID == 0)) || {
  say "needs root"
  exit 1
}
[[ -x $binary ]] || {
  say "$binary is missing: build it first (scripts/setup)"
  exit 1
}

# Every test of every file runs: measured in the 6.1 guest under TCG on 2
# cores, the whole list takes under 3 minutes (conn_trace ~20 s, scan_nmap
# ~45 s, scan_flood ~35-60 s, scan_negative ~35 s, hooks+variants ~15 s).
# SCANTRACE_VM_ONLY narrows it when a file grows too slow for the guest.
# Seconds per file (a hung file must not eat the whole VM budget).
declare -A LIMIT=(
  [test_hooks.py]=420
  [test_variants.py]=420
  [test_conn_trace.py]=600
  [test_scan_nmap.py]=900
  [test_scan_flood.py]=600
  [test_scan_negative.py]=600
)

files=(tests/vm/test_hooks.py tests/vm/test_variants.py tests/integration/test_conn_trace.py)
for f in tests/integration/test_scan_*.py; do
  [[ -e $f ]] && files+=("$f")
done
if [[ -n ${SCANTRACE_VM_ONLY:-} ]]; then
  keep=()
  for f in "${files[@]}"; do
    [[ " $SCANTRACE_VM_ONLY " == *" ${f##*/} "* ]] && keep+=("$f")
  done
  files=("${keep[@]}")
fi

# ------------------------------------------------------------ the kernel ---
say "kernel $(uname -r), $(nproc) CPUs, $(awk '/MemTotal/ { printf "%d MiB", $2 / 1024 }' /proc/meminfo)"
if [[ -r /sys/kernel/btf/vmlinux ]]; then
  mods=$(find /sys/kernel/btf -mindepth 1 -maxdepth 1 ! -name vmlinux -printf '%f ' 2>/dev/null || true)
  say "BTF: vmlinux yes; module BTF: ${mods:-none loaded}"
else
  say "BTF: /sys/kernel/btf/vmlinux missing"
fi
say "kprobes: $([[ -e /sys/bus/event_source/devices/kprobe/type ]] && echo yes || echo no)"
say "binary: $binary ($("$binary" --version 2>&1 | head -n1))"

# ------------------------------------------------------------- the tests ---
results=$(mktemp -d /tmp/scantrace-guest-tests.XXXXXX)
jsonl=$results/results.jsonl
: >"$jsonl"
failed_files=()
suite_t0=$SECONDS
for f in "${files[@]}"; do
  base=${f##*/}
  limit=${SCANTRACE_VM_FILE_TIMEOUT:-${LIMIT[$base]:-600}}
  say "---- $f (limit ${limit}s)"
  t0=$SECONDS
  before=$(wc -l <"$jsonl")
  rc=0
  timeout -k 15 "$limit" "$py" tests/vm/run_unittest.py --binary "$binary" --json "$jsonl" "$f" \
    </dev/null || rc=$?
  say "---- $f: exit $rc after $((SECONDS - t0))s"
  if ((rc != 0)); then
    failed_files+=("$f")
    if ((rc == 124 || rc == 137)) || (($(wc -l <"$jsonl") == before)); then
      # Killed (or died) before recording: one failure line for the file.
      why="exit $rc"
      if ((rc == 124 || rc == 137)); then why+=", timed out after ${limit}s"; fi
      printf '{"file": "%s", "test": "(whole file)", "outcome": "error", "seconds": %d, "detail": "%s"}\n' \
        "$f" $((SECONDS - t0)) "$why" >>"$jsonl"
    fi
  fi
done

# ------------------------------------------------------------ the report ---
"$py" - "$jsonl" "$((SECONDS - suite_t0))" <<'EOF'
import json, sys
rows = [json.loads(line) for line in open(sys.argv[1]) if line.strip()]
counts = {"pass": 0, "fail": 0, "error": 0, "skip": 0, "xfail": 0, "xpass": 0}
print("\nguest-tests: per-test results", file=sys.stderr)
for r in rows:
    counts[r["outcome"]] = counts.get(r["outcome"], 0) + 1
    secs = f"{r['seconds']:.1f}s" if isinstance(r.get("seconds"), (int, float)) else "-"
    print(f"  {r['outcome'].upper():<5} {secs:>7}  {r['file']}: {r['test']}", file=sys.stderr)
print(f"guest-tests: suite took {sys.argv[2]}s", file=sys.stderr)
failed = counts["fail"] + counts["error"]
if counts["xfail"] or counts["xpass"]:
    print(f"guest-tests: of those, {counts['xfail']} expected failure(s) (counted as skipped) and "
          f"{counts['xpass']} unexpected success(es) of @expectedFailure tests (counted as passed)",
          file=sys.stderr)
print(f"{counts['pass'] + counts['xpass']} passed, {failed} failed, {counts['skip'] + counts['xfail']} skipped")
EOF
if ((${#failed_files[@]})); then
  say "failing files: ${failed_files[*]}"
  exit 1
fi
exit 0
