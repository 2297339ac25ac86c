// daemon/per_thread.hpp and the per-thread snapshot of Published
// (daemon/mount_state.hpp): what the request path reads without writing
// shared cache lines must still be exactly what a locked read would give.
#include "daemon/per_thread.hpp"

#include <gtest/gtest.h>

#include <atomic>
#include <memory>
#include <thread>
#include <vector>

#include "daemon/mount_state.hpp"

namespace vsymfs::daemon {
namespace {

// An object that says when it is destroyed.
struct Tracked {
  explicit Tracked(int v, std::atomic<int>* gone) : value(v), destroyed(gone) {}
  ~Tracked() { destroyed->fetch_add(1); }
  int value;
  std::atomic<int>* destroyed;
};

TEST(PerThreadAlias, SameObjectOwnCountAndLifetime) {
  std::atomic<int> gone{0};
  auto original = std::make_shared<const Tracked>(7, &gone);
  const Tracked* raw = original.get();
  std::shared_ptr<const Tracked> alias = per_thread_alias(original);
  EXPECT_EQ(alias.get(), raw);
  // Copies of the alias count in its own block, not the original's.
  const long before = original.use_count();
  std::shared_ptr<const Tracked> copy = alias;
  EXPECT_EQ(original.use_count(), before);
  EXPECT_EQ(alias.use_count(), 2);
  // The object lives while any alias does.
  original.reset();
  alias.reset();
  EXPECT_EQ(gone.load(), 0);
  EXPECT_EQ(copy->value, 7);
  copy.reset();
  EXPECT_EQ(gone.load(), 1);
  EXPECT_EQ(per_thread_alias(std::shared_ptr<const Tracked>()), nullptr);
}

TEST(ShardedCounter, ConcurrentAddsSumExactly) {
  ShardedCounter c;
  constexpr int kThreads = ShardedCounter::kSlots + 4;  // some threads share a slot
  constexpr int kAdds = 20'000;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t)
    threads.emplace_back([&c] {
      for (int i = 0; i < kAdds; ++i) c.fetch_add(1, std::memory_order_relaxed);
    });
  for (auto& t : threads) t.join();
  EXPECT_EQ(c.load(), std::uint64_t{kThreads} * kAdds);
  c.fetch_add(5);
  EXPECT_EQ(c.load(), std::uint64_t{kThreads} * kAdds + 5);
}

TEST(InstanceIds, AreUniqueAndNonzero) {
  const std::uint64_t a = next_instance_id(), b = next_instance_id();
  EXPECT_NE(a, 0u);
  EXPECT_NE(a, b);
}

TEST(Published, ALoadAfterAStoreSeesTheNewSnapshot) {
  std::atomic<int> gone{0};
  Published<Tracked> p;
  EXPECT_EQ(p.load(), nullptr);
  p.store(std::make_shared<const Tracked>(1, &gone));
  auto first = p.load();
  ASSERT_NE(first, nullptr);
  EXPECT_EQ(first->value, 1);
  EXPECT_EQ(p.load().get(), first.get());  // unchanged: the same object
  p.store(std::make_shared<const Tracked>(2, &gone));
  EXPECT_EQ(p.load()->value, 2);
  // The first snapshot lives while someone holds it, and no longer: the
  // thread's copy moved on with the load above.
  EXPECT_EQ(gone.load(), 0);
  first.reset();
  EXPECT_EQ(gone.load(), 1);
}

// Two objects in turn at the same address (the second made where the first
// was freed) must not hand out the first one's snapshot: the thread's copy
// is keyed by an id that is never reused.
TEST(Published, ANewObjectNeverGetsAnOldOnesSnapshot) {
  std::atomic<int> gone{0};
  alignas(Published<Tracked>) unsigned char storage[sizeof(Published<Tracked>)];
  auto* a = new (storage) Published<Tracked>;
  a->store(std::make_shared<const Tracked>(1, &gone));
  EXPECT_EQ(a->load()->value, 1);
  a->~Published<Tracked>();
  auto* b = new (storage) Published<Tracked>;
  b->store(std::make_shared<const Tracked>(2, &gone));
  EXPECT_EQ(b->load()->value, 2);
  b->~Published<Tracked>();
}

// Readers on other threads see every store, in order, while one thread
// stores: a reader never goes back to an older snapshot.
TEST(Published, ReadersFollowStoresInOrder) {
  std::atomic<int> gone{0};
  Published<Tracked> p;
  p.store(std::make_shared<const Tracked>(0, &gone));
  constexpr int kStores = 2'000;
  std::atomic<bool> done{false};
  std::atomic<int> regressions{0};
  std::vector<std::thread> readers;
  for (int t = 0; t < 3; ++t)
    readers.emplace_back([&] {
      int last = 0;
      while (!done.load()) {
        const int v = p.load()->value;
        if (v < last) regressions.fetch_add(1);
        last = v;
      }
      if (p.load()->value != kStores) regressions.fetch_add(1000);  // the last store must be seen
    });
  for (int i = 1; i <= kStores; ++i) p.store(std::make_shared<const Tracked>(i, &gone));
  done = true;
  for (auto& t : readers) t.join();
  EXPECT_EQ(regressions.load(), 0);
}

}  // namespace
}  // namespace vsymfs::daemon
