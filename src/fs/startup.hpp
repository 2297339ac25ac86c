// Startup before the daemon serves: the exit statuses, the checks of SOURCE
// and MOUNTPOINT, and detaching into the background. Everything that can
// fail at startup (arguments, SOURCE, MOUNTPOINT, rules, mount, control
// socket) fails before the daemon detaches, with one line on stderr and a
// distinct exit status.
#pragma once

#include <string>

#include "fs/options.hpp"
#include "vsymfs/unique_fd.hpp"

namespace vsymfs::fs {

// Exit statuses (vsymfs(8), EXIT STATUS).
enum Exit : int {
  kOk = 0,
  kUsage = 1,       // bad command line or mount options
  kPaths = 2,       // SOURCE or MOUNTPOINT unusable
  kRules = 3,       // the rules file cannot be loaded
  kMount = 4,       // the kernel refused the mount
  kControl = 5,     // the control socket cannot be served
  kInternal = 6,    // anything else at startup
};

// Why SOURCE or MOUNTPOINT cannot be used ("" when they can): missing, not
// directories, MOUNTPOINT inside SOURCE, or already a vsymfs mount.
std::string check_paths(const Options& o);

// Daemonizing: reports the outcome of startup to whoever started us. In the
// background the parent waits for the child's verdict on a pipe, so `mount`
// and fstab see the real error and status, not just "forked".
class Startup {
 public:
  // Forks when !foreground; returns only in the process that goes on.
  explicit Startup(bool foreground);
  Startup(const Startup&) = delete;
  Startup& operator=(const Startup&) = delete;

  // Reports `message` with `status` (to the waiting parent, else on
  // stderr) and exits at once: no destructor runs.
  [[noreturn]] void fail(int status, const std::string& message);

  // Detaches from the terminal and lets the parent exit 0.
  void succeeded();

 private:
  UniqueFd pipe_;
};

}  // namespace vsymfs::fs
