// Names and attributes: init, lookup, forget, getattr, setattr, readlink,
// access, statfs.
#include <fcntl.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <cerrno>
#include <string>
#include <string_view>

#include <spdlog/spdlog.h>

#include "daemon/identity.hpp"
#include "fs/ops.hpp"
#include "vsymfs/link_template.hpp"

namespace vsymfs::fs::ops {

void init(void* userdata, fuse_conn_info* conn) {
  auto& fs = *static_cast<Filesystem*>(userdata);
  if (conn->capable & FUSE_CAP_PARALLEL_DIROPS) conn->want |= FUSE_CAP_PARALLEL_DIROPS;
  // Writeback caching would make writes arrive with no caller (pid 0) and
  // have the kernel turn O_APPEND into offsets; keep every write the caller's.
  conn->want &= ~FUSE_CAP_WRITEBACK_CACHE;
  // Writes, truncates and chowns run as the caller, so the source
  // filesystem clears set-user-ID bits exactly as it would natively; the
  // kernel need not send a separate (and, as the caller, refused) chmod.
  if (!fs.config().single_user && (conn->capable & FUSE_CAP_HANDLE_KILLPRIV)) conn->want |= FUSE_CAP_HANDLE_KILLPRIV;
  // Symlink bodies cached by the kernel are served to every caller, so only
  // when the rules make every expansion the same for all of them. Decided
  // once: the kernel cannot switch it off later (vsymfs(8)).
  const bool cache_links = fs.state().rules()->kernel_may_cache_symlinks() && (conn->capable & FUSE_CAP_CACHE_SYMLINKS);
  if (cache_links) conn->want |= FUSE_CAP_CACHE_SYMLINKS;
  fs.set_kernel_caches_symlinks(cache_links);
  // Cached file pages are dropped when SOURCE changed them behind our back
  // (seen as a new mtime or size): open() keeps the cache otherwise.
  if (conn->capable & FUSE_CAP_AUTO_INVAL_DATA) conn->want |= FUSE_CAP_AUTO_INVAL_DATA;
  // With default_permissions alone the kernel checks mode bits only, and
  // refuses what only an ACL on SOURCE grants (a named user's read on a 0600
  // file). With FUSE_POSIX_ACL (-o acl) it reads ACLs through getxattr,
  // caches them with the attributes and checks them as SOURCE would; SOURCE
  // itself keeps the mode in sync and applies default ACLs to what is
  // created. Not the default: the kernel makes the root inode before INIT
  // and never caches its ACL, so every path walk through the root by a
  // caller who does not own it costs a GETXATTR round trip (vsymfs(8)).
  const bool acls = fs.config().posix_acl && (conn->capable & FUSE_CAP_POSIX_ACL);
  if (acls) conn->want |= FUSE_CAP_POSIX_ACL;
  fs.set_kernel_enforces_acls(acls);
  // The caller's umask comes with each create, mkdir and mknod, and the
  // worker makes it the one SOURCE applies (Filesystem::creation_mode):
  // natively a default ACL replaces the umask, which the kernel cannot know.
  if (conn->capable & FUSE_CAP_DONT_MASK) conn->want |= FUSE_CAP_DONT_MASK;
  // 1 MiB writes: libfuse 3.14's request buffer holds that many pages.
  conn->max_write = 1u << 20;
  spdlog::info("kernel protocol {}.{}, symlink caching {}, POSIX ACLs {}", conn->proto_major, conn->proto_minor,
               cache_links ? "on" : "off", acls ? "enforced" : "not enforced (mode bits only)");
  fs.note_initialized();
}

namespace {

// SOURCE's filesystem is gone (ENOTCONN: a FUSE client such as GlusterFS's
// died). Once it is mounted again the inode table opens it anew; until
// then callers get ENOTCONN, and the daemon keeps serving.
bool source_came_back(Filesystem& fs, int err) { return err == ENOTCONN && fs.inodes().reopen_source(); }

}  // namespace

void lookup(fuse_req_t req, fuse_ino_t parent_ino, const char* name) {
  Filesystem& fs = fs_of(req);
  Inode& parent = fs.inode(parent_ino);
  // An @sys name that does not exist literally takes its candidates from
  // the caller's full context: fetched once, with the identity.
  const daemon::LinkNeeds want = vsymfs::is_sys_component(name) ? daemon::LinkNeeds::Process : daemon::LinkNeeds::Host;
  if (int e = fs.become_caller(req, want); e != 0) return (void)fuse_reply_err(req, e);
  FdRef pfd;
  fuse_entry_param e;
  int err = fs.inodes().fd(parent, pfd);
  if (err == 0) err = fs.lookup(req, parent, pfd.get(), name, e, true, true);
  if (source_came_back(fs, err)) {
    pfd.reset();
    err = fs.inodes().fd(parent, pfd);
    if (err == 0) err = fs.lookup(req, parent, pfd.get(), name, e, true, true);
  }
  const bool sys_name = vsymfs::is_sys_component(name);  // absent for one caller, not all
  if (err == ENOENT && fs.config().negative_timeout > 0 && !sys_name) {
    // ino 0: the kernel remembers the absence for entry_timeout.
    e = {};
    e.entry_timeout = fs.config().negative_timeout;
    fuse_reply_entry(req, &e);
    return;
  }
  if (err != 0) return (void)fuse_reply_err(req, err);
  fuse_reply_entry(req, &e);
}

void forget(fuse_req_t req, fuse_ino_t ino, uint64_t nlookup) {
  Filesystem& fs = fs_of(req);
  fs.inodes().forget(fs.inode(ino), nlookup);
  fuse_reply_none(req);
}

void forget_multi(fuse_req_t req, size_t count, fuse_forget_data* forgets) {
  Filesystem& fs = fs_of(req);
  for (size_t i = 0; i < count; ++i) fs.inodes().forget(fs.inode(forgets[i].ino), forgets[i].nlookup);
  fuse_reply_none(req);
}

void getattr(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
  Filesystem& fs = fs_of(req);
  Inode& inode = fs.inode(ino);
  struct stat st {};
  if (fi != nullptr && S_ISREG(inode.type())) {
    // An open file: its descriptor works even after the name is gone.
    if (::fstat(static_cast<int>(fi->fh), &st) != 0) return (void)fuse_reply_err(req, errno);
    fuse_reply_attr(req, &st, fs.attr_timeout_for(inode));
    return;
  }
  if (inode.is_symlink()) {
    // The expansion (and its @sys probes) runs as the caller.
    if (int e = fs.become_caller(req, Filesystem::link_needs(inode)); e != 0) return (void)fuse_reply_err(req, e);
  }
  FdRef fd;
  int err = fs.inodes().fd(inode, fd);
  if (err == 0) err = fs.stat_inode(req, inode, fd, st);
  if (source_came_back(fs, err)) {
    fd.reset();
    err = fs.inodes().fd(inode, fd);
    if (err == 0) err = fs.stat_inode(req, inode, fd, st);
  }
  if (err != 0) return (void)fuse_reply_err(req, err);
  fuse_reply_attr(req, &st, fs.attr_timeout_for(inode));
}

namespace {

int set_times(int path_fd, int open_fd, const struct stat& attr, int to_set) {
  struct timespec tv[2];
  tv[0].tv_sec = tv[1].tv_sec = 0;
  tv[0].tv_nsec = tv[1].tv_nsec = UTIME_OMIT;
  if (to_set & FUSE_SET_ATTR_ATIME_NOW) tv[0].tv_nsec = UTIME_NOW;
  else if (to_set & FUSE_SET_ATTR_ATIME) tv[0] = attr.st_atim;
  if (to_set & FUSE_SET_ATTR_MTIME_NOW) tv[1].tv_nsec = UTIME_NOW;
  else if (to_set & FUSE_SET_ATTR_MTIME) tv[1] = attr.st_mtim;
  int r = open_fd >= 0 ? ::futimens(open_fd, tv) : ::utimensat(path_fd, "", tv, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW);
  return r == 0 ? 0 : errno;
}

bool only_drops_setid(int fd, mode_t wanted) {
  struct stat st {};
  if (::fstatat(fd, "", &st, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW) != 0) return false;
  const mode_t now = st.st_mode & 07777;
  wanted &= 07777;
  return wanted != now && (now & ~static_cast<mode_t>(S_ISUID | S_ISGID)) == (wanted & ~static_cast<mode_t>(S_ISUID | S_ISGID)) &&
         (wanted & ~now) == 0;
}

}  // namespace

void setattr(fuse_req_t req, fuse_ino_t ino, struct stat* attr, int to_set, fuse_file_info* fi) {
  Filesystem& fs = fs_of(req);
  Inode& inode = fs.inode(ino);
  // A symlink's attributes end with its expansion (stat_inode).
  if (int e = fs.become_caller(req, Filesystem::link_needs(inode)); e != 0) return (void)fuse_reply_err(req, e);
  FdRef fd;
  if (int e = fs.inodes().fd(inode, fd); e != 0) return (void)fuse_reply_err(req, e);
  // fi comes with ftruncate of an open regular file (fi->fh of a directory
  // would be a DirHandle, not a descriptor).
  const int open_fd = fi != nullptr && S_ISREG(inode.type()) ? static_cast<int>(fi->fh) : -1;
  // O_PATH descriptors refuse fchmod/ftruncate: those go through /proc/self/fd.
  const ProcFdPath path(fd.get());

  if (to_set & FUSE_SET_ATTR_MODE) {
    // Symlinks have no mode of their own on Linux.
    if (inode.is_symlink()) return (void)fuse_reply_err(req, EOPNOTSUPP);
    int r = open_fd >= 0 ? ::fchmod(open_fd, attr->st_mode) : ::fchmodat(path.dir(), path.name(), attr->st_mode, 0);
    if (r != 0 && errno == EPERM && only_drops_setid(fd.get(), attr->st_mode)) {
      // The kernel clears set-id bits on behalf of a writer who does not own
      // the file; natively that needs no permission, so neither does it here.
      daemon::ScopedDaemonIdentity as_daemon;
      r = ::fchmodat(path.dir(), path.name(), attr->st_mode, 0);
    }
    if (r != 0) return (void)fuse_reply_err(req, errno);
  }
  if (to_set & (FUSE_SET_ATTR_UID | FUSE_SET_ATTR_GID)) {
    uid_t uid = (to_set & FUSE_SET_ATTR_UID) ? attr->st_uid : static_cast<uid_t>(-1);
    gid_t gid = (to_set & FUSE_SET_ATTR_GID) ? attr->st_gid : static_cast<gid_t>(-1);
    if (::fchownat(fd.get(), "", uid, gid, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW) != 0)
      return (void)fuse_reply_err(req, errno);
  }
  if (to_set & FUSE_SET_ATTR_SIZE) {
    int r = open_fd >= 0 ? ::ftruncate(open_fd, attr->st_size) : ::truncate(path.c_str(), attr->st_size);
    if (r != 0) return (void)fuse_reply_err(req, errno);
  }
  if (to_set & (FUSE_SET_ATTR_ATIME | FUSE_SET_ATTR_MTIME | FUSE_SET_ATTR_ATIME_NOW | FUSE_SET_ATTR_MTIME_NOW)) {
    if (int e = set_times(fd.get(), open_fd, *attr, to_set); e != 0) return (void)fuse_reply_err(req, e);
  }
  constexpr int kChanges = FUSE_SET_ATTR_MODE | FUSE_SET_ATTR_UID | FUSE_SET_ATTR_GID | FUSE_SET_ATTR_SIZE |
                           FUSE_SET_ATTR_ATIME | FUSE_SET_ATTR_MTIME | FUSE_SET_ATTR_ATIME_NOW |
                           FUSE_SET_ATTR_MTIME_NOW;
  if ((to_set & kChanges) == 0) {
    // An empty SETATTR is chown(-1, -1), which natively changes the ctime
    // (the kernel sends the ctime only with a writeback cache): the same
    // call on SOURCE, as the caller, does that. The kernel sends the same
    // empty SETATTR ahead of a write or truncate that must clear a set-id
    // bit the caller may not clear by chmod; that write, run as the
    // caller, then clears it as natively, so a refusal here is no error
    // (the one difference left: vsymfs(8), POSIX PARITY).
    const auto keep_uid = static_cast<uid_t>(-1);
    const auto keep_gid = static_cast<gid_t>(-1);
    if (::fchownat(fd.get(), "", keep_uid, keep_gid, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW) != 0) {
      const int err = errno;
      struct stat now {};
      const bool setid_file = ::fstatat(fd.get(), "", &now, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW) == 0 &&
                              S_ISREG(now.st_mode) && (now.st_mode & (S_ISUID | S_ISGID)) != 0;
      if (!(err == EPERM && setid_file)) return (void)fuse_reply_err(req, err);
    }
  }
  // Every SETATTR changes the ctime, after which a read of a link may stamp
  // its atime again (relatime): READLINK reads it once more.
  if (LinkText* t = inode.link_text()) t->drop_kept();
  struct stat st {};
  if (int e = fs.stat_inode(req, inode, fd, st); e != 0) return (void)fuse_reply_err(req, e);
  // The kernel's notice ahead of a write, fallocate or copy that clears
  // set-id bits is an empty SETATTR or a chmod (Filesystem::note_setid_notice).
  if ((to_set & kChanges & ~FUSE_SET_ATTR_MODE) == 0 && S_ISREG(st.st_mode) && (st.st_mode & (S_ISUID | S_ISGID)))
    fs.note_setid_notice(ino);
  fuse_reply_attr(req, &st, fs.attr_timeout_for(inode));
}

void readlink(fuse_req_t req, fuse_ino_t ino) {
  // Mostly answered before libfuse sees it (direct_replies.hpp); the same
  // code either way.
  Filesystem& fs = fs_of(req);
  thread_local std::string expansion;
  if (int e = fs.readlink(request_from(req), fs.inode(ino), expansion); e != 0) return (void)fuse_reply_err(req, e);
  fuse_reply_readlink(req, expansion.c_str());
}

void access(fuse_req_t req, fuse_ino_t ino, int mask) {
  Filesystem& fs = fs_of(req);
  if (int e = fs.become_caller(req); e != 0) return (void)fuse_reply_err(req, e);
  FdRef fd;
  if (int e = fs.inodes().fd(fs.inode(ino), fd); e != 0) return (void)fuse_reply_err(req, e);
  // AT_EACCESS: check with the fs ids we switched to, not the daemon's real ids.
  const ProcFdPath path(fd.get());
  int r = ::faccessat(path.dir(), path.name(), mask, AT_EACCESS);
  fuse_reply_err(req, r == 0 ? 0 : errno);
}

void statfs(fuse_req_t req, fuse_ino_t ino) {
  Filesystem& fs = fs_of(req);
  FdRef fd;
  if (int e = fs.inodes().fd(fs.inode(ino), fd); e != 0) return (void)fuse_reply_err(req, e);
  struct statvfs sv {};
  if (::fstatvfs(fd.get(), &sv) != 0) return (void)fuse_reply_err(req, errno);
  fuse_reply_statfs(req, &sv);
}

}  // namespace vsymfs::fs::ops
