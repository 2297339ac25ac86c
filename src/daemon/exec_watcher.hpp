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
  static std::unique_ptr<ExecWatcher> open(std::function<void(pid_t)> forget, std::function<void()> forget_all);
  ~ExecWatcher();  // stops and joins the thread: no callback runs after it
  ExecWatcher(const ExecWatcher&) = delete;
  ExecWatcher& operator=(const ExecWatcher&) = delete;

  // Before a lookup: every event queued before this call has been applied
  // when it returns. The common case (nothing queued, nobody draining)
  // costs one poll and no lock. Inline: every full() lookup calls it.
  //
  // Why it is exact: the kernel queues a process's exec event before the
  // new image can make the request we are serving. Either the event is
  // still queued when we poll (pending: we drain), or a drainer has read it
  // already; that drainer raised `draining_` before its read, its read
  // happened before our poll (the socket's queue lock orders the two), so
  // we see `draining_` raised until it has applied the event, and then we
  // drain too, which waits for it on drain_mu_.
  void sync() {
    if (events_->pending() || draining_.load(std::memory_order_seq_cst) != 0) drain();
  }

 private:
  ExecWatcher(std::unique_ptr<ProcEvents> events, std::function<void(pid_t)> forget,
              std::function<void()> forget_all);
  void drain();
  void start_thread();

  std::unique_ptr<ProcEvents> events_;
  const std::function<void(pid_t)> forget_;
  const std::function<void()> forget_all_;
  std::mutex drain_mu_;           // serialises drains
  std::atomic<int> draining_{0};  // threads inside drain() (see sync)
  std::thread thread_;
  vsymfs::UniqueFd stop_fd_;
};

}  // namespace vsymfs::daemon
