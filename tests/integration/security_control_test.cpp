// The rules file against an attacker, through a real mount (issue 18: the
// rules file hardening). Each test performs the attack; each failed on the
// daemon before the fix.
#include <fcntl.h>
#include <linux/sched.h>
#include <poll.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <chrono>
#include <climits>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "child_process.hpp"
#include "mount_fixture.hpp"

namespace vsymfs::testing {
namespace {

using ::testing::HasSubstr;
using Clock = std::chrono::steady_clock;

constexpr uid_t kAttacker = 65534;

const char* kRules = R"(
[syntax]
undefined = "literal"
[universe]
names = ["att", "ucb"]
default = "att"
env = "UNIVERSE"
[vars]
WHERE = "d1"
)";

class SecurityControl : public ::testing::Test {
 protected:
  void SetUp() override {
    mount_ = std::make_unique<Mount>(MountOptions{kRules, {"state=" + state_.path() + "/state.toml"}, {}});
  }
  Mount& m() { return *mount_; }

  const vsymfs::test::TempDir state_{"vsymfs-secctl"};
  std::unique_ptr<Mount> mount_;
};

// Hardening: a root daemon took a rules file another user owns, and reloaded
// it whenever that user changed it ([locked] values included). Now it refuses
// such a file, as sshd does, at start and at every reload.
TEST_F(SecurityControl, ARulesFileAnotherUserCanWriteIsRefused) {
  mount_.reset();
  const vsymfs::test::TempDir tree{"vsymfs-secctl-rules", 0755, "/tmp"};
  const std::string src = tree.path() + "/src", mnt = tree.path() + "/mnt", rules = tree.path() + "/rules.toml";
  std::filesystem::create_directories(src);
  std::filesystem::create_directories(mnt);
  std::ofstream(rules) << "[locked]\nWHERE = \"attacker's\"\n";
  ASSERT_EQ(::chown(rules.c_str(), kAttacker, kAttacker), 0);
  Spawn daemon{{vsymfs_bin(), "-f", "-o", "allow_other,rules=" + rules, src, mnt}, {}};
  daemon.before_exec = [] { ::dup2(1, 2); };  // its log, on stderr, into what we capture
  daemon.timeout_ms = 20'000;
  const Outcome refused = run(daemon);
  ::umount2(mnt.c_str(), MNT_DETACH);  // had it mounted (the old daemon did), leave nothing behind
  EXPECT_FALSE(refused.timed_out) << "the daemon mounted with a rules file of uid " << kAttacker;
  EXPECT_EQ(refused.status, 3) << refused.out;  // kRules: the rules file cannot be loaded
  EXPECT_THAT(refused.out, HasSubstr("refusing rules file " + rules + ": " + rules + " belongs to uid 65534"));
}

// The same at a reload: a rules file that becomes writable by another user
// is not taken, not by the watcher, not by `vsymctl reload`; the old rules
// stay in force.
TEST_F(SecurityControl, ARulesFileThatBecomesWritableByAnotherUserIsNotReloaded) {
  ASSERT_EQ(::symlink("${WHERE}", m().src("w").c_str()), 0);
  ASSERT_EQ(run({{"/usr/bin/readlink", m().mnt("w")}, {}}).out, "d1\n");
  ASSERT_EQ(::chown(m().rules_path().c_str(), kAttacker, kAttacker), 0);
  // The attacker edits the file in place; the daemon sees the change.
  Spawn edit{{"/bin/sh", "-c", "printf '[locked]\\nWHERE = \"evil\"\\n' > " + m().rules_path()},
             {}, kAttacker, kAttacker, kAttacker};
  ASSERT_TRUE(run(edit)) << "the attacker could not write the file";
  const auto deadline = Clock::now() + std::chrono::seconds(20);
  std::string log;
  while (Clock::now() < deadline) {
    log = m().daemon_log();
    if (log.find("rules not reloaded") != std::string::npos || log.find("changed on disk") != std::string::npos)
      break;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  EXPECT_THAT(log, HasSubstr("rules not reloaded, the old rules stay in force: refusing rules file " +
                             m().rules_path()));
  EXPECT_EQ(run({{"/usr/bin/readlink", m().mnt("w")}, {}}).out, "d1\n");
  const Outcome reload = run({{vsymctl_bin(), "--mount", m().mnt(), "reload"}, {}, 0, 0, 0, {}, [] { ::dup2(1, 2); }});
  EXPECT_EQ(reload.status, 1);
  EXPECT_THAT(reload.out, HasSubstr("belongs to uid 65534"));
  EXPECT_EQ(run({{"/usr/bin/readlink", m().mnt("w")}, {}}).out, "d1\n");
}

}  // namespace
}  // namespace vsymfs::testing
