// Variant links through a real mount: every caller sees its own expansion
// (user, environment, secure mode, universe, cluster member, sysname list,
// 32-bit personality), and lstat's st_size always matches that caller's
// readlink.
#include <pwd.h>
#include <sys/personality.h>
#include <sys/stat.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <climits>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "child_process.hpp"
#include "common/exec_probe.hpp"
#include "mount_fixture.hpp"

namespace vsymfs::testing {
namespace {

namespace fs = std::filesystem;

struct User {
  std::string name;
  uid_t uid = 0;
  gid_t gid = 0;
};

// Creates the user when absent (idempotent), so NSS has a name for it.
User ensure_user(const std::string& name) {
  if (::getpwnam(name.c_str()) == nullptr) {
    std::string cmd = "useradd -M -s /bin/sh " + name + " >/dev/null 2>&1";
    [[maybe_unused]] int rc = std::system(cmd.c_str());
  }
  const passwd* pw = ::getpwnam(name.c_str());
  if (pw == nullptr) return {};
  return {name, pw->pw_uid, pw->pw_gid};
}

// readlink(2)'s answer, or "error: " and its message.
std::string link_text(const std::string& path) {
  char buf[PATH_MAX];
  const ssize_t n = ::readlink(path.c_str(), buf, sizeof buf);
  return n < 0 ? std::string("error: ") + std::strerror(errno) : std::string(buf, static_cast<std::size_t>(n));
}

constexpr const char* kRules = R"(
[sysname]
native = ["missing_sys", "amd64_linux26"]
compat32 = ["missing32_sys", "i386_linux26"]

[universe]
names = ["att", "ucb"]
default = "att"
env = "UNIVERSE"

[cluster]
member = 3

[vars]
SAFE = "from-rules"
)";

const char* const kReadlink = "/usr/bin/readlink";

class VariantLinks : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    alice_ = ensure_user("vsymfs-alice");
    bob_ = ensure_user("vsymfs-bob");
    MountOptions opts;
    opts.rules_text = kRules;
    mount_ = std::make_unique<Mount>(opts);
    const Mount& m = *mount_;
    auto link = [&](const std::string& target, const std::string& name) { fs::create_symlink(target, m.src(name)); };
    link("/export/${USER}", "home");
    link("/opt/$FOO", "foo");
    link("/opt/${FOO:-dflt}", "foo_dflt");
    link("/opt/$SAFE", "safe");
    link("att=/a ucb=/u", "universe");
    link("cluster/members/{memb}", "local");
    link("@sys", "sysdir");
    link("@machine", "machine");
    link("homes/${USER}", "wd");
    fs::create_directories(m.src("amd64_linux26"));
    fs::create_directories(m.src("i386_linux26"));
    fs::create_directories(m.src("dir/amd64_linux26"));
    std::ofstream(m.src("dir/amd64_linux26/file")) << "sys-file\n";
    for (const User* u : {&alice_, &bob_}) {
      fs::create_directories(m.src("homes/" + u->name));
      std::ofstream(m.src("homes/" + u->name + "/marker")) << "marker of " << u->name << "\n";
    }
  }
  static void TearDownTestSuite() { mount_.reset(); }

  void SetUp() override {
    ASSERT_NE(alice_.uid, 0u) << "could not create user vsymfs-alice (useradd)";
    ASSERT_NE(bob_.uid, 0u) << "could not create user vsymfs-bob (useradd)";
  }

  static Spawn as(const User& u, std::vector<std::string> argv, std::vector<std::string> env = {}) {
    Spawn s;
    s.argv = std::move(argv);
    s.env = std::move(env);
    s.ruid = s.euid = u.uid;
    s.gid = u.gid;
    s.groups = {u.gid};
    return s;
  }
  static Outcome readlink_as(const User& u, const std::string& rel, std::vector<std::string> env = {}) {
    return run(as(u, {kReadlink, mount_->mnt(rel)}, std::move(env)));
  }
  // What the caller's lstat says the link's size is.
  static Outcome lstat_size_as(const User& u, const std::string& rel) {
    return run(as(u, {"/usr/bin/stat", "-c", "%s", mount_->mnt(rel)}));
  }

  static User alice_, bob_;
  static std::unique_ptr<Mount> mount_;
};

User VariantLinks::alice_, VariantLinks::bob_;
std::unique_ptr<Mount> VariantLinks::mount_;

TEST_F(VariantLinks, HomeIsPerUserAndLstatSizeMatches) {
  for (const User* u : {&alice_, &bob_}) {
    auto r = readlink_as(*u, "home");
    ASSERT_TRUE(r) << u->name << " status " << r.status << "\n" << mount_->daemon_log();
    const std::string want = "/export/" + u->name;
    EXPECT_EQ(r.out, want + "\n");
    auto size = lstat_size_as(*u, "home");
    ASSERT_TRUE(size) << u->name;
    EXPECT_EQ(size.out, std::to_string(want.size()) + "\n") << u->name;
    // ls -l shows the same length and target to that user
    auto ls = run(as(*u, {"/bin/ls", "-l", mount_->mnt("home")}, {"LC_ALL=C"}));
    ASSERT_TRUE(ls) << u->name;
    EXPECT_NE(ls.out.find(" " + std::to_string(want.size()) + " "), std::string::npos) << ls.out;
    EXPECT_NE(ls.out.find("-> " + want), std::string::npos) << ls.out;
  }
}

TEST_F(VariantLinks, EnvironmentVariablesDifferPerProcess) {
  struct Case {
    std::vector<std::string> env;
    std::string foo, foo_dflt;
  } cases[] = {
      {{"FOO=one"}, "/opt/one", "/opt/one"},
      {{"FOO=two"}, "/opt/two", "/opt/two"},
      {{}, "/opt/$FOO", "/opt/dflt"},  // undefined: literal (the default policy), or the default
      {{"FOO="}, "/opt/", "/opt/dflt"},  // empty counts as unset for :-
  };
  for (const auto& c : cases) {
    auto foo = readlink_as(alice_, "foo", c.env);
    auto dflt = readlink_as(alice_, "foo_dflt", c.env);
    ASSERT_TRUE(foo && dflt) << (c.env.empty() ? "no FOO" : c.env[0]);
    EXPECT_EQ(foo.out, c.foo + "\n");
    EXPECT_EQ(dflt.out, c.foo_dflt + "\n");
  }
}

TEST_F(VariantLinks, SecureExecutionIgnoresTheEnvironment) {
  // A set-user-id copy of readlink, owned by bob, run by alice: real uid
  // alice, effective uid bob, AT_SECURE set by the kernel.
  const std::string suid = mount_->root() + "/readlink-suid";
  fs::copy_file(kReadlink, suid, fs::copy_options::overwrite_existing);
  ASSERT_EQ(::chown(suid.c_str(), bob_.uid, bob_.gid), 0);
  ASSERT_EQ(::chmod(suid.c_str(), 04755), 0);

  auto normal = run(as(alice_, {kReadlink, mount_->mnt("safe")}, {"SAFE=evil"}));
  ASSERT_TRUE(normal);
  EXPECT_EQ(normal.out, "/opt/evil\n");  // the process scope wins over [vars]...

  auto setuid = run(as(alice_, {suid, mount_->mnt("safe")}, {"SAFE=evil"}));
  ASSERT_TRUE(setuid) << setuid.status;
  EXPECT_EQ(setuid.out, "/opt/from-rules\n");  // ...but not for a set-id program

  // Real and effective ids differing without a set-id file: same rule.
  Spawn split = as(alice_, {kReadlink, mount_->mnt("safe")}, {"SAFE=evil"});
  split.ruid = alice_.uid;
  split.euid = bob_.uid;
  auto r = run(split);
  ASSERT_TRUE(r) << r.status;
  EXPECT_EQ(r.out, "/opt/from-rules\n");
}

TEST_F(VariantLinks, UniverseComesFromTheEnvironment) {
  auto ucb = readlink_as(alice_, "universe", {"UNIVERSE=ucb"});
  auto dflt = readlink_as(alice_, "universe");
  auto bogus = readlink_as(alice_, "universe", {"UNIVERSE=xenix"});  // undeclared: ignored
  ASSERT_TRUE(ucb && dflt && bogus);
  EXPECT_EQ(ucb.out, "/u\n");
  EXPECT_EQ(dflt.out, "/a\n");
  EXPECT_EQ(bogus.out, "/a\n");
}

TEST_F(VariantLinks, ClusterMember) {
  auto r = readlink_as(bob_, "local");
  ASSERT_TRUE(r);
  EXPECT_EQ(r.out, "cluster/members/member3\n");
}

TEST_F(VariantLinks, SysnameListFallsBackToTheFirstExisting) {
  auto r = readlink_as(alice_, "sysdir");
  ASSERT_TRUE(r);
  EXPECT_EQ(r.out, "amd64_linux26\n");  // missing_sys does not exist in SOURCE
}

TEST_F(VariantLinks, SysPathComponent) {
  auto cat = run(as(alice_, {"/bin/cat", mount_->mnt("dir/@sys/file")}));
  ASSERT_TRUE(cat) << cat.status << "\n" << mount_->daemon_log();
  EXPECT_EQ(cat.out, "sys-file\n");
  struct stat st {};
  EXPECT_EQ(::stat(mount_->mnt("dir/@sys/file").c_str(), &st), 0) << std::strerror(errno);
  EXPECT_EQ(::stat(mount_->mnt("dir/@sys/nothing").c_str(), &st), -1);
  EXPECT_EQ(errno, ENOENT);
}

TEST_F(VariantLinks, CdThroughAVariantDirectoryLink) {
  for (const User* u : {&alice_, &bob_}) {
    auto r = run(as(*u, {"/bin/sh", "-c", "cd \"$1\" && cat marker && pwd -P", "sh", mount_->mnt("wd")}));
    ASSERT_TRUE(r) << u->name << " status " << r.status;
    EXPECT_EQ(r.out, "marker of " + u->name + "\n" + mount_->mnt("homes/" + u->name) + "\n");
  }
}

bool host_is_x86_64() {
  utsname u{};
  return ::uname(&u) == 0 && std::string(u.machine) == "x86_64";
}

TEST_F(VariantLinks, PersonalityLinux32SeesThirtyTwoBitValues) {
  if (!host_is_x86_64()) GTEST_SKIP() << "the 32-bit names below are x86's";
  auto native = readlink_as(alice_, "machine");
  ASSERT_TRUE(native);
  EXPECT_EQ(native.out, "x86_64\n");

  Spawn s = as(alice_, {kReadlink, mount_->mnt("machine")});
  s.before_exec = [] {
    if (::personality(PER_LINUX32) == -1) ::_exit(99);
  };
  auto r = run(s);
  ASSERT_TRUE(r) << r.status;
  EXPECT_EQ(r.out, "i686\n");
  s.argv = {kReadlink, mount_->mnt("sysdir")};
  auto sys = run(s);
  ASSERT_TRUE(sys);
  EXPECT_EQ(sys.out, "i386_linux26\n");  // the 32-bit list, with its own fallback
}

// The -m32 helper from tests/common, where the compiler can build it and the
// kernel runs it (common/exec_probe.hpp says why not, as the SKIP).
TEST_F(VariantLinks, ThirtyTwoBitExecutableSeesThirtyTwoBitValues) {
  if (!host_is_x86_64()) GTEST_SKIP() << "the 32-bit names below are x86's";
  if (const auto probe = vsymfs::test::probe_exec32(); !probe) GTEST_SKIP() << probe.reason;
  const std::string helper = vsymfs::test::helper32_path();
  auto r = run(as(alice_, {helper, "readlink", mount_->mnt("machine")}));
  ASSERT_TRUE(r) << r.status;
  EXPECT_EQ(r.out, "i686");
  auto sys = run(as(alice_, {helper, "readlink", mount_->mnt("sysdir")}));
  ASSERT_TRUE(sys) << sys.status;
  EXPECT_EQ(sys.out, "i386_linux26");
}

TEST_F(VariantLinks, ManyCallersAtOnceEachGetTheirOwn) {
  // Interleave two users and two environments; each must see its own.
  std::vector<std::pair<Spawn, std::string>> jobs;
  for (int i = 0; i < 20; ++i) {
    const User& u = i % 2 ? alice_ : bob_;
    const std::string val = "v" + std::to_string(i);
    jobs.emplace_back(as(u, {"/bin/sh", "-c", "readlink \"$1\"; readlink \"$2\"", "sh", mount_->mnt("home"), mount_->mnt("foo")},
                         {"FOO=" + val, "PATH=/usr/bin:/bin"}),
                      "/export/" + u.name + "\n/opt/" + val + "\n");
  }
  std::vector<Outcome> results(jobs.size());
  std::vector<std::thread> threads;
  for (std::size_t i = 0; i < jobs.size(); ++i) threads.emplace_back([&, i] { results[i] = run(jobs[i].first); });
  for (auto& t : threads) t.join();
  for (std::size_t i = 0; i < jobs.size(); ++i) {
    ASSERT_TRUE(results[i]) << i << " status " << results[i].status;
    EXPECT_EQ(results[i].out, jobs[i].second) << i;
  }
}

// Editing the rules file changes what links expand to, without a remount;
// an invalid edit leaves the old rules in force.
// Whether an @sys candidate exists is cached for the mount's entry_timeout,
// the same bound the kernel's name cache has: -o entry_timeout=0 sees a
// candidate made behind the mount's back at once, a long timeout does not.
TEST(VariantLinksSysProbe, CandidatesAreTrustedForEntryTimeout) {
  for (const char* timeout : {"0", "30"}) {
    SCOPED_TRACE(std::string("entry_timeout=") + timeout);
    MountOptions opts;
    opts.rules_text = "[sysname]\nnative = [\"missing_sys\", \"amd64_linux26\"]\ncompat32 = [\"i386_linux26\"]\n";
    opts.extra_opts = {std::string("entry_timeout=") + timeout};
    Mount m(opts);
    fs::create_directories(m.src("amd64_linux26"));
    fs::create_symlink("@sys", m.src("sysdir"));
    auto readlink_now = [&] { return link_text(m.mnt("sysdir")); };
    ASSERT_EQ(readlink_now(), "amd64_linux26");
    fs::create_directories(m.src("missing_sys"));
    EXPECT_EQ(readlink_now(), std::string(timeout) == "0" ? "missing_sys" : "amd64_linux26") << m.daemon_log();
  }
}

// A plain link's READLINK skips the caller's identity (Filesystem::readlink)
// while its text needs nothing of the caller. A reload that makes the same
// text a reference must expand it per caller from then on.
TEST(VariantLinksReload, APlainLinkMadeVariantByAReloadIsExpanded) {
  MountOptions opts;
  opts.rules_text = "[syntax]\ndollar = false\n";
  Mount m(opts);
  fs::create_symlink("/export/${USER}", m.src("home"));
  auto readlink_now = [&] { return link_text(m.mnt("home")); };
  ASSERT_EQ(readlink_now(), "/export/${USER}");  // $ references switched off: plain
  ASSERT_EQ(readlink_now(), "/export/${USER}");
  const std::string tmp = m.rules_path() + ".new";
  std::ofstream(tmp) << "[syntax]\ndollar = true\n";
  fs::rename(tmp, m.rules_path());
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (readlink_now() != "/export/root" && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  EXPECT_EQ(readlink_now(), "/export/root") << m.daemon_log();
  EXPECT_EQ(capture_as(As{.uid = 65534, .gid = 65534}, {"readlink", m.mnt("home")}), "/export/nobody\n");
}

TEST(VariantLinksReload, RulesFileEditsArePickedUp) {
  MountOptions opts;
  opts.rules_text = "[vars]\nWHERE = \"before\"\n";
  Mount m(opts);
  fs::create_symlink("/srv/$WHERE", m.src("where"));
  auto readlink_now = [&] { return link_text(m.mnt("where")); };
  // The watcher reloads after a debounce: wait for what must come (30 s at
  // most, for a loaded machine).
  auto eventually = [&](const std::function<bool()>& done) {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
    while (!done() && std::chrono::steady_clock::now() < deadline)
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    return done();
  };
  ASSERT_EQ(readlink_now(), "/srv/before");

  // Replace the file the way editors do: write a copy, rename it over.
  auto replace_rules = [&](const std::string& text) {
    const std::string tmp = m.rules_path() + ".new";
    std::ofstream(tmp) << text;
    fs::rename(tmp, m.rules_path());
  };
  replace_rules("[vars]\nWHERE = \"after\"\n");
  EXPECT_TRUE(eventually([&] { return readlink_now() == "/srv/after"; })) << readlink_now() << "\n" << m.daemon_log();

  // The invalid edit is refused (the daemon says so), and only then is it
  // certain that it has been tried: the old rules must still be in force.
  replace_rules("[vars]\nWHERE = \"broken\"\n[no_such_table]\n");
  ASSERT_TRUE(eventually([&] { return m.daemon_log().find("rules not reloaded") != std::string::npos; }))
      << m.daemon_log();
  EXPECT_EQ(readlink_now(), "/srv/after");
}

}  // namespace
}  // namespace vsymfs::testing
