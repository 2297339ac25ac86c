// A real vsymfs mount in a temporary directory, for integration tests.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "common/temp_dir.hpp"

namespace vsymfs::testing {

struct MountOptions {
  std::string rules_text;             // written to a rules file when non-empty
  std::vector<std::string> extra_opts;  // more -o options, e.g. "single_user"
  std::vector<std::string> extra_args;  // more command-line arguments
  unsigned long nofile_limit = 0;       // RLIMIT_NOFILE (soft and hard) for the daemon; 0 = inherit
  // Runs in the daemon's process after fork, before exec (e.g. to enter
  // namespaces); only async-signal-safe calls.
  std::function<void()> before_exec;
  std::string source;                   // SOURCE instead of <tmp>/src (src() still names <tmp>/src)
};

class Mount {
 public:
  // Creates <tmp>/src and <tmp>/mnt, writes rules, starts `vsymfs -f` and
  // waits until the mount is up (throws std::runtime_error on failure).
  explicit Mount(const MountOptions& opts = {});
  ~Mount();  // unmounts (fusermount3 -u, then lazy umount), reaps the daemon, removes tmp
  Mount(const Mount&) = delete;
  Mount& operator=(const Mount&) = delete;

  const std::string& root() const { return tmp_.path(); }  // temporary directory
  const std::string& src() const { return src_; }    // SOURCE
  const std::string& mnt() const { return mnt_; }    // MOUNTPOINT
  const std::string& rules_path() const { return rules_; }
  std::string src(const std::string& rel) const { return src_ + "/" + rel; }
  std::string mnt(const std::string& rel) const { return mnt_ + "/" + rel; }
  pid_t daemon_pid() const { return pid_; }
  // What the daemon wrote to stderr so far.
  std::string daemon_log() const;
  // Unmount and stop the daemon now (idempotent). A daemon that does not exit
  // 0 after SIGTERM (a crash, a sanitizer report, a hang) fails the current test.
  void stop();
  // The same, with `send` (given the daemon's pid) sending the SIGTERM: for
  // a test that must choose how it reaches the daemon.
  void stop_with(const std::function<void(pid_t)>& send);
  // Ends a hung mount as only the kernel can (DEPLOY-FACTS, "When a mount
  // hangs"): writes 1 to /sys/fs/fuse/connections/N/abort (mounting fusectl
  // there for the moment if it is not), which fails every request waiting
  // on this mount, then detaches the mount. Safe from any thread, and
  // touches nothing of the mount itself. True when the abort was written.
  bool abort_connection();
  bool aborted() const { return aborted_.load(); }

 private:
  // Removed after ~Mount has unmounted, and also when the constructor throws.
  vsymfs::test::TempDir tmp_;
  std::string src_, mnt_, rules_, log_;
  pid_t pid_ = -1;
  dev_t dev_ = 0;  // the mount's device: its FUSE connection number
  std::atomic<bool> aborted_{false};
};

// Aborts the connections of `mounts` (Mount::abort_connection) unless
// disarmed within `limit`: a test that might hang a mount holds one for as
// long as it touches the mount, so a hang fails the test instead of
// wedging the machine. fired() says whether it had to.
class Watchdog {
 public:
  Watchdog(std::vector<Mount*> mounts, std::chrono::milliseconds limit);
  ~Watchdog();  // disarms
  Watchdog(const Watchdog&) = delete;
  Watchdog& operator=(const Watchdog&) = delete;
  void disarm();
  bool fired() const { return fired_.load(); }

 private:
  std::vector<Mount*> mounts_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool disarmed_ = false;
  std::atomic<bool> fired_{false};
  std::thread thread_;
};

// Runs `fn` in a forked child with the given identity (setgroups, setresgid,
// setresuid; then optional environment) and returns its exit status (0 =
// success). The child reports failures through its exit code; `fn` returns
// an int exit code.
struct As {
  uid_t uid = 0;
  gid_t gid = 0;
  std::vector<gid_t> groups;
  std::vector<std::string> env;  // "K=V": replaces the environment when non-empty
  bool keep_env = false;         // keep ours and add env on top
};
int run_as(const As& who, const std::function<int()>& fn);

// fork+exec a command as a user, capture its stdout until it exits (what
// processes it leaves running write later is not waited for). Returns exit
// status via *status (128 + signal when killed, -1 when it could not be
// started). A command without a slash is looked up in $PATH as execvpe(3)
// does. A command that has not finished within `limit` is killed and the
// test fails. Safe while other threads of the test run: the child makes
// only system calls before execve.
std::string capture_as(const As& who, const std::vector<std::string>& argv, int* status = nullptr,
                       std::chrono::seconds limit = std::chrono::seconds(120));

// Path of the vsymfs / vsymctl binaries under test (from the environment).
std::string vsymfs_bin();
std::string vsymctl_bin();
// Whether this is the suite's io_uring run (VSYMFS_TEST_URING=1, set by
// with_uring): every Mount then asks for -o uring before its own options.
bool uring_run();

// Sends SIGSTOP to `pid` and waits (up to 30 s) until every thread of it
// has stopped. kill() returns before the stop has reached each thread, and
// a thread still running may answer one more request; a test that needs a
// daemon that answers nothing waits for this. io_uring's kernel workers
// (iou-*) take no signals and are not waited for. False on timeout.
bool stop_and_wait(pid_t pid);

// Whether this build is the AddressSanitizer one (scripts/test's second
// pass): the test and the daemon it mounts come from the same build.
// ASan's allocator pads every block and keeps freed ones in a quarantine
// (256 MB by default), so there the daemon's RSS says nothing about its own
// memory use: the tests that bound RSS check the bound in the plain build's
// run and only report the number in this one (everything else they check
// runs in both).
#if defined(__SANITIZE_ADDRESS__)
inline constexpr bool kAddressSanitizerBuild = true;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
inline constexpr bool kAddressSanitizerBuild = true;
#else
inline constexpr bool kAddressSanitizerBuild = false;
#endif
#else
inline constexpr bool kAddressSanitizerBuild = false;
#endif

}  // namespace vsymfs::testing
