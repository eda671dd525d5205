"""Runs one unittest file of scantrace (tests/integration/test_*.py or
tests/vm/test_*.py) against a binary and records every test's outcome as one
JSON line, for run_guest_tests.sh's summary.

    /usr/bin/python3 tests/vm/run_unittest.py --binary build/scantrace \
        --json /tmp/out.jsonl tests/integration/test_scan_nmap.py [-k PATTERN]...

The file is imported as a module (its own main() does not run), the binary
is handed to the harness the way its main() would (lab.BINARY), and
unittest runs it with verbosity 2. -k works like unittest's (substring or glob of the test id). Exit: 0 when no selected
test failed (expected failures and unexpected successes of @expectedFailure
tests are reported, not failures), 1 otherwise or when nothing ran, 2 on
usage errors.
"""

import argparse
import importlib.util
import json
import os
import sys
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))


class RecordingResult(unittest.TextTestResult):
    def __init__(self, *args, **kw):
        super().__init__(*args, **kw)
        self.outcomes = []
        self._t0 = {}

    def startTest(self, test):
        self._t0[test.id()] = time.monotonic()
        super().startTest(test)

    def _note(self, test, outcome, detail=""):
        t0 = self._t0.get(test.id())
        self.outcomes.append({"test": test.id(), "outcome": outcome,
                              "seconds": round(time.monotonic() - t0, 1) if t0 else None,
                              "detail": detail[-4000:]})

    def addSuccess(self, test):
        super().addSuccess(test)
        self._note(test, "pass")

    def addFailure(self, test, err):
        super().addFailure(test, err)
        self._note(test, "fail", self._exc_info_to_string(err, test))

    def addError(self, test, err):
        super().addError(test, err)
        self._note(test, "error", self._exc_info_to_string(err, test))

    def addSkip(self, test, reason):
        super().addSkip(test, reason)
        self._note(test, "skip", reason)

    # @expectedFailure marks a known product bug on the kernel the file was
    # written on; on another kernel the test may pass. Both are reported as
    # such, neither fails the run.
    def addExpectedFailure(self, test, err):
        super().addExpectedFailure(test, err)
        self._note(test, "xfail", self._exc_info_to_string(err, test))

    def addUnexpectedSuccess(self, test):
        super().addUnexpectedSuccess(test)
        self._note(test, "xpass", "marked @expectedFailure, passed on this kernel")

    def addSubTest(self, test, subtest, err):
        super().addSubTest(test, subtest, err)
        if err is not None:
            self._note(subtest, "fail", self._exc_info_to_string(err, test))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--binary", required=True)
    parser.add_argument("--json", required=True, help="file to append one JSON line per test to")
    parser.add_argument("-k", dest="patterns", action="append", default=[])
    parser.add_argument("file")
    args = parser.parse_args()

    binary = os.path.abspath(args.binary)
    path = os.path.abspath(args.file)
    if os.geteuid() != 0:
        sys.exit("run_unittest: needs root")
    if not os.access(binary, os.X_OK):
        sys.exit(f"run_unittest: {binary} is not executable: build it first (scripts/setup)")

    for d in (os.path.join(REPO, "tests", "integration"), HERE, os.path.dirname(path)):
        if d not in sys.path:
            sys.path.insert(0, d)
    import lab
    lab.BINARY = binary  # vmtools reads it from there
    lab.install_signal_handlers()

    name = os.path.splitext(os.path.basename(path))[0]
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)

    loader = unittest.TestLoader()
    if args.patterns:
        loader.testNamePatterns = [p if "*" in p else f"*{p}*" for p in args.patterns]
    suite = loader.loadTestsFromModule(module)
    runner = unittest.TextTestRunner(verbosity=2, resultclass=RecordingResult, stream=sys.stderr)
    result = runner.run(suite)

    # Class-level setup failures have no test of their own.
    for test, err in result.errors:
        if not any(o["test"] == test.id() for o in result.outcomes):
            result.outcomes.append({"test": test.id(), "outcome": "error", "seconds": None, "detail": err[-4000:]})
    with open(args.json, "a") as f:
        for o in result.outcomes:
            f.write(json.dumps({"file": os.path.relpath(path, REPO), **o}) + "\n")
    bad = [o for o in result.outcomes if o["outcome"] in ("fail", "error")]
    sys.exit(1 if bad or not result.testsRun else 0)


if __name__ == "__main__":
    main()
