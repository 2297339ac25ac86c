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
// Kept current without any timer: every question first lists the directory
// (one getdents, a few microseconds, asked only when a caller's context is
// read anew, never on a cache hit). The kernel gives every registration a
// new inode, so the list of (name, inode) changes exactly when an entry is
// added, removed or replaced; only then are the entries read again.
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

namespace vsymfs::daemon {

inline constexpr const char* kBinfmtMiscDir = "/proc/sys/fs/binfmt_misc";

class BinfmtRegistry {
 public:
  explicit BinfmtRegistry(std::string dir = kBinfmtMiscDir);

  // The emulation of a process whose executable is the file (dev, ino), or
  // null when no registered entry names that file as its interpreter.
  std::shared_ptr<const Emulation> emulation_of(dev_t dev, ino_t ino);

  // The same for the calling process itself (/proc/self/exe): what a
  // client says about itself.
  std::shared_ptr<const Emulation> self();

  struct Stats {
    std::uint64_t reloads;     // times the entries were read (listing changed)
    std::size_t emulators;     // interpreter files known
  };
  Stats stats() const;

 private:
  using Listing = std::vector<std::pair<std::string, ino_t>>;
  bool list(Listing& out) const;
  void reload(const Listing& listing);

  std::string dir_;
  mutable std::mutex mu_;
  bool loaded_ = false;
  Listing listing_;
  std::map<std::pair<dev_t, ino_t>, std::shared_ptr<const Emulation>> by_file_;
  std::uint64_t reloads_ = 0;
};

}  // namespace vsymfs::daemon
