// The vsymfs command line: `vsymfs [options] SOURCE MOUNTPOINT`, libfuse style,
// so the same words work from a shell and from fstab through mount.fuse3
// (which calls `vsymfs SOURCE MOUNTPOINT -o opts`: options may follow the
// positionals). Our own -o options are taken out; every other -o option is a
// mount option and goes to libfuse untouched.
#pragma once

#include <cstddef>
#include <string>
#include <vector>

#include "daemon/mount_config.hpp"
#include "vsymfs/result.hpp"

namespace vsymfs::fs {

// Worker threads by default: one per online CPU, at least 2. The kernel
// wakes an idle worker for each request in turn (the longest-idle first), so
// workers beyond the CPUs only add cross-CPU wake-ups; measured on 2 cores
// (metabench, side by side, 7 repetitions, medians): 2 workers gave 1.5-1.9x
// the 2-process readlink, open+read+close and stat-through-a-link rates of 4
// workers (perf: a quarter of the daemon's time in runqueue spinlocks under
// fuse_dev_do_read), 3 workers 1.1-1.2x; 1-process rates within noise.
// A slow operation still cannot stall the mount: /proc reads run on their own
// helper threads with a time limit, and locks are kept by the kernel.
unsigned default_max_threads() noexcept;

// How evicted inodes are found again: file handles where SOURCE's can be
// trusted (Auto), always (-o handles), never (-o no_handles).
enum class HandleOption { Auto, On, Off };

// How requests travel between the kernel and the daemon (uring_transport.hpp).
enum class UringMode {
  automatic,  // io_uring when the kernel offers it at mount time, else /dev/fuse
  on,         // -o uring: io_uring or no mount
  off,        // -o no_uring: /dev/fuse only
};

// The mount's configuration the daemon's objects share (daemon::MountConfig:
// source, mountpoint, rules_path, rules_path_explicit, builtin_rules,
// entry_timeout), and what only the FUSE layer and startup use.
struct Options : daemon::MountConfig {
  bool single_user = false;        // -o single_user: never switch identity
  bool daemon_nss = false;         // -o daemon_nss: containers' names from our NSS too
  std::size_t fd_budget = 0;       // -o fd_budget=N (0 = derived from RLIMIT_NOFILE)
  std::string socket_path;         // -o socket=PATH ("" = derived from the mountpoint)
  std::string state_path;          // -o state=PATH ("" = derived from the mountpoint)
  unsigned max_threads = default_max_threads();  // -o threads=N
  double attr_timeout = 1.0;       // -o attr_timeout=S
  double negative_timeout = 0.0;   // -o negative_timeout=S
  HandleOption handles = HandleOption::Auto;  // -o handles / -o no_handles
  bool passthrough = true;         // -o passthrough / -o nopassthrough: kernel passthrough file I/O
  bool acl = false;                // -o acl / -o noacl: the kernel enforces POSIX ACLs of SOURCE
  UringMode uring = UringMode::automatic;  // -o uring / -o no_uring
  // -o uring_linger=USEC: how long a ring thread keeps its CPU after a
  // reply, waiting for its caller's next request (0: sleeps at once).
  unsigned uring_linger_us = 20;
  // -o dev_linger=USEC: how long the /dev/fuse reader keeps reading after a
  // reply while one caller at a time asks (dev_loop.hpp; 0: libfuse's loop).
  unsigned dev_linger_us = 50;
  std::size_t environ_cache = std::size_t{32} << 20;  // -o environ_cache=BYTES[k|m|g]: kept environments

  // Mount options that also reach libfuse: SOURCE's atimes must follow them
  // (atime.hpp).
  bool noatime = false;     // -o noatime
  bool nodiratime = false;  // -o nodiratime (implied by noatime)
  bool allow_root = false;  // -o allow_root: libfuse refuses users other than the owner and root

  bool foreground = false;  // -f
  bool debug = false;       // -d (implies -f)
  bool single_thread = false;  // -s
  bool show_help = false;      // -h, --help
  bool show_version = false;   // -V, --version

  // Mount options for libfuse, comma-joined (always with default_permissions,
  // fsname=SOURCE and subtype=vsymfs unless given).
  std::string fuse_mount_options;
};

// Parses argv (argv[0] excluded). Errors (EINVAL) name the offending word.
// With --help or --version the positionals are not required.
Result<Options> parse_options(const std::vector<std::string>& args);

// The text `vsymfs --help` prints.
std::string usage_text();

}  // namespace vsymfs::fs
