// Issue 18, findings 4 and 6, performed through a real mount:
//  - a set-group-id program and a file-capability program that a user runs
//    get neither that user's environment nor the values the user set with
//    `vsymctl set`; they get the administrator's [user.NAME] table and the
//    scopes below it (the user's own programs still get the user's values);
//  - the daemon keeps one environment per process however many threads ask,
//    and all kept environments together within -o environ_cache: the
//    daemon's resident memory is measured from /proc/PID/status before and
//    after the attack.
#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <pwd.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "child_process.hpp"
#include "mount_fixture.hpp"

namespace vsymfs::testing {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

struct User {
  std::string name;
  uid_t uid = 0;
  gid_t gid = 0;
};

User ensure_user(const std::string& name) {
  if (::getpwnam(name.c_str()) == nullptr) {
    const std::string cmd = "useradd -M -s /usr/sbin/nologin " + name + " >/dev/null 2>&1";
    if (std::system(cmd.c_str()) != 0) ADD_FAILURE() << "cannot create test user " << name;
  }
  const passwd* pw = ::getpwnam(name.c_str());
  if (pw == nullptr) return {name, 0, 0};
  return {name, pw->pw_uid, pw->pw_gid};
}

std::string reader_bin() {
  const char* p = std::getenv("VSYMFS_SECURE_READER");
  return p != nullptr ? p : "";
}

// vsymctl as a user; its exit status and output.
struct Ctl {
  int status = -1;
  std::string out;
};
Ctl ctl(const User& u, const std::string& mnt, std::vector<std::string> args) {
  args.insert(args.begin(), {vsymctl_bin(), "--mount", mnt});
  Ctl r;
  r.out = capture_as(As{u.uid, u.gid, {}, {}, false}, args, &r.status);
  return r;
}

// One "key: value" line of `vsymctl status` (as root), as a number.
long long status_number(const std::string& mnt, const std::string& key) {
  const Ctl r = ctl(User{"root", 0, 0}, mnt, {"status"});
  std::istringstream in(r.out);
  for (std::string line; std::getline(in, line);) {
    if (line.rfind(key + ": ", 0) == 0) return std::atoll(line.c_str() + key.size() + 2);
  }
  ADD_FAILURE() << "no '" << key << "' in vsymctl status (exit " << r.status << "):\n" << r.out;
  return -1;
}

long rss_kib(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  for (std::string line; std::getline(in, line);) {
    if (line.rfind("VmRSS:", 0) == 0) return std::atol(line.c_str() + 6);
  }
  return -1;
}

// ---------------------------------------------------------------------------
// Finding 4: set-id and file-capability programs get user-chosen values.

const char* kSecureRules = R"(
[syntax]
undefined = "literal"

[user.vsymfs-alice]
ADMIN_CONF = "admin.conf"
)";

class SecureCallers : public ::testing::Test {
 protected:
  void SetUp() override {
    if (reader_bin().empty()) GTEST_SKIP() << "VSYMFS_SECURE_READER is not set (run through meson)";
    alice_ = ensure_user("vsymfs-alice");
    bob_ = ensure_user("vsymfs-bob");
    ASSERT_NE(alice_.uid, 0u);
    ASSERT_NE(bob_.gid, alice_.gid) << "the set-group-id test needs a group alice is not in";
    mount_ = std::make_unique<Mount>(MountOptions{kSecureRules, {"state=" + state_.path() + "/state.toml"}, {}});
    // What an administrator writes, reads of configuration chosen by name.
    fs::create_symlink("/etc/app/${CONF}", mount_->src("conf"));
    fs::create_symlink("/etc/app/${ADMIN_CONF}", mount_->src("admin_conf"));
    fs::create_symlink("/home/${USER}", mount_->src("home"));  // identity builtins only
  }

  // A copy of the reader in the mount's temporary directory (reachable by
  // alice), owned by root and `gid`, with `mode`.
  std::string copy_reader(const std::string& name, gid_t gid, mode_t mode) {
    const std::string path = mount_->root() + "/" + name;
    fs::copy_file(reader_bin(), path, fs::copy_options::overwrite_existing);
    EXPECT_EQ(::chown(path.c_str(), 0, gid), 0);
    EXPECT_EQ(::chmod(path.c_str(), mode), 0);  // after chown, which clears set-id bits
    return path;
  }

  // Runs a reader as alice over the three links; its output lines.
  std::vector<std::string> read_as_alice(const std::string& reader, std::vector<std::string> env = {}) {
    Spawn s;
    s.argv = {reader, "readlink", mount_->mnt("conf"), mount_->mnt("admin_conf"), mount_->mnt("home")};
    s.env = std::move(env);
    s.ruid = s.euid = alice_.uid;
    s.gid = alice_.gid;
    s.groups = {alice_.gid};
    const Outcome o = run(s);
    EXPECT_TRUE(o) << reader << ": status " << o.status << (o.timed_out ? " (timed out)" : "") << "\n"
                   << mount_->daemon_log();
    std::vector<std::string> lines;
    std::istringstream in(o.out);
    for (std::string line; std::getline(in, line);) lines.push_back(line);
    return lines;
  }

  User alice_, bob_;
  vsymfs::test::TempDir state_{"vsymfs-sec"};
  std::unique_ptr<Mount> mount_;
};

TEST_F(SecureCallers, SetIdAndCapabilityProgramsIgnoreTheUsersRuntimeValues) {
  // The attack: alice chooses values for names an administrator's links use.
  ASSERT_EQ(ctl(alice_, mount_->mnt(), {"set", "CONF", "../../home/attk/evil.conf"}).status, 0);
  ASSERT_EQ(ctl(alice_, mount_->mnt(), {"set", "ADMIN_CONF", "../../home/attk/evil2.conf"}).status, 0);
  ASSERT_EQ(ctl(alice_, mount_->mnt(), {"set", "USER", "root"}).status, 0);

  // Her own programs follow her choice: it is her view.
  const std::string plain = copy_reader("reader-plain", 0, 0755);
  EXPECT_THAT(read_as_alice(plain), ::testing::ElementsAre("secure=0", "/etc/app/../../home/attk/evil.conf",
                                                           "/etc/app/../../home/attk/evil2.conf", "/home/root"));
  // Her environment too, for the names it is allowed to give.
  EXPECT_THAT(read_as_alice(plain, {"CONF=from-env"}),
              ::testing::ElementsAre("secure=0", "/etc/app/from-env", "/etc/app/../../home/attk/evil2.conf",
                                     "/home/root"));

  // What a secure caller must see: nothing alice chose. CONF is undefined
  // for it (literal policy), ADMIN_CONF is the administrator's [user] table,
  // USER is the builtin.
  const std::vector<std::string> safe = {"/etc/app/${CONF}", "/etc/app/admin.conf", "/home/vsymfs-alice"};

  // A set-group-id program (group bob's, which alice is not in).
  const std::string setgid = copy_reader("reader-setgid", bob_.gid, 02755);
  {
    const auto lines = read_as_alice(setgid, {"CONF=from-env"});
    ASSERT_FALSE(lines.empty());
    ASSERT_EQ(lines[0], "secure=1") << "the kernel did not run the copy set-group-id (nosuid /tmp?)";
    EXPECT_EQ(std::vector<std::string>(lines.begin() + 1, lines.end()), safe) << "set-group-id program";
  }

  // A program with a file capability: real and effective ids are alice's,
  // only AT_SECURE (and its capability sets) say it is privileged.
  if (::access("/usr/sbin/setcap", X_OK) != 0 && ::access("/sbin/setcap", X_OK) != 0)
    GTEST_SKIP() << "setcap is not installed (Debian: libcap2-bin); the file-capability half did not run";
  const std::string capped = copy_reader("reader-cap", 0, 0755);
  const std::string setcap = "setcap cap_net_raw+ep '" + capped + "' 2>&1";
  ASSERT_EQ(std::system(setcap.c_str()), 0) << setcap;
  {
    const auto lines = read_as_alice(capped, {"CONF=from-env"});
    ASSERT_FALSE(lines.empty());
    if (lines[0] != "secure=1")
      GTEST_SKIP() << "the file capability did not take (" << lines[0] << "): no cap_net_raw in the bounding set?";
    EXPECT_EQ(std::vector<std::string>(lines.begin() + 1, lines.end()), safe) << "cap_net_raw program";
  }
}

// ---------------------------------------------------------------------------
// Finding 6: daemon memory grows per caller thread.

// A reader process kept alive: started with a pipe on stdin (closing it
// lets the program exit) and its first line of output read.
class Live {
 public:
  Live(const User& u, std::vector<std::string> argv, std::vector<std::string> env) {
    int in[2], out[2];
    if (::pipe2(in, O_CLOEXEC) != 0 || ::pipe2(out, O_CLOEXEC) != 0) return;
    std::vector<char*> a, e;
    for (auto& s : argv) a.push_back(s.data());
    a.push_back(nullptr);
    for (auto& s : env) e.push_back(s.data());
    e.push_back(nullptr);
    gid_t groups[] = {u.gid};
    pid_ = ::fork();
    if (pid_ == 0) {
      ::dup2(in[0], 0);
      ::dup2(out[1], 1);
      if (::setgroups(1, groups) != 0 || ::setresgid(u.gid, u.gid, u.gid) != 0 ||
          ::setresuid(u.uid, u.uid, u.uid) != 0)
        ::_exit(120);
      ::execve(a[0], a.data(), e.data());
      ::_exit(127);
    }
    ::close(in[0]);
    ::close(out[1]);
    stdin_ = in[1];
    stdout_ = out[0];
  }
  ~Live() {
    if (stdin_ >= 0) ::close(stdin_);
    if (stdout_ >= 0) ::close(stdout_);
    if (pid_ > 0) {
      // Closing stdin ends it; it must not outlive the test.
      for (int i = 0; i < 500; ++i) {
        if (::waitpid(pid_, nullptr, WNOHANG) == pid_) return;
        ::usleep(10'000);
      }
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
    }
  }
  Live(const Live&) = delete;
  Live& operator=(const Live&) = delete;

  // The first line it prints, waiting at most `seconds`.
  std::string first_line(int seconds) {
    std::string line;
    const auto deadline = Clock::now() + std::chrono::seconds(seconds);
    while (line.find('\n') == std::string::npos) {
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
      if (left <= 0) return "<timed out: " + line + ">";
      pollfd p{stdout_, POLLIN, 0};
      if (::poll(&p, 1, static_cast<int>(left)) <= 0) continue;
      char buf[256];
      const ssize_t n = ::read(stdout_, buf, sizeof buf);
      if (n <= 0) return "<exited: " + line + ">";
      line.append(buf, static_cast<std::size_t>(n));
    }
    return line.substr(0, line.find('\n'));
  }

 private:
  pid_t pid_ = -1;
  int stdin_ = -1, stdout_ = -1;
};

// A 240 KiB environment, as in the report, in four variables (execve
// refuses a single string over 128 KiB); `tag` makes it this process's own.
std::vector<std::string> big_environment(const std::string& tag) {
  std::vector<std::string> env = {"FOO=x"};
  for (int i = 0; i < 4; ++i) env.push_back("PAD" + std::to_string(i) + "_" + tag + "=" + std::string(60 * 1024, 'p'));
  return env;
}

class EnvironCache : public ::testing::Test {
 protected:
  void SetUp() override {
    if (reader_bin().empty()) GTEST_SKIP() << "VSYMFS_SECURE_READER is not set (run through meson)";
    alice_ = ensure_user("vsymfs-alice");
    ASSERT_NE(alice_.uid, 0u);
  }
  void start(std::vector<std::string> opts) {
    opts.push_back("state=" + state_.path() + "/state.toml");
    mount_ = std::make_unique<Mount>(MountOptions{"", opts, {}});
    fs::create_symlink("/opt/${FOO}", mount_->src("foo"));
    // The daemon's own start-up allocations settle before the baseline.
    ASSERT_EQ(ctl(alice_, mount_->mnt(), {"status"}).status, 0);
    Spawn warm;
    warm.argv = {reader_bin(), "readlink", mount_->mnt("foo")};
    warm.env = {"FOO=x"};
    warm.ruid = warm.euid = alice_.uid;
    warm.gid = alice_.gid;
    warm.groups = {alice_.gid};
    ASSERT_TRUE(run(warm));
  }

  User alice_;
  vsymfs::test::TempDir state_{"vsymfs-sec"};
  std::unique_ptr<Mount> mount_;
};

// The report: one process, a 240 KiB environment, 4000 threads each reading
// a ${FOO} link raised the daemon's RSS from 271 MB to 1018 MB (one copy of
// the environment per thread id). Now the threads share one.
TEST_F(EnvironCache, ThreadsOfOneProcessShareOneEnvironment) {
  start({});
  constexpr int kThreads = 4000;
  const long before = rss_kib(mount_->daemon_pid());
  ASSERT_GT(before, 0);
  Live attack(alice_, {reader_bin(), "threads", std::to_string(kThreads), mount_->mnt("foo"), "/opt/x"},
              big_environment("threads"));
  const std::string line = attack.first_line(120);
  int started = 0, good = 0;
  ASSERT_EQ(std::sscanf(line.c_str(), "threads %d good %d", &started, &good), 2) << line;
  ASSERT_GE(started, 1000) << "too few threads to show anything";
  EXPECT_EQ(good, started) << "every thread reads its process's FOO";
  // Every thread is alive and has been answered: measure now.
  const long after = rss_kib(mount_->daemon_pid());
  const long long kept = status_number(mount_->mnt(), "caller_cache_environ_bytes");
  const long long processes = status_number(mount_->mnt(), "caller_cache_processes");
  std::printf("  %d threads with a 240 KiB environment: daemon RSS %ld -> %ld KiB (+%ld); kept %lld bytes for %lld "
              "processes\n",
              started, before, after, after - before, kept, processes);
  RecordProperty("rss_growth_kib", std::to_string(after - before));
  // One environment (about 240 KiB) and the threads' small entries: far
  // below the 1 GB the old cache took (measured: +1,001,424 KiB; now
  // +4,312 KiB). 64 MiB leaves room for allocator noise.
  if (kAddressSanitizerBuild)
    std::printf("  ASan build: RSS only reported; the plain build's run checks its bound\n");
  else
    EXPECT_LT(after - before, 64 * 1024) << "RSS grew by " << (after - before) << " KiB";
  EXPECT_LT(kept, 1 << 20);
  EXPECT_LE(processes, 2);  // the attacker and the warm-up reader, if it is still kept
}

// Many processes, each with its own 240 KiB environment, each reading once
// and staying alive: together they would need about 47 MB (the old daemon
// grew by 97 MB for 400 of them); the daemon keeps at most -o environ_cache
// of them and reads the others again when asked.
TEST_F(EnvironCache, AllEnvironmentsStayWithinTheLimit) {
  constexpr long long kLimit = 4 << 20;
  start({"environ_cache=4m"});
  EXPECT_EQ(status_number(mount_->mnt(), "caller_cache_environ_limit"), kLimit);
  constexpr int kProcesses = 200;
  const long before = rss_kib(mount_->daemon_pid());
  ASSERT_GT(before, 0);
  std::vector<std::unique_ptr<Live>> readers;
  long long most = 0;
  for (int i = 0; i < kProcesses; ++i) {
    readers.push_back(std::make_unique<Live>(
        alice_, std::vector<std::string>{reader_bin(), "threads", "1", mount_->mnt("foo"), "/opt/x"},
        big_environment(std::to_string(i))));
    const std::string line = readers.back()->first_line(30);
    ASSERT_EQ(line, "threads 1 good 1") << "reader " << i << "\n" << mount_->daemon_log();
    if (i % 50 == 49) most = std::max(most, status_number(mount_->mnt(), "caller_cache_environ_bytes"));
  }
  const long after = rss_kib(mount_->daemon_pid());
  const long long kept = status_number(mount_->mnt(), "caller_cache_environ_bytes");
  const long long evictions = status_number(mount_->mnt(), "caller_cache_evictions");
  most = std::max(most, kept);
  std::printf("  %d processes with 240 KiB environments, limit %lld: daemon RSS %ld -> %ld KiB (+%ld); kept at most "
              "%lld bytes, %lld evictions\n",
              kProcesses, kLimit, before, after, after - before, most, evictions);
  RecordProperty("rss_growth_kib", std::to_string(after - before));
  EXPECT_LE(most, kLimit);
  EXPECT_GT(evictions, 0);
  // The limit plus room for allocator noise and the kernel's request
  // buffers (measured: +7 MB with this limit); all of them would be 47 MB.
  if (kAddressSanitizerBuild)
    std::printf("  ASan build: RSS only reported; the plain build's run checks its bound\n");
  else
    EXPECT_LT(after - before, 20 * 1024) << "RSS grew by " << (after - before) << " KiB";

}

}  // namespace
}  // namespace vsymfs::testing
