#!/usr/bin/env python3
"""vsymfs with containers (issue 12, tests b, c and d; docs/containers.md).

  --case inside    the daemon inside a podman container (runc) serves a tree;
                   a process in the container reads variant links and runs a
                   program through an @sys link.
  --case host      a daemon on the host serves two podman containers with
                   different --hostname, the mountpoint bound into both: each
                   sees its own @hostname and [host."ctr-*"] values.
  --case rootless  a throwaway unprivileged uid mounts inside `unshare -Urm`
                   and reads ${USER} and @sys links; its socket is not in
                   /run/vsymfs.

No registry is reachable here, so the image is assembled offline from the
host's own files (a shell, a few programs and the libraries they and the
vsymfs binary load; `podman import`, about 2 s) and kept under a tag named
after those files; the binary under test is bound into each container
read-only. (mmdebstrap would take 45 s to 5 min here, too slow for CI; the
Containerfile and docs/containers.md build a real image.)

Exit 0 pass, 1 fail, 77 skip (with the reason). Everything started is
stopped on every path out; each wait has a deadline.

  containers_test.py --case inside|host|rootless
  env: VSYMFS_BIN
"""
import argparse
import hashlib
import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time

SKIP = 77
PODMAN_FLAGS = ["--runtime", "runc", "--ulimit", "nofile=20000:20000", "--ulimit", "nproc=4096:4096",
                "--network", "none"]
T0 = time.monotonic()


class Failure(Exception):
    pass


class Skip(Exception):
    pass


def log(msg):
    print(f"[{time.monotonic() - T0:6.1f}s] {msg}", flush=True)


def run(argv, timeout=120, check=True, **kw):
    r = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, **kw)
    if check and r.returncode != 0:
        raise Failure(f"{' '.join(argv)[:300]} exited {r.returncode}:\n{r.stdout}\n{r.stderr}")
    return r


def expect(cond, what):
    if not cond:
        raise Failure(what)
    log(f"ok: {what}")


def wait_for(what, pred, seconds):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.05)
    raise Failure(f"timed out after {seconds}s: {what}")


def mounted(path):
    with open("/proc/self/mounts") as f:
        return any(line.split()[1] == path and line.split()[2] == "fuse.vsymfs" for line in f)


RULES = """\
[host."ctr-a"]
COLOR = "red"

[host."ctr-b"]
COLOR = "blue"

[host."*"]
COLOR = "grey"

[sysname]
native = ["ctr_sys", "fallback_sys"]
compat32 = ["fallback_sys"]
"""


# ------------------------------------------------------------------ image

# What the containers run: a shell and the few programs the scripts call.
# The vsymfs binary under test is bound in (read-only), so its libraries
# come along too.
# uid 0 has a name of its own in the image, so a name from the container's
# /etc/passwd cannot be mistaken for the host's.
IMAGE_PASSWD = "ctr-root:x:0:0:root:/root:/bin/sh\n"
IMAGE_GROUP = "ctr-wheel:x:0:\n"
IMAGE_PROGRAMS = ["sh", "mkdir", "ln", "chmod", "cat", "readlink", "printf", "id", "uname", "umount", "true"]


def libraries(binary):
    """The shared objects `binary` loads, as ldd resolves them on this host."""
    out = run(["ldd", binary]).stdout
    libs = []
    for line in out.splitlines():
        parts = line.split("=>")
        path = (parts[1] if len(parts) > 1 else parts[0]).split("(")[0].strip()
        if path.startswith("/"):
            libs.append(path)
    return libs


def ensure_image(binary):
    """A minimal image from the host's own files: the programs above, their
    libraries and the vsymfs binary's, /etc/passwd and /etc/group with root
    only. Built by copying and `podman import` (a few seconds, offline, the
    same libraries the binary was built against); kept under a tag named
    after the files' contents, so a run after a rebuild of nothing reuses it.
    (docs/containers.md builds a real image with the Containerfile.)"""
    files = set()
    for prog in IMAGE_PROGRAMS:
        path = shutil.which(prog) or ""
        if not path:
            raise Skip(f"{prog} not found on the host: cannot assemble the test image")
        path = os.path.realpath(path)
        files.add(path)
        files.update(libraries(path))
    files.update(libraries(binary))
    # glibc loads the files NSS module by name (older releases: a separate object).
    for d in ("/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu", "/lib64", "/usr/lib64", "/lib", "/usr/lib"):
        nss = os.path.join(d, "libnss_files.so.2")
        if os.path.exists(nss):
            files.add(nss)
    digest = hashlib.sha256((IMAGE_PASSWD + IMAGE_GROUP).encode())
    for f in sorted(files):
        st = os.stat(f)
        digest.update(f"{f} {st.st_size} {st.st_mtime_ns}\n".encode())
    image = f"localhost/vsymfs-test:{digest.hexdigest()[:12]}"
    if run(["podman", "image", "exists", image], check=False).returncode == 0:
        log(f"image {image} exists")
        return image
    t = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="vsymfs-image.") as d:
        root = os.path.join(d, "root")
        for sub in ("etc", "tmp", "proc", "sys", "dev", "root", "usr/local/bin", "bin"):
            os.makedirs(os.path.join(root, sub), exist_ok=True)
        os.chmod(os.path.join(root, "tmp"), 0o1777)
        for f in sorted(files):
            dest = root + f
            os.makedirs(os.path.dirname(dest), exist_ok=True)
            shutil.copy2(f, dest)
        # The programs under the names the scripts use (PATH=/bin:/usr/bin).
        for prog in IMAGE_PROGRAMS:
            real = os.path.realpath(shutil.which(prog))
            link = os.path.join(root, "bin", prog)
            if not os.path.lexists(link) and root + real != link:
                os.symlink(real, link)
        with open(os.path.join(root, "etc/passwd"), "w") as out:
            out.write(IMAGE_PASSWD)
        with open(os.path.join(root, "etc/group"), "w") as out:
            out.write(IMAGE_GROUP)
        with open(os.path.join(root, "etc/nsswitch.conf"), "w") as out:
            out.write("passwd: files\ngroup: files\n")
        tar = os.path.join(d, "rootfs.tar")
        run(["tar", "-C", root, "-cf", tar, "."])
        run(["podman", "import", "--change", "ENV=PATH=/usr/local/bin:/bin:/usr/bin", tar, image], timeout=300)
    log(f"image {image} built from the host's files in {time.monotonic() - t:.1f}s")
    # Earlier builds (other libraries, an older test): ours to drop.
    listed = run(["podman", "images", "--format", "{{.Repository}}:{{.Tag}}"], check=False).stdout.split()
    for old in listed:
        if old.startswith("localhost/vsymfs-test:") and old != image:
            run(["podman", "rmi", old], check=False)
    return image


def podman(image, binary, args, script, timeout=120):
    argv = (["podman", "run", "--rm"] + PODMAN_FLAGS + args +
            ["-v", f"{binary}:/usr/local/bin/vsymfs:ro", image, "/bin/sh", "-c", script])
    return run(argv, timeout=timeout, check=False)


def podman_usable():
    if os.geteuid() != 0:
        raise Skip("the podman cases run podman as root (rootful, runc)")
    for b in ("podman", "runc"):
        if shutil.which(b) is None:
            raise Skip(f"{b} is not installed (scripts/setup installs podman and runc)")
    try:
        os.close(os.open("/dev/fuse", os.O_RDWR))
    except OSError as e:
        raise Skip(f"/dev/fuse cannot be opened: {e}")


def parse(out):
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


# ------------------------------------------------------------------ cases

def case_inside(args):
    """The daemon inside the container."""
    podman_usable()
    image = ensure_image(args.vsymfs)
    script = f"""
set -e
mkdir -p /src/arch/ctr_sys /v /etc/vsymfs
cat > /etc/vsymfs/rules.toml <<'EOF'
{RULES}EOF
printf '#!/bin/sh\\necho "hello from $(uname -n) as $(id -un)"\\n' > /src/arch/ctr_sys/hello
chmod 755 /src/arch/ctr_sys/hello
ln -s arch/@sys /src/bin
ln -s @hostname /src/h
ln -s '${{COLOR}}' /src/c
ln -s '${{USER}}' /src/u
ln -s '${{GROUP}}' /src/g
vsymfs -o allow_other /src /v
for l in h c u g bin; do printf '%s=%s\\n' $l "$(readlink /v/$l)"; done
printf 'run=%s\\n' "$(/v/bin/hello)"
umount /v
"""
    t = time.monotonic()
    r = podman(image, args.vsymfs, ["--hostname", "ctr-a", "--device", "/dev/fuse", "--cap-add", "SYS_ADMIN"],
               script)
    log(f"container ran in {time.monotonic() - t:.1f}s")
    if r.returncode != 0:
        raise Failure(f"the container exited {r.returncode}:\n{r.stdout}\n{r.stderr}")
    m = parse(r.stdout)
    expect(m.get("h") == "ctr-a", f"@hostname is the container's ({m.get('h')!r})")
    expect(m.get("c") == "red", f"[host.\"ctr-a\"] applies ({m.get('c')!r})")
    expect(m.get("u") == "ctr-root", f"${{USER}} from the container's /etc/passwd ({m.get('u')!r})")
    expect(m.get("g") == "ctr-wheel", f"${{GROUP}} from the container's /etc/group ({m.get('g')!r})")
    expect(m.get("bin") == "arch/ctr_sys", f"@sys ({m.get('bin')!r})")
    expect(m.get("run") == "hello from ctr-a as ctr-root", f"a program runs through @sys ({m.get('run')!r})")


def case_host(args):
    """A daemon on the host serves two containers."""
    podman_usable()
    image = ensure_image(args.vsymfs)
    work = tempfile.mkdtemp(prefix="vsymfs-ctr.", dir="/tmp")  # root's, 0700: a trusted rules path
    src, mnt, rules = (os.path.join(work, n) for n in ("src", "mnt", "rules.toml"))
    os.mkdir(src)
    os.mkdir(mnt)
    os.chmod(work, 0o755)
    with open(rules, "w") as f:
        f.write(RULES)
    for name, target in (("h", "@hostname"), ("c", "${COLOR}"), ("u", "${USER}"), ("g", "${GROUP}")):
        os.symlink(target, os.path.join(src, name))
    daemon = subprocess.Popen([args.vsymfs, "-f", "-o", f"allow_other,rules={rules}", src, mnt],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_for("the host daemon mounts", lambda: mounted(mnt) or daemon.poll() is not None, 15)
        if daemon.poll() is not None:
            raise Failure(f"vsymfs exited {daemon.returncode}: {daemon.stdout.read()}")
        script = "for l in h c u g; do printf '%s=%s\\n' $l \"$(readlink /v/$l)\"; done"
        for host, color in (("ctr-a", "red"), ("ctr-b", "blue")):
            t = time.monotonic()
            r = podman(image, args.vsymfs, ["--hostname", host, "-v", f"{mnt}:/v:rslave"], script)
            log(f"container {host} ran in {time.monotonic() - t:.1f}s")
            if r.returncode != 0:
                raise Failure(f"container {host} exited {r.returncode}:\n{r.stdout}\n{r.stderr}")
            m = parse(r.stdout)
            expect(m.get("h") == host, f"{host}: @hostname ({m.get('h')!r})")
            expect(m.get("c") == color, f"{host}: [host.\"{host}\"] value ({m.get('c')!r})")
            expect(m.get("u") == "ctr-root", f"{host}: ${{USER}} from the container's /etc/passwd ({m.get('u')!r})")
            expect(m.get("g") == "ctr-wheel", f"{host}: ${{GROUP}} from the container's /etc/group ({m.get('g')!r})")
        own = os.uname().nodename
        expect(os.readlink(os.path.join(mnt, "h")) == own, "the host still sees its own name")
        expect(os.readlink(os.path.join(mnt, "u")) == "root", "and its own names")
    finally:
        if daemon.poll() is None:
            daemon.send_signal(signal.SIGTERM)
            try:
                daemon.wait(10)
            except subprocess.TimeoutExpired:
                daemon.kill()
                daemon.wait()
        if mounted(mnt):
            run(["umount", "-l", mnt], check=False)
        shutil.rmtree(work, ignore_errors=True)


def case_rootless(args):
    """An unprivileged uid mounts inside its own user namespace."""
    if os.geteuid() != 0:
        raise Skip("needs root to run as a throwaway uid and to open /dev/fuse to users for the run")
    for b in ("unshare", "setpriv"):
        if shutil.which(b) is None:
            raise Skip(f"{b} is not installed")
    uid = 4713  # no account: a throwaway user
    work = tempfile.mkdtemp(prefix="vsymfs-rootless.", dir="/tmp")
    os.chmod(work, 0o755)
    for d in ("src", "mnt", "home"):
        os.mkdir(os.path.join(work, d))
    os.symlink("${USER}", os.path.join(work, "src", "u"))
    os.symlink("@sys", os.path.join(work, "src", "s"))
    for dirpath, dirnames, filenames in os.walk(work):
        for n in dirnames + filenames + ["."]:
            os.lchown(os.path.join(dirpath, n), uid, uid)
    st = os.stat("/dev/fuse")
    restore = None
    if st.st_mode & 0o006 != 0o006:  # Debian's udev makes it 0666; some machines do not
        restore = stat.S_IMODE(st.st_mode)
        os.chmod("/dev/fuse", 0o666)
    try:
        probe = run(["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "unshare", "-Urm", "true"],
                    check=False)
        if probe.returncode != 0:
            raise Skip(f"an unprivileged user cannot make a user namespace here: {probe.stderr.strip()}")
        script = f"""
set -e
cd {work}
vsymfs -o builtin_rules src mnt
printf 'u=%s\\ns=%s\\nid=%s\\n' "$(readlink mnt/u)" "$(readlink mnt/s)" "$(id -u)"
printf 'socket=%s\\n' "$(getfattr --only-values -n security.vsymfs.control mnt 2>/dev/null || true)"
ls -d /tmp/vsymfs-{uid} >/dev/null && echo tmpdir=yes
umount mnt
"""
        env = {"HOME": os.path.join(work, "home"), "PATH": os.path.dirname(args.vsymfs) + ":/usr/sbin:/usr/bin:/sbin:/bin",
               "LC_ALL": "C"}
        r = run(["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "unshare", "-Urm",
                 "/bin/sh", "-c", script], check=False, env=env, timeout=60)
        if r.returncode != 0:
            raise Failure(f"the rootless mount failed ({r.returncode}):\n{r.stdout}\n{r.stderr}")
        m = parse(r.stdout)
        expect(m.get("id") == "0", "the daemon and its caller are uid 0 of their user namespace")
        expect(m.get("u") == "root", f"${{USER}} is the namespace's name for uid 0 ({m.get('u')!r})")
        expect(m.get("s") not in (None, "", "@sys"), f"@sys expands ({m.get('s')!r})")
        expect(m.get("tmpdir") == "yes", f"its socket directory is /tmp/vsymfs-{uid}, named after the host uid")
        if m.get("socket"):
            expect(not m["socket"].startswith("/run/vsymfs"), f"not in root's /run/vsymfs ({m['socket']})")
    finally:
        if restore is not None:
            os.chmod("/dev/fuse", restore)
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(f"/tmp/vsymfs-{uid}", ignore_errors=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--case", required=True, choices=["inside", "host", "rootless"])
    ap.add_argument("--vsymfs", default=os.environ.get("VSYMFS_BIN", "vsymfs"))
    ap.add_argument("--deadline", type=float, default=400)
    args = ap.parse_args()
    if os.sep in args.vsymfs:
        args.vsymfs = os.path.abspath(args.vsymfs)

    def on_alarm(signum, frame):
        raise Failure(f"did not finish within its deadline of {args.deadline:.0f}s")
    signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(int(args.deadline))
    try:
        {"inside": case_inside, "host": case_host, "rootless": case_rootless}[args.case](args)
    except Skip as e:
        print(f"SKIP: {e}")
        return SKIP
    except (Failure, subprocess.TimeoutExpired) as e:
        print(f"FAIL: {e}")
        return 1
    log(f"PASS ({time.monotonic() - T0:.1f}s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
