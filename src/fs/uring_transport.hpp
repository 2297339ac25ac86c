// FUSE over io_uring (Linux 6.14+, CONFIG_FUSE_IO_URING): the kernel hands
// ordinary requests to the daemon, and takes the replies back, through
// io_uring commands on /dev/fuse instead of read(2) and writev(2). It keeps
// one queue per possible CPU and puts a caller's request on the queue of the
// CPU the caller runs on, so the request is served on that CPU.
//
// libfuse 3.14 predates it (3.18 has it, but not with custom I/O, which
// passthrough needs), so this drives the protocol itself, beside libfuse's
// /dev/fuse loop, through fuse_session_custom_io():
//   - the read hook sees INIT: whether the kernel offers io_uring;
//   - the writev hook adds FUSE_OVER_IO_URING to the INIT reply; once that
//     reply is written every queue registers its entries (the kernel moves
//     ordinary requests to the ring only when all have);
//   - a ring thread owns one entry of one queue and its own io_uring, pinned
//     to the queue's CPU. It lays a request out as a read of /dev/fuse would
//     have delivered it and hands it to libfuse's usual dispatch
//     (fuse_session_process_buf); the reply that libfuse then writes through
//     the writev hook is copied into the entry instead of /dev/fuse, and is
//     committed together with the fetch of the next request: one
//     io_uring_enter per request.
// INIT, FORGET, INTERRUPT and notifications keep using /dev/fuse (the kernel
// sends them there), so the libfuse loop keeps running and everything it
// replies, and every notification, still goes to /dev/fuse.
//
// A reply written by another thread than the ring thread that received the
// request (a handler that replies later) is found by its unique id among the
// entries in flight; the ring thread waits for it before it commits.
// An entry per thread means a slow request holds up only its own thread:
// the kernel gives the next request of that CPU to another idle entry of
// the queue, the one freed last first.
#pragma once

#define FUSE_USE_VERSION 314
#include <fuse3/fuse_lowlevel.h>

#include <sys/uio.h>

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "fs/options.hpp"
#include "vsymfs/result.hpp"
#include "vsymfs/unique_fd.hpp"

namespace vsymfs::fs {

class Passthrough;
class Filesystem;

class UringTransport {
 public:
  // Decided before the mount. automatic: io_uring when the kernel offers it
  // (enable_uring is Y) and io_uring works for this process, not with -s;
  // on: an error when it cannot be had; off: never.
  // `linger_us`: -o uring_linger (Linger, linger.hpp).
  static Result<std::unique_ptr<UringTransport>> create(UringMode mode, bool single_thread, unsigned linger_us = 20);
  ~UringTransport();
  UringTransport(const UringTransport&) = delete;
  UringTransport& operator=(const UringTransport&) = delete;

  // After fuse_session_mount, before the loop. When io_uring may be used,
  // installs this transport's I/O hooks, which call `pt`'s (may be null);
  // otherwise installs `pt`'s own hooks, if any. The session's userdata must
  // be `fs`, the Filesystem that owns `pt`; the ring threads answer READLINK
  // through it without libfuse (direct_replies.hpp).
  Result<void> install(fuse_session* se, Passthrough* pt, Filesystem* fs);

  // Ends the ring threads (after they commit what they hold). Call when the
  // session loop has returned, before anything the operations use goes
  // away. Idempotent.
  void stop();

  // For vsymctl status: "io_uring; ..." or "/dev/fuse (why)".
  std::string status() const;
  // Whether ordinary requests travel on the ring.
  bool active() const noexcept { return active_.load(std::memory_order_acquire); }

 private:
  struct Ring;
  enum class Phase { setup, go, stop };

  UringTransport(UringMode mode, std::string why_not, unsigned linger_us);

  static ssize_t read_hook(int fd, void* buf, size_t len, void* userdata);
  static ssize_t writev_hook(int fd, struct iovec* iov, int count, void* userdata);
  static ssize_t fill_entry(Ring& r, const struct iovec* iov, int count);
  ssize_t reply(int fd, struct iovec* iov, int count);
  bool start_rings(struct iovec& init_reply);
  void finish_start(int init_error);
  void refuse(const std::string& why);
  void serve(Ring& r);
  int prepare(Ring& r);
  int register_entry(Ring& r);
  void serve_request(Ring& r);
  Phase wait_phase_change();
  void report(std::size_t& counter);
  void stop_threads();

  // The ring entry whose request this thread is serving, if any.
  static thread_local Ring* tl_ring_;

  const UringMode mode_;
  const unsigned linger_us_;
  bool wanted_;  // io_uring may be asked for in INIT
  fuse_session* se_ = nullptr;
  Passthrough* pt_ = nullptr;
  Filesystem* fs_ = nullptr;
  int dev_fd_ = -1;
  UniqueFd stop_fd_;  // an eventfd each ring polls: written to end the threads
  std::atomic<bool> init_seen_{false};
  std::atomic<bool> kernel_offers_{false};
  std::atomic<std::uint64_t> init_unique_{0};
  std::atomic<bool> active_{false};
  std::atomic<bool> stopped_{false};
  bool must_exit_ = false;  // -o uring and io_uring could not be had: end the daemon
  std::size_t payload_sz_ = 0;

  std::vector<std::unique_ptr<Ring>> rings_;
  unsigned queues_ = 0;

  mutable std::mutex mu_;  // guards what follows; startup and status only
  std::condition_variable cv_;
  Phase phase_ = Phase::setup;
  std::size_t prepared_ = 0;    // rings that finished setting up (well or not)
  std::size_t registered_ = 0;  // rings that finished registering (well or not)
  std::string why_not_;         // why requests use /dev/fuse
};

}  // namespace vsymfs::fs
