// The daemon's control server: one thread, a poll loop over non-blocking
// connections, one request per connection. Every connection has a deadline
// and an idle timeout, and one uid holds at most kMaxConnectionsPerUid of
// the slots, so a client that connects and stalls costs its own user a slot
// for a few seconds and never blocks anyone else. Requests are decoded
// strictly (protocol.hpp) and authorised by SO_PEERCRED, never by anything
// the client says. explain and universe use the environment the client sent
// about itself, never /proc/<pid>: once the client has exited, its pid may
// belong to another user's process.
#include "control/server.hpp"

#include <fcntl.h>
#include <linux/openat2.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <ctime>
#include <exception>
#include <fstream>
#include <sstream>
#include <thread>
#include <unordered_map>
#include <vector>

#include <spdlog/spdlog.h>

#include "daemon/identity.hpp"
#include "control/protocol.hpp"
#include "control/store.hpp"
#include "vsymfs/emulation.hpp"
#include "daemon/trace_hub.hpp"
#include "control/trace_wire.hpp"
#include "vsymfs/resolver.hpp"
#include "vsymfs/unique_fd.hpp"

namespace vsymfs::control {
namespace {

using Clock = std::chrono::steady_clock;

// Connections taken from the listen queue per wakeup: a flood of connects
// must not keep the loop from serving the connections it has.
constexpr int kMaxAcceptsPerWake = 128;
// A refusal is logged at most this often (a flood must not flood the log).
constexpr auto kRefusalLogInterval = std::chrono::seconds(10);

Error sys_error(int code, const std::string& what) { return make_error(code, what + ": " + std::strerror(code)); }

// Who administers this mount: root, and the user the daemon runs as (an
// unprivileged user's own mount is theirs to configure).
bool is_admin(const ucred& peer) noexcept { return peer.uid == 0 || peer.uid == ::geteuid(); }

struct Connection {
  UniqueFd fd;
  ucred peer{};
  Clock::time_point accepted;
  Clock::time_point last_active;  // accepted, or the last byte received or sent
  std::string in;                 // frame header + payload received so far
  std::string out;                // the framed reply, once there is one
  std::size_t sent = 0;
  // A trace (after its request): the stream's source, and how many of its
  // dropped events the stream has reported.
  daemon::TraceHub::Subscription trace{};
  std::uint64_t trace_dropped_reported = 0;
};

// Records taken from a trace's queue per write: a stream catches up in
// batches without one reader holding the thread for long.
constexpr std::size_t kTraceBatch = 64;

// The supplementary groups of a socket's peer when it connected, from the
// kernel; only the primary group if the kernel cannot say.
std::vector<gid_t> peer_groups(int fd, gid_t gid) {
  std::vector<gid_t> groups(32);
  for (int tries = 0; tries < 4; ++tries) {
    auto len = static_cast<socklen_t>(groups.size() * sizeof(gid_t));
    if (::getsockopt(fd, SOL_SOCKET, SO_PEERGROUPS, groups.data(), &len) == 0) {
      groups.resize(len / sizeof(gid_t));
      return groups;
    }
    if (errno != ERANGE || len <= groups.size() * sizeof(gid_t)) break;
    groups.resize(len / sizeof(gid_t));
  }
  return {gid};
}

// Replies to a connection that gets no slot, and closes it. The reply is
// small and the socket new, so a non-blocking send takes it whole.
void refuse(int fd, const Error& e) {
  const std::string bytes = frame(encode_reply(Reply::failure(e)));
  (void)::send(fd, bytes.data(), bytes.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
  UniqueFd(fd).reset();
}

}  // namespace

struct Server::Impl {
  daemon::MountState& state;
  daemon::LinkService& links;
  daemon::CallerContexts& contexts;
  std::string socket_path;
  ServerOptions opts;
  StateFile store;
  UniqueFd listen_fd;
  UniqueFd wake_fd;
  UniqueFd trace_fd;  // eventfd: a trace has events waiting (TraceHub)
  UniqueFd source_fd;
  dev_t socket_dev = 0;
  ino_t socket_ino = 0;
  bool socket_named_after_mountpoint = false;  // the default path (paths.hpp), not -o socket=
  std::vector<Connection> conns;
  Clock::time_point accept_paused_until{};
  // Only the server thread touches these (status is served there too).
  std::uint64_t refused = 0;    // connections refused for want of a slot
  std::uint64_t evicted = 0;    // connections closed to make room for another uid's
  std::uint64_t timed_out = 0;  // connections closed at their deadline or idle timeout
  Clock::time_point refusal_logged{};
  std::thread thread;

  Impl(daemon::MountState& s, daemon::LinkService& l, daemon::CallerContexts& c, std::string sock,
       ServerOptions o, std::string state_path)
      : state(s), links(l), contexts(c), socket_path(std::move(sock)), opts(std::move(o)),
        store(std::move(state_path)) {}

  ~Impl() {
    links.tracer().set_wake_fd(-1);
    for (Connection& c : conns) c.fd.reset();
    conns.clear();  // ends the traces
    trace_fd.reset();
    if (listen_fd) {
      listen_fd.reset();
      // Remove the socket only if it is still ours (a second daemon may have
      // replaced a path we thought stale).
      struct stat st {};
      if (::lstat(socket_path.c_str(), &st) == 0 && st.st_dev == socket_dev && st.st_ino == socket_ino)
        ::unlink(socket_path.c_str());
    }
    wake_fd.reset();
    source_fd.reset();
  }

  Result<void> bind_socket();
  void loop();
  void accept_new();
  void admit(int fd, const ucred& peer);
  void log_refusal(const std::string& why);
  Clock::time_point deadline(const Connection& c) const {
    // A trace is meant to stay open and quiet; it still holds its uid's slot.
    if (c.trace) return Clock::time_point::max();
    return std::min(c.accepted + opts.connection_deadline, c.last_active + opts.idle_timeout);
  }
  // Returns false when the connection is finished (closed by the caller).
  bool on_readable(Connection& c);
  bool on_writable(Connection& c);
  bool on_trace_readable(Connection& c);
  bool refill(Connection& c);
  Reply start_trace(Request& req, Connection& c);
  void respond(Connection& c, const Reply& reply);
  Reply handle(Request& req, const Connection& c);
  std::shared_ptr<const Caller> peer_caller(Request& req, const Connection& c);

  Reply do_set(const Request& req, const ucred& peer);
  Reply do_unset(const Request& req, const ucred& peer);
  Reply do_list(const Request& req, const ucred& peer);
  Reply do_explain(Request& req, const Connection& c);
  Reply do_reload(const ucred& peer);
  Reply do_universe(Request& req, const Connection& c);
  Reply do_status();

  std::shared_ptr<const RuntimeVars> runtime() const {
    auto rt = state.runtime();
    return rt ? rt : std::make_shared<const RuntimeVars>();
  }
  Reply publish(Result<std::shared_ptr<const RuntimeVars>> next, const char* what, const Request& req,
                const ucred& peer);
};

Result<void> Server::Impl::bind_socket() {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (socket_path.empty() || socket_path.size() >= sizeof addr.sun_path)
    return make_error(ENAMETOOLONG, "control socket path '" + socket_path + "' does not fit in a socket address");
  std::memcpy(addr.sun_path, socket_path.data(), socket_path.size());
  if (auto ok = ensure_directory(parent_directory(socket_path)); !ok) return ok;

  listen_fd.reset(::socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  if (!listen_fd) return sys_error(errno, "socket");
  // A socket file left by a daemon that died is replaced; one that answers
  // belongs to a live daemon, and stealing it would orphan that mount.
  // Except the socket named after our mountpoint when no vsymfs is mounted
  // there: its daemon has left the mount and is on its way out (umount
  // returns before the daemon has finished, which can take long: the
  // kernel's FORGETs after the unmount close the last descriptor of a
  // removed file, and a large fallocated one takes a while to free). A
  // remount must not wait for that; the old daemon removes the socket at
  // exit only while it is still its own.
  struct stat st {};
  if (::lstat(socket_path.c_str(), &st) == 0) {
    if (!S_ISSOCK(st.st_mode)) return make_error(EEXIST, socket_path + " exists and is not a socket");
    UniqueFd probe(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    const bool live = probe && ::connect(probe.get(), reinterpret_cast<const sockaddr*>(&addr), sizeof addr) == 0;
    probe.reset();
    if (live) {
      const std::string& mp = state.config().mountpoint;
      if (!socket_named_after_mountpoint) return make_error(EADDRINUSE, socket_path + " is in use by another daemon");
      std::ifstream in("/proc/self/mountinfo");
      std::stringstream mi;
      mi << in.rdbuf();
      if (!in || has_mount_at(mi.str(), mp, "fuse.vsymfs"))
        return make_error(EADDRINUSE, socket_path + " is in use by another daemon");
      spdlog::warn("control: {} is held by a daemon that has left {} and is still exiting; taking the socket over",
                   socket_path, mp);
    }
    ::unlink(socket_path.c_str());
  }
  if (::bind(listen_fd.get(), reinterpret_cast<const sockaddr*>(&addr), sizeof addr) != 0)
    return sys_error(errno, "cannot bind " + socket_path);
  // Anyone may connect; what they may do is decided per request by their
  // kernel-reported credentials.
  if (::chmod(socket_path.c_str(), 0666) != 0) return sys_error(errno, "cannot chmod " + socket_path);
  if (::lstat(socket_path.c_str(), &st) == 0) {
    socket_dev = st.st_dev;
    socket_ino = st.st_ino;
  }
  if (::listen(listen_fd.get(), 64) != 0) return sys_error(errno, "cannot listen on " + socket_path);
  return {};
}

void Server::Impl::loop() {
  std::vector<pollfd> fds;
  for (;;) {
    fds.clear();
    fds.push_back({wake_fd.get(), POLLIN, 0});
    // Always accepting (unless out of descriptors): who gets a slot is
    // decided per uid once the kernel has told us the peer's (admit).
    const bool paused = Clock::now() < accept_paused_until;
    fds.push_back({listen_fd.get(), static_cast<short>(paused ? 0 : POLLIN), 0});
    fds.push_back({trace_fd.get(), POLLIN, 0});
    auto next_deadline = paused ? accept_paused_until : Clock::time_point::max();
    for (const Connection& c : conns) {
      short events = static_cast<short>(c.out.empty() ? POLLIN : POLLOUT);
      // A trace listens for its reader closing, and writes while it has
      // something unsent.
      if (c.trace) events = static_cast<short>(POLLIN | (c.sent < c.out.size() ? POLLOUT : 0));
      fds.push_back({c.fd.get(), events, 0});
      next_deadline = std::min(next_deadline, deadline(c));
    }
    int timeout = -1;
    if (next_deadline != Clock::time_point::max()) {
      const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(next_deadline - Clock::now()).count();
      timeout = static_cast<int>(std::clamp<long long>(ms + 1, 0, 60000));
    }
    const int n = ::poll(fds.data(), fds.size(), timeout);
    if (n < 0 && errno != EINTR) {
      spdlog::error("control server: poll failed: {}", std::strerror(errno));
      return;
    }
    if (fds[0].revents != 0) return;  // shutdown

    // Traces with events waiting: each idle one takes its next batch.
    bool traced = false;
    if (n > 0 && (fds[2].revents & POLLIN)) {
      std::uint64_t count = 0;
      (void)!::read(trace_fd.get(), &count, sizeof count);
      traced = true;
    }
    // Connections first (fds[3..] match conns as they were before accepting).
    const auto now = Clock::now();
    // In place: a trace starting counts the traces its uid holds in conns.
    for (std::size_t i = 0; i < conns.size(); ++i) {
      Connection& c = conns[i];
      const short rev = n > 0 ? fds[i + 3].revents : 0;
      bool alive = true;
      if (rev & (POLLERR | POLLNVAL)) {
        alive = false;
      } else if (c.trace) {
        if (rev & (POLLIN | POLLHUP)) alive = on_trace_readable(c);
        if (alive && ((rev & POLLOUT) || (traced && c.sent == c.out.size()))) alive = on_writable(c);
      } else if (now >= deadline(c)) {
        alive = false;  // a stalled or dribbling client loses its slot
        ++timed_out;
      } else if ((rev & (POLLIN | POLLHUP)) && c.out.empty()) {
        alive = on_readable(c);
      } else if (rev & POLLOUT) {
        alive = on_writable(c);
      }
      if (!alive) {
        c.fd.reset();
        c.trace.reset();
      }
    }
    std::erase_if(conns, [](const Connection& c) { return !c.fd; });
    if (n > 0 && (fds[1].revents & POLLIN)) accept_new();
  }
}

void Server::Impl::accept_new() {
  for (int i = 0; i < kMaxAcceptsPerWake; ++i) {
    const int fd = ::accept4(listen_fd.get(), nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno == EMFILE || errno == ENFILE) {
        // Out of descriptors: the pending connection stays readable, so
        // polling again at once would spin. Retry shortly.
        accept_paused_until = Clock::now() + std::chrono::milliseconds(100);
        spdlog::warn("control server: accept failed: {}", std::strerror(errno));
      } else if (errno != EAGAIN && errno != EINTR && errno != ECONNABORTED) {
        spdlog::warn("control server: accept failed: {}", std::strerror(errno));
      }
      return;
    }
    ucred peer{};
    socklen_t len = sizeof peer;
    if (::getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &peer, &len) != 0) {
      UniqueFd(fd).reset();
      continue;
    }
    admit(fd, peer);
  }
}

// Gives the new connection a slot, or refuses it. One uid holds at most
// kMaxConnectionsPerUid slots. When every slot is taken, the uid with the
// most connections gives up its oldest, but only to a uid that holds fewer:
// a user with a few uids (subordinate ids) cannot starve a user with one.
void Server::Impl::admit(int fd, const ucred& peer) {
  std::unordered_map<uid_t, std::size_t> per_uid;
  for (const Connection& c : conns) ++per_uid[c.peer.uid];
  const std::size_t mine = per_uid.contains(peer.uid) ? per_uid[peer.uid] : 0;
  if (mine >= kMaxConnectionsPerUid) {
    ++refused;
    log_refusal("uid " + std::to_string(peer.uid) + " has " + std::to_string(mine) + " connections open");
    refuse(fd, make_error(EAGAIN, "too many control connections of uid " + std::to_string(peer.uid) +
                                      " are open (at most " + std::to_string(kMaxConnectionsPerUid) +
                                      " at a time); try again"));
    return;
  }
  if (conns.size() >= kMaxConnections) {
    std::size_t most = 0;
    for (const auto& [uid, n] : per_uid) most = std::max(most, n);
    if (most <= mine) {
      ++refused;
      log_refusal("all " + std::to_string(kMaxConnections) + " connections are taken");
      refuse(fd, make_error(EAGAIN, "the daemon has too many control connections open; try again"));
      return;
    }
    // conns is in order of acceptance: the oldest connection of a uid that
    // holds the most.
    const auto oldest = std::find_if(conns.begin(), conns.end(),
                                     [&](const Connection& c) { return per_uid[c.peer.uid] == most; });
    oldest->fd.reset();
    conns.erase(oldest);
    ++evicted;
  }
  Connection c;
  c.fd.reset(fd);
  c.peer = peer;
  c.accepted = c.last_active = Clock::now();
  conns.push_back(std::move(c));
}

void Server::Impl::log_refusal(const std::string& why) {
  const auto now = Clock::now();
  if (refusal_logged != Clock::time_point{} && now - refusal_logged < kRefusalLogInterval) return;
  refusal_logged = now;
  spdlog::warn("control server: refusing connections: {} ({} refused so far)", why, refused);
}

bool Server::Impl::on_readable(Connection& c) {
  char buf[4096];
  for (;;) {
    // Never read past the end of this one request.
    std::size_t want = kFrameHeader;
    if (c.in.size() >= kFrameHeader) {
      unsigned char header[kFrameHeader];
      std::memcpy(header, c.in.data(), kFrameHeader);
      const std::uint32_t len = frame_length(header);
      if (len <= kMaxRequestSize && c.in.size() == kFrameHeader) c.in.reserve(kFrameHeader + len);
      if (len > kMaxRequestSize) {
        respond(c, Reply::failure(make_error(EMSGSIZE, "request of " + std::to_string(len) +
                                                           " bytes exceeds the limit of " +
                                                           std::to_string(kMaxRequestSize))));
        return on_writable(c);
      }
      want = kFrameHeader + len;
    }
    if (c.in.size() >= kFrameHeader && c.in.size() == want) {
      auto req = decode_request(std::string_view(c.in).substr(kFrameHeader));
      Reply reply;
      if (!req) {
        reply = Reply::failure(req.error());
      } else if (req->op == Op::Trace) {
        reply = start_trace(*req, c);  // on success the connection becomes the stream
      } else {
        try {
          reply = handle(*req, c);
        } catch (const std::exception& e) {
          // Nothing may escape the server thread; the state is unchanged
          // because every change is built aside and published last.
          reply = Reply::failure(make_error(EIO, std::string("internal error: ") + e.what()));
        }
      }
      std::string().swap(c.in);  // the request is done with; only the reply stays
      respond(c, reply);
      return on_writable(c);
    }
    const ssize_t n = ::recv(c.fd.get(), buf, std::min(sizeof buf, want - c.in.size()), 0);
    if (n > 0) {
      c.in.append(buf, static_cast<std::size_t>(n));
      c.last_active = Clock::now();
      continue;
    }
    if (n == 0) return false;  // closed before a whole request arrived: nothing to answer
    return errno == EAGAIN || errno == EINTR;
  }
}

bool Server::Impl::on_writable(Connection& c) {
  for (;;) {
    while (c.sent < c.out.size()) {
      const ssize_t n = ::send(c.fd.get(), c.out.data() + c.sent, c.out.size() - c.sent, MSG_NOSIGNAL);
      if (n < 0) return errno == EAGAIN || errno == EINTR;
      c.sent += static_cast<std::size_t>(n);
      c.last_active = Clock::now();
    }
    if (!c.trace) return false;  // reply sent in full: one request per connection
    if (!refill(c)) return true;  // the stream waits for its next events
  }
}

// A trace's reader has nothing to say after its request: bytes are read and
// ignored, and its end of the connection closing ends the trace.
bool Server::Impl::on_trace_readable(Connection& c) {
  char buf[512];
  for (;;) {
    const ssize_t n = ::recv(c.fd.get(), buf, sizeof buf, 0);
    if (n > 0) continue;
    if (n == 0) return false;
    return errno == EAGAIN || errno == EINTR;
  }
}

// The trace's next records (its dropped events first, then up to a batch of
// events) into c.out. False when there is nothing to send.
bool Server::Impl::refill(Connection& c) {
  std::vector<std::shared_ptr<const TraceEvent>> events;
  std::uint64_t dropped = 0;
  c.trace->take(events, kTraceBatch, dropped);
  c.out.clear();
  c.sent = 0;
  if (dropped > c.trace_dropped_reported) {
    c.out += frame(encode_reply(trace_dropped(dropped - c.trace_dropped_reported, dropped)));
    c.trace_dropped_reported = dropped;
  }
  for (const auto& e : events) {
    std::string payload = encode_reply(trace_event(*e));
    if (payload.size() > kMaxReplySize) continue;  // cannot happen: its fields are each < PATH_MAX
    c.out += frame(payload);
  }
  return !c.out.empty();
}

Reply Server::Impl::start_trace(Request& req, Connection& c) {
  std::size_t mine = 0;
  for (const Connection& other : conns)
    if (other.trace && other.peer.uid == c.peer.uid) ++mine;
  if (mine >= kMaxTracesPerUid)
    return Reply::failure(make_error(EUSERS, "uid " + std::to_string(c.peer.uid) + " has " + std::to_string(mine) +
                                                 " traces open already (at most " +
                                                 std::to_string(kMaxTracesPerUid) + ")"));
  const bool all = is_admin(c.peer);
  if (!all && req.uid && *req.uid != c.peer.uid)
    return Reply::failure(make_error(EPERM, "only root or the mount's owner may trace another user's requests"));
  TraceFilter f;
  const std::string& mp = state.config().mountpoint;
  if (req.prefix.empty() || req.prefix.front() != '/') {
    f.prefix = normalize_trace_path(req.prefix);  // inside the filesystem, as explain's dir
  } else if (req.prefix == mp) {
    f.prefix.clear();
  } else if (req.prefix.size() > mp.size() && req.prefix.compare(0, mp.size(), mp) == 0 &&
             (mp == "/" || req.prefix[mp.size()] == '/')) {
    f.prefix = normalize_trace_path(req.prefix.substr(mp.size()));
  } else {
    return Reply::failure(make_error(EXDEV, req.prefix + " is not inside this mount (" + mp + ")"));
  }
  if (req.uid) f.uid = static_cast<uid_t>(*req.uid);
  if (req.pid) f.pid = static_cast<pid_t>(*req.pid);
  if (!all) f.viewer_only = c.peer.uid;
  c.trace = links.tracer().subscribe(std::move(f));
  spdlog::info("control: uid {} traces expansions ({})", c.peer.uid, all ? "every caller" : "its own");
  return trace_started(all);
}

void Server::Impl::respond(Connection& c, const Reply& reply) {
  std::string payload = encode_reply(reply);
  if (payload.size() > kMaxReplySize)
    payload = encode_reply(Reply::failure(make_error(EMSGSIZE, "reply too large")));
  c.out = frame(payload);
  c.sent = 0;
}

Reply Server::Impl::handle(Request& req, const Connection& c) {
  switch (req.op) {
    case Op::Set: return do_set(req, c.peer);
    case Op::Unset: return do_unset(req, c.peer);
    case Op::List: return do_list(req, c.peer);
    case Op::Explain: return do_explain(req, c);
    case Op::Reload: return do_reload(c.peer);
    case Op::Universe: return do_universe(req, c);
    case Op::Status: return do_status();
    case Op::Trace: break;  // on_readable starts traces (the connection changes)
  }
  return Reply::failure(make_error(EINVAL, "unknown operation"));
}

Reply Server::Impl::publish(Result<std::shared_ptr<const RuntimeVars>> next, const char* what, const Request& req,
                            const ucred& peer) {
  if (!next) return Reply::failure(next.error());
  // Durable first, visible second: an acknowledged change survives a crash.
  if (auto saved = store.save(**next); !saved) {
    spdlog::error("control: cannot persist run-time values: {}", saved.error().message);
    return Reply::failure(saved.error());
  }
  state.publish_runtime(std::move(next.value()));
  spdlog::info("control: uid {} {} {} ({} scope)", peer.uid, what, req.name, to_string(req.scope));
  return Reply{};
}

Reply Server::Impl::do_set(const Request& req, const ucred& peer) {
  const bool system = req.scope == ScopeArg::System;
  if (system && !is_admin(peer))
    return Reply::failure(make_error(EPERM, "only root or the mount's owner may change the system scope"));
  return publish(with_set(*runtime(), system, peer.uid, req.name, req.value), "set", req, peer);
}

Reply Server::Impl::do_unset(const Request& req, const ucred& peer) {
  const bool system = req.scope == ScopeArg::System;
  if (system && !is_admin(peer))
    return Reply::failure(make_error(EPERM, "only root or the mount's owner may change the system scope"));
  return publish(with_unset(*runtime(), system, peer.uid, req.name), "unset", req, peer);
}

Reply Server::Impl::do_list(const Request& req, const ucred& peer) {
  const auto rt = runtime();
  Reply reply;
  auto add_sorted = [&](const char* scope, const VarMap& table) {
    std::vector<const std::pair<const std::string, std::string>*> entries;
    for (const auto& kv : table) entries.push_back(&kv);
    std::sort(entries.begin(), entries.end(), [](auto* a, auto* b) { return a->first < b->first; });
    for (const auto* kv : entries) reply.add(scope, kv->first + "=" + kv->second);
  };
  // A user sees only their own user scope: other users' values are theirs.
  if (req.scope != ScopeArg::System)
    if (auto it = rt->users.find(peer.uid); it != rt->users.end()) add_sorted("user", it->second);
  if (req.scope != ScopeArg::User) add_sorted("system", rt->system);
  return reply;
}

// The client as it connected: its ids and groups from the kernel, its
// environment (and secure-execution mode, 32-bit personality, emulation by
// qemu-user) as it says.
// Nothing is read from /proc/<pid>: the client may have exited, and its pid
// may by now belong to another user's process. The environment is the
// client's word about itself, answered to itself only; a client that sent
// none (an older vsymctl, a set-id one) gets no process scope, as a FUSE
// caller whose environment cannot be read, and so does a client outside
// our pid namespace (pid 0), as for its links.
std::shared_ptr<const Caller> Server::Impl::peer_caller(Request& req, const Connection& c) {
  Caller who;
  who.pid = c.peer.pid;
  who.uid = who.ruid = c.peer.uid;  // the kernel reports effective ids only
  who.gid = who.rgid = c.peer.gid;
  who.groups = peer_groups(c.fd.get(), c.peer.gid);
  who.secure = req.secure;
  who.compat32 = req.compat32;
  if (const auto machine = elf_machine_named(req.emulated_machine); machine && !req.emulated_machine.empty())
    who.emulation = std::make_shared<const Emulation>(make_emulation(*machine, req.emulator, req.binfmt_entry));
  who.environ_known = req.has_environ && !req.secure;
  if (who.environ_known) who.environ = std::move(req.environ);
  return contexts.described(std::move(who));
}

Reply Server::Impl::do_explain(Request& req, const Connection& c) {
  const std::string& mp = state.config().mountpoint;
  std::string rel;
  if (!req.dir.empty() && req.dir.front() != '/') {
    rel = req.dir;  // inside the filesystem: what clients send, right through bind mounts
  } else if (req.dir == mp) {
    rel = ".";
  } else if (req.dir.size() > mp.size() && req.dir.compare(0, mp.size(), mp) == 0 &&
             (mp == "/" || req.dir[mp.size()] == '/')) {
    rel = req.dir.substr(mp == "/" ? 1 : mp.size() + 1);
  } else {
    return Reply::failure(make_error(EXDEV, req.dir + " is not inside this mount (" + mp + ")"));
  }
  const auto who = peer_caller(req, c);
  // The probes of the expansion run as the peer: @sys candidates reveal
  // nothing the peer could not stat itself.
  const daemon::ScopedCallerIdentity as_peer(who->uid, who->gid, who->groups);
  // The client's path is untrusted: it must stay inside SOURCE.
  open_how how{};
  how.flags = O_PATH | O_DIRECTORY | O_CLOEXEC;
  how.resolve = RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS;
  UniqueFd owned_dir(static_cast<int>(::syscall(SYS_openat2, source_fd.get(), rel.c_str(), &how, sizeof how)));
  const int dir_fd = owned_dir.get();
  if (dir_fd < 0) return Reply::failure(sys_error(errno, "cannot open " + req.dir));

  std::string out;
  std::vector<Substitution> trace;
  const Result<void> expanded = links.explain(req.raw, dir_fd, *who, out, trace);
  owned_dir.reset();
  Reply reply;
  if (expanded) {
    reply.add("expansion", out);
  } else {
    reply.add("error", errno_text(expanded.error().code, expanded.error().message));
  }
  add_substitutions(reply, trace);
  return reply;
}

Reply Server::Impl::do_reload(const ucred& peer) {
  if (!is_admin(peer))
    return Reply::failure(make_error(EPERM, "only root or the mount's owner may reload the rules"));
  if (auto ok = state.reload(); !ok) {
    spdlog::error("control: reload requested by uid {} failed: {}", peer.uid, ok.error().message);
    return Reply::failure(ok.error());
  }
  // The link caches follow the rules generation by themselves (the next
  // expansion sees the new one and bumps its caches once).
  spdlog::info("control: rules reloaded by uid {}", peer.uid);
  Reply reply;
  reply.add("rules_origin", state.rules()->origin);
  reply.add("generation", std::to_string(state.rules_generation()));
  return reply;
}

Reply Server::Impl::do_universe(Request& req, const Connection& c) {
  const auto rules = state.rules();
  const auto rt = runtime();
  const auto caller = peer_caller(req, c);
  if (!rules) return Reply::failure(make_error(EIO, "no rules"));
  const std::shared_ptr<const HostView> host = state.host_view(*rules);
  const ScopedResolver resolver(*rules, *host, *caller, rt.get());
  const Value u = resolver.universe();
  Reply reply;
  reply.add("universe", std::string(u.text));
  reply.add("scope", std::string(to_string(u.scope)));
  reply.add("env_var", rules->universes.env_var);
  std::string names;
  for (const std::string& n : rules->universes.names) names += (names.empty() ? "" : " ") + n;
  reply.add("universes", names);
  return reply;
}

Reply Server::Impl::do_status() {
  daemon::StatusLines lines;
  state.status(lines);
  for (const daemon::StatusProvider* p : opts.status) p->status(lines);
  const auto num = [](std::uint64_t v) { return std::to_string(v); };
  Reply r;
  for (auto& [key, value] : lines) {
    // A key the protocol cannot carry would make the whole reply one that
    // vsymctl refuses (EPROTO): that line is left out and named in the log.
    if (!valid_word(key)) {
      spdlog::error("status: line '{}' left out: its key is not 1 to {} of [a-z_.]", key, kMaxWord);
      continue;
    }
    r.add(std::move(key), std::move(value));
  }
  r.add("socket", socket_path);
  r.add("state_file", store.path());
  r.add("control_connections_refused", num(refused));
  r.add("control_connections_evicted", num(evicted));
  r.add("control_connections_timed_out", num(timed_out));
  const auto ts = links.tracer().stats();
  r.add("trace_subscribers", num(ts.subscribers));
  r.add("trace_events", num(ts.events));
  r.add("trace_dropped", num(ts.dropped));
  return r;
}

Server::Server() = default;

Server::~Server() {
  if (impl_ && impl_->thread.joinable()) {
    const std::uint64_t one = 1;
    if (::write(impl_->wake_fd.get(), &one, sizeof one) < 0) {
      // eventfd writes fail only on overflow; the thread is then awake anyway.
    }
    impl_->thread.join();
  }
}

const std::string& Server::socket_path() const noexcept { return impl_->socket_path; }

Result<std::unique_ptr<Server>> Server::start(daemon::MountState& state, daemon::LinkService& links,
                                              daemon::CallerContexts& contexts, ServerOptions opts) {
  const std::string& mp = state.config().mountpoint;
  // Defaults by who we are: a non-root daemon keeps both in directories of
  // its own (paths.hpp), made private before anything is put there.
  const DaemonUser who = DaemonUser::current();
  std::string socket_path = opts.socket_path, state_path = opts.state_path;
  if (socket_path.empty()) {
    socket_path = default_socket_path(mp, who);
    if (who.euid != 0) {
      if (auto ok = ensure_private_directory(run_directory(who)); !ok) return ok.error();
    }
  }
  if (state_path.empty()) {
    auto p = default_state_path(mp, who);
    if (!p) return p.error();
    state_path = std::move(*p);
    if (who.euid != 0) {
      if (auto ok = ensure_private_directory(parent_directory(state_path)); !ok) return ok.error();
    }
  }
  const bool derived_socket = opts.socket_path.empty();
  auto impl = std::make_unique<Impl>(state, links, contexts, std::move(socket_path), opts, std::move(state_path));
  impl->socket_named_after_mountpoint = derived_socket;

  // Run-time values first: a daemon that cannot read its state must not
  // start empty and then overwrite the file on the first change.
  auto loaded = impl->store.load();
  if (!loaded) return loaded.error();
  if (!loaded->warning.empty()) spdlog::error("control: {}", loaded->warning);
  state.publish_runtime(std::make_shared<const RuntimeVars>(std::move(loaded->vars)));

  impl->source_fd.reset(::open(state.config().source.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
  if (!impl->source_fd) return sys_error(errno, "cannot open source " + state.config().source);
  impl->wake_fd.reset(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (!impl->wake_fd) return sys_error(errno, "eventfd");
  impl->trace_fd.reset(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (!impl->trace_fd) return sys_error(errno, "eventfd");
  links.tracer().set_wake_fd(impl->trace_fd.get());
  if (auto ok = impl->bind_socket(); !ok) return ok.error();

  std::unique_ptr<Server> server(new Server());
  server->impl_ = std::move(impl);
  Impl* raw = server->impl_.get();
  server->impl_->thread = std::thread([raw] { raw->loop(); });
  spdlog::info("control socket {} (state file {})", raw->socket_path, raw->store.path());
  return server;
}

}  // namespace vsymfs::control
