// How expansions travel to vsymctl and how vsymctl prints them: the
// provenance fields shared by `explain` and `trace`, and the records of a
// trace stream. Pure: no sockets, no FUSE, no /proc.
//
// A trace stream (after the request, on the same connection) is a series
// of `ok` replies, each with a first field `kind`:
//     started   the trace runs; `sees` is "all" (root, the mount's owner)
//               or "own" (the requester's own requests only)
//     event     time (UTC, microseconds), pid, uid, comm, path, raw, then
//               `expansion` or `error`, then the substitutions as
//               consecutive ref, value, scope fields (as explain sends them)
//     dropped   count (events lost since the last record because this
//               reader was too slow), total (lost so far on this trace)
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "control/protocol.hpp"
#include "vsymfs/link_template.hpp"
#include "vsymfs/trace.hpp"

namespace vsymfs::control {

// Substitutions as consecutive (ref, value, scope) fields.
void add_substitutions(Reply& reply, const std::vector<Substitution>& subs);
// "REF = VALUE  (SCOPE)" for each (ref, value, scope) run of fields, in order.
std::vector<std::string> substitution_lines(const Reply& reply);

// "NAME: message" for an errno value.
std::string errno_text(int code, const std::string& message);

Reply trace_started(bool sees_all);
Reply trace_event(const TraceEvent& e);
Reply trace_dropped(std::uint64_t count, std::uint64_t total);

// One line (no newline) for a stream record, as vsymctl prints it:
//   TIME uid U pid P (COMM) PATH: RAW -> EXPANSION  [REF = VALUE (SCOPE), ...]
//   TIME uid U pid P (COMM) PATH: RAW -> error ENOENT: ...  [...]
//   TIME dropped N events (this reader was too slow; T in all)
// "" for a record of no kind it knows (a newer daemon's).
std::string format_trace_record(const Reply& record);

}  // namespace vsymfs::control
