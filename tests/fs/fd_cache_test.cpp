// The bounded descriptor cache: never more than its budget of unpinned
// descriptors, cold ones closed first (a used one gets a second chance),
// pinned ones never closed, hits without the lock safe against eviction.
#include "fs/fd_cache.hpp"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

namespace {

using vsymfs::fs::FdCache;
using vsymfs::fs::FdSlot;
using vsymfs::UniqueFd;

int new_fd() { return ::open("/dev/null", O_RDONLY | O_CLOEXEC); }
bool is_open(int fd) { return ::fcntl(fd, F_GETFD) != -1; }

TEST(FdCache, KeepsAtMostItsBudgetClosingTheLeastRecentlyUsed) {
  // The slots outlive the cache: its destructor walks the slots it holds.
  std::vector<FdSlot> slots(5);
  FdCache cache(3);
  std::vector<int> fds;
  for (auto& s : slots) {
    int fd = new_fd();
    fds.push_back(fd);
    cache.offer(s, UniqueFd(fd));
  }
  EXPECT_EQ(cache.open_count(), 3u);
  EXPECT_EQ(slots[0].fd.load(), -1);
  EXPECT_EQ(slots[1].fd.load(), -1);
  for (int i = 2; i < 5; ++i) EXPECT_EQ(slots[static_cast<size_t>(i)].fd.load(), fds[static_cast<size_t>(i)]);

  // Using slot 2 makes slot 3 the coldest.
  ASSERT_EQ(cache.acquire(slots[2]), fds[2]);
  cache.release(slots[2]);
  cache.offer(slots[0], UniqueFd(new_fd()));
  EXPECT_EQ(slots[3].fd.load(), -1);
  EXPECT_NE(slots[2].fd.load(), -1);
  EXPECT_EQ(cache.acquire(slots[3]), -1);  // a miss: the caller reopens
}

TEST(FdCache, PinnedDescriptorsSurviveEvictionAndOvershootBriefly) {
  // The slots outlive the cache: its destructor walks the slots it holds.
  std::vector<FdSlot> slots(4);
  FdCache cache(2);
  int a = cache.insert(slots[0], UniqueFd(new_fd()));  // pinned
  int b = cache.insert(slots[1], UniqueFd(new_fd()));  // pinned
  int c = cache.insert(slots[2], UniqueFd(new_fd()));  // pinned: three over a budget of two
  EXPECT_EQ(cache.open_count(), 3u);
  EXPECT_TRUE(is_open(a) && is_open(b) && is_open(c));
  cache.release(slots[0]);
  cache.offer(slots[3], UniqueFd(new_fd()));
  EXPECT_EQ(slots[0].fd.load(), -1) << "the only unpinned cold descriptor goes";
  EXPECT_TRUE(is_open(b) && is_open(c));
  cache.release(slots[1]);
  cache.release(slots[2]);
}

TEST(FdCache, InsertIntoAFilledSlotKeepsTheFirst) {
  // The slots outlive the cache: its destructor walks the slots it holds.
  FdSlot slot;
  FdCache cache(4);
  int first = cache.insert(slot, UniqueFd(new_fd()));
  int second_fd = new_fd();
  EXPECT_EQ(cache.insert(slot, UniqueFd(second_fd)), first);
  EXPECT_FALSE(is_open(second_fd));
  cache.release(slot);
  cache.release(slot);
  cache.drop(slot);
  EXPECT_FALSE(is_open(first));
  EXPECT_EQ(cache.open_count(), 0u);
}

// SOURCE's filesystem went away and came back: no slot may keep a
// descriptor of the gone one, not even one in use at that moment (the
// operation that noticed pins one), or its inode would fail for good.
TEST(FdCache, EvictAllEmptiesPinnedSlotsTooAndKeepsTheirDescriptorsOpen) {
  std::vector<FdSlot> slots(3);
  FdCache cache(8);
  const int pinned = cache.insert(slots[0], UniqueFd(new_fd()));
  const int idle = new_fd();
  cache.offer(slots[1], UniqueFd(idle));
  std::vector<int> in_use;
  cache.evict_all(in_use);
  EXPECT_EQ(cache.open_count(), 0u);
  EXPECT_EQ(cache.acquire(slots[0]), -1) << "the pinned slot must be opened anew";
  EXPECT_EQ(cache.acquire(slots[1]), -1);
  EXPECT_EQ(in_use, std::vector<int>{pinned});
  EXPECT_TRUE(is_open(pinned)) << "still in use: closed by the caller later";
  EXPECT_FALSE(is_open(idle));
  cache.release(slots[0]);
  // The slot takes a new descriptor as any empty one does.
  const int fresh = new_fd();
  cache.offer(slots[0], UniqueFd(fresh));
  EXPECT_EQ(cache.open_count(), 1u);
  EXPECT_EQ(slots[0].fd.load(), fresh);
  ::close(pinned);
}

TEST(FdCache, ALockFreeHitNeverGetsADescriptorClosedUnderIt) {
  // Readers pin and check their descriptor while a writer keeps adding
  // descriptors, so eviction runs constantly against the readers' slots.
  // Each hot slot holds a file of its own: a descriptor closed under a
  // reader and reused by the writer's next open shows up as the wrong file.
  constexpr std::size_t kHot = 4;
  // The slots outlive the cache: its destructor walks the slots it holds.
  std::vector<FdSlot> hot(kHot);
  std::vector<FdSlot> churn(64);
  FdCache cache(4);
  std::vector<int> originals;
  std::vector<ino_t> inodes;
  for (std::size_t i = 0; i < kHot; ++i) {
    originals.push_back(::memfd_create("hot", MFD_CLOEXEC));
    struct stat st {};
    ASSERT_EQ(::fstat(originals.back(), &st), 0);
    inodes.push_back(st.st_ino);
    cache.offer(hot[i], UniqueFd(::dup(originals.back())));
  }
  std::atomic<bool> stop{false};
  std::atomic<long> wrong{0}, hits{0};
  auto reader = [&] {
    while (!stop.load()) {
      for (std::size_t i = 0; i < kHot; ++i) {
        int fd = cache.acquire(hot[i]);
        if (fd < 0) fd = cache.insert(hot[i], UniqueFd(::dup(originals[i])));  // evicted: reopen, as InodeTable does
        for (int check = 0; check < 8; ++check) {  // hold the pin a while
          struct stat st {};
          if (::fstat(fd, &st) != 0 || st.st_ino != inodes[i]) ++wrong;
        }
        ++hits;
        cache.release(hot[i]);
      }
    }
  };
  std::thread r1(reader), r2(reader);
  for (int round = 0; round < 2000; ++round)
    for (auto& s : churn) {
      cache.offer(s, UniqueFd(new_fd()));
      if (round % 2 == 1) cache.drop(s);
    }
  stop = true;
  r1.join();
  r2.join();
  EXPECT_GT(hits.load(), 0);
  EXPECT_EQ(wrong.load(), 0);
  EXPECT_LE(cache.open_count(), cache.budget());
  for (int fd : originals) ::close(fd);
}

}  // namespace
