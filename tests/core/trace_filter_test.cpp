// The pure parts of `vsymctl trace`: which events a subscriber sees, and the
// bounded queue between the filesystem and a reader.
#include "vsymfs/trace.hpp"

#include <gtest/gtest.h>

#include <memory>
#include <string>
#include <vector>

namespace vsymfs {
namespace {

TEST(TracePath, IsNormalized) {
  EXPECT_EQ(normalize_trace_path(""), "");
  EXPECT_EQ(normalize_trace_path("."), "");
  EXPECT_EQ(normalize_trace_path("/"), "");
  EXPECT_EQ(normalize_trace_path("/a//b/./c/"), "a/b/c");
  EXPECT_EQ(normalize_trace_path("a"), "a");
}

TEST(TracePath, PrefixesAreWholeComponents) {
  EXPECT_TRUE(path_under("a/b", ""));
  EXPECT_TRUE(path_under("", ""));
  EXPECT_TRUE(path_under("a/b", "a/b"));
  EXPECT_TRUE(path_under("a/b/c", "a/b"));
  EXPECT_TRUE(path_under("a/b/c", "a"));
  EXPECT_FALSE(path_under("a/bc", "a/b"));
  EXPECT_FALSE(path_under("a", "a/b"));
  EXPECT_FALSE(path_under("", "a"));
  EXPECT_FALSE(path_under("b/a", "a"));
}

TEST(TraceFilter, EmptyFilterTakesEveryone) {
  const TraceFilter f;
  EXPECT_TRUE(f.wants(0, 0, ""));
  EXPECT_TRUE(f.wants(123, 1000, "x/y"));
}

TEST(TraceFilter, AViewerWhoMayNotSeeEveryoneSeesOnlyItsOwnUid) {
  TraceFilter f;
  f.viewer_only = 1000;
  EXPECT_TRUE(f.wants_caller(5, 1000));
  EXPECT_FALSE(f.wants_caller(5, 1001));
  EXPECT_FALSE(f.wants_caller(5, 0));
  // Asking for another uid changes nothing for such a viewer.
  f.uid = 1001;
  EXPECT_FALSE(f.wants_caller(5, 1001));
  EXPECT_FALSE(f.wants_caller(5, 1000));
}

TEST(TraceFilter, UidPidAndPrefixAllMustMatch) {
  TraceFilter f;
  f.uid = 7;
  f.pid = 42;
  f.prefix = "bin";
  EXPECT_TRUE(f.wants(42, 7, "bin/sh"));
  EXPECT_TRUE(f.wants(42, 7, "bin"));
  EXPECT_FALSE(f.wants(43, 7, "bin/sh"));
  EXPECT_FALSE(f.wants(42, 8, "bin/sh"));
  EXPECT_FALSE(f.wants(42, 7, "binx"));
  EXPECT_FALSE(f.wants(42, 7, ""));  // a link whose path is unknown is under no prefix
  TraceEvent e;
  e.pid = 42;
  e.uid = 7;
  e.path = "bin/ls";
  EXPECT_TRUE(f.wants(e));
  f.pid = 0;  // callers outside our pid namespace
  EXPECT_FALSE(f.wants(e));
  e.pid = 0;
  EXPECT_TRUE(f.wants(e));
}

std::shared_ptr<const TraceEvent> event(std::string raw) {
  auto e = std::make_shared<TraceEvent>();
  e->raw = std::move(raw);
  return e;
}

TEST(TraceQueue, KeepsOrderAndCountsWhatDoesNotFit) {
  TraceQueue q(3, 1 << 20);
  EXPECT_TRUE(q.push(event("a")));
  EXPECT_TRUE(q.push(event("b")));
  EXPECT_TRUE(q.push(event("c")));
  EXPECT_FALSE(q.push(event("d")));
  EXPECT_FALSE(q.push(event("e")));
  EXPECT_EQ(q.size(), 3u);
  EXPECT_EQ(q.dropped(), 2u);
  std::vector<std::shared_ptr<const TraceEvent>> out;
  EXPECT_EQ(q.take(out, 2), 2u);
  ASSERT_EQ(out.size(), 2u);
  EXPECT_EQ(out[0]->raw, "a");
  EXPECT_EQ(out[1]->raw, "b");
  // Room again: what comes now is kept, after what was left.
  EXPECT_TRUE(q.push(event("f")));
  out.clear();
  EXPECT_EQ(q.take(out, 10), 2u);
  EXPECT_EQ(out[0]->raw, "c");
  EXPECT_EQ(out[1]->raw, "f");
  EXPECT_EQ(q.size(), 0u);
  EXPECT_EQ(q.bytes(), 0u);
  EXPECT_EQ(q.dropped(), 2u) << "drops are counted for the queue's life";
}

TEST(TraceQueue, IsBoundedInBytesToo) {
  const std::size_t one = event(std::string(1000, 'x'))->bytes();
  TraceQueue q(1000, one * 2 + one / 2);
  EXPECT_TRUE(q.push(event(std::string(1000, 'x'))));
  EXPECT_TRUE(q.push(event(std::string(1000, 'y'))));
  EXPECT_FALSE(q.push(event(std::string(1000, 'z'))));
  EXPECT_TRUE(q.push(event("")));  // a small one still fits
  EXPECT_LE(q.bytes(), one * 2 + one / 2);
  EXPECT_EQ(q.dropped(), 1u);
}

TEST(TraceEvent, BytesCountWhatItHolds) {
  TraceEvent e;
  const std::size_t empty = e.bytes();
  e.raw = std::string(100, 'r');
  e.substitutions.push_back({"${X}", std::string(50, 'v'), Scope::System});
  EXPECT_GE(e.bytes(), empty + 100 + 4 + 50);
}

}  // namespace
}  // namespace vsymfs
