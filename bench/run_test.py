#!/usr/bin/env python3
"""Tests of bench/run's pure part: samples kept by repetition, paired
ratios, and the PASS/FAIL verdicts with their clear/noisy word.

    run_test.py PATH_TO_BENCH_RUN

No mounts and no root: the harness is loaded as a module and fed made-up
measurements whose right answers are worked out by hand below.
"""
import importlib.machinery
import importlib.util
import shutil
import sys
import tempfile
import types
import unittest
from pathlib import Path

run = None  # the bench/run module, loaded in main


def load_harness(path):
    # bench/run has no .py suffix, so name its loader explicitly.
    loader = importlib.machinery.SourceFileLoader("bench_run", path)
    spec = importlib.util.spec_from_loader("bench_run", loader)
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


def metric(key, label, systems, reps, values, higher_better=True, group="metadata", unit="ops/s"):
    """A Metric with values[system] = one entry per repetition (None: not measured)."""
    m = run.Metric(key, label, group, unit, list(systems), higher_better, reps)
    for name, per_rep in values.items():
        for rep, v in enumerate(per_rep):
            if v is not None:
                m.add(name, rep, v)
    return m


def fake_bench(metrics, procs=(1,), missing=()):
    systems = {n: types.SimpleNamespace(missing="not installed" if n in missing else None)
               for n in run.ALL_SYSTEMS}
    return types.SimpleNamespace(metrics=metrics, cfg={"procs": list(procs)}, systems=systems, fd_budget={})


class MetricAlignmentTest(unittest.TestCase):
    def test_a_skipped_repetition_leaves_a_hole_not_a_shift(self):
        m = run.Metric("k", "k", "data", "MB/s", ["vsymfs"], True, 3)
        m.add("vsymfs", 0, 10.0)
        m.add("vsymfs", 2, 30.0)
        self.assertEqual(m.aligned("vsymfs"), [10.0, None, 30.0])
        self.assertEqual(m.samples("vsymfs"), [10.0, 30.0])
        self.assertEqual(m.median("vsymfs"), 20.0)

    def test_a_system_never_measured_is_all_holes(self):
        m = run.Metric("k", "k", "data", "MB/s", ["vsymfs", "bindfs"], True, 2)
        m.add("vsymfs", 1, 5.0)
        self.assertEqual(m.aligned("bindfs"), [None, None])
        self.assertIsNone(m.median("bindfs"))

    def test_an_error_makes_the_median_missing(self):
        m = run.Metric("k", "k", "data", "MB/s", ["vsymfs"], True, 2)
        m.add("vsymfs", 0, 5.0)
        m.fail("vsymfs", "fio exited 1")
        self.assertEqual(m.aligned("vsymfs"), [5.0, None])
        self.assertIsNone(m.median("vsymfs"))

    def test_a_repetition_outside_the_run_is_refused(self):
        m = run.Metric("k", "k", "data", "MB/s", ["vsymfs"], True, 2)
        with self.assertRaises(ValueError):
            m.add("vsymfs", 2, 1.0)


class PairedRatiosTest(unittest.TestCase):
    def test_pairs(self):
        cases = [
            # a, b, higher_better, expected
            ([200, 300], [100, 300], True, [2.0, 1.0]),
            # Times: b / a, so 2.0 still means a was twice as good.
            ([1.0, 4.0], [2.0, 2.0], False, [2.0, 0.5]),
            # A hole on either side is a hole, and later reps stay in place.
            ([100, None, 300], [50, 100, None], True, [2.0, None, None]),
            ([None, 90], [10, 30], True, [None, 3.0]),
            # A zero divisor has no ratio.
            ([5, 5], [0, 5], True, [None, 1.0]),
            ([0.0, 2.0], [1.0, 1.0], False, [None, 0.5]),
            ([], [], True, []),
        ]
        for a, b, higher, want in cases:
            with self.subTest(a=a, b=b, higher_better=higher):
                self.assertEqual(run.paired_ratios(a, b, higher), want)

    def test_unequal_lengths_are_refused(self):
        with self.assertRaises(ValueError):
            run.paired_ratios([1, 2], [1], True)


class VerdictTest(unittest.TestCase):
    def test_verdicts(self):
        at_least = lambda want: (lambda x: x >= want)  # noqa: E731
        cases = [
            # ratios, want, pass, clear, median, min, max, n
            ([1.2, 1.1, 1.3], 1.0, True, True, 1.2, 1.1, 1.3, 3),
            ([0.7, 0.8, 0.6], 0.9, False, True, 0.7, 0.6, 0.8, 3),
            # The median passes, one repetition does not: noisy.
            ([0.95, 1.04, 1.02], 1.0, True, False, 1.02, 0.95, 1.04, 3),
            # The median fails, one repetition passes: noisy.
            ([0.93, 1.04, 0.95], 1.0, False, False, 0.95, 0.93, 1.04, 3),
            # Exactly at the target passes, and min == want is still clear.
            ([0.9, 0.9, 1.0], 0.9, True, True, 0.9, 0.9, 1.0, 3),
            # Holes are skipped, not counted.
            ([None, 1.5, None, 1.1], 1.0, True, True, 1.3, 1.1, 1.5, 2),
            # One repetition: a verdict, but no telling whether it is solid.
            ([None, 0.5], 0.8, False, None, 0.5, 0.5, 0.5, 1),
            # Nothing paired: FAIL, and nothing to agree with.
            ([None, None], 1.0, False, None, None, None, None, 0),
            ([], 1.0, False, None, None, None, None, 0),
        ]
        for ratios, want, ok, clear, med, lo, hi, n in cases:
            with self.subTest(ratios=ratios, want=want):
                v = run.verdict(ratios, at_least(want))
                self.assertIs(v["pass"], ok)
                self.assertIs(v["clear"], clear)
                for field, expected in (("median", med), ("min", lo), ("max", hi)):
                    if expected is None:
                        self.assertIsNone(v[field])
                    else:
                        self.assertAlmostEqual(v[field], expected)
                self.assertEqual(v["n"], n)

    def test_result_words(self):
        cases = [
            ([1.2, 1.1, 1.3], 1.0, "PASS (clear)"),
            ([0.93, 1.04, 0.95], 1.0, "FAIL (noisy: 0.93–1.04)"),
            ([0.95, 1.04, 1.02], 1.0, "PASS (noisy: 0.95–1.04)"),
            ([0.5, 0.6], 0.8, "FAIL (clear)"),
            ([0.85], 0.8, "PASS (1 rep)"),
            ([None], 0.8, "FAIL"),
        ]
        for ratios, want, text in cases:
            with self.subTest(ratios=ratios):
                row = run.target_row("t", "m", ratios, lambda x, w=want: x >= w, want)
                self.assertEqual(run.result_text(row), text)

    def test_a_ratio_never_reads_as_the_wrong_side_of_the_target(self):
        # 0.997 rounds to 1.00, which would read as meeting ">= 1.0"; 0.968
        # rounds to 0.97, still below, so it keeps two decimals.
        row = run.target_row("t", "m", [0.997, 0.968, 0.999], lambda x: x >= 1.0, 1.0)
        self.assertEqual(run.paired_text(row), "0.997 (0.97–0.999, 3 reps)")
        self.assertEqual(run.result_text(row), "FAIL (clear)")
        row = run.target_row("t", "m", [0.7996, 0.9, 1.0], lambda x: x >= 0.8, 0.8)
        self.assertEqual(run.result_text(row), "PASS (noisy: 0.7996–1.00)")

    def test_paired_cell(self):
        row = run.target_row("t", "m", [0.93, None, 1.04, 0.95], lambda x: x >= 1.0, 1.0)
        self.assertEqual(run.paired_text(row), "0.95 (0.93–1.04, 3 reps)")
        self.assertEqual(run.paired_text(run.target_row("t", "m", [None], lambda x: True, 1.0)), "—")


class TargetsTest(unittest.TestCase):
    def rows_by_target(self, bench):
        return {r["target"]: r for r in run.targets(bench)}

    def test_best_peer_is_paired_per_repetition_across_holes(self):
        # bindfs has the best median (200 vs 150) and misses rep 1. Paired:
        # rep 0 -> 210/200 = 1.05, rep 2 -> 190/180 = 1.055..., so PASS clear.
        # Had bindfs's rep-2 sample shifted into rep 1, rep 1 would pair
        # 120/180 and rep 2 nothing: a FAIL.
        m = metric("stat_p1", "warm stat, 1 proc", ["native", "vsymfs", "bindfs", "mergerfs"], 3, {
            "native": [500, 500, 500],
            "vsymfs": [210, 120, 190],
            "bindfs": [200, None, 180],
            "mergerfs": [150, 150, 150],
        })
        row = self.rows_by_target(fake_bench([m]))["vsymfs >= best /dev/fuse peer: warm stat, 1 proc"]
        self.assertEqual(row["scores"][1], None)
        self.assertAlmostEqual(row["scores"][0], 1.05)
        self.assertAlmostEqual(row["scores"][2], 190 / 180)
        self.assertTrue(row["pass"])
        self.assertIs(row["clear"], True)
        self.assertEqual(row["reps"], 2)
        self.assertIn("bindfs", row["measured"])

    def test_times_pair_as_peer_time_over_vsymfs_time(self):
        m = metric("tree_rm", "rm -r of the tree", ["native", "vsymfs", "bindfs"], 3, {
            "native": [0.1, 0.1, 0.1],
            "vsymfs": [0.50, 0.40, 0.60],
            "bindfs": [0.45, 0.48, 0.50],
        }, higher_better=False, group="workload", unit="s")
        row = self.rows_by_target(fake_bench([m]))["vsymfs >= best /dev/fuse peer: rm -r of the tree"]
        # 0.45/0.50 = 0.9, 0.48/0.40 = 1.2, 0.50/0.60 = 0.833: median 0.9.
        self.assertAlmostEqual(row["median"], 0.9)
        self.assertFalse(row["pass"])
        self.assertIs(row["clear"], False)
        self.assertEqual(run.result_text(row), "FAIL (noisy: 0.83–1.20)")

    def test_ratio_rows_pair_two_metrics_of_one_repetition(self):
        plain = metric("readlink_plain_p1", "readlink, plain link, 1 proc", ["native", "vsymfs"], 3, {
            "native": [1000, 1000, 1000], "vsymfs": [200, 100, 300]})
        user = metric("readlink_user_p1", "readlink, ${USER} link, 1 proc", ["vsymfs"], 3, {
            "vsymfs": [190, 95, 280]})
        rows = self.rows_by_target(fake_bench([plain, user]))
        row = rows["variant readlink (user) >= 0.9 x vsymfs plain readlink, 1p"]
        # Per rep 0.95, 0.95, 0.933: clear, although the medians alone (190
        # vs 200) say the same; the range is what a shifted pairing would spoil.
        self.assertTrue(row["pass"])
        self.assertIs(row["clear"], True)
        self.assertAlmostEqual(row["min"], 280 / 300)
        self.assertEqual(row["want"], 0.9)

    def test_each_transport_is_judged_against_its_own_plain_readlink(self):
        plain = metric("readlink_plain_p2", "readlink, plain link, 2 procs", ["native", "vsymfs", "vsymfs-uring"], 2, {
            "native": [1000, 1000], "vsymfs": [100, 100], "vsymfs-uring": [300, 300]})
        sys_link = metric("readlink_sys_p2", "readlink, @sys link, 2 procs", ["vsymfs", "vsymfs-uring"], 2, {
            "vsymfs": [95, 95], "vsymfs-uring": [240, 240]})
        rows = self.rows_by_target(fake_bench([plain, sys_link], procs=(2,)))
        dev = rows["variant readlink (sys) >= 0.9 x vsymfs plain readlink, 2p"]
        uring = rows["variant readlink (sys) >= 0.9 x vsymfs-uring plain readlink, 2p"]
        self.assertAlmostEqual(dev["median"], 0.95)
        self.assertTrue(dev["pass"])
        self.assertAlmostEqual(uring["median"], 0.8)  # 240 / 300, not 240 / 100
        self.assertFalse(uring["pass"])
        # Without the io_uring system in the run, no row for it.
        plain_dev = metric("readlink_plain_p1", "readlink, plain link, 1 proc", ["native", "vsymfs"], 2, {
            "native": [1000, 1000], "vsymfs": [100, 100]})
        env = metric("readlink_env_p1", "readlink, env link, 1 proc", ["vsymfs"], 2, {"vsymfs": [95, 95]})
        rows = self.rows_by_target(fake_bench([plain_dev, env]))
        self.assertIn("variant readlink (env) >= 0.9 x vsymfs plain readlink, 1p", rows)
        self.assertNotIn("variant readlink (env) >= 0.9 x vsymfs-uring plain readlink, 1p", rows)

    def test_variant_rows_are_judged_on_the_alternating_run_when_there_is_one(self):
        # Measured apart the machine swung (0.5); alternating in one run the
        # two sides saw the same machine (0.95).
        plain = metric("readlink_plain_p1", "readlink, plain link, 1 proc", ["native", "vsymfs"], 2, {
            "native": [1000, 1000], "vsymfs": [200, 200]})
        user = metric("readlink_user_p1", "readlink, ${USER} link, 1 proc", ["vsymfs"], 2, {"vsymfs": [100, 100]})
        # (bindfs: were the group judged against peers, it would make a row)
        alt = metric("alt_user_p1", "readlink, ${USER} link, alternating, 1 proc", ["vsymfs", "bindfs"], 2,
                     {"vsymfs": [95, 190], "bindfs": [500, 500]}, group="alternating")
        alt_plain = metric("alt_plain_user_p1", "readlink, plain link, alternating", ["vsymfs"], 2,
                           {"vsymfs": [100, 200]}, group="alternating")
        rows = self.rows_by_target(fake_bench([plain, user, alt, alt_plain]))
        row = rows["variant readlink (user) >= 0.9 x vsymfs plain readlink, 1p"]
        self.assertAlmostEqual(row["median"], 0.95)
        self.assertTrue(row["pass"])
        self.assertIs(row["clear"], True)
        # The alternating metrics judge nothing against the peers.
        self.assertFalse(any(t.endswith(alt.label) for t in rows))
        # Without them, the rows measured apart judge it.
        row = self.rows_by_target(fake_bench([plain, user]))["variant readlink (user) >= 0.9 x vsymfs plain readlink, 1p"]
        self.assertAlmostEqual(row["median"], 0.5)
        self.assertFalse(row["pass"])

    def test_hot_path_rows_are_judged_on_alternating_runs_against_each_peer(self):
        # Measured apart vsymfs lost (100 vs 200); alternating with each peer
        # it won against bindfs (1.2) and only tied mergerfs (0.98 and 0.99):
        # mergerfs, the peer it fared worst against, decides.
        plain = metric("readlink_plain_p1", "readlink, plain link, 1 proc",
                       ["native", "vsymfs", "vsymfs-uring", "bindfs", "mergerfs", "passthrough_hp-uring"], 2, {
                           "native": [1000, 1000], "vsymfs": [100, 100], "vsymfs-uring": [100, 100],
                           "bindfs": [200, 200], "mergerfs": [150, 150], "passthrough_hp-uring": [150, 150]})

        def alt(peer, systems, mine, theirs):
            return [metric(run.alt_vs_key("readlink_plain", peer, 1), f"vs {peer}", systems, 2, mine,
                           group="alternating"),
                    metric(run.alt_peer_key("readlink_plain", peer, 1), f"{peer}", systems, 2, theirs,
                           group="alternating")]
        both = ["vsymfs", "vsymfs-uring"]
        metrics = [plain,
                   *alt("bindfs", both, {"vsymfs": [120, 240], "vsymfs-uring": [120, 240]},
                        {"vsymfs": [100, 200], "vsymfs-uring": [100, 200]}),
                   *alt("mergerfs", both, {"vsymfs": [98, 198], "vsymfs-uring": [110, 220]},
                        {"vsymfs": [100, 200], "vsymfs-uring": [100, 200]}),
                   # Only io_uring's vsymfs is judged against a peer on io_uring.
                   *alt("passthrough_hp-uring", ["vsymfs-uring"], {"vsymfs-uring": [90, 180]},
                        {"vsymfs-uring": [100, 200]})]
        rows = self.rows_by_target(fake_bench(metrics))
        dev = rows["vsymfs >= best /dev/fuse peer: readlink, plain link, 1 proc"]
        self.assertAlmostEqual(dev["median"], (0.98 + 0.99) / 2)
        self.assertIn("mergerfs", dev["measured"])
        self.assertIn("alternating", dev["measured"])
        self.assertEqual(dev["want"], 1.0)  # 2 repetitions: no tie yet
        self.assertFalse(dev["pass"])
        uring = rows["vsymfs-uring >= best FUSE peer: readlink, plain link, 1 proc"]
        self.assertAlmostEqual(uring["median"], 0.9)
        self.assertIn("passthrough_hp-uring", uring["measured"])
        # The alternating metrics judge no row of their own.
        self.assertFalse(any(t.endswith("vs bindfs") for t in rows))
        # A target outside ALT_PEER_KEYS (warm stat) is judged apart as before.
        stat = metric("stat_p1", "warm stat, 1 proc", ["native", "vsymfs", "bindfs"], 2, {
            "native": [1000, 1000], "vsymfs": [100, 100], "bindfs": [200, 200]})
        row = self.rows_by_target(fake_bench(metrics + [stat]))["vsymfs >= best /dev/fuse peer: warm stat, 1 proc"]
        self.assertAlmostEqual(row["median"], 0.5)
        # With five repetitions a tie (0.97) meets the target.
        plain5 = metric("readlink_plain_p1", "readlink, plain link, 1 proc", ["native", "vsymfs", "bindfs"], 5, {
            "native": [1000] * 5, "vsymfs": [100] * 5, "bindfs": [200] * 5})
        mine = metric(run.alt_vs_key("readlink_plain", "bindfs", 1), "vs bindfs", ["vsymfs"], 5,
                      {"vsymfs": [98] * 5}, group="alternating")
        theirs = metric(run.alt_peer_key("readlink_plain", "bindfs", 1), "bindfs", ["vsymfs"], 5,
                        {"vsymfs": [100] * 5}, group="alternating")
        row = self.rows_by_target(fake_bench([plain5, mine, theirs]))[
            "vsymfs >= best /dev/fuse peer: readlink, plain link, 1 proc"]
        self.assertEqual(row["want"], run.TIE)
        self.assertTrue(row["pass"])

    def test_alternating_peer_metrics_pair_each_transport_with_its_own_peers(self):
        systems = {n: types.SimpleNamespace(missing=None)
                   for n in ("native", "vsymfs", "vsymfs-uring", "bindfs", "passthrough_hp-uring")}
        bench = run.Bench({"procs": [1, 2], "meta_reps": 1, "reps": 1}, systems, None)
        got = {mv.key: (tuple(mv.systems), mp.key, peer, op, rel)
               for mv, mp, peer, op, rel, extra, procs in bench.alt_peer_metrics("someone")}
        self.assertEqual(got["alt_readlink_plain_vs_bindfs_p1"],
                         (("vsymfs", "vsymfs-uring"), "alt_readlink_plain_bindfs_p1", "bindfs", "readlink", "plain"))
        self.assertEqual(got["alt_readlink_plain_vs_passthrough_hp-uring_p2"][0], ("vsymfs-uring",))
        self.assertEqual(got["alt_resolve_vs_bindfs_p2"][3:], ("resolve", "resolve/vdir"))
        # Peers not in the run, and targets not judged this way, get none.
        self.assertEqual(got["alt_create_unlink_vs_bindfs_p1"][3:], ("create_unlink", "scratch"))
        self.assertFalse(any("mergerfs" in k or "stat_" in k or "readdir" in k for k in got))
        self.assertEqual(len(got), 3 * 2 * 2)  # 3 keys x 2 process counts x 2 peers

    def test_missing_vsymfs_is_a_fail_with_no_word(self):
        m = metric("stat_p1", "warm stat, 1 proc", ["native", "vsymfs", "bindfs"], 2, {
            "native": [500, 500], "bindfs": [200, 200]})
        m.fail("vsymfs", "metabench: 3 failed ops")
        row = self.rows_by_target(fake_bench([m]))["vsymfs >= best /dev/fuse peer: warm stat, 1 proc"]
        self.assertFalse(row["pass"])
        self.assertIsNone(row["clear"])
        self.assertEqual(row["measured"], "vsymfs ERR")
        self.assertEqual(run.result_text(row), "FAIL")

    def test_memory_limits_and_summary(self):
        rss = metric("rss_per_inode", "rss", ["vsymfs"], 1, {"vsymfs": [236.0]},
                     higher_better=False, group="memory", unit="B/entry")
        fds = metric("fds", "fds", ["vsymfs"], 1, {"vsymfs": [9000]},
                     higher_better=False, group="memory", unit="fds")
        stat = metric("stat_p1", "warm stat, 1 proc", ["native", "vsymfs", "bindfs"], 3, {
            "native": [1000, 1000, 1000], "vsymfs": [850, 700, 900], "bindfs": [800, 800, 800]})
        bench = fake_bench([stat, rss, fds])
        bench.fd_budget["vsymfs"] = 8256
        rows = self.rows_by_target(bench)
        self.assertEqual(run.result_text(rows["daemon RSS < 300 bytes per cached inode"]), "PASS (1 rep)")
        self.assertEqual(run.result_text(rows["daemon open fds within budget"]), "FAIL (1 rep)")
        # best peer: 1.0625, 0.875, 1.125 -> PASS noisy; vs native 0.85, 0.7,
        # 0.9 against 0.8 -> PASS noisy.
        self.assertEqual(run.result_text(rows["vsymfs >= best /dev/fuse peer: warm stat, 1 proc"]),
                         "PASS (noisy: 0.88–1.12)")
        self.assertEqual(run.result_text(rows["warm stat >= 0.8 x native, 1p"]), "PASS (noisy: 0.70–0.90)")
        self.assertEqual(run.summary_line(list(rows.values())),
                         "3 of 4 targets pass (0 clear); 1 fail (0 clear); 2 rest on a single repetition")

    def test_a_tie_meets_the_best_peer_only_over_five_repetitions(self):
        def row(ratios):
            n = len(ratios)
            m = metric("stat_p1", "warm stat, 1 proc", ["native", "vsymfs", "bindfs"], n, {
                "native": [500] * n, "vsymfs": [100 * r for r in ratios], "bindfs": [100] * n})
            return self.rows_by_target(fake_bench([m]))["vsymfs >= best /dev/fuse peer: warm stat, 1 proc"]
        five = row([0.98, 0.975, 0.99, 1.01, 0.96])
        self.assertEqual(five["want"], 0.97)
        self.assertEqual(run.result_text(five), "PASS (noisy: 0.96–1.01)")
        four = row([0.98, 0.975, 0.99, 1.01])
        self.assertEqual(four["want"], 1.0)
        self.assertEqual(run.result_text(four), "FAIL (noisy: 0.97–1.01)")
        self.assertFalse(row([0.96, 0.95, 0.99, 0.96, 0.94])["pass"])

    def test_each_transport_is_judged_against_the_peers_it_meets(self):
        # passthrough_hp-uring is the best peer overall, bindfs the best on
        # /dev/fuse. vsymfs (/dev/fuse) meets bindfs: 105/100, 95/100, 110/100;
        # vsymfs-uring meets passthrough_hp-uring: 150/140, 150/145, 140/150.
        m = metric("readlink_plain_p1", "readlink, plain link, 1 proc",
                   ["native", "vsymfs", "vsymfs-uring", "bindfs", "passthrough_hp", "passthrough_hp-uring"], 3, {
                       "native": [1000] * 3, "vsymfs": [105, 95, 110], "vsymfs-uring": [150, 150, 140],
                       "bindfs": [100, 100, 100], "passthrough_hp": [90, 90, 90],
                       "passthrough_hp-uring": [140, 145, 150]})
        rows = self.rows_by_target(fake_bench([m]))
        dev = rows["vsymfs >= best /dev/fuse peer: readlink, plain link, 1 proc"]
        self.assertIn("vs bindfs", dev["measured"])
        self.assertAlmostEqual(dev["median"], 1.05)
        self.assertTrue(dev["pass"])
        ring = rows["vsymfs-uring >= best FUSE peer: readlink, plain link, 1 proc"]
        self.assertIn("vs passthrough_hp-uring", ring["measured"])
        self.assertAlmostEqual(ring["median"], 150 / 145)
        self.assertTrue(ring["pass"])
        self.assertIs(ring["clear"], False)  # 140/150 misses
        # vsymfs on /dev/fuse is never judged against an io_uring peer.
        self.assertFalse(any("passthrough_hp-uring" in r["measured"] and t.startswith("vsymfs >=")
                             for t, r in rows.items()))
        # vsymfs-uring is judged against a /dev/fuse peer when that one is best.
        fast_bindfs = metric("stat_p1", "warm stat, 1 proc", ["native", "vsymfs", "vsymfs-uring", "bindfs",
                                                              "passthrough_hp-uring"], 1, {
            "native": [500], "vsymfs": [300], "vsymfs-uring": [310], "bindfs": [320],
            "passthrough_hp-uring": [200]})
        row = self.rows_by_target(fake_bench([fast_bindfs]))["vsymfs-uring >= best FUSE peer: warm stat, 1 proc"]
        self.assertIn("vs bindfs", row["measured"])
        self.assertFalse(row["pass"])

    def test_without_io_uring_only_dev_fuse_is_judged(self):
        m = metric("stat_p1", "warm stat, 1 proc", ["native", "vsymfs", "bindfs"], 2, {
            "native": [500, 500], "vsymfs": [200, 200], "bindfs": [190, 190]})
        rows = self.rows_by_target(fake_bench([m]))
        self.assertEqual([t for t in rows if "peer" in t], ["vsymfs >= best /dev/fuse peer: warm stat, 1 proc"])

    def test_a_cached_readlink_is_judged_against_the_caching_peer(self):
        plain = metric("readlink_plain_p1", "readlink, plain link, 1 proc",
                       ["native", "vsymfs-static", "passthrough_ll-cache"], 3, {
                           "native": [1000, 1000, 1000], "vsymfs-static": [500, 480, 520],
                           "passthrough_ll-cache": [510, 500, 530]})
        rows = self.rows_by_target(fake_bench([plain]))
        row = rows["host/system-only mount: readlink (plain) >= 0.95 x passthrough_ll-cache readlink, 1p"]
        self.assertTrue(row["pass"])  # 0.98, 0.96, 0.981
        self.assertEqual(row["want"], 0.95)
        self.assertFalse(any("x native readlink" in t for t in rows))
        # Not a peer of the uncached rows.
        self.assertNotIn("passthrough_ll-cache", run.PEERS)

    def test_a_cached_sys_readlink_is_judged_against_the_same_path_on_the_caching_peer(self):
        # The @sys links sit one directory deeper than the plain ones: the
        # yardstick is the caching peer's link at that path, not its plain one.
        plain = metric("readlink_plain_p1", "readlink, plain link, 1 proc",
                       ["native", "vsymfs-static", "passthrough_ll-cache"], 3, {
                           "native": [1000, 1000, 1000], "vsymfs-static": [700, 700, 700],
                           "passthrough_ll-cache": [700, 700, 700]})
        sys_ = metric("readlink_sys_p1", "readlink, @sys link, 1 proc",
                      ["vsymfs-static", "passthrough_ll-cache"], 3, {
                          "vsymfs-static": [600, 610, 590], "passthrough_ll-cache": [620, 600, 600]})
        rows = self.rows_by_target(fake_bench([plain, sys_]))
        row = rows["host/system-only mount: readlink (sys) >= 0.95 x passthrough_ll-cache readlink, 1p"]
        self.assertTrue(row["pass"])  # 0.968, 1.017, 0.983; against the plain link it would be 0.857
        self.assertTrue(row["measured"].startswith("1.00 "), row["measured"])  # 600 / 600

    def test_placement_rows_are_shown_not_judged(self):
        # They explain the readlink row, which is judged once, in metadata.
        m = metric("place_same", "readlink, plain link, 1 proc on CPU 0: daemon on CPU 0 (the caller's)",
                   ["vsymfs", "bindfs"], 3, {"vsymfs": [10, 30, 20], "bindfs": [40, 40, 40]}, group="placement")
        self.assertEqual(self.rows_by_target(fake_bench([m])), {})

    def test_summary_counts_clear_verdicts(self):
        rows = [run.target_row("a", "", [1.1, 1.2], lambda x: x >= 1, 1.0),
                run.target_row("b", "", [0.9, 1.2], lambda x: x >= 1, 1.0),
                run.target_row("c", "", [0.5, 0.6], lambda x: x >= 1, 1.0)]
        self.assertEqual(run.summary_line(rows), "2 of 3 targets pass (1 clear); 1 fail (1 clear)")


class CachingPeerTest(unittest.TestCase):
    def test_the_patch_asks_for_link_caching_in_init(self):
        src = ("static void lo_init(void *userdata,\n\t\t    struct fuse_conn_info *conn)\n{\n"
               "\tstruct lo_data *lo = (struct lo_data*) userdata;\n\n"
               "\tif(conn->capable & FUSE_CAP_EXPORT_SUPPORT)\n\t\tconn->want |= FUSE_CAP_EXPORT_SUPPORT;\n}\n")
        out = run.caching_variant(src)
        self.assertIn("conn->want |= FUSE_CAP_CACHE_SYMLINKS;", out)
        self.assertLess(out.index("FUSE_CAP_CACHE_SYMLINKS"), out.index("FUSE_CAP_EXPORT_SUPPORT"))

    def test_an_unexpected_source_is_refused_not_half_patched(self):
        self.assertIsNone(run.caching_variant("int main(void) { return 0; }\n"))

    def test_the_shipped_example_takes_the_patch(self):
        import gzip
        ex = Path("/usr/share/doc/libfuse3-dev/examples/passthrough_ll.c")
        if ex.exists():
            text = ex.read_text()
        elif ex.with_suffix(".c.gz").exists():
            text = gzip.open(ex.with_suffix(".c.gz"), "rt").read()
        else:
            self.skipTest("libfuse3-dev's examples are not installed")
        self.assertIsNotNone(run.caching_variant(text))


class PlacementTest(unittest.TestCase):
    def test_the_table_shows_the_spread(self):
        m = metric("place_free", "readlink, plain link, 1 proc on CPU 0: daemon where the kernel puts it",
                   ["vsymfs", "bindfs"], 3, {"vsymfs": [10000, 30000, 20000], "bindfs": [5000, None, 7000]},
                   group="placement")
        bench = fake_bench([m])
        out = Path(tempfile.mkdtemp(prefix="bench-report."))
        self.addCleanup(shutil.rmtree, out, True)
        run.write_reports(bench, out, {"kernel": "test"}, dict(bench.cfg, quick=False, meta_reps=3, reps=3))
        md = (out / "results.md").read_text()
        self.assertIn("## placement", md)
        self.assertIn("| 20.0k ops/s [10.0k ops/s–30.0k ops/s] | **6.0k ops/s [5.0k ops/s–7.0k ops/s]** |", md)

    def test_threads_are_pinned_and_put_back(self):
        cpus = run.placement_cpus()
        if cpus is None:
            self.skipTest("this process may run on one CPU only")
        import os
        import threading
        stop = threading.Event()
        t = threading.Thread(target=stop.wait)
        t.start()
        self.addCleanup(t.join)
        self.addCleanup(stop.set)
        before = {tid: os.sched_getaffinity(tid) for tid in run.thread_ids(os.getpid())}
        self.assertGreaterEqual(len(before), 2)
        old = run.pin_threads(os.getpid(), {cpus[1]})
        self.assertEqual(old, before)
        for tid in run.thread_ids(os.getpid()):
            self.assertEqual(os.sched_getaffinity(tid), {cpus[1]})
        run.unpin_threads(os.getpid(), old, before[os.getpid()])
        for tid in run.thread_ids(os.getpid()):
            self.assertEqual(os.sched_getaffinity(tid), before[tid])


class LibfusePeerTest(unittest.TestCase):
    """passthrough_hp comes only from a libfuse 3.18+ tree given on the
    command line; anything else makes both of its systems missing, saying why."""

    def tree(self, version, with_example=True):
        d = Path(tempfile.mkdtemp(prefix="libfuse-tree."))
        self.addCleanup(shutil.rmtree, d, True)
        (d / "meson.build").write_text(f"project('libfuse3', ['c'],\n        version: '{version}',\n)\n")
        if with_example:
            (d / "example").mkdir()
            (d / "example" / "passthrough_hp.cc").write_text("int main() {}\n")
        return d

    def test_no_tree_no_peer(self):
        exe, why = run.build_passthrough_hp(None, Path("/nonexistent"))
        self.assertIsNone(exe)
        self.assertIn("--libfuse-src", why)

    def test_not_a_libfuse_tree(self):
        exe, why = run.build_passthrough_hp(self.tree("3.18.2", with_example=False), Path("/nonexistent"))
        self.assertIsNone(exe)
        self.assertIn("is not a libfuse source tree", why)

    def test_a_libfuse_without_io_uring(self):
        exe, why = run.build_passthrough_hp(self.tree("3.17.4"), Path("/nonexistent"))
        self.assertIsNone(exe)
        self.assertIn("libfuse 3.17.4", why)
        self.assertIn("3.18 or later", why)

    def test_version_read_from_meson_build(self):
        self.assertEqual(run.libfuse_version(self.tree("3.18.2")), "3.18.2")
        self.assertEqual(run.version_tuple("3.18.2"), (3, 18))
        self.assertLess(run.version_tuple("3.9.4"), (3, 18))

    def test_both_passthrough_hp_systems_missing_without_a_binary(self):
        root = Path(tempfile.mkdtemp(prefix="bench-systems."))
        self.addCleanup(shutil.rmtree, root, True)
        systems = run.make_systems([run.HP, run.HP_URING, run.URING], root, root, root / "vsymfs", None, None,
                                   None, "no libfuse source tree given")
        self.assertEqual(systems[run.HP].missing, "no libfuse source tree given")
        self.assertEqual(systems[run.HP_URING].missing, "no libfuse source tree given")
        self.assertTrue(systems[run.HP_URING].uring)
        self.assertFalse(systems[run.HP].uring)
        self.assertTrue(systems[run.URING].uring)

    def test_each_row_names_its_transport(self):
        root = Path(tempfile.mkdtemp(prefix="bench-systems."))
        self.addCleanup(shutil.rmtree, root, True)
        systems = run.make_systems([run.VSYMFS, run.URING, run.HP, run.HP_URING], root, root, root / "vsymfs",
                                   None, None, root / "passthrough_hp", None)
        opts = {n: systems[n].command(root / "s", root / "m")[3].split(",") for n in (run.VSYMFS, run.URING)}
        self.assertIn("no_uring", opts[run.VSYMFS])
        self.assertIn("uring", opts[run.URING])
        self.assertEqual(systems[run.HP_URING].command(root / "s", root / "m")[1:3], ["--foreground", "-o"])
        self.assertIn("io_uring", systems[run.HP_URING].command(root / "s", root / "m")[3].split(","))
        self.assertNotIn("io_uring", systems[run.HP].command(root / "s", root / "m")[3].split(","))


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit("usage: run_test.py PATH_TO_BENCH_RUN")
    run = load_harness(sys.argv.pop(1))
    unittest.main()
