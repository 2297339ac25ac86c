// The caller's context, read from the FUSE request and /proc: identity,
// supplementary groups, NSS names, environment, secure-execution mode, 32-bit
// personality. Cached, but never stale across execve or pid reuse, and a
// /proc read never blocks a FUSE worker beyond environ_timeout_ms (executing
// a file through a variant link on this very mount reads /proc of a process
// that is inside execve on us). The environment is kept once per process
// (its threads share it), only the variables the rules can use, within a
// byte limit: a caller cannot make the daemon grow by having threads or a
// large environment.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "vsymfs/caller.hpp"

namespace vsymfs::daemon {

class MountState;

class CallerContexts {
 public:
  struct Options {
    // Give up on /proc/<pid>/environ (and auxv, exe) after this: the caller
    // then gets environ_late and its process-scope expansions fail with
    // EAGAIN. A bound for a read that is stuck, not for one that is slow:
    // 50 ms was exceeded about once per 300 first reads with both CPUs
    // saturated, and each time a link expanded without the process scope.
    unsigned environ_timeout_ms = 1000;
    std::size_t max_entries = 4096;     // cache bound
    unsigned helper_threads = 2;        // threads that read environ/auxv/exe (and may get stuck)
    std::size_t max_queued = 64;        // reads waiting for a helper; beyond: environ unknown at once
    unsigned identity_ttl_ms = 1000;    // how long groups read from status are trusted
    unsigned nss_ttl_ms = 60'000;       // how long user/group names are trusted
    // How a cached context learns that its process exec'd (or its pid was
    // reused). Events: the kernel's process events connector tells us; no
    // /proc read per request (needs root in the initial namespaces; proven
    // at start, see proc_events.hpp). Auxv: a hash of /proc/<pid>/auxv on
    // every request, ~1 us. Stat: the starttime and stack addresses in
    // /proc/<pid>/stat, ~3 us, but it takes no lock of the target: before
    // Linux 5.7, opening auxv took the cred_guard_mutex that a process
    // inside execve holds while it looks up its interpreter on our mount.
    // Auto: Events, else Auxv from Linux 5.7 on, else Stat.
    enum class ImageKey : std::uint8_t { Auto, Events, Auxv, Stat };
    ImageKey image_key = ImageKey::Auto;
    // What the cached environments may hold together, in bytes (the
    // variables kept, their strings and the cache's bookkeeping for them;
    // not the allocator's own overhead). One environment is kept per
    // process, shared by its threads; past the limit the least recently
    // used processes' entries go (they are read again when needed), and an
    // environment larger than the whole limit is used but not kept.
    // 0: no environment is kept, every request reads /proc again.
    std::size_t max_environ_bytes = std::size_t{32} << 20;
    // A caller in another mount namespace (a container) gets its names
    // and home from its own /etc/passwd and /etc/group (namespaces.hpp),
    // or numbers when they cannot be read. false (-o daemon_nss): the
    // daemon's NSS for every caller.
    bool caller_accounts = true;
    // Where binfmt_misc is mounted: a caller whose executable is an entry's
    // interpreter is emulated (binfmt_registry.hpp). Tests point it elsewhere.
    std::string binfmt_dir = "/proc/sys/fs/binfmt_misc";
  };
  CallerContexts();
  explicit CallerContexts(Options opts);
  ~CallerContexts();
  CallerContexts(const CallerContexts&) = delete;
  CallerContexts& operator=(const CallerContexts&) = delete;

  // Identity and supplementary groups only (what every FUSE op needs to run
  // as the caller). Cheap when cached.
  std::shared_ptr<const Caller> identity(pid_t pid, uid_t uid, gid_t gid);

  // Identity plus NSS names and home, without reading the environment,
  // auxv or exe (environ_known = false): enough for templates that use only
  // identity builtins (${USER}, ${HOME}, @uid, ...).
  std::shared_ptr<const Caller> named(pid_t pid, uid_t uid, gid_t gid);

  // Everything (names, environment, secure, compat32), for expansions.
  std::shared_ptr<const Caller> full(pid_t pid, uid_t uid, gid_t gid);

  // A context for a caller known by other means than a FUSE request: a
  // control-socket client, whose ids and groups the kernel reported
  // (SO_PEERCRED, SO_PEERGROUPS) and which sent its own environment. Fills
  // in the NSS names (cached as for named()); reads nothing from /proc and
  // caches nothing about the process.
  std::shared_ptr<const Caller> described(Caller caller);

  // Keep only the variables these rules can take from an environment
  // (environment_name_used(): the [process] allow and deny lists and the
  // universe variable); the rest is dropped as it is read. A reload that
  // changes those lists drops the kept environments. `state` must outlive
  // this object. Without it every variable is kept.
  void follow_rules(const MountState& state);

  // hits/misses count full() lookups (a miss reads /proc/<pid>/environ);
  // timeouts count environment reads abandoned after environ_timeout_ms (or
  // refused because every helper was busy): each one handed out a context
  // with environ_late set. environ_bytes is what the kept environments hold
  // now (never above environ_bytes_limit = Options::max_environ_bytes),
  // processes how many are kept, evictions how many went for the limit.
  struct Stats {
    std::size_t entries;
    std::size_t nss_entries;
    std::uint64_t hits, misses, timeouts;
    std::size_t processes = 0;
    std::size_t environ_bytes = 0;
    std::size_t environ_bytes_limit = 0;
    std::uint64_t evictions = 0;
    // identity() answered from the asking thread's own copy (no shard
    // lookup); not in hits, which count full() contexts.
    std::uint64_t identity_front_hits = 0;
    // full() answered from the asking thread's own copy (also in hits).
    std::uint64_t full_front_hits = 0;
  };
  Stats stats() const;

  // Count timeouts in this counter (MountState's environ_timeouts) instead
  // of our own, so that each is counted once; stats().timeouts reads it.
  // LinkService wires it. The counter must outlive this object.
  void set_timeout_counter(std::atomic<std::uint64_t>* counter) noexcept;

  // Which ImageKey is in use (never Auto): for logs and tests.
  Options::ImageKey image_key() const noexcept;
  // How a lookup learns of exec and exit events, for vsymctl status:
  // "doorbell" (a load of words the kernel writes: no syscall), "poll"
  // (one poll per lookup), or "none" (image keys instead of events).
  const char* exec_events_check() const noexcept;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace vsymfs::daemon
