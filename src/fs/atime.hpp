// -o noatime and -o nodiratime. The daemon reads SOURCE on the callers'
// behalf, and with passthrough the kernel reads it through the file the
// daemon registered: SOURCE's own mount decides whether those reads stamp
// the atime, whatever the vsymfs mount says. So with noatime (or
// nodiratime, for directories) the daemon reopens what a caller opened on a
// private clone of SOURCE's mount that has noatime set, and uses that
// descriptor instead: its own reads, readdir, and the backing file's reads
// then leave the atime alone. The caller's open, as the caller, has
// already checked every permission; the reopen (by file handle, as the
// daemon) only changes which mount the descriptor is on.
#pragma once

#include <string>

#include "vsymfs/result.hpp"
#include "vsymfs/unique_fd.hpp"

namespace vsymfs::fs {

class QuietAtime {
 public:
  // A clone of the mount SOURCE (`source`) is on, attached nowhere, with
  // noatime. Needs CAP_SYS_ADMIN (open_tree, mount_setattr) and
  // CAP_DAC_READ_SEARCH (open_by_handle_at).
  static Result<QuietAtime> open(const std::string& source);
  QuietAtime(QuietAtime&& o) noexcept : root_fd_(std::move(o.root_fd_)), dev_(o.dev_) {}
  QuietAtime& operator=(QuietAtime&&) = delete;
  QuietAtime(const QuietAtime&) = delete;
  QuietAtime& operator=(const QuietAtime&) = delete;
  ~QuietAtime();

  // `fd`'s file opened again on the clone with `flags` (access mode and
  // status flags; no O_CREAT, O_EXCL or O_TRUNC), or -1 when it cannot be
  // (a file on another file system inside SOURCE, a file system without
  // file handles): then the caller keeps `fd`.
  int reopen(int fd, int flags) const;

 private:
  QuietAtime(UniqueFd root_fd, unsigned long dev) : root_fd_(std::move(root_fd)), dev_(dev) {}
  UniqueFd root_fd_;
  unsigned long dev_ = 0;
};

}  // namespace vsymfs::fs
