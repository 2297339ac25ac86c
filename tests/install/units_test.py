#!/usr/bin/env python3
"""`systemd-analyze verify` passes, silently, on the installed units (issue 17).

Installs the build into a scratch DESTDIR and verifies vsymfs@.service (for
a plain and an escaped instance) and the example tree.mount. verify
checks that the programs a unit runs exist, so the copies verified name
the programs under DESTDIR; the rest of each unit is the installed text.
verify exits 0 on unknown keys and bad values, only warning: any output
fails this test. Exit 77 (skipped) without systemd-analyze.
    units_test.py MESON KEY=VALUE...
"""
import os
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import installtree  # noqa: E402

SKIP = 77


def main():
    meson, cfg = sys.argv[1], dict(a.split("=", 1) for a in sys.argv[2:])
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        print("SKIP: no systemd-analyze (Debian's systemd package provides it)")
        return SKIP
    os.environ["PATH"] = os.path.dirname(meson) + os.pathsep + os.environ["PATH"]
    j = os.path.join
    prefix = cfg["prefix"]
    programs = [j(prefix, cfg["sbindir"], "vsymfs"), j(prefix, cfg["bindir"], "vsymctl")]
    failed = 0
    dest = tempfile.mkdtemp(prefix="vsymfs-units-")
    try:
        installtree.meson_install(cfg["build_root"], dest)
        units = j(dest, "units")
        os.mkdir(units)
        text = open(dest + j(prefix, cfg["unitdir"], "vsymfs@.service")).read()
        for p in programs:
            assert p in text, f"the unit does not run {p}"
            text = text.replace(p, dest + p)
        with open(j(units, "vsymfs@.service"), "w") as f:
            f.write(text)
        shutil.copy(dest + j(prefix, cfg["docdir"], "examples", "systemd", "tree.mount"), units)
        env = dict(os.environ, MANPATH=dest + j(prefix, cfg["mandir"]))  # for Documentation=man:...
        for unit in ("vsymfs@tree.service", r"vsymfs@srv-my\x2dtree.service", "tree.mount"):
            r = subprocess.run([analyze, "verify", j(units, unit)], env=env, capture_output=True, text=True)
            out = (r.stdout + r.stderr).strip()
            ok = r.returncode == 0 and not out
            print(("ok   " if ok else "FAIL ") + f"systemd-analyze verify {unit}" + (f": {out}" if out else ""))
            failed += not ok
    finally:
        installtree.rm_tree(dest)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
