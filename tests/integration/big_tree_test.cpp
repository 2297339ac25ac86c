// A tree ten times the descriptor limit (issue 13, item 3): 200,000 files
// (RLIMIT_NOFILE's hard limit is 20,000 here and cannot be raised) walked
// through the mount with the tools people use on big trees. Nobody gets
// EMFILE and the daemon's descriptors stay within its budget.
#include <fcntl.h>
#include <sys/mount.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <string>
#include <thread>

#include "child_process.hpp"
#include "common/temp_dir.hpp"
#include "fault_tools.hpp"
#include "mount_fixture.hpp"

namespace vsymfs::testing {
namespace {

using faults::Clock;
using namespace std::chrono_literals;
namespace fsys = std::filesystem;

constexpr int kDirs = 200;
constexpr int kFilesPerDir = 1000;  // 200,000 files, 200,201 entries with the directories and the top

double seconds_since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

// The budget the daemon reports at start ("fd budget N"), or 0.
std::size_t logged_budget(const std::string& log) {
  const auto at = log.find("fd budget ");
  return at == std::string::npos ? 0 : std::stoul(log.substr(at + 10));
}

// A command's stdout and stderr together, with a time limit of 10 minutes.
Outcome tool(std::vector<std::string> argv) {
  Spawn s{std::move(argv), {"PATH=/usr/bin:/bin", "LC_ALL=C"}};
  s.before_exec = [] { ::dup2(1, 2); };
  s.timeout_ms = 600'000;
  return run(s);
}

TEST(BigTree, TenTimesTheDescriptorLimitWalkedWithFindCpAndRm) {
  struct rlimit rl {};
  ::getrlimit(RLIMIT_NOFILE, &rl);
  const std::size_t entries = static_cast<std::size_t>(kDirs) * kFilesPerDir;
  ASSERT_GE(entries, 10 * std::min<rlim_t>(rl.rlim_max, 20000)) << "the tree must be ten times the limit";

  // SOURCE and the copy on tmpfs: the disk is not what this measures. Every
  // 100th file holds its own name; the others are empty (no page each).
  const vsymfs::test::TempDir top{"vsymfs-bigtree", 0755, "/tmp"};
  const std::string src = top.path() + "/src", mnt = top.path() + "/mnt", out = top.path() + "/out";
  fsys::create_directories(mnt);
  struct Tmpfs {
    std::string path;
    bool ok;
    explicit Tmpfs(std::string p) : path(std::move(p)) {
      fsys::create_directories(path);
      ok = ::mount("tmpfs", path.c_str(), "tmpfs", 0, "size=1g,nr_inodes=1m,mode=0755") == 0;
    }
    ~Tmpfs() {
      if (ok) ::umount2(path.c_str(), MNT_DETACH);
    }
  } src_fs(src), out_fs(out);
  ASSERT_TRUE(src_fs.ok && out_fs.ok) << "cannot mount a tmpfs";

  auto t = Clock::now();
  fsys::create_directory(src + "/tree");
  for (int d = 0; d < kDirs; ++d) {
    const std::string dir = src + "/tree/d" + std::to_string(d);
    ASSERT_EQ(::mkdir(dir.c_str(), 0755), 0);
    const int dfd = ::open(dir.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC);
    ASSERT_GE(dfd, 0);
    for (int f = 0; f < kFilesPerDir; ++f) {
      const std::string name = "f" + std::to_string(f);
      const int fd = ::openat(dfd, name.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
      ASSERT_GE(fd, 0);
      if (f % 100 == 0) {
        ASSERT_EQ(::write(fd, name.data(), name.size()), static_cast<ssize_t>(name.size()));
      }
      ::close(fd);
    }
    ::close(dfd);
  }
  const double t_make = seconds_since(t);

  faults::Daemon daemon({"-o", "allow_other,builtin_rules,socket=" + top.path() + "/ctl.sock,state=" + top.path() +
                                   "/values.toml"},
                        src, mnt, top.path() + "/daemon.log");
  faults::Deadline deadline({mnt}, 1200s);
  // The daemon logs its budget just after the mount appears: wait for it.
  ASSERT_TRUE(daemon.wait_for_log("fd budget ")) << daemon.log();
  const std::size_t budget = logged_budget(daemon.log());
  ASSERT_GT(budget, 0u) << daemon.log();

  // The daemon's descriptors, sampled all along.
  std::atomic<bool> stop{false};
  std::atomic<std::size_t> peak{0};
  faults::Joined sampler([&] {
    while (!stop) {
      peak = std::max<std::size_t>(peak, faults::open_fds(daemon.pid()));
      std::this_thread::sleep_for(25ms);
    }
  }, [&] { stop = true; });

  t = Clock::now();
  const Outcome found = tool({"/usr/bin/find", mnt + "/tree", "-printf", "."});
  const double t_find = seconds_since(t);
  EXPECT_EQ(found.status, 0) << found.out.substr(0, 2000);
  EXPECT_EQ(found.out.find_first_not_of('.'), std::string::npos) << found.out.substr(0, 2000);
  EXPECT_EQ(found.out.size(), entries + kDirs + 1);

  t = Clock::now();
  const Outcome copied = tool({"/bin/cp", "-a", mnt + "/tree", out + "/tree"});
  const double t_cp = seconds_since(t);
  EXPECT_EQ(copied.status, 0) << copied.out.substr(0, 2000);
  EXPECT_EQ(copied.out, "");
  std::size_t files = 0, wrong = 0;
  for (const auto& e : fsys::recursive_directory_iterator(out + "/tree")) {
    if (!e.is_regular_file()) continue;
    ++files;
    const std::string name = e.path().filename().string();
    if (e.file_size() != (std::stoi(name.substr(1)) % 100 == 0 ? name.size() : 0)) ++wrong;
  }
  EXPECT_EQ(files, entries);
  EXPECT_EQ(wrong, 0u);

  t = Clock::now();
  const Outcome removed = tool({"/bin/rm", "-r", mnt + "/tree"});
  const double t_rm = seconds_since(t);
  EXPECT_EQ(removed.status, 0) << removed.out.substr(0, 2000);
  EXPECT_EQ(removed.out, "");
  EXPECT_FALSE(fsys::exists(src + "/tree"));

  sampler.join();
  // The cache holds at most `budget` descriptors; the rest are the daemon's
  // own (see fd_budget_test) and the few files the tools hold open.
  EXPECT_LE(peak.load(), budget + 64 + 32) << "budget " << budget;
  EXPECT_GT(peak.load(), budget / 2) << "the walk should have filled the cache";
  const std::string log = daemon.log();
  EXPECT_EQ(log.find("Too many open files"), std::string::npos) << log.substr(0, 4000);
  EXPECT_EQ(log.find("EMFILE"), std::string::npos);
  std::printf("200,000 files: made in SOURCE %.1f s, find %.1f s, cp -a %.1f s, rm -r %.1f s; daemon fds at most %zu "
              "(budget %zu)\n",
              t_make, t_find, t_cp, t_rm, peak.load(), budget);
  EXPECT_FALSE(deadline.fired());
  deadline.disarm();
  EXPECT_EQ(daemon.stop(), 0) << daemon.log();
}

}  // namespace
}  // namespace vsymfs::testing
