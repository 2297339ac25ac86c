// The kernel's process events connector (netlink, CN_IDX_PROC): tells the
// daemon the moment a task execs or exits, so a cached caller context can be
// trusted without reading /proc on every request.
//
// Ordering is what makes this correct: the kernel queues the exec event on
// our socket before the exec'd process returns to user space, and the exit
// event before its pid can be reused. A FUSE request from the new image is
// therefore always preceded by its event in our queue; draining the queue
// before a cache lookup sees it.
//
// Availability is proven, not assumed: the connector needs CAP_NET_ADMIN,
// CONFIG_PROC_EVENTS, and the initial pid and user namespaces (elsewhere the
// kernel silently sends nothing, or pids in another namespace). open() forks
// a child and requires its exit event, with the child's pid as we see it.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <functional>
#include <memory>

#include "vsymfs/result.hpp"
#include "vsymfs/unique_fd.hpp"

namespace vsymfs::daemon {

class ProcEvents {
 public:
  static Result<std::unique_ptr<ProcEvents>> open(std::chrono::milliseconds self_test_timeout);
  ~ProcEvents();
  ProcEvents(const ProcEvents&) = delete;
  ProcEvents& operator=(const ProcEvents&) = delete;

  // Reads every event queued now, without blocking, and calls `gone` with
  // each task id whose cached facts are void: a task that exec'd (and its
  // thread group id), exited, or was just created with that id.
  // Returns false when events were lost (the socket overflowed): the caller
  // must then forget everything it cached. Not thread-safe: serialise calls.
  bool drain(const std::function<void(pid_t)>& gone);

  // True when drain() has something to do: events queued, or events lost.
  // Consumes nothing (a poll, not a read: reading would also clear the
  // socket's overflow error), so any thread may ask at any time.
  bool pending() const noexcept;

  // For poll(2): readable when events are queued.
  int fd() const noexcept { return fd_.get(); }

 private:
  explicit ProcEvents(int fd) noexcept : fd_(fd) {}
  UniqueFd fd_;
};

}  // namespace vsymfs::daemon
