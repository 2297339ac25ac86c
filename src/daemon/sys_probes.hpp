// Whether an @sys candidate exists, for one expansion: the cache of
// answers, and the Probe that asks it before walking SOURCE (probe_walk.hpp).
// A readlink of `../@sys/bin` with the first sysname missing otherwise pays
// a failed path walk in SOURCE every time.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "daemon/generation_cache.hpp"
#include "daemon/probe_walk.hpp"
#include "vsymfs/link_template.hpp"
#include "vsymfs/var_map.hpp"

namespace vsymfs::daemon {

// The directory a link lives in, asked for only when its template has an
// @sys to probe: finding it can cost the caller a descriptor pin and locks
// that plain and most variant links never need.
class LinkDirectory {
 public:
  // An fd (O_PATH is fine) of the link's directory inside SOURCE, or -1.
  virtual int fd() = 0;
  // The directory's (st_dev, st_ino), which keys the @sys probe cache, if
  // known without a system call: then a cached probe needs no descriptor.
  // A probe that misses checks it against fd() before storing its answer.
  // This default says "not known"; the probe then takes fd() and fstat(2)s
  // it (still cheaper than a failed path walk per candidate).
  virtual bool identity(dev_t& dev, ino_t& ino);
  // The link's path inside the mount (relative, no leading slash), asked
  // only while someone traces expansions (trace_hub.hpp); "" when unknown
  // (this default).
  virtual std::string link_path();

 protected:
  ~LinkDirectory() = default;
};

// Answers kept for the entry timeout (the staleness a kernel-cached name
// would have), keyed by the link's directory, the probing identity and the
// candidate's expansion. A generation bump (rules reload, clear) drops them.
class SysProbeCache {
 public:
  using Clock = std::chrono::steady_clock;
  static constexpr std::size_t kCapacity = 16 * 256;

  // ttl_seconds <= 0: nothing is kept.
  SysProbeCache(double ttl_seconds, const CacheGeneration& generation);

  bool enabled() const noexcept { return ttl_ > Clock::duration::zero(); }
  std::uint64_t generation() const noexcept { return cache_.generation(); }

  // The cached answer, if fresh and of the current generation (and, in
  // `expires`, until when it is kept).
  std::optional<bool> find(std::string_view key, Clock::time_point now, Clock::time_point* expires = nullptr);
  // `tag`: generation() as read before the probe. Whether the answer is
  // kept (not when a bump came in since `tag`), and until when.
  bool store(std::string_view key, std::uint64_t tag, Clock::time_point now, bool exists,
             Clock::time_point* expires = nullptr);

  struct Totals {
    std::size_t entries = 0;
    std::uint64_t hits = 0, misses = 0;
  };
  Totals totals() const;

 private:
  struct Answer {
    Clock::time_point expires;
    bool exists = false;
  };
  static constexpr std::size_t kShards = 16;
  // A per-thread copy of recent answers, in front of the shards: every
  // readlink of one @sys link probes the same candidates, and with one
  // worker per CPU two workers otherwise meet on the same shard lock for
  // each of them (2 processes: 0.53-0.91x a plain readlink, bimodal). A copy
  // keeps the shared entry's expiry and its generation, so it dies with a
  // bump as the entry does and the staleness bound is unchanged.
  struct Local {
    std::uint64_t owner = 0, tag = 0;
    Clock::time_point expires{};
    bool exists = false;
    std::string key;
  };
  static constexpr std::size_t kLocalSlots = 64;
  static Local& local_slot(std::size_t hash);
  void remember(Local& l, std::string_view key, std::uint64_t tag, const Answer& a) const;

  const Clock::duration ttl_;
  const CacheGeneration& generation_;
  const std::uint64_t id_;  // thread-local copies belong to one cache
  GenerationCache<std::string, Answer, StringHash, std::equal_to<>> cache_;
  alignas(64) std::atomic<std::uint64_t> local_hits_{0};
};

// Answers whether an @sys candidate exists, for one expansion: from the
// cache, else by a walk (probe_walk.hpp) that never calls into a FUSE
// filesystem. The answer depends on who asks (a 0700 directory exists for
// its owner only), so the cache key holds the probing identity.
class SourceProbe final : public Probe {
 public:
  using Clock = std::chrono::steady_clock;
  // `walk_here`: this thread has the probing identity; `store`: answers may
  // be remembered (not for explain, whose text a client chose); `budget`:
  // how long the whole expansion may wait for walks that leave SOURCE.
  SourceProbe(LinkDirectory& link_dir, SysProbeCache& cache, std::uint64_t tag, ProbeWalker& walker,
              const ProbeCredentials& creds, bool walk_here, bool store, Clock::duration budget) noexcept
      : link_dir_(link_dir),
        cache_(cache),
        tag_(tag),
        walker_(walker),
        creds_(creds),
        walk_here_(walk_here),
        store_(store),
        budget_(budget) {}

  bool exists(std::string_view target) const override;

  // Whether every answer this expansion got is one the cache keeps, and
  // until when the earliest of them is (the time_point's max when nothing
  // was probed): an expansion remembered until then gives what probing
  // again would, within the cache's own staleness bound (link_service.cpp's
  // ExpansionMemo).
  std::optional<Clock::time_point> kept_until() const noexcept {
    return lasting_ ? std::optional<Clock::time_point>(until_) : std::nullopt;
  }

 private:
  // An answer the cache keeps until `expires` was used.
  void note(Clock::time_point expires) const noexcept {
    if (expires < until_) until_ = expires;
  }
  bool probe_key(bool relative, std::string_view target) const;
  int directory_fd() const;

  LinkDirectory& link_dir_;
  SysProbeCache& cache_;
  std::uint64_t tag_;
  ProbeWalker& walker_;
  const ProbeCredentials& creds_;
  const bool walk_here_;
  const bool store_;
  const Clock::duration budget_;
  mutable Clock::time_point deadline_{};
  // Asked of link_dir_ at most once per expansion, and only when needed.
  mutable bool identity_known_ = false, have_identity_ = false, dir_fd_known_ = false;
  mutable bool identity_from_link_dir_ = false;  // not from an fstat of fd()
  mutable dev_t dev_ = 0;
  mutable ino_t ino_ = 0;
  mutable int dir_fd_ = -1;
  mutable bool lasting_ = true;
  mutable Clock::time_point until_ = Clock::time_point::max();
};

}  // namespace vsymfs::daemon
