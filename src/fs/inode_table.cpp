#include "inode_table.hpp"

#include <fcntl.h>
#include <linux/mount.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <cstring>
#include <utility>

#include "identity.hpp"

namespace vsymfs::fs {

namespace {
constexpr std::uint64_t kRootNodeId = 1;  // FUSE_ROOT_ID; this file does not include FUSE

int read_link(int fd, std::string& out) {
  char buf[PATH_MAX];
  ssize_t n = ::readlinkat(fd, "", buf, sizeof buf);
  if (n < 0) return errno;
  if (static_cast<std::size_t>(n) >= sizeof buf) return ENAMETOOLONG;
  out.assign(buf, static_cast<std::size_t>(n));
  return 0;
}

// A directory descriptor on a private clone of the mount `root_fd` is on,
// made read-only and noatime: the kernel updates no atime through a
// read-only mount. The clone is attached nowhere (no one else sees it) and
// goes away with the descriptor. Needs CAP_SYS_ADMIN. -errno on failure.
int open_quiet_clone(int root_fd) {
  const int tree =
      static_cast<int>(::syscall(SYS_open_tree, root_fd, "", OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | AT_EMPTY_PATH));
  if (tree < 0) return -errno;
  struct mount_attr attr {};
  attr.attr_set = MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOATIME;
  attr.attr_clr = MOUNT_ATTR__ATIME;
  if (::syscall(SYS_mount_setattr, tree, "", AT_EMPTY_PATH, &attr, sizeof attr) != 0) {
    int e = errno;
    ::close(tree);
    return -e;
  }
  // open_by_handle_at wants a real (not O_PATH) descriptor on the mount.
  int dir = ::openat(tree, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  int e = errno;
  ::close(tree);
  return dir >= 0 ? dir : -e;
}

}  // namespace

bool LinkText::get(std::uint64_t serial, std::string& out) const {
  std::lock_guard lock(mu_);
  if (!valid_ || serial_ != serial) return false;
  out = text_;
  return true;
}

void LinkText::put(std::uint64_t serial, std::string_view text) {
  std::lock_guard lock(mu_);
  serial_ = serial;
  text_.assign(text);
  valid_ = true;
}

Inode::~Inode() {
  if (handle_len_ > kInlineHandle) delete[] handle_.heap;
}

FdRef& FdRef::operator=(FdRef&& o) noexcept {
  if (this != &o) {
    reset();
    table_ = o.table_;
    inode_ = o.inode_;
    ref_held_ = o.ref_held_;
    fd_ = o.fd_;
    o.table_ = nullptr;
    o.inode_ = o.ref_held_ = nullptr;
    o.fd_ = -1;
  }
  return *this;
}

void FdRef::reset() noexcept {
  if (table_) {
    if (inode_) table_->cache_.release(inode_->slot_);
    if (ref_held_) table_->unref(ref_held_);
  }
  table_ = nullptr;
  inode_ = ref_held_ = nullptr;
  fd_ = -1;
}

Result<std::unique_ptr<InodeTable>> InodeTable::create(const std::string& source, std::size_t fd_budget,
                                                       bool use_handles) {
  int fd = ::open(source.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return make_error(errno, "SOURCE " + source + ": " + std::strerror(errno));
  struct stat st {};
  if (::fstatat(fd, "", &st, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW) != 0) {
    int e = errno;
    ::close(fd);
    return make_error(e, "SOURCE " + source + ": " + std::strerror(e));
  }
  std::unique_ptr<InodeTable> t(new InodeTable(fd_budget, use_handles));
  t->root_ = new Inode(st.st_dev, st.st_ino, st.st_mode & S_IFMT);
  t->root_->refs_ = 1;  // never forgotten
  t->root_->in_map_ = true;
  t->root_fd_ = fd;
  t->root_dev_ = st.st_dev;
  t->map_.insert(t->root_);
  const int quiet = open_quiet_clone(fd);
  if (quiet >= 0)
    t->quiet_fd_ = quiet;
  else
    t->quiet_error_ = -quiet;
  return t;
}

InodeTable::~InodeTable() {
  for (Inode* inode : map_) {
    cache_.drop(inode->slot_);
    if (inode != root_) delete inode;
  }
  delete root_;
  for (auto& [id, fd] : mount_fds_) ::close(fd);
  if (quiet_fd_ >= 0) ::close(quiet_fd_);
  ::close(root_fd_);
}

Inode& InodeTable::from_nodeid(std::uint64_t nodeid) noexcept {
  return nodeid == kRootNodeId ? *root_ : *reinterpret_cast<Inode*>(nodeid);
}

std::uint64_t InodeTable::nodeid(const Inode& inode) const noexcept {
  return &inode == root_ ? kRootNodeId : reinterpret_cast<std::uint64_t>(&inode);
}

std::size_t InodeTable::size() const {
  std::lock_guard lock(mu_);
  return map_.size();
}

void InodeTable::attach_handle(Inode& inode, int fd) {
  // MAX_HANDLE_SZ is 128; ext4/xfs/btrfs/tmpfs need 8-40 bytes. Ask into a
  // buffer of the maximum, keep only the handle's own bytes and type.
  constexpr unsigned kMaxHandle = 128;
  alignas(struct file_handle) std::byte probe[sizeof(struct file_handle) + kMaxHandle];
  auto* fh = reinterpret_cast<struct file_handle*>(probe);
  fh->handle_bytes = kMaxHandle;
  int mount_id = 0;
  if (::name_to_handle_at(fd, "", fh, &mount_id, AT_EMPTY_PATH) != 0) return;  // tracked by name instead
  if (fh->handle_bytes == 0 || fh->handle_bytes > kMaxHandle) return;

  std::lock_guard lock(mount_mu_);
  auto it = mount_fds_.find(mount_id);
  if (it == mount_fds_.end()) {
    // open_by_handle_at wants a real (not O_PATH) descriptor on the same
    // mount. The first inode we meet on a mount nested in SOURCE is its root
    // directory (the walk enters it there); a lone file bind mount has no
    // directory to anchor on and is tracked by name instead.
    if (!inode.is_dir()) return;
    ScopedDaemonIdentity as_daemon;
    int mfd = ::openat(fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (mfd < 0) return;
    it = mount_fds_.emplace(mount_id, mfd).first;
  }
  inode.mount_fd_ = it->second;
  inode.handle_type_ = fh->handle_type;
  std::byte* dst = inode.handle_.inline_bytes;
  if (fh->handle_bytes > Inode::kInlineHandle) dst = inode.handle_.heap = new std::byte[fh->handle_bytes];
  std::memcpy(dst, fh->f_handle, fh->handle_bytes);
  inode.handle_len_ = static_cast<std::uint8_t>(fh->handle_bytes);
}

Inode* InodeTable::find_locked(const struct stat& st) const {
  // Same number, other type: the number was reused and the old inode is stale.
  auto it = map_.find(Key{st.st_dev, st.st_ino});
  return it != map_.end() && (*it)->type_ == (st.st_mode & S_IFMT) ? *it : nullptr;
}

void InodeTable::retrack_locked(Inode& inode, Inode& parent, std::string_view name, std::vector<Inode*>& dead) {
  if (&inode == root_ || !inode.tracked_) return;
  Inode::Tracked& t = *inode.tracked_;
  if (t.parent != &parent) {
    ++parent.refs_;
    if (t.parent) unref_locked(t.parent, dead);
    t.parent = &parent;
  }
  if (t.name != name) t.name.assign(name);
}

Result<Inode*> InodeTable::adopt(Inode& parent, std::string_view name, int fd, const struct stat& st) {
  const Key key{st.st_dev, st.st_ino};
  const mode_t type = st.st_mode & S_IFMT;

  Inode* inode = nullptr;
  {
    std::lock_guard lock(mu_);
    if ((inode = find_locked(st))) ++inode->refs_;
  }
  // A new inode is completed (its file handle: a syscall) outside the lock
  // and published only then, so no other thread ever sees it half made.
  std::unique_ptr<Inode> fresh;
  if (!inode) {
    fresh = std::make_unique<Inode>(st.st_dev, st.st_ino, type);
    if (use_handles_) attach_handle(*fresh, fd);
    if (fresh->is_symlink() || !fresh->has_handle()) fresh->tracked_ = std::make_unique<Inode::Tracked>();
    if (fresh->is_symlink()) fresh->tracked_->link = std::make_unique<LinkText>();
  }

  std::vector<Inode*> dead;
  {
    std::lock_guard lock(mu_);
    if (!inode) {
      if ((inode = find_locked(st))) {
        ++inode->refs_;  // another lookup published it first: ours is dropped
      } else {
        if (auto it = map_.find(key); it != map_.end()) {
          // The inode number was reused for a different file while the
          // kernel still holds the old one: the old entry lives on,
          // unreachable by key, until its forget.
          (*it)->in_map_ = false;
          map_.erase(it);
        }
        inode = fresh.release();
        inode->refs_ = 1;
        inode->in_map_ = true;
        map_.insert(inode);
      }
    }
    retrack_locked(*inode, parent, name, dead);
  }
  destroy(dead);

  if (inode == root_)
    ::close(fd);
  else
    cache_.offer(inode->slot_, fd);
  return inode;
}

bool InodeTable::contains(dev_t dev, ino_t ino) const {
  std::lock_guard lock(mu_);
  return map_.find(Key{dev, ino}) != map_.end();
}

Inode* InodeTable::ref_known(Inode& parent, std::string_view name, const struct stat& st) {
  std::vector<Inode*> dead;
  Inode* inode = nullptr;
  {
    std::lock_guard lock(mu_);
    if (!(inode = find_locked(st))) return nullptr;
    ++inode->refs_;
    retrack_locked(*inode, parent, name, dead);
  }
  destroy(dead);
  return inode;
}

void InodeTable::forget(Inode& inode, std::uint64_t n) {
  if (&inode == root_) return;
  std::vector<Inode*> dead;
  {
    std::lock_guard lock(mu_);
    // Never below zero, whatever the kernel sends.
    std::uint64_t take = n < inode.refs_ ? n : inode.refs_;
    if (take == 0) return;
    inode.refs_ -= take - 1;
    unref_locked(&inode, dead);
  }
  destroy(dead);
}

void InodeTable::unref_locked(Inode* inode, std::vector<Inode*>& dead) {
  // Iterative: dropping a child may drop its parent, and so on up a chain.
  while (inode != nullptr) {
    if (inode == root_) {
      if (inode->refs_ > 1) --inode->refs_;
      return;
    }
    if (inode->refs_ == 0 || --inode->refs_ != 0) return;
    if (inode->in_map_) {
      map_.erase(inode);  // in_map_: the entry under its key is this inode
      inode->in_map_ = false;
    }
    dead.push_back(inode);
    inode = inode->tracked_ ? std::exchange(inode->tracked_->parent, nullptr) : nullptr;
  }
}

void InodeTable::unref(Inode* inode) {
  std::vector<Inode*> dead;
  {
    std::lock_guard lock(mu_);
    unref_locked(inode, dead);
  }
  destroy(dead);
}

void InodeTable::destroy(std::vector<Inode*>& dead) {
  // Outside mu_: nothing can reach these any more (refs_ is 0 and they are
  // out of the map), and the cache has its own lock.
  for (Inode* inode : dead) {
    cache_.drop(inode->slot_);
    delete inode;
  }
}

int InodeTable::reopen(Inode& inode) {
  // As the daemon: open_by_handle_at needs CAP_DAC_READ_SEARCH, which a
  // caller's fsuid clears, and an O_PATH open is not an access by the caller
  // anyway (the kernel checked the caller's permissions before asking us).
  ScopedDaemonIdentity as_daemon;
  if (inode.has_handle()) {
    alignas(struct file_handle) std::byte buf[sizeof(struct file_handle) + 128];
    auto* fh = reinterpret_cast<struct file_handle*>(buf);
    fh->handle_bytes = inode.handle_len_;
    fh->handle_type = inode.handle_type_;
    std::memcpy(fh->f_handle, inode.handle_bytes(), inode.handle_len_);
    int fd = ::open_by_handle_at(inode.mount_fd_, fh, O_PATH | O_NOFOLLOW | O_CLOEXEC);
    return fd >= 0 ? fd : -errno;
  }
  std::string name;
  Inode* parent = nullptr;
  {
    std::lock_guard lock(mu_);
    parent = inode.tracked_ ? inode.tracked_->parent : nullptr;
    if (!parent) return -ESTALE;
    ++parent->refs_;  // keep it while we use it, even if a rename re-parents `inode`
    name = inode.tracked_->name;
  }
  FdRef pfd;
  pfd.table_ = this;
  pfd.ref_held_ = parent;
  if (int e = pin(*parent, pfd); e != 0) return -e;
  int fd = ::openat(pfd.get(), name.c_str(), O_PATH | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0) return errno == ENOENT ? -ESTALE : -errno;
  struct stat st {};
  if (::fstatat(fd, "", &st, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW) != 0 || st.st_dev != inode.dev_ ||
      st.st_ino != inode.ino_) {
    ::close(fd);
    return -ESTALE;
  }
  return fd;
}

int InodeTable::pin(Inode& inode, FdRef& out) {
  if (&inode == root_) {
    out.fd_ = root_fd_;
    return 0;
  }
  int fd = cache_.acquire(inode.slot_);
  if (fd < 0) {
    fd = reopen(inode);
    if (fd < 0) return -fd;
    fd = cache_.insert(inode.slot_, fd);
  }
  out.inode_ = &inode;
  out.fd_ = fd;
  return 0;
}

int InodeTable::fd(Inode& inode, FdRef& out) {
  out.reset();
  out.table_ = this;
  return pin(inode, out);
}

std::uint64_t InodeTable::serial(const Inode& inode, const FdRef& ref) noexcept {
  // Stable while `ref` pins the slot; 0 (never a real serial) for the root
  // and for a reference that pins nothing.
  if (ref.inode_ != &inode) return 0;
  return inode.slot_.serial.load(std::memory_order_relaxed);
}

int InodeTable::parent_fd(Inode& inode, FdRef& out) {
  out.reset();
  Inode* parent = nullptr;
  {
    std::lock_guard lock(mu_);
    parent = inode.tracked_ ? inode.tracked_->parent : nullptr;
    if (!parent) return ENOENT;
    ++parent->refs_;  // a concurrent rename may re-parent `inode` while we use this one
  }
  out.table_ = this;
  out.ref_held_ = parent;
  return pin(*parent, out);
}

std::string InodeTable::tracked_name(const Inode& inode) const {
  std::lock_guard lock(mu_);
  return inode.tracked_ ? inode.tracked_->name : std::string();
}

void InodeTable::moved(Inode& new_parent, std::string_view new_name, const struct stat& st) {
  std::vector<Inode*> dead;
  {
    std::lock_guard lock(mu_);
    auto it = map_.find(Key{st.st_dev, st.st_ino});
    if (it == map_.end()) return;
    Inode* inode = *it;
    if (inode == root_ || !inode->tracked_ || !inode->tracked_->parent) return;  // untracked: its handle still finds it
    Inode::Tracked& t = *inode->tracked_;
    if (t.parent != &new_parent) {
      ++new_parent.refs_;
      unref_locked(t.parent, dead);
      t.parent = &new_parent;
    }
    t.name.assign(new_name);
  }
  destroy(dead);
}

int InodeTable::read_link_quietly(int fd, dev_t dev, ino_t ino, std::string& out) {
  // Only SOURCE's own filesystem decodes on the clone; a filesystem mounted
  // inside SOURCE is not part of it.
  if (quiet_fd_ < 0 || dev != root_dev_) return read_link(fd, out);
  alignas(struct file_handle) std::byte buf[sizeof(struct file_handle) + MAX_HANDLE_SZ];
  auto* fh = reinterpret_cast<struct file_handle*>(buf);
  fh->handle_bytes = MAX_HANDLE_SZ;
  int mount_id = 0;
  if (::name_to_handle_at(fd, "", fh, &mount_id, AT_EMPTY_PATH) != 0) return read_link(fd, out);
  int qfd = -1;
  {
    // open_by_handle_at needs CAP_DAC_READ_SEARCH, which a caller's fsuid
    // clears; the text only gives the caller a length it may already lstat.
    ScopedDaemonIdentity as_daemon;
    qfd = ::open_by_handle_at(quiet_fd_, fh, O_PATH | O_NOFOLLOW | O_CLOEXEC);
  }
  if (qfd < 0) return read_link(fd, out);
  // The same file (a handle names one inode of one filesystem; checked all
  // the same, it costs a syscall per link, not per stat).
  struct stat st {};
  const bool same =
      ::fstatat(qfd, "", &st, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW) == 0 && st.st_dev == dev && st.st_ino == ino;
  const int e = read_link(same ? qfd : fd, out);
  ::close(qfd);
  return e;
}

std::vector<std::uint64_t> InodeTable::symlink_nodeids() const {
  std::vector<std::uint64_t> ids;
  std::lock_guard lock(mu_);
  for (const Inode* inode : map_)
    if (inode->is_symlink()) ids.push_back(reinterpret_cast<std::uint64_t>(inode));
  return ids;
}

}  // namespace vsymfs::fs
