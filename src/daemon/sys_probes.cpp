#include "daemon/sys_probes.hpp"

#include <sys/stat.h>

#include <array>
#include <atomic>
#include <climits>
#include <utility>

namespace vsymfs::daemon {

bool LinkDirectory::identity(dev_t&, ino_t&) { return false; }

std::string LinkDirectory::link_path() { return {}; }

namespace {

std::uint64_t next_cache_id() {
  static std::atomic<std::uint64_t> ids{0};
  return ids.fetch_add(1, std::memory_order_relaxed) + 1;
}

}  // namespace

SysProbeCache::SysProbeCache(double ttl_seconds, const CacheGeneration& generation)
    : ttl_(ttl_seconds > 0 ? std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(ttl_seconds))
                           : Clock::duration::zero()),
      generation_(generation),
      id_(next_cache_id()),
      cache_(kCapacity, generation, kShards) {}

SysProbeCache::Local& SysProbeCache::local_slot(std::size_t hash) {
  thread_local std::array<Local, kLocalSlots> slots;
  return slots[(hash / kShards) % kLocalSlots];
}

void SysProbeCache::remember(Local& l, std::string_view key, std::uint64_t tag, const Answer& a) const {
  l.owner = id_;
  l.tag = tag;
  l.expires = a.expires;
  l.exists = a.exists;
  l.key.assign(key);
}

std::optional<bool> SysProbeCache::find(std::string_view key, Clock::time_point now, Clock::time_point* expires) {
  const std::size_t h = StringHash{}(key);
  Local& l = local_slot(h);
  if (l.owner == id_ && l.tag == generation_.value() && now < l.expires && l.key == key) {
    local_hits_.fetch_add(1, std::memory_order_relaxed);
    if (expires != nullptr) *expires = l.expires;
    return l.exists;
  }
  std::optional<bool> out;
  cache_.lookup(key, h, [&](const Answer& a, std::uint64_t tag) {
    if (now >= a.expires) return false;
    // The copy carries the entry's generation, read under its shard's
    // lock: a copy of an entry that a bump made stale is stale too.
    remember(l, key, tag, a);
    out = a.exists;
    if (expires != nullptr) *expires = a.expires;
    return true;
  });
  return out;
}

bool SysProbeCache::store(std::string_view key, std::uint64_t tag, Clock::time_point now, bool exists,
                          Clock::time_point* expires) {
  const Answer a{now + ttl_, exists};
  // Not stored when a bump came in since `tag` was read.
  if (!cache_.insert(key, a, tag)) return false;
  remember(local_slot(StringHash{}(key)), key, tag, a);
  if (expires != nullptr) *expires = a.expires;
  return true;
}

SysProbeCache::Totals SysProbeCache::totals() const {
  const auto s = cache_.stats();
  Totals t;
  t.entries = s.entries;
  t.hits = s.hits + local_hits_.load(std::memory_order_relaxed);
  t.misses = s.misses;
  return t;
}

namespace {

// One buffer per thread: after the first few lookups a key costs no
// allocation.
std::string& key_buffer() {
  thread_local std::string buf;
  return buf;
}

}  // namespace

bool SourceProbe::exists(std::string_view target) const {
  if (target.empty() || target.size() >= PATH_MAX) return false;
  const bool relative = target.front() != '/';
  std::string* key = nullptr;
  Clock::time_point now{};
  if (cache_.enabled() && probe_key(relative, target)) {
    key = &key_buffer();
    now = Clock::now();
    Clock::time_point expires{};
    if (auto cached = cache_.find(*key, now, &expires)) {
      note(expires);
      return *cached;
    }
  }
  // Until this answer is stored, the expansion has nothing to be
  // remembered by (an unknown walk, a generation bump: never).
  const bool lasting = std::exchange(lasting_, false);
  const int dir = relative ? directory_fd() : -1;
  // No directory descriptor: nothing was asked, nothing is known.
  if (relative && dir < 0) return false;
  // The key named the directory as link_dir_ knew it; the answer is the
  // descriptor's. Kept only when the two are one directory (a rename may
  // have moved the link in between).
  if (key != nullptr && relative && identity_from_link_dir_) {
    struct stat st {};
    if (::fstat(dir, &st) != 0 || st.st_dev != dev_ || st.st_ino != ino_) key = nullptr;
  }
  ProbeWalker::Inside inside = walk_here_ ? walker_.inside(dir, target) : ProbeWalker::Inside::Leaves;
  bool found = inside == ProbeWalker::Inside::Exists;
  if (inside == ProbeWalker::Inside::Leaves) {
    // One budget for the whole expansion, however many candidates leave.
    if (deadline_ == Clock::time_point{}) deadline_ = Clock::now() + budget_;
    const ProbeWalker::Answer a = walker_.anywhere(dir, target, creds_, deadline_);
    if (a == ProbeWalker::Answer::Unknown) return false;  // absent this once; not remembered
    found = a == ProbeWalker::Answer::Exists;
  }
  if (key != nullptr && store_) {
    Clock::time_point expires{};
    if (cache_.store(*key, tag_, now, found, &expires) && lasting) {
      lasting_ = true;
      note(expires);
    }
  }
  return found;
}

// The cache key: the directory's (st_dev, st_ino), the probing identity
// (uid, gid, groups), then the target. An absolute target does not depend
// on the directory: zeros.
bool SourceProbe::probe_key(bool relative, std::string_view target) const {
  if (relative && !have_identity_) {
    if (!identity_known_) {
      identity_known_ = true;
      have_identity_ = link_dir_.identity(dev_, ino_);
      identity_from_link_dir_ = have_identity_;
      if (!have_identity_) {
        // Ask the descriptor, which a miss needs anyway.
        struct stat st {};
        if (directory_fd() >= 0 && ::fstat(dir_fd_, &st) == 0) {
          dev_ = st.st_dev;
          ino_ = st.st_ino;
          have_identity_ = true;
        }
      }
    }
    if (!have_identity_) return false;
  }
  const std::uint64_t id[2] = {relative ? static_cast<std::uint64_t>(dev_) : 0,
                               relative ? static_cast<std::uint64_t>(ino_) : 0};
  const std::uint32_t who[3] = {creds_.uid, creds_.gid, static_cast<std::uint32_t>(creds_.groups.size())};
  std::string& key = key_buffer();
  key.assign(reinterpret_cast<const char*>(id), sizeof id);
  key.append(reinterpret_cast<const char*>(who), sizeof who);
  key.append(reinterpret_cast<const char*>(creds_.groups.data()), creds_.groups.size_bytes());
  key.append(target);
  return true;
}

int SourceProbe::directory_fd() const {
  if (!dir_fd_known_) {
    dir_fd_known_ = true;
    dir_fd_ = link_dir_.fd();
  }
  return dir_fd_;
}

}  // namespace vsymfs::daemon
