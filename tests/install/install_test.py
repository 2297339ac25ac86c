#!/usr/bin/env python3
"""`meson install` gives a complete installation (issue 17, item 1).

Installs the build into a scratch DESTDIR and checks the exact file list
(a file installed that this test does not know fails it too, so the list
stays the documented one), that the programs run from there, that the
installed unit names the installed programs, that the example rules file
is valid and says what the built-in rules say, and that a reinstall keeps
an edited /etc/vsymfs/rules.toml.
    install_test.py MESON KEY=VALUE...
"""
import glob
import os
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import installtree  # noqa: E402

failures = []


def check(ok, what):
    print(("ok   " if ok else "FAIL ") + what)
    if not ok:
        failures.append(what)


def main():
    meson, cfg = sys.argv[1], dict(a.split("=", 1) for a in sys.argv[2:])
    os.environ["PATH"] = os.path.dirname(meson) + os.pathsep + os.environ.get("PATH", "")
    j = os.path.join
    prefix = cfg["prefix"]
    doc = j(prefix, cfg["docdir"])
    rules = cfg["default_rules_path"]
    sbin_vsymfs = j(prefix, cfg["sbindir"], "vsymfs")
    bin_vsymctl = j(prefix, cfg["bindir"], "vsymctl")
    man = j(prefix, cfg["mandir"])
    expected = {
        sbin_vsymfs, bin_vsymctl,
        j(man, "man8", "vsymfs.8"), j(man, "man1", "vsymctl.1"), j(man, "man5", "vsymfs-rules.5"),
        rules, j(doc, "examples", "rules.toml"), j(doc, "README.md"),
    }
    configs = sorted(glob.glob(j(cfg["source_root"], "config", "*.toml")))
    check(len(configs) >= 8, f"config/ has its examples ({len(configs)})")
    expected |= {j(doc, "examples", os.path.basename(c)) for c in configs}
    if cfg["unitdir"]:
        expected |= {j(prefix, cfg["unitdir"], "vsymfs@.service"),
                     j(doc, "examples", "systemd", "tree.conf"), j(doc, "examples", "systemd", "tree.mount")}
    if cfg["bashcompletiondir"]:
        expected.add(j(prefix, cfg["bashcompletiondir"], "vsymctl"))
    if cfg["zshcompletiondir"]:
        expected.add(j(prefix, cfg["zshcompletiondir"], "_vsymctl"))

    dest = tempfile.mkdtemp(prefix="vsymfs-install-")
    try:
        installtree.meson_install(cfg["build_root"], dest)
        got = installtree.files_under(dest)
        missing, extra = sorted(expected - got), sorted(got - expected)
        check(not missing, "every expected file is installed" + (f"; missing: {missing}" if missing else ""))
        check(not extra, "nothing else is installed" + (f"; not expected: {extra}" if extra else ""))
        d = lambda p: dest + p  # noqa: E731

        for exe in (sbin_vsymfs, bin_vsymctl):
            check(os.access(d(exe), os.X_OK), f"{exe} is executable")
        r = subprocess.run([d(sbin_vsymfs), "--version"], capture_output=True, text=True)
        check(r.returncode == 0 and r.stdout.startswith("vsymfs "), f"installed vsymfs --version: {r.stdout.strip()}")
        check(os.stat(d(rules)).st_mode & 0o777 == 0o644, f"{rules} is mode 0644")

        # The example rules: valid, and the same expansions as the built-in rules.
        ctl = d(bin_vsymctl)
        r = subprocess.run([ctl, "check", d(rules)], capture_output=True, text=True)
        check(r.returncode == 0, f"vsymctl check {rules}: {(r.stdout + r.stderr).strip()}")
        for text in ("@sys/bin", "/export/${USER}/@machine", "att=/a ucb=/u", "cluster/{memb}", "${UNSET_X}/%{ARCH}"):
            for extra_args in ([], ["--universe", "ucb", "--arch", "i686"]):
                a = subprocess.run([ctl, "expand", *extra_args, text], capture_output=True, text=True)
                b = subprocess.run([ctl, "expand", "--rules", d(rules), *extra_args, text], capture_output=True, text=True)
                check(a.returncode == b.returncode == 0 and a.stdout == b.stdout,
                      f"{text!r} {' '.join(extra_args)}: built-in {a.stdout.strip()!r}, installed file {b.stdout.strip()!r}")

        if cfg["unitdir"]:
            unit = open(d(j(prefix, cfg["unitdir"], "vsymfs@.service"))).read()
            for line in (f"ExecStart={sbin_vsymfs} -f ", f"ExecReload={bin_vsymctl} --mount %f reload",
                         f"EnvironmentFile={os.path.dirname(rules)}/%i.conf", "Type=notify"):
                check(any(l.startswith(line) for l in unit.splitlines()), f"the unit has {line!r}")
            check("@" not in "".join(l for l in unit.splitlines() if not l.startswith("#") and "vsymfs@" not in l),
                  "the unit has no unsubstituted @VARIABLE@")

        # A reinstall keeps an edited configuration file.
        with open(d(rules), "a") as f:
            f.write("# edited by the administrator\n")
        installtree.meson_install(cfg["build_root"], dest)
        check(open(d(rules)).read().endswith("# edited by the administrator\n"), "a reinstall keeps an edited rules.toml")
    finally:
        installtree.rm_tree(dest)
    if failures:
        print(f"{len(failures)} check(s) failed")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
