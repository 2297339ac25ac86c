#include "control/paths.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <cstdio>

#include "vsymfs/mountinfo.hpp"
#include "vsymfs/unique_fd.hpp"
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

DaemonUser DaemonUser::current() {
  DaemonUser u;
  u.euid = ::geteuid();
  auto env = [](const char* name) {
    const char* v = std::getenv(name);
    return std::string(v != nullptr ? v : "");
  };
  u.xdg_runtime_dir = env("XDG_RUNTIME_DIR");
  u.xdg_state_home = env("XDG_STATE_HOME");
  u.home = env("HOME");
  std::string map;
  if (UniqueFd fd(::open("/proc/self/uid_map", O_RDONLY | O_CLOEXEC)); fd) {
    char buf[4096];
    ssize_t n;
    while (map.size() < 65536 && (n = ::read(fd.get(), buf, sizeof buf)) > 0) map.append(buf, static_cast<std::size_t>(n));
    fd.reset();
    const UidMapView view = parse_uid_map(map, u.euid);
    u.initial_user_namespace = view.initial;
    u.outside_uid = view.initial ? DaemonUser::kUnmapped : view.outside;
  }
  // No /proc: assume the initial namespace, as before.
  return u;
}

UidMapView parse_uid_map(std::string_view text, uid_t inside) {
  UidMapView view;
  std::size_t lines = 0;
  bool identity = false;
  while (!text.empty()) {
    const std::size_t eol = text.find('\n');
    const std::string line(text.substr(0, eol));
    text = eol == std::string_view::npos ? std::string_view{} : text.substr(eol + 1);
    unsigned long long in = 0, out = 0, count = 0;
    char extra = 0;
    const int got = std::sscanf(line.c_str(), " %llu %llu %llu %c", &in, &out, &count, &extra);
    if (got == EOF) continue;  // a blank line
    if (got != 3) return UidMapView{};
    ++lines;
    identity = in == 0 && out == 0 && count == 4294967295ULL;
    if (inside >= in && inside - in < count && out + (inside - in) < DaemonUser::kUnmapped)
      view.outside = static_cast<uid_t>(out + (inside - in));
  }
  view.initial = lines == 1 && identity;
  return view;
}

namespace {

bool absolute(const std::string& path) { return !path.empty() && path.front() == '/'; }

}  // namespace

std::string run_directory(const DaemonUser& who) {
  if (who.owns_system_directories()) return VSYMFS_RUN_DIR;
  if (absolute(who.xdg_runtime_dir)) return who.xdg_runtime_dir + "/vsymfs";
  if (!who.initial_user_namespace) {
    // Named after the host's user: "vsymfs-0" would be every namespace
    // root's. Unmapped (should not happen: our own euid is mapped): a name
    // no host uid has.
    if (who.outside_uid != DaemonUser::kUnmapped) return "/tmp/vsymfs-" + std::to_string(who.outside_uid);
    return "/tmp/vsymfs-userns-" + std::to_string(who.euid);
  }
  return "/tmp/vsymfs-" + std::to_string(who.euid);
}

Result<std::string> state_directory(const DaemonUser& who) {
  if (who.owns_system_directories()) return std::string(VSYMFS_STATE_DIR);
  if (absolute(who.xdg_state_home)) return who.xdg_state_home + "/vsymfs";
  if (absolute(who.home)) return who.home + "/.local/state/vsymfs";
  return make_error(ENOENT, "no place for run-time values: HOME and XDG_STATE_HOME are not set (or not absolute); "
                            "set one, or pass -o state=PATH");
}

std::string default_socket_path(std::string_view mountpoint, const DaemonUser& who) {
  const std::string dir = run_directory(who);
  constexpr std::size_t kSunPath = sizeof(sockaddr_un{}.sun_path) - 1;  // keep the NUL
  const std::size_t room = kSunPath > dir.size() + 6 ? kSunPath - dir.size() - 6 : 18;
  return dir + "/" + escape_mountpoint(mountpoint, room) + ".sock";
}

Result<std::string> default_state_path(std::string_view mountpoint, const DaemonUser& who) {
  auto dir = state_directory(who);
  if (!dir) return dir.error();
  return *dir + "/" + escape_mountpoint(mountpoint, 200) + ".toml";
}

namespace {

bool within(std::string_view path, std::string_view dir) {
  if (dir == "/") return !path.empty() && path.front() == '/';
  return path.starts_with(dir) && (path.size() == dir.size() || path[dir.size()] == '/');
}

}  // namespace

std::optional<std::string> path_in_filesystem(std::string_view mountinfo, std::string_view path,
                                              std::string_view fstype) {
  struct Mount {
    std::string root, point;
    bool wanted_type;
  };
  std::optional<Mount> best;  // the mount holding `path` with the longest mount point
  while (!mountinfo.empty()) {
    MountinfoLine line;
    if (!next_mountinfo_line(mountinfo, line)) continue;
    std::string point = unescape_mountinfo(line.point);
    if (!within(path, point) || (best && point.size() < best->point.size())) continue;
    best = Mount{unescape_mountinfo(line.root), std::move(point), line.type == fstype};
  }
  if (!best || !best->wanted_type) return std::nullopt;
  std::string rel = best->root == "/" ? "" : best->root.substr(1);
  std::string_view tail = path.substr(best->point == "/" ? 0 : best->point.size());
  while (!tail.empty() && tail.front() == '/') tail.remove_prefix(1);
  if (!tail.empty()) {
    if (!rel.empty()) rel += '/';
    rel.append(tail);
  }
  return rel.empty() ? std::string(".") : rel;
}

bool has_mount_at(std::string_view mountinfo, std::string_view path, std::string_view fstype) {
  while (!mountinfo.empty()) {
    MountinfoLine line;
    if (next_mountinfo_line(mountinfo, line) && line.type == fstype && unescape_mountinfo(line.point) == path)
      return true;
  }
  return false;
}

Result<void> ensure_private_directory(const std::string& dir) {
  if (dir.empty() || dir == "/" || dir == ".") return {};
  struct stat st {};
  if (::lstat(dir.c_str(), &st) != 0) {
    if (errno != ENOENT) return make_error(errno, "cannot inspect " + dir + ": " + std::strerror(errno));
    // Parents as any mkdir -p makes them (e.g. ~/.local/state); only the
    // last one holds our files.
    if (auto ok = ensure_directory(parent_directory(dir)); !ok) return ok;
    if (::mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST)
      return make_error(errno, "cannot create " + dir + ": " + std::strerror(errno));
    if (::lstat(dir.c_str(), &st) != 0) return make_error(errno, "cannot inspect " + dir + ": " + std::strerror(errno));
  }
  if (!S_ISDIR(st.st_mode)) return make_error(ENOTDIR, "refusing to use " + dir + ": not a directory (a symlink?)");
  if (st.st_uid != ::geteuid())
    return make_error(EPERM, "refusing to use " + dir + ": it belongs to uid " + std::to_string(st.st_uid) +
                                 ", not to uid " + std::to_string(::geteuid()));
  if ((st.st_mode & 077) != 0 && ::chmod(dir.c_str(), 0700) != 0)
    return make_error(errno, "cannot make " + dir + " private: " + std::strerror(errno));
  return {};
}

}  // namespace vsymfs::control
