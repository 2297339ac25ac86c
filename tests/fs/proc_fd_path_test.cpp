// ProcFdPath: the *at() form through /proc/self/fd held open reaches the
// same file as the whole path, and a child of fork, whose inherited
// /proc/self/fd names its parent's table, falls back to the whole path.
#include "fs/filesystem.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <cstdlib>
#include <cstring>

#include "vsymfs/unique_fd.hpp"

namespace vsymfs::fs {
namespace {

bool same_file(int a, int b) {
  struct stat sa {}, sb {};
  return ::fstat(a, &sa) == 0 && ::fstat(b, &sb) == 0 && sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
}

TEST(ProcFdPath, TheHeldDirectoryReachesTheDescriptorsFile) {
  UniqueFd path_fd(::open("/proc/self/exe", O_PATH | O_CLOEXEC));
  ASSERT_TRUE(path_fd) << std::strerror(errno);
  const ProcFdPath path(path_fd.get());
  if (path.dir() == AT_FDCWD) GTEST_SKIP() << "/proc/self/fd cannot be opened here";
  EXPECT_STREQ(path.name(), std::to_string(path_fd.get()).c_str());
  UniqueFd via_dir(::openat(path.dir(), path.name(), O_RDONLY | O_CLOEXEC));
  ASSERT_TRUE(via_dir) << std::strerror(errno);
  UniqueFd via_path(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  ASSERT_TRUE(via_path) << std::strerror(errno);
  EXPECT_TRUE(same_file(via_dir.get(), via_path.get()));
  EXPECT_TRUE(same_file(via_dir.get(), path_fd.get()));
}

TEST(ProcFdPath, AChildOfForkUsesItsOwnTable) {
  (void)ProcFdPath(0);  // the directory is held before the fork
  const pid_t child = ::fork();
  ASSERT_GE(child, 0) << std::strerror(errno);
  if (child == 0) {
    // A descriptor only the child has: through the parent's table the
    // number would name something else or nothing.
    const int fd = ::open("/", O_PATH | O_DIRECTORY | O_CLOEXEC);
    const ProcFdPath path(fd);
    if (path.dir() != AT_FDCWD) ::_exit(2);
    const int again = ::openat(path.dir(), path.name(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    ::_exit(again >= 0 && same_file(again, fd) ? 0 : 3);
  }
  int status = 0;
  ASSERT_EQ(::waitpid(child, &status, 0), child);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0) << "2: the child used the inherited directory; 3: the path failed";
}

}  // namespace
}  // namespace vsymfs::fs
