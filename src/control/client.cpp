#include "control/client.hpp"

#include <poll.h>
#include <sys/auxv.h>
#include <sys/personality.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <cerrno>
#include <algorithm>
#include <chrono>
#include <cstring>
#include <functional>
#include <thread>

#include "daemon/binfmt_registry.hpp"
#include "control/paths.hpp"
#include "vsymfs/unique_fd.hpp"

namespace vsymfs::control {
namespace {

Error sys_error(int code, const std::string& what) { return make_error(code, what + ": " + std::strerror(code)); }

using Fd = vsymfs::UniqueFd;

using Clock = std::chrono::steady_clock;

// Waits for `events` until the deadline; ETIMEDOUT when it passes.
// Clock::time_point::max(): no deadline (a trace's stream).
Result<void> wait_for(int fd, short events, Clock::time_point deadline) {
  for (;;) {
    long long left = -1;
    if (deadline != Clock::time_point::max()) {
      left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
      if (left <= 0) return make_error(ETIMEDOUT, "the daemon did not answer in time");
    }
    pollfd p{fd, events, 0};
    const int n = ::poll(&p, 1, static_cast<int>(std::min<long long>(left, 1 << 30)));
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

namespace {

// Whether an old daemon refused the process fields it does not know.
bool refused_process_fields(const Reply& reply) {
  if (reply.error != EINVAL) return false;
  for (const char* key : {"environ", "secure", "compat", "emulated"})
    if (reply.message.rfind(std::string("unexpected field '") + key + "'", 0) == 0) return true;
  return false;
}

// One framed reply.
Result<Reply> read_reply(int fd, Clock::time_point deadline) {
  unsigned char header[kFrameHeader];
  if (auto ok = recv_exact(fd, reinterpret_cast<char*>(header), sizeof header, deadline); !ok) return ok.error();
  const std::uint32_t len = frame_length(header);
  if (len > kMaxReplySize) return make_error(EMSGSIZE, "the daemon's reply is larger than the limit");
  std::string body(len, '\0');
  if (auto ok = recv_exact(fd, body.data(), body.size(), deadline); !ok) return ok.error();
  return decode_reply(body);
}

// One connection, one request, one reply; `keep` gets the connection.
Result<Reply> call_once(const std::string& socket_path, const sockaddr_un& addr, const std::string& framed,
                        Clock::time_point deadline, Fd* keep = nullptr) {
  Fd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (fd.get() < 0) return sys_error(errno, "socket");
  // A daemon whose listen queue is full makes connect wait; not past the
  // deadline (for unix sockets connect waits at most SO_SNDTIMEO).
  const auto left = std::chrono::duration_cast<std::chrono::microseconds>(deadline - Clock::now()).count();
  if (left <= 0) return make_error(ETIMEDOUT, "the daemon did not answer in time");
  const timeval tv{static_cast<time_t>(left / 1000000), static_cast<suseconds_t>(left % 1000000)};
  (void)::setsockopt(fd.get(), SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  if (::connect(fd.get(), reinterpret_cast<const sockaddr*>(&addr), sizeof addr) != 0) {
    const int err = errno;
    // Say what the common failures mean, not just the errno text.
    if (err == ECONNREFUSED)
      return make_error(err, "no vsymfs daemon is listening on " + socket_path +
                                 " (a daemon that was killed leaves its socket behind; the next mount replaces it)");
    if (err == ENOENT)
      return make_error(err, "no control socket " + socket_path + " (is a vsymfs daemon serving this mount?)");
    if (err == EAGAIN) return make_error(ETIMEDOUT, "the daemon accepted no connection in time (" + socket_path + ")");
    return sys_error(err, "cannot connect to " + socket_path);
  }

  auto sent = send_all(fd.get(), framed, deadline);
  // A daemon that refuses the connection (too many of this uid's open)
  // replies and closes at once, maybe before the request is sent: its reply
  // is still there to read.
  if (!sent && sent.error().code != EPIPE && sent.error().code != ECONNRESET) return sent.error();
  unsigned char header[kFrameHeader];
  if (auto ok = recv_exact(fd.get(), reinterpret_cast<char*>(header), sizeof header, deadline); !ok)
    return sent ? ok.error() : sent.error();
  const std::uint32_t len = frame_length(header);
  if (len > kMaxReplySize) return make_error(EMSGSIZE, "the daemon's reply is larger than the limit");
  std::string body(len, '\0');
  if (auto ok = recv_exact(fd.get(), body.data(), body.size(), deadline); !ok) return ok.error();
  if (keep != nullptr) *keep = std::move(fd);
  return decode_reply(body);
}

}  // namespace

Result<Reply> call(const std::string& socket_path, const Request& req, int timeout_ms) {
  auto payload = encode_request(req);
  if (!payload) return payload.error();
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (socket_path.empty() || socket_path.size() >= sizeof addr.sun_path)
    return make_error(ENAMETOOLONG, "bad control socket path '" + socket_path + "'");
  std::memcpy(addr.sun_path, socket_path.data(), socket_path.size());

  const auto deadline = Clock::now() + std::chrono::milliseconds(timeout_ms);
  auto pause = std::chrono::milliseconds(10);
  bool process_fields = req.has_environ || req.secure || req.compat32 || !req.emulated_machine.empty();
  for (;;) {
    auto reply = call_once(socket_path, addr, frame(*payload), deadline);
    if (!reply) return reply;
    if (reply->error == EAGAIN && Clock::now() + pause < deadline) {
      std::this_thread::sleep_for(pause);
      pause = std::min(pause * 2, std::chrono::milliseconds(250));
      continue;
    }
    if (process_fields && refused_process_fields(*reply)) {
      Request plain = req;
      plain.has_environ = false;
      plain.environ.clear();
      plain.secure = plain.compat32 = false;
      plain.emulated_machine.clear();
      plain.emulator.clear();
      plain.binfmt_entry.clear();
      payload = encode_request(plain);
      if (!payload) return payload.error();
      process_fields = false;
      continue;
    }
    return reply;
  }
}

Result<Reply> stream(const std::string& socket_path, const Request& req,
                     const std::function<bool(const Reply&)>& on_record, int timeout_ms) {
  auto payload = encode_request(req);
  if (!payload) return payload.error();
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (socket_path.empty() || socket_path.size() >= sizeof addr.sun_path)
    return make_error(ENAMETOOLONG, "bad control socket path '" + socket_path + "'");
  std::memcpy(addr.sun_path, socket_path.data(), socket_path.size());
  const auto deadline = Clock::now() + std::chrono::milliseconds(timeout_ms);
  auto pause = std::chrono::milliseconds(10);
  Fd fd;
  for (;;) {
    auto first = call_once(socket_path, addr, frame(*payload), deadline, &fd);
    if (!first) return first;
    if (first->error == EAGAIN && Clock::now() + pause < deadline) {
      std::this_thread::sleep_for(pause);
      pause = std::min(pause * 2, std::chrono::milliseconds(250));
      continue;
    }
    if (!first->ok()) return first;
    if (!on_record(*first)) return Reply{};
    break;
  }
  for (;;) {
    auto record = read_reply(fd.get(), Clock::time_point::max());
    if (!record) {
      if (record.error().code == EPROTO && record.error().message.find("closed the connection") != std::string::npos)
        return make_error(ECONNRESET, "the daemon ended the trace (it stopped, or gave the slot to another user)");
      return record.error();
    }
    if (!record->ok()) return record;
    if (!on_record(*record)) return Reply{};
  }
}

void describe_self(Request& req) {
  req.secure = ::getauxval(AT_SECURE) != 0 || ::getuid() != ::geteuid() || ::getgid() != ::getegid();
  const int persona = ::personality(0xffffffff);
  req.compat32 = sizeof(void*) == 4 || (persona != -1 && (persona & PER_MASK) == PER_LINUX32);
  // A client of another architecture (run by qemu-user through binfmt_misc)
  // says so, as the daemon would find for it on a FUSE request.
  req.emulated_machine.clear();
  req.emulator.clear();
  req.binfmt_entry.clear();
  if (auto em = daemon::BinfmtRegistry().self()) {
    req.emulated_machine = em->machine;
    req.emulator = em->emul;
    req.binfmt_entry = em->entry;
  }
  req.environ.clear();
  // A set-id vsymctl's environment is its invoker's: the daemon would treat
  // a secure process so, and so does it here.
  req.has_environ = !req.secure;
  if (req.secure) return;
  std::size_t total = 0;
  for (char** e = ::environ; e != nullptr && *e != nullptr; ++e) {
    const std::string_view entry(*e);
    const std::size_t eq = entry.find('=');
    if (eq == std::string_view::npos || eq == 0) continue;  // no variable: nothing can match it
    if (total + entry.size() + 1 > kMaxEnvironSize) break;
    total += entry.size() + 1;
    req.environ.emplace_back(entry);
  }
}

}  // namespace vsymfs::control
