// What a user sees when things go wrong (issue 13, item 3): the daemon
// killed, SOURCE gone, a rules file broken, a caller gone, the control
// socket abused, the disk full. Every step that touches a mount runs under a
// Deadline, which aborts the FUSE connection when it hangs, so a failure can
// never wedge the machine.
#include <fcntl.h>
#include <linux/sched.h>
#include <sched.h>
#include <poll.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <atomic>
#include <functional>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "child_process.hpp"
#include "common/temp_dir.hpp"
#include "fault_tools.hpp"
#include "mount_fixture.hpp"

namespace vsymfs::testing {
namespace {

using ::testing::HasSubstr;
using faults::Clock;
using faults::Daemon;
using faults::Deadline;
using namespace std::chrono_literals;
namespace fsys = std::filesystem;

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::string readlink_str(const std::string& path) {
  char buf[4096];
  const ssize_t n = ::readlink(path.c_str(), buf, sizeof buf);
  return n < 0 ? "<" + std::string(std::strerror(errno)) + ">" : std::string(buf, static_cast<std::size_t>(n));
}

int errno_of_stat(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0 ? 0 : errno;
}

// ---------------------------------------------------------------------------
// SIGKILL mid-write.

// Word k of the stream holds its own byte offset, so any lost, moved or
// stale block shows.
void fill_pattern(std::vector<std::uint64_t>& block, std::uint64_t offset) {
  for (std::size_t i = 0; i < block.size(); ++i) block[i] = offset + i * sizeof(std::uint64_t);
}

// Writes the pattern to `path` in 64 KiB blocks and fsyncs every MiB,
// telling the parent each fsync'ed length on `report` (an int64). Ends at
// the first error (reported as -errno) or after 1 GiB.
[[noreturn]] void write_stream(const std::string& path, int report) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  std::int64_t msg = fd < 0 ? -errno : 0;
  if (fd < 0) {
    (void)!::write(report, &msg, sizeof msg);
    ::_exit(1);
  }
  std::vector<std::uint64_t> block(64 * 1024 / sizeof(std::uint64_t));
  std::uint64_t offset = 0;
  while (offset < (1ull << 30)) {
    fill_pattern(block, offset);
    const ssize_t n = ::write(fd, block.data(), block.size() * sizeof block[0]);
    if (n != static_cast<ssize_t>(block.size() * sizeof block[0])) {
      msg = n < 0 ? -errno : -EIO;
      break;
    }
    offset += static_cast<std::uint64_t>(n);
    if (offset % (1 << 20) == 0) {
      if (::fsync(fd) != 0) {
        msg = -errno;
        break;
      }
      msg = static_cast<std::int64_t>(offset);
      (void)!::write(report, &msg, sizeof msg);
    }
  }
  (void)!::write(report, &msg, sizeof msg);
  ::close(fd);
  ::_exit(0);
}

// Reads the writer's reports until `until` returns true for one, the writer
// ends (EOF) or 60 s pass. Returns every report.
std::vector<std::int64_t> read_reports(int fd, const std::function<bool(std::int64_t)>& until) {
  std::vector<std::int64_t> got;
  const auto deadline = Clock::now() + 60s;
  while (Clock::now() < deadline) {
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, 1000) <= 0) continue;
    std::int64_t v = 0;
    if (::read(fd, &v, sizeof v) != sizeof v) break;
    got.push_back(v);
    if (until(v)) break;
  }
  return got;
}

class SigkillMidWrite : public ::testing::TestWithParam<const char*> {};

// The daemon is killed while a process streams into a file through the
// mount: everything fsync'ed before is in SOURCE, the dead mount answers
// ENOTCONN, it unmounts, and a new daemon on the same mountpoint takes over
// the (stale) control socket and the saved run-time values.
TEST_P(SigkillMidWrite, FsyncedDataSurvivesAndAFreshMountTakesOver) {
  const vsymfs::test::TempDir tree{"vsymfs-kill", 0755, "/tmp"};
  const std::string src = tree.path() + "/src", mnt = tree.path() + "/mnt", log = tree.path() + "/daemon.log";
  const std::string sock = tree.path() + "/ctl.sock", state = tree.path() + "/state/values.toml";
  fsys::create_directories(src);
  fsys::create_directories(mnt);
  ASSERT_EQ(::symlink("${FOO}-${BAR}", (src + "/link").c_str()), 0);
  const std::vector<std::string> args{"-o", std::string("allow_other,builtin_rules,socket=") + sock +
                                                ",state=" + state + "," + GetParam()};
  const std::string stream = mnt + "/stream";

  std::int64_t synced = 0, last = 0;
  std::atomic<int> acked{0};
  Daemon first(args, src, mnt, log);  // dead after the kill; its mount stays until we unmount it
  {
    Deadline deadline({mnt}, 120s);
    int st = -1;
    capture_as(As{}, {vsymctl_bin(), "--mount", mnt, "set", "FOO", "user-value"}, &st);
    ASSERT_EQ(st, 0);
    capture_as(As{}, {vsymctl_bin(), "--mount", mnt, "set", "--system", "BAR", "system-value"}, &st);
    ASSERT_EQ(st, 0);
    ASSERT_EQ(readlink_str(mnt + "/link"), "user-value-system-value");

    // Meanwhile values keep changing: every change vsymctl saw acknowledged
    // must survive the kill (the daemon saves before it acknowledges).
    std::atomic<bool> stop_setting{false};
    faults::Joined setter([&] {
      for (int i = 1; !stop_setting; ++i) {
        int rc = -1;
        capture_as(As{}, {vsymctl_bin(), "--mount", mnt, "set", "--system", "COUNTER", std::to_string(i)}, &rc);
        if (rc != 0) break;
        acked = i;
      }
    }, [&] { stop_setting = true; });
    int pipefd[2];
    ASSERT_EQ(::pipe2(pipefd, O_CLOEXEC), 0);
    const pid_t writer = ::fork();
    if (writer == 0) {
      ::close(pipefd[0]);
      write_stream(stream, pipefd[1]);
    }
    ::close(pipefd[1]);
    // At least 4 MiB fsync'ed, then the kill, while the writer goes on.
    auto before = read_reports(pipefd[0], [](std::int64_t v) { return v <= 0 || v >= (4 << 20); });
    ASSERT_FALSE(before.empty());
    ASSERT_GE(before.back(), 4 << 20) << "the writer failed before the kill: " << std::strerror(int(-before.back()));
    synced = before.back();
    first.kill9();
    setter.join();
    // The writer meets the dead connection: its last report is an error.
    auto after = read_reports(pipefd[0], [](std::int64_t v) { return v <= 0; });
    ::close(pipefd[0]);
    int wstatus = 0;
    ::waitpid(writer, &wstatus, 0);
    ASSERT_FALSE(after.empty()) << "the writer ended without a report";
    for (std::int64_t v : after)
      if (v > 0) synced = v;  // fsync'ed after the kill (passthrough writes may still land)
    last = after.back();
    EXPECT_EQ(last, -ENOTCONN) << std::strerror(int(-last));

    // The dead mount: ENOTCONN for everything, nothing hangs.
    EXPECT_EQ(errno_of_stat(mnt), ENOTCONN);
    EXPECT_EQ(errno_of_stat(mnt + "/link"), ENOTCONN);
    EXPECT_EQ(::open(stream.c_str(), O_RDONLY | O_CLOEXEC), -1);
    EXPECT_EQ(errno, ENOTCONN);
    EXPECT_FALSE(deadline.fired());
  }
  // Everything fsync'ed is in SOURCE, intact.
  {
    const std::string data = read_file(src + "/stream");
    ASSERT_GE(data.size(), static_cast<std::size_t>(synced));
    std::vector<std::uint64_t> expect(static_cast<std::size_t>(synced) / sizeof(std::uint64_t));
    fill_pattern(expect, 0);
    EXPECT_EQ(std::memcmp(data.data(), expect.data(), static_cast<std::size_t>(synced)), 0)
        << "the first " << synced << " bytes (fsync'ed) differ";
  }
  // The dead daemon left its socket behind.
  struct stat sst {};
  ASSERT_EQ(::lstat(sock.c_str(), &sst), 0);
  EXPECT_TRUE(S_ISSOCK(sst.st_mode));
  // The dead mount unmounts the usual way (the Daemon left it mounted).
  ASSERT_TRUE(faults::is_fuse_mounted(mnt));
  int st = -1;
  capture_as(As{}, {"/bin/fusermount3", "-u", mnt}, &st);
  EXPECT_EQ(st, 0);
  EXPECT_FALSE(faults::is_fuse_mounted(mnt));

  // A fresh mount on the same mountpoint: the stale socket is replaced, the
  // saved values are back, the file reads as SOURCE has it.
  Daemon second(args, src, mnt, log);
  Deadline deadline({mnt}, 60s);
  EXPECT_EQ(readlink_str(mnt + "/link"), "user-value-system-value");
  const std::string list = capture_as(As{}, {vsymctl_bin(), "--mount", mnt, "list"}, &st);
  EXPECT_EQ(st, 0);
  EXPECT_THAT(list, HasSubstr("FOO=user-value"));
  EXPECT_THAT(list, HasSubstr("BAR=system-value"));
  // The last acknowledged value, or the one being set at the kill.
  const auto counter = list.find("COUNTER=");
  ASSERT_NE(counter, std::string::npos) << list;
  const int saved = std::stoi(list.substr(counter + 8));
  EXPECT_GE(saved, acked.load());
  EXPECT_LE(saved, acked.load() + 1);
  for (const auto& e : fsys::directory_iterator(fsys::path(state).parent_path()))
    EXPECT_EQ(e.path().filename().string().find(".corrupt"), std::string::npos) << e.path();
  EXPECT_EQ(faults::status_value(faults::vsymctl_status(mnt), "socket"), sock);
  EXPECT_EQ(read_file(stream), read_file(src + "/stream"));
  EXPECT_FALSE(deadline.fired());
  deadline.disarm();
  EXPECT_EQ(second.stop(), 0) << second.log();
  EXPECT_NE(::lstat(sock.c_str(), &sst), 0) << "a clean stop removes the socket";
}

INSTANTIATE_TEST_SUITE_P(Io, SigkillMidWrite, ::testing::Values("passthrough", "nopassthrough"));

}  // namespace
}  // namespace vsymfs::testing
