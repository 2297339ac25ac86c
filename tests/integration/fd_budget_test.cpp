// Descriptors are bounded: the daemon serves trees with far more inodes than
// RLIMIT_NOFILE allows descriptors (the hard limit here is 20000), keeping at
// most fd_budget cached O_PATH descriptors, and refuses open files beyond
// its share with ENFILE instead of running out.
#include <dirent.h>
#include <fcntl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "mount_fixture.hpp"

namespace {

using vsymfs::testing::Mount;
using vsymfs::testing::MountOptions;

std::size_t open_fds(pid_t pid) {
  std::size_t n = 0;
  DIR* d = ::opendir(("/proc/" + std::to_string(pid) + "/fd").c_str());
  if (!d) return 0;
  while (struct dirent* e = ::readdir(d))
    if (e->d_name[0] != '.') ++n;
  ::closedir(d);
  return n;
}

// Creates dirs × files files in SOURCE (directly, not through the mount);
// file k holds its own name so a mix-up between inodes shows.
std::vector<std::string> populate(const Mount& m, int dirs, int files_per_dir) {
  std::vector<std::string> rel;
  rel.reserve(static_cast<size_t>(dirs * files_per_dir));
  for (int d = 0; d < dirs; ++d) {
    std::string dir = "d" + std::to_string(d);
    ::mkdir(m.src(dir).c_str(), 0755);
    for (int f = 0; f < files_per_dir; ++f) {
      std::string r = dir + "/f" + std::to_string(f);
      int fd = ::open(m.src(r).c_str(), O_CREAT | O_WRONLY | O_CLOEXEC, 0644);
      if (fd < 0) continue;
      [[maybe_unused]] ssize_t w = ::write(fd, r.data(), r.size());
      ::close(fd);
      rel.push_back(std::move(r));
    }
  }
  return rel;
}

struct Walk {
  std::size_t stat_failures = 0;
  std::size_t content_mismatches = 0;
  std::size_t peak_fds = 0;
};

// stat every file through the mount (a lookup each, and the kernel keeps
// them all referenced), sampling the daemon's descriptor count; then read
// every `read_every`-th file back, which reopens evicted inodes.
Walk walk(const Mount& m, const std::vector<std::string>& rel, std::size_t read_every) {
  Walk w;
  for (std::size_t i = 0; i < rel.size(); ++i) {
    struct stat st {};
    if (::stat(m.mnt(rel[i]).c_str(), &st) != 0 || st.st_size != static_cast<off_t>(rel[i].size())) ++w.stat_failures;
    if (i % 1000 == 0) w.peak_fds = std::max(w.peak_fds, open_fds(m.daemon_pid()));
  }
  for (std::size_t i = 0; i < rel.size(); i += read_every) {
    char buf[64] = {};
    int fd = ::open(m.mnt(rel[i]).c_str(), O_RDONLY | O_CLOEXEC);
    ssize_t n = fd >= 0 ? ::read(fd, buf, sizeof buf) : -1;
    if (fd >= 0) ::close(fd);
    if (n < 0 || std::string(buf, static_cast<size_t>(n)) != rel[i]) ++w.content_mismatches;
  }
  w.peak_fds = std::max(w.peak_fds, open_fds(m.daemon_pid()));
  return w;
}

// The daemon's own descriptors besides the cache: /dev/fuse, the source
// root, mount anchors, the control socket, stdio, inotify, logs.
constexpr std::size_t kOverhead = 64;

TEST(FdBudget, SmallBudgetWithFileHandles) {
  Mount m(MountOptions{.extra_opts = {"fd_budget=256"}});
  auto rel = populate(m, 10, 500);
  ASSERT_EQ(rel.size(), 5000u);
  Walk w = walk(m, rel, 7);
  EXPECT_EQ(w.stat_failures, 0u);
  EXPECT_EQ(w.content_mismatches, 0u);
  EXPECT_GT(w.peak_fds, 100u) << "the cache should fill up to its budget";
  EXPECT_LE(w.peak_fds, 256 + kOverhead);
}

// Without file handles an evicted inode is found again by parent and name,
// through a chain of parents that may themselves have been evicted.
TEST(FdBudget, SmallBudgetByName) {
  Mount m(MountOptions{.extra_opts = {"fd_budget=64", "no_handles"}});
  auto rel = populate(m, 40, 50);
  ASSERT_EQ(rel.size(), 2000u);
  Walk w = walk(m, rel, 3);
  EXPECT_EQ(w.stat_failures, 0u);
  EXPECT_EQ(w.content_mismatches, 0u);
  EXPECT_LE(w.peak_fds, 64 + kOverhead);
  // A rename through the mount keeps a tracked inode reachable.
  ASSERT_EQ(::rename(m.mnt("d0").c_str(), m.mnt("renamed").c_str()), 0) << std::strerror(errno);
  Walk after = walk(m, {"renamed/f1", "renamed/f2"}, 1);
  EXPECT_EQ(after.content_mismatches, 2u) << "contents name the old path, so both must differ";
  struct stat st {};
  EXPECT_EQ(::stat(m.mnt("renamed/f1").c_str(), &st), 0);
  EXPECT_EQ(::stat(m.mnt("d0/f1").c_str(), &st), -1);
}

// More files than the hard RLIMIT_NOFILE, with the default budget.
TEST(FdBudget, MoreInodesThanTheDescriptorLimit) {
  struct rlimit rl {};
  ::getrlimit(RLIMIT_NOFILE, &rl);
  Mount m;
  const int files = 25000;
  auto rel = populate(m, 25, files / 25);
  ASSERT_EQ(rel.size(), static_cast<size_t>(files));
  ASSERT_GT(rel.size(), static_cast<size_t>(rl.rlim_max)) << "the test needs more files than the hard limit";
  Walk w = walk(m, rel, 97);
  EXPECT_EQ(w.stat_failures, 0u);
  EXPECT_EQ(w.content_mismatches, 0u);
  EXPECT_LE(w.peak_fds, 8192 + kOverhead);
}

// Open files hold their own descriptors; past the daemon's share the mount
// answers ENFILE and everything else keeps working.
TEST(FdBudget, OpenFilesAreBoundedWithEnfile) {
  // Limit 1024, budget 256, 16 threads (pinned: the default follows the
  // CPUs): at most 1024 - 64 - 4*16 - 256 = 640 open files.
  Mount m(MountOptions{.extra_opts = {"fd_budget=256", "threads=16"}, .nofile_limit = 1024});
  auto rel = populate(m, 1, 800);
  std::vector<int> fds;
  int first_error = 0;
  for (const auto& r : rel) {
    int fd = ::open(m.mnt(r).c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
      first_error = errno;
      break;
    }
    fds.push_back(fd);
  }
  EXPECT_EQ(first_error, ENFILE);
  EXPECT_EQ(fds.size(), 640u);
  EXPECT_LE(open_fds(m.daemon_pid()), 1024u);
  // Lookups and attributes still work while open files are exhausted.
  struct stat st {};
  EXPECT_EQ(::stat(m.mnt(rel.back()).c_str(), &st), 0) << std::strerror(errno);
  for (int fd : fds) ::close(fd);
  fds.clear();
  // Released files give their share back (release is asynchronous: retry
  // until it has arrived, 30 s at most on a loaded machine).
  int fd = -1;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while ((fd = ::open(m.mnt(rel.back()).c_str(), O_RDONLY | O_CLOEXEC)) < 0 && std::chrono::steady_clock::now() < deadline)
    ::usleep(10000);
  EXPECT_GE(fd, 0) << std::strerror(errno);
  if (fd >= 0) ::close(fd);
}

}  // namespace
