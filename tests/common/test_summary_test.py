#!/usr/bin/env python3
"""Tests of scripts/test-summary: the closing lines of scripts/test, and
--strict-skips, which lets a machine of this kind skip only what such
machines are known to lack (32-bit executables, FUSE over io_uring).

    test_summary_test.py PATH_TO_TEST_SUMMARY

Each test writes a made-up build directory (meson's testlog.json and JUnit
log) and runs the script on it.
"""
import json
import subprocess
import sys
import tempfile
import unittest
from pathlib import Path

SCRIPT = None  # set in main


def junit(cases):
    """A JUnit log with one GoogleTest program 'probe_test': cases are
    (name, 'ok' | 'fail' | skip reason)."""
    body = []
    for name, outcome in cases:
        if outcome == "ok":
            body.append(f'<testcase name="{name}"/>')
        elif outcome == "fail":
            body.append(f'<testcase name="{name}"><failure message="boom"/></testcase>')
        else:
            body.append(f'<testcase name="{name}"><skipped message="x.cpp:10&#10;{outcome}"/></testcase>')
    return ('<testsuites><testsuite name="vsymfs.probe_test"><testsuite name="vsymfs.probe_test.Probe">'
            + "".join(body) + "</testsuite></testsuite></testsuites>")


class SummaryTest(unittest.TestCase):
    def run_summary(self, cases, *flags, smoke=""):
        with tempfile.TemporaryDirectory() as tmp:
            logs = Path(tmp, "build", "meson-logs")
            logs.mkdir(parents=True)
            (logs / "testlog.json").write_text(json.dumps({"name": "probe_test", "result": "OK", "returncode": 0,
                                                           "stdout": "", "stderr": ""}) + "\n")
            (logs / "testlog.junit.xml").write_text(junit(cases))
            p = subprocess.run([sys.executable, SCRIPT, *flags, "build"], cwd=tmp, input=smoke,
                               capture_output=True, text=True, timeout=60)
            return p.returncode, p.stdout

    def test_counts_cases_and_lists_skips_with_reasons(self):
        rc, out = self.run_summary([("A", "ok"), ("B", "needs root to mount"), ("C", "ok")])
        self.assertEqual(rc, 0)
        self.assertIn("  SKIP Probe.B: needs root to mount", out)
        self.assertTrue(out.rstrip().endswith("tests: 2 passed, 0 failed, 1 skipped"), out)

    def test_a_failed_case_fails_the_run(self):
        rc, out = self.run_summary([("A", "ok"), ("B", "fail")])
        self.assertEqual(rc, 1)
        self.assertIn("  FAIL Probe.B", out)

    def test_strict_allows_the_machine_differences(self):
        rc, out = self.run_summary([
            ("A", "ok"),
            ("B", "this kernel refuses 32-bit executables (execve: Exec format error)"),
            ("C", "this kernel has no FUSE over io_uring (uring)")], "--strict-skips")
        self.assertEqual(rc, 0, out)
        self.assertTrue(out.rstrip().endswith("tests: 1 passed, 0 failed, 2 skipped"), out)

    def test_strict_fails_any_other_skip(self):
        rc, out = self.run_summary([("A", "ok"), ("B", "mkfs.ext4 is not available")], "--strict-skips")
        self.assertEqual(rc, 1)
        self.assertIn("  FAIL Probe.B: skipped (mkfs.ext4 is not available)", out)
        self.assertTrue(out.rstrip().endswith("tests: 1 passed, 1 failed, 0 skipped"), out)
        # Without the flag the same run passes, with the skip listed.
        rc, out = self.run_summary([("A", "ok"), ("B", "mkfs.ext4 is not available")])
        self.assertEqual(rc, 0)

    def test_strict_does_not_take_a_reason_that_only_mentions_32_bit(self):
        rc, _ = self.run_summary([("B", "no 32-bit helper built (gcc-multilib missing)")], "--strict-skips")
        self.assertEqual(rc, 1)


if __name__ == "__main__":
    SCRIPT = str(Path(sys.argv.pop(1)).resolve())
    unittest.main()
