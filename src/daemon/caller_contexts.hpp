// The caller's context, read from the FUSE request and /proc: identity,
// supplementary groups, NSS names, environment, secure-execution mode, 32-bit
// personality. Cached, but never stale across execve or pid reuse, and a
// /proc read never blocks a FUSE worker for long (executing a file through a
// variant link on this very mount reads /proc of a process that is inside
// execve on us).
#pragma once

#include <sys/types.h>

#include <memory>

#include "vsymfs/caller.hpp"

namespace vsymfs::daemon {

class CallerContexts {
 public:
  struct Options {
    unsigned environ_timeout_ms = 50;   // give up on /proc/<pid>/environ after this
    std::size_t max_entries = 4096;     // cache bound
  };
  CallerContexts();
  explicit CallerContexts(Options opts);
  ~CallerContexts();
  CallerContexts(const CallerContexts&) = delete;
  CallerContexts& operator=(const CallerContexts&) = delete;

  // Identity and supplementary groups only (what every FUSE op needs to run
  // as the caller). Cheap when cached.
  std::shared_ptr<const Caller> identity(pid_t pid, uid_t uid, gid_t gid);

  // Everything (names, environment, secure, compat32), for expansions.
  std::shared_ptr<const Caller> full(pid_t pid, uid_t uid, gid_t gid);

  struct Stats { std::size_t entries; std::size_t nss_entries; std::uint64_t hits, misses, timeouts; };
  Stats stats() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace vsymfs::daemon
