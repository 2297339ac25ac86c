// Per-thread filesystem identity. Each FUSE worker runs an operation with the
// caller's fsuid, fsgid and supplementary groups, so the source filesystem
// checks permissions and assigns ownership as it would for the caller, and
// with only the capabilities that caller may use:
//   - a root caller (uid 0) gets the daemon's capabilities;
//   - any other caller gets none in effect. A non-zero fsuid already clears
//     the file-system capabilities (CAP_DAC_OVERRIDE, CAP_FOWNER, ...), but
//     not CAP_SYS_RESOURCE (reserved blocks, quota limits), CAP_SYS_PTRACE
//     (/proc/PID files inside SOURCE), CAP_SYS_ADMIN, CAP_SETFCAP and the
//     rest: those are dropped from the effective set too. The permitted set
//     is kept, so the thread can take them back for daemon work.
//
// Only the raw syscalls (and libcap's cap_set_proc, which is capset on the
// calling thread) do this per thread: glibc's setgroups/setfsuid wrappers
// broadcast the change to every thread of the process. A thread remembers
// what it last set and skips the syscalls when the next request comes from
// the same identity (the common case).
//
// Changing fs ids needs CAP_SETUID and CAP_SETGID in effect, so a switch
// between two non-root callers raises those two for the duration of the
// switch. The kernel itself drops the file-system capabilities from the
// effective set when the fsuid leaves 0 and raises them when it returns to
// 0; the thread's record of its capability set accounts for that.
//
// The FUSE workers switch with ThreadIdentity::become for each request;
// the control server runs a client's explain probes in a
// ScopedCallerIdentity. Daemon work inside a caller's request runs in a
// scope:
//   - ScopedDaemonIdentity: the daemon's ids and capabilities
//     (open_by_handle_at needs CAP_DAC_READ_SEARCH);
//   - ScopedBackingIdentity: registering a passthrough backing file
//     (passthrough.hpp), with credentials that hold no privilege the
//     backing file's I/O could use;
//   - ScopedAdminCapability: CAP_SYS_ADMIN alone, keeping the ids (closing
//     a backing id).
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <span>
#include <vector>

namespace vsymfs::daemon {

struct FsIds {
  uid_t uid = 0;
  gid_t gid = 0;
  std::vector<gid_t> groups;
};

// The ids a filesystem keeps a reserve of blocks for (ext4 and f2fs:
// resuid, and resgid unless it is 0; defaults 0 and 0), as far as known.
struct ReservedFor {
  bool known = false;  // false: treat every id as one the reserve may be for
  bool any = false;    // the filesystem keeps a reserve for some ids at all
  uid_t uid = 0;
  gid_t gid = 0;       // 0: none for a group
};

// The ids a backing file is registered with where the caller's own would
// be given a reserve: no user's or group's (the highest valid id, 2^32 - 2;
// 65534 may be a resuid).
inline constexpr uid_t kBackingUid = 4294967294u;
inline constexpr gid_t kBackingGid = 4294967294u;

class ThreadIdentity {
 public:
  // Records the daemon's own identity and capabilities (call once, before
  // any worker starts). Returns false when the daemon cannot switch
  // identities (not root): then every switch is a no-op and operations run
  // as the daemon.
  static bool init();
  static bool can_switch() noexcept;

  // Makes this thread's fs credentials uid/gid/groups, with the daemon's
  // capabilities in effect for uid 0 and none for any other uid. Returns 0
  // or an errno.
  static int become(uid_t uid, gid_t gid, std::span<const gid_t> groups);
  // The daemon's own identity and capabilities.
  static int become_daemon();
  // Whether this thread already has fsuid `uid` and fsgid `gid` with the
  // capabilities become() gives them (always true when switching is off):
  // what it reads of /proc now, it reads as that caller would.
  static bool is(uid_t uid, gid_t gid) noexcept;

  // How many fs id switches and how many capability changes (capset) this
  // thread made (tests, cost measurements).
  static unsigned long switches() noexcept;
  static unsigned long capability_changes() noexcept;

  // Makes `mask` the umask the source filesystem applies to what this thread
  // creates. The first call gives the thread a umask of its own
  // (unshare(CLONE_FS)), so one caller's umask never reaches a creation in
  // another thread; later calls skip the syscall when the mask is unchanged.
  // Returns 0 or an errno (then nothing changed).
  static int use_umask(mode_t mask);
};

// Runs a scope as a caller (ThreadIdentity::become), then puts the thread's
// previous identity back (the daemon's, for a thread that never switched).
// A no-op without the right to switch (a daemon not run as root). The
// control server probes @sys candidates for a client's explain in one, so
// they reveal nothing the client could not stat itself.
class ScopedCallerIdentity {
 public:
  ScopedCallerIdentity(uid_t uid, gid_t gid, std::span<const gid_t> groups);
  ~ScopedCallerIdentity();
  ScopedCallerIdentity(const ScopedCallerIdentity&) = delete;
  ScopedCallerIdentity& operator=(const ScopedCallerIdentity&) = delete;

 private:
  bool switched_ = false;
  bool known_ = false;
  FsIds saved_;
  std::uint8_t saved_caps_ = 0;
};

// Runs a scope with the daemon's identity and capabilities, then puts the
// thread's previous identity back.
class ScopedDaemonIdentity {
 public:
  ScopedDaemonIdentity();
  ~ScopedDaemonIdentity();
  ScopedDaemonIdentity(const ScopedDaemonIdentity&) = delete;
  ScopedDaemonIdentity& operator=(const ScopedDaemonIdentity&) = delete;

 private:
  bool switched_ = false;
  FsIds saved_;
  std::uint8_t saved_caps_ = 0;
};

// Runs a scope with the credentials a backing file is registered with: the
// kernel records the registering thread's credentials with it and does
// every passthrough read and write with them, for whoever opened the file.
// CAP_SYS_ADMIN (the ioctl requires it) is the only capability in effect,
// and the fs ids are the thread's own except where `reserve` would grant
// them something: a uid it is kept for becomes kBackingUid, and a gid or
// group it is kept for makes the gid kBackingGid with no supplementary
// groups. So the common case costs two capset calls and no id switch.
// ok() is false when the switch failed (then no backing file may be
// registered), and without the right to switch (a daemon not run as root).
class ScopedBackingIdentity {
 public:
  explicit ScopedBackingIdentity(const ReservedFor& reserve);
  ~ScopedBackingIdentity();
  ScopedBackingIdentity(const ScopedBackingIdentity&) = delete;
  ScopedBackingIdentity& operator=(const ScopedBackingIdentity&) = delete;
  bool ok() const noexcept { return ok_; }

 private:
  bool ok_ = false;
  bool restore_ = false;
  bool known_ = false;
  bool ids_changed_ = false;
  FsIds saved_;
  std::uint8_t saved_caps_ = 0;
};

// Runs a scope with CAP_SYS_ADMIN in effect (the fs ids unchanged), when the
// thread does not already have it.
class ScopedAdminCapability {
 public:
  ScopedAdminCapability();
  ~ScopedAdminCapability();
  ScopedAdminCapability(const ScopedAdminCapability&) = delete;
  ScopedAdminCapability& operator=(const ScopedAdminCapability&) = delete;

 private:
  std::uint8_t saved_caps_ = 0;
  bool restore_ = false;
};

}  // namespace vsymfs::daemon
