#!/usr/bin/env python3
"""Tests of metabench (bench/metabench.cpp) on a plain directory.

    metabench_test.py PATH_TO_METABENCH

The point of metabench is that a failed operation is an error and never a
fast operation, so most cases here check that wrong answers are caught.
"""
import json
import os
import subprocess
import sys
import tempfile
import time
import unittest

METABENCH = None


def metabench(*args):
    seconds = [] if "--seconds" in args else ["--seconds", "0.05"]
    p = subprocess.run([METABENCH, *seconds, *args], capture_output=True, text=True, timeout=60)
    result = json.loads(p.stdout) if p.stdout.strip() else None
    return p.returncode, result, p.stderr


class MetabenchTest(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        root = self.tmp.name
        self.files = os.path.join(root, "files")
        self.links = os.path.join(root, "links")
        self.empty = os.path.join(root, "empty")
        for d in (self.files, self.links, self.empty):
            os.mkdir(d)
        for i in range(20):
            with open(os.path.join(self.files, f"f{i}"), "w") as f:
                f.write("x" * 100)
            os.symlink("../files/f0", os.path.join(self.links, f"l{i}"))
        self.links2 = os.path.join(root, "links2")
        os.mkdir(self.links2)
        for i in range(5):
            os.symlink("../files/f1", os.path.join(self.links2, f"m{i}"))
        os.symlink("files", os.path.join(root, "via"))
        self.via = os.path.join(root, "via")

    def tearDown(self):
        self.tmp.cleanup()

    def test_every_op_succeeds_on_a_good_tree(self):
        cases = [
            ("stat", self.files, []),
            ("resolve", self.via, []),
            ("readlink", self.links, ["--expect", "../files/f0"]),
            ("open_read", self.files, []),
            ("create_unlink", self.empty, []),
            ("readdir", self.files, ["--expect-entries", "20"]),
        ]
        for op, d, extra in cases:
            for procs in ("1", "2"):
                with self.subTest(op=op, procs=procs):
                    rc, r, err = metabench("--op", op, "--dir", d, "--procs", procs, *extra)
                    self.assertEqual(rc, 0, err)
                    self.assertEqual(r["op"], op)
                    self.assertEqual(r["procs"], int(procs))
                    self.assertEqual(r["errors"], 0)
                    self.assertGreater(r["ops"], 0)
                    self.assertGreater(r["ops_per_sec"], 0)

    def test_create_unlink_leaves_nothing_behind(self):
        rc, _, err = metabench("--op", "create_unlink", "--dir", self.empty, "--procs", "2")
        self.assertEqual(rc, 0, err)
        self.assertEqual(os.listdir(self.empty), [])

    def test_wrong_readlink_text_is_an_error(self):
        rc, r, _ = metabench("--op", "readlink", "--dir", self.links, "--expect", "/elsewhere")
        self.assertEqual(rc, 1)
        self.assertEqual(r["ops"], 0)
        self.assertGreater(r["errors"], 0)
        self.assertIn("got '../files/f0'", r["first_error"])

    def test_readlink_of_a_regular_file_is_an_error(self):
        rc, r, _ = metabench("--op", "readlink", "--dir", self.files)
        self.assertEqual(rc, 1)
        self.assertEqual(r["ops"], 0)
        self.assertIn("Invalid argument", r["first_error"])

    def test_readdir_with_the_wrong_count_is_an_error(self):
        rc, r, _ = metabench("--op", "readdir", "--dir", self.files, "--expect-entries", "21")
        self.assertEqual(rc, 1)
        self.assertEqual(r["ops"], 0)
        self.assertIn("got '20 entries'", r["first_error"])

    def test_create_in_a_missing_directory_is_an_error(self):
        rc, r, _ = metabench("--op", "create_unlink", "--dir", os.path.join(self.empty, "nope"))
        self.assertEqual(rc, 1)
        self.assertEqual(r["ops"], 0)
        self.assertIn("No such file or directory", r["first_error"])

    def test_usage_errors_exit_2_with_a_message(self):
        cases = [
            (["--op", "stat", "--dir", os.path.join(self.files, "missing")], "cannot list"),
            (["--op", "stat", "--dir", self.empty], "has no entries"),
            (["--op", "resolve", "--dir", self.files], "goes through a symlink"),
            (["--op", "fly", "--dir", self.files], "fly"),
            (["--op", "stat"], "--dir"),
            (["--op", "stat", "--dir", self.files, "--procs", "0"], "procs"),
            (["--op", "stat", "--dir", self.files, "--setenv", "NOVALUE"], "K=V"),
            (["--op", "stat", "--dir", self.files, "--against", os.path.join(self.files, "missing")],
             "cannot list"),
            (["--op", "stat", "--dir", self.files, "--against-expect", "x"], "--against"),
            (["--op", "stat", "--dir", self.files, "--slice-ms", "5"], "--against"),
            (["--op", "stat", "--dir", self.files, "--against", self.files, "--slice-ms", "0"], "slice"),
        ]
        for args, needle in cases:
            with self.subTest(args=args):
                rc, r, err = metabench(*args)
                self.assertEqual(rc, 2)
                self.assertIsNone(r)
                self.assertIn(needle, err)

    def test_against_measures_both_sides_in_alternating_slices(self):
        for procs in ("1", "2"):
            with self.subTest(procs=procs):
                rc, r, err = metabench("--op", "readlink", "--dir", self.links, "--expect", "../files/f0",
                                       "--against", self.links2, "--against-expect", "../files/f1",
                                       "--procs", procs, "--seconds", "0.2", "--slice-ms", "10")
                self.assertEqual(rc, 0, err)
                self.assertEqual(r["errors"], 0)
                self.assertEqual(r["against"], self.links2)
                self.assertEqual(r["slice_ms"], 10.0)
                self.assertGreater(r["ops"], 0)
                self.assertGreater(r["against_ops"], 0)
                self.assertAlmostEqual(r["ratio"], r["ops_per_sec"] / r["against_ops_per_sec"], places=3)

    def test_against_side_has_its_own_expected_text(self):
        # The --expect of --dir is not the one --against is held to.
        rc, r, _ = metabench("--op", "readlink", "--dir", self.links, "--expect", "../files/f0",
                             "--against", self.links2, "--against-expect", "../files/f0")
        self.assertEqual(rc, 1)
        self.assertEqual(r["against_ops"], 0)
        self.assertGreater(r["errors"], 0)
        self.assertIn(self.links2, r["first_error"])
        self.assertIn("got '../files/f1'", r["first_error"])

    def test_setenv_reaches_proc_environ(self):
        # vsymfs reads /proc/PID/environ, which setenv() does not change, so
        # metabench must re-execute itself: the variable shows in the file
        # once it has (it re-executes at once, then runs for a second). Read
        # the file until it shows, while metabench runs (30 s deadline).
        env = dict(os.environ)
        env.pop("METABENCH_TEST_VAR", None)
        p = subprocess.Popen([METABENCH, "--op", "stat", "--dir", self.files, "--seconds", "1",
                              "--setenv", "METABENCH_TEST_VAR=42"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
        seen = False
        deadline = time.monotonic() + 30
        while not seen and p.poll() is None and time.monotonic() < deadline:
            try:
                with open(f"/proc/{p.pid}/environ", "rb") as f:
                    seen = b"METABENCH_TEST_VAR=42" in f.read().split(b"\0")
            except OSError:
                pass
            if not seen:
                time.sleep(0.01)
        _, err = p.communicate(timeout=60)
        self.assertEqual(p.returncode, 0, err)
        self.assertTrue(seen, "METABENCH_TEST_VAR=42 never showed in /proc/PID/environ while metabench ran")

if __name__ == "__main__":
    METABENCH = os.path.abspath(sys.argv.pop(1))
    unittest.main(verbosity=2)
