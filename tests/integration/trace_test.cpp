// vsymctl trace through a real mount: two users trace at the same time and
// each sees only their own requests, root sees both; the prefix and uid
// filters; a trace outlives the control socket's idle timeout.
#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <pwd.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <chrono>
#include <cstdlib>
#include <sstream>
#include <string>
#include <vector>

#include "mount_fixture.hpp"

namespace vsymfs::testing {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;
using Clock = std::chrono::steady_clock;

struct User {
  uid_t uid;
  gid_t gid;
  std::string name;
};

User test_user(const std::string& name) {
  if (::getpwnam(name.c_str()) == nullptr) {
    const std::string cmd = "useradd -M -s /usr/sbin/nologin " + name + " >/dev/null 2>&1";
    if (std::system(cmd.c_str()) != 0) ADD_FAILURE() << "cannot create test user " << name;
  }
  const passwd* pw = ::getpwnam(name.c_str());
  if (pw == nullptr) return {65534, 65534, "nobody"};
  return {pw->pw_uid, pw->pw_gid, name};
}

// `vsymctl trace ARGS` running as a user, its stdout and stderr read as
// they come. Never waits past a deadline: a trace that hangs fails the test
// and is killed.
class Tracer {
 public:
  Tracer(const User& who, std::vector<std::string> args) {
    args.insert(args.begin(), {vsymctl_bin(), "trace"});
    int out[2], err[2];
    if (::pipe2(out, O_CLOEXEC) != 0 || ::pipe2(err, O_CLOEXEC) != 0) return;
    pid_ = ::fork();
    if (pid_ == 0) {
      ::dup2(out[1], 1);
      ::dup2(err[1], 2);
      if (::setgroups(0, nullptr) != 0 || ::setresgid(who.gid, who.gid, who.gid) != 0 ||
          ::setresuid(who.uid, who.uid, who.uid) != 0)
        ::_exit(120);
      std::vector<char*> argv;
      for (auto& a : args) argv.push_back(a.data());
      argv.push_back(nullptr);
      ::execv(argv[0], argv.data());
      ::_exit(127);
    }
    ::close(out[1]);
    ::close(err[1]);
    out_ = out[0];
    err_ = err[0];
  }
  ~Tracer() {
    if (pid_ > 0) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
    }
    if (out_ >= 0) ::close(out_);
    if (err_ >= 0) ::close(err_);
  }

  // Waits until the trace has started (its line on stderr); false after 20 s
  // or when vsymctl ended first.
  bool started() {
    const auto deadline = Clock::now() + std::chrono::seconds(20);
    // The whole line: stderr is unbuffered.
    for (;;) {
      const auto at = stderr_.find("tracing expansions");
      if (at != std::string::npos && stderr_.find('\n', at) != std::string::npos) break;
      if (!read_some(err_, stderr_, deadline)) return false;
    }
    return true;
  }

  // Everything it printed once it has exited by itself (after its -n
  // events) with `expect_status`; kills it and fails after 30 s.
  std::string finish(int expect_status = 0) {
    const auto deadline = Clock::now() + std::chrono::seconds(30);
    while (read_some(out_, stdout_, deadline)) {
    }
    if (Clock::now() >= deadline) ADD_FAILURE() << "vsymctl trace did not end in time; stderr: " << stderr_;
    int status = 0;
    if (Clock::now() >= deadline) ::kill(pid_, SIGKILL);
    ::waitpid(pid_, &status, 0);
    pid_ = -1;
    std::string rest;
    while (read_some(err_, rest, Clock::now() + std::chrono::seconds(1))) {
    }
    stderr_ += rest;
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == expect_status)
        << "status " << status << ", stderr: " << stderr_;
    return stdout_;
  }
  const std::string& errors() const { return stderr_; }

 private:
  static bool read_some(int fd, std::string& into, Clock::time_point deadline) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
    if (left <= 0) return false;
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, static_cast<int>(left)) <= 0) return false;
    char buf[4096];
    const ssize_t n = ::read(fd, buf, sizeof buf);
    if (n <= 0) return false;
    into.append(buf, static_cast<std::size_t>(n));
    return true;
  }

  pid_t pid_ = -1;
  int out_ = -1, err_ = -1;
  std::string stdout_, stderr_;
};

std::vector<std::string> lines_of(const std::string& text) {
  std::vector<std::string> out;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);)
    if (!line.empty()) out.push_back(line);
  return out;
}

// One readlink(2) as `who`, in a child of its own: one READLINK, one
// expansion.
std::string read_link_as(const User& who, const std::string& path) {
  int p[2];
  if (::pipe(p) != 0) return "";
  const pid_t pid = ::fork();
  if (pid == 0) {
    ::close(p[0]);
    if (::setgroups(0, nullptr) != 0 || ::setresgid(who.gid, who.gid, who.gid) != 0 ||
        ::setresuid(who.uid, who.uid, who.uid) != 0)
      ::_exit(120);
    char buf[4096];
    const ssize_t n = ::readlink(path.c_str(), buf, sizeof buf);
    if (n > 0 && ::write(p[1], buf, static_cast<std::size_t>(n)) != n) ::_exit(2);
    ::_exit(n > 0 ? 0 : 1);
  }
  ::close(p[1]);
  std::string out;
  char buf[4096];
  for (ssize_t n; (n = ::read(p[0], buf, sizeof buf)) > 0;) out.append(buf, static_cast<std::size_t>(n));
  ::close(p[0]);
  int status = 0;
  ::waitpid(pid, &status, 0);
  return out;
}

class TraceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    alice_ = test_user("vsymfs-alice");
    bob_ = test_user("vsymfs-bob");
    mount_ = std::make_unique<Mount>(MountOptions{});
    ASSERT_EQ(::symlink("/home/${USER}/x", m().src("who").c_str()), 0);
    ASSERT_EQ(::mkdir(m().src("sub").c_str(), 0755), 0);
    ASSERT_EQ(::symlink("in-sub-${USER}", m().src("sub/l").c_str()), 0);
  }
  Mount& m() { return *mount_; }

  User root_{0, 0, "root"}, alice_{}, bob_{};
  std::unique_ptr<Mount> mount_;
};

TEST_F(TraceTest, TwoUsersEachSeeOnlyTheirOwnAndRootSeesBoth) {
  Watchdog watchdog({mount_.get()}, std::chrono::seconds(120));
  const std::string uid_a = "uid " + std::to_string(alice_.uid) + " ", uid_b = "uid " + std::to_string(bob_.uid) + " ";
  // Each user's trace stops after 2 events; root's after 4. Reads come
  // bob, alice, bob, alice: a trace that saw the other user's requests
  // would print one of them among its first two lines.
  Tracer t_alice(alice_, {"--mount", m().mnt(), "-n", "2"});
  Tracer t_bob(bob_, {"--mount", m().mnt(), "-n", "2"});
  Tracer t_root(root_, {"--mount", m().mnt(), "-n", "4"});
  ASSERT_TRUE(t_alice.started()) << t_alice.errors();
  ASSERT_TRUE(t_bob.started()) << t_bob.errors();
  ASSERT_TRUE(t_root.started()) << t_root.errors();
  EXPECT_THAT(t_alice.errors(), HasSubstr("your own requests only"));
  EXPECT_THAT(t_root.errors(), HasSubstr("every caller"));

  EXPECT_EQ(read_link_as(bob_, m().mnt("who")), "/home/vsymfs-bob/x");
  EXPECT_EQ(read_link_as(alice_, m().mnt("who")), "/home/vsymfs-alice/x");
  EXPECT_EQ(read_link_as(bob_, m().mnt("who")), "/home/vsymfs-bob/x");
  EXPECT_EQ(read_link_as(alice_, m().mnt("who")), "/home/vsymfs-alice/x");

  const auto a = lines_of(t_alice.finish()), b = lines_of(t_bob.finish()), r = lines_of(t_root.finish());
  ASSERT_EQ(a.size(), 2u);
  ASSERT_EQ(b.size(), 2u);
  ASSERT_EQ(r.size(), 4u);
  for (const std::string& line : a) {
    EXPECT_THAT(line, HasSubstr(uid_a));
    EXPECT_THAT(line, HasSubstr("who: /home/${USER}/x -> /home/vsymfs-alice/x"));
    EXPECT_THAT(line, HasSubstr("${USER} = vsymfs-alice  (builtin)"));
    EXPECT_THAT(line, Not(HasSubstr("vsymfs-bob")));
  }
  for (const std::string& line : b) {
    EXPECT_THAT(line, HasSubstr(uid_b));
    EXPECT_THAT(line, HasSubstr("-> /home/vsymfs-bob/x"));
    EXPECT_THAT(line, Not(HasSubstr("vsymfs-alice")));
  }
  // Root: all four, in order, with pid and command name.
  EXPECT_THAT(r[0], HasSubstr(uid_b));
  EXPECT_THAT(r[1], HasSubstr(uid_a));
  EXPECT_THAT(r[2], HasSubstr(uid_b));
  EXPECT_THAT(r[3], HasSubstr(uid_a));
  for (const std::string& line : r) EXPECT_THAT(line, HasSubstr("(trace_test)"));
  EXPECT_FALSE(watchdog.fired());
}

TEST_F(TraceTest, FiltersByPrefixAndUid) {
  Watchdog watchdog({mount_.get()}, std::chrono::seconds(120));
  Tracer by_prefix(root_, {"--prefix", m().mnt("sub"), "-n", "1"});
  Tracer by_uid(root_, {"--mount", m().mnt(), "--uid", "vsymfs-bob", "-n", "1"});
  Tracer other_user(alice_, {"--mount", m().mnt(), "--uid", "0", "-n", "1"});
  ASSERT_TRUE(by_prefix.started()) << by_prefix.errors();
  ASSERT_TRUE(by_uid.started()) << by_uid.errors();
  // A user may not ask for someone else's requests.
  EXPECT_THAT(other_user.finish(1), ::testing::IsEmpty());
  EXPECT_THAT(other_user.errors(), HasSubstr("EPERM"));

  EXPECT_EQ(read_link_as(alice_, m().mnt("who")), "/home/vsymfs-alice/x");
  EXPECT_EQ(read_link_as(alice_, m().mnt("sub/l")), "in-sub-vsymfs-alice");
  EXPECT_EQ(read_link_as(bob_, m().mnt("who")), "/home/vsymfs-bob/x");

  const auto p = lines_of(by_prefix.finish()), u = lines_of(by_uid.finish());
  ASSERT_EQ(p.size(), 1u);
  EXPECT_THAT(p[0], HasSubstr(" sub/l: in-sub-${USER} -> in-sub-vsymfs-alice"));
  ASSERT_EQ(u.size(), 1u);
  EXPECT_THAT(u[0], HasSubstr("uid " + std::to_string(bob_.uid) + " "));
  EXPECT_FALSE(watchdog.fired());
}

}  // namespace
}  // namespace vsymfs::testing
