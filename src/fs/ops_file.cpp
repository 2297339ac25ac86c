// Open files: open, create, read, write, flush, release, fsync, fallocate,
// lseek, copy_file_range. An open file holds its own descriptor (fi->fh) for
// its lifetime, counted against FsConfig::max_open_files. With kernel
// passthrough (passthrough.hpp) that descriptor also becomes the inode's
// backing file, and read/write then never reach this file.
#include <fcntl.h>
#include <linux/magic.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstdlib>

#include "daemon/identity.hpp"
#include "fs/ops.hpp"
#include "fs/passthrough.hpp"
#include "vsymfs/unique_fd.hpp"

namespace vsymfs::fs::ops {

namespace {

int file_fd(const fuse_file_info* fi) { return static_cast<int>(fi->fh); }

// The kernel's FMODE_EXEC (include/linux/fs.h; not an O_ flag, and open(2)
// never lets a process pass it): the open an execve (or uselib) makes. It
// reaches the daemon in FUSE_OPEN's flags, which libfuse hands on as they
// are.
constexpr int kOpenForExec = 0x20;

// O_NOFOLLOW would refuse the /proc/self/fd magic link itself; the kernel has
// already resolved the caller's path, so it has nothing left to protect (the
// magic link reaches the inode we hold, never a link's target).
int open_flags(int flags) { return (flags & ~(O_NOFOLLOW | kOpenForExec)) | O_CLOEXEC; }

// Opens an inode's file for an execve. Natively exec needs execute
// permission and not read permission (a mode 0711 binary runs for
// everyone), but the open for it reads: as the caller that open fails with
// EACCES. The kernel has already checked MAY_EXEC on the mount's mode bits
// (default_permissions) before it sends this open, and FMODE_EXEC comes
// only from its exec path. SOURCE may refuse what the mode bits allow (an
// ACL entry without x, a noexec mount), so execute permission is checked
// again there as the caller; then the file is opened read-only as the
// daemon. Nothing else is granted: the descriptor is read-only, and
// writes, truncation and every other open keep running as the caller.
int open_for_exec(int path_fd, int flags) {
  const ProcFdPath path(path_fd);
  if (::faccessat(path.dir(), path.name(), X_OK, AT_EACCESS) != 0) return -1;
  daemon::ScopedDaemonIdentity as_daemon;
  return ::openat(path.dir(), path.name(), open_flags(flags));
}

// One buffer that is a file range: libfuse reads or writes it straight from
// or to the descriptor. (FUSE_BUFVEC_INIT is a C compound literal.)
fuse_bufvec fd_range(size_t size, int fd, off_t pos) {
  fuse_bufvec v{};
  v.count = 1;
  v.buf[0].size = size;
  v.buf[0].flags = static_cast<fuse_buf_flags>(FUSE_BUF_IS_FD | FUSE_BUF_FD_SEEK);
  v.buf[0].fd = fd;
  v.buf[0].pos = pos;
  return v;
}

// The filesystem type of an open file (statfs f_type), 0 when unknown.
long file_system_type(int fd) {
  struct statfs sf {};
  return ::fstatfs(fd, &sf) == 0 ? static_cast<long>(sf.f_type) : 0;
}

fuse_bufvec mem_range(size_t size, void* mem) {
  fuse_bufvec v{};
  v.count = 1;
  v.buf[0].size = size;
  v.buf[0].mem = mem;
  return v;
}

bool page_aligned(const fuse_bufvec* v) {
  static const auto page = static_cast<uintptr_t>(::sysconf(_SC_PAGESIZE));
  for (size_t i = v->idx; i < v->count; ++i) {
    const fuse_buf& b = v->buf[i];
    if (b.flags & FUSE_BUF_IS_FD) return false;  // copied through memory anyway
    const uintptr_t start = reinterpret_cast<uintptr_t>(b.mem) + (i == v->idx ? v->off : 0);
    if (start % page != 0) return false;
  }
  return true;
}

// A page-aligned buffer of at least `size` bytes for this thread, kept for
// its next O_DIRECT write (at most max_write, 1 MiB). Null when out of memory.
void* bounce_buffer(size_t size) {
  struct Buffer {
    void* p = nullptr;
    size_t size = 0;
    ~Buffer() { std::free(p); }
  };
  thread_local Buffer b;
  if (b.size >= size) return b.p;
  void* p = nullptr;
  static const auto page = static_cast<size_t>(::sysconf(_SC_PAGESIZE));
  if (::posix_memalign(&p, page, size) != 0) return nullptr;
  std::free(b.p);
  b.p = p;
  b.size = size;
  return p;
}

// Whether close() on a file of this filesystem can report anything. The
// local filesystems below have no ->flush operation: their close() returns 0
// whatever happened, so a FLUSH round trip (which the closing process waits
// for) would only echo that. Every other filesystem (NFS, CIFS, Ceph, FUSE,
// f2fs, unknown ones) keeps its FLUSH, where close() reports write-back and
// quota errors. Asked of the open file itself: SOURCE may contain other mounts.
bool close_reports_nothing(long fs_type) {
  switch (static_cast<unsigned long>(fs_type)) {
    case EXT4_SUPER_MAGIC:  // also ext2 and ext3
    case XFS_SUPER_MAGIC:
    case BTRFS_SUPER_MAGIC:
    case TMPFS_MAGIC:
      return true;
    default:
      return false;
  }
}

// Registers the open with the passthrough registry (when on) and replies;
// undoes everything when the kernel no longer waits for the reply.
// `reply(direct_writes)`: direct_writes when the open may write the file
// through its backing file, so that its times change unseen (mmap): its
// attributes must not be cached from now on (Filesystem::attr_timeout_for).
template <typename Reply>
bool reply_opened(Filesystem& fs, fuse_ino_t ino, const Passthrough::OpenedFile& file, Reply&& reply) {
  Passthrough* pt = fs.passthrough();
  const int backing_id = pt ? pt->acquire(ino, file) : 0;
  const bool direct_writes = backing_id != 0 && (file.flags & O_ACCMODE) != O_RDONLY;
  int r;
  {
    Passthrough::ReplyMark mark(backing_id);
    r = reply(direct_writes);
  }
  if (r != -ENOENT) return true;
  // Interrupted: no release will come.
  if (pt) pt->release(ino);
  UniqueFd(file.fd).reset();  // fi->fh had it: taken back
  fs.release_open_file();
  return false;
}

}  // namespace

void open(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
  Filesystem& fs = fs_of(req);
  if (int e = fs.become_caller(req); e != 0) return (void)fuse_reply_err(req, e);
  FdRef fd;
  if (int e = fs.inodes().fd(fs.inode(ino), fd); e != 0) return (void)fuse_reply_err(req, e);
  if (!fs.reserve_open_file()) return (void)fuse_reply_err(req, ENFILE);
  const bool for_exec = (fi->flags & kOpenForExec) != 0 && (fi->flags & O_ACCMODE) == O_RDONLY &&
                        S_ISREG(fs.inode(ino).type());
  int ofd = -1;
  if (for_exec) {
    ofd = open_for_exec(fd.get(), fi->flags);
  } else {
    const ProcFdPath path(fd.get());
    ofd = ::openat(path.dir(), path.name(), open_flags(fi->flags));
  }
  if (ofd < 0) {
    int e = errno;
    fs.release_open_file();
    return (void)fuse_reply_err(req, e);
  }
  ofd = fs.quiet_atime(ofd, open_flags(fi->flags), false);
  fi->fh = static_cast<uint64_t>(ofd);
  // Keep the page cache across opens: writes through the mount update it,
  // and a change made in SOURCE directly is noticed when the attributes are
  // refreshed (FUSE_CAP_AUTO_INVAL_DATA, within attr_timeout).
  fi->keep_cache = 1;
  // close() of a read-only descriptor has nothing to report (no data of
  // ours to write back, and the kernel keeps POSIX locks itself): no FLUSH
  // round trip, which the closing process would wait for. Neither has a
  // writable one on a filesystem whose close() cannot fail.
  Inode& inode = fs.inode(ino);
  Passthrough::OpenedFile file{.fd = ofd, .flags = fi->flags, .size_seen = inode.size_seen()};
  if ((fi->flags & O_ACCMODE) == O_RDONLY) {
    fi->noflush = 1;
  } else {
    inode.saw_size(-1);  // writable: the size is not known from here on
    file.fs_type = file_system_type(ofd);
    fi->noflush = close_reports_nothing(file.fs_type);
  }
  reply_opened(fs, ino, file, [&](bool direct_writes) {
    // What the kernel cached before this open (lookup, stat) would
    // otherwise stay for attr_timeout after a write through a mapping.
    if (direct_writes) fs.invalidate_attributes(ino);
    return fuse_reply_open(req, fi);
  });
}

// The kernel sends CREATE for a name it believes absent, but SOURCE may have
// one by now: a link, a FIFO or a file planted there directly (or by another
// mount) after a cached negative lookup or between LOOKUP and CREATE. The
// daemon never opens what it finds: following a link itself would walk the
// raw text from SOURCE (out of it, and without the caller's expansion), and
// opening a FIFO or device could block a worker. It creates exclusively
// (O_EXCL, O_NOFOLLOW), so the file it opens is always the regular file it
// has just made. When the name exists and the caller did not ask for O_EXCL,
// the answer is ESTALE: the kernel then repeats the open once with a fresh
// lookup (LOOKUP_REVAL), finds what is there and opens it as natively,
// following a link through the mount (its expansion) or refusing it with
// ELOOP under O_NOFOLLOW. With O_EXCL the caller gets EEXIST, as natively.
void create(fuse_req_t req, fuse_ino_t parent_ino, const char* name, mode_t mode, fuse_file_info* fi) {
  Filesystem& fs = fs_of(req);
  Inode& parent = fs.inode(parent_ino);
  if (int e = fs.become_caller(req); e != 0) return (void)fuse_reply_err(req, e);
  FdRef pfd;
  if (int e = fs.inodes().fd(parent, pfd); e != 0) return (void)fuse_reply_err(req, e);
  if (!fs.reserve_open_file()) return (void)fuse_reply_err(req, ENFILE);
  const int flags = open_flags(fi->flags) | O_CREAT | O_EXCL | O_NOFOLLOW;
  int ofd = ::openat(pfd.get(), name, flags, fs.creation_mode(req, mode));
  if (ofd < 0) {
    int e = errno;
    fs.release_open_file();
    if (e == EEXIST && !(fi->flags & O_EXCL)) e = ESTALE;
    return (void)fuse_reply_err(req, e);
  }
  auto fail = [&](int err) {
    UniqueFd(ofd).reset();
    fs.release_open_file();
    fuse_reply_err(req, err);
  };
  struct stat st {};
  if (::fstat(ofd, &st) != 0) return fail(errno);
  fuse_entry_param e;
  if (int err = fs.lookup(req, parent, pfd.get(), name, e, false); err != 0) return fail(err);
  if (e.attr.st_dev != st.st_dev || e.attr.st_ino != st.st_ino) {
    // Renamed away and replaced between our create and lookup: answer for
    // what the name is now, as above.
    fs.inodes().forget(fs.inode(e.ino), 1);
    return fail(ESTALE);
  }
  ofd = fs.quiet_atime(ofd, open_flags(fi->flags), false);
  fi->fh = static_cast<uint64_t>(ofd);
  fs.inode(e.ino).saw_size(-1);  // open for writing: the size is not known from here on
  const Passthrough::OpenedFile file{.fd = ofd, .flags = fi->flags, .st = &st, .fs_type = file_system_type(ofd)};
  fi->noflush = close_reports_nothing(file.fs_type);
  const bool opened = reply_opened(fs, e.ino, file, [&](bool direct_writes) {
    // An empty file cannot be written through a mapping (a page past the
    // end faults SIGBUS): its times can change unseen only after its size
    // has, and every way to change the size (write, truncate, fallocate,
    // copy_file_range) makes the kernel drop its cached attributes, after
    // which they are answered with a timeout of 0 while this open lasts
    // (attr_timeout_for). So a new, empty file's attributes keep
    // attr_timeout: the permission check right after the create (the
    // kernel's may_open) then needs no GETATTR: one of the six round trips
    // a create, close and unlink otherwise wait for. A file that was there
    // already, with data, gets 0 at once.
    if (direct_writes && st.st_size != 0) e.attr_timeout = 0;
    return fuse_reply_create(req, &e, fi);
  });
  if (!opened)
    fs.inodes().forget(fs.inode(e.ino), 1);
}

void read(fuse_req_t req, fuse_ino_t, size_t size, off_t off, fuse_file_info* fi) {
  // Hand libfuse the descriptor, not the bytes: it reads straight into the reply.
  fuse_bufvec buf = fd_range(size, file_fd(fi), off);
  fuse_reply_data(req, &buf, FUSE_BUF_SPLICE_MOVE);
}

void write_buf(fuse_req_t req, fuse_ino_t ino, fuse_bufvec* in_buf, off_t off, fuse_file_info* fi) {
  // As the caller: a write by anyone but the owner (without CAP_FSETID)
  // must clear set-user-ID bits, as it would natively.
  Filesystem& fs = fs_of(req);
  if (int e = fs.become_caller(req); e != 0) return (void)fuse_reply_err(req, e);
  const size_t size = fuse_buf_size(in_buf);
  fuse_bufvec out = fd_range(size, file_fd(fi), off);
  fuse_bufvec aligned{};
  if ((fi->flags & O_DIRECT) != 0 && !page_aligned(in_buf)) {
    // O_DIRECT wants the memory aligned as well as the offset and length
    // (else EINVAL). libfuse reads a WRITE request into one buffer, so its
    // data starts right after the request's headers, never aligned. The
    // caller's offset and length reach SOURCE as they are: unaligned ones
    // fail there as they would natively.
    void* bounce = bounce_buffer(size);
    if (bounce == nullptr) return (void)fuse_reply_err(req, ENOMEM);
    aligned = mem_range(size, bounce);
    if (fuse_buf_copy(&aligned, in_buf, fuse_buf_copy_flags{}) != static_cast<ssize_t>(size))
      return (void)fuse_reply_err(req, EIO);
    in_buf = &aligned;
  }
  ssize_t n = fuse_buf_copy(&out, in_buf, fuse_buf_copy_flags{});
  if (n < 0) return (void)fuse_reply_err(req, static_cast<int>(-n));
  fs.after_setid_notice(ino);
  fuse_reply_write(req, static_cast<size_t>(n));
}

void flush(fuse_req_t req, fuse_ino_t, fuse_file_info* fi) {
  // close() of a duplicate reports what close() on the source would (NFS
  // write-back errors, quota) without giving up the descriptor.
  UniqueFd dup_fd(::dup(file_fd(fi)));
  if (!dup_fd) return (void)fuse_reply_err(req, errno);
  fuse_reply_err(req, dup_fd.close() == 0 ? 0 : errno);
}

void release(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
  Filesystem& fs = fs_of(req);
  if (Passthrough* pt = fs.passthrough()) pt->release(ino);
  UniqueFd(file_fd(fi)).reset();  // fi->fh owned it until now
  // A size seen while it was open for writing may be a partial one.
  if ((fi->flags & O_ACCMODE) != O_RDONLY) fs.inode(ino).saw_size(-1);
  fs.release_open_file();
  fuse_reply_err(req, 0);
}

void fsync(fuse_req_t req, fuse_ino_t, int datasync, fuse_file_info* fi) {
  int r = datasync ? ::fdatasync(file_fd(fi)) : ::fsync(file_fd(fi));
  fuse_reply_err(req, r == 0 ? 0 : errno);
}

void fallocate(fuse_req_t req, fuse_ino_t ino, int mode, off_t offset, off_t length, fuse_file_info* fi) {
  Filesystem& fs = fs_of(req);
  if (int e = fs.become_caller(req); e != 0) return (void)fuse_reply_err(req, e);
  if (::fallocate(file_fd(fi), mode, offset, length) != 0) return (void)fuse_reply_err(req, errno);
  fs.after_setid_notice(ino);
  fuse_reply_err(req, 0);
}

void lseek(fuse_req_t req, fuse_ino_t, off_t off, int whence, fuse_file_info* fi) {
  off_t r = ::lseek(file_fd(fi), off, whence);
  if (r < 0) return (void)fuse_reply_err(req, errno);
  fuse_reply_lseek(req, r);
}

void copy_file_range(fuse_req_t req, fuse_ino_t, off_t off_in, fuse_file_info* fi_in, fuse_ino_t ino_out,
                     off_t off_out, fuse_file_info* fi_out, size_t len, int flags) {
  Filesystem& fs = fs_of(req);
  if (int e = fs.become_caller(req); e != 0) return (void)fuse_reply_err(req, e);
  loff_t in = off_in, out = off_out;
  ssize_t n = ::copy_file_range(file_fd(fi_in), &in, file_fd(fi_out), &out, len, static_cast<unsigned>(flags));
  if (n < 0) return (void)fuse_reply_err(req, errno);
  fs.after_setid_notice(ino_out);
  fuse_reply_write(req, static_cast<size_t>(n));
}

}  // namespace vsymfs::fs::ops
