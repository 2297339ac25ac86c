#include "vsymctl/daemon_ops.hpp"

#include <iostream>

#include "control/client.hpp"
#include "vsymctl/exit_codes.hpp"
#include "vsymctl/output.hpp"

namespace vsymfs::vsymctl {

using control::Op;
using control::Reply;
using control::Request;
using control::ScopeArg;

int request(const Connect& where, const Request& req, Reply& reply) {
  std::string socket = where.socket;
  if (socket.empty()) {
    auto found = control::find_socket(where.mount);
    if (!found) {
      print_error(found.error());
      return kExitNoDaemon;
    }
    socket = std::move(found.value());
  }
  auto answer = control::call(socket, req);
  if (!answer) {
    print_error(answer.error());
    const int code = answer.error().code;
    if (code == EINVAL || code == ENAMETOOLONG) return kExitUsage;  // refused before sending
    return code == EPROTO || code == EMSGSIZE || code == ETIMEDOUT ? kExitProtocol : kExitNoDaemon;
  }
  reply = std::move(answer.value());
  if (!reply.ok()) {
    print_error(make_error(reply.error, reply.message));
    return kExitFailed;
  }
  return kExitOk;
}

int run_set(const Connect& where, const std::string& name, const std::string& value, bool system) {
  Reply reply;
  return request(where, {Op::Set, system ? ScopeArg::System : ScopeArg::User, name, value, "", ""}, reply);
}

int run_unset(const Connect& where, const std::string& name, bool system) {
  Reply reply;
  return request(where, {Op::Unset, system ? ScopeArg::System : ScopeArg::User, name, "", "", ""}, reply);
}

int run_list(const Connect& where, ScopeArg scope) {
  Reply reply;
  if (int rc = request(where, {Op::List, scope, "", "", "", ""}, reply); rc != kExitOk) return rc;
  for (const auto& f : reply.fields) {
    // One scope asked for: plain NAME=VALUE lines, ready for scripts.
    if (scope == ScopeArg::All) std::cout << f.key << ' ';
    std::cout << f.value << '\n';
  }
  return kExitOk;
}

int run_reload(const Connect& where) {
  Reply reply;
  if (int rc = request(where, {Op::Reload, ScopeArg::All, "", "", "", ""}, reply); rc != kExitOk) return rc;
  const std::string* origin = reply.find("rules_origin");
  const std::string* generation = reply.find("generation");
  std::cout << "reloaded " << (origin ? *origin : "?") << " (generation " << (generation ? *generation : "?")
            << ")\n";
  return kExitOk;
}

int run_universe(const Connect& where) {
  Reply reply;
  Request req{Op::Universe, ScopeArg::All, "", "", "", ""};
  control::describe_self(req);  // the universe our environment chooses
  if (int rc = request(where, req, reply); rc != kExitOk) return rc;
  const std::string* universe = reply.find("universe");
  const std::string* scope = reply.find("scope");
  std::cout << (universe ? *universe : "") << " (" << (scope ? *scope : "?") << ")\n";
  return kExitOk;
}

int run_status(const Connect& where) {
  Reply reply;
  if (int rc = request(where, {Op::Status, ScopeArg::All, "", "", "", ""}, reply); rc != kExitOk) return rc;
  for (const auto& f : reply.fields) std::cout << f.key << ": " << f.value << '\n';
  return kExitOk;
}

}  // namespace vsymfs::vsymctl
