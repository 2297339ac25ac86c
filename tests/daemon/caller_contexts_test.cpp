#include "daemon/caller_contexts.hpp"

#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <signal.h>
#include <sys/personality.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <climits>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <latch>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "common/exec_probe.hpp"
#include "common/temp_dir.hpp"
#include "daemon/mount_state.hpp"
#include "daemon/proc_events.hpp"
#include "vsymfs/emulation.hpp"

namespace vsymfs::daemon {
namespace {

using namespace std::chrono_literals;

bool has(const std::vector<std::string>& env, const std::string& entry) {
  return std::find(env.begin(), env.end(), entry) != env.end();
}

// The default options with deadlines that a loaded machine cannot miss. The
// defaults give up on a /proc read after 1 s and re-read groups after 1 s;
// these tests are not about either bound (BusyHelpersMeanNoEnvironmentNotAWait
// is), and a test must not fail because the machine was slow.
CallerContexts::Options patient(CallerContexts::Options opts = {}) {
  opts.environ_timeout_ms = 60'000;
  opts.identity_ttl_ms = 3'600'000;
  return opts;
}

// Why the process events connector cannot be used here, for a SKIP line.
std::string events_unavailable() {
  auto ev = ProcEvents::open(10s);
  return ev ? "the process events connector failed for CallerContexts but not here" : ev.error().message;
}

// Looks the process up until one lookup is answered from the cache (reads
// nothing from /proc). `hit` is that answer (null when none came within
// 30 s), `last_read` the answer of the last lookup that did read (at first
// `read`, the caller's own). Every answer must satisfy `check`. Why more
// than one lookup may be needed: with the events key, an exec or exit of
// *any* process whose pid falls into the same cache shard while a context
// is being read keeps that context from being stored (it might describe an
// image that is gone), and on a busy machine such events are common.
// Without events, the first read is always stored.
struct Cached {
  std::shared_ptr<const Caller> hit, last_read;
};
Cached full_until_cached(CallerContexts& ctx, pid_t pid, std::shared_ptr<const Caller> read,
                         const std::function<void(const Caller&)>& check) {
  Cached r{nullptr, std::move(read)};
  const auto deadline = std::chrono::steady_clock::now() + 30s;
  while (std::chrono::steady_clock::now() < deadline) {
    const auto misses = ctx.stats().misses;
    auto c = ctx.full(pid, ::geteuid(), ::getegid());
    check(*c);
    if (ctx.stats().misses == misses) {
      r.hit = std::move(c);
      break;
    }
    r.last_read = std::move(c);
  }
  return r;
}

// A child process running a shell script with a chosen environment. The
// script writes a line to fd 3 whenever it is ready to be inspected, and
// reads a line from fd 4 when it wants the test to say "go on".
class Child {
 public:
  Child(const std::string& script, std::vector<std::string> env, const std::function<void()>& before_exec = {},
        std::vector<std::string> argv = {}) {
    int ready[2], go[2];
    if (::pipe2(ready, O_CLOEXEC) != 0 || ::pipe2(go, O_CLOEXEC) != 0) return;
    // Everything the child needs is built before fork: other threads may
    // hold the allocator's lock at that moment, and the child would wait
    // for it forever.
    if (argv.empty()) argv = {"/bin/sh", "-c", script};
    std::vector<char*> a, e;
    for (auto& s : argv) a.push_back(s.data());
    a.push_back(nullptr);
    for (auto& s : env) e.push_back(s.data());
    e.push_back(nullptr);
    pid_ = ::fork();
    if (pid_ == 0) {
      // Its own process group, so the destructor also kills what the
      // script started (a stray sleep would hold the test's stdout open).
      ::setpgid(0, 0);
      ::dup2(ready[1], 3);
      ::dup2(go[0], 4);
      if (before_exec) before_exec();
      ::execve(a[0], a.data(), e.data());
      ::_exit(127);
    }
    ::close(ready[1]);
    ::close(go[0]);
    ready_ = ready[0];
    go_ = go[1];
  }
  ~Child() {
    if (pid_ > 0) {
      ::kill(-pid_, SIGKILL);
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
    }
    if (ready_ >= 0) ::close(ready_);
    if (go_ >= 0) ::close(go_);
  }
  Child(const Child&) = delete;
  Child& operator=(const Child&) = delete;

  pid_t pid() const { return pid_; }
  // Waits (at most 10 s) for the child's next "ready" byte; false if it
  // died or hung first.
  bool wait_ready() {
    pollfd p{ready_, POLLIN, 0};
    if (::poll(&p, 1, 10'000) != 1) return false;
    char c;
    return ::read(ready_, &c, 1) == 1;
  }
  void go_on() { [[maybe_unused]] ssize_t n = ::write(go_, "\n", 1); }

 private:
  pid_t pid_ = -1;
  int ready_ = -1, go_ = -1;
};

constexpr const char* kWaitScript = "echo >&3; sleep 30; :";

bool is_root() { return ::geteuid() == 0; }

TEST(CallerContexts, PidZeroHasOnlyItsPrimaryGroupAndNoEnvironment) {
  CallerContexts ctx;
  auto id = ctx.identity(0, 1234, 5678);
  EXPECT_EQ(id->pid, 0);
  EXPECT_EQ(id->uid, 1234u);
  EXPECT_EQ(id->ruid, 1234u);
  EXPECT_EQ(id->rgid, 5678u);
  EXPECT_EQ(id->groups, std::vector<gid_t>{5678});
  auto full = ctx.full(0, 1234, 5678);
  EXPECT_FALSE(full->environ_known);
  EXPECT_TRUE(full->environ.empty());
}

TEST(CallerContexts, IdentityOfOurOwnProcessHasOurGroups) {
  CallerContexts ctx;
  std::vector<gid_t> ours(static_cast<std::size_t>(::getgroups(0, nullptr)));
  ASSERT_EQ(::getgroups(static_cast<int>(ours.size()), ours.data()), static_cast<int>(ours.size()));
  auto id = ctx.identity(::getpid(), ::geteuid(), ::getegid());
  auto got = id->groups;
  std::sort(got.begin(), got.end());
  std::sort(ours.begin(), ours.end());
  EXPECT_EQ(got, ours);
  EXPECT_EQ(id->ruid, ::getuid());
  EXPECT_FALSE(id->secure);
}

TEST(CallerContexts, NamesComeFromNss) {
  CallerContexts ctx;
  auto root = ctx.named(0, 0, 0);
  EXPECT_EQ(root->user_name, "root");
  EXPECT_EQ(root->group_name, "root");
  EXPECT_EQ(root->home, "/root");
  EXPECT_TRUE(has(root->group_names, "root"));
  EXPECT_FALSE(root->environ_known);
  // An id with no NSS entry has no names (the resolver then leaves ${USER} undefined).
  auto nobody_known = ctx.named(0, 4000000001u, 4000000001u);
  EXPECT_TRUE(nobody_known->user_name.empty());
  EXPECT_TRUE(nobody_known->group_name.empty());
  EXPECT_TRUE(nobody_known->group_names.empty());
}

TEST(CallerContexts, GroupsComeFromTheCallersStatus) {
  if (!is_root()) GTEST_SKIP() << "needs root to give a child other groups and ids";
  const uid_t uid = 65534;
  const gid_t gid = 65534;
  Child child(kWaitScript, {"PATH=/bin:/usr/bin"}, [&] {
    gid_t groups[] = {1234, 5678};
    if (::setgroups(2, groups) != 0 || ::setresgid(gid, gid, gid) != 0 || ::setresuid(uid, uid, uid) != 0) ::_exit(99);
  });
  ASSERT_TRUE(child.wait_ready());
  CallerContexts ctx(patient());
  auto id = ctx.identity(child.pid(), uid, gid);
  EXPECT_EQ(id->groups, (std::vector<gid_t>{1234, 5678}));
  EXPECT_FALSE(id->secure);
  // Ids that do not match the process's (it changed them, or the pid is
  // someone else's now): trust nothing from /proc but the request.
  auto other = ctx.identity(child.pid(), 1, 2);
  EXPECT_EQ(other->groups, std::vector<gid_t>{2});
}

TEST(CallerContexts, FullReadsTheEnvironmentAndCachesIt) {
  Child child(kWaitScript, {"VSYMFS_A=1", "VSYMFS_B=two words"});
  ASSERT_TRUE(child.wait_ready());
  CallerContexts ctx(patient());
  auto c = ctx.full(child.pid(), ::geteuid(), ::getegid());
  ASSERT_TRUE(c->environ_known);
  EXPECT_FALSE(c->environ_late);
  EXPECT_TRUE(has(c->environ, "VSYMFS_A=1"));
  EXPECT_TRUE(has(c->environ, "VSYMFS_B=two words"));
  EXPECT_FALSE(c->secure);
  EXPECT_FALSE(c->compat32);
  auto s1 = ctx.stats();
  EXPECT_EQ(s1.misses, 1u);
  EXPECT_EQ(s1.hits, 0u);
  // A lookup that reads nothing hands out the very snapshot the last read
  // made (the first, unless an event kept it from being stored).
  auto again = full_until_cached(ctx, child.pid(), c, [](const Caller& x) { EXPECT_TRUE(has(x.environ, "VSYMFS_A=1")); });
  ASSERT_NE(again.hit, nullptr) << "never answered from the cache";
  EXPECT_EQ(again.hit, again.last_read);
  EXPECT_EQ(ctx.stats().hits, 1u);
}

// The groups are re-read when the identity's time is up; what was read from
// the program image (environment, secure, compat32) is kept.
TEST(CallerContexts, AnExpiredIdentityKeepsTheImagesEnvironment) {
  Child child(kWaitScript, {"VSYMFS_A=1"});
  ASSERT_TRUE(child.wait_ready());
  CallerContexts::Options opts = patient();
  opts.identity_ttl_ms = 0;  // every lookup re-reads the identity
  opts.image_key = CallerContexts::Options::ImageKey::Auxv;  // no events: the first read is always stored
  CallerContexts ctx(opts);
  auto first = ctx.full(child.pid(), ::geteuid(), ::getegid());
  ASSERT_TRUE(has(first->environ, "VSYMFS_A=1"));
  auto second = ctx.full(child.pid(), ::geteuid(), ::getegid());
  // The identity read anew is the same one, and a process keeps one context
  // per distinct identity, so it is the context already built, with the
  // image's cached environment.
  EXPECT_EQ(second, first);
  EXPECT_TRUE(has(second->environ, "VSYMFS_A=1"));
  EXPECT_EQ(second->compat32, first->compat32);
  EXPECT_EQ(second->secure, first->secure);
  EXPECT_EQ(ctx.stats().misses, 1u);
  EXPECT_EQ(ctx.stats().hits, 1u);
}

// A process whose executable is a binfmt_misc entry's interpreter is that
// entry's architecture: here a stand-in registration names the shell the
// child runs, so the child counts as an aarch64 program.
TEST(CallerContexts, AnEmulatorsProcessIsEmulated) {
  test::TempDir tmp("caller-binfmt");
  std::ofstream(tmp.path() + "/qemu-aarch64")
      << "enabled\ninterpreter /bin/sh\nflags: POF\noffset 0\n"
         "magic 7f454c460201010000000000000000000200b700\nmask ffffffffffffff00fffffffffffffffffeffffff\n";
  Child child(kWaitScript, {"VSYMFS_A=1"});
  ASSERT_TRUE(child.wait_ready());
  CallerContexts::Options opts;
  opts.binfmt_dir = tmp.path();
  CallerContexts ctx(opts);
  auto c = ctx.full(child.pid(), ::geteuid(), ::getegid());
  ASSERT_NE(c->emulation, nullptr);
  EXPECT_EQ(c->emulation->machine, "aarch64");
  EXPECT_EQ(c->emulation->entry, "qemu-aarch64");
  EXPECT_FALSE(c->compat32);
  EXPECT_TRUE(has(c->environ, "VSYMFS_A=1"));
  // Kept with the cached context.
  EXPECT_EQ(ctx.full(child.pid(), ::geteuid(), ::getegid())->emulation, c->emulation);
  // Without the registration the same process is native.
  CallerContexts plain;
  EXPECT_EQ(plain.full(child.pid(), ::geteuid(), ::getegid())->emulation, nullptr);
}

class ImageKeyTest : public ::testing::TestWithParam<CallerContexts::Options::ImageKey> {};

TEST_P(ImageKeyTest, ExecveInvalidatesTheCachedEnvironment) {
  // The same pid runs two program images with different environments.
  Child child("echo >&3; read x <&4; exec /usr/bin/env VSYMFS_PHASE=2 /bin/sh -c 'echo >&3; sleep 30; :'",
              {"VSYMFS_PHASE=1", "PATH=/bin:/usr/bin"});
  ASSERT_TRUE(child.wait_ready());
  CallerContexts::Options opts = patient();
  opts.image_key = GetParam();
  CallerContexts ctx(opts);
  if (ctx.image_key() != GetParam()) GTEST_SKIP() << events_unavailable();
  auto before = ctx.full(child.pid(), ::geteuid(), ::getegid());
  ASSERT_TRUE(before->environ_known);
  EXPECT_TRUE(has(before->environ, "VSYMFS_PHASE=1"));
  child.go_on();
  ASSERT_TRUE(child.wait_ready());
  // The exec (two: env, then sh) was reported before the new image could
  // say it is ready, so this lookup must read the new environment.
  auto after = ctx.full(child.pid(), ::geteuid(), ::getegid());
  ASSERT_TRUE(after->environ_known);
  EXPECT_TRUE(has(after->environ, "VSYMFS_PHASE=2"));
  EXPECT_FALSE(has(after->environ, "VSYMFS_PHASE=1"));
  EXPECT_EQ(ctx.stats().misses, 2u);
  // And the new image is cached: a later lookup reads nothing and still
  // answers with the new environment. (Not "the very next lookup": with
  // events, an exec or exit elsewhere on the machine in the same cache shard
  // during the read keeps it from being stored; under load one came in and
  // this test, which assumed it could not, saw a third read.)
  auto again = full_until_cached(ctx, child.pid(), after, [](const Caller& c) {
    EXPECT_TRUE(c.environ_known);
    EXPECT_TRUE(has(c.environ, "VSYMFS_PHASE=2"));
    EXPECT_FALSE(has(c.environ, "VSYMFS_PHASE=1"));
  });
  ASSERT_NE(again.hit, nullptr) << "the new image was never answered from the cache";
  EXPECT_EQ(again.hit, again.last_read);
}

// Many execs in a row, each looked up the moment it is done, while the
// events thread (with Events) wakes up for the same exec and drains at the
// same time: no lookup may return the previous image's environment.
TEST_P(ImageKeyTest, EveryExecInARowIsSeenAtOnce) {
  const std::string script =
      "echo >&3; read x <&4; [ \"$VSYMFS_N\" -gt 0 ] || exit 0; "
      "exec /usr/bin/env VSYMFS_N=$((VSYMFS_N-1)) /bin/sh -c \"$VSYMFS_S\"";
  constexpr int kExecs = 20;
  Child child(script, {"VSYMFS_S=" + script, "VSYMFS_N=" + std::to_string(kExecs), "PATH=/bin:/usr/bin"});
  CallerContexts::Options opts = patient();
  opts.image_key = GetParam();
  CallerContexts ctx(opts);
  if (ctx.image_key() != GetParam()) GTEST_SKIP() << events_unavailable();
  for (int n = kExecs; n >= 0; --n) {
    ASSERT_TRUE(child.wait_ready()) << "the child stopped at VSYMFS_N=" << n;
    auto c = ctx.full(child.pid(), ::geteuid(), ::getegid());
    ASSERT_TRUE(c->environ_known);
    EXPECT_TRUE(has(c->environ, "VSYMFS_N=" + std::to_string(n))) << "a lookup after exec " << kExecs - n;
    child.go_on();
  }
  EXPECT_EQ(ctx.stats().misses, static_cast<std::uint64_t>(kExecs + 1));
}

TEST_P(ImageKeyTest, ForkedChildrenAreTheirOwnEntries) {
  Child a(kWaitScript, {"VSYMFS_WHO=a"});
  Child b(kWaitScript, {"VSYMFS_WHO=b"});
  ASSERT_TRUE(a.wait_ready() && b.wait_ready());
  CallerContexts::Options opts = patient();
  opts.image_key = GetParam();
  CallerContexts ctx(opts);
  if (ctx.image_key() != GetParam()) GTEST_SKIP() << events_unavailable();
  auto is_a = [](const Caller& c) { EXPECT_TRUE(has(c.environ, "VSYMFS_WHO=a")); };
  auto is_b = [](const Caller& c) { EXPECT_TRUE(has(c.environ, "VSYMFS_WHO=b")); };
  is_a(*ctx.full(a.pid(), ::geteuid(), ::getegid()));
  is_b(*ctx.full(b.pid(), ::geteuid(), ::getegid()));
  EXPECT_EQ(ctx.stats().misses, 2u);
  // Once each is cached (see full_until_cached), neither evicts the other.
  ASSERT_NE(full_until_cached(ctx, a.pid(), nullptr, is_a).hit, nullptr);
  ASSERT_NE(full_until_cached(ctx, b.pid(), nullptr, is_b).hit, nullptr);
  const auto settled = ctx.stats();
  for (int round = 0; round < 3; ++round) {
    is_a(*ctx.full(a.pid(), ::geteuid(), ::getegid()));
    is_b(*ctx.full(b.pid(), ::geteuid(), ::getegid()));
  }
  EXPECT_EQ(ctx.stats().misses, settled.misses);
  EXPECT_EQ(ctx.stats().hits, settled.hits + 6);
}

INSTANTIATE_TEST_SUITE_P(Keys, ImageKeyTest,
                         ::testing::Values(CallerContexts::Options::ImageKey::Events,
                                           CallerContexts::Options::ImageKey::Auxv,
                                           CallerContexts::Options::ImageKey::Stat),
                         [](const auto& param_info) {
                           switch (param_info.param) {
                             case CallerContexts::Options::ImageKey::Events: return "Events";
                             case CallerContexts::Options::ImageKey::Auxv: return "Auxv";
                             default: return "Stat";
                           }
                         });

TEST(CallerContexts, AutoPrefersKernelEventsAsRoot) {
  CallerContexts ctx;
  if (::geteuid() != 0) {
    EXPECT_NE(ctx.image_key(), CallerContexts::Options::ImageKey::Events);
    GTEST_SKIP() << "the events connector needs root";
  }
  EXPECT_EQ(ctx.image_key(), CallerContexts::Options::ImageKey::Events) << events_unavailable();
}

// Waits (30 s at most) until `listener` reports that `pid` is gone: once our
// own listener, subscribed first, has an event, the socket of the
// CallerContexts made after it has it too.
::testing::AssertionResult wait_for_exit(ProcEvents& listener, pid_t pid) {
  bool exited = false;
  const auto deadline = std::chrono::steady_clock::now() + 30s;
  while (!exited && std::chrono::steady_clock::now() < deadline) {
    pollfd p{listener.fd(), POLLIN, 0};
    ::poll(&p, 1, 100);
    if (!listener.drain([&](pid_t gone) { exited = exited || gone == pid; }))
      return ::testing::AssertionFailure() << "events were lost";
  }
  if (!exited) return ::testing::AssertionFailure() << "no exit event for the child within 30 s";
  return ::testing::AssertionSuccess();
}

// A CallerContexts that learns of exec and exit from the kernel's events
// (an hour's identity TTL: only an event drops what it keeps), and our own
// listener, subscribed before the one inside it: the kernel hands each
// event to the most recently subscribed socket first, so once ours has a
// child's exit, the context's socket has it too. (The exit is reported
// after the parent's waitpid can return: reaping the child does not mean
// the event is queued.) `skip` says why there is none, when there is none.
struct WithEvents {
  std::unique_ptr<ProcEvents> listener;
  std::unique_ptr<CallerContexts> ctx;
  std::string skip;

  WithEvents() {
    auto l = ProcEvents::open(10s);
    if (!l) {
      skip = l.error().message;
      return;
    }
    listener = std::move(*l);
    CallerContexts::Options opts = patient();
    opts.image_key = CallerContexts::Options::ImageKey::Events;
    ctx = std::make_unique<CallerContexts>(opts);
    if (ctx->image_key() != CallerContexts::Options::ImageKey::Events) skip = events_unavailable();
  }
};

TEST(CallerContexts, WithEventsAnExitedPidIsForgotten) {
  WithEvents ev;
  if (!ev.skip.empty()) GTEST_SKIP() << ev.skip;
  CallerContexts& ctx = *ev.ctx;
  ProcEvents& listener = *ev.listener;
  pid_t pid;
  {
    Child child(kWaitScript, {"VSYMFS_A=1"});
    ASSERT_TRUE(child.wait_ready());
    pid = child.pid();
    ASSERT_TRUE(has(ctx.full(pid, ::geteuid(), ::getegid())->environ, "VSYMFS_A=1"));
    // Its fork and exec were reported before it said it was ready.
    ASSERT_TRUE(listener.drain([](pid_t) {}));
  }  // killed and reaped
  ASSERT_TRUE(wait_for_exit(listener, pid));
  // The pid is dead; nothing from its old image may come back.
  auto c = ctx.full(pid, ::geteuid(), ::getegid());
  EXPECT_FALSE(c->environ_known);
  EXPECT_EQ(ctx.stats().misses, 2u);
}

// identity() answers a caller's requests in a row from the thread's own
// copy (per_thread.hpp). That copy must not outlive what an exit event
// drops: once the event is applied, the dead process's groups are gone
// for the thread that cached them too, however long the TTL.
TEST(CallerContexts, WithEventsAnExitedPidsGroupsAreForgottenByEveryThread) {
  if (!is_root()) GTEST_SKIP() << "needs root to give a child other groups and ids";
  WithEvents ev;
  if (!ev.skip.empty()) GTEST_SKIP() << ev.skip;
  CallerContexts& ctx = *ev.ctx;
  ProcEvents& listener = *ev.listener;
  // Our own context, cached first, so that the full() below reads nothing.
  auto mine = ctx.full(::getpid(), ::geteuid(), ::getegid());
  ASSERT_NE(full_until_cached(ctx, ::getpid(), mine, [](const Caller&) {}).hit, nullptr);
  const uid_t uid = 65534;
  const gid_t gid = 65534;
  pid_t pid;
  {
    Child child(kWaitScript, {"PATH=/bin:/usr/bin"}, [&] {
      gid_t groups[] = {1234, 5678};
      if (::setgroups(2, groups) != 0 || ::setresgid(gid, gid, gid) != 0 || ::setresuid(uid, uid, uid) != 0)
        ::_exit(99);
    });
    ASSERT_TRUE(child.wait_ready());
    pid = child.pid();
    EXPECT_EQ(ctx.identity(pid, uid, gid)->groups, (std::vector<gid_t>{1234, 5678}));
    EXPECT_EQ(ctx.identity(pid, uid, gid)->groups, (std::vector<gid_t>{1234, 5678}));  // the thread's copy
    // named() (for ${USER} links) keeps copies of its own, under the same
    // rule. Any process's exec or exit in the child's shard, applied by the
    // events thread between the two calls, voids the copy (CI saw that
    // once, with the suites forking beside it): a round so voided is tried
    // again.
    bool from_copy = false;
    for (int round = 0; round < 10 && !from_copy; ++round) {
      const auto named_hits = ctx.stats().identity_front_hits;
      EXPECT_EQ(ctx.named(pid, uid, gid)->groups, (std::vector<gid_t>{1234, 5678}));
      EXPECT_EQ(ctx.named(pid, uid, gid)->groups, (std::vector<gid_t>{1234, 5678}));
      from_copy = ctx.stats().identity_front_hits == named_hits + 1;
    }
    EXPECT_TRUE(from_copy) << "in 10 rounds, the second named() never came from the thread's copy";
    ASSERT_TRUE(listener.drain([](pid_t) {}));
  }  // killed and reaped
  ASSERT_TRUE(wait_for_exit(listener, pid));
  // full() applies the queued events first (identity() leaves that to the
  // events thread, which may not have run yet). Asked for ourselves, whose
  // context is cached, it re-reads no identity: only the exit event can
  // have dropped the child's.
  (void)ctx.full(::getpid(), ::geteuid(), ::getegid());
  // Gone: nothing but the request's ids is trusted, not the groups it had.
  EXPECT_EQ(ctx.identity(pid, uid, gid)->groups, std::vector<gid_t>{gid});
  EXPECT_EQ(ctx.named(pid, uid, gid)->groups, std::vector<gid_t>{gid});
}

// The front's epoch is per shard of pids (16 shards): a busy machine's
// exec and exit events (make -j) void the thread copies of the pids in
// their shard only. Ours stays a front hit while a child in another shard
// exits. Other processes on the machine may have events in our shard at
// any time, so a round that sees our copy voided is tried again (with one
// epoch for all shards, as before, every round is voided by the child).
TEST(CallerContexts, WithEventsAnotherShardsExitLeavesTheThreadsCopy) {
  WithEvents ev;
  if (!ev.skip.empty()) GTEST_SKIP() << ev.skip;
  CallerContexts& ctx = *ev.ctx;
  ProcEvents& listener = *ev.listener;
  const pid_t self = ::getpid();
  const uid_t uid = ::geteuid();
  const gid_t gid = ::getegid();
  // Our full context cached, so that full(), which applies the queued
  // events, reads (and replaces) nothing of ours.
  ASSERT_NE(full_until_cached(ctx, self, ctx.full(self, uid, gid), [](const Caller&) {}).hit, nullptr);
  int kept = 0, rounds = 0;
  for (; rounds < 10 && kept == 0; ++rounds) {
    // exec: the shell becomes sleep, so that no other pid comes and goes.
    std::optional<Child> child(std::in_place, "echo >&3; exec sleep 30", std::vector<std::string>{});
    ASSERT_TRUE(child->wait_ready());
    const pid_t pid = child->pid();
    const bool other_shard = pid % 16 != self % 16;
    ASSERT_TRUE(listener.drain([](pid_t) {}));
    (void)ctx.full(self, uid, gid);
    (void)ctx.identity(self, uid, gid);
    const auto before = ctx.stats().identity_front_hits;
    (void)ctx.identity(self, uid, gid);
    const bool primed = ctx.stats().identity_front_hits == before + 1;
    child.reset();  // killed and reaped
    ASSERT_TRUE(wait_for_exit(listener, pid));
    (void)ctx.full(self, uid, gid);  // the child's exit applied
    (void)ctx.identity(self, uid, gid);
    if (other_shard && primed && ctx.stats().identity_front_hits == before + 2) kept = 1;
  }
  EXPECT_EQ(kept, 1) << "in " << rounds << " rounds, a child's exit always voided our thread's copy";
}

// With events, full() answers a caller's requests in a row from the
// thread's own copy (ThreadFront) until an event for its pid comes in.
TEST(CallerContexts, WithEventsAFullContextIsTheThreadsCopyUntilItsProcessExits) {
  WithEvents ev;
  if (!ev.skip.empty()) GTEST_SKIP() << ev.skip;
  CallerContexts& ctx = *ev.ctx;
  ProcEvents& listener = *ev.listener;
  pid_t pid;
  {
    Child child(kWaitScript, {"VSYMFS_A=1"});
    ASSERT_TRUE(child.wait_ready());
    pid = child.pid();
    auto cached = full_until_cached(ctx, pid, ctx.full(pid, ::geteuid(), ::getegid()), [](const Caller& c) {
      EXPECT_TRUE(has(c.environ, "VSYMFS_A=1"));
    });
    ASSERT_NE(cached.hit, nullptr);
    const auto before = ctx.stats();
    auto again = ctx.full(pid, ::geteuid(), ::getegid());
    EXPECT_EQ(again, cached.hit);  // the same snapshot
    EXPECT_EQ(ctx.stats().full_front_hits, before.full_front_hits + 1);
    EXPECT_EQ(ctx.stats().hits, before.hits + 1);
    EXPECT_EQ(ctx.stats().misses, before.misses);
    ASSERT_TRUE(listener.drain([](pid_t) {}));
  }  // killed and reaped
  ASSERT_TRUE(wait_for_exit(listener, pid));
  const auto front_hits = ctx.stats().full_front_hits;
  auto c = ctx.full(pid, ::geteuid(), ::getegid());
  EXPECT_FALSE(c->environ_known) << "the dead process's environment came back";
  EXPECT_EQ(ctx.stats().full_front_hits, front_hits);
}

// A thread's copy does not keep a process's entry from the environment
// cache's clock: once the clock moved (entries evicted under the byte
// limit, or marked unused), the next request reaches the cache again and
// an evicted process is read again, as without the copy.
TEST(CallerContexts, WithEventsTheEvictionClockVoidsTheThreadsCopies) {
  constexpr std::size_t kLimit = 100 * 1024;
  CallerContexts::Options opts = patient();
  opts.image_key = CallerContexts::Options::ImageKey::Events;
  opts.max_environ_bytes = kLimit;
  CallerContexts ctx(opts);
  if (ctx.image_key() != CallerContexts::Options::ImageKey::Events) GTEST_SKIP() << events_unavailable();
  // Every child is ready once its shell waits in a builtin: no fork, exec
  // or exit of ours comes after, so no event voids the copies below (the
  // clock must do it).
  constexpr const char* kIdle = "echo >&3; read x <&4";
  const std::string pad = "PAD=" + std::string(16 * 1024, 'p');
  Child first(kIdle, {"VSYMFS_N=first", pad});
  ASSERT_TRUE(first.wait_ready());
  std::vector<std::unique_ptr<Child>> others;  // three times the limit
  for (int i = 0; i < 20; ++i) {
    others.push_back(std::make_unique<Child>(kIdle, std::vector<std::string>{"VSYMFS_N=" + std::to_string(i), pad}));
    ASSERT_TRUE(others.back()->wait_ready());
    // Read once now: a first read of an image re-reads its identity, which
    // voids the copies of its pid's shard (maybe first's) as an event does.
    ASSERT_TRUE(ctx.full(others.back()->pid(), ::geteuid(), ::getegid())->environ_known);
  }
  auto cached = full_until_cached(ctx, first.pid(), ctx.full(first.pid(), ::geteuid(), ::getegid()), [](const Caller&) {});
  ASSERT_NE(cached.hit, nullptr);
  const auto hits = ctx.stats().full_front_hits;
  (void)ctx.full(first.pid(), ::geteuid(), ::getegid());
  ASSERT_EQ(ctx.stats().full_front_hits, hits + 1);
  // The others read again (most were evicted) and kept: the clock goes round.
  const auto evictions = ctx.stats().evictions;
  for (const auto& c : others) ASSERT_TRUE(ctx.full(c->pid(), ::geteuid(), ::getegid())->environ_known);
  ASSERT_GT(ctx.stats().evictions, evictions);
  const auto before = ctx.stats();
  auto c = ctx.full(first.pid(), ::geteuid(), ::getegid());
  EXPECT_TRUE(has(c->environ, "VSYMFS_N=first"));
  EXPECT_EQ(ctx.stats().full_front_hits, before.full_front_hits) << "served from the copy after the clock moved";
}

TEST(CallerContexts, RealAndEffectiveIdsDifferingIsSecureMode) {
  if (!is_root()) GTEST_SKIP() << "needs root to split real and effective ids";
  Child child("", {}, [] {
    // real uid nobody, effective root: what a setuid-root program runs as.
    // No exec: a shell would drop the effective uid to the real one.
    if (::setresuid(65534, 0, 0) != 0) ::_exit(99);
    if (::write(3, "r", 1) != 1) ::_exit(98);
    ::sleep(30);
    ::_exit(0);
  });
  ASSERT_TRUE(child.wait_ready());
  CallerContexts ctx(patient());
  auto c = ctx.full(child.pid(), 0, ::getegid());
  EXPECT_EQ(c->ruid, 65534u);
  EXPECT_TRUE(c->secure);
}

TEST(CallerContexts, Linux32PersonalityIsCompat32) {
  Child child(kWaitScript, {}, [] {
    if (::personality(PER_LINUX32) == -1) ::_exit(99);
  });
  ASSERT_TRUE(child.wait_ready());
  CallerContexts ctx(patient());
  auto c = ctx.full(child.pid(), ::geteuid(), ::getegid());
  EXPECT_TRUE(c->compat32);
  EXPECT_FALSE(c->secure);
}

TEST(CallerContexts, ThirtyTwoBitExecutableIsCompat32) {
  if (const auto probe = test::probe_exec32(); !probe) GTEST_SKIP() << probe.reason;
  const std::string helper = test::helper32_path();
  // The helper writes its ready byte to stdout: point stdout at fd 3.
  Child child("", {"VSYMFS_A=32"}, [] { ::dup2(3, 1); }, {helper, "wait"});
  ASSERT_TRUE(child.wait_ready());
  CallerContexts ctx(patient());
  auto c = ctx.full(child.pid(), ::geteuid(), ::getegid());
  EXPECT_TRUE(c->compat32);
  EXPECT_FALSE(c->secure);  // auxv read in 4-byte words: AT_SECURE found and 0
  EXPECT_TRUE(has(c->environ, "VSYMFS_A=32"));
}

TEST(CallerContexts, AGoneProcessHasNoEnvironment) {
  pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) ::_exit(0);
  ::waitpid(pid, nullptr, 0);
  CallerContexts ctx(patient());
  auto c = ctx.full(pid, 1000, 1000);
  EXPECT_FALSE(c->environ_known);
  EXPECT_FALSE(c->environ_late);  // gone for good: the lower scopes are the answer
  EXPECT_EQ(c->groups, std::vector<gid_t>{1000});
}

TEST(CallerContexts, BusyHelpersMeanNoEnvironmentNotAWait) {
  Child child(kWaitScript, {"VSYMFS_A=1"});
  ASSERT_TRUE(child.wait_ready());
  CallerContexts::Options opts;
  opts.max_queued = 0;  // every read is refused, as when all helpers are stuck
  CallerContexts ctx(opts);
  std::atomic<std::uint64_t> external{0};
  ctx.set_timeout_counter(&external);
  auto c = ctx.full(child.pid(), ::geteuid(), ::getegid());
  EXPECT_FALSE(c->environ_known);
  EXPECT_TRUE(c->environ_late);  // unknown for now, not absent
  EXPECT_TRUE(c->environ.empty());
  EXPECT_EQ(ctx.stats().timeouts, 1u);
  EXPECT_EQ(external.load(), 1u);
  // Not cached: the next request tries again (and is refused again).
  ctx.full(child.pid(), ::geteuid(), ::getegid());
  EXPECT_EQ(ctx.stats().timeouts, 2u);
}

TEST(CallerContexts, CacheStaysBounded) {
  CallerContexts::Options opts;
  opts.max_entries = 32;
  CallerContexts ctx(opts);
  // Pids far above pid_max: nothing to read, but each is a cache entry.
  for (pid_t pid = 10'000'000; pid < 10'000'000 + 1000; ++pid) ctx.identity(pid, 1, 1);
  EXPECT_LE(ctx.stats().entries, 32u);
  EXPECT_GT(ctx.stats().entries, 0u);
}

TEST(CallerContexts, ConcurrentCallersAgree) {
  Child child(kWaitScript, {"VSYMFS_A=1"});
  ASSERT_TRUE(child.wait_ready());
  CallerContexts ctx(patient());
  std::atomic<int> wrong{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 300; ++i) {
        auto c = ctx.full(child.pid(), ::geteuid(), ::getegid());
        if (!c->environ_known || !has(c->environ, "VSYMFS_A=1")) ++wrong;
        auto id = ctx.identity(10'000'000 + t * 1000 + i, 1, 1);
        if (id->groups != std::vector<gid_t>{1}) ++wrong;
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(wrong.load(), 0);
}

// ---------------------------------------------------------------------------
// Issue 18, finding 6: the environment is kept per process, only what the
// rules can take, within a byte limit.

pid_t this_thread() { return static_cast<pid_t>(::syscall(SYS_gettid)); }

// Every thread of one process gets the same context from one read, and the
// kept bytes do not grow with the number of threads.
TEST(CallerContexts, ThreadsOfOneProcessShareOneEnvironment) {
  CallerContexts ctx;
  const auto first = ctx.full(::getpid(), ::geteuid(), ::getegid());
  ASSERT_TRUE(first->environ_known);
  const auto after_first = ctx.stats();
  EXPECT_EQ(after_first.misses, 1u);
  EXPECT_EQ(after_first.processes, 1u);
  EXPECT_GT(after_first.environ_bytes, 0u);

  constexpr int kThreads = 32;
  std::vector<std::shared_ptr<const Caller>> got(kThreads);
  std::vector<pid_t> tids(kThreads);
  std::latch all_done(kThreads);
  std::vector<std::thread> threads;
  for (int i = 0; i < kThreads; ++i) {
    threads.emplace_back([&, i] {
      tids[static_cast<std::size_t>(i)] = this_thread();
      got[static_cast<std::size_t>(i)] = ctx.full(this_thread(), ::geteuid(), ::getegid());
      all_done.arrive_and_wait();  // alive together: every thread id is distinct
    });
  }
  for (auto& t : threads) t.join();
  for (int i = 0; i < kThreads; ++i) {
    EXPECT_NE(tids[static_cast<std::size_t>(i)], ::getpid());
    EXPECT_EQ(got[static_cast<std::size_t>(i)], first) << "thread " << i << " has a context of its own";
  }
  const auto s = ctx.stats();
  EXPECT_EQ(s.misses, 1u) << "a thread read the environment again";
  EXPECT_EQ(s.processes, 1u);
  EXPECT_EQ(s.environ_bytes, after_first.environ_bytes);
}

// A thread acting as another user (setfsuid, as file servers do) gets a
// context of its own, with the same environment and no second read.
TEST(CallerContexts, AnotherIdentityInTheSameProcessReusesTheRead) {
  if (!is_root()) GTEST_SKIP() << "needs root to switch a thread's filesystem ids";
  CallerContexts ctx;
  const auto root = ctx.full(::getpid(), 0, 0);
  ASSERT_TRUE(root->environ_known);
  std::shared_ptr<const Caller> other;
  std::thread t([&] {
    ::syscall(SYS_setfsgid, 65534);
    ::syscall(SYS_setfsuid, 65534);
    other = ctx.full(this_thread(), 65534, 65534);
    ::syscall(SYS_setfsuid, 0);
    ::syscall(SYS_setfsgid, 0);
  });
  t.join();
  ASSERT_TRUE(other);
  EXPECT_NE(other, root);
  EXPECT_EQ(other->uid, 65534u);
  EXPECT_EQ(other->environ, root->environ);
  EXPECT_EQ(ctx.stats().misses, 1u);
  EXPECT_EQ(ctx.stats().processes, 1u);
}

TEST(CallerContexts, EnvironmentsStayWithinTheByteLimit) {
  constexpr std::size_t kLimit = 100 * 1024;
  CallerContexts::Options opts;
  opts.max_environ_bytes = kLimit;
  CallerContexts ctx(opts);
  constexpr int kChildren = 20;  // 20 x 16 KiB: three times the limit
  std::vector<std::unique_ptr<Child>> children;
  for (int i = 0; i < kChildren; ++i) {
    children.push_back(std::make_unique<Child>(
        kWaitScript, std::vector<std::string>{"VSYMFS_N=" + std::to_string(i), "PAD=" + std::string(16 * 1024, 'p')}));
    ASSERT_TRUE(children.back()->wait_ready());
    const auto c = ctx.full(children.back()->pid(), ::geteuid(), ::getegid());
    ASSERT_TRUE(c->environ_known);
    EXPECT_TRUE(has(c->environ, "VSYMFS_N=" + std::to_string(i)));
    const auto s = ctx.stats();
    EXPECT_LE(s.environ_bytes, kLimit) << "after child " << i;
    EXPECT_EQ(s.environ_bytes_limit, kLimit);
  }
  const auto s = ctx.stats();
  EXPECT_GT(s.evictions, 0u);
  EXPECT_LT(s.processes, static_cast<std::size_t>(kChildren));
  EXPECT_GE(s.processes, 3u) << "room for several was left unused";
  // An evicted process is read again, and right.
  const std::uint64_t misses = s.misses;
  for (int i = 0; i < kChildren; ++i) {
    const auto c = ctx.full(children[static_cast<std::size_t>(i)]->pid(), ::geteuid(), ::getegid());
    EXPECT_TRUE(has(c->environ, "VSYMFS_N=" + std::to_string(i))) << "child " << i;
    EXPECT_LE(ctx.stats().environ_bytes, kLimit);
  }
  EXPECT_GT(ctx.stats().misses, misses);
}

TEST(CallerContexts, AnEnvironmentLargerThanTheLimitIsUsedButNotKept) {
  for (const std::size_t limit : {std::size_t{0}, std::size_t{4096}}) {
    CallerContexts::Options opts;
    opts.max_environ_bytes = limit;
    CallerContexts ctx(opts);
    Child child(kWaitScript, {"VSYMFS_A=1", "PAD=" + std::string(8 * 1024, 'p')});
    ASSERT_TRUE(child.wait_ready());
    for (int round = 0; round < 2; ++round) {
      const auto c = ctx.full(child.pid(), ::geteuid(), ::getegid());
      EXPECT_TRUE(has(c->environ, "VSYMFS_A=1")) << "limit " << limit;
    }
    const auto s = ctx.stats();
    EXPECT_EQ(s.processes, 0u) << "limit " << limit;
    EXPECT_EQ(s.environ_bytes, 0u) << "limit " << limit;
    EXPECT_EQ(s.misses, 2u) << "limit " << limit;
  }
}

TEST(CallerContexts, WithEventsAnExitedProcessGivesItsBytesBack) {
  CallerContexts::Options opts;
  opts.image_key = CallerContexts::Options::ImageKey::Events;
  CallerContexts ctx(opts);
  if (ctx.image_key() != CallerContexts::Options::ImageKey::Events) GTEST_SKIP() << "needs root";
  pid_t pid;
  {
    Child child(kWaitScript, {"VSYMFS_A=1", "PAD=" + std::string(8 * 1024, 'p')});
    ASSERT_TRUE(child.wait_ready());
    pid = child.pid();
    ASSERT_TRUE(has(ctx.full(pid, ::geteuid(), ::getegid())->environ, "VSYMFS_A=1"));
    EXPECT_GT(ctx.stats().environ_bytes, 8u * 1024);
  }  // killed and reaped: its exit event drops the entry
  ctx.full(pid, ::geteuid(), ::getegid());  // applies the queued events first
  const auto s = ctx.stats();
  EXPECT_LT(s.environ_bytes, 4096u) << "the dead process's environment is still counted";
}

// Only what the rules can take is kept: allowed and not denied, never an
// identity builtin, plus the universe variable; each name once. A reload
// that changes those lists makes the next lookup read again.
TEST(CallerContexts, OnlyVariablesTheRulesCanTakeAreKept) {
  const vsymfs::test::TempDir dir("vsymfs-cc");
  const std::string rules = dir.path() + "/rules.toml";
  auto write_rules = [&](const std::string& process, const std::string& vars) {
    std::ofstream(rules + ".new") << "[process]\n" << process << "\n[universe]\nnames = [\"att\", \"ucb\"]\nenv = \"UNI\"\n"
                                  << "[vars]\n" << vars << "\n";
    std::filesystem::rename(rules + ".new", rules);
  };
  write_rules("allow = [\"VSYMFS_*\"]\ndeny = [\"VSYMFS_SECRET*\"]", "");
  MountState::Config cfg;
  cfg.rules_path = rules;
  cfg.rules_path_explicit = true;
  auto state = MountState::create(cfg);
  ASSERT_TRUE(state) << state.error().message;

  Child child(kWaitScript, {"VSYMFS_A=1", "OTHER=2", "VSYMFS_SECRET_KEY=s", "USER=mallory", "UNI=ucb",
                            "VSYMFS_A=second", "PAD=" + std::string(8 * 1024, 'p')});
  ASSERT_TRUE(child.wait_ready());
  CallerContexts ctx;
  ctx.follow_rules(**state);
  auto c = ctx.full(child.pid(), ::geteuid(), ::getegid());
  ASSERT_TRUE(c->environ_known);
  EXPECT_EQ(c->environ, (std::vector<std::string>{"VSYMFS_A=1", "UNI=ucb"}));
  EXPECT_LT(ctx.stats().environ_bytes, 4096u) << "the 8 KiB PAD is not allowed and must not be kept";

  // A reload that leaves the lists alone keeps what was read.
  write_rules("allow = [\"VSYMFS_*\"]\ndeny = [\"VSYMFS_SECRET*\"]", "X = \"1\"");
  ASSERT_TRUE((*state)->reload());
  c = ctx.full(child.pid(), ::geteuid(), ::getegid());
  EXPECT_EQ(ctx.stats().misses, 1u);

  // One that allows more: read again, and the newly allowed names are there.
  write_rules("allow = [\"*\"]\ndeny = []", "");
  ASSERT_TRUE((*state)->reload());
  c = ctx.full(child.pid(), ::geteuid(), ::getegid());
  EXPECT_EQ(ctx.stats().misses, 2u);
  EXPECT_TRUE(has(c->environ, "OTHER=2"));
  EXPECT_TRUE(has(c->environ, "VSYMFS_SECRET_KEY=s"));
  EXPECT_TRUE(has(c->environ, "VSYMFS_A=1"));
  EXPECT_FALSE(has(c->environ, "VSYMFS_A=second"));
  EXPECT_FALSE(has(c->environ, "USER=mallory"));  // never taken from an environment
  EXPECT_GT(ctx.stats().environ_bytes, 8u * 1024);
}

// Issue 18, finding 4: a program with privileges its user lacks is secure
// even when its real and effective ids agree, for the contexts that read
// only the status (templates with identity builtins alone).
TEST(CallerContexts, StatusShowsCapabilitiesAndSavedIdsAsSecure) {
  if (!is_root()) GTEST_SKIP() << "needs root to give a child capabilities and split ids";
  struct Case {
    const char* name;
    std::function<void()> become;
    bool secure;
  };
  const std::vector<Case> cases = {
      {"capabilities kept after setresuid",
       [] {
         if (::prctl(PR_SET_KEEPCAPS, 1) != 0 || ::setresgid(65534, 65534, 65534) != 0 ||
             ::setresuid(65534, 65534, 65534) != 0)
           ::_exit(99);
       },
       true},
      {"saved uid root", [] { if (::setresgid(65534, 65534, 65534) != 0 || ::setresuid(65534, 65534, 0) != 0) ::_exit(99); }, true},
      {"saved gid differs", [] { if (::setresgid(65534, 65534, 0) != 0 || ::setresuid(65534, 65534, 65534) != 0) ::_exit(99); }, true},
      {"an ordinary user", [] { if (::setresgid(65534, 65534, 65534) != 0 || ::setresuid(65534, 65534, 65534) != 0) ::_exit(99); }, false},
  };
  for (const Case& c : cases) {
    Child child("", {}, [&] {
      ::setgroups(0, nullptr);
      c.become();
      // No exec: it would recompute the capabilities and ids.
      if (::write(3, "r", 1) != 1) ::_exit(98);
      ::sleep(30);
      ::_exit(0);
    });
    ASSERT_TRUE(child.wait_ready()) << c.name;
    CallerContexts ctx;
    EXPECT_EQ(ctx.named(child.pid(), 65534, 65534)->secure, c.secure) << c.name;
    EXPECT_EQ(ctx.full(child.pid(), 65534, 65534)->secure, c.secure) << c.name;
  }
}

}  // namespace
}  // namespace vsymfs::daemon
