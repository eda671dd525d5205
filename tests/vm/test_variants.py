"""Every BPF program of scantrace, loaded alone, on the running kernel.

The loader picks one variant per hook (tp_btf, fentry, kprobe, raw_tp,
sock_ops) by what the kernel offers, so on any one kernel most variants are
never loaded by scantrace itself. This test loads each program alone (every
other program's autoload off, tests/vm/load_variants.c) and attaches it for a
moment, so that a variant that only some kernels pick cannot rot unnoticed.

What must load is decided from the kernel's facts, never its version:

* tp_btf, raw_tp, sock_ops: always; except st_drop_btf_rxsk, which reads
  kfree_skb's receiving-socket argument (Linux 6.12+) and must be refused
  where the tracepoint has fewer than 4 arguments (Linux 6.1).
* fentry: where a minimal fentry program loads; where the kernel refuses
  fentry (some sandboxes, EPERM even for root) the real programs must fail
  with the same error, not another one.
* kprobe: always loads (a program type, no kprobe needed); attaches only
  where the kernel has kprobes.

Run (root): /usr/bin/python3 tests/vm/test_variants.py --binary build/scantrace
"""

import errno
import os
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import vmtools  # noqa: E402

# Programs whose variant needs more than the attach point: name -> (fact,
# minimum, why).
NEEDS = {
    "st_drop_btf_rxsk": ("kfree_skb_args", 4, "kfree_skb's rx_sk argument (Linux 6.12+)"),
}


def reason(r):
    """The verifier's verdict: the line before its closing "processed N
    insns" statistics, else libbpf's first message."""
    lines = [x for x in r.get("log", "").splitlines() if x.strip()]
    for i, x in enumerate(lines):
        if x.startswith("processed ") and " insns " in x and i > 0:
            return lines[i - 1]
    return lines[0] if lines else ""


def family(section):
    return section.split("/", 1)[0]


class VariantsTest(unittest.TestCase):
    maxDiff = None
    facts = None
    results = None

    @classmethod
    def setUpClass(cls):
        cls.facts, cls.results = vmtools.load_variants(vmtools.bpf_objects(), attach=True)
        vmtools.note(f"kernel facts: {cls.facts}")
        for r in cls.results:
            line = f"{r['object']:<11} {r['program']:<18} {r['section']:<30} load={r['load']}"
            if r["load"] == "ok":
                line += f" attach={r.get('attach')}"
                if r.get("attach") == "fail":
                    line += f" ({r.get('attach_error')})"
            else:
                line += f" ({r.get('error')}: {reason(r)})"
            vmtools.note(line)

    def record(self, name):
        for r in self.results:
            if r["program"] == name:
                return r
        self.fail(f"program {name} not in load_variants' output")

    def by_family(self, fam):
        return [r for r in self.results if family(r["section"]) == fam]

    def check_loads(self, r, attach_expected=True):
        ctx = f"{r['program']} ({r['section']}): {r}"
        self.assertEqual(r["load"], "ok", f"the kernel refused {ctx}")
        if attach_expected:
            self.assertEqual(r.get("attach"), "ok", f"attach failed: {ctx}")

    # -- tests -------------------------------------------------------------
    def test_objects_list_programs(self):
        objects = {r["object"] for r in self.results}
        self.assertEqual(objects, {"conn.bpf.o", "scan.bpf.o"}, self.results)
        for name in ("st_state_btf", "st_state_raw", "st_rst_btf", "st_rst4_fentry", "st_rst4_kprobe",
                     "st_syn4_fentry", "st_syn4_kprobe", "st_sockops", "st_drop_btf", "st_drop_raw"):
            self.record(name)

    def test_tp_btf_variants(self):
        for r in self.by_family("tp_btf"):
            with self.subTest(program=r["program"]):
                need = NEEDS.get(r["program"])
                if need and self.facts.get(need[0], -1) < need[1]:
                    # Expected refusal on this kernel, and for that reason only:
                    # the verifier says it reads past the tracepoint's arguments.
                    ctx = f"{r['program']} needs {need[2]}; the kernel has {need[0]}={self.facts.get(need[0])}: {r}"
                    self.assertEqual(r["load"], "fail", f"loaded although it should not: {ctx}")
                    self.assertEqual(r.get("errno"), errno.EACCES, ctx)
                    self.assertRegex(r.get("log", ""), r"argument|invalid bpf_context access|ctx", ctx)
                    vmtools.note(f"{r['program']}: refused as expected ({need[2]} missing)")
                else:
                    self.check_loads(r)

    def test_raw_tp_variants(self):
        for r in self.by_family("raw_tp"):
            with self.subTest(program=r["program"]):
                self.check_loads(r)

    def test_sock_ops_variant(self):
        progs = self.by_family("sockops")
        self.assertTrue(progs, self.results)
        for r in progs:
            with self.subTest(program=r["program"]):
                self.check_loads(r, attach_expected=False)

    def test_fentry_variants(self):
        progs = self.by_family("fentry")
        self.assertTrue(progs, self.results)
        for r in progs:
            with self.subTest(program=r["program"]):
                if self.facts.get("fentry") == "ok":
                    self.check_loads(r)
                else:
                    ctx = f"a minimal fentry program fails with {self.facts.get('fentry')} here: {r}"
                    self.assertEqual(r["load"], "fail", ctx)
                    self.assertEqual(r.get("errno"), self.facts.get("fentry_errno"), ctx)

    def test_kprobe_variants(self):
        progs = self.by_family("kprobe")
        self.assertTrue(progs, self.results)
        for r in progs:
            with self.subTest(program=r["program"]):
                self.check_loads(r, attach_expected=False)
                if self.facts.get("kprobe_pmu"):
                    self.assertEqual(r.get("attach"), "ok", f"kprobe attach failed: {r}")
                else:
                    self.assertEqual(r.get("attach"), "fail", f"kprobe attached without kprobe support? {r}")


if __name__ == "__main__":
    vmtools.main()
