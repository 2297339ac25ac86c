#!/usr/bin/env python3
"""vsymctl's shell completions offer what the built vsymctl accepts (issue 17).

The completions read `vsymctl [SUB] --help`; this test reads it on its own
(CLI11's layout) and checks that bash, or zsh through a pseudo-terminal,
offers exactly those commands and options, and the right kind of value
after an option.
    completion_test.py bash|zsh COMPLETION_FILE VSYMCTL
zsh: exit 77 (skipped) without zsh.
"""
import os
import re
import shutil
import subprocess
import sys
import tempfile

SKIP = 77
failures = []


def check(ok, what):
    print(("ok   " if ok else "FAIL ") + what)
    if not ok:
        failures.append(what)


def help_sections(vsymctl, *sub):
    """{'Subcommands': [...], 'Options': [names...]} from `vsymctl [SUB] --help`."""
    out = subprocess.run([vsymctl, *sub, "--help"], capture_output=True, text=True, check=True).stdout
    sections, current = {}, None
    for line in out.splitlines():
        m = re.fullmatch(r"(\w+):", line)
        if m:
            current = sections.setdefault(m.group(1), [])
        elif current is not None and re.match(r"  \S", line):
            current.append(line.split()[0])
        elif not line.startswith("   "):
            current = None
    opts = [n for names in sections.get("Options", []) for n in names.split(",")]
    return sections.get("Subcommands", []), opts


def bash_complete(comp_file, path, words):
    """COMPREPLY of `words` (the last one being completed) in bash."""
    script = (f'source "$1"; shift; COMP_WORDS=("$@"); COMP_CWORD=$(( $# - 1 )); '
              'COMP_LINE="$*"; COMP_POINT=${#COMP_LINE}; _vsymctl; printf "%s\\n" "${COMPREPLY[@]}"')
    r = subprocess.run(["bash", "-c", script, "bash", comp_file, *words], capture_output=True, text=True,
                       env=dict(os.environ, PATH=path), timeout=60)
    return {l for l in r.stdout.splitlines() if l}


ZSH_DRIVER = r'''
zmodload zsh/zpty
zpty z zsh -f -i
zpty -w z "PS1=''; fpath=($1 \$fpath); PATH=$2; autoload -U compinit; compinit -u; setopt nobeep; LISTMAX=10000; zstyle ':completion:*' list-separator '::'; showbuf() { print -r -- \"BUF<\$BUFFER>\"; }; zle -N showbuf; bindkey '^Xb' showbuf"
zpty -w z 'print ${:-READ}Y'
zpty -r z out '*READY*'
shift 2
for cmd in "$@"; do
  zpty -w -n z "$cmd"$'\t\C-xb'
  zpty -r z out "*BUF<*>*"
  print -r -- "== $cmd"
  print -r -- "${out//$'\r'/}"
  zpty -w z $'\C-e\C-u''print ${:-DON}E'
  zpty -r z out "*DONE*"
done
zpty -d z
'''


def zsh_complete(fn_dir, path, lines):
    """For each command line typed then TAB: (the line buffer afterwards, the listing)."""
    r = subprocess.run(["zsh", "-f", "-c", ZSH_DRIVER, "zsh", fn_dir, path, *lines], capture_output=True,
                       text=True, timeout=120)
    results = {}
    for block in r.stdout.split("== ")[1:]:
        cmd, _, rest = block.partition("\n")
        rest = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", rest)
        buf = re.search(r"BUF<(.*?)>", rest)
        listing = rest[:buf.start()] if buf else rest
        results[cmd] = (buf.group(1) if buf else None, listing)
    return results


def main():
    shell, comp_file, vsymctl = sys.argv[1], os.path.abspath(sys.argv[2]), os.path.abspath(sys.argv[3])
    if shutil.which(shell) is None:
        print(f"SKIP: no {shell} (scripts/setup installs it)")
        return SKIP
    bindir = tempfile.mkdtemp(prefix="vsymctl-comp-")
    try:
        os.symlink(vsymctl, os.path.join(bindir, "vsymctl"))
        path = bindir + os.pathsep + "/usr/bin:/bin"
        subs, globals_ = help_sections(vsymctl)
        check(len(subs) >= 10 and "expand" in subs, f"vsymctl --help lists its commands: {subs}")
        if shell == "bash":
            got = bash_complete(comp_file, path, ["vsymctl", ""])
            check(got == set(subs), f"vsymctl <TAB>: {sorted(got)}")
            check(bash_complete(comp_file, path, ["vsymctl", "-m", "/tmp", "exp"]) == {"expand", "explain"},
                  "vsymctl -m /tmp exp<TAB>: expand explain")
            for sub in subs:
                if sub == "run":
                    continue  # run's words after its options are a command
                _, opts = help_sections(vsymctl, sub)
                got = bash_complete(comp_file, path, ["vsymctl", sub, "-"])
                check(got == set(opts) | set(globals_), f"vsymctl {sub} -<TAB>: {sorted(got)}")
            got = bash_complete(comp_file, path, ["vsymctl", "expand", "--rules", "/etc/host"])
            check("/etc/hosts" in got and "/etc/hostname" in got, f"--rules FILE: {sorted(got)}")
            got = bash_complete(comp_file, path, ["vsymctl", "--mount", "/e"])
            check(got == {"/etc"}, f"--mount DIR: {sorted(got)}")
            got = bash_complete(comp_file, path, ["vsymctl", "expand", "--user", "roo"])
            check(got == {"root"}, f"--user USER: {sorted(got)}")
            got = bash_complete(comp_file, path, ["vsymctl", "expand", "--explain", ""])
            check(got == set(), f"no value after a flag, no file for expand's TEXT: {sorted(got)}")
            got = bash_complete(comp_file, path, ["vsymctl", "run", "--universe", "ucb", "--", "ech"])
            check("echo" in got, f"run -- COMMAND: {sorted(got)[:5]}")
            got = bash_complete(comp_file, path, ["vsymctl", "run", "ls", "/etc/hostn"])
            check(got == {"/etc/hostname"}, f"run COMMAND ARG: {sorted(got)}")
        else:
            fn_dir = tempfile.mkdtemp(prefix="vsymctl-zfn-", dir=bindir)
            shutil.copy(comp_file, os.path.join(fn_dir, "_vsymctl"))
            lines = ["vsymctl ", "vsymctl -m /tmp exp", "vsymctl set -", "vsymctl expand --ru",
                     "vsymctl expand --user roo", "vsymctl run -- ech", "vsymctl run ls /etc/hostn"]
            res = zsh_complete(fn_dir, path, lines)
            buf, listing = res.get("vsymctl ", (None, ""))
            shown = set(re.findall(r"^(\S+)\s+::", listing, re.M))
            check(shown == set(subs), f"vsymctl <TAB> lists {sorted(shown)}")
            check(res.get("vsymctl -m /tmp exp", (None,))[0] == "vsymctl -m /tmp exp",
                  "vsymctl -m /tmp exp<TAB>: the common prefix of expand and explain")
            _, set_opts = help_sections(vsymctl, "set")
            listing = res.get("vsymctl set -", (None, ""))[1]
            shown = {n for row in re.findall(r"^(.*?)::", listing, re.M) for n in row.split()}
            check(shown == set(set_opts) | set(globals_), f"vsymctl set -<TAB> lists {sorted(shown)}")
            for line, want in (("vsymctl expand --ru", "vsymctl expand --rules "),
                               ("vsymctl expand --user roo", "vsymctl expand --user root "),
                               ("vsymctl run -- ech", "vsymctl run -- echo"),
                               ("vsymctl run ls /etc/hostn", "vsymctl run ls /etc/hostname ")):
                got = res.get(line, (None,))[0]
                check(got is not None and got.startswith(want), f"{line}<TAB> -> {got!r}")
    finally:
        shutil.rmtree(bindir, ignore_errors=True)
    if failures:
        print(f"{len(failures)} check(s) failed")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
