// vsymfs over a FUSE SOURCE without export support (plain_fuse_source, like
// the GlusterFS or sshfs client): the kernel decodes such a source's file
// handles only while its inodes are cached. The daemon's descriptors are
// evicted (a small fd_budget) while processes keep the vsymfs directories
// (their working directories), then the source's inodes are evicted
// (drop_caches): every open must still work, by parent and name. And a
// source whose FUSE server dies gives callers ENOTCONN, the daemon stays
// up, and it serves again once the source is mounted again.
#include <fcntl.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "mount_fixture.hpp"

namespace vsymfs::testing {
namespace {

using ::testing::HasSubstr;
namespace stdfs = std::filesystem;

// plain_fuse_source BACKING MOUNTPOINT, in the foreground, until stopped.
class FuseSource {
 public:
  FuseSource(std::string backing, std::string mountpoint)
      : backing_(std::move(backing)), mnt_(std::move(mountpoint)) {
    stdfs::create_directories(backing_);
    stdfs::create_directories(mnt_);
    start();
  }
  ~FuseSource() {
    stop(SIGTERM);
    ::umount2(mnt_.c_str(), MNT_DETACH);
  }
  const std::string& mountpoint() const { return mnt_; }

  void start() {
    struct stat parent {};
    ::stat(stdfs::path(mnt_).parent_path().c_str(), &parent);
    const char* bin = std::getenv("PLAIN_FUSE_SOURCE");
    ASSERT_NE(bin, nullptr) << "PLAIN_FUSE_SOURCE is not set";
    pid_ = ::fork();
    if (pid_ == 0) {
      const int null = ::open("/dev/null", O_WRONLY | O_CLOEXEC);
      ::dup2(null, 1);
      ::execl(bin, bin, backing_.c_str(), mnt_.c_str(), "-o", "allow_other", static_cast<char*>(nullptr));
      ::_exit(127);
    }
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(15);
    for (;;) {
      struct stat st {};
      if (::stat(mnt_.c_str(), &st) == 0 && st.st_dev != parent.st_dev) return;
      ASSERT_LT(std::chrono::steady_clock::now(), deadline) << "plain_fuse_source did not mount";
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
  }
  // SIGKILL leaves a dead mount behind (ENOTCONN), as a crashed client does.
  void stop(int sig) {
    if (pid_ <= 0) return;
    ::kill(pid_, sig);
    ::waitpid(pid_, nullptr, 0);
    pid_ = -1;
  }
  void unmount() { ::umount2(mnt_.c_str(), MNT_DETACH); }

 private:
  std::string backing_, mnt_;
  pid_t pid_ = -1;
};

// dirs × files files, each holding its own path.
void populate(const std::string& root, int dirs, int files) {
  for (int d = 0; d < dirs; ++d) {
    const std::string dir = root + "/d" + std::to_string(d);
    stdfs::create_directories(dir);
    for (int f = 0; f < files; ++f) {
      const std::string rel = "d" + std::to_string(d) + "/f" + std::to_string(f);
      std::ofstream(root + "/" + rel) << rel;
    }
  }
}

std::string read_file(int dirfd, const std::string& name) {
  const int fd = ::openat(dirfd, name.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return "<open: " + std::string(std::strerror(errno)) + ">";
  char buf[256];
  const ssize_t n = ::read(fd, buf, sizeof buf);
  ::close(fd);
  return n < 0 ? "<read: " + std::string(std::strerror(errno)) + ">" : std::string(buf, static_cast<size_t>(n));
}

void drop_caches() {
  ::sync();
  std::ofstream("/proc/sys/vm/drop_caches") << "2\n";
}

std::string status_of(const Mount& m) {
  int st = 0;
  const std::string out = capture_as(As{}, {vsymctl_bin(), "-m", m.mnt(), "status"}, &st);
  EXPECT_EQ(st, 0) << out;
  return out;
}

// Children that sit in mnt/dK (their working directory: the kernel keeps
// those vsymfs inodes) until told to open dK/f3 relative to it.
class Holders {
 public:
  Holders(const Mount& m, int dirs) {
    for (int d = 0; d < dirs; ++d) {
      int go[2], result[2];
      if (::pipe2(go, O_CLOEXEC) != 0 || ::pipe2(result, O_CLOEXEC) != 0) std::abort();
      const pid_t pid = ::fork();
      if (pid == 0) {
        ::close(go[1]);
        ::close(result[0]);
        const std::string dir = m.mnt("d" + std::to_string(d));
        std::string answer = ::chdir(dir.c_str()) == 0 ? "ready" : "<chdir: " + std::string(std::strerror(errno)) + ">";
        [[maybe_unused]] ssize_t w = ::write(result[1], answer.data(), answer.size());
        char c;
        if (::read(go[0], &c, 1) != 1) ::_exit(1);
        answer = read_file(AT_FDCWD, "f3");
        w = ::write(result[1], answer.data(), answer.size());
        ::_exit(0);
      }
      ::close(go[0]);
      ::close(result[1]);
      kids_.push_back({pid, go[1], result[0]});
      EXPECT_EQ(receive(kids_.back()), "ready");
    }
  }
  ~Holders() {
    for (Kid& k : kids_) {
      ::close(k.go);
      ::close(k.result);
      ::kill(k.pid, SIGKILL);
      ::waitpid(k.pid, nullptr, 0);
    }
  }
  // What each child read from f3 in its working directory.
  std::vector<std::string> open_from_cwd() {
    std::vector<std::string> out;
    for (Kid& k : kids_) {
      [[maybe_unused]] ssize_t w = ::write(k.go, "x", 1);
      out.push_back(receive(k));
    }
    return out;
  }

 private:
  struct Kid {
    pid_t pid;
    int go, result;
  };
  static std::string receive(Kid& k) {
    char buf[256];
    const ssize_t n = ::read(k.result, buf, sizeof buf);
    return n <= 0 ? "<no answer>" : std::string(buf, static_cast<size_t>(n));
  }
  std::vector<Kid> kids_;
};

constexpr int kDirs = 24;
constexpr int kFiles = 12;

class SourceFuse : public ::testing::Test {
 protected:
  void SetUp() override {
    populate(tmp_.path() + "/backing", kDirs, kFiles);
    source_.emplace(tmp_.path() + "/backing", tmp_.path() + "/source");
  }
  void TearDown() override { source_.reset(); }

  // Every file looked up through the mount: far more inodes than the
  // 16 descriptors of the budget, so the daemon closes most of them.
  static void walk(const Mount& m) {
    for (int d = 0; d < kDirs; ++d)
      for (int f = 0; f < kFiles; ++f) {
        struct stat st {};
        EXPECT_EQ(::stat(m.mnt("d" + std::to_string(d) + "/f" + std::to_string(f)).c_str(), &st), 0);
      }
  }
  static std::vector<std::string> expected() {
    std::vector<std::string> e;
    for (int d = 0; d < kDirs; ++d) e.push_back("d" + std::to_string(d) + "/f3");
    return e;
  }

  vsymfs::test::TempDir tmp_{"vsymfs-fusesrc", 0755, "/tmp"};
  std::optional<FuseSource> source_;
};

// The default: a FUSE source's handles are not trusted, evicted inodes are
// found by parent and name, and status says why. Before handles were judged
// per source, every open here failed with ESTALE.
TEST_F(SourceFuse, EvictedInodesAreFoundByNameWhereHandlesDoNotLast) {
  Mount m(MountOptions{.extra_opts = {"fd_budget=16"}, .source = source_->mountpoint()});
  Holders holders(m, kDirs);
  walk(m);
  drop_caches();
  EXPECT_EQ(holders.open_from_cwd(), expected());
  const std::string status = status_of(m);
  EXPECT_THAT(status, HasSubstr("parent and name (SOURCE is FUSE (f_type 0x65735546)"));
  EXPECT_THAT(status, HasSubstr("stale_handles: 0"));
  EXPECT_THAT(m.daemon_log(), HasSubstr("found again by parent and name: SOURCE is FUSE"));
}

// -o handles on such a source: the handles go stale, and each is found
// again by name instead of failing; the count shows in status.
TEST_F(SourceFuse, StaleHandlesFallBackToParentAndName) {
  Mount m(MountOptions{.extra_opts = {"fd_budget=16", "handles"}, .source = source_->mountpoint()});
  Holders holders(m, kDirs);
  walk(m);
  drop_caches();
  EXPECT_EQ(holders.open_from_cwd(), expected());
  const std::string status = status_of(m);
  EXPECT_THAT(status, HasSubstr("file handle, else parent and name (-o handles; SOURCE is FUSE"));
  EXPECT_THAT(status, ::testing::Not(HasSubstr("stale_handles: 0 ")))
      << "drop_caches evicted the source's inodes, so some handle must have gone stale";
  EXPECT_THAT(m.daemon_log(), HasSubstr("went stale (ESTALE)"));
}

// The source's FUSE server dies: callers get ENOTCONN, the daemon stays up,
// and once the source is mounted again new lookups work.
TEST_F(SourceFuse, ADeadSourceGivesEnotconnAndServesAgainWhenMountedAgain) {
  Mount m(MountOptions{.source = source_->mountpoint()});
  ASSERT_EQ(read_file(AT_FDCWD, m.mnt("d1/f1")), "d1/f1");
  Holders holders(m, 4);  // working directories in d0..d3 across the remount
  source_->stop(SIGKILL);
  struct stat st {};
  errno = 0;
  EXPECT_EQ(::stat(m.mnt("d2/f2").c_str(), &st), -1);
  EXPECT_EQ(errno, ENOTCONN);
  EXPECT_EQ(::kill(m.daemon_pid(), 0), 0) << "the daemon must stay up";
  EXPECT_THAT(status_of(m), HasSubstr("source_reopened: 0"));

  source_->unmount();
  source_->start();
  // Names the kernel cached still lead to the old inodes for up to
  // entry_timeout (1 s); wait for the new ones, with a generous deadline.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  std::string got;
  while ((got = read_file(AT_FDCWD, m.mnt("d2/f2"))) != "d2/f2" && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  EXPECT_EQ(got, "d2/f2");
  EXPECT_EQ(read_file(AT_FDCWD, m.mnt("d1/f1")), "d1/f1");
  // The same files under the new mount keep their inode numbers, so the
  // directories held since before are found again by name.
  EXPECT_EQ(holders.open_from_cwd(), (std::vector<std::string>{"d0/f3", "d1/f3", "d2/f3", "d3/f3"}));
  EXPECT_THAT(status_of(m), HasSubstr("source_reopened: 1"));
  EXPECT_THAT(m.daemon_log(), HasSubstr("is there again"));
}

}  // namespace
}  // namespace vsymfs::testing
