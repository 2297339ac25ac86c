#include "fd_cache.hpp"

#include <unistd.h>

namespace vsymfs::fs {

FdCache::~FdCache() {
  std::lock_guard lock(mu_);
  for (FdSlot* s = head_; s != nullptr; s = s->next) {
    ::close(s->fd);
    s->fd = -1;
  }
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

int FdCache::acquire(FdSlot& slot) {
  std::lock_guard lock(mu_);
  if (slot.fd < 0) return -1;
  slot.pins.fetch_add(1, std::memory_order_acquire);
  if (head_ != &slot) {
    unlink(slot);
    link_front(slot);
  }
  return slot.fd;
}

int FdCache::insert(FdSlot& slot, int fd) {
  std::lock_guard lock(mu_);
  slot.pins.fetch_add(1, std::memory_order_acquire);
  if (slot.fd >= 0) {
    ::close(fd);
    return slot.fd;
  }
  slot.fd = fd;
  link_front(slot);
  ++count_;
  evict_locked();
  return fd;
}

void FdCache::offer(FdSlot& slot, int fd) {
  std::lock_guard lock(mu_);
  if (slot.fd >= 0) {
    ::close(fd);
    return;
  }
  slot.fd = fd;
  link_front(slot);
  ++count_;
  evict_locked();
}

void FdCache::evict_locked() {
  // Walk from the cold end; pinned descriptors stay (they are in use), so a
  // burst of concurrent operations can overshoot the budget briefly.
  FdSlot* s = tail_;
  while (count_ > budget_ && s != nullptr) {
    FdSlot* prev = s->prev;
    if (s->pins.load(std::memory_order_acquire) == 0) {
      unlink(*s);
      ::close(s->fd);
      s->fd = -1;
      --count_;
    }
    s = prev;
  }
}

void FdCache::drop(FdSlot& slot) {
  std::lock_guard lock(mu_);
  if (slot.fd < 0) return;
  unlink(slot);
  ::close(slot.fd);
  slot.fd = -1;
  --count_;
}

std::size_t FdCache::open_count() const {
  std::lock_guard lock(mu_);
  return count_;
}

}  // namespace vsymfs::fs
