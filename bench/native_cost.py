#!/usr/bin/env python3
"""What a native caller pays for a change to the caller context, measured
side by side: two vsymfs binaries (old and new) serve the same tree in
turn, alternating, and each row reports both and the ratio new/old.

  bench/native_cost.py --old OLD/vsymfs --new NEW/vsymfs \
      --metabench BUILD/bench/metabench --probe BUILD/tests/integration/arch_probe_native

Rows:
  hit readlink lib@machine   one long-lived process (metabench, --seconds);
                             its context is cached: a request reads nothing
  hit readlink ../@sys/bin   the same for an @sys link (probe cached too)
  miss new process           a fresh native process per readlink (arch_probe
                             readlink, --spawns times): every request is a
                             context miss; wall time per process and the
                             daemon's CPU time per process (sum of its
                             threads' /proc/PID/task/*/schedstat)
Needs root (allow_other) and /dev/fuse. Prints a Markdown table.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time


def daemon_cpu_ns(pid):
    total = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                total += int(f.read().split()[0])
        except OSError:
            pass
    return total


def is_mounted(path):
    with open("/proc/self/mountinfo") as f:
        return any(line.split()[4] == path for line in f)


class Mount:
    def __init__(self, binary, root):
        self.src = os.path.join(root, "src")
        self.mnt = os.path.join(root, "mnt")
        os.makedirs(self.src)
        os.makedirs(self.mnt)
        os.makedirs(os.path.join(self.src, "links"))
        for i in range(64):
            os.symlink("lib@machine", os.path.join(self.src, "links", f"l{i}"))
        os.makedirs(os.path.join(self.src, "syslinks"))
        os.makedirs(os.path.join(self.src, "amd64_linux26", "bin"))
        for i in range(64):
            os.symlink("../@sys/bin", os.path.join(self.src, "syslinks", f"s{i}"))
        self.proc = subprocess.Popen([binary, "-f", "-o", "allow_other", self.src, self.mnt],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while not is_mounted(self.mnt):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{binary} did not mount")
            time.sleep(0.05)

    def close(self):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            subprocess.run(["umount", "-l", self.mnt], check=False)
            self.proc.kill()
            self.proc.wait()


def metabench(args, directory, expect):
    out = subprocess.run([args.metabench, "--op", "readlink", "--dir", directory, "--seconds", str(args.seconds),
                          "--procs", "1", "--expect", expect], capture_output=True, text=True, check=True).stdout
    return json.loads(out)["ops_per_sec"]


def spawns(args, mount):
    link = os.path.join(mount.mnt, "links", "l0")
    cpu0 = daemon_cpu_ns(mount.proc.pid)
    t0 = time.monotonic()
    for _ in range(args.spawns):
        r = subprocess.run([args.probe, "readlink", link], capture_output=True, text=True)
        if r.stdout != "libx86_64\n":
            raise RuntimeError(f"unexpected readlink: {r.stdout!r}")
    wall = (time.monotonic() - t0) / args.spawns * 1e6
    cpu = (daemon_cpu_ns(mount.proc.pid) - cpu0) / args.spawns / 1e3
    return wall, cpu


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--old", required=True)
    ap.add_argument("--new", required=True)
    ap.add_argument("--metabench", required=True)
    ap.add_argument("--probe", required=True)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--seconds", type=float, default=0.5)
    ap.add_argument("--spawns", type=int, default=300)
    args = ap.parse_args()
    rows = {k: {"old": [], "new": []} for k in ("hit_machine", "hit_sys", "miss_wall", "miss_cpu")}
    for r in range(args.rounds):
        order = ("old", "new") if r % 2 == 0 else ("new", "old")
        for which in order:
            with tempfile.TemporaryDirectory(prefix="vsymfs-native-cost.", dir="/var/tmp") as root:
                m = Mount(getattr(args, which), root)
                try:
                    rows["hit_machine"][which].append(metabench(args, os.path.join(m.mnt, "links"), "libx86_64"))
                    rows["hit_sys"][which].append(metabench(args, os.path.join(m.mnt, "syslinks"),
                                                            "../amd64_linux26/bin"))
                    wall, cpu = spawns(args, m)
                    rows["miss_wall"][which].append(wall)
                    rows["miss_cpu"][which].append(cpu)
                finally:
                    m.close()
        print(f"round {r + 1}/{args.rounds} done", file=sys.stderr)
    with open("/proc/loadavg") as f:
        load = f.read().split()[:3]
    print(f"load average at the end: {' '.join(load)}; {args.rounds} alternating rounds; median (min-max)\n")
    print("| row | old | new | new/old (median of paired ratios) |")
    print("|---|---|---|---|")
    names = {"hit_machine": "readlink lib@machine, 1 process (ops/s)",
             "hit_sys": "readlink ../@sys/bin, 1 process (ops/s)",
             "miss_wall": f"new process per readlink, wall (us/process, {args.spawns} each)",
             "miss_cpu": "new process per readlink, daemon CPU (us/process)"}
    for key, label in names.items():
        old, new = rows[key]["old"], rows[key]["new"]
        ratios = [n / o for o, n in zip(old, new) if o > 0]
        fmt = lambda xs: f"{statistics.median(xs):.1f} ({min(xs):.1f}-{max(xs):.1f})"
        print(f"| {label} | {fmt(old)} | {fmt(new)} | {statistics.median(ratios):.2f} "
              f"({min(ratios):.2f}-{max(ratios):.2f}) |")


if __name__ == "__main__":
    main()
