// The bounded descriptor cache: never more than its budget of unpinned
// descriptors, least recently used closed first, pinned ones never closed.
#include "fd_cache.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <vector>

#include <gtest/gtest.h>

namespace {

using vsymfs::fs::FdCache;
using vsymfs::fs::FdSlot;

int new_fd() { return ::open("/dev/null", O_RDONLY | O_CLOEXEC); }
bool is_open(int fd) { return ::fcntl(fd, F_GETFD) != -1; }

TEST(FdCache, KeepsAtMostItsBudgetClosingTheLeastRecentlyUsed) {
  FdCache cache(3);
  std::vector<FdSlot> slots(5);
  std::vector<int> fds;
  for (auto& s : slots) {
    int fd = new_fd();
    fds.push_back(fd);
    cache.offer(s, fd);
  }
  EXPECT_EQ(cache.open_count(), 3u);
  EXPECT_EQ(slots[0].fd, -1);
  EXPECT_EQ(slots[1].fd, -1);
  for (int i = 2; i < 5; ++i) EXPECT_EQ(slots[static_cast<size_t>(i)].fd, fds[static_cast<size_t>(i)]);

  // Using slot 2 makes slot 3 the coldest.
  ASSERT_EQ(cache.acquire(slots[2]), fds[2]);
  cache.release(slots[2]);
  cache.offer(slots[0], new_fd());
  EXPECT_EQ(slots[3].fd, -1);
  EXPECT_NE(slots[2].fd, -1);
  EXPECT_EQ(cache.acquire(slots[3]), -1);  // a miss: the caller reopens
}

TEST(FdCache, PinnedDescriptorsSurviveEvictionAndOvershootBriefly) {
  FdCache cache(2);
  std::vector<FdSlot> slots(4);
  int a = cache.insert(slots[0], new_fd());  // pinned
  int b = cache.insert(slots[1], new_fd());  // pinned
  int c = cache.insert(slots[2], new_fd());  // pinned: three over a budget of two
  EXPECT_EQ(cache.open_count(), 3u);
  EXPECT_TRUE(is_open(a) && is_open(b) && is_open(c));
  cache.release(slots[0]);
  cache.offer(slots[3], new_fd());
  EXPECT_EQ(slots[0].fd, -1) << "the only unpinned cold descriptor goes";
  EXPECT_TRUE(is_open(b) && is_open(c));
  cache.release(slots[1]);
  cache.release(slots[2]);
}

TEST(FdCache, InsertIntoAFilledSlotKeepsTheFirst) {
  FdCache cache(4);
  FdSlot slot;
  int first = cache.insert(slot, new_fd());
  int second_fd = new_fd();
  EXPECT_EQ(cache.insert(slot, second_fd), first);
  EXPECT_FALSE(is_open(second_fd));
  cache.release(slot);
  cache.release(slot);
  cache.drop(slot);
  EXPECT_FALSE(is_open(first));
  EXPECT_EQ(cache.open_count(), 0u);
}

}  // namespace
