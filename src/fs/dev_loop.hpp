// The daemon's own loop over /dev/fuse (libfuse 3.14's fuse_session_loop_mt
// cannot do this: it takes EAGAIN as fatal). Its threads work in one of two
// modes, and the loop moves between them as the load changes:
//
// - shared: every thread blocks in read(2) on the device, and the kernel
//   wakes one of them for each request. What libfuse's loop does, and the
//   mode for concurrent callers, for a busy machine, and while requests
//   travel on io_uring.
// - lingering: the device is non-blocking and one thread, the leader, reads
//   it alone. It answers each request itself and then reads on, yielding
//   between reads, for up to -o dev_linger microseconds (Linger,
//   linger.hpp) before it sleeps in poll(2). A lone caller's next request
//   then finds it awake: no wake-up, no context switch, no cross-CPU
//   migration per request (docs/bench-2026-12-07.md). The other threads
//   wait in user space, not on the device, where each request would wake
//   one of them.
//
// The loop starts shared. It turns to lingering when, of a thread's last
// 64 requests, fewer than 8 came from another caller (thread) than the
// request read before them, the machine has a CPU to spare, linger is on
// and io_uring is not in use (checked at most every 10 ms). It turns back
// to shared
// - when the leader finds 4 requests in a row, each from another caller
//   than the one before, waiting as soon as it answered the one before
//   (callers queue behind it);
// - when the machine has had no CPU to spare for 10 ms (until then the
//   leader only skips lingering);
// - when io_uring takes over;
// - when one request keeps the leader for longer than 2 ms: one waiting
//   thread watches for that, so a request that hangs (a hung SOURCE) never
//   holds up the others for longer than that.
#pragma once

#define FUSE_USE_VERSION 314
#include <fuse3/fuse_lowlevel.h>

#include <pthread.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "vsymfs/unique_fd.hpp"

namespace vsymfs::fs {

class Linger;

class DevLoop {
 public:
  struct Config {
    unsigned threads = 2;    // -o threads
    unsigned linger_us = 0;  // -o dev_linger; 0: always shared
    int wake_signal = 0;     // interrupts a thread's read(2) at stop (a handler without SA_RESTART)
    // Whether ordinary requests travel on io_uring (then nothing lingers here).
    std::function<bool()> ring_active;
    // For tests: whether to linger now, in place of Linger::wanted() (the
    // machine's spare CPU), so that they do not depend on the machine.
    std::function<bool()> linger_wanted;
    // How long one request may keep the lingering leader before the other
    // threads take the device (tests make it longer, not to depend on the
    // machine's speed).
    std::chrono::milliseconds stuck_after{2};
  };

  DevLoop(fuse_session* se, Config c);
  ~DevLoop();
  DevLoop(const DevLoop&) = delete;
  DevLoop& operator=(const DevLoop&) = delete;

  // Serves on the calling thread's behalf until the session exits
  // (fuse_session_exit, from any thread, with the wake signal sent to the
  // calling thread to make it look; or the connection going away). 0, or a
  // negative errno when reading the device failed.
  int run();

  // For vsymctl status: the mode, the switches and why.
  std::string status() const;

  // How many times each mode was entered, and why the loop left lingering.
  struct Counts {
    std::uint64_t to_lingering = 0, demand = 0, busy_machine = 0, stuck = 0, ring = 0;
    unsigned parked = 0;  // threads waiting in user space now
    bool lingering = false;
  };
  Counts counts() const;

 private:
  enum class Mode { shared, lingering };
  enum class Why { demand, busy_machine, stuck, ring };
  static constexpr unsigned kNoLeader = ~0u;
  static constexpr unsigned kWindow = 64;         // a thread's requests per look at the callers
  static constexpr unsigned kWindowSwitches = 8;  // fewer changes of caller than this among them: linger
  static constexpr unsigned kDemandStreak = 4;       // requests in a row waiting for the leader
  static constexpr auto kRetry = std::chrono::milliseconds(10);
  static constexpr auto kBusyFor = std::chrono::milliseconds(10);  // no CPU to spare this long: shared

  void worker(unsigned me);
  // A thread's count, in shared mode, of its requests and of how many of
  // them came from another caller than the request before.
  struct Window {
    unsigned requests = 0, switches = 0;
  };
  // One request read in shared mode, served; false when the loop ends.
  bool serve_shared(unsigned me, fuse_buf& buf, Linger& linger, Window& w);
  // The leader's turn: a request read and served, or a linger, or a sleep.
  bool lead(fuse_buf& buf, Linger& linger, bool& found_at_once, unsigned& streak, std::uint32_t& last_pid);
  // A thread that is not the leader while lingering: waits (one of them
  // watching the leader) until the mode changes or it leads.
  void park(unsigned me);
  void serve(fuse_buf& buf);
  void try_lingering(unsigned me, Linger& linger);
  void to_shared(Why why);
  void to_shared_locked(Why why);
  bool set_nonblocking(bool on);
  // A fatal read result (0: the session ended) ends the loop.
  void finish(int res);
  bool stopping() const noexcept { return stop_.load(std::memory_order_acquire); }

  fuse_session* se_;
  const Config cfg_;
  const int fd_;
  UniqueFd stop_fd_;  // eventfd: wakes run() and the leader's poll

  mutable std::mutex mu_;
  std::condition_variable parked_cv_;   // threads that are not the leader
  std::condition_variable watcher_cv_;  // the one that watches the leader
  std::atomic<Mode> mode_{Mode::shared};
  std::atomic<unsigned> leader_{kNoLeader};
  std::atomic<bool> stop_{false};
  bool wanted(Linger& linger);

  unsigned parked_ = 0;         // under mu_
  bool watcher_taken_ = false;  // under mu_
  bool watcher_idle_ = false;   // under mu_: waiting without a timeout while the leader sleeps
  bool leader_polling_ = false;  // under mu_
  std::int64_t busy_since_ns_ = 0;  // the leader's: since when the machine had no CPU to spare (0: it has)
  std::atomic<bool> leader_busy_{false};
  std::atomic<std::uint64_t> leader_requests_{0};

  std::atomic<std::uint32_t> last_pid_{0};  // the caller of the last request read in shared mode
  std::atomic<std::int64_t> next_try_ns_{0};

  std::atomic<int> error_{0};
  std::atomic<std::uint64_t> to_lingering_{0}, why_demand_{0}, why_busy_{0}, why_stuck_{0}, why_ring_{0};

  struct Thread {
    std::thread t;
    std::atomic<bool> done{false};
  };
  std::vector<std::unique_ptr<Thread>> threads_;
};

}  // namespace vsymfs::fs
