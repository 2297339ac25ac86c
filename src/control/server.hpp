// The daemon's control socket: `vsymctl` talks to it. Requests are
// authenticated by the kernel (SO_PEERCRED), never by what they claim.
#pragma once

#include <memory>
#include <string>
#include <string_view>

#include "vsymfs/result.hpp"
#include "caller_contexts.hpp"
#include "link_service.hpp"
#include "mount_state.hpp"
#include "paths.hpp"

namespace vsymfs::control {

// The virtual xattrs kXattrRaw and kXattrControl are in paths.hpp (vsymctl
// needs them without the daemon's headers).

struct ServerOptions {
  std::string socket_path;  // "" = default_socket_path(mountpoint)
  std::string state_path;   // "" = default_state_path(mountpoint)
};

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
