#include "fs/fd_cache.hpp"

#include <unistd.h>

#include "vsymfs/unique_fd.hpp"

namespace vsymfs::fs {

FdCache::~FdCache() {
  std::lock_guard lock(mu_);
  for (FdSlot* s = head_; s != nullptr; s = s->next) close_fd(s->fd.exchange(-1));
  head_ = tail_ = nullptr;
  count_ = 0;
}

void FdCache::link_front(FdSlot& slot) {
  slot.prev = nullptr;
  slot.next = head_;
  if (head_) head_->prev = &slot;
  head_ = &slot;
  if (!tail_) tail_ = &slot;
}

void FdCache::unlink(FdSlot& slot) {
  if (slot.prev) slot.prev->next = slot.next; else head_ = slot.next;
  if (slot.next) slot.next->prev = slot.prev; else tail_ = slot.prev;
  slot.prev = slot.next = nullptr;
}

int FdCache::insert(FdSlot& slot, UniqueFd owned) {
  std::lock_guard lock(mu_);
  slot.pins.fetch_add(1);
  if (const int theirs = slot.fd.load(); theirs >= 0) return theirs;  // ours closes on return
  slot.serial.fetch_add(1, std::memory_order_relaxed);  // published by the store below
  const int fd = owned.release();  // the slot owns it now (closed with close_fd)
  slot.fd.store(fd);
  // Like a hit: the operation that opened it is about to use it.
  slot.referenced.store(true, std::memory_order_relaxed);
  link_front(slot);
  ++count_;
  evict_locked();
  return fd;
}

void FdCache::offer(FdSlot& slot, UniqueFd owned) {
  std::lock_guard lock(mu_);
  if (slot.fd.load() >= 0) return;  // ours closes on return
  slot.serial.fetch_add(1, std::memory_order_relaxed);  // published by the store below
  slot.fd.store(owned.release());  // the slot owns it now (closed with close_fd)
  // Like a hit: the operation that opened it is about to use it.
  slot.referenced.store(true, std::memory_order_relaxed);
  link_front(slot);
  ++count_;
  evict_locked();
}

bool FdCache::close_unpinned_locked(FdSlot& slot) {
  // Clear first, then look for pins (see FdSlot::fd): an acquire() that
  // pinned before this exchange is seen here and keeps its descriptor; one
  // that pins after it reads -1 and reopens.
  const int fd = slot.fd.exchange(-1);
  if (slot.pins.load() != 0) {
    slot.fd.store(fd);
    return false;
  }
  unlink(slot);
  close_fd(fd);
  --count_;
  return true;
}

void FdCache::evict_locked() {
  // Walk from the cold end, wrapping around. Pinned descriptors stay (they
  // are in use), so a burst of concurrent operations can overshoot the
  // budget briefly. An unpinned slot is passed at most twice (once to clear
  // its mark, once to close); the bound keeps a cache full of pins from
  // looping forever.
  std::size_t steps = 3 * count_;
  FdSlot* s = tail_;
  while (count_ > budget_ && s != nullptr && steps-- > 0) {
    FdSlot* prev = s->prev;
    if (s->referenced.exchange(false, std::memory_order_relaxed)) {
      unlink(*s);
      link_front(*s);
    } else {
      close_unpinned_locked(*s);
    }
    s = prev != nullptr ? prev : tail_;
  }
}

void FdCache::evict_all(std::vector<int>& in_use) {
  std::lock_guard lock(mu_);
  while (FdSlot* s = tail_) {
    // Cleared before the pins are read, as in close_unpinned_locked: an
    // acquire() that pins after this reads -1 and reopens.
    const int fd = s->fd.exchange(-1);
    if (s->pins.load() != 0)
      in_use.push_back(fd);
    else
      close_fd(fd);
    unlink(*s);
    --count_;
  }
}

void FdCache::drop(FdSlot& slot) {
  std::lock_guard lock(mu_);
  const int fd = slot.fd.exchange(-1);
  if (fd < 0) return;
  unlink(slot);
  close_fd(fd);
  --count_;
}

std::size_t FdCache::open_count() const {
  std::lock_guard lock(mu_);
  return count_;
}

}  // namespace vsymfs::fs
