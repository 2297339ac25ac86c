// A caller's own /etc/passwd and /etc/group, for a caller in another mount
// namespace (a container): the names its system gives its uids and gids.
// Pure parsing of untrusted text; reading the files (through the caller's
// /proc/PID/root, never following a link out of it) is the daemon's job.
#pragma once

#include <sys/types.h>

#include <cstddef>
#include <string>
#include <string_view>
#include <unordered_map>

namespace vsymfs {

// Bounds for a file another system controls: a larger file is not read at
// all (the caller's names then fall back to numbers), a longer line is
// skipped. glibc's own line limit is unbounded; 4 KiB holds any sane entry
// (a group line lists its members, which we do not use, so a longer group
// line is cut, not skipped: only its first three fields matter).
inline constexpr std::size_t kMaxAccountFileSize = std::size_t{4} << 20;
inline constexpr std::size_t kMaxAccountLine = 4096;

struct AccountUser {
  std::string name;
  std::string home;
};

// What one system's files say. As getpwuid/getgrgid with files only: the
// first line for an id wins; comments, blank, malformed and "+"/"-" (NIS
// compat) lines are skipped.
struct AccountFiles {
  std::unordered_map<uid_t, AccountUser> users;
  std::unordered_map<gid_t, std::string> groups;

  const AccountUser* user(uid_t uid) const noexcept;  // null: no line for it
  const std::string* group(gid_t gid) const noexcept;
};

// name:password:UID:GID:gecos:home:shell
void parse_passwd(std::string_view text, AccountFiles& into);
// name:password:GID:members
void parse_group(std::string_view text, AccountFiles& into);

}  // namespace vsymfs
