#include "paths.hpp"

#include <sys/un.h>

#include <gtest/gtest.h>

#include <string>
#include <vector>

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

}  // namespace
}  // namespace vsymfs::control
