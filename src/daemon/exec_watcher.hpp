// The exec watcher of CallerContexts: the kernel's exec and exit events
// (proc_events.hpp, the netlink process events connector) applied to the
// caches as they come, so that a cached context is never used for a new
// program image and no /proc read is needed per request to know that.
// A thread drains the events while no request does (so the socket does
// not overflow when the mount is idle); every lookup calls sync() first.
//
// Locks: the watcher's drain mutex is taken before anything the `forget`
// callbacks take (the caches' shard mutexes), never after.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <chrono>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>

#include "daemon/proc_events.hpp"
#include "vsymfs/unique_fd.hpp"

namespace vsymfs::daemon {

class ExecWatcher {
 public:
  // `forget(pid)`: a task exec'd, exited or its id was handed out again.
  // `forget_all()`: events were lost (the socket overflowed). Both run on
  // the watcher's thread or in sync(), one drain at a time. Null when the
  // events connector cannot be used here (ProcEvents::open proves it).
  // `thread_drains` false (tests only): the thread sets up the doorbell
  // and then leaves every event to sync().
  static std::unique_ptr<ExecWatcher> open(std::function<void(pid_t)> forget, std::function<void()> forget_all,
                                           bool thread_drains = true);
  ~ExecWatcher();  // stops and joins the thread: no callback runs after it
  ExecWatcher(const ExecWatcher&) = delete;
  ExecWatcher& operator=(const ExecWatcher&) = delete;

  // Before a lookup: every event queued before this call has been applied
  // when it returns. The common case (nothing queued, nobody draining)
  // costs no lock, and with the doorbell no syscall either: a few loads
  // of words the kernel writes. Without it, one poll. Inline: every full()
  // lookup calls it.
  //
  // Why it is exact, without the doorbell: the kernel queues a process's
  // exec event before the new image can make the request we are serving.
  // Either the event is still queued when we poll (pending: we drain), or
  // a drainer has read it already; that drainer raised `draining_` before
  // its read, its read happened before our poll (the socket's queue lock
  // orders the two), so we see `draining_` raised until it has applied the
  // event, and then we drain too, which waits for it on drain_mu_.
  //
  // The doorbell: an io_uring the watcher's thread owns holds a multishot
  // poll of the events socket, set up so that the kernel's wake-up of the
  // socket, run by the exec'ing task itself before its exec returns,
  // raises IORING_SQ_TASKRUN in the ring's shared flags (DEFER_TASKRUN and
  // TASKRUN_FLAG: the poll's completion waits for the owner to enter the
  // ring). Only the watcher's thread enters it, and only inside a drain:
  // after raising `draining_`, it runs the completion (which lowers the
  // flag and posts a CQE), reaps, reads the socket, applies the events and
  // lowers `draining_`. So an event queued before this call shows as the
  // flag raised, a CQE not yet reaped, or `draining_` raised (read in that
  // order), until it has been applied; any of them makes us drain, which
  // reads the socket ourselves, as without the doorbell.
  void sync() {
    if (const Bell* b = bell_.load(std::memory_order_acquire)) {
      if (rung(*b) || draining_.load(std::memory_order_seq_cst) != 0) drain();
      return;
    }
    if (events_->pending() || draining_.load(std::memory_order_seq_cst) != 0) drain();
  }
  // Whether sync() checks the doorbell instead of polling (the kernel
  // lets this process use io_uring with DEFER_TASKRUN; Linux 6.1+).
  bool doorbell() const noexcept { return bell_.load(std::memory_order_acquire) != nullptr; }

 private:
  ExecWatcher(std::unique_ptr<ProcEvents> events, std::function<void(pid_t)> forget,
              std::function<void()> forget_all);
  // The words of the watcher's ring that sync() reads (the ring's own
  // mapping, set before it is published).
  struct Bell {
    const unsigned* sq_flags = nullptr;
    const unsigned* cq_head = nullptr;
    const unsigned* cq_tail = nullptr;
    unsigned mask = 0;  // IORING_SQ_TASKRUN | IORING_SQ_CQ_OVERFLOW
  };
  static bool rung(const Bell& b) noexcept {
    if ((__atomic_load_n(b.sq_flags, __ATOMIC_ACQUIRE) & b.mask) != 0) return true;
    return __atomic_load_n(b.cq_tail, __ATOMIC_ACQUIRE) != __atomic_load_n(b.cq_head, __ATOMIC_RELAXED);
  }
  struct Ring;  // exec_watcher.cpp: the io_uring (liburing) behind the Bell

  // `ring`: only the watcher's thread passes its ring, to run and reap it.
  void drain(Ring* ring = nullptr);
  void start_thread(bool drains);

  std::unique_ptr<ProcEvents> events_;
  const std::function<void(pid_t)> forget_;
  const std::function<void()> forget_all_;
  std::mutex drain_mu_;           // serialises drains
  std::atomic<int> draining_{0};  // threads inside drain() (see sync)
  std::thread thread_;
  vsymfs::UniqueFd stop_fd_;
  // Made on the watcher's thread (a DEFER_TASKRUN ring belongs to the task
  // that made it), freed after the thread ends: sync() may read its words
  // until then.
  std::unique_ptr<Ring> ring_;
  Bell bell_words_;
  std::atomic<const Bell*> bell_{nullptr};
};

}  // namespace vsymfs::daemon
