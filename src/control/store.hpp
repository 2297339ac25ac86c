// Run-time values (`vsymctl set`) persisted across daemon restarts.
//
// The state file is TOML, written only by the daemon:
//
//     version = 1
//     [system]
//     NAME = "value"
//     [user.1000]
//     NAME = "value"
//
// Durability: every change is written to a temporary file in the same
// directory, fsync'ed, renamed over the state file, and the directory is
// fsync'ed; only then is the change published and acknowledged. A crash at
// any point leaves either the old or the new file, never a torn one, and
// loses no acknowledged change.
#pragma once

#include <sys/types.h>

#include <memory>
#include <mutex>
#include <string>
#include <string_view>

#include "vsymfs/result.hpp"
#include "vsymfs/runtime_vars.hpp"

namespace vsymfs::control {

// Pure (de)serialisation. parse_state names the origin, line and column of
// any error and checks every name and value against the run-time limits.
std::string serialize_state(const RuntimeVars& vars);
Result<RuntimeVars> parse_state(std::string_view text, std::string_view origin);

// Copy-on-write edits: a new table with the change, or the limit it broke.
Result<std::shared_ptr<const RuntimeVars>> with_set(const RuntimeVars& current, bool system, uid_t uid,
                                                     std::string_view name, std::string_view value);
// Unsetting a name that is not set is ENOENT.
Result<std::shared_ptr<const RuntimeVars>> with_unset(const RuntimeVars& current, bool system, uid_t uid,
                                                       std::string_view name);

class StateFile {
 public:
  explicit StateFile(std::string path) : path_(std::move(path)) {}
  const std::string& path() const noexcept { return path_; }

  struct Loaded {
    RuntimeVars vars;
    // Set when the file was corrupt: what was wrong and where the file was
    // moved (it is never overwritten); the daemon logs it and starts empty.
    std::string warning;
  };
  // A missing file is an empty table. Unreadable (EACCES, EIO...) is an
  // error: starting empty would overwrite values on the next change.
  Result<Loaded> load() const;

  // Atomic, durable replace (see the file comment). Creates the directory
  // (0755) when missing; the file is 0600.
  Result<void> save(const RuntimeVars& vars) const;

 private:
  std::string path_;
};

}  // namespace vsymfs::control
