// Caching policy (why each piece is safe to reuse):
//  - identity (groups, real ids) is keyed by (pid, uid, gid) and trusted for
//    identity_ttl_ms: groups change only through setgroups, which needs
//    privilege, and a uid/gid change changes the key.
//  - the full context (environment, AT_SECURE, ELF class, personality) is
//    keyed by pid. A process caught inside execve gets the environment it
//    is passing (envp), as the program it is about to run will; that answer
//    is cached for the old image and dropped when the exec completes. A
//    forked child that made requests before its execve keeps its cached
//    (pre-exec) environment for the lookups of that execve.
//    With the process events connector (the default when we
//    run as root in the initial namespaces) the kernel's exec and exit
//    events drop entries, applied before every lookup (a poll of the
//    socket, no lock, when nothing is queued): exact, and no /proc read per
//    request. Otherwise every call validates it against a hash
//    of /proc/<pid>/auxv (its stack and vDSO addresses move on every execve
//    under ASLR, and a reused pid has had its own execve), or on kernels
//    before 5.7 /proc/<pid>/stat's starttime (changes on pid reuse) and
//    arg_start/env_start/env_end (change on every execve). Residual risk:
//    with address randomisation disabled (setarch -R, randomize_va_space=0)
//    a process that re-executes the same program with an environment of
//    exactly the same size keeps its old cached environment (with the auxv
//    key, so does a reused pid that runs the same program that way). A
//    forked child that has not exec'd shares its parent's image and
//    environment, so sharing its key is right. The environment is read as
//    of execve, as the kernel shows it; later setenv() calls are invisible
//    to us in any case.
//  - NSS answers are cached per uid/gid for nss_ttl_ms.
#include "caller_contexts.hpp"

#include <grp.h>
#include <poll.h>
#include <pwd.h>
#include <sys/eventfd.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <algorithm>
#include <functional>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <deque>
#include <mutex>
#include <thread>
#include <unordered_map>
#include <vector>

#include "proc_events.hpp"
#include "proc_reader.hpp"

namespace vsymfs::daemon {

namespace {

using Clock = std::chrono::steady_clock;

constexpr std::size_t kShards = 16;
constexpr std::size_t kMaxNssEntries = 1024;

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

struct FullEntry {
  uid_t uid;
  gid_t gid;
  std::uint64_t image;
  std::shared_ptr<const Caller> identity_basis;  // the identity this context was built on
  std::shared_ptr<const Caller> caller;
  bool auxv_secure;  // AT_SECURE of this image, fixed at execve
};

struct Shard {
  std::mutex mu;
  // Bumped whenever an exec/exit event drops an entry here: a context read
  // while this changed may describe the old image and is not stored.
  std::uint64_t seq = 0;
  std::unordered_map<IdKey, IdEntry, IdKeyHash> ids;
  std::unordered_map<pid_t, FullEntry> full;
};

// What the helper threads read from /proc for one process image.
struct ProcJob {
  pid_t pid = 0;
  bool try_execve_envp = false;  // safe on this kernel (see proc::read_execve_envp)
  std::mutex mu;
  std::condition_variable cv;
  bool done = false;
  bool abandoned = false;  // the requester stopped waiting: skip if not started
  bool environ_ok = false;
  std::vector<std::string> environ;
  bool auxv_secure = true;  // unknown auxv counts as secure: the process scope stays off
  bool compat32 = false;
};

// A few threads that do the /proc reads which may block (a process inside
// execve of a file on our own mount). A stuck read holds one helper, never
// a FUSE worker; at most `threads` can be stuck and at most `max_queued`
// requests wait, so nothing grows without bound.
class ProcPool {
 public:
  ProcPool(unsigned threads, std::size_t max_queued) : state_(std::make_shared<State>()) {
    state_->max_queued = max_queued;
    for (unsigned i = 0; i < std::max(1u, threads); ++i) std::thread([s = state_] { run(*s); }).detach();
  }
  ~ProcPool() {
    {
      std::lock_guard lock(state_->mu);
      state_->stop = true;
    }
    state_->cv.notify_all();
    // The helpers are detached, not joined: one may be stuck in the kernel.
    // Each holds the shared state, so none touches freed memory.
  }
  ProcPool(const ProcPool&) = delete;
  ProcPool& operator=(const ProcPool&) = delete;

  bool submit(std::shared_ptr<ProcJob> job) {
    {
      std::lock_guard lock(state_->mu);
      if (state_->stop || state_->queue.size() >= state_->max_queued) return false;
      state_->queue.push_back(std::move(job));
    }
    state_->cv.notify_one();
    return true;
  }

 private:
  struct State {
    std::size_t max_queued = 0;
    std::mutex mu;
    std::condition_variable cv;
    std::deque<std::shared_ptr<ProcJob>> queue;
    bool stop = false;
  };

  static void run(State& st) {
    for (;;) {
      std::shared_ptr<ProcJob> job;
      {
        std::unique_lock lock(st.mu);
        st.cv.wait(lock, [&] { return st.stop || !st.queue.empty(); });
        if (st.stop) return;
        job = std::move(st.queue.front());
        st.queue.pop_front();
      }
      {
        std::lock_guard jl(job->mu);
        if (job->abandoned) continue;
      }
      read_process(*job);
      {
        std::lock_guard jl(job->mu);
        job->done = true;
      }
      job->cv.notify_one();
    }
  }

  static void read_process(ProcJob& job) {
    // The ELF class decides the auxv word size, so it comes first.
    unsigned elf_class = 64;
    if (auto c = proc::read_exe_elf_class(job.pid); c) elf_class = *c;
    bool persona32 = false;
    if (auto p = proc::read_personality(job.pid); p) persona32 = proc::is_linux32_personality(*p);
    job.compat32 = elf_class == 32 || persona32;
    if (auto s = proc::read_auxv_secure(job.pid, elf_class == 32 ? 4 : 8); s) job.auxv_secure = *s;
    std::vector<std::string> env;
    // A process looking up what it execs (`VAR=x cmd` through a $VAR link)
    // means the environment it passes to the new program.
    if (job.try_execve_envp) {
      if (auto in_exec = proc::read_execve_envp(job.pid, env); in_exec && *in_exec) {
        job.environ = std::move(env);
        job.environ_ok = true;
        return;
      }
    }
    if (auto e = proc::read_environ(job.pid, env); e) {
      job.environ = std::move(env);
      job.environ_ok = true;
    }
  }

  std::shared_ptr<State> state_;
};

struct UserInfo {
  Clock::time_point read_at;
  bool found = false;
  std::string name, home;
};
struct GroupInfo {
  Clock::time_point read_at;
  bool found = false;
  std::string name;
};

UserInfo lookup_user(uid_t uid) {
  UserInfo info;
  std::vector<char> buf(4096);
  passwd pw{};
  passwd* res = nullptr;
  int rc;
  while ((rc = ::getpwuid_r(uid, &pw, buf.data(), buf.size(), &res)) == ERANGE && buf.size() < (1u << 20))
    buf.resize(buf.size() * 2);
  if (rc == 0 && res) {
    info.found = true;
    info.name = pw.pw_name;
    info.home = pw.pw_dir ? pw.pw_dir : "";
  }
  return info;
}

GroupInfo lookup_group(gid_t gid) {
  GroupInfo info;
  std::vector<char> buf(4096);
  group gr{};
  group* res = nullptr;
  int rc;
  while ((rc = ::getgrgid_r(gid, &gr, buf.data(), buf.size(), &res)) == ERANGE && buf.size() < (1u << 22))
    buf.resize(buf.size() * 2);
  if (rc == 0 && res) {
    info.found = true;
    info.name = gr.gr_name;
  }
  return info;
}

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
      : opts(o), per_shard(std::max<std::size_t>(1, o.max_entries / kShards)), pool(o.helper_threads, o.max_queued) {
    using Key = Options::ImageKey;
    if (o.image_key == Key::Auto || o.image_key == Key::Events) {
      if (auto ev = ProcEvents::open(std::chrono::milliseconds(500)); ev) {
        events = std::move(*ev);
        key_in_use = Key::Events;
        start_event_thread();
        return;
      }
    }
    if (o.image_key == Key::Auxv || o.image_key == Key::Stat)
      key_in_use = o.image_key;
    else
      key_in_use = kernel_at_least(5, 7) ? Key::Auxv : Key::Stat;
  }

  ~Impl() {
    if (event_thread.joinable()) {
      std::uint64_t one = 1;
      [[maybe_unused]] ssize_t n = ::write(stop_fd, &one, sizeof one);
      event_thread.join();
      ::close(stop_fd);
    }
  }
  Impl(const Impl&) = delete;
  Impl& operator=(const Impl&) = delete;

  // Drains events while no request does, so the socket does not overflow
  // when the mount is idle.
  void start_event_thread() {
    stop_fd = ::eventfd(0, EFD_CLOEXEC);
    if (stop_fd < 0) return;  // requests still drain before every lookup
    event_thread = std::thread([this] {
      for (;;) {
        pollfd fds[2] = {{events->fd(), POLLIN, 0}, {stop_fd, POLLIN, 0}};
        if (::poll(fds, 2, -1) < 0 && errno != EINTR) return;
        if (fds[1].revents) return;
        if (fds[0].revents) drain_events();
      }
    });
  }

  // Applies every exec/exit event the kernel has queued for us.
  void drain_events() {
    if (!events) return;
    std::lock_guard lock(events_mu);
    draining.fetch_add(1, std::memory_order_seq_cst);
    if (!events->drain(forget_pid)) forget_all();
    draining.fetch_sub(1, std::memory_order_seq_cst);
  }

  // Before a lookup: every event queued before this request arrived must be
  // applied. The common case (nothing queued, nobody draining) costs one
  // poll and no lock, so concurrent requests do not queue up on events_mu.
  // Why it is exact: the kernel queues a process's exec event before the new
  // image can make the request we are serving. Either the event is still
  // queued when we poll (pending: we drain), or a drainer has read it
  // already; that drainer raised `draining` before its read, its read
  // happened before our poll (the socket's queue lock orders the two), so
  // we see `draining` raised until it has applied the event, and then we
  // drain too, which waits for it on events_mu.
  void sync_events() {
    if (!events) return;
    if (events->pending() || draining.load(std::memory_order_seq_cst) != 0) drain_events();
  }

  void forget(pid_t pid) {
    Shard& sh = shard_for(pid);
    std::lock_guard lock(sh.mu);
    sh.full.erase(pid);
    ++sh.seq;
  }

  void forget_all() {
    for (Shard& sh : shards) {
      std::lock_guard lock(sh.mu);
      sh.full.clear();
      ++sh.seq;
    }
  }

  Options opts;
  std::size_t per_shard;
  Shard shards[kShards];

  std::mutex nss_mu;
  std::unordered_map<uid_t, UserInfo> users;
  std::unordered_map<gid_t, GroupInfo> groups;

  std::atomic<std::uint64_t> hits{0}, misses{0}, timeouts{0};
  std::atomic<std::atomic<std::uint64_t>*> external_timeouts{nullptr};
  ProcPool pool;

  Options::ImageKey key_in_use = Options::ImageKey::Auxv;
  std::unique_ptr<ProcEvents> events;  // null: validate by image key instead
  std::mutex events_mu;                // serialises drains; taken before any Shard::mu
  std::atomic<int> draining{0};        // threads inside drain_events() (see sync_events)
  const std::function<void(pid_t)> forget_pid = [this](pid_t pid) { forget(pid); };
  std::thread event_thread;
  int stop_fd = -1;

  Shard& shard_for(pid_t pid) { return shards[static_cast<std::uint32_t>(pid) % kShards]; }

  std::shared_ptr<const Caller> read_identity(pid_t pid, uid_t uid, gid_t gid) const {
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
    }
    return c;
  }

  void fill_names(Caller& c) {
    const auto now = Clock::now();
    const auto ttl = std::chrono::milliseconds(opts.nss_ttl_ms);
    auto user = [&](uid_t uid) -> const UserInfo& {
      auto it = users.find(uid);
      if (it == users.end() || now - it->second.read_at > ttl) {
        if (users.size() >= kMaxNssEntries) users.clear();
        UserInfo info = lookup_user(uid);
        info.read_at = now;
        it = users.insert_or_assign(uid, std::move(info)).first;
      }
      return it->second;
    };
    auto group = [&](gid_t gid) -> const GroupInfo& {
      auto it = groups.find(gid);
      if (it == groups.end() || now - it->second.read_at > ttl) {
        if (groups.size() >= kMaxNssEntries) groups.clear();
        GroupInfo info = lookup_group(gid);
        info.read_at = now;
        it = groups.insert_or_assign(gid, std::move(info)).first;
      }
      return it->second;
    };
    // NSS may be slow (LDAP); it runs under this lock only on a cache miss.
    std::lock_guard lock(nss_mu);
    const UserInfo& u = user(c.uid);
    c.user_name = u.name;
    c.home = u.home;
    const GroupInfo& g = group(c.gid);
    c.group_name = g.name;
    c.group_names.clear();
    if (g.found) c.group_names.push_back(g.name);
    for (gid_t sup : c.groups) {
      if (sup == c.gid) continue;
      const GroupInfo& s = group(sup);
      if (s.found) c.group_names.push_back(s.name);
    }
  }

  // Returns the cached identity entry's pointers, refreshed when stale.
  // `want_named` also fills the NSS names on first demand.
  std::shared_ptr<const Caller> lookup_identity(pid_t pid, uid_t uid, gid_t gid, bool want_named) {
    Shard& sh = shard_for(pid);
    const IdKey key{pid, uid, gid};
    const auto now = Clock::now();
    const auto ttl = std::chrono::milliseconds(opts.identity_ttl_ms);
    std::shared_ptr<const Caller> ident;
    {
      std::lock_guard lock(sh.mu);
      auto it = sh.ids.find(key);
      if (it != sh.ids.end() && now - it->second.read_at <= ttl) {
        if (!want_named) return it->second.identity;
        if (it->second.named) return it->second.named;
        ident = it->second.identity;
      }
    }
    const bool fresh = !ident;
    if (fresh) ident = read_identity(pid, uid, gid);
    std::shared_ptr<const Caller> named;
    if (want_named) {
      auto n = std::make_shared<Caller>(*ident);
      fill_names(*n);
      named = std::move(n);
    }
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
    return want_named ? named : ident;
  }

  std::shared_ptr<const Caller> lookup_full(pid_t pid, uid_t uid, gid_t gid) {
    if (pid == 0) return lookup_identity(pid, uid, gid, true);
    std::uint64_t image = 0;  // with events, entries are dropped instead of compared
    if (events) {
      sync_events();
    } else {
      auto key = image_key(pid);
      if (!key) return lookup_identity(pid, uid, gid, true);  // gone: no process scope
      image = *key;
    }

    Shard& sh = shard_for(pid);
    if (auto hit = cached_full(sh, pid, uid, gid, image)) return hit;

    auto named = lookup_identity(pid, uid, gid, true);
    std::shared_ptr<const Caller> cached;
    bool cached_auxv_secure = true;
    std::uint64_t seq;
    {
      std::lock_guard lock(sh.mu);
      seq = sh.seq;
      auto it = sh.full.find(pid);
      if (it != sh.full.end() && it->second.image == image && it->second.uid == uid && it->second.gid == gid) {
        if (it->second.identity_basis == named) {
          hits.fetch_add(1, std::memory_order_relaxed);
          return it->second.caller;
        }
        cached = it->second.caller;
        cached_auxv_secure = it->second.auxv_secure;
      }
    }
    if (cached) {
      // Same program image; only the identity was re-read (TTL): keep what
      // was read from the image, take the new identity.
      hits.fetch_add(1, std::memory_order_relaxed);
      auto c = std::make_shared<Caller>(*named);
      c->environ = cached->environ;
      c->environ_known = cached->environ_known;
      c->compat32 = cached->compat32;
      c->secure = named->secure || cached_auxv_secure;
      return store_full(pid, uid, gid, image, seq, named, cached_auxv_secure, std::move(c));
    }

    misses.fetch_add(1, std::memory_order_relaxed);
    auto job = std::make_shared<ProcJob>();
    job->pid = pid;
    job->try_execve_envp = key_in_use != Options::ImageKey::Stat;
    auto c = std::make_shared<Caller>(*named);
    bool completed = false;
    if (pool.submit(job)) {
      std::unique_lock lock(job->mu);
      completed = job->cv.wait_for(lock, std::chrono::milliseconds(opts.environ_timeout_ms), [&] { return job->done; });
      if (!completed) job->abandoned = true;
    }
    if (!completed) {
      timeouts.fetch_add(1, std::memory_order_relaxed);
      if (auto* ext = external_timeouts.load(std::memory_order_relaxed)) ext->fetch_add(1, std::memory_order_relaxed);
      // Unknown, not absent: the caller must not quietly get the lower
      // scopes (see Caller::environ_late). Not cached: the next request
      // tries again.
      c->environ_late = true;
      return c;
    }
    c->environ = std::move(job->environ);
    c->environ_known = job->environ_ok;
    c->compat32 = job->compat32;
    c->secure = named->secure || job->auxv_secure;
    // Apply events that arrived during the read: if the process exec'd
    // meanwhile, what we read may be the old image's and is not cached.
    sync_events();
    return store_full(pid, uid, gid, image, seq, named, job->auxv_secure, std::move(c));
  }

  // The common case in one critical section: a fresh identity and a full
  // context built on exactly that identity. Anything else takes the general
  // path, which re-checks all of this.
  std::shared_ptr<const Caller> cached_full(Shard& sh, pid_t pid, uid_t uid, gid_t gid, std::uint64_t image) {
    const auto now = Clock::now();
    std::lock_guard lock(sh.mu);
    const auto id = sh.ids.find(IdKey{pid, uid, gid});
    if (id == sh.ids.end() || !id->second.named ||
        now - id->second.read_at > std::chrono::milliseconds(opts.identity_ttl_ms))
      return nullptr;
    const auto it = sh.full.find(pid);
    if (it == sh.full.end() || it->second.image != image || it->second.uid != uid || it->second.gid != gid ||
        it->second.identity_basis != id->second.named)
      return nullptr;
    hits.fetch_add(1, std::memory_order_relaxed);
    return it->second.caller;
  }

  Result<std::uint64_t> image_key(pid_t pid) const {
    if (key_in_use == Options::ImageKey::Auxv) return proc::read_auxv_hash(pid);
    auto id = proc::read_exec_identity(pid);
    if (!id) return std::move(id).error();
    std::uint64_t h = id->starttime;
    for (std::uint64_t v : {id->arg_start, id->env_start, id->env_end}) h = (h ^ v) * 0x100000001B3ull;
    return h;
  }

  std::shared_ptr<const Caller> store_full(pid_t pid, uid_t uid, gid_t gid, std::uint64_t image, std::uint64_t seq,
                                           std::shared_ptr<const Caller> basis, bool auxv_secure,
                                           std::shared_ptr<Caller> c) {
    std::shared_ptr<const Caller> result = std::move(c);
    Shard& sh = shard_for(pid);
    std::lock_guard lock(sh.mu);
    if (sh.seq != seq) return result;  // an exec/exit event came in between
    if (sh.full.size() >= per_shard) sh.full.clear();
    sh.full.insert_or_assign(pid, FullEntry{uid, gid, image, std::move(basis), result, auxv_secure});
    return result;
  }
};

CallerContexts::CallerContexts() : CallerContexts(Options{}) {}
CallerContexts::CallerContexts(Options opts) : impl_(std::make_unique<Impl>(opts)) {}
CallerContexts::~CallerContexts() = default;

std::shared_ptr<const Caller> CallerContexts::identity(pid_t pid, uid_t uid, gid_t gid) {
  return impl_->lookup_identity(pid, uid, gid, false);
}

std::shared_ptr<const Caller> CallerContexts::named(pid_t pid, uid_t uid, gid_t gid) {
  return impl_->lookup_identity(pid, uid, gid, true);
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

void CallerContexts::set_timeout_counter(std::atomic<std::uint64_t>* counter) noexcept {
  impl_->external_timeouts.store(counter, std::memory_order_relaxed);
}

CallerContexts::Stats CallerContexts::stats() const {
  Stats s{};
  for (auto& sh : impl_->shards) {
    std::lock_guard lock(sh.mu);
    s.entries += sh.ids.size() + sh.full.size();
  }
  {
    std::lock_guard lock(impl_->nss_mu);
    s.nss_entries = impl_->users.size() + impl_->groups.size();
  }
  s.hits = impl_->hits.load(std::memory_order_relaxed);
  s.misses = impl_->misses.load(std::memory_order_relaxed);
  s.timeouts = impl_->timeouts.load(std::memory_order_relaxed);
  return s;
}

}  // namespace vsymfs::daemon
