#include "fs/dev_loop.hpp"

#include <fcntl.h>
#include <linux/fuse.h>
#include <poll.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>

#include <spdlog/spdlog.h>

#include "fs/linger.hpp"

namespace vsymfs::fs {

namespace {

// The caller of a request (its thread id; 0 for what the kernel sends on
// its own).
std::uint32_t request_pid(const fuse_buf& buf) {
  if (buf.mem == nullptr || buf.size < sizeof(fuse_in_header)) return 0;
  fuse_in_header in;
  std::memcpy(&in, buf.mem, sizeof in);
  return in.pid;
}

std::int64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

}  // namespace

DevLoop::DevLoop(fuse_session* se, Config c)
    : se_(se), cfg_(std::move(c)), fd_(fuse_session_fd(se)), stop_fd_(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) {}

DevLoop::~DevLoop() = default;

bool DevLoop::set_nonblocking(bool on) {
  const int flags = ::fcntl(fd_, F_GETFL);
  if (flags < 0) return false;
  const int want = on ? flags | O_NONBLOCK : flags & ~O_NONBLOCK;
  return want == flags || ::fcntl(fd_, F_SETFL, want) == 0;
}

int DevLoop::run() {
  if (!stop_fd_) return -errno;
  const unsigned n = cfg_.threads == 0 ? 1 : cfg_.threads;
  for (unsigned i = 0; i < n; ++i) {
    auto t = std::make_unique<Thread>();
    Thread* self = t.get();
    t->t = std::thread([this, i, self] {
      worker(i);
      self->done.store(true, std::memory_order_release);
    });
    threads_.push_back(std::move(t));
  }
  // This thread waits for the end: the session's exit flag (looked at
  // when the wake signal interrupts the poll) or a worker's stop.
  while (!stopping() && !fuse_session_exited(se_)) {
    pollfd p{stop_fd_.get(), POLLIN, 0};
    if (::poll(&p, 1, -1) < 0 && errno != EINTR) break;
  }
  {
    std::lock_guard lock(mu_);
    stop_.store(true, std::memory_order_release);
  }
  parked_cv_.notify_all();
  watcher_cv_.notify_all();
  const std::uint64_t one = 1;
  (void)!::write(stop_fd_.get(), &one, sizeof one);
  // A thread blocked in read(2) on the device returns only for a request or
  // a signal; one sent just before it blocks is lost, so it is repeated.
  for (;;) {
    bool all_done = true;
    for (auto& t : threads_) {
      if (t->done.load(std::memory_order_acquire)) continue;
      all_done = false;
      if (cfg_.wake_signal != 0) pthread_kill(t->t.native_handle(), cfg_.wake_signal);
    }
    if (all_done) break;
    pollfd none{-1, 0, 0};
    ::poll(&none, 1, 5);
  }
  for (auto& t : threads_) t->t.join();
  threads_.clear();
  return error_.load();
}

void DevLoop::finish(int res) {
  if (res < 0) {
    int expected = 0;
    error_.compare_exchange_strong(expected, res);
    spdlog::error("/dev/fuse: reading the next request failed: {}", std::strerror(-res));
  }
  fuse_session_exit(se_);
  stop_.store(true, std::memory_order_release);
  const std::uint64_t one = 1;
  (void)!::write(stop_fd_.get(), &one, sizeof one);
}

bool DevLoop::wanted(Linger& linger) { return cfg_.linger_wanted ? cfg_.linger_wanted() : linger.wanted(); }

void DevLoop::serve(fuse_buf& buf) { fuse_session_process_buf(se_, &buf); }

void DevLoop::worker(unsigned me) {
  fuse_buf buf{};
  Linger linger(cfg_.linger_us);
  Window window;
  bool found_at_once = false;
  unsigned streak = 0;
  std::uint32_t last_pid = 0;
  while (!stopping()) {
    if (mode_.load(std::memory_order_acquire) == Mode::shared) {
      if (!serve_shared(me, buf, linger, window)) break;
    } else if (leader_.load(std::memory_order_acquire) == me) {
      if (!lead(buf, linger, found_at_once, streak, last_pid)) break;
      continue;
    } else {
      park(me);
    }
    // A leader's count of queued callers starts afresh.
    found_at_once = false;
    streak = 0;
    last_pid = 0;
  }
  std::free(buf.mem);
}

bool DevLoop::serve_shared(unsigned me, fuse_buf& buf, Linger& linger, Window& w) {
  const int res = fuse_session_receive_buf(se_, &buf);
  if (res == -EINTR || res == -EAGAIN) return true;  // a signal; or the device turned non-blocking: look again
  if (res <= 0) {
    finish(res);
    return false;
  }
  // Whether callers take turns: the caller (thread) of each request against
  // the one before it, whichever thread read that. Requests the kernel
  // sends on its own (FORGET, INTERRUPT: pid 0) do not count. A load and,
  // only when the caller changed, a store: no read-modify-write for the
  // two threads' CPUs to pass between them at every request.
  const std::uint32_t pid = request_pid(buf);
  if (pid != 0 && last_pid_.load(std::memory_order_relaxed) != pid) {
    last_pid_.store(pid, std::memory_order_relaxed);
    ++w.switches;
  }
  serve(buf);
  if (++w.requests == kWindow) {
    if (w.switches < kWindowSwitches) try_lingering(me, linger);
    w = Window{};
  }
  return true;
}

void DevLoop::try_lingering(unsigned me, Linger& linger) {
  if (cfg_.linger_us == 0) return;
  const std::int64_t now = now_ns();
  if (now < next_try_ns_.load(std::memory_order_relaxed)) return;
  next_try_ns_.store(now + std::chrono::nanoseconds(kRetry).count(), std::memory_order_relaxed);
  if ((cfg_.ring_active && cfg_.ring_active()) || !wanted(linger)) return;
  std::lock_guard lock(mu_);
  if (stopping() || mode_.load() != Mode::shared) return;
  if (!set_nonblocking(true)) return;
  leader_.store(me, std::memory_order_release);
  leader_busy_.store(false);
  busy_since_ns_ = 0;
  mode_.store(Mode::lingering, std::memory_order_release);
  to_lingering_.fetch_add(1, std::memory_order_relaxed);
  // The others find out when their blocked reads return (each with one
  // more request, served before they park): nothing can wake them sooner.
}

void DevLoop::to_shared(Why why) {
  std::lock_guard lock(mu_);
  to_shared_locked(why);
}

void DevLoop::to_shared_locked(Why why) {
  if (mode_.load() != Mode::lingering) return;
  if (!set_nonblocking(false)) {
    spdlog::warn("/dev/fuse: cannot make the device blocking again ({}); the loop keeps one reader",
                 std::strerror(errno));
    return;
  }
  leader_.store(kNoLeader, std::memory_order_release);
  mode_.store(Mode::shared, std::memory_order_release);
  switch (why) {
    case Why::demand: why_demand_.fetch_add(1, std::memory_order_relaxed); break;
    case Why::busy_machine: why_busy_.fetch_add(1, std::memory_order_relaxed); break;
    case Why::stuck: why_stuck_.fetch_add(1, std::memory_order_relaxed); break;
    case Why::ring: why_ring_.fetch_add(1, std::memory_order_relaxed); break;
  }
  next_try_ns_.store(now_ns() + std::chrono::nanoseconds(kRetry).count(), std::memory_order_relaxed);
  parked_cv_.notify_all();
  watcher_cv_.notify_all();
}

bool DevLoop::lead(fuse_buf& buf, Linger& linger, bool& found_at_once, unsigned& streak, std::uint32_t& last_pid) {
  int res = fuse_session_receive_buf(se_, &buf);
  if (res == -EAGAIN) {
    found_at_once = false;
    streak = 0;
    if (cfg_.ring_active && cfg_.ring_active()) {
      to_shared(Why::ring);
      return true;
    }
    if (!wanted(linger)) {
      // One busy moment (a sample of the runnable tasks that caught a
      // kernel worker) only skips this linger; a machine busy for
      // kBusyFor goes shared.
      const std::int64_t now = now_ns();
      if (busy_since_ns_ == 0) busy_since_ns_ = now;
      if (cfg_.threads > 1 && now - busy_since_ns_ >= std::chrono::nanoseconds(kBusyFor).count()) {
        busy_since_ns_ = 0;
        to_shared(Why::busy_machine);
        return true;
      }
    } else if (busy_since_ns_ = 0; linger.spin([&] {
                 res = fuse_session_receive_buf(se_, &buf);
                 return res != -EAGAIN || stopping();
               })) {
      if (stopping()) return false;
    }
    if (res == -EAGAIN) {
      // Nothing came: sleep on the device, the watcher told to rest too.
      {
        std::lock_guard lock(mu_);
        leader_polling_ = true;
      }
      pollfd p[2] = {{fd_, POLLIN, 0}, {stop_fd_.get(), POLLIN, 0}};
      ::poll(p, 2, -1);
      {
        std::lock_guard lock(mu_);
        leader_polling_ = false;
        if (watcher_idle_) watcher_cv_.notify_one();
      }
      return !stopping();
    }
  }
  if (res == -EINTR) return true;
  if (res <= 0) {
    finish(res);
    return false;
  }
  // A request from another caller, waiting already when the last one was
  // answered: callers queue behind this thread. (The same caller's next
  // request can be there that soon too: the kernel wakes it as the reply
  // is written, before this thread is back from writev.)
  const std::uint32_t pid = request_pid(buf);
  if (!found_at_once) streak = 0;
  else if (pid != 0 && pid != last_pid) ++streak;  // FORGET, INTERRUPT (pid 0): the kernel's, not a caller's
  found_at_once = true;
  if (pid != 0) last_pid = pid;
  if (streak >= kDemandStreak && cfg_.threads > 1) to_shared(Why::demand);
  leader_requests_.fetch_add(1, std::memory_order_relaxed);
  leader_busy_.store(true, std::memory_order_release);
  serve(buf);
  leader_busy_.store(false, std::memory_order_release);
  return true;
}

void DevLoop::park(unsigned me) {
  std::unique_lock lock(mu_);
  const auto still = [&] {
    return !stopping() && mode_.load() == Mode::lingering && leader_.load() != me;
  };
  if (!still()) return;
  ++parked_;
  if (watcher_taken_) {
    parked_cv_.wait(lock, [&] { return !still() || !watcher_taken_; });
    --parked_;
    return;
  }
  watcher_taken_ = true;
  while (still()) {
    if (leader_polling_) {
      watcher_idle_ = true;
      watcher_cv_.wait(lock, [&] { return !still() || !leader_polling_; });
      watcher_idle_ = false;
      continue;
    }
    // One request that keeps the leader from one look to the next has kept
    // it at least stuck_after: the others take the device.
    const bool busy = leader_busy_.load(std::memory_order_acquire);
    const std::uint64_t seen = leader_requests_.load(std::memory_order_relaxed);
    watcher_cv_.wait_for(lock, cfg_.stuck_after);
    if (still() && busy && leader_busy_.load(std::memory_order_acquire) &&
        leader_requests_.load(std::memory_order_relaxed) == seen)
      to_shared_locked(Why::stuck);
  }
  watcher_taken_ = false;
  --parked_;
  parked_cv_.notify_one();  // another may watch now, if the mode is still lingering
}

DevLoop::Counts DevLoop::counts() const {
  Counts c{to_lingering_.load(), why_demand_.load(), why_busy_.load(), why_stuck_.load(), why_ring_.load()};
  std::lock_guard lock(mu_);
  c.parked = parked_;
  c.lingering = mode_.load() == Mode::lingering;
  return c;
}

std::string DevLoop::status() const {
  const Counts c = counts();
  std::string s = mode_.load() == Mode::lingering ? "lingering" : "shared";
  s += " (" + std::to_string(std::max(1u, cfg_.threads)) + " threads, linger " + std::to_string(cfg_.linger_us) +
       " us); turned to lingering " + std::to_string(c.to_lingering) + " times, back to shared for callers queueing " +
       std::to_string(c.demand) + ", a busy machine " + std::to_string(c.busy_machine) + ", a slow request " +
       std::to_string(c.stuck) + ", io_uring " + std::to_string(c.ring);
  return s;
}

}  // namespace vsymfs::fs
