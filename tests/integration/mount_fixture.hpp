// A real vsymfs mount in a temporary directory, for integration tests.
#pragma once

#include <sys/types.h>

#include <functional>
#include <string>
#include <vector>

#include "common/temp_dir.hpp"

namespace vsymfs::testing {

struct MountOptions {
  std::string rules_text;             // written to a rules file when non-empty
  std::vector<std::string> extra_opts;  // more -o options, e.g. "single_user"
  std::vector<std::string> extra_args;  // more command-line arguments
  unsigned long nofile_limit = 0;       // RLIMIT_NOFILE (soft and hard) for the daemon; 0 = inherit
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

 private:
  // Removed after ~Mount has unmounted, and also when the constructor throws.
  vsymfs::test::TempDir tmp_;
  std::string src_, mnt_, rules_, log_;
  pid_t pid_ = -1;
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

// fork+exec a command as a user, capture stdout. Returns exit status via *status.
std::string capture_as(const As& who, const std::vector<std::string>& argv, int* status = nullptr);

// Path of the vsymfs / vsymctl binaries under test (from the environment).
std::string vsymfs_bin();
std::string vsymctl_bin();

}  // namespace vsymfs::testing
