// Attacks on a real mount by unprivileged users, one section per finding of
// the security review (issue 18; docs/security.md says what each guarantees).
// Every test that could hang a mount holds a Watchdog while it touches the
// mount: a hang aborts the FUSE connection and fails the test instead of
// wedging the machine.
#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cerrno>
#include <chrono>
#include <fstream>
#include <climits>
#include <cstring>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "mount_fixture.hpp"

namespace vsymfs::testing {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;

const As kRoot{0, 0, {}, {}, false};
const As kNobody{65534, 65534, {}, {}, false};
constexpr std::chrono::seconds kLimit{20};  // generous: nothing here should take a second

// readlink(2) as `who`, in a child: the text, or "<errno name>".
std::string readlink_as(const As& who, const std::string& path) {
  int pipefd[2];
  if (::pipe(pipefd) != 0) return "<pipe>";
  const int status = run_as(who, [&] {
    char buf[PATH_MAX];
    const ssize_t n = ::readlink(path.c_str(), buf, sizeof buf);
    if (n < 0) {
      const char* e = ::strerrorname_np(errno);
      (void)!::write(pipefd[1], "<", 1);
      (void)!::write(pipefd[1], e, std::strlen(e));
      (void)!::write(pipefd[1], ">", 1);
      return 0;
    }
    return ::write(pipefd[1], buf, static_cast<std::size_t>(n)) == n ? 0 : 1;
  });
  ::close(pipefd[1]);
  std::string out;
  char buf[PATH_MAX];
  ssize_t n;
  while ((n = ::read(pipefd[0], buf, sizeof buf)) > 0) out.append(buf, static_cast<std::size_t>(n));
  ::close(pipefd[0]);
  if (status != 0) return "<child exited " + std::to_string(status) + ">";
  return out;
}

// lstat(2) as `who`, in a child: 0 or the errno.
int lstat_as(const As& who, const std::string& path) {
  return run_as(who, [&] {
    struct stat st {};
    return ::lstat(path.c_str(), &st) == 0 ? 0 : errno;
  });
}

// =============================================================================
// Finding 1 (HIGH): an @sys probe that walks back into the mount hung it.
// A probe never calls into this mount or any other FUSE filesystem: a path
// that reaches our mount, however it is spelled, is walked in SOURCE, and
// any other FUSE mount ends the walk (the candidate counts as absent).
// =============================================================================

const char* kProbeRules = R"(
[sysname]
native = ["missing_sys", "amd64_linux26"]
compat32 = ["i386_linux26"]
[universe]
names = ["att", "ucb"]
default = "att"
env = "UNIVERSE"
)";

class ProbeReentry : public ::testing::Test {
 protected:
  void SetUp() override {
    mount_ = std::make_unique<Mount>(MountOptions{kProbeRules, {}, {}});
    // A directory every user may write in, as /tmp is.
    fs::create_directory(m().src("attk"));
    ASSERT_EQ(::chmod(m().src("attk").c_str(), 01777), 0);
  }
  Mount& m() { return *mount_; }
  // The mount by a path that does not start with its mount point's: the
  // textual check the old code made does not see it.
  std::string sideways(const std::string& rel) const { return mount_->root() + "/./mnt/" + rel; }

  std::unique_ptr<Mount> mount_;
};

// The repro from the issue: `ln -s /tmp/t/./mnt/attk/x/@sys/y
// /tmp/t/mnt/attk/hang` never returned (SYMLINK expands the new link while
// the kernel holds attk's lock, and the probe looked attk up through the
// mount), a second one took the other worker, and then root's `ls` hung.
TEST_F(ProbeReentry, ALinkWhoseProbesLeadBackIntoTheMountIsMadeAndTheMountStaysUsable) {
  const std::string target = sideways("attk/x/@sys/y");
  const std::string hang = m().mnt("attk/hang"), hang2 = m().mnt("attk/hang2"), dir = m().mnt("attk");
  Watchdog dog({&m()}, kLimit);
  const int first = run_as(kNobody, [&] { return ::symlink(target.c_str(), hang.c_str()) == 0 ? 0 : errno; });
  const int second = run_as(kNobody, [&] { return ::symlink(target.c_str(), hang2.c_str()) == 0 ? 0 : errno; });
  const int listed = run_as(kRoot, [&] {
    const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return 1;
    char buf[4096];
    long n, total = 0;
    while ((n = ::syscall(SYS_getdents64, fd, buf, sizeof buf)) > 0) total += n;
    ::close(fd);
    return n == 0 && total > 0 ? 0 : 2;
  });
  const std::string text = readlink_as(kNobody, hang);
  dog.disarm();
  ASSERT_FALSE(dog.fired()) << "the mount hung and its connection was aborted; log:\n" << m().daemon_log();
  EXPECT_EQ(first, 0) << std::strerror(first);
  EXPECT_EQ(second, 0) << std::strerror(second);
  EXPECT_EQ(listed, 0);
  // Neither candidate exists: the first.
  EXPECT_EQ(text, sideways("attk/x/missing_sys/y"));
}

// The variant that needs only a victim: a link placed directly in SOURCE,
// whose conditional target probes back into the mount through the link
// itself. The victim's plain stat wedged a worker in d_alloc_parallel.
TEST_F(ProbeReentry, AVictimsStatOfATrapLinkReturns) {
  const std::string trap = "att=" + sideways("attk/trap/@sys") + " ucb=/tmp";
  ASSERT_EQ(::symlink(trap.c_str(), m().src("attk/trap").c_str()), 0);
  Watchdog dog({&m()}, kLimit);
  const int root_stat = lstat_as(kRoot, m().mnt("attk/trap"));
  const int nobody_stat = lstat_as(kNobody, m().mnt("attk/trap"));
  const std::string text = readlink_as(kRoot, m().mnt("attk/trap"));
  dog.disarm();
  ASSERT_FALSE(dog.fired()) << "the mount hung and its connection was aborted; log:\n" << m().daemon_log();
  EXPECT_EQ(root_stat, 0) << std::strerror(root_stat);
  EXPECT_EQ(nobody_stat, 0) << std::strerror(nobody_stat);
  EXPECT_EQ(text, sideways("attk/trap/missing_sys"));
}

// A probe that reaches the mount by another path (`/./`, a symlink to the
// mount point) is answered from SOURCE: the candidate that exists there wins.
TEST_F(ProbeReentry, AProbeThatReachesTheMountByAnotherPathIsAnsweredFromSource) {
  fs::create_directories(m().src("attk/arch/amd64_linux26"));
  fs::create_symlink("mnt", m().root() + "/alias");
  ASSERT_EQ(::symlink(sideways("attk/arch/@sys").c_str(), m().src("attk/dot").c_str()), 0);
  ASSERT_EQ(::symlink((m().root() + "/alias/attk/arch/@sys").c_str(), m().src("attk/via-link").c_str()), 0);
  Watchdog dog({&m()}, kLimit);
  const std::string dot = readlink_as(kNobody, m().mnt("attk/dot"));
  const std::string via = readlink_as(kNobody, m().mnt("attk/via-link"));
  dog.disarm();
  ASSERT_FALSE(dog.fired()) << "the mount hung and its connection was aborted; log:\n" << m().daemon_log();
  EXPECT_EQ(dot, sideways("attk/arch/amd64_linux26"));
  EXPECT_EQ(via, m().root() + "/alias/attk/arch/amd64_linux26");
}

// Another FUSE filesystem is never asked, not even to look a name up: here
// its daemon is stopped, so any request to it would never be answered.
TEST(ProbeOtherFuse, AProbeNeverCallsIntoAnotherFuseFilesystem) {
  Mount m(MountOptions{kProbeRules, {}, {}});
  Mount other(MountOptions{kProbeRules, {}, {}});
  fs::create_directories(other.src("amd64_linux26"));
  ASSERT_EQ(::symlink((other.mnt() + "/@sys").c_str(), m.src("elsewhere").c_str()), 0);
  ASSERT_TRUE(stop_and_wait(other.daemon_pid()));
  Watchdog dog({&m, &other}, kLimit);
  const std::string text = readlink_as(kNobody, m.mnt("elsewhere"));
  const int st = lstat_as(kRoot, m.mnt("elsewhere"));
  dog.disarm();
  ::kill(other.daemon_pid(), SIGCONT);
  ASSERT_FALSE(dog.fired()) << "a probe waited on the stopped FUSE daemon; log:\n" << m.daemon_log();
  // The walk stopped at the other mount: no candidate is known to exist.
  EXPECT_EQ(text, other.mnt() + "/missing_sys");
  EXPECT_EQ(st, 0) << std::strerror(st);
}

// A probe that leaves SOURCE may still meet a filesystem that hangs without
// being FUSE: here an overlay whose lower layer is a stopped FUSE daemon's
// mount. The probe thread waits; the expansion does not, beyond its 1 s
// budget, and the candidate counts as absent.
TEST(ProbeTimeBound, AProbeIntoAHungFilesystemIsGivenUpAndTheMountStaysUsable) {
  Mount m(MountOptions{kProbeRules, {}, {}});
  Mount slow(MountOptions{kProbeRules, {}, {}});
  fs::create_directories(slow.src("amd64_linux26"));
  const std::string ovl = m.root() + "/ovl", empty = m.root() + "/empty";
  fs::create_directories(ovl);
  fs::create_directories(empty);
  const std::string layers = "lowerdir=" + slow.mnt() + ":" + empty;
  if (::mount("overlay", ovl.c_str(), "overlay", MS_RDONLY, layers.c_str()) != 0)
    GTEST_SKIP() << "cannot mount an overlay over a FUSE mount here: " << std::strerror(errno);
  struct Unmount {
    const std::string& path;
    ~Unmount() { ::umount2(path.c_str(), MNT_DETACH); }
  } unmount{ovl};
  ASSERT_EQ(::symlink((ovl + "/@sys").c_str(), m.src("hung").c_str()), 0);
  ASSERT_TRUE(stop_and_wait(slow.daemon_pid()));
  Watchdog dog({&m, &slow}, kLimit);
  const std::string first = readlink_as(kRoot, m.mnt("hung"));
  const std::string again = readlink_as(kNobody, m.mnt("hung"));
  const int listed = lstat_as(kRoot, m.mnt("."));
  dog.disarm();
  ::kill(slow.daemon_pid(), SIGCONT);
  ASSERT_FALSE(dog.fired()) << "a probe held a worker past its budget; log:\n" << m.daemon_log();
  EXPECT_EQ(first, ovl + "/missing_sys");
  EXPECT_EQ(again, ovl + "/missing_sys");
  EXPECT_EQ(listed, 0);
}

// The decision on sizes (docs/security.md): lstat still reports the length
// of the caller's own readlink, now computed by GETATTR alone for per-caller
// links (a LOOKUP no longer expands).
TEST_F(ProbeReentry, LstatReportsTheCallersOwnReadlinkLength) {
  fs::create_directories(m().src("attk/sz/amd64_linux26/root"));
  ASSERT_EQ(::chmod(m().src("attk/sz/amd64_linux26").c_str(), 0700), 0);
  ASSERT_EQ(::symlink("@sys/${USER}", m().src("attk/sz/l").c_str()), 0);
  const std::string link = m().mnt("attk/sz/l");
  for (const As& who : {kRoot, kNobody}) {
    const std::string text = readlink_as(who, link);
    const int size = run_as(who, [&] {
      struct stat st {};
      return ::lstat(link.c_str(), &st) == 0 ? static_cast<int>(st.st_size) : 255;
    });
    EXPECT_EQ(static_cast<std::size_t>(size), text.size()) << "uid " << who.uid << ": " << text;
  }
  // They differ: root sees its 0700 directory and its name.
  EXPECT_EQ(readlink_as(kRoot, link), "amd64_linux26/root");
  EXPECT_EQ(readlink_as(kNobody, link), "missing_sys/nobody");
}

// =============================================================================
// Finding 7 (LOW): the @sys probe cache was shared across callers: with
// amd64_linux26 at mode 0700, root saw i386_linux26 right after another user
// read the link, and anyone could learn whether a hidden directory exists.
// Probes run as the caller and their answers are cached per identity;
// `vsymctl explain` (any text, from any user) never fills the cache.
// =============================================================================

const char* kHiddenRules = R"(
[sysname]
native = ["amd64_linux26", "i386_linux26"]
compat32 = ["i386_linux26"]
)";

class ProbeIdentity : public ::testing::Test {
 protected:
  void SetUp() override {
    // Answers stay cached for the whole test: a shared entry cannot expire
    // between two callers and hide the leak.
    mount_ = std::make_unique<Mount>(MountOptions{kHiddenRules, {"entry_timeout=60"}, {}});
  }
  // dir/amd64_linux26 (0700, root's) and dir/i386_linux26, each with bin.
  void hidden_tree(const std::string& dir) {
    fs::create_directories(m().src(dir + "/amd64_linux26/bin"));
    fs::create_directories(m().src(dir + "/i386_linux26/bin"));
    ASSERT_EQ(::chmod(m().src(dir + "/amd64_linux26").c_str(), 0700), 0);
  }
  Mount& m() { return *mount_; }
  std::unique_ptr<Mount> mount_;
};

TEST_F(ProbeIdentity, EachCallerGetsTheCandidateItCanSee) {
  hidden_tree("t");
  ASSERT_EQ(::symlink("@sys/bin", m().src("t/bin").c_str()), 0);
  const std::string link = m().mnt("t/bin");
  for (int round = 0; round < 2; ++round) {  // the second round is answered from the cache
    EXPECT_EQ(readlink_as(kRoot, link), "amd64_linux26/bin") << "round " << round;
    EXPECT_EQ(readlink_as(kNobody, link), "i386_linux26/bin") << "round " << round;
  }
  // And the other order, in a directory nobody probed first.
  hidden_tree("u");
  ASSERT_EQ(::symlink("@sys/bin", m().src("u/bin").c_str()), 0);
  EXPECT_EQ(readlink_as(kNobody, m().mnt("u/bin")), "i386_linux26/bin");
  EXPECT_EQ(readlink_as(kRoot, m().mnt("u/bin")), "amd64_linux26/bin");
}

// A plain link is read without the caller's identity (Filesystem::readlink).
// When a reload makes its text an @sys link, the probes must run as the
// caller again: nobody must not be answered with what only root can see,
// whoever the worker acted for last. One worker (-s), which acts for root
// right before nobody's first readlink after the reload.
TEST(ProbeIdentityAfterReload, APlainLinkMadeAnSysLinkIsProbedAsItsCaller) {
  MountOptions o;
  o.rules_text = std::string("[syntax]\nmagic = false\n") + kHiddenRules;
  o.extra_opts = {"no_uring"};
  o.extra_args = {"-s"};
  Mount m(o);
  fs::create_directories(m.src("h/amd64_linux26/bin"));
  fs::create_directories(m.src("h/i386_linux26/bin"));
  ASSERT_EQ(::chmod(m.src("h/amd64_linux26").c_str(), 0700), 0);
  ASSERT_EQ(::symlink("@sys/bin", m.src("h/bin").c_str()), 0);
  ASSERT_EQ(::symlink("/export/${USER}", m.src("h/home").c_str()), 0);
  const std::string link = m.mnt("h/bin");
  for (int i = 0; i < 2; ++i) {  // plain while @ names are off
    ASSERT_EQ(readlink_as(kRoot, link), "@sys/bin");
    ASSERT_EQ(readlink_as(kNobody, link), "@sys/bin");
  }
  {
    std::ofstream(m.rules_path()) << "[syntax]\nmagic = true\n" << kHiddenRules;
  }
  int status = -1;
  const std::string out = capture_as(kRoot, {vsymctl_bin(), "-m", m.mnt(), "reload"}, &status);
  ASSERT_EQ(status, 0) << out;
  ASSERT_EQ(readlink_as(kRoot, m.mnt("h/home")), "/export/root");  // the worker acts for root
  EXPECT_EQ(readlink_as(kNobody, link), "i386_linux26/bin");
  EXPECT_EQ(readlink_as(kRoot, link), "amd64_linux26/bin");
}

TEST_F(ProbeIdentity, ExplainNeverAnswersForAnotherCaller) {
  hidden_tree("e");
  ASSERT_EQ(::symlink("@sys/bin", m().src("e/bin").c_str()), 0);
  int status = -1;
  const std::string explained = capture_as(kNobody, {vsymctl_bin(), "explain", m().mnt("e/bin")}, &status);
  EXPECT_EQ(status, 0) << explained;
  EXPECT_THAT(explained, HasSubstr("i386_linux26/bin"));
  EXPECT_EQ(readlink_as(kRoot, m().mnt("e/bin")), "amd64_linux26/bin");
}

}  // namespace
}  // namespace vsymfs::testing
