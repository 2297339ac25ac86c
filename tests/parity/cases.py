"""The parity cases (see parity.py). Each case is a short script run once
natively and once through the mount, as each actor ("me": root, user,
group); 'other' is the second party and root sets fixtures up. A case
records every step; what it records must be the same on both sides.

A name like 'rename/exchange/file-dir' is category/detail. PASSES says
which mounts run which cases; DELIBERATE lists the differences vsymfs keeps
on purpose, each with its reason (also in docs/vsymfs.8, POSIX PARITY).
"""

import os

from parity import AGED

O = os
RENAME_NOREPLACE, RENAME_EXCHANGE, RENAME_WHITEOUT = 1, 2, 4
XATTR_CREATE, XATTR_REPLACE = 1, 2
PATH_MAX = 4096

# The mounts the cases run on: (name, extra -o options, which cases). The
# default mount runs every case; a second one with -o acl runs those where
# the kernel's ACL checks matter.
PASSES = [
    ('default', [], lambda name: True),
    ('acl', ['acl'], lambda name: name.startswith(('xattr/system/', 'perm/'))),
]

# Differences vsymfs keeps on purpose (also in docs/vsymfs.8, POSIX PARITY).
# An entry covers a case (substring of its name) on the given passes (all
# when absent) only when the native line of every differing step matches
# one of its step patterns: any other difference in such a case still fails.
DELIBERATE = [
    dict(cases='tmpfile/', steps=[r'.'],
         why='O_TMPFILE fails with EOPNOTSUPP: libfuse 3.14 (Debian 12) has no tmpfile operation, so the '
             'kernel is told the filesystem has none (libfuse 3.17 adds it); programs fall back to a named '
             'file as on NFS'),
    dict(cases='mknod/fifo-times-after-write', steps=[r'stat\(p\)'],
         why='reading and writing a FIFO happens in the kernel, on the mount\'s inode, which the kernel never '
             'stamps (FUSE inodes are S_NOCMTIME/S_NOATIME); the daemon never sees it, so the FIFO\'s times '
             'in SOURCE stay'),
    dict(cases='mknod/open-char-device', steps=[r'open\(null', r'write\(f'],
         why='the mount is nodev (and nosuid), as every libfuse mount unless -o dev,suid is given: device '
             'nodes can be made but not opened through it'),
    dict(cases='rename/whiteout/dir-dir-across', steps=[r'stat\(a\)'],
         why='ext4 stamps the source directory even when a RENAME_WHITEOUT fails (ENOTEMPTY); the kernel '
             'keeps a directory\'s cached attributes after a failed rename, so the new times show through '
             'the mount after attr_timeout'),
    dict(cases='chown/none-none/others-2767-file', steps=[r'chown\(f, -1, -1'],
         why='chown(-1, -1) by someone outside the group, not the owner, of a set-group-ID file without '
             'group execute: EPERM natively, success (changing nothing) through the mount, because the kernel '
             'sends it exactly as its notice ahead of a write that clears the bit, which must not fail'),
    dict(cases='xattr/system/acl-grants-other', steps=[r'open\(f', r'read\(f'], passes=['default'],
         why='without -o acl the kernel checks mode bits only: access that only an ACL grants is refused '
             '(vsymfs(8), ACCESS CONTROL LISTS); the acl pass checks it is granted with -o acl'),
]


class Case:
    def __init__(self, name, fn, params):
        self.name, self.fn, self.params = name, fn, params


CASES = []


def case(name):
    def register(fn):
        CASES.append(Case(name, fn, {}))
        return fn
    return register


def each(fmt, variants):
    """One case per dict of parameters; fmt is formatted with them."""
    def register(fn):
        for v in variants:
            CASES.append(Case(fmt.format(**v), fn, dict(v)))
        return fn
    return register


def octal(m):
    return '%04o' % m


# --------------------------------------------------------------- helpers

def file_of(t, owner, mode, group=None, data=b'data', name='f'):
    """A file owned by `owner` (made by root: any owner, mode and group)."""
    t.create(name, data, mode=0o600, who='root')
    t.chown(name, owner, group or owner, who='root')
    t.do('chmod', name, mode, who='root')
    return name


def dir_of(t, owner, mode, group=None, name='d'):
    t.mkdir(name, 0o700, who='root')
    t.chown(name, owner, group or owner, who='root')
    t.do('chmod', name, mode, who='root')
    return name


# ----------------------------------------------------------------- chmod

CHMOD_MODES = [0o644, 0o600, 0o000, 0o777, 0o4755, 0o2755, 0o1755, 0o6777, 0o2705, 0o4000, 0o7777, 0o2070]


@each('chmod/own-file/{m}', [dict(mode=m, m=octal(m)) for m in CHMOD_MODES])
def _(t, mode, m):
    t.create('f', b'x')
    t.age('f')
    t.do('chmod', 'f', mode)
    t.stat('f')


@each('chmod/own-file-group-{grp}/{m}',
      [dict(grp=g, mode=m, m=octal(m)) for g in ('shared', 'g2011', 'foreign') for m in (0o2755, 0o6755, 0o2700, 0o755)])
def _(t, grp, mode, m):
    file_of(t, 'me', 0o644, grp)
    t.do('chmod', 'f', mode)
    t.stat('f')


@each('chmod/others-file/{m}', [dict(mode=m, m=octal(m)) for m in (0o644, 0o4755, 0o666)])
def _(t, mode, m):
    file_of(t, 'other', 0o666)
    t.age('f')
    t.do('chmod', 'f', mode)
    t.stat('f')


@each('chmod/own-dir/{m}', [dict(mode=m, m=octal(m)) for m in (0o2755, 0o1777, 0o700, 0o3775, 0o0)])
def _(t, mode, m):
    t.mkdir('d')
    t.age('d')
    t.do('chmod', 'd', mode)
    t.stat('d')
    t.create('d/f')
    t.stat('d/f')


@each('chmod/own-dir-group-{grp}/setgid', [dict(grp=g) for g in ('shared', 'foreign')])
def _(t, grp):
    dir_of(t, 'me', 0o755, grp)
    t.do('chmod', 'd', 0o2775)
    t.stat('d')
    t.mkdir('d/sub')
    t.stat('d/sub')
    t.create('d/f', mode=0o2755)
    t.stat('d/f')


@case('chmod/through-symlink')
def _(t):
    t.create('f')
    t.do('symlink', 'f', 'l', paths=(1,))
    t.do('chmod', 'l', 0o600)
    t.stat('f')
    t.stat('l')


@case('chmod/symlink-nofollow')
def _(t):
    t.create('f')
    t.do('symlink', 'f', 'l', paths=(1,))
    t.do('chmod', 'l', 0o600, follow=False)
    t.stat('f')


@each('chmod/fchmod/{how}', [dict(how=h) for h in ('rdonly', 'wronly', 'path')])
def _(t, how):
    t.create('f', b'abc')
    flags = {'rdonly': O.O_RDONLY, 'wronly': O.O_WRONLY, 'path': O.O_PATH}[how]
    t.open('f', flags)
    t.age('f')
    t.fop('fchmod', 'f', 0o4700)
    t.stat('f')


@case('chmod/fchmod-others-file')
def _(t):
    file_of(t, 'other', 0o666)
    t.open('f', O.O_RDWR)
    t.fop('fchmod', 'f', 0o600)
    t.stat('f')


@case('chmod/fifo')
def _(t):
    t.do('mkfifo', 'p', 0o644)
    t.age('p')
    t.do('chmod', 'p', 0o600)
    t.stat('p')


@each('chmod/missing-{how}', [dict(how='absent'), dict(how='through-file')])
def _(t, how):
    t.create('f')
    t.do('chmod', 'nothing' if how == 'absent' else 'f/x', 0o644)


# ----------------------------------------------------------------- chown

OWNERS = (None, 'root', 'other', 'me')
GROUPS_TO = (None, 'me', 'shared', 'g2011', 'foreign')


@each('chown/own-file/to-{o}-{g}', [dict(o=o or 'same', g=g or 'same', owner=o, group=g)
                                     for o in OWNERS for g in GROUPS_TO])
def _(t, o, g, owner, group):
    t.create('f', b'x')
    t.age('f')
    t.chown('f', owner, group)
    t.stat('f')


@each('chown/setid-{m}/to-{o}-{g}', [dict(m=octal(m), mode=m, o=o or 'same', g=g or 'same', owner=o, group=g)
                                      for m in (0o6755, 0o2745, 0o6711)
                                      for o, g in ((None, None), (None, 'shared'), ('me', 'me'), ('root', None))])
def _(t, m, mode, o, g, owner, group):
    file_of(t, 'me', mode)
    t.chown('f', owner, group)
    t.stat('f')


@each('chown/none-none/{what}', [dict(what=w) for w in ('others-setid-file', 'others-dir', 'setgid-dir', 'fifo',
                                                         'symlink-nofollow', 'others-2767-file')])
def _(t, what):
    if what == 'others-setid-file':
        file_of(t, 'other', 0o6755)
    elif what == 'others-2767-file':
        file_of(t, 'other', 0o2767)
    elif what == 'others-dir':
        dir_of(t, 'other', 0o755, name='f')
    elif what == 'setgid-dir':
        dir_of(t, 'me', 0o2755, name='f')
    elif what == 'fifo':
        t.do('mkfifo', 'f', 0o644)
    else:
        t.create('target')
        t.do('symlink', 'target', 'f', paths=(1,))
    t.age('f')
    t.chown('f', None, None, follow=(what != 'symlink-nofollow'))
    t.stat('f')


@case('chown/setid-dir-keeps-setgid')
def _(t):
    dir_of(t, 'me', 0o6755)
    t.chown('d', None, 'shared')
    t.stat('d')


@each('chown/others-file/to-{o}-{g}', [dict(o=o, g=g) for o, g in (('me', 'same'), ('same', 'me'), ('same', 'shared'),
                                                                    ('same', 'same'))])
def _(t, o, g):
    file_of(t, 'other', 0o666, 'shared')
    t.chown('f', None if o == 'same' else o, None if g == 'same' else g)
    t.stat('f')


@each('chown/symlink-{how}', [dict(how='nofollow'), dict(how='follow')])
def _(t, how):
    t.create('f')
    t.do('symlink', 'f', 'l', paths=(1,))
    t.age('l')
    t.chown('l', None, 'shared', follow=(how == 'follow'))
    t.stat('l')
    t.stat('f')


@each('chown/fchown/to-{g}', [dict(g=g) for g in ('shared', 'foreign', 'me')])
def _(t, g):
    file_of(t, 'me', 0o4755)
    t.open('f', O.O_RDONLY)
    t.fop('fchown', 'f', -1, t.id_of(g, True))
    t.stat('f')


# ------------------------------------------------- set-id cleared by writes

SETID_MODES = (0o6777, 0o4777, 0o2777, 0o2767)
WRITES = ('write', 'pwrite', 'write0', 'truncate', 'ftruncate', 'otrunc', 'fallocate')


def a_write(t, how):
    if how == 'truncate':
        t.do('truncate', 'f', 2)
        return
    if how == 'otrunc':
        t.open('f', O.O_WRONLY | O.O_TRUNC)
        return
    t.open('f', O.O_WRONLY)
    if how == 'write':
        t.fop('write', 'f', b'xy')
    elif how == 'write0':
        t.fop('write', 'f', b'')
    elif how == 'pwrite':
        t.fop('pwrite', 'f', b'z', 10)
    elif how == 'ftruncate':
        t.fop('ftruncate', 'f', 1)
    elif how == 'fallocate':
        t.fop('fallocate', 'f', 0, 0, 100)
    t.close()


@each('setid/{owner}-{grp}-{m}/{how}', [dict(owner=o, grp=g, mode=m, m=octal(m), how=h)
                                          for o, g in (('other', 'shared'), ('other', 'other'), ('me', 'foreign'))
                                          for m in SETID_MODES for h in WRITES])
def _(t, owner, grp, mode, m, how):
    file_of(t, owner, mode, grp, data=b'0123456789')
    t.age('f')
    a_write(t, how)
    t.stat('f')


# ------------------------------------------------------------------ execve

# Execute permission without read permission runs a binary (the kernel
# reads it), but not a script (its interpreter must read it).
with open('/bin/true', 'rb') as _f:
    TRUE_BINARY = _f.read()
EXEC_MODES = (0o711, 0o111, 0o701, 0o755, 0o700, 0o744, 0o4711)


@each('exec/{what}-{m}', [dict(what=w, mode=m, m=octal(m)) for w in ('binary', 'script') for m in EXEC_MODES])
def _(t, what, mode, m):
    data = TRUE_BINARY if what == 'binary' else b'#!/bin/sh\nexit 3\n'
    file_of(t, 'other', mode, 'other', data=data)
    t.do('exec', 'f')
    t.stat('f')



def sticky_setup(t, owner='root'):
    dir_of(t, owner, 0o1777, name='s')
    t.create('s/of', b'o', mode=0o666, who='other')
    t.create('s/mf', b'm', mode=0o666)
    t.mkdir('s/od', who='other')


@each('sticky/{owner}-dir/{what}', [dict(owner=o, what=w) for o in ('root', 'me', 'other')
                                     for w in ('unlink-others', 'unlink-own', 'rename-others', 'rename-own-over-others',
                                               'rmdir-others', 'others-rename-over-mine', 'others-unlink-mine',
                                               'open-creat-others')])
def _(t, owner, what):
    sticky_setup(t, owner)
    if what == 'unlink-others':
        t.do('unlink', 's/of')
    elif what == 'unlink-own':
        t.do('unlink', 's/mf')
    elif what == 'rename-others':
        t.do('rename', 's/of', 's/x', paths=(0, 1))
    elif what == 'rename-own-over-others':
        t.do('rename', 's/mf', 's/of', paths=(0, 1))
    elif what == 'rmdir-others':
        t.do('rmdir', 's/od')
    elif what == 'others-rename-over-mine':
        t.do('rename', 's/of', 's/mf', paths=(0, 1), who='other')
    elif what == 'others-unlink-mine':
        t.do('unlink', 's/mf', who='other')
    elif what == 'open-creat-others':
        t.open('s/of', O.O_CREAT | O.O_WRONLY, 0o644)
    t.do('listdir', 's')


# -------------------------------------------------------------------- rename

def two_dirs(t):
    t.mkdir('a')
    t.mkdir('b')


@each('rename/{what}', [dict(what=w) for w in (
    'file-new', 'file-over-file', 'file-over-dir', 'dir-over-file', 'dir-over-empty-dir', 'dir-over-nonempty-dir',
    'dir-into-child', 'dir-into-grandchild', 'file-to-itself', 'hardlinks-to-each-other', 'dot', 'dotdot-target',
    'file-trailing-slash', 'dir-trailing-slash', 'file-to-trailing-slash', 'across-dirs', 'dir-across-parents',
    'symlink', 'over-symlink', 'into-symlink-to-dir', 'missing', 'through-file', 'name-too-long',
    'dir-to-itself', 'root-of-case-into-child')])
def _(t, what):
    two_dirs(t)
    t.create('a/f', b'abc')
    t.create('a/g', b'defgh')
    t.mkdir('a/sub')
    t.create('a/sub/x')
    t.mkdir('b/empty')
    t.age('a', 'b', 'a/f', 'a/sub')
    src, dst = {
        'file-new': ('a/f', 'a/new'),
        'file-over-file': ('a/f', 'a/g'),
        'file-over-dir': ('a/f', 'b/empty'),
        'dir-over-file': ('a/sub', 'a/g'),
        'dir-over-empty-dir': ('a/sub', 'b/empty'),
        'dir-over-nonempty-dir': ('b/empty', 'a/sub'),
        'dir-into-child': ('a', 'a/sub/a'),
        'dir-into-grandchild': ('a', 'a/sub/x2'),
        'file-to-itself': ('a/f', 'a/f'),
        'hardlinks-to-each-other': ('a/f', 'a/f2'),
        'dot': ('a/.', 'b/x'),
        'dotdot-target': ('a/f', 'a/..'),
        'file-trailing-slash': ('a/f/', 'a/new'),
        'dir-trailing-slash': ('a/sub/', 'b/sub/'),
        'file-to-trailing-slash': ('a/f', 'a/new/'),
        'across-dirs': ('a/f', 'b/f'),
        'dir-across-parents': ('a/sub', 'b/sub'),
        'symlink': ('a/l', 'b/l'),
        'over-symlink': ('a/f', 'a/l'),
        'into-symlink-to-dir': ('a/f', 'a/lb/f'),
        'missing': ('a/nothing', 'a/x'),
        'through-file': ('a/f/x', 'a/y'),
        'name-too-long': ('a/f', 'a/' + 'n' * 256),
        'dir-to-itself': ('a/sub', 'a/sub'),
        'root-of-case-into-child': ('a', 'a/new'),
    }[what]
    if what == 'hardlinks-to-each-other':
        t.do('link', 'a/f', 'a/f2', paths=(0, 1))
    if what in ('symlink', 'over-symlink'):
        t.do('symlink', 'f', 'a/l', paths=(1,))
    if what == 'into-symlink-to-dir':
        t.do('symlink', '../b', 'a/lb', paths=(1,))
    t.do('rename', src, dst, paths=(0, 1))
    for p in ('a', 'b', 'a/f', 'a/sub'):
        t.stat(p)
    t.do('listdir', 'a')
    t.do('listdir', 'b')
    for p in ('a/g', 'b/f', 'b/sub', 'a/f2', 'b/empty', 'b/l', 'a/l'):
        t.stat(p)


@each('rename/{flag}/{what}', [dict(flag=f, what=w) for f in ('noreplace', 'exchange', 'exchange-noreplace', 'whiteout')
                               for w in ('file-new', 'file-file', 'file-dir', 'dir-dir-across', 'missing-target',
                                         'into-own-child', 'symlink-file')])
def _(t, flag, what):
    two_dirs(t)
    t.create('a/f', b'abc')
    t.create('a/g', b'defgh')
    t.mkdir('a/sub')
    t.mkdir('b/sub2')
    t.mkdir('b/sub2/inner')
    t.do('symlink', 'g', 'a/l', paths=(1,))
    t.age('a', 'b', 'a/f', 'a/g', 'a/sub', 'b/sub2')
    flags = {'noreplace': RENAME_NOREPLACE, 'exchange': RENAME_EXCHANGE,
             'exchange-noreplace': RENAME_EXCHANGE | RENAME_NOREPLACE, 'whiteout': RENAME_WHITEOUT}[flag]
    src, dst = {
        'file-new': ('a/f', 'a/new'),
        'file-file': ('a/f', 'a/g'),
        'file-dir': ('a/f', 'a/sub'),
        'dir-dir-across': ('a/sub', 'b/sub2'),
        'missing-target': ('a/f', 'b/none'),
        'into-own-child': ('b/sub2', 'b/sub2/inner'),
        'symlink-file': ('a/l', 'a/f'),
    }[what]
    t.do('rename', src, dst, flags, paths=(0, 1))
    for p in ('a', 'b', 'a/f', 'a/g', 'a/sub', 'b/sub2', 'a/new', 'b/none', 'a/l'):
        t.stat(p)
    t.do('listdir', 'a')
    t.do('listdir', 'b')
    t.do('listdir', 'b/sub2')


@each('rename/permission/{what}', [dict(what=w) for w in ('from-readonly-dir', 'into-readonly-dir',
                                                          'roots-dir-within-parent', 'roots-dir-across-parents',
                                                          'others-file-from-my-dir')])
def _(t, what):
    two_dirs(t)
    if what == 'from-readonly-dir':
        dir_of(t, 'root', 0o755, name='a/ro')
        t.create('a/ro/f', who='root')
        t.do('chmod', 'a/ro/f', 0o666, who='root')
        t.do('rename', 'a/ro/f', 'b/f', paths=(0, 1))
    elif what == 'into-readonly-dir':
        dir_of(t, 'root', 0o555, name='b/ro')
        t.create('a/f')
        t.do('rename', 'a/f', 'b/ro/f', paths=(0, 1))
    elif what in ('roots-dir-within-parent', 'roots-dir-across-parents'):
        dir_of(t, 'root', 0o755, name='a/rd')
        t.do('rename', 'a/rd', 'a/rd2' if what.endswith('parent') else 'b/rd', paths=(0, 1))
    else:
        file_of(t, 'other', 0o644, name='a/f')
        t.do('rename', 'a/f', 'b/f', paths=(0, 1))
    t.do('listdir', 'a')
    t.do('listdir', 'b')


@each('rename/exdev/{what}', [dict(what=w) for w in ('file-out', 'dir-out', 'file-in', 'link-out', 'exchange-out')])
def _(t, what):
    name = '@top/xdev/' + os.path.basename(t.dir)
    t.create('f', b'abc')
    t.mkdir('d')
    t.create(name, b'x')
    if what == 'file-out':
        t.do('rename', 'f', name + '-new', paths=(0, 1))
    elif what == 'dir-out':
        t.do('rename', 'd', name + '-dir', paths=(0, 1))
    elif what == 'file-in':
        t.do('rename', name, 'g', paths=(0, 1))
    elif what == 'link-out':
        t.do('link', 'f', name + '-link', paths=(0, 1))
    else:
        t.do('rename', 'f', name, RENAME_EXCHANGE, paths=(0, 1))
    t.do('listdir', '')


# --------------------------------------------------------------- link/unlink

@each('link/{what}', [dict(what=w) for w in (
    'file', 'unlink-one-of-two', 'three-names', 'dir', 'over-existing', 'symlink-nofollow', 'symlink-follow',
    'dangling-follow', 'into-readonly-dir', 'others-unreadable-file', 'others-readwrite-file', 'others-readonly-file',
    'unlink-dir', 'unlink-missing', 'unlink-trailing-slash', 'rmdir-nonempty', 'rmdir-file', 'rmdir-dot',
    'rmdir-dotdot', 'subdir-nlink', 'unlink-open-file', 'unlink-in-readonly-dir', 'unlink-fifo', 'unlink-symlink',
    'link-missing', 'link-to-trailing-slash', 'rmdir-missing', 'rmdir-symlink-to-dir')])
def _(t, what):
    t.create('f', b'abc')
    t.mkdir('d')
    t.age('f', 'd', '')
    if what == 'file':
        t.do('link', 'f', 'g', paths=(0, 1))
        t.stat('g')
    elif what == 'unlink-one-of-two':
        t.do('link', 'f', 'g', paths=(0, 1))
        t.age('f')
        t.do('unlink', 'f')
        t.stat('g')
    elif what == 'three-names':
        t.do('link', 'f', 'd/g', paths=(0, 1))
        t.do('link', 'd/g', 'h', paths=(0, 1))
        t.stat('h')
        t.do('unlink', 'd/g')
        t.stat('h')
        t.do('unlink', 'f')
        t.stat('h')
    elif what == 'dir':
        t.do('link', 'd', 'd2', paths=(0, 1))
    elif what == 'over-existing':
        t.create('g')
        t.do('link', 'f', 'g', paths=(0, 1))
    elif what == 'symlink-nofollow':
        t.do('symlink', 'f', 'l', paths=(1,))
        t.do('link', 'l', 'l2', paths=(0, 1))
        t.stat('l')
        t.stat('l2')
    elif what == 'symlink-follow':
        t.do('symlink', 'f', 'l', paths=(1,))
        t.do('link', 'l', 'l2', paths=(0, 1), follow=True)
        t.stat('l2')
    elif what == 'dangling-follow':
        t.do('symlink', 'nothing', 'l', paths=(1,))
        t.do('link', 'l', 'l2', paths=(0, 1), follow=True)
    elif what == 'into-readonly-dir':
        dir_of(t, 'root', 0o555, name='ro')
        t.do('link', 'f', 'ro/g', paths=(0, 1))
    elif what.startswith('others-'):
        mode = {'others-unreadable-file': 0o600, 'others-readwrite-file': 0o666, 'others-readonly-file': 0o644}[what]
        file_of(t, 'other', mode, name='o')
        t.do('link', 'o', 'o2', paths=(0, 1))
        t.stat('o')
    elif what == 'unlink-dir':
        t.do('unlink', 'd')
    elif what == 'unlink-missing':
        t.do('unlink', 'nothing')
    elif what == 'unlink-trailing-slash':
        t.do('unlink', 'f/')
    elif what == 'rmdir-nonempty':
        t.create('d/x')
        t.do('rmdir', 'd')
    elif what == 'rmdir-file':
        t.do('rmdir', 'f')
    elif what == 'rmdir-dot':
        t.do('rmdir', 'd/.')
    elif what == 'rmdir-dotdot':
        t.mkdir('d/e')
        t.do('rmdir', 'd/e/..')
    elif what == 'subdir-nlink':
        t.mkdir('d/e')
        t.stat('d')
        t.mkdir('d/e2')
        t.stat('d')
        t.do('rmdir', 'd/e')
        t.stat('d')
    elif what == 'unlink-open-file':
        t.open('f', O.O_RDWR)
        t.do('unlink', 'f')
        t.fstat('f', 'f')
        t.fop('pwrite', 'f', b'zz', 1)
        t.fop('pread', 'f', 10, 0)
    elif what == 'unlink-in-readonly-dir':
        dir_of(t, 'root', 0o755, name='ro')
        t.create('ro/f', who='root')
        t.do('unlink', 'ro/f')
    elif what == 'unlink-fifo':
        t.do('mkfifo', 'p', 0o600)
        t.do('unlink', 'p')
    elif what == 'unlink-symlink':
        t.do('symlink', 'f', 'l', paths=(1,))
        t.do('unlink', 'l')
        t.stat('f')
    elif what == 'link-missing':
        t.do('link', 'nothing', 'g', paths=(0, 1))
    elif what == 'link-to-trailing-slash':
        t.do('link', 'f', 'g/', paths=(0, 1))
    elif what == 'rmdir-missing':
        t.do('rmdir', 'nothing')
    elif what == 'rmdir-symlink-to-dir':
        t.do('symlink', 'd', 'ld', paths=(1,))
        t.do('rmdir', 'ld')
    t.stat('f')
    t.stat('d')
    t.stat('')
    t.do('listdir', '')


# ------------------------------------------------------------ mkfifo / mknod

S_IFMT = {'reg': 0o100000, 'fifo': 0o010000, 'chr': 0o020000, 'blk': 0o060000, 'sock': 0o140000, 'dir': 0o040000,
          'bad': 0o170000}


@each('mknod/{kind}-{m}', [dict(kind=k, mode=m, m=octal(m)) for k in ('reg', 'fifo', 'chr', 'blk', 'sock', 'dir', 'bad')
                           for m in (0o644, 0o666)])
def _(t, kind, mode, m):
    t.age('')
    t.do('mknod', 'n', S_IFMT[kind] | mode, 1, 3)
    t.stat('n')
    t.stat('')


@each('mknod/{what}', [dict(what=w) for w in ('mkfifo', 'mkfifo-existing', 'mkfifo-readonly-dir',
                                               'mkfifo-setgid-dir', 'fifo-open-read-nonblock',
                                               'fifo-open-write-no-reader', 'fifo-two-processes', 'truncate-fifo',
                                               'fifo-times-after-write', 'open-char-device', 'mknod-existing',
                                               'mkfifo-symlink-exists')])
def _(t, what):
    if what == 'mkfifo':
        t.do('mkfifo', 'p', 0o666)
        t.stat('p')
    elif what == 'mkfifo-existing':
        t.create('p')
        t.do('mkfifo', 'p', 0o666)
    elif what == 'mkfifo-readonly-dir':
        dir_of(t, 'root', 0o555)
        t.do('mkfifo', 'd/p', 0o666)
    elif what == 'mkfifo-setgid-dir':
        dir_of(t, 'me', 0o2777, 'shared')
        t.do('mkfifo', 'd/p', 0o2666)
        t.stat('d/p')
    elif what == 'fifo-open-read-nonblock':
        t.do('mkfifo', 'p', 0o666)
        t.open('p', O.O_RDONLY | O.O_NONBLOCK)
        t.fop('read', 'f', 10)
    elif what == 'fifo-open-write-no-reader':
        t.do('mkfifo', 'p', 0o666)
        t.open('p', O.O_WRONLY | O.O_NONBLOCK)
    elif what == 'fifo-two-processes':
        t.do('mkfifo', 'p', 0o666)
        t.open('p', O.O_RDONLY | O.O_NONBLOCK, f='r')
        t.open('p', O.O_WRONLY | O.O_NONBLOCK, f='w', who='other')
        t.fop('write', 'w', b'hello', who='other')
        t.fop('read', 'r', 10)
    elif what == 'truncate-fifo':
        t.do('mkfifo', 'p', 0o666)
        t.do('truncate', 'p', 0)
    elif what == 'fifo-times-after-write':
        t.do('mkfifo', 'p', 0o666)
        t.open('p', O.O_RDONLY | O.O_NONBLOCK, f='r')
        t.open('p', O.O_WRONLY | O.O_NONBLOCK, f='w')
        t.age('p')
        t.fop('write', 'w', b'hello')
        t.fop('read', 'r', 10)
        t.stat('p')
    elif what == 'open-char-device':
        t.do('mknod', 'null', S_IFMT['chr'] | 0o666, 1, 3, who='root')
        t.open('null', O.O_WRONLY)
        t.fop('write', 'f', b'discarded')
    elif what == 'mknod-existing':
        t.mkdir('p')
        t.do('mknod', 'p', S_IFMT['fifo'] | 0o644, 0, 0)
    elif what == 'mkfifo-symlink-exists':
        t.do('symlink', 'nothing', 'p', paths=(1,))
        t.do('mkfifo', 'p', 0o644)
    t.do('listdir', '')


# ------------------------------------------------------ truncate / ftruncate

@each('truncate/{how}/{frm}-to-{to}', [dict(how=h, frm=a, to=b) for h in ('path', 'fd')
                                        for a, b in ((0, 100), (100, 10), (10, 10), (10, 0), (0, 0), (5, 1 << 30),
                                                     (5, -1), (5, 1 << 45))])
def _(t, how, frm, to):
    t.create('f', b'x' * frm)
    t.age('f')
    if how == 'path':
        t.do('truncate', 'f', to)
    else:
        t.open('f', O.O_WRONLY)
        t.fop('ftruncate', 'f', to)
        t.close()
    t.stat('f')
    t.open('f', O.O_RDONLY, f='r')
    t.fop('pread', 'r', 16, max(frm - 4, 0))


@each('truncate/{what}', [dict(what=w) for w in ('ftruncate-rdonly-fd', 'ftruncate-append-fd', 'truncate-dir',
                                                  'truncate-readonly-file', 'truncate-others-writable',
                                                  'truncate-through-symlink', 'truncate-missing', 'ftruncate-path-fd',
                                                  'ftruncate-dir-fd', 'truncate-others-readonly',
                                                  'ftruncate-then-read', 'truncate-trailing-slash')])
def _(t, what):
    t.create('f', b'0123456789')
    t.mkdir('d')
    t.age('f')
    if what == 'ftruncate-rdonly-fd':
        t.open('f', O.O_RDONLY)
        t.fop('ftruncate', 'f', 2)
    elif what == 'ftruncate-append-fd':
        t.open('f', O.O_WRONLY | O.O_APPEND)
        t.fop('ftruncate', 'f', 2)
    elif what == 'truncate-dir':
        t.do('truncate', 'd', 0)
    elif what == 'truncate-readonly-file':
        t.do('chmod', 'f', 0o444)
        t.do('truncate', 'f', 0)
    elif what == 'truncate-others-writable':
        file_of(t, 'other', 0o666, name='o')
        t.do('truncate', 'o', 1)
        t.stat('o')
    elif what == 'truncate-others-readonly':
        file_of(t, 'other', 0o644, name='o')
        t.do('truncate', 'o', 1)
        t.stat('o')
    elif what == 'truncate-through-symlink':
        t.do('symlink', 'f', 'l', paths=(1,))
        t.do('truncate', 'l', 3)
    elif what == 'truncate-missing':
        t.do('truncate', 'nothing', 3)
    elif what == 'ftruncate-path-fd':
        t.open('f', O.O_PATH)
        t.fop('ftruncate', 'f', 2)
    elif what == 'ftruncate-dir-fd':
        t.open('d', O.O_RDONLY | O.O_DIRECTORY)
        t.fop('ftruncate', 'f', 0)
    elif what == 'ftruncate-then-read':
        t.open('f', O.O_RDWR)
        t.fop('ftruncate', 'f', 4)
        t.fop('lseek', 'f', 0, 0)
        t.fop('read', 'f', 20)
        t.fop('ftruncate', 'f', 8)
        t.fop('pread', 'f', 20, 0)
    elif what == 'truncate-trailing-slash':
        t.do('truncate', 'f/', 1)
    t.stat('f')


# ----------------------------------------------------------------- utimensat

TIMES = (('now', 'now'), ('omit', 'omit'), ('now', 'omit'), ('omit', 'now'), (AGED + 100, AGED + 200),
         (AGED + 100, 'omit'), ('omit', AGED + 200), (AGED + 100, 'now'))


def tname(v):
    return v if isinstance(v, str) else 'set'


@each('utimens/{whose}/{an}-{mn}', [dict(whose=w, a=a, m=m, an=tname(a), mn=tname(m))
                                     for w in ('own', 'others-writable', 'others-readonly') for a, m in TIMES])
def _(t, whose, a, m, an, mn):
    if whose == 'own':
        t.create('f', b'x')
    else:
        file_of(t, 'other', 0o666 if whose == 'others-writable' else 0o644)
    t.age('f')
    t.do('utimens', 'f', a, m)
    t.stat('f')


@each('utimens/{what}', [dict(what=w) for w in ('symlink-nofollow', 'symlink-follow', 'symlink-nofollow-now',
                                                 'dir', 'fifo-nofollow', 'missing', 'futimens-own',
                                                 'futimens-others-writable-fd', 'futimens-path-fd',
                                                 'nofollow-regular-file', 'dangling-symlink-follow',
                                                 'bad-nsec', 'own-readonly-file-now')])
def _(t, what):
    t.create('f', b'x')
    t.do('symlink', 'f', 'l', paths=(1,))
    t.mkdir('d')
    t.age('f', 'l', 'd')
    if what == 'symlink-nofollow':
        t.do('utimens', 'l', AGED + 50, AGED + 60, follow=False)
    elif what == 'symlink-follow':
        t.do('utimens', 'l', AGED + 50, AGED + 60)
    elif what == 'symlink-nofollow-now':
        t.do('utimens', 'l', 'now', 'now', follow=False)
    elif what == 'dir':
        t.do('utimens', 'd', 'now', AGED + 60)
    elif what == 'fifo-nofollow':
        t.do('mkfifo', 'p', 0o644)
        t.age('p')
        t.do('utimens', 'p', 'now', 'omit', follow=False)
        t.stat('p')
    elif what == 'missing':
        t.do('utimens', 'nothing', 'now', 'now')
    elif what == 'futimens-own':
        t.open('f', O.O_RDONLY)
        t.fop('futimens', 'f', AGED + 70, 'now')
    elif what == 'futimens-others-writable-fd':
        file_of(t, 'other', 0o666, name='o')
        t.age('o')
        t.open('o', O.O_WRONLY)
        t.fop('futimens', 'f', 'now', 'now')
        t.fop('futimens', 'f', AGED + 1, AGED + 2)
        t.stat('o')
    elif what == 'futimens-path-fd':
        t.open('f', O.O_PATH)
        t.fop('futimens', 'f', 'now', 'now')
    elif what == 'nofollow-regular-file':
        t.do('utimens', 'f', AGED + 5, 'omit', follow=False)
    elif what == 'dangling-symlink-follow':
        t.do('symlink', 'nothing', 'dl', paths=(1,))
        t.do('utimens', 'dl', 'now', 'now')
    elif what == 'bad-nsec':
        t.do('utimens', 'f', AGED, 'bad-nsec')
    elif what == 'own-readonly-file-now':
        t.do('chmod', 'f', 0o444)
        t.age('f')
        t.do('utimens', 'f', 'now', 'now')
    t.stat('f')
    t.stat('l')
    t.stat('d')


# ---------------------------------------------------------------- open flags

@each('open/{what}', [dict(what=w) for w in (
    'creat-excl-new', 'creat-excl-existing', 'creat-excl-symlink', 'creat-excl-dangling-symlink',
    'creat-dangling-symlink', 'creat-existing', 'trunc-data', 'trunc-empty', 'rdonly-trunc-writable',
    'rdonly-trunc-readonly', 'append-write', 'append-pwrite', 'append-lseek-write', 'nofollow-symlink',
    'nofollow-path-symlink', 'nofollow-file', 'nofollow-middle-symlink', 'directory-file', 'directory-dir',
    'directory-symlink-dir', 'directory-nofollow-symlink-dir', 'directory-creat', 'wronly-dir', 'rdwr-dir',
    'creat-existing-dir', 'rdwr-readonly-file', 'creat-readonly-dir', 'creat-existing-in-readonly-dir',
    'trailing-slash-file', 'trailing-slash-creat', 'creat-mode-0-write', 'noatime-own', 'noatime-others',
    'excl-without-creat', 'creat-setid-mode', 'creat-setgid-dir-foreign', 'path-read', 'path-fstat',
    'wronly-fifo-nonblock', 'creat-trunc-existing', 'read-write-seek', 'creat-in-missing-dir',
    'creat-sticky-others-file', 'write-rdonly-fd', 'read-wronly-fd')])
def _(t, what):
    t.create('f', b'0123456789')
    t.mkdir('d')
    t.do('symlink', 'f', 'l', paths=(1,))
    t.do('symlink', 'd', 'ld', paths=(1,))
    t.age('f', 'd', '')
    W, R, RW, C, X = O.O_WRONLY, O.O_RDONLY, O.O_RDWR, O.O_CREAT, O.O_EXCL
    if what == 'creat-excl-new':
        t.open('n', C | X | W, 0o640)
        t.stat('n')
    elif what == 'creat-excl-existing':
        t.open('f', C | X | W)
    elif what == 'creat-excl-symlink':
        t.open('l', C | X | W)
    elif what == 'creat-excl-dangling-symlink':
        t.do('symlink', 'target', 'dl', paths=(1,))
        t.open('dl', C | X | W)
        t.stat('target')
    elif what == 'creat-dangling-symlink':
        t.do('symlink', 'target', 'dl', paths=(1,))
        t.open('dl', C | W, 0o600)
        t.stat('target')
    elif what == 'creat-existing':
        t.open('f', C | W, 0o600)
    elif what == 'trunc-data':
        t.open('f', W | O.O_TRUNC)
    elif what == 'trunc-empty':
        t.create('e')
        t.age('e')
        t.open('e', W | O.O_TRUNC)
        t.stat('e')
    elif what == 'rdonly-trunc-writable':
        t.open('f', R | O.O_TRUNC)
    elif what == 'rdonly-trunc-readonly':
        file_of(t, 'other', 0o644, name='o')
        t.open('o', R | O.O_TRUNC)
        t.stat('o')
    elif what == 'append-write':
        t.open('f', W | O.O_APPEND)
        t.fop('write', 'f', b'abc')
    elif what == 'append-pwrite':
        t.open('f', W | O.O_APPEND)
        t.fop('pwrite', 'f', b'abc', 0)
    elif what == 'append-lseek-write':
        t.open('f', RW | O.O_APPEND)
        t.fop('lseek', 'f', 2, 0)
        t.fop('write', 'f', b'abc')
        t.fop('lseek', 'f', 0, 1)
    elif what == 'nofollow-symlink':
        t.open('l', R | O.O_NOFOLLOW)
    elif what == 'nofollow-path-symlink':
        t.open('l', O.O_PATH | O.O_NOFOLLOW)
        t.fstat('f', 'l')
    elif what == 'nofollow-file':
        t.open('f', R | O.O_NOFOLLOW)
    elif what == 'nofollow-middle-symlink':
        t.create('d/x')
        t.open('ld/x', R | O.O_NOFOLLOW)
    elif what == 'directory-file':
        t.open('f', R | O.O_DIRECTORY)
    elif what == 'directory-dir':
        t.open('d', R | O.O_DIRECTORY)
    elif what == 'directory-symlink-dir':
        t.open('ld', R | O.O_DIRECTORY)
    elif what == 'directory-nofollow-symlink-dir':
        t.open('ld', R | O.O_DIRECTORY | O.O_NOFOLLOW)
    elif what == 'directory-creat':
        t.open('n', R | O.O_DIRECTORY | C)
    elif what == 'wronly-dir':
        t.open('d', W)
    elif what == 'rdwr-dir':
        t.open('d', RW)
    elif what == 'creat-existing-dir':
        t.open('d', C | W)
    elif what == 'rdwr-readonly-file':
        file_of(t, 'other', 0o644, name='o')
        t.open('o', RW)
    elif what == 'creat-readonly-dir':
        dir_of(t, 'root', 0o555, name='ro')
        t.open('ro/n', C | W)
    elif what == 'creat-existing-in-readonly-dir':
        dir_of(t, 'root', 0o755, name='ro')
        file_of(t, 'me', 0o644, name='ro/f')
        t.open('ro/f', C | W)
    elif what == 'trailing-slash-file':
        t.open('f/', R)
    elif what == 'trailing-slash-creat':
        t.open('n/', C | W)
    elif what == 'creat-mode-0-write':
        t.open('n', C | X | W, 0)
        t.fop('write', 'f', b'still writable')
        t.stat('n')
    elif what == 'noatime-own':
        t.open('f', R | O.O_NOATIME)
        t.fop('read', 'f', 4)
    elif what == 'noatime-others':
        file_of(t, 'other', 0o644, name='o')
        t.open('o', R | O.O_NOATIME)
    elif what == 'excl-without-creat':
        t.open('f', R | X)
    elif what == 'creat-setid-mode':
        t.open('n', C | X | W, 0o6755)
        t.stat('n')
    elif what == 'creat-setgid-dir-foreign':
        dir_of(t, 'me', 0o2777, 'foreign', name='sg')
        t.open('sg/n', C | X | W, 0o2755)
        t.stat('sg/n')
        t.mkdir('sg/sub')
        t.stat('sg/sub')
    elif what == 'path-read':
        t.open('f', O.O_PATH)
        t.fop('read', 'f', 4)
    elif what == 'path-fstat':
        t.open('f', O.O_PATH)
        t.fstat('f', 'f')
    elif what == 'wronly-fifo-nonblock':
        t.do('mkfifo', 'p', 0o644)
        t.open('p', W | O.O_NONBLOCK | O.O_TRUNC)
    elif what == 'creat-trunc-existing':
        t.open('f', C | W | O.O_TRUNC)
    elif what == 'read-write-seek':
        t.open('f', RW)
        t.fop('read', 'f', 3)
        t.fop('write', 'f', b'XY')
        t.fop('lseek', 'f', 0, 0)
        t.fop('read', 'f', 20)
        t.fop('lseek', 'f', 0, 2)
    elif what == 'creat-in-missing-dir':
        t.open('nodir/n', C | W)
    elif what == 'creat-sticky-others-file':
        dir_of(t, 'root', 0o1777, name='s')
        t.create('s/o', mode=0o644, who='other')
        t.open('s/o', C | W)
    elif what == 'write-rdonly-fd':
        t.open('f', R)
        t.fop('write', 'f', b'x')
    elif what == 'read-wronly-fd':
        t.open('f', W)
        t.fop('read', 'f', 1)
    t.stat('f')
    t.stat('d')
    t.stat('')
    t.do('listdir', '')


@each('tmpfile/{what}', [dict(what=w) for w in ('rdwr', 'wronly', 'rdonly', 'excl-link', 'link', 'link-data',
                                                 'on-file', 'readonly-dir', 'setgid-dir', 'link-existing-name',
                                                 'mode-0', 'in-symlink-to-dir')])
def _(t, what):
    t.mkdir('d')
    t.create('f')
    T = O.O_TMPFILE
    flags = {'rdwr': T | O.O_RDWR, 'wronly': T | O.O_WRONLY, 'rdonly': T | O.O_RDONLY,
             'excl-link': T | O.O_RDWR | O.O_EXCL}.get(what, T | O.O_RDWR)
    where = 'd'
    if what == 'on-file':
        where = 'f'
    elif what == 'readonly-dir':
        where = dir_of(t, 'root', 0o555, name='ro')
    elif what == 'setgid-dir':
        where = dir_of(t, 'me', 0o2777, 'shared', name='sg')
    elif what == 'in-symlink-to-dir':
        t.do('symlink', 'd', 'ld', paths=(1,))
        where = 'ld'
    t.age(where)
    t.open(where, flags, 0 if what == 'mode-0' else 0o640)
    t.fstat('f', 'tmp')
    if what == 'link-data':
        t.fop('write', 'f', b'anonymous data')
    target = where + '/named'
    if what == 'link-existing-name':
        t.create(target)
    if what not in ('rdonly', 'on-file'):
        t.do('linkfd', 'f', target, paths=(1,))
        t.stat(target)
        t.fstat('f', 'tmp')
        t.open(target, O.O_RDONLY, f='r')
        t.fop('read', 'r', 40)
    t.stat(where)
    t.do('listdir', where)


# -------------------------------------------------------------------- errnos

@each('errno/enametoolong/{what}', [dict(what=w) for w in ('mkdir-256', 'mkdir-255', 'create-256', 'create-255',
                                                            'symlink-name-256', 'symlink-target-4095',
                                                            'symlink-target-4096', 'link-256', 'rename-256',
                                                            'stat-256', 'unlink-256', 'mkfifo-256',
                                                            'component-256-in-middle', 'xattr-name-256')])
def _(t, what):
    t.create('f')
    n256, n255 = 'a' * 256, 'b' * 255
    if what == 'mkdir-256':
        t.mkdir(n256)
    elif what == 'mkdir-255':
        t.mkdir(n255)
    elif what == 'create-256':
        t.create(n256)
    elif what == 'create-255':
        t.create(n255)
        t.stat(n255)
    elif what == 'symlink-name-256':
        t.do('symlink', 'f', n256, paths=(1,))
    elif what == 'symlink-target-4095':
        t.do('symlink', 'x' * 4095, 'l', paths=(1,))
        t.stat('l')
        t.do('readlink', 'l', show=len)
    elif what == 'symlink-target-4096':
        t.do('symlink', 'x' * 4096, 'l', paths=(1,))
    elif what == 'link-256':
        t.do('link', 'f', n256, paths=(0, 1))
    elif what == 'rename-256':
        t.do('rename', 'f', n256, paths=(0, 1))
    elif what == 'stat-256':
        t.stat(n256)
    elif what == 'unlink-256':
        t.do('unlink', n256)
    elif what == 'mkfifo-256':
        t.do('mkfifo', n256, 0o644)
    elif what == 'component-256-in-middle':
        t.stat(n256 + '/x')
    elif what == 'xattr-name-256':
        t.do('setxattr', 'f', 'user.' + 'x' * 251, b'v')
    t.do('listdir', '', show=lambda names: [n if len(n) < 20 else '%s*%d' % (n[0], len(n)) for n in names])


@each('errno/eloop/{what}', [dict(what=w) for w in ('stat-loop', 'lstat-loop', 'open-loop', 'mkdir-through-loop',
                                                     'self-loop', 'chain-40', 'chain-41', 'creat-through-loop',
                                                     'readlink-loop', 'chmod-loop', 'dir-chain-40', 'dir-chain-41')])
def _(t, what):
    t.do('symlink', 'b', 'a', paths=(1,))
    t.do('symlink', 'a', 'b', paths=(1,))
    t.do('symlink', 's', 's', paths=(1,))
    t.create('f')
    t.mkdir('d')
    if what.startswith('chain-') or what.startswith('dir-chain-'):
        n = int(what.split('-')[-1])
        target = 'f' if what.startswith('chain') else 'd'
        t.do('symlink', target, 'c0', paths=(1,))
        for i in range(1, n):
            t.do('symlink', 'c%d' % (i - 1), 'c%d' % i, paths=(1,))
        last = 'c%d' % (n - 1)
        if target == 'f':
            t.stat(last, follow=True)
            t.open(last, O.O_RDONLY)
        else:
            t.stat(last + '/', follow=True)
            t.create(last + '/x')
        return
    if what == 'stat-loop':
        t.stat('a', follow=True)
    elif what == 'lstat-loop':
        t.stat('a')
    elif what == 'open-loop':
        t.open('a', O.O_RDONLY)
    elif what == 'mkdir-through-loop':
        t.mkdir('a/x')
    elif what == 'self-loop':
        t.stat('s', follow=True)
    elif what == 'creat-through-loop':
        t.open('a', O.O_CREAT | O.O_WRONLY)
    elif what == 'readlink-loop':
        t.do('readlink', 'a')
    elif what == 'chmod-loop':
        t.do('chmod', 'a', 0o644)


@each('errno/enotdir/{what}', [dict(what=w) for w in ('stat-through-file', 'mkdir-through-file', 'rmdir-file',
                                                       'listdir-file', 'rename-dir-over-file', 'symlink-to-file-slash',
                                                       'open-through-file', 'unlink-through-file',
                                                       'create-through-symlink-to-file', 'chdir-like-open-directory')])
def _(t, what):
    t.create('f')
    t.mkdir('d')
    t.do('symlink', 'f', 'l', paths=(1,))
    if what == 'stat-through-file':
        t.stat('f/x')
    elif what == 'mkdir-through-file':
        t.mkdir('f/x')
    elif what == 'rmdir-file':
        t.do('rmdir', 'f')
    elif what == 'listdir-file':
        t.do('listdir', 'f')
    elif what == 'rename-dir-over-file':
        t.do('rename', 'd', 'f', paths=(0, 1))
    elif what == 'symlink-to-file-slash':
        t.stat('l/', follow=True)
    elif what == 'open-through-file':
        t.open('f/x', O.O_RDONLY)
    elif what == 'unlink-through-file':
        t.do('unlink', 'f/x')
    elif what == 'create-through-symlink-to-file':
        t.create('l/x')
    elif what == 'chdir-like-open-directory':
        t.open('l', O.O_RDONLY | O.O_DIRECTORY)


@each('errno/eisdir/{what}', [dict(what=w) for w in ('open-wronly', 'open-rdwr', 'unlink', 'rename-file-over-dir',
                                                      'truncate', 'creat-dir', 'link-dir-target')])
def _(t, what):
    t.create('f')
    t.mkdir('d')
    t.create('d/x')
    t.mkdir('e')
    if what == 'open-wronly':
        t.open('d', O.O_WRONLY)
    elif what == 'open-rdwr':
        t.open('d', O.O_RDWR)
    elif what == 'unlink':
        t.do('unlink', 'd')
    elif what == 'rename-file-over-dir':
        t.do('rename', 'f', 'e', paths=(0, 1))
    elif what == 'truncate':
        t.do('truncate', 'd', 0)
    elif what == 'creat-dir':
        t.open('d', O.O_CREAT | O.O_RDONLY)
    elif what == 'link-dir-target':
        t.do('link', 'f', 'e', paths=(0, 1))


@each('errno/eexist/{what}', [dict(what=w) for w in ('mkdir-dir', 'mkdir-file', 'mkdir-symlink', 'mkdir-dangling',
                                                      'symlink-existing', 'symlink-over-dir', 'mknod-existing',
                                                      'link-existing', 'mkdir-dot', 'rename-noreplace')])
def _(t, what):
    t.create('f')
    t.mkdir('d')
    t.do('symlink', 'f', 'l', paths=(1,))
    t.do('symlink', 'nothing', 'dl', paths=(1,))
    if what == 'mkdir-dir':
        t.mkdir('d')
    elif what == 'mkdir-file':
        t.mkdir('f')
    elif what == 'mkdir-symlink':
        t.mkdir('l')
    elif what == 'mkdir-dangling':
        t.mkdir('dl')
        t.stat('nothing')
    elif what == 'symlink-existing':
        t.do('symlink', 'x', 'f', paths=(1,))
    elif what == 'symlink-over-dir':
        t.do('symlink', 'x', 'd', paths=(1,))
    elif what == 'mknod-existing':
        t.do('mknod', 'f', S_IFMT['reg'] | 0o644, 0, 0)
    elif what == 'link-existing':
        t.do('link', 'f', 'l', paths=(0, 1))
    elif what == 'mkdir-dot':
        t.mkdir('d/.')
    elif what == 'rename-noreplace':
        t.do('rename', 'f', 'd', RENAME_NOREPLACE, paths=(0, 1))


@each('errno/enotempty/{what}', [dict(what=w) for w in ('rmdir', 'rmdir-hidden-file', 'rename-over', 'rmdir-subdir')])
def _(t, what):
    t.mkdir('d')
    t.mkdir('e')
    t.create('e/x')
    if what == 'rmdir':
        t.do('rmdir', 'e')
    elif what == 'rmdir-hidden-file':
        t.create('d/.hidden')
        t.do('rmdir', 'd')
    elif what == 'rename-over':
        t.do('rename', 'd', 'e', paths=(0, 1))
    elif what == 'rmdir-subdir':
        t.mkdir('d/sub')
        t.do('rmdir', 'd')
    t.do('listdir', '')


PERM_MODES = (0o700, 0o070, 0o007, 0o400, 0o040, 0o004, 0o200, 0o020, 0o002, 0o100, 0o010, 0o001, 0o000, 0o750)


@each('perm/file-{m}-other-shared/{how}', [dict(mode=m, m=octal(m), how=h) for m in PERM_MODES
                                            for h in ('read', 'write', 'access-x')])
def _(t, mode, m, how):
    file_of(t, 'other', mode, 'shared', data=b'secret')
    if how == 'read':
        t.open('f', O.O_RDONLY)
        t.fop('read', 'f', 10)
    elif how == 'write':
        t.open('f', O.O_WRONLY)
    else:
        t.do('access', 'f', os.X_OK)


@each('perm/dir-{m}-other-shared/{how}', [dict(mode=m, m=octal(m), how=h) for m in (0o700, 0o070, 0o007, 0o500, 0o050,
                                                                                      0o005, 0o300, 0o030, 0o003, 0o100,
                                                                                      0o010, 0o001)
                                           for h in ('list', 'stat-inside', 'create-inside')])
def _(t, mode, m, how):
    dir_of(t, 'other', 0o777, 'shared')
    t.create('d/x', who='root')
    t.do('chmod', 'd', mode, who='root')
    if how == 'list':
        t.do('listdir', 'd')
    elif how == 'stat-inside':
        t.stat('d/x')
    else:
        t.create('d/new')


@each('errno/eacces/{what}', [dict(what=w) for w in ('search-denied', 'read-denied', 'write-denied',
                                                      'mkdir-denied', 'list-write-exec-only', 'exec-only-dir-stat',
                                                      'symlink-in-readonly-dir', 'readlink-through-denied-dir',
                                                      'utimens-now-denied', 'setxattr-denied')])
def _(t, what):
    dir_of(t, 'root', 0o700, name='priv')
    t.create('priv/x', who='root')
    file_of(t, 'root', 0o600, name='rootfile')
    dir_of(t, 'root', 0o555, name='ro')
    if what == 'search-denied':
        t.stat('priv/x')
    elif what == 'read-denied':
        t.open('rootfile', O.O_RDONLY)
    elif what == 'write-denied':
        t.do('chmod', 'rootfile', 0o644, who='root')
        t.open('rootfile', O.O_WRONLY)
    elif what == 'mkdir-denied':
        t.mkdir('ro/x')
    elif what == 'list-write-exec-only':
        t.do('chmod', 'priv', 0o733, who='root')
        t.do('listdir', 'priv')
        t.create('priv/mine')
    elif what == 'exec-only-dir-stat':
        t.do('chmod', 'priv', 0o711, who='root')
        t.stat('priv/x')
        t.do('listdir', 'priv')
    elif what == 'symlink-in-readonly-dir':
        t.do('symlink', 'x', 'ro/l', paths=(1,))
    elif what == 'readlink-through-denied-dir':
        t.do('symlink', 'x', 'priv/l', paths=(1,), who='root')
        t.do('readlink', 'priv/l')
    elif what == 'utimens-now-denied':
        t.do('chmod', 'rootfile', 0o644, who='root')
        t.do('utimens', 'rootfile', 'now', 'now')
    elif what == 'setxattr-denied':
        t.do('chmod', 'rootfile', 0o644, who='root')
        t.do('setxattr', 'rootfile', 'user.x', b'1')


@each('errno/eperm/{what}', [dict(what=w) for w in ('chown-to-other', 'chmod-others', 'utimens-set-others',
                                                     'link-dir', 'mknod-chr', 'unlink-dir', 'setxattr-trusted',
                                                     'setxattr-security', 'rename-whiteout', 'chown-group-not-mine')])
def _(t, what):
    t.create('f')
    t.mkdir('d')
    file_of(t, 'other', 0o666, name='o')
    if what == 'chown-to-other':
        t.chown('f', 'other', None)
    elif what == 'chmod-others':
        t.do('chmod', 'o', 0o600)
    elif what == 'utimens-set-others':
        t.do('utimens', 'o', AGED, AGED)
    elif what == 'link-dir':
        t.do('link', 'd', 'd2', paths=(0, 1))
    elif what == 'mknod-chr':
        t.do('mknod', 'c', S_IFMT['chr'] | 0o600, 1, 3)
    elif what == 'unlink-dir':
        t.do('unlink', 'd')
    elif what == 'setxattr-trusted':
        t.do('setxattr', 'f', 'trusted.x', b'1')
    elif what == 'setxattr-security':
        t.do('setxattr', 'f', 'security.x', b'1')
    elif what == 'rename-whiteout':
        t.do('rename', 'f', 'g', RENAME_WHITEOUT, paths=(0, 1))
    elif what == 'chown-group-not-mine':
        t.chown('f', None, 'foreign')
    t.do('listdir', '')


# ------------------------------------------------------- paths near PATH_MAX

def deep_path(t, total):
    """Makes directories so that case-dir/<dirs>/<name> is `total` bytes
    long as an absolute path (equal on both sides: equal-length roots), and
    returns the path relative to the case directory."""
    base = len(t.dir) + 1
    rel = ''
    while total - base - len(rel) > 255:
        rel += 'D' * 200 + '/'
        t.mkdir(rel)
    return rel + 'N' * (total - base - len(rel))


@each('pathmax/{what}-{n}', [dict(what=w, n=n) for w in ('create', 'stat', 'mkdir', 'symlink', 'rename-to',
                                                          'unlink', 'chmod', 'setxattr')
                              for n in (4094, 4095, 4096)])
def _(t, what, n):
    p = deep_path(t, n)
    if what in ('stat', 'unlink', 'chmod', 'setxattr') and n < PATH_MAX:
        t.create(p)
    if what == 'create':
        t.create(p)
    elif what == 'stat':
        t.stat(p)
    elif what == 'mkdir':
        t.mkdir(p)
    elif what == 'symlink':
        t.do('symlink', 'target', p, paths=(1,))
    elif what == 'rename-to':
        t.create('f')
        t.do('rename', 'f', p, paths=(0, 1))
    elif what == 'unlink':
        t.do('unlink', p)
    elif what == 'chmod':
        t.do('chmod', p, 0o600)
    elif what == 'setxattr':
        t.do('setxattr', p, 'user.deep', b'1')
    t.stat(p)


@each('pathmax/beyond-by-dirfd/{what}', [dict(what=w) for w in ('mkdir-stat', 'create-read', 'absolute-fails')])
def _(t, what):
    # Deeper than PATH_MAX in total, each step relative to the previous
    # directory's descriptor.
    t.open('', O.O_RDONLY | O.O_DIRECTORY, f='d0')
    comp = 'Z' * 250
    for i in range(18):
        t.fop('mkdirat', 'd%d' % i, comp, 0o755)
        t.fop('openat', 'd%d' % i, comp, O.O_RDONLY | O.O_DIRECTORY, 0, 'd%d' % (i + 1))
    if what == 'mkdir-stat':
        t.fop('mkdirat', 'd18', 'leaf', 0o700)
        t.statat('d18', 'leaf')
    elif what == 'create-read':
        t.fop('openat', 'd18', 'file', O.O_CREAT | O.O_RDWR, 0o644, 'w')
        t.fop('write', 'w', b'deep')
        t.fop('pread', 'w', 10, 0)
        t.statat('d17', comp + '/file')
    else:
        t.stat('/'.join([comp] * 18))


# -------------------------------------------------------------------- xattrs

def acl_bytes(entries):
    """The system.posix_acl_* value: version 2, then (tag, perm, id) each."""
    import struct
    tags = {'user_obj': 1, 'user': 2, 'group_obj': 4, 'group': 8, 'mask': 0x10, 'other': 0x20}
    out = struct.pack('<I', 2)
    for tag, perm, ident in entries:
        out += struct.pack('<HHI', tags[tag], perm, 0xffffffff if ident is None else ident)
    return out


ACL_USER_OTHER_R = acl_bytes([('user_obj', 6, None), ('user', 4, 2003), ('group_obj', 4, None), ('mask', 4, None),
                              ('other', 0, None)])
ACL_MINIMAL = acl_bytes([('user_obj', 7, None), ('group_obj', 5, None), ('other', 0, None)])
ACL_BAD = acl_bytes([('user_obj', 7, None), ('user', 4, 2003), ('other', 0, None)])  # no mask, no group_obj


@case('xattr/system/exec-acl-denies-user')
def _(t):
    """An ACL entry without x keeps a named user from running an
    execute-only binary that the mode bits (0711) let run: the daemon
    checks execute permission on SOURCE before it opens the binary."""
    file_of(t, 'other', 0o711, 'other', data=TRUE_BINARY)
    t.do('setxattr', 'f', 'system.posix_acl_access', acl_bytes([
        ('user_obj', 7, None), ('user', 0, 2001), ('group_obj', 1, None), ('mask', 1, None), ('other', 1, None)]),
        who='root')
    t.do('exec', 'f')
    t.stat('f')


@each('xattr/user/{what}', [dict(what=w) for w in (
    'set-get-list-remove', 'create-existing', 'replace-missing', 'get-missing', 'size-query', 'small-buffer',
    'empty-value', 'value-4000', 'value-too-big', 'on-symlink', 'on-dir', 'on-fifo', 'others-readonly-file-set',
    'others-private-file-get', 'others-readable-file-list', 'empty-suffix', 'no-namespace', 'remove-missing',
    'through-symlink', 'times-after-set', 'many-then-list', 'replace-existing')])
def _(t, what):
    t.create('f')
    t.mkdir('d')
    t.do('symlink', 'f', 'l', paths=(1,))
    if what == 'set-get-list-remove':
        t.do('setxattr', 'f', 'user.a', b'1')
        t.do('setxattr', 'f', 'user.b', b'22')
        t.do('getxattr', 'f', 'user.b')
        t.do('listxattr', 'f')
        t.do('removexattr', 'f', 'user.a')
        t.do('listxattr', 'f')
    elif what == 'create-existing':
        t.do('setxattr', 'f', 'user.a', b'1')
        t.do('setxattr', 'f', 'user.a', b'2', XATTR_CREATE)
    elif what == 'replace-missing':
        t.do('setxattr', 'f', 'user.a', b'1', XATTR_REPLACE)
    elif what == 'replace-existing':
        t.do('setxattr', 'f', 'user.a', b'1')
        t.do('setxattr', 'f', 'user.a', b'new', XATTR_REPLACE)
        t.do('getxattr', 'f', 'user.a')
    elif what == 'get-missing':
        t.do('getxattr', 'f', 'user.none')
    elif what == 'size-query':
        t.do('setxattr', 'f', 'user.a', b'12345')
        t.do('getxattr_size', 'f', 'user.a', 0)
    elif what == 'small-buffer':
        t.do('setxattr', 'f', 'user.a', b'12345')
        t.do('getxattr_size', 'f', 'user.a', 2)
    elif what == 'empty-value':
        t.do('setxattr', 'f', 'user.a', b'')
        t.do('getxattr', 'f', 'user.a')
    elif what == 'value-4000':
        t.do('setxattr', 'f', 'user.a', b'v' * 4000)
        t.do('getxattr', 'f', 'user.a')
    elif what == 'value-too-big':
        t.do('setxattr', 'f', 'user.a', b'v' * 70000)
    elif what == 'on-symlink':
        t.do('setxattr', 'l', 'user.a', b'1', follow=False)
        t.do('listxattr', 'l', follow=False)
    elif what == 'on-dir':
        t.do('setxattr', 'd', 'user.a', b'1')
        t.do('getxattr', 'd', 'user.a')
    elif what == 'on-fifo':
        t.do('mkfifo', 'p', 0o666)
        t.do('setxattr', 'p', 'user.a', b'1')
    elif what == 'others-readonly-file-set':
        file_of(t, 'other', 0o644, name='o')
        t.do('setxattr', 'o', 'user.a', b'1')
    elif what == 'others-private-file-get':
        file_of(t, 'other', 0o600, name='o')
        t.do('setxattr', 'o', 'user.a', b'1', who='other')
        t.do('getxattr', 'o', 'user.a')
        t.do('listxattr', 'o')
    elif what == 'others-readable-file-list':
        file_of(t, 'other', 0o644, name='o')
        t.do('setxattr', 'o', 'user.a', b'1', who='other')
        t.do('listxattr', 'o')
        t.do('getxattr', 'o', 'user.a')
    elif what == 'empty-suffix':
        t.do('setxattr', 'f', 'user.', b'1')
    elif what == 'no-namespace':
        t.do('setxattr', 'f', 'plain', b'1')
    elif what == 'remove-missing':
        t.do('removexattr', 'f', 'user.none')
    elif what == 'through-symlink':
        t.do('setxattr', 'l', 'user.a', b'1')
        t.do('getxattr', 'f', 'user.a')
    elif what == 'times-after-set':
        t.age('f')
        t.do('setxattr', 'f', 'user.a', b'1')
        t.stat('f')
        t.age('f')
        t.do('getxattr', 'f', 'user.a')
        t.do('listxattr', 'f')
        t.stat('f')
        t.do('removexattr', 'f', 'user.a')
        t.stat('f')
    elif what == 'many-then-list':
        for i in range(20):
            t.do('setxattr', 'f', 'user.k%02d' % i, b'x' * i)
        t.do('listxattr', 'f')
    t.do('listxattr', 'f')


@each('xattr/{ns}/{what}', [dict(ns=n, what=w) for n in ('trusted', 'security')
                            for w in ('set', 'get-roots', 'list-roots', 'remove-roots')])
def _(t, ns, what):
    t.create('f', mode=0o666)
    t.do('setxattr', 'f', ns + '.byroot', b'r', who='root')
    if what == 'set':
        t.do('setxattr', 'f', ns + '.mine', b'1')
        t.do('getxattr', 'f', ns + '.mine', who='root')
    elif what == 'get-roots':
        t.do('getxattr', 'f', ns + '.byroot')
    elif what == 'list-roots':
        t.do('listxattr', 'f')
    elif what == 'remove-roots':
        t.do('removexattr', 'f', ns + '.byroot')
    t.do('listxattr', 'f', who='root')


@each('xattr/system/{what}', [dict(what=w) for w in ('set-acl-own', 'set-acl-others', 'set-bad-acl', 'get-acl',
                                                      'remove-acl', 'default-acl-dir', 'default-acl-file',
                                                      'minimal-acl-sets-mode', 'unknown-system-name',
                                                      'acl-then-chmod', 'acl-denies-other', 'acl-grants-other')])
def _(t, what):
    t.create('f', b'data', mode=0o640)
    t.mkdir('d')
    A = 'system.posix_acl_access'
    if what == 'set-acl-own':
        t.age('f')
        t.do('setxattr', 'f', A, ACL_USER_OTHER_R)
        t.stat('f')
    elif what == 'set-acl-others':
        file_of(t, 'other', 0o666, name='o')
        t.do('setxattr', 'o', A, ACL_USER_OTHER_R)
    elif what == 'set-bad-acl':
        t.do('setxattr', 'f', A, ACL_BAD)
    elif what == 'get-acl':
        t.do('setxattr', 'f', A, ACL_USER_OTHER_R)
        t.do('getxattr', 'f', A)
        t.do('listxattr', 'f')
    elif what == 'remove-acl':
        t.do('setxattr', 'f', A, ACL_USER_OTHER_R)
        t.do('removexattr', 'f', A)
        t.do('getxattr', 'f', A)
        t.stat('f')
    elif what == 'default-acl-dir':
        t.do('setxattr', 'd', 'system.posix_acl_default', ACL_USER_OTHER_R)
        t.create('d/n', mode=0o666)
        t.stat('d/n')
        t.do('getxattr', 'd/n', A)
        t.mkdir('d/sub', 0o777)
        t.stat('d/sub')
    elif what == 'default-acl-file':
        t.do('setxattr', 'f', 'system.posix_acl_default', ACL_USER_OTHER_R)
    elif what == 'minimal-acl-sets-mode':
        t.do('setxattr', 'f', A, ACL_MINIMAL)
        t.stat('f')
        t.do('getxattr', 'f', A)
    elif what == 'unknown-system-name':
        t.do('setxattr', 'f', 'system.nothing', b'1')
    elif what == 'acl-then-chmod':
        t.do('setxattr', 'f', A, ACL_USER_OTHER_R)
        t.do('chmod', 'f', 0o600)
        t.do('getxattr', 'f', A)
    elif what == 'acl-denies-other':
        # other is in group 'shared'; an ACL entry for other with no
        # permissions denies what the group bits would give.
        t.chown('f', None, 'shared', who='root')
        t.do('chmod', 'f', 0o640, who='root')
        t.do('setxattr', 'f', A, acl_bytes([('user_obj', 6, None), ('user', 0, 2003), ('group_obj', 4, None),
                                            ('mask', 4, None), ('other', 0, None)]), who='root')
        t.open('f', O.O_RDONLY, who='other')
    elif what == 'acl-grants-other':
        # 0600: only the ACL entry lets other read.
        t.do('chmod', 'f', 0o600, who='root')
        t.do('setxattr', 'f', A, acl_bytes([('user_obj', 6, None), ('user', 4, 2003), ('group_obj', 0, None),
                                            ('mask', 4, None), ('other', 0, None)]))
        t.open('f', O.O_RDONLY, who='other')
        t.fop('read', 'f', 10, who='other')
    t.stat('f')


# --------------------------------------------------------------------- locks

def lockfile(t):
    t.create('f', b'x' * 100, mode=0o666)
    t.open('f', O.O_RDWR, f='m')
    t.open('f', O.O_RDWR, f='o', who='other')


def lock_owner(pid_names):
    return lambda r: tuple(pid_names.get(x, x) if i == 3 else x for i, x in enumerate(r))


@each('locks/posix/{what}', [dict(what=w) for w in (
    'write-conflict', 'read-shared', 'read-then-write-conflict', 'disjoint-ranges', 'unlock-releases',
    'close-other-fd-releases', 'write-lock-on-rdonly-fd', 'whole-file', 'past-eof', 'getlk-free', 'own-relock',
    'split-by-unlock', 'upgrade-own-read', 'adjacent-merge')])
def _(t, what):
    lockfile(t)
    show = lock_owner(t.suite.pid_names)

    def getlk(kind, start, n):
        t.do('getlk', 'o', kind, start, n, who='other', paths=(), show=show)
    if what == 'write-conflict':
        t.fop('setlk', 'm', 'w', 0, 10)
        t.fop('setlk', 'o', 'w', 0, 10, who='other')
        getlk('w', 0, 10)
    elif what == 'read-shared':
        t.fop('setlk', 'm', 'r', 0, 10)
        t.fop('setlk', 'o', 'r', 0, 10, who='other')
        getlk('r', 0, 10)
    elif what == 'read-then-write-conflict':
        t.fop('setlk', 'm', 'r', 0, 10)
        t.fop('setlk', 'o', 'w', 5, 10, who='other')
        getlk('w', 5, 10)
    elif what == 'disjoint-ranges':
        t.fop('setlk', 'm', 'w', 0, 10)
        t.fop('setlk', 'o', 'w', 10, 10, who='other')
    elif what == 'unlock-releases':
        t.fop('setlk', 'm', 'w', 0, 10)
        t.fop('setlk', 'm', 'u', 0, 10)
        t.fop('setlk', 'o', 'w', 0, 10, who='other')
    elif what == 'close-other-fd-releases':
        t.fop('setlk', 'm', 'w', 0, 10)
        t.open('f', O.O_RDONLY, f='m2')
        t.close('m2')
        t.fop('setlk', 'o', 'w', 0, 10, who='other')
    elif what == 'write-lock-on-rdonly-fd':
        t.open('f', O.O_RDONLY, f='r')
        t.fop('setlk', 'r', 'w', 0, 10)
    elif what == 'whole-file':
        t.fop('setlk', 'm', 'w', 0, 0)
        getlk('r', 1000, 1)
    elif what == 'past-eof':
        t.fop('setlk', 'm', 'w', 200, 50)
        getlk('w', 0, 0)
    elif what == 'getlk-free':
        getlk('w', 0, 0)
    elif what == 'own-relock':
        t.fop('setlk', 'm', 'w', 0, 10)
        t.fop('setlk', 'm', 'w', 0, 10)
        t.fop('getlk', 'm', 'w', 0, 10, show=show)
    elif what == 'split-by-unlock':
        t.fop('setlk', 'm', 'w', 0, 100)
        t.fop('setlk', 'm', 'u', 40, 20)
        getlk('w', 40, 20)
        getlk('w', 0, 10)
        getlk('w', 70, 5)
    elif what == 'upgrade-own-read':
        t.fop('setlk', 'm', 'r', 0, 10)
        t.fop('setlk', 'm', 'w', 0, 10)
        getlk('r', 0, 1)
    elif what == 'adjacent-merge':
        t.fop('setlk', 'm', 'w', 0, 10)
        t.fop('setlk', 'm', 'w', 10, 10)
        getlk('w', 5, 10)


@each('locks/ofd/{what}', [dict(what=w) for w in ('same-process-conflict', 'getlk-pid', 'vs-posix-other-process',
                                                  'close-unrelated-fd-keeps', 'read-shared-same-process',
                                                  'unlock', 'close-releases')])
def _(t, what):
    lockfile(t)
    show = lock_owner(t.suite.pid_names)
    if what == 'same-process-conflict':
        t.open('f', O.O_RDWR, f='m2')
        t.fop('setlk', 'm', 'w', 0, 10, ofd=True)
        t.fop('setlk', 'm2', 'w', 0, 10, ofd=True)
    elif what == 'getlk-pid':
        t.fop('setlk', 'm', 'w', 0, 10, ofd=True)
        t.do('getlk', 'o', 'w', 0, 10, ofd=True, who='other', paths=(), show=show)
    elif what == 'vs-posix-other-process':
        t.fop('setlk', 'm', 'w', 0, 10, ofd=True)
        t.fop('setlk', 'o', 'w', 0, 10, who='other')
        t.do('getlk', 'o', 'w', 0, 10, who='other', paths=(), show=show)
    elif what == 'close-unrelated-fd-keeps':
        t.fop('setlk', 'm', 'w', 0, 10, ofd=True)
        t.open('f', O.O_RDONLY, f='m2')
        t.close('m2')
        t.fop('setlk', 'o', 'w', 0, 10, ofd=True, who='other')
    elif what == 'read-shared-same-process':
        t.open('f', O.O_RDWR, f='m2')
        t.fop('setlk', 'm', 'r', 0, 10, ofd=True)
        t.fop('setlk', 'm2', 'r', 0, 10, ofd=True)
        t.fop('setlk', 'o', 'w', 0, 10, ofd=True, who='other')
    elif what == 'unlock':
        t.fop('setlk', 'm', 'w', 0, 10, ofd=True)
        t.fop('setlk', 'm', 'u', 0, 10, ofd=True)
        t.fop('setlk', 'o', 'w', 0, 10, ofd=True, who='other')
    elif what == 'close-releases':
        t.fop('setlk', 'm', 'w', 0, 10, ofd=True)
        t.close('m')
        t.fop('setlk', 'o', 'w', 0, 10, ofd=True, who='other')


@each('locks/flock/{what}', [dict(what=w) for w in ('ex-vs-ex', 'ex-vs-sh', 'sh-vs-sh', 'sh-vs-ex', 'unlock',
                                                    'independent-of-posix', 'two-fds-same-process', 'path-fd',
                                                    'upgrade', 'close-releases', 'rdonly-fd-ex')])
def _(t, what):
    lockfile(t)
    if what == 'ex-vs-ex':
        t.fop('flock', 'm', 'ex')
        t.fop('flock', 'o', 'ex', who='other')
    elif what == 'ex-vs-sh':
        t.fop('flock', 'm', 'ex')
        t.fop('flock', 'o', 'sh', who='other')
    elif what == 'sh-vs-sh':
        t.fop('flock', 'm', 'sh')
        t.fop('flock', 'o', 'sh', who='other')
    elif what == 'sh-vs-ex':
        t.fop('flock', 'm', 'sh')
        t.fop('flock', 'o', 'ex', who='other')
    elif what == 'unlock':
        t.fop('flock', 'm', 'ex')
        t.fop('flock', 'm', 'un')
        t.fop('flock', 'o', 'ex', who='other')
    elif what == 'independent-of-posix':
        t.fop('flock', 'm', 'ex')
        t.fop('setlk', 'o', 'w', 0, 10, who='other')
    elif what == 'two-fds-same-process':
        t.open('f', O.O_RDWR, f='m2')
        t.fop('flock', 'm', 'ex')
        t.fop('flock', 'm2', 'ex')
    elif what == 'path-fd':
        t.open('f', O.O_PATH, f='p')
        t.fop('flock', 'p', 'ex')
    elif what == 'upgrade':
        t.fop('flock', 'm', 'sh')
        t.fop('flock', 'm', 'ex')
        t.fop('flock', 'o', 'sh', who='other')
    elif what == 'close-releases':
        t.fop('flock', 'm', 'ex')
        t.close('m')
        t.fop('flock', 'o', 'ex', who='other')
    elif what == 'rdonly-fd-ex':
        t.open('f', O.O_RDONLY, f='r')
        t.fop('flock', 'r', 'ex')
        t.fop('flock', 'o', 'sh', who='other')


# ------------------------------------------------------- which times change

@each('times/{what}', [dict(what=w) for w in (
    'read', 'read-zero', 'write', 'write-zero', 'chmod', 'chmod-same-mode', 'chown-same', 'chown-none', 'link', 'unlink',
    'rename-file', 'rename-dir', 'mkdir', 'rmdir', 'create', 'symlink', 'readdir', 'readlink', 'lstat-symlink',
    'stat-through-symlink', 'setxattr', 'truncate-same', 'open-close', 'fsync', 'utimens-omit-omit',
    'mkfifo', 'exchange', 'access', 'listxattr', 'mmap-like-pread')])
def _(t, what):
    t.create('f', b'0123456789')
    t.mkdir('d')
    t.create('d/x')
    t.do('symlink', 'f', 'l', paths=(1,))
    watch = ('f', 'd', '', 'l', 'd/x')
    t.age(*watch)
    if what == 'read':
        t.open('f', O.O_RDONLY)
        t.fop('read', 'f', 4)
    elif what == 'read-zero':
        t.open('f', O.O_RDONLY)
        t.fop('read', 'f', 0)
    elif what == 'write':
        t.open('f', O.O_WRONLY)
        t.fop('write', 'f', b'ab')
    elif what == 'write-zero':
        t.open('f', O.O_WRONLY)
        t.fop('write', 'f', b'')
    elif what == 'chmod':
        t.do('chmod', 'f', 0o600)
    elif what == 'chmod-same-mode':
        t.do('chmod', 'f', 0o644)
    elif what == 'chown-same':
        t.chown('f', 'me', 'me')
    elif what == 'chown-none':
        t.chown('f', None, None)
    elif what == 'link':
        t.do('link', 'f', 'd/f2', paths=(0, 1))
    elif what == 'unlink':
        t.do('unlink', 'd/x')
    elif what == 'rename-file':
        t.do('rename', 'd/x', 'y', paths=(0, 1))
    elif what == 'rename-dir':
        t.mkdir('e')
        t.age(*watch)
        t.do('rename', 'd', 'e/d', paths=(0, 1))
        t.stat('e/d')
    elif what == 'mkdir':
        t.mkdir('d/sub')
    elif what == 'rmdir':
        t.mkdir('d/sub')
        t.age(*watch)
        t.do('rmdir', 'd/sub')
    elif what == 'create':
        t.create('d/new')
    elif what == 'symlink':
        t.do('symlink', 'x', 'd/l', paths=(1,))
    elif what == 'readdir':
        t.do('listdir', 'd')
    elif what == 'readlink':
        t.do('readlink', 'l')
    elif what == 'lstat-symlink':
        t.stat('l')
        t.do('listdir', '')
        t.stat('l')
    elif what == 'stat-through-symlink':
        t.stat('l', follow=True)
    elif what == 'setxattr':
        t.do('setxattr', 'f', 'user.t', b'1')
    elif what == 'truncate-same':
        t.do('truncate', 'f', 10)
    elif what == 'open-close':
        t.open('f', O.O_RDWR)
        t.close()
    elif what == 'fsync':
        t.open('f', O.O_RDWR)
        t.fop('fsync', 'f')
    elif what == 'utimens-omit-omit':
        t.do('utimens', 'f', 'omit', 'omit')
    elif what == 'mkfifo':
        t.do('mkfifo', 'd/p', 0o644)
    elif what == 'exchange':
        t.do('rename', 'f', 'd/x', RENAME_EXCHANGE, paths=(0, 1))
    elif what == 'access':
        t.do('access', 'f', os.R_OK | os.W_OK)
    elif what == 'listxattr':
        t.do('listxattr', 'f')
    elif what == 'mmap-like-pread':
        t.open('f', O.O_RDONLY)
        t.fop('pread', 'f', 3, 5)
    for p in watch:
        t.stat(p)
