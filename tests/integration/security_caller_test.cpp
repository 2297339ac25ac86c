// Issue 18, findings 4 and 6, performed through a real mount:
//  - a set-group-id program and a file-capability program that a user runs
//    get neither that user's environment nor the values the user set with
//    `vsymctl set`; they get the administrator's [user.NAME] table and the
//    scopes below it (the user's own programs still get the user's values).
#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <pwd.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "child_process.hpp"
#include "mount_fixture.hpp"

namespace vsymfs::testing {
namespace {

namespace fs = std::filesystem;

struct User {
  std::string name;
  uid_t uid = 0;
  gid_t gid = 0;
};

User ensure_user(const std::string& name) {
  if (::getpwnam(name.c_str()) == nullptr) {
    const std::string cmd = "useradd -M -s /usr/sbin/nologin " + name + " >/dev/null 2>&1";
    if (std::system(cmd.c_str()) != 0) ADD_FAILURE() << "cannot create test user " << name;
  }
  const passwd* pw = ::getpwnam(name.c_str());
  if (pw == nullptr) return {name, 0, 0};
  return {name, pw->pw_uid, pw->pw_gid};
}

std::string reader_bin() {
  const char* p = std::getenv("VSYMFS_SECURE_READER");
  return p != nullptr ? p : "";
}

// vsymctl as a user; its exit status and output.
struct Ctl {
  int status = -1;
  std::string out;
};
Ctl ctl(const User& u, const std::string& mnt, std::vector<std::string> args) {
  args.insert(args.begin(), {vsymctl_bin(), "--mount", mnt});
  Ctl r;
  r.out = capture_as(As{u.uid, u.gid, {}, {}, false}, args, &r.status);
  return r;
}

// ---------------------------------------------------------------------------
// Finding 4: set-id and file-capability programs get user-chosen values.

const char* kSecureRules = R"(
[syntax]
undefined = "literal"

[user.vsymfs-alice]
ADMIN_CONF = "admin.conf"
)";

class SecureCallers : public ::testing::Test {
 protected:
  void SetUp() override {
    if (reader_bin().empty()) GTEST_SKIP() << "VSYMFS_SECURE_READER is not set (run through meson)";
    alice_ = ensure_user("vsymfs-alice");
    bob_ = ensure_user("vsymfs-bob");
    ASSERT_NE(alice_.uid, 0u);
    ASSERT_NE(bob_.gid, alice_.gid) << "the set-group-id test needs a group alice is not in";
    mount_ = std::make_unique<Mount>(MountOptions{kSecureRules, {"state=" + state_.path() + "/state.toml"}, {}});
    // What an administrator writes, reads of configuration chosen by name.
    fs::create_symlink("/etc/app/${CONF}", mount_->src("conf"));
    fs::create_symlink("/etc/app/${ADMIN_CONF}", mount_->src("admin_conf"));
    fs::create_symlink("/home/${USER}", mount_->src("home"));  // identity builtins only
  }

  // A copy of the reader in the mount's temporary directory (reachable by
  // alice), owned by root and `gid`, with `mode`.
  std::string copy_reader(const std::string& name, gid_t gid, mode_t mode) {
    const std::string path = mount_->root() + "/" + name;
    fs::copy_file(reader_bin(), path, fs::copy_options::overwrite_existing);
    EXPECT_EQ(::chown(path.c_str(), 0, gid), 0);
    EXPECT_EQ(::chmod(path.c_str(), mode), 0);  // after chown, which clears set-id bits
    return path;
  }

  // Runs a reader as alice over the three links; its output lines.
  std::vector<std::string> read_as_alice(const std::string& reader, std::vector<std::string> env = {}) {
    Spawn s;
    s.argv = {reader, "readlink", mount_->mnt("conf"), mount_->mnt("admin_conf"), mount_->mnt("home")};
    s.env = std::move(env);
    s.ruid = s.euid = alice_.uid;
    s.gid = alice_.gid;
    s.groups = {alice_.gid};
    const Outcome o = run(s);
    EXPECT_TRUE(o) << reader << ": status " << o.status << (o.timed_out ? " (timed out)" : "") << "\n"
                   << mount_->daemon_log();
    std::vector<std::string> lines;
    std::istringstream in(o.out);
    for (std::string line; std::getline(in, line);) lines.push_back(line);
    return lines;
  }

  User alice_, bob_;
  vsymfs::test::TempDir state_{"vsymfs-sec"};
  std::unique_ptr<Mount> mount_;
};

TEST_F(SecureCallers, SetIdAndCapabilityProgramsIgnoreTheUsersRuntimeValues) {
  // The attack: alice chooses values for names an administrator's links use.
  ASSERT_EQ(ctl(alice_, mount_->mnt(), {"set", "CONF", "../../home/attk/evil.conf"}).status, 0);
  ASSERT_EQ(ctl(alice_, mount_->mnt(), {"set", "ADMIN_CONF", "../../home/attk/evil2.conf"}).status, 0);
  ASSERT_EQ(ctl(alice_, mount_->mnt(), {"set", "USER", "root"}).status, 0);

  // Her own programs follow her choice: it is her view.
  const std::string plain = copy_reader("reader-plain", 0, 0755);
  EXPECT_THAT(read_as_alice(plain), ::testing::ElementsAre("secure=0", "/etc/app/../../home/attk/evil.conf",
                                                           "/etc/app/../../home/attk/evil2.conf", "/home/root"));
  // Her environment too, for the names it is allowed to give.
  EXPECT_THAT(read_as_alice(plain, {"CONF=from-env"}),
              ::testing::ElementsAre("secure=0", "/etc/app/from-env", "/etc/app/../../home/attk/evil2.conf",
                                     "/home/root"));

  // What a secure caller must see: nothing alice chose. CONF is undefined
  // for it (literal policy), ADMIN_CONF is the administrator's [user] table,
  // USER is the builtin.
  const std::vector<std::string> safe = {"/etc/app/${CONF}", "/etc/app/admin.conf", "/home/vsymfs-alice"};

  // A set-group-id program (group bob's, which alice is not in).
  const std::string setgid = copy_reader("reader-setgid", bob_.gid, 02755);
  {
    const auto lines = read_as_alice(setgid, {"CONF=from-env"});
    ASSERT_FALSE(lines.empty());
    ASSERT_EQ(lines[0], "secure=1") << "the kernel did not run the copy set-group-id (nosuid /tmp?)";
    EXPECT_EQ(std::vector<std::string>(lines.begin() + 1, lines.end()), safe) << "set-group-id program";
  }

  // A program with a file capability: real and effective ids are alice's,
  // only AT_SECURE (and its capability sets) say it is privileged.
  if (::access("/usr/sbin/setcap", X_OK) != 0 && ::access("/sbin/setcap", X_OK) != 0)
    GTEST_SKIP() << "setcap is not installed (Debian: libcap2-bin); the file-capability half did not run";
  const std::string capped = copy_reader("reader-cap", 0, 0755);
  const std::string setcap = "setcap cap_net_raw+ep '" + capped + "' 2>&1";
  ASSERT_EQ(std::system(setcap.c_str()), 0) << setcap;
  {
    const auto lines = read_as_alice(capped, {"CONF=from-env"});
    ASSERT_FALSE(lines.empty());
    if (lines[0] != "secure=1")
      GTEST_SKIP() << "the file capability did not take (" << lines[0] << "): no cap_net_raw in the bounding set?";
    EXPECT_EQ(std::vector<std::string>(lines.begin() + 1, lines.end()), safe) << "cap_net_raw program";
  }
}

}  // namespace
}  // namespace vsymfs::testing
