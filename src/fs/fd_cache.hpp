// A bounded set of O_PATH descriptors for known inodes.
//
// The kernel keeps an inode referenced (and so known to us) for as long as
// its dentry is cached, which on a big tree is far more inodes than
// RLIMIT_NOFILE (hard limit 20000 here) allows descriptors. So an inode keeps
// a way to reopen itself (a file handle, or its parent and name; see
// inode_table.hpp) and this cache keeps only `budget` descriptors open,
// closing cold ones first. A descriptor in use by an operation is pinned and
// never closed under it; the cache may exceed its budget by the number of
// pins in flight (a few per worker thread).
//
// Every FUSE operation pins a descriptor or two, so a hit takes no lock: it
// pins, reads the descriptor and marks the slot referenced. Eviction (under
// the lock, only when a new descriptor is added) is CLOCK-like: walking from
// the cold end, a referenced slot gets a second chance (moved to the hot
// end, mark cleared) instead of strict LRU order, which would need the lock
// on every hit to reorder the list.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <vector>

#include "vsymfs/unique_fd.hpp"

namespace vsymfs::fs {

// Embedded in each inode: the cache links inodes without allocating.
struct FdSlot {
  // Written under FdCache::mu_; read without it by acquire(). Eviction clears
  // it before it looks at `pins`, acquire() pins before it reads it: with both
  // sequentially consistent, one of the two always sees the other.
  std::atomic<int> fd{-1};
  // Operations holding the descriptor, plus kRetired once the inode has been
  // forgotten while some of them still held it (FdCache::retire).
  std::atomic<int> pins{0};
  static constexpr int kRetired = 1 << 30;
  std::atomic<bool> referenced{false};  // used since eviction last passed it
  // How many descriptors the slot has been given. Changes only while the
  // slot holds none, so while a pin is held it names the descriptor in use:
  // the same count means the same open file, and an open file keeps its
  // inode, and so its inode number, from being reused. (One exception:
  // evict_all() empties pinned slots too, when SOURCE's filesystem is gone;
  // the pins it leaves hold descriptors on which every call fails.)
  std::atomic<std::uint64_t> serial{0};
  FdSlot* prev = nullptr;               // list from hot to cold, guarded by FdCache::mu_
  FdSlot* next = nullptr;
};

class FdCache {
 public:
  explicit FdCache(std::size_t budget) : budget_(budget) {}
  ~FdCache();
  FdCache(const FdCache&) = delete;
  FdCache& operator=(const FdCache&) = delete;

  // The slot's descriptor, pinned, or -1 when it is not open. Lock-free.
  int acquire(FdSlot& slot) noexcept {
    slot.pins.fetch_add(1);
    const int fd = slot.fd.load();
    if (fd < 0) {
      slot.pins.fetch_sub(1, std::memory_order_release);
      return -1;
    }
    // Read first: a hot slot's cache line is only read, not written, per hit.
    if (!slot.referenced.load(std::memory_order_relaxed)) slot.referenced.store(true, std::memory_order_relaxed);
    return fd;
  }
  // Puts a freshly opened descriptor into the slot, pinned, and returns the
  // descriptor to use: when another thread got there first, `fd` is closed
  // and theirs is returned.
  int insert(FdSlot& slot, UniqueFd fd);
  // Gives the cache a descriptor it may keep (unpinned) or close, when the
  // slot already has one.
  void offer(FdSlot& slot, UniqueFd fd);
  // Unpins. True when this was the last pin of a retired slot: the caller
  // then finishes what retire() left (drop the descriptor, free the inode).
  bool release(FdSlot& slot) noexcept {
    return slot.pins.fetch_sub(1, std::memory_order_acq_rel) == (FdSlot::kRetired | 1);
  }
  // The inode is gone for the kernel (its last FORGET), but an operation may
  // still pin its descriptor: the reply to the kernel goes out before the
  // operation's locals are destroyed, and the kernel may forget the inode as
  // soon as it has the reply. True when nothing pins it (the caller drops and
  // frees now); false when the last release() will say so instead.
  bool retire(FdSlot& slot) noexcept {
    return (slot.pins.fetch_or(FdSlot::kRetired, std::memory_order_acq_rel) & ~FdSlot::kRetired) == 0;
  }
  // Closes the slot's descriptor for good (the inode is going away).
  void drop(FdSlot& slot);
  // Empties every slot (their descriptors point into a filesystem that is
  // gone), so that each is opened anew. Unpinned descriptors are closed;
  // pinned ones are still in use, so they are appended to `in_use` for the
  // caller to close once no operation can hold them (never a number reused
  // under an operation). Leaving a pinned one in its slot would keep it
  // there for good: the next acquire() would hit it again.
  void evict_all(std::vector<int>& in_use);

  std::size_t budget() const noexcept { return budget_; }
  std::size_t open_count() const;

 private:
  void link_front(FdSlot& slot);
  void unlink(FdSlot& slot);
  void evict_locked();
  bool close_unpinned_locked(FdSlot& slot);

  const std::size_t budget_;
  mutable std::mutex mu_;
  FdSlot* head_ = nullptr;  // most recently added or given a second chance
  FdSlot* tail_ = nullptr;
  std::size_t count_ = 0;
};

}  // namespace vsymfs::fs
