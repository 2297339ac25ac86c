// The inodes the kernel knows about, keyed by (st_dev, st_ino) of the source
// file. The FUSE node id of an inode is the address of its entry (the root is
// FUSE_ROOT_ID); an entry lives exactly as long as the kernel's lookup count
// plus the references its children hold.
//
// Descriptors are bounded (see fd_cache.hpp). To reopen an inode whose
// descriptor was evicted, an entry keeps
//   - its parent entry and name (every inode but the root), reopened with
//     openat(parent, name) and checked against (st_dev, st_ino): a file
//     renamed behind our back gives ESTALE until the kernel looks it up
//     again. Renames through the mount keep the name current (moved()).
//   - and, where the source's file handles can be trusted, a file handle
//     (name_to_handle_at), reopened first with open_by_handle_at as the
//     daemon (it needs CAP_DAC_READ_SEARCH): it finds a file renamed behind
//     our back too. A handle that ever fails with ESTALE is not used again
//     for that inode: the inode is found by parent and name instead, counted
//     in stale_handles().
// Whether handles can be trusted is decided per mount (decide_handles): not
// on FUSE, SMB or 9p sources, whose handles do not outlive the source
// inode in the kernel's cache, nor when a live round trip fails.
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

#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "fs/fd_cache.hpp"
#include "vsymfs/result.hpp"

namespace vsymfs::fs {

class InodeTable;

// -o handles / -o no_handles / neither.
enum class HandleChoice { Auto, On, Off };

struct HandleDecision {
  bool use = false;
  std::string reason;  // for the log and `vsymctl status`
};

// Whether to find evicted inodes of a filesystem by file handle. `f_type` is
// its statfs type; `probe_error` is "" when a handle made on it just now
// opened the same file again, else why not; `can_open` is whether the
// daemon may call open_by_handle_at at all (CAP_DAC_READ_SEARCH). Pure.
//
// Evicting one inode to test whether its handle survives needs root-wide
// `drop_caches`, which costs every filesystem on the host its caches, so the
// eviction behaviour comes from the type: FUSE decodes a handle only while
// the inode is cached (unless its server has export support, which the
// kernel does not report), SMB and 9p clients give no lasting handles.
// Sources that pass are still covered at run time: an ESTALE from a handle
// falls back to parent and name.
HandleDecision decide_handles(HandleChoice choice, bool can_open, unsigned long f_type, std::string_view probe_error);

// A readable name for a statfs type ("FUSE", "NFS", "ext2/3/4", ...) or its hex value.
std::string fs_type_name(unsigned long f_type);

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

  // What READLINK answers from without a readlinkat (Filesystem::raw_text):
  // a text of at most kKeptBytes, read through descriptor `serial`, kept
  // until `until_ns` (CLOCK_MONOTONIC_COARSE), because reading it again
  // before then would change nothing, not even the link's atime (see
  // LinkKeeping). Read without a lock (a sequence count: no shared line is
  // written), so that callers on every CPU reading one link do not contend.
  // Only links the table marked keepable (a filesystem whose links never
  // change in place, SOURCE's own device) are kept.
  static constexpr std::size_t kKeptBytes = 128;
  bool keepable() const noexcept { return keepable_; }
  bool kept(std::uint64_t serial, std::int64_t now_ns, std::string& out) const noexcept;
  void keep(std::uint64_t serial, std::int64_t until_ns, std::string_view text) noexcept;
  // Forgets the kept text: an operation through the mount changed the
  // link's ctime, after which a read may stamp its atime again.
  void drop_kept() noexcept;
  // How much of the caller the last expansion needed (LinkNeeds as a
  // number; Host before the first): what an operation on this link fetches
  // up front, so that it asks CallerContexts once.
  std::uint8_t needs() const noexcept { return needs_.load(std::memory_order_relaxed); }
  void note_needs(std::uint8_t n) noexcept {
    if (needs_.load(std::memory_order_relaxed) != n) needs_.store(n, std::memory_order_relaxed);
  }
  // The (st_dev, st_ino) of the directory the link was last found in, which
  // keys its @sys probe answers (sys_probes.hpp): read without the table's
  // lock or a descriptor. Written under InodeTable::mu_ with the parent.
  // A rename or a hard link never crosses devices, so a reader racing one
  // gets the old directory's number or the new one's with the same device:
  // the old directory's answers for a request that raced the move, as if it
  // had come just before it. Only a link bind-mounted onto a name in
  // another filesystem could mix one directory's device with the other's
  // number. A probe that misses checks the descriptor it probes through
  // (SourceProbe::exists) and stores nothing when they differ.
  void set_parent(dev_t dev, ino_t ino) noexcept {
    parent_dev_.store(static_cast<std::uint64_t>(dev), std::memory_order_relaxed);
    parent_ino_.store(static_cast<std::uint64_t>(ino), std::memory_order_relaxed);
  }
  bool parent(dev_t& dev, ino_t& ino) const noexcept {
    const std::uint64_t i = parent_ino_.load(std::memory_order_relaxed);
    if (i == 0) return false;
    ino = static_cast<ino_t>(i);
    dev = static_cast<dev_t>(parent_dev_.load(std::memory_order_relaxed));
    return true;
  }

 private:
  std::atomic<std::uint8_t> needs_{1};  // LinkNeeds::Host
  std::atomic<std::uint64_t> parent_dev_{0}, parent_ino_{0};
  mutable std::mutex mu_;
  bool valid_ = false;
  std::uint64_t serial_ = 0;
  std::string text_;
  // The kept text: written under mu_, odd kept_seq_ while it is.
  friend class InodeTable;
  bool keepable_ = false;  // set before the inode is published, immutable afterwards
  std::atomic<std::uint32_t> kept_seq_{0};
  std::atomic<std::uint64_t> kept_serial_{0};  // 0: none
  std::atomic<std::int64_t> kept_until_{0};
  std::atomic<std::uint32_t> kept_len_{0};
  std::array<std::atomic<std::uint64_t>, kKeptBytes / 8> kept_words_{};
};

// When READLINK may answer from a kept text instead of reading the link
// again: never when a read would stamp the link's atime (a strictatime
// mount), always when no read does (noatime, read-only), and with relatime
// while the link's atime is newer than its mtime and ctime and less than a
// day old (the kernel's rule for stamping it), at most -o attr_timeout at a
// time. Only for filesystems whose links never change in place under an
// open descriptor: local ones. Network and FUSE sources read every time.
enum class LinkKeeping { Never, Always, Relatime };
// From SOURCE's statfs f_type and f_flags. Pure.
LinkKeeping link_keeping(unsigned long f_type, unsigned long f_flags) noexcept;

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
  LinkText* link_text() const noexcept { return link_.get(); }
  // The size of a regular file in the last attributes sent to the kernel,
  // -1 before any and while it may be written through a descriptor of ours
  // (passthrough writes never reach the daemon): a hint (SOURCE may have
  // changed it since), which spares an OPEN the fstat that only asks
  // whether the file is small.
  off_t size_seen() const noexcept { return size_seen_.load(std::memory_order_relaxed); }
  void saw_size(off_t size) noexcept {
    // Stored only when it changed: stats of one file from many CPUs read
    // the line instead of bouncing it.
    if (size_seen_.load(std::memory_order_relaxed) != size) size_seen_.store(size, std::memory_order_relaxed);
  }

 private:
  friend class InodeTable;
  friend class FdRef;
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
  std::uint64_t refs_ = 0;  // kernel lookups + children + in-flight parent pins
  Inode* parent_ = nullptr; // where it was last found (holds one of its refs_), or null
  std::string name_;        // its name there
  // Set before publishing, immutable afterwards.
  union {
    std::byte inline_bytes[kInlineHandle];
    std::byte* heap;
  } handle_{};
  int mount_fd_ = -1;              // where the handle opens (owned by the table)
  std::uint8_t handle_len_ = 0;    // f_handle bytes, 0 for none (MAX_HANDLE_SZ is 128)
  std::atomic<bool> handle_stale_{false};  // open_by_handle_at said ESTALE: use the name
  std::atomic<off_t> size_seen_{-1};
  bool in_map_ = false;            // guarded by InodeTable::mu_
  FdSlot slot_;
  std::unique_ptr<LinkText> link_;  // symlinks only; set before publishing, immutable afterwards
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
  struct Options {
    std::size_t fd_budget = 8192;
    HandleChoice handles = HandleChoice::Auto;
    bool can_open_handles = true;  // open_by_handle_at needs CAP_DAC_READ_SEARCH
    // When SOURCE's own filesystem goes away (ENOTCONN: a FUSE client such
    // as GlusterFS's died), open it again by its path once it is mounted
    // again. Not with MOUNTPOINT == SOURCE: the path is then our own mount.
    bool reopen_source_by_path = true;
  };
  // Opens SOURCE (which must be a directory) as the root and decides
  // whether its file handles are used (handle_mode()).
  static Result<std::unique_ptr<InodeTable>> create(const std::string& source, const Options& options);
  ~InodeTable();
  InodeTable(const InodeTable&) = delete;
  InodeTable& operator=(const InodeTable&) = delete;

  Inode& root() noexcept { return *root_; }
  Inode& from_nodeid(std::uint64_t nodeid) noexcept;
  std::uint64_t nodeid(const Inode& inode) const noexcept;

  // Registers the file `fd` (O_PATH, opened by `name` in `parent`; `st` is
  // its fstat) and counts one kernel lookup. The table caches `fd` or closes
  // it. Returns the inode.
  // `was_open` (may be null) gets whether the inode was known already with
  // its descriptor open in the cache (what ref_known_open() would have found).
  Result<Inode*> adopt(Inode& parent, std::string_view name, UniqueFd fd, const struct stat& st,
                       bool* was_open = nullptr);
  // The inode already known for `st` (found as `name` in `parent`), with one
  // more kernel lookup counted, or null when the table has none: no syscall,
  // so a directory listing can refresh what the kernel holds at the price of
  // the fstatat that gave `st`.
  Inode* ref_known(Inode& parent, std::string_view name, const struct stat& st);
  // The same, but only for an inode whose descriptor is open in the cache
  // (never the root). An open descriptor keeps its file, and so its number,
  // alive: `st`, from an fstatat of the name just before, is this inode's
  // (unless the descriptor was evicted and opened again in that instant;
  // the reopen goes by file handle, which a reused number does not match).
  // Null otherwise.
  Inode* ref_known_open(Inode& parent, std::string_view name, const struct stat& st);
  // Whether the table has an inode for (dev, ino). No syscall.
  bool contains(dev_t dev, ino_t ino) const;
  // The kernel forgot `n` lookups.
  void forget(Inode& inode, std::uint64_t n);

  // A pinned O_PATH descriptor of the inode (reopened when evicted). errno on failure.
  int fd(Inode& inode, FdRef& out);
  // The same only while the inode's descriptor is open (or it is the root):
  // false, pinning nothing, where fd() would have to reopen it. No syscall.
  bool fd_if_open(Inode& inode, FdRef& out);
  // Which of the inode's descriptors `ref` (from fd()) pins (FdSlot::serial).
  static std::uint64_t serial(const Inode& inode, const FdRef& ref) noexcept;
  // Which of the inode's descriptors is open now, without pinning it (no
  // shared line written): its serial, or 0 when none is (or the root).
  // Good for a look at what was kept with that descriptor (LinkText::kept);
  // the descriptor itself may close the moment after.
  static std::uint64_t open_serial(const Inode& inode) noexcept;
  // A pinned descriptor of the directory the inode was last found in.
  // ENOENT when unknown (the root).
  int parent_fd(Inode& inode, FdRef& out);
  // The name the inode was last found by in its directory ("" for the root).
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

  // How evicted inodes of SOURCE are found again, and why.
  const HandleDecision& handle_mode() const noexcept { return handles_; }
  LinkKeeping link_keeping() const noexcept { return link_keeping_; }
  // Handles that open_by_handle_at refused with ESTALE, and how many of
  // those inodes were then found by parent and name.
  std::uint64_t stale_handles() const noexcept { return stale_handles_.load(std::memory_order_relaxed); }
  std::uint64_t stale_handles_found() const noexcept { return stale_found_.load(std::memory_order_relaxed); }
  // Mounts inside SOURCE whose handles are not used (their type).
  std::uint64_t nested_mounts_by_name() const noexcept { return nested_by_name_.load(std::memory_order_relaxed); }

  // An operation on SOURCE failed with ENOTCONN: its filesystem is gone (a
  // FUSE client that died). If SOURCE's path now leads to another live
  // directory (the client was mounted again), that becomes the root: new
  // lookups work again, and inodes the kernel still holds are found by
  // name under the new root. Returns whether it switched. Cheap when
  // nothing changed (an open and two fstats), and at most one thread at a time.
  bool reopen_source();
  std::uint64_t source_reopens() const noexcept { return source_reopens_.load(std::memory_order_relaxed); }

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

  InodeTable(const std::string& source, const Options& o) : cache_(o.fd_budget), source_(source), options_(o) {}
  Inode* find_locked(const struct stat& st) const;
  bool same_file_locked(const Inode& inode, const struct stat& st) const;
  int reopen_by_name(Inode& inode);
  void retrack_locked(Inode& inode, Inode& parent, std::string_view name, std::vector<Inode*>& dead);
  void attach_handle(Inode& inode, int fd);
  int reopen(Inode& inode);
  int pin(Inode& inode, FdRef& out);
  void unref_locked(Inode* inode, std::vector<Inode*>& dead);
  void unref(Inode* inode);
  void destroy(std::vector<Inode*>& dead);
  // Drops a retired inode's descriptor and frees it (destroy, or its last FdRef).
  void free_retired(Inode* inode) noexcept;
  friend class FdRef;

  FdCache cache_;
  const std::string source_;
  const Options options_;
  HandleDecision handles_;  // for SOURCE's own mount; set in create()
  LinkKeeping link_keeping_ = LinkKeeping::Never;  // for SOURCE's own device; set in create()
  Inode* root_ = nullptr;
  std::atomic<int> root_fd_{-1};  // O_PATH, never evicted; replaced by reopen_source()
  mutable std::mutex mu_;  // guards map_, retired_devs_ and every Inode's refs_, parent_, name_, in_map_
  std::unordered_set<Inode*, KeyHash, KeyEq> map_;
  std::vector<dev_t> retired_devs_;  // SOURCE's devices before reopen_source(), with source_dev_ now
  dev_t source_dev_ = 0;
  int quiet_fd_ = -1;     // a directory (O_RDONLY) on a read-only, noatime clone of SOURCE's mount, or -1
  dev_t quiet_dev_ = 0;   // the device of that clone's filesystem
  int quiet_error_ = 0;   // why there is no clone
  std::mutex mount_mu_;
  std::unordered_map<int, int> mount_fds_;  // mount id -> a readable directory fd on it, -1: no handles there
  std::mutex reopen_mu_;
  std::vector<int> retired_fds_;  // descriptors of a gone SOURCE an operation may still use; closed at the end
  std::atomic<std::uint64_t> stale_handles_{0}, stale_found_{0}, nested_by_name_{0}, source_reopens_{0};
};

// The `vsymctl status` line: "file handle (REASON)" or "parent and name
// (REASON)", and mounts inside SOURCE found by name.
std::string inode_status(const InodeTable& table);

}  // namespace vsymfs::fs
