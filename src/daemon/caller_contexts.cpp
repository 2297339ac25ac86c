// Caching policy (why each piece is safe to reuse):
//  - identity (groups, real ids) is keyed by (pid, uid, gid) and trusted for
//    identity_ttl_ms: groups change only through setgroups, which needs
//    privilege, and a uid/gid change changes the key. "pid" is the calling
//    thread's id (FUSE reports threads), and threads may hold different
//    credentials, so identity stays per thread. An id handed to another
//    task must not pass its holder's groups on: an exit event drops the
//    id's entries, and an expansion for an image we hold no context for
//    (or cannot identify) reads the identity afresh. Permission switching
//    alone (identity()) may use a dead holder's groups until the TTL ends
//    when there are no events; the kernel has checked the caller's own
//    permissions before (default_permissions).
//  - what belongs to a program image (environment, AT_SECURE, ELF class,
//    personality, the binfmt_misc emulation of a foreign-architecture
//    program) is kept once per *process* (thread group id, from the
//    thread's status), validated like the thread entries below, and shared
//    by every thread of that process: a process with 4000 threads costs one
//    environment, not 4000 (one per distinct identity among its threads,
//    at most kMaxCallersPerProcess). A thread entry only points at its
//    process's entry (by a stamp unique to that entry, never reused), so
//    dropping a process entry frees its environment at once.
//  - only the variables the rules can take are kept (follow_rules()), and
//    all kept environments together stay within max_environ_bytes (least
//    recently used processes go first, a CLOCK over the shards). Not
//    "referenced by some link": a user can write a link naming any variable
//    at any moment, and a variable dropped because no link named it yet
//    could not be told from an absent one; the byte limit is what bounds
//    memory, whatever an environment holds.
//  - a process caught inside execve gets the environment it is passing
//    (envp), as the program it is about to run will; that answer is not
//    kept (the process's other threads still run the old image). A forked
//    child that made requests before its execve keeps its cached (pre-exec)
//    environment for the lookups of that execve.
//    With the process events connector (the default when we
//    run as root in the initial namespaces) the kernel's exec and exit
//    events drop entries, applied before every lookup (a poll of the
//    socket, no lock, when nothing is queued): exact, and no /proc read per
//    request. Otherwise every call validates it against a hash
//    of /proc/<pid>/auxv (its stack and vDSO addresses move on every execve
//    under ASLR, and a reused pid has had its own execve), or on kernels
//    before 5.7 /proc/<pid>/stat's starttime (changes on pid reuse) and
//    arg_start/env_start/env_end (change on every execve; the process entry
//    uses these three alone, the thread's starttime being its own). Residual
//    risk: with address randomisation disabled (setarch -R,
//    randomize_va_space=0) a process that re-executes the same program with
//    an environment of exactly the same size keeps its old cached
//    environment (with the auxv key, so does a reused pid that runs the
//    same program that way). A forked child that has not exec'd shares its
//    parent's image and environment, so sharing its key is right. The
//    environment is read as of execve, as the kernel shows it; later
//    setenv() calls are invisible to us in any case.
//  - NSS answers are cached per uid/gid for nss_ttl_ms.
#include "daemon/caller_contexts.hpp"

#include <sys/utsname.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <mutex>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "daemon/binfmt_registry.hpp"
#include "daemon/caller_names.hpp"
#include "daemon/environ_cache.hpp"
#include "daemon/exec_watcher.hpp"
#include "daemon/mount_state.hpp"
#include "daemon/namespaces.hpp"
#include "daemon/per_thread.hpp"
#include "daemon/proc_pool.hpp"
#include "daemon/proc_reader.hpp"
#include "vsymfs/resolver.hpp"

namespace vsymfs::daemon {

namespace {

using Clock = std::chrono::steady_clock;

constexpr std::size_t kShards = 16;

struct IdKey {
  pid_t pid;
  uid_t uid;
  gid_t gid;
  bool operator==(const IdKey&) const = default;
};
struct IdKeyHash {
  std::size_t operator()(const IdKey& k) const noexcept {
    std::uint64_t h = static_cast<std::uint32_t>(k.pid);
    h = h * 0x9E3779B97F4A7C15ull ^ k.uid;
    h = h * 0x9E3779B97F4A7C15ull ^ k.gid;
    return static_cast<std::size_t>(h ^ (h >> 29));
  }
};

struct IdEntry {
  Clock::time_point read_at;
  std::shared_ptr<const Caller> identity;
  std::shared_ptr<const Caller> named;  // built on first demand
};

// One thread's link to its process's entry.
struct ThreadEntry {
  uid_t uid;
  gid_t gid;
  std::uint64_t image;  // the thread's image key (0 with events)
  std::shared_ptr<const Caller> identity_basis;  // the identity this link was made with
  pid_t tgid;
  std::uint64_t stamp;  // the process's entry in the environment cache
  std::size_t slot;     // its context for this identity there
};

// How many of the latest exec/exit events a shard remembers (see Shard).
constexpr std::uint64_t kForgottenRing = 64;

struct Shard {
  std::mutex mu;
  // Bumped whenever an exec/exit event drops an entry here, and the pid it
  // named remembered in `forgotten` (at seq % kForgottenRing): a context
  // read while that pid's event came in may describe the old image and is
  // not stored. Other pids' events (a busy machine has many) do not matter.
  std::uint64_t seq = 0;
  std::array<pid_t, kForgottenRing> forgotten{};

  // Whether an event for `pid` came in after `since` (a value of seq). When
  // more events came in than the ring holds, it cannot tell: yes.
  bool forgot_since(pid_t pid, std::uint64_t since) const noexcept {
    if (seq - since >= kForgottenRing) return seq != since;
    for (std::uint64_t s = since + 1; s <= seq; ++s)
      if (forgotten[s % kForgottenRing] == pid) return true;
    return false;
  }
  std::unordered_map<IdKey, IdEntry, IdKeyHash> ids;
  std::unordered_map<pid_t, ThreadEntry> threads;  // by thread id
};

// A thread's own copies of the last few contexts it was given, each with
// its own reference count (per_thread.hpp), keyed by the CallerContexts
// instance and the request's pid, uid and gid. An entry holds while the
// epochs it was stored under are unchanged and its identity is younger
// than the TTL; the epochs are read before the lookup whose result is
// stored, so an invalidation during the lookup is seen by the next request.
// Entries are replaced in turn: callers taking turns on one worker thread
// still find theirs.
struct FrontEntry {
  std::uint64_t owner = 0;
  std::array<std::uint64_t, 3> epochs{};
  pid_t pid = 0;
  uid_t uid = 0;
  gid_t gid = 0;
  Clock::time_point read_at{};
  std::shared_ptr<const Caller> value;
};

struct ThreadFront {
  static constexpr std::size_t kEntries = 4;
  std::array<FrontEntry, kEntries> entries;
  std::size_t next = 0;

  const std::shared_ptr<const Caller>* find(std::uint64_t owner, pid_t pid, uid_t uid, gid_t gid,
                                            const std::array<std::uint64_t, 3>& epochs, Clock::time_point now,
                                            Clock::duration ttl) noexcept {
    for (FrontEntry& e : entries)
      if (e.owner == owner && e.pid == pid && e.uid == uid && e.gid == gid && e.value) {
        if (e.epochs == epochs && now - e.read_at <= ttl) return &e.value;
        e.owner = 0;  // stale: looked up again, into the next entry
        return nullptr;
      }
    return nullptr;
  }

  const std::shared_ptr<const Caller>& store(std::uint64_t owner, pid_t pid, uid_t uid, gid_t gid,
                                             const std::array<std::uint64_t, 3>& epochs, Clock::time_point read_at,
                                             std::shared_ptr<const Caller> value) {
    FrontEntry fresh{owner, epochs, pid, uid, gid, read_at, per_thread_alias(std::move(value))};
    FrontEntry& slot = entries[next++ % kEntries];
    std::swap(slot, fresh);  // the old entry's reference goes with `fresh`
    return slot.value;
  }
};

bool kernel_at_least(unsigned major, unsigned minor) {
  utsname u{};
  if (::uname(&u) != 0) return false;
  unsigned maj = 0, min = 0;
  if (std::sscanf(u.release, "%u.%u", &maj, &min) != 2) return false;
  return maj > major || (maj == major && min >= minor);
}

}  // namespace

struct CallerContexts::Impl {
  explicit Impl(Options o)
      : opts(o),
        per_shard(std::max<std::size_t>(1, o.max_entries / kShards)),
        environs(o.max_entries, o.max_environ_bytes),
        names(std::chrono::milliseconds(o.nss_ttl_ms), o.caller_accounts,
              std::chrono::milliseconds(o.environ_timeout_ms)),
        pool(o.helper_threads, o.max_queued) {
    using Key = Options::ImageKey;
    if (o.image_key == Key::Auto || o.image_key == Key::Events) {
      // Now that everything `forget` touches is built.
      watcher = ExecWatcher::open([this](pid_t pid) { forget(pid); }, [this] { forget_all(); });
      if (watcher) {
        key_in_use = Key::Events;
        return;
      }
    }
    if (o.image_key == Key::Auxv || o.image_key == Key::Stat)
      key_in_use = o.image_key;
    else
      key_in_use = kernel_at_least(5, 7) ? Key::Auxv : Key::Stat;
  }

  Impl(const Impl&) = delete;
  Impl& operator=(const Impl&) = delete;

  // Every exec/exit event queued before this call is applied (exec_watcher.hpp).
  void sync_events() {
    if (watcher) watcher->sync();
  }

  // A task exec'd, exited, or its id was handed out again: whatever was
  // kept for that thread id, and for the process if it was one, is void.
  void forget(pid_t pid) {
    {
      Shard& sh = shard_for(pid);
      std::lock_guard lock(sh.mu);
      sh.threads.erase(pid);
      // The identities too: the next holder of this id may have the same uid
      // and gid but other groups (its [group.NAME] values are its own).
      std::erase_if(sh.ids, [pid](const auto& e) { return e.first.pid == pid; });
      ++sh.seq;
      sh.forgotten[sh.seq % kForgottenRing] = pid;
    }
    epoch_for(pid).fetch_add(1, std::memory_order_release);  // after the erase: see identity_front()
    environs.forget(pid);
  }

  void forget_all() {
    for (Shard& sh : shards) {
      std::lock_guard lock(sh.mu);
      sh.threads.clear();
      sh.seq += kForgottenRing;  // every pid counts as forgotten
    }
    environs.forget_all();
    contexts_epoch.fetch_add(1, std::memory_order_release);
  }

  // The links of every thread (after the environment cache dropped every entry).
  void forget_threads() {
    for (Shard& sh : shards) {
      std::lock_guard lock(sh.mu);
      sh.threads.clear();
    }
    contexts_epoch.fetch_add(1, std::memory_order_release);
  }

  Options opts;
  std::shared_ptr<BinfmtRegistry> binfmt = std::make_shared<BinfmtRegistry>(opts.binfmt_dir);
  std::size_t per_shard;
  Shard shards[kShards];     // identities and thread links
  EnvironCache environs;     // what each process image shares among its threads

  CallerNames names;  // user and group names, home

  // Namespaces other than the daemon's (0 for the daemon's own, or unknown).
  static void note_namespaces(Caller& c) {
    if (c.pid == 0) return;
    const NamespaceIds ids = read_namespace_ids(c.pid);
    const NamespaceIds& own = own_namespace_ids();
    c.uts_ns = ids.uts != own.uts ? ids.uts : 0;
    c.mnt_ns = ids.mnt != own.mnt ? ids.mnt : 0;
  }

  ShardedCounter hits, misses, front_hits, full_front_hits;  // counted per request (per_thread.hpp)

  // One per shard, each on a cache line of its own: bumped after one of
  // the shard's identities was dropped for an event (forget) or replaced by
  // a forced re-read, so that no thread's front entry outlives it. Per
  // shard, so that the exec and exit events of a busy machine (make -j)
  // void only the front entries of pids in the same shard, not all of them.
  struct alignas(64) Epoch {
    std::atomic<std::uint64_t> value{0};
  };
  std::array<Epoch, kShards> shard_epochs;
  std::atomic<std::uint64_t>& epoch_for(pid_t pid) noexcept {
    return shard_epochs[static_cast<std::uint32_t>(pid) % kShards].value;
  }
  const std::uint64_t instance = next_instance_id();

  // Bumped when every thread's link is dropped (lost events, a reload
  // that changes the kept variables): no full() front entry outlives it.
  std::atomic<std::uint64_t> contexts_epoch{0};

  // identity() and, with events, full() answer a caller's requests in a
  // row from the thread's own copies (ThreadFront): no lock taken, no
  // shared line written. identity() entries are voided by the pid's shard's
  // epoch (an exec/exit event, a forced re-read). full() entries also by
  // contexts_epoch and by any move of the environment cache's eviction
  // clock (so that an evicted entry is read again, as without the copy, and
  // the clock sees the process's next request). Without events, full() has
  // an image key to check on every request and keeps no copies.
  // named() the same way, from copies of its own (an identity with the
  // NSS names, kept as long as the identity it was made from).
  std::shared_ptr<const Caller> identity_front(pid_t pid, uid_t uid, gid_t gid, bool want_named = false) {
    thread_local ThreadFront identities, named;
    ThreadFront& front = want_named ? named : identities;
    const auto now = Clock::now();
    const std::array<std::uint64_t, 3> epochs{epoch_for(pid).load(std::memory_order_acquire), 0, 0};
    const auto ttl = std::chrono::milliseconds(opts.identity_ttl_ms);
    if (const auto* hit = front.find(instance, pid, uid, gid, epochs, now, ttl)) {
      front_hits.fetch_add(1, std::memory_order_relaxed);
      return *hit;
    }
    Clock::time_point read_at = now;
    std::shared_ptr<const Caller> ident = lookup_identity(pid, uid, gid, want_named, nullptr, false, &read_at);
    return front.store(instance, pid, uid, gid, epochs, read_at, std::move(ident));
  }

  std::array<std::uint64_t, 3> full_epochs(pid_t pid) const noexcept {
    return {shard_epochs[static_cast<std::uint32_t>(pid) % kShards].value.load(std::memory_order_acquire),
            contexts_epoch.load(std::memory_order_acquire), environs.clock_moves()};
  }

  ProcPool pool;  // counts the timeouts

  Options::ImageKey key_in_use = Options::ImageKey::Auxv;
  // Declared last, so destroyed first: its thread calls forget() until then.
  // Its drain lock is taken before any Shard::mu.
  std::unique_ptr<ExecWatcher> watcher;  // null: validate by image key instead

  Shard& shard_for(pid_t pid) { return shards[static_cast<std::uint32_t>(pid) % kShards]; }

  // `tgid_out` (may be null) gets the thread group id status reported, or
  // 0 when status was not read or did not match the request.
  std::shared_ptr<const Caller> read_identity(pid_t pid, uid_t uid, gid_t gid, pid_t* tgid_out = nullptr) const {
    auto c = std::make_shared<Caller>();
    c->pid = pid;
    c->uid = c->ruid = uid;
    c->gid = c->rgid = gid;
    c->groups = {gid};
    if (pid == 0) return c;
    auto st = proc::read_status(pid);
    // The request's ids are the fs ids; if the thread's ids have changed
    // since (or it is gone), trust nothing from status but the request.
    if (st && st->fsuid == uid && st->fsgid == gid) {
      c->ruid = st->ruid;
      c->rgid = st->rgid;
      c->groups = std::move(st->groups);
      c->secure = proc::status_says_secure(*st);
      if (tgid_out != nullptr) *tgid_out = st->tgid;
    }
    note_namespaces(*c);
    return c;
  }

  void fill_names(Caller& c) { names.fill(c); }

  // Returns the cached identity entry's pointers, refreshed when stale.
  // `want_named` also fills the NSS names on first demand. `tgid_out` gets
  // the thread group id when status was read by this call, else 0.
  // `fresh_only`: read /proc/<pid>/status whatever is cached.
  // `read_at_out` (may be null) gets when the identity returned was read.
  std::shared_ptr<const Caller> lookup_identity(pid_t pid, uid_t uid, gid_t gid, bool want_named,
                                                pid_t* tgid_out = nullptr, bool fresh_only = false,
                                                Clock::time_point* read_at_out = nullptr) {
    if (tgid_out != nullptr) *tgid_out = 0;
    Shard& sh = shard_for(pid);
    const IdKey key{pid, uid, gid};
    const auto now = Clock::now();
    const auto ttl = std::chrono::milliseconds(opts.identity_ttl_ms);
    std::shared_ptr<const Caller> ident;
    if (!fresh_only) {
      std::lock_guard lock(sh.mu);
      auto it = sh.ids.find(key);
      if (it != sh.ids.end() && now - it->second.read_at <= ttl) {
        if (read_at_out != nullptr) *read_at_out = it->second.read_at;
        if (!want_named) return it->second.identity;
        if (it->second.named) return it->second.named;
        ident = it->second.identity;
      }
    }
    const bool fresh = !ident;
    if (fresh) ident = read_identity(pid, uid, gid, tgid_out);
    if (fresh && read_at_out != nullptr) *read_at_out = now;
    std::shared_ptr<const Caller> named;
    if (want_named) {
      auto n = std::make_shared<Caller>(*ident);
      fill_names(*n);
      named = std::move(n);
    }
    {
      std::lock_guard lock(sh.mu);
      if (sh.ids.size() >= per_shard) sh.ids.clear();
      IdEntry& e = sh.ids[key];
      if (fresh) {
        e.read_at = now;
        e.identity = ident;
        e.named = named;
      } else if (e.identity == ident) {
        e.named = named;
      }
    }
    // A forced re-read replaced what may have been the id's last holder's
    // identity: no thread's front entry may keep serving that one.
    if (fresh_only) epoch_for(pid).fetch_add(1, std::memory_order_release);
    return want_named ? named : ident;
  }

  // The image keys of the thread making the request: its own, and its
  // process's (the same but with the Stat key, whose starttime is the
  // thread's). Both 0 with events, where entries are dropped instead.
  struct ImageKeys {
    std::uint64_t thread = 0, process = 0;
  };

  Result<ImageKeys> image_keys(pid_t pid) const {
    if (key_in_use == Options::ImageKey::Auxv) {
      auto h = proc::read_auxv_hash(pid);
      if (!h) return std::move(h).error();
      return ImageKeys{*h, *h};
    }
    auto id = proc::read_exec_identity(pid);
    if (!id) return std::move(id).error();
    std::uint64_t process = 0xcbf29ce484222325ull;
    for (std::uint64_t v : {id->arg_start, id->env_start, id->env_end}) process = (process ^ v) * 0x100000001B3ull;
    return ImageKeys{(process ^ id->starttime) * 0x100000001B3ull, process};
  }

  // A rules reload that changes which variables are kept drops the kept
  // environments (they lack variables the new rules take, or hold ones they
  // no longer do), and so the threads' links to them. One atomic load when
  // nothing changed.
  void sync_filter() {
    if (environs.sync_filter()) forget_threads();
  }

  std::shared_ptr<const Caller> lookup_full(pid_t pid, uid_t uid, gid_t gid) {
    if (pid == 0) return lookup_identity(pid, uid, gid, true);
    sync_filter();
    ImageKeys keys;  // with events, entries are dropped instead of compared
    thread_local ThreadFront front;
    std::array<std::uint64_t, 3> epochs{};
    const auto now = Clock::now();
    const auto ttl = std::chrono::milliseconds(opts.identity_ttl_ms);
    if (watcher) {
      sync_events();
      epochs = full_epochs(pid);
      if (const auto* hit = front.find(instance, pid, uid, gid, epochs, now, ttl)) {
        hits.fetch_add(1, std::memory_order_relaxed);
        full_front_hits.fetch_add(1, std::memory_order_relaxed);
        return *hit;
      }
    } else {
      auto k = image_keys(pid);
      // Gone, or not ours to read (a non-dumpable process): no process
      // scope, and an identity read now, as we cannot tell whose it was.
      if (!k) return lookup_identity(pid, uid, gid, true, nullptr, true);
      keys = *k;
    }
    Clock::time_point read_at;
    if (auto hit = cached_full(pid, uid, gid, keys.thread, now, &read_at)) {
      if (!watcher) return hit;
      return front.store(instance, pid, uid, gid, epochs, read_at, std::move(hit));
    }

    // A program image we have no context for (a new thread, an execve, or
    // an id that another process holds now) has its identity read afresh:
    // one kept from the id's last holder would give it that holder's groups.
    bool known_image;
    {
      Shard& sh = shard_for(pid);
      std::lock_guard lock(sh.mu);
      const auto it = sh.threads.find(pid);
      known_image = it != sh.threads.end() && it->second.image == keys.thread && it->second.uid == uid &&
                    it->second.gid == gid;
    }
    pid_t tgid = 0;
    auto named = lookup_identity(pid, uid, gid, true, &tgid, !known_image);
    if (tgid == 0) {
      // The identity was cached: which process the thread belongs to is
      // read again, for a thread id may have been handed out anew since.
      if (auto st = proc::read_status(pid); st) tgid = st->tgid;
    }
    if (tgid <= 0) tgid = pid;
    Shard& ts = shard_for(pid);
    std::uint64_t tseq;
    {
      std::lock_guard lock(ts.mu);
      tseq = ts.seq;
    }
    const std::uint64_t pseq = environs.seq(tgid);

    // Another thread of this process (or this one, before its identity
    // was re-read) has its image's environment kept already.
    if (auto c = from_process(pid, tgid, keys, named, tseq)) return c;

    misses.fetch_add(1, std::memory_order_relaxed);
    auto job = std::make_shared<ProcJob>();
    job->pid = pid;
    job->try_execve_envp = key_in_use != Options::ImageKey::Stat;
    job->binfmt = binfmt;
    if (!pool.run(job, std::chrono::milliseconds(opts.environ_timeout_ms))) {
      // Unknown, not absent: the caller must not quietly get the lower
      // scopes (see Caller::environ_late). Not cached: the next request
      // tries again.
      auto c = std::make_shared<Caller>(*named);
      c->environ_late = true;
      return c;
    }

    ImageFacts facts;
    facts.image = keys.process;
    facts.compat32 = job->compat32;
    facts.emulation = std::move(job->emulation);
    facts.auxv_secure = job->auxv_secure;
    facts.environ_known = job->environ_ok;
    std::uint64_t filter;
    if (job->environ_ok) {
      filter = environs.keep_used(job->environ);
    } else {
      job->environ.clear();
      filter = environs.filter_stamp();
    }
    std::shared_ptr<const Caller> c = context_on_image(*named, tgid, facts, std::move(job->environ));
    // The envp of an execve in progress is this thread's alone: the
    // process's other threads still run the old image.
    if (job->from_execve) return c;
    // Apply events that arrived during the read: if the process exec'd
    // meanwhile, what we read may be the old image's and is not cached.
    sync_events();
    if (const std::uint64_t stamp = environs.store(tgid, facts, filter, named, c, pseq))
      link_thread(pid, tgid, keys.thread, std::move(named), stamp, 0, tseq);
    return c;
  }

  // The common case: a fresh identity, the thread's link made with exactly
  // that identity, and its process entry still there. Anything else takes
  // the general path, which re-checks all of this.
  // `read_at` gets when the identity it was built on was read.
  std::shared_ptr<const Caller> cached_full(pid_t pid, uid_t uid, gid_t gid, std::uint64_t image,
                                            Clock::time_point now, Clock::time_point* read_at) {
    pid_t tgid;
    std::uint64_t stamp;
    std::size_t slot;
    {
      Shard& sh = shard_for(pid);
      std::lock_guard lock(sh.mu);
      const auto id = sh.ids.find(IdKey{pid, uid, gid});
      if (id == sh.ids.end() || !id->second.named ||
          now - id->second.read_at > std::chrono::milliseconds(opts.identity_ttl_ms))
        return nullptr;
      const auto it = sh.threads.find(pid);
      if (it == sh.threads.end() || it->second.image != image || it->second.uid != uid || it->second.gid != gid ||
          it->second.identity_basis != id->second.named)
        return nullptr;
      tgid = it->second.tgid;
      stamp = it->second.stamp;
      slot = it->second.slot;
      *read_at = id->second.read_at;
    }
    std::shared_ptr<const Caller> c = environs.context(tgid, stamp, slot);
    if (c) hits.fetch_add(1, std::memory_order_relaxed);
    return c;
  }

  // A context from the process's kept entry, and the thread linked to it;
  // null when the process has no entry for this image.
  std::shared_ptr<const Caller> from_process(pid_t pid, pid_t tgid, ImageKeys keys,
                                             const std::shared_ptr<const Caller>& named, std::uint64_t tseq) {
    auto found = environs.for_identity(tgid, keys.process, named);
    if (!found) return nullptr;
    hits.fetch_add(1, std::memory_order_relaxed);
    if (found->slot < EnvironCache::kMaxCallersPerProcess)
      link_thread(pid, tgid, keys.thread, named, found->stamp, found->slot, tseq);
    return found->caller;
  }

  void link_thread(pid_t pid, pid_t tgid, std::uint64_t image, std::shared_ptr<const Caller> named,
                   std::uint64_t stamp, std::size_t slot, std::uint64_t tseq) {
    Shard& ts = shard_for(pid);
    std::lock_guard lock(ts.mu);
    if (ts.forgot_since(pid, tseq)) return;  // an exec/exit event for this thread came in between
    if (ts.threads.size() >= per_shard) ts.threads.clear();
    ts.threads.insert_or_assign(pid, ThreadEntry{named->uid, named->gid, image, std::move(named), tgid, stamp, slot});
  }
};

CallerContexts::CallerContexts() : CallerContexts(Options{}) {}
CallerContexts::CallerContexts(Options opts) : impl_(std::make_unique<Impl>(opts)) {}
CallerContexts::~CallerContexts() = default;

std::shared_ptr<const Caller> CallerContexts::identity(pid_t pid, uid_t uid, gid_t gid) {
  return impl_->identity_front(pid, uid, gid);
}

std::shared_ptr<const Caller> CallerContexts::named(pid_t pid, uid_t uid, gid_t gid) {
  return impl_->identity_front(pid, uid, gid, true);
}

std::shared_ptr<const Caller> CallerContexts::full(pid_t pid, uid_t uid, gid_t gid) {
  return impl_->lookup_full(pid, uid, gid);
}

std::shared_ptr<const Caller> CallerContexts::described(Caller caller) {
  auto c = std::make_shared<Caller>(std::move(caller));
  impl_->fill_names(*c);
  return c;
}

CallerContexts::Options::ImageKey CallerContexts::image_key() const noexcept { return impl_->key_in_use; }

const char* CallerContexts::exec_events_check() const noexcept {
  if (!impl_->watcher) return "none";
  return impl_->watcher->doorbell() ? "doorbell" : "poll";
}

void CallerContexts::set_timeout_counter(std::atomic<std::uint64_t>* counter) noexcept {
  impl_->pool.count_timeouts_in(counter);
}

void CallerContexts::follow_rules(const MountState& state) {
  if (impl_->environs.follow_rules(state)) impl_->forget_threads();
}

CallerContexts::Stats CallerContexts::stats() const {
  Stats s{};
  for (auto& sh : impl_->shards) {
    std::lock_guard lock(sh.mu);
    s.entries += sh.ids.size() + sh.threads.size();
  }
  const EnvironCache::Stats e = impl_->environs.stats();
  s.entries += e.processes;
  s.processes = e.processes;
  s.environ_bytes = e.bytes;
  s.environ_bytes_limit = impl_->environs.bytes_limit();
  s.evictions = e.evictions;
  s.nss_entries = impl_->names.nss_entries();
  s.hits = impl_->hits.load(std::memory_order_relaxed);
  s.misses = impl_->misses.load(std::memory_order_relaxed);
  s.identity_front_hits = impl_->front_hits.load(std::memory_order_relaxed);
  s.full_front_hits = impl_->full_front_hits.load(std::memory_order_relaxed);
  s.timeouts = impl_->pool.timeouts();
  return s;
}

}  // namespace vsymfs::daemon
