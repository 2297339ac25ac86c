#include "daemon/environ_cache.hpp"

#include <algorithm>
#include <string_view>
#include <unordered_set>

#include "daemon/mount_state.hpp"
#include "vsymfs/resolver.hpp"

namespace vsymfs::daemon {

namespace {

// Bytes a string costs beyond its own object: libstdc++ keeps up to 15
// characters inline.
std::size_t heap_bytes(const std::string& s) noexcept { return s.capacity() > 15 ? s.capacity() + 1 : 0; }

std::size_t environ_bytes(const std::vector<std::string>& env) noexcept {
  std::size_t n = sizeof env + env.capacity() * sizeof(std::string);
  for (const std::string& e : env) n += heap_bytes(e);
  return n;
}

// A context and its basis as the cache holds them (the basis is usually
// shared with the identity cache, counted anyway), with the environment.
std::size_t caller_bytes(const Caller& c) noexcept {
  std::size_t n = sizeof(Caller) + 32 + c.groups.capacity() * sizeof(gid_t) +
                  c.group_names.capacity() * sizeof(std::string);
  for (const std::string* s : {&c.user_name, &c.group_name, &c.home}) n += heap_bytes(*s);
  for (const std::string& g : c.group_names) n += heap_bytes(g);
  return 2 * n + environ_bytes(c.environ);
}

bool same_identity(const Caller& a, const Caller& b) noexcept {
  return a.uid == b.uid && a.gid == b.gid && a.ruid == b.ruid && a.rgid == b.rgid && a.secure == b.secure &&
         a.groups == b.groups && a.user_name == b.user_name && a.group_name == b.group_name &&
         a.group_names == b.group_names && a.home == b.home && a.uts_ns == b.uts_ns && a.mnt_ns == b.mnt_ns;
}

// The [process] lists and the universe variable: what decides which
// variables are kept.
bool same_filter(const Rules& a, const Rules& b) {
  return a.per_caller == b.per_caller && a.env_allow == b.env_allow && a.env_deny == b.env_deny &&
         a.universes.env_var == b.universes.env_var && a.universes.names.empty() == b.universes.names.empty();
}

}  // namespace

std::shared_ptr<Caller> context_on_image(const Caller& named, pid_t tgid, const ImageFacts& facts,
                                         std::vector<std::string> environ) {
  auto c = std::make_shared<Caller>(named);
  c->pid = tgid;  // shared by the process's threads
  c->environ = std::move(environ);
  c->environ_known = facts.environ_known;
  c->compat32 = facts.compat32;
  c->emulation = facts.emulation;
  c->secure = named.secure || facts.auxv_secure;
  return c;
}

EnvironCache::EnvironCache(std::size_t max_entries, std::size_t max_bytes)
    : per_shard_(std::max<std::size_t>(1, max_entries / kShards)), max_bytes_(max_bytes) {}

bool EnvironCache::Shard::forgot_since(pid_t pid, std::uint64_t since) const noexcept {
  // When more events came in than the ring holds, it cannot tell: yes.
  if (seq - since >= kForgottenRing) return seq != since;
  for (std::uint64_t s = since + 1; s <= seq; ++s)
    if (forgotten[s % kForgottenRing] == pid) return true;
  return false;
}

bool EnvironCache::follow_rules(const MountState& state) {
  rules_state_.store(&state, std::memory_order_release);
  return sync_filter();
}

bool EnvironCache::sync_filter() {
  const MountState* st = rules_state_.load(std::memory_order_acquire);
  if (st == nullptr) return false;
  const std::uint64_t gen = st->rules_generation();
  if (gen == seen_generation_.load(std::memory_order_acquire)) return false;
  bool changed = false;
  {
    std::lock_guard lock(filter_mu_);
    if (gen == seen_generation_.load(std::memory_order_relaxed)) return false;
    // Generation first, then rules: these rules are at least that new.
    std::shared_ptr<const Rules> rules = st->rules();
    changed = !filter_rules_ || !same_filter(*filter_rules_, *rules);
    filter_rules_ = std::move(rules);
    if (changed) filter_stamp_.fetch_add(1, std::memory_order_acq_rel);
    seen_generation_.store(gen, std::memory_order_release);
  }
  // After the stamp: an environment read with the old filter is refused
  // by store(), or stored before this and erased here.
  if (changed) drop_all(false);
  return changed;
}

std::uint64_t EnvironCache::keep_used(std::vector<std::string>& env) {
  std::shared_ptr<const Rules> rules;
  std::uint64_t stamp;
  {
    std::lock_guard lock(filter_mu_);
    rules = filter_rules_;
    stamp = filter_stamp_.load(std::memory_order_relaxed);
  }
  // Views into `kept`'s strings, which never move: it has room for all.
  std::unordered_set<std::string_view> seen;
  std::vector<std::string> kept;
  kept.reserve(env.size());
  for (std::string& entry : env) {
    const std::size_t eq = entry.find('=');
    if (eq == std::string::npos) continue;  // never matches a name
    const std::string_view name(entry.data(), eq);
    if (rules && !environment_name_used(*rules, name)) continue;
    if (seen.contains(name)) continue;
    kept.push_back(std::move(entry));
    seen.insert(std::string_view(kept.back().data(), eq));
  }
  kept.shrink_to_fit();
  env = std::move(kept);
  return stamp;
}

std::uint64_t EnvironCache::seq(pid_t tgid) {
  Shard& sh = shard_for(tgid);
  std::lock_guard lock(sh.mu);
  return sh.seq;
}

std::shared_ptr<const Caller> EnvironCache::context(pid_t tgid, std::uint64_t stamp, std::size_t slot) {
  Shard& sh = shard_for(tgid);
  std::lock_guard lock(sh.mu);
  const auto it = sh.procs.find(tgid);
  if (it == sh.procs.end() || it->second.stamp != stamp || slot >= it->second.callers.size()) return nullptr;
  it->second.used = true;
  return it->second.callers[slot].caller;
}

std::optional<EnvironCache::Found> EnvironCache::for_identity(pid_t tgid, std::uint64_t image,
                                                              const std::shared_ptr<const Caller>& named) {
  Shard& sh = shard_for(tgid);
  Found found;
  ImageFacts facts;  // what a context for a new identity is built from
  std::vector<std::string> environ;
  {
    std::lock_guard lock(sh.mu);
    const auto it = sh.procs.find(tgid);
    if (it == sh.procs.end() || it->second.facts.image != image) return std::nullopt;
    Entry& e = it->second;
    e.used = true;
    found.stamp = e.stamp;
    for (std::size_t i = 0; i < e.callers.size(); ++i) {
      if (same_identity(*e.callers[i].basis, *named)) {
        found.caller = e.callers[i].caller;
        found.slot = i;
        return found;
      }
    }
    facts = e.facts;
    if (!e.callers.empty()) environ = e.callers.front().caller->environ;
  }
  // A new identity in this process: a context of its own, with the same
  // environment, kept with the others while there is room.
  found.caller = context_on_image(*named, tgid, facts, std::move(environ));
  found.slot = kMaxCallersPerProcess;
  const std::size_t extra = caller_bytes(*found.caller);
  if (!reserve(extra)) return found;
  std::lock_guard lock(sh.mu);
  const auto it = sh.procs.find(tgid);
  if (it != sh.procs.end() && it->second.stamp == found.stamp && it->second.callers.size() < kMaxCallersPerProcess) {
    it->second.callers.push_back(ProcCaller{named, found.caller});
    it->second.bytes += extra;
    found.slot = it->second.callers.size() - 1;
  } else {
    unreserve(extra);
  }
  return found;
}

std::uint64_t EnvironCache::store(pid_t tgid, const ImageFacts& facts, std::uint64_t filter,
                                  std::shared_ptr<const Caller> named, std::shared_ptr<const Caller> c,
                                  std::uint64_t since) {
  Entry e;
  e.facts = facts;
  e.filter = filter;
  e.used = true;
  e.stamp = next_stamp_.fetch_add(1, std::memory_order_relaxed);
  e.bytes = sizeof(std::pair<const pid_t, Entry>) + 32 + caller_bytes(*c);  // the entry, its hash node
  if (!reserve(e.bytes)) return 0;  // larger than the whole limit: used, not kept
  const std::uint64_t stamp = e.stamp;
  e.callers.push_back(ProcCaller{std::move(named), std::move(c)});
  Shard& sh = shard_for(tgid);
  std::lock_guard lock(sh.mu);
  // An exec/exit event came in between, or a reload changed what is kept.
  if (sh.forgot_since(tgid, since) || e.filter != filter_stamp_.load(std::memory_order_acquire)) {
    unreserve(e.bytes);
    return 0;
  }
  if (auto it = sh.procs.find(tgid); it != sh.procs.end()) erase(sh, it);
  if (sh.procs.size() >= per_shard_) evict_one(sh);
  sh.procs.emplace(tgid, std::move(e));
  return stamp;
}

void EnvironCache::erase(Shard& sh, Iterator it) {
  unreserve(it->second.bytes);
  sh.procs.erase(it);
}

void EnvironCache::forget(pid_t pid) {
  Shard& sh = shard_for(pid);
  std::lock_guard lock(sh.mu);
  if (auto it = sh.procs.find(pid); it != sh.procs.end()) erase(sh, it);
  ++sh.seq;
  sh.forgotten[sh.seq % kForgottenRing] = pid;
}

void EnvironCache::forget_all() { drop_all(true); }

void EnvironCache::drop_all(bool as_forgotten) {
  for (Shard& sh : shards_) {
    std::lock_guard lock(sh.mu);
    for (auto it = sh.procs.begin(); it != sh.procs.end();) {
      unreserve(it->second.bytes);
      it = sh.procs.erase(it);
    }
    if (as_forgotten) sh.seq += kForgottenRing;  // every pid counts as forgotten
  }
}

// Makes room for `n` more kept bytes, evicting other processes' entries as
// needed. False when it cannot (n is above the whole limit).
bool EnvironCache::reserve(std::size_t n) {
  if (n > max_bytes_) return false;
  for (int round = 0; round < 4; ++round) {
    std::size_t cur = bytes_used_.load(std::memory_order_relaxed);
    while (cur + n <= max_bytes_) {
      if (bytes_used_.compare_exchange_weak(cur, cur + n, std::memory_order_relaxed)) return true;
    }
    evict(cur + n - max_bytes_);
  }
  return false;
}

// A CLOCK over the shards, one shard lock at a time (the caller holds
// none): an entry looked up since the hand last passed gets a second
// chance. Two turns free anything there is to free.
void EnvironCache::evict(std::size_t want) {
  std::size_t freed = 0;
  for (std::size_t step = 0; step < 2 * kShards && freed < want; ++step) {
    Shard& sh = shards_[hand_.fetch_add(1, std::memory_order_relaxed) % kShards];
    std::lock_guard lock(sh.mu);
    for (auto it = sh.procs.begin(); it != sh.procs.end() && freed < want;) {
      clock_moves_.fetch_add(1, std::memory_order_relaxed);
      if (it->second.used) {
        it->second.used = false;
        ++it;
        continue;
      }
      freed += it->second.bytes;
      evictions_.fetch_add(1, std::memory_order_relaxed);
      unreserve(it->second.bytes);
      it = sh.procs.erase(it);
    }
  }
}

// The count bound of one shard (the byte limit is the usual one): the
// first entry not used since the hand passed, else any.
void EnvironCache::evict_one(Shard& sh) {
  auto victim = sh.procs.begin();
  for (auto it = sh.procs.begin(); it != sh.procs.end(); ++it) {
    clock_moves_.fetch_add(1, std::memory_order_relaxed);
    if (!it->second.used) {
      victim = it;
      break;
    }
    it->second.used = false;
  }
  if (victim == sh.procs.end()) return;
  evictions_.fetch_add(1, std::memory_order_relaxed);
  erase(sh, victim);
}

EnvironCache::Stats EnvironCache::stats() const {
  Stats s;
  for (const Shard& sh : shards_) {
    std::lock_guard lock(sh.mu);
    s.processes += sh.procs.size();
  }
  s.bytes = bytes_used_.load(std::memory_order_relaxed);
  s.evictions = evictions_.load(std::memory_order_relaxed);
  return s;
}

}  // namespace vsymfs::daemon
