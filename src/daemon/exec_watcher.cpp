#include "daemon/exec_watcher.hpp"

#include <liburing.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>

namespace vsymfs::daemon {

std::unique_ptr<ExecWatcher> ExecWatcher::open(std::function<void(pid_t)> forget, std::function<void()> forget_all,
                                               bool thread_drains) {
  auto ev = ProcEvents::open(std::chrono::milliseconds(500));
  if (!ev) return nullptr;
  std::unique_ptr<ExecWatcher> w(new ExecWatcher(std::move(*ev), std::move(forget), std::move(forget_all)));
  w->start_thread(thread_drains);
  return w;
}

ExecWatcher::ExecWatcher(std::unique_ptr<ProcEvents> events, std::function<void(pid_t)> forget,
                         std::function<void()> forget_all)
    : events_(std::move(events)), forget_(std::move(forget)), forget_all_(std::move(forget_all)) {}

struct ExecWatcher::Ring {
  io_uring ring{};
  bool made = false;
  ~Ring() {
    if (made) io_uring_queue_exit(&ring);
  }
  // Arms the multishot poll of `fd`. False when the submission failed.
  bool arm(int fd) {
    io_uring_sqe* sqe = io_uring_get_sqe(&ring);
    if (sqe == nullptr) return false;
    io_uring_prep_poll_multishot(sqe, fd, POLLIN);
    return io_uring_submit(&ring) == 1;
  }
  // Runs the poll's deferred completion and reaps what it posted. False
  // when the poll has ended (no IORING_CQE_F_MORE) and must be armed again.
  bool run_and_reap() {
    io_uring_get_events(&ring);
    bool armed = true;
    unsigned head = 0, n = 0;
    io_uring_cqe* cqe = nullptr;
    io_uring_for_each_cqe(&ring, head, cqe) {
      ++n;
      if ((cqe->flags & IORING_CQE_F_MORE) == 0) armed = false;
    }
    io_uring_cq_advance(&ring, n);
    return armed;
  }
};

ExecWatcher::~ExecWatcher() {
  if (thread_.joinable()) {
    std::uint64_t one = 1;
    [[maybe_unused]] ssize_t n = ::write(stop_fd_.get(), &one, sizeof one);
    thread_.join();
    stop_fd_.reset();
  }
  bell_.store(nullptr, std::memory_order_release);
  ring_.reset();
}

void ExecWatcher::start_thread(bool drains) {
  stop_fd_.reset(::eventfd(0, EFD_CLOEXEC));
  if (!stop_fd_) return;  // requests still drain before every lookup
  thread_ = std::thread([this, drains] {
    // The doorbell (exec_watcher.hpp), where the kernel lets us: io_uring
    // may be off (kernel.io_uring_disabled, a seccomp filter) or older
    // than DEFER_TASKRUN (Linux 6.1). Then sync() polls.
    auto ring = std::make_unique<Ring>();
    io_uring_params p{};
    p.flags = IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN | IORING_SETUP_TASKRUN_FLAG;
    if (io_uring_queue_init_params(8, &ring->ring, &p) == 0) {
      ring->made = true;
      if (ring->arm(events_->fd())) {
        bell_words_ = {ring->ring.sq.kflags, ring->ring.cq.khead, ring->ring.cq.ktail,
                       IORING_SQ_TASKRUN | IORING_SQ_CQ_OVERFLOW};
        ring_ = std::move(ring);
        // What came before the poll was armed: a drain once it is.
        drain(ring_.get());
        bell_.store(&bell_words_, std::memory_order_release);
      }
    }
    Ring* mine = ring_.get();
    for (;;) {
      // The ring's descriptor is readable while its poll has a completion
      // to run or a CQE to reap: a request that drained the socket first
      // leaves that for us, and the flag stays up until we run it.
      pollfd fds[3] = {{drains ? events_->fd() : -1, POLLIN, 0}, {stop_fd_.get(), POLLIN, 0},
                       {drains && mine != nullptr ? mine->ring.ring_fd : -1, POLLIN, 0}};
      if (::poll(fds, 3, -1) < 0 && errno != EINTR) return;
      if (fds[1].revents) return;
      if (fds[0].revents || fds[2].revents) drain(mine);
    }
  });
}

// Applies every exec/exit event the kernel has queued for us.
void ExecWatcher::drain(Ring* ring) {
  std::lock_guard lock(drain_mu_);
  draining_.fetch_add(1, std::memory_order_seq_cst);
  // Raised before the ring's flag can fall (sync()'s reading order), on
  // every architecture: the kernel's clearing of the flag is no barrier.
  std::atomic_thread_fence(std::memory_order_seq_cst);
  if (ring != nullptr && !ring->run_and_reap() && !ring->arm(events_->fd())) {
    // The poll ended and cannot be armed again: back to polling. The
    // words stay mapped until the destructor.
    bell_.store(nullptr, std::memory_order_release);
  }
  if (!events_->drain(forget_)) forget_all_();
  draining_.fetch_sub(1, std::memory_order_seq_cst);
}

}  // namespace vsymfs::daemon
