// Kernel FUSE passthrough (Linux 6.9+, CONFIG_FUSE_PASSTHROUGH): read, write
// and mmap of an open file go from the kernel straight to a "backing file"
// on SOURCE, without a round trip through the daemon.
//
// libfuse 3.14 predates passthrough (3.17 added it), so this drives the
// protocol itself through fuse_session_custom_io():
//   - the read hook sees every request: it notes whether the kernel offered
//     FUSE_PASSTHROUGH in INIT (and counts READ/WRITE requests that still
//     reach the daemon, the proof that passthrough is on);
//   - the writev hook patches the INIT reply (flags2 |= passthrough,
//     max_stack_depth) and the OPEN/CREATE replies that ops_file marked
//     (open_flags |= FOPEN_PASSTHROUGH, backing_id).
// A mark is per thread: libfuse sends a reply synchronously from the worker
// thread that calls fuse_reply_open/create, so the next reply that thread
// writes after ReplyMark is set is that open's reply; no table keyed by
// request id is needed and the hooks take no lock.
//
// The kernel's rules (fs/fuse/iomode.c) shape the registry: all concurrent
// opens of one inode must name the same backing file, and passthrough and
// cached (plain FUSE) opens of one inode cannot coexist (the open fails with
// EIO). So each inode in use has one mode, fixed by its first open, and a
// backing id closed when its last open is released.
//
// Whose credentials. The kernel records the credentials of the thread that
// registers a backing file (fs/fuse/backing.c: prepare_creds() in the
// FUSE_DEV_IOC_BACKING_OPEN ioctl) and performs every passthrough read and
// write of the inode with them, for every process that has it open. One
// inode has one backing file at a time, so those credentials cannot be each
// opener's; they must be ones that give no opener anything. A backing file
// is registered with CAP_SYS_ADMIN (the ioctl requires it) as the only
// capability in effect, and with the opener's fs ids except where the
// filesystem keeps reserved blocks for them (ext4 and f2fs: resuid, 0 by
// default, and resgid), which are replaced by ids of no one
// (ScopedBackingIdentity, reserve_of). A write through a backing file can
// then never draw on a reserve kept for root, a uid or a gid, exceed a quota
// limit (CAP_SYS_RESOURCE) or keep set-id bits (CAP_FSETID), whoever opened
// the file first. Permissions are checked at open, by the kernel and by the
// daemon opening the file as the caller; vfs_open of a backing file checks
// none. Passthrough is used only on local filesystems whose writes consult
// nothing else of the writer's credentials (may_use_backing_files); on a
// network filesystem (NFS, CIFS) the server would see the registrant as
// the writer, so there every open uses plain FUSE I/O.
#pragma once

#define FUSE_USE_VERSION 314
#include <fuse3/fuse_lowlevel.h>

#include <sys/types.h>

#include <sys/stat.h>

#include <array>
#include <atomic>
#include <cstdint>
#include <mutex>
#include <string>
#include <unordered_map>

#include "daemon/identity.hpp"
#include "vsymfs/result.hpp"

namespace vsymfs::fs {

class Passthrough {
 public:
  // Whether this process may register backing files: the kernel requires
  // CAP_SYS_ADMIN (in the initial user namespace) for the ioctl.
  static Result<void> check_capability();

  // Whether files on a filesystem of this statfs type may be backing files:
  // ext2/3/4, xfs, btrfs, f2fs, tmpfs and overlayfs (whose writes use the
  // mounter's credentials anyway). Their writes consult the writer's
  // credentials only for reserves, quotas and set-id bits, which the
  // backing identity never has.
  static bool may_use_backing_files(long fs_type) noexcept;

  // `source` decides max_stack_depth: a backing file's filesystem must be
  // stacked less deeply than that (overlayfs is depth 1 already).
  explicit Passthrough(const std::string& source);
  Passthrough(const Passthrough&) = delete;
  Passthrough& operator=(const Passthrough&) = delete;

  // Routes the session's request reads and reply writes through the hooks.
  // Call after fuse_session_mount and before the loop. The session's
  // userdata must be the Filesystem that owns this object.
  Result<void> install(fuse_session* se);
  // Instead of install(), for a transport that owns the session's hooks
  // (uring_transport.hpp) and calls the two below on every request it reads
  // and every reply before it is sent.
  void attach(fuse_session* se) noexcept { dev_fd_ = fuse_session_fd(se); }
  void on_request(const void* buf, size_t len);
  void on_reply(struct iovec* iov, int count);

  // True from the INIT reply on when the kernel offered passthrough and we
  // turned it on. Never goes back to false: the registry then tracks every
  // open, so releases always find what their open recorded.
  bool enabled() const noexcept { return enabled_.load(std::memory_order_acquire); }

  // An open file, as ops_file has it.
  struct OpenedFile {
    int fd = -1;
    int flags = 0;                   // the open flags
    const struct stat* st = nullptr;  // its fstat, when the caller has one
    long fs_type = 0;                // its statfs f_type, 0 when not known yet
    off_t size_seen = -1;            // Inode::size_seen(), -1 when not known
  };

  // Decides how an open of `nodeid` does I/O and records it: the first open
  // of an inode picks passthrough for a regular file on a local filesystem
  // (may_use_backing_files) without set-id bits that is opened for writing
  // or is not small; later opens follow it while any is open. Every acquire
  // is paired with one release(nodeid). Returns the backing id to put in
  // the reply, or 0 for plain FUSE read/write.
  int acquire(std::uint64_t nodeid, const OpenedFile& file);
  void release(std::uint64_t nodeid);
  // Whether `nodeid` does I/O through a backing file and has been opened
  // for writing since its first open: a shared mapping of it may be
  // written, which changes its times in SOURCE with no request to the
  // daemon and no notice to the kernel. One atomic load when no inode is.
  bool written_directly(std::uint64_t nodeid) noexcept;

  // While alive, the calling thread's next OPEN/CREATE reply carries
  // FOPEN_PASSTHROUGH and `backing_id` (no effect for 0).
  class ReplyMark {
   public:
    explicit ReplyMark(int backing_id) noexcept;
    ~ReplyMark();
    ReplyMark(const ReplyMark&) = delete;
    ReplyMark& operator=(const ReplyMark&) = delete;
  };

  // What happened so far, for the log and tests.
  std::uint64_t reads_seen() const noexcept { return reads_seen_.load(std::memory_order_relaxed); }
  std::uint64_t writes_seen() const noexcept { return writes_seen_.load(std::memory_order_relaxed); }
  std::uint64_t backing_files_opened() const noexcept { return backing_opened_.load(std::memory_order_relaxed); }
  std::string summary() const;  // "passthrough " + status(), for the log
  std::string status() const;   // "on; N backing files opened; ...", for vsymctl status

 private:
  struct InodeIo {
    int backing_id = 0;       // 0: the inode's opens use plain FUSE I/O
    std::uint32_t opens = 0;  // opens replied to and not yet released
    bool writable = false;    // with a backing file, and opened for writing
  };
  struct Shard {
    std::mutex mu;
    std::unordered_map<std::uint64_t, InodeIo> inodes;
  };

  static ssize_t read_hook(int fd, void* buf, size_t len, void* userdata);
  static ssize_t writev_hook(int fd, struct iovec* iov, int count, void* userdata);
  int open_backing(int fd, const daemon::ReservedFor& reserve);
  daemon::ReservedFor reserve_of(dev_t dev, long fs_type);
  void close_backing(int backing_id);
  Shard& shard_of(std::uint64_t nodeid) noexcept;

  int dev_fd_ = -1;
  std::uint32_t max_stack_depth_ = 1;
  std::atomic<bool> enabled_{false};
  std::atomic<bool> registering_{true};  // cleared when the kernel refuses backing files for good
  std::atomic<bool> init_seen_{false};
  std::atomic<bool> kernel_offers_{false};
  std::atomic<std::uint64_t> init_unique_{0};
  std::atomic<bool> logged_file_refusal_{false};
  std::atomic<bool> logged_identity_failure_{false};
  std::atomic<std::uint64_t> reads_seen_{0};
  std::atomic<std::uint64_t> writes_seen_{0};
  std::atomic<std::uint64_t> backing_opened_{0};
  std::atomic<std::uint64_t> writable_inodes_{0};  // InodeIo::writable ones
  std::array<Shard, 16> shards_;  // a power of two
  std::mutex reserves_mu_;  // after a shard's mutex
  std::unordered_map<dev_t, daemon::ReservedFor> reserves_;  // by device, read once
};

}  // namespace vsymfs::fs
