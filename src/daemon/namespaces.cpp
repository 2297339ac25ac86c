// Callers in other namespaces (namespaces.hpp).
#include "daemon/namespaces.hpp"

#include <fcntl.h>
#include <linux/openat2.h>
#include <sched.h>
#include <sys/capability.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <spdlog/spdlog.h>

#include <cerrno>
#include <condition_variable>
#include <deque>
#include <list>
#include <mutex>
#include <thread>
#include <unordered_map>

#include "vsymfs/unique_fd.hpp"

namespace vsymfs::daemon {
namespace {

// CAP_SYS_ADMIN in the effective set for a scope, then the thread's set as
// it was: a FUSE worker serves a request with the caller's ids and no
// effective capabilities (daemon/identity.hpp), and setns needs it.
class ScopedSysAdmin {
 public:
  ScopedSysAdmin() : saved_(cap_get_proc()) {
    if (saved_ == nullptr) return;
    cap_flag_value_t v = CAP_CLEAR;
    if (cap_get_flag(saved_, CAP_SYS_ADMIN, CAP_EFFECTIVE, &v) == 0 && v == CAP_SET) {
      ok_ = true;  // already there
      return;
    }
    cap_t raised = cap_dup(saved_);
    const cap_value_t admin = CAP_SYS_ADMIN;
    ok_ = raised != nullptr && cap_set_flag(raised, CAP_EFFECTIVE, 1, &admin, CAP_SET) == 0 && cap_set_proc(raised) == 0;
    changed_ = ok_;
    if (raised != nullptr) cap_free(raised);
  }
  ~ScopedSysAdmin() {
    if (changed_) (void)cap_set_proc(saved_);
    if (saved_ != nullptr) cap_free(saved_);
  }
  ScopedSysAdmin(const ScopedSysAdmin&) = delete;
  ScopedSysAdmin& operator=(const ScopedSysAdmin&) = delete;
  bool ok() const noexcept { return ok_; }

 private:
  cap_t saved_;
  bool ok_ = false;
  bool changed_ = false;
};

std::uint64_t ns_inode(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0 ? static_cast<std::uint64_t>(st.st_ino) : 0;
}

}  // namespace

NamespaceIds read_namespace_ids(pid_t pid) {
  if (pid <= 0) return {};
  const std::string base = "/proc/" + std::to_string(pid) + "/ns/";
  return NamespaceIds{ns_inode(base + "uts"), ns_inode(base + "mnt")};
}

const NamespaceIds& own_namespace_ids() {
  static const NamespaceIds ids{ns_inode("/proc/self/ns/uts"), ns_inode("/proc/self/ns/mnt")};
  return ids;
}

// ---------------------------------------------------------------- UtsReader

struct UtsReader::Impl {
  std::size_t max;
  UniqueFd own;         // the daemon's UTS namespace, to come back to
  bool usable = false;  // we can come back (setns into our own namespace works)
  mutable std::mutex mu;
  std::list<std::uint64_t> lru;  // most recent first
  struct Entry {
    std::shared_ptr<UniqueFd> fd;
    std::list<std::uint64_t>::iterator pos;
  };
  std::unordered_map<std::uint64_t, Entry> fds;

  std::shared_ptr<UniqueFd> fd_for(pid_t pid, std::uint64_t uts) {
    {
      std::lock_guard lock(mu);
      if (auto it = fds.find(uts); it != fds.end()) {
        lru.splice(lru.begin(), lru, it->second.pos);
        return it->second.fd;
      }
    }
    const std::string path = "/proc/" + std::to_string(pid) + "/ns/uts";
    auto fd = std::make_shared<UniqueFd>(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
    struct stat st {};
    // The process may have moved (or its pid been reused) since its
    // namespace was noted: the descriptor must be the namespace asked for.
    if (!*fd || ::fstat(fd->get(), &st) != 0 || st.st_ino != uts) return nullptr;
    std::lock_guard lock(mu);
    if (auto it = fds.find(uts); it != fds.end()) return it->second.fd;
    if (fds.size() >= max && !lru.empty()) {
      fds.erase(lru.back());
      lru.pop_back();
    }
    lru.push_front(uts);
    fds.emplace(uts, Entry{fd, lru.begin()});
    return fd;
  }
};

UtsReader::UtsReader(std::size_t max_namespaces) : impl_(std::make_unique<Impl>()) {
  impl_->max = std::max<std::size_t>(1, max_namespaces);
  impl_->own.reset(::open("/proc/thread-self/ns/uts", O_RDONLY | O_CLOEXEC));
  // A thread that entered another namespace must come back before it
  // serves anything else. Entering the namespace we are in needs the same
  // right as coming back: a daemon without it (not root, or root of a user
  // namespace that did not make its own UTS namespace) reads no other
  // namespace's names and every caller gets the daemon's.
  impl_->usable = impl_->own && ::setns(impl_->own.get(), CLONE_NEWUTS) == 0;
  if (!impl_->usable)
    spdlog::info("callers in other UTS namespaces get this daemon's host name: cannot enter UTS namespaces ({})",
                 impl_->own ? std::strerror(errno) : "no /proc/thread-self/ns/uts");
}

UtsReader::~UtsReader() = default;

std::size_t UtsReader::namespaces() const {
  std::lock_guard lock(impl_->mu);
  return impl_->fds.size();
}

std::optional<UtsNames> UtsReader::read(pid_t pid, std::uint64_t uts) {
  if (!impl_->usable || pid <= 0 || uts == 0) return std::nullopt;
  const std::shared_ptr<UniqueFd> fd = impl_->fd_for(pid, uts);
  if (!fd) return std::nullopt;
  const ScopedSysAdmin admin;
  if (!admin.ok() || ::setns(fd->get(), CLONE_NEWUTS) != 0) return std::nullopt;
  utsname u{};
  const int rc = ::uname(&u);
  if (::setns(impl_->own.get(), CLONE_NEWUTS) != 0) {
    // Proven possible at start; should it fail now, this thread would
    // serve from the caller's namespace: nothing on a worker depends on
    // it (the daemon's own names are read at start and reload, on other
    // threads), but say so.
    spdlog::error("could not return to the daemon's UTS namespace: {}", std::strerror(errno));
  }
  if (rc != 0) return std::nullopt;
  return UtsNames{u.nodename, u.domainname};
}

// ----------------------------------------------------------- CallerAccounts

namespace {

struct FileStamp {
  dev_t dev = 0;
  ino_t ino = 0;
  off_t size = -1;
  std::int64_t mtime_ns = 0;
  bool operator==(const FileStamp&) const = default;
};

FileStamp stamp_of(const struct stat& st) {
  return FileStamp{st.st_dev, st.st_ino, st.st_size,
                   static_cast<std::int64_t>(st.st_mtim.tv_sec) * 1'000'000'000 + st.st_mtim.tv_nsec};
}

// Opens `name` inside the directory tree rooted at `root`, as the caller
// would open /etc/passwd: absolute links and ".." stay inside `root`.
UniqueFd open_in_root(int root, const char* name) {
  open_how how{};
  how.flags = O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK;
  how.resolve = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS;
  return UniqueFd(static_cast<int>(::syscall(SYS_openat2, root, name, &how, sizeof how)));
}

// Reads a regular file of at most kMaxAccountFileSize whose stamp is `st`.
bool read_bounded(int fd, const struct stat& st, std::string& out) {
  if (!S_ISREG(st.st_mode) || st.st_size < 0 || static_cast<std::size_t>(st.st_size) > kMaxAccountFileSize)
    return false;
  out.resize(kMaxAccountFileSize + 1);
  std::size_t got = 0;
  while (got < out.size()) {
    const ssize_t n = ::read(fd, out.data() + got, out.size() - got);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return false;
    if (n == 0) break;
    got += static_cast<std::size_t>(n);
  }
  if (got > kMaxAccountFileSize) return false;  // grew while we read
  out.resize(got);
  return true;
}

}  // namespace

struct CallerAccounts::Impl {
  std::chrono::milliseconds timeout;
  std::size_t max;

  struct Entry {
    FileStamp passwd, group;
    std::shared_ptr<const AccountFiles> files;
  };
  std::mutex mu;
  std::condition_variable cv;
  std::unordered_map<std::uint64_t, Entry> cache;  // by mount namespace
  std::uint64_t reads = 0, failures = 0;

  // One job at a time on the helper thread; a job that does not finish in
  // time keeps the helper, and later callers fall back until it is free.
  struct Job {
    pid_t pid;
    std::uint64_t mnt;
    bool done = false;
    bool abandoned = false;  // its caller gave up: the helper may be stuck
    std::shared_ptr<const AccountFiles> result;
  };
  std::shared_ptr<Job> job;  // waiting or running
  bool stop = false;

  // On the helper thread.
  std::shared_ptr<const AccountFiles> load(pid_t pid, std::uint64_t mnt) {
    const std::string root_path = "/proc/" + std::to_string(pid) + "/root";
    UniqueFd root(::open(root_path.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
    if (!root) return nullptr;
    // Each file on its own: one that cannot be used (missing, a link out
    // of the root, too large, not a regular file) lists nobody.
    UniqueFd pw = open_in_root(root.get(), "etc/passwd");
    UniqueFd gr = open_in_root(root.get(), "etc/group");
    struct stat pst {}, gst {};
    const bool pw_ok = pw && ::fstat(pw.get(), &pst) == 0;
    const bool gr_ok = gr && ::fstat(gr.get(), &gst) == 0;
    // Still the namespace we were asked about (the pid may have moved).
    if (read_namespace_ids(pid).mnt != mnt) return nullptr;
    const FileStamp ps = pw_ok ? stamp_of(pst) : FileStamp{}, gs = gr_ok ? stamp_of(gst) : FileStamp{};
    {
      std::lock_guard lock(mu);
      if (auto it = cache.find(mnt); it != cache.end() && it->second.passwd == ps && it->second.group == gs)
        return it->second.files;
    }
    std::string text;
    auto files = std::make_shared<AccountFiles>();
    if (pw_ok && read_bounded(pw.get(), pst, text)) parse_passwd(text, *files);
    if (gr_ok && read_bounded(gr.get(), gst, text)) parse_group(text, *files);
    std::lock_guard lock(mu);
    ++reads;
    if (cache.size() >= max && !cache.contains(mnt)) cache.clear();
    cache[mnt] = Entry{ps, gs, files};
    return files;
  }

  void run() {
    std::unique_lock lock(mu);
    for (;;) {
      cv.wait(lock, [&] { return stop || (job && !job->done); });
      if (stop) return;
      const std::shared_ptr<Job> j = job;
      lock.unlock();
      auto result = load(j->pid, j->mnt);
      lock.lock();
      j->result = std::move(result);
      j->done = true;
      if (job == j) job.reset();
      cv.notify_all();
    }
  }
};

CallerAccounts::CallerAccounts(std::chrono::milliseconds timeout, std::size_t max_namespaces)
    : impl_(std::make_shared<Impl>()) {
  impl_->timeout = timeout;
  impl_->max = std::max<std::size_t>(1, max_namespaces);
  // Detached, holding the state: a read stuck on a dead filesystem must not
  // keep the daemon from exiting.
  std::thread([impl = impl_] { impl->run(); }).detach();
}

CallerAccounts::~CallerAccounts() {
  std::lock_guard lock(impl_->mu);
  impl_->stop = true;
  impl_->cv.notify_all();
}

std::shared_ptr<const AccountFiles> CallerAccounts::files(pid_t pid, std::uint64_t mnt) {
  if (pid <= 0 || mnt == 0) return nullptr;
  Impl& im = *impl_;
  std::unique_lock lock(im.mu);
  const auto deadline = std::chrono::steady_clock::now() + im.timeout;
  // Wait for our turn (another caller's read), then for our read. Behind
  // a read whose own caller gave up, fall back at once.
  if (!im.cv.wait_until(lock, deadline, [&] { return !im.job || im.job->abandoned; }) || im.job) {
    ++im.failures;
    return nullptr;
  }
  auto job = std::make_shared<Impl::Job>(Impl::Job{pid, mnt});
  im.job = job;
  im.cv.notify_all();
  if (!im.cv.wait_until(lock, deadline, [&] { return job->done; })) {
    job->abandoned = true;
    ++im.failures;
    return nullptr;
  }
  if (!job->result) ++im.failures;
  return job->result;
}

CallerAccounts::Stats CallerAccounts::stats() const {
  std::lock_guard lock(impl_->mu);
  return Stats{impl_->cache.size(), impl_->reads, impl_->failures};
}

}  // namespace vsymfs::daemon
