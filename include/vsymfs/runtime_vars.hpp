// Values set at run time with `vsymctl set`: one table per uid (user scope)
// and one for the system scope (root only). Immutable once published: the
// daemon swaps a whole new RuntimeVars in (copy-on-write), so readers on the
// readlink path take no lock.
#pragma once

#include <sys/types.h>

#include <cstddef>
#include <string>
#include <string_view>
#include <unordered_map>

#include "vsymfs/result.hpp"
#include "vsymfs/var_map.hpp"

namespace vsymfs {

// Limits in the spirit of DragonFly's varsym (names 64, values 256 bytes).
inline constexpr std::size_t kMaxVarName = 64;
inline constexpr std::size_t kMaxVarValue = 256;
inline constexpr std::size_t kMaxVarsPerUser = 256;
inline constexpr std::size_t kMaxVarsSystem = 1024;

struct RuntimeVars {
  std::unordered_map<uid_t, VarMap> users;  // user scope, by uid
  VarMap system;                            // system scope
};

// A valid variable name: [A-Za-z_][A-Za-z0-9_]*, at most kMaxVarName bytes.
bool valid_var_name(std::string_view name) noexcept;

// Checks name and value (length, no NUL, no newline) and the per-scope count.
// EINVAL / ENAMETOOLONG / E2BIG / ENOSPC with a sentence saying which limit.
Result<void> check_runtime_set(const VarMap& table, std::string_view name, std::string_view value,
                               std::size_t max_count);

}  // namespace vsymfs
