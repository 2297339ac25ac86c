// The daemon's control socket: `vsymctl` talks to it. Requests are
// authenticated by the kernel (SO_PEERCRED, SO_PEERGROUPS), never by what
// they claim. What a client says about its own process (its environment)
// is used for answers to that client only, and the daemon never reads
// another process's /proc for a request: a pid names whoever holds it now.
#pragma once

#include <chrono>
#include <cstddef>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "vsymfs/result.hpp"
#include "daemon/caller_contexts.hpp"
#include "daemon/link_service.hpp"
#include "daemon/mount_state.hpp"
#include "control/paths.hpp"
#include "daemon/status.hpp"

namespace vsymfs::control {

// The virtual xattrs kXattrRaw and kXattrControl are in paths.hpp (vsymctl
// needs them without the daemon's headers).

struct ServerOptions {
  std::string socket_path;  // "" = default_socket_path(mountpoint)
  std::string state_path;   // "" = default_state_path(mountpoint)
  // A connection is closed this long after it was accepted, or once it
  // has gone this long without a byte received or sent (tests change them).
  std::chrono::milliseconds connection_deadline{5000};
  std::chrono::milliseconds idle_timeout{2000};
  // What `vsymctl status` prints besides the mount state's lines (asked
  // first) and the server's own (last): each provider's lines in this
  // order. Not owned; each must outlive the server.
  std::vector<const daemon::StatusProvider*> status;
};

// Connection limits: at most kMaxConnections open at once (each holds a
// descriptor and up to kMaxRequestSize bytes), and at most
// kMaxConnectionsPerUid of them for one uid, so one user's idle connections
// never keep another user out. A uid at its limit is refused (EAGAIN, which
// vsymctl retries); when all slots are taken, a newcomer whose uid holds
// fewer than the busiest uid takes that uid's oldest connection's slot.
inline constexpr std::size_t kMaxConnections = 64;
inline constexpr std::size_t kMaxConnectionsPerUid = 8;
// A trace (`vsymctl trace`) keeps its connection, and its slot, open with
// no deadline or idle timeout; one uid holds at most this many, so its
// other requests always find a slot (EUSERS beyond).
inline constexpr std::size_t kMaxTracesPerUid = 4;

// default_socket_path(mountpoint) and default_state_path(mountpoint) are in
// paths.hpp.

class Server {
 public:
  // Loads persisted run-time values into `state` (publish_runtime), binds the
  // socket and starts serving on a thread of its own.
  static Result<std::unique_ptr<Server>> start(daemon::MountState& state, daemon::LinkService& links,
                                               daemon::CallerContexts& contexts, ServerOptions opts);
  ~Server();  // stops the thread, removes the socket
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  const std::string& socket_path() const noexcept;

 private:
  Server();
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace vsymfs::control
