#include "control/paths.hpp"

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

const DaemonUser kRoot{};

std::string state_path_or_error(std::string_view mountpoint, const DaemonUser& who) {
  auto p = default_state_path(mountpoint, who);
  return p ? *p : "error: " + p.error().message;
}

TEST(Paths, DistinctMountpointsNeverShareASocket) {
  // "-" is escaped, so "/a-b" and "/a/b" cannot collide.
  EXPECT_NE(default_socket_path("/a-b", kRoot), default_socket_path("/a/b", kRoot));
  EXPECT_NE(state_path_or_error("/a-b", kRoot), state_path_or_error("/a/b", kRoot));
}

TEST(Paths, LongMountpointsFallBackToAHashThatFitsASocketAddress) {
  const std::string deep = "/" + std::string(300, 'd') + "/tree";
  const std::string sock = default_socket_path(deep, kRoot);
  EXPECT_LT(sock.size(), sizeof(sockaddr_un{}.sun_path));
  EXPECT_EQ(sock.rfind(std::string(VSYMFS_RUN_DIR) + "/m-", 0), 0u) << sock;
  EXPECT_NE(default_socket_path(deep + "2", kRoot), sock);
  EXPECT_EQ(default_socket_path(deep, kRoot), sock) << "stable across restarts";
  EXPECT_EQ(state_path_or_error("/srv/tree", kRoot), std::string(VSYMFS_STATE_DIR) + "/srv-tree.toml");
  // A long runtime directory leaves less room, and the name still fits.
  const DaemonUser user{1000, "/run/user/1000/" + std::string(60, 'r'), "", "/home/u"};
  const std::string user_sock = default_socket_path(deep, user);
  EXPECT_LT(user_sock.size(), sizeof(sockaddr_un{}.sun_path)) << user_sock;
}

// A daemon that is not root cannot write /run/vsymfs or /var/lib/vsymfs:
// it keeps its socket and state where its user's files go.
TEST(Paths, ANonRootDaemonUsesItsUsersDirectories) {
  const DaemonUser xdg{1000, "/run/user/1000", "/home/u/state", "/home/u"};
  EXPECT_EQ(default_socket_path("/srv/tree", xdg), "/run/user/1000/vsymfs/srv-tree.sock");
  EXPECT_EQ(state_path_or_error("/srv/tree", xdg), "/home/u/state/vsymfs/srv-tree.toml");

  const DaemonUser home_only{1000, "", "", "/home/u"};
  EXPECT_EQ(default_socket_path("/srv/tree", home_only), "/tmp/vsymfs-1000/srv-tree.sock");
  EXPECT_EQ(state_path_or_error("/srv/tree", home_only), "/home/u/.local/state/vsymfs/srv-tree.toml");

  // Relative values are invalid (XDG Base Directory specification): ignored.
  const DaemonUser relative{1000, "run", "state", "/home/u"};
  EXPECT_EQ(default_socket_path("/srv/tree", relative), "/tmp/vsymfs-1000/srv-tree.sock");
  EXPECT_EQ(state_path_or_error("/srv/tree", relative), "/home/u/.local/state/vsymfs/srv-tree.toml");

  const DaemonUser homeless{1000, "/run/user/1000", "", ""};
  const auto none = default_state_path("/srv/tree", homeless);
  ASSERT_FALSE(none.ok());
  EXPECT_NE(none.error().message.find("-o state="), std::string::npos) << none.error().message;
}

// uid 0 inside `unshare -Ur` or rootless podman is an ordinary user of the
// host: /run/vsymfs is not writable (issue 12 found "cannot bind
// /run/vsymfs/....sock: Permission denied"), and /tmp/vsymfs-0 would be
// every namespace root's.
TEST(Paths, RootOfAUserNamespaceIsNotRootOfTheHost) {
  DaemonUser ns_root{0, "", "", "/home/u"};
  ns_root.initial_user_namespace = false;
  ns_root.outside_uid = 1000;
  EXPECT_FALSE(ns_root.owns_system_directories());
  EXPECT_EQ(default_socket_path("/srv/tree", ns_root), "/tmp/vsymfs-1000/srv-tree.sock");
  EXPECT_EQ(state_path_or_error("/srv/tree", ns_root), "/home/u/.local/state/vsymfs/srv-tree.toml");
  ns_root.xdg_runtime_dir = "/run/user/1000";
  EXPECT_EQ(default_socket_path("/srv/tree", ns_root), "/run/user/1000/vsymfs/srv-tree.sock");
  ns_root.outside_uid = DaemonUser::kUnmapped;
  ns_root.xdg_runtime_dir.clear();
  EXPECT_EQ(default_socket_path("/srv/tree", ns_root), "/tmp/vsymfs-userns-0/srv-tree.sock");
  EXPECT_TRUE(kRoot.owns_system_directories());
}

TEST(Paths, UidMapsAreRead) {
  const UidMapView initial = parse_uid_map("         0          0 4294967295\n", 0);
  EXPECT_TRUE(initial.initial);
  EXPECT_EQ(initial.outside, 0u);
  const UidMapView unshared = parse_uid_map("         0       1000          1\n", 0);
  EXPECT_FALSE(unshared.initial);
  EXPECT_EQ(unshared.outside, 1000u);
  const UidMapView podman = parse_uid_map("0 1000 1\n1 100000 65536\n", 42);
  EXPECT_FALSE(podman.initial);
  EXPECT_EQ(podman.outside, 100041u);
  EXPECT_EQ(parse_uid_map("0 1000 1\n", 5).outside, DaemonUser::kUnmapped);
  // An identity map of a part of the range is a user namespace too.
  EXPECT_FALSE(parse_uid_map("0 0 1000\n", 0).initial);
  EXPECT_FALSE(parse_uid_map("garbage\n", 0).initial);
  EXPECT_FALSE(parse_uid_map("", 0).initial);
  // The daemon's own map, whatever namespace the test runs in, is read.
  const DaemonUser me = DaemonUser::current();
  EXPECT_EQ(me.euid, ::geteuid());
}

TEST(Paths, APrivateDirectoryIsMadeOrCheckedAndNeverSomeoneElses) {
  const vsymfs::test::TempDir tmp("vsymfs-paths-test");
  const std::string& root = tmp.path();
  const mode_t old = ::umask(0);
  const auto made = ensure_private_directory(root + "/a/private");
  ::umask(old);
  ASSERT_TRUE(made.ok()) << made.error().message;
  struct stat st {};
  ASSERT_EQ(::stat((root + "/a/private").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0700u);

  // An existing one of ours that others could enter is closed.
  ASSERT_EQ(::mkdir((root + "/open").c_str(), 0777), 0);
  ASSERT_EQ(::chmod((root + "/open").c_str(), 0777), 0);
  ASSERT_TRUE(ensure_private_directory(root + "/open").ok());
  ASSERT_EQ(::stat((root + "/open").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0700u);

  // A symlink is refused, even to a directory of ours.
  ASSERT_EQ(::symlink((root + "/open").c_str(), (root + "/link").c_str()), 0);
  const auto link = ensure_private_directory(root + "/link");
  ASSERT_FALSE(link.ok());
  EXPECT_EQ(link.error().code, ENOTDIR);
}

// As /tmp/vsymfs-UID made first by another user would be.
TEST(Paths, SomeoneElsesPrivateDirectoryIsRefused) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to give a directory away";
  const vsymfs::test::TempDir tmp("vsymfs-paths-test");
  const std::string& root = tmp.path();
  ASSERT_EQ(::mkdir((root + "/theirs").c_str(), 0700), 0);
  ASSERT_EQ(::chown((root + "/theirs").c_str(), ::geteuid() + 1, static_cast<gid_t>(-1)), 0);
  const auto theirs = ensure_private_directory(root + "/theirs");
  ASSERT_FALSE(theirs.ok());
  EXPECT_EQ(theirs.error().code, EPERM);
  EXPECT_NE(theirs.error().message.find("belongs to uid"), std::string::npos) << theirs.error().message;
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

// Shapes from a real /proc/self/mountinfo: a vsymfs mount, a bind mount of a
// directory inside it, a mount point with a space, an over-mount.
constexpr std::string_view kMountinfo =
    "22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/vda rw\n"
    "40 22 0:50 / /tree rw,nosuid,nodev,relatime shared:20 - fuse.vsymfs /srv/tree rw,user_id=0\n"
    "41 22 0:50 /projects/apollo /home/alice/apollo rw,relatime shared:20 - fuse.vsymfs /srv/tree rw\n"
    "42 22 0:50 /a\\040b /mnt/with\\040space rw shared:20 - fuse.vsymfs /srv/tree rw\n"
    "43 40 0:51 / /tree/tmp rw shared:21 - tmpfs tmpfs rw\n"
    "44 22 0:52 / /stacked rw - tmpfs tmpfs rw\n"
    "45 22 0:50 /x /stacked rw shared:20 - fuse.vsymfs /srv/tree rw\n";

TEST(Paths, ADirectoryIsFoundInsideTheMountedFilesystem) {
  auto in = [](std::string_view path) {
    auto p = path_in_filesystem(kMountinfo, path, "fuse.vsymfs");
    return p ? *p : std::string("<none>");
  };
  EXPECT_EQ(in("/tree"), ".");
  EXPECT_EQ(in("/tree/bin/x"), "bin/x");
  EXPECT_EQ(in("/home/alice/apollo"), "projects/apollo") << "a bind mount names its root inside the filesystem";
  EXPECT_EQ(in("/home/alice/apollo/src"), "projects/apollo/src");
  EXPECT_EQ(in("/mnt/with space/d"), "a b/d") << "mountinfo escapes spaces as \\040";
  EXPECT_EQ(in("/stacked/y"), "x/y") << "the last of stacked mounts is the one in use";
  EXPECT_EQ(in("/tree/tmp/f"), "<none>") << "a tmpfs mounted inside the mount";
  EXPECT_EQ(in("/home/alice"), "<none>");
  EXPECT_EQ(in("/treehouse"), "<none>") << "a prefix must end at a slash";
  EXPECT_EQ(path_in_filesystem("garbage\n\n- -\n", "/tree", "fuse.vsymfs"), std::nullopt);
  EXPECT_EQ(path_in_filesystem("", "/tree", "fuse.vsymfs"), std::nullopt);
}

TEST(Paths, AMountIsFoundExactlyAtItsMountPoint) {
  EXPECT_TRUE(has_mount_at(kMountinfo, "/tree", "fuse.vsymfs"));
  EXPECT_TRUE(has_mount_at(kMountinfo, "/home/alice/apollo", "fuse.vsymfs")) << "a bind mount";
  EXPECT_TRUE(has_mount_at(kMountinfo, "/mnt/with space", "fuse.vsymfs")) << "\\040 is a space";
  EXPECT_TRUE(has_mount_at(kMountinfo, "/stacked", "fuse.vsymfs")) << "under or over another";
  EXPECT_FALSE(has_mount_at(kMountinfo, "/tree/tmp", "fuse.vsymfs")) << "a tmpfs there";
  EXPECT_TRUE(has_mount_at(kMountinfo, "/tree/tmp", "tmpfs"));
  EXPECT_FALSE(has_mount_at(kMountinfo, "/tree/bin", "fuse.vsymfs")) << "inside a mount is not at it";
  EXPECT_FALSE(has_mount_at(kMountinfo, "/tre", "fuse.vsymfs"));
  EXPECT_FALSE(has_mount_at("garbage\n\n- -\n", "/tree", "fuse.vsymfs"));
  EXPECT_FALSE(has_mount_at("", "/tree", "fuse.vsymfs"));
}

TEST(Paths, ParentDirectory) {
  EXPECT_EQ(parent_directory("/run/vsymfs/x.sock"), "/run/vsymfs");
  EXPECT_EQ(parent_directory("/x"), "/");
  EXPECT_EQ(parent_directory("x"), ".");
}

}  // namespace
}  // namespace vsymfs::control
