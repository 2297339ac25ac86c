// Native behaviour in the corners (issue 20): what a file-system test suite
// found different from a native directory. Each test does the same thing to
// a file in a native directory (beside SOURCE, on the same file system) and
// to one through the mount, and compares. They run on each transport and
// with and without passthrough, where the kernel takes different paths.
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "mount_fixture.hpp"

namespace {

using vsymfs::testing::As;
using vsymfs::testing::Mount;
using vsymfs::testing::MountOptions;
using vsymfs::testing::run_as;

constexpr uid_t kOther = 1234;  // owns nothing, in no group
const As other{.uid = kOther, .gid = kOther};

std::string octal(mode_t m) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "%04o", static_cast<unsigned>(m & 07777));
  return buf;
}

// A file of `size` bytes, then `mode` (chmod after the write, as root).
void make_file(const std::string& path, size_t size, mode_t mode) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  ASSERT_GE(fd, 0) << path << ": " << std::strerror(errno);
  std::string data(size, 'x');
  ASSERT_EQ(::write(fd, data.data(), data.size()), static_cast<ssize_t>(data.size()));
  ::close(fd);
  ASSERT_EQ(::chmod(path.c_str(), mode), 0) << path;
}

// The bytes written by an O_DIRECT pwrite of `len` bytes at `off` from an
// aligned buffer, or -errno.
long odirect_pwrite(const std::string& path, off_t off, size_t len) {
  int fd = ::open(path.c_str(), O_WRONLY | O_DIRECT | O_CLOEXEC);
  if (fd < 0) return -errno;
  void* buf = nullptr;
  if (::posix_memalign(&buf, 4096, len) != 0) {
    ::close(fd);
    return -ENOMEM;
  }
  std::memset(buf, 'd', len);
  ssize_t n = ::pwrite(fd, buf, len, off);
  long r = n < 0 ? -errno : n;
  std::free(buf);
  ::close(fd);
  return r;
}

std::string result(long r) { return r < 0 ? std::string(strerrorname_np(static_cast<int>(-r))) : std::to_string(r); }

// The transports and I/O paths, by their -o options. The first names no
// transport, so the io_uring run of the suite (with_uring) takes io_uring.
const std::vector<std::vector<std::string>> kConfigs = {
    {}, {"no_uring"}, {"no_uring", "nopassthrough"}};

std::string config_name(const ::testing::TestParamInfo<std::vector<std::string>>& info) {
  if (info.param.empty()) return "default_transport";
  std::string s;
  for (const auto& o : info.param) s += (s.empty() ? "" : "_") + o;
  return s;
}

class Corners : public ::testing::TestWithParam<std::vector<std::string>> {
 protected:
  void SetUp() override {
    MountOptions o;
    o.extra_opts = GetParam();
    m_ = std::make_unique<Mount>(o);
    // The native side: beside SOURCE, on the same file system.
    native_ = m_->root() + "/native";
    std::filesystem::create_directory(native_);
    ::chmod(native_.c_str(), 0777);
    ::chmod(m_->mnt().c_str(), 0777);
  }
  void TearDown() override { m_.reset(); }

  std::string native(const std::string& rel) const { return native_ + "/" + rel; }

  std::unique_ptr<Mount> m_;
  std::string native_;
};

// Item 3: O_DIRECT writes to set-id files (which never get a passthrough
// backing file, so their writes reach the daemon) and, without passthrough,
// to every file. The daemon's buffer is not aligned as O_DIRECT wants.
TEST_P(Corners, DirectWritesWorkAsNatively) {
  for (mode_t mode : {04644, 06666, 02644, 0755, 0644}) {
    const std::string name = "direct-" + octal(mode);
    make_file(native(name), 1 << 20, mode);
    make_file(m_->mnt(name), 1 << 20, mode);
    struct Write {
      off_t off;
      size_t len;
    };
    // Aligned, a whole 1 MiB request, and unaligned (EINVAL natively too).
    for (Write w : {Write{0, 4096}, Write{0, 1 << 20}, Write{4096, 8192}, Write{1, 512}}) {
      EXPECT_EQ(result(odirect_pwrite(m_->mnt(name), w.off, w.len)),
                result(odirect_pwrite(native(name), w.off, w.len)))
          << name << " pwrite " << w.len << " at " << w.off << " as root";
    }
  }
  // As someone who is not the owner (mode 6666 lets everyone write).
  make_file(native("direct-other"), 1 << 16, 06666);
  make_file(m_->mnt("direct-other"), 1 << 16, 06666);
  auto as_other = [](const std::string& path) {
    return run_as(other, [&] { return odirect_pwrite(path, 0, 4096) == 4096 ? 0 : 1; });
  };
  EXPECT_EQ(as_other(m_->mnt("direct-other")), as_other(native("direct-other")));
}

INSTANTIATE_TEST_SUITE_P(Configs, Corners, ::testing::ValuesIn(kConfigs), config_name);

}  // namespace
