#include "daemon/binfmt_registry.hpp"

#include <sys/syscall.h>
#include <fcntl.h>
#include <poll.h>
#include <sys/inotify.h>
#include <limits.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstdlib>
#include <string_view>

namespace vsymfs::daemon {
namespace {

// An entry's text is a few hundred bytes (magic and mask are at most 128
// bytes each, in hex); anything longer is not an entry.
constexpr std::size_t kMaxEntryBytes = 4096;
// The kernel lists at most a few dozen entries (Debian's qemu-user-static
// registers 29); a directory with more is not binfmt_misc.
constexpr std::size_t kMaxEntries = 1024;

bool read_entry(int dir_fd, const std::string& name, std::string& out) {
  UniqueFd owned(::openat(dir_fd, name.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK));
  if (!owned) return false;
  const int fd = owned.get();
  out.resize(kMaxEntryBytes);
  std::size_t used = 0;
  bool ok = true;
  while (used < out.size()) {
    const ssize_t n = ::read(fd, out.data() + used, out.size() - used);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) ok = false;
    if (n <= 0) break;
    used += static_cast<std::size_t>(n);
  }
  owned.reset();
  out.resize(used);
  return ok && used < kMaxEntryBytes;
}

// The kernel's struct linux_dirent64 (getdents64(2)).
struct Dirent64 {
  std::uint64_t d_ino;
  std::int64_t d_off;
  unsigned short d_reclen;
  unsigned char d_type;
  char d_name[1];
};

std::string base_name(const std::string& path) {
  const auto slash = path.rfind('/');
  return slash == std::string::npos ? path : path.substr(slash + 1);
}

}  // namespace

BinfmtRegistry::BinfmtRegistry(std::string dir)
    : dir_(std::move(dir)),
      inotify_fd_(::inotify_init1(IN_NONBLOCK | IN_CLOEXEC)),
      mounts_fd_(::open("/proc/self/mountinfo", O_RDONLY | O_CLOEXEC)) {}

BinfmtRegistry::~BinfmtRegistry() = default;

bool BinfmtRegistry::changed() {
  if (!loaded_ || !inotify_fd_ || !mounts_fd_ || watch_ < 0) return true;
  // One poll(2) answers both: a write to `register` or to an entry (the
  // kernel reports every write to a file, and binfmt_misc files too), an
  // entry file made, renamed or removed, or a mount or unmount anywhere in
  // our mount namespace (binfmt_misc mounted or unmounted under the path).
  pollfd fds[2] = {{inotify_fd_.get(), POLLIN, 0}, {mounts_fd_.get(), POLLPRI, 0}};
  const int n = ::poll(fds, 2, 0);
  if (n == 0) return false;
  if (n < 0) return true;
  alignas(inotify_event) char buf[4096];
  while (::read(inotify_fd_.get(), buf, sizeof buf) > 0) {
  }
  return true;
}

void BinfmtRegistry::watch() {
  if (!inotify_fd_) return;
  // Again on every change: after binfmt_misc is mounted the path leads to
  // its root, a new inode (the old watch then reports nothing).
  if (watch_ >= 0) ::inotify_rm_watch(inotify_fd_.get(), watch_);
  watch_ = ::inotify_add_watch(inotify_fd_.get(), dir_.c_str(),
                               IN_MODIFY | IN_CREATE | IN_DELETE | IN_MOVED_FROM | IN_MOVED_TO | IN_ATTRIB |
                                   IN_DELETE_SELF | IN_MOVE_SELF | IN_UNMOUNT);
  alignas(inotify_event) char buf[4096];
  while (::read(inotify_fd_.get(), buf, sizeof buf) > 0) {
  }
}

bool BinfmtRegistry::list(Listing& out) const {
  out.clear();
  // Opened for each question, by path: a descriptor kept open would keep
  // binfmt_misc from being unmounted (EBUSY) and miss one mounted later.
  // getdents64 into a stack buffer: opendir/readdir cost 1.3 times as much.
  UniqueFd owned(::open(dir_.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!owned) return false;
  const int fd = owned.get();
  alignas(8) char buf[8192];
  for (;;) {
    const long n = ::syscall(SYS_getdents64, fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      owned.reset();
      if (n < 0) return false;
      break;
    }
    for (long off = 0; off < n;) {
      const auto* d = reinterpret_cast<const Dirent64*>(buf + off);
      off += d->d_reclen;
      const std::string_view name(d->d_name);
      // "register" and "status" are the control files, not entries.
      if (name == "." || name == ".." || name == "register" || name == "status") continue;
      if (out.size() >= kMaxEntries) continue;
      out.emplace_back(std::string(name), static_cast<ino_t>(d->d_ino));
    }
  }
  std::sort(out.begin(), out.end());
  return true;
}

void BinfmtRegistry::reload(const Listing& listing) {
  by_file_.clear();
  ++reloads_;
  UniqueFd owned(::open(dir_.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
  if (!owned) return;
  const int dir_fd = owned.get();
  std::string text;
  // Name order: should two entries name the same emulator file (they never
  // do in Debian), the first one decides.
  for (const auto& [name, ino] : listing) {
    if (!read_entry(dir_fd, name, text)) continue;
    auto entry = parse_binfmt_entry(name, text);
    if (!entry) continue;
    const auto guest = binfmt_guest(*entry);
    if (!guest) continue;
    // The interpreter as the kernel opens it: through its symlinks, in our
    // mount namespace (with the F flag the kernel opened it at registration,
    // in the registering namespace; normally the same).
    struct stat st {};
    if (::stat(entry->interpreter.c_str(), &st) != 0 || !S_ISREG(st.st_mode)) continue;
    char* real = ::realpath(entry->interpreter.c_str(), nullptr);
    const std::string file = base_name(real != nullptr ? std::string(real) : entry->interpreter);
    std::free(real);
    by_file_.try_emplace({st.st_dev, st.st_ino}, std::make_shared<const Emulation>(make_emulation(*guest, file, name)));
  }
  owned.reset();
}

std::shared_ptr<const Emulation> BinfmtRegistry::emulation_of(dev_t dev, ino_t ino) {
  std::lock_guard lock(mu_);
  if (changed()) {
    ++checks_;
    // The watch first, then the listing: a registration in between is
    // both listed and reported (and listed again next time, harmlessly).
    watch();
    Listing now;
    if (!list(now)) now.clear();  // not mounted or unreadable: no emulators
    if (!loaded_ || now != listing_) {
      listing_ = std::move(now);
      loaded_ = true;
      reload(listing_);
    }
  }
  const auto it = by_file_.find({dev, ino});
  return it == by_file_.end() ? nullptr : it->second;
}

std::shared_ptr<const Emulation> BinfmtRegistry::self() {
  struct stat st {};
  if (::stat("/proc/self/exe", &st) != 0) return nullptr;
  return emulation_of(st.st_dev, st.st_ino);
}

BinfmtRegistry::Stats BinfmtRegistry::stats() const {
  std::lock_guard lock(mu_);
  return Stats{reloads_, checks_, by_file_.size()};
}

}  // namespace vsymfs::daemon
