#!/usr/bin/env python3
"""Runs vsymfs@.service the way systemd runs it, without systemd (issue 17).

These machines boot no systemd, so this test plays the manager for the
unit as built: it expands the specifiers and the environment as systemd
does, applies what of the hardening a process can apply to itself
(CapabilityBoundingSet=, NoNewPrivileges=, through setpriv), listens on a
NOTIFY_SOCKET, runs ExecStart= with a clean environment, and checks:

  - READY=1 comes only once the mount is up: the socket's queue is full
    before the daemon starts, so its first notification blocks it; while
    it is blocked, the mount must already be in /proc/self/mountinfo;
  - the notifications come from the main process (NotifyAccess=main);
  - a variant link reads as the caller's expansion;
  - ExecReload= succeeds, and fails on an invalid rules file (so
    `systemctl reload` reports it) while the old rules keep serving;
  - SIGHUP sends RELOADING=1 (with MONOTONIC_USEC) and then READY=1;
  - stopping (SIGTERM, as there is no ExecStop=) sends STOPPING=1,
    unmounts, and exits 0;
  - under the unit's capability bounding set, passthrough is not refused
    for want of a capability.
Needs root and /dev/fuse, else exit 77 (skipped).
    service_test.py UNIT VSYMFS VSYMCTL
"""
import os
import re
import shlex
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time

SKIP = 77
DEADLINE = 30.0  # seconds for anything to happen; the machine may be loaded
failures = []


def check(ok, what):
    print(("ok   " if ok else "FAIL ") + what, flush=True)
    if not ok:
        failures.append(what)
    return ok


# --- the unit file -----------------------------------------------------------

def parse_unit(path):
    """[Section] -> list of (key, value), with systemd's continuation lines."""
    sections, current, pending = {}, None, ""
    for raw in open(path):
        line = raw.rstrip("\n")
        if not pending and line.lstrip().startswith(("#", ";")):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line, pending = (pending + line).strip(), ""
        if not line:
            continue
        m = re.fullmatch(r"\[(.+)\]", line)
        if m:
            current = sections.setdefault(m.group(1), [])
            continue
        key, _, value = line.partition("=")
        current.append((key.strip(), value.strip()))
    return sections


def values(section, key):
    return [v for k, v in section if k == key]


def systemd_escape_path(path):
    """systemd-escape --path."""
    parts = [p for p in path.split("/") if p]
    if not parts:
        return "-"
    out = []
    for s in "/".join(parts).encode():
        c = chr(s)
        if c == "/":
            out.append("-")
        elif (c.isascii() and c.isalnum()) or c in ":_" or (c == "." and out):
            out.append(c)
        else:
            out.append("\\x%02x" % s)
    return "".join(out)


def systemd_unescape(s):
    return re.sub(rb"\\x([0-9a-fA-F]{2})", lambda m: bytes([int(m.group(1), 16)]),
                  s.replace("-", "/").encode()).decode()


def specifiers(text, instance):
    table = {"i": instance, "I": systemd_unescape(instance), "f": "/" + systemd_unescape(instance),
             "p": "vsymfs", "n": f"vsymfs@{instance}.service", "%": "%"}

    def one(m):
        if m.group(1) not in table:
            raise ValueError(f"this test does not know the specifier %{m.group(1)} (in {text!r})")
        return table[m.group(1)]
    return re.sub(r"%(.)", one, text)


def parse_environment(value):
    """Environment=: space-separated, quotable K=V assignments."""
    return dict(w.split("=", 1) for w in shlex.split(value))


def parse_environment_file(path):
    env = {}
    for line in open(path):
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        key, _, value = line.partition("=")
        v = value.strip()
        if len(v) >= 2 and v[0] == v[-1] and v[0] in "'\"":
            v = v[1:-1]
        env[key.strip()] = v
    return env


def command_line(value, env):
    """ExecStart= and friends: prefixes, quoting, $VAR (split) and ${VAR} (one word)."""
    m = re.match(r"[-@:+!]*", value)
    prefixes, value = m.group(0), value[m.end():]
    if set(prefixes) - {"-"}:
        raise ValueError(f"this test does not know the command prefixes {prefixes!r}")
    argv = []
    for word in shlex.split(value):
        whole = re.fullmatch(r"\$([A-Za-z_][A-Za-z0-9_]*)", word)
        if whole:
            argv += env.get(whole.group(1), "").split()
        else:
            argv.append(re.sub(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}", lambda v: env.get(v.group(1), ""), word))
    return argv, "-" in prefixes


# --- the notify socket -------------------------------------------------------

class NotifySocket:
    def __init__(self, path):
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(path)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        self.fillers = 0

    def fill(self):
        """Fills the receive queue, so that the next sender blocks."""
        s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        s.setblocking(False)
        while True:
            try:
                s.sendto(b"FILLER=1", self.path)
                self.fillers += 1
            except BlockingIOError:
                break
        s.close()

    def receive(self, timeout):
        """(sender pid, {key: value}) or (None, None) after timeout."""
        self.sock.settimeout(timeout)
        while True:
            try:
                data, anc, _, _ = self.sock.recvmsg(4096, socket.CMSG_SPACE(struct.calcsize("3i")))
            except socket.timeout:
                return None, None
            pid = None
            for level, kind, payload in anc:
                if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
                    pid = struct.unpack("3i", payload[:12])[0]
            fields = dict(l.split("=", 1) for l in data.decode().split("\n") if "=" in l)
            if self.fillers and fields.get("FILLER") == "1":
                self.fillers -= 1
                continue
            return pid, fields

    def close(self):
        self.sock.close()


# --- mounts ------------------------------------------------------------------

def mount_entry(mnt):
    """(connection number, fstype) of the mount on mnt, or None."""
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            if fields[4] == mnt:
                sep = fields.index("-")
                return fields[2].split(":")[1], fields[sep + 1]
    return None


def abort_mount(mnt):
    """The last resort of a failed test: abort the FUSE connection and detach."""
    entry = mount_entry(mnt)
    if entry is None:
        return
    if not os.path.isdir("/sys/fs/fuse/connections/" + entry[0]):
        subprocess.run(["mount", "-t", "fusectl", "none", "/sys/fs/fuse/connections"], check=False)
    try:
        with open(f"/sys/fs/fuse/connections/{entry[0]}/abort", "w") as f:
            f.write("1")
    except OSError:
        pass
    subprocess.run(["umount", "-l", mnt], check=False)


def wait_for(cond, what):
    end = time.monotonic() + DEADLINE
    while time.monotonic() < end:
        v = cond()
        if v:
            return v
        time.sleep(0.02)
    check(False, f"within {DEADLINE:.0f} s: {what}")
    return None


def run(argv, env, timeout=DEADLINE):
    return subprocess.run(argv, env=env, cwd="/", stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          timeout=timeout)


# --- the test ----------------------------------------------------------------

def main():
    if len(sys.argv) != 4:
        sys.exit("usage: service_test.py UNIT VSYMFS VSYMCTL")
    unit_path, vsymfs, vsymctl = (os.path.abspath(a) for a in sys.argv[1:])
    if os.geteuid() != 0 or not os.path.exists("/dev/fuse"):
        print("SKIP: needs root and /dev/fuse")
        return SKIP

    unit = parse_unit(unit_path)
    svc = unit["Service"]
    check(values(svc, "Type") == ["notify"], "Type=notify")
    check(not values(svc, "ExecStop"), "no ExecStop=: systemd stops the daemon with SIGTERM")
    (exec_start,) = values(svc, "ExecStart")
    (exec_reload,) = values(svc, "ExecReload")
    # The unit names the installed programs; this test runs the built ones.
    installed = {os.path.basename(shlex.split(exec_start)[0]): vsymfs,
                 os.path.basename(shlex.split(exec_reload)[0]): vsymctl}
    check(set(installed) == {"vsymfs", "vsymctl"}, f"ExecStart= runs vsymfs, ExecReload= vsymctl: {sorted(installed)}")

    base = tempfile.mkdtemp(prefix="vsymfs-svc-", dir="/tmp")
    os.chmod(base, 0o755)
    src, mnt, confdir = f"{base}/src", f"{base}/mnt", f"{base}/etc"
    for d in (src, mnt, confdir, f"{src}/export/root"):
        os.makedirs(d)
    os.symlink("export/${USER}", f"{src}/home")
    os.symlink("${GREETING}", f"{src}/greeting")
    rules = f"{base}/rules.toml"
    with open(rules, "w") as f:
        f.write('[vars]\nGREETING = "hello"\n')

    instance = systemd_escape_path(mnt)
    if os.path.exists("/usr/bin/systemd-escape"):
        r = subprocess.run(["systemd-escape", "--path", mnt], capture_output=True, text=True)
        check(r.stdout.strip() == instance, f"instance name as systemd-escape --path makes it: {instance}")
    check(specifiers("%f", instance) == mnt, "%f is the mount point")

    # Settings from EnvironmentFile=, redirected from CONFDIR to the scratch
    # directory; socket and state files there too, not in /run and /var/lib.
    (env_file,) = [specifiers(v, instance) for v in values(svc, "EnvironmentFile")]
    check(env_file.endswith(f"/{instance}.conf"), f"settings come from {env_file}")
    env_file = f"{confdir}/{os.path.basename(env_file)}"
    with open(env_file, "w") as f:
        f.write(f"# written by service_test.py\nSOURCE={src}\n"
                f"OPTIONS=allow_other,rules={rules},socket={base}/ctl.sock,state={base}/state\n")

    env = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"}
    for v in values(svc, "Environment"):
        env.update(parse_environment(specifiers(v, instance)))
    env.update(parse_environment_file(env_file))
    notify = NotifySocket(f"{base}/notify")
    env["NOTIFY_SOCKET"] = notify.path

    start_argv, _ = command_line(specifiers(exec_start, instance), env)
    start_argv[0] = installed[os.path.basename(start_argv[0])]
    print("ExecStart:", shlex.join(start_argv))

    # What of the hardening a process can do to itself.
    caps = " ".join(specifiers(v, instance) for v in values(svc, "CapabilityBoundingSet")).split()
    wrapper = ["setpriv"]
    if caps:
        wrapper.append("--bounding-set=-all," + ",".join("+" + c.lower().removeprefix("cap_") for c in caps))
    if values(svc, "NoNewPrivileges") == ["yes"]:
        wrapper.append("--no-new-privs")
    print("hardening applied:", shlex.join(wrapper[1:]) or "none")

    log_path = f"{base}/journal.log"
    daemon = None
    try:
        notify.fill()
        with open(log_path, "w") as log:
            daemon = subprocess.Popen(wrapper + start_argv, env=env, cwd="/", stdin=subprocess.DEVNULL,
                                      stdout=log, stderr=subprocess.STDOUT)

        def blocked_or_exited():
            if daemon.poll() is not None:
                return "exited"
            try:
                with open(f"/proc/{daemon.pid}/wchan") as f:
                    return "blocked" if f.read().strip() == "unix_wait_for_peer" else None
            except OSError:
                return None
        state = wait_for(blocked_or_exited, "the daemon sends its first notification")
        check(state == "blocked", f"the daemon notifies ({state}; log: {open(log_path).read().strip()})")
        if state != "blocked":
            return 1
        # The daemon is stuck in sendmsg() with its first notification.
        check(mount_entry(mnt) is not None and mount_entry(mnt)[1] == "fuse.vsymfs",
              "the mount is up when the first notification is sent")
        pid, msg = notify.receive(DEADLINE)
        check(msg is not None and msg.get("READY") == "1", f"the first notification is READY=1: {msg}")
        check(pid == daemon.pid, f"it comes from the main process ({pid}, main {daemon.pid})")
        check(bool(msg and msg.get("STATUS")), f"with a STATUS=: {msg and msg.get('STATUS')}")

        def readlink(name):
            r = run(["readlink", f"{mnt}/{name}"], env)
            return r.stdout.strip()
        check(readlink("home") == "export/root", f"home -> {readlink('home')} (export/root for root)")
        check(readlink("greeting") == "hello", f"greeting -> {readlink('greeting')}")

        st = run([vsymctl, "--mount", mnt, "status"], env)
        passthrough = [l for l in st.stdout.splitlines() if l.startswith("passthrough")]
        check(st.returncode == 0 and passthrough, f"vsymctl status: {passthrough}")
        check(not any("CAP_" in l or "capab" in l for l in passthrough),
              "passthrough is not refused for want of a capability")

        # ExecReload=, as systemd runs it: the service's environment plus MAINPID.
        reload_env = dict(env, MAINPID=str(daemon.pid))
        reload_argv, _ = command_line(specifiers(exec_reload, instance), reload_env)
        reload_argv[0] = installed[os.path.basename(reload_argv[0])]
        print("ExecReload:", shlex.join(reload_argv))
        with open(rules, "w") as f:
            f.write('[vars]\nGREETING = "again"\n')
        r = run(reload_argv, reload_env)
        check(r.returncode == 0, f"ExecReload= succeeds: {(r.stdout + r.stderr).strip()}")
        check(readlink("greeting") == "again", f"and the new rules serve: greeting -> {readlink('greeting')}")
        with open(rules, "w") as f:
            f.write('[vars]\nGREETING = \n')
        r = run(reload_argv, reload_env)
        check(r.returncode != 0, f"ExecReload= fails on an invalid rules file: {(r.stdout + r.stderr).strip()}")
        check(readlink("greeting") == "again", f"and the old rules stay: greeting -> {readlink('greeting')}")
        with open(rules, "w") as f:
            f.write('[vars]\nGREETING = "hup"\n')

        # SIGHUP: RELOADING=1, then READY=1.
        while notify.receive(0.2)[1] is not None:
            pass  # nothing else is expected; drop anything pending
        os.kill(daemon.pid, signal.SIGHUP)
        pid, msg = notify.receive(DEADLINE)
        check(msg is not None and msg.get("RELOADING") == "1" and msg.get("MONOTONIC_USEC", "").isdigit(),
              f"SIGHUP: RELOADING=1 with MONOTONIC_USEC: {msg}")
        pid, msg = notify.receive(DEADLINE)
        check(msg is not None and msg.get("READY") == "1", f"then READY=1: {msg}")
        check(readlink("greeting") == "hup", f"the reloaded rules serve: greeting -> {readlink('greeting')}")

        # Stop: systemd sends SIGTERM (KillSignal=) to the main process.
        os.kill(daemon.pid, signal.SIGTERM)
        pid, msg = notify.receive(DEADLINE)
        check(msg is not None and msg.get("STOPPING") == "1", f"SIGTERM: STOPPING=1: {msg}")
        try:
            rc = daemon.wait(DEADLINE)
        except subprocess.TimeoutExpired:
            rc = None
        check(rc == 0, f"the daemon exits 0 ({rc})")
        check(mount_entry(mnt) is None, "and the mount is gone")
    finally:
        if daemon is not None and daemon.poll() is None:
            daemon.kill()
            daemon.wait()
        abort_mount(mnt)
        notify.close()
        if failures:
            print("daemon log:\n" + open(log_path).read() if os.path.exists(log_path) else "no daemon log")
        subprocess.run(["rm", "-rf", base], check=False)
    if failures:
        print(f"{len(failures)} check(s) failed")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
