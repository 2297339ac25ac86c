// `trace` on the control server, without a mount: expansions made through
// the LinkService reach the stream; a trace is not closed by the idle
// timeout or the connection deadline yet counts against its uid's limits;
// a reader that does not read loses events, counted in the stream and in
// status, and blocks nobody; malformed trace requests are refused.
#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "control/client.hpp"
#include "common/temp_dir.hpp"
#include "common/thread_as.hpp"
#include "control/server.hpp"
#include "control/trace_wire.hpp"

namespace vsymfs::control {
namespace {

using ::testing::HasSubstr;
using Clock = std::chrono::steady_clock;
namespace fs = std::filesystem;

// A raw connection to the socket that sends one request and reads frames.
class Conn {
 public:
  explicit Conn(const std::string& path) {
    fd_ = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::memcpy(addr.sun_path, path.data(), path.size());
    ok_ = fd_ >= 0 && ::connect(fd_, reinterpret_cast<const sockaddr*>(&addr), sizeof addr) == 0;
  }
  ~Conn() {
    if (fd_ >= 0) ::close(fd_);
  }
  Conn(const Conn&) = delete;
  Conn& operator=(const Conn&) = delete;
  bool ok() const { return ok_; }
  int fd() const { return fd_; }

  bool send_payload(const std::string& payload) {
    const std::string f = frame(payload);
    return ::send(fd_, f.data(), f.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(f.size());
  }
  bool send(const Request& req) { return send_payload(*encode_request(req)); }

  // The next frame, or nothing on EOF or after 10 s.
  std::optional<Reply> next() {
    unsigned char header[kFrameHeader];
    if (!read_exact(reinterpret_cast<char*>(header), sizeof header)) return std::nullopt;
    std::string body(frame_length(header), '\0');
    if (!read_exact(body.data(), body.size())) return std::nullopt;
    auto r = decode_reply(body);
    if (!r) return std::nullopt;
    return *r;
  }
  // Whether the daemon has closed the connection (EOF within `wait`).
  bool closed_within(std::chrono::milliseconds wait) {
    pollfd p{fd_, POLLIN, 0};
    if (::poll(&p, 1, static_cast<int>(wait.count())) <= 0) return false;
    char c;
    return ::recv(fd_, &c, 1, MSG_PEEK | MSG_DONTWAIT) == 0;
  }

 private:
  bool read_exact(char* buf, std::size_t n) {
    const auto deadline = Clock::now() + std::chrono::seconds(10);
    while (n > 0) {
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
      pollfd p{fd_, POLLIN, 0};
      if (left <= 0 || ::poll(&p, 1, static_cast<int>(left)) <= 0) return false;
      const ssize_t got = ::recv(fd_, buf, n, 0);
      if (got <= 0) return false;
      buf += got;
      n -= static_cast<std::size_t>(got);
    }
    return true;
  }
  int fd_ = -1;
  bool ok_ = false;
};

Request trace_request() {
  Request r;
  r.op = Op::Trace;
  return r;
}

// Runs `fn` as another uid (and gid) and returns its value: in a thread
// of this process that switches only its own credentials, never in a
// forked child, since the server under test runs threads that may hold
// the allocator's lock at fork time (common/thread_as.hpp). The server
// reads nothing of a peer but what the kernel reports of the connecting
// thread (SO_PEERCRED's uid and gid, SO_PEERGROUPS).
int as_uid(uid_t uid, const std::function<int()>& fn) { return vsymfs::test::run_in_thread_as(uid, uid, fn); }

class TraceServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    fs::create_directories(root_ + "/src/d");
    fs::create_directories(root_ + "/mnt");
    std::ofstream(root_ + "/rules.toml") << "[vars]\nWHERE = \"d1\"\n";
    socket_ = root_ + "/ctl.sock";
  }
  void TearDown() override {
    server_.reset();
    links_.reset();
    contexts_.reset();
    state_.reset();
  }
  void start(ServerOptions opts = {}) {
    opts.socket_path = socket_;
    opts.state_path = root_ + "/state/state.toml";
    auto state = daemon::MountState::create({root_ + "/src", root_ + "/mnt", root_ + "/rules.toml", true});
    ASSERT_TRUE(state.ok()) << state.error().message;
    state_ = std::move(state.value());
    contexts_ = std::make_unique<daemon::CallerContexts>();
    links_ = std::make_unique<daemon::LinkService>(*state_, *contexts_);
    auto server = Server::start(*state_, *links_, *contexts_, opts);
    ASSERT_TRUE(server.ok()) << server.error().message;
    server_ = std::move(server.value());
  }
  // An expansion as a FUSE request by (pid, uid) would make one.
  std::string expand(const std::string& raw, pid_t pid, uid_t uid) {
    const int dir = ::open((root_ + "/src/d").c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC);
    std::string out;
    auto r = links_->expand(raw, dir, daemon::RequestIds{pid, uid, uid}, out);
    ::close(dir);
    return r ? out : "error";
  }
  std::string status_field(const std::string& key) {
    Request st;
    st.op = Op::Status;
    auto reply = call(socket_, st, 5000);
    if (!reply || !reply->ok()) return "?";
    const std::string* v = reply->find(key);
    return v ? *v : "absent";
  }
  // Opens a trace and waits for its `started` record.
  static bool open_trace(Conn& c, const Request& req = trace_request()) {
    if (!c.ok() || !c.send(req)) return false;
    auto first = c.next();
    return first && first->ok() && first->find("kind") && *first->find("kind") == "started";
  }

  const vsymfs::test::TempDir tmp_{"vsymfs-trace-srv", 0755, "/tmp"};
  const std::string& root_ = tmp_.path();
  std::string socket_;
  std::unique_ptr<daemon::MountState> state_;
  std::unique_ptr<daemon::CallerContexts> contexts_;
  std::unique_ptr<daemon::LinkService> links_;
  std::unique_ptr<Server> server_;
};

TEST_F(TraceServerTest, ExpansionsReachTheStreamWithTheirScopes) {
  start();
  Conn c(socket_);
  ASSERT_TRUE(open_trace(c));
  EXPECT_EQ(status_field("trace_subscribers"), "1");
  EXPECT_EQ(expand("/x/${WHERE}", ::getpid(), 0), "/x/d1");
  auto rec = c.next();
  ASSERT_TRUE(rec);
  EXPECT_EQ(*rec->find("kind"), "event");
  EXPECT_EQ(*rec->find("raw"), "/x/${WHERE}");
  EXPECT_EQ(*rec->find("expansion"), "/x/d1");
  EXPECT_EQ(*rec->find("pid"), std::to_string(::getpid()));
  EXPECT_EQ(*rec->find("comm"), "trace_server_te");  // comm holds 15 bytes
  EXPECT_THAT(format_trace_record(*rec), HasSubstr("${WHERE} = d1  (system)"));
}

TEST_F(TraceServerTest, ATraceOutlivesTheIdleTimeoutAndTheDeadline) {
  ServerOptions opts;
  opts.idle_timeout = std::chrono::milliseconds(100);
  opts.connection_deadline = std::chrono::milliseconds(300);
  start(opts);
  Conn idle(socket_);  // sends nothing: closed at the idle timeout
  Conn c(socket_);
  ASSERT_TRUE(open_trace(c));
  EXPECT_TRUE(idle.closed_within(std::chrono::seconds(10))) << "the idle timeout is in force";
  // Well past both limits, the trace is still open and still streams.
  EXPECT_FALSE(c.closed_within(std::chrono::milliseconds(900)));
  EXPECT_EQ(expand("/y/${WHERE}", ::getpid(), 0), "/y/d1");
  auto rec = c.next();
  ASSERT_TRUE(rec) << "the trace was closed";
  EXPECT_EQ(*rec->find("raw"), "/y/${WHERE}");
}

TEST_F(TraceServerTest, OneUidHoldsAtMostItsTracesAndStillHasSlotsForRequests) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to act as another uid";
  start();
  const int rc = as_uid(65534, [&] {
    std::vector<std::unique_ptr<Conn>> traces;
    for (std::size_t i = 0; i < kMaxTracesPerUid; ++i) {
      traces.push_back(std::make_unique<Conn>(socket_));
      if (!open_trace(*traces.back())) return 10;
    }
    Conn extra(socket_);
    if (!extra.ok() || !extra.send(trace_request())) return 11;
    auto refused = extra.next();
    if (!refused) return 12;
    if (refused->error != EUSERS) return 20 + refused->error % 100;
    // Its other requests still find a slot.
    Request st;
    st.op = Op::Status;
    auto reply = call(socket_, st, 5000);
    if (!reply || !reply->ok()) return 13;
    // One trace closed: another may start.
    traces.pop_back();
    for (int tries = 0; tries < 100; ++tries) {
      Conn again(socket_);
      if (open_trace(again)) return 0;
      std::this_thread::sleep_for(std::chrono::milliseconds(20));  // until the server has seen the close
    }
    return 14;
  });
  EXPECT_EQ(rc, 0);
  // Another uid is unaffected.
  Conn mine(socket_);
  EXPECT_TRUE(open_trace(mine));
}

TEST_F(TraceServerTest, AReaderThatDoesNotReadLosesEventsCountedAndBlocksNothing) {
  start();
  Conn c(socket_);
  int small = 4096;
  ASSERT_EQ(::setsockopt(c.fd(), SOL_SOCKET, SO_RCVBUF, &small, sizeof small), 0);
  ASSERT_TRUE(open_trace(c));
  // Far more than the queue and the socket buffers hold; every expansion
  // returns (none waits for the reader).
  const int n = 3 * static_cast<int>(daemon::kTraceQueueEvents);
  for (int i = 0; i < n; ++i) ASSERT_EQ(expand("/z/${WHERE}", ::getpid(), 0), "/z/d1");
  const auto deadline = Clock::now() + std::chrono::seconds(10);
  while (status_field("trace_dropped") == "0" && Clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  const std::string dropped_text = status_field("trace_dropped");
  ASSERT_NE(dropped_text, "0");
  // Now read everything: events and a `dropped` record, which together
  // account for every expansion.
  std::uint64_t events = 0, dropped = 0;
  while (events + dropped < static_cast<std::uint64_t>(n)) {
    auto rec = c.next();
    ASSERT_TRUE(rec) << "stream ended after " << events << " events and " << dropped << " dropped";
    const std::string kind = *rec->find("kind");
    if (kind == "event") ++events;
    if (kind == "dropped") {
      dropped += std::stoull(*rec->find("count"));
      EXPECT_THAT(format_trace_record(*rec), HasSubstr("this reader was too slow"));
    }
  }
  EXPECT_EQ(events + dropped, static_cast<std::uint64_t>(n));
  EXPECT_GT(dropped, 0u);
  EXPECT_EQ(std::to_string(dropped), status_field("trace_dropped"));
}

TEST_F(TraceServerTest, MalformedOrForbiddenTraceRequestsAreRefusedAndTheServerGoesOn) {
  start();
  for (const std::string& payload :
       {std::string("VSYMFS1 trace\nuid 2\n-1\n"), std::string("VSYMFS1 trace\npid 3\n1e3\n"),
        std::string("VSYMFS1 trace\nprefix 0\n\n"), std::string("VSYMFS1 trace\nwhat 1\nx\n")}) {
    Conn c(socket_);
    ASSERT_TRUE(c.ok());
    ASSERT_TRUE(c.send_payload(payload));
    auto reply = c.next();
    ASSERT_TRUE(reply) << payload;
    EXPECT_EQ(reply->error, EINVAL) << payload;
  }
  Request outside = trace_request();
  outside.prefix = "/somewhere/else";
  Conn c(socket_);
  ASSERT_TRUE(c.send(outside));
  auto reply = c.next();
  ASSERT_TRUE(reply);
  EXPECT_EQ(reply->error, EXDEV);
  if (::geteuid() == 0) {
    const int rc = as_uid(65534, [&] {
      Request other = trace_request();
      other.uid = 0;
      Conn t(socket_);
      if (!t.send(other)) return 10;
      auto r = t.next();
      return r && r->error == EPERM ? 0 : 11;
    });
    EXPECT_EQ(rc, 0) << "a user may not ask for another uid's requests";
  }
  EXPECT_EQ(status_field("trace_subscribers"), "0");
}

}  // namespace
}  // namespace vsymfs::control
