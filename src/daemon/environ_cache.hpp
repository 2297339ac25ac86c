// The environment cache of CallerContexts: what belongs to one program
// image of one process (its environment, AT_SECURE, ELF class and
// personality, the binfmt_misc emulation of a foreign program), kept once
// per process (thread group id) and shared by its threads: a process with
// 4000 threads costs one environment, not 4000 (one context per distinct
// identity among its threads, at most kMaxCallersPerProcess).
//
// Bounded twice: by count (max_entries) and by bytes (max_bytes, what the
// kept environments and contexts hold together); past either, the least
// recently used processes go (a CLOCK over the shards). Only the variables
// the rules can take are kept (follow_rules()); a reload that changes
// which ones drops every entry.
//
// An entry is found by (tgid, stamp): the stamp is unique to one entry and
// never reused, so a thread's link (kept by CallerContexts) to an entry
// that was dropped finds nothing, and dropping an entry frees its
// environment at once.
//
// Locks: each shard's mutex is a leaf; the filter mutex is never held with
// one. Exec/exit events reach forget() from the exec watcher.
#pragma once

#include <sys/types.h>

#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "vsymfs/caller.hpp"
#include "vsymfs/emulation.hpp"
#include "vsymfs/rules.hpp"

namespace vsymfs::daemon {

class MountState;

// What one process image shares among its threads.
struct ImageFacts {
  std::uint64_t image = 0;  // the process's image key (0 with events)
  bool environ_known = false;
  bool compat32 = false;
  std::shared_ptr<const Emulation> emulation;  // null: a native program
  bool auxv_secure = true;                     // AT_SECURE of this image, fixed at execve
};

// A context for `named` on a process's image.
std::shared_ptr<Caller> context_on_image(const Caller& named, pid_t tgid, const ImageFacts& facts,
                                         std::vector<std::string> environ);

class EnvironCache {
 public:
  // Distinct identities one process's entry keeps contexts for; a process
  // whose threads hold more (a file server switching ids per thread) gets
  // the others built per request.
  static constexpr std::size_t kMaxCallersPerProcess = 8;

  EnvironCache(std::size_t max_entries, std::size_t max_bytes);

  // The rules that decide which variables are kept (see CallerContexts).
  // Returns sync_filter()'s answer.
  bool follow_rules(const MountState& state);
  // Notices a reload that changes which variables are kept and then drops
  // every entry: true when it did. One atomic load when nothing changed.
  bool sync_filter();
  // Keeps the variables the rules can take, each name once (the first
  // definition wins, as for getenv). Returns the filter stamp used, for
  // store().
  std::uint64_t keep_used(std::vector<std::string>& env);
  std::uint64_t filter_stamp() const noexcept { return filter_stamp_.load(std::memory_order_acquire); }

  // Where forget() stands for `tgid`'s shard; store() refuses an entry
  // when `tgid` was forgotten since.
  std::uint64_t seq(pid_t tgid);

  // The context at (tgid, stamp, slot), marked used; null when gone.
  std::shared_ptr<const Caller> context(pid_t tgid, std::uint64_t stamp, std::size_t slot);

  // The context for `named` from the process's entry for `image`, built
  // and kept with the others while there is room when the entry has none
  // for that identity. `slot` is where it is kept (kMaxCallersPerProcess:
  // not kept). Null when there is no entry for the image.
  struct Found {
    std::shared_ptr<const Caller> caller;
    std::uint64_t stamp = 0;
    std::size_t slot = 0;
  };
  std::optional<Found> for_identity(pid_t tgid, std::uint64_t image, const std::shared_ptr<const Caller>& named);

  // Keeps a new entry for `tgid` with its first context `c` (for `named`),
  // read when seq(tgid) was `since` with filter stamp `filter`. Returns the
  // entry's stamp, or 0 when not kept (an event for tgid came in since, a
  // reload changed the filter, or it is larger than the byte limit).
  std::uint64_t store(pid_t tgid, const ImageFacts& facts, std::uint64_t filter, std::shared_ptr<const Caller> named,
                      std::shared_ptr<const Caller> c, std::uint64_t since);

  // A task exec'd, exited or its id was handed out again.
  void forget(pid_t pid);
  // Events were lost: every pid counts as forgotten.
  void forget_all();

  struct Stats {
    std::size_t processes = 0;
    std::size_t bytes = 0;
    std::uint64_t evictions = 0;
  };
  Stats stats() const;
  std::size_t bytes_limit() const noexcept { return max_bytes_; }
  // Moves of the eviction clock so far: an entry evicted, or its "used"
  // mark cleared. A copy of a context kept elsewhere (CallerContexts'
  // per-thread front) is dropped when this changes, so that the process's
  // next request reaches context() again and marks its entry used.
  std::uint64_t clock_moves() const noexcept { return clock_moves_.load(std::memory_order_acquire); }

 private:
  struct ProcCaller {
    std::shared_ptr<const Caller> basis;  // the identity it was built on (compared by value)
    std::shared_ptr<const Caller> caller;
  };
  struct Entry {
    ImageFacts facts;
    std::uint64_t stamp = 0;   // unique to this entry
    std::uint64_t filter = 0;  // the variable filter the environment was kept with
    bool used = false;         // looked up since the eviction hand last passed
    std::size_t bytes = 0;     // counted in bytes_used_
    std::vector<ProcCaller> callers;  // never empty once stored
  };
  static constexpr std::size_t kShards = 16;
  static constexpr std::uint64_t kForgottenRing = 64;
  struct Shard {
    mutable std::mutex mu;
    // Bumped whenever forget() names a pid of this shard, and the pid
    // remembered at seq % kForgottenRing: an entry read while that pid's
    // event came in may describe the old image and is not stored.
    std::uint64_t seq = 0;
    std::array<pid_t, kForgottenRing> forgotten{};
    std::unordered_map<pid_t, Entry> procs;  // by thread group id
    bool forgot_since(pid_t pid, std::uint64_t since) const noexcept;
  };
  using Iterator = std::unordered_map<pid_t, Entry>::iterator;

  Shard& shard_for(pid_t pid) noexcept { return shards_[static_cast<std::uint32_t>(pid) % kShards]; }
  void erase(Shard& sh, Iterator it);
  // Every entry; `as_forgotten`: and every pid counts as forgotten since.
  void drop_all(bool as_forgotten);
  bool reserve(std::size_t n);
  void unreserve(std::size_t n) { bytes_used_.fetch_sub(n, std::memory_order_relaxed); }
  void evict(std::size_t want);
  void evict_one(Shard& sh);

  const std::size_t per_shard_;
  const std::size_t max_bytes_;
  std::array<Shard, kShards> shards_;
  std::atomic<std::size_t> bytes_used_{0};
  std::atomic<std::uint64_t> next_stamp_{1};
  std::atomic<std::size_t> hand_{0};  // the eviction hand: a shard index
  std::atomic<std::uint64_t> evictions_{0};
  std::atomic<std::uint64_t> clock_moves_{0};  // see clock_moves()

  std::atomic<const MountState*> rules_state_{nullptr};
  std::atomic<std::uint64_t> seen_generation_{0};  // rules generation filter_rules_ is from
  std::mutex filter_mu_;                           // guards filter_rules_; never held with a Shard::mu
  std::shared_ptr<const Rules> filter_rules_;      // null: keep every variable
  std::atomic<std::uint64_t> filter_stamp_{0};     // bumped when the kept set changes
};

}  // namespace vsymfs::daemon
