#include "vsymfs/value_source.hpp"

namespace vsymfs {

std::string_view to_string(Scope s) noexcept {
  switch (s) {
    case Scope::Locked:
      return "locked";
    case Scope::Process:
      return "process";
    case Scope::User:
      return "user";
    case Scope::Group:
      return "group";
    case Scope::Host:
      return "host";
    case Scope::System:
      return "system";
    case Scope::Builtin:
      return "builtin";
    case Scope::Default:
      return "default";
  }
  // Only reachable through a cast of a bad integer; logs must still print something.
  return "unknown";
}

}  // namespace vsymfs
