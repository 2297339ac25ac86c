// Which files are emulators: the binfmt_misc registrations
// (/proc/sys/fs/binfmt_misc/*) read into a table from an interpreter's
// file identity (st_dev, st_ino) to the architecture its entry's magic
// selects. A process whose /proc/<pid>/exe is one of those files is a
// program of that architecture run by the emulator (qemu-user): the kernel
// execs the interpreter with the guest program as its argument.
//
// Files, not names: the entry's interpreter path is resolved through its
// symlinks (Debian's /usr/libexec/qemu-binfmt/aarch64-binfmt-P is a link to
// /usr/bin/qemu-aarch64-static, which is what /proc/<pid>/exe shows), and a
// copy of qemu elsewhere is the same emulator only if it is the same file.
//
// Kept current without any timer and without reading /proc/sys/fs/binfmt_misc
// per question: an inotify watch on the directory hears every write to
// `register` and to an entry (the kernel reports each write to a file), and
// /proc/self/mountinfo polls POLLPRI on every mount or unmount (binfmt_misc
// mounted under the path after we started). Each question costs one poll(2)
// of those two descriptors (asked only when a caller's context is read
// anew, never on a cache hit; see bench/caller_miss_bench.cpp); only after
// an event is the directory listed, and the entries read again only when
// its (name, inode) list changed (every registration gets a new inode). A
// registration is reported before its write returns, so before any program
// it lets run can call us. The watch does not keep binfmt_misc from being
// unmounted. Without inotify (no instance left) every question lists.
// Disabled entries still count: a process the emulator already runs stays
// emulated whatever the entry's state.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "vsymfs/emulation.hpp"
#include "vsymfs/unique_fd.hpp"

namespace vsymfs::daemon {

inline constexpr const char* kBinfmtMiscDir = "/proc/sys/fs/binfmt_misc";

class BinfmtRegistry {
 public:
  explicit BinfmtRegistry(std::string dir = kBinfmtMiscDir);
  ~BinfmtRegistry();
  BinfmtRegistry(const BinfmtRegistry&) = delete;
  BinfmtRegistry& operator=(const BinfmtRegistry&) = delete;

  // The emulation of a process whose executable is the file (dev, ino), or
  // null when no registered entry names that file as its interpreter.
  std::shared_ptr<const Emulation> emulation_of(dev_t dev, ino_t ino);

  // The same for the calling process itself (/proc/self/exe): what a
  // client says about itself.
  std::shared_ptr<const Emulation> self();

  struct Stats {
    std::uint64_t reloads;     // times the entries were read (listing changed)
    std::uint64_t checks;      // times the directory was listed (after an event)
    std::size_t emulators;     // interpreter files known
  };
  Stats stats() const;

 private:
  using Listing = std::vector<std::pair<std::string, ino_t>>;
  bool changed();  // whether the registrations may have changed since the last listing
  void watch();    // (re)places the inotify watch on dir_
  bool list(Listing& out) const;
  void reload(const Listing& listing);

  std::string dir_;
  UniqueFd inotify_fd_;
  UniqueFd mounts_fd_;  // /proc/self/mountinfo: POLLPRI on mount table changes
  int watch_ = -1;
  mutable std::mutex mu_;
  bool loaded_ = false;
  Listing listing_;
  std::map<std::pair<dev_t, ino_t>, std::shared_ptr<const Emulation>> by_file_;
  std::uint64_t reloads_ = 0;
  std::uint64_t checks_ = 0;
};

}  // namespace vsymfs::daemon
