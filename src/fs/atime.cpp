#include "fs/atime.hpp"

#include <fcntl.h>
#include <linux/mount.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "daemon/identity.hpp"

namespace vsymfs::fs {

Result<QuietAtime> QuietAtime::open(const std::string& source) {
  UniqueFd root(::open(source.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
  if (!root) return make_error(errno, "open " + source + ": " + std::strerror(errno));
  UniqueFd tree(
      static_cast<int>(::syscall(SYS_open_tree, root.get(), "", OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | AT_EMPTY_PATH)));
  int e = errno;
  root.reset();
  if (!tree) return make_error(e, std::string("open_tree: ") + std::strerror(e));
  struct mount_attr attr {};
  attr.attr_set = MOUNT_ATTR_NOATIME;
  attr.attr_clr = MOUNT_ATTR__ATIME;
  if (::syscall(SYS_mount_setattr, tree.get(), "", AT_EMPTY_PATH, &attr, sizeof attr) != 0) {
    e = errno;
    tree.reset();
    return make_error(e, std::string("mount_setattr: ") + std::strerror(e));
  }
  // open_by_handle_at wants a real (not O_PATH) descriptor on the mount.
  UniqueFd dir(::openat(tree.get(), ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  e = errno;
  tree.reset();
  if (!dir) return make_error(e, std::string("open the clone: ") + std::strerror(e));
  struct stat st {};
  ::fstat(dir.get(), &st);
  return QuietAtime(std::move(dir), st.st_dev);
}

QuietAtime::~QuietAtime() = default;

int QuietAtime::reopen(int fd, int flags) const {
  struct stat st {};
  if (::fstat(fd, &st) != 0 || st.st_dev != dev_) return -1;
  union {
    file_handle fh;
    char buf[sizeof(file_handle) + MAX_HANDLE_SZ];
  } h{};
  h.fh.handle_bytes = MAX_HANDLE_SZ;
  int mount_id = 0;
  if (::name_to_handle_at(fd, "", &h.fh, &mount_id, AT_EMPTY_PATH) != 0) return -1;
  // open_by_handle_at needs CAP_DAC_READ_SEARCH, which a caller's fsuid
  // clears; the caller's own open has checked the permissions.
  daemon::ScopedDaemonIdentity as_daemon;
  return ::open_by_handle_at(root_fd_.get(), &h.fh, (flags & ~(O_CREAT | O_EXCL | O_TRUNC | O_NOFOLLOW)) | O_CLOEXEC);
}

}  // namespace vsymfs::fs
