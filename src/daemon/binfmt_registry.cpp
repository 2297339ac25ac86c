#include "binfmt_registry.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <limits.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>

namespace vsymfs::daemon {
namespace {

// An entry's text is a few hundred bytes (magic and mask are at most 128
// bytes each, in hex); anything longer is not an entry.
constexpr std::size_t kMaxEntryBytes = 4096;
// The kernel lists at most a few dozen entries (Debian's qemu-user-static
// registers 29); a directory with more is not binfmt_misc.
constexpr std::size_t kMaxEntries = 1024;

bool read_entry(int dir_fd, const std::string& name, std::string& out) {
  const int fd = ::openat(dir_fd, name.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
  if (fd < 0) return false;
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
  ::close(fd);
  out.resize(used);
  return ok && used < kMaxEntryBytes;
}

std::string base_name(const std::string& path) {
  const auto slash = path.rfind('/');
  return slash == std::string::npos ? path : path.substr(slash + 1);
}

}  // namespace

BinfmtRegistry::BinfmtRegistry(std::string dir) : dir_(std::move(dir)) {}

bool BinfmtRegistry::list(Listing& out) const {
  out.clear();
  DIR* d = ::opendir(dir_.c_str());
  if (d == nullptr) return false;
  while (const dirent* e = ::readdir(d)) {
    const std::string_view name(e->d_name);
    // "register" and "status" are the control files, not entries.
    if (name == "." || name == ".." || name == "register" || name == "status") continue;
    if (out.size() >= kMaxEntries) break;
    out.emplace_back(std::string(name), e->d_ino);
  }
  ::closedir(d);
  std::sort(out.begin(), out.end());
  return true;
}

void BinfmtRegistry::reload(const Listing& listing) {
  by_file_.clear();
  ++reloads_;
  const int dir_fd = ::open(dir_.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC);
  if (dir_fd < 0) return;
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
  ::close(dir_fd);
}

std::shared_ptr<const Emulation> BinfmtRegistry::emulation_of(dev_t dev, ino_t ino) {
  Listing now;
  if (!list(now)) now.clear();  // not mounted or unreadable: no emulators
  std::lock_guard lock(mu_);
  if (!loaded_ || now != listing_) {
    listing_ = std::move(now);
    loaded_ = true;
    reload(listing_);
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
  return Stats{reloads_, by_file_.size()};
}

}  // namespace vsymfs::daemon
