// LinkService and MountState without FUSE: real rules files, real /proc of
// child processes, a real SOURCE directory for @sys probes.
#include "daemon/link_service.hpp"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "common/temp_dir.hpp"
#include "daemon/status.hpp"
#include "vsymfs_config.h"

namespace vsymfs::daemon {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

// A process with a chosen environment, alive until destroyed.
class EnvChild {
 public:
  explicit EnvChild(std::vector<std::string> env) {
    int ready[2];
    if (::pipe2(ready, O_CLOEXEC) != 0) return;
    // Built before fork: the child must not allocate (another thread may
    // hold the allocator's lock at fork time).
    std::vector<char*> e;
    for (auto& s : env) e.push_back(s.data());
    e.push_back(nullptr);
    const char* argv[] = {"/bin/sh", "-c", "echo >&3; sleep 30; :", nullptr};
    pid_ = ::fork();
    if (pid_ == 0) {
      ::setpgid(0, 0);  // the destructor kills the script's sleep too
      ::dup2(ready[1], 3);
      ::execve(argv[0], const_cast<char* const*>(argv), e.data());
      ::_exit(127);
    }
    ::close(ready[1]);
    pollfd p{ready[0], POLLIN, 0};
    char c;
    ok_ = ::poll(&p, 1, 10'000) == 1 && ::read(ready[0], &c, 1) == 1;
    ::close(ready[0]);
  }
  ~EnvChild() {
    if (pid_ > 0) {
      ::kill(-pid_, SIGKILL);
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
    }
  }
  EnvChild(const EnvChild&) = delete;
  EnvChild& operator=(const EnvChild&) = delete;
  bool ok() const { return ok_; }
  RequestIds ids() const { return {pid_, ::geteuid(), ::getegid()}; }

 private:
  pid_t pid_ = -1;
  bool ok_ = false;
};

class LinkServiceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    fs::create_directories(root_ + "/src/dir");
    fs::create_directories(root_ + "/mnt");
  }
  void TearDown() override {
    links_.reset();
    contexts_.reset();
    state_.reset();
  }

  std::string rules_path() const { return root_ + "/rules.toml"; }
  void write_rules(const std::string& text) {
    // Write and rename, as an editor does.
    std::string tmp = rules_path() + ".tmp";
    std::ofstream(tmp) << text;
    fs::rename(tmp, rules_path());
  }

  // Mounts the service over `rules` (empty: built-in rules).
  void start(const std::string& rules, CallerContexts::Options opts = {}) {
    MountState::Config cfg;
    cfg.source = root_ + "/src";
    cfg.mountpoint = root_ + "/mnt";
    cfg.entry_timeout = entry_timeout_;
    if (rules.empty()) {
      cfg.builtin_rules = true;
    } else {
      write_rules(rules);
      cfg.rules_path = rules_path();
      cfg.rules_path_explicit = true;
    }
    auto st = MountState::create(cfg);
    ASSERT_TRUE(st) << st.error().message;
    state_ = std::move(*st);
    contexts_ = std::make_unique<CallerContexts>(opts);
    links_ = std::make_unique<LinkService>(*state_, *contexts_);
  }

  // Expands with the link's directory SOURCE/<dir>.
  Result<std::string> expand(std::string_view raw, const RequestIds& ids, const std::string& dir = "dir") {
    int fd = ::open((root_ + "/src/" + dir).c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC);
    std::string out;
    auto r = links_->expand(raw, fd, ids, out);
    if (fd >= 0) ::close(fd);
    if (!r) return std::move(r).error();
    return out;
  }

  static RequestIds root_ids() { return {0, 0, 0}; }
  // A pid that cannot exist: any /proc read of it fails.
  static RequestIds ghost_ids() { return {999'999'999, 0, 0}; }

  double entry_timeout_ = 1.0;  // the @sys probe cache's TTL
  const vsymfs::test::TempDir tmp_{"vsymfs-link-service"};
  const std::string& root_ = tmp_.path();
  std::unique_ptr<MountState> state_;
  std::unique_ptr<CallerContexts> contexts_;
  std::unique_ptr<LinkService> links_;
};

TEST_F(LinkServiceTest, LiteralTextIsReturnedAsIsWithoutReadingProc) {
  start("");
  for (std::string_view raw : {"plain/target", "/abs/path", "a b c", "100%", "x$", ""}) {
    auto r = expand(raw, ghost_ids());
    ASSERT_TRUE(r) << raw << ": " << r.error().message;
    EXPECT_EQ(*r, raw);
  }
  EXPECT_EQ(contexts_->stats().entries, 0u);
  EXPECT_EQ(state_->counters().expansions.load(), 0u);
}

// Host facts follow the caller's UTS namespace (docs/containers.md), which
// is noted with its identity: the cached identity the FUSE layer looked up
// to act as the caller, never the environment.
// Filesystem::readlink reads a plain link without the caller's identity
// while needs() says Nothing: under the rules in force now.
TEST_F(LinkServiceTest, NeedsTellsPlainTextsFromReferencesUnderTheCurrentRules) {
  start("[syntax]\nmagic = false\n");
  EXPECT_EQ(links_->needs("plain/target"), LinkNeeds::Nothing);
  EXPECT_EQ(links_->needs("@sys/bin"), LinkNeeds::Nothing);  // @ names are off
  EXPECT_EQ(links_->needs("/export/${USER}"), LinkNeeds::Identity);
  EXPECT_EQ(links_->needs("/opt/${SOME_VARIABLE}"), LinkNeeds::Process);
  write_rules("[syntax]\nmagic = true\n");
  ASSERT_TRUE(state_->reload()) << "reload";
  EXPECT_NE(links_->needs("@sys/bin"), LinkNeeds::Nothing);
  EXPECT_EQ(links_->needs("plain/target"), LinkNeeds::Nothing);
}

// vsymctl status shows the caller cache's per-thread copies at work.
TEST_F(LinkServiceTest, StatusCountsTheThreadsOwnCopies) {
  start("");
  StatusLines lines;
  CacheStatus(*contexts_, *links_).status(lines);
  int found = 0;
  for (const auto& [key, value] : lines) {
    // A longer key makes the whole status reply malformed (control
    // protocol words, control::kMaxWord).
    EXPECT_LE(key.size(), 32u) << key;
    if (key == "caller_thread_identity_hits" || key == "caller_thread_context_hits") {
      ++found;
      EXPECT_EQ(value, "0") << key;
    }
  }
  EXPECT_EQ(found, 2);
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(contexts_->identity(0, 0, 0) != nullptr);
  lines.clear();
  CacheStatus(*contexts_, *links_).status(lines);
  for (const auto& [key, value] : lines) {
    if (key == "caller_thread_identity_hits") {
      EXPECT_EQ(value, std::to_string(contexts_->stats().identity_front_hits));
    }
  }
}

TEST_F(LinkServiceTest, HostOnlyTemplatesReadNoEnvironment) {
  start("[cluster]\nmember = 3\n");
  auto r = expand("cluster/members/{memb}/@ostype", ghost_ids());
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ(*r, "cluster/members/member3/" + state_->host_view(*state_->rules())->host().ostype);
  EXPECT_EQ(contexts_->stats().misses, 0u) << "no environment read";
  EXPECT_LE(contexts_->stats().entries, 1u);
  EXPECT_EQ(state_->counters().expansions.load(), 1u);
}

// One rules file for a cluster: the member id and host values come from
// patterns matched against this host's name (read by the daemon).
TEST_F(LinkServiceTest, MemberAndHostValuesFromTheSharedRulesByHostName) {
  const std::string me = read_host_info().hostname;
  start("[cluster]\nmember = 1\n[cluster.members]\n\"not-" + me + "\" = 2\n\"" + me + "\" = 4\n\"*\" = 9\n" +
        "[host.\"not-" + me + "\"]\nROLE = \"other\"\n[host.\"" + me + "\"]\nROLE = \"mine\"\n");
  auto r = expand("{memb}/${MEMBER}/${ROLE}", ghost_ids());
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ(*r, "member4/4/mine");
  const auto view = state_->host_view(*state_->rules());
  EXPECT_EQ(view->member_pattern(), me);
  EXPECT_EQ(view->matched_tables().size(), 1u);
}

TEST_F(LinkServiceTest, IdentityBuiltinsNeedNoEnvironment) {
  start("");
  auto r = expand("/export/${USER}/@uid/@{gid}:$HOME", root_ids());
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ(*r, "/export/root/0/0:/root");
  EXPECT_EQ(contexts_->stats().misses, 0u);  // full() was never asked
}

TEST_F(LinkServiceTest, ProcessScopeDiffersPerProcess) {
  start("");
  EnvChild a({"FOO=alpha", "UNIVERSE=ucb"});
  EnvChild b({"FOO=beta"});
  ASSERT_TRUE(a.ok() && b.ok());
  struct Case {
    std::string_view raw;
    std::string want_a, want_b;
  } cases[] = {
      {"/x/$FOO", "/x/alpha", "/x/beta"},
      {"${FOO:-dflt}/${BAR:-dflt}", "alpha/dflt", "beta/dflt"},
      {"%{FOO}", "alpha", "beta"},
      {"$(FOO)", "alpha", "beta"},
      {"att=/a ucb=/u", "/u", "/a"},  // universes: UNIVERSE=ucb vs the default att
  };
  for (const auto& c : cases) {
    auto ra = expand(c.raw, a.ids());
    auto rb = expand(c.raw, b.ids());
    ASSERT_TRUE(ra && rb) << c.raw;
    EXPECT_EQ(*ra, c.want_a) << c.raw;
    EXPECT_EQ(*rb, c.want_b) << c.raw;
  }
  EXPECT_GT(state_->counters().by_scope[static_cast<int>(Scope::Process)].load(), 0u);
}

// A FUSE request fetches its caller once, to take the caller's identity
// (Filesystem::become_caller), and hands it to its expansions: one whose
// template needs no more than was fetched asks CallerContexts nothing, one
// that needs more asks. (stats().hits + misses count full() calls.)
TEST_F(LinkServiceTest, TheCallerARequestFetchedIsUsedWhenItIsEnough) {
  start("");
  EnvChild a({"FOO=alpha"});
  ASSERT_TRUE(a.ok());
  RequestIds ids = a.ids();
  const auto asked = [&] {
    const CallerContexts::Stats s = contexts_->stats();
    return s.hits + s.misses;
  };
  const std::shared_ptr<const Caller> full = contexts_->full(ids.pid, ids.uid, ids.gid);
  ASSERT_TRUE(full);
  ids.caller = full.get();
  ids.known = LinkNeeds::Process;
  auto before = asked();
  auto r = expand("/x/$FOO", ids);
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ(*r, "/x/alpha");
  std::vector<std::string> candidates;
  links_->sys_component_candidates("bin.@sys", ids, candidates);
  EXPECT_FALSE(candidates.empty());
  EXPECT_EQ(asked(), before) << "the request's caller was enough";

  // Only the identity fetched: the environment is asked for.
  const std::shared_ptr<const Caller> identity = contexts_->identity(ids.pid, ids.uid, ids.gid);
  ASSERT_TRUE(identity);
  ids.caller = identity.get();
  ids.known = LinkNeeds::Host;
  before = asked();
  r = expand("/x/$FOO", ids);
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ(*r, "/x/alpha");
  EXPECT_EQ(asked(), before + 1);

  // What the expansion needed is reported, for the next request's fetch.
  LinkNeeds needs = LinkNeeds::Nothing;
  std::string out;
  struct NoDirectory final : LinkDirectory {
    int fd() override { return -1; }
  } dir;
  ASSERT_TRUE(links_->expand("/home/${USER}", dir, ids, out, &needs));
  EXPECT_EQ(needs, LinkNeeds::Identity);
  ASSERT_TRUE(links_->expand("plain", dir, ids, out, &needs));
  EXPECT_EQ(needs, LinkNeeds::Nothing);
}

TEST_F(LinkServiceTest, ProcessScopeIsIgnoredForPidZeroAndGoneProcesses) {
  start("[vars]\nFOO = \"system\"\n");
  for (RequestIds ids : {root_ids(), ghost_ids()}) {
    auto r = expand("$FOO", ids);
    ASSERT_TRUE(r) << r.error().message;
    EXPECT_EQ(*r, "system");
  }
}

// The bench once saw a $VAR link come back with the system value under full
// CPU load: the environment read missed its deadline and the expansion went
// on without the process scope. Refusing every read (max_queued = 0) is that
// case made deterministic: the expansion must fail, not differ.
TEST_F(LinkServiceTest, AnEnvironmentNotReadInTimeFailsTheExpansionInsteadOfChangingIt) {
  CallerContexts::Options opts;
  opts.max_queued = 0;
  start("[vars]\nFOO = \"system\"\n[sysname]\nnative = [\"a_sys\"]\ncompat32 = [\"c_sys\"]\n", opts);
  EnvChild child({"FOO=process"});
  ASSERT_TRUE(child.ok());
  for (std::string_view raw : {"/x/$FOO", "@machine_arch", "att=/a ucb=/u"}) {
    auto r = expand(raw, child.ids());
    ASSERT_FALSE(r) << raw << " expanded to " << *r;
    EXPECT_EQ(r.error().code, EAGAIN) << raw;
    EXPECT_NE(r.error().message.find("not read in time"), std::string::npos) << r.error().message;
  }
  EXPECT_EQ(state_->counters().errors.load(), 3u);
  EXPECT_EQ(state_->counters().environ_timeouts.load(), 3u);
  // Links that need no environment are unaffected.
  auto user = expand("/home/${USER}", child.ids());
  ASSERT_TRUE(user) << user.error().message;
  auto host = expand("/h/@hostname", child.ids());
  ASSERT_TRUE(host) << host.error().message;
  // Whether the native or the 32-bit @sys list applies is unknown too.
  std::vector<std::string> out{"stale"};
  links_->sys_component_candidates("@sys", child.ids(), out);
  EXPECT_TRUE(out.empty());
}

TEST_F(LinkServiceTest, ADeadlineMissNeverYieldsTheLowerScopes) {
  CallerContexts::Options opts;
  opts.environ_timeout_ms = 0;  // every wait gives up at once; the helper may still finish
  start("[vars]\nFOO = \"system\"\n", opts);
  EnvChild child({"FOO=process"});
  ASSERT_TRUE(child.ok());
  // Each answer is either the process's value or EAGAIN, never the system's;
  // a helper that beats the zero wait caches the context, after which every
  // answer is the process's.
  int answered = 0;
  for (int i = 0; i < 200; ++i) {
    auto r = expand("/x/$FOO", child.ids());
    if (r) {
      EXPECT_EQ(*r, "/x/process");
      ++answered;
    } else {
      EXPECT_EQ(r.error().code, EAGAIN);
      EXPECT_EQ(answered, 0) << "an error after the context was cached";
    }
  }
}

TEST_F(LinkServiceTest, PerHostRulesReadNoCallerAtAll) {
  start("[scopes]\nper_caller = false\n[vars]\nFOO = \"sys\"\n");
  EnvChild a({"FOO=alpha"});
  ASSERT_TRUE(a.ok());
  auto r = expand("$FOO/${USER}", a.ids());
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ(*r, "sys/${USER}");  // caller builtins are off: literal
  EXPECT_EQ(contexts_->stats().entries, 0u);
  EXPECT_FALSE(links_->per_caller());
}

TEST_F(LinkServiceTest, SysnameListFallsBackToTheFirstThatExists) {
  start("[sysname]\nnative = [\"missing_sys\", \"amd64_linux26\"]\ncompat32 = [\"i386_linux26\"]\n");
  fs::create_directories(root_ + "/src/dir/amd64_linux26/bin");
  fs::create_directories(root_ + "/other/amd64_linux26");
  struct Case {
    std::string raw, want;
  } cases[] = {
      {"@sys/bin", "amd64_linux26/bin"},                                            // relative: probed in SOURCE/dir
      {root_ + "/mnt/dir/@sys/bin", root_ + "/mnt/dir/amd64_linux26/bin"},          // under the mountpoint: probed in SOURCE
      {root_ + "/other/@sys", root_ + "/other/amd64_linux26"},                      // another filesystem
      {"@sys/nothing", "missing_sys/nothing"},                                      // none exists: the first
  };
  for (const auto& c : cases) {
    auto r = expand(c.raw, root_ids());
    ASSERT_TRUE(r) << c.raw << ": " << r.error().message;
    EXPECT_EQ(*r, c.want) << c.raw;
  }
}

// Counts how often the expansion asks for the link's directory.
class CountingDirectory final : public LinkDirectory {
 public:
  explicit CountingDirectory(int fd) : fd_(fd) {}
  int fd() override {
    ++asked;
    return fd_;
  }
  int asked = 0;

 private:
  int fd_;
};

TEST_F(LinkServiceTest, TheLinkDirectoryIsAskedForOnlyWhenAnAtSysIsProbed) {
  start("[sysname]\nnative = [\"missing_sys\", \"amd64_linux26\"]\ncompat32 = [\"i386_linux26\"]\n");
  fs::create_directories(root_ + "/src/dir/amd64_linux26/bin");
  const int dfd = ::open((root_ + "/src/dir").c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC);
  ASSERT_GE(dfd, 0);
  struct Case {
    std::string raw, want;
    int asked;
  } cases[] = {
      {"../files/f0", "../files/f0", 0},           // literal
      {"/home/${USER}/x", "/home/root/x", 0},       // identity only
      {"@sys/bin", "amd64_linux26/bin", 1},         // probed in the directory
      {"x/@sys/y/@sys", "x/missing_sys/y/missing_sys", 1},  // nothing exists: the first, one directory lookup
  };
  for (const auto& c : cases) {
    CountingDirectory dir(dfd);
    std::string out;
    auto r = links_->expand(c.raw, dir, root_ids(), out);
    ASSERT_TRUE(r) << c.raw << ": " << r.error().message;
    EXPECT_EQ(out, c.want) << c.raw;
    EXPECT_EQ(dir.asked, c.asked) << c.raw;
  }
  // No directory (-1): @sys takes the first candidate rather than failing.
  CountingDirectory none(-1);
  std::string out;
  ASSERT_TRUE(links_->expand("@sys/bin", none, root_ids(), out));
  EXPECT_EQ(out, "missing_sys/bin");
  ::close(dfd);
}

constexpr const char* kSysRules =
    "[sysname]\nnative = [\"missing_sys\", \"amd64_linux26\"]\ncompat32 = [\"i386_linux26\"]\n";

TEST_F(LinkServiceTest, AtSysProbesAreCachedForTheEntryTimeout) {
  entry_timeout_ = 1.5;
  const auto ttl = std::chrono::milliseconds(1500);
  start(kSysRules);
  fs::create_directories(root_ + "/src/dir/amd64_linux26/bin");
  const auto first = Clock::now();
  auto r = expand("@sys/bin", root_ids());
  const auto probed_by = Clock::now();  // both probes' times lie between `first` and this
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ(*r, "amd64_linux26/bin");
  auto s = links_->cache_stats();
  EXPECT_EQ(s.probe_misses, 2u);  // missing_sys, then amd64_linux26
  EXPECT_EQ(s.probe_hits, 0u);
  EXPECT_EQ(s.probe_entries, 2u);

  // The first candidate appears in SOURCE behind the mount's back: within
  // the TTL the cached answer stands, as a kernel-cached name would...
  fs::create_directories(root_ + "/src/dir/missing_sys/bin");
  r = expand("@sys/bin", root_ids());
  ASSERT_TRUE(r) << r.error().message;
  ASSERT_LT(Clock::now() - first, ttl) << "the machine stalled for the whole TTL; the test proves nothing";
  EXPECT_EQ(*r, "amd64_linux26/bin");
  s = links_->cache_stats();
  EXPECT_EQ(s.probe_hits, 2u);
  EXPECT_EQ(s.probe_misses, 2u);

  // ...and after it, the new candidate wins. (From when the probes were
  // made, not from `first`: on a loaded machine the first expansion itself
  // can take longer than any margin.)
  std::this_thread::sleep_until(probed_by + ttl + std::chrono::milliseconds(50));
  r = expand("@sys/bin", root_ids());
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ(*r, "missing_sys/bin");
}

TEST_F(LinkServiceTest, AtSysProbesAreKeyedByTheLinksDirectory) {
  start(kSysRules);
  fs::create_directories(root_ + "/src/a/amd64_linux26");
  fs::create_directories(root_ + "/src/b/missing_sys");
  for (int round = 0; round < 2; ++round) {  // the second round is answered from the cache
    auto a = expand("@sys", root_ids(), "a");
    auto b = expand("@sys", root_ids(), "b");
    ASSERT_TRUE(a && b);
    EXPECT_EQ(*a, "amd64_linux26");
    EXPECT_EQ(*b, "missing_sys");
  }
  EXPECT_EQ(links_->cache_stats().probe_hits, 3u);  // a: two candidates, b: one
}

// A directory that names itself without a syscall (the FUSE layer's
// ParentDirectory: the directory the table last found the link in) may
// have been left by a rename before the probe opens it. The answer is the
// descriptor's directory's: it must not be stored under the other's name.
TEST_F(LinkServiceTest, AnAnswerIsStoredOnlyUnderTheDirectoryItWasProbedIn) {
  start(kSysRules);
  fs::create_directories(root_ + "/src/a/amd64_linux26");
  fs::create_directories(root_ + "/src/b");
  struct Named final : LinkDirectory {
    Named(int fd, const struct stat& said) : fd_(fd), said_(said) {}
    int fd() override { return fd_; }
    bool identity(dev_t& dev, ino_t& ino) override {
      dev = said_.st_dev;
      ino = said_.st_ino;
      return true;
    }
    int fd_;
    struct stat said_;
  };
  const int a = ::open((root_ + "/src/a").c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC);
  const int b = ::open((root_ + "/src/b").c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC);
  ASSERT_GE(a, 0);
  ASSERT_GE(b, 0);
  struct stat st_b {};
  ASSERT_EQ(::fstat(b, &st_b), 0);
  std::string out;
  // Says b, is a (the link moved to a): a's answer, not remembered for b.
  Named moved(a, st_b);
  ASSERT_TRUE(links_->expand("@sys", moved, root_ids(), out));
  EXPECT_EQ(out, "amd64_linux26");
  // b itself, named rightly: b has no candidate.
  Named in_b(b, st_b);
  ASSERT_TRUE(links_->expand("@sys", in_b, root_ids(), out));
  EXPECT_EQ(out, "missing_sys") << "an answer probed in a was kept under b's name";
  // Named rightly, answers are kept as ever.
  struct stat st_a {};
  ASSERT_EQ(::fstat(a, &st_a), 0);
  Named in_a(a, st_a);
  ASSERT_TRUE(links_->expand("@sys", in_a, root_ids(), out));
  EXPECT_EQ(out, "amd64_linux26");
  const auto misses = links_->cache_stats().probe_misses;
  ASSERT_TRUE(links_->expand("@sys", in_a, root_ids(), out));
  EXPECT_EQ(out, "amd64_linux26");
  EXPECT_EQ(links_->cache_stats().probe_misses, misses) << "answers probed in a, named a, were not kept";
  ::close(a);
  ::close(b);
}

// A directory that names itself without a system call, as the FUSE
// layer's ParentDirectory does: what lets a thread remember an @sys
// expansion (ExpansionMemo in link_service.cpp).
class NamedDirectory final : public LinkDirectory {
 public:
  explicit NamedDirectory(const std::string& path) : fd_(::open(path.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC)) {
    if (fd_ >= 0) ok_ = ::fstat(fd_, &st_) == 0;
  }
  ~NamedDirectory() {
    if (fd_ >= 0) ::close(fd_);
  }
  NamedDirectory(const NamedDirectory&) = delete;
  NamedDirectory& operator=(const NamedDirectory&) = delete;
  bool ok() const { return ok_; }
  int fd() override {
    ++fds;
    return fd_;
  }
  bool identity(dev_t& dev, ino_t& ino) override {
    dev = st_.st_dev;
    ino = st_.st_ino;
    return true;
  }
  int fds = 0;  // how often a probe asked for the descriptor

 private:
  int fd_ = -1;
  bool ok_ = false;
  struct stat st_ {};
};

// A process, and a request of its that holds its context as the FUSE
// layer's requests do: the context then stays one object throughout a test
// (one made afresh would miss the memo whatever the memo did).
struct HeldCaller {
  explicit HeldCaller(CallerContexts& contexts) : child({"X=1"}) {
    if (!child.ok()) return;
    ids = child.ids();
    held = contexts.full(ids.pid, ids.uid, ids.gid);
    ids.caller = held.get();
    ids.known = LinkNeeds::Process;
    ids.caller_ref = &held;
  }
  bool ok() const { return child.ok() && held != nullptr; }
  EnvChild child;
  std::shared_ptr<const Caller> held;
  RequestIds ids{};
};

// The same @sys link read again by the same process is answered from what
// the thread gave it last time while every probe answer it used is still
// kept, and by the probes once the earliest of them has expired: the
// staleness bound of the probe cache, never more.
TEST_F(LinkServiceTest, AtSysExpansionsAreRememberedUntilTheirEarliestAnswerExpires) {
  entry_timeout_ = 1.5;
  const auto ttl = std::chrono::milliseconds(1500);
  start(kSysRules);
  fs::create_directories(root_ + "/src/dir/amd64_linux26/bin");
  NamedDirectory dir(root_ + "/src/dir");
  ASSERT_TRUE(dir.ok());
  const HeldCaller caller(*contexts_);
  ASSERT_TRUE(caller.ok());
  const RequestIds& ids = caller.ids;
  const auto memo_hits = [&] { return links_->cache_stats().memo_hits; };
  std::string out;
  const auto first = Clock::now();
  ASSERT_TRUE(links_->expand("@sys/bin", dir, ids, out));
  const auto probed_by = Clock::now();
  EXPECT_EQ(out, "amd64_linux26/bin");
  const auto h0 = memo_hits();
  const auto s0 = links_->cache_stats();
  EXPECT_EQ(s0.probe_misses, 2u);

  fs::create_directories(root_ + "/src/dir/missing_sys/bin");
  const int fds = dir.fds;
  ASSERT_TRUE(links_->expand("@sys/bin", dir, ids, out));
  ASSERT_LT(Clock::now() - first, ttl) << "the machine stalled for the whole TTL; the test proves nothing";
  EXPECT_EQ(out, "amd64_linux26/bin") << "within the TTL the kept answers stand";
  EXPECT_EQ(memo_hits(), h0 + 1);
  EXPECT_EQ(dir.fds, fds) << "a remembered expansion needs no descriptor";
  const auto s1 = links_->cache_stats();
  EXPECT_EQ(s1.probe_hits + s1.probe_misses, s0.probe_hits + s0.probe_misses) << "nor a probe";

  std::this_thread::sleep_until(probed_by + ttl + std::chrono::milliseconds(50));
  ASSERT_TRUE(links_->expand("@sys/bin", dir, ids, out));
  EXPECT_EQ(out, "missing_sys/bin") << "remembered past the answers' expiry";
  EXPECT_EQ(memo_hits(), h0 + 1);
}

// One text in two directories, read in turn: each directory's own answer,
// every time; a reload and clear_cache forget what was remembered.
TEST_F(LinkServiceTest, RememberedAtSysExpansionsAreTheirDirectorysAndDieWithTheCache) {
  entry_timeout_ = 3600;
  start(kSysRules);
  fs::create_directories(root_ + "/src/a/amd64_linux26");
  fs::create_directories(root_ + "/src/b/missing_sys");
  NamedDirectory a(root_ + "/src/a"), b(root_ + "/src/b");
  ASSERT_TRUE(a.ok() && b.ok());
  const HeldCaller caller(*contexts_);
  ASSERT_TRUE(caller.ok());
  const RequestIds& ids = caller.ids;
  std::string out;
  for (int round = 0; round < 3; ++round) {
    ASSERT_TRUE(links_->expand("@sys", a, ids, out));
    EXPECT_EQ(out, "amd64_linux26") << "round " << round;
    ASSERT_TRUE(links_->expand("@sys", b, ids, out));
    EXPECT_EQ(out, "missing_sys") << "round " << round;
  }
  EXPECT_EQ(links_->cache_stats().memo_hits, 4u);

  fs::create_directories(root_ + "/src/a/missing_sys");
  links_->clear_cache();
  ASSERT_TRUE(links_->expand("@sys", a, ids, out));
  EXPECT_EQ(out, "missing_sys") << "clear_cache left a remembered expansion";

  ASSERT_EQ(::rmdir((root_ + "/src/a/missing_sys").c_str()), 0);
  write_rules(std::string(kSysRules) + "# touched\n");
  ASSERT_TRUE(state_->reload());
  ASSERT_TRUE(links_->expand("@sys", a, ids, out));
  EXPECT_EQ(out, "amd64_linux26") << "a reload left a remembered expansion";
}

// Nothing is remembered when the answers are not kept (entry_timeout 0).
TEST_F(LinkServiceTest, AtSysExpansionsAreNotRememberedWhenTheProbesAreNot) {
  entry_timeout_ = 0;
  start(kSysRules);
  fs::create_directories(root_ + "/src/dir/amd64_linux26");
  NamedDirectory dir(root_ + "/src/dir");
  ASSERT_TRUE(dir.ok());
  const HeldCaller caller(*contexts_);
  ASSERT_TRUE(caller.ok());
  const RequestIds& ids = caller.ids;
  std::string out;
  ASSERT_TRUE(links_->expand("@sys", dir, ids, out));
  EXPECT_EQ(out, "amd64_linux26");
  fs::create_directories(root_ + "/src/dir/missing_sys");
  ASSERT_TRUE(links_->expand("@sys", dir, ids, out));
  EXPECT_EQ(out, "missing_sys");
  EXPECT_EQ(links_->cache_stats().memo_hits, 0u);
}

TEST_F(LinkServiceTest, ARulesReloadForgetsAtSysProbes) {
  start(kSysRules);
  fs::create_directories(root_ + "/src/dir/amd64_linux26");
  auto r = expand("@sys", root_ids());
  ASSERT_TRUE(r);
  EXPECT_EQ(*r, "amd64_linux26");
  fs::create_directories(root_ + "/src/dir/missing_sys");
  write_rules(std::string(kSysRules) + "# touched\n");
  ASSERT_TRUE(state_->reload());
  r = expand("@sys", root_ids());
  ASSERT_TRUE(r);
  EXPECT_EQ(*r, "missing_sys");
  // clear_cache (vsymctl reload) empties it too, including the copy this
  // thread keeps of each answer.
  ASSERT_EQ(::rmdir((root_ + "/src/dir/missing_sys").c_str()), 0);
  links_->clear_cache();
  EXPECT_EQ(links_->cache_stats().probe_entries, 0u);
  r = expand("@sys", root_ids());
  ASSERT_TRUE(r);
  EXPECT_EQ(*r, "amd64_linux26");
}

// Each worker keeps a copy of recent answers; a copy made on one thread must
// not answer on another before that one has asked, and the counts add up.
TEST_F(LinkServiceTest, AtSysProbeAnswersAreSharedAcrossWorkerThreads) {
  start(kSysRules);
  fs::create_directories(root_ + "/src/dir/amd64_linux26");
  ASSERT_EQ(*expand("@sys", root_ids()), "amd64_linux26");  // two misses, stored
  std::string other;
  std::thread([&] { other = *expand("@sys", root_ids()); }).join();  // two shared hits
  EXPECT_EQ(other, "amd64_linux26");
  ASSERT_EQ(*expand("@sys", root_ids()), "amd64_linux26");  // two hits on this thread's copies
  const auto s = links_->cache_stats();
  EXPECT_EQ(s.probe_misses, 2u);
  EXPECT_EQ(s.probe_hits, 4u);
}

TEST_F(LinkServiceTest, ZeroEntryTimeoutProbesEveryTime) {
  entry_timeout_ = 0;
  start(kSysRules);
  fs::create_directories(root_ + "/src/dir/amd64_linux26");
  auto r = expand("@sys", root_ids());
  ASSERT_TRUE(r);
  EXPECT_EQ(*r, "amd64_linux26");
  fs::create_directories(root_ + "/src/dir/missing_sys");
  r = expand("@sys", root_ids());
  ASSERT_TRUE(r);
  EXPECT_EQ(*r, "missing_sys");
  const auto s = links_->cache_stats();
  EXPECT_EQ(s.probe_entries, 0u);
  EXPECT_EQ(s.probe_hits + s.probe_misses, 0u);
}

TEST_F(LinkServiceTest, AtSysProbeCacheStaysBounded) {
  entry_timeout_ = 3600;  // nothing expires: only the bound limits it
  start(kSysRules);
  for (int i = 0; i < 6000; ++i) {
    auto r = expand(root_ + "/nowhere/" + std::to_string(i) + "/@sys", root_ids());
    ASSERT_TRUE(r);
  }
  const auto s = links_->cache_stats();
  EXPECT_EQ(s.probe_misses, 12'000u);
  EXPECT_GT(s.probe_entries, 0u);
  EXPECT_LE(s.probe_entries, 16u * 256u);
}

// Whether a candidate exists depends on who asks (a 0700 directory exists
// for its owner only): an answer found for one identity never answers
// another. The key is the probing identity, here two callers with pid 0.
TEST_F(LinkServiceTest, AtSysProbesAreCachedPerIdentity) {
  start(kSysRules);
  fs::create_directories(root_ + "/src/dir/amd64_linux26");
  const RequestIds nobody{0, 65534, 65534};
  ASSERT_EQ(*expand("@sys", root_ids()), "amd64_linux26");  // two misses
  ASSERT_EQ(*expand("@sys", nobody), "amd64_linux26");      // two more: not root's answers
  auto s = links_->cache_stats();
  EXPECT_EQ(s.probe_misses, 4u);
  EXPECT_EQ(s.probe_hits, 0u);
  EXPECT_EQ(s.probe_entries, 4u);
  ASSERT_EQ(*expand("@sys", nobody), "amd64_linux26");      // its own, now
  s = links_->cache_stats();
  EXPECT_EQ(s.probe_misses, 4u);
  EXPECT_EQ(s.probe_hits, 2u);
}

// `vsymctl explain` expands any text a client sends: it may read the cache
// (its answer is then the one readlink gives) but never adds to it.
TEST_F(LinkServiceTest, ExplainNeverFillsTheProbeCache) {
  start(kSysRules);
  fs::create_directories(root_ + "/src/dir/amd64_linux26");
  const int dfd = ::open((root_ + "/src/dir").c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC);
  ASSERT_GE(dfd, 0);
  std::string out;
  std::vector<Substitution> trace;
  for (const std::string& raw : {std::string("@sys"), std::string("@sys/x"), root_ + "/nowhere/@sys"}) {
    ASSERT_TRUE(links_->explain(raw, dfd, root_ids(), out, trace)) << raw;
  }
  EXPECT_EQ(out, root_ + "/nowhere/missing_sys");
  EXPECT_EQ(links_->cache_stats().probe_entries, 0u);
  ASSERT_EQ(*expand("@sys", root_ids()), "amd64_linux26");  // readlink fills it...
  EXPECT_EQ(links_->cache_stats().probe_entries, 2u);
  ASSERT_TRUE(links_->explain("@sys", dfd, root_ids(), out, trace));  // ...and explain reads it
  EXPECT_EQ(out, "amd64_linux26");
  EXPECT_EQ(links_->cache_stats().probe_hits, 2u);
  ::close(dfd);
}

// Candidates that leave SOURCE (`..` above the mount's root, a path
// elsewhere) are walked on a probe thread, from where the caller would be:
// above the mount's root is the mount point's parent.
TEST_F(LinkServiceTest, AtSysCandidatesOutsideSourceAreWalkedAsTheCallerSeesThem) {
  start(kSysRules);
  fs::create_directories(root_ + "/amd64_linux26");  // the parent of both SOURCE and the mount point
  auto r = expand("../../@sys", root_ids());
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ(*r, "../../amd64_linux26");
  r = expand(root_ + "/@sys", root_ids());
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ(*r, root_ + "/amd64_linux26");
  const auto s = links_->cache_stats();
  EXPECT_EQ(s.probe_outside, 4u);
  EXPECT_EQ(s.probe_abandoned, 0u);
}

TEST_F(LinkServiceTest, TemplateCacheIsCounted) {
  start("");
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(expand("/h/@hostname", root_ids()));
  ASSERT_TRUE(expand("/h/@ostype", root_ids()));
  const auto s = links_->cache_stats();
  EXPECT_EQ(s.template_entries, 2u);
  EXPECT_EQ(s.template_misses, 2u);
  EXPECT_EQ(s.template_hits, 2u);
}

// A thread remembers its last expansions that probed nothing (the
// ExpansionMemo of link_service.cpp). What it returns must be what a fresh
// expansion would give: a new process image, rules, run-time values, or
// another process must each miss; the scope counters count every answer.
TEST_F(LinkServiceTest, RememberedExpansionsFollowEverySnapshotTheyRead) {
  start("[vars]\nSYS = \"s0\"\n");
  EnvChild a({"FOO=alpha"});
  EnvChild b({"FOO=beta"});
  ASSERT_TRUE(a.ok() && b.ok());
  const auto hits = [&] { return links_->cache_stats().memo_hits; };
  const auto process_counted = [&] {
    return state_->counters().by_scope[static_cast<int>(Scope::Process)].load();
  };
  const std::string link = "/x/${FOO}/${SYS}/${RUN:-none}";

  EXPECT_EQ(*expand(link, a.ids()), "/x/alpha/s0/none");
  const auto h0 = hits();
  const auto p0 = process_counted();
  EXPECT_EQ(*expand(link, a.ids()), "/x/alpha/s0/none");
  EXPECT_EQ(hits(), h0 + 1) << "the same link for the same process again";
  EXPECT_EQ(process_counted(), p0 + 1) << "a remembered answer counts its values too";
  EXPECT_EQ(state_->counters().expansions.load(), 2u);

  // Another process: its own context.
  EXPECT_EQ(*expand(link, b.ids()), "/x/beta/s0/none");
  EXPECT_EQ(hits(), h0 + 1);

  // Run-time values published: a new snapshot.
  auto vars = std::make_shared<RuntimeVars>();
  vars->system["RUN"] = "r1";
  state_->publish_runtime(vars);
  EXPECT_EQ(*expand(link, a.ids()), "/x/alpha/s0/r1");
  EXPECT_EQ(*expand(link, b.ids()), "/x/beta/s0/r1");

  // Rules reloaded.
  write_rules("[vars]\nSYS = \"s1\"\n");
  ASSERT_TRUE(state_->reload());
  EXPECT_EQ(*expand(link, a.ids()), "/x/alpha/s1/r1");

  // A caller that a request fetched (ids.caller) is remembered only with
  // the request's reference to it: else its address could be another's
  // by the next request.
  RequestIds ids = a.ids();
  const std::shared_ptr<const Caller> full = contexts_->full(ids.pid, ids.uid, ids.gid);
  ASSERT_TRUE(full);
  auto own = std::make_shared<Caller>(*full);
  own->environ = {"FOO=gamma"};
  const std::shared_ptr<const Caller> mine = own;
  ids.caller = mine.get();
  ids.known = LinkNeeds::Process;
  auto before = hits();
  EXPECT_EQ(*expand(link, ids), "/x/gamma/s1/r1");
  EXPECT_EQ(*expand(link, ids), "/x/gamma/s1/r1");
  EXPECT_EQ(hits(), before) << "a caller nobody holds is never remembered";
  ids.caller_ref = &mine;
  EXPECT_EQ(*expand(link, ids), "/x/gamma/s1/r1");
  EXPECT_EQ(*expand(link, ids), "/x/gamma/s1/r1");
  EXPECT_EQ(hits(), before + 1);

  // @sys probes SOURCE, whose entries change: never remembered.
  fs::create_directories(root_ + "/src/dir/amd64_linux26");
  before = hits();
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(expand("@sys", a.ids()));
  EXPECT_EQ(hits(), before);
}

// A process that execs gets a new context (exec_watcher.hpp): the memo of
// the thread that served its old image must not answer for the new one.
TEST_F(LinkServiceTest, ARememberedExpansionEndsWithTheProcessImage) {
  start("");
  int ready[2];
  ASSERT_EQ(::pipe2(ready, O_CLOEXEC), 0);
  int go[2];
  ASSERT_EQ(::pipe2(go, 0), 0);
  std::string env1 = "FOO=before", env2 = "FOO=after";
  char* e1[] = {env1.data(), nullptr};
  // The new image waits in read(2) rather than exec'ing again: between the
  // point of no return of an execve and its new stack, /proc/<pid>/environ
  // reads empty, and an expansion read then sees no $FOO (CI caught that
  // window once, with `exec sleep`). A caller blocked in a FUSE request is
  // never inside its own execve, so the daemon never sees it there.
  const std::string script = "echo >&3; read x <&4; exec env -i " + env2 + " /bin/sh -c 'echo >&3; read x <&4'";
  const char* argv[] = {"/bin/sh", "-c", script.c_str(), nullptr};
  const pid_t pid = ::fork();
  if (pid == 0) {
    ::setpgid(0, 0);  // killed as a group below: nothing keeps the test's output open
    ::dup2(ready[1], 3);
    ::dup2(go[0], 4);
    ::execve(argv[0], const_cast<char* const*>(argv), e1);
    ::_exit(127);
  }
  ::close(ready[1]);
  ::close(go[0]);
  const auto wait_ready = [&] {
    pollfd p{ready[0], POLLIN, 0};
    char c;
    return ::poll(&p, 1, 10'000) == 1 && ::read(ready[0], &c, 1) == 1;
  };
  const RequestIds ids{pid, ::geteuid(), ::getegid()};
  const auto text = [&](std::string_view raw) {
    auto r = expand(raw, ids);
    return r ? *r : "error: " + r.error().message;
  };
  bool ok = wait_ready();
  std::string first, second, third;
  if (ok) {
    first = text("/x/$FOO");
    second = text("/x/$FOO");
    ok = ::write(go[1], "\n", 1) == 1 && wait_ready();
    if (ok) third = text("/x/$FOO");
  }
  ::kill(-pid, SIGKILL);
  ::kill(pid, SIGKILL);
  ::waitpid(pid, nullptr, 0);
  ::close(ready[0]);
  ::close(go[1]);
  ASSERT_TRUE(ok);
  EXPECT_EQ(first, "/x/before");
  EXPECT_EQ(second, "/x/before");
  EXPECT_EQ(third, "/x/after");
}

TEST_F(LinkServiceTest, SysComponentCandidates) {
  start("[sysname]\nnative = [\"a_sys\", \"b_sys\"]\ncompat32 = [\"c_sys\"]\n");
  std::vector<std::string> out{"stale"};
  links_->sys_component_candidates("@sys", root_ids(), out);
  EXPECT_EQ(out, (std::vector<std::string>{"a_sys", "b_sys"}));
  links_->sys_component_candidates("lib@sys", root_ids(), out);
  EXPECT_EQ(out, (std::vector<std::string>{"liba_sys", "libb_sys"}));
  links_->sys_component_candidates("plain", root_ids(), out);
  EXPECT_TRUE(out.empty());
  links_->sys_component_candidates("@system", root_ids(), out);
  EXPECT_TRUE(out.empty());
}

TEST_F(LinkServiceTest, SysComponentsAreOffWithTheMagicFamily) {
  start("[syntax]\nmagic = false\n");
  std::vector<std::string> out;
  links_->sys_component_candidates("@sys", root_ids(), out);
  EXPECT_TRUE(out.empty());
}

TEST_F(LinkServiceTest, ErrorsAreValuesAndCounted) {
  start("[syntax]\nundefined = \"error\"\n[vars]\nLONG = \"" + std::string(3000, 'x') + "\"\n");
  auto undefined = expand("/x/${VSYMFS_SURELY_UNDEFINED}", root_ids());
  ASSERT_FALSE(undefined);
  EXPECT_EQ(undefined.error().code, ENOENT);
  auto too_long = expand("$LONG/$LONG", root_ids());
  ASSERT_FALSE(too_long);
  EXPECT_EQ(too_long.error().code, ENAMETOOLONG);
  EXPECT_EQ(state_->counters().errors.load(), 2u);
  auto long_text = expand(std::string(PATH_MAX, 'x'), root_ids());
  ASSERT_FALSE(long_text);
  EXPECT_EQ(long_text.error().code, ENAMETOOLONG);
}

TEST_F(LinkServiceTest, ExplainTracesEveryValueToItsScope) {
  start("[locked]\nL = \"locked\"\n[vars]\nS = \"system\"\n");
  std::string out;
  std::vector<Substitution> trace;
  auto r = links_->explain("$L/$S/${USER}", -1, root_ids(), out, trace);
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ(out, "locked/system/root");
  ASSERT_EQ(trace.size(), 3u);
  EXPECT_EQ(trace[0].scope, Scope::Locked);
  EXPECT_EQ(trace[1].scope, Scope::System);
  EXPECT_EQ(trace[2].scope, Scope::Builtin);
  EXPECT_EQ(trace[2].value, "root");
}

TEST_F(LinkServiceTest, RuntimeValuesArePublishedAtomically) {
  start("");
  int changes = 0;
  const auto subscription = state_->subscribe([&] { ++changes; });
  auto vars = std::make_shared<RuntimeVars>();
  vars->users[0]["WHERE"] = "user-scope";
  vars->system["WHERE"] = "system-scope";
  vars->system["ONLYSYS"] = "s";
  state_->publish_runtime(vars);
  EXPECT_EQ(changes, 1);
  // A caller the daemon can see: one it cannot (pid 0) gets no run-time
  // user values, since whether it is a set-id program is unknown.
  EXPECT_EQ(*expand("$WHERE/$ONLYSYS", {::getpid(), 0, 0}), "user-scope/s");
  EXPECT_EQ(*expand("$WHERE/$ONLYSYS", root_ids()), "system-scope/s");
  EXPECT_EQ(*expand("$WHERE", {0, 1, 1}), "system-scope");  // another uid
}

// Rules reloads and run-time publications while workers expand: every
// expansion sees one whole snapshot of each. Under ThreadSanitizer
// (scripts/tsan builds this test too) this also checks that swapping the
// snapshots is not a data race: with std::atomic<std::shared_ptr> from
// libstdc++ 12 it was (load() unlocks with a relaxed RMW).
TEST_F(LinkServiceTest, ReloadsAndPublicationsWhileWorkersExpand) {
  start("[vars]\nX = \"x0\"\n");
  std::atomic<bool> stop{false};
  std::atomic<long> expansions{0}, wrong{0};
  std::vector<std::thread> workers;
  for (int i = 0; i < 3; ++i)
    workers.emplace_back([&] {
      while (!stop.load()) {
        auto r = expand("$X/${V:-none}", root_ids());
        const bool ok = r && r->size() >= 4 && r->compare(0, 1, "x") == 0 &&
                        (r->ends_with("/none") || r->find("/v") != std::string::npos);
        if (!ok) wrong.fetch_add(1);
        expansions.fetch_add(1);
      }
    });
  for (int round = 1; round <= 40; ++round) {
    write_rules("[vars]\nX = \"x" + std::to_string(round) + "\"\n");
    ASSERT_TRUE(state_->reload());
    auto vars = std::make_shared<RuntimeVars>();
    vars->system["V"] = "v" + std::to_string(round);  // pid 0 gets no run-time user values
    state_->publish_runtime(vars);
  }
  // Until the workers have expanded at least once after the last swap.
  const long seen = expansions.load();
  const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (expansions.load() < seen + 3 && std::chrono::steady_clock::now() < until) std::this_thread::yield();
  stop = true;
  for (auto& t : workers) t.join();
  EXPECT_EQ(wrong.load(), 0);
  EXPECT_GE(expansions.load(), seen + 3);
  EXPECT_EQ(*expand("$X/$V", root_ids()), "x40/v40");
}

TEST_F(LinkServiceTest, ReloadSwapsValidRulesAndKeepsOldOnError) {
  start("[vars]\nX = \"one\"\n");
  int changes = 0;
  const auto subscription = state_->subscribe([&] { ++changes; });
  const auto gen = state_->rules_generation();
  EXPECT_EQ(*expand("$X", root_ids()), "one");

  write_rules("[vars]\nX = \"two\"\n");
  auto ok = state_->reload();
  ASSERT_TRUE(ok) << ok.error().message;
  EXPECT_EQ(state_->rules_generation(), gen + 1);
  EXPECT_EQ(*expand("$X", root_ids()), "two");  // the template cache follows the generation
  EXPECT_EQ(changes, 1);

  write_rules("[vars]\nX = \"three\"\n[nonsense]\n");
  auto bad = state_->reload();
  ASSERT_FALSE(bad);
  EXPECT_EQ(bad.error().code, EINVAL);
  EXPECT_NE(bad.error().message.find(rules_path()), std::string::npos) << bad.error().message;
  EXPECT_EQ(state_->rules_generation(), gen + 1);
  EXPECT_EQ(*expand("$X", root_ids()), "two");
  EXPECT_EQ(changes, 1);
  EXPECT_EQ(state_->counters().reloads.load(), 1u);
  EXPECT_EQ(state_->counters().reload_failures.load(), 1u);

  // Families are parse options: a reload that turns one off re-parses.
  write_rules("[syntax]\ndollar = false\n[vars]\nX = \"four\"\n");
  ASSERT_TRUE(state_->reload());
  EXPECT_EQ(*expand("$X", root_ids()), "$X");
}

TEST_F(LinkServiceTest, WatcherReloadsWhenTheFileIsReplaced) {
  start("[vars]\nX = \"one\"\n");
  ASSERT_TRUE(state_->start_watching());
  ASSERT_TRUE(state_->start_watching());  // idempotent
  const auto gen = state_->rules_generation();
  write_rules("[vars]\nX = \"edited\"\n");  // rename into place
  auto deadline = Clock::now() + std::chrono::seconds(30);
  while (state_->rules_generation() == gen && Clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  EXPECT_EQ(state_->rules_generation(), gen + 1);
  EXPECT_EQ(*expand("$X", root_ids()), "edited");

  // An in-place write (close after write) is seen too.
  std::ofstream(rules_path()) << "[vars]\nX = \"in place\"\n";
  deadline = Clock::now() + std::chrono::seconds(30);
  while (state_->rules_generation() == gen + 1 && Clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  EXPECT_EQ(*expand("$X", root_ids()), "in place");
  state_->stop_watching();
  state_->stop_watching();
}

TEST(MountStateCreate, RulesFileChoices) {
  const vsymfs::test::TempDir tmp("vsymfs-mount-state");
  const std::string& dir = tmp.path();

  MountState::Config missing;
  missing.rules_path = dir + "/absent.toml";
  missing.rules_path_explicit = true;
  auto m = MountState::create(missing);
  ASSERT_FALSE(m);
  EXPECT_EQ(m.error().code, ENOENT);
  EXPECT_NE(m.error().message.find(missing.rules_path), std::string::npos) << m.error().message;

  MountState::Config invalid;
  invalid.rules_path = dir + "/bad.toml";
  std::ofstream(invalid.rules_path) << "[vars\n";
  auto b = MountState::create(invalid);
  ASSERT_FALSE(b);
  EXPECT_NE(b.error().message.find(invalid.rules_path), std::string::npos) << b.error().message;

  MountState::Config builtin;
  builtin.builtin_rules = true;
  auto d = MountState::create(builtin);
  ASSERT_TRUE(d) << d.error().message;
  EXPECT_EQ((*d)->rules()->origin, default_rules().origin);
  EXPECT_TRUE((*d)->rules_file().empty());
  EXPECT_TRUE((*d)->reload());  // nothing to re-read: success
  EXPECT_TRUE((*d)->start_watching());

  if (!fs::exists(VSYMFS_DEFAULT_RULES_PATH)) {
    MountState::Config implicit;  // the default path, absent: built-in rules
    auto i = MountState::create(implicit);
    ASSERT_TRUE(i) << i.error().message;
    EXPECT_EQ((*i)->rules()->origin, default_rules().origin);
    EXPECT_EQ((*i)->rules_file(), VSYMFS_DEFAULT_RULES_PATH);
  }
}

// Not a benchmark (bench/ has those), but the numbers the hot path is judged
// by, printed with every run, and loose ceilings that catch a regression to
// re-reading everything per call.
TEST_F(LinkServiceTest, ExpandCostPerCall) {
  if (::geteuid() != 0) GTEST_SKIP() << "reading /proc of a process as another uid needs root";
  start("");
  EnvChild child({"FOO=alpha"});
  ASSERT_TRUE(child.ok());
  const RequestIds ids = child.ids();
  RequestIds other_uid = ids;
  other_uid.uid = ids.uid + 1;

  auto measure = [&](const char* label, std::string_view raw, const std::string& want, int n, auto&& ids_for) {
    std::string out;
    auto warm = links_->expand(raw, -1, ids_for(0), out);
    EXPECT_TRUE(warm);
    const auto t0 = Clock::now();
    for (int i = 0; i < n; ++i) {
      auto r = links_->expand(raw, -1, ids_for(i), out);
      if (!r || out != want) {
        ADD_FAILURE() << label << ": got '" << out << "'";
        break;
      }
    }
    const double us = std::chrono::duration<double, std::micro>(Clock::now() - t0).count() / n;
    std::printf("  expand %-28s %8.2f us/call\n", label, us);
    RecordProperty(label, std::to_string(us));
    return us;
  };
  auto same = [&](int) { return ids; };
  // Alternating uids defeats the full-context cache (its key includes the
  // uid) while identity and NSS stay cached: the cost of a first sight.
  auto alternate = [&](int i) { return i % 2 ? other_uid : ids; };

  const double literal = measure("literal", "plain/target", "plain/target", 20000, same);
  const double user = measure("${USER} (named, cached)", "/export/${USER}", "/export/root", 20000, same);
  const double env_cached = measure("$FOO (environ cached)", "/x/$FOO", "/x/alpha", 20000, same);
  const double env_uncached = measure("$FOO (environ re-read)", "/x/$FOO", "/x/alpha", 500, alternate);
  EXPECT_LT(literal, 5.0);
  EXPECT_LT(user, 20.0);
  EXPECT_LT(env_cached, 50.0);
  EXPECT_LT(env_uncached, 2000.0);
}

}  // namespace
}  // namespace vsymfs::daemon
