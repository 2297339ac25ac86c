// Attacks on the FUSE layer by a user against a root daemon mounted with
// allow_other (issue 18, findings 3 and 5, and worker capabilities), each
// performed for real through a mount:
//   - create never follows a name planted in SOURCE: a symlink, a FIFO or a
//     regular file that appears after the kernel decided the name was
//     absent gets what a native open would give, never the daemon's own
//     walk out of SOURCE;
//   - passthrough writes never carry the privilege of whoever opened the
//     file first: a user at ENOSPC cannot write into root's reserved blocks
//     on an ext4 inside SOURCE while root holds the same file open;
//   - a worker acting for a user holds no capability: another user's
//     /proc/PID/maps inside SOURCE stays closed (CAP_SYS_PTRACE).
#include <fcntl.h>
#include <signal.h>
#include <sys/mount.h>
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
#include <regex>
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

// Runs `fn` as `who` in a child and returns the number it computed (or a
// negative errno for a failure the child reports).
long long value_as(const As& who, const std::function<long long()>& fn) {
  int p[2];
  if (::pipe2(p, O_CLOEXEC) != 0) return -1000;
  const int status = run_as(who, [&] {
    const long long v = fn();
    return ::write(p[1], &v, sizeof v) == static_cast<ssize_t>(sizeof v) ? 0 : 1;
  });
  ::close(p[1]);
  long long v = -1001;
  if (status != 0 || ::read(p[0], &v, sizeof v) != static_cast<ssize_t>(sizeof v)) v = -1002;
  ::close(p[0]);
  return v;
}

// Runs a command, quietly; its exit status.
int run(const std::vector<std::string>& argv) {
  pid_t pid = ::fork();
  if (pid < 0) return -1;
  if (pid == 0) {
    int null = ::open("/dev/null", O_WRONLY | O_CLOEXEC);
    if (null >= 0) {
      ::dup2(null, 1);
      ::dup2(null, 2);
    }
    std::vector<char*> args;
    for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    ::execvp(args[0], args.data());
    ::_exit(127);
  }
  int status = 0;
  ::waitpid(pid, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
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

// ------------------------------------------------- finding 5, capabilities

// Whose reserve: root's (ext4's default, resuid 0) or bob's (mounted with
// resuid=1235: the daemon must read it from the mount's options).
struct ReserveCase {
  bool passthrough;
  bool bobs;
};

void PrintTo(const ReserveCase& c, std::ostream* os) {
  *os << (c.passthrough ? "passthrough" : "nopassthrough") << (c.bobs ? ", bob's reserve" : ", root's reserve");
}

std::string reserve_case_name(const ::testing::TestParamInfo<ReserveCase>& p) {
  return std::string(p.param.passthrough ? "passthrough" : "nopassthrough") + (p.param.bobs ? "_BobsReserve" : "_RootsReserve");
}

constexpr uid_t kBob = 1235;
const As bob{.uid = kBob, .gid = kBob};

// A small ext4 (5 % reserved) on a loop device, mounted inside SOURCE after
// the vsymfs mount is up.
class ReservedBlocks : public ::testing::TestWithParam<ReserveCase> {
 protected:
  void SetUp() override {
    MountOptions o;
    o.extra_opts = {GetParam().passthrough ? "passthrough" : "nopassthrough"};
    mount_ = std::make_unique<Mount>(o);
    image_ = mount_->root() + "/ext4.img";
    {
      Fd img(::open(image_.c_str(), O_CREAT | O_WRONLY | O_CLOEXEC, 0600));
      ASSERT_GE(img.get(), 0);
      ASSERT_EQ(::ftruncate(img.get(), 64 << 20), 0);
    }
    if (run({"mkfs.ext4", "-q", "-F", "-m", "5", "-E", "lazy_itable_init=0,lazy_journal_init=0", image_}) != 0)
      GTEST_SKIP() << "mkfs.ext4 is not available";
    dir_ = mount_->src("ext4");
    ASSERT_EQ(::mkdir(dir_.c_str(), 0755), 0);
    const std::string opts = GetParam().bobs ? "loop,resuid=" + std::to_string(kBob) : "loop";
    if (run({"mount", "-o", opts, image_, dir_}) != 0) GTEST_SKIP() << "cannot mount a loop device here";
    mounted_ = true;
    ASSERT_EQ(::chmod(dir_.c_str(), 0777), 0);
  }
  void TearDown() override {
    if (mount_) mount_->stop();  // the daemon holds descriptors inside the ext4
    if (mounted_) ::umount2(dir_.c_str(), MNT_DETACH);  // mount -o loop frees the device with it
    mount_.reset();
  }

  std::unique_ptr<Mount> mount_;
  std::string image_, dir_;
  bool mounted_ = false;
};

// Writes `chunk`-sized blocks to fd until a write fails; the bytes written.
long long write_until_full(int fd, std::size_t chunk) {
  const std::string block(chunk, 'u');
  long long total = 0;
  for (;;) {
    ssize_t n = ::write(fd, block.data(), block.size());
    if (n <= 0) return n < 0 && errno != ENOSPC ? -errno : total;
    total += n;
  }
}

// The repro: root opens a file (passthrough registered its backing file
// with root's credentials), a user fills the filesystem to what users may
// have, then writes to root's open file through the mount: 13 MiB of the
// root reserve went to her. Now her write stops where it stops natively;
// the same when the reserve is bob's and bob holds the file open.
TEST_P(ReservedBlocks, AUserAtEnospcCannotWriteIntoTheReserveWhileItsOwnerHoldsTheFile) {
  const As& owner = GetParam().bobs ? bob : As{};
  const std::string shared = dir_ + "/shared";
  spit(shared, "start\n");
  ASSERT_EQ(::chmod(shared.c_str(), 0666), 0);
  // The reserve's owner opens first, and keeps the file open until `release`
  // closes (also when an assertion ends the test early).
  int to_owner[2], from_owner[2];
  ASSERT_EQ(::pipe2(to_owner, O_CLOEXEC), 0);
  ASSERT_EQ(::pipe2(from_owner, O_CLOEXEC), 0);
  Fd release(to_owner[1]), opened_pipe(from_owner[0]);
  const pid_t holder = ::fork();
  ASSERT_GE(holder, 0);
  if (holder == 0) {
    ::close(to_owner[1]);
    ::close(from_owner[0]);
    ::_exit(run_as(owner, [&] {
      int fd = ::open(mount_->mnt("ext4/shared").c_str(), O_RDWR | O_CLOEXEC);
      char c = fd >= 0 ? 'y' : 'n';
      if (::write(from_owner[1], &c, 1) != 1 || ::read(to_owner[0], &c, 1) < 0) return 2;
      return fd >= 0 ? 0 : 1;
    }));
  }
  ::close(from_owner[1]);
  ::close(to_owner[0]);
  struct Reap {
    pid_t pid;
    ~Reap() {
      if (pid > 0) {
        ::kill(pid, SIGKILL);
        ::waitpid(pid, nullptr, 0);
      }
    }
  } reap{holder};
  char opened = 0;
  ASSERT_EQ(::read(opened_pipe.get(), &opened, 1), 1);
  ASSERT_EQ(opened, 'y') << "the owner's open";

  // Alice fills the filesystem natively: she stops at the reserve.
  const long long filled = value_as(alice, [&] {
    int fd = ::open((dir_ + "/filler").c_str(), O_CREAT | O_WRONLY | O_CLOEXEC, 0644);
    if (fd < 0) return static_cast<long long>(-errno);
    long long n = write_until_full(fd, 64 << 10);
    ::close(fd);
    return n;
  });
  ASSERT_GT(filled, 16 << 20) << "alice's native fill";

  // Through the mount, into the file the owner holds open.
  const long long stolen = value_as(alice, [&] {
    int fd = ::open(mount_->mnt("ext4/shared").c_str(), O_WRONLY | O_APPEND | O_CLOEXEC);
    if (fd < 0) return static_cast<long long>(-errno);
    long long n = write_until_full(fd, 64 << 10);
    ::close(fd);
    return n;
  });
  ASSERT_GE(stolen, 0) << std::strerror(static_cast<int>(-stolen));
  // A few blocks of slack (free-space counters are per CPU); the reserve is
  // 3.2 MiB.
  EXPECT_LE(stolen, 256 << 10) << "alice wrote " << stolen << " bytes into the reserve through the mount";

  // The reserve was there to take: its owner still writes into it natively.
  const long long owners = value_as(owner, [&] {
    int fd = ::open((dir_ + "/ownersfile").c_str(), O_CREAT | O_WRONLY | O_CLOEXEC, 0600);
    if (fd < 0) return static_cast<long long>(-errno);
    const std::string mib(1 << 20, 'r');
    long long n = ::write(fd, mib.data(), mib.size());
    ::close(fd);
    return n < 0 ? -errno : n;
  });
  EXPECT_EQ(owners, 1 << 20) << "the owner's native write into the reserve";

  release.reset();  // the holder closes its file and exits
  int status = 0;
  ASSERT_EQ(::waitpid(holder, &status, 0), holder);
  reap.pid = -1;
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;

  // And the passthrough case was one: alice's writes went to the backing
  // file, none through the daemon.
  mount_->stop();
  if (!GetParam().passthrough) return;
  std::smatch match;
  const std::string log = mount_->daemon_log();
  ASSERT_TRUE(std::regex_search(
      log, match, std::regex(R"(passthrough on: (\d+) backing files opened; (\d+) reads and (\d+) writes reached the daemon)")))
      << log;
  EXPECT_GE(std::stoul(match[1]), 1u);
  EXPECT_EQ(match[3], "0");
}

INSTANTIATE_TEST_SUITE_P(Modes, ReservedBlocks,
                         ::testing::Values(ReserveCase{true, false}, ReserveCase{false, false}, ReserveCase{true, true},
                                           ReserveCase{false, true}),
                         reserve_case_name);

// A worker that keeps CAP_SYS_PTRACE while acting for a user opens another
// user's /proc/PID/maps (mode 0444; the kernel checks ptrace access at
// open) for her, when SOURCE holds a /proc (SOURCE=/, a container root).
// Natively she gets EACCES; root still opens it through the mount.
TEST(WorkerCapabilities, AUserCannotReadAnotherUsersProcMapsThroughTheMount) {
  Mount m;
  ASSERT_EQ(::mkdir(m.src("proc").c_str(), 0555), 0);
  if (::mount("proc", m.src("proc").c_str(), "proc", 0, nullptr) != 0)
    GTEST_SKIP() << "cannot mount a proc filesystem: " << std::strerror(errno);
  const std::string native = "/proc/" + std::to_string(::getpid()) + "/maps";
  const std::string through = m.mnt("proc/" + std::to_string(::getpid()) + "/maps");
  EXPECT_EQ(run_as(alice, [&] { return ::open(native.c_str(), O_RDONLY | O_CLOEXEC) < 0 ? errno : 0; }), EACCES)
      << "natively";
  EXPECT_EQ(run_as(alice, [&] { return ::open(through.c_str(), O_RDONLY | O_CLOEXEC) < 0 ? errno : 0; }), EACCES)
      << "through the mount";
  Fd root_fd(::open(through.c_str(), O_RDONLY | O_CLOEXEC));
  EXPECT_GE(root_fd.get(), 0) << "root opens it through the mount: " << std::strerror(errno);
  root_fd.reset();
  m.stop();
  ::umount2(m.src("proc").c_str(), MNT_DETACH);
}

// The other side of a worker without capabilities: what the daemon itself
// needs still works for a user. Registering and closing a backing file need
// CAP_SYS_ADMIN, and a release comes with no caller, to whichever worker
// served someone last: every backing id a user's files opened is closed.
TEST(WorkerCapabilities, BackingFilesOfAUsersFilesAreOpenedAndClosed) {
  Mount m;
  ASSERT_EQ(::chmod(m.src().c_str(), 0777), 0);
  EXPECT_EQ(run_as(alice, [&] {
              for (int i = 0; i < 20; ++i) {
                int fd = ::open(m.mnt("f" + std::to_string(i)).c_str(), O_CREAT | O_WRONLY | O_CLOEXEC, 0644);
                if (fd < 0) return 100 + i;
                const bool ok = ::write(fd, "data", 4) == 4;
                ::close(fd);
                if (!ok) return 50;
              }
              return 0;
            }),
            0);
  m.stop();
  const std::string log = m.daemon_log();
  if (log.find("passthrough: on") == std::string::npos) GTEST_SKIP() << "no passthrough here:\n" << log;
  std::smatch match;
  ASSERT_TRUE(std::regex_search(log, match, std::regex(R"(passthrough on: (\d+) backing files opened)"))) << log;
  EXPECT_EQ(match[1], "20") << log;
  EXPECT_EQ(log.find("cannot close backing id"), std::string::npos) << log;
  EXPECT_EQ(log.find("cannot take the backing-file identity"), std::string::npos) << log;
}

}  // namespace
