// Open directory handles (OPENDIR to RELEASEDIR) and who owns them.
//
// A handle's address travels to the kernel as fi->fh, so nothing in the
// daemon would point at it any more. The kernel sends RELEASEDIR
// asynchronously after the last close; an unmount that comes first (a
// SIGTERM just after closedir, a lazy unmount with directories still open)
// means it never comes. OpenDirs keeps every live handle on a list, so the
// ones the kernel never released are closed when the mount's Filesystem
// goes away rather than left for the process exit.
#pragma once

#include <dirent.h>
#include <sys/types.h>

#include <memory>
#include <mutex>

namespace vsymfs::fs {

struct DirHandle {
  DIR* dir = nullptr;
  off_t offset = 0;                // telldir() position of `entry`, or of the next entry when entry is null
  struct dirent* entry = nullptr;  // read but not yet sent (the reply buffer was full)

  DirHandle() = default;
  DirHandle(const DirHandle&) = delete;
  DirHandle& operator=(const DirHandle&) = delete;
  ~DirHandle() {
    if (dir) ::closedir(dir);
  }

 private:
  friend class OpenDirs;
  DirHandle* prev_ = nullptr;
  DirHandle* next_ = nullptr;
};

class OpenDirs {
 public:
  OpenDirs() = default;
  OpenDirs(const OpenDirs&) = delete;
  OpenDirs& operator=(const OpenDirs&) = delete;
  ~OpenDirs();

  // Takes ownership; the handle lives until close() or ~OpenDirs.
  DirHandle* adopt(std::unique_ptr<DirHandle> h);
  // Unlinks and destroys a handle adopt() returned.
  void close(DirHandle* h);
  std::size_t size() const;

 private:
  mutable std::mutex mu_;
  DirHandle* head_ = nullptr;
  std::size_t count_ = 0;
};

}  // namespace vsymfs::fs
