#include "vsymctl/trace.hpp"

#include <limits.h>
#include <pwd.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <cstring>
#include <iostream>

#include "control/client.hpp"
#include "vsymctl/exit_codes.hpp"
#include "vsymctl/explain.hpp"
#include "vsymctl/output.hpp"
#include "control/trace_wire.hpp"

namespace vsymfs::vsymctl {
namespace {

std::optional<uid_t> uid_of(const std::string& user) {
  unsigned long long n = 0;
  auto [end, ec] = std::from_chars(user.data(), user.data() + user.size(), n);
  if (ec == std::errc{} && end == user.data() + user.size() && n < 4294967295ULL) return static_cast<uid_t>(n);
  if (const passwd* pw = ::getpwnam(user.c_str())) return pw->pw_uid;
  return std::nullopt;
}

}  // namespace

int run_trace(Connect where, const TraceArgs& args) {
  control::Request req;
  req.op = control::Op::Trace;
  if (!args.prefix.empty()) {
    std::string abs = args.prefix;
    if (abs.front() != '/') {
      char cwd[PATH_MAX];
      if (::getcwd(cwd, sizeof cwd) == nullptr) {
        print_error(make_error(errno, std::string("getcwd: ") + std::strerror(errno)));
        return kExitFailed;
      }
      abs = std::string(cwd) + (std::strcmp(cwd, "/") == 0 ? "" : "/") + abs;
    }
    req.prefix = dir_for_daemon(abs);
    // The prefix names the mount unless --mount or --socket did.
    if (where.socket.empty() && where.mount == ".") where.mount = abs;
  }
  if (!args.user.empty()) {
    const auto uid = uid_of(args.user);
    if (!uid) {
      print_error(make_error(EINVAL, "no such user '" + args.user + "'"));
      return kExitUsage;
    }
    req.uid = *uid;
  }
  if (args.pid) {
    if (*args.pid < 0 || *args.pid > INT_MAX) {
      print_error(make_error(EINVAL, "pid out of range"));
      return kExitUsage;
    }
    req.pid = static_cast<std::int32_t>(*args.pid);
  }

  std::string socket = where.socket;
  if (socket.empty()) {
    auto found = control::find_socket(where.mount);
    if (!found) {
      print_error(found.error());
      return kExitNoDaemon;
    }
    socket = std::move(found.value());
  }
  long long seen = 0;
  auto result = control::stream(socket, req, [&](const control::Reply& record) {
    const std::string* kind = record.find("kind");
    if (kind != nullptr && *kind == "started") {
      const std::string* sees = record.find("sees");
      std::cerr << "vsymctl: tracing expansions ("
                << (sees != nullptr && *sees == "all" ? "every caller" : "your own requests only") << ")\n";
      return true;
    }
    const std::string line = control::format_trace_record(record);
    if (line.empty()) return true;  // a record kind this vsymctl does not know
    std::cout << line << std::endl;  // live: one line as each arrives
    if (kind != nullptr && *kind == "event") ++seen;
    return args.count <= 0 || seen < args.count;
  });
  if (!result) {
    print_error(result.error());
    const int code = result.error().code;
    if (code == EINVAL || code == ENAMETOOLONG) return kExitUsage;
    return code == EPROTO || code == EMSGSIZE || code == ETIMEDOUT ? kExitProtocol : kExitNoDaemon;
  }
  if (!result->ok()) {
    print_error(make_error(result->error, result->message));
    return kExitFailed;
  }
  return kExitOk;
}

}  // namespace vsymfs::vsymctl
