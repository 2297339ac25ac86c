#include "fs/options.hpp"

#include "vsymfs_config.h"

#include <charconv>
#include <cstdint>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <string_view>

#include <unistd.h>

namespace vsymfs::fs {

unsigned default_max_threads() noexcept {
  const long cpus = ::sysconf(_SC_NPROCESSORS_ONLN);
  return cpus > 2 ? static_cast<unsigned>(cpus) : 2u;
}

namespace {

Error bad(std::string message) { return make_error(EINVAL, std::move(message)); }

Result<unsigned long> parse_count(std::string_view key, std::string_view value, unsigned long min,
                                  unsigned long max) {
  unsigned long n = 0;
  auto [end, ec] = std::from_chars(value.data(), value.data() + value.size(), n);
  if (ec != std::errc{} || end != value.data() + value.size() || n < min || n > max)
    return bad("option " + std::string(key) + "=" + std::string(value) + ": expected a whole number from " +
               std::to_string(min) + " to " + std::to_string(max));
  return n;
}

// A byte count with an optional binary suffix: 512, 64k, 32m, 1g.
Result<std::size_t> parse_bytes(std::string_view key, std::string_view value) {
  constexpr std::uint64_t kMax = std::uint64_t{1} << 40;
  std::uint64_t n = 0;
  auto [end, ec] = std::from_chars(value.data(), value.data() + value.size(), n);
  std::string_view suffix(end, static_cast<std::size_t>(value.data() + value.size() - end));
  unsigned shift = 0;
  if (suffix == "k" || suffix == "K") shift = 10;
  else if (suffix == "m" || suffix == "M") shift = 20;
  else if (suffix == "g" || suffix == "G") shift = 30;
  else if (!suffix.empty()) ec = std::errc::invalid_argument;
  if (ec != std::errc{} || end == value.data() || n > (kMax >> shift))
    return bad("option " + std::string(key) + "=" + std::string(value) +
               ": expected a number of bytes up to 1024g, optionally followed by k, m or g");
  return static_cast<std::size_t>(n << shift);
}

Result<double> parse_seconds(std::string_view key, std::string_view value) {
  std::string text(value);
  char* end = nullptr;
  double s = std::strtod(text.c_str(), &end);
  if (text.empty() || end != text.c_str() + text.size() || !std::isfinite(s) || s < 0 || s > 86400)
    return bad("option " + std::string(key) + "=" + text + ": expected seconds from 0 to 86400");
  return s;
}

// Applies one of our -o options; returns false when `opt` is not ours (then
// it is a mount option for libfuse).
Result<bool> apply_own_option(std::string_view opt, Options& o) {
  std::string_view key = opt;
  std::string_view value;
  bool has_value = false;
  if (auto eq = opt.find('='); eq != std::string_view::npos) {
    key = opt.substr(0, eq);
    value = opt.substr(eq + 1);
    has_value = true;
  }
  auto need_value = [&]() -> Result<void> {
    if (!has_value || value.empty()) return bad("option " + std::string(key) + " needs a value: " + std::string(key) + "=...");
    return {};
  };
  auto no_value = [&]() -> Result<void> {
    if (has_value) return bad("option " + std::string(key) + " takes no value");
    return {};
  };

  if (key == "rules") {
    if (auto r = need_value(); !r) return r.error();
    o.rules_path = std::string(value);
    o.rules_path_explicit = true;
  } else if (key == "builtin_rules") {
    if (auto r = no_value(); !r) return r.error();
    o.builtin_rules = true;
  } else if (key == "single_user") {
    if (auto r = no_value(); !r) return r.error();
    o.single_user = true;
  } else if (key == "daemon_nss") {
    if (auto r = no_value(); !r) return r.error();
    o.daemon_nss = true;
  } else if (key == "handles" || key == "no_handles") {
    if (auto r = no_value(); !r) return r.error();
    o.handles = key == "handles" ? HandleOption::On : HandleOption::Off;
  } else if (key == "passthrough" || key == "nopassthrough") {
    if (auto r = no_value(); !r) return r.error();
    o.passthrough = key == "passthrough";
  } else if (key == "nodiratime" || key == "diratime") {
    // Ours alone: libfuse 3.14 refuses it, and the kernel stamps no atime
    // on a FUSE inode anyway; what matters is SOURCE's (atime.hpp).
    if (auto r = no_value(); !r) return r.error();
    o.nodiratime = key == "nodiratime";
  } else if (key == "acl" || key == "noacl") {
    if (auto r = no_value(); !r) return r.error();
    o.acl = key == "acl";
  } else if (key == "uring" || key == "no_uring") {
    if (auto r = no_value(); !r) return r.error();
    o.uring = key == "uring" ? UringMode::on : UringMode::off;
  } else if (key == "uring_linger") {
    if (auto r = need_value(); !r) return r.error();
    auto n = parse_count(key, value, 0, 1000);
    if (!n) return n.error();
    o.uring_linger_us = static_cast<unsigned>(*n);
  } else if (key == "dev_linger") {
    if (auto r = need_value(); !r) return r.error();
    auto n = parse_count(key, value, 0, 1000);
    if (!n) return n.error();
    o.dev_linger_us = static_cast<unsigned>(*n);
  } else if (key == "fd_budget") {
    if (auto r = need_value(); !r) return r.error();
    auto n = parse_count(key, value, 16, 1u << 20);
    if (!n) return n.error();
    o.fd_budget = *n;
  } else if (key == "environ_cache") {
    if (auto r = need_value(); !r) return r.error();
    auto n = parse_bytes(key, value);
    if (!n) return n.error();
    o.environ_cache = *n;
  } else if (key == "threads") {
    if (auto r = need_value(); !r) return r.error();
    auto n = parse_count(key, value, 1, 1024);
    if (!n) return n.error();
    o.max_threads = static_cast<unsigned>(*n);
  } else if (key == "socket") {
    if (auto r = need_value(); !r) return r.error();
    o.socket_path = std::string(value);
  } else if (key == "state") {
    if (auto r = need_value(); !r) return r.error();
    o.state_path = std::string(value);
  } else if (key == "entry_timeout" || key == "attr_timeout" || key == "negative_timeout") {
    if (auto r = need_value(); !r) return r.error();
    auto s = parse_seconds(key, value);
    if (!s) return s.error();
    (key == "entry_timeout" ? o.entry_timeout : key == "attr_timeout" ? o.attr_timeout : o.negative_timeout) = *s;
  } else if (key == "writeback_cache") {
    // Writes would reach us with pid 0 and no caller identity, and the
    // kernel would turn O_APPEND into offsets: refuse rather than misbehave.
    return bad("option writeback_cache is not supported: it breaks per-caller identity");
  } else {
    return false;
  }
  return true;
}

bool has_mount_option(const std::vector<std::string>& opts, std::string_view key) {
  for (const auto& o : opts)
    if (o == key || (o.size() > key.size() && o.compare(0, key.size(), key) == 0 && o[key.size()] == '=')) return true;
  return false;
}

}  // namespace

Result<Options> parse_options(const std::vector<std::string>& args) {
  Options o;
  std::vector<std::string> positionals;
  std::vector<std::string> mount_opts;

  auto take_o = [&](std::string_view list) -> Result<void> {
    // Comma-separated; an empty item (",,") is harmless and skipped, as mount(8) does.
    while (!list.empty()) {
      auto comma = list.find(',');
      std::string_view item = list.substr(0, comma);
      list = comma == std::string_view::npos ? std::string_view{} : list.substr(comma + 1);
      if (item.empty()) continue;
      auto ours = apply_own_option(item, o);
      if (!ours) return ours.error();
      if (!*ours) mount_opts.emplace_back(item);
    }
    return {};
  };

  bool only_positionals = false;
  for (std::size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    if (only_positionals || a.empty() || a[0] != '-' || a == "-") {
      positionals.push_back(a);
    } else if (a == "--") {
      only_positionals = true;
    } else if (a == "-o") {
      if (i + 1 >= args.size()) return bad("option -o needs a value");
      if (auto r = take_o(args[++i]); !r) return r.error();
    } else if (a.rfind("-o", 0) == 0) {
      if (auto r = take_o(std::string_view(a).substr(2)); !r) return r.error();
    } else if (a == "-f") {
      o.foreground = true;
    } else if (a == "-d" || a == "--debug") {
      o.debug = o.foreground = true;
    } else if (a == "-s") {
      o.single_thread = true;
    } else if (a == "-h" || a == "--help") {
      o.show_help = true;
    } else if (a == "-V" || a == "--version") {
      o.show_version = true;
    } else {
      return bad("unknown option " + a + " (try --help)");
    }
  }
  if (o.show_help || o.show_version) return o;

  if (positionals.size() != 2)
    return bad(positionals.size() < 2 ? "missing SOURCE or MOUNTPOINT (usage: vsymfs [options] SOURCE MOUNTPOINT)"
                                      : "unexpected argument " + positionals[2] + " (usage: vsymfs [options] SOURCE MOUNTPOINT)");
  std::error_code ec;
  o.source = std::filesystem::absolute(positionals[0], ec).lexically_normal().string();
  if (ec) return bad("SOURCE " + positionals[0] + ": " + ec.message());
  o.mountpoint = std::filesystem::absolute(positionals[1], ec).lexically_normal().string();
  if (ec) return bad("MOUNTPOINT " + positionals[1] + ": " + ec.message());
  // lexically_normal keeps a trailing '/', which would make /a/ and /a two mounts.
  for (std::string* p : {&o.source, &o.mountpoint})
    while (p->size() > 1 && p->back() == '/') p->pop_back();
  if (o.builtin_rules && o.rules_path_explicit) return bad("options rules= and builtin_rules contradict each other");
  // io_uring serves requests on a thread per CPU queue: not one thread.
  if (o.single_thread && o.uring == UringMode::on) return bad("options -s and uring contradict each other");

  // The last of noatime, relatime, strictatime and atime wins, as in
  // mount(8). It stays a mount option too (libfuse passes it on; shown in
  // /proc/mounts).
  for (const auto& m : mount_opts) {
    if (m == "noatime") o.noatime = true;
    else if (m == "atime" || m == "relatime" || m == "strictatime") o.noatime = false;
  }
  o.allow_root = has_mount_option(mount_opts, "allow_root");
  if (!has_mount_option(mount_opts, "default_permissions")) mount_opts.emplace_back("default_permissions");
  if (!has_mount_option(mount_opts, "fsname")) {
    // libfuse splits options at commas; an escaped one would survive, but a
    // SOURCE with a comma is rare enough to just name the mount "vsymfs".
    mount_opts.push_back(o.source.find(',') == std::string::npos ? "fsname=" + o.source : "fsname=vsymfs");
  }
  if (!has_mount_option(mount_opts, "subtype")) mount_opts.emplace_back("subtype=vsymfs");
  for (const auto& m : mount_opts) {
    if (!o.fuse_mount_options.empty()) o.fuse_mount_options += ',';
    o.fuse_mount_options += m;
  }
  return o;
}

std::string usage_text() {
  return R"(usage: vsymfs [options] SOURCE MOUNTPOINT

Mirror SOURCE at MOUNTPOINT, expanding variant symlinks for each calling process.

general options:
    -h, --help             print this help and exit
    -V, --version          print the version and exit
    -f                     stay in the foreground (log to stderr)
    -d, --debug            debug logging and FUSE request tracing (implies -f)
    -s                     single-threaded request loop
    -o OPT[,OPT...]        options, below; may also follow SOURCE MOUNTPOINT

vsymfs options:
    -o rules=PATH          rules file (default: )" VSYMFS_DEFAULT_RULES_PATH R"(, or the built-in
                           rules when that file does not exist)
    -o builtin_rules       use the built-in rules; ignore any rules file
    -o single_user         run every operation as the daemon's own user (no
                           per-caller identity switch)
    -o fd_budget=N         at most N cached O_PATH descriptors for known inodes
                           (default: min(RLIMIT_NOFILE/2, 8192))
    -o handles             find evicted inodes by file handle even where SOURCE's
                           handles do not last (FUSE, SMB, 9p); a stale one
                           still falls back to parent and name
    -o no_handles          find evicted inodes by parent and name only
                           (default: file handles where SOURCE's can be trusted)
    -o threads=N           at most N worker threads (default: one per CPU, at least 2)
    -o environ_cache=BYTES callers' environments kept at most, together; k, m, g
                           suffixes (default 32m; 0: read /proc on every request)
    -o daemon_nss          names and homes of callers in other mount namespaces
                           (containers) from the daemon's NSS, not from their
                           own /etc/passwd and /etc/group
    -o passthrough         let the kernel read and write open files on SOURCE
                           directly (Linux 6.9+, needs CAP_SYS_ADMIN; falls
                           back to reads and writes through the daemon when
                           unavailable) (default)
    -o nopassthrough       every read and write goes through the daemon
    -o acl                 the kernel checks POSIX ACLs of SOURCE's files along
                           with their modes, as SOURCE would (costs a round
                           trip per path walk through the mount's root for
                           callers who do not own it; see vsymfs(8))
    -o noacl               the kernel checks modes only: access that only an
                           ACL grants is refused (default)
    -o uring               take requests from the kernel over FUSE io_uring, on
                           threads that serve the callers of one CPU each; the
                           mount fails where the kernel does not offer it (root
                           turns it on: echo Y >
                           /sys/module/fuse/parameters/enable_uring)
    -o no_uring            take every request by reading /dev/fuse
                           (default: io_uring when the kernel offers it at
                           mount time and -s is not given, else /dev/fuse)
    -o uring_linger=USEC   after a reply, a ring thread keeps its CPU up to
                           USEC microseconds for its caller's next request
                           while the machine has a CPU to spare (default 20,
                           0 to 1000; 0: it sleeps at once; see vsymfs(8))
    -o dev_linger=USEC     on /dev/fuse, while callers ask one at a time, one
                           thread reads the device and keeps reading up to
                           USEC microseconds after each reply while the
                           machine has a CPU to spare (default 50, 0 to 1000;
                           0: every thread sleeps in read(2), libfuse's loop;
                           see vsymfs(8))
    -o noatime             reading through the mount leaves atimes in SOURCE
                           alone (needs CAP_SYS_ADMIN); relatime, strictatime
                           and atime are accepted and leave SOURCE's own rule
    -o nodiratime          the same for directories only
    -o socket=PATH         control socket (default: derived from MOUNTPOINT, in
                           )" VSYMFS_RUN_DIR R"(, or for a non-root daemon in
                           $XDG_RUNTIME_DIR/vsymfs or /tmp/vsymfs-UID)
    -o state=PATH          run-time variables file (default: derived from
                           MOUNTPOINT, in )" VSYMFS_STATE_DIR R"(, or for a non-root
                           daemon in $XDG_STATE_HOME/vsymfs or
                           ~/.local/state/vsymfs)
    -o entry_timeout=S     kernel name cache timeout in seconds (default 1)
    -o attr_timeout=S      kernel attribute cache timeout in seconds (default 1)
    -o negative_timeout=S  cache "no such file" for S seconds (default 0)

Every other -o option is a mount option passed to libfuse, e.g. allow_other,
ro, fsname=NAME. default_permissions is always on.

fstab: SOURCE MOUNTPOINT fuse.vsymfs rules=/etc/vsymfs/rules.toml,allow_other 0 0
(mount.fuse3 runs "vsymfs" from PATH).
)";
}

}  // namespace vsymfs::fs
