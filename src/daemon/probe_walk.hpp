// Whether an @sys candidate exists, found without ever calling into a FUSE
// filesystem: not our own mount (the request would come back to a worker of
// this daemon, which may be the one waiting, or hold a lock the kernel
// needs), and not anyone else's (a user can mount a FUSE filesystem that
// never answers).
//
// A candidate is a path as the caller would resolve it through the mount:
// relative to the link's directory, or absolute. The walk follows it one
// component at a time with openat2(RESOLVE_NO_XDEV | RESOLVE_NO_MAGICLINKS),
// so every mount crossing shows as EXDEV before anything on the far side is
// asked. At a crossing the walk takes an O_PATH descriptor of the mounted
// root (a path walk and an O_PATH open send nothing to a FUSE server) and
// asks statx for its device with an empty mask and AT_STATX_DONT_SYNC (FUSE
// answers those from the inode, without a request). Then:
//  - our own mount: the walk goes on from SOURCE's root, as the FUSE
//    operations would;
//  - any other FUSE filesystem (mount table type fuse, fuse.*, fuseblk*),
//    or a device the mount table does not list: the walk stops, and the
//    candidate counts as absent;
//  - anything else: the walk goes on.
// Symlinks on the way are read with readlinkat and followed (at most 40);
// a link inside SOURCE is followed by its raw text, as the kernel would
// follow SOURCE's own link (its expansion could need probes itself).
//
// Walks that stay inside SOURCE run on the calling thread: they touch only
// what the operation's own lookups touch. A walk that must leave SOURCE (an
// absolute path elsewhere, `..` above the mount's root, an absolute symlink)
// runs on a probe thread with the caller's credentials, and the caller waits
// at most until a deadline: a filesystem elsewhere that hangs (a dead NFS
// server) holds a probe thread, never a FUSE worker. When every probe thread
// is stuck, further outside walks are refused at once.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace vsymfs::daemon {

// Whose permissions a probe walks with: the caller's filesystem identity.
struct ProbeCredentials {
  uid_t uid = 0;
  gid_t gid = 0;
  std::span<const gid_t> groups;
};

class ProbeWalker {
 public:
  using Clock = std::chrono::steady_clock;

  struct Options {
    std::string source;      // SOURCE, opened once (before the mount covers it)
    std::string mountpoint;  // absolute; targets under it are walked in SOURCE
    unsigned threads = 4;    // probe threads for walks that leave SOURCE (made when needed)
    std::size_t max_queued = 32;
  };

  explicit ProbeWalker(Options opts);
  ~ProbeWalker();
  ProbeWalker(const ProbeWalker&) = delete;
  ProbeWalker& operator=(const ProbeWalker&) = delete;

  // Learns which mount is ours, once it is up (statx of MOUNTPOINT with an
  // empty mask: no request to ourselves). Before that every FUSE mount a
  // walk meets is refused, ours included.
  void note_own_mount();

  enum class Inside : std::uint8_t { Exists, Absent, Leaves };
  // Walks `target` on this thread, with its credentials, as long as it stays
  // inside SOURCE. `dir_fd` is the link's directory in SOURCE (O_PATH is
  // fine); -1 for none (a relative target is then absent).
  Inside inside(int dir_fd, std::string_view target) const;

  enum class Answer : std::uint8_t { Exists, Absent, Unknown };
  // The whole walk, on a probe thread with `creds`, waiting until
  // `deadline` at most: Unknown when it did not finish by then or no probe
  // thread was free.
  Answer anywhere(int dir_fd, std::string_view target, const ProbeCredentials& creds, Clock::time_point deadline);

  struct Stats {
    std::uint64_t outside = 0;    // walks handed to a probe thread
    std::uint64_t abandoned = 0;  // of those: not answered in time, or no thread free
    std::uint64_t refused = 0;    // walks stopped at a FUSE mount or an unknown one
  };
  Stats stats() const;

  struct Core;  // shared with the probe threads, which may outlive this object

 private:
  std::shared_ptr<Core> core_;
};

// For tests: parses /proc/self/mountinfo text into (device, is FUSE) pairs.
struct MountDevice {
  dev_t dev;
  bool fuse;
};
std::vector<MountDevice> parse_mount_devices(std::string_view mountinfo);

}  // namespace vsymfs::daemon
