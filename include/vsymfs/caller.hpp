// Who is asking: the facts about one calling process that scopes depend on.
// Plain data: the FUSE layer fills it from the request and /proc, tests build
// it by hand. Nothing here reads /proc.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace vsymfs {

struct Emulation;  // vsymfs/emulation.hpp

struct Caller {
  pid_t pid = 0;  // 0: not visible in our pid namespace, or no caller
  uid_t uid = 0;  // effective (fsuid) ids as the kernel reports them
  gid_t gid = 0;
  uid_t ruid = 0;  // real ids (from /proc/<pid>/status when known, else = uid)
  gid_t rgid = 0;
  std::vector<gid_t> groups;  // supplementary groups

  // From NSS, for the effective uid/gid (empty when unknown).
  std::string user_name;
  std::string group_name;               // primary group name
  std::vector<std::string> group_names; // names of gid and every supplementary group
  std::string home;

  // Secure-execution mode: a set-user-id, set-group-id or file-capability
  // program (AT_SECURE; real and effective or saved ids differ; or a
  // non-root process that holds capabilities). Such a process acts with
  // more privilege than the user who started it, so nothing that user
  // chose reaches it: the process scope and the user's run-time values
  // (`vsymctl set`) are ignored; the administrator's tables still apply.
  bool secure = false;
  // The environment could be read (false for pid 0, unreadable, timed out).
  bool environ_known = false;
  // The environment (and the facts read with it: AT_SECURE, the ELF class)
  // was not read in time: unknown for now, not absent. Unlike an unreadable
  // environment this is transient, so an expansion that needs it fails with
  // EAGAIN instead of quietly using the lower scopes.
  bool environ_late = false;
  // "NAME=value" strings as in /proc/<pid>/environ, in order; the first
  // definition of a name wins (as getenv does). The daemon keeps only the
  // variables its rules can take (environment_name_used()).
  std::vector<std::string> environ;

  // A 32-bit process (PER_LINUX32 personality or a 32-bit ELF executable).
  bool compat32 = false;

  // The caller's UTS and mount namespaces when they are not the daemon's
  // (inode numbers of /proc/<pid>/ns/uts and .../mnt): a caller in a
  // container. 0: the daemon's own, or unknown (pid 0: a caller the daemon
  // cannot see gets the daemon's namespaces). docs/containers.md.
  std::uint64_t uts_ns = 0;
  std::uint64_t mnt_ns = 0;
  // A program of another architecture run by an emulator through
  // binfmt_misc (qemu-user): its machine, @emul and @sys defaults. Null for
  // a native process. Shared: one per emulator, not per process.
  std::shared_ptr<const Emulation> emulation;
};

// Facts about the host, read once (uname, hostname, domain name).
struct HostInfo {
  std::string hostname;      // nodename
  std::string domainname;    // NIS domain name (uname's domainname), "(none)" kept as is
  std::string machine;       // uname -m, e.g. x86_64
  std::string machine32;     // what a 32-bit process sees, e.g. i686
  std::string osrelease;     // uname -r
  std::string ostype;        // uname -s, "Linux"
  std::string kernel_ident;  // uname -v
};

// Reads uname(2) and friends. Pure enough: no /proc, no FUSE.
HostInfo read_host_info();

}  // namespace vsymfs
