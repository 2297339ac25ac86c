// A bounded set of O_PATH descriptors for known inodes.
//
// The kernel keeps an inode referenced (and so known to us) for as long as
// its dentry is cached, which on a big tree is far more inodes than
// RLIMIT_NOFILE (hard limit 20000 here) allows descriptors. So an inode keeps
// a way to reopen itself (a file handle, or its parent and name; see
// inode_table.hpp) and this cache keeps only the most recently used `budget`
// descriptors open. A descriptor in use by an operation is pinned and never
// closed under it; the cache may exceed its budget by the number of pins in
// flight (a few per worker thread).
#pragma once

#include <atomic>
#include <cstddef>
#include <mutex>

namespace vsymfs::fs {

// Embedded in each inode: the cache links inodes without allocating.
struct FdSlot {
  int fd = -1;                  // guarded by FdCache::mu_
  FdSlot* prev = nullptr;       // LRU list, guarded by FdCache::mu_
  FdSlot* next = nullptr;
  std::atomic<int> pins{0};     // incremented under mu_, decremented without it
};

class FdCache {
 public:
  explicit FdCache(std::size_t budget) : budget_(budget) {}
  ~FdCache();
  FdCache(const FdCache&) = delete;
  FdCache& operator=(const FdCache&) = delete;

  // The slot's descriptor, pinned, or -1 when it is not open.
  int acquire(FdSlot& slot);
  // Puts a freshly opened descriptor into the slot, pinned, and returns the
  // descriptor to use: when another thread got there first, `fd` is closed
  // and theirs is returned.
  int insert(FdSlot& slot, int fd);
  // Gives the cache a descriptor it may keep (unpinned) or close, when the
  // slot already has one.
  void offer(FdSlot& slot, int fd);
  void release(FdSlot& slot) noexcept { slot.pins.fetch_sub(1, std::memory_order_release); }
  // Closes the slot's descriptor for good (the inode is going away).
  void drop(FdSlot& slot);

  std::size_t budget() const noexcept { return budget_; }
  std::size_t open_count() const;

 private:
  void link_front(FdSlot& slot);
  void unlink(FdSlot& slot);
  void evict_locked();

  const std::size_t budget_;
  mutable std::mutex mu_;
  FdSlot* head_ = nullptr;  // most recently used
  FdSlot* tail_ = nullptr;
  std::size_t count_ = 0;
};

}  // namespace vsymfs::fs
