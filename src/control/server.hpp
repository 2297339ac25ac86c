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

namespace vsymfs::control {

// Virtual xattrs the FUSE layer answers (documented in vsymfs(8)):
inline constexpr std::string_view kXattrRaw = "security.vsymfs.raw";          // a symlink's raw text
inline constexpr std::string_view kXattrControl = "security.vsymfs.control";  // this mount's socket path

struct ServerOptions {
  std::string socket_path;  // "" = default_socket_path(mountpoint)
  std::string state_path;   // "" = default_state_path(mountpoint)
};

// Defaults derived from the mountpoint, so a restarted daemon finds its state.
std::string default_socket_path(std::string_view mountpoint);
std::string default_state_path(std::string_view mountpoint);

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
