// Limits for values set at run time (`vsymctl set`). They bound what an
// unprivileged user can make the daemon store and persist.
#include "vsymfs/runtime_vars.hpp"

#include <cerrno>
#include <string>

namespace vsymfs {
namespace {

bool name_start(char c) noexcept { return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || c == '_'; }
bool name_char(char c) noexcept { return name_start(c) || (c >= '0' && c <= '9'); }

// The name as it may appear in a message: a rejected name can be anything.
std::string shown(std::string_view s) {
  constexpr std::size_t kMaxShown = 64;
  std::string out;
  for (char c : s.substr(0, kMaxShown)) {
    const auto u = static_cast<unsigned char>(c);
    if (u < 0x20 || u == 0x7f) {
      static constexpr char kHex[] = "0123456789abcdef";
      out += "\\x";
      out += kHex[u >> 4];
      out += kHex[u & 0xf];
    } else {
      out += c;
    }
  }
  if (s.size() > kMaxShown) out += "...";
  return out;
}

}  // namespace

bool valid_var_name(std::string_view name) noexcept {
  if (name.empty() || name.size() > kMaxVarName || !name_start(name.front())) return false;
  for (char c : name) {
    if (!name_char(c)) return false;
  }
  return true;
}

Result<void> check_runtime_set(const VarMap& table, std::string_view name, std::string_view value,
                               std::size_t max_count) {
  if (name.size() > kMaxVarName) {
    return make_error(ENAMETOOLONG, "variable name '" + shown(name) + "' is " + std::to_string(name.size()) +
                                        " bytes; the limit is " + std::to_string(kMaxVarName));
  }
  if (!valid_var_name(name)) {
    return make_error(EINVAL, "invalid variable name '" + shown(name) +
                                  "': expected letters, digits and '_', not starting with a digit");
  }
  if (value.size() > kMaxVarValue) {
    return make_error(E2BIG, "value of '" + std::string(name) + "' is " + std::to_string(value.size()) +
                                 " bytes; the limit is " + std::to_string(kMaxVarValue));
  }
  if (value.find('\0') != std::string_view::npos) {
    return make_error(EINVAL, "value of '" + std::string(name) + "' contains a NUL byte");
  }
  if (value.find('\n') != std::string_view::npos) {
    return make_error(EINVAL, "value of '" + std::string(name) + "' contains a newline");
  }
  // Replacing an existing value never needs room.
  if (table.size() >= max_count && table.find(name) == table.end()) {
    return make_error(ENOSPC, "cannot set '" + std::string(name) + "': the scope already holds " +
                                  std::to_string(table.size()) + " variables, the limit is " + std::to_string(max_count));
  }
  return {};
}

}  // namespace vsymfs
