"""`meson install` into a scratch DESTDIR, for the install suite's tests."""
import fcntl
import os
import shutil
import subprocess


def meson_install(build_root, destdir):
    """Installs the build into destdir; returns meson's output.

    meson install rewrites meson-logs/install-log.txt, which `ninja
    uninstall` reads: the log of a real installation is put back afterwards,
    so running the tests never makes `ninja uninstall` forget it.
    """
    log = os.path.join(build_root, "meson-logs", "install-log.txt")
    # One install at a time: tests running in parallel would save each
    # other's log instead of the real one.
    with open(os.path.join(build_root, "meson-logs", "install-test.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        saved = None
        if os.path.exists(log):
            with open(log, "rb") as f:
                saved = f.read()
        try:
            r = subprocess.run(["meson", "install", "-C", build_root, "--no-rebuild", "--destdir", destdir],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, check=False)
        finally:
            if saved is None:
                if os.path.exists(log):
                    os.unlink(log)
            else:
                with open(log, "wb") as f:
                    f.write(saved)
    if r.returncode != 0:
        raise RuntimeError(f"meson install failed ({r.returncode}):\n{r.stdout}")
    return r.stdout


def files_under(root):
    """Every file and symlink under root, as absolute paths of the installed system."""
    out = set()
    for dirpath, dirnames, filenames in os.walk(root):
        for name in filenames + [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]:
            out.add("/" + os.path.relpath(os.path.join(dirpath, name), root))
    return out


def rm_tree(path):
    shutil.rmtree(path, ignore_errors=True)
