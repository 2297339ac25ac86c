#include "paths.hpp"

#include <sys/un.h>

#include <cstdint>
#include <cstdio>

#include "vsymfs_config.h"

namespace vsymfs::control {
namespace {

std::uint64_t fnv1a(std::string_view s) noexcept {
  std::uint64_t h = 0xcbf29ce484222325ULL;
  for (unsigned char c : s) {
    h ^= c;
    h *= 0x100000001b3ULL;
  }
  return h;
}

bool plain_char(char c) noexcept {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '.' ||
         c == ':';
}

}  // namespace

std::string escape_mountpoint(std::string_view mp, std::size_t max_length) {
  while (mp.size() > 1 && mp.back() == '/') mp.remove_suffix(1);
  std::string_view trimmed = mp;
  while (!trimmed.empty() && trimmed.front() == '/') trimmed.remove_prefix(1);
  std::string out;
  if (trimmed.empty()) out = "-";
  for (std::size_t i = 0; i < trimmed.size(); ++i) {
    const char c = trimmed[i];
    if (c == '/') {
      out += '-';
    } else if (plain_char(c) && !(i == 0 && c == '.')) {
      out += c;
    } else {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\x%02x", static_cast<unsigned>(static_cast<unsigned char>(c)));
      out += buf;
    }
  }
  if (out.size() > max_length) {
    char buf[24];
    std::snprintf(buf, sizeof buf, "m-%016llx", static_cast<unsigned long long>(fnv1a(mp)));
    out = buf;
  }
  return out;
}

std::string default_socket_path(std::string_view mountpoint) {
  const std::string dir = VSYMFS_RUN_DIR;
  constexpr std::size_t kSunPath = sizeof(sockaddr_un{}.sun_path) - 1;  // keep the NUL
  const std::size_t room = kSunPath > dir.size() + 6 ? kSunPath - dir.size() - 6 : 18;
  return dir + "/" + escape_mountpoint(mountpoint, room) + ".sock";
}

std::string default_state_path(std::string_view mountpoint) {
  return std::string(VSYMFS_STATE_DIR) + "/" + escape_mountpoint(mountpoint, 200) + ".toml";
}

}  // namespace vsymfs::control
