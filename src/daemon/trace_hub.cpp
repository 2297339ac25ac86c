#include "daemon/trace_hub.hpp"

#include <unistd.h>

#include <algorithm>

namespace vsymfs::daemon {

void TraceHub::Subscriber::take(std::vector<std::shared_ptr<const TraceEvent>>& out, std::size_t max,
                                std::uint64_t& dropped) {
  std::lock_guard lock(mu_);
  queue_.take(out, max);
  dropped = queue_.dropped();
  if (queue_.size() == 0) signalled_ = false;
}

TraceHub::Subscription& TraceHub::Subscription::operator=(Subscription&& o) noexcept {
  if (this != &o) {
    reset();
    hub_ = o.hub_;
    sub_ = std::move(o.sub_);
    o.hub_ = nullptr;
  }
  return *this;
}

void TraceHub::Subscription::reset() {
  if (hub_ != nullptr && sub_ != nullptr) hub_->unsubscribe(sub_);
  hub_ = nullptr;
  sub_.reset();
}

TraceHub::Subscription TraceHub::subscribe(TraceFilter filter) {
  auto s = std::make_shared<Subscriber>(std::move(filter));
  std::lock_guard lock(mu_);
  subs_.push_back(s);
  active_.store(subs_.size(), std::memory_order_relaxed);
  return Subscription(this, std::move(s));
}

void TraceHub::unsubscribe(const std::shared_ptr<Subscriber>& s) {
  std::lock_guard lock(mu_);
  auto it = std::find(subs_.begin(), subs_.end(), s);
  if (it == subs_.end()) return;
  {
    std::lock_guard sub_lock(s->mu_);
    dropped_gone_ += s->queue_.dropped();
  }
  subs_.erase(it);
  active_.store(subs_.size(), std::memory_order_relaxed);
}

bool TraceHub::wants_caller(pid_t pid, uid_t uid) const {
  std::lock_guard lock(mu_);
  return std::any_of(subs_.begin(), subs_.end(), [&](const auto& s) { return s->filter_.wants_caller(pid, uid); });
}

bool TraceHub::wants(pid_t pid, uid_t uid, std::string_view path) const {
  std::lock_guard lock(mu_);
  return std::any_of(subs_.begin(), subs_.end(), [&](const auto& s) { return s->filter_.wants(pid, uid, path); });
}

void TraceHub::publish(TraceEvent event) {
  auto e = std::make_shared<const TraceEvent>(std::move(event));
  bool wake = false, any = false;
  std::lock_guard lock(mu_);
  for (const auto& s : subs_) {
    if (!s->filter_.wants(*e)) continue;
    any = true;
    std::lock_guard sub_lock(s->mu_);
    if (s->queue_.push(e) && !s->signalled_) {
      s->signalled_ = true;
      wake = true;
    }
  }
  if (any) events_.fetch_add(1, std::memory_order_relaxed);
  // Under mu_, so that once set_wake_fd(-1) has returned nobody writes to
  // the descriptor (the server closes it next). Once per batch, and an
  // eventfd write never blocks (a full counter means the reader is awake).
  if (wake && wake_fd_ >= 0) {
    const std::uint64_t one = 1;
    (void)!::write(wake_fd_, &one, sizeof one);
  }
}

void TraceHub::set_wake_fd(int wake_fd) noexcept {
  std::lock_guard lock(mu_);
  wake_fd_ = wake_fd;
}

TraceHub::Stats TraceHub::stats() const {
  Stats st;
  std::lock_guard lock(mu_);
  st.subscribers = subs_.size();
  st.events = events_.load(std::memory_order_relaxed);
  st.dropped = dropped_gone_;
  for (const auto& s : subs_) {
    std::lock_guard sub_lock(s->mu_);
    st.dropped += s->queue_.dropped();
  }
  return st;
}

}  // namespace vsymfs::daemon
