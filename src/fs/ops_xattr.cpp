// Extended attributes, passed through, plus two virtual read-only ones
// (vsymfs(8), EXTENDED ATTRIBUTES):
//   security.vsymfs.raw      on a symlink: its raw (unexpanded) text
//   security.vsymfs.control  on any inode: this mount's control socket path
// They are in security.* because the kernel refuses user.* on symlinks and
// lets anyone read security.* (writing it needs CAP_SYS_ADMIN). They are not
// listed by listxattr, so copying tools do not carry them along.
#include <fcntl.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <memory>
#include <string>
#include <string_view>

#include "control/paths.hpp"
#include "fs/ops.hpp"

namespace vsymfs::fs::ops {

namespace {

bool is_virtual(std::string_view name) { return name == control::kXattrRaw || name == control::kXattrControl; }

bool is_acl(std::string_view name) { return name == "system.posix_acl_access" || name == "system.posix_acl_default"; }

// The error for a getxattr that failed. When the kernel enforces ACLs it asks
// for them before permission checks, and takes any answer but "no such
// attribute" as a failed check: a file on a filesystem without ACLs (or
// mounted noacl) inside SOURCE would refuse every access. Such a file has no
// ACL, so that is what the kernel hears.
int getxattr_error(const Filesystem& fs, std::string_view name, int err) {
  if (err == EOPNOTSUPP && fs.kernel_enforces_acls() && is_acl(name)) return ENODATA;
  return err;
}

// getxattr's size protocol: 0 asks for the length, too small is ERANGE.
void reply_value(fuse_req_t req, std::string_view value, size_t size) {
  if (size == 0) return (void)fuse_reply_xattr(req, value.size());
  if (size < value.size()) return (void)fuse_reply_err(req, ERANGE);
  fuse_reply_buf(req, value.data(), value.size());
}

}  // namespace

void setxattr(fuse_req_t req, fuse_ino_t ino, const char* name, const char* value, size_t size, int flags) {
  Filesystem& fs = fs_of(req);
  if (is_virtual(name)) return (void)fuse_reply_err(req, EPERM);
  if (int e = fs.become_caller(req); e != 0) return (void)fuse_reply_err(req, e);
  FdRef fd;
  if (int e = fs.inodes().fd(fs.inode(ino), fd); e != 0) return (void)fuse_reply_err(req, e);
  if (::setxattr(ProcFdPath(fd.get()).c_str(), name, value, size, flags) != 0)
    return (void)fuse_reply_err(req, errno);
  // An access ACL sets the mode's permission bits in SOURCE (its owner,
  // group-or-mask and other entries); the kernel does not know that and
  // would show the old mode until attr_timeout.
  if (std::string_view(name) == "system.posix_acl_access") fs.invalidate_attributes(ino);
  fuse_reply_err(req, 0);
}

void getxattr(fuse_req_t req, fuse_ino_t ino, const char* name, size_t size) {
  Filesystem& fs = fs_of(req);
  Inode& inode = fs.inode(ino);
  if (name == control::kXattrControl) {
    if (fs.control_socket().empty()) return (void)fuse_reply_err(req, ENODATA);
    return reply_value(req, fs.control_socket(), size);
  }
  if (int e = fs.become_caller(req); e != 0) return (void)fuse_reply_err(req, e);
  FdRef fd;
  if (int e = fs.inodes().fd(inode, fd); e != 0) return (void)fuse_reply_err(req, e);
  if (name == control::kXattrRaw) {
    if (!inode.is_symlink()) return (void)fuse_reply_err(req, ENODATA);
    std::string raw;
    // Like lstat, reading the raw text leaves the link's atime alone.
    if (int e = fs.raw_link_text(inode, fd, raw); e != 0) return (void)fuse_reply_err(req, e);
    return reply_value(req, raw, size);
  }
  const ProcFdPath path(fd.get());
  if (size == 0) {
    ssize_t n = ::getxattr(path.c_str(), name, nullptr, 0);
    if (n < 0) return (void)fuse_reply_err(req, getxattr_error(fs, name, errno));
    return (void)fuse_reply_xattr(req, static_cast<size_t>(n));
  }
  auto buf = std::make_unique<char[]>(size);
  ssize_t n = ::getxattr(path.c_str(), name, buf.get(), size);
  if (n < 0) return (void)fuse_reply_err(req, getxattr_error(fs, name, errno));
  fuse_reply_buf(req, buf.get(), static_cast<size_t>(n));
}

namespace {

// The names of `path` without trusted.* ones: those are for CAP_SYS_ADMIN
// only, and the kernel checks a get or set of one against the caller but
// leaves listing to the filesystem, whose check (ours) sees the daemon's
// capabilities. Callers other than uid 0 do not see them, as natively
// (uid 0 stands for the capability). 0 or an errno.
int list_without_trusted(const char* path, std::string& out) {
  for (int tries = 0; tries < 4; ++tries) {
    ssize_t n = ::listxattr(path, nullptr, 0);
    if (n < 0) return errno;
    std::string all(static_cast<size_t>(n), '\0');
    n = ::listxattr(path, all.data(), all.size());
    if (n < 0 && errno == ERANGE) continue;  // grew in between
    if (n < 0) return errno;
    all.resize(static_cast<size_t>(n));
    out.clear();
    for (size_t at = 0; at < all.size();) {
      const size_t end = all.find('\0', at);
      const std::string_view name(all.data() + at, (end == std::string::npos ? all.size() : end) - at);
      if (name.substr(0, 8) != "trusted.") (out += name) += '\0';
      at = end == std::string::npos ? all.size() : end + 1;
    }
    return 0;
  }
  return ERANGE;
}

}  // namespace

void listxattr(fuse_req_t req, fuse_ino_t ino, size_t size) {
  Filesystem& fs = fs_of(req);
  if (int e = fs.become_caller(req); e != 0) return (void)fuse_reply_err(req, e);
  FdRef fd;
  if (int e = fs.inodes().fd(fs.inode(ino), fd); e != 0) return (void)fuse_reply_err(req, e);
  const ProcFdPath path(fd.get());
  if (fuse_req_ctx(req)->uid != 0) {
    std::string names;
    if (int e = list_without_trusted(path.c_str(), names); e != 0) return (void)fuse_reply_err(req, e);
    return reply_value(req, names, size);
  }
  if (size == 0) {
    ssize_t n = ::listxattr(path.c_str(), nullptr, 0);
    if (n < 0) return (void)fuse_reply_err(req, errno);
    return (void)fuse_reply_xattr(req, static_cast<size_t>(n));
  }
  auto buf = std::make_unique<char[]>(size);
  ssize_t n = ::listxattr(path.c_str(), buf.get(), size);
  if (n < 0) return (void)fuse_reply_err(req, errno);
  fuse_reply_buf(req, buf.get(), static_cast<size_t>(n));
}

void removexattr(fuse_req_t req, fuse_ino_t ino, const char* name) {
  Filesystem& fs = fs_of(req);
  if (is_virtual(name)) return (void)fuse_reply_err(req, EPERM);
  if (int e = fs.become_caller(req); e != 0) return (void)fuse_reply_err(req, e);
  FdRef fd;
  if (int e = fs.inodes().fd(fs.inode(ino), fd); e != 0) return (void)fuse_reply_err(req, e);
  fuse_reply_err(req, ::removexattr(ProcFdPath(fd.get()).c_str(), name) == 0 ? 0 : errno);
}

}  // namespace vsymfs::fs::ops
