#include "client.hpp"

#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>

#include "paths.hpp"
#include "vsymfs/unique_fd.hpp"

namespace vsymfs::control {
namespace {

Error sys_error(int code, const std::string& what) { return make_error(code, what + ": " + std::strerror(code)); }

using Fd = vsymfs::UniqueFd;

using Clock = std::chrono::steady_clock;

// Waits for `events` until the deadline; ETIMEDOUT when it passes.
Result<void> wait_for(int fd, short events, Clock::time_point deadline) {
  for (;;) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
    if (left <= 0) return make_error(ETIMEDOUT, "the daemon did not answer in time");
    pollfd p{fd, events, 0};
    const int n = ::poll(&p, 1, static_cast<int>(left));
    if (n > 0) return {};
    if (n < 0 && errno != EINTR) return sys_error(errno, "poll");
  }
}

Result<void> send_all(int fd, std::string_view data, Clock::time_point deadline) {
  while (!data.empty()) {
    const ssize_t n = ::send(fd, data.data(), data.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n >= 0) {
      data.remove_prefix(static_cast<std::size_t>(n));
      continue;
    }
    if (errno == EINTR) continue;
    if (errno != EAGAIN) return sys_error(errno, "cannot send the request");
    if (auto ok = wait_for(fd, POLLOUT, deadline); !ok) return ok;
  }
  return {};
}

Result<void> recv_exact(int fd, char* buf, std::size_t len, Clock::time_point deadline) {
  while (len > 0) {
    const ssize_t n = ::recv(fd, buf, len, MSG_DONTWAIT);
    if (n > 0) {
      buf += n;
      len -= static_cast<std::size_t>(n);
      continue;
    }
    if (n == 0) return make_error(EPROTO, "the daemon closed the connection before replying in full");
    if (errno == EINTR) continue;
    if (errno != EAGAIN) return sys_error(errno, "cannot read the reply");
    if (auto ok = wait_for(fd, POLLIN, deadline); !ok) return ok;
  }
  return {};
}

}  // namespace

Result<std::string> find_socket(const std::string& path) {
  char buf[sizeof(sockaddr_un{}.sun_path) + 1];
  const ssize_t n = ::lgetxattr(path.c_str(), std::string(kXattrControl).c_str(), buf, sizeof buf - 1);
  if (n < 0) {
    const int err = errno;
    if (err == ENODATA || err == ENOTSUP)
      return make_error(err, path + " is not on a vsymfs mount (no " + std::string(kXattrControl) + ")");
    return sys_error(err, "cannot ask " + path + " for its control socket");
  }
  return std::string(buf, static_cast<std::size_t>(n));
}

Result<Reply> call(const std::string& socket_path, const Request& req, int timeout_ms) {
  auto payload = encode_request(req);
  if (!payload) return payload.error();
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (socket_path.empty() || socket_path.size() >= sizeof addr.sun_path)
    return make_error(ENAMETOOLONG, "bad control socket path '" + socket_path + "'");
  std::memcpy(addr.sun_path, socket_path.data(), socket_path.size());

  Fd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (fd.get() < 0) return sys_error(errno, "socket");
  if (::connect(fd.get(), reinterpret_cast<const sockaddr*>(&addr), sizeof addr) != 0) {
    const int err = errno;
    // Say what the two common failures mean, not just the errno text.
    if (err == ECONNREFUSED)
      return make_error(err, "no vsymfs daemon is listening on " + socket_path +
                                 " (a daemon that was killed leaves its socket behind; the next mount replaces it)");
    if (err == ENOENT)
      return make_error(err, "no control socket " + socket_path + " (is a vsymfs daemon serving this mount?)");
    return sys_error(err, "cannot connect to " + socket_path);
  }

  const auto deadline = Clock::now() + std::chrono::milliseconds(timeout_ms);
  if (auto ok = send_all(fd.get(), frame(*payload), deadline); !ok) return ok.error();
  unsigned char header[kFrameHeader];
  if (auto ok = recv_exact(fd.get(), reinterpret_cast<char*>(header), sizeof header, deadline); !ok)
    return ok.error();
  const std::uint32_t len = frame_length(header);
  if (len > kMaxReplySize) return make_error(EMSGSIZE, "the daemon's reply is larger than the limit");
  std::string body(len, '\0');
  if (auto ok = recv_exact(fd.get(), body.data(), body.size(), deadline); !ok) return ok.error();
  return decode_reply(body);
}

}  // namespace vsymfs::control
