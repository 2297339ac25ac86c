// Where a mount's control socket and run-time state live by default, derived
// from the mountpoint so a restarted daemon finds its state again.
#pragma once

#include <cstddef>
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

// VSYMFS_RUN_DIR/<escaped>.sock (fits in sockaddr_un.sun_path).
std::string default_socket_path(std::string_view mountpoint);
// VSYMFS_STATE_DIR/<escaped>.toml
std::string default_state_path(std::string_view mountpoint);

}  // namespace vsymfs::control
