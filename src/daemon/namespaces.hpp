// Callers in other namespaces (containers): which UTS and mount namespace a
// caller is in, its host name and domain name as that UTS namespace has
// them, and its own /etc/passwd and /etc/group as its root directory shows
// them. docs/containers.md says what each caller sees.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "vsymfs/account_files.hpp"

namespace vsymfs::daemon {

// The inode numbers of a process's namespaces (/proc/PID/ns/uts, .../mnt):
// equal numbers are the same namespace. 0: unknown (pid 0, the process is
// gone, /proc is not ours to read).
struct NamespaceIds {
  std::uint64_t uts = 0;
  std::uint64_t mnt = 0;
};
NamespaceIds read_namespace_ids(pid_t pid);
// The daemon's own, read once.
const NamespaceIds& own_namespace_ids();

// A UTS namespace's names, read by entering it (setns) on this thread and
// calling uname: /proc has no per-namespace view of them. Needs
// CAP_SYS_ADMIN over the namespace's user namespace (a root daemon has it
// for every namespace; a rootless one for the namespaces its own user
// namespace made). Nothing when the namespace cannot be entered or `pid`
// is no longer in the namespace `uts`.
struct UtsNames {
  std::string hostname;
  std::string domainname;
};
class UtsReader {
 public:
  // At most `max_namespaces` namespace descriptors are kept open (each
  // keeps its namespace alive); beyond that the least recently used goes.
  explicit UtsReader(std::size_t max_namespaces = 256);
  ~UtsReader();
  UtsReader(const UtsReader&) = delete;
  UtsReader& operator=(const UtsReader&) = delete;

  std::optional<UtsNames> read(pid_t pid, std::uint64_t uts);
  std::size_t namespaces() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// A caller's own /etc/passwd and /etc/group, read through /proc/PID/root
// with openat2(RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS): a link in the
// caller's tree resolves inside that tree, never out of it. Regular files
// of at most kMaxAccountFileSize only. Kept per mount namespace and read
// again when either file's identity (device, inode, size, mtime) changes.
// The reads run on a helper thread: a caller whose root lies on a FUSE
// filesystem that does not answer (or on this very mount) holds the
// helper, never the FUSE worker that asks, which waits at most `timeout`.
// Null on any trouble; the caller's names then fall back to numbers.
class CallerAccounts {
 public:
  CallerAccounts(std::chrono::milliseconds timeout, std::size_t max_namespaces = 64);
  ~CallerAccounts();
  CallerAccounts(const CallerAccounts&) = delete;
  CallerAccounts& operator=(const CallerAccounts&) = delete;

  std::shared_ptr<const AccountFiles> files(pid_t pid, std::uint64_t mnt);

  struct Stats {
    std::size_t namespaces = 0;
    std::uint64_t reads = 0;     // files parsed
    std::uint64_t failures = 0;  // trouble, timeouts and refusals
  };
  Stats stats() const;

 private:
  struct Impl;
  std::shared_ptr<Impl> impl_;
};

}  // namespace vsymfs::daemon
