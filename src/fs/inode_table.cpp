#include "fs/inode_table.hpp"

#include <fcntl.h>
#include <linux/mount.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/statvfs.h>
#include <sys/vfs.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <climits>
#include <cstdio>
#include <cstring>
#include <utility>

#include <spdlog/spdlog.h>

#include "daemon/identity.hpp"
#include "vsymfs/unique_fd.hpp"

namespace vsymfs::fs {

namespace {
constexpr std::uint64_t kRootNodeId = 1;  // FUSE_ROOT_ID; this file does not include FUSE

struct FsKind {
  unsigned long f_type;
  std::string_view name;
  // Empty: its handles outlive the kernel's cache. Else why they do not.
  std::string_view no_lasting_handles;
};

// statfs(2) f_type values (linux/magic.h and the filesystems' own headers).
constexpr std::string_view kFuseWhy =
    "a FUSE filesystem decodes a file handle only while the inode is in the kernel's cache, unless its server "
    "has export support, which the kernel does not report";
constexpr std::string_view kSmbWhy = "an SMB client's file handles do not outlive the inode in the kernel's cache";
constexpr std::array<FsKind, 19> kKinds{{
    {0x65735546, "FUSE", kFuseWhy},
    {0xFF534D42, "CIFS", kSmbWhy},
    {0xFE534D42, "SMB2", kSmbWhy},
    {0x517B, "SMB", kSmbWhy},
    {0x01021997, "9p", "a 9p client gives no file handles"},
    {0x6B414653, "AFS", "an AFS client gives no lasting file handles"},
    {0x6969, "NFS", ""},
    {0x00C36400, "Ceph", ""},
    {0x0BD00BD0, "Lustre", ""},
    {0x47504653, "GPFS", ""},
    {0xEF53, "ext2/3/4", ""},
    {0x58465342, "xfs", ""},
    {0x9123683E, "btrfs", ""},
    {0x01021994, "tmpfs", ""},
    {0x794C7630, "overlayfs", ""},
    {0x2FC12FC1, "zfs", ""},
    {0xF2F52010, "f2fs", ""},
    {0x5346544E, "ntfs", ""},
    {0x4D44, "vfat", ""},
}};

const FsKind* kind_of(unsigned long f_type) {
  for (const FsKind& k : kKinds)
    if (k.f_type == f_type) return &k;
  return nullptr;
}

unsigned long statfs_type(int fd) {
  struct statfs sfs {};
  return ::fstatfs(fd, &sfs) == 0 ? static_cast<unsigned long>(sfs.f_type) : 0;
}

// Makes a handle for `fd` (a directory) and opens it again right away: ""
// when that gives the same file, else why not. As the daemon.
std::string probe_handles(int fd) {
  daemon::ScopedDaemonIdentity as_daemon;
  alignas(struct file_handle) std::byte buf[sizeof(struct file_handle) + 128];
  auto* fh = reinterpret_cast<struct file_handle*>(buf);
  fh->handle_bytes = 128;
  int mount_id = 0;
  if (::name_to_handle_at(fd, "", fh, &mount_id, AT_EMPTY_PATH) != 0)
    return std::string("name_to_handle_at: ") + std::strerror(errno);
  const int dir = ::openat(fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dir < 0) return std::string("cannot open it: ") + std::strerror(errno);
  const int again = ::open_by_handle_at(dir, fh, O_PATH | O_CLOEXEC);
  const int e = errno;
  UniqueFd(dir).reset();
  if (again < 0) return std::string("open_by_handle_at: ") + std::strerror(e);
  struct stat a {}, b {};
  const bool same = ::fstat(fd, &a) == 0 && ::fstat(again, &b) == 0 && a.st_dev == b.st_dev && a.st_ino == b.st_ino;
  UniqueFd(again).reset();
  return same ? std::string() : "open_by_handle_at gave another file";
}

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
    UniqueFd(tree).reset();
    return -e;
  }
  // open_by_handle_at wants a real (not O_PATH) descriptor on the mount.
  int dir = ::openat(tree, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  int e = errno;
  UniqueFd(tree).reset();
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

bool LinkText::kept(std::uint64_t serial, std::int64_t now_ns, std::string& out) const noexcept {
  // A sequence lock's reader: nothing written, so readers on every CPU share
  // the line. A torn read shows as a changed count and is not used.
  const std::uint32_t seq = kept_seq_.load(std::memory_order_acquire);
  if ((seq & 1) != 0 || serial == 0 || kept_serial_.load(std::memory_order_relaxed) != serial ||
      now_ns >= kept_until_.load(std::memory_order_relaxed))
    return false;
  const std::uint32_t len = kept_len_.load(std::memory_order_relaxed);
  if (len > kKeptBytes) return false;
  std::array<std::uint64_t, kKeptBytes / 8> words;
  for (std::size_t i = 0; i < (len + 7) / 8; ++i) words[i] = kept_words_[i].load(std::memory_order_relaxed);
  std::atomic_thread_fence(std::memory_order_acquire);
  if (kept_seq_.load(std::memory_order_relaxed) != seq) return false;
  out.assign(reinterpret_cast<const char*>(words.data()), len);
  return true;
}

void LinkText::keep(std::uint64_t serial, std::int64_t until_ns, std::string_view text) noexcept {
  if (!keepable_ || text.size() > kKeptBytes) return;
  std::lock_guard lock(mu_);
  const std::uint32_t seq = kept_seq_.load(std::memory_order_relaxed);
  kept_seq_.store(seq + 1, std::memory_order_relaxed);
  std::atomic_thread_fence(std::memory_order_release);
  kept_serial_.store(serial, std::memory_order_relaxed);
  kept_until_.store(until_ns, std::memory_order_relaxed);
  kept_len_.store(static_cast<std::uint32_t>(text.size()), std::memory_order_relaxed);
  for (std::size_t i = 0; i < (text.size() + 7) / 8; ++i) {
    std::uint64_t w = 0;
    std::memcpy(&w, text.data() + i * 8, std::min<std::size_t>(8, text.size() - i * 8));
    kept_words_[i].store(w, std::memory_order_relaxed);
  }
  kept_seq_.store(seq + 2, std::memory_order_release);
}

void LinkText::drop_kept() noexcept {
  if (!keepable_) return;
  std::lock_guard lock(mu_);
  const std::uint32_t seq = kept_seq_.load(std::memory_order_relaxed);
  kept_seq_.store(seq + 1, std::memory_order_relaxed);
  std::atomic_thread_fence(std::memory_order_release);
  kept_serial_.store(0, std::memory_order_relaxed);
  kept_seq_.store(seq + 2, std::memory_order_release);
}

LinkKeeping link_keeping(unsigned long f_type, unsigned long f_flags) noexcept {
  // Local filesystems: a link's text is written when it is made and never
  // again; whatever replaces it is another inode, which an open descriptor
  // (the kept text's key) tells apart. A network or FUSE filesystem may
  // answer a new text for the same inode (a path-based server, another
  // client's change) and is read every time.
  switch (f_type) {
    case 0xEF53:      // ext2/3/4
    case 0x58465342:  // xfs
    case 0x9123683E:  // btrfs
    case 0x01021994:  // tmpfs
    case 0x2FC12FC1:  // zfs
    case 0xF2F52010:  // f2fs
      break;
    default:
      return LinkKeeping::Never;
  }
  if ((f_flags & (ST_NOATIME | ST_RDONLY)) != 0) return LinkKeeping::Always;
  if ((f_flags & ST_RELATIME) != 0) return LinkKeeping::Relatime;
  return LinkKeeping::Never;  // strictatime: every read stamps the atime
}

std::string fs_type_name(unsigned long f_type) {
  char hex[32];
  std::snprintf(hex, sizeof hex, "0x%lx", f_type);
  const FsKind* k = kind_of(f_type);
  return k ? std::string(k->name) + " (f_type " + hex + ")" : std::string("f_type ") + hex;
}

HandleDecision decide_handles(HandleChoice choice, bool can_open, unsigned long f_type, std::string_view probe_error) {
  if (choice == HandleChoice::Off) return {false, "-o no_handles"};
  if (!can_open) return {false, "the daemon is not root (open_by_handle_at needs CAP_DAC_READ_SEARCH)"};
  const std::string type = fs_type_name(f_type);
  if (!probe_error.empty()) {
    return {false, "SOURCE is " + type + " and gives no usable file handles: " + std::string(probe_error) +
                       (choice == HandleChoice::On ? " (-o handles asked for them)" : "")};
  }
  if (choice == HandleChoice::On) return {true, "-o handles; SOURCE is " + type};
  const FsKind* k = kind_of(f_type);
  if (k != nullptr && !k->no_lasting_handles.empty()) {
    return {false, "SOURCE is " + type + ": " + std::string(k->no_lasting_handles) + " (-o handles to use them anyway)"};
  }
  return {true, "SOURCE is " + type + " and a file handle opened the same directory again"};
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
    if (inode_ && table_->cache_.release(inode_->slot_)) table_->free_retired(inode_);
    if (ref_held_) table_->unref(ref_held_);
  }
  table_ = nullptr;
  inode_ = ref_held_ = nullptr;
  fd_ = -1;
}

Result<std::unique_ptr<InodeTable>> InodeTable::create(const std::string& source, const Options& options) {
  int fd = ::open(source.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return make_error(errno, "SOURCE " + source + ": " + std::strerror(errno));
  struct stat st {};
  if (::fstatat(fd, "", &st, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW) != 0) {
    int e = errno;
    UniqueFd(fd).reset();
    return make_error(e, "SOURCE " + source + ": " + std::strerror(e));
  }
  std::unique_ptr<InodeTable> t(new InodeTable(source, options));
  const bool try_handles = options.handles != HandleChoice::Off && options.can_open_handles;
  t->handles_ = decide_handles(options.handles, options.can_open_handles, statfs_type(fd),
                               try_handles ? probe_handles(fd) : std::string());
  if (struct statfs sfs {}; ::fstatfs(fd, &sfs) == 0)
    t->link_keeping_ = fs::link_keeping(static_cast<unsigned long>(sfs.f_type), static_cast<unsigned long>(sfs.f_flags));
  t->root_ = new Inode(st.st_dev, st.st_ino, st.st_mode & S_IFMT);
  t->root_->refs_ = 1;  // never forgotten
  t->root_->in_map_ = true;
  t->root_fd_.store(fd);
  t->source_dev_ = st.st_dev;
  t->map_.insert(t->root_);
  const int quiet = open_quiet_clone(fd);
  if (quiet >= 0) {
    t->quiet_fd_ = quiet;
    t->quiet_dev_ = st.st_dev;
  } else {
    t->quiet_error_ = -quiet;
  }
  return t;
}

InodeTable::~InodeTable() {
  for (Inode* inode : map_) {
    cache_.drop(inode->slot_);
    if (inode != root_) delete inode;
  }
  delete root_;
  for (auto& [id, fd] : mount_fds_)
    close_fd(fd);
  for (int fd : retired_fds_) close_fd(fd);
  close_fd(quiet_fd_);
  close_fd(root_fd_.load());
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
    daemon::ScopedDaemonIdentity as_daemon;
    int mfd = -1;
    // A mount of its own inside SOURCE: its handles are judged like SOURCE's
    // (-o handles keeps them on everywhere).
    const unsigned long type = statfs_type(fd);
    const bool lasting = options_.handles == HandleChoice::On ||
                         decide_handles(HandleChoice::Auto, true, type, probe_handles(fd)).use;
    if (lasting) {
      mfd = ::openat(fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
      if (mfd < 0) return;
    } else {
      nested_by_name_.fetch_add(1, std::memory_order_relaxed);
      spdlog::info("inodes on the mount inside SOURCE at inode {} ({}) are found again by parent and name",
                   static_cast<unsigned long long>(inode.ino()), fs_type_name(type));
    }
    it = mount_fds_.emplace(mount_id, mfd).first;
  }
  if (it->second < 0) return;
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
  if (&inode == root_) return;
  if (inode.parent_ != &parent) {
    ++parent.refs_;
    if (inode.parent_) unref_locked(inode.parent_, dead);
    inode.parent_ = &parent;
    if (LinkText* t = inode.link_text()) t->set_parent(parent.dev(), parent.ino());
  }
  if (inode.name_ != name) inode.name_.assign(name);
}

Result<Inode*> InodeTable::adopt(Inode& parent, std::string_view name, UniqueFd fd, const struct stat& st,
                                 bool* was_open) {
  const Key key{st.st_dev, st.st_ino};
  const mode_t type = st.st_mode & S_IFMT;

  Inode* inode = nullptr;
  {
    std::lock_guard lock(mu_);
    if ((inode = find_locked(st))) ++inode->refs_;
  }
  if (was_open != nullptr)
    *was_open = inode != nullptr && inode != root_ && inode->slot_.fd.load(std::memory_order_acquire) >= 0;
  // A new inode is completed (its file handle: a syscall) outside the lock
  // and published only then, so no other thread ever sees it half made.
  std::unique_ptr<Inode> fresh;
  if (!inode) {
    fresh = std::make_unique<Inode>(st.st_dev, st.st_ino, type);
    // Without a handle the inode is found by parent and name alone.
    if (handles_.use) attach_handle(*fresh, fd.get());
    if (fresh->is_symlink()) fresh->link_ = std::make_unique<LinkText>();
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
        // Only SOURCE's own device: a filesystem mounted inside it may be
        // of another kind (and after reopen_source, the old device is gone).
        if (inode->link_) inode->link_->keepable_ = link_keeping_ != LinkKeeping::Never && inode->dev_ == source_dev_;
        inode->refs_ = 1;
        inode->in_map_ = true;
        map_.insert(inode);
      }
    }
    retrack_locked(*inode, parent, name, dead);
  }
  destroy(dead);

  // The root keeps the descriptor it has (ours closes on return).
  if (inode != root_) cache_.offer(inode->slot_, std::move(fd));
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

Inode* InodeTable::ref_known_open(Inode& parent, std::string_view name, const struct stat& st) {
  std::vector<Inode*> dead;
  Inode* inode = nullptr;
  {
    std::lock_guard lock(mu_);
    inode = find_locked(st);
    if (inode == nullptr || inode == root_) return nullptr;
    if (inode->slot_.fd.load(std::memory_order_acquire) < 0) return nullptr;
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
    inode = std::exchange(inode->parent_, nullptr);
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
  // Outside mu_: no lookup can reach these any more (refs_ is 0 and they are
  // out of the map), and the cache has its own lock. An operation that
  // replied to the kernel may still pin one (its FdRef is destroyed after
  // the reply): that one is freed by its last FdRef (FdCache::retire).
  for (Inode* inode : dead) {
    if (cache_.retire(inode->slot_)) free_retired(inode);
  }
}

void InodeTable::free_retired(Inode* inode) noexcept {
  cache_.drop(inode->slot_);
  delete inode;
}

bool InodeTable::same_file_locked(const Inode& inode, const struct stat& st) const {
  if (st.st_ino != inode.ino_) return false;
  if (st.st_dev == inode.dev_) return true;
  // Found under a SOURCE opened again (reopen_source): its files keep their
  // numbers on the new mount (GlusterFS's come from the file's gfid).
  return st.st_dev == source_dev_ &&
         std::find(retired_devs_.begin(), retired_devs_.end(), inode.dev_) != retired_devs_.end();
}

int InodeTable::reopen_by_name(Inode& inode) {
  std::string name;
  Inode* parent = nullptr;
  {
    std::lock_guard lock(mu_);
    parent = inode.parent_;
    if (!parent) return -ESTALE;
    ++parent->refs_;  // keep it while we use it, even if a rename re-parents `inode`
    name = inode.name_;
  }
  FdRef pfd;
  pfd.table_ = this;
  pfd.ref_held_ = parent;
  if (int e = pin(*parent, pfd); e != 0) return -e;
  int fd = ::openat(pfd.get(), name.c_str(), O_PATH | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0) return errno == ENOENT ? -ESTALE : -errno;
  struct stat st {};
  bool same = false;
  if (::fstatat(fd, "", &st, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW) == 0) {
    std::lock_guard lock(mu_);
    same = same_file_locked(inode, st);
  }
  if (!same) {
    UniqueFd(fd).reset();
    return -ESTALE;
  }
  return fd;
}

int InodeTable::reopen(Inode& inode) {
  // As the daemon: open_by_handle_at needs CAP_DAC_READ_SEARCH, which a
  // caller's fsuid clears, and an O_PATH open is not an access by the caller
  // anyway (the kernel checked the caller's permissions before asking us).
  daemon::ScopedDaemonIdentity as_daemon;
  if (inode.has_handle() && !inode.handle_stale_.load(std::memory_order_relaxed)) {
    alignas(struct file_handle) std::byte buf[sizeof(struct file_handle) + 128];
    auto* fh = reinterpret_cast<struct file_handle*>(buf);
    fh->handle_bytes = inode.handle_len_;
    fh->handle_type = inode.handle_type_;
    std::memcpy(fh->f_handle, inode.handle_bytes(), inode.handle_len_);
    int fd = ::open_by_handle_at(inode.mount_fd_, fh, O_PATH | O_NOFOLLOW | O_CLOEXEC);
    if (fd >= 0) return fd;
    // The handle's filesystem is gone (a FUSE client that died): if SOURCE
    // was opened again since (reopen_source), the name leads to the file there.
    if (errno == ENOTCONN) return reopen_by_name(inode);
    if (errno != ESTALE) return -errno;
    // The source no longer decodes this handle: a FUSE source whose inode
    // left the kernel's cache, an NFS server that forgot it, a file
    // replaced behind our back. Its name may still lead to it; from now on
    // only the name is used for this inode.
    inode.handle_stale_.store(true, std::memory_order_relaxed);
    if (stale_handles_.fetch_add(1, std::memory_order_relaxed) == 0)
      spdlog::warn("a file handle on SOURCE {} went stale (ESTALE); such inodes are found again by parent and name "
                   "(counted in vsymctl status: stale_handles)", source_);
    const int by_name = reopen_by_name(inode);
    if (by_name >= 0) stale_found_.fetch_add(1, std::memory_order_relaxed);
    return by_name;
  }
  return reopen_by_name(inode);
}

int InodeTable::pin(Inode& inode, FdRef& out) {
  if (&inode == root_) {
    out.fd_ = root_fd_.load(std::memory_order_acquire);
    return 0;
  }
  int fd = cache_.acquire(inode.slot_);
  if (fd < 0) {
    fd = reopen(inode);
    if (fd < 0) return -fd;
    fd = cache_.insert(inode.slot_, UniqueFd(fd));
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

bool InodeTable::fd_if_open(Inode& inode, FdRef& out) {
  out.reset();
  out.table_ = this;
  if (&inode == root_) {
    out.fd_ = root_fd_.load(std::memory_order_acquire);
    return true;
  }
  const int fd = cache_.acquire(inode.slot_);
  if (fd < 0) return false;
  out.inode_ = &inode;
  out.fd_ = fd;
  return true;
}

std::uint64_t InodeTable::serial(const Inode& inode, const FdRef& ref) noexcept {
  // Stable while `ref` pins the slot; 0 (never a real serial) for the root
  // and for a reference that pins nothing.
  if (ref.inode_ != &inode) return 0;
  return inode.slot_.serial.load(std::memory_order_relaxed);
}

std::uint64_t InodeTable::open_serial(const Inode& inode) noexcept {
  // A serial changes only while the slot holds no descriptor, and insert()
  // publishes the new one with the descriptor's store. So with the same
  // serial before and after a descriptor was seen in the slot, that
  // descriptor was the one of that serial, open at that moment.
  const FdSlot& slot = inode.slot_;
  const std::uint64_t before = slot.serial.load(std::memory_order_acquire);
  if (slot.fd.load(std::memory_order_acquire) < 0) return 0;
  return slot.serial.load(std::memory_order_acquire) == before ? before : 0;
}

int InodeTable::parent_fd(Inode& inode, FdRef& out) {
  out.reset();
  Inode* parent = nullptr;
  {
    std::lock_guard lock(mu_);
    parent = inode.parent_;
    if (!parent) return ENOENT;
    ++parent->refs_;  // a concurrent rename may re-parent `inode` while we use this one
  }
  out.table_ = this;
  out.ref_held_ = parent;
  return pin(*parent, out);
}

std::string InodeTable::tracked_name(const Inode& inode) const {
  std::lock_guard lock(mu_);
  return inode.name_;
}

void InodeTable::moved(Inode& new_parent, std::string_view new_name, const struct stat& st) {
  std::vector<Inode*> dead;
  {
    std::lock_guard lock(mu_);
    auto it = map_.find(Key{st.st_dev, st.st_ino});
    if (it == map_.end()) return;
    Inode* inode = *it;
    if (inode == root_ || !inode->parent_) return;
    if (inode->parent_ != &new_parent) {
      ++new_parent.refs_;
      unref_locked(inode->parent_, dead);
      inode->parent_ = &new_parent;
      if (LinkText* t = inode->link_text()) t->set_parent(new_parent.dev(), new_parent.ino());
    }
    inode->name_.assign(new_name);
    if (LinkText* t = inode->link_text()) t->drop_kept();  // a rename changes its ctime
  }
  destroy(dead);
}

bool InodeTable::reopen_source() {
  if (!options_.reopen_source_by_path) return false;
  std::unique_lock lock(reopen_mu_, std::try_to_lock);
  if (!lock.owns_lock()) return false;  // another thread is at it
  daemon::ScopedDaemonIdentity as_daemon;
  const int old_fd = root_fd_.load();
  struct stat old_st {};
  if (::fstatat(old_fd, "", &old_st, AT_EMPTY_PATH) == 0) return false;  // ours still works
  const int fd = ::open(source_.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return false;
  struct stat st {};
  if (::fstatat(fd, "", &st, AT_EMPTY_PATH) != 0 || !S_ISDIR(st.st_mode)) {
    UniqueFd(fd).reset();  // still gone (the dead mount is still there)
    return false;
  }
  // Operations may still hold the old descriptors: they are closed at the
  // end, not now (a closed number could be reused under them).
  retired_fds_.push_back(old_fd);
  root_fd_.store(fd, std::memory_order_release);
  {
    std::lock_guard mlock(mu_);
    retired_devs_.push_back(source_dev_);
    source_dev_ = st.st_dev;
  }
  {
    std::lock_guard mlock(mount_mu_);
    for (auto& [id, mfd] : mount_fds_)
      if (mfd >= 0) retired_fds_.push_back(mfd);
    mount_fds_.clear();
  }
  // Every cached descriptor points into the gone filesystem: all leave
  // their slots, so their inodes are found again by name under the new
  // root. Those in use (the operation that got ENOTCONN and called us pins
  // one) are closed at the end with the others; left in their slots they
  // would give ENOTCONN for good, since the next call finds SOURCE working.
  cache_.evict_all(retired_fds_);
  source_reopens_.fetch_add(1, std::memory_order_relaxed);
  spdlog::warn("SOURCE {} had gone (ENOTCONN) and is there again: opened it anew", source_);
  return true;
}

int InodeTable::read_link_quietly(int fd, dev_t dev, ino_t ino, std::string& out) {
  // Only the filesystem the clone was made of decodes there: not one
  // mounted inside SOURCE, nor SOURCE's filesystem after reopen_source().
  if (quiet_fd_ < 0 || dev != quiet_dev_) return read_link(fd, out);
  alignas(struct file_handle) std::byte buf[sizeof(struct file_handle) + MAX_HANDLE_SZ];
  auto* fh = reinterpret_cast<struct file_handle*>(buf);
  fh->handle_bytes = MAX_HANDLE_SZ;
  int mount_id = 0;
  if (::name_to_handle_at(fd, "", fh, &mount_id, AT_EMPTY_PATH) != 0) return read_link(fd, out);
  int qfd = -1;
  {
    // open_by_handle_at needs CAP_DAC_READ_SEARCH, which a caller's fsuid
    // clears; the text only gives the caller a length it may already lstat.
    daemon::ScopedDaemonIdentity as_daemon;
    qfd = ::open_by_handle_at(quiet_fd_, fh, O_PATH | O_NOFOLLOW | O_CLOEXEC);
  }
  if (qfd < 0) return read_link(fd, out);
  // The same file (a handle names one inode of one filesystem; checked all
  // the same, it costs a syscall per link, not per stat).
  struct stat st {};
  const bool same =
      ::fstatat(qfd, "", &st, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW) == 0 && st.st_dev == dev && st.st_ino == ino;
  const int e = read_link(same ? qfd : fd, out);
  UniqueFd(qfd).reset();
  return e;
}

std::vector<std::uint64_t> InodeTable::symlink_nodeids() const {
  std::vector<std::uint64_t> ids;
  std::lock_guard lock(mu_);
  for (const Inode* inode : map_)
    if (inode->is_symlink()) ids.push_back(reinterpret_cast<std::uint64_t>(inode));
  return ids;
}

std::string inode_status(const InodeTable& table) {
  const HandleDecision& d = table.handle_mode();
  std::string line = (d.use ? "file handle, else parent and name (" : "parent and name (") + d.reason + ")";
  if (const std::uint64_t n = table.nested_mounts_by_name(); n != 0)
    line += "; " + std::to_string(n) + " mount(s) inside SOURCE by parent and name";
  return line;
}

}  // namespace vsymfs::fs
