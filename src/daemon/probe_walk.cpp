#include "daemon/probe_walk.hpp"

#include <fcntl.h>
#include <linux/openat2.h>
#include <poll.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <climits>
#include <cstring>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <thread>
#include <unordered_map>

#include <spdlog/spdlog.h>

#include "daemon/identity.hpp"
#include "vsymfs/unique_fd.hpp"

namespace vsymfs::daemon {

namespace {

constexpr int kMaxLinks = 40;      // as the kernel's MAXSYMLINKS
constexpr int kMaxSteps = 4096;    // components walked in all, links included
constexpr std::uint64_t kStep = RESOLVE_NO_XDEV | RESOLVE_NO_MAGICLINKS;

int open2(int dir, const char* path, int flags, std::uint64_t resolve) {
  open_how how{};
  how.flags = static_cast<std::uint64_t>(flags | O_PATH | O_CLOEXEC);
  how.resolve = resolve;
  long r;
  do {
    r = ::syscall(SYS_openat2, dir, path, &how, sizeof how);
  } while (r < 0 && errno == EINTR);
  return static_cast<int>(r);
}

// The device (and mount) of an fd, without asking its filesystem: FUSE
// answers an empty mask from the inode it holds, and AT_STATX_DONT_SYNC
// says the same to kernels before 6.6.
bool device_of(int fd, dev_t& dev, std::uint64_t* mnt_id = nullptr, ino_t* ino = nullptr) {
  struct statx sx {};
  const unsigned mask = ino != nullptr ? STATX_INO : 0;
  if (::statx(fd, "", AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW | AT_STATX_DONT_SYNC, mask, &sx) != 0) return false;
  dev = makedev(sx.stx_dev_major, sx.stx_dev_minor);
  if (mnt_id != nullptr) *mnt_id = sx.stx_mnt_id;
  if (ino != nullptr) *ino = sx.stx_ino;
  return true;
}

bool is_fuse_type(std::string_view type) {
  for (std::string_view t : {"fuse", "fuseblk"})
    if (type == t || (type.starts_with(t) && type.size() > t.size() && type[t.size()] == '.')) return true;
  return false;
}

// The devices in the mount table, and whether each is FUSE. Re-read when
// the kernel says the table changed (poll on /proc/self/mountinfo reports
// POLLPRI once per change). A walk asks only after it holds a descriptor
// of the mount in question, which keeps that mount and its device alive:
// if the table has not changed since it was read, the device is the one
// listed; if it has, it is read again.
class MountTable {
 public:
  enum class Kind : std::uint8_t { Other, Fuse, Unknown };

  Kind classify(dev_t dev) {
    std::lock_guard lock(mu_);
    if (!fresh()) return Kind::Unknown;
    auto it = devices_.find(dev);
    if (it == devices_.end()) return Kind::Unknown;
    return it->second ? Kind::Fuse : Kind::Other;
  }

 private:
  bool changed() {
    pollfd p{fd_.get(), POLLPRI, 0};
    return ::poll(&p, 1, 0) != 0 && (p.revents & (POLLPRI | POLLERR)) != 0;
  }

  // Up to date as of now (mu_ held).
  bool fresh() {
    if (!fd_) {
      fd_.reset(::open("/proc/self/mountinfo", O_RDONLY | O_CLOEXEC));
      if (!fd_) return false;
    }
    // Consume the change (if any) before reading, then check that nothing
    // changed during the read, which the kernel may do in pieces.
    for (int attempt = 0; attempt < 4; ++attempt) {
      const bool moved = changed();
      if (loaded_ && !moved) return true;
      if (!read_table()) return false;
      loaded_ = true;
    }
    return false;  // changing faster than we can read it
  }

  bool read_table() {
    std::string text;
    char buf[16384];
    if (::lseek(fd_.get(), 0, SEEK_SET) != 0) return false;
    for (;;) {
      const ssize_t n = ::read(fd_.get(), buf, sizeof buf);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) return false;
      if (n == 0) break;
      text.append(buf, static_cast<std::size_t>(n));
    }
    devices_.clear();
    for (const MountDevice& m : parse_mount_devices(text)) {
      // One device may be mounted many times (bind mounts): FUSE if any says so.
      auto [it, inserted] = devices_.emplace(m.dev, m.fuse);
      if (!inserted) it->second = it->second || m.fuse;
    }
    return true;
  }

  std::mutex mu_;
  UniqueFd fd_;
  bool loaded_ = false;
  std::unordered_map<dev_t, bool> devices_;
};

}  // namespace

std::vector<MountDevice> parse_mount_devices(std::string_view text) {
  std::vector<MountDevice> out;
  while (!text.empty()) {
    const std::size_t eol = text.find('\n');
    std::string_view line = text.substr(0, eol);
    text = eol == std::string_view::npos ? std::string_view{} : text.substr(eol + 1);
    // id parent major:minor root mountpoint options [optional...] - type source superoptions
    std::string_view rest = line;
    std::string_view fields[3];
    std::size_t n = 0;
    while (n < 3 && !rest.empty()) {
      const std::size_t sp = rest.find(' ');
      fields[n++] = rest.substr(0, sp);
      rest = sp == std::string_view::npos ? std::string_view{} : rest.substr(sp + 1);
    }
    const std::size_t dash = rest.find(" - ");
    if (n < 3 || dash == std::string_view::npos) continue;
    const std::string_view devno = fields[2];
    const std::size_t colon = devno.find(':');
    if (colon == std::string_view::npos) continue;
    unsigned major_no = 0, minor_no = 0;
    bool ok = colon > 0 && colon + 1 < devno.size();
    for (char c : devno.substr(0, colon)) ok = ok && c >= '0' && c <= '9', major_no = major_no * 10 + unsigned(c - '0');
    for (char c : devno.substr(colon + 1)) ok = ok && c >= '0' && c <= '9', minor_no = minor_no * 10 + unsigned(c - '0');
    if (!ok) continue;
    std::string_view type = rest.substr(dash + 3);
    type = type.substr(0, type.find(' '));
    out.push_back({makedev(major_no, minor_no), is_fuse_type(type)});
  }
  return out;
}

struct ProbeWalker::Core {
  explicit Core(Options o) : opts(std::move(o)) {
    source_root.reset(::open(opts.source.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
    if (source_root) have_source = device_of(source_root.get(), source_dev, nullptr, &source_ino);
    root.reset(::open("/", O_PATH | O_DIRECTORY | O_CLOEXEC));
    while (opts.mountpoint.size() > 1 && opts.mountpoint.back() == '/') opts.mountpoint.pop_back();
    const std::size_t slash = opts.mountpoint.rfind('/');
    mountpoint_parent = slash == 0 || slash == std::string::npos ? "/" : opts.mountpoint.substr(0, slash);
  }

  Options opts;
  UniqueFd source_root, root;
  bool have_source = false;
  dev_t source_dev = 0;
  ino_t source_ino = 0;
  std::string mountpoint_parent;  // where `..` from the mount's root leads
  // Our own mount, once known: (device, mount id). Read by walks on any
  // thread; written once.
  std::atomic<bool> own_known{false};
  dev_t own_dev = 0;
  std::uint64_t own_mnt = 0;
  MountTable mounts;
  std::atomic<std::uint64_t> outside{0}, abandoned{0}, refused{0};

  // Probe threads.
  struct Job {
    UniqueFd dir;
    std::string target;
    uid_t uid = 0;
    gid_t gid = 0;
    std::vector<gid_t> groups;
    std::mutex mu;
    std::condition_variable cv;
    bool done = false, abandoned = false, exists = false;
  };
  std::mutex pool_mu;
  std::condition_variable pool_cv;
  std::deque<std::shared_ptr<Job>> queue;
  unsigned started = 0, idle = 0;
  bool stop = false;

  bool under_mountpoint(std::string_view path) const {
    const std::string& mp = opts.mountpoint;
    if (mp == "/") return true;
    return path.starts_with(mp) && (path.size() == mp.size() || path[mp.size()] == '/');
  }
};

namespace {

using Core = ProbeWalker::Core;

enum class Outcome : std::uint8_t { Continue, Exists, Absent, Leaves };

// One walk of one candidate path. The directory it stands in is `cur`,
// either borrowed (the start, SOURCE's root, "/") or owned.
class Walk {
 public:
  Walk(Core& core, bool may_leave) : core_(core), may_leave_(may_leave) {}

  Outcome run(int dir_fd, std::string_view target) {
    if (target.empty() || target.size() >= PATH_MAX) return Outcome::Absent;
    rest_.assign(target);
    pos_ = 0;
    if (rest_.front() == '/') {
      if (Outcome o = jump_absolute(); o != Outcome::Continue) return o;
    } else {
      if (dir_fd < 0) return Outcome::Absent;
      borrow(dir_fd, true);
    }
    if (in_source_) {
      // Most candidates lie beneath where they start (the link's directory,
      // SOURCE's root), in one mount: one syscall settles them, with the
      // kernel's own answer. Anything else (`..` above the start, an
      // absolute link, a mount point on the way) comes back as EXDEV and is
      // walked step by step.
      while (pos_ < rest_.size() && rest_[pos_] == '/') ++pos_;
      if (pos_ == rest_.size()) return Outcome::Exists;
      if (UniqueFd fd(open2(cur_, rest_.c_str() + pos_, O_NOFOLLOW, RESOLVE_BENEATH | kStep)); fd)
        return Outcome::Exists;
      if (errno != EXDEV && errno != EAGAIN && errno != ELOOP) return Outcome::Absent;
    }
    return walk();
  }

 private:
  Outcome walk() {
    char name[NAME_MAX + 1];
    for (;;) {
      while (pos_ < rest_.size() && rest_[pos_] == '/') ++pos_;
      if (pos_ == rest_.size()) return Outcome::Exists;  // ended on a directory (or "/")
      std::size_t end = rest_.find('/', pos_);
      if (end == std::string::npos) end = rest_.size();
      const std::size_t len = end - pos_;
      if (len > NAME_MAX) return Outcome::Absent;
      rest_.copy(name, len, pos_);
      name[len] = '\0';
      std::size_t next = end;
      while (next < rest_.size() && rest_[next] == '/') ++next;
      const bool last = next == rest_.size();
      const bool must_be_dir = !last || end < rest_.size();  // more follows, or a trailing slash
      pos_ = next;
      if (++steps_ > kMaxSteps) return Outcome::Absent;

      if (std::string_view(name) == ".") continue;
      if (std::string_view(name) == "..") {
        if (Outcome o = up(); o != Outcome::Continue) return o;
        continue;
      }
      if (!must_be_dir) {
        // The candidate itself, as lstat sees it; a mount point exists
        // without entering what is mounted there.
        const UniqueFd fd(open2(cur_, name, O_NOFOLLOW, kStep));
        return fd || errno == EXDEV ? Outcome::Exists : Outcome::Absent;
      }
      const int fd = open2(cur_, name, O_DIRECTORY | O_NOFOLLOW, kStep);
      if (fd >= 0) {
        own(fd);
        continue;
      }
      Outcome o = Outcome::Absent;
      if (errno == EXDEV) o = cross(name);
      else if (errno == ENOTDIR) o = follow(name, last);
      if (o != Outcome::Continue) return o;
    }
  }

  // A symlink in the middle (or a file: then the path does not exist).
  Outcome follow(const char* name, bool last) {
    char buf[PATH_MAX];
    const ssize_t n = ::readlinkat(cur_, name, buf, sizeof buf);
    if (n <= 0 || static_cast<std::size_t>(n) >= sizeof buf) return Outcome::Absent;
    if (++links_ > kMaxLinks) return Outcome::Absent;
    std::string text(buf, static_cast<std::size_t>(n));
    text += '/';  // what follows it, or the trailing slash that made it a directory
    if (!last) text.append(rest_, pos_, std::string::npos);
    rest_ = std::move(text);
    pos_ = 0;
    return rest_.front() == '/' ? jump_absolute() : Outcome::Continue;
  }

  // rest_ is an absolute path, read from pos_ = 0.
  Outcome jump_absolute() {
    if (core_.under_mountpoint(rest_)) {
      // Our mount, by its name: SOURCE's root.
      if (!core_.have_source) return Outcome::Absent;
      borrow(core_.source_root.get(), true);
      pos_ = core_.opts.mountpoint == "/" ? 0 : core_.opts.mountpoint.size();
      return Outcome::Continue;
    }
    if (!may_leave_) return Outcome::Leaves;
    if (!core_.root) return Outcome::Absent;
    dev_t dev = 0;
    if (!device_of(core_.root.get(), dev) || !allowed(dev)) return refuse();
    borrow(core_.root.get(), false);
    return Outcome::Continue;
  }

  Outcome up() {
    if (in_source_ && is_source_root()) {
      if (core_.opts.mountpoint == "/") return Outcome::Continue;  // the root's parent is itself
      if (!may_leave_) return Outcome::Leaves;
      // Out of the mount: on from the mount point's parent, by its path
      // (which may lead straight back in: `../mnt/x`).
      rest_ = core_.mountpoint_parent + "/" + rest_.substr(pos_);
      pos_ = 0;
      return jump_absolute();
    }
    int fd = open2(cur_, "..", O_DIRECTORY, kStep);
    if (fd >= 0) {
      own(fd);
      return Outcome::Continue;
    }
    if (errno != EXDEV) return Outcome::Absent;
    // The root of a mount: its parent is in the mount below.
    fd = open2(cur_, "..", O_DIRECTORY, RESOLVE_NO_MAGICLINKS);
    if (fd < 0) return Outcome::Absent;
    return arrive(UniqueFd(fd), false);
  }

  // `name` is a mount point.
  Outcome cross(const char* name) {
    const int fd = open2(cur_, name, O_DIRECTORY | O_NOFOLLOW, RESOLVE_NO_MAGICLINKS);
    if (fd < 0) return Outcome::Absent;
    return arrive(UniqueFd(fd), true);
  }

  // `fd` is in another mount than cur_: go on there if it is safe.
  Outcome arrive(UniqueFd fd, bool downward) {
    dev_t dev = 0;
    std::uint64_t mnt = 0;
    if (!device_of(fd.get(), dev, &mnt)) return Outcome::Absent;
    if (core_.own_known.load(std::memory_order_acquire) && dev == core_.own_dev) {
      // Our own mount's root, entered from above: on in SOURCE. Anything
      // else of it (a bind mount of a subdirectory, its inside reached from
      // a mount stacked in it) cannot be mapped: refused.
      if (!downward || mnt != core_.own_mnt || !core_.have_source) return refuse();
      borrow(core_.source_root.get(), true);
      return Outcome::Continue;
    }
    if (!allowed(dev)) return refuse();
    own(fd.release());
    return Outcome::Continue;
  }

  bool allowed(dev_t dev) {
    // SOURCE's own filesystem is asked by every operation anyway, FUSE or not.
    if (core_.have_source && dev == core_.source_dev) return true;
    return core_.mounts.classify(dev) == MountTable::Kind::Other;
  }

  Outcome refuse() {
    core_.refused.fetch_add(1, std::memory_order_relaxed);
    return Outcome::Absent;
  }

  bool is_source_root() {
    dev_t dev = 0;
    ino_t ino = 0;
    return core_.have_source && device_of(cur_, dev, nullptr, &ino) && dev == core_.source_dev &&
           ino == core_.source_ino;
  }

  void borrow(int fd, bool in_source) {
    owned_.reset();
    cur_ = fd;
    in_source_ = in_source;
  }
  void own(int fd) {
    owned_.reset(fd);
    cur_ = fd;
  }

  Core& core_;
  const bool may_leave_;
  int cur_ = -1;
  UniqueFd owned_;
  bool in_source_ = true;
  std::string rest_;
  std::size_t pos_ = 0;
  int links_ = 0, steps_ = 0;
};

void probe_thread(std::shared_ptr<Core> core) {
  for (;;) {
    std::shared_ptr<Core::Job> job;
    {
      std::unique_lock lock(core->pool_mu);
      ++core->idle;
      core->pool_cv.wait(lock, [&] { return core->stop || !core->queue.empty(); });
      --core->idle;
      if (core->stop) return;
      job = std::move(core->queue.front());
      core->queue.pop_front();
    }
    {
      std::lock_guard jl(job->mu);
      if (job->abandoned) continue;
    }
    // The caller's identity, as the FUSE workers take it (identity.hpp):
    // without the right to switch (a daemon run by a user) the walk runs as
    // the daemon, as its operations do; a switch that fails answers
    // "absent" rather than walk with whatever identity the thread had.
    const bool exists = ThreadIdentity::become(job->uid, job->gid, job->groups) == 0 &&
                        Walk(*core, true).run(job->dir.get(), job->target) == Outcome::Exists;
    {
      std::lock_guard jl(job->mu);
      job->exists = exists;
      job->done = true;
    }
    job->cv.notify_one();
  }
}

}  // namespace

ProbeWalker::ProbeWalker(Options opts) : core_(std::make_shared<Core>(std::move(opts))) {}

ProbeWalker::~ProbeWalker() {
  {
    std::lock_guard lock(core_->pool_mu);
    core_->stop = true;
  }
  core_->pool_cv.notify_all();
  // The probe threads are detached: one may be stuck in the kernel. Each
  // holds the core, so none touches freed memory.
}

void ProbeWalker::note_own_mount() {
  struct statx sx {};
  if (::statx(AT_FDCWD, core_->opts.mountpoint.c_str(), AT_STATX_DONT_SYNC, 0, &sx) != 0) {
    spdlog::warn("cannot identify our own mount at {}: {}; @sys probes that reach it count as absent",
                 core_->opts.mountpoint, std::strerror(errno));
    return;
  }
  const dev_t dev = makedev(sx.stx_dev_major, sx.stx_dev_minor);
  if (core_->have_source && dev == core_->source_dev) return;  // not mounted (yet)
  core_->own_dev = dev;
  core_->own_mnt = sx.stx_mnt_id;
  core_->own_known.store(true, std::memory_order_release);
}

ProbeWalker::Inside ProbeWalker::inside(int dir_fd, std::string_view target) const {
  switch (Walk(*core_, false).run(dir_fd, target)) {
    case Outcome::Exists: return Inside::Exists;
    case Outcome::Leaves: return Inside::Leaves;
    default: return Inside::Absent;
  }
}

ProbeWalker::Answer ProbeWalker::anywhere(int dir_fd, std::string_view target, const ProbeCredentials& creds,
                                          Clock::time_point deadline) {
  Core& core = *core_;
  core.outside.fetch_add(1, std::memory_order_relaxed);
  auto job = std::make_shared<Core::Job>();
  if (dir_fd >= 0) {
    job->dir.reset(::fcntl(dir_fd, F_DUPFD_CLOEXEC, 0));
    if (!job->dir) return Answer::Absent;
  }
  job->target.assign(target);
  job->uid = creds.uid;
  job->gid = creds.gid;
  job->groups.assign(creds.groups.begin(), creds.groups.end());
  bool queued = false;
  {
    std::lock_guard lock(core.pool_mu);
    if (!core.stop && core.queue.size() < core.opts.max_queued) {
      core.queue.push_back(job);
      queued = true;
      if (core.idle < core.queue.size() && core.started < std::max(1u, core.opts.threads)) {
        ++core.started;
        std::thread(probe_thread, core_).detach();
      }
    }
  }
  bool done = false;
  if (queued) {
    core.pool_cv.notify_one();
    std::unique_lock lock(job->mu);
    done = job->cv.wait_until(lock, deadline, [&] { return job->done; });
    if (!done) job->abandoned = true;
  }
  if (!done) {
    core.abandoned.fetch_add(1, std::memory_order_relaxed);
    return Answer::Unknown;
  }
  return job->exists ? Answer::Exists : Answer::Absent;
}

ProbeWalker::Stats ProbeWalker::stats() const {
  return {core_->outside.load(std::memory_order_relaxed), core_->abandoned.load(std::memory_order_relaxed),
          core_->refused.load(std::memory_order_relaxed)};
}

}  // namespace vsymfs::daemon
