// Opening and closing files through a real mount: which round trips a
// close costs. The daemon runs with -d, which traces every FUSE request it
// receives to its log.
#include <fcntl.h>
#include <unistd.h>

#include <chrono>
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

// close() of a read-only descriptor has nothing to report, and the process
// closing it would wait for a FLUSH round trip (grep -r closes thousands).
// A descriptor open for writing still flushes: close() must report what the
// source's close() does.
TEST(OpenClose, OnlyDescriptorsOpenForWritingAreFlushedOnClose) {
  Mount m(MountOptions{.extra_args = {"-d"}});
  std::ofstream(m.src("f")) << "contents";

  for (int i = 0; i < 5; ++i) {
    int fd = ::open(m.mnt("f").c_str(), O_RDONLY | O_CLOEXEC);
    ASSERT_GE(fd, 0);
    char buf[16];
    EXPECT_EQ(::read(fd, buf, sizeof buf), 8);
    EXPECT_EQ(::close(fd), 0);
  }
  int fd = ::open(m.mnt("f").c_str(), O_WRONLY | O_APPEND | O_CLOEXEC);
  ASSERT_GE(fd, 0);
  EXPECT_EQ(::write(fd, "+", 1), 1);
  EXPECT_EQ(::close(fd), 0);

  // The trace is written as requests arrive; wait for the write's FLUSH.
  const auto end = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  while (count(m.daemon_log(), kFlush) == 0 && std::chrono::steady_clock::now() < end)
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  const std::string log = m.daemon_log();
  EXPECT_GE(count(log, "opcode: OPEN"), 6u) << "the trace does not show the opens; is -d tracing on?";
  EXPECT_EQ(count(log, kFlush), 1u) << "expected one FLUSH, for the descriptor open for writing";
}

}  // namespace
}  // namespace vsymfs::testing
