// An owned file descriptor: closed when it goes out of scope.
#pragma once

#include <unistd.h>

#include <utility>

namespace vsymfs {

class UniqueFd {
 public:
  UniqueFd() noexcept = default;
  explicit UniqueFd(int fd) noexcept : fd_(fd) {}
  ~UniqueFd() { reset(); }
  UniqueFd(UniqueFd&& other) noexcept : fd_(other.release()) {}
  UniqueFd& operator=(UniqueFd&& other) noexcept {
    if (this != &other) reset(other.release());
    return *this;
  }
  UniqueFd(const UniqueFd&) = delete;
  UniqueFd& operator=(const UniqueFd&) = delete;

  int get() const noexcept { return fd_; }
  explicit operator bool() const noexcept { return fd_ >= 0; }
  // Gives up ownership without closing.
  int release() noexcept { return std::exchange(fd_, -1); }
  void reset(int fd = -1) noexcept {
    if (fd_ >= 0) ::close(fd_);
    fd_ = fd;
  }
  // Closes now and returns close(2)'s result (0, or -1 with errno set), for
  // the callers that report it (FLUSH, RELEASE); 0 when nothing is held.
  int close() noexcept {
    const int fd = release();
    return fd >= 0 ? ::close(fd) : 0;
  }

 private:
  int fd_ = -1;
};

// Closes a descriptor that cannot live in a UniqueFd: one held in an atomic
// (the lock-free fd cache slots, the root descriptor) and closed by whoever
// wins the exchange. Returns close(2)'s result. Async-signal-safe.
inline int close_fd(int fd) noexcept { return fd >= 0 ? ::close(fd) : 0; }

}  // namespace vsymfs
