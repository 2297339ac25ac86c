#include "vsymfs/trace.hpp"

namespace vsymfs {

std::size_t TraceEvent::bytes() const noexcept {
  std::size_t n = sizeof *this + comm.size() + path.size() + raw.size() + expansion.size() + message.size();
  for (const Substitution& s : substitutions) n += sizeof s + s.reference.size() + s.value.size();
  return n;
}

std::string normalize_trace_path(std::string_view path) {
  std::string out;
  std::size_t i = 0;
  while (i < path.size()) {
    const std::size_t slash = path.find('/', i);
    const std::size_t end = slash == std::string_view::npos ? path.size() : slash;
    const std::string_view part = path.substr(i, end - i);
    if (!part.empty() && part != ".") {
      if (!out.empty()) out += '/';
      out += part;
    }
    i = end + 1;
  }
  return out;
}

bool path_under(std::string_view path, std::string_view prefix) noexcept {
  if (prefix.empty()) return true;
  if (path.size() < prefix.size() || path.compare(0, prefix.size(), prefix) != 0) return false;
  return path.size() == prefix.size() || path[prefix.size()] == '/';
}

bool TraceFilter::wants_caller(pid_t p, uid_t u) const noexcept {
  if (viewer_only && *viewer_only != u) return false;
  if (uid && *uid != u) return false;
  if (pid && *pid != p) return false;
  return true;
}

bool TraceFilter::wants(pid_t p, uid_t u, std::string_view path) const noexcept {
  return wants_caller(p, u) && path_under(path, prefix);
}

bool TraceQueue::push(std::shared_ptr<const TraceEvent> e) {
  const std::size_t b = e->bytes();
  if (events_.size() >= max_events_ || bytes_ + b > max_bytes_) {
    ++dropped_;
    return false;
  }
  bytes_ += b;
  events_.push_back(std::move(e));
  return true;
}

std::size_t TraceQueue::take(std::vector<std::shared_ptr<const TraceEvent>>& out, std::size_t max) {
  std::size_t n = 0;
  while (n < max && !events_.empty()) {
    bytes_ -= events_.front()->bytes();
    out.push_back(std::move(events_.front()));
    events_.pop_front();
    ++n;
  }
  return n;
}

}  // namespace vsymfs
