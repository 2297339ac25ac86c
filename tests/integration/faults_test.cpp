// What a user sees when things go wrong (issue 13, item 3): the daemon
// killed, SOURCE gone, a rules file broken, a caller gone, the control
// socket abused, the disk full. Every step that touches a mount runs under a
// Deadline, which aborts the FUSE connection when it hangs, so a failure can
// never wedge the machine.
#include <fcntl.h>
#include <linux/sched.h>
#include <grp.h>
#include <sched.h>
#include <poll.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/xattr.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <atomic>
#include <functional>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "child_process.hpp"
#include "common/temp_dir.hpp"
#include "fault_tools.hpp"
#include "mount_fixture.hpp"
#include "control/protocol.hpp"

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
// telling the parent each fsync'ed length on `report` (an int64). The
// stream goes on until the first error (reported as -errno), which the
// daemon's death brings: at 256 MiB it starts again at offset 0 with the
// same words, so a kill that comes late (on a loaded machine the vsymctl
// the test waits for may take seconds) never finds the writer done, and the
// file stays at 256 MiB. Ends after 10 minutes whatever happens.
// `block` (64 KiB of room) comes from the parent: the writer is a forked
// child of a multi-threaded process and must not allocate.
[[noreturn]] void write_stream(const std::string& path, int report, std::vector<std::uint64_t>& block) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  std::int64_t msg = fd < 0 ? -errno : 0;
  if (fd < 0) {
    (void)!::write(report, &msg, sizeof msg);
    ::_exit(1);
  }
  constexpr std::uint64_t kWrap = 256ull << 20;
  const auto give_up = Clock::now() + std::chrono::minutes(10);
  std::uint64_t offset = 0, synced = 0;
  for (;;) {
    if (offset == kWrap) {
      if (::lseek(fd, 0, SEEK_SET) != 0) {
        msg = -errno;
        break;
      }
      offset = 0;
    }
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
      synced = std::max(synced, offset);
      msg = static_cast<std::int64_t>(synced);
      (void)!::write(report, &msg, sizeof msg);
      if (Clock::now() > give_up) break;
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
    std::vector<std::uint64_t> block(64 * 1024 / sizeof(std::uint64_t));
    const pid_t writer = ::fork();
    if (writer == 0) {
      ::close(pipefd[0]);
      write_stream(stream, pipefd[1], block);
    }
    ::close(pipefd[1]);
    // At least 4 MiB fsync'ed, then the kill, while the writer goes on.
    auto before = read_reports(pipefd[0], [](std::int64_t v) { return v <= 0 || v >= (4 << 20); });
    ASSERT_FALSE(before.empty());
    ASSERT_GE(before.back(), 4 << 20) << "the writer failed before the kill: " << std::strerror(int(-before.back()));
    synced = before.back();
    // And at least one value acknowledged: vsymctl may take seconds to start
    // on a loaded machine (or under TSan), the 4 MiB only a fraction of one.
    for (const auto until = std::chrono::steady_clock::now() + 60s;
         acked.load() == 0 && std::chrono::steady_clock::now() < until;)
      std::this_thread::sleep_for(10ms);
    ASSERT_GT(acked.load(), 0) << "no vsymctl set was acknowledged within 60 s";
    first.kill9();
    // The writer meets the dead connection: its last report is an error.
    // Its reports are drained before the setter is joined: the writer was
    // forked while the setter's vsymctl pipe was open and holds that pipe
    // until it exits, and it cannot exit while its report pipe is full.
    auto after = read_reports(pipefd[0], [](std::int64_t v) { return v <= 0; });
    ::close(pipefd[0]);
    int wstatus = 0;
    ::waitpid(writer, &wstatus, 0);
    setter.join();
    ASSERT_FALSE(after.empty()) << "the writer ended without a report";
    for (std::int64_t v : after)
      if (v > 0) synced = v;  // fsync'ed after the kill (passthrough writes may still land)
    last = after.back();
    // A write in flight when the daemon dies ends with ECONNABORTED (the
    // kernel aborts the requests it was waiting on), or ECANCELED on
    // io_uring (a request no ring entry had taken); one made after it, with
    // ENOTCONN. The transport is io_uring where enable_uring is Y.
    EXPECT_TRUE(last == -ENOTCONN || last == -ECONNABORTED || last == -ECANCELED) << std::strerror(int(-last));

    // The dead mount: an error for everything, nothing hangs. ENOTCONN when
    // the daemon's /dev/fuse was closed; ECONNABORTED when its rings' end
    // aborted the connection (io_uring).
    const auto dead = [](int e) { return e == ENOTCONN || e == ECONNABORTED; };
    EXPECT_PRED1(dead, errno_of_stat(mnt));
    EXPECT_PRED1(dead, errno_of_stat(mnt + "/link"));
    EXPECT_EQ(::open(stream.c_str(), O_RDONLY | O_CLOEXEC), -1);
    EXPECT_PRED1(dead, errno);
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

// ---------------------------------------------------------------------------
// SOURCE disappears.

// How often `text` occurs in the daemon's log.
std::size_t count_in(const std::string& log, const std::string& text) {
  std::size_t n = 0;
  for (auto pos = log.find(text); pos != std::string::npos; pos = log.find(text, pos + 1)) ++n;
  return n;
}

// Waits until `log()` holds `text` at least `times` times (true) or 20 s pass.
bool wait_for_log(const std::function<std::string()>& log, const std::string& text, std::size_t times = 1) {
  const auto deadline = Clock::now() + 20s;
  while (count_in(log(), text) < times) {
    if (Clock::now() > deadline) return false;
    std::this_thread::sleep_for(20ms);
  }
  return true;
}

bool write_file(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << text;
  return static_cast<bool>(out);
}

// SOURCE renamed while mounted: the mount goes on serving the directory
// (as a bind mount would), the log and `vsymctl status` say where it went,
// and say so again when it is back.
TEST(SourceDisappears, RenamedSourceIsServedWhereItWentAndReported) {
  Mount m;
  Deadline deadline({m.mnt()}, 120s);
  ASSERT_TRUE(write_file(m.src("a"), "data a"));
  ASSERT_EQ(read_file(m.mnt("a")), "data a");
  const std::string moved = m.root() + "/src-moved";
  ASSERT_EQ(::rename(m.src().c_str(), moved.c_str()), 0);
  ASSERT_TRUE(wait_for_log([&] { return m.daemon_log(); }, "was moved to " + moved)) << m.daemon_log();
  EXPECT_THAT(m.daemon_log(), HasSubstr("SOURCE " + m.src() + " was moved to " + moved));
  EXPECT_THAT(faults::status_value(faults::vsymctl_status(m.mnt()), "source_state"),
              HasSubstr("was moved to " + moved + ": this mount goes on serving it there"));
  // Served where it is now: reads, and a new file lands there.
  EXPECT_EQ(read_file(m.mnt("a")), "data a");
  ASSERT_TRUE(write_file(m.mnt("b"), "data b"));
  EXPECT_EQ(read_file(moved + "/b"), "data b");
  // Back at its path: the problem is over.
  ASSERT_EQ(::rename(moved.c_str(), m.src().c_str()), 0);
  ASSERT_TRUE(wait_for_log([&] { return m.daemon_log(); }, "SOURCE " + m.src() + " is back where it was"));
  EXPECT_EQ(faults::status_value(faults::vsymctl_status(m.mnt()), "source_state"), "ok");
  EXPECT_FALSE(deadline.fired());
}

// SOURCE removed and made again while mounted: the mount serves the removed
// directory, which has no names and takes none (ENOENT, as a process whose
// working directory was removed sees), it does not pick up the new one, and
// the daemon stays up and says what happened.
TEST(SourceDisappears, RemovedAndRecreatedSourceGivesEnoentAndIsReported) {
  Mount m;
  Deadline deadline({m.mnt()}, 120s);
  fsys::create_directories(m.src("dir"));
  ASSERT_TRUE(write_file(m.src("dir/f"), "f"));
  ASSERT_TRUE(write_file(m.src("a"), "a"));
  ASSERT_EQ(read_file(m.mnt("dir/f")), "f");  // known to the kernel and the daemon
  fsys::remove_all(m.src());
  fsys::create_directories(m.src());
  ASSERT_TRUE(write_file(m.src("new"), "not served"));
  ASSERT_TRUE(wait_for_log([&] { return m.daemon_log(); }, "SOURCE " + m.src() + " was removed")) << m.daemon_log();
  EXPECT_THAT(faults::status_value(faults::vsymctl_status(m.mnt()), "source_state"), HasSubstr("was removed"));

  EXPECT_EQ(errno_of_stat(m.mnt("a")), ENOENT);
  EXPECT_EQ(errno_of_stat(m.mnt("new")), ENOENT);
  // A name the kernel looked up just before may still be in its cache
  // (entry and attribute timeouts): once that expires, the daemon answers.
  int known = 0;
  for (const auto until = std::chrono::steady_clock::now() + 30s;
       (known = errno_of_stat(m.mnt("dir/f"))) == 0 && std::chrono::steady_clock::now() < until;)
    std::this_thread::sleep_for(50ms);
  EXPECT_TRUE(known == ENOENT || known == ESTALE) << std::strerror(known);
  EXPECT_EQ(::open(m.mnt("c").c_str(), O_CREAT | O_WRONLY | O_CLOEXEC, 0644), -1);
  EXPECT_EQ(errno, ENOENT);
  EXPECT_EQ(::mkdir(m.mnt("d2").c_str(), 0755), -1);
  EXPECT_EQ(errno, ENOENT);
  std::error_code ec;
  EXPECT_EQ(std::distance(fsys::directory_iterator(m.mnt(), ec), fsys::directory_iterator()), 0) << ec.message();
  EXPECT_FALSE(fsys::exists(m.src("c")));
  // Still serving: status answers, and the daemon stops cleanly (m.stop()).
  int st = -1;
  faults::vsymctl_status(m.mnt(), &st);
  EXPECT_EQ(st, 0);
  deadline.disarm();
  m.stop();
}

// SOURCE is a tmpfs that is unmounted (lazily) under the daemon: the
// daemon's descriptors keep the filesystem alive, so the mount goes on
// serving it, and the log and status say SOURCE is out of reach.
TEST(SourceDisappears, LazilyUnmountedSourceFilesystemIsServedAndReported) {
  const vsymfs::test::TempDir tree{"vsymfs-srcfs", 0755, "/tmp"};
  const std::string src = tree.path() + "/src", mnt = tree.path() + "/mnt";
  fsys::create_directories(src);
  fsys::create_directories(mnt);
  ASSERT_EQ(::mount("tmpfs", src.c_str(), "tmpfs", 0, "size=4m,mode=0755"), 0) << std::strerror(errno);
  struct Unmount {
    std::string path;
    ~Unmount() { ::umount2(path.c_str(), MNT_DETACH); }
  } unmount{src};
  ASSERT_TRUE(write_file(src + "/a", "on tmpfs"));
  Daemon d({"-o", "allow_other,builtin_rules,socket=" + tree.path() + "/ctl.sock,state=" + tree.path() +
                      "/values.toml"},
           src, mnt, tree.path() + "/daemon.log");
  Deadline deadline({mnt}, 120s);
  ASSERT_EQ(read_file(mnt + "/a"), "on tmpfs");
  ASSERT_EQ(::umount2(src.c_str(), MNT_DETACH), 0) << std::strerror(errno);
  ASSERT_TRUE(wait_for_log([&] { return d.log(); }, "SOURCE " + src + " is out of reach")) << d.log();
  EXPECT_THAT(faults::status_value(faults::vsymctl_status(mnt), "source_state"), HasSubstr("is out of reach"));
  EXPECT_EQ(read_file(mnt + "/a"), "on tmpfs");
  ASSERT_TRUE(write_file(mnt + "/b", "still served"));
  EXPECT_EQ(read_file(mnt + "/b"), "still served");
  EXPECT_FALSE(fsys::exists(src + "/b")) << "the path now shows the directory underneath";
  deadline.disarm();
  EXPECT_EQ(d.stop(), 0) << d.log();
}

// ---------------------------------------------------------------------------
// Bad rules files.

constexpr const char* kRulesV1 = "[vars]\nWHERE = \"v1\"\n";

class BadRules : public ::testing::Test {
 protected:
  void SetUp() override {
    mount_ = std::make_unique<Mount>(MountOptions{kRulesV1, {}, {}});
    ASSERT_EQ(::symlink("${WHERE}", m().src("w").c_str()), 0);
    ASSERT_EQ(::symlink("${OTHER:-unset}", m().src("o").c_str()), 0);
    ASSERT_EQ(readlink_str(m().mnt("w")), "v1");
  }
  Mount& m() { return *mount_; }
  std::string log() { return m().daemon_log(); }
  std::string status() { return faults::vsymctl_status(m().mnt()); }
  // The watcher's verdict on the next change: waits for one more line.
  bool wait_refused(std::size_t before) { return wait_for_log([&] { return log(); }, "rules not reloaded", before + 1); }
  std::size_t refusals() { return count_in(log(), "rules not reloaded"); }
  void expect_v1_in_force() {
    EXPECT_EQ(readlink_str(m().mnt("w")), "v1");
    EXPECT_EQ(readlink_str(m().mnt("o")), "unset");
  }

  std::unique_ptr<Mount> mount_;
};

// Replaced (by rename, as editors do) with garbage: the old rules stay, and
// the log and status name file, line and column.
TEST_F(BadRules, GarbageKeepsTheOldRulesAndIsReportedWithLineAndColumn) {
  Deadline deadline({m().mnt()}, 120s);
  EXPECT_EQ(faults::status_value(status(), "rules_error"), "none");
  const std::size_t before = refusals();
  const std::string tmp = m().rules_path() + ".new";
  ASSERT_TRUE(write_file(tmp, "[vars]\nWHERE = \"v2\"\n\x01\xff garbage = = [[\n"));
  ASSERT_EQ(::rename(tmp.c_str(), m().rules_path().c_str()), 0);
  ASSERT_TRUE(wait_refused(before)) << log();
  expect_v1_in_force();
  EXPECT_THAT(log(), HasSubstr("the old rules stay in force: " + m().rules_path() + ":3:"));
  const std::string error = faults::status_value(status(), "rules_error");
  EXPECT_THAT(error, HasSubstr(m().rules_path() + ":3:"));
  EXPECT_THAT(error, HasSubstr("stay in force"));
  EXPECT_EQ(faults::status_value(status(), "reload_failures"), "1");
  // A good file clears it.
  ASSERT_TRUE(write_file(tmp, "[vars]\nWHERE = \"v3\"\n"));
  ASSERT_EQ(::rename(tmp.c_str(), m().rules_path().c_str()), 0);
  ASSERT_TRUE(wait_for_log([&] { return log(); }, "rules reloaded from")) << log();
  EXPECT_EQ(readlink_str(m().mnt("w")), "v3");
  EXPECT_EQ(faults::status_value(status(), "rules_error"), "none");
}

// Cut off in the middle of a value (the writer died, the disk filled): the
// old rules stay, and the error says where the file stops making sense.
TEST_F(BadRules, AFileCutOffMidValueKeepsTheOldRules) {
  Deadline deadline({m().mnt()}, 120s);
  const std::size_t before = refusals();
  ASSERT_TRUE(write_file(m().rules_path(), "[vars]\nOTHER = \"x\"\nWHERE = \"v2"));  // in place, then closed
  ASSERT_TRUE(wait_refused(before)) << log();
  expect_v1_in_force();
  EXPECT_THAT(faults::status_value(status(), "rules_error"), HasSubstr(m().rules_path() + ":3:"));
}

// A file being written in place (removed, then created and written in two
// halves): the daemon never takes the first half, although it parses on
// its own, and takes the whole file once its writer closes it.
TEST_F(BadRules, AFileBeingWrittenIsNotReadBeforeItsWriterClosesIt) {
  Deadline deadline({m().mnt()}, 120s);
  const std::size_t before = refusals();
  ASSERT_EQ(::unlink(m().rules_path().c_str()), 0);
  ASSERT_TRUE(wait_refused(before)) << log();  // the deletion: reported, old rules kept
  EXPECT_THAT(faults::status_value(status(), "rules_error"), HasSubstr("No such file or directory"));
  expect_v1_in_force();
  const std::size_t reloads = count_in(log(), "rules reloaded from");
  const int fd = ::open(m().rules_path().c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  ASSERT_GE(fd, 0) << std::strerror(errno);
  const std::string first = "[vars]\nWHERE = \"half\"\n", second = "OTHER = \"whole\"\n";
  ASSERT_EQ(::write(fd, first.data(), first.size()), static_cast<ssize_t>(first.size()));
  // Ten times the watcher's debounce: time enough to take the half file.
  std::this_thread::sleep_for(1s);
  expect_v1_in_force();
  EXPECT_EQ(count_in(log(), "rules reloaded from"), reloads) << log();
  ASSERT_EQ(::write(fd, second.data(), second.size()), static_cast<ssize_t>(second.size()));
  ASSERT_EQ(::close(fd), 0);
  ASSERT_TRUE(wait_for_log([&] { return log(); }, "rules reloaded from", reloads + 1)) << log();
  EXPECT_EQ(readlink_str(m().mnt("w")), "half");
  EXPECT_EQ(readlink_str(m().mnt("o")), "whole");
}

// Unreadable (a directory, a FIFO in its place: the daemon runs as root, so
// a mode of 000 would not stop it) and deleted: the old rules stay, every
// time, and `vsymctl reload` says why too.
TEST_F(BadRules, UnreadableOrDeletedKeepsTheOldRules) {
  Deadline deadline({m().mnt()}, 120s);
  std::size_t before = refusals();
  ASSERT_EQ(::unlink(m().rules_path().c_str()), 0);
  ASSERT_TRUE(wait_refused(before)) << log();
  expect_v1_in_force();
  EXPECT_THAT(faults::status_value(status(), "rules_error"),
              HasSubstr(m().rules_path() + ": No such file or directory"));

  before = refusals();
  ASSERT_EQ(::mkdir(m().rules_path().c_str(), 0755), 0);
  ASSERT_TRUE(wait_refused(before)) << log();
  expect_v1_in_force();
  EXPECT_THAT(faults::status_value(status(), "rules_error"), HasSubstr("is a directory"));
  ASSERT_EQ(::rmdir(m().rules_path().c_str()), 0);

  before = refusals();
  ASSERT_EQ(::mkfifo(m().rules_path().c_str(), 0644), 0);
  const Outcome reload = run({{vsymctl_bin(), "--mount", m().mnt(), "reload"}, {}, 0, 0, 0, {}, [] { ::dup2(1, 2); }});
  EXPECT_FALSE(reload.timed_out);
  EXPECT_EQ(reload.status, 1);
  EXPECT_THAT(reload.out, HasSubstr("not a regular file"));
  expect_v1_in_force();
  EXPECT_THAT(faults::status_value(status(), "rules_error"), HasSubstr("not a regular file"));
  EXPECT_EQ(::kill(m().daemon_pid(), 0), 0);
}

// The default rules file (/etc/vsymfs/rules.toml: optional at start)
// deleted while its rules are in force: they stay, as for any bad file; the
// daemon took the built-in rules instead before. Run in a private mount
// namespace with an overlay on /etc, so the machine's /etc is untouched.
TEST(BadRulesAtTheDefaultPath, DeletingTheDefaultFileKeepsItsRules) {
  const int saved_ns = ::open("/proc/self/ns/mnt", O_RDONLY | O_CLOEXEC);
  ASSERT_GE(saved_ns, 0);
  ASSERT_EQ(::unshare(CLONE_NEWNS), 0) << std::strerror(errno);
  struct Restore {
    int fd;
    ~Restore() {
      if (::setns(fd, CLONE_NEWNS) != 0) ADD_FAILURE() << "cannot return to the test's mount namespace";
      ::close(fd);
    }
  } restore{saved_ns};
  ASSERT_EQ(::mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr), 0) << std::strerror(errno);
  const vsymfs::test::TempDir tree{"vsymfs-defrules", 0755, "/tmp"};
  const std::string upper = tree.path() + "/upper", work = tree.path() + "/work";
  const std::string src = tree.path() + "/src", mnt = tree.path() + "/mnt";
  for (const auto& d : {upper, work, src, mnt}) fsys::create_directories(d);
  ::chmod(upper.c_str(), 0755);
  const std::string opts = "lowerdir=/etc,upperdir=" + upper + ",workdir=" + work;
  if (::mount("overlay", "/etc", "overlay", 0, opts.c_str()) != 0)
    GTEST_SKIP() << "cannot mount an overlay on /etc in a private namespace: " << std::strerror(errno);
  struct Unmount {
    ~Unmount() { ::umount2("/etc", MNT_DETACH); }
  } unmount;
  const std::string rules = "/etc/vsymfs/rules.toml";
  ASSERT_FALSE(fsys::exists(rules)) << "this test needs the default path to be free";
  fsys::create_directories("/etc/vsymfs");
  ASSERT_TRUE(write_file(rules, "[vars]\nWHERE = \"from-default\"\n"));
  ASSERT_EQ(::symlink("${WHERE}", (src + "/w").c_str()), 0);
  Daemon d({"-o", "allow_other,socket=" + tree.path() + "/ctl.sock,state=" + tree.path() + "/values.toml"}, src, mnt,
           tree.path() + "/daemon.log");
  Deadline deadline({mnt}, 120s);
  ASSERT_EQ(readlink_str(mnt + "/w"), "from-default") << d.log();
  ASSERT_EQ(::unlink(rules.c_str()), 0);
  ASSERT_TRUE(wait_for_log([&] { return d.log(); }, "rules not reloaded")) << d.log();
  EXPECT_EQ(readlink_str(mnt + "/w"), "from-default");
  EXPECT_THAT(faults::status_value(faults::vsymctl_status(mnt), "rules_error"),
              HasSubstr(rules + ": No such file or directory (the rules read from it stay in force"));
  // Back again: read as before.
  ASSERT_TRUE(write_file(rules, "[vars]\nWHERE = \"again\"\n"));
  ASSERT_TRUE(wait_for_log([&] { return d.log(); }, "rules reloaded from " + rules)) << d.log();
  EXPECT_EQ(readlink_str(mnt + "/w"), "again");
  deadline.disarm();
  EXPECT_EQ(d.stop(), 0) << d.log();
}

// ---------------------------------------------------------------------------
// Vanishing callers.

// What a process printed and how it ended; pid < 0 is -errno of clone3.
struct Ran {
  pid_t pid = -1;
  int status = -1;
  std::string out;
};

struct Proc {
  std::vector<std::string> argv;  // execve(argv[0], argv, env); empty: run `fn` in the clone instead
  std::vector<std::string> env;
  std::function<std::string()> fn;  // what it prints, without an exec
  uid_t uid = 0;
  gid_t gid = 0;
  std::vector<gid_t> groups;
};

// Runs `p` as process number `want` (0: any): clone3 with set_tid makes the
// reuse of a pid certain instead of a race through the pid space. Waits at
// most 20 s for it.
Ran run_as_pid(const Proc& p, pid_t want) {
  Ran r;
  int pipefd[2];
  if (::pipe2(pipefd, O_CLOEXEC) != 0) return r;
  std::vector<std::string> argv_s = p.argv, env_s = p.env;
  std::vector<char*> argv, envp;
  for (auto& a : argv_s) argv.push_back(a.data());
  argv.push_back(nullptr);
  for (auto& e : env_s) envp.push_back(e.data());
  envp.push_back(nullptr);
  pid_t tid[1] = {want};
  clone_args args{};
  args.exit_signal = SIGCHLD;
  if (want > 0) {
    args.set_tid = reinterpret_cast<std::uint64_t>(tid);
    args.set_tid_size = 1;
  }
  const long got = ::syscall(SYS_clone3, &args, sizeof args);
  if (got == 0) {
    ::dup2(pipefd[1], 1);
    // Raw syscalls: glibc's wrappers would wait for the other threads of
    // the parent, which glibc does not know this raw clone left behind.
    if (::syscall(SYS_setgroups, p.groups.size(), p.groups.data()) != 0 ||
        ::syscall(SYS_setresgid, p.gid, p.gid, p.gid) != 0 || ::syscall(SYS_setresuid, p.uid, p.uid, p.uid) != 0)
      ::_exit(120);
    if (p.argv.empty()) {
      const std::string out = p.fn();
      (void)!::write(1, out.data(), out.size());
      ::_exit(0);
    }
    ::execve(argv[0], argv.data(), envp.data());
    ::_exit(127);
  }
  ::close(pipefd[1]);
  if (got < 0) {
    r.pid = -errno;
    ::close(pipefd[0]);
    return r;
  }
  r.pid = static_cast<pid_t>(got);
  const auto deadline = Clock::now() + 20s;
  char buf[4096];
  while (Clock::now() < deadline) {
    pollfd pf{pipefd[0], POLLIN, 0};
    if (::poll(&pf, 1, 1000) <= 0) continue;
    const ssize_t n = ::read(pipefd[0], buf, sizeof buf);
    if (n <= 0) break;
    r.out.append(buf, static_cast<std::size_t>(n));
  }
  ::close(pipefd[0]);
  if (Clock::now() >= deadline) ::kill(r.pid, SIGKILL);
  int status = 0;
  ::waitpid(r.pid, &status, 0);
  r.status = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  return r;
}

// A test group (made once with groupadd when missing).
gid_t test_group(const std::string& name) {
  if (::getgrnam(name.c_str()) == nullptr) {
    const std::string cmd = "groupadd -f " + name + " >/dev/null 2>&1";
    if (std::system(cmd.c_str()) != 0) return 0;
  }
  const group* g = ::getgrnam(name.c_str());
  return g != nullptr ? g->gr_gid : 0;
}

// Whether `pid` holds a process events connector socket (NETLINK_CONNECTOR,
// protocol 11, in its network namespace): the exact way the daemon learns
// that a process exec'd or exited.
bool holds_connector_socket(pid_t pid) {
  std::set<std::string> inodes;
  const std::string fd_dir = "/proc/" + std::to_string(pid) + "/fd";
  std::error_code ec;
  for (const auto& e : fsys::directory_iterator(fd_dir, ec)) {
    const std::string target = readlink_str(e.path().string());
    if (target.rfind("socket:[", 0) == 0) inodes.insert(target.substr(8, target.size() - 9));
  }
  std::ifstream in("/proc/" + std::to_string(pid) + "/net/netlink");
  std::string line;
  std::getline(in, line);  // header
  while (std::getline(in, line)) {
    std::istringstream f(line);
    std::string sk, eth, portid, groups, rmem, wmem, dump, locks, drops, inode;
    f >> sk >> eth >> portid >> groups >> rmem >> wmem >> dump >> locks >> drops >> inode;
    if (eth == "11" && inodes.contains(inode)) return true;
  }
  return false;
}

const char* kCallerRules = R"(
[vars]
WHERE = "everyone"
[group.vsymfs-faults]
WHERE = "group-only"
)";

// A process reads variant links and exits; another process is made with
// its pid at once (clone3 set_tid). The new holder of the pid gets its own
// values, never the old one's: not its environment (a link of the process
// scope), not its supplementary groups (a [group.NAME] value). Run with the
// kernel's process events (the root daemon's default) and without them (the
// daemon in a network namespace of its own, where the connector is silent:
// the fallback that validates by /proc/PID/auxv and a time limit).
class VanishingCallers : public ::testing::TestWithParam<bool> {};

TEST_P(VanishingCallers, AReusedPidNeverGetsTheValuesOfItsLastHolder) {
  const bool events = GetParam();
  const gid_t secret = test_group("vsymfs-faults");
  ASSERT_NE(secret, 0u) << "cannot make the test group vsymfs-faults";
  ASSERT_EQ(std::getenv("SECRET"), nullptr) << "the test's own environment must not have SECRET";
  std::unique_ptr<Mount> mount;
  if (events) {
    mount = std::make_unique<Mount>(MountOptions{kCallerRules, {}, {}});
  } else {
    // The daemon alone in a new network namespace: this process goes back.
    const int saved = ::open("/proc/self/ns/net", O_RDONLY | O_CLOEXEC);
    ASSERT_GE(saved, 0);
    ASSERT_EQ(::unshare(CLONE_NEWNET), 0) << std::strerror(errno);
    try {
      mount = std::make_unique<Mount>(MountOptions{kCallerRules, {}, {}});
    } catch (...) {
      (void)::setns(saved, CLONE_NEWNET);
      ::close(saved);
      throw;
    }
    ASSERT_EQ(::setns(saved, CLONE_NEWNET), 0) << std::strerror(errno);
    ::close(saved);
  }
  Mount& m = *mount;
  Deadline deadline({m.mnt()}, 240s);
  ASSERT_EQ(holds_connector_socket(m.daemon_pid()), events) << "the daemon is not in the mode this test checks";
  ASSERT_EQ(::symlink("${SECRET:-none}", m.src("env").c_str()), 0);
  ASSERT_EQ(::symlink("${WHERE}", m.src("group").c_str()), 0);
  const std::string readlink_bin = "/usr/bin/readlink";
  const auto both = [&] { return std::vector<std::string>{readlink_bin, m.mnt("env"), m.mnt("group")}; };

  struct Case {
    const char* what;
    Proc next;          // who takes the pid
    std::string expect;  // what it must read
  };
  const uid_t nobody = 65534;
  const std::vector<Case> cases = {
      {"execs with its own environment", {both(), {"SECRET=beta"}, {}, nobody, nobody, {nobody}}, "beta\neveryone\n"},
      {"execs without the variable", {both(), {"PATH=/bin"}, {}, nobody, nobody, {nobody}}, "none\neveryone\n"},
      {"a fork that never execs", {{}, {}, [&] {
          return readlink_str(m.mnt("env")) + "\n" + readlink_str(m.mnt("group")) + "\n";
        }, nobody, nobody, {nobody}}, "none\neveryone\n"},
      {"another user", {both(), {"SECRET=gamma"}, {}, 65533, 65533, {65533}}, "gamma\neveryone\n"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.what);
    Ran first, second;
    // Another process may take the freed pid first (a busy machine): again.
    for (int attempt = 0; attempt < 20; ++attempt) {
      first = run_as_pid({both(), {"SECRET=alpha"}, {}, nobody, nobody, {nobody, secret}}, 0);
      ASSERT_GT(first.pid, 0);
      ASSERT_EQ(first.status, 0);
      ASSERT_EQ(first.out, "alpha\ngroup-only\n") << "the first holder must see its own values";
      second = run_as_pid(c.next, first.pid);
      if (second.pid == -EEXIST) continue;
      if (second.pid == -EPERM || second.pid == -ENOSYS || second.pid == -EINVAL)
        GTEST_SKIP() << "clone3 with set_tid is refused here (" << std::strerror(-second.pid) << ")";
      break;
    }
    ASSERT_EQ(second.pid, first.pid) << "the pid was never free again";
    EXPECT_EQ(second.status, 0);
    EXPECT_EQ(second.out, c.expect) << "pid " << second.pid;
  }
  EXPECT_EQ(::kill(m.daemon_pid(), 0), 0);
  EXPECT_FALSE(deadline.fired());
}

INSTANTIATE_TEST_SUITE_P(Modes, VanishingCallers, ::testing::Values(true, false),
                         [](const auto& p) { return p.param ? "ProcessEvents" : "NoProcessEvents"; });

// ---------------------------------------------------------------------------
// Control socket abuse.

std::string control_socket_of(const std::string& mnt) {
  char buf[PATH_MAX];
  const ssize_t n = ::getxattr(mnt.c_str(), "security.vsymfs.control", buf, sizeof buf);
  return n > 0 ? std::string(buf, static_cast<std::size_t>(n)) : std::string();
}

// `per_uid` connections from each of `uids`, all at once, each abusing the
// socket in one of four ways: silence, a frame cut off in its payload, a
// frame header announcing 4 GiB, random bytes. The children hold their
// connections until release() (or destruction).
class Abusers {
 public:
  Abusers(const std::string& socket, const std::vector<uid_t>& uids, int per_uid, unsigned seed) {
    int ready[2];
    if (::pipe2(ready, O_CLOEXEC) != 0 || ::pipe2(hold_, O_CLOEXEC) != 0) return;
    // Everything the children send is built here: a child of this
    // multi-threaded process must not allocate (another thread may hold
    // the allocator's lock at fork time; ASan's allocator then deadlocks
    // the child, and release() would wait for it forever).
    const auto len = static_cast<std::uint32_t>(control::kMaxRequestSize);
    std::string largest = {char(len >> 24), char(len >> 16), char(len >> 8), char(len)};
    largest.append(len - 1, 'x');  // the largest request announced, all but its last byte
    const std::string huge = "\xff\xff\xff\xff" "VSYMFS1 status\n";  // 4 GiB announced
    std::string noise(4096, '\0');  // filled by each child in place
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::strncpy(addr.sun_path, socket.c_str(), sizeof addr.sun_path - 1);
    for (uid_t uid : uids) {
      const pid_t pid = ::fork();
      if (pid == 0) {
        ::close(ready[0]);
        ::close(hold_[1]);
        if (::setresgid(uid, uid, uid) != 0 || ::setresuid(uid, uid, uid) != 0) ::_exit(99);
        std::mt19937 rng(seed + uid);
        int connected = 0;
        for (int i = 0; i < per_uid; ++i) {
          const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
          const timeval tv{1, 0};
          ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
          if (::connect(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof addr) != 0) {
            ::close(fd);
            continue;
          }
          ++connected;  // held open until _exit
          const std::string* bytes = nullptr;
          switch (i % 4) {
            case 0: break;  // silence
            case 1:
            case 3: bytes = &largest; break;
            case 2:
              if (rng() % 2 == 0) {
                bytes = &huge;
              } else {
                for (char& ch : noise) ch = static_cast<char>(rng());
                bytes = &noise;
              }
              break;
          }
          // Blocking, within SO_SNDTIMEO: as much as the daemon takes.
          if (bytes != nullptr) (void)::send(fd, bytes->data(), bytes->size(), MSG_NOSIGNAL);
        }
        (void)!::write(ready[1], &connected, sizeof connected);
        char c;
        (void)!::read(hold_[0], &c, 1);  // until the parent lets go
        ::_exit(0);
      }
      pids_.push_back(pid);
    }
    ::close(ready[1]);
    ::close(hold_[0]);
    hold_[0] = -1;
    for (std::size_t i = 0; i < pids_.size(); ++i) {
      pollfd p{ready[0], POLLIN, 0};
      int n = 0;
      if (::poll(&p, 1, 120'000) != 1 || ::read(ready[0], &n, sizeof n) != sizeof n) break;
      connected_ += n;
    }
    ::close(ready[0]);
  }
  ~Abusers() { release(); }
  Abusers(const Abusers&) = delete;
  Abusers& operator=(const Abusers&) = delete;
  int connected() const { return connected_; }
  // Lets the children go and reaps them. One that has not exited a minute
  // later is stuck (counted in stuck(), then killed): the test fails
  // instead of hanging.
  void release() {
    if (hold_[1] >= 0) ::close(hold_[1]);
    hold_[1] = -1;
    const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(60);
    for (pid_t pid : pids_) {
      while (::waitpid(pid, nullptr, WNOHANG) == 0) {
        if (std::chrono::steady_clock::now() > until) {
          ++stuck_;
          ::kill(pid, SIGKILL);
          ::waitpid(pid, nullptr, 0);
          break;
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
      }
    }
    pids_.clear();
  }
  int stuck() const { return stuck_; }

 private:
  int hold_[2] = {-1, -1};
  std::vector<pid_t> pids_;
  int connected_ = 0;
  int stuck_ = 0;
};

// Three waves of 1,000 connections (10 uids, 100 each) that stall, send
// half a frame, announce 4 GiB or send noise: meanwhile the filesystem
// serves without a single failure, root's vsymctl gets its answers, and the
// daemon's memory stays within what 64 connections at the request limit
// can hold, wave after wave (measured: +17 MB at the peak; without the
// limits a quarter of the 1,000 would hold 272 KiB each, 68 MB).
TEST(ControlSocketAbuse, ThousandsOfBadConnectionsNeitherStopTheMountNorGrowTheDaemon) {
  Mount m(MountOptions{"[vars]\nWHERE = \"served\"\n", {}, {}});
  Deadline deadline({m.mnt()}, 300s);
  ASSERT_EQ(::symlink("${WHERE}", m.src("w").c_str()), 0);
  ASSERT_TRUE(write_file(m.src("f"), "file data"));
  const std::string socket = control_socket_of(m.mnt());
  ASSERT_FALSE(socket.empty());
  for (int i = 0; i < 5; ++i) faults::vsymctl_status(m.mnt());  // warm up: caches, thread stacks
  const pid_t daemon = m.daemon_pid();
  const std::size_t baseline_kb = faults::status_kb(daemon, "VmRSS");

  // The filesystem is used all along; every answer must be right.
  std::atomic<bool> stop{false};
  std::atomic<long> ops{0}, wrong{0};
  faults::Joined user([&] {
    while (!stop) {
      if (readlink_str(m.mnt("w")) != "served") ++wrong;
      if (read_file(m.mnt("f")) != "file data") ++wrong;
      ++ops;
    }
  }, [&] { stop = true; });
  std::atomic<std::size_t> peak_kb{baseline_kb};
  faults::Joined sampler([&] {
    while (!stop) {
      const std::size_t kb = faults::status_kb(daemon, "VmRSS");
      if (kb > peak_kb) peak_kb = kb;
      std::this_thread::sleep_for(20ms);
    }
  }, [&] { stop = true; });

  std::vector<uid_t> uids;
  for (uid_t u = 70001; u <= 70010; ++u) uids.push_back(u);
  const unsigned kWaves = 3;
  std::vector<std::size_t> after_wave;
  for (unsigned wave = 0; wave < kWaves; ++wave) {
    SCOPED_TRACE("wave " + std::to_string(wave));
    const long ops_before = ops;
    Abusers abusers(socket, uids, 100, wave);
    EXPECT_GT(abusers.connected(), 500) << "the kernel should take most connects";
    // While they hold on: root still gets answers, the mount still serves.
    int st = -1;
    const std::string status = faults::vsymctl_status(m.mnt(), &st);
    EXPECT_EQ(st, 0) << status;
    const auto until = Clock::now() + 60s;
    while (ops < ops_before + 20 && Clock::now() < until) std::this_thread::sleep_for(10ms);
    EXPECT_GE(ops, ops_before + 20) << "the filesystem stopped serving";
    abusers.release();
    EXPECT_EQ(abusers.stuck(), 0) << "abusing children that never exited";
    after_wave.push_back(faults::status_kb(daemon, "VmRSS"));
  }
  stop = true;
  user.join();
  sampler.join();
  EXPECT_EQ(wrong, 0);
  EXPECT_EQ(::kill(daemon, 0), 0);
  // Bounded: 64 slots of at most kMaxRequestSize each, plus room for the
  // allocator (which keeps some of what was freed between waves).
  const std::size_t bound_kb = 64 * control::kMaxRequestSize / 1024 * 3 / 2 + 16 * 1024;
  if (kAddressSanitizerBuild)
    std::printf("ASan build: RSS only reported; the plain build's run checks its bound\n");
  else
    EXPECT_LT(peak_kb - baseline_kb, bound_kb) << "baseline " << baseline_kb << " kB, peak " << peak_kb << " kB";
  std::printf("daemon RSS: baseline %zu kB, peak %zu kB, after waves %zu/%zu/%zu kB; %ld filesystem rounds\n",
              baseline_kb, peak_kb.load(), after_wave[0], after_wave[1], after_wave[2], ops.load());
  const std::string status = faults::vsymctl_status(m.mnt());
  EXPECT_NE(faults::status_value(status, "control_connections_refused"), "0");
  int st = -1;
  capture_as(As{}, {vsymctl_bin(), "--mount", m.mnt(), "set", "AFTER", "yes"}, &st);
  EXPECT_EQ(st, 0);
  EXPECT_FALSE(deadline.fired());
}

// ---------------------------------------------------------------------------
// Disk full.

// A tmpfs mounted for the test, unmounted (lazily) at the end.
struct Tmpfs {
  std::string path;
  bool mounted = false;
  Tmpfs(std::string where, const std::string& opts) : path(std::move(where)) {
    fsys::create_directories(path);
    mounted = ::mount("tmpfs", path.c_str(), "tmpfs", 0, opts.c_str()) == 0;
  }
  ~Tmpfs() {
    if (mounted) ::umount2(path.c_str(), MNT_DETACH);
  }
};

// Writes `data` to `path` (O_CREAT|O_TRUNC), fsyncs and closes: 0 or the
// first errno.
int write_all(const std::string& path, const std::string& data) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return errno;
  int err = 0;
  for (std::size_t off = 0; off < data.size() && err == 0;) {
    const ssize_t n = ::write(fd, data.data() + off, data.size() - off);
    if (n < 0) err = errno;
    else off += static_cast<std::size_t>(n);
  }
  if (err == 0 && ::fsync(fd) != 0) err = errno;
  if (::close(fd) != 0 && err == 0) err = errno;
  return err;
}

class DiskFull : public ::testing::TestWithParam<const char*> {};

// SOURCE on a 2 MiB tmpfs with 64 inodes: a write past the end of the space
// gets ENOSPC, as does a create past the last inode; what was written
// before is intact, the daemon stays up, and once space is freed writing
// works again. The run-time values' file on a full disk: `vsymctl set`
// fails with ENOSPC and the values in force stay.
TEST_P(DiskFull, EnospcPassesThroughAndNothingEarlierIsLost) {
  const vsymfs::test::TempDir tree{"vsymfs-full", 0755, "/tmp"};
  const std::string src = tree.path() + "/src", mnt = tree.path() + "/mnt", state_dir = tree.path() + "/state";
  fsys::create_directories(mnt);
  Tmpfs source(src, "size=2m,nr_inodes=64,mode=0755");
  Tmpfs state(state_dir, "size=256k,mode=0755");
  ASSERT_TRUE(source.mounted && state.mounted) << "cannot mount a tmpfs: " << std::strerror(errno);
  ASSERT_EQ(::symlink("${WHERE:-unset}", (src + "/w").c_str()), 0);
  Daemon d({"-o", std::string("allow_other,builtin_rules,socket=") + tree.path() + "/ctl.sock,state=" + state_dir +
                      "/values.toml," + GetParam()},
           src, mnt, tree.path() + "/daemon.log");
  Deadline deadline({mnt}, 180s);

  std::string keep(512 * 1024, '\0');
  for (std::size_t i = 0; i < keep.size(); ++i) keep[i] = static_cast<char>(i * 7 + i / 4096);
  ASSERT_EQ(write_all(mnt + "/keep", keep), 0);

  // Space: fill it through the mount.
  const std::string big(4 * 1024 * 1024, 'f');
  EXPECT_EQ(write_all(mnt + "/fill", big), ENOSPC);
  EXPECT_EQ(write_all(mnt + "/one-more", "x"), ENOSPC);
  EXPECT_EQ(read_file(mnt + "/keep"), keep);
  EXPECT_EQ(read_file(src + "/keep"), keep);
  EXPECT_EQ(readlink_str(mnt + "/w"), "unset");
  int st = -1;
  faults::vsymctl_status(mnt, &st);
  EXPECT_EQ(st, 0);
  // Freed, it writes again. The space comes back when the daemon closes its
  // descriptor of the file, on the RELEASE the kernel sends after the
  // writer's close, asynchronously: wait for SOURCE to show it (30 s).
  ASSERT_EQ(::unlink((mnt + "/fill").c_str()), 0);
  struct statvfs vfs {};
  for (const auto until = std::chrono::steady_clock::now() + 30s;
       (::statvfs(src.c_str(), &vfs) != 0 || vfs.f_bavail * vfs.f_frsize < 1024 * 1024) &&
       std::chrono::steady_clock::now() < until;)
    std::this_thread::sleep_for(10ms);
  EXPECT_GE(vfs.f_bavail * vfs.f_frsize, 1024u * 1024) << "the unlinked file's space never came back";
  EXPECT_EQ(write_all(mnt + "/after", "space again"), 0);
  EXPECT_EQ(read_file(mnt + "/after"), "space again");

  // Inodes: create until there are none.
  int created = 0, create_errno = 0;
  for (int i = 0; i < 200; ++i) {
    const int fd = ::open((mnt + "/n" + std::to_string(i)).c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (fd < 0) {
      create_errno = errno;
      break;
    }
    ::close(fd);
    ++created;
  }
  EXPECT_EQ(create_errno, ENOSPC) << "after " << created << " files";
  EXPECT_EQ(::mkdir((mnt + "/dir").c_str(), 0755), -1);
  EXPECT_EQ(errno, ENOSPC);
  EXPECT_EQ(read_file(mnt + "/keep"), keep);

  // The run-time values on a full disk: refused, the old ones kept.
  capture_as(As{}, {vsymctl_bin(), "--mount", mnt, "set", "WHERE", "before"}, &st);
  ASSERT_EQ(st, 0);
  ASSERT_EQ(readlink_str(mnt + "/w"), "before");
  EXPECT_NE(write_all(state_dir + "/filler", std::string(512 * 1024, 'z')), 0);
  const Outcome set = run({{vsymctl_bin(), "--mount", mnt, "set", "WHERE", "after"}, {}, 0, 0, 0, {}, [] { ::dup2(1, 2); }});
  EXPECT_NE(set.status, 0);
  EXPECT_THAT(set.out, HasSubstr("No space left on device"));
  EXPECT_EQ(readlink_str(mnt + "/w"), "before");
  EXPECT_THAT(capture_as(As{}, {vsymctl_bin(), "--mount", mnt, "list"}), HasSubstr("WHERE=before"));
  ASSERT_EQ(::unlink((state_dir + "/filler").c_str()), 0);
  capture_as(As{}, {vsymctl_bin(), "--mount", mnt, "set", "WHERE", "after"}, &st);
  EXPECT_EQ(st, 0);
  EXPECT_EQ(readlink_str(mnt + "/w"), "after");
  for (const auto& e : fsys::directory_iterator(state_dir))
    EXPECT_EQ(e.path().filename().string().find(".tmp"), std::string::npos) << "left behind: " << e.path();

  EXPECT_FALSE(deadline.fired());
  deadline.disarm();
  EXPECT_EQ(d.stop(), 0) << d.log();
}

INSTANTIATE_TEST_SUITE_P(Io, DiskFull, ::testing::Values("passthrough", "nopassthrough"));

}  // namespace
}  // namespace vsymfs::testing
