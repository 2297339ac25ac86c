#include "link_service.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <array>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <memory>
#include <mutex>
#include <unordered_map>

#include "namespaces.hpp"
#include "probe_walk.hpp"
#include "vsymfs/namespace_hosts.hpp"
#include "vsymfs/resolver.hpp"
#include "vsymfs/var_map.hpp"

namespace vsymfs::daemon {

namespace {

constexpr std::size_t kShards = 16;
constexpr std::size_t kMaxTemplatesPerShard = 512;
constexpr std::size_t kMaxProbesPerShard = 256;

using Clock = std::chrono::steady_clock;

// How much of the caller a template can depend on, cheapest first. Decided
// once at parse time so the readlink path reads /proc only when it must.
enum class Needs : std::uint8_t {
  Nothing,   // literal text: the raw text for everyone
  Host,      // host facts only ({memb}, @hostname, ...): no /proc at all
  Identity,  // ids, groups, NSS names (identity builtins, @uid): status only
  Process,   // environment, secure mode, 32-bit personality: the full context
};

Needs classify(const Template& t) {
  if (t.is_literal()) return Needs::Nothing;
  if (!t.needs_caller()) return Needs::Host;
  // Conditional branches may use anything, and the universe may come from
  // the environment.
  if (t.needs_personality() || t.is_conditional()) return Needs::Process;
  if (t.needs_process_scope()) {
    // Any scope may define any name, but identity builtins (${USER}) are
    // never taken from the environment: those alone need no environ read.
    const std::string_view raw = t.raw();
    for (const auto& seg : t.segments()) {
      if (seg.kind == Template::Segment::Kind::Variable && !is_identity_builtin(raw.substr(seg.offset, seg.length)))
        return Needs::Process;
    }
  }
  return Needs::Identity;
}

struct Parsed {
  Template tmpl;
  Needs needs;
};

struct TemplateShard {
  std::mutex mu;
  std::uint64_t generation = 0;
  StringMap<std::shared_ptr<const Parsed>> map;
};

// Whether an @sys candidate exists, keyed by the link's directory and the
// candidate's expansion: a readlink of `../@sys/bin` with the first sysname
// missing otherwise pays a failed path walk in SOURCE every time.
struct ProbeResult {
  Clock::time_point expires;
  bool exists;
};

struct ProbeShard {
  std::mutex mu;
  std::uint64_t generation = 0;
  StringMap<ProbeResult> map;  // key: see probe_key()
  // Counted under mu, which is held anyway: shared atomics would add a
  // cache line that both CPUs write on every probe.
  std::uint64_t hits = 0, misses = 0;
};

class ProbeCache {
 public:
  explicit ProbeCache(double ttl_seconds)
      : ttl_(ttl_seconds > 0 ? std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(ttl_seconds))
                             : Clock::duration::zero()) {}

  bool enabled() const noexcept { return ttl_ > Clock::duration::zero(); }

  // The cached answer, if fresh and from the rules in force.
  std::optional<bool> find(std::string_view key, std::uint64_t generation, Clock::time_point now) {
    const std::size_t h = StringHash{}(key);
    Local& l = local_slot(h);
    if (l.owner == id_ && l.epoch == epoch_.load(std::memory_order_acquire) && l.generation == generation &&
        now < l.expires && l.key == key) {
      local_hits_.fetch_add(1, std::memory_order_relaxed);
      return l.exists;
    }
    ProbeShard& sh = shards_[h % kShards];
    std::lock_guard lock(sh.mu);
    if (sh.generation == generation) {
      if (auto it = sh.map.find(key); it != sh.map.end() && now < it->second.expires) {
        ++sh.hits;
        remember(l, key, generation, it->second);
        return it->second.exists;
      }
    }
    ++sh.misses;
    return std::nullopt;
  }

  void store(std::string_view key, std::uint64_t generation, Clock::time_point now, bool exists) {
    const std::size_t h = StringHash{}(key);
    ProbeShard& sh = shards_[h % kShards];
    std::lock_guard lock(sh.mu);
    if (sh.generation != generation) {
      if (sh.generation > generation) return;  // a reload happened meanwhile
      sh.map.clear();
      sh.generation = generation;
    }
    const ProbeResult result{now + ttl_, exists};
    remember(local_slot(h), key, generation, result);
    if (auto it = sh.map.find(key); it != sh.map.end()) {
      it->second = result;
      return;
    }
    // Bounded: expired entries go first; a shard full of live ones starts over.
    if (sh.map.size() >= kMaxProbesPerShard) {
      std::erase_if(sh.map, [&](const auto& kv) { return kv.second.expires <= now; });
      if (sh.map.size() >= kMaxProbesPerShard) sh.map.clear();
    }
    sh.map.emplace(std::string(key), result);
  }

  void clear() {
    for (ProbeShard& sh : shards_) {
      std::lock_guard lock(sh.mu);
      sh.map.clear();
    }
    // Then every thread's copies. In this order a copy made from an entry
    // just before its shard was cleared carries the old epoch (copies read
    // the epoch under the shard lock).
    epoch_.fetch_add(1, std::memory_order_acq_rel);
  }

  struct Totals {
    std::size_t entries = 0;
    std::uint64_t hits = 0, misses = 0;
  };
  Totals totals() const {
    Totals t;
    for (ProbeShard& sh : shards_) {
      std::lock_guard lock(sh.mu);
      t.entries += sh.map.size();
      t.hits += sh.hits;
      t.misses += sh.misses;
    }
    t.hits += local_hits_.load(std::memory_order_relaxed);
    return t;
  }

 private:
  // A per-thread copy of recent answers, in front of the shards: every
  // readlink of one @sys link probes the same candidates, and with one
  // worker per CPU two workers otherwise meet on the same shard lock for
  // each of them (2 processes: 0.53-0.91x a plain readlink, bimodal). A copy
  // keeps the shared entry's expiry and dies with clear() (epoch) and with
  // a rules reload (generation), so the staleness bound is unchanged.
  struct Local {
    std::uint64_t owner = 0, epoch = 0, generation = 0;
    Clock::time_point expires{};
    bool exists = false;
    std::string key;
  };
  static constexpr std::size_t kLocalSlots = 64;

  static Local& local_slot(std::size_t hash) {
    thread_local std::array<Local, kLocalSlots> slots;
    return slots[(hash / kShards) % kLocalSlots];
  }

  void remember(Local& l, std::string_view key, std::uint64_t generation, const ProbeResult& r) const {
    l.owner = id_;
    l.epoch = epoch_.load(std::memory_order_acquire);
    l.generation = generation;
    l.expires = r.expires;
    l.exists = r.exists;
    l.key.assign(key);
  }

  static std::uint64_t next_id() {
    static std::atomic<std::uint64_t> ids{0};
    return ids.fetch_add(1, std::memory_order_relaxed) + 1;
  }

  const Clock::duration ttl_;
  const std::uint64_t id_ = next_id();  // thread-local copies belong to one cache
  std::atomic<std::uint64_t> epoch_{0};
  mutable std::array<ProbeShard, kShards> shards_;
  alignas(64) std::atomic<std::uint64_t> local_hits_{0};
};

// Counts where substituted values came from without building a trace: a
// few increments on the stack, folded into the shared counters once.
class CountingSource final : public ValueSource {
 public:
  explicit CountingSource(const ValueSource& inner) noexcept : inner_(inner) {}

  std::optional<Value> variable(std::string_view name) const override { return count(inner_.variable(name)); }
  std::optional<Value> magic(std::string_view name) const override { return count(inner_.magic(name)); }
  std::span<const std::string> sysnames() const override {
    ++counts_[static_cast<std::size_t>(inner_.sysnames_scope())];
    return inner_.sysnames();
  }
  Scope sysnames_scope() const override { return inner_.sysnames_scope(); }
  Value universe() const override { return *count(inner_.universe()); }
  Value member() const override { return *count(inner_.member()); }

  void add_to(Counters& c) const noexcept {
    for (std::size_t i = 0; i < counts_.size(); ++i)
      if (counts_[i]) c.by_scope[i].fetch_add(counts_[i], std::memory_order_relaxed);
  }

 private:
  std::optional<Value> count(std::optional<Value> v) const noexcept {
    if (v) ++counts_[static_cast<std::size_t>(v->scope) % counts_.size()];
    return v;
  }
  const ValueSource& inner_;
  mutable std::array<std::uint32_t, 8> counts_{};
};

// Answers whether an @sys candidate exists, for one expansion: from the
// cache, else by a walk (probe_walk.hpp) that never calls into a FUSE
// filesystem. The answer depends on who asks (a 0700 directory exists for
// its owner only), so the cache key holds the probing identity.
class SourceProbe final : public Probe {
 public:
  SourceProbe(LinkDirectory& link_dir, ProbeCache& cache, std::uint64_t generation, ProbeWalker& walker,
              const ProbeCredentials& creds, bool walk_here, bool store, Clock::duration budget) noexcept
      : link_dir_(link_dir),
        cache_(cache),
        generation_(generation),
        walker_(walker),
        creds_(creds),
        walk_here_(walk_here),
        store_(store),
        budget_(budget) {}

  bool exists(std::string_view target) const override {
    if (target.empty() || target.size() >= PATH_MAX) return false;
    const bool relative = target.front() != '/';
    std::string* key = nullptr;
    Clock::time_point now{};
    if (cache_.enabled() && probe_key(relative, target)) {
      key = &key_buffer();
      now = Clock::now();
      if (auto cached = cache_.find(*key, generation_, now)) return *cached;
    }
    const int dir = relative ? directory_fd() : -1;
    // No directory descriptor: nothing was asked, nothing is known.
    if (relative && dir < 0) return false;
    ProbeWalker::Inside inside = walk_here_ ? walker_.inside(dir, target) : ProbeWalker::Inside::Leaves;
    bool found = inside == ProbeWalker::Inside::Exists;
    if (inside == ProbeWalker::Inside::Leaves) {
      // One budget for the whole expansion, however many candidates leave.
      if (deadline_ == Clock::time_point{}) deadline_ = Clock::now() + budget_;
      const ProbeWalker::Answer a = walker_.anywhere(dir, target, creds_, deadline_);
      if (a == ProbeWalker::Answer::Unknown) return false;  // absent this once; not remembered
      found = a == ProbeWalker::Answer::Exists;
    }
    if (key != nullptr && store_) cache_.store(*key, generation_, now, found);
    return found;
  }

 private:
  // One buffer per thread: after the first few lookups a key costs no
  // allocation.
  static std::string& key_buffer() {
    thread_local std::string buf;
    return buf;
  }

  // The cache key: the directory's (st_dev, st_ino), the probing identity
  // (uid, gid, groups), then the target. An absolute target does not depend
  // on the directory: zeros.
  bool probe_key(bool relative, std::string_view target) const {
    if (relative && !have_identity_) {
      if (!identity_known_) {
        identity_known_ = true;
        have_identity_ = link_dir_.identity(dev_, ino_);
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

  int directory_fd() const {
    if (!dir_fd_known_) {
      dir_fd_known_ = true;
      dir_fd_ = link_dir_.fd();
    }
    return dir_fd_;
  }

  LinkDirectory& link_dir_;
  ProbeCache& cache_;
  std::uint64_t generation_;
  ProbeWalker& walker_;
  const ProbeCredentials& creds_;
  const bool walk_here_;  // this thread has the probing identity
  const bool store_;
  const Clock::duration budget_;
  mutable Clock::time_point deadline_{};
  // Asked of link_dir_ at most once per expansion, and only when needed.
  mutable bool identity_known_ = false, have_identity_ = false, dir_fd_known_ = false;
  mutable dev_t dev_ = 0;
  mutable ino_t ino_ = 0;
  mutable int dir_fd_ = -1;
};

// With per_caller = false every caller gets one expansion: probe as someone
// who may see only what anyone may see.
constexpr uid_t kNobody = 65534;

class KnownDirectory final : public LinkDirectory {
 public:
  explicit KnownDirectory(int fd) noexcept : fd_(fd) {}
  int fd() override { return fd_; }

 private:
  int fd_;
};

const Caller& anonymous_caller() {
  static const Caller c{};
  return c;
}

}  // namespace

bool LinkDirectory::identity(dev_t&, ino_t&) { return false; }

std::string LinkDirectory::link_path() { return {}; }

namespace {

// The caller's command name for a trace (only read while someone traces).
std::string command_name(pid_t pid) {
  if (pid <= 0) return {};
  char path[32];
  std::snprintf(path, sizeof path, "/proc/%d/comm", static_cast<int>(pid));
  const int fd = ::open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return {};
  char buf[64];
  const ssize_t n = ::read(fd, buf, sizeof buf);
  ::close(fd);
  if (n <= 0) return {};
  std::string out(buf, static_cast<std::size_t>(n));
  if (!out.empty() && out.back() == '\n') out.pop_back();
  return out;
}

}  // namespace

struct LinkService::Impl {
  Impl(MountState& s, CallerContexts& c, const Options& o)
      : state(s),
        contexts(c),
        probes(s.config().entry_timeout),
        walker(ProbeWalker::Options{s.config().source, s.config().mountpoint, o.probe_threads, 8}),
        probe_budget(o.probe_timeout) {}

  MountState& state;
  CallerContexts& contexts;
  std::array<TemplateShard, kShards> shards;
  std::atomic<std::uint64_t> template_hits{0}, template_misses{0};
  ProbeCache probes;
  ProbeWalker walker;
  const Clock::duration probe_budget;
  UtsReader uts;                 // a container's host name and domain name
  NamespaceHosts uts_hosts;      // one view per UTS namespace other than ours
  TraceHub tracer;

  // The host facts for `caller` and what `rules` give its host name: the
  // daemon's, unless the caller is in another UTS namespace (uts_ns != 0: a
  // container) whose names we can read, then that namespace's. Read again
  // at every expansion (setns and uname, about a microsecond), so a
  // sethostname there shows at once; the daemon's own namespace pays the one
  // comparison. With per_caller = false the kernel caches links: everyone
  // gets the daemon's.
  std::shared_ptr<const HostView> host_for(const Caller& caller, const std::shared_ptr<const Rules>& rules) {
    std::shared_ptr<const HostView> own = state.host_view(*rules);
    if (caller.uts_ns == 0 || !rules->per_caller) return own;
    const std::optional<UtsNames> names = uts.read(caller.pid, caller.uts_ns);
    if (!names) return own;
    return uts_hosts.get(caller.uts_ns, names->hostname, names->domainname, rules, own->host());
  }

  std::shared_ptr<const Parsed> parsed(std::string_view raw, std::uint64_t generation, const Rules& rules) {
    const std::size_t h = StringHash{}(raw);
    TemplateShard& sh = shards[h % kShards];
    {
      std::lock_guard lock(sh.mu);
      if (sh.generation == generation) {
        if (auto it = sh.map.find(raw); it != sh.map.end()) {
          template_hits.fetch_add(1, std::memory_order_relaxed);
          return it->second;
        }
      }
    }
    template_misses.fetch_add(1, std::memory_order_relaxed);
    // Parse outside the lock; two threads may both parse the same text once.
    auto p = std::make_shared<Parsed>();
    p->tmpl = Template::parse(raw, ParseOptions{rules.families, rules.universes.names});
    p->needs = classify(p->tmpl);
    std::lock_guard lock(sh.mu);
    if (sh.generation != generation) {
      // Generations only grow; a stale parser must not wipe newer entries.
      if (sh.generation > generation) return p;
      sh.map.clear();
      sh.generation = generation;
    }
    if (sh.map.size() >= kMaxTemplatesPerShard) sh.map.clear();
    sh.map.emplace(std::string(raw), p);
    return p;
  }

  // `given`: a caller described by the control server (not owned).
  std::shared_ptr<const Caller> caller_for(Needs needs, const Rules& rules, const RequestIds& ids,
                                           const Caller* given) {
    if (!rules.per_caller || needs == Needs::Nothing) return nullptr;
    if (given != nullptr) return std::shared_ptr<const Caller>(std::shared_ptr<const Caller>(), given);
    // Host facts follow the caller's UTS namespace, noted with its identity.
    if (needs == Needs::Host) return contexts.identity(ids.pid, ids.uid, ids.gid);
    if (needs == Needs::Identity) return contexts.named(ids.pid, ids.uid, ids.gid);
    return contexts.full(ids.pid, ids.uid, ids.gid);
  }

  // An expansion for a FUSE request: traced when someone asks for it.
  Result<void> expand(std::string_view raw, LinkDirectory& link_dir, const RequestIds& ids, std::string& out) {
    if (!tracer.active()) [[likely]]
      return run(raw, link_dir, ids, out, nullptr, true);
    return expand_traced(raw, link_dir, ids, out);
  }

  Result<void> expand_traced(std::string_view raw, LinkDirectory& link_dir, const RequestIds& ids,
                             std::string& out) {
    if (!tracer.wants_caller(ids.pid, ids.uid)) return run(raw, link_dir, ids, out, nullptr, true);
    TraceEvent e;
    e.path = normalize_trace_path(link_dir.link_path());
    if (!tracer.wants(ids.pid, ids.uid, e.path)) return run(raw, link_dir, ids, out, nullptr, true);
    e.time = std::chrono::system_clock::now();
    e.pid = ids.pid;
    e.uid = ids.uid;
    e.raw.assign(raw);
    Result<void> r = run(raw, link_dir, ids, out, &e.substitutions, true);
    if (r) {
      e.expansion = out;
    } else {
      e.error = r.error().code;
      e.message = r.error().message;
    }
    e.comm = command_name(ids.pid);
    tracer.publish(std::move(e));
    return r;
  }

  // `trace`: collect the substitutions; `store_probes`: @sys answers may be
  // remembered (not for explain, whose text a client chose).
  Result<void> run(std::string_view raw, LinkDirectory& link_dir, const RequestIds& ids, std::string& out,
                   std::vector<Substitution>* trace, bool store_probes, const Caller* given = nullptr) {
    // Generation first, then rules: see MountState::reload.
    const std::uint64_t generation = state.rules_generation();
    const std::shared_ptr<const Rules> rules = state.rules();
    const std::shared_ptr<const Parsed> p = parsed(raw, generation, *rules);
    if (p->needs == Needs::Nothing) {
      // Linux cannot store such a link; refuse rather than return more than
      // readlink may.
      if (raw.size() > kMaxExpansion) return make_error(ENAMETOOLONG, "link text longer than PATH_MAX-1");
      out.assign(raw);
      return {};
    }

    const std::shared_ptr<const Caller> caller_ptr = caller_for(p->needs, *rules, ids, given);
    const Caller& caller = caller_ptr ? *caller_ptr : anonymous_caller();
    if (caller.environ_late) {
      // Expanding now would quietly use the lower scopes, and the same
      // process would see this link expand two ways. The read is retried by
      // the next request.
      Counters& counters = state.counters();
      counters.expansions.fetch_add(1, std::memory_order_relaxed);
      counters.errors.fetch_add(1, std::memory_order_relaxed);
      return make_error(EAGAIN, "the environment of process " + std::to_string(ids.pid) +
                                    " was not read in time; the link needs it");
    }
    const std::shared_ptr<const RuntimeVars> runtime = state.runtime();
    const std::shared_ptr<const HostView> host = host_for(caller, rules);
    ScopedResolver resolver(*rules, *host, caller, runtime.get());
    CountingSource counting(resolver);

    // Who probes: the caller, whose identity this thread has; or, when
    // every caller gets the same expansion, nobody.
    const bool as_caller = rules->per_caller;
    const ProbeCredentials creds = as_caller ? ProbeCredentials{caller.uid, caller.gid, caller.groups}
                                             : ProbeCredentials{kNobody, kNobody, {}};
    SourceProbe probe(link_dir, probes, generation, walker, creds, as_caller, store_probes, probe_budget);
    ExpandOptions opts;
    opts.undefined = rules->undefined;
    opts.probe = p->tmpl.uses_sys() ? &probe : nullptr;
    opts.trace = trace;

    Counters& counters = state.counters();
    counters.expansions.fetch_add(1, std::memory_order_relaxed);
    Result<void> r = p->tmpl.expand(counting, opts, out);
    counting.add_to(counters);
    if (!r) {
      counters.errors.fetch_add(1, std::memory_order_relaxed);
      out.clear();
    }
    return r;
  }
};

LinkService::LinkService(MountState& state, CallerContexts& contexts) : LinkService(state, contexts, Options{}) {}

LinkService::LinkService(MountState& state, CallerContexts& contexts, Options opts)
    : impl_(std::make_unique<Impl>(state, contexts, opts)) {
  contexts.set_timeout_counter(&state.counters().environ_timeouts);
}

void LinkService::note_mounted() { impl_->walker.note_own_mount(); }

LinkService::~LinkService() = default;

Result<void> LinkService::expand(std::string_view raw, int link_dir_fd, const RequestIds& ids, std::string& out) {
  KnownDirectory dir(link_dir_fd);
  return impl_->expand(raw, dir, ids, out);
}

Result<void> LinkService::expand(std::string_view raw, LinkDirectory& link_dir, const RequestIds& ids,
                                 std::string& out) {
  return impl_->expand(raw, link_dir, ids, out);
}

Result<void> LinkService::explain(std::string_view raw, int link_dir_fd, const RequestIds& ids, std::string& out,
                                  std::vector<Substitution>& trace) {
  trace.clear();
  KnownDirectory dir(link_dir_fd);
  return impl_->run(raw, dir, ids, out, &trace, false);
}

Result<void> LinkService::explain(std::string_view raw, int link_dir_fd, const Caller& caller, std::string& out,
                                  std::vector<Substitution>& trace) {
  trace.clear();
  KnownDirectory dir(link_dir_fd);
  // pid 0: the caller is described by the request; nothing is read from /proc.
  return impl_->run(raw, dir, RequestIds{0, caller.uid, caller.gid}, out, &trace, false, &caller);
}

TraceHub& LinkService::tracer() noexcept { return impl_->tracer; }

bool LinkService::per_caller() const noexcept { return impl_->state.rules()->per_caller; }

void LinkService::sys_component_candidates(std::string_view name, const RequestIds& ids, std::vector<std::string>& out) {
  out.clear();
  constexpr std::string_view kSys = "@sys";
  if (!name.ends_with(kSys)) return;
  const std::shared_ptr<const Rules> rules = impl_->state.rules();
  if (!rules->families.magic) return;  // @ names are switched off for this mount
  const std::string_view prefix = name.substr(0, name.size() - kSys.size());

  std::shared_ptr<const Caller> caller_ptr =
      rules->per_caller ? impl_->contexts.full(ids.pid, ids.uid, ids.gid) : nullptr;
  const Caller& caller = caller_ptr ? *caller_ptr : anonymous_caller();
  // Whether the caller is a 32-bit process was not read in time. When that
  // picks the list, no candidates (the lookup fails with ENOENT, which the
  // kernel does not cache for @sys names) rather than maybe the wrong list.
  if (caller.environ_late && (rules->sysnames.empty() || rules->sysnames != rules->sysnames32)) return;
  const std::shared_ptr<const RuntimeVars> runtime = impl_->state.runtime();
  const std::shared_ptr<const HostView> host = impl_->state.host_view(*rules);
  ScopedResolver resolver(*rules, *host, caller, runtime.get());
  for (const std::string& sysname : resolver.sysnames()) {
    std::string candidate;
    candidate.reserve(prefix.size() + sysname.size());
    candidate.append(prefix).append(sysname);
    out.push_back(std::move(candidate));
  }
  impl_->state.counters().expansions.fetch_add(1, std::memory_order_relaxed);
}

void LinkService::clear_cache() {
  for (auto& sh : impl_->shards) {
    std::lock_guard lock(sh.mu);
    sh.map.clear();
  }
  impl_->probes.clear();
}

LinkService::CacheStats LinkService::cache_stats() const {
  CacheStats s{};
  for (auto& sh : impl_->shards) {
    std::lock_guard lock(sh.mu);
    s.template_entries += sh.map.size();
  }
  s.template_hits = impl_->template_hits.load(std::memory_order_relaxed);
  s.template_misses = impl_->template_misses.load(std::memory_order_relaxed);
  const auto probes = impl_->probes.totals();
  s.probe_entries = probes.entries;
  s.probe_hits = probes.hits;
  s.probe_misses = probes.misses;
  const ProbeWalker::Stats w = impl_->walker.stats();
  s.probe_outside = w.outside;
  s.probe_abandoned = w.abandoned;
  s.probe_refused = w.refused;
  return s;
}

}  // namespace vsymfs::daemon
