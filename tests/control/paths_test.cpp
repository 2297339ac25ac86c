#include "paths.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "common/temp_dir.hpp"
#include "vsymfs_config.h"

namespace vsymfs::control {
namespace {

struct Case {
  std::string mountpoint;
  std::string escaped;
};

TEST(Paths, MountpointsEscapeLikeSystemd) {
  const std::vector<Case> cases = {
      {"/", "-"},
      {"/srv/tree", "srv-tree"},
      {"/srv/tree/", "srv-tree"},
      {"/mnt/my tree", "mnt-my\\x20tree"},
      {"/mnt/a-b", "mnt-a\\x2db"},
      {"/.hidden/x", "\\x2ehidden-x"},
      {"/data/v1.2:x_y", "data-v1.2:x_y"},
  };
  for (const Case& c : cases) EXPECT_EQ(escape_mountpoint(c.mountpoint, 200), c.escaped) << c.mountpoint;
}

TEST(Paths, DistinctMountpointsNeverShareASocket) {
  // "-" is escaped, so "/a-b" and "/a/b" cannot collide.
  EXPECT_NE(default_socket_path("/a-b"), default_socket_path("/a/b"));
  EXPECT_NE(default_state_path("/a-b"), default_state_path("/a/b"));
}

TEST(Paths, LongMountpointsFallBackToAHashThatFitsASocketAddress) {
  const std::string deep = "/" + std::string(300, 'd') + "/tree";
  const std::string sock = default_socket_path(deep);
  EXPECT_LT(sock.size(), sizeof(sockaddr_un{}.sun_path));
  EXPECT_EQ(sock.rfind(std::string(VSYMFS_RUN_DIR) + "/m-", 0), 0u) << sock;
  EXPECT_NE(default_socket_path(deep + "2"), sock);
  EXPECT_EQ(default_socket_path(deep), sock) << "stable across restarts";
  EXPECT_EQ(default_state_path("/srv/tree"), std::string(VSYMFS_STATE_DIR) + "/srv-tree.toml");
}

TEST(Paths, CreatedDirectoriesAre0755WhateverTheUmask) {
  const vsymfs::test::TempDir tmp("vsymfs-paths-test");
  const std::string& root = tmp.path();
  const mode_t old = ::umask(077);
  const auto ok = ensure_directory(root + "/a/b");
  ::umask(old);
  ASSERT_TRUE(ok.ok()) << ok.error().message;
  struct stat st {};
  for (const std::string& d : {root + "/a", root + "/a/b"}) {
    ASSERT_EQ(::stat(d.c_str(), &st), 0) << d;
    EXPECT_EQ(st.st_mode & 07777, 0755u) << d;
  }
  EXPECT_TRUE(ensure_directory(root + "/a/b").ok()) << "existing is fine";
  ASSERT_EQ(::close(::open((root + "/file").c_str(), O_CREAT | O_WRONLY, 0644)), 0);
  const auto not_dir = ensure_directory(root + "/file/sub");
  ASSERT_FALSE(not_dir.ok());
  EXPECT_EQ(not_dir.error().code, ENOTDIR);
}

TEST(Paths, ParentDirectory) {
  EXPECT_EQ(parent_directory("/run/vsymfs/x.sock"), "/run/vsymfs");
  EXPECT_EQ(parent_directory("/x"), "/");
  EXPECT_EQ(parent_directory("x"), ".");
}

}  // namespace
}  // namespace vsymfs::control
