// vsymctl's side of the control socket: find a mount's daemon and send it one
// request. Blocking, with a time limit, so a stuck daemon cannot hang vsymctl.
#pragma once

#include <functional>
#include <string>

#include "control/protocol.hpp"
#include "vsymfs/result.hpp"

namespace vsymfs::control {

// The control socket of the vsymfs mount holding `path` (read from the
// security.vsymfs.control xattr, without following a final symlink).
// ENODATA / ENOTSUP / EOPNOTSUPP: `path` is not on a vsymfs mount.
Result<std::string> find_socket(const std::string& path);

// Connects, sends `req`, waits for the reply. Errors (transport only; a
// refusal by the daemon is an ok Result holding an error Reply):
//   ECONNREFUSED, ENOENT, EACCES...  the daemon cannot be reached
//   ETIMEDOUT                        no reply within timeout_ms
//   EPROTO, EMSGSIZE                 the reply is malformed
// A daemon that answers EAGAIN (too many connections of this uid open) is
// asked again, with growing pauses, until timeout_ms has passed. A daemon
// older than the process fields (it refuses them as unexpected) is asked
// once more without them; it then reads what it wants from /proc itself.
Result<Reply> call(const std::string& socket_path, const Request& req, int timeout_ms = 10000);

// A trace: connects, sends `req` (Op::Trace), and hands each record of the
// stream (trace_wire.hpp), the `started` one first, to `on_record` until it
// returns false (then an ok Reply). The first record must come within
// timeout_ms (EAGAIN refusals are retried as by call()); later ones are
// waited for without limit. A refusal is returned as its error Reply;
// ECONNRESET when the daemon closes the stream.
Result<Reply> stream(const std::string& socket_path, const Request& req,
                     const std::function<bool(const Reply&)>& on_record, int timeout_ms = 10000);

// Fills the process fields of an explain or universe request with this
// process's own facts: its environment (the `environ` it was started with;
// none in secure-execution mode), whether it is in secure-execution mode
// (AT_SECURE, or real and effective ids differ), whether it is 32-bit (its
// own build, or the PER_LINUX32 personality). The environment is cut at
// kMaxEnvironSize between entries, as the daemon cuts /proc/<pid>/environ.
void describe_self(Request& req);

}  // namespace vsymfs::control
