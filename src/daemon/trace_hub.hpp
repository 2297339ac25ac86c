// Who is tracing expansions (`vsymctl trace`), and handing each traced
// expansion to them. The FUSE threads publish; the control server's thread
// takes. When nobody traces, an expansion pays one relaxed atomic load
// (active()). A subscriber's queue is bounded (TraceQueue): a reader that
// falls behind loses events, counted, and never holds up a FUSE thread.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string_view>
#include <vector>

#include "vsymfs/trace.hpp"

namespace vsymfs::daemon {

// Per subscriber: at most this many events, and this many bytes of them,
// wait for its reader.
inline constexpr std::size_t kTraceQueueEvents = 4096;
inline constexpr std::size_t kTraceQueueBytes = 256 * 1024;

class TraceHub {
 public:
  class Subscriber {
   public:
    explicit Subscriber(TraceFilter f) : filter_(std::move(f)), queue_(kTraceQueueEvents, kTraceQueueBytes) {}
    const TraceFilter& filter() const noexcept { return filter_; }
    // Moves up to `max` queued events to `out`; `dropped` gets the total lost
    // so far. When nothing is left, the next publish signals again.
    void take(std::vector<std::shared_ptr<const TraceEvent>>& out, std::size_t max, std::uint64_t& dropped);

   private:
    friend class TraceHub;
    const TraceFilter filter_;
    std::mutex mu_;
    TraceQueue queue_;
    bool signalled_ = false;  // a wakeup is pending for this subscriber
  };

  // Ends the subscription when destroyed (move-only).
  class Subscription {
   public:
    Subscription() = default;
    Subscription(TraceHub* hub, std::shared_ptr<Subscriber> s) : hub_(hub), sub_(std::move(s)) {}
    Subscription(Subscription&& o) noexcept { *this = std::move(o); }
    Subscription& operator=(Subscription&& o) noexcept;
    ~Subscription() { reset(); }
    void reset();
    explicit operator bool() const noexcept { return sub_ != nullptr; }
    Subscriber* operator->() const noexcept { return sub_.get(); }

   private:
    TraceHub* hub_ = nullptr;
    std::shared_ptr<Subscriber> sub_;
  };

  // `wake_fd`: an eventfd written (once per subscriber that had nothing
  // pending) when events arrive; -1 for none (tests poll). After it
  // returns, the old descriptor is not written to any more.
  void set_wake_fd(int wake_fd) noexcept;

  Subscription subscribe(TraceFilter filter);

  // The only thing an untraced expansion asks.
  bool active() const noexcept { return active_.load(std::memory_order_relaxed) != 0; }
  // Whether any subscriber may want an expansion by this caller (path not
  // yet known) / of this link.
  bool wants_caller(pid_t pid, uid_t uid) const;
  bool wants(pid_t pid, uid_t uid, std::string_view path) const;
  // Hands the event to every subscriber whose filter takes it.
  void publish(TraceEvent event);

  struct Stats {
    std::size_t subscribers = 0;
    std::uint64_t events = 0;   // events handed to at least one subscriber
    std::uint64_t dropped = 0;  // events lost by slow readers, all subscribers, ever
  };
  Stats stats() const;

 private:
  void unsubscribe(const std::shared_ptr<Subscriber>& s);

  std::atomic<std::size_t> active_{0};
  mutable std::mutex mu_;  // guards subs_, wake_fd_ and dropped_gone_; taken before a Subscriber's mu_
  int wake_fd_ = -1;
  std::vector<std::shared_ptr<Subscriber>> subs_;
  std::atomic<std::uint64_t> events_{0};
  std::uint64_t dropped_gone_ = 0;  // dropped by subscribers that have ended
};

}  // namespace vsymfs::daemon
