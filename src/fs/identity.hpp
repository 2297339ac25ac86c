// Per-thread filesystem identity. Each FUSE worker runs an operation with the
// caller's fsuid, fsgid and supplementary groups, so the source filesystem
// checks permissions and assigns ownership as it would for the caller.
//
// Only the raw syscalls do this per thread: glibc's setgroups/setfsuid
// wrappers broadcast the change to every thread of the process. A thread
// remembers what it last set and skips the syscalls when the next request
// comes from the same identity (the common case).
//
// The subtle part: a non-zero fsuid clears the thread's effective
// filesystem capabilities (CAP_DAC_READ_SEARCH among them), and
// open_by_handle_at needs CAP_DAC_READ_SEARCH. Descriptors are therefore
// materialised under ScopedDaemonIdentity, which switches back to the
// daemon's own identity (getting the capabilities back) and restores the
// caller's identity afterwards.
#pragma once

#include <sys/types.h>

#include <span>
#include <vector>

namespace vsymfs::fs {

struct FsIds {
  uid_t uid = 0;
  gid_t gid = 0;
  std::vector<gid_t> groups;
};

class ThreadIdentity {
 public:
  // Records the daemon's own identity (call once, before any worker starts).
  // Returns false when the daemon cannot switch identities (not root): then
  // every switch is a no-op and operations run as the daemon.
  static bool init();
  static bool can_switch() noexcept;

  // Makes this thread's fs credentials uid/gid/groups. Returns 0 or an errno.
  static int become(uid_t uid, gid_t gid, std::span<const gid_t> groups);
  // The daemon's own identity.
  static int become_daemon();

  // How many identity switches this thread made (tests / debug logs).
  static unsigned long switches() noexcept;

  // Makes `mask` the umask the source filesystem applies to what this thread
  // creates. The first call gives the thread a umask of its own
  // (unshare(CLONE_FS)), so one caller's umask never reaches a creation in
  // another thread; later calls skip the syscall when the mask is unchanged.
  // Returns 0 or an errno (then nothing changed).
  static int use_umask(mode_t mask);
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
};

}  // namespace vsymfs::fs
