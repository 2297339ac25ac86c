#include "daemon/exec_watcher.hpp"

#include <poll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>

namespace vsymfs::daemon {

std::unique_ptr<ExecWatcher> ExecWatcher::open(std::function<void(pid_t)> forget, std::function<void()> forget_all) {
  auto ev = ProcEvents::open(std::chrono::milliseconds(500));
  if (!ev) return nullptr;
  std::unique_ptr<ExecWatcher> w(new ExecWatcher(std::move(*ev), std::move(forget), std::move(forget_all)));
  w->start_thread();
  return w;
}

ExecWatcher::ExecWatcher(std::unique_ptr<ProcEvents> events, std::function<void(pid_t)> forget,
                         std::function<void()> forget_all)
    : events_(std::move(events)), forget_(std::move(forget)), forget_all_(std::move(forget_all)) {}

ExecWatcher::~ExecWatcher() {
  if (thread_.joinable()) {
    std::uint64_t one = 1;
    [[maybe_unused]] ssize_t n = ::write(stop_fd_.get(), &one, sizeof one);
    thread_.join();
    stop_fd_.reset();
  }
}

void ExecWatcher::start_thread() {
  stop_fd_.reset(::eventfd(0, EFD_CLOEXEC));
  if (!stop_fd_) return;  // requests still drain before every lookup
  thread_ = std::thread([this] {
    for (;;) {
      pollfd fds[2] = {{events_->fd(), POLLIN, 0}, {stop_fd_.get(), POLLIN, 0}};
      if (::poll(fds, 2, -1) < 0 && errno != EINTR) return;
      if (fds[1].revents) return;
      if (fds[0].revents) drain();
    }
  });
}

// Applies every exec/exit event the kernel has queued for us.
void ExecWatcher::drain() {
  std::lock_guard lock(drain_mu_);
  draining_.fetch_add(1, std::memory_order_seq_cst);
  if (!events_->drain(forget_)) forget_all_();
  draining_.fetch_sub(1, std::memory_order_seq_cst);
}

}  // namespace vsymfs::daemon
