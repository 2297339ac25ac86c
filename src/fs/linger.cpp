#include "fs/linger.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <charconv>

namespace vsymfs::fs {

std::optional<long> runnable_tasks(std::string_view loadavg) {
  // "0.20 0.31 0.35 2/345 12345": the fourth field is running/threads.
  std::size_t pos = 0;
  for (int field = 0; field < 3; ++field) {
    pos = loadavg.find(' ', pos);
    if (pos == std::string_view::npos) return std::nullopt;
    ++pos;
  }
  long running = 0;
  const auto [end, ec] = std::from_chars(loadavg.data() + pos, loadavg.data() + loadavg.size(), running);
  if (ec != std::errc{} || end == loadavg.data() + loadavg.size() || *end != '/') return std::nullopt;
  return running;
}

Linger::Linger(unsigned us)
    : span_(std::chrono::microseconds(us)), cpus_(std::max(1L, ::sysconf(_SC_NPROCESSORS_ONLN))) {
  if (us > 0) loadavg_.reset(::open("/proc/loadavg", O_RDONLY | O_CLOEXEC));
}

bool Linger::wanted() {
  if (!loadavg_) return false;
  const Clock::time_point now = Clock::now();
  if (now < quiet_until_) return false;
  if (now >= next_sample_) {
    next_sample_ = now + std::chrono::milliseconds(1);
    char buf[128];
    const ssize_t n = ::pread(loadavg_.get(), buf, sizeof buf, 0);
    const std::optional<long> running =
        n > 0 ? runnable_tasks(std::string_view(buf, static_cast<std::size_t>(n))) : std::nullopt;
    spare_cpu_ = running && *running <= cpus_;
  }
  return spare_cpu_;
}

}  // namespace vsymfs::fs
