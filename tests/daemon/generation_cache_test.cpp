// GenerationCache on its own: the bound, the eviction order, what a
// generation bump does, string_view lookups, and use from several threads.
#include "daemon/generation_cache.hpp"

#include <gtest/gtest.h>

#include <atomic>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "vsymfs/var_map.hpp"

namespace vsymfs::daemon {
namespace {

using IntCache = GenerationCache<int, int>;
using StrCache = GenerationCache<std::string, int, StringHash, std::equal_to<>>;

TEST(GenerationCache, FindsWhatWasInserted) {
  CacheGeneration gen;
  IntCache c(64, gen);
  EXPECT_FALSE(c.find(1));
  ASSERT_TRUE(c.insert(1, 10, c.generation()));
  ASSERT_TRUE(c.insert(2, 20, c.generation()));
  EXPECT_EQ(c.find(1), 10);
  EXPECT_EQ(c.find(2), 20);
  ASSERT_TRUE(c.insert(1, 11, c.generation()));  // replaces
  EXPECT_EQ(c.find(1), 11);
  const auto s = c.stats();
  EXPECT_EQ(s.entries, 2u);
  EXPECT_EQ(s.hits, 3u);
  EXPECT_EQ(s.misses, 1u);
  EXPECT_EQ(s.evictions, 0u);
}

TEST(GenerationCache, TheBoundIsRespected) {
  CacheGeneration gen;
  IntCache c(100, gen, 4);
  EXPECT_EQ(c.shard_capacity(), 25u);
  for (int i = 0; i < 10'000; ++i) ASSERT_TRUE(c.insert(i, i, c.generation()));
  const auto s = c.stats();
  EXPECT_LE(s.entries, 100u);
  EXPECT_GT(s.entries, 0u);
  EXPECT_EQ(s.evictions, 10'000u - s.entries);
  // A capacity below one per shard still holds one per shard.
  IntCache tiny(1, gen, 4);
  EXPECT_EQ(tiny.shard_capacity(), 1u);
  // Shards are a power of two (picked by a mask).
  IntCache odd(100, gen, 3);
  EXPECT_EQ(odd.shard_count(), 4u);
  EXPECT_EQ(odd.shard_capacity(), 25u);
}

TEST(GenerationCache, TheLeastRecentlyUsedEntryGoesFirst) {
  CacheGeneration gen;
  IntCache c(3, gen, 1);
  const std::uint64_t g = c.generation();
  c.insert(1, 1, g);
  c.insert(2, 2, g);
  c.insert(3, 3, g);
  EXPECT_EQ(c.find(1), 1);  // 1 is now the most recent, 2 the least
  c.insert(4, 4, g);
  EXPECT_FALSE(c.find(2));
  EXPECT_EQ(c.find(1), 1);
  EXPECT_EQ(c.find(3), 3);
  EXPECT_EQ(c.find(4), 4);
  c.insert(3, 30, g);  // a replacement counts as a use: 1 is the least recent now
  c.insert(5, 5, g);
  EXPECT_FALSE(c.find(1));
  EXPECT_EQ(c.find(3), 30);
  EXPECT_EQ(c.find(4), 4);
  EXPECT_EQ(c.find(5), 5);
  EXPECT_EQ(c.stats().evictions, 2u);
}

TEST(GenerationCache, ABumpInvalidatesEveryCacheOfTheGeneration) {
  CacheGeneration gen;
  IntCache a(64, gen);
  StrCache b(64, gen);
  const std::uint64_t g = gen.value();
  a.insert(1, 1, g);
  b.insert(std::string("x"), 1, g);
  gen.bump();
  EXPECT_FALSE(a.find(1));
  EXPECT_FALSE(b.find(std::string_view("x")));
  EXPECT_EQ(a.stats().entries, 0u);
  EXPECT_EQ(b.stats().entries, 0u);
  // A value computed before the bump is not stored as a new one.
  EXPECT_FALSE(a.insert(2, 2, g));
  EXPECT_FALSE(a.find(2));
  EXPECT_TRUE(a.insert(2, 2, gen.value()));
  EXPECT_EQ(a.find(2), 2);
}

// A rules reload is seen by every worker that expands next; the caches go
// once, not once per worker that noticed.
TEST(GenerationCache, FollowingACounterBumpsOncePerChange) {
  CacheGeneration gen;
  gen.start_following(5);
  const std::uint64_t start = gen.value();
  gen.follow(5);
  EXPECT_EQ(gen.value(), start);
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) threads.emplace_back([&] { gen.follow(6); });
  for (auto& th : threads) th.join();
  EXPECT_EQ(gen.value(), start + 1);
  gen.follow(6);
  EXPECT_EQ(gen.value(), start + 1);
  gen.follow(7);
  EXPECT_EQ(gen.value(), start + 2);
}

TEST(GenerationCache, StringKeysAreFoundByStringView) {
  CacheGeneration gen;
  StrCache c(64, gen);
  c.insert(std::string_view("/a/${USER}"), 7, c.generation());
  const std::string text = "/a/${USER}";
  EXPECT_EQ(c.find(std::string_view(text)), 7);
  EXPECT_FALSE(c.find(std::string_view("/a/$USER")));
}

TEST(GenerationCache, AnEntryThatCannotServeIsDropped) {
  CacheGeneration gen;
  IntCache c(64, gen);
  c.insert(1, 1, c.generation());
  EXPECT_FALSE(c.lookup(1, [](const int&, std::uint64_t) { return false; }));  // say, expired
  EXPECT_EQ(c.stats().entries, 0u);
  EXPECT_FALSE(c.find(1));
  const auto s = c.stats();
  EXPECT_EQ(s.hits, 0u);
  EXPECT_EQ(s.misses, 2u);
}

// Several threads insert, find and bump at once. Every value found must be
// one stored under the generation in force (values encode it), the bound
// holds throughout, and the counts add up. Run under TSan/ASan by scripts/test.
TEST(GenerationCache, ConcurrentUseFromSeveralThreads) {
  CacheGeneration gen;
  GenerationCache<int, std::uint64_t> c(256, gen, 8);
  constexpr int kThreads = 6, kOps = 20'000;
  std::atomic<int> wrong{0};
  std::atomic<std::uint64_t> lookups{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kOps; ++i) {
        // 200 keys, 25 per shard: all fit, so only bumps make misses.
        const int key = (i * 7 + t) % 200;
        if (t == 0 && i % 5000 == 0) gen.bump();
        const std::uint64_t g = c.generation();
        lookups.fetch_add(1, std::memory_order_relaxed);
        bool hit = c.lookup(key, [&](const std::uint64_t& v, std::uint64_t tag) {
          // The value was made under the tag it carries.
          if (v != tag * 10'000 + static_cast<std::uint64_t>(key)) wrong.fetch_add(1);
          return true;
        });
        if (!hit) c.insert(key, g * 10'000 + static_cast<std::uint64_t>(key), g);
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(wrong.load(), 0);
  const auto s = c.stats();
  EXPECT_LE(s.entries, 256u);
  EXPECT_EQ(s.hits + s.misses, lookups.load());
  EXPECT_GT(s.hits, 0u);
}

}  // namespace
}  // namespace vsymfs::daemon
