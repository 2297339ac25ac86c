// Lingering: after a reply, a thread that serves FUSE requests may keep its
// CPU for a while instead of sleeping at once. Its caller's next request
// then finds it awake, and the CPU does not look idle to the scheduler.
// That second part decides the rate of a single caller on a machine with an
// idle CPU: the kernel wakes the caller from the serving thread, whose CPU
// is busy, and puts it on an idle CPU it used recently, the other one; the
// request it sends from there wakes a sleeping server there or back on the
// first CPU, and so on: a cross-CPU wake-up at every request (0.65 caller
// migrations per readlink on io_uring here, against 0.06 with the ring
// threads lingering, and half the rate; docs/bench-2026-12-06d.md; on
// /dev/fuse, docs/bench-2026-12-07.md). A lingering thread yields at every
// turn, so a caller woken on its CPU runs at once. It lingers only while
// the machine has a CPU to spare (runnable tasks, /proc/loadavg, sampled
// every millisecond, at most one per CPU) and stops for 20 ms once a yield
// gave the CPU to someone else for long: a busy machine has no idle CPU to
// pull callers to, and there lingering would only take CPU time from
// others. Used by the io_uring ring threads (-o uring_linger) and by the
// /dev/fuse reader (-o dev_linger, dev_loop.hpp).
#pragma once

#include <sched.h>

#include <chrono>
#include <optional>
#include <string_view>

#include "vsymfs/unique_fd.hpp"

namespace vsymfs::fs {

// The runnable tasks in /proc/loadavg's text (its fourth field,
// running/threads), or nullopt when the text is not such.
std::optional<long> runnable_tasks(std::string_view loadavg);

class Linger {
 public:
  // `us` = 0: never lingers.
  explicit Linger(unsigned us);
  // Whether to linger now: a span is set, no recent yield ran someone else
  // for long, and the machine has a CPU to spare.
  bool wanted();
  // Yields, then asks `ready()`, until it says yes (true) or the span is
  // over (false).
  template <class Ready>
  bool spin(Ready&& ready) {
    Clock::time_point now = Clock::now();
    const Clock::time_point until = now + span_;
    while (now < until) {
      ::sched_yield();  // a caller woken on this CPU runs now; on a ring, the task work that posts a request
      if (ready()) return true;
      const Clock::time_point after = Clock::now();
      if (after - now > kForeign) {
        quiet_until_ = after + kQuiet;
        return false;
      }
      now = after;
    }
    return false;
  }

 private:
  using Clock = std::chrono::steady_clock;
  static constexpr auto kForeign = std::chrono::microseconds(50);  // a yield this long ran another task
  static constexpr auto kQuiet = std::chrono::milliseconds(20);
  const Clock::duration span_;
  const long cpus_;
  UniqueFd loadavg_;
  Clock::time_point next_sample_{}, quiet_until_{};
  bool spare_cpu_ = false;
};

}  // namespace vsymfs::fs
