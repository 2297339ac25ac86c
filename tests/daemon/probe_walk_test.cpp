// ProbeWalker without a mount: real directories, symlinks and /proc. What
// it must never do (call into a FUSE filesystem) needs real mounts and is
// tested in tests/integration/security_test.cpp.
#include "daemon/probe_walk.hpp"
#include "daemon/identity.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <filesystem>
#include <string>

#include <gtest/gtest.h>

#include "common/temp_dir.hpp"

namespace vsymfs::daemon {
namespace {

namespace fs = std::filesystem;
using Inside = ProbeWalker::Inside;
using Answer = ProbeWalker::Answer;

// <T>/src is SOURCE, mounted (by name only: nothing is mounted) on
// <T>/m/mnt, so `..` above SOURCE's root leads to <T>/m for a caller,
// not to <T> where SOURCE really lies.
class ProbeWalkTest : public ::testing::Test {
 protected:
  void SetUp() override {
    fs::create_directories(t("src/dir/amd64_linux26/bin"));
    fs::create_directories(t("m/mnt"));
    fs::create_directories(t("m/x/amd64_linux26"));
    fs::create_directories(t("x/missing_sys"));  // what SOURCE's real parent holds
    fs::create_directories(t("arch/amd64/bin"));
    fs::create_symlink(t("arch/amd64"), t("src/dir/abs_link"));
    fs::create_symlink("amd64_linux26", t("src/dir/rel_link"));
    fs::create_symlink("loop", t("src/dir/loop"));
    fs::create_symlink(t("m/mnt/dir"), t("src/dir/via_mountpoint"));
    dir_ = ::open(t("src/dir").c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC);
    ASSERT_GE(dir_, 0);
    walker_ = std::make_unique<ProbeWalker>(ProbeWalker::Options{t("src"), t("m/mnt")});
  }
  void TearDown() override {
    walker_.reset();
    if (dir_ >= 0) ::close(dir_);
  }

  std::string t(const std::string& rel) const { return tmp_.path() + "/" + rel; }
  Answer anywhere(const std::string& target, int dir = -2) {
    return walker_->anywhere(dir == -2 ? dir_ : dir, target, root_, ProbeWalker::Clock::now() + std::chrono::seconds(10));
  }

  const vsymfs::test::TempDir tmp_{"vsymfs-probe-walk", 0755, "/tmp"};
  int dir_ = -1;
  std::unique_ptr<ProbeWalker> walker_;
  const ProbeCredentials root_{::geteuid(), ::getegid(), {}};
};

TEST_F(ProbeWalkTest, CandidatesInsideSourceAreAnsweredOnTheCallingThread) {
  EXPECT_EQ(walker_->inside(dir_, "amd64_linux26/bin"), Inside::Exists);
  EXPECT_EQ(walker_->inside(dir_, "amd64_linux26"), Inside::Exists);
  EXPECT_EQ(walker_->inside(dir_, "missing_sys/bin"), Inside::Absent);
  EXPECT_EQ(walker_->inside(dir_, "rel_link/bin"), Inside::Exists);           // a relative link inside SOURCE
  EXPECT_EQ(walker_->inside(dir_, "../dir/./amd64_linux26//bin/"), Inside::Exists);  // `..` that stays inside
  EXPECT_EQ(walker_->inside(dir_, "abs_link"), Inside::Exists);               // the link itself, as lstat
  EXPECT_EQ(walker_->inside(dir_, "loop/x"), Inside::Absent);                 // ELOOP, not a hang
  EXPECT_EQ(walker_->inside(-1, "amd64_linux26"), Inside::Absent);            // no directory: nothing known
  // Absolute targets under the mount point are SOURCE's.
  EXPECT_EQ(walker_->inside(-1, t("m/mnt/dir/amd64_linux26/bin")), Inside::Exists);
  EXPECT_EQ(walker_->inside(-1, t("m/mnt/dir/missing_sys")), Inside::Absent);
  EXPECT_EQ(walker_->inside(-1, t("m/mnt")), Inside::Exists);
  EXPECT_EQ(walker_->inside(dir_, "via_mountpoint/amd64_linux26"), Inside::Exists);
}

TEST_F(ProbeWalkTest, CandidatesThatLeaveSourceAreHandedOver) {
  EXPECT_EQ(walker_->inside(dir_, "../../x/amd64_linux26"), Inside::Leaves);  // above the mount's root
  EXPECT_EQ(walker_->inside(dir_, "abs_link/bin"), Inside::Leaves);          // an absolute link
  EXPECT_EQ(walker_->inside(-1, t("arch/amd64")), Inside::Leaves);           // elsewhere
  EXPECT_EQ(walker_->stats().outside, 0u);
}

TEST_F(ProbeWalkTest, AboveTheMountsRootIsTheMountPointsParent) {
  // What a caller sees through the mount: <T>/m/x, not <T>/x.
  EXPECT_EQ(anywhere("../../x/amd64_linux26"), Answer::Exists);
  EXPECT_EQ(anywhere("../../x/missing_sys"), Answer::Absent);
  EXPECT_EQ(anywhere("../.."), Answer::Exists);
  EXPECT_EQ(anywhere("../../mnt/dir/amd64_linux26/bin"), Answer::Exists);  // and back into the mount
  EXPECT_EQ(walker_->stats().outside, 4u);
  EXPECT_EQ(walker_->stats().abandoned, 0u);
}

TEST_F(ProbeWalkTest, LinksAndPathsElsewhereAreFollowed) {
  EXPECT_EQ(anywhere("abs_link/bin"), Answer::Exists);
  EXPECT_EQ(anywhere("abs_link/nothing"), Answer::Absent);
  EXPECT_EQ(anywhere(t("arch/amd64/bin")), Answer::Exists);
  EXPECT_EQ(anywhere(t("arch/./amd64/../amd64/bin/")), Answer::Exists);
  EXPECT_EQ(anywhere(t("arch/amd64/bin/x")), Answer::Absent);
  // /proc/self is a plain link; /proc/self/root a magic one, followed by its
  // text ("/"), never jumped through.
  EXPECT_EQ(anywhere("/proc/self/root" + t("arch/amd64")), Answer::Exists);
  EXPECT_EQ(anywhere("/"), Answer::Exists);
}

TEST_F(ProbeWalkTest, WalksRunWithTheCallersCredentials) {
  if (::geteuid() != 0) GTEST_SKIP() << "switching the probe thread's identity needs root";
  // As the daemon does before any worker starts: probe threads switch with
  // ThreadIdentity, like the FUSE workers.
  ASSERT_TRUE(ThreadIdentity::init());
  ASSERT_EQ(::chmod(t("arch").c_str(), 0700), 0);
  const ProbeCredentials nobody{65534, 65534, {}};
  const auto deadline = ProbeWalker::Clock::now() + std::chrono::seconds(10);
  EXPECT_EQ(walker_->anywhere(dir_, "abs_link/bin", nobody, deadline), Answer::Absent);
  EXPECT_EQ(walker_->anywhere(dir_, "abs_link/bin", root_, deadline), Answer::Exists);
  // A group that may search it.
  ASSERT_EQ(::chown(t("arch").c_str(), 0, 4242), 0);
  ASSERT_EQ(::chmod(t("arch").c_str(), 0710), 0);
  const gid_t group[] = {4242};
  EXPECT_EQ(walker_->anywhere(dir_, "abs_link/bin", ProbeCredentials{65534, 65534, group}, deadline), Answer::Exists);
  EXPECT_EQ(walker_->anywhere(dir_, "abs_link/bin", nobody, deadline), Answer::Absent);
}

// The deadline that bounds a walk elsewhere needs a filesystem that hangs:
// tests/integration/security_test.cpp, ProbeTimeBound.

TEST(MountDevices, ParsesTheMountTable) {
  const char* text =
      "22 1 0:21 / /proc rw,nosuid - proc proc rw\n"
      "26 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw\n"
      "40 26 0:45 / /tmp/a\\040b rw - fuse.vsymfs /src rw,user_id=0\n"
      "41 26 0:46 / /x rw master:3 - fuse /dev/fuse rw\n"
      "42 26 8:17 /sub /y rw - fuseblk /dev/sdb1 rw\n"
      "43 26 0:47 / /z rw - fusectl fusectl rw\n"
      "garbage\n"
      "44 26 x:1 / /w rw - ext4 /dev/x rw\n";
  const auto devs = parse_mount_devices(text);
  ASSERT_EQ(devs.size(), 6u);
  EXPECT_EQ(devs[0].dev, makedev(0, 21));
  EXPECT_FALSE(devs[0].fuse);
  EXPECT_EQ(devs[1].dev, makedev(254, 0));
  EXPECT_FALSE(devs[1].fuse);
  EXPECT_EQ(devs[2].dev, makedev(0, 45));
  EXPECT_TRUE(devs[2].fuse);
  EXPECT_TRUE(devs[3].fuse);
  EXPECT_EQ(devs[4].dev, makedev(8, 17));
  EXPECT_TRUE(devs[4].fuse);
  EXPECT_FALSE(devs[5].fuse);  // fusectl is not a FUSE filesystem
}

}  // namespace
}  // namespace vsymfs::daemon
