"""Which hook variant the loader picks, read from the start record.

The expectations follow from the kernel's facts (tests/vm/load_variants.c
--facts: BTF types, a trial fentry load, the kprobe PMU), the same way the
loader decides, so the test holds on any kernel. On Linux 6.1 (the guest of
scripts/vmtest) it also pins the outcome the second-kernel stage exists to
prove: tcp_send_reset does not fire there without a socket, so tcp_reset
must use fentry/kprobe on tcp_v4/v6_send_reset and never tp_btf; tcp_syn uses
fentry/kprobe on tcp_v4/v6_conn_request, not sock_ops; skb_drop is the
tp_btf program without the rx_sk argument (st_drop_btf).

Run (root): /usr/bin/python3 tests/vm/test_hooks.py --binary build/scantrace
"""

import os
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import vmtools  # noqa: E402  (puts tests/integration on sys.path)
from lab import Tracer, fmt  # noqa: E402

# The loader's order of preference (src/loader/loader.cpp).
ORDER = {"tcp_reset": ["tp_btf", "fentry", "kprobe"], "tcp_syn": ["fentry", "kprobe", "sock_ops"]}

# Under TCG the verifier alone takes many seconds per program.
START_TIMEOUT = 240


def is_linux_6_1():
    return os.uname().release.startswith("6.1.")


class HookChoiceTest(unittest.TestCase):
    maxDiff = None

    @classmethod
    def setUpClass(cls):
        cls.facts = vmtools.kernel_facts()
        vmtools.note(f"kernel {os.uname().release}; facts: fentry={cls.facts.get('fentry')} "
                     f"kprobe_pmu={cls.facts.get('kprobe_pmu')} sk_rst_reason={cls.facts.get('sk_rst_reason')} "
                     f"kfree_skb_args={cls.facts.get('kfree_skb_args')}")

    # -- helpers -----------------------------------------------------------
    def start_record(self, args, label):
        with Tracer(list(args) + ["--stats-interval", "0"], start_timeout=START_TIMEOUT) as tr:
            start = tr.start
            tr.stop(timeout=60)
        hooks = {h["name"]: h for h in start.get("hooks", [])}
        for name, h in hooks.items():
            if h.get("state") == "attached":
                what = f"{h.get('attach')} {','.join(h.get('programs', []))}"
                if h.get("skipped"):
                    what += f" (skipped: {h['skipped']})"
            else:
                what = f"unavailable ({h.get('reason')})"
            vmtools.note(f"hooks[{label}] {name}: {what}")
        return hooks, fmt([start])

    def attached(self, hooks, name, ctx):
        h = hooks.get(name)
        self.assertIsNotNone(h, f"no hook {name} in the start record: {ctx}")
        self.assertEqual(h.get("state"), "attached", f"{name} is not attached: {ctx}")
        return h

    def expect_reset(self, excluded):
        """The tcp_reset variant the facts call for, or None."""
        f = self.facts
        if "tp_btf" not in excluded and f.get("sk_rst_reason"):
            return "tp_btf"
        if "fentry" not in excluded and f.get("fentry") == "ok":
            return "fentry"
        if "kprobe" not in excluded and f.get("kprobe_pmu"):
            return "kprobe"
        return None

    def expect_syn(self, excluded):
        f = self.facts
        if "fentry" not in excluded and f.get("fentry") == "ok":
            return "fentry"
        if "kprobe" not in excluded and f.get("kprobe_pmu"):
            return "kprobe"
        return "sock_ops"

    def expect_drop_program(self):
        return "st_drop_btf_rxsk" if self.facts.get("kfree_skb_args", 0) >= 4 else "st_drop_btf"

    def check_common(self, hooks, ctx, excluded):
        h = self.attached(hooks, "inet_sock_set_state", ctx)
        self.assertEqual(h.get("attach"), "tp_btf", ctx)
        self.assertEqual(h.get("programs"), ["st_state_btf"], ctx)

        h = self.attached(hooks, "skb_drop", ctx)
        self.assertEqual(h.get("attach"), "tp_btf", ctx)
        self.assertEqual(h.get("programs"), [self.expect_drop_program()], ctx)
        if self.expect_drop_program() == "st_drop_btf":
            self.assertRegex(h.get("skipped", ""), r"receiving|rx_sk", f"why not rx_sk: {ctx}")

        want = self.expect_syn(excluded)
        h = self.attached(hooks, "tcp_syn", ctx)
        self.assertEqual(h.get("attach"), want, ctx)
        if want in ("fentry", "kprobe"):
            self.assertEqual(sorted(h.get("programs", [])), sorted([f"st_syn4_{want}", f"st_syn6_{want}"]), ctx)

        want = self.expect_reset(excluded)
        h = hooks.get("tcp_reset")
        self.assertIsNotNone(h, ctx)
        if want is None:
            self.assertEqual(h.get("state"), "unavailable", ctx)
            self.assertIsInstance(h.get("reason"), str, ctx)
        else:
            self.assertEqual(h.get("state"), "attached", ctx)
            self.assertEqual(h.get("attach"), want, ctx)
            if want in ("fentry", "kprobe"):
                self.assertEqual(sorted(h.get("programs", [])), sorted([f"st_rst4_{want}", f"st_rst6_{want}"]), ctx)
        if not self.facts.get("sk_rst_reason"):
            # tp_btf is refused, and the start record says why.
            why = h.get("skipped", "") if h.get("state") == "attached" else h.get("reason", "")
            self.assertRegex(why, r"tcp_send_reset|sk_rst_reason", f"tcp_reset: why not tp_btf: {ctx}")
            self.assertNotEqual(h.get("attach"), "tp_btf", ctx)
        # A family --hooks excluded is named among the reasons wherever it
        # ranks above the variant that was picked.
        for hname in ("tcp_syn", "tcp_reset"):
            hk = hooks[hname]
            order = ORDER[hname]
            picked = order.index(hk["attach"]) if hk.get("state") == "attached" else len(order)
            why = hk.get("skipped", "") if hk.get("state") == "attached" else hk.get("reason", "")
            for name in excluded:
                if order.index(name) < picked:
                    self.assertIn(f"{name} excluded by --hooks", why, f"{hname}: {ctx}")

    # -- tests -------------------------------------------------------------
    def test_default_choice(self):
        hooks, ctx = self.start_record([], "default")
        self.check_common(hooks, ctx, excluded=())
        if is_linux_6_1():
            # What this stage is for: the kernels most users run.
            rst, syn, drop = hooks["tcp_reset"], hooks["tcp_syn"], hooks["skb_drop"]
            self.assertIn(rst.get("attach"), ("fentry", "kprobe"), ctx)
            self.assertIn(syn.get("attach"), ("fentry", "kprobe"), ctx)
            self.assertEqual(drop.get("programs"), ["st_drop_btf"], ctx)
            self.assertEqual(hooks["inet_sock_set_state"].get("attach"), "tp_btf", ctx)
            if self.facts.get("fentry") == "ok":
                self.assertEqual(rst.get("attach"), "fentry", ctx)
                self.assertEqual(syn.get("attach"), "fentry", ctx)

    def test_without_fentry(self):
        hooks, ctx = self.start_record(["--hooks", "-fentry"], "-fentry")
        self.check_common(hooks, ctx, excluded=("fentry",))
        if is_linux_6_1() and self.facts.get("kprobe_pmu"):
            self.assertEqual(hooks["tcp_reset"].get("attach"), "kprobe", ctx)
            self.assertEqual(hooks["tcp_syn"].get("attach"), "kprobe", ctx)

    def test_without_fentry_and_kprobe(self):
        hooks, ctx = self.start_record(["--hooks", "-fentry,-kprobe"], "-fentry,-kprobe")
        self.check_common(hooks, ctx, excluded=("fentry", "kprobe"))
        self.assertEqual(hooks["tcp_syn"].get("attach"), "sock_ops", ctx)
        if is_linux_6_1():
            # Nothing left that sees resets to closed ports on 6.1.
            self.assertEqual(hooks["tcp_reset"].get("state"), "unavailable", ctx)


if __name__ == "__main__":
    vmtools.main()
