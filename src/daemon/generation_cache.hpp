// A bounded, sharded, thread-safe cache whose entries belong to a
// generation: the daemon's caches of parsed templates and @sys probe
// answers (link_service.cpp) are this one type.
//
// - Bounded: each shard holds at most capacity / shards entries and evicts
//   its least recently used one to make room, so the whole never holds more
//   than `capacity`.
// - Sharded: a key's hash picks its shard and only that shard's mutex is
//   taken, so workers that look up different keys rarely meet.
// - Generations: every entry is tagged with the CacheGeneration's value
//   when it was made. CacheGeneration::bump() (a rules reload, `vsymctl
//   reload`) is one atomic increment, whatever the size; from then on every
//   older entry is a miss, dropped when it is next met or evicted as least
//   recently used. A producer reads generation() before it reads what its
//   value depends on (the rules) and passes that number to insert(): a value
//   computed from what was in force before a bump is never stored as new.
//   Several caches may share one CacheGeneration, so one bump invalidates
//   them all.
//
// Why not a library. Debian packages were looked at first: libtbb-dev's
// tbb::concurrent_lru_cache is a preview API (TBB_PREVIEW_CONCURRENT_LRU_
// CACHE) that computes missing values itself through one function given at
// construction, hands out reference-counted handles and cannot erase or
// invalidate; libcds-dev has lock-free maps but no bounded or LRU
// container, and needs every thread (each FUSE worker) attached to its
// garbage collector; libcuckoo-dev is an unbounded hash map. None has
// generations, and the daemon needs a bound, an O(1) invalidation and
// heterogeneous lookup (a string_view key must not allocate on readlink).
// What is here is a map and a list per shard under a mutex, about 150
// lines, tested on its own (tests/daemon/generation_cache_test.cpp).
//
// Locks: a shard's mutex is a leaf (nothing else is taken while it is
// held; the callbacks given to lookup() must not take locks either).
#pragma once

#include <atomic>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <list>
#include <memory>
#include <mutex>
#include <optional>
#include <unordered_map>
#include <utility>

namespace vsymfs::daemon {

// What invalidates a set of caches at once.
class CacheGeneration {
 public:
  std::uint64_t value() const noexcept { return value_.load(std::memory_order_acquire); }
  // Every entry made before this call is a miss from now on.
  void bump() noexcept { value_.fetch_add(1, std::memory_order_acq_rel); }

  // Bumps once when `source`, a counter that changes only by growing (the
  // rules generation), is not the value last followed: however many
  // threads notice the change, the caches are invalidated once. One load
  // when nothing changed. A thread that returns from here sees the bump
  // for `source` (those that lose the race wait for it under the mutex).
  void follow(std::uint64_t source) {
    if (followed_.load(std::memory_order_acquire) == source) return;
    std::lock_guard lock(follow_mu_);
    if (followed_.load(std::memory_order_relaxed) == source) return;
    bump();
    followed_.store(source, std::memory_order_release);
  }
  // The source value the caches start from (no bump).
  void start_following(std::uint64_t source) noexcept { followed_.store(source, std::memory_order_release); }

 private:
  std::atomic<std::uint64_t> value_{1};
  std::atomic<std::uint64_t> followed_{0};
  std::mutex follow_mu_;  // a leaf
};

// Hash and KeyEqual may be transparent (is_transparent), then lookup()
// takes any key type they accept (a std::string_view for std::string keys).
template <class Key, class Value, class Hash = std::hash<Key>, class KeyEqual = std::equal_to<Key>>
class GenerationCache {
 public:
  struct Stats {
    std::size_t entries = 0;  // of the current generation
    std::uint64_t hits = 0, misses = 0, evictions = 0;
  };

  // `capacity`: the most entries held at once (at least one per shard).
  // `shards` is rounded up to a power of two: a shard is picked with a mask
  // (a division by a count known only at run time cost the readlink path
  // about 40 instructions).
  GenerationCache(std::size_t capacity, const CacheGeneration& generation, std::size_t shards = 16)
      : generation_(generation),
        shard_count_(std::bit_ceil(shards == 0 ? std::size_t{1} : shards)),
        per_shard_(capacity / shard_count_ == 0 ? 1 : capacity / shard_count_),
        shards_(std::make_unique<Shard[]>(shard_count_)) {}

  GenerationCache(const GenerationCache&) = delete;
  GenerationCache& operator=(const GenerationCache&) = delete;

  // The generation a producer tags what it is about to compute with.
  std::uint64_t generation() const noexcept { return generation_.value(); }

  // Calls `use(const Value&, std::uint64_t tag)` under the shard's lock for
  // an entry of the current generation; `use` returns false when the entry
  // cannot serve (expired): it is dropped and the lookup is a miss. Returns
  // whether it was a hit (counted either way). A hit makes the entry the
  // most recently used.
  template <class K, class Use>
  bool lookup(const K& key, Use&& use) {
    return lookup(key, Hash{}(key), std::forward<Use>(use));
  }
  // The same with the key's hash computed already (Hash{}(key)).
  template <class K, class Use>
  bool lookup(const K& key, std::size_t hash, Use&& use) {
    Shard& sh = shard(hash);
    const std::uint64_t now = generation_.value();
    std::lock_guard lock(sh.mu);
    const auto it = sh.map.find(key);
    if (it != sh.map.end()) {
      Node& n = it->second;
      if (n.tag == now && use(std::as_const(n.value), n.tag)) {
        if (n.lru != sh.lru.begin()) sh.lru.splice(sh.lru.begin(), sh.lru, n.lru);
        ++sh.hits;
        return true;
      }
      // An older generation's (or an unusable) entry: no one can use it.
      if (n.tag <= now) erase(sh, it);
    }
    ++sh.misses;
    return false;
  }

  // The value for `key` if the cache holds one of the current generation.
  template <class K>
  std::optional<Value> find(const K& key) {
    std::optional<Value> out;
    lookup(key, [&](const Value& v, std::uint64_t) {
      out = v;
      return true;
    });
    return out;
  }

  // Stores `value` for `key`, made under generation `tag` (read from
  // generation() before what the value depends on). Not stored, and false
  // returned, when a bump came in since: the value may be from before it.
  template <class K>
  bool insert(K&& key, Value value, std::uint64_t tag) {
    const std::size_t hash = Hash{}(std::as_const(key));
    Shard& sh = shard(hash);
    std::lock_guard lock(sh.mu);
    if (tag != generation_.value()) return false;
    if (auto it = sh.map.find(std::as_const(key)); it != sh.map.end()) {
      it->second.value = std::move(value);
      it->second.tag = tag;
      sh.lru.splice(sh.lru.begin(), sh.lru, it->second.lru);
      return true;
    }
    while (sh.map.size() >= per_shard_) {
      erase(sh, sh.map.find(*sh.lru.back()));
      ++sh.evictions;
    }
    const auto it = sh.map.try_emplace(Key(std::forward<K>(key))).first;
    it->second.value = std::move(value);
    it->second.tag = tag;
    sh.lru.push_front(&it->first);
    it->second.lru = sh.lru.begin();
    return true;
  }

  // Drops every entry now (their memory too, unlike a bump).
  void clear() {
    for (std::size_t i = 0; i < shard_count_; ++i) {
      Shard& sh = shards_[i];
      std::lock_guard lock(sh.mu);
      sh.map.clear();
      sh.lru.clear();
    }
  }

  Stats stats() const {
    Stats s;
    const std::uint64_t now = generation_.value();
    for (std::size_t i = 0; i < shard_count_; ++i) {
      Shard& sh = shards_[i];
      std::lock_guard lock(sh.mu);
      for (const auto& kv : sh.map) s.entries += kv.second.tag == now;
      s.hits += sh.hits;
      s.misses += sh.misses;
      s.evictions += sh.evictions;
    }
    return s;
  }

  std::size_t shard_count() const noexcept { return shard_count_; }
  std::size_t shard_capacity() const noexcept { return per_shard_; }

 private:
  struct Node {
    Value value{};
    std::uint64_t tag = 0;
    typename std::list<const Key*>::iterator lru;
  };
  using Map = std::unordered_map<Key, Node, Hash, KeyEqual>;
  // Own cache lines: two workers on two shards do not share one. Counted
  // under the shard's lock, which is held anyway: shared atomic counters
  // would be a line that every CPU writes on every lookup.
  struct alignas(64) Shard {
    std::mutex mu;
    Map map;
    std::list<const Key*> lru;  // most recently used first; points at map keys (stable)
    std::uint64_t hits = 0, misses = 0, evictions = 0;
  };

  Shard& shard(std::size_t hash) const noexcept { return shards_[hash & (shard_count_ - 1)]; }

  static void erase(Shard& sh, typename Map::iterator it) {
    sh.lru.erase(it->second.lru);
    sh.map.erase(it);
  }

  const CacheGeneration& generation_;
  const std::size_t shard_count_;
  const std::size_t per_shard_;
  const std::unique_ptr<Shard[]> shards_;
};

}  // namespace vsymfs::daemon
