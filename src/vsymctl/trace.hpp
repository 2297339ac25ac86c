// `vsymctl trace`: stream the expansions a mount's daemon makes, live.
#pragma once

#include <optional>
#include <string>

#include "vsymctl/daemon_ops.hpp"

namespace vsymfs::vsymctl {

struct TraceArgs {
  std::string prefix;                 // a path on the mount: only links under it
  std::string user;                   // only this caller (a name or a uid)
  std::optional<long long> pid;       // only this caller pid
  long long count = 0;                // stop after this many events (0: never)
};

int run_trace(Connect where, const TraceArgs& args);

}  // namespace vsymfs::vsymctl
