#include "vsymctl/run.hpp"

#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <iostream>

#include "control/client.hpp"
#include "vsymctl/exit_codes.hpp"
#include "vsymctl/output.hpp"

namespace vsymfs::vsymctl {
namespace {

// The variable a process sets to choose its universe, as the mount's rules
// name it. Without a reachable mount the built-in default, UNIVERSE, is used
// unless the user named a mount explicitly (then failing is the honest answer).
Result<std::string> universe_variable(const Connect& where, bool mount_given, const std::string& universe) {
  std::string socket = where.socket;
  if (socket.empty()) {
    auto found = control::find_socket(where.mount);
    if (!found) {
      if (mount_given) return found.error();
      return std::string("UNIVERSE");
    }
    socket = std::move(found.value());
  }
  auto reply = control::call(socket, {control::Op::Universe, control::ScopeArg::All, "", "", "", ""});
  if (!reply) return reply.error();
  if (!reply->ok()) return make_error(reply->error, reply->message);
  const std::string* var = reply->find("env_var");
  if (var == nullptr || var->empty()) return make_error(EPROTO, "the daemon did not name its universe variable");
  if (const std::string* declared = reply->find("universes"); declared != nullptr && !declared->empty()) {
    const std::string padded = " " + *declared + " ";
    if (padded.find(" " + universe + " ") == std::string::npos)
      return make_error(EINVAL, "unknown universe '" + universe + "' (declared: " + *declared + ")");
  }
  return *var;
}

}  // namespace

int run_command(const Connect& where, bool mount_given, const RunArgs& args) {
  if (args.command.empty()) {
    print_error(make_error(EINVAL, "no command given (vsymctl run [--universe U] [--env K=V]... -- CMD ARGS...)"));
    return kExitRunFailed;
  }
  if (!args.universe.empty()) {
    auto var = universe_variable(where, mount_given, args.universe);
    if (!var) {
      print_error(var.error());
      return kExitRunFailed;
    }
    ::setenv(var->c_str(), args.universe.c_str(), 1);
  }
  for (const std::string& kv : args.env) {
    const auto eq = kv.find('=');
    if (eq == std::string::npos || eq == 0) {
      print_error(make_error(EINVAL, "--env expects NAME=VALUE, got '" + kv + "'"));
      return kExitRunFailed;
    }
    ::setenv(kv.substr(0, eq).c_str(), kv.substr(eq + 1).c_str(), 1);
  }
  std::vector<char*> argv;
  for (const std::string& a : args.command) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  ::execvp(argv[0], argv.data());
  const int err = errno;
  print_error(make_error(err, "cannot run " + args.command[0] + ": " + std::strerror(err)));
  return err == ENOENT ? kExitNotFound : kExitCannotExecute;
}

}  // namespace vsymfs::vsymctl
