#include "daemon/proc_events.hpp"

#include <linux/cn_proc.h>
#include <linux/connector.h>
#include <linux/netlink.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <string>

namespace vsymfs::daemon {

namespace {

Error sys_error(const char* what) {
  int e = errno;
  return make_error(e, std::string("process events connector: ") + what + ": " + std::strerror(e));
}

// The netlink macros (NLMSG_OK, NLMSG_DATA, ...) are C casts; the same
// arithmetic, spelled out.
constexpr std::size_t align4(std::size_t n) { return (n + 3) & ~std::size_t{3}; }
constexpr std::size_t kNlHdrLen = align4(sizeof(nlmsghdr));

// One pass over a received datagram.
template <class Fn>
void for_each_event(const char* buf, std::size_t len, Fn&& fn) {
  std::size_t off = 0;
  while (off + sizeof(nlmsghdr) <= len) {
    nlmsghdr nh;
    std::memcpy(&nh, buf + off, sizeof nh);
    if (nh.nlmsg_len < sizeof(nlmsghdr) || off + nh.nlmsg_len > len) return;
    const bool is_data = nh.nlmsg_type != NLMSG_NOOP && nh.nlmsg_type != NLMSG_ERROR;
    if (is_data && nh.nlmsg_len >= kNlHdrLen + sizeof(cn_msg) + sizeof(proc_event)) {
      cn_msg cn;
      std::memcpy(&cn, buf + off + kNlHdrLen, sizeof cn);
      if (cn.id.idx == CN_IDX_PROC && cn.id.val == CN_VAL_PROC) {
        proc_event ev;
        std::memcpy(&ev, buf + off + kNlHdrLen + sizeof(cn_msg), sizeof ev);
        fn(ev);
      }
    }
    off += align4(nh.nlmsg_len);
  }
}

}  // namespace

Result<std::unique_ptr<ProcEvents>> ProcEvents::open(std::chrono::milliseconds self_test_timeout) {
  // Without root the kernel refuses or stays silent; do not wait to find out.
  if (::geteuid() != 0) return make_error(EPERM, "process events connector: needs root");
  int fd = ::socket(PF_NETLINK, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, NETLINK_CONNECTOR);
  if (fd < 0) return sys_error("socket");
  std::unique_ptr<ProcEvents> ev(new ProcEvents(fd));

  // Room for bursts (a fork storm) between drains; overflowing is safe but
  // costs the whole cache. SO_RCVBUFFORCE needs CAP_NET_ADMIN, which the
  // connector needs anyway.
  int rcvbuf = 4 << 20;
  ::setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &rcvbuf, sizeof rcvbuf);

  sockaddr_nl sa{};
  sa.nl_family = AF_NETLINK;
  sa.nl_groups = CN_IDX_PROC;
  if (::bind(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0) return sys_error("bind");

  // The 4-byte form of the request: every kernel since 2.6.15 takes it (the
  // newer event filter is ignored by older kernels, which then send nothing).
  const std::uint32_t op = PROC_CN_MCAST_LISTEN;
  nlmsghdr nh{};
  nh.nlmsg_len = static_cast<std::uint32_t>(kNlHdrLen + sizeof(cn_msg) + sizeof op);
  nh.nlmsg_type = NLMSG_DONE;
  nh.nlmsg_pid = static_cast<std::uint32_t>(::getpid());
  cn_msg cn{};
  cn.id.idx = CN_IDX_PROC;
  cn.id.val = CN_VAL_PROC;
  cn.len = sizeof op;
  alignas(nlmsghdr) char req[kNlHdrLen + sizeof(cn_msg) + sizeof op]{};
  std::memcpy(req, &nh, sizeof nh);
  std::memcpy(req + kNlHdrLen, &cn, sizeof cn);
  std::memcpy(req + kNlHdrLen + sizeof cn, &op, sizeof op);
  if (::send(fd, req, sizeof req, 0) != static_cast<ssize_t>(sizeof req)) return sys_error("subscribe");

  // Self-test: a child's exit must arrive, with its pid as we know it.
  pid_t child = ::fork();
  if (child < 0) return sys_error("fork (self-test)");
  if (child == 0) ::_exit(0);
  ::waitpid(child, nullptr, 0);
  bool seen = false;
  const auto deadline = std::chrono::steady_clock::now() + self_test_timeout;
  while (!seen) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) break;
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, static_cast<int>(left.count())) <= 0) continue;
    ev->drain([&](pid_t pid) { seen = seen || pid == child; });
  }
  if (!seen)
    return make_error(ENOTSUP, "process events connector: no event for a child (not the initial pid/user namespace?)");
  return ev;
}

ProcEvents::~ProcEvents() = default;

bool ProcEvents::pending() const noexcept {
  pollfd p{fd_.get(), POLLIN, 0};
  int n;
  while ((n = ::poll(&p, 1, 0)) < 0 && errno == EINTR) {
  }
  // A failed poll answers nothing: say "pending" so the caller drains.
  return n != 0;
}

bool ProcEvents::drain(const std::function<void(pid_t)>& gone) {
  alignas(nlmsghdr) char buf[16384];
  for (;;) {
    sockaddr_nl from{};
    socklen_t from_len = sizeof from;
    ssize_t n = ::recvfrom(fd_.get(), buf, sizeof buf, MSG_DONTWAIT, reinterpret_cast<sockaddr*>(&from), &from_len);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) return true;
      return false;  // ENOBUFS: the kernel dropped events for us
    }
    if (n == 0) return true;
    if (from.nl_pid != 0) continue;  // only the kernel speaks for the connector
    for_each_event(buf, static_cast<std::size_t>(n), [&](const proc_event& ev) {
      switch (ev.what) {
        case proc_event::PROC_EVENT_EXEC:
          gone(ev.event_data.exec.process_pid);
          if (ev.event_data.exec.process_tgid != ev.event_data.exec.process_pid) gone(ev.event_data.exec.process_tgid);
          break;
        case proc_event::PROC_EVENT_EXIT:
          gone(ev.event_data.exit.process_pid);
          break;
        case proc_event::PROC_EVENT_FORK:
          // A new task holds this id now. Normally its exit was reported
          // already, but an exec from a non-leader thread hands the thread's
          // id back without an exit event for it.
          gone(ev.event_data.fork.child_pid);
          break;
        default:
          break;
      }
    });
  }
}

}  // namespace vsymfs::daemon
