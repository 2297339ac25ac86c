// TraceHub and LinkService's tracing, without FUSE: who gets which
// expansion, that a reader that never reads only loses events, and that
// nothing is traced (or paid) when nobody subscribes.
#include "daemon/trace_hub.hpp"

#include <fcntl.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "common/temp_dir.hpp"
#include "daemon/link_service.hpp"

namespace vsymfs::daemon {
namespace {

std::vector<std::shared_ptr<const TraceEvent>> drain(TraceHub::Subscription& s, std::uint64_t* dropped = nullptr) {
  std::vector<std::shared_ptr<const TraceEvent>> out;
  std::uint64_t d = 0;
  s->take(out, 1'000'000, d);
  if (dropped != nullptr) *dropped = d;
  return out;
}

TraceEvent event(pid_t pid, uid_t uid, std::string path) {
  TraceEvent e;
  e.pid = pid;
  e.uid = uid;
  e.path = std::move(path);
  e.raw = "r";
  return e;
}

TEST(TraceHub, EachSubscriberGetsWhatItsFilterTakes) {
  TraceHub hub;
  EXPECT_FALSE(hub.active());
  TraceFilter alice_only;
  alice_only.viewer_only = 1000;
  TraceFilter under_bin;
  under_bin.prefix = "bin";
  auto all = hub.subscribe({});
  auto alice = hub.subscribe(alice_only);
  auto bin = hub.subscribe(under_bin);
  EXPECT_TRUE(hub.active());
  {
    TraceHub narrow;
    auto a2 = narrow.subscribe(alice_only);
    auto b2 = narrow.subscribe(under_bin);
    EXPECT_TRUE(narrow.wants_caller(1, 1001)) << "under_bin takes every caller";
    EXPECT_FALSE(narrow.wants(1, 1001, "etc"));
    EXPECT_TRUE(narrow.wants(1, 1000, "etc"));
    EXPECT_TRUE(narrow.wants(1, 1001, "bin/x"));
  }
  EXPECT_TRUE(hub.wants_caller(1, 1001));
  EXPECT_TRUE(hub.wants(1, 1001, "etc"));
  hub.publish(event(1, 1000, "bin/sh"));
  hub.publish(event(2, 1001, "etc/x"));
  hub.publish(event(3, 0, "bin"));
  EXPECT_EQ(drain(all).size(), 3u);
  const auto a = drain(alice);
  ASSERT_EQ(a.size(), 1u);
  EXPECT_EQ(a[0]->uid, 1000u);
  const auto b = drain(bin);
  ASSERT_EQ(b.size(), 2u);
  EXPECT_EQ(b[0]->path, "bin/sh");
  EXPECT_EQ(b[1]->path, "bin");
  EXPECT_EQ(hub.stats().events, 3u);
}

TEST(TraceHub, ASubscriptionEndsWhenItsHandleGoes) {
  TraceHub hub;
  {
    auto s = hub.subscribe({});
    EXPECT_TRUE(hub.active());
    auto moved = std::move(s);
    EXPECT_TRUE(hub.active());
    EXPECT_EQ(hub.stats().subscribers, 1u);
  }
  EXPECT_FALSE(hub.active());
  EXPECT_EQ(hub.stats().subscribers, 0u);
  hub.publish(event(1, 1, "x"));  // nobody: nothing kept, nothing counted
  EXPECT_EQ(hub.stats().events, 0u);
}

TEST(TraceHub, AReaderThatNeverReadsLosesEventsCountedAndBlocksNoOne) {
  TraceHub hub;
  auto slow = hub.subscribe({});
  auto fast = hub.subscribe({});
  const std::size_t n = kTraceQueueEvents * 3;
  std::size_t fast_got = 0;
  for (std::size_t i = 0; i < n; ++i) {
    hub.publish(event(1, 1, "x"));
    fast_got += drain(fast).size();
  }
  EXPECT_EQ(fast_got, n) << "a reader that keeps up loses nothing";
  std::uint64_t dropped = 0;
  const auto kept = drain(slow, &dropped);
  EXPECT_LE(kept.size(), kTraceQueueEvents);
  EXPECT_GT(kept.size(), 0u);
  EXPECT_EQ(kept.size() + dropped, n);
  EXPECT_EQ(hub.stats().dropped, dropped);
  slow.reset();
  EXPECT_EQ(hub.stats().dropped, dropped) << "an ended trace's drops stay counted";
}

TEST(TraceHub, WakesItsReaderOncePerBatch) {
  TraceHub hub;
  const int fd = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  ASSERT_GE(fd, 0);
  hub.set_wake_fd(fd);
  auto s = hub.subscribe({});
  for (int i = 0; i < 10; ++i) hub.publish(event(1, 1, "x"));
  std::uint64_t count = 0;
  ASSERT_EQ(::read(fd, &count, sizeof count), static_cast<ssize_t>(sizeof count));
  EXPECT_EQ(count, 1u) << "one wakeup until the reader has taken everything";
  EXPECT_EQ(drain(s).size(), 10u);
  hub.publish(event(1, 1, "x"));
  ASSERT_EQ(::read(fd, &count, sizeof count), static_cast<ssize_t>(sizeof count));
  EXPECT_EQ(count, 1u);
  hub.set_wake_fd(-1);
  ::close(fd);
}

class LinkServiceTrace : public ::testing::Test {
 protected:
  void SetUp() override {
    std::filesystem::create_directories(root_ + "/src/dir");
    std::filesystem::create_directories(root_ + "/mnt");
    std::ofstream(root_ + "/rules.toml") << "[syntax]\nundefined = \"error\"\n[vars]\nWHERE = \"d1\"\n";
    MountState::Config cfg;
    cfg.source = root_ + "/src";
    cfg.mountpoint = root_ + "/mnt";
    cfg.rules_path = root_ + "/rules.toml";
    cfg.rules_path_explicit = true;
    auto st = MountState::create(cfg);
    ASSERT_TRUE(st) << st.error().message;
    state_ = std::move(*st);
    contexts_ = std::make_unique<CallerContexts>();
    links_ = std::make_unique<LinkService>(*state_, *contexts_);
    dir_ = ::open((root_ + "/src/dir").c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC);
  }
  void TearDown() override {
    if (dir_ >= 0) ::close(dir_);
    links_.reset();
    contexts_.reset();
    state_.reset();
  }
  Result<void> expand(std::string_view raw, RequestIds ids, std::string& out) {
    return links_->expand(raw, dir_, ids, out);
  }

  const vsymfs::test::TempDir tmp_{"vsymfs-trace-hub"};
  const std::string& root_ = tmp_.path();
  std::unique_ptr<MountState> state_;
  std::unique_ptr<CallerContexts> contexts_;
  std::unique_ptr<LinkService> links_;
  int dir_ = -1;
};

TEST_F(LinkServiceTrace, AnExpansionIsPublishedWithItsScopesAndCaller) {
  auto sub = links_->tracer().subscribe({});
  std::string out;
  ASSERT_TRUE(expand("/x/${WHERE}", {::getpid(), ::geteuid(), ::getegid()}, out));
  EXPECT_EQ(out, "/x/d1");
  ASSERT_FALSE(expand("/x/${NOPE}", {::getpid(), ::geteuid(), ::getegid()}, out)) << "undefined: an error";
  ASSERT_TRUE(expand("plain", {0, 0, 0}, out));
  const auto events = drain(sub);
  ASSERT_EQ(events.size(), 3u);
  const TraceEvent& e = *events[0];
  EXPECT_EQ(e.raw, "/x/${WHERE}");
  EXPECT_EQ(e.expansion, "/x/d1");
  EXPECT_EQ(e.pid, ::getpid());
  EXPECT_EQ(e.uid, ::geteuid());
  EXPECT_EQ(e.comm, "trace_hub_test");
  EXPECT_EQ(e.path, "") << "a bare descriptor knows no path";
  ASSERT_EQ(e.substitutions.size(), 1u);
  EXPECT_EQ(e.substitutions[0].reference, "${WHERE}");
  EXPECT_EQ(e.substitutions[0].value, "d1");
  EXPECT_EQ(e.substitutions[0].scope, Scope::System);
  EXPECT_NE(events[1]->error, 0);
  EXPECT_FALSE(events[1]->message.empty());
  EXPECT_EQ(events[2]->expansion, "plain");
  EXPECT_EQ(events[2]->comm, "") << "pid 0: no process to name";
}

TEST_F(LinkServiceTrace, NothingIsTracedWhenNobodyOrNobodyMatchingSubscribes) {
  std::string out;
  ASSERT_TRUE(expand("/x/${WHERE}", {::getpid(), 0, 0}, out));
  EXPECT_EQ(links_->tracer().stats().events, 0u);
  TraceFilter other;
  other.uid = 12345;
  auto sub = links_->tracer().subscribe(other);
  ASSERT_TRUE(expand("/x/${WHERE}", {::getpid(), 0, 0}, out));
  EXPECT_EQ(out, "/x/d1");
  EXPECT_TRUE(drain(sub).empty());
  EXPECT_EQ(links_->tracer().stats().events, 0u);
  // explain() (vsymctl explain) is no expansion for a FUSE request.
  TraceFilter any;
  auto sub2 = links_->tracer().subscribe(any);
  std::vector<Substitution> trace;
  ASSERT_TRUE(links_->explain("/x/${WHERE}", dir_, RequestIds{::getpid(), 0, 0}, out, trace));
  EXPECT_TRUE(drain(sub2).empty());
}

}  // namespace
}  // namespace vsymfs::daemon
