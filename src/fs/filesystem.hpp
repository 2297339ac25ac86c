// One mounted vsymfs: what every FUSE operation needs (the inode table, the
// daemon services, the timeouts) and the helpers they share. The operations
// themselves live in ops_*.cpp, grouped by what they touch.
#pragma once

#define FUSE_USE_VERSION 314
#include <fuse3/fuse_lowlevel.h>

#include <sys/stat.h>

#include <atomic>
#include <condition_variable>
#include <cstddef>
#include <mutex>
#include <string>
#include <thread>
#include <unordered_set>

#include "daemon/caller_contexts.hpp"
#include "fs/inode_table.hpp"
#include "fs/open_dirs.hpp"
#include "daemon/link_service.hpp"
#include "daemon/mount_state.hpp"

namespace vsymfs::fs {

class Passthrough;
class QuietAtime;

struct FsConfig {
  double entry_timeout = 1.0;
  double attr_timeout = 1.0;
  double negative_timeout = 0.0;
  bool single_user = false;
  // Ask the kernel to enforce POSIX ACLs (FUSE_POSIX_ACL), as SOURCE does.
  bool posix_acl = false;
  // Open files and directories hold a descriptor each for their lifetime;
  // beyond this many, open/create/opendir fail with ENFILE so the inode
  // cache and the control socket always have descriptors left.
  std::size_t max_open_files = 1024;
};

// Who sent a request, from its header: the libfuse request (`key`), or for
// a request answered without libfuse (direct_replies.hpp) a per-thread key.
// The key ties the caller context a request fetched to that request.
struct RequestFrom {
  const void* key = nullptr;
  pid_t pid = 0;
  uid_t uid = 0;
  gid_t gid = 0;
};
RequestFrom request_from(fuse_req_t req) noexcept;

class Filesystem {
 public:
  Filesystem(FsConfig cfg, InodeTable& inodes, daemon::MountState& state, daemon::CallerContexts& contexts,
             daemon::LinkService& links);
  ~Filesystem();
  Filesystem(const Filesystem&) = delete;
  Filesystem& operator=(const Filesystem&) = delete;

  static const fuse_lowlevel_ops& operations();

  // Starts the thread that invalidates kernel-cached symlinks and attributes
  // after a rules or run-time change (notifications must not be sent from
  // inside a request handler).
  void attach_session(fuse_session* se);
  void detach_session();
  void set_control_socket(std::string path) { control_socket_ = std::move(path); }
  // Whether INIT turned on FUSE_CAP_CACHE_SYMLINKS (decided once per mount).
  void set_kernel_caches_symlinks(bool on) noexcept { kernel_caches_symlinks_.store(on); }
  // Whether the kernel enforces POSIX ACLs on this mount (decided at INIT).
  void set_kernel_enforces_acls(bool on) noexcept { kernel_acls_.store(on); }
  bool kernel_enforces_acls() const noexcept { return kernel_acls_.load(std::memory_order_relaxed); }
  // Kernel passthrough for open files (passthrough.hpp), or null when off.
  // Set before the session starts; not owned.
  void set_passthrough(Passthrough* p) noexcept { passthrough_ = p; }
  Passthrough* passthrough() const noexcept { return passthrough_; }
  // -o noatime / nodiratime (atime.hpp): the clone opens are moved to, for
  // files (`files`, noatime) and for directories. Set before the session
  // starts; not owned.
  void set_quiet_atime(const QuietAtime* q, bool files) noexcept {
    quiet_atime_ = q;
    quiet_files_ = files;
  }
  // `fd`, opened by a caller with `flags`, or the same file reopened where
  // reading it leaves the atime alone (closing `fd`).
  int quiet_atime(int fd, int flags, bool dir) const noexcept;

  // --- for the operations ---
  const FsConfig& config() const noexcept { return cfg_; }
  InodeTable& inodes() noexcept { return inodes_; }
  daemon::LinkService& links() noexcept { return links_; }
  daemon::MountState& state() noexcept { return state_; }
  const std::string& control_socket() const noexcept { return control_socket_; }
  Inode& inode(fuse_ino_t ino) noexcept { return inodes_.from_nodeid(ino); }

  // Switches this worker thread to the caller's fsuid/fsgid/groups (no-op
  // with single_user, or when the thread already has them). 0 or an errno.
  // The caller's context is fetched from CallerContexts to `want` (at least
  // identity and groups) and kept for the rest of the request: an
  // expansion that needs no more uses it, so a request asks once. An
  // operation on a symlink passes link_needs(inode).
  int become_caller(fuse_req_t req, daemon::LinkNeeds want = daemon::LinkNeeds::Host);
  int become_caller(const RequestFrom& from, daemon::LinkNeeds want);
  // What the symlink's last expansion needed of its caller (Host for any
  // other inode, and before the first expansion).
  static daemon::LinkNeeds link_needs(const Inode& inode) noexcept;
  // The mode to create a file, directory or node with, after making the
  // caller's umask this thread's: the kernel leaves the umask to us
  // (FUSE_DONT_MASK) so that, as natively, SOURCE applies it only where the
  // parent directory has no default ACL. Masked here when the thread cannot
  // have a umask of its own.
  mode_t creation_mode(fuse_req_t req, mode_t mode);

  // Opens `name` in `parent` (O_PATH) and fills `e` for a reply, counting one
  // kernel lookup. 0 or an errno (ENOENT when absent). @sys components are
  // tried when the literal name does not exist and `sys_ok`.
  // `known_first` (the LOOKUP request, which mostly revalidates names the
  // kernel let expire): an fstatat of the name first, and an inode already
  // known with its descriptor open is answered with no open at all: one
  // syscall instead of three (open, fstat, close). Names new to the table
  // then cost one more. Not for a name just made (create, mkdir...).
  int lookup(fuse_req_t req, Inode& parent, int parent_fd, const char* name, fuse_entry_param& e, bool sys_ok,
             bool known_first = false);
  int fill_entry(fuse_req_t req, Inode& inode, int parent_fd, bool per_caller_name, fuse_entry_param& e);
  // Whether a symlink's size in an entry reply (LOOKUP and the lookups that
  // end SYMLINK, LINK, CREATE...) can reach anyone: only then is the link
  // expanded there.
  bool entry_size_is_used() const noexcept;
  // Attributes of an inode for a reply, symlink st_size adjusted to the
  // caller's expansion.
  // `fd` is the inode's own (InodeTable::fd).
  int stat_inode(fuse_req_t req, Inode& inode, const FdRef& fd, struct stat& st);
  double attr_timeout_for(const Inode& inode) const noexcept;

  // Read the raw link text of a symlink fd (no terminating NUL), as readlink
  // does: it may update the link's atime. errno or 0.
  static int read_raw_link(int fd, std::string& out);
  // READLINK's raw text of the symlink `inode` (`fd` pinned): the text kept
  // from the last read through the same descriptor while reading it again
  // would change nothing, the link's atime included (LinkText::kept,
  // LinkKeeping), else read_raw_link, kept for next time where it may be.
  int readlink_text(Inode& inode, const FdRef& fd, std::string& out);
  // The same kept text without pinning the descriptor (InodeTable::open_serial):
  // true when there is one to answer from.
  bool kept_link_text(Inode& inode, std::string& out);
  // The raw text of the symlink `inode` (descriptor `fd`) for what must not
  // change its atime (stat, lookup, the raw-text xattr): cached per link,
  // else read without touching the atime where the daemon can (inode_table.hpp).
  int raw_link_text(Inode& inode, const FdRef& fd, std::string& out);
  // READLINK: the link's text for its caller, counted; 0 or an errno. A link
  // whose last expansion needed nothing of its caller (a plain link), with
  // its descriptor open, is read without taking the caller's identity: a
  // readlinkat of an open O_PATH descriptor checks no permission. One that
  // has changed into a variant link since is expanded as the caller.
  int readlink(const RequestFrom& from, Inode& link, std::string& out);

  // Requests answered without libfuse's request layer (direct_replies.hpp):
  // switched on by the daemon unless libfuse must see every request (-d
  // prints them, -o allow_root refuses other users in libfuse), and used
  // once INIT is answered.
  void allow_direct_replies(bool on) noexcept { direct_allowed_ = on; }
  void note_initialized() noexcept { initialized_.store(true, std::memory_order_release); }
  bool direct_replies() const noexcept { return direct_allowed_ && initialized_.load(std::memory_order_acquire); }
  bool direct_replies_allowed() const noexcept { return direct_allowed_; }
  daemon::ShardedCounter& direct_replies_counter() noexcept { return direct_count_; }
  // READLINKs answered from a kept link text, without a readlinkat (readlink_text).
  const daemon::ShardedCounter& kept_texts_counter() const noexcept { return kept_texts_; }
  // The session once attached (null before): its exit flag.
  fuse_session* session() const noexcept { return session_; }

  // Makes the kernel drop the attributes it holds for `ino`, so the next
  // stat asks GETATTR, for a request that changed them in SOURCE beyond
  // what the kernel knows it changed (set-id bits a write cleared, the mode
  // an ACL write set). Attributes only: cached pages stay. Safe inside a
  // request handler: the kernel takes no lock for it that a request holds.
  void invalidate_attributes(fuse_ino_t ino) noexcept;

  // Set-id bits and the kernel's cache. Writes, fallocate and
  // copy_file_range run as the caller, so SOURCE clears set-id bits by its
  // own rules (since Linux 6.2 also set-group-ID without group execute, for
  // a writer outside the file's group). Ahead of such a request the kernel
  // sends a notice, a SETATTR that clears in its cache what FUSE's older
  // rules say (set-user-ID; set-group-ID only with group execute) or
  // nothing at all, and afterwards it marks only size and times stale. So
  // setattr notes a notice that leaves set-id bits on a regular file, and
  // the next such request on that inode drops the kernel's attributes once
  // it has succeeded. No notice, no cost beyond an atomic load.
  void note_setid_notice(fuse_ino_t ino);
  void after_setid_notice(fuse_ino_t ino);

  // Open-descriptor accounting for open files and directories.
  bool reserve_open_file() noexcept;
  void release_open_file() noexcept { open_files_.fetch_sub(1, std::memory_order_relaxed); }
  // Directory handles between OPENDIR and RELEASEDIR; those the kernel
  // never released (an unmount came first) close with the Filesystem.
  OpenDirs& open_dirs() noexcept { return open_dirs_; }

 private:
  void on_rules_changed();
  void invalidation_loop();
  int link_text(Inode& inode, const FdRef& fd, const struct stat& st, std::string& out);
  int expand_text(const RequestFrom& from, Inode& link, const std::string& raw, int dir_fd, std::string& out);

  FsConfig cfg_;
  InodeTable& inodes_;
  daemon::MountState& state_;
  daemon::CallerContexts& contexts_;
  daemon::LinkService& links_;
  std::string control_socket_;
  std::atomic<std::size_t> open_files_{0};
  OpenDirs open_dirs_;
  std::atomic<bool> kernel_caches_symlinks_{false};
  std::atomic<bool> kernel_acls_{false};
  Passthrough* passthrough_ = nullptr;
  bool direct_allowed_ = false;
  std::atomic<bool> initialized_{false};
  daemon::ShardedCounter direct_count_;
  daemon::ShardedCounter kept_texts_;
  const QuietAtime* quiet_atime_ = nullptr;
  bool quiet_files_ = false;
  std::mutex setid_mu_;
  std::unordered_set<fuse_ino_t> setid_notices_;  // at most kMaxSetidNotices
  std::atomic<std::size_t> setid_notice_count_{0};

  fuse_session* session_ = nullptr;
  daemon::MountState::Subscription rules_changes_;  // calls on_rules_changed while attached
  std::mutex inval_mu_;
  std::condition_variable inval_cv_;
  bool inval_pending_ = false;
  bool inval_stop_ = false;
  std::thread inval_thread_;
};

inline Filesystem& fs_of(fuse_req_t req) { return *static_cast<Filesystem*>(fuse_req_userdata(req)); }

// The path through /proc/self/fd that reaches an O_PATH descriptor's file,
// for the syscalls that have no *at() form taking an O_PATH descriptor.
// c_str() is the whole path; the *at() calls take dir() and name(), the
// descriptor's number in /proc/self/fd held open once per process, which
// walks one component instead of four (open+close measured 1.73 against
// 2.39 us). Without /proc/self/fd open (a child of fork: what it inherits
// names its parent's table) dir() is AT_FDCWD and name() the whole path.
struct ProcFdPath {
  explicit ProcFdPath(int fd);
  const char* c_str() const noexcept { return buf; }
  int dir() const noexcept { return dir_; }
  const char* name() const noexcept { return name_; }
  char buf[32];

 private:
  int dir_;
  const char* name_;
};

}  // namespace vsymfs::fs
