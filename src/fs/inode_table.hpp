// The inodes the kernel knows about, keyed by (st_dev, st_ino) of the source
// file. The FUSE node id of an inode is the address of its entry (the root is
// FUSE_ROOT_ID); an entry lives exactly as long as the kernel's lookup count
// plus the references its tracked children hold.
//
// Descriptors are bounded (see fd_cache.hpp). To reopen an inode whose
// descriptor was evicted, an entry keeps
//   - a file handle (name_to_handle_at), reopened with open_by_handle_at as
//     the daemon (it needs CAP_DAC_READ_SEARCH), or, when the source cannot
//     give handles (or -o no_handles),
//   - its parent entry and name, reopened with openat(parent, name) and
//     checked against (st_dev, st_ino): a file renamed behind our back gives
//     ESTALE until the kernel looks it up again.
// Symlinks always track their parent as well: an @sys candidate in a relative
// target is probed in the link's own directory.
//
// Symlinks also keep their raw text (LinkText): lstat reports the caller's
// expansion length as st_size, and reading the text again for every stat
// would update the link's atime (relatime), which natively only readlink
// and a path walk through the link do. The text is read once per link,
// through a read-only clone of SOURCE's mount where the daemon may make one
// (read_link_quietly), so even that first read leaves the atime alone.
#pragma once

#include <sys/stat.h>
#include <sys/types.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "fd_cache.hpp"
#include "vsymfs/result.hpp"

namespace vsymfs::fs {

class InodeTable;

// A symlink's raw text as last read, with the descriptor it was read
// through (FdSlot::serial). A symlink's text never changes in place, but a
// replaced link is a new inode that may get the old number, and, made within
// the same clock tick, the same size and times (birth time included): no
// attribute tells the two apart. An open descriptor does: while the table
// holds one, the inode lives and its number cannot be reused. So the text
// stays good exactly as long as the descriptor it was read through, on every
// filesystem, birth time or not; after an eviction it is read once more.
// Timestamps, the ctime above all, are no key: setting a link's atime
// changes its ctime, and must not make the next stat read the link.
class LinkText {
 public:
  // The text when it was read through the descriptor numbered `serial`.
  bool get(std::uint64_t serial, std::string& out) const;
  void put(std::uint64_t serial, std::string_view text);

 private:
  mutable std::mutex mu_;
  bool valid_ = false;
  std::uint64_t serial_ = 0;
  std::string text_;
};

class Inode {
 public:
  Inode(dev_t dev, ino_t ino, mode_t type) : dev_(dev), ino_(ino), type_(type) {}
  ~Inode();
  Inode(const Inode&) = delete;
  Inode& operator=(const Inode&) = delete;

  dev_t dev() const noexcept { return dev_; }
  ino_t ino() const noexcept { return ino_; }
  mode_t type() const noexcept { return type_; }  // S_IFMT bits
  bool is_symlink() const noexcept { return S_ISLNK(type_); }
  bool is_dir() const noexcept { return S_ISDIR(type_); }
  // The cached raw text of a symlink (null for every other type).
  LinkText* link_text() const noexcept { return tracked_ ? tracked_->link.get() : nullptr; }

 private:
  friend class InodeTable;
  friend class FdRef;
  // Where a tracked inode was last found (see the top of this file). Only
  // symlinks and inodes without a file handle need it, so it is not part
  // of every inode: a million handle-tracked inodes would carry 40 unused
  // bytes each.
  struct Tracked {
    Inode* parent = nullptr;  // holds one of its refs_, or null
    std::string name;
    std::unique_ptr<LinkText> link;  // symlinks only; the pointer is immutable once published
  };
  // Handles of the common filesystems (ext4 8 bytes, xfs and tmpfs 8-16)
  // live inside the inode; larger ones (btrfs 20-40) on the heap.
  static constexpr std::size_t kInlineHandle = 16;

  bool has_handle() const noexcept { return handle_len_ != 0; }
  const std::byte* handle_bytes() const noexcept { return handle_len_ > kInlineHandle ? handle_.heap : handle_.inline_bytes; }

  const dev_t dev_;
  const ino_t ino_;
  const mode_t type_;
  // Set before the inode is published in the table, immutable afterwards.
  int handle_type_ = 0;
  // Guarded by InodeTable::mu_.
  std::uint64_t refs_ = 0;  // kernel lookups + tracked children + in-flight parent pins
  std::unique_ptr<Tracked> tracked_;  // symlinks and handle-less inodes only; allocated before publishing
  // Set before publishing, immutable afterwards.
  union {
    std::byte inline_bytes[kInlineHandle];
    std::byte* heap;
  } handle_{};
  int mount_fd_ = -1;              // where the handle opens (owned by the table)
  std::uint8_t handle_len_ = 0;    // f_handle bytes, 0 for none (MAX_HANDLE_SZ is 128)
  bool in_map_ = false;            // guarded by InodeTable::mu_
  FdSlot slot_;
};

// A pinned descriptor of an inode; unpins on destruction.
class FdRef {
 public:
  FdRef() = default;
  FdRef(FdRef&& o) noexcept { *this = std::move(o); }
  FdRef& operator=(FdRef&& o) noexcept;
  ~FdRef() { reset(); }
  int get() const noexcept { return fd_; }
  void reset() noexcept;

 private:
  friend class InodeTable;
  InodeTable* table_ = nullptr;
  Inode* inode_ = nullptr;      // pinned in the cache, when non-null
  Inode* ref_held_ = nullptr;   // an inode whose refs_ we hold, released on reset
  int fd_ = -1;
};

class InodeTable {
 public:
  // Opens SOURCE (which must be a directory) as the root.
  static Result<std::unique_ptr<InodeTable>> create(const std::string& source, std::size_t fd_budget, bool use_handles);
  ~InodeTable();
  InodeTable(const InodeTable&) = delete;
  InodeTable& operator=(const InodeTable&) = delete;

  Inode& root() noexcept { return *root_; }
  Inode& from_nodeid(std::uint64_t nodeid) noexcept;
  std::uint64_t nodeid(const Inode& inode) const noexcept;

  // Registers the file `fd` (O_PATH, opened by `name` in `parent`; `st` is
  // its fstat) and counts one kernel lookup. The table takes `fd` (caching or
  // closing it). Returns the inode.
  Result<Inode*> adopt(Inode& parent, std::string_view name, int fd, const struct stat& st);
  // The inode already known for `st` (found as `name` in `parent`), with one
  // more kernel lookup counted, or null when the table has none: no syscall,
  // so a directory listing can refresh what the kernel holds at the price of
  // the fstatat that gave `st`.
  Inode* ref_known(Inode& parent, std::string_view name, const struct stat& st);
  // Whether the table has an inode for (dev, ino). No syscall.
  bool contains(dev_t dev, ino_t ino) const;
  // The kernel forgot `n` lookups.
  void forget(Inode& inode, std::uint64_t n);

  // A pinned O_PATH descriptor of the inode (reopened when evicted). errno on failure.
  int fd(Inode& inode, FdRef& out);
  // Which of the inode's descriptors `ref` (from fd()) pins (FdSlot::serial).
  static std::uint64_t serial(const Inode& inode, const FdRef& ref) noexcept;
  // A pinned descriptor of the directory the inode was last found in
  // (tracked inodes only: symlinks and no-handle inodes). ENOENT when unknown.
  int parent_fd(Inode& inode, FdRef& out);
  // The name a tracked inode was last found by in its directory ("" when
  // untracked).
  std::string tracked_name(const Inode& inode) const;
  // A file in `parent` was renamed to `name` there (or removed, when st is
  // null): keep tracked names current.
  void moved(Inode& new_parent, std::string_view new_name, const struct stat& st);

  // Reads the raw text of the symlink `fd` (`dev`, `ino`) into `out`
  // without updating its atime, through the read-only clone of SOURCE's
  // mount (a file handle of the link opened there), or, where there is no
  // clone (the daemon lacks CAP_SYS_ADMIN) or the link is on another
  // filesystem mounted inside SOURCE, with a plain readlinkat, which may.
  // 0 or an errno; ENAMETOOLONG for a text of PATH_MAX bytes or more.
  int read_link_quietly(int fd, dev_t dev, ino_t ino, std::string& out);
  // 0 when read_link_quietly can leave atimes alone, else why not (an errno).
  int quiet_links_error() const noexcept { return quiet_error_; }

  // Node ids of every known symlink (to invalidate kernel-cached bodies).
  std::vector<std::uint64_t> symlink_nodeids() const;

  std::size_t size() const;
  FdCache& cache() noexcept { return cache_; }

 private:
  struct Key {
    dev_t dev;
    ino_t ino;
    bool operator==(const Key&) const = default;
  };
  static Key key_of(const Inode* inode) noexcept { return {inode->dev(), inode->ino()}; }
  // The set holds the inodes themselves and is searched by Key: a node is
  // a pointer and a link (32 bytes allocated) instead of a copy of the key
  // beside the pointer (48), per known inode.
  struct KeyHash {
    using is_transparent = void;
    std::size_t operator()(const Key& k) const noexcept { return std::hash<ino_t>{}(k.ino) ^ (std::hash<dev_t>{}(k.dev) << 1); }
    std::size_t operator()(const Inode* i) const noexcept { return (*this)(key_of(i)); }
  };
  struct KeyEq {
    using is_transparent = void;
    bool operator()(const Inode* a, const Inode* b) const noexcept { return key_of(a) == key_of(b); }
    bool operator()(const Key& k, const Inode* i) const noexcept { return k == key_of(i); }
    bool operator()(const Inode* i, const Key& k) const noexcept { return k == key_of(i); }
  };

  InodeTable(std::size_t fd_budget, bool use_handles) : cache_(fd_budget), use_handles_(use_handles) {}
  Inode* find_locked(const struct stat& st) const;
  void retrack_locked(Inode& inode, Inode& parent, std::string_view name, std::vector<Inode*>& dead);
  void attach_handle(Inode& inode, int fd);
  int reopen(Inode& inode);
  int pin(Inode& inode, FdRef& out);
  void unref_locked(Inode* inode, std::vector<Inode*>& dead);
  void unref(Inode* inode);
  void destroy(std::vector<Inode*>& dead);
  friend class FdRef;

  FdCache cache_;
  const bool use_handles_;
  Inode* root_ = nullptr;
  int root_fd_ = -1;  // O_PATH, never evicted
  dev_t root_dev_ = 0;
  int quiet_fd_ = -1;     // a directory (O_RDONLY) on a read-only, noatime clone of SOURCE's mount, or -1
  int quiet_error_ = 0;   // why there is no clone
  mutable std::mutex mu_;  // guards map_ and every Inode's refs_, tracked_, in_map_
  std::unordered_set<Inode*, KeyHash, KeyEq> map_;
  std::mutex mount_mu_;
  std::unordered_map<int, int> mount_fds_;  // mount id -> a readable directory fd on it
};

}  // namespace vsymfs::fs
