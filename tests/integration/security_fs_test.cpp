// Attacks on the FUSE layer by a user against a root daemon mounted with
// allow_other (issue 18), each performed for real through a mount:
//   - create never follows a name planted in SOURCE: a symlink, a FIFO or a
//     regular file that appears after the kernel decided the name was
//     absent gets what a native open would give, never the daemon's own
//     walk out of SOURCE;
//   - operations on a symlink planted in SOURCE change the link only.
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <functional>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "mount_fixture.hpp"
#include "vsymfs/unique_fd.hpp"

namespace {

using vsymfs::testing::As;
using vsymfs::testing::Mount;
using vsymfs::testing::MountOptions;
using vsymfs::testing::run_as;
using Fd = vsymfs::UniqueFd;

constexpr uid_t kAlice = 1234;
const As alice{.uid = kAlice, .gid = kAlice};

std::string slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

void spit(const std::string& path, const std::string& data) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << data;
  ASSERT_TRUE(out.good()) << path;
}

bool exists(const std::string& path) {
  struct stat st {};
  return ::lstat(path.c_str(), &st) == 0;
}

// ---------------------------------------------------------------- finding 3

// The kernel sends CREATE only for a name it believes absent (here: a
// negative entry cached for 30 s). What the attacker plants in SOURCE after
// that must not be followed by the daemon.
class CreateOverPlantedName : public ::testing::Test {
 protected:
  void SetUp() override {
    mount_ = std::make_unique<Mount>(MountOptions{.extra_opts = {"negative_timeout=30"}});
    ASSERT_EQ(::mkdir(mount_->src("attk").c_str(), 0777), 0);
    ASSERT_EQ(::chmod(mount_->src("attk").c_str(), 0777), 0);
    struct stat st {};
    ASSERT_EQ(::stat(mount_->mnt("attk/log").c_str(), &st), -1);  // the kernel now remembers: absent
    ASSERT_EQ(errno, ENOENT);
  }
  void TearDown() override { mount_.reset(); }
  // Plants `make()` as alice, directly in SOURCE.
  void plant(const std::function<int()>& make) { ASSERT_EQ(run_as(alice, make), 0); }

  std::unique_ptr<Mount> mount_;
};

// The repro: O_CREAT|O_NOFOLLOW|O_TRUNC through a symlink planted to a root
// file outside SOURCE truncated that file (and the open failed with EIO).
// Natively the open fails with ELOOP and nothing is touched.
TEST_F(CreateOverPlantedName, SymlinkWithNofollowGivesEloopAndLeavesTheTargetAlone) {
  const std::string victim = mount_->root() + "/victim";
  spit(victim, "precious");
  ASSERT_EQ(::chmod(victim.c_str(), 0600), 0);
  plant([&] { return ::symlink(victim.c_str(), mount_->src("attk/log").c_str()) == 0 ? 0 : errno; });
  errno = 0;
  Fd fd(::open(mount_->mnt("attk/log").c_str(), O_CREAT | O_NOFOLLOW | O_TRUNC | O_WRONLY | O_CLOEXEC, 0644));
  EXPECT_LT(fd.get(), 0);
  EXPECT_EQ(errno, ELOOP) << std::strerror(errno);
  EXPECT_EQ(slurp(victim), "precious");
}

// Without O_NOFOLLOW a native open follows the link, and through the mount
// the link means its expansion: a variant link planted as `t-${UID}` makes
// root's O_CREAT create t-0, never a file literally named `t-${UID}` (the
// raw text the daemon's own walk would follow).
TEST_F(CreateOverPlantedName, SymlinkWithoutNofollowIsFollowedAsTheMountShowsIt) {
  plant([&] { return ::symlink("t-${UID}", mount_->src("attk/log").c_str()) == 0 ? 0 : errno; });
  Fd fd(::open(mount_->mnt("attk/log").c_str(), O_CREAT | O_WRONLY | O_CLOEXEC, 0644));
  ASSERT_GE(fd.get(), 0) << std::strerror(errno) << "\n" << mount_->daemon_log();
  ASSERT_EQ(::write(fd.get(), "x", 1), 1);
  EXPECT_EQ(slurp(mount_->src("attk/t-0")), "x");
  EXPECT_FALSE(exists(mount_->src("attk/t-${UID}")));
}

// A regular file planted in time is opened, not replaced (O_CREAT without
// O_EXCL), as natively.
TEST_F(CreateOverPlantedName, RegularFileIsOpenedAsNatively) {
  plant([&] {
    int fd = ::open(mount_->src("attk/log").c_str(), O_CREAT | O_WRONLY | O_CLOEXEC, 0666);
    if (fd < 0) return errno;
    int r = ::write(fd, "keep", 4) == 4 ? 0 : 100;
    ::close(fd);
    return r;
  });
  {
    Fd fd(::open(mount_->mnt("attk/log").c_str(), O_CREAT | O_WRONLY | O_CLOEXEC, 0644));
    ASSERT_GE(fd.get(), 0) << std::strerror(errno);
    ASSERT_EQ(::write(fd.get(), "X", 1), 1);
  }
  EXPECT_EQ(slurp(mount_->src("attk/log")), "Xeep");
}

// A FIFO planted in time is what root's open(O_CREAT|O_RDWR) gets, as
// natively (O_RDWR does not wait for a peer), opened by the kernel: the
// daemon never opens a special file someone planted.
TEST_F(CreateOverPlantedName, FifoIsOpenedAsNatively) {
  plant([&] { return ::mkfifo(mount_->src("attk/log").c_str(), 0666) == 0 ? 0 : errno; });
  Fd fd(::open(mount_->mnt("attk/log").c_str(), O_CREAT | O_RDWR | O_CLOEXEC, 0644));
  ASSERT_GE(fd.get(), 0) << std::strerror(errno) << "\n" << mount_->daemon_log();
  struct stat st {};
  ASSERT_EQ(::fstat(fd.get(), &st), 0);
  EXPECT_TRUE(S_ISFIFO(st.st_mode)) << std::oct << st.st_mode;
}

// A directory planted in time: EISDIR, as natively.
TEST_F(CreateOverPlantedName, DirectoryGivesEisdir) {
  plant([&] { return ::mkdir(mount_->src("attk/log").c_str(), 0777) == 0 ? 0 : errno; });
  errno = 0;
  Fd fd(::open(mount_->mnt("attk/log").c_str(), O_CREAT | O_WRONLY | O_CLOEXEC, 0644));
  EXPECT_LT(fd.get(), 0);
  EXPECT_EQ(errno, EISDIR) << std::strerror(errno);
}

// The daemon reaches an inode through /proc/self/fd paths where a syscall
// has no *at() form for an O_PATH descriptor (xattrs, link, chmod,
// truncate, open): such a path lands on the inode itself, a symlink
// included, never on the link's target. Operations on a link planted in
// SOURCE that points out of it must therefore change the link only.
TEST(PlantedSymlink, OperationsOnTheLinkNeverReachItsTarget) {
  Mount m;
  const std::string victim = m.root() + "/victim";
  spit(victim, "precious");
  ASSERT_EQ(::chmod(victim.c_str(), 0600), 0);
  struct stat before {};
  ASSERT_EQ(::stat(victim.c_str(), &before), 0);
  ASSERT_EQ(::symlink(victim.c_str(), m.src("l").c_str()), 0);
  ASSERT_EQ(::lchown(m.src("l").c_str(), kAlice, kAlice), 0);  // alice's link

  EXPECT_EQ(::lchown(m.mnt("l").c_str(), 0, 0), 0) << std::strerror(errno);
  const struct timespec times[2] = {{1000, 0}, {2000, 0}};
  EXPECT_EQ(::utimensat(AT_FDCWD, m.mnt("l").c_str(), times, AT_SYMLINK_NOFOLLOW), 0) << std::strerror(errno);
  EXPECT_EQ(::lsetxattr(m.mnt("l").c_str(), "trusted.vsymfs-test", "x", 1, 0), 0) << std::strerror(errno);
  EXPECT_EQ(::link(m.mnt("l").c_str(), m.mnt("hard").c_str()), 0) << std::strerror(errno);

  struct stat link {}, hard {}, after {};
  ASSERT_EQ(::lstat(m.src("l").c_str(), &link), 0);
  EXPECT_EQ(link.st_uid, 0u);
  EXPECT_EQ(link.st_mtim.tv_sec, 2000);
  ASSERT_EQ(::lstat(m.src("hard").c_str(), &hard), 0);
  EXPECT_TRUE(S_ISLNK(hard.st_mode)) << "a hard link to the link, not to its target";
  ASSERT_EQ(::stat(victim.c_str(), &after), 0);
  EXPECT_EQ(after.st_nlink, 1u);
  EXPECT_EQ(after.st_mtim.tv_sec, before.st_mtim.tv_sec);
  char buf[8];
  EXPECT_EQ(::getxattr(victim.c_str(), "trusted.vsymfs-test", buf, sizeof buf), -1);
  EXPECT_EQ(slurp(victim), "precious");
}

}  // namespace
