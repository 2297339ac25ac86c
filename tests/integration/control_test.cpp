// vsymctl against a real mount: every command, authorisation by the kernel's
// credentials, persistence across a restart, reload errors, and a control
// socket that refuses malformed requests without changing anything. The
// commands that need no mount are tested in tests/control/vsymctl_test.cpp.
#include <poll.h>
#include <pwd.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <chrono>
#include <climits>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "common/temp_dir.hpp"
#include "mount_fixture.hpp"

namespace vsymfs::testing {
namespace {

using ::testing::HasSubstr;
using vsymfs::test::TempDir;

struct User {
  uid_t uid;
  gid_t gid;
};

// Test users, created without a home directory when absent.
User test_user(const std::string& name) {
  if (::getpwnam(name.c_str()) == nullptr) {
    const std::string cmd = "useradd -M -s /usr/sbin/nologin " + name + " >/dev/null 2>&1";
    if (std::system(cmd.c_str()) != 0) ADD_FAILURE() << "cannot create test user " << name;
  }
  const passwd* pw = ::getpwnam(name.c_str());
  if (pw == nullptr) return {65534, 65534};
  return {pw->pw_uid, pw->pw_gid};
}

As as(const User& u, std::vector<std::string> env = {}) { return As{u.uid, u.gid, {}, std::move(env), false}; }
const As kRoot{0, 0, {}, {}, false};

struct Outcome {
  std::string out;
  int status;
};

Outcome ctl(const As& who, std::vector<std::string> args) {
  args.insert(args.begin(), vsymctl_bin());
  Outcome r{};
  r.out = capture_as(who, args, &r.status);
  return r;
}

std::string read_link_as(const As& who, const std::string& path) {
  Outcome r{};
  r.out = capture_as(who, {"/usr/bin/readlink", path}, &r.status);
  if (r.status != 0) return "<readlink failed: " + std::to_string(r.status) + ">";
  if (!r.out.empty() && r.out.back() == '\n') r.out.pop_back();
  return r.out;
}

// The daemon watches its rules file: replace it in one step so it never
// sees a half-written file.
void replace_file(const std::string& path, const std::string& text) {
  const std::string tmp = path + ".new";
  std::ofstream(tmp) << text;
  ASSERT_EQ(::rename(tmp.c_str(), path.c_str()), 0);
}

const char* kRules = R"(
[syntax]
undefined = "literal"
[universe]
names = ["att", "ucb"]
default = "att"
env = "UNIVERSE"
[vars]
WHERE = "d1"
)";

class ControlTest : public ::testing::Test {
 protected:
  void SetUp() override {
    alice_ = test_user("vsymfs-alice");
    bob_ = test_user("vsymfs-bob");
    state_ = state_dir_.path() + "/state.toml";
    mount_ = std::make_unique<Mount>(MountOptions{kRules, {"state=" + state_}, {}});
  }
  Mount& m() { return *mount_; }
  std::vector<std::string> at(std::vector<std::string> args) {
    args.insert(args.begin(), {"--mount", m().mnt()});
    return args;
  }

  User alice_{}, bob_{};
  const TempDir state_dir_{"vsymfs-ctl"};
  std::string state_;
  std::unique_ptr<Mount> mount_;
};

TEST_F(ControlTest, TwoUsersSetTheSameNameAndEachSeesOnlyTheirOwn) {
  ASSERT_EQ(::symlink("/v/${NAME}", m().src("x").c_str()), 0);
  ASSERT_EQ(ctl(as(alice_), at({"set", "NAME", "alice-value"})).status, 0);
  ASSERT_EQ(ctl(as(bob_), at({"set", "NAME", "bob-value"})).status, 0);

  EXPECT_EQ(read_link_as(as(alice_), m().mnt("x")), "/v/alice-value");
  EXPECT_EQ(read_link_as(as(bob_), m().mnt("x")), "/v/bob-value");
  EXPECT_EQ(read_link_as(kRoot, m().mnt("x")), "/v/${NAME}") << "root set nothing: literal policy";

  const Outcome alice_list = ctl(as(alice_), at({"list", "--user"}));
  EXPECT_EQ(alice_list.status, 0);
  EXPECT_EQ(alice_list.out, "NAME=alice-value\n");

  ASSERT_EQ(ctl(as(alice_), at({"unset", "NAME"})).status, 0);
  EXPECT_EQ(read_link_as(as(alice_), m().mnt("x")), "/v/${NAME}");
  EXPECT_EQ(read_link_as(as(bob_), m().mnt("x")), "/v/bob-value");
  EXPECT_EQ(ctl(as(alice_), at({"unset", "NAME"})).status, 1) << "unsetting what is not set is an error";
}

TEST_F(ControlTest, OnlyRootChangesTheSystemScopeOrReloads) {
  ASSERT_EQ(::symlink("/v/${SYS}", m().src("s").c_str()), 0);
  EXPECT_EQ(ctl(as(alice_), at({"set", "--system", "SYS", "evil"})).status, 1);
  EXPECT_EQ(ctl(as(alice_), at({"reload"})).status, 1);
  EXPECT_EQ(ctl(as(alice_), at({"list", "--system"})).out, "");
  EXPECT_EQ(read_link_as(as(bob_), m().mnt("s")), "/v/${SYS}");

  ASSERT_EQ(ctl(kRoot, at({"set", "--system", "SYS", "good"})).status, 0);
  EXPECT_EQ(read_link_as(as(bob_), m().mnt("s")), "/v/good");
  EXPECT_EQ(ctl(as(alice_), at({"list", "--system"})).out, "SYS=good\n") << "anyone may list the system scope";
  EXPECT_EQ(ctl(as(alice_), at({"list"})).out, "system SYS=good\n");
}

TEST_F(ControlTest, BadValuesAreRefusedWithUsageOrLimitErrors) {
  EXPECT_EQ(ctl(as(alice_), at({"set", "1BAD", "x"})).status, 2) << "refused before sending";
  EXPECT_EQ(ctl(as(alice_), at({"set", "N", std::string(300, 'v')})).status, 1) << "value over 256 bytes";
  EXPECT_EQ(ctl(as(alice_), at({"list"})).out, "");
}

TEST_F(ControlTest, ValuesSurviveARestart) {
  ASSERT_EQ(ctl(as(alice_), at({"set", "KEEP", "kept"})).status, 0);
  ASSERT_EQ(ctl(kRoot, at({"set", "--system", "SYSKEEP", "also"})).status, 0);
  mount_->stop();
  mount_ = std::make_unique<Mount>(MountOptions{kRules, {"state=" + state_}, {}});
  ASSERT_EQ(::symlink("${KEEP}-${SYSKEEP}", m().src("k").c_str()), 0);
  EXPECT_EQ(read_link_as(as(alice_), m().mnt("k")), "kept-also");
  EXPECT_EQ(read_link_as(as(bob_), m().mnt("k")), "${KEEP}-also");
  EXPECT_EQ(ctl(as(alice_), at({"list"})).out, "user KEEP=kept\nsystem SYSKEEP=also\n");
}

// Acknowledged means on disk: a daemon killed without any chance to clean up
// loses nothing it acknowledged.
TEST_F(ControlTest, AcknowledgedValuesSurviveSIGKILL) {
  for (int i = 0; i < 20; ++i)
    ASSERT_EQ(ctl(as(alice_), at({"set", "V" + std::to_string(i), std::to_string(i)})).status, 0);
  char sock[PATH_MAX];
  const ssize_t len = ::getxattr(m().mnt().c_str(), "security.vsymfs.control", sock, sizeof sock - 1);
  ASSERT_GT(len, 0);
  sock[len] = '\0';
  ASSERT_EQ(::kill(m().daemon_pid(), SIGKILL), 0);
  mount_->stop();
  // A killed daemon cannot remove its socket; vsymctl says what that means.
  Outcome stale{};
  stale.out = capture_as(kRoot, {"/bin/sh", "-c", std::string(vsymctl_bin()) + " --socket '" + sock + "' status 2>&1"},
                         &stale.status);
  EXPECT_NE(stale.status, 0);
  EXPECT_THAT(stale.out, HasSubstr("no vsymfs daemon is listening on " + std::string(sock)));
  ::unlink(sock);
  mount_ = std::make_unique<Mount>(MountOptions{kRules, {"state=" + state_}, {}});
  const Outcome list = ctl(as(alice_), at({"list", "--user"}));
  for (int i = 0; i < 20; ++i)
    EXPECT_THAT(list.out, HasSubstr("V" + std::to_string(i) + "=" + std::to_string(i) + "\n"));
}

TEST_F(ControlTest, ReloadWithABrokenFileKeepsTheOldRules) {
  ASSERT_EQ(::symlink("${WHERE}", m().src("w").c_str()), 0);
  EXPECT_EQ(read_link_as(kRoot, m().mnt("w")), "d1");
  replace_file(m().rules_path(), "[vars\nWHERE = \"broken\"\n");
  const Outcome broken = ctl(kRoot, at({"reload"}));
  EXPECT_EQ(broken.status, 1);
  EXPECT_EQ(read_link_as(kRoot, m().mnt("w")), "d1");

  replace_file(m().rules_path(), "[vars]\nWHERE = \"d2\"\n");
  const Outcome good = ctl(kRoot, at({"reload"}));
  EXPECT_EQ(good.status, 0);
  EXPECT_THAT(good.out, HasSubstr("reloaded " + m().rules_path()));
  EXPECT_EQ(read_link_as(kRoot, m().mnt("w")), "d2");
}

TEST_F(ControlTest, ExplainWalksThePathAndNamesEveryScope) {
  std::filesystem::create_directories(m().src("d1/sub"));
  std::filesystem::create_directories(m().src("d2/sub"));
  ASSERT_EQ(::symlink("${WHERE}", m().src("l").c_str()), 0);
  ASSERT_EQ(::symlink("l/sub", m().src("chain").c_str()), 0);

  const Outcome root = ctl(kRoot, {"explain", m().mnt("chain")});
  EXPECT_EQ(root.status, 0) << root.out;
  EXPECT_THAT(root.out, HasSubstr(m().mnt("chain") + " -> l/sub  (vsymfs)"));
  EXPECT_THAT(root.out, HasSubstr("raw:       ${WHERE}"));
  EXPECT_THAT(root.out, HasSubstr("expansion: d1"));
  EXPECT_THAT(root.out, HasSubstr("${WHERE} = d1  (system)"));
  EXPECT_THAT(root.out, HasSubstr("resolved: " + m().mnt("d1/sub")));

  ASSERT_EQ(ctl(as(alice_), at({"set", "WHERE", "d2"})).status, 0);
  const Outcome alice = ctl(as(alice_), {"explain", m().mnt("chain")});
  EXPECT_EQ(alice.status, 0) << alice.out;
  EXPECT_THAT(alice.out, HasSubstr("${WHERE} = d2  (user)"));
  EXPECT_THAT(alice.out, HasSubstr("resolved: " + m().mnt("d2/sub")));

  // The process scope, through the environment of vsymctl itself.
  const Outcome env = ctl(as(bob_, {"WHERE=d2"}), {"explain", m().mnt("l")});
  EXPECT_THAT(env.out, HasSubstr("${WHERE} = d2  (process)"));

  // An @sys path component is no link, but the walk says what it is.
  std::string sysname = ctl(kRoot, {"expand", "--rules", m().rules_path(), "@sys"}).out;
  ASSERT_FALSE(sysname.empty());
  sysname.pop_back();
  std::filesystem::create_directories(m().src(sysname + "/bin"));
  const Outcome sys = ctl(kRoot, {"explain", m().mnt("@sys/bin")});
  EXPECT_EQ(sys.status, 0) << sys.out;
  EXPECT_THAT(sys.out, HasSubstr(m().mnt("@sys") + "  (vsymfs @sys component"));

  // A plain symlink outside any vsymfs mount is shown and marked.
  const std::string outside = state_dir_.path() + "/plain";
  ASSERT_EQ(::symlink(m().mnt("l").c_str(), outside.c_str()), 0);
  const Outcome plain = ctl(kRoot, {"explain", outside});
  EXPECT_THAT(plain.out, HasSubstr("(plain symlink: not on a vsymfs mount)"));
  EXPECT_THAT(plain.out, HasSubstr("${WHERE} = d1  (system)"));
}

// A bind mount of a directory of the mount (a container's view, a user's
// shortcut) is not under the daemon's mountpoint; explain still finds the
// link's directory, by where the bind mount starts inside the filesystem.
TEST_F(ControlTest, ExplainWorksThroughABindMount) {
  std::filesystem::create_directories(m().src("proj/d1"));
  ASSERT_EQ(::symlink("${WHERE}", m().src("proj/inner").c_str()), 0);
  const std::string bind = state_dir_.path() + "/bind";
  std::filesystem::create_directories(bind);
  if (::mount(m().mnt("proj").c_str(), bind.c_str(), nullptr, MS_BIND, nullptr) != 0)
    GTEST_SKIP() << "cannot bind mount: " << std::strerror(errno);
  const Outcome out = ctl(kRoot, {"explain", bind + "/inner"});
  ::umount2(bind.c_str(), MNT_DETACH);
  EXPECT_EQ(out.status, 0) << out.out;
  EXPECT_THAT(out.out, HasSubstr(bind + "/inner -> d1  (vsymfs)"));
  EXPECT_THAT(out.out, HasSubstr("${WHERE} = d1  (system)"));
  EXPECT_THAT(out.out, HasSubstr("resolved: " + bind + "/d1"));
}

TEST_F(ControlTest, UniverseAndRun) {
  const Outcome plain = ctl(as(alice_), at({"universe"}));
  EXPECT_EQ(plain.status, 0);
  EXPECT_THAT(plain.out, ::testing::StartsWith("att "));

  const Outcome in_ucb =
      ctl(as(alice_), at({"run", "--universe", "ucb", "--", vsymctl_bin(), "--mount", m().mnt(), "universe"}));
  EXPECT_EQ(in_ucb.status, 0);
  EXPECT_EQ(in_ucb.out, "ucb (process)\n");

  ASSERT_EQ(::symlink("att=/bin/att ucb=/bin/ucb", m().src("u").c_str()), 0);
  const Outcome link = ctl(as(alice_), at({"run", "--universe", "ucb", "--", "/usr/bin/readlink", m().mnt("u")}));
  EXPECT_EQ(link.out, "/bin/ucb\n");

  EXPECT_EQ(ctl(as(alice_), at({"run", "--universe", "bsd", "--", "/bin/true"})).status, 125);
  EXPECT_EQ(ctl(as(alice_), at({"run", "--", "/nonexistent/cmd"})).status, 127);
  const Outcome env = ctl(as(alice_), at({"run", "--env", "K=V", "--", "/usr/bin/env"}));
  EXPECT_THAT(env.out, HasSubstr("K=V\n"));
  EXPECT_EQ(ctl(as(alice_), at({"run", "--", "/bin/sh", "-c", "exit 7"})).status, 7);
}

TEST_F(ControlTest, StatusAndDiscoveryByXattr) {
  const Outcome status = ctl(as(bob_), at({"status"}));
  EXPECT_EQ(status.status, 0);
  EXPECT_THAT(status.out, HasSubstr("mountpoint: " + m().mnt() + "\n"));
  EXPECT_THAT(status.out, HasSubstr("source: " + m().src() + "\n"));
  EXPECT_THAT(status.out, HasSubstr("rules: " + m().rules_path() + "\n"));
  EXPECT_THAT(status.out, HasSubstr("state_file: " + state_ + "\n"));
  EXPECT_THAT(status.out, HasSubstr("readlinks: "));
  // What the FUSE layer settled with the kernel.
  EXPECT_THAT(status.out, HasSubstr("posix_acls: mode bits only\n"));
  EXPECT_THAT(status.out, ::testing::ContainsRegex("passthrough: (off|(on|off); [0-9]+ backing files opened; [0-9]+ reads)"));

  // Outside any mount: exit 3, "no daemon".
  EXPECT_EQ(ctl(as(bob_), {"--mount", "/tmp", "status"}).status, 3);
}

// Several mounts at once: vsymctl finds, from any path inside a mount, the
// daemon of that mount, and each keeps its own values.
TEST_F(ControlTest, SeveralMountsEachAnswerForTheirOwnTree) {
  const TempDir other_state("vsymfs-ctl");
  Mount second(MountOptions{kRules, {"state=" + other_state.path() + "/state.toml"}, {}});
  for (Mount* mt : {&m(), &second}) {
    ASSERT_EQ(::mkdir(mt->src("deep").c_str(), 0755), 0);
    ASSERT_EQ(::mkdir(mt->src("deep/er").c_str(), 0755), 0);
    ASSERT_EQ(::symlink("/v/${NAME}", mt->src("x").c_str()), 0);
  }
  ASSERT_EQ(ctl(as(alice_), {"--mount", m().mnt("deep/er"), "set", "NAME", "first"}).status, 0);
  ASSERT_EQ(ctl(as(alice_), {"--mount", second.mnt("deep/er"), "set", "NAME", "second"}).status, 0);
  EXPECT_EQ(read_link_as(as(alice_), m().mnt("x")), "/v/first");
  EXPECT_EQ(read_link_as(as(alice_), second.mnt("x")), "/v/second");
  EXPECT_EQ(ctl(as(alice_), {"--mount", second.mnt("deep"), "list", "--user"}).out, "NAME=second\n");
}

// Raw bytes straight to the socket: every malformed request gets an error
// reply (or the connection closed) and nothing changes.
class RawSocket {
 public:
  explicit RawSocket(const std::string& path) {
    fd_ = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::strncpy(addr.sun_path, path.c_str(), sizeof addr.sun_path - 1);
    connected_ = ::connect(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0;
  }
  ~RawSocket() { ::close(fd_); }
  bool connected() const { return connected_; }
  void send_bytes(const std::string& bytes) { (void)::send(fd_, bytes.data(), bytes.size(), MSG_NOSIGNAL); }
  // Everything until the daemon closes (or 10 s pass).
  std::string receive_all() {
    std::string out;
    char buf[4096];
    for (;;) {
      pollfd p{fd_, POLLIN, 0};
      if (::poll(&p, 1, 10000) <= 0) break;
      const ssize_t n = ::recv(fd_, buf, sizeof buf, 0);
      if (n <= 0) break;
      out.append(buf, static_cast<std::size_t>(n));
    }
    return out;
  }

 private:
  int fd_ = -1;
  bool connected_ = false;
};

std::string framed(const std::string& payload) {
  const auto n = static_cast<std::uint32_t>(payload.size());
  std::string out{static_cast<char>(n >> 24), static_cast<char>((n >> 16) & 0xFF), static_cast<char>((n >> 8) & 0xFF),
                  static_cast<char>(n & 0xFF)};
  return out + payload;
}

TEST_F(ControlTest, MalformedRawRequestsGetErrorsAndChangeNothing) {
  char buf[PATH_MAX];
  const ssize_t n = ::getxattr(m().mnt().c_str(), "security.vsymfs.control", buf, sizeof buf);
  ASSERT_GT(n, 0) << std::strerror(errno);
  const std::string socket(buf, static_cast<std::size_t>(n));
  ASSERT_EQ(ctl(kRoot, at({"set", "--system", "STABLE", "yes"})).status, 0);

  // A client that connects and says nothing must not hold up anyone else.
  RawSocket idle(socket);
  ASSERT_TRUE(idle.connected());
  idle.send_bytes(std::string("\0\0", 2));
  const auto started = std::chrono::steady_clock::now();
  EXPECT_EQ(ctl(as(bob_), at({"status"})).status, 0);
  EXPECT_LT(std::chrono::steady_clock::now() - started, std::chrono::seconds(2));
  // ...and is dropped once its deadline passes: the daemon closes it.
  EXPECT_EQ(idle.receive_all(), "");

  const std::vector<std::pair<const char*, std::string>> bad = {
      {"garbage", framed("hello daemon")},
      {"unknown op", framed("VSYMFS1 format_disk\n")},
      {"set missing value", framed("VSYMFS1 set\nscope 6\nsystem\nname 6\nSTABLE\n")},
      {"length past the end", framed("VSYMFS1 set\nscope 6\nsystem\nname 6\nSTABLE\nvalue 99\nno\n")},
      {"extra field", framed("VSYMFS1 unset\nscope 6\nsystem\nname 6\nSTABLE\nforce 1\n1\n")},
      {"non-UTF-8 value", framed("VSYMFS1 set\nscope 6\nsystem\nname 6\nSTABLE\nvalue 1\n\xff\n")},
      {"oversized", framed(std::string(300000, 'x'))},
  };
  for (const auto& [what, bytes] : bad) {
    RawSocket s(socket);
    ASSERT_TRUE(s.connected()) << what;
    s.send_bytes(bytes);
    const std::string reply = s.receive_all();
    ASSERT_GT(reply.size(), 4u) << what;
    EXPECT_THAT(reply.substr(4), ::testing::StartsWith("VSYMFS1 error\nerrno ")) << what;
  }
  // Truncated: a header promising more than is sent, then silence and close.
  {
    RawSocket s(socket);
    s.send_bytes(std::string("\0\0\0\x40VSYMFS1 se", 14));
  }
  // A well-formed set of system scope by a non-root peer is refused too.
  const int refused = run_as(as(alice_), [&] {
    RawSocket s(socket);
    s.send_bytes(framed("VSYMFS1 set\nscope 6\nsystem\nname 6\nSTABLE\nvalue 2\nno\n"));
    return s.receive_all().find("VSYMFS1 error") == 4 ? 0 : 1;
  });
  EXPECT_EQ(refused, 0);

  const Outcome list = ctl(kRoot, at({"list", "--system"}));
  EXPECT_EQ(list.out, "STABLE=yes\n");
  EXPECT_EQ(ctl(kRoot, at({"status"})).status, 0) << "the server still answers";
}

}  // namespace
}  // namespace vsymfs::testing
