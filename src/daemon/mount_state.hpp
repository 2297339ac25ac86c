// What one mount's FUSE layer, link service and control server share: the
// rules in force, the run-time values, the counters. Rules and run-time
// values are immutable snapshots, swapped whole (Published); a reader takes
// a lock only to copy the pointer after a swap, and otherwise uses its
// thread's copy.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "daemon/mount_config.hpp"
#include "daemon/per_thread.hpp"
#include "daemon/status.hpp"
#include "vsymfs/caller.hpp"
#include "vsymfs/host_view.hpp"
#include "vsymfs/result.hpp"
#include "vsymfs/rules.hpp"
#include "vsymfs/runtime_vars.hpp"
#include "vsymfs/unique_fd.hpp"

namespace vsymfs::daemon {

// An immutable snapshot that one thread replaces while others read it. Not
// std::atomic<std::shared_ptr<T>>: libstdc++ 12's load() releases its
// internal spin lock with a relaxed RMW, so a reader's read of the pointer
// is not ordered before the next store's write of it (a data race in the
// C++ memory model, reported by ThreadSanitizer: scripts/tsan; harmless on
// x86, where the RMW is a full barrier, not on weakly ordered CPUs, where
// the reader could pair the new pointer with the old reference count). A
// mutex costs the same two atomic RMWs per load when uncontended and spins
// less when contended (measured side by side at load 18 on 2 cores: 0.87-1.36x
// the ns per load with 1 thread, 0.37-0.52x with 4 threads).
//
// Every FUSE request loads the rules, so load() keeps a per-thread copy of
// the pointer (per_thread.hpp) and takes the mutex only when a store has
// happened since: on the request path it writes nothing shared, where the
// mutex and the reference count each moved a cache line between CPUs per
// request. A store bumps `version_` under the mutex, after the swap, so a
// reader that sees the new version also sees the new pointer. The copy
// keeps the previous snapshot alive until the thread's next load after a
// store.
template <class T>
class Published {
 public:
  std::shared_ptr<const T> load() const {
    struct Slot {
      std::uint64_t owner = 0, version = 0;
      std::shared_ptr<const T> ptr;
    };
    thread_local Slot slot;
    const std::uint64_t v = version_.load(std::memory_order_acquire);
    if (slot.owner == id_ && slot.version == v) return slot.ptr;
    std::shared_ptr<const T> fresh;
    std::uint64_t fresh_version = 0;
    {
      std::lock_guard lock(mu_);
      fresh = ptr_;
      fresh_version = version_.load(std::memory_order_relaxed);
    }
    Slot next{id_, fresh_version, per_thread_alias(std::move(fresh))};
    std::swap(slot, next);  // the old snapshot is released after the swap
    return slot.ptr;
  }
  // The old snapshot is released outside the lock (its destructor may run).
  void store(std::shared_ptr<const T> next) {
    {
      std::lock_guard lock(mu_);
      ptr_.swap(next);
      version_.fetch_add(1, std::memory_order_release);
    }
  }

 private:
  const std::uint64_t id_ = next_instance_id();
  mutable std::mutex mu_;
  std::atomic<std::uint64_t> version_{0};
  std::shared_ptr<const T> ptr_;
};

struct Counters {
  // Counted per request: sharded, so that threads do not share the lines.
  ShardedCounter readlinks;    // READLINK requests answered
  ShardedCounter expansions;   // templates expanded (readlink, getattr, @sys)
  ShardedCounter by_scope[8];  // values substituted, indexed by Scope
  ShardedCounter errors;       // expansions that failed (ENOENT, ENAMETOOLONG)
  std::atomic<std::uint64_t> environ_timeouts{0}; // /proc reads abandoned
  std::atomic<std::uint64_t> reloads{0};
  std::atomic<std::uint64_t> reload_failures{0};
};

// Whether a rules file can be trusted: nobody but root and `self` (the
// daemon's user) can change what is read at `path`. Every directory the path
// is resolved through, every symbolic link on the way and the file itself
// must belong to root or `self` and must not be writable by group or others
// (ACL grants show in the group bits), as sshd's StrictModes requires. One
// exception: a directory with the sticky bit (/tmp), where nobody can
// remove or replace an entry they do not own (the entry below is checked in
// turn). EPERM names the first offender and how to fix it; ENOENT, ELOOP,
// ENOTDIR as a path walk gives them.
Result<void> check_rules_file_trusted(const std::string& path, uid_t self);

class MountState final : public StatusProvider {
 public:
  using Config = MountConfig;

  // Loads the rules (file, or built-in default when the default path is
  // absent). A rules file that check_rules_file_trusted refuses (for the
  // daemon's effective uid) is an error, at start and at every reload.
  static Result<std::unique_ptr<MountState>> create(Config cfg);
  ~MountState() override;
  MountState(const MountState&) = delete;
  MountState& operator=(const MountState&) = delete;

  // The rules file in force ("" with built-in rules only).
  const std::string& rules_file() const noexcept { return rules_file_; }

  const Config& config() const noexcept { return cfg_; }

  // What `rules` give this host: its [host."pattern"] tables and member id,
  // matched once per rules generation (the host name is read again at each
  // reload), not per lookup. Pass the rules the caller loaded with rules():
  // a view of other rules (a reload in between) is built on the spot, so
  // rules and view always agree. Keep the pointer while a resolver uses it.
  std::shared_ptr<const HostView> host_view(const Rules& rules) const;

  std::shared_ptr<const Rules> rules() const noexcept { return rules_.load(); }
  std::uint64_t rules_generation() const noexcept { return generation_.load(std::memory_order_acquire); }
  std::chrono::system_clock::time_point rules_loaded_at() const;

  // Re-read the rules file. A valid file is swapped in atomically and the
  // subscribers are notified; an invalid one is returned as an error and
  // the old rules stay in force. Serialised internally.
  Result<void> reload();

  std::shared_ptr<const RuntimeVars> runtime() const noexcept { return runtime_.load(); }
  // Publish a new run-time table (the control server does copy-on-write and
  // persists before publishing).
  void publish_runtime(std::shared_ptr<const RuntimeVars> vars) noexcept;

  // A subscription to changes: after a successful reload or run-time
  // change the mount state calls `on_change` in the thread that made the
  // change (the FUSE layer invalidates kernel-cached symlinks and
  // attributes then). Callbacks run with the subscribers' lock held: they
  // must be short (hand the work over), and must neither subscribe nor drop
  // a subscription. Dropping the Subscription unsubscribes; once its
  // destructor has returned, its callback is not running and never runs
  // again. It must not outlive the MountState.
  class Subscription {
   public:
    Subscription() = default;
    Subscription(Subscription&& other) noexcept;
    Subscription& operator=(Subscription&& other) noexcept;
    ~Subscription();
    explicit operator bool() const noexcept { return state_ != nullptr; }

   private:
    friend class MountState;
    Subscription(MountState* state, std::uint64_t id) noexcept : state_(state), id_(id) {}
    MountState* state_ = nullptr;
    std::uint64_t id_ = 0;
  };
  [[nodiscard]] Subscription subscribe(std::function<void()> on_change);

  // Why the last reload failed (the old rules stayed in force), and when;
  // an empty message once a reload succeeds. For `vsymctl status`.
  struct ReloadError {
    std::string message;
    std::chrono::system_clock::time_point at{};
  };
  ReloadError last_reload_error() const;

  // Starts the watcher thread, after mounting (the daemon calls it once):
  //  - it reloads when the rules file changes (inotify on its directory, so
  //    an editor's write-and-rename is seen; debounced ~100 ms). A file
  //    created in place is read once its writer closes it, never while it
  //    is being written. No rules file: nothing to watch.
  //  - it checks every second that SOURCE's path still leads to the
  //    directory the daemon opened at start (source_problem()), and logs
  //    when it no longer does and when it does again.
  // Idempotent.
  Result<void> start_watching();
  void stop_watching() noexcept;

  // "" while SOURCE's path leads to the directory this mount serves; else
  // what happened to it (moved, removed, out of reach) and what the mount
  // does about it. The mount keeps serving the directory it opened, as a
  // bind mount would: a removed one has no names left and takes none.
  std::string source_problem() const;

  Counters& counters() noexcept { return counters_; }

  // The mount's lines of `vsymctl status`: paths, rules, what the rules
  // give this host, run-time values, counters.
  void status(StatusLines& out) const override;

 private:
  explicit MountState(Config cfg);
  void notify_change();
  void unsubscribe(std::uint64_t id) noexcept;
  Result<std::shared_ptr<const Rules>> load_rules() const;
  void watch_loop(int inotify_fd, int stop_fd);
  // Compares SOURCE with what was opened at start; logs changes.
  void check_source();

  struct HostSnapshot {
    std::shared_ptr<const Rules> rules;  // what `view` was built from
    HostView view;
  };
  void publish_host(std::shared_ptr<const Rules> rules);

  Config cfg_;
  Published<HostSnapshot> host_;
  Published<Rules> rules_;
  Published<RuntimeVars> runtime_;
  std::atomic<std::uint64_t> generation_{0};
  mutable std::mutex mu_;  // guards loaded_at_, reload_error_, source_problem_
  std::chrono::system_clock::time_point loaded_at_{};
  ReloadError reload_error_;
  std::string source_problem_;
  UniqueFd source_fd_;          // O_PATH, SOURCE as opened at start (-1: could not open)
  std::string source_seen_;     // its path then, as the kernel names it (/proc/self/fd)
  // Held while callbacks run (notify_change), so unsubscribing waits for a
  // running one; taken before any lock a callback takes.
  std::mutex subs_mu_;
  std::vector<std::pair<std::uint64_t, std::function<void()>>> subs_;
  std::uint64_t next_sub_id_ = 1;
  Counters counters_;

  std::string rules_file_;       // what reload() reads; "" = built-in only
  bool rules_file_required_ = false;  // missing file is an error (else: built-in rules)
  std::mutex reload_mu_;         // serialises reload(); never held while subscribers are notified
  std::mutex watch_mu_;          // guards the watcher thread's lifetime
  std::thread watcher_;
  UniqueFd watch_stop_fd_;       // eventfd that wakes the watcher to exit
};

}  // namespace vsymfs::daemon
