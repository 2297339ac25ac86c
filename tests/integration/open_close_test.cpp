// Opening and closing files through a real mount: which round trips a
// close costs. The daemon runs with -d, which traces every FUSE request it
// receives to its log.
#include <fcntl.h>
#include <linux/magic.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <cstddef>
#include <fstream>
#include <string>
#include <thread>

#include <gtest/gtest.h>

#include "mount_fixture.hpp"

namespace vsymfs::testing {
namespace {

std::size_t count(const std::string& text, const std::string& what) {
  std::size_t n = 0;
  for (auto pos = text.find(what); pos != std::string::npos; pos = text.find(what, pos + what.size())) ++n;
  return n;
}

constexpr const char* kFlush = "opcode: FLUSH";

// The filesystems whose close() cannot report anything (no ->flush), as
// the daemon knows them.
bool close_is_silent(const std::string& path) {
  struct statfs sf {};
  if (::statfs(path.c_str(), &sf) != 0) return false;
  switch (static_cast<unsigned long>(sf.f_type)) {
    case EXT4_SUPER_MAGIC:
    case XFS_SUPER_MAGIC:
    case BTRFS_SUPER_MAGIC:
    case TMPFS_MAGIC:
      return true;
    default:
      return false;
  }
}

// Five read-only open/read/close cycles, then one open/write/close.
void read_five_times_then_write(const std::string& path) {
  for (int i = 0; i < 5; ++i) {
    int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    ASSERT_GE(fd, 0) << path;
    char buf[16];
    EXPECT_EQ(::read(fd, buf, sizeof buf), 8);
    EXPECT_EQ(::close(fd), 0);
  }
  int fd = ::open(path.c_str(), O_WRONLY | O_APPEND | O_CLOEXEC);
  ASSERT_GE(fd, 0) << path;
  EXPECT_EQ(::write(fd, "+", 1), 1);
  EXPECT_EQ(::close(fd), 0);
}

// The trace is written as requests arrive, before they are answered: every
// OPEN and FLUSH is in it by the time open() and close() have returned (a
// FLUSH is part of close(), not after it). Waiting for `opens` OPENs, 30 s
// at most, only guards against a trace that lags its writes.
std::string settled_log(const Mount& m, std::size_t opens) {
  const auto end = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (count(m.daemon_log(), "opcode: OPEN") < opens && std::chrono::steady_clock::now() < end)
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  return m.daemon_log();
}

// close() of a read-only descriptor has nothing to report, and the process
// closing it would wait for a FLUSH round trip (grep -r closes thousands).
// Neither has a descriptor open for writing on a filesystem whose close()
// cannot fail (ext4, xfs, btrfs, tmpfs); anywhere else it is flushed, so
// close() reports what the source's close() does.
TEST(OpenClose, OnlyWritableDescriptorsOnFilesystemsWhoseCloseCanFailAreFlushed) {
  Mount m(MountOptions{.extra_args = {"-d"}});
  std::ofstream(m.src("f")) << "contents";
  read_five_times_then_write(m.mnt("f"));
  std::string log = settled_log(m, 6);
  ASSERT_GE(count(log, "opcode: OPEN"), 6u) << "the trace does not show the opens; is -d tracing on?";
  EXPECT_EQ(count(log, kFlush), close_is_silent(m.src()) ? 0u : 1u);

  // A filesystem mounted inside SOURCE that the daemon does not know (ramfs)
  // keeps the FLUSH of a descriptor open for writing, and only that one.
  ASSERT_EQ(::mkdir(m.src("sub").c_str(), 0755), 0);
  if (::mount("vsymfs-test", m.src("sub").c_str(), "ramfs", 0, nullptr) != 0)
    GTEST_SKIP() << "cannot mount a ramfs: " << std::strerror(errno);
  std::ofstream(m.src("sub/g")) << "contents";
  const std::size_t flushes_before = count(log, kFlush);
  read_five_times_then_write(m.mnt("sub/g"));
  log = settled_log(m, 12);
  EXPECT_EQ(count(log, kFlush), flushes_before + 1) << "expected one FLUSH, for the descriptor open for writing";
  ::umount2(m.src("sub").c_str(), MNT_DETACH);
}

}  // namespace
}  // namespace vsymfs::testing
