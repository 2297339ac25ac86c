// The worker pool of CallerContexts: a few threads that do the /proc reads
// which may block (a process inside execve of a file on our own mount). A
// stuck read holds one helper, never a FUSE worker; at most `threads` can
// be stuck and at most `max_queued` requests wait, so nothing grows
// without bound. What is read, and how, is proc_reader's.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "daemon/binfmt_registry.hpp"
#include "vsymfs/emulation.hpp"

namespace vsymfs::daemon {

// What the helper threads read from /proc for one process image.
struct ProcJob {
  pid_t pid = 0;
  bool try_execve_envp = false;  // safe on this kernel (see proc::read_execve_envp)
  std::mutex mu;
  std::condition_variable cv;
  bool done = false;
  bool abandoned = false;  // the requester stopped waiting: skip if not started
  bool environ_ok = false;
  std::vector<std::string> environ;
  bool auxv_secure = true;  // unknown auxv counts as secure: the process scope stays off
  bool compat32 = false;
  bool from_execve = false;  // environ is the envp of an execve in progress
  std::shared_ptr<BinfmtRegistry> binfmt;      // which files are emulators
  std::shared_ptr<const Emulation> emulation;  // null: a native program
};

class ProcPool {
 public:
  ProcPool(unsigned threads, std::size_t max_queued);
  ~ProcPool();
  ProcPool(const ProcPool&) = delete;
  ProcPool& operator=(const ProcPool&) = delete;

  // Runs `job` on a helper and waits for it at most `timeout`. False when
  // it did not complete in time, or was refused because `max_queued` jobs
  // wait already (every helper may be stuck): that is a timeout, counted
  // here and only here (timeouts()). An abandoned job that has not started
  // is skipped; one that has runs to its end on its helper, unread.
  bool run(const std::shared_ptr<ProcJob>& job, std::chrono::milliseconds timeout);

  // Jobs that did not complete in time or were refused.
  std::uint64_t timeouts() const noexcept {
    return counter_.load(std::memory_order_acquire)->load(std::memory_order_relaxed);
  }
  // Count timeouts into `counter` from now on (MountState's
  // environ_timeouts), which then holds those counted so far too; it must
  // outlive the pool.
  void count_timeouts_in(std::atomic<std::uint64_t>* counter) noexcept;

 private:
  struct State {
    std::size_t max_queued = 0;
    std::mutex mu;
    std::condition_variable cv;
    std::deque<std::shared_ptr<ProcJob>> queue;
    bool stop = false;
  };

  bool submit(std::shared_ptr<ProcJob> job);
  static void work(State& st);
  static void read_process(ProcJob& job);

  std::shared_ptr<State> state_;
  std::atomic<std::uint64_t> own_timeouts_{0};
  std::atomic<std::atomic<std::uint64_t>*> counter_{&own_timeouts_};
};

}  // namespace vsymfs::daemon
