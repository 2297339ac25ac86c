// `vsymctl trace`: the record of one expansion, which events a subscriber
// sees (its filter) and the bounded queue that keeps a slow reader from ever
// holding up the filesystem. Pure: no FUSE, no /proc, no sockets.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "vsymfs/link_template.hpp"

namespace vsymfs {

// One expansion the daemon made for a FUSE request.
struct TraceEvent {
  std::chrono::system_clock::time_point time{};
  pid_t pid = 0;  // the calling thread as the daemon's pid namespace sees it; 0: not visible
  uid_t uid = 0;  // the request's (fs) uid
  std::string comm;       // the caller's command name ("" when unknown)
  std::string path;       // the link inside the mount, relative ("" when unknown)
  std::string raw;        // the link's text
  std::string expansion;  // the result, when error == 0
  int error = 0;          // else an errno value
  std::string message;    // and what went wrong
  std::vector<Substitution> substitutions;  // each value and the scope it came from

  // About what the event holds in memory, for the queue's byte bound.
  std::size_t bytes() const noexcept;
};

// A path inside the mount as a trace filter takes it: no leading, trailing
// or doubled slashes, "." for the root becomes "".
std::string normalize_trace_path(std::string_view path);

// Whether `path` is `prefix` or lies under it (component-wise: "a/b" holds
// "a/b" and "a/b/c", not "a/bc"). Both normalized; "" holds everything.
bool path_under(std::string_view path, std::string_view prefix) noexcept;

// What one subscriber sees: the request's filters, and for a subscriber who
// may not see everyone (not root, not the mount's owner) its own uid.
struct TraceFilter {
  std::string prefix;                // normalized; "" = every link
  std::optional<uid_t> uid;          // only this caller uid
  std::optional<pid_t> pid;          // only this caller pid
  std::optional<uid_t> viewer_only;  // set for a non-admin viewer: its uid

  // Whether a caller may be of interest (before the path is known).
  bool wants_caller(pid_t pid, uid_t uid) const noexcept;
  bool wants(pid_t pid, uid_t uid, std::string_view path) const noexcept;
  bool wants(const TraceEvent& e) const noexcept { return wants(e.pid, e.uid, e.path); }
};

// A bounded FIFO of events for one subscriber: at most max_events events
// and max_bytes bytes of them. A push that does not fit is dropped and
// counted, never waited for.
class TraceQueue {
 public:
  TraceQueue(std::size_t max_events, std::size_t max_bytes) noexcept
      : max_events_(max_events), max_bytes_(max_bytes) {}

  // false: dropped (the queue was full).
  bool push(std::shared_ptr<const TraceEvent> e);
  // Moves up to `max` events, oldest first, to the end of `out`; returns how many.
  std::size_t take(std::vector<std::shared_ptr<const TraceEvent>>& out, std::size_t max);

  std::size_t size() const noexcept { return events_.size(); }
  std::size_t bytes() const noexcept { return bytes_; }
  std::uint64_t dropped() const noexcept { return dropped_; }

 private:
  std::size_t max_events_, max_bytes_;
  std::deque<std::shared_ptr<const TraceEvent>> events_;
  std::size_t bytes_ = 0;
  std::uint64_t dropped_ = 0;
};

}  // namespace vsymfs
