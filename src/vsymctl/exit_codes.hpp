// vsymctl's exit codes (documented in vsymctl(1)); scripts rely on them.
#pragma once

namespace vsymfs::vsymctl {

inline constexpr int kExitOk = 0;
inline constexpr int kExitFailed = 1;     // the operation failed: expansion error, invalid rules, refused
inline constexpr int kExitUsage = 2;      // bad command line
inline constexpr int kExitNoDaemon = 3;   // not on a vsymfs mount, or its daemon cannot be reached
inline constexpr int kExitProtocol = 4;   // the daemon's reply was malformed or late
// `vsymctl run`, as env(1) and nice(1) do:
inline constexpr int kExitRunFailed = 125;      // vsymctl itself failed before running the command
inline constexpr int kExitCannotExecute = 126;  // the command exists but cannot be executed
inline constexpr int kExitNotFound = 127;       // the command was not found

}  // namespace vsymfs::vsymctl
