// Keeping the request path off cache lines that every worker thread writes.
//
// A FUSE request on io_uring is served on its caller's CPU, and a caller
// that alternates between CPUs has consecutive requests served by ring
// threads on different CPUs. Every cache line such a request writes that
// the previous request also wrote (a mutex, a std::shared_ptr's reference
// count, a statistics counter) then moves between the CPUs' caches, once
// per line per request. The tools here let the hot path write only lines
// of its own thread:
//
// - per_thread_alias(): a std::shared_ptr to the same object whose
//   reference count is this thread's own (aliasing constructor);
// - ShardedCounter: a statistics counter whose increments go to one of
//   several cache-line-sized slots, one per thread as far as they go, and
//   whose reads add them up (exact, not sampled);
// - next_instance_id(): a process-wide unique id, to key a thread-local
//   cache by the object it caches for without the ABA of an address that a
//   later object reuses.
//
// Measured on 2026-12-06 (docs/bench-2026-12-06b.md): one plain readlink
// on the ring wrote about ten such shared lines, and the caller's
// migrations between CPUs (which these make dearer) rose with the daemon's
// time per request.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <new>
#include <utility>

namespace vsymfs::daemon {

// The same object, with a reference count of its own: copies of the result
// write only its control block, which owns one reference to `p`. Pointer
// identity is kept (get() is p.get()); the object lives while either does.
template <class T>
std::shared_ptr<const T> per_thread_alias(std::shared_ptr<const T> p) {
  if (!p) return p;
  const T* raw = p.get();
  auto holder = std::make_shared<std::shared_ptr<const T>>(std::move(p));
  return std::shared_ptr<const T>(std::move(holder), raw);
}

// A unique, never reused, nonzero id for a cache's owner.
inline std::uint64_t next_instance_id() noexcept {
  static std::atomic<std::uint64_t> next{1};
  return next.fetch_add(1, std::memory_order_relaxed);
}

// A counter written by many threads and read rarely (`vsymctl status`).
// The interface is std::atomic's, for what counters use of it.
class ShardedCounter {
 public:
  static constexpr std::size_t kSlots = 16;

  void fetch_add(std::uint64_t n, std::memory_order = std::memory_order_relaxed) noexcept {
    slots_[slot_index()].v.fetch_add(n, std::memory_order_relaxed);
  }
  std::uint64_t load(std::memory_order = std::memory_order_relaxed) const noexcept {
    std::uint64_t sum = 0;
    for (const Slot& s : slots_) sum += s.v.load(std::memory_order_relaxed);
    return sum;
  }

 private:
  // 64: the cache line of every x86-64 and most arm64 CPUs. (GCC 12 warns
  // that std::hardware_destructive_interference_size may vary with -mtune.)
  struct alignas(64) Slot {
    std::atomic<std::uint64_t> v{0};
  };
  // Threads take slots in turn: the first kSlots threads of the process
  // each have their own, and more share.
  static std::size_t slot_index() noexcept {
    static std::atomic<std::size_t> next{0};
    thread_local const std::size_t mine = next.fetch_add(1, std::memory_order_relaxed) % kSlots;
    return mine;
  }
  Slot slots_[kSlots];
};

}  // namespace vsymfs::daemon
