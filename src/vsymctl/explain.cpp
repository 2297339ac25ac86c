#include "vsymctl/explain.hpp"

#include <limits.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <cstring>
#include <deque>
#include <fstream>
#include <iostream>
#include <map>
#include <sstream>

#include "control/client.hpp"
#include "vsymctl/daemon_ops.hpp"
#include "vsymctl/exit_codes.hpp"
#include "vsymctl/output.hpp"
#include "control/paths.hpp"
#include "control/trace_wire.hpp"
#include "vsymfs/link_template.hpp"

namespace vsymfs::vsymctl {
namespace {

// The kernel's limit on links followed in one path walk.
constexpr int kMaxLinks = 40;

void split_into(std::string_view path, std::deque<std::string>& front_of) {
  std::deque<std::string> parts;
  std::size_t i = 0;
  while (i < path.size()) {
    const std::size_t slash = path.find('/', i);
    const std::size_t end = slash == std::string_view::npos ? path.size() : slash;
    if (end > i) parts.emplace_back(path.substr(i, end - i));
    i = end + 1;
  }
  front_of.insert(front_of.begin(), parts.begin(), parts.end());
}

std::string join(const std::string& dir, const std::string& name) { return dir == "/" ? "/" + name : dir + "/" + name; }

std::string parent_of(const std::string& dir) {
  const auto slash = dir.rfind('/');
  return slash == 0 || slash == std::string::npos ? "/" : dir.substr(0, slash);
}

Result<std::string> read_link(const std::string& path) {
  char buf[PATH_MAX];
  const ssize_t n = ::readlink(path.c_str(), buf, sizeof buf);
  if (n < 0) return make_error(errno, "readlink " + path + ": " + std::strerror(errno));
  return std::string(buf, static_cast<std::size_t>(n));
}

// The raw template of a link on a vsymfs mount; ENODATA/ENOTSUP elsewhere.
Result<std::string> raw_text(const std::string& path) {
  std::string buf(PATH_MAX, '\0');
  const ssize_t n = ::lgetxattr(path.c_str(), std::string(control::kXattrRaw).c_str(), buf.data(), buf.size());
  if (n < 0) return make_error(errno, std::strerror(errno));
  buf.resize(static_cast<std::size_t>(n));
  return buf;
}

}  // namespace

// The text of /proc/self/mountinfo, read once ("" when unreadable).
const std::string& mountinfo() {
  static const std::string text = [] {
    std::ifstream in("/proc/self/mountinfo");
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
  }();
  return text;
}

// How the daemon is to find `dir`: its path inside the mounted filesystem
// when /proc/self/mountinfo says where the mount it lies on starts (so a
// bind mount of the mount, or of a directory in it, works), else the path
// as walked (the daemon then matches its own mountpoint).
std::string dir_for_daemon(const std::string& dir) {
  if (auto inside = control::path_in_filesystem(mountinfo(), dir, "fuse.vsymfs")) return *inside;
  return dir;
}

void print_substitutions(const control::Reply& reply, const char* indent) {
  const std::vector<std::string> lines = control::substitution_lines(reply);
  for (const std::string& line : lines) std::cout << indent << line << '\n';
  if (lines.empty()) std::cout << indent << "(no substitutions: the same for every caller)\n";
}

namespace {

// Asks the link's daemon where each value came from; prints the trace.
// Returns false when the daemon could not be asked (already reported).
bool print_provenance(const std::string& link, const std::string& dir, const std::string& raw,
                      const std::string& expansion, std::map<std::string, std::string>& sockets) {
  std::string& socket = sockets[dir];
  if (socket.empty()) {
    auto found = control::find_socket(link);
    if (!found) {
      print_error(found.error());
      return false;
    }
    socket = std::move(found.value());
  }
  control::Reply reply;
  const Connect where{"", socket};
  control::Request req{control::Op::Explain, control::ScopeArg::All, "", "", raw, dir_for_daemon(dir)};
  // Our own environment travels with the request: the daemon reads nothing
  // of ours from /proc.
  control::describe_self(req);
  if (request(where, req, reply) != kExitOk) return false;
  // The daemon expands for this process's ids and environment, so it
  // normally agrees with readlink; it may not if a value changed in between.
  if (const std::string* err = reply.find("error")) {
    std::cout << "  daemon:    " << *err << '\n';
  } else if (const std::string* exp = reply.find("expansion"); exp != nullptr && *exp != expansion) {
    std::cout << "  daemon:    " << *exp << "  (the values changed since readlink)\n";
  }
  print_substitutions(reply, "    ");
  return true;
}

}  // namespace

int run_explain(const std::string& path) {
  if (path.empty()) {
    print_error(make_error(ENOENT, "empty path"));
    return kExitUsage;
  }
  std::string dir = "/";
  if (path[0] != '/') {
    char cwd[PATH_MAX];
    if (::getcwd(cwd, sizeof cwd) == nullptr) {
      print_error(make_error(errno, std::string("getcwd: ") + std::strerror(errno)));
      return kExitFailed;
    }
    dir = cwd;
  }
  std::deque<std::string> todo;
  split_into(path, todo);

  std::map<std::string, std::string> sockets;  // per directory; a walk may cross mounts
  int links = 0;
  bool daemon_failed = false;
  while (!todo.empty()) {
    const std::string name = std::move(todo.front());
    todo.pop_front();
    if (name == ".") continue;
    if (name == "..") {
      dir = parent_of(dir);
      continue;
    }
    const std::string here = join(dir, name);
    struct stat st {};
    if (::lstat(here.c_str(), &st) != 0) {
      print_error(make_error(errno, here + ": " + std::strerror(errno)));
      return kExitFailed;
    }
    if (!S_ISLNK(st.st_mode)) {
      // An AFS-style `@sys` component is no link: the daemon's lookup picks
      // a candidate for this process. Say so, or the walk looks magic.
      if (is_sys_component(name) && control::find_socket(here))
        std::cout << here << "  (vsymfs @sys component: resolved per process at lookup)\n";
      if (!todo.empty() && !S_ISDIR(st.st_mode)) {
        print_error(make_error(ENOTDIR, here + " is not a directory"));
        return kExitFailed;
      }
      dir = here;
      continue;
    }
    if (++links > kMaxLinks) {
      print_error(make_error(ELOOP, "more than " + std::to_string(kMaxLinks) + " symbolic links in " + path));
      return kExitFailed;
    }
    auto target = read_link(here);
    if (!target) {
      // A vsymfs link whose expansion fails (ENOENT, ENAMETOOLONG) still has
      // a raw text worth showing.
      auto raw = raw_text(here);
      std::cout << here << "  (vsymfs link, expansion failed: " << errno_name(target.error().code) << ")\n";
      if (raw) {
        std::cout << "  raw:       " << *raw << '\n';
        print_provenance(here, dir, *raw, "", sockets);
      }
      print_error(target.error());
      return kExitFailed;
    }
    auto raw = raw_text(here);
    if (raw) {
      std::cout << here << " -> " << *target << "  (vsymfs)\n";
      std::cout << "  raw:       " << *raw << '\n';
      std::cout << "  expansion: " << *target << '\n';
      if (!print_provenance(here, dir, *raw, *target, sockets)) daemon_failed = true;
    } else if (raw.error().code == ENODATA || raw.error().code == ENOTSUP) {
      std::cout << here << " -> " << *target << "  (plain symlink: not on a vsymfs mount)\n";
    } else {
      std::cout << here << " -> " << *target << "  (raw text unavailable: " << raw.error().message << ")\n";
    }
    if (!target->empty() && (*target)[0] == '/') dir = "/";
    split_into(*target, todo);
  }
  std::cout << "resolved: " << dir << '\n';
  return daemon_failed ? kExitNoDaemon : kExitOk;
}

}  // namespace vsymfs::vsymctl
