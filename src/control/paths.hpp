// Where a mount's control socket and run-time state live by default, derived
// from the mountpoint so a restarted daemon finds its state again.
#pragma once

#include <sys/types.h>

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>

#include "vsymfs/result.hpp"

namespace vsymfs::control {

// Virtual xattrs the FUSE layer answers (documented in vsymfs(8)):
inline constexpr std::string_view kXattrRaw = "security.vsymfs.raw";          // a symlink's raw text
inline constexpr std::string_view kXattrControl = "security.vsymfs.control";  // this mount's socket path

// The mountpoint as one file name, systemd-escape style: "/mnt/my tree" ->
// "mnt-my\x20tree", "/" -> "-". Names too long for a file (or a socket
// address) become "m-<64-bit FNV-1a hash in hex>".
std::string escape_mountpoint(std::string_view mountpoint, std::size_t max_length);

// The directory part of a path ("." for a bare name, "/" for "/x").
std::string parent_directory(const std::string& path);

// mkdir -p; directories it creates get exactly 0755 whatever the umask, as
// the run and state directories are shared by every mount and every user
// must reach the sockets.
Result<void> ensure_directory(const std::string& dir);

// Who the daemon runs as, and the variables that place a non-root daemon's
// files (the XDG base directories; relative values are ignored, as that
// specification says).
struct DaemonUser {
  uid_t euid = 0;
  std::string xdg_runtime_dir;  // $XDG_RUNTIME_DIR
  std::string xdg_state_home;   // $XDG_STATE_HOME
  std::string home;             // $HOME
  // Whether the daemon's user namespace is the initial one. uid 0 in any
  // other (`unshare -Ur`, rootless podman) is an unprivileged user of the
  // host: it cannot write /run, and must not share root's socket names.
  bool initial_user_namespace = true;
  // euid as the parent user namespace sees it (the user who made the
  // namespace), kUnmapped when unknown or not in a user namespace.
  uid_t outside_uid = kUnmapped;
  static constexpr uid_t kUnmapped = static_cast<uid_t>(-1);

  // Root of the host: the system-wide run and state directories are ours.
  bool owns_system_directories() const noexcept { return euid == 0 && initial_user_namespace; }
  static DaemonUser current();  // geteuid(), /proc/self/uid_map and the environment
};

// What /proc/self/uid_map says: whether it is the initial namespace's
// identity map ("0 0 4294967295"), and what `inside` is outside
// (DaemonUser::kUnmapped when no line maps it or the text is malformed).
struct UidMapView {
  bool initial = false;
  uid_t outside = DaemonUser::kUnmapped;
};
UidMapView parse_uid_map(std::string_view text, uid_t inside);

// Where control sockets go. Root of the host: VSYMFS_RUN_DIR, shared by
// every mount and reachable by every user. Anyone else cannot write there,
// uid 0 of a user namespace included: their own $XDG_RUNTIME_DIR/vsymfs,
// else /tmp/vsymfs-UID (which must then be theirs alone, see
// ensure_private_directory), UID being the outside uid in a user namespace
// (every namespace's root is uid 0: /tmp/vsymfs-0 would be shared).
std::string run_directory(const DaemonUser& who);
// Where run-time values persist. Root of the host: VSYMFS_STATE_DIR. Anyone else:
// $XDG_STATE_HOME/vsymfs, else $HOME/.local/state/vsymfs; an error when
// neither is set (then -o state=PATH is needed).
Result<std::string> state_directory(const DaemonUser& who);

// run_directory()/<escaped>.sock (fits in sockaddr_un.sun_path).
std::string default_socket_path(std::string_view mountpoint, const DaemonUser& who = DaemonUser::current());
// state_directory()/<escaped>.toml
Result<std::string> default_state_path(std::string_view mountpoint, const DaemonUser& who = DaemonUser::current());

// Where `path` (absolute, without symlinks, "." or "..") lies inside the
// filesystem mounted there, from the text of /proc/self/mountinfo: the
// mount whose mount point is the longest prefix of `path` (the last one
// listed when several stack), if its type is `fstype`; then its root inside
// that filesystem joined with the rest of `path`, without a leading slash
// ("." for the filesystem's root). For a bind mount of a subdirectory that
// is the subdirectory's path, not the path the client walked. Nothing when
// no mount of that type holds `path`.
std::optional<std::string> path_in_filesystem(std::string_view mountinfo, std::string_view path,
                                              std::string_view fstype);

// Whether a file system of type `fstype` is mounted exactly at `path`
// (any of several stacked there), from the text of /proc/self/mountinfo.
bool has_mount_at(std::string_view mountinfo, std::string_view path, std::string_view fstype);

// mkdir -p of a directory only its owner may use (0700), for a non-root
// daemon's socket and state. An existing one must be a real directory (not a
// symlink) owned by the effective uid and closed to group and others:
// /tmp/vsymfs-UID made by someone else first would let them take the socket.
Result<void> ensure_private_directory(const std::string& dir);

}  // namespace vsymfs::control
