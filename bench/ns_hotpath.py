#!/usr/bin/env python3
"""What callers pay for per-namespace host facts (issue 12): readlink/s of a
plain link, ${USER}, @sys and @hostname through two daemons side by side,
BASE (a build before the change) and NEW, alternating, several repetitions,
medians; then @hostname from a caller in a UTS namespace of its own
(`unshare --uts`, the container path: setns + uname per expansion) on NEW.

  bench/ns_hotpath.py --base OLD/vsymfs --new build/src/fs/vsymfs \
      --metabench build/bench/metabench [--reps 5] [--seconds 1]

Root, /dev/fuse. Requests over /dev/fuse (-o no_uring) for both daemons.
Prints a markdown table; the ratio is NEW/BASE (1.00 = the same).
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

LINKS = [("plain", "plain/target"), ("user", "${USER}"), ("sys", "@sys"), ("hostname", "@hostname")]
N_LINKS = 64


def mounted(path):
    with open("/proc/self/mounts") as f:
        return any(line.split()[1] == path for line in f)


def start(binary, root, name):
    src, mnt = os.path.join(root, name + "-src"), os.path.join(root, name + "-mnt")
    os.mkdir(src)
    os.mkdir(mnt)
    for kind, text in LINKS:
        d = os.path.join(src, kind)
        os.mkdir(d)
        for i in range(N_LINKS):
            os.symlink(text, os.path.join(d, f"l{i}"))
    p = subprocess.Popen([binary, "-f", "-o", "allow_other,builtin_rules,no_uring", src, mnt],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 15
    while not mounted(mnt):
        if p.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"{binary} did not mount")
        time.sleep(0.05)
    return p, mnt


def daemon_cpu_ns(pid):
    """CPU time of every thread of `pid` (schedstat, nanoseconds)."""
    total = 0
    for t in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{t}/schedstat") as f:
                total += int(f.read().split()[0])
        except OSError:
            pass  # a thread that ended
    return total


def rate(metabench, d, seconds, prefix=(), pid=None):
    """(readlink/s, the daemon's CPU ns per readlink)."""
    before = daemon_cpu_ns(pid) if pid else 0
    out = subprocess.run(list(prefix) + [metabench, "--op", "readlink", "--dir", d, "--seconds", str(seconds),
                                         "--procs", "1"], capture_output=True, text=True, check=True).stdout
    after = daemon_cpu_ns(pid) if pid else 0
    r = json.loads(out)
    return r["ops_per_sec"], (after - before) / max(1, r["ops"])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--base", required=True)
    ap.add_argument("--new", required=True)
    ap.add_argument("--metabench", required=True)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--seconds", type=float, default=1.0)
    a = ap.parse_args()
    root = tempfile.mkdtemp(prefix="vsymfs-nsbench.", dir="/var/tmp")
    os.chmod(root, 0o755)
    daemons = []
    try:
        base, base_mnt = start(os.path.abspath(a.base), root, "base")
        daemons.append((base, base_mnt))
        new, new_mnt = start(os.path.abspath(a.new), root, "new")
        daemons.append((new, new_mnt))
        rows = []

        def row(label, b, n):
            rr = [y[0] / x[0] for x, y in zip(b, n)]
            cr = [y[1] / x[1] for x, y in zip(b, n)]
            med = lambda v, i: statistics.median(x[i] for x in v)
            rows.append(f"| {label} | {med(b, 0):,.0f} | {med(n, 0):,.0f} | {statistics.median(rr):.3f} "
                        f"({min(rr):.2f}-{max(rr):.2f}) | {med(b, 1) / 1000:.2f} | {med(n, 1) / 1000:.2f} | "
                        f"{statistics.median(cr):.3f} ({min(cr):.2f}-{max(cr):.2f}) |")

        for kind, _ in LINKS:
            b, n = [], []
            for _ in range(a.reps):  # alternating: the same load for both
                b.append(rate(a.metabench, os.path.join(base_mnt, kind), a.seconds, pid=base.pid))
                n.append(rate(a.metabench, os.path.join(new_mnt, kind), a.seconds, pid=new.pid))
            row(kind, b, n)
        # The container path: the caller in a UTS namespace of its own.
        own, ctr = [], []
        for _ in range(a.reps):
            own.append(rate(a.metabench, os.path.join(new_mnt, "hostname"), a.seconds, pid=new.pid))
            ctr.append(rate(a.metabench, os.path.join(new_mnt, "hostname"), a.seconds,
                            prefix=("unshare", "--uts"), pid=new.pid))
        row("hostname: new, own namespace (base) vs another UTS namespace (new)", own, ctr)
        print(f"1 process, {a.reps} alternating repetitions of {a.seconds} s, medians; "
              f"load {os.getloadavg()[0]:.1f} at the end\n")
        print("| link | base readlink/s | new readlink/s | new/base (min-max of pairs) "
              "| base daemon CPU us/op | new daemon CPU us/op | new/base CPU (min-max) |")
        print("|---|---|---|---|---|---|---|")
        print("\n".join(rows))
    finally:
        for p, mnt in daemons:
            p.terminate()
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
            if mounted(mnt):
                subprocess.run(["umount", "-l", mnt])
        subprocess.run(["rm", "-rf", root])
    return 0


if __name__ == "__main__":
    sys.exit(main())
