// File I/O with kernel passthrough (-o passthrough, the default): what is
// read and written through the mount is exactly what SOURCE holds, for every
// access pattern the kernel routes differently (sequential, random, append,
// mmap, truncate, several opens, exec), and reads and writes really bypass
// the daemon. The same data checks run with -o nopassthrough, so the
// fallback path stays correct too.
#include <fcntl.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <thread>
#include <cstring>
#include <fstream>
#include <future>
#include <memory>
#include <random>
#include <optional>
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
using vsymfs::testing::stop_and_wait;
using vsymfs::testing::MountOptions;
using vsymfs::testing::run_as;

constexpr uid_t kAlice = 1234;
const As alice{.uid = kAlice, .gid = kAlice};

std::string random_bytes(std::size_t n, unsigned seed) {
  std::mt19937_64 gen(seed);
  std::string s(n, '\0');
  for (std::size_t i = 0; i < n; i += 8) {
    std::uint64_t v = gen();
    std::memcpy(s.data() + i, &v, std::min<std::size_t>(8, n - i));
  }
  return s;
}

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

// Compares without printing megabytes on failure.
::testing::AssertionResult same_bytes(const std::string& got, const std::string& want) {
  if (got.size() != want.size())
    return ::testing::AssertionFailure() << "size " << got.size() << ", expected " << want.size();
  for (std::size_t i = 0; i < got.size(); ++i)
    if (got[i] != want[i]) return ::testing::AssertionFailure() << "first difference at byte " << i;
  return ::testing::AssertionSuccess();
}

using Fd = vsymfs::UniqueFd;

// What the daemon's log says at unmount about passthrough.
struct PassthroughCounts {
  unsigned long backing_files, reads, writes;
};
std::optional<PassthroughCounts> passthrough_counts(const std::string& log) {
  static const std::regex line(
      R"(passthrough on: (\d+) backing files opened; (\d+) reads and (\d+) writes reached the daemon)");
  std::smatch m;
  if (!std::regex_search(log, m, line)) return std::nullopt;
  return PassthroughCounts{std::stoul(m[1]), std::stoul(m[2]), std::stoul(m[3])};
}

// Every data test runs twice: with passthrough (the default) and without.
class PassthroughIo : public ::testing::TestWithParam<bool> {
 protected:
  void SetUp() override {
    MountOptions o;
    o.extra_opts = {GetParam() ? "passthrough" : "nopassthrough"};
    mount_ = std::make_unique<Mount>(o);
  }
  void TearDown() override { mount_.reset(); }

  std::unique_ptr<Mount> mount_;
};

TEST_P(PassthroughIo, LargeSequentialWriteThenReadMatchesSource) {
  const std::string data = random_bytes(24u << 20, 1);
  {
    Fd fd(::open(mount_->mnt("big").c_str(), O_CREAT | O_WRONLY | O_TRUNC | O_CLOEXEC, 0644));
    ASSERT_GE(fd.get(), 0) << std::strerror(errno);
    for (std::size_t off = 0; off < data.size(); off += 1u << 20)
      ASSERT_EQ(::write(fd.get(), data.data() + off, 1u << 20), 1 << 20) << std::strerror(errno);
  }
  EXPECT_TRUE(same_bytes(slurp(mount_->src("big")), data));
  EXPECT_TRUE(same_bytes(slurp(mount_->mnt("big")), data));
}

TEST_P(PassthroughIo, RandomOffsetsReadAndWrite) {
  std::string model = random_bytes(4u << 20, 2);
  spit(mount_->src("rand"), model);
  Fd fd(::open(mount_->mnt("rand").c_str(), O_RDWR | O_CLOEXEC));
  ASSERT_GE(fd.get(), 0) << std::strerror(errno);
  std::mt19937 gen(3);
  std::uniform_int_distribution<std::size_t> pos(0, model.size() - 1), len(1, 70000);
  std::string buf;
  for (int i = 0; i < 300; ++i) {
    const std::size_t off = pos(gen);
    const std::size_t n = std::min(len(gen), model.size() - off);
    if (i % 2 == 0) {
      const std::string chunk = random_bytes(n, 100 + i);
      ASSERT_EQ(::pwrite(fd.get(), chunk.data(), n, static_cast<off_t>(off)), static_cast<ssize_t>(n));
      model.replace(off, n, chunk);
    } else {
      buf.assign(n, '\0');
      ASSERT_EQ(::pread(fd.get(), buf.data(), n, static_cast<off_t>(off)), static_cast<ssize_t>(n));
      ASSERT_TRUE(same_bytes(buf, model.substr(off, n))) << "read " << n << " at " << off;
    }
  }
  EXPECT_TRUE(same_bytes(slurp(mount_->src("rand")), model));
}

TEST_P(PassthroughIo, AppendFromTwoDescriptorsInterleaves) {
  spit(mount_->src("log"), "start\n");
  Fd a(::open(mount_->mnt("log").c_str(), O_WRONLY | O_APPEND | O_CLOEXEC));
  Fd b(::open(mount_->mnt("log").c_str(), O_WRONLY | O_APPEND | O_CLOEXEC));
  ASSERT_GE(a.get(), 0);
  ASSERT_GE(b.get(), 0);
  std::string want = "start\n";
  for (int i = 0; i < 50; ++i) {
    const std::string line = (i % 2 ? "b" : "a") + std::to_string(i) + "\n";
    ASSERT_EQ(::write(i % 2 ? b.get() : a.get(), line.data(), line.size()), static_cast<ssize_t>(line.size()));
    want += line;
  }
  EXPECT_EQ(slurp(mount_->src("log")), want);
  EXPECT_EQ(slurp(mount_->mnt("log")), want);
}

TEST_P(PassthroughIo, MmapSharedWritesReachSourceAndReadsSeeSource) {
  const std::size_t size = 1u << 20;
  std::string model = random_bytes(size, 4);
  spit(mount_->src("map"), model);
  Fd fd(::open(mount_->mnt("map").c_str(), O_RDWR | O_CLOEXEC));
  ASSERT_GE(fd.get(), 0) << std::strerror(errno);
  void* p = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd.get(), 0);
  ASSERT_NE(p, MAP_FAILED) << std::strerror(errno);
  char* bytes = static_cast<char*>(p);
  EXPECT_TRUE(same_bytes(std::string(bytes, size), model));
  for (std::size_t i = 0; i < size; i += 4096) bytes[i] = static_cast<char>(i / 4096);
  for (std::size_t i = 0; i < size; i += 4096) model[i] = static_cast<char>(i / 4096);
  ASSERT_EQ(::msync(p, size, MS_SYNC), 0) << std::strerror(errno);
  ASSERT_EQ(::munmap(p, size), 0);
  EXPECT_TRUE(same_bytes(slurp(mount_->src("map")), model));
}

TEST_P(PassthroughIo, TruncateWhileOpen) {
  spit(mount_->src("trunc"), random_bytes(1u << 20, 5));
  Fd fd(::open(mount_->mnt("trunc").c_str(), O_RDWR | O_CLOEXEC));
  ASSERT_GE(fd.get(), 0) << std::strerror(errno);
  ASSERT_EQ(::ftruncate(fd.get(), 1000), 0) << std::strerror(errno);
  char buf[4096];
  EXPECT_EQ(::pread(fd.get(), buf, sizeof buf, 0), 1000);
  struct stat st {};
  ASSERT_EQ(::fstat(fd.get(), &st), 0);
  EXPECT_EQ(st.st_size, 1000);
  // Truncated by path while this descriptor stays open.
  ASSERT_EQ(::truncate(mount_->mnt("trunc").c_str(), 10), 0) << std::strerror(errno);
  EXPECT_EQ(::pread(fd.get(), buf, sizeof buf, 0), 10);
  ASSERT_EQ(::pwrite(fd.get(), "tail", 4, 20), 4);
  ASSERT_EQ(::stat(mount_->src("trunc").c_str(), &st), 0);
  EXPECT_EQ(st.st_size, 24);
}

// The first open fixes how an inode does I/O and registers its backing
// file: a later open with another mode, by another user, must work and see
// the same data.
TEST_P(PassthroughIo, OpensWithDifferentModesByDifferentUsers) {
  spit(mount_->src("shared"), "0123456789");
  ASSERT_EQ(::chmod(mount_->src("shared").c_str(), 0644), 0);
  Fd reader(::open(mount_->mnt("shared").c_str(), O_RDONLY | O_CLOEXEC));
  ASSERT_GE(reader.get(), 0);
  // Alice may only read: her open must not change what root can do next.
  EXPECT_EQ(run_as(alice, [&] {
              int fd = ::open(mount_->mnt("shared").c_str(), O_RDONLY | O_CLOEXEC);
              if (fd < 0) return errno;
              char c = 0;
              int r = ::pread(fd, &c, 1, 3) == 1 && c == '3' ? 0 : 100;
              ::close(fd);
              return r;
            }),
            0);
  EXPECT_EQ(run_as(alice, [&] { return ::open(mount_->mnt("shared").c_str(), O_WRONLY | O_CLOEXEC) < 0 ? errno : 0; }),
            EACCES);
  Fd writer(::open(mount_->mnt("shared").c_str(), O_WRONLY | O_CLOEXEC));
  ASSERT_GE(writer.get(), 0) << std::strerror(errno);
  ASSERT_EQ(::pwrite(writer.get(), "ab", 2, 0), 2);
  char buf[16] = {};
  ASSERT_EQ(::pread(reader.get(), buf, sizeof buf, 0), 10);
  EXPECT_EQ(std::string(buf, 10), "ab23456789");
}

TEST_P(PassthroughIo, ExecOfABinaryWrittenThroughTheMount) {
  const std::string binary = slurp("/bin/true");
  ASSERT_FALSE(binary.empty());
  {
    Fd fd(::open(mount_->mnt("mytrue").c_str(), O_CREAT | O_WRONLY | O_TRUNC | O_CLOEXEC, 0755));
    ASSERT_GE(fd.get(), 0) << std::strerror(errno);
    ASSERT_EQ(::write(fd.get(), binary.data(), binary.size()), static_cast<ssize_t>(binary.size()));
  }
  pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    const std::string path = mount_->mnt("mytrue");
    ::execl(path.c_str(), "mytrue", static_cast<char*>(nullptr));
    ::_exit(127);
  }
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "status " << status << "\n" << mount_->daemon_log();
}

// A set-user-ID bit that appears while root holds the file open (root's
// open registered the backing file) is still cleared by another user's
// write, as natively. Two things see to it: this kernel removes privileges
// on the FUSE file with the writer's credentials before a passthrough write,
// and the daemon registers backing files with CAP_SYS_ADMIN as their only
// capability, never CAP_FSETID (for kernels that only act on the backing
// file, with the registrant's credentials).
TEST_P(PassthroughIo, WriteClearsSetuidAddedWhileOpen) {
  spit(mount_->src("prog"), "#!/bin/sh\n");
  ASSERT_EQ(::chmod(mount_->src("prog").c_str(), 0777), 0);
  Fd root_fd(::open(mount_->mnt("prog").c_str(), O_RDWR | O_CLOEXEC));  // root opens (registers) first
  ASSERT_GE(root_fd.get(), 0);
  ASSERT_EQ(::chmod(mount_->mnt("prog").c_str(), 04777), 0);
  struct stat st {};
  ASSERT_EQ(::stat(mount_->src("prog").c_str(), &st), 0);
  ASSERT_NE(st.st_mode & S_ISUID, 0u);
  EXPECT_EQ(run_as(alice, [&] {
              int fd = ::open(mount_->mnt("prog").c_str(), O_WRONLY | O_APPEND | O_CLOEXEC);
              if (fd < 0) return errno;
              int r = ::write(fd, "x", 1) == 1 ? 0 : errno;
              ::close(fd);
              return r;
            }),
            0);
  ASSERT_EQ(::stat(mount_->src("prog").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & S_ISUID, 0u);
  EXPECT_EQ(st.st_size, 11);
}

// A small file read-only opens plain FUSE (its pages kept by the kernel),
// an open for writing goes passthrough: what the writer wrote must be what
// the next reader sees, never the kernel's old pages.
TEST_P(PassthroughIo, SmallFileReadThenRewrittenThenReadAgain) {
  spit(mount_->src("small"), "old contents");
  EXPECT_EQ(slurp(mount_->mnt("small")), "old contents");
  for (int round = 0; round < 5; ++round) {
    // Same size, no O_TRUNC: only the modification time tells the kernel
    // that its pages are stale.
    const std::string text = "round " + std::to_string(round) + " data";
    ASSERT_EQ(text.size(), std::string("old contents").size());
    {
      Fd fd(::open(mount_->mnt("small").c_str(), O_WRONLY | O_CLOEXEC));
      ASSERT_GE(fd.get(), 0) << std::strerror(errno);
      ASSERT_EQ(::write(fd.get(), text.data(), text.size()), static_cast<ssize_t>(text.size()));
    }
    EXPECT_EQ(slurp(mount_->mnt("small")), text);
    EXPECT_EQ(slurp(mount_->src("small")), text);
  }
}

INSTANTIATE_TEST_SUITE_P(Modes, PassthroughIo, ::testing::Bool(),
                         [](const ::testing::TestParamInfo<bool>& p) { return p.param ? "passthrough" : "nopassthrough"; });

// Passthrough is really on: with the daemon stopped (SIGSTOP), reads of an
// open file still complete, and the daemon's count of READ and WRITE
// requests stays at zero after reads and writes. (A write is not tried with
// the daemon stopped: the kernel may refresh attributes first, a GETATTR.)
TEST(PassthroughActive, ReadsAndWritesBypassTheDaemon) {
  Mount m;
  spit(m.src("data"), random_bytes(8u << 20, 6));
  {
    Fd fd(::open(m.mnt("data").c_str(), O_RDWR | O_CLOEXEC));
    ASSERT_GE(fd.get(), 0) << std::strerror(errno);
    if (m.daemon_log().find("passthrough: on") == std::string::npos)
      GTEST_SKIP() << "the kernel or daemon has no passthrough here:\n" << m.daemon_log();

    ASSERT_TRUE(stop_and_wait(m.daemon_pid()));
    auto io = std::async(std::launch::async, [&] {
      std::string buf(8u << 20, '\0');
      return ::pread(fd.get(), buf.data(), buf.size(), 0) == static_cast<ssize_t>(buf.size());
    });
    const bool finished = io.wait_for(std::chrono::seconds(10)) == std::future_status::ready;
    ::kill(m.daemon_pid(), SIGCONT);  // never leave the daemon (and a hung reader) stopped
    ASSERT_TRUE(finished) << "a read waited for the stopped daemon";
    EXPECT_TRUE(io.get());
    const std::string block(1u << 20, 'w');
    for (off_t off = 0; off < (8 << 20); off += 1 << 20)
      ASSERT_EQ(::pwrite(fd.get(), block.data(), block.size(), off), static_cast<ssize_t>(block.size()));
  }  // closed before unmounting
  EXPECT_TRUE(same_bytes(slurp(m.src("data")), std::string(8u << 20, 'w')));

  m.stop();
  const std::string log = m.daemon_log();
  const std::optional<PassthroughCounts> counts = passthrough_counts(log);
  ASSERT_TRUE(counts) << log;
  EXPECT_GE(counts->backing_files, 1u);
  EXPECT_EQ(counts->reads, 0u);
  EXPECT_EQ(counts->writes, 0u);
}

// A file the kernel will not take as a backing file (one on an overlayfs
// mounted inside SOURCE is stacked too deep: ELOOP) is read and written
// through the daemon instead, intact; the refusal is logged once and the
// other files keep passthrough.
TEST(PassthroughActive, AFileTheKernelRefusesAsBackingIsServedByTheDaemon) {
  Mount m;
  for (const char* d : {"lower", "upper", "work"}) ASSERT_EQ(::mkdir((m.root() + "/" + d).c_str(), 0755), 0);
  ASSERT_EQ(::mkdir(m.src("ovl").c_str(), 0755), 0);
  const std::string opts = "lowerdir=" + m.root() + "/lower,upperdir=" + m.root() + "/upper,workdir=" + m.root() + "/work";
  if (::mount("overlay", m.src("ovl").c_str(), "overlay", 0, opts.c_str()) != 0)
    GTEST_SKIP() << "cannot mount an overlayfs: " << std::strerror(errno);
  const std::string data = random_bytes(3u << 20, 7);
  spit(m.mnt("ovl/f"), data);
  EXPECT_TRUE(same_bytes(slurp(m.mnt("ovl/f")), data));
  EXPECT_TRUE(same_bytes(slurp(m.src("ovl/f")), data));
  spit(m.mnt("plain"), data);  // not stacked: passthrough as usual
  EXPECT_TRUE(same_bytes(slurp(m.mnt("plain")), data));
  const bool on = m.daemon_log().find("passthrough: on") != std::string::npos;
  m.stop();
  ::umount2(m.src("ovl").c_str(), MNT_DETACH);
  if (!on) GTEST_SKIP() << "the kernel or daemon has no passthrough here:\n" << m.daemon_log();
  const std::string log = m.daemon_log();
  EXPECT_NE(log.find("such files use plain FUSE I/O (logged once)"), std::string::npos) << log;
  const std::optional<PassthroughCounts> counts = passthrough_counts(log);
  ASSERT_TRUE(counts) << log;
  EXPECT_GE(counts->backing_files, 1u) << "the file outside the overlay";
  EXPECT_GT(counts->writes, 0u) << "the overlay file's writes";
}

// A read-only open of a file last seen small stays plain FUSE without an
// fstat (the size the daemon last sent the kernel is the hint). The hint
// must follow the file: one grown in SOURCE directly is seen large by the
// next GETATTR, and one grown through the mount is not judged by a size
// seen while it was open for writing. Both large files are then read
// through their backing files, not the daemon.
TEST(PassthroughActive, AFileThatGrewIsReadThroughItsBackingFile) {
  Mount m(MountOptions{.extra_opts = {"attr_timeout=0.1"}});
  vsymfs::testing::Watchdog dog({&m}, std::chrono::seconds(60));  // a hung mount fails the test, not the run
  const std::string big = random_bytes(4u << 20, 8);
  for (const char* name : {"outside", "through"}) {
    spit(m.src(name), std::string(4096, 's'));
    EXPECT_EQ(slurp(m.mnt(name)), std::string(4096, 's'));  // small: plain FUSE, one READ
  }
  if (m.daemon_log().find("passthrough: on") == std::string::npos)
    GTEST_SKIP() << "the kernel or daemon has no passthrough here:\n" << m.daemon_log();

  // Grown in SOURCE: a stat once the attributes expire sees it.
  spit(m.src("outside"), big);
  struct stat st {};
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  while (::stat(m.mnt("outside").c_str(), &st) == 0 && st.st_size != static_cast<off_t>(big.size()) &&
         std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  ASSERT_EQ(st.st_size, static_cast<off_t>(big.size()));
  EXPECT_TRUE(same_bytes(slurp(m.mnt("outside")), big));

  // Grown through the mount, with a stat in the middle of the writing.
  {
    Fd fd(::open(m.mnt("through").c_str(), O_WRONLY | O_APPEND | O_CLOEXEC));
    ASSERT_GE(fd.get(), 0) << std::strerror(errno);
    ASSERT_EQ(::write(fd.get(), big.data(), 8192), 8192);
    ASSERT_EQ(::stat(m.mnt("through").c_str(), &st), 0) << std::strerror(errno);
    EXPECT_EQ(st.st_size, 4096 + 8192);
    ASSERT_EQ(::write(fd.get(), big.data() + 8192, big.size() - 8192), static_cast<ssize_t>(big.size() - 8192));
  }
  EXPECT_TRUE(same_bytes(slurp(m.mnt("through")), std::string(4096, 's') + big));
  dog.disarm();
  EXPECT_FALSE(dog.fired());

  m.stop();
  const std::string log = m.daemon_log();
  const std::optional<PassthroughCounts> counts = passthrough_counts(log);
  ASSERT_TRUE(counts) << log;
  // The small files' reads (one READ of 4 KiB each); none of the large ones'.
  EXPECT_LE(counts->reads, 2u) << "a 4 MiB file was read through the daemon";
}

// -o nopassthrough: every read goes through the daemon.
TEST(PassthroughActive, NopassthroughSendsReadsToTheDaemon) {
  Mount m(MountOptions{.extra_opts = {"nopassthrough"}});
  spit(m.src("data"), "hello");
  EXPECT_EQ(slurp(m.mnt("data")), "hello");
  m.stop();
  EXPECT_EQ(m.daemon_log().find("passthrough: on"), std::string::npos) << m.daemon_log();
  EXPECT_EQ(m.daemon_log().find("backing files opened"), std::string::npos) << m.daemon_log();
}

}  // namespace
