#!/usr/bin/env python3
"""vsymfs POSIX parity suite: the same scripted operations in a native
directory and through a vsymfs mount of another directory on the same
filesystem, compared step by step (issue 13, item 2).

What is compared, per step: the return value or errno of every operation,
and for every snapshot (stat) the file type, permission bits, owner and
group, link count, size (rdev for devices) and, per timestamp, whether it
changed since the case last aged the file (changed/unchanged, never the
value, except explicit old values a case set itself).

Timestamps: a case "ages" files first: utimensat sets their atime and mtime
to 2001, which sets the ctime to now, and the suite then waits until the
coarse clock the kernel stamps files with has passed that ctime, so any
later change is visible as a different value. Nothing sleeps for a guessed
time.

Who: four long-lived worker processes with fixed identities run the
operations, so locks can be held between two processes and every request
comes from a process the daemon can look up:
    root   uid 0
    user   uid 2001 gid 2001, no supplementary groups
    group  uid 2002 gid 2002, supplementary groups 2010 2011
    other  uid 2003 gid 2003, supplementary group 2010 (the second party)
Every case runs three times, its actor ("me") being root, user and group.

Where: both sides on one fresh ext4 (a sparse image in /dev/shm on a loop
device; the filesystem of /tmp when that cannot be made), each with a small
tmpfs inside for EXDEV. The mount is started as tests/integration's
mount_fixture does (vsymfs -f -o allow_other,builtin_rules SRC MNT, waiting
for it), once per pass (cases.PASSES: the defaults, and -o acl for the ACL
and permission cases). Every request to a worker has a deadline, and so has
the whole run: on a hang the FUSE connection is aborted through fusectl and
the mount detached, so CI never wedges.

Report: a line per deliberate difference and per difference, each with
both results of every step that differs, then cases / same / deliberate /
different per category and per identity. Exit status: 0 when every
difference is one cases.DELIBERATE explains (each with its reason, also in
docs/vsymfs.8, POSIX PARITY), 1 otherwise, 77 (skip) without root or
/dev/fuse.

    tests/parity/parity.py [--vsymfs PATH] [--only SUBSTRING] [--actors root,user] [-v] [--keep]
"""

import argparse
import ctypes
import ctypes.util
import errno
import fcntl
import os
import pickle
import select
import shutil
import signal
import stat
import struct
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

AT_FDCWD = -100
AT_SYMLINK_NOFOLLOW = 0x100
AT_EACCESS = 0x200
UTIME_NOW = (1 << 30) - 1
UTIME_OMIT = (1 << 30) - 2
CLOCK_REALTIME_COARSE = 5
F_OFD_GETLK, F_OFD_SETLK = 36, 37
AGED = 1_000_000_000  # 2001-09-09, what age() sets atime and mtime to
OP_DEADLINE = 20.0     # seconds for one operation
RUN_DEADLINE = 240     # seconds for the whole run (about 35 here; meson's timeout is 300)


class Ident:
    def __init__(self, name, uid, gid, groups):
        self.name, self.uid, self.gid, self.groups = name, uid, gid, groups


IDENTS = {
    'root': Ident('root', 0, 0, []),
    'user': Ident('user', 2001, 2001, []),
    'group': Ident('group', 2002, 2002, [2010, 2011]),
    'other': Ident('other', 2003, 2003, [2010]),
}
ACTORS = ['root', 'user', 'group']
GROUPS = {'shared': 2010, 'g2011': 2011, 'foreign': 2099}  # group and other are in shared; group in g2011
ID_NAMES = {0: 'root', 2001: 'user', 2002: 'group', 2003: 'other', 2010: 'shared', 2011: 'g2011', 2099: 'foreign'}

# ---------------------------------------------------------------- worker side

_libc = ctypes.CDLL(ctypes.util.find_library('c') or None, use_errno=True)


class _Timespec(ctypes.Structure):
    _fields_ = [('tv_sec', ctypes.c_long), ('tv_nsec', ctypes.c_long)]


def _check(ret):
    if ret < 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))
    return ret


def _times(a, m):
    def one(v):
        if v == 'now':
            return _Timespec(0, UTIME_NOW)
        if v == 'omit':
            return _Timespec(0, UTIME_OMIT)
        if v == 'bad-nsec':
            return _Timespec(0, 1_000_000_000)
        return _Timespec(int(v), 0)
    return (_Timespec * 2)(one(a), one(m))


def _raw_stat(st):
    return (st.st_mode, st.st_uid, st.st_gid, st.st_nlink, st.st_size, st.st_rdev,
            st.st_atime_ns, st.st_mtime_ns, st.st_ctime_ns)


def _flock_struct(kind, start, length):
    t = {'r': fcntl.F_RDLCK, 'w': fcntl.F_WRLCK, 'u': fcntl.F_UNLCK}[kind]
    return struct.pack('hhqqi4x', t, os.SEEK_SET, start, length, 0)


class Worker:
    """The operations a worker runs; each returns a plain value or raises OSError."""

    def __init__(self):
        self.fds = {}

    def fd(self, name):
        if name not in self.fds:
            raise OSError(errno.EBADF, 'no descriptor ' + name)
        return self.fds[name]

    def op_reset(self):
        for fd in self.fds.values():
            try:
                os.close(fd)
            except OSError:
                pass
        self.fds.clear()

    def op_stat(self, p, follow=False):
        return _raw_stat(os.stat(p, follow_symlinks=follow))

    def op_fstat(self, f):
        return _raw_stat(os.fstat(self.fd(f)))

    def op_access(self, p, mode, follow=True):
        _check(_libc.faccessat(AT_FDCWD, p.encode(), mode, AT_EACCESS | (0 if follow else AT_SYMLINK_NOFOLLOW)))

    def op_mkdir(self, p, mode):
        os.mkdir(p, mode)

    def op_rmdir(self, p):
        os.rmdir(p)

    def op_unlink(self, p):
        os.unlink(p)

    def op_mkfifo(self, p, mode):
        os.mkfifo(p, mode)

    def op_mknod(self, p, mode, major=0, minor=0):
        os.mknod(p, mode, os.makedev(major, minor))

    def op_symlink(self, target, p):
        os.symlink(target, p)

    def op_readlink(self, p):
        return os.readlink(p)

    def op_link(self, a, b, follow=False):
        os.link(a, b, follow_symlinks=follow)

    def op_linkfd(self, f, p):
        os.link('/proc/self/fd/%d' % self.fd(f), p, follow_symlinks=True)

    def op_rename(self, a, b, flags=0):
        _check(_libc.renameat2(AT_FDCWD, a.encode(), AT_FDCWD, b.encode(), ctypes.c_uint(flags)))

    def op_chmod(self, p, mode, follow=True):
        _check(_libc.fchmodat(AT_FDCWD, p.encode(), mode, 0 if follow else AT_SYMLINK_NOFOLLOW))

    def op_chown(self, p, uid, gid, follow=True):
        os.chown(p, uid, gid, follow_symlinks=follow)

    def op_truncate(self, p, n):
        os.truncate(p, n)

    def op_utimens(self, p, a, m, follow=True):
        _check(_libc.utimensat(AT_FDCWD, p.encode(), _times(a, m), 0 if follow else AT_SYMLINK_NOFOLLOW))

    def op_futimens(self, f, a, m):
        _check(_libc.futimens(self.fd(f), _times(a, m)))

    def op_open(self, p, flags, mode, f):
        if f in self.fds:
            os.close(self.fds.pop(f))
        self.fds[f] = os.open(p, flags, mode)

    def op_openat(self, d, rel, flags, mode, f):
        if f in self.fds:
            os.close(self.fds.pop(f))
        self.fds[f] = os.open(rel, flags, mode, dir_fd=self.fd(d))

    def op_mkdirat(self, d, rel, mode):
        os.mkdir(rel, mode, dir_fd=self.fd(d))

    def op_statat(self, d, rel):
        return _raw_stat(os.stat(rel, dir_fd=self.fd(d), follow_symlinks=False))

    def op_unlinkat(self, d, rel, isdir=False):
        if isdir:
            os.rmdir(rel, dir_fd=self.fd(d))
        else:
            os.unlink(rel, dir_fd=self.fd(d))

    def op_close(self, f):
        os.close(self.fds.pop(f))

    def op_write(self, f, data):
        return os.write(self.fd(f), data)

    def op_read(self, f, n):
        return os.read(self.fd(f), n)

    def op_pread(self, f, n, off):
        return os.pread(self.fd(f), n, off)

    def op_pwrite(self, f, data, off):
        return os.pwrite(self.fd(f), data, off)

    def op_lseek(self, f, off, whence):
        return os.lseek(self.fd(f), off, whence)

    def op_ftruncate(self, f, n):
        os.ftruncate(self.fd(f), n)

    def op_fchmod(self, f, mode):
        os.fchmod(self.fd(f), mode)

    def op_fchown(self, f, uid, gid):
        os.fchown(self.fd(f), uid, gid)

    def op_fsync(self, f):
        os.fsync(self.fd(f))

    def op_fallocate(self, f, mode, off, n):
        _check(_libc.fallocate(self.fd(f), mode, ctypes.c_long(off), ctypes.c_long(n)))

    def op_listdir(self, p):
        return sorted(os.listdir(p))

    def op_setxattr(self, p, name, value, flags=0, follow=True):
        os.setxattr(p, name, value, flags, follow_symlinks=follow)

    def op_getxattr(self, p, name, follow=True):
        return os.getxattr(p, name, follow_symlinks=follow)

    def op_getxattr_size(self, p, name, size):
        """getxattr with a buffer of `size` bytes (0: ask for the length)."""
        buf = ctypes.create_string_buffer(max(size, 1))
        return _check(_libc.lgetxattr(p.encode(), name.encode(), buf if size else None, ctypes.c_size_t(size)))

    def op_listxattr(self, p, follow=True):
        return sorted(n for n in os.listxattr(p, follow_symlinks=follow) if n != 'security.selinux')

    def op_removexattr(self, p, name, follow=True):
        os.removexattr(p, name, follow_symlinks=follow)

    def op_flock(self, f, how):
        ops = {'sh': fcntl.LOCK_SH, 'ex': fcntl.LOCK_EX, 'un': fcntl.LOCK_UN}
        fcntl.flock(self.fd(f), ops[how] | (0 if how == 'un' else fcntl.LOCK_NB))

    def op_setlk(self, f, kind, start, length, ofd=False):
        fcntl.fcntl(self.fd(f), F_OFD_SETLK if ofd else fcntl.F_SETLK, _flock_struct(kind, start, length))

    def op_getlk(self, f, kind, start, length, ofd=False):
        r = fcntl.fcntl(self.fd(f), F_OFD_GETLK if ofd else fcntl.F_GETLK, _flock_struct(kind, start, length))
        t, _, s, n, pid = struct.unpack('hhqqi4x', r)
        name = {fcntl.F_RDLCK: 'r', fcntl.F_WRLCK: 'w', fcntl.F_UNLCK: 'u'}.get(t, t)
        return (name, s, n, pid) if name != 'u' else ('u',)

    def op_exec(self, p, *args):
        """Runs p (execve as this worker) and returns its exit status; an
        execve that fails raises its errno."""
        r = subprocess.run([p] + list(args), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL, env={'PATH': '/usr/bin:/bin'}, timeout=OP_DEADLINE / 2)
        return r.returncode

    def op_getpid(self):
        return os.getpid()


def _send(fd, obj):
    data = pickle.dumps(obj)
    data = struct.pack('I', len(data)) + data
    while data:
        n = os.write(fd, data)
        data = data[n:]


def _recv_exact(fd, n, deadline=None):
    out = b''
    while len(out) < n:
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                raise TimeoutError
        chunk = os.read(fd, n - len(out))
        if not chunk:
            raise EOFError
        out += chunk
    return out


def _recv(fd, deadline=None):
    (n,) = struct.unpack('I', _recv_exact(fd, 4, deadline))
    return pickle.loads(_recv_exact(fd, n, deadline))


def worker_main(ident, rfd, wfd):
    os.setgroups(ident.groups)
    os.setresgid(ident.gid, ident.gid, ident.gid)
    os.setresuid(ident.uid, ident.uid, ident.uid)
    os.umask(0o022)
    os.chdir('/')
    w = Worker()
    while True:
        try:
            op, args, kwargs = _recv(rfd)
        except EOFError:
            os._exit(0)
        try:
            res = ('ok', getattr(w, 'op_' + op)(*args, **kwargs))
        except OSError as e:
            res = ('err', errno.errorcode.get(e.errno, str(e.errno)))
        except Exception as e:  # a bug in a case: reported as its own result
            res = ('exc', '%s: %s' % (type(e).__name__, e))
        _send(wfd, res)


# ------------------------------------------------------------------ the mount

class Mount:
    """vsymfs -f -o allow_other,builtin_rules[,extra] SRC MNT, with a hang guard."""

    def __init__(self, binary, src, mnt, log, extra=()):
        self.src, self.mnt, self.log = src, mnt, log
        opts = ','.join(['allow_other', 'builtin_rules'] + list(extra))
        parent = os.stat(os.path.dirname(mnt)).st_dev
        with open(log, 'wb') as lf:
            self.proc = subprocess.Popen([binary, '-f', '-o', opts, src, mnt], stdout=lf, stderr=lf,
                                         stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 15
        while os.stat(mnt).st_dev == parent:
            if self.proc.poll() is not None:
                raise RuntimeError('vsymfs exited before mounting:\n' + self.log_text())
            if time.monotonic() > deadline:
                self.abort()
                raise RuntimeError('vsymfs did not mount within 15 s:\n' + self.log_text())
            time.sleep(0.01)

    def log_text(self):
        try:
            with open(self.log, errors='replace') as f:
                return f.read()
        except OSError:
            return ''

    def connection(self):
        with open('/proc/self/mountinfo') as f:
            for line in f:
                parts = line.split()
                if parts[4] == self.mnt:
                    return parts[2].split(':')[1]
        return None

    def abort(self):
        """The hang guard: abort the FUSE connection, detach, kill (DEPLOY-FACTS)."""
        conn = self.connection()
        if conn is not None:
            if not os.path.exists('/sys/fs/fuse/connections/' + conn):
                subprocess.run(['mount', '-t', 'fusectl', 'none', '/sys/fs/fuse/connections'],
                               stderr=subprocess.DEVNULL)
            try:
                with open('/sys/fs/fuse/connections/%s/abort' % conn, 'w') as f:
                    f.write('1')
            except OSError:
                pass
        subprocess.run(['umount', '-l', self.mnt], stderr=subprocess.DEVNULL)
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def stop(self):
        """SIGTERM must unmount cleanly and exit 0; anything else is reported."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.abort()
                return 'vsymfs did not exit within 10 s of SIGTERM'
        subprocess.run(['umount', '-l', self.mnt], stderr=subprocess.DEVNULL)
        if self.proc.returncode != 0:
            return 'vsymfs exited with status %s after SIGTERM' % self.proc.returncode
        return None


# ------------------------------------------------------------------ the suite

class CaseError(Exception):
    pass


class Suite:
    def __init__(self, args):
        self.args = args
        self.workers = {}
        self.mounts = []
        self.pid_names = {}
        self.cleanup = None  # undoes the scratch filesystems, also after a hang

    def start_workers(self):
        for name, ident in IDENTS.items():
            r1, w1 = os.pipe()
            r2, w2 = os.pipe()
            pid = os.fork()
            if pid == 0:
                os.close(w1)
                os.close(r2)
                for _, w, r in self.workers.values():  # or those workers never see EOF
                    os.close(w)
                    os.close(r)
                try:
                    worker_main(ident, r1, w2)
                finally:
                    os._exit(1)
            os.close(r1)
            os.close(w2)
            self.workers[name] = (pid, w1, r2)
        for name in self.workers:
            self.pid_names[self.call(name, 'getpid')[1]] = name

    def stop_workers(self):
        for pid, w, r in self.workers.values():
            os.close(w)
            os.close(r)
            try:
                os.waitpid(pid, 0)
            except ChildProcessError:
                pass
        self.workers.clear()

    def call(self, who, op, *args, **kwargs):
        _, w, r = self.workers[who]
        _send(w, (op, args, kwargs))
        try:
            return _recv(r, time.monotonic() + OP_DEADLINE)
        except (TimeoutError, EOFError) as e:
            self.hang('%s %s%r: %s' % (who, op, args, 'no answer in %d s' % OP_DEADLINE
                                       if isinstance(e, TimeoutError) else 'worker died'))

    def hang(self, what):
        print('parity: FAIL: %s; aborting the mount' % what, flush=True)
        for m in self.mounts:
            m.abort()
            print('--- daemon log\n' + m.log_text()[-4000:])
        for pid, _, _ in self.workers.values():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if self.cleanup:
            self.cleanup()
        os._exit(1)


class Trace:
    """One run of one case on one side: the lines compared between sides."""

    def __init__(self, suite, top, case_rel, actor):
        self.suite, self.top, self.actor = suite, top, actor
        self.dir = os.path.join(top, case_rel)
        self.lines = []
        self.aged = {}

    # Paths: relative to the case directory; '@top/x' is x in the side's
    # root (for a nested filesystem both sides have); absolute ones are kept.
    def path(self, p):
        if p.startswith('@top/'):
            return os.path.join(self.top, p[5:])
        if p.startswith('/'):
            return p
        return os.path.join(self.dir, p) if p else self.dir

    def do(self, op, *args, who=None, paths=(0,), show=None, **kwargs):
        """Runs op as `who` (default: the actor) and records it. `paths` are
        the indexes of arguments that are paths."""
        who = who or self.actor
        real = list(args)
        for i in paths:
            if i < len(real) and isinstance(real[i], str):
                real[i] = self.path(real[i])
        kind, val = self.suite.call(who, op, *real, **kwargs)
        shown = show(val) if (show and kind == 'ok') else val
        if kind == 'ok':
            res = '0' if shown is None else self.fmt(shown)
        elif kind == 'err':
            res = val
        else:
            res = 'EXCEPTION ' + val
        shown_args = [self.fmt_arg(op, i, a) for i, a in enumerate(args)]
        argtext = ', '.join(shown_args + ['%s=%s' % (k, self.fmt(v)) for k, v in kwargs.items()])
        self.lines.append('%s %s(%s) -> %s' % (who, op, argtext, res))
        return val if kind == 'ok' else None if kind == 'exc' else val

    MODE_ARG = {'mkdir': 1, 'chmod': 1, 'fchmod': 1, 'mkfifo': 1, 'mknod': 1, 'open': 2, 'openat': 3, 'mkdirat': 2}
    FLAG_ARG = {'open': 1, 'openat': 2}
    FLAGS = [(os.O_TMPFILE, 'O_TMPFILE'), (os.O_WRONLY, 'O_WRONLY'), (os.O_RDWR, 'O_RDWR'), (os.O_CREAT, 'O_CREAT'),
             (os.O_EXCL, 'O_EXCL'), (os.O_TRUNC, 'O_TRUNC'), (os.O_APPEND, 'O_APPEND'),
             (os.O_NONBLOCK, 'O_NONBLOCK'), (os.O_DIRECTORY, 'O_DIRECTORY'), (os.O_NOFOLLOW, 'O_NOFOLLOW'),
             (os.O_NOATIME, 'O_NOATIME'), (os.O_PATH, 'O_PATH')]

    def fmt_arg(self, op, i, v):
        """Modes in octal and open flags by name, for the reader."""
        if self.MODE_ARG.get(op) == i and isinstance(v, int):
            return '0%o' % v
        if self.FLAG_ARG.get(op) == i and isinstance(v, int):
            names, rest = [], v
            for bit, name in self.FLAGS:
                if rest & bit == bit:
                    names.append(name)
                    rest &= ~bit
            if rest:
                names.append('0x%x' % rest)
            return '|'.join(names) or 'O_RDONLY'
        return self.fmt(v)

    @staticmethod
    def fmt(v):
        if isinstance(v, bytes):
            return repr(v) if len(v) <= 64 else '<%d bytes, crc %08x>' % (len(v), __import__('zlib').crc32(v))
        if isinstance(v, str) and len(v) > 64:
            return '<%d chars %s...%s>' % (len(v), v[:12], v[-12:])
        if isinstance(v, (list, tuple)):
            return '[' + ', '.join(Trace.fmt(x) for x in v) + ']'
        return str(v)

    def snapshot(self, st, key):
        mode, uid, gid, nlink, size, rdev, a, m, c = st
        kind = {stat.S_IFREG: 'file', stat.S_IFDIR: 'dir', stat.S_IFLNK: 'link', stat.S_IFIFO: 'fifo',
                stat.S_IFCHR: 'chr', stat.S_IFBLK: 'blk', stat.S_IFSOCK: 'sock'}.get(stat.S_IFMT(mode), '?')
        parts = ['%s %04o %s:%s n=%d' % (kind, stat.S_IMODE(mode), ID_NAMES.get(uid, uid), ID_NAMES.get(gid, gid),
                                         nlink)]
        if kind != 'dir':  # directory sizes are the filesystem's business, equal on both sides
            parts.append('s=%d' % size)
        if kind in ('chr', 'blk'):
            parts.append('rdev=%d,%d' % (os.major(rdev), os.minor(rdev)))
        base = self.aged.get(key)
        for label, now, then in (('a', a, base and base[6]), ('m', m, base and base[7]), ('c', c, base and base[8])):
            text = ''
            if base is not None:
                text = 'same' if now == then else 'chg'
            if now < (AGED + 10 ** 8) * 10 ** 9:  # an old value a case set itself: compare it exactly
                text += '@%d' % (now // 10 ** 9)
            if text:
                parts.append('%s=%s' % (label, text))
        return ' '.join(parts)

    def stat(self, p, who=None, follow=False):
        who = who or self.actor
        kind, val = self.suite.call(who, 'stat', self.path(p), follow)
        res = self.snapshot(val, (p, follow)) if kind == 'ok' else val
        self.lines.append('%s stat(%s%s) -> %s' % (who, p, ', follow' if follow else '', res))
        return val if kind == 'ok' else None

    def statat(self, d, rel, who=None):
        """fstatat(descriptor d, rel, AT_SYMLINK_NOFOLLOW), as a snapshot."""
        who = who or self.actor
        kind, val = self.suite.call(who, 'statat', d, rel)
        res = self.snapshot(val, (d + ':' + rel, False)) if kind == 'ok' else val
        self.lines.append('%s statat(%s, %s) -> %s' % (who, d, self.fmt(rel), res))

    def fstat(self, f, p, who=None):
        """fstat of descriptor f, timestamps compared with those of path p."""
        who = who or self.actor
        kind, val = self.suite.call(who, 'fstat', f)
        res = self.snapshot(val, (p, False)) if kind == 'ok' else val
        self.lines.append('%s fstat(%s) -> %s' % (who, f, res))

    def age(self, *paths, follow=False):
        """Sets atime and mtime of each path to 2001 (root, utimensat), keeps
        the result as the baseline of later snapshots, and waits until the
        kernel's coarse clock has passed the ctime this gave them."""
        newest = 0
        for p in paths:
            kind, val = self.suite.call('root', 'utimens', self.path(p), AGED, AGED, follow)
            self.lines.append('root age(%s) -> %s' % (p, '0' if kind == 'ok' else val))
            kind, st = self.suite.call('root', 'stat', self.path(p), follow)
            if kind == 'ok':
                self.aged[(p, follow)] = st
                newest = max(newest, st[8])
        deadline = time.monotonic() + 5
        while time.clock_gettime_ns(CLOCK_REALTIME_COARSE) <= newest:
            if time.monotonic() > deadline:
                raise CaseError('the clock did not pass a fresh ctime within 5 s')
            time.sleep(0.0005)

    # Shorthands for the common steps.
    def mkdir(self, p, mode=0o755, who=None):
        return self.do('mkdir', p, mode, who=who)

    def create(self, p, data=b'', mode=0o644, who=None):
        """A new file with `data` (O_CREAT|O_EXCL|O_WRONLY, write, close)."""
        r = self.do('open', p, os.O_CREAT | os.O_EXCL | os.O_WRONLY, mode, '_new', who=who)
        if r is None:
            if data:
                self.do('write', '_new', data, who=who, paths=())
            self.do('close', '_new', who=who, paths=())
        return r

    def open(self, p, flags, mode=0o644, f='f', who=None):
        return self.do('open', p, flags, mode, f, who=who)

    def close(self, f='f', who=None):
        return self.do('close', f, who=who, paths=())

    def fop(self, op, f, *args, who=None, **kwargs):
        """An operation on descriptor f."""
        return self.do(op, f, *args, who=who, paths=(), **kwargs)

    def id_of(self, name, group=False):
        """A uid or gid by name: an identity, 'me' (the actor), a group name
        of GROUPS, a number, or None (-1: leave as is)."""
        if name is None:
            return -1
        if name == 'me':
            name = self.actor
        if name in IDENTS:
            return IDENTS[name].gid if group else IDENTS[name].uid
        if name in GROUPS:
            return GROUPS[name]
        return name

    def chown(self, p, owner, group, who=None, follow=True):
        """chown to names (see id_of; None leaves that id as is)."""
        return self.do('chown', p, self.id_of(owner), self.id_of(group, True), who=who, follow=follow)



def run_case(suite, case, actor, top, serial):
    rel = 'c%04d-%s' % (serial, actor)
    d = os.path.join(top, rel)
    os.mkdir(d, 0o755)
    os.chown(d, IDENTS[actor].uid, IDENTS[actor].gid)
    os.chmod(d, 0o755)
    t = Trace(suite, top, rel, actor)
    try:
        case.fn(t, **case.params)
    except CaseError as e:
        t.lines.append('CASE ERROR: %s' % e)
    for who in suite.workers:
        suite.call(who, 'reset')
    return t.lines


def scratch_ext4(where):
    """Mounts a fresh ext4 at `where` from a sparse image in /dev/shm and
    returns the image's path, or None (then `where` stays a plain directory)."""
    fd, image = tempfile.mkstemp(prefix='vsymfs-parity.', suffix='.ext4', dir='/dev/shm')
    os.close(fd)
    try:
        os.truncate(image, 512 << 20)
        ok = subprocess.run(['mkfs.ext4', '-q', '-F', '-i', '4096', '-I', '256', image], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL).returncode == 0 and \
            subprocess.run(['mount', '-o', 'loop,relatime', image, where], stderr=subprocess.DEVNULL).returncode == 0
    except OSError:
        ok = False
    if not ok:
        os.unlink(image)
        return None
    return image


def differing_steps(a, b):
    """(step number, native line, vsymfs line) for every step that differs."""
    out = []
    for i in range(max(len(a), len(b))):
        x = a[i] if i < len(a) else '(nothing)'
        y = b[i] if i < len(b) else '(nothing)'
        if x != y:
            out.append((i + 1, x, y))
    return out


def deliberate_reason(deliberate, pass_name, case_name, steps):
    """The reason when a listed deliberate difference explains every
    differing step of this case (its native line matches one of the
    entry's step patterns), else None."""
    import re
    for d in deliberate:
        if d['cases'] not in case_name or pass_name not in d.get('passes', (pass_name,)):
            continue
        if all(any(re.search(pat, native) for pat in d['steps']) for _, native, _ in steps):
            return d['why']
    return None


def run_pass(suite, pass_name, cases, actors, native, mnt, deliberate, counts, failures, verbose, serial):
    for actor in actors:
        for case in cases:
            serial += 1
            a = run_case(suite, case, actor, native, serial)
            b = run_case(suite, case, actor, mnt, serial)
            if verbose:
                print('== [%s] %s as %s' % (pass_name, case.name, actor))
                for x, y in zip(a, b):
                    print('   %s %s' % ('  ' if x == y else '!!', x if x == y else x + '  |  ' + y))
            c = counts.setdefault((pass_name, actor, case.name.split('/')[0]), [0, 0, 0])
            if a == b:
                c[0] += 1
                continue
            steps = differing_steps(a, b)
            why = deliberate_reason(deliberate, pass_name, case.name, steps)
            if why:
                c[1] += 1
                print('DELIBERATE [%s] %s as %s: %s' % (pass_name, case.name, actor, why))
                for i, x, y in steps:
                    print('    step %d:\n      native: %s\n      vsymfs: %s' % (i, x, y))
            else:
                c[2] += 1
                failures.append((pass_name, case.name, actor, steps))
    return serial


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('--vsymfs', default=os.environ.get('VSYMFS_BIN', 'vsymfs'))
    ap.add_argument('--only', default='', help='run the cases whose name contains this')
    ap.add_argument('--actors', default=','.join(ACTORS))
    ap.add_argument('--keep', action='store_true', help='keep the directories')
    ap.add_argument('-v', '--verbose', action='store_true', help='print every trace')
    args = ap.parse_args()

    if os.geteuid() != 0:
        print('SKIP: the parity suite needs root (it switches uids and mounts with allow_other)')
        return 77
    try:
        os.close(os.open('/dev/fuse', os.O_RDWR))
    except OSError as e:
        print('SKIP: /dev/fuse cannot be opened (%s)' % e.strerror)
        return 77

    import cases as case_module
    actors = [a for a in args.actors.split(',') if a]

    started = time.monotonic()
    suite = Suite(args)
    # Workers first: forked before any thread or mount exists.
    suite.start_workers()
    base = tempfile.mkdtemp(prefix='vsymfs-parity.', dir='/tmp')
    os.chmod(base, 0o755)
    # Both sides on one dedicated ext4 (a loop device backed by memory): the
    # same filesystem type on both sides, no load on the machine's disk, and
    # gone in a moment afterwards. Equal-length names, so absolute paths are
    # equally long on both sides (paths near PATH_MAX).
    fs_dir = os.path.join(base, 'e')
    native, src, mnt = os.path.join(fs_dir, 'nat'), os.path.join(fs_dir, 'src'), os.path.join(base, 'm', 'mnt')
    image = None
    nested = []
    status = 0

    def cleanup():
        if not args.keep:
            shutil.rmtree(base, ignore_errors=True)
    suite.cleanup = cleanup
    try:
        os.makedirs(os.path.dirname(mnt))
        os.mkdir(fs_dir)
        image = scratch_ext4(fs_dir)
        print('parity: both sides on %s' % ('a dedicated ext4 (%s)' % image if image else
                                             'the filesystem of /tmp (no loop device: %s)' % fs_dir))
        for d in (native, src, mnt):
            os.mkdir(d)
            os.chmod(d, 0o755)
        for d in (base, os.path.dirname(mnt), fs_dir):
            os.chmod(d, 0o755)
        # A small filesystem inside each side, for EXDEV.
        for d in (native, src):
            x = os.path.join(d, 'xdev')
            os.mkdir(x)
            if subprocess.run(['mount', '-t', 'tmpfs', '-o', 'size=4m,mode=1777', 'tmpfs', x]).returncode == 0:
                nested.append(x)

        def cleanup():
            for x in nested:
                subprocess.run(['umount', '-l', x])
            if args.keep:
                return
            if image:
                if subprocess.run(['umount', fs_dir], stderr=subprocess.DEVNULL).returncode != 0:
                    subprocess.run(['umount', '-l', fs_dir])
                os.unlink(image)
            shutil.rmtree(base, ignore_errors=True)
        suite.cleanup = cleanup

        def on_alarm(signum, frame):
            suite.hang('the run took longer than %d s' % RUN_DEADLINE)
        signal.signal(signal.SIGALRM, on_alarm)
        signal.alarm(RUN_DEADLINE)

        counts, failures, serial = {}, [], 0
        for pass_name, options, selected in case_module.PASSES:
            cases = [c for c in case_module.CASES if args.only in c.name and selected(c.name)]
            if not cases:
                continue
            mount = Mount(args.vsymfs, src, mnt, os.path.join(base, 'daemon-%s.log' % pass_name), options)
            suite.mounts.append(mount)
            serial = run_pass(suite, pass_name, cases, actors, native, mnt, case_module.DELIBERATE, counts,
                              failures, args.verbose, serial)
            err = mount.stop()
            suite.mounts.remove(mount)
            if err:
                print('parity: FAIL [%s]: %s\n%s' % (pass_name, err, mount.log_text()[-4000:]))
                status = 1
        signal.alarm(0)

        for pass_name, name, actor, steps in failures:
            print('DIFFERENCE [%s] %s as %s' % (pass_name, name, actor))
            for i, x, y in steps:
                print('    step %d:\n      native: %s\n      vsymfs: %s' % (i, x, y))
        # Per category, then per pass and identity: cases, same, deliberate, different.
        groups = {}
        for by_actor in (False, True):
            for (pass_name, actor, category), c in counts.items():
                g = groups.setdefault((pass_name, 'as ' + actor if by_actor else category), [0, 0, 0])
                for i in range(3):
                    g[i] += c[i]
        print('parity: %-26s %6s %6s %10s %10s' % ('', 'cases', 'same', 'deliberate', 'different'))
        for (pass_name, what), (p, d, f) in groups.items():
            print('parity: %-26s %6d %6d %10d %10d' % ('[%s] %s' % (pass_name, what), p + d + f, p, d, f))
        total = [sum(c[i] for c in counts.values()) for i in range(3)]
        print('parity: %d cases in %.1f s: %d same, %d deliberate, %d differences'
              % (sum(total), time.monotonic() - started, total[0], total[1], total[2]))
        if failures:
            status = 1
    finally:
        signal.alarm(0)
        for m in suite.mounts:
            m.stop()
        suite.stop_workers()
        cleanup()
    return status


if __name__ == '__main__':
    sys.exit(main())
