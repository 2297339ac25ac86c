#!/usr/bin/env python3
"""vsymfs on several simulated hosts over one GlusterFS volume (issue 15).

Each host is a network, UTS and mount namespace of its own (10.213.7.1N on a
bridge inside a namespace this test makes, so no traffic leaves them), with
its own glusterd and brick, its own GlusterFS client mounted at WORK/gluster
and its own vsymfs over WORK/gluster/tree at WORK/tree, all with the SAME
rules file (WORK/gluster/etc/rules.toml, on the volume). An "admin" namespace
on the bridge mounts the volume too, to edit that file as an administrator
would. Checked:
  - each host resolves @hostname, {memb}/${MEMBER} and its [host.*] values;
  - a file written through one host's vsymfs is read through every other's
    (waited for with a deadline; the delay is reported);
  - a variant link made on host 1 expands per host on every host;
  - drop_caches with processes holding vsymfs directories and a small
    fd_budget: every open still works (no -o no_handles);
  - `vsymctl reload` on one host changes only that host;
  - killing host 1's GlusterFS client gives its callers EIO or ENOTCONN,
    its vsymfs stays up, and serves again once the client is mounted again.
With --measure: the readlink rate per host (alone and all at once) next to
vsymfs over a local directory and native readlink on the GlusterFS mount.

Exit 0 pass, 1 fail, 77 skip (with the reason). Everything it starts (glusterd,
bricks, clients, vsymfs, namespaces) is ended on every path out, each wait
has a deadline, and the whole run has one (--deadline).

  cluster_test.py [--hosts N] [--measure] [--keep-logs DIR]
  env: VSYMFS_BIN, VSYMCTL_BIN, METABENCH_BIN (for --measure)
"""
import argparse
import errno
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

SKIP = 77
SUBNET = "10.213.7"
VOLUME = "gv"


class Failure(Exception):
    pass


class Timeout(Exception):
    pass


class Fatal(Exception):
    """A failure no waiting can mend (wait_for passes it on at once)."""


def log(msg):
    print(f"[{time.monotonic() - T0:6.1f}s] {msg}", flush=True)


T0 = time.monotonic()


def run(argv, timeout=30, check=True, **kw):
    try:
        r = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, **kw)
    except subprocess.TimeoutExpired:
        raise Failure(f"timed out after {timeout}s: {' '.join(argv)}")
    if check and r.returncode != 0:
        raise Failure(f"{' '.join(argv)} exited {r.returncode}: {r.stderr.strip() or r.stdout.strip()}")
    return r


def wait_for(what, fn, timeout, interval=0.02):
    """Calls fn() until it returns a true value; Failure after `timeout` s."""
    deadline = time.monotonic() + timeout
    last = None
    while True:
        try:
            v = fn()
            if v:
                return v
        except (Failure, OSError) as e:
            last = e
        if time.monotonic() > deadline:
            raise Failure(f"{what}: not within {timeout}s" + (f" (last: {last})" if last else ""))
        time.sleep(interval)


# Runs in a host's namespaces (python3 -c): each returns one JSON line.
PROBE = r'''
import errno, json, os, sys
op, args = sys.argv[1], sys.argv[2:]
def out(**kw): print(json.dumps(kw)); sys.exit(0)
try:
    if op == "readlink": out(ok=True, v=[os.readlink(a) for a in args])
    if op == "read":
        with open(args[0]) as f: out(ok=True, v=f.read())
    if op == "write":
        with open(args[0] + ".tmp", "w") as f: f.write(args[1])
        os.rename(args[0] + ".tmp", args[0]); out(ok=True)
    if op == "symlink": os.symlink(args[0], args[1]); out(ok=True)
    if op == "makedirs": os.makedirs(args[0], exist_ok=True); out(ok=True)
    if op == "tree":  # root, dirs, files: dK/fN holding "dK/fN"
        root, dirs, files = args[0], int(args[1]), int(args[2])
        for d in range(dirs):
            os.makedirs(f"{root}/d{d}", exist_ok=True)
            for n in range(files):
                with open(f"{root}/d{d}/f{n}", "w") as f: f.write(f"d{d}/f{n}")
        out(ok=True)
    if op == "readtree":  # every file holds its own relative path
        root, dirs, files = args[0], int(args[1]), int(args[2])
        bad = []
        for d in range(dirs):
            for n in range(files):
                try:
                    with open(f"{root}/d{d}/f{n}") as f: got = f.read()
                except OSError as e: got = "<" + errno.errorcode.get(e.errno, str(e.errno)) + ">"
                if got != f"d{d}/f{n}": bad.append(f"d{d}/f{n}: {got}")
        out(ok=not bad, v=bad[:5], bad=len(bad))
    if op == "hold":  # sit in each directory, then open every file relative to it
        dirs, files = args[0], int(args[1])
        kids = []
        for d in dirs.split(","):
            r, w = os.pipe(); r2, w2 = os.pipe()
            pid = os.fork()
            if pid == 0:
                os.chdir(d); os.write(w2, b"r"); os.read(r, 1)
                bad = 0
                for n in range(files):
                    try:
                        with open(f"f{n}") as f: f.read()
                    except OSError: bad += 1
                os._exit(min(bad, 100))
            os.read(r2, 1); kids.append((pid, w))
        print("ready", flush=True); sys.stdin.readline()
        bad = 0
        for pid, w in kids:
            os.write(w, b"g"); _, st = os.waitpid(pid, 0); bad += os.waitstatus_to_exitcode(st)
        out(ok=bad == 0, bad=bad)
    if op == "watch":  # poll every 2 ms until the file reads back as expected; print when (CLOCK_MONOTONIC)
        import time
        path, text, limit = args[0], args[1], time.monotonic() + float(args[2])
        print("ready", flush=True)
        while time.monotonic() < limit:
            try:
                with open(path) as f:
                    if f.read() == text: out(ok=True, v=time.monotonic())
            except OSError: pass
            time.sleep(0.002)
        out(ok=False, v="not seen")
    if op == "write_timed":  # write, then print when the write was done (CLOCK_MONOTONIC)
        import time
        with open(args[0] + ".tmp", "w") as f: f.write(args[1])
        os.rename(args[0] + ".tmp", args[0]); out(ok=True, v=time.monotonic())
    if op == "rewrite_timed":  # the same file rewritten in place (readers may have it cached)
        import time
        with open(args[0], "r+") as f: f.truncate(0); f.write(args[1])
        out(ok=True, v=time.monotonic())
    if op == "error_of":  # the errno of reading a file, "" when it works
        try:
            with open(args[0]) as f: f.read()
            out(ok=True, v="")
        except OSError as e: out(ok=True, v=errno.errorcode.get(e.errno, str(e.errno)))
    out(ok=False, v="unknown op " + op)
except OSError as e:
    out(ok=False, v=f"{errno.errorcode.get(e.errno, e.errno)}: {e}")
'''


class Host:
    def __init__(self, cluster, index, name, address, netns):
        self.c, self.index, self.name, self.address, self.netns = cluster, index, name, address, netns
        self.dir = os.path.join(cluster.work, name)
        self.holder = None
        self.vsymfs = None

    def argv(self, argv):
        return ["nsenter", "-t", str(self.holder.pid), "--net", "--uts", "--mount", "--"] + argv

    def sh(self, cmd, timeout=30, check=True):
        return run(self.argv(["sh", "-c", cmd]), timeout=timeout, check=check)

    def probe(self, op, *args, timeout=30):
        r = run(self.argv(["python3", "-c", PROBE, op] + [str(a) for a in args]), timeout=timeout, check=False)
        try:
            return json.loads(r.stdout.strip().splitlines()[-1])
        except (IndexError, ValueError):
            raise Failure(f"{self.name}: probe {op} {args}: exit {r.returncode}: {r.stderr.strip()}")

    def gluster(self, *args, timeout=60, check=True):
        return run(self.argv(["gluster", "--mode=script", "--glusterd-sock=/run/gluster/glusterd.socket"] +
                             list(args)), timeout=timeout, check=check)

    def vsymctl(self, *args, timeout=20, check=True):
        return run(self.argv([self.c.vsymctl, "-m", self.c.tree] + list(args)), timeout=timeout, check=check)

    def status(self):
        out = self.vsymctl("status").stdout
        return dict(line.split(": ", 1) for line in out.splitlines() if ": " in line)


class Cluster:
    def __init__(self, args, work):
        self.n = args.hosts
        self.work = work
        self.tag = f"vsc{os.getpid() % 100000}"
        self.vsymfs, self.vsymctl = args.vsymfs, args.vsymctl
        self.gluster_mnt = os.path.join(work, "gluster")   # per host (mount namespaces)
        self.tree = os.path.join(work, "tree")
        self.source = os.path.join(self.gluster_mnt, "tree")
        self.rules = os.path.join(self.gluster_mnt, "etc", "rules.toml")
        self.switch = f"{self.tag}-sw"
        self.netns = []
        self.hosts = []
        self.admin = None
        self.procs = []

    # ---------- network and namespaces ----------
    def make_network(self):
        run(["ip", "netns", "add", self.switch])
        self.netns.append(self.switch)
        run(["ip", "-n", self.switch, "link", "add", "br0", "type", "bridge"])
        run(["ip", "-n", self.switch, "link", "set", "lo", "up"])
        run(["ip", "-n", self.switch, "link", "set", "br0", "up"])
        run(["ip", "-n", self.switch, "addr", "add", f"{SUBNET}.1/24", "dev", "br0"])  # the admin's address
        hosts_file = os.path.join(self.work, "hosts")
        with open(hosts_file, "w") as f:
            f.write("127.0.0.1 localhost\n" + "".join(f"{SUBNET}.{10 + i} node{i}\n" for i in range(1, self.n + 1)))
        for i in range(1, self.n + 1):
            ns = f"{self.tag}-h{i}"
            run(["ip", "netns", "add", ns])
            self.netns.append(ns)
            run(["ip", "-n", self.switch, "link", "add", f"p{i}", "type", "veth", "peer", "name", "eth0",
                 "netns", ns])
            run(["ip", "-n", self.switch, "link", "set", f"p{i}", "master", "br0", "up"])
            run(["ip", "-n", ns, "link", "set", "lo", "up"])
            run(["ip", "-n", ns, "addr", "add", f"{SUBNET}.{10 + i}/24", "dev", "eth0"])
            run(["ip", "-n", ns, "link", "set", "eth0", "up"])
            self.hosts.append(Host(self, i, f"node{i}", f"{SUBNET}.{10 + i}", ns))
        self.admin = Host(self, 0, "admin", f"{SUBNET}.1", self.switch)

    def start_holder(self, h):
        os.makedirs(h.dir, exist_ok=True)
        # The holder keeps the host's namespaces; everything else enters them.
        h.holder = subprocess.Popen(["ip", "netns", "exec", h.netns, "unshare", "--uts", "--mount",
                                     "--propagation", "private", "--", "sleep", "100000"])
        self.procs.append(h.holder)
        mine = os.readlink("/proc/self/ns/uts")
        wait_for(f"{h.name} namespaces", lambda: os.readlink(f"/proc/{h.holder.pid}/ns/uts") != mine, 10)
        # FUSE mounts copied from the parent namespace are not ours: detach
        # them, so nothing here keeps another test's mount alive.
        h.sh("grep ' - fuse' /proc/self/mountinfo | awk '{print $5}' | sort -r | "
             "while read m; do umount -l \"$m\" 2>/dev/null; done; true")
        h.sh(f"hostname {h.name} && mount --bind {self.work}/hosts /etc/hosts && "
             "mkdir -p /var/lib/glusterd /var/log/glusterfs /run/gluster && "
             "mount -t tmpfs tmpfs /var/lib/glusterd && mount -t tmpfs tmpfs /var/log/glusterfs && "
             f"mount -t tmpfs tmpfs /run/gluster && mkdir -p {h.dir}/brick {self.gluster_mnt} {self.tree} && "
             f"mount -t tmpfs tmpfs {h.dir}/brick")

    # ---------- GlusterFS ----------
    def start_glusterd(self, h):
        vol = os.path.join(h.dir, "glusterd.vol")
        with open(vol, "w") as f:
            # Debian's /etc/glusterfs/glusterd.vol, with a socket of its own.
            f.write("volume management\n    type mgmt/glusterd\n    option working-directory /var/lib/glusterd\n"
                    "    option transport-type socket\n    option transport.socket.keepalive-time 10\n"
                    "    option transport.socket.keepalive-interval 2\n    option transport.socket.read-fail-log off\n"
                    "    option transport.socket.listen-port 24007\n    option ping-timeout 0\n"
                    "    option event-threads 1\n    option max-port 60999\n"
                    "    option glusterd-sockfile /run/gluster/glusterd.socket\nend-volume\n")
        # In the foreground (-N): no waiting for it to daemonize, and every
        # host's starts at once.
        p = subprocess.Popen(h.argv(["glusterd", "-N", "-f", vol, "-p", "/run/gluster/glusterd.pid",
                                     f"--log-file={h.dir}/glusterd.log"]),
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.procs.append(p)
        return p

    def wait_glusterd(self, h, p):
        def up():
            if p.poll() is not None:
                raise Fatal(f"glusterd on {h.name} exited {p.returncode}; see {h.dir}/glusterd.log")
            return h.gluster("peer", "status", check=False, timeout=20).returncode == 0
        wait_for(f"glusterd on {h.name}", up, 40, 0.2)

    def make_volume(self):
        first = self.hosts[0]
        for h in self.hosts[1:]:
            first.gluster("peer", "probe", h.address)

        def connected():
            out = first.gluster("peer", "status").stdout
            return out.count("(Connected)") == self.n - 1
        wait_for("peers connected", connected, 30, 0.2)
        bricks = [f"{h.address}:{h.dir}/brick/b" for h in self.hosts]
        first.gluster("volume", "create", VOLUME, "replica", "2", *bricks, "force", timeout=60)
        first.gluster("volume", "start", VOLUME, timeout=60)

        def bricks_online():
            out = first.gluster("volume", "status", VOLUME, "detail", check=False).stdout
            return out.count("Online               : Y") >= self.n
        wait_for("bricks online", bricks_online, 30, 0.2)

    def mount_client(self, h):
        self.mount_clients([h])

    def mount_clients(self, hosts):
        started = []
        for h in hosts:  # all at once: each takes seconds on a loaded machine
            pidfile = os.path.join(h.dir, "client.pid")
            server = h.address if h is not self.admin else self.hosts[0].address  # the admin runs no glusterd
            started.append((h, subprocess.Popen(h.argv([
                "glusterfs", f"--volfile-server={server}", f"--volfile-id={VOLUME}", f"--pid-file={pidfile}",
                f"--log-file={h.dir}/client.log", self.gluster_mnt]), stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE, text=True)))
        for h, p in started:
            try:
                _, err = p.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
                raise Failure(f"GlusterFS client on {h.name} did not start within 30 s")
            if p.returncode != 0:
                raise Failure(f"GlusterFS client on {h.name} exited {p.returncode}: {err.strip()}")
        for h, _ in started:
            wait_for(f"GlusterFS client on {h.name}",
                     lambda: h.sh(f"mountpoint -q {self.gluster_mnt} && ls {self.gluster_mnt} >/dev/null",
                                  check=False).returncode == 0, 30, 0.1)

    def client_pid(self, h):
        with open(os.path.join(h.dir, "client.pid")) as f:
            return int(f.read().strip())

    # ---------- vsymfs ----------
    def start_vsymfs(self, h, extra=""):
        opts = (f"allow_other,rules={self.rules},fd_budget=16,socket={h.dir}/ctl.sock,state={h.dir}/state" + extra)
        logf = open(os.path.join(h.dir, "vsymfs.log"), "ab")
        h.vsymfs = subprocess.Popen(h.argv([self.vsymfs, "-f", "-o", opts, self.source, self.tree]),
                                    stdout=logf, stderr=logf)
        self.procs.append(h.vsymfs)

        def mounted():
            if h.vsymfs.poll() is not None:
                raise Fatal(f"vsymfs on {h.name} exited {h.vsymfs.returncode}: {self.vsymfs_log(h)}")
            return h.sh(f"grep -q ' {self.tree} .* - fuse.vsymfs ' /proc/self/mountinfo", check=False).returncode == 0
        wait_for(f"vsymfs on {h.name}", mounted, 20, 0.05)

    def vsymfs_log(self, h):
        try:
            with open(os.path.join(h.dir, "vsymfs.log"), errors="replace") as f:
                return f.read()[-3000:]
        except OSError:
            return ""

    # ---------- teardown ----------
    def our_netns_inodes(self):
        inodes = set()
        for ns in self.netns:
            try:
                inodes.add(os.stat(f"/run/netns/{ns}").st_ino)
            except OSError:
                pass
        return inodes

    def processes_in_our_namespaces(self):
        ours = self.our_netns_inodes()
        pids = []
        for p in os.listdir("/proc"):
            if not p.isdigit() or int(p) == os.getpid():
                continue
            try:
                if os.stat(f"/proc/{p}/ns/net").st_ino in ours:
                    pids.append(int(p))
            except OSError:
                pass
        return pids

    def teardown(self):
        # vsymfs first (SIGTERM unmounts cleanly), then everything else that
        # lives in our namespaces: clients, bricks, glusterd, holders.
        for h in self.hosts:
            if h.vsymfs and h.vsymfs.poll() is None:
                h.vsymfs.terminate()
                try:
                    h.vsymfs.wait(10)
                except subprocess.TimeoutExpired:
                    h.vsymfs.kill()
        for sig in (signal.SIGTERM, signal.SIGKILL):
            pids = self.processes_in_our_namespaces()
            for p in pids:
                try:
                    os.kill(p, sig)
                except OSError:
                    pass
            deadline = time.monotonic() + 5
            while self.processes_in_our_namespaces() and time.monotonic() < deadline:
                time.sleep(0.05)
        for p in self.procs:
            try:
                p.kill()
                p.wait(5)
            except (OSError, subprocess.TimeoutExpired):
                pass
        for ns in reversed(self.netns):
            run(["ip", "netns", "del", ns], check=False)
        left = self.processes_in_our_namespaces()
        if left:
            log(f"WARNING: processes left in the test's namespaces: {left}")


def expect(cond, msg):
    if not cond:
        raise Failure(msg)
    log(f"ok: {msg}")


def checks(c, args, results):
    hosts = c.hosts
    h1 = hosts[0]
    t = c.tree

    # Every host resolves its own names from the one rules file.
    for name, text in [("who", "@hostname"), ("memb", "{memb}"), ("member", "m${MEMBER}"),
                       ("role", "${ROLE}${SCRATCH}/@hostname"), ("version", "v${VERSION}")]:
        r = h1.probe("symlink", text, f"{t}/{name}")
        expect(r["ok"], f"node1 made link {name} -> {text}")
    for h in hosts:
        def links():
            r = h.probe("readlink", *[f"{t}/{n}" for n in ("who", "memb", "member", "role", "version")])
            return r["v"] if r["ok"] else None
        got = wait_for(f"links made on node1 seen on {h.name}", links, 20)
        role = "head" if h.index == 1 else "worker"
        want = [h.name, f"member{h.index}", f"m{h.index}", f"{role}/scratch/{h.name}", "v1"]
        expect(got == want, f"{h.name} expands the links made on node1 for itself: {got}")
        st = h.status()
        expect(st.get("hostname") == h.name and st.get("member", "").startswith(f"{h.index} "),
               f"{h.name}: vsymctl status says hostname {st.get('hostname')}, member {st.get('member')}")
        expect(st.get("inodes_found_by", "").startswith("parent and name (SOURCE is FUSE"),
               f"{h.name}: inodes found by name on GlusterFS: {st.get('inodes_found_by')}")

    # Cross-host visibility: written through one host's vsymfs, read through
    # every other's. The delay is taken inside the hosts (both clocks are
    # the machine's CLOCK_MONOTONIC): a watcher polls every 2 ms from before
    # the write until it reads the new content.
    h1.probe("makedirs", f"{t}/data")

    def propagate(writer, op, path, text):
        """Delays until every other host reads `text` at `path`."""
        watchers = []
        for h in hosts:
            if h is writer:
                continue
            p = subprocess.Popen(h.argv(["python3", "-c", PROBE, "watch", path, text, "30"]),
                                 stdout=subprocess.PIPE, text=True)
            c.procs.append(p)
            if p.stdout.readline().strip() != "ready":
                raise Failure(f"watcher on {h.name} did not start")
            watchers.append((h, p))
        w = writer.probe(op, path, text)
        expect(w["ok"], f"{writer.name}: {op} {os.path.relpath(path, t)}")
        out = []
        for h, p in watchers:
            try:
                stdout, _ = p.communicate(timeout=40)
            except subprocess.TimeoutExpired:
                p.kill()
                raise Failure(f"watcher on {h.name} hung")
            r = json.loads(stdout.strip().splitlines()[-1])
            if not r["ok"]:
                raise Failure(f"{os.path.relpath(path, t)} written on {writer.name} never read right on {h.name}")
            out.append(max(0.0, r["v"] - w["v"]))
        return out

    new_files, rewrites = [], []
    for k in range(5):  # new files
        writer = hosts[k % len(hosts)]
        new_files += propagate(writer, "write_timed", f"{t}/data/f{k}", f"written on {writer.name} #{k}")
    expect(True, f"every file written through one host's vsymfs was read through every other's ({len(new_files)} reads)")
    h1.probe("write", f"{t}/data/log", "0")
    for h in hosts:
        wait_for(f"data/log on {h.name}", lambda: h.probe("read", f"{t}/data/log").get("v") == "0", 20)
    for k in range(1, 4):  # a file every host has read (and cached), rewritten in place
        writer = hosts[k % len(hosts)]
        rewrites += propagate(writer, "rewrite_timed", f"{t}/data/log", f"rewritten on {writer.name} #{k}")
    expect(True, f"a file rewritten in place on one host reads new on every other ({len(rewrites)} reads)")
    for what, d in (("new file", new_files), ("rewritten file", rewrites)):
        results[f"visibility_delay_s ({what})"] = {"median": round(statistics.median(d), 3),
                                                   "max": round(max(d), 3), "samples": len(d)}
        log(f"cross-host visibility delay, {what}: median {statistics.median(d):.3f} s, max {max(d):.3f} s "
            f"over {len(d)} reads")
    for h in hosts:  # data/f0 is read again below, on every host
        wait_for(f"data/f0 on {h.name}", lambda: h.probe("read", f"{t}/data/f0").get("v") == "written on node1 #0", 20)

    # drop_caches with processes in vsymfs directories and fd_budget=16.
    dirs, files = 8, 12
    expect(h1.probe("tree", f"{t}/many", dirs, files, timeout=60)["ok"], "node1 wrote many/ (96 files)")
    for h in hosts:
        wait_for(f"many/ on {h.name}", lambda: h.probe("readtree", f"{t}/many", dirs, files, timeout=60)["ok"], 30, 0.2)
    holders = []
    for h in hosts:
        p = subprocess.Popen(h.argv(["python3", "-c", PROBE, "hold",
                                     ",".join(f"{t}/many/d{d}" for d in range(dirs)), str(files)]),
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        c.procs.append(p)
        expect(p.stdout.readline().strip() == "ready", f"{h.name}: {dirs} processes sit in many/dK")
        holders.append(p)
    for h in hosts:
        h.probe("readtree", f"{t}/many", dirs, files, timeout=60)  # every inode looked up: far over the budget
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("2\n")
    for h, p in zip(hosts, holders):
        try:
            out, _ = p.communicate("go\n", timeout=60)
        except subprocess.TimeoutExpired:
            p.kill()
            raise Failure(f"{h.name}: holders did not finish")
        r = json.loads(out.strip().splitlines()[-1])
        expect(r["ok"], f"{h.name}: after drop_caches every open relative to a held directory works ({r})")
        r = h.probe("readtree", f"{t}/many", dirs, files, timeout=60)
        expect(r["ok"], f"{h.name}: after drop_caches every file opens by path ({r['bad']} bad)")
        st = h.status()
        log(f"{h.name}: stale_handles {st.get('stale_handles')}")

    # One shared rules file; the admin edits it; a reload on one host
    # changes that host only.
    with_new = c.rules_text.replace('VERSION = "1"', 'VERSION = "2"')
    expect(c.admin.probe("write", c.rules, with_new)["ok"], "admin changed VERSION to 2 in the shared rules file")

    def reloaded_to(h, want):
        h.vsymctl("reload")
        return h.probe("readlink", f"{t}/version")["v"] == [want]
    wait_for("node1 reloads VERSION 2", lambda: reloaded_to(h1, "v2"), 20, 0.2)
    expect(True, "vsymctl reload on node1: node1 expands version -> v2")
    for h in hosts[1:]:
        got = h.probe("readlink", f"{t}/version")["v"]
        expect(got == ["v1"], f"{h.name} did not reload and still expands version -> {got[0]}")
    for h in hosts[1:]:
        wait_for(f"{h.name} reloads VERSION 2", lambda: reloaded_to(h, "v2"), 20, 0.2)
    expect(True, "after vsymctl reload on every other host, all expand v2")

    # Host 1's GlusterFS client dies: a clean error there, vsymfs stays up,
    # the other hosts go on; mounted again, host 1 serves again.
    os.kill(c.client_pid(h1), signal.SIGKILL)
    err = wait_for("node1's callers see the dead client",
                   lambda: (lambda e: e if e else None)(h1.probe("error_of", f"{t}/data/f0")["v"]), 20, 0.1)
    expect(err in ("EIO", "ENOTCONN"), f"node1: reading through vsymfs gives {err}")
    expect(h1.vsymfs.poll() is None, "node1's vsymfs is still running")
    expect("source_reopened" in h1.status(), "node1's vsymctl status still answers")
    for h in hosts[1:]:
        expect(h.probe("read", f"{t}/data/f0").get("v") == "written on node1 #0", f"{h.name} still reads data/f0")
    h1.sh(f"umount -l {c.gluster_mnt}")
    c.mount_client(h1)
    wait_for("node1 serves again", lambda: h1.probe("read", f"{t}/data/f0").get("v") == "written on node1 #0", 30, 0.1)
    expect(True, "node1's vsymfs serves again after the client is mounted again")
    expect(h1.status().get("source_reopened") == "1", "node1's status counts the source reopened once")

    if args.measure:
        measure(c, args, results)


def metabench(h, metabench_bin, d, expect_text, seconds, procs=1):
    r = run(h.argv([metabench_bin, "--op", "readlink", "--dir", d, "--seconds", str(seconds), "--procs", str(procs),
                    "--expect", expect_text]), timeout=seconds * 10 + 30, check=False)
    try:
        j = json.loads(r.stdout)
    except ValueError:
        raise Failure(f"metabench on {h.name}: {r.stdout} {r.stderr}")
    if j.get("errors"):
        raise Failure(f"metabench on {h.name}: {j}")
    return j["ops_per_sec"] if "ops_per_sec" in j else j.get("rate")


def measure(c, args, results):
    mb = args.metabench
    if not mb or not os.access(mb, os.X_OK):
        raise Failure("--measure needs METABENCH_BIN")
    t, h1 = c.tree, c.hosts[0]
    h1.probe("makedirs", f"{t}/bench")
    for k in range(32):
        h1.probe("symlink", "/data/@hostname/${ROLE}", f"{t}/bench/l{k}")
    h1.probe("makedirs", f"{c.gluster_mnt}/native")
    for k in range(32):
        h1.probe("symlink", "/data/plain", f"{c.gluster_mnt}/native/l{k}")
    # A single host's vsymfs over a local directory, in host 1's namespaces.
    local_src, local_mnt = os.path.join(h1.dir, "local-src"), os.path.join(h1.dir, "local-mnt")
    os.makedirs(local_src, exist_ok=True)
    os.makedirs(local_mnt, exist_ok=True)
    for k in range(32):
        os.symlink("/data/@hostname/${ROLE}", f"{local_src}/l{k}")
    local = subprocess.Popen(h1.argv([c.vsymfs, "-f", "-o", f"allow_other,rules={c.rules},socket={h1.dir}/l.sock,"
                                      f"state={h1.dir}/lstate", local_src, local_mnt]),
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    c.procs.append(local)
    wait_for("local vsymfs", lambda: h1.sh(f"grep -q ' {local_mnt} .* - fuse.vsymfs ' /proc/self/mountinfo",
                                          check=False).returncode == 0, 20, 0.05)
    for h in c.hosts:
        role = "head" if h.index == 1 else "worker"
        wait_for(f"bench links on {h.name}", lambda: h.probe("readlink", f"{t}/bench/l31")["v"] ==
                 [f"/data/{h.name}/{role}"], 20)
    secs = args.seconds
    rows = []
    for rep in range(args.reps):
        row = {"local vsymfs (node1)": metabench(h1, mb, local_mnt, "/data/node1/head", secs),
               "native GlusterFS (node1)": metabench(h1, mb, f"{c.gluster_mnt}/native", "/data/plain", secs)}
        for h in c.hosts:
            role = "head" if h.index == 1 else "worker"
            row[f"vsymfs on GlusterFS, {h.name} alone"] = metabench(h, mb, f"{t}/bench", f"/data/{h.name}/{role}", secs)
        # All hosts at once.
        procs = []
        for h in c.hosts:
            role = "head" if h.index == 1 else "worker"
            procs.append((h, subprocess.Popen(h.argv([mb, "--op", "readlink", "--dir", f"{t}/bench", "--seconds",
                                                       str(secs), "--procs", "1", "--expect",
                                                       f"/data/{h.name}/{role}"]),
                                              stdout=subprocess.PIPE, text=True)))
        for h, p in procs:
            out, _ = p.communicate(timeout=secs * 10 + 30)
            j = json.loads(out)
            row[f"vsymfs on GlusterFS, {h.name} with all hosts at once"] = j.get("ops_per_sec", j.get("rate"))
        rows.append(row)
    local.terminate()
    local.wait(10)
    med = {k: statistics.median(r[k] for r in rows) for k in rows[0]}
    base = med["local vsymfs (node1)"]
    results["readlink_per_s"] = {k: round(v) for k, v in med.items()}
    log(f"readlink rate, 1 process, median of {args.reps} x {secs}s (ratio to local vsymfs):")
    for k, v in med.items():
        log(f"  {k:55s} {v:10.0f}/s  {v / base:5.2f}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--hosts", type=int, default=2)
    ap.add_argument("--measure", action="store_true")
    ap.add_argument("--seconds", type=float, default=1.0)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--deadline", type=float, default=85.0, help="seconds for the whole run (setup and teardown excluded)")
    ap.add_argument("--keep-logs", default="")
    ap.add_argument("--json", default="", help="write the measurements here")
    ap.add_argument("--vsymfs", default=os.environ.get("VSYMFS_BIN", "vsymfs"))
    ap.add_argument("--vsymctl", default=os.environ.get("VSYMCTL_BIN", "vsymctl"))
    ap.add_argument("--metabench", default=os.environ.get("METABENCH_BIN", ""))
    args = ap.parse_args()
    for b in ("vsymfs", "vsymctl", "metabench"):  # run from other namespaces and directories
        if getattr(args, b) and os.sep in getattr(args, b):
            setattr(args, b, os.path.abspath(getattr(args, b)))

    if os.geteuid() != 0:
        print("SKIP: the cluster test needs root (namespaces, mounts, glusterd)")
        return SKIP
    missing = [b for b in ("glusterd", "glusterfs", "gluster", "ip", "nsenter", "unshare", "mountpoint")
               if shutil.which(b) is None]
    if missing:
        print(f"SKIP: {', '.join(missing)} not installed (scripts/setup installs glusterfs-server)")
        return SKIP
    try:
        os.close(os.open("/dev/fuse", os.O_RDWR))
    except OSError as e:
        print(f"SKIP: /dev/fuse cannot be opened: {e}")
        return SKIP
    probe_ns = f"vscprobe{os.getpid() % 100000}"
    r = run(["ip", "netns", "add", probe_ns], check=False)
    run(["ip", "netns", "del", probe_ns], check=False)
    if r.returncode != 0:
        print(f"SKIP: cannot make a network namespace: {r.stderr.strip()}")
        return SKIP

    work = tempfile.mkdtemp(prefix="vsymfs-cluster.", dir="/tmp")  # 0700, root's: the rules path is trusted
    c = Cluster(args, work)
    results = {"hosts": args.hosts}

    def on_alarm(signum, frame):
        raise Timeout(f"the cluster test did not finish within its deadline of {args.deadline:.0f}s")
    signal.signal(signal.SIGALRM, on_alarm)
    def on_term(signum, frame):
        raise Failure(f"stopped by signal {signum}")
    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    status = 1
    try:
        signal.alarm(int(args.deadline))
        c.make_network()
        for h in c.hosts:
            c.start_holder(h)
        c.start_holder(c.admin)
        started = [(h, c.start_glusterd(h)) for h in c.hosts]
        for h, p in started:
            c.wait_glusterd(h, p)
        log(f"{args.hosts} hosts with glusterd up")
        c.make_volume()
        c.mount_clients(c.hosts + [c.admin])
        log("volume started, clients mounted")
        c.rules_text = RULES(args.hosts)
        expect(c.admin.probe("makedirs", os.path.dirname(c.rules))["ok"], "admin made etc/ on the volume")
        expect(c.admin.probe("write", c.rules, c.rules_text)["ok"], "admin wrote the shared rules file")
        expect(c.admin.probe("makedirs", c.source)["ok"], "admin made tree/ on the volume")
        for h in c.hosts:
            wait_for(f"rules file on {h.name}", lambda: h.probe("read", c.rules).get("v") == c.rules_text, 20)
            c.start_vsymfs(h)
        log("vsymfs mounted on every host")
        checks(c, args, results)
        status = 0
    except (Failure, Timeout, Fatal) as e:
        log(f"FAIL: {e}")
        for h in c.hosts:
            log(f"--- {h.name} vsymfs log (tail):\n{c.vsymfs_log(h)}")
    finally:
        signal.alarm(0)
        t = time.monotonic()
        try:
            c.teardown()
        finally:
            if args.keep_logs:
                try:
                    shutil.copytree(work, args.keep_logs, dirs_exist_ok=True,
                                    ignore=shutil.ignore_patterns("brick", "gluster", "tree", "local-*", "*.sock"))
                except (OSError, shutil.Error) as e:
                    log(f"could not keep every log: {e}")
            shutil.rmtree(work, ignore_errors=True)
        log(f"teardown took {time.monotonic() - t:.1f}s")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    print(json.dumps(results))
    print(f"cluster ({args.hosts} hosts): {'1 passed, 0 failed' if status == 0 else '0 passed, 1 failed'}")
    return status


def RULES(n):
    members = "".join(f'"node{i}" = {i}\n' for i in range(1, n + 1))
    return ('# One rules file for the whole cluster (tests/cluster/cluster_test.py)\n'
            '[cluster]\nmember = 0\n[cluster.members]\n' + members +
            '\n[host."node1"]\nROLE = "head"\n[host."node*"]\nROLE = "worker"\nSCRATCH = "/scratch"\n'
            '\n[vars]\nVERSION = "1"\n')


if __name__ == "__main__":
    sys.exit(main())
