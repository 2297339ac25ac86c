// The vsymctl commands that talk to a mount's daemon.
#pragma once

#include <string>

#include "control/protocol.hpp"

namespace vsymfs::vsymctl {

// Which daemon to ask: the mount holding `mount` (default: the current
// directory), or an explicit socket.
struct Connect {
  std::string mount = ".";
  std::string socket;
};

// Sends one request; on failure prints the error and returns the exit code
// for it (kExitNoDaemon, kExitProtocol, or kExitFailed for a refusal).
int request(const Connect& where, const control::Request& req, control::Reply& reply);

int run_set(const Connect& where, const std::string& name, const std::string& value, bool system);
int run_unset(const Connect& where, const std::string& name, bool system);
int run_list(const Connect& where, control::ScopeArg scope);
int run_reload(const Connect& where);
int run_universe(const Connect& where);
int run_status(const Connect& where);

}  // namespace vsymfs::vsymctl
