// OpenDirs: directory handles the kernel never released close with the mount.
#include "fs/open_dirs.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <memory>
#include <vector>

namespace vsymfs::fs {
namespace {

std::unique_ptr<DirHandle> open_root(int& fd_out) {
  auto h = std::make_unique<DirHandle>();
  h->dir = ::opendir("/");
  EXPECT_NE(h->dir, nullptr);
  fd_out = ::dirfd(h->dir);
  return h;
}

bool fd_open(int fd) { return ::fcntl(fd, F_GETFD) != -1; }

TEST(OpenDirs, CloseUnlinksFromAnyPlaceInTheList) {
  OpenDirs dirs;
  std::vector<DirHandle*> hs;
  std::vector<int> fds(4);
  for (int& fd : fds) hs.push_back(dirs.adopt(open_root(fd)));
  EXPECT_EQ(dirs.size(), 4u);
  dirs.close(hs[1]);  // middle
  dirs.close(hs[3]);  // head (last adopted)
  dirs.close(hs[0]);  // tail
  EXPECT_EQ(dirs.size(), 1u);
  EXPECT_FALSE(fd_open(fds[1]));
  EXPECT_FALSE(fd_open(fds[3]));
  EXPECT_FALSE(fd_open(fds[0]));
  EXPECT_TRUE(fd_open(fds[2]));
  dirs.close(hs[2]);
  EXPECT_EQ(dirs.size(), 0u);
  EXPECT_FALSE(fd_open(fds[2]));
}

TEST(OpenDirs, HandlesNeverReleasedCloseWithTheOwner) {
  std::vector<int> fds(3);
  {
    OpenDirs dirs;
    for (int& fd : fds) dirs.adopt(open_root(fd));
    for (int fd : fds) EXPECT_TRUE(fd_open(fd));
  }
  // Under ASan a handle left behind is also a leak report.
  for (int fd : fds) EXPECT_FALSE(fd_open(fd));
}

}  // namespace
}  // namespace vsymfs::fs
