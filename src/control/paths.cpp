#include "paths.hpp"

#include <sys/stat.h>
#include <sys/un.h>

#include <cerrno>
#include <cstdint>
#include <cstring>
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

std::string parent_directory(const std::string& path) {
  const auto slash = path.rfind('/');
  if (slash == std::string::npos) return ".";
  return slash == 0 ? "/" : path.substr(0, slash);
}

Result<void> ensure_directory(const std::string& dir) {
  if (dir.empty() || dir == "/" || dir == ".") return {};
  struct stat st {};
  if (::stat(dir.c_str(), &st) == 0) {
    if (S_ISDIR(st.st_mode)) return {};
    return make_error(ENOTDIR, dir + " is not a directory");
  }
  if (auto ok = ensure_directory(parent_directory(dir)); !ok) return ok;
  if (::mkdir(dir.c_str(), 0755) != 0) {
    if (errno == EEXIST) return {};
    return make_error(errno, "cannot create " + dir + ": " + std::strerror(errno));
  }
  if (::chmod(dir.c_str(), 0755) != 0)
    return make_error(errno, "cannot chmod " + dir + ": " + std::strerror(errno));
  return {};
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
