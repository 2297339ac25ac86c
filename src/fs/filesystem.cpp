#include "fs/filesystem.hpp"

#include <fcntl.h>
#include <pthread.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <climits>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <string_view>
#include <vector>

#include <spdlog/spdlog.h>

#include "fs/atime.hpp"
#include "daemon/identity.hpp"
#include "fs/ops.hpp"
#include "fs/passthrough.hpp"
#include "vsymfs/link_template.hpp"
#include "vsymfs/unique_fd.hpp"

namespace vsymfs::fs {

namespace {

// The caller this worker thread fetched for the request it serves
// (become_caller), handed to expansions of that request through RequestIds.
struct RequestCaller {
  const void* req = nullptr;  // RequestFrom::key
  pid_t pid = 0;
  uid_t uid = 0;
  gid_t gid = 0;
  std::shared_ptr<const Caller> caller;
  daemon::LinkNeeds known = daemon::LinkNeeds::Nothing;
};
thread_local RequestCaller t_request;

daemon::RequestIds ids_of(const RequestFrom& from) {
  daemon::RequestIds ids{from.pid, from.uid, from.gid};
  // Only for the request that fetched it (a request that never called
  // become_caller may reuse a finished one's address: the ids must match).
  const RequestCaller& rc = t_request;
  if (rc.req == from.key && rc.caller && rc.pid == from.pid && rc.uid == from.uid && rc.gid == from.gid) {
    ids.caller = rc.caller.get();
    ids.caller_ref = &rc.caller;
    ids.known = rc.known;
  }
  return ids;
}

}  // namespace

namespace {

// /proc/self/fd held open: -2 before the first use, -1 when it cannot be.
std::atomic<int> g_proc_fd_dir{-2};

// In a child of fork the inherited descriptor still names the parent's
// table (/proc/self was resolved when it was opened).
void forget_proc_fd_dir() noexcept { g_proc_fd_dir.store(-1, std::memory_order_relaxed); }

int proc_fd_dir() noexcept {
  int dir = g_proc_fd_dir.load(std::memory_order_relaxed);
  if (dir != -2) return dir;
  static const int opened = [] {
    const int fd = ::open("/proc/self/fd", O_PATH | O_DIRECTORY | O_CLOEXEC);
    g_proc_fd_dir.store(fd, std::memory_order_relaxed);
    ::pthread_atfork(nullptr, nullptr, forget_proc_fd_dir);
    return fd;
  }();
  (void)opened;
  return g_proc_fd_dir.load(std::memory_order_relaxed);
}

constexpr std::size_t kProcFdPrefix = sizeof "/proc/self/fd/" - 1;

}  // namespace

ProcFdPath::ProcFdPath(int fd) {
  std::snprintf(buf, sizeof buf, "/proc/self/fd/%d", fd);
  const int d = proc_fd_dir();
  dir_ = d >= 0 ? d : AT_FDCWD;
  name_ = d >= 0 ? buf + kProcFdPrefix : buf;
}

Filesystem::Filesystem(FsConfig cfg, InodeTable& inodes, daemon::MountState& state,
                       daemon::CallerContexts& contexts, daemon::LinkService& links)
    : cfg_(cfg), inodes_(inodes), state_(state), contexts_(contexts), links_(links) {}

Filesystem::~Filesystem() { detach_session(); }

void Filesystem::attach_session(fuse_session* se) {
  session_ = se;
  // The mount is up: from now on a probe that reaches it by any path goes
  // on in SOURCE instead of calling into it.
  links_.note_mounted();
  inval_thread_ = std::thread([this] { invalidation_loop(); });
  rules_changes_ = state_.subscribe([this] { on_rules_changed(); });
}

void Filesystem::detach_session() {
  if (!inval_thread_.joinable()) return;
  rules_changes_ = {};  // returns once no callback runs
  {
    std::lock_guard lock(inval_mu_);
    inval_stop_ = true;
  }
  inval_cv_.notify_one();
  inval_thread_.join();
  session_ = nullptr;
}

void Filesystem::on_rules_changed() {
  // Runs in whatever thread changed the rules (SIGHUP thread, control
  // server): only hand the work over.
  {
    std::lock_guard lock(inval_mu_);
    inval_pending_ = true;
  }
  inval_cv_.notify_one();
}

void Filesystem::invalidation_loop() {
  std::unique_lock lock(inval_mu_);
  for (;;) {
    inval_cv_.wait(lock, [this] { return inval_pending_ || inval_stop_; });
    if (inval_stop_) return;
    inval_pending_ = false;
    lock.unlock();
    // The link caches need nothing here: after a reload the next expansion
    // sees the new rules generation and bumps them once, and neither parsed
    // templates nor @sys answers (keyed by the candidate's expansion) depend
    // on run-time values.
    if (kernel_caches_symlinks_.load() && links_.per_caller())
      spdlog::error("the rules now expand links per caller, but the kernel caches symlink bodies on this mount "
                    "(decided at mount time): remount for per-caller links to take effect");
    // Symlink bodies (when the kernel caches them) and symlink attributes
    // (st_size is the expansion's length) may both be stale now.
    std::size_t n = 0;
    for (std::uint64_t id : inodes_.symlink_nodeids())
      if (fuse_lowlevel_notify_inval_inode(session_, id, 0, 0) == 0) ++n;
    spdlog::debug("rules or values changed: invalidated {} symlinks", n);
    lock.lock();
  }
}

RequestFrom request_from(fuse_req_t req) noexcept {
  const fuse_ctx* c = fuse_req_ctx(req);
  return RequestFrom{req, c->pid, c->uid, c->gid};
}

int Filesystem::become_caller(fuse_req_t req, daemon::LinkNeeds want) { return become_caller(request_from(req), want); }

int Filesystem::become_caller(const RequestFrom& from, daemon::LinkNeeds want) {
  RequestCaller& rc = t_request;
  rc.req = nullptr;
  rc.caller.reset();
  if (cfg_.single_user) return 0;
  const RequestFrom* c = &from;
  if (c->pid == 0) return daemon::ThreadIdentity::become(c->uid, c->gid, {});  // no process to ask: primary group only
  // The environment, auxv and /proc/PID/root are read with the thread's
  // fs ids, which must be the caller's (or the daemon's) for that: the
  // richer context is fetched here only when the thread already acts for
  // this uid and gid (a caller's requests in a row), else the expansion
  // asks for it once the thread has switched.
  std::shared_ptr<const Caller> caller;
  const bool richer = want > daemon::LinkNeeds::Host && links_.per_caller() &&
                      daemon::ThreadIdentity::is(c->uid, c->gid);
  if (richer && want == daemon::LinkNeeds::Process) {
    caller = contexts_.full(c->pid, c->uid, c->gid);
  } else if (richer) {
    caller = contexts_.named(c->pid, c->uid, c->gid);
  } else {
    caller = contexts_.identity(c->pid, c->uid, c->gid);
    want = daemon::LinkNeeds::Host;
  }
  if (!caller) return daemon::ThreadIdentity::become(c->uid, c->gid, {});
  const int e = daemon::ThreadIdentity::become(c->uid, c->gid, caller->groups);
  rc.req = from.key;
  rc.pid = c->pid;
  rc.uid = c->uid;
  rc.gid = c->gid;
  rc.known = want;
  rc.caller = std::move(caller);
  return e;
}

daemon::LinkNeeds Filesystem::link_needs(const Inode& inode) noexcept {
  const LinkText* t = inode.link_text();
  return t ? static_cast<daemon::LinkNeeds>(t->needs()) : daemon::LinkNeeds::Host;
}

mode_t Filesystem::creation_mode(fuse_req_t req, mode_t mode) {
  const mode_t mask = fuse_req_ctx(req)->umask & 0777;
  return daemon::ThreadIdentity::use_umask(mask) == 0 ? mode : mode & ~mask;
}

int Filesystem::quiet_atime(int fd, int flags, bool dir) const noexcept {
  if (quiet_atime_ == nullptr || (!dir && !quiet_files_)) return fd;
  const int quiet = quiet_atime_->reopen(fd, flags);
  if (quiet < 0) return fd;
  UniqueFd(fd).reset();  // replaced by the quiet one
  return quiet;
}

void Filesystem::invalidate_attributes(fuse_ino_t ino) noexcept {
  // A negative offset: attributes only (fuse_lowlevel.h). It fails with
  // ENOENT when the kernel no longer holds the inode: nothing to refresh.
  if (session_ != nullptr) (void)fuse_lowlevel_notify_inval_inode(session_, ino, -1, 0);
}

namespace {
// Notices whose request never came (a chown(-1, -1), a write that failed
// before reaching us) stay until the inode's next write; past this many
// they are dropped, and such files show stale set-id bits for up to
// attr_timeout, as before.
constexpr std::size_t kMaxSetidNotices = 4096;
}  // namespace

void Filesystem::note_setid_notice(fuse_ino_t ino) {
  std::lock_guard lock(setid_mu_);
  if (setid_notices_.size() >= kMaxSetidNotices) setid_notices_.clear();
  setid_notices_.insert(ino);
  setid_notice_count_.store(setid_notices_.size(), std::memory_order_relaxed);
}

void Filesystem::after_setid_notice(fuse_ino_t ino) {
  if (setid_notice_count_.load(std::memory_order_relaxed) == 0) return;
  {
    std::lock_guard lock(setid_mu_);
    if (setid_notices_.erase(ino) == 0) return;
    setid_notice_count_.store(setid_notices_.size(), std::memory_order_relaxed);
  }
  invalidate_attributes(ino);
}

bool Filesystem::reserve_open_file() noexcept {
  if (open_files_.fetch_add(1, std::memory_order_relaxed) >= cfg_.max_open_files) {
    open_files_.fetch_sub(1, std::memory_order_relaxed);
    return false;
  }
  return true;
}

double Filesystem::attr_timeout_for(const Inode& inode) const noexcept {
  // The kernel shares cached attributes between callers, and a symlink's
  // st_size is its caller's expansion length.
  if (inode.is_symlink()) return links_.per_caller() ? 0.0 : cfg_.attr_timeout;
  // A file written through a shared mapping of its backing file changes
  // its mtime and ctime in SOURCE unseen (page faults pass no FUSE
  // request): while that may happen, every stat asks (vsymfs(8), FILE I/O
  // PASSTHROUGH). One atomic load while no file is open so.
  if (passthrough_ != nullptr && passthrough_->written_directly(inodes_.nodeid(inode))) return 0.0;
  return cfg_.attr_timeout;
}

int Filesystem::link_text(Inode& inode, const FdRef& fd, const struct stat& st, std::string& out) {
  LinkText* cache = inode.link_text();
  const std::uint64_t serial = InodeTable::serial(inode, fd);
  if (cache != nullptr && cache->get(serial, out)) return 0;
  if (int e = inodes_.read_link_quietly(fd.get(), st.st_dev, st.st_ino, out); e != 0) return e;
  if (cache != nullptr && serial != 0) cache->put(serial, out);
  return 0;
}

namespace {

std::int64_t coarse_now_ns() noexcept {
  struct timespec ts {};
  ::clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
  return static_cast<std::int64_t>(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec;
}

}  // namespace

bool Filesystem::kept_link_text(Inode& inode, std::string& out) {
  const LinkText* t = inode.link_text();
  if (t == nullptr || !t->keepable()) return false;
  const std::uint64_t serial = InodeTable::open_serial(inode);
  if (serial == 0 || !t->kept(serial, coarse_now_ns(), out)) return false;
  kept_texts_.fetch_add(1, std::memory_order_relaxed);
  return true;
}

int Filesystem::readlink_text(Inode& inode, const FdRef& fd, std::string& out) {
  LinkText* t = inode.link_text();
  const std::uint64_t serial = InodeTable::serial(inode, fd);
  if (t == nullptr || !t->keepable() || serial == 0) return read_raw_link(fd.get(), out);
  const std::int64_t now = coarse_now_ns();
  if (t->kept(serial, now, out)) {
    kept_texts_.fetch_add(1, std::memory_order_relaxed);
    return 0;
  }
  if (int e = read_raw_link(fd.get(), out); e != 0) return e;
  if (out.size() > LinkText::kKeptBytes || cfg_.attr_timeout <= 0) return 0;
  // Out-of-band changes (a chown of the link in SOURCE, which makes the next
  // read stamp its atime under relatime) are seen within attr_timeout, as
  // the kernel sees them in the attributes it caches.
  std::int64_t until = now + static_cast<std::int64_t>(cfg_.attr_timeout * 1e9);
  if (inodes_.link_keeping() == LinkKeeping::Relatime) {
    // The kernel stamps the atime on a read while it is not newer than the
    // mtime and the ctime, or is a day old (relatime_need_update): keep the
    // text only while none of that holds (the read just made stamped it if
    // it had to, so the common answer is yes).
    struct stat st {};
    if (::fstatat(fd.get(), "", &st, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW) != 0) return 0;
    auto ns = [](const struct timespec& ts) {
      return static_cast<std::int64_t>(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec;
    };
    struct timespec wall {};
    ::clock_gettime(CLOCK_REALTIME, &wall);
    constexpr std::int64_t kDay = 24LL * 3600 * 1'000'000'000;
    const std::int64_t a = ns(st.st_atim), age = ns(wall) - a;
    if (a <= ns(st.st_mtim) || a <= ns(st.st_ctim) || age < 0 || age >= kDay) return 0;
    until = std::min(until, now + (kDay - age));
  }
  t->keep(serial, until, out);
  return 0;
}

int Filesystem::read_raw_link(int fd, std::string& out) {
  char buf[PATH_MAX];
  ssize_t n = ::readlinkat(fd, "", buf, sizeof buf);
  if (n < 0) return errno;
  if (static_cast<std::size_t>(n) >= sizeof buf) return ENAMETOOLONG;
  out.assign(buf, static_cast<std::size_t>(n));
  return 0;
}

namespace {

// The link's directory, pinned only when the template has an @sys to probe
// (or given: `dir_fd`, when the caller holds it already).
class ParentDirectory final : public daemon::LinkDirectory {
 public:
  ParentDirectory(InodeTable& inodes, Inode& link, int dir_fd) noexcept
      : inodes_(inodes), link_(link), dir_fd_(dir_fd) {}
  int fd() override {
    if (dir_fd_ >= 0) return dir_fd_;
    // A link we have not seen found in a directory (cannot happen for
    // looked-up links) is probed relative to the root.
    if (inodes_.parent_fd(link_, pin_) != 0 && inodes_.fd(inodes_.root(), pin_) != 0) return -1;
    return pin_.get();
  }
  // The directory the link was last found in, as the table noted it: a
  // cached @sys answer then needs neither the table's lock, a descriptor
  // nor an fstat (one syscall less per @sys readlink).
  bool identity(dev_t& dev, ino_t& ino) override {
    if (dir_fd_ >= 0) return false;
    const LinkText* t = link_.link_text();
    return t != nullptr && t->parent(dev, ino);
  }
  // Only while someone traces: the directory's path as the kernel knows it
  // (directories stay connected, whatever opened them), less SOURCE's, and
  // the link's name there.
  std::string link_path() override {
    const std::string name = inodes_.tracked_name(link_);
    FdRef root;
    if (fd() < 0 || inodes_.fd(inodes_.root(), root) != 0) return name;
    const std::string here = fd_path(dir_fd_ >= 0 ? dir_fd_ : pin_.get()), top = fd_path(root.get());
    if (here.empty() || top.empty() || here.compare(0, top.size(), top) != 0) return name;
    if (here.size() == top.size()) return name;
    if (top != "/" && here[top.size()] != '/') return name;
    return here.substr(top == "/" ? 1 : top.size() + 1) + "/" + name;
  }

 private:
  static std::string fd_path(int fd) {
    char buf[PATH_MAX];
    const ProcFdPath path(fd);
    const ssize_t n = ::readlinkat(path.dir(), path.name(), buf, sizeof buf);
    return n > 0 && static_cast<std::size_t>(n) < sizeof buf ? std::string(buf, static_cast<std::size_t>(n))
                                                              : std::string();
  }

  InodeTable& inodes_;
  Inode& link_;
  const int dir_fd_;
  FdRef pin_;
};

}  // namespace

int Filesystem::readlink(const RequestFrom& from, Inode& link, std::string& out) {
  thread_local std::string raw;
  FdRef fd;
  // A link whose last expansion needed nothing of its caller: its text
  // kept (no pin, no syscall), else read through its open descriptor.
  bool have = false;
  if (link_needs(link) == daemon::LinkNeeds::Nothing && !links_.tracer().active()) {
    have = kept_link_text(link, raw);
    if (!have && inodes_.fd_if_open(link, fd)) {
      if (int e = readlink_text(link, fd, raw); e != 0) return e;
      have = true;
    }
  }
  if (have) {
    const daemon::LinkNeeds needs = links_.needs(raw);
    if (needs == daemon::LinkNeeds::Nothing) {
      out.assign(raw);
      state_.counters().readlinks.fetch_add(1, std::memory_order_relaxed);
      return 0;
    }
    // Changed into a variant link since its last expansion.
    if (int e = become_caller(from, needs); e != 0) return e;
  } else {
    if (int e = become_caller(from, link_needs(link)); e != 0) return e;
    if (!kept_link_text(link, raw)) {
      if (int e = inodes_.fd(link, fd); e != 0) return e;
      if (int e = readlink_text(link, fd, raw); e != 0) return e;
    }
  }
  if (int e = expand_text(from, link, raw, -1, out); e != 0) return e;
  state_.counters().readlinks.fetch_add(1, std::memory_order_relaxed);
  return 0;
}

int Filesystem::expand_text(const RequestFrom& from, Inode& link, const std::string& raw, int dir_fd,
                            std::string& out) {
  ParentDirectory parent(inodes_, link, dir_fd);
  daemon::LinkNeeds needs = daemon::LinkNeeds::Host;
  const Result<void> r = links_.expand(raw, parent, ids_of(from), out, &needs);
  if (LinkText* t = link.link_text()) t->note_needs(static_cast<std::uint8_t>(needs));
  return r ? 0 : r.error().code;
}

bool Filesystem::entry_size_is_used() const noexcept {
  // A LOOKUP (and the lookup that ends SYMLINK, LINK, CREATE, MKNOD and
  // MKDIR) runs while the kernel holds the parent's lock or the new dentry:
  // no expansion, and so no @sys probe, should run there unless its result
  // is used. With per-caller links the kernel keeps a symlink's attributes
  // for 0 s (every stat asks GETATTR, which holds no lock and computes the
  // size) and does not cache link bodies (whose length is the size), so
  // the entry's size is never read: the raw text's length stands. Only
  // when attributes or bodies are cached must the entry carry the
  // expansion's length (vsymfs(8), VARIANT LINKS, "Symlink sizes").
  return kernel_caches_symlinks_.load(std::memory_order_relaxed) || !links_.per_caller();
}

int Filesystem::stat_inode(fuse_req_t req, Inode& inode, const FdRef& fd, struct stat& st) {
  if (::fstatat(fd.get(), "", &st, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW) != 0) return errno;
  if (S_ISREG(st.st_mode)) inode.saw_size(st.st_size);
  if (S_ISLNK(st.st_mode)) {
    thread_local std::string raw, expansion;
    // A failed expansion keeps the raw length: readlink will report the error.
    if (link_text(inode, fd, st, raw) == 0 && expand_text(request_from(req), inode, raw, -1, expansion) == 0)
      st.st_size = static_cast<off_t>(expansion.size());
  }
  return 0;
}

int Filesystem::raw_link_text(Inode& inode, const FdRef& fd, std::string& out) {
  struct stat st {};
  if (::fstatat(fd.get(), "", &st, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW) != 0) return errno;
  return link_text(inode, fd, st, out);
}

int Filesystem::lookup(fuse_req_t req, Inode& parent, int parent_fd, const char* name, fuse_entry_param& e,
                       bool sys_ok, bool known_first) {
  std::memset(&e, 0, sizeof e);
  const char* real_name = name;
  bool per_caller_name = false;
  // Whether known_first pays, judged per thread from its recent lookups:
  // a name that is known with its descriptor open costs 1 syscall that way
  // against 3, any other 3 against 2 (an absent one 1 either way), so it
  // pays when more than a third are. +2 for such a name, -1 for another,
  // within [0, 64]: the score rises when they are, and the fstatat is tried
  // first while it is above the middle. (A tree larger than the descriptor
  // budget, walked once, has most of its names known but closed.)
  thread_local int known_score = 40;
  const auto score = [](bool open_known) {
    known_score = open_known ? std::min(known_score + 2, 64) : std::max(known_score - 1, 0);
  };
  const bool judged = known_first;  // a LOOKUP: its names count for the score
  known_first = known_first && known_score > 32;
  Inode* known = nullptr;
  int absent = 0;  // the fstatat's errno
  if (known_first) {
    if (::fstatat(parent_fd, name, &e.attr, AT_SYMLINK_NOFOLLOW) == 0) {
      known = inodes_.ref_known_open(parent, name, e.attr);
      score(known != nullptr);
    } else {
      absent = errno;
    }
  }
  if (known != nullptr) return fill_entry(req, *known, parent_fd, false, e);
  UniqueFd fd(absent != 0 ? -1 : ::openat(parent_fd, name, O_PATH | O_NOFOLLOW | O_CLOEXEC));
  thread_local std::vector<std::string> candidates;
  if (!fd) {
    int err = absent != 0 ? absent : errno;
    if (err != ENOENT || !sys_ok || !vsymfs::is_sys_component(name)) return err;
    candidates.clear();
    links_.sys_component_candidates(name, ids_of(request_from(req)), candidates);
    for (const auto& c : candidates) {
      fd.reset(::openat(parent_fd, c.c_str(), O_PATH | O_NOFOLLOW | O_CLOEXEC));
      if (fd) {
        real_name = c.c_str();
        per_caller_name = true;
        break;
      }
    }
    if (!fd) return ENOENT;
  }
  if (::fstatat(fd.get(), "", &e.attr, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW) != 0) return errno;
  bool was_open = false;
  auto inode = inodes_.adopt(parent, real_name, std::move(fd), e.attr, &was_open);
  if (!inode) return inode.error().code;
  if (judged && !known_first) score(was_open);  // a LOOKUP that skipped the fstatat
  return fill_entry(req, **inode, parent_fd, per_caller_name, e);
}

// The rest of an entry reply for `inode`, whose attributes are in `e.attr`.
int Filesystem::fill_entry(fuse_req_t req, Inode& inode, int parent_fd, bool per_caller_name, fuse_entry_param& e) {
  if (S_ISLNK(e.attr.st_mode) && entry_size_is_used()) {
    // The text is cached with the inode, so it is adopted first. Its
    // descriptor is the one just opened, or one the table already held for
    // this inode number, which being open kept the number from being
    // reused: the same link either way.
    thread_local std::string raw, expansion;
    FdRef lfd;
    // `parent_fd` is the link's directory: the same one readlink will probe in.
    if (inodes_.fd(inode, lfd) == 0 && link_text(inode, lfd, e.attr, raw) == 0 &&
        expand_text(request_from(req), inode, raw, parent_fd, expansion) == 0)
      e.attr.st_size = static_cast<off_t>(expansion.size());
  }
  if (S_ISREG(e.attr.st_mode)) inode.saw_size(e.attr.st_size);
  e.ino = inodes_.nodeid(inode);
  e.attr_timeout = attr_timeout_for(inode);
  // An @sys name resolves differently per caller: never cache the name.
  e.entry_timeout = per_caller_name ? 0.0 : cfg_.entry_timeout;
  return 0;
}

const fuse_lowlevel_ops& Filesystem::operations() {
  static const fuse_lowlevel_ops table = [] {
    fuse_lowlevel_ops o{};
    o.init = ops::init;
    o.lookup = ops::lookup;
    o.forget = ops::forget;
    o.forget_multi = ops::forget_multi;
    o.getattr = ops::getattr;
    o.setattr = ops::setattr;
    o.readlink = ops::readlink;
    o.access = ops::access;
    o.statfs = ops::statfs;
    o.mknod = ops::mknod;
    o.mkdir = ops::mkdir;
    o.symlink = ops::symlink;
    o.unlink = ops::unlink;
    o.rmdir = ops::rmdir;
    o.rename = ops::rename;
    o.link = ops::link;
    o.opendir = ops::opendir;
    o.readdir = ops::readdir;
    o.readdirplus = ops::readdirplus;
    o.releasedir = ops::releasedir;
    o.fsyncdir = ops::fsyncdir;
    o.open = ops::open;
    o.create = ops::create;
    o.read = ops::read;
    o.write_buf = ops::write_buf;
    o.flush = ops::flush;
    o.release = ops::release;
    o.fsync = ops::fsync;
    o.fallocate = ops::fallocate;
    o.lseek = ops::lseek;
    o.copy_file_range = ops::copy_file_range;
    o.setxattr = ops::setxattr;
    o.getxattr = ops::getxattr;
    o.listxattr = ops::listxattr;
    o.removexattr = ops::removexattr;
    // getlk/setlk/flock stay unset on purpose: the kernel then keeps POSIX
    // and BSD locks itself, per mount, and no worker thread ever blocks
    // waiting for a lock (vsymfs(8), LOCKS).
    return o;
  }();
  return table;
}

}  // namespace vsymfs::fs
