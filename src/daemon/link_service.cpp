#include "daemon/link_service.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <memory>

#include "daemon/generation_cache.hpp"
#include "daemon/link_counters.hpp"
#include "daemon/namespaces.hpp"
#include "daemon/probe_walk.hpp"
#include "daemon/sys_probes.hpp"
#include "daemon/template_cache.hpp"
#include "vsymfs/namespace_hosts.hpp"
#include "vsymfs/resolver.hpp"
#include "vsymfs/unique_fd.hpp"

namespace vsymfs::daemon {

namespace {

using Clock = std::chrono::steady_clock;

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

// The last expansions a thread made without probing: the text they gave
// and the values they counted. An expansion that probes no @sys candidate
// reads nothing but immutable snapshots: the parsed template, the caller's
// context (replaced, never changed, when the process execs: exec_watcher.hpp),
// the rules, the run-time values and the host view (replaced when the host
// name changes). The same five give the same text, so a thread that expands
// the same link for the same process again (a shell walking $PATH, a build
// reading `${ARCH}` links) returns what it gave last time: about 1,100
// instructions less per `${VAR}` readlink (callgrind). Each entry holds a
// reference to all five, so no later object can take one's address, and a
// reload, `vsymctl set`, an exec or a new host name makes the old entries
// unreachable (their snapshots are no longer the ones in force) until the
// thread replaces them. `owner` keys the memo to one LinkService.
//
// An @sys expansion also reads the probe answers for its candidates, which
// depend on the link's directory as well (the caller's identity, which
// probes as the caller, is in the context). Such an entry names the
// directory and lasts until the earliest of its answers expires in the
// probe cache, and is made only when every answer came from, or went into,
// that cache: it then gives what the cache would, with the cache's own
// staleness bound (the entry timeout, as a kernel-cached name). A
// `../@sys/bin` readlink with the first sysname missing otherwise builds
// and looks up two probe keys and expands the template each time.
struct ExpansionMemo {
  using Clock = std::chrono::steady_clock;
  struct Entry {
    std::uint64_t owner = 0, tag = 0;
    std::shared_ptr<const ParsedLink> parsed;
    std::shared_ptr<const Caller> caller;
    std::shared_ptr<const Rules> rules;
    std::shared_ptr<const RuntimeVars> runtime;
    std::shared_ptr<const HostView> host;
    dev_t dir_dev = 0;  // @sys: the link's directory; 0, 0 otherwise
    ino_t dir_ino = 0;
    Clock::time_point expires = Clock::time_point::max();
    std::string out;
    CountingSource::Counts counts{};
  };
  std::array<Entry, 4> entries;
  std::size_t next = 0;

  // `now`: read only when `parsed` probes @sys (otherwise entries never expire).
  const Entry* find(std::uint64_t owner, std::uint64_t tag, const ParsedLink* parsed, const Caller* caller,
                    const Rules* rules, const RuntimeVars* runtime, const HostView* host, dev_t dir_dev,
                    ino_t dir_ino, Clock::time_point now) const noexcept {
    for (const Entry& e : entries)
      if (e.owner == owner && e.parsed.get() == parsed && e.caller.get() == caller && e.tag == tag &&
          e.rules.get() == rules && e.runtime.get() == runtime && e.host.get() == host && e.dir_dev == dir_dev &&
          e.dir_ino == dir_ino && now < e.expires)
        return &e;
    return nullptr;
  }
};

const Caller& anonymous_caller() {
  static const Caller c{};
  return c;
}

// The caller's command name for a trace (only read while someone traces).
std::string command_name(pid_t pid) {
  if (pid <= 0) return {};
  char path[32];
  std::snprintf(path, sizeof path, "/proc/%d/comm", static_cast<int>(pid));
  UniqueFd fd(::open(path, O_RDONLY | O_CLOEXEC));
  if (!fd) return {};
  char buf[64];
  const ssize_t n = ::read(fd.get(), buf, sizeof buf);
  fd.reset();
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
        templates(kTemplateCapacity, generation),
        probes(s.config().entry_timeout, generation),
        walker(ProbeWalker::Options{s.config().source, s.config().mountpoint, o.probe_threads, 8}),
        probe_budget(o.probe_timeout) {
    generation.start_following(s.rules_generation());
  }

  static constexpr std::size_t kTemplateCapacity = 16 * 512;

  MountState& state;
  CallerContexts& contexts;
  // One bump drops the parsed templates and the @sys answers: a rules
  // reload (followed in run(), once however many workers notice it) and
  // clear_cache().
  CacheGeneration generation;
  TemplateCache templates;
  SysProbeCache probes;
  ProbeWalker walker;
  const Clock::duration probe_budget;
  UtsReader uts;                 // a container's host name and domain name
  NamespaceHosts uts_hosts;      // one view per UTS namespace other than ours
  TraceHub tracer;
  const std::uint64_t id = next_instance_id();  // keys the threads' ExpansionMemo
  ShardedCounter memo_hits;

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

  // `given`: a caller described by the control server (not owned).
  std::shared_ptr<const Caller> caller_for(LinkNeeds needs, const Rules& rules, const RequestIds& ids,
                                           const Caller* given) {
    if (!rules.per_caller || needs == LinkNeeds::Nothing) return nullptr;
    if (given != nullptr) return std::shared_ptr<const Caller>(std::shared_ptr<const Caller>(), given);
    // What the request fetched to take the caller's identity, when enough.
    if (ids.caller != nullptr && ids.known >= needs)
      return std::shared_ptr<const Caller>(std::shared_ptr<const Caller>(), ids.caller);
    // Host facts follow the caller's UTS namespace, noted with its identity.
    if (needs == LinkNeeds::Host) return contexts.identity(ids.pid, ids.uid, ids.gid);
    if (needs == LinkNeeds::Identity) return contexts.named(ids.pid, ids.uid, ids.gid);
    return contexts.full(ids.pid, ids.uid, ids.gid);
  }

  // An expansion for a FUSE request: traced when someone asks for it.
  Result<void> expand(std::string_view raw, LinkDirectory& link_dir, const RequestIds& ids, std::string& out,
                      LinkNeeds* needs) {
    if (!tracer.active()) [[likely]]
      return run(raw, link_dir, ids, out, nullptr, true, nullptr, needs);
    return expand_traced(raw, link_dir, ids, out, needs);
  }

  Result<void> expand_traced(std::string_view raw, LinkDirectory& link_dir, const RequestIds& ids,
                             std::string& out, LinkNeeds* needs) {
    if (!tracer.wants_caller(ids.pid, ids.uid)) return run(raw, link_dir, ids, out, nullptr, true, nullptr, needs);
    TraceEvent e;
    e.path = normalize_trace_path(link_dir.link_path());
    if (!tracer.wants(ids.pid, ids.uid, e.path)) return run(raw, link_dir, ids, out, nullptr, true, nullptr, needs);
    e.time = std::chrono::system_clock::now();
    e.pid = ids.pid;
    e.uid = ids.uid;
    e.raw.assign(raw);
    Result<void> r = run(raw, link_dir, ids, out, &e.substitutions, true, nullptr, needs);
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
                   std::vector<Substitution>* trace, bool store_probes, const Caller* given = nullptr,
                   LinkNeeds* needs = nullptr) {
    // Generations first, then rules (see MountState::reload): what is
    // cached under `tag` was made with rules at least this new.
    generation.follow(state.rules_generation());
    const std::uint64_t tag = generation.value();
    const std::shared_ptr<const Rules> rules = state.rules();
    const std::shared_ptr<const ParsedLink> p = templates.get(raw, tag, *rules);
    if (needs != nullptr) *needs = p->needs;
    if (p->needs == LinkNeeds::Nothing) {
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
      count_expansion(state.counters());
      count_error(state.counters());
      return make_error(EAGAIN, "the environment of process " + std::to_string(ids.pid) +
                                    " was not read in time; the link needs it");
    }
    const std::shared_ptr<const RuntimeVars> runtime = state.runtime();
    const std::shared_ptr<const HostView> host = host_for(caller, rules);
    Counters& counters = state.counters();

    // Remembered when nothing else is read (no @sys probe), nobody traces,
    // and the caller is held by someone (this call, or the request).
    const std::shared_ptr<const Caller>* caller_ref = nullptr;
    if (caller_ptr.use_count() != 0)
      caller_ref = &caller_ptr;
    else if (ids.caller_ref != nullptr && ids.caller_ref->get() == caller_ptr.get())
      caller_ref = ids.caller_ref;
    // An @sys link: by its directory, when that is known without a system
    // call (ParentDirectory), and only while probes may be stored.
    const bool sys = p->tmpl.uses_sys();
    dev_t dir_dev = 0;
    ino_t dir_ino = 0;
    const bool memo = trace == nullptr && given == nullptr && (!caller_ptr || caller_ref) &&
                      (!sys || (store_probes && probes.enabled() && link_dir.identity(dir_dev, dir_ino)));
    const ExpansionMemo::Clock::time_point now = memo && sys ? ExpansionMemo::Clock::now()
                                                             : ExpansionMemo::Clock::time_point{};
    thread_local ExpansionMemo memos;
    if (memo) {
      if (const ExpansionMemo::Entry* e = memos.find(id, tag, p.get(), caller_ptr.get(), rules.get(), runtime.get(),
                                                     host.get(), dir_dev, dir_ino, now)) {
        count_expansion(counters);
        CountingSource::add(e->counts, counters);
        memo_hits.fetch_add(1);
        out.assign(e->out);
        return {};
      }
    }

    ScopedResolver resolver(*rules, *host, caller, runtime.get());
    CountingSource counting(resolver);

    // Who probes: the caller, whose identity this thread has; or, when
    // every caller gets the same expansion, nobody.
    const bool as_caller = rules->per_caller;
    const ProbeCredentials creds = as_caller ? ProbeCredentials{caller.uid, caller.gid, caller.groups}
                                             : ProbeCredentials{kNobody, kNobody, {}};
    SourceProbe probe(link_dir, probes, tag, walker, creds, as_caller, store_probes, probe_budget);
    ExpandOptions opts;
    opts.undefined = rules->undefined;
    opts.probe = p->tmpl.uses_sys() ? &probe : nullptr;
    opts.trace = trace;

    count_expansion(counters);
    Result<void> r = p->tmpl.expand(counting, opts, out);
    counting.add_to(counters);
    if (!r) {
      count_error(counters);
      out.clear();
      return r;
    }
    const std::optional<ExpansionMemo::Clock::time_point> lasts =
        sys ? probe.kept_until() : std::optional<ExpansionMemo::Clock::time_point>(ExpansionMemo::Clock::time_point::max());
    if (memo && lasts) {
      ExpansionMemo::Entry& e = memos.entries[memos.next++ % memos.entries.size()];
      e.owner = id;
      e.tag = tag;
      e.parsed = p;
      e.caller = caller_ref != nullptr ? *caller_ref : nullptr;
      e.rules = rules;
      e.runtime = runtime;
      e.host = host;
      e.dir_dev = dir_dev;
      e.dir_ino = dir_ino;
      e.expires = *lasts;
      e.out = out;
      e.counts = counting.counts();
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
  return impl_->expand(raw, dir, ids, out, nullptr);
}

Result<void> LinkService::expand(std::string_view raw, LinkDirectory& link_dir, const RequestIds& ids,
                                 std::string& out, LinkNeeds* needs) {
  return impl_->expand(raw, link_dir, ids, out, needs);
}

LinkNeeds LinkService::needs(std::string_view raw) {
  Impl& d = *impl_;
  d.generation.follow(d.state.rules_generation());
  const std::uint64_t tag = d.generation.value();
  const std::shared_ptr<const Rules> rules = d.state.rules();
  return d.templates.get(raw, tag, *rules)->needs;
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
  if (!is_sys_component(name)) return;
  const std::shared_ptr<const Rules> rules = impl_->state.rules();
  if (!rules->families.magic) return;  // @ names are switched off for this mount
  const std::string_view prefix = name.substr(0, name.size() - kSysSuffix.size());

  std::shared_ptr<const Caller> caller_ptr;
  if (rules->per_caller) {
    caller_ptr = ids.caller != nullptr && ids.known >= LinkNeeds::Process
                     ? std::shared_ptr<const Caller>(std::shared_ptr<const Caller>(), ids.caller)
                     : impl_->contexts.full(ids.pid, ids.uid, ids.gid);
  }
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
  count_expansion(impl_->state.counters());
}

void LinkService::clear_cache() { impl_->generation.bump(); }

LinkService::CacheStats LinkService::cache_stats() const {
  CacheStats s{};
  const auto templates = impl_->templates.stats();
  s.template_entries = templates.entries;
  s.template_hits = templates.hits;
  s.template_misses = templates.misses;
  const auto probes = impl_->probes.totals();
  s.probe_entries = probes.entries;
  s.probe_hits = probes.hits;
  s.probe_misses = probes.misses;
  const ProbeWalker::Stats w = impl_->walker.stats();
  s.probe_outside = w.outside;
  s.probe_abandoned = w.abandoned;
  s.probe_refused = w.refused;
  s.memo_hits = impl_->memo_hits.load();
  return s;
}

}  // namespace vsymfs::daemon
