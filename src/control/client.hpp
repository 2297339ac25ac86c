// vsymctl's side of the control socket: find a mount's daemon and send it one
// request. Blocking, with a time limit, so a stuck daemon cannot hang vsymctl.
#pragma once

#include <string>

#include "protocol.hpp"
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
Result<Reply> call(const std::string& socket_path, const Request& req, int timeout_ms = 10000);

}  // namespace vsymfs::control
