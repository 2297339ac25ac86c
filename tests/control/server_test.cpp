// The control server without a mount: a MountState over a plain directory,
// a real socket, the real client.
#include "control/server.hpp"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
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
#include "control/store.hpp"

namespace vsymfs::control {
namespace {

using ::testing::HasSubstr;

namespace fs = std::filesystem;

void write_file(const std::string& path, const std::string& text) {
  const std::string tmp = path + ".new";
  std::ofstream(tmp) << text;
  fs::rename(tmp, path);
}

// Runs `fn` as another uid (and gid) and returns its value: in a thread
// of this process that switches only its own credentials, never in a
// forked child, since the server under test runs threads that may hold
// the allocator's lock at fork time (common/thread_as.hpp). The server
// reads nothing of a peer but what the kernel reports of the connecting
// thread (SO_PEERCRED's uid and gid, SO_PEERGROUPS).
int as_uid(uid_t uid, const std::function<int()>& fn) { return vsymfs::test::run_in_thread_as(uid, uid, fn); }

class ServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    fs::create_directories(root_ + "/src/d");
    fs::create_directories(root_ + "/mnt");
    rules_ = root_ + "/rules.toml";
    write_file(rules_, "[vars]\nWHERE = \"d1\"\n");
    socket_ = root_ + "/ctl.sock";
    state_path_ = root_ + "/state/state.toml";
    start();
  }
  void TearDown() override {
    server_.reset();
    links_.reset();
    contexts_.reset();
    state_.reset();
  }

  void start(daemon::CallerContexts::Options context_opts = {}) {
    ServerOptions sopts = server_opts_;
    sopts.socket_path = socket_;
    sopts.state_path = state_path_;
    auto state = daemon::MountState::create({root_ + "/src", root_ + "/mnt", rules_, true});
    ASSERT_TRUE(state.ok()) << state.error().message;
    state_ = std::move(state.value());
    contexts_ = std::make_unique<daemon::CallerContexts>(context_opts);
    links_ = std::make_unique<daemon::LinkService>(*state_, *contexts_);
    auto server = Server::start(*state_, *links_, *contexts_, sopts);
    ASSERT_TRUE(server.ok()) << server.error().message;
    server_ = std::move(server.value());
  }
  void restart(daemon::CallerContexts::Options context_opts = {}) {
    server_.reset();
    links_.reset();
    contexts_.reset();
    state_.reset();
    start(context_opts);
  }

  Reply ask(const Request& req) {
    auto reply = call(socket_, req, 5000);
    EXPECT_TRUE(reply.ok()) << reply.error().message;
    return reply.ok() ? reply.value() : Reply::failure(reply.error());
  }

  // Under /tmp whatever $TMPDIR says, and 0755: the socket in it must be
  // reachable by another uid (CredentialsComeFromTheKernel) and its path
  // must fit a socket address.
  const vsymfs::test::TempDir tmp_{"vsymfs-server-test", 0755, "/tmp"};
  const std::string& root_ = tmp_.path();
  std::string rules_, socket_, state_path_;
  ServerOptions server_opts_;  // timeouts for start(); the paths are set there
  std::unique_ptr<daemon::MountState> state_;
  std::unique_ptr<daemon::CallerContexts> contexts_;
  std::unique_ptr<daemon::LinkService> links_;
  std::unique_ptr<Server> server_;
};

TEST_F(ServerTest, SocketIsWorldConnectable) {
  EXPECT_EQ(server_->socket_path(), socket_);
  struct stat st {};
  ASSERT_EQ(::stat(socket_.c_str(), &st), 0);
  EXPECT_TRUE(S_ISSOCK(st.st_mode));
  EXPECT_EQ(st.st_mode & 0777, 0666u);
}

TEST_F(ServerTest, SetIsPersistedPublishedAndListed) {
  const uid_t me = ::getuid();
  ASSERT_TRUE(ask({Op::Set, ScopeArg::User, "PROJECT", "alpha", "", ""}).ok());
  const auto rt = state_->runtime();
  ASSERT_TRUE(rt->users.contains(me));
  EXPECT_EQ(rt->users.at(me).at("PROJECT"), "alpha");
  auto on_disk = StateFile(state_path_).load();
  ASSERT_TRUE(on_disk.ok());
  EXPECT_EQ(on_disk->vars.users.at(me).at("PROJECT"), "alpha");

  const Reply list = ask({Op::List, ScopeArg::User, "", "", "", ""});
  ASSERT_TRUE(list.ok());
  ASSERT_EQ(list.fields.size(), 1u);
  EXPECT_EQ(list.fields[0], (Field{"user", "PROJECT=alpha"}));

  ASSERT_TRUE(ask({Op::Unset, ScopeArg::User, "PROJECT", "", "", ""}).ok());
  EXPECT_FALSE(state_->runtime()->users.contains(me));
  const Reply again = ask({Op::Unset, ScopeArg::User, "PROJECT", "", "", ""});
  EXPECT_EQ(again.error, ENOENT);
}

TEST_F(ServerTest, ValuesSurviveARestartAndACorruptFileIsSetAside) {
  ASSERT_TRUE(ask({Op::Set, ScopeArg::User, "KEEP", "1", "", ""}).ok());
  restart();
  EXPECT_EQ(state_->runtime()->users.at(::getuid()).at("KEEP"), "1");

  server_.reset();
  write_file(state_path_, "this is not toml [");
  restart();
  EXPECT_TRUE(state_->runtime()->users.empty());
  bool moved_aside = false;
  for (const auto& e : fs::directory_iterator(root_ + "/state"))
    moved_aside |= e.path().filename().string().rfind("state.toml.corrupt-", 0) == 0;
  EXPECT_TRUE(moved_aside);
}

TEST_F(ServerTest, ExplainGivesTheExpansionAndTheScopes) {
  const Reply r = ask({Op::Explain, ScopeArg::All, "", "", "/x/${WHERE}/${NOPE:-dflt}", root_ + "/mnt/d"});
  ASSERT_TRUE(r.ok()) << r.message;
  ASSERT_NE(r.find("expansion"), nullptr);
  EXPECT_EQ(*r.find("expansion"), "/x/d1/dflt");
  std::vector<Field> trace(r.fields.begin() + 1, r.fields.end());
  EXPECT_EQ(trace, (std::vector<Field>{{"ref", "${WHERE}"},
                                       {"value", "d1"},
                                       {"scope", "system"},
                                       {"ref", "${NOPE:-dflt}"},
                                       {"value", "dflt"},
                                       {"scope", "default"}}));

  EXPECT_EQ(ask({Op::Explain, ScopeArg::All, "", "", "x", "/etc"}).error, EXDEV);
  // Climbing out of SOURCE is refused even when the prefix matches.
  EXPECT_NE(ask({Op::Explain, ScopeArg::All, "", "", "x", root_ + "/mnt/../../etc"}).error, 0);
  EXPECT_EQ(ask({Op::Explain, ScopeArg::All, "", "", "x", root_ + "/mnt/absent"}).error, ENOENT);
}

TEST_F(ServerTest, ReloadKeepsOldRulesOnErrorAndReportsIt) {
  const auto generation = state_->rules_generation();
  write_file(rules_, "[vars]\nWHERE = \n");
  const Reply bad = ask({Op::Reload, ScopeArg::All, "", "", "", ""});
  EXPECT_EQ(bad.error, EINVAL);
  EXPECT_THAT(bad.message, HasSubstr(rules_ + ":2:"));
  const Reply still = ask({Op::Explain, ScopeArg::All, "", "", "${WHERE}", root_ + "/mnt"});
  ASSERT_NE(still.find("expansion"), nullptr);
  EXPECT_EQ(*still.find("expansion"), "d1");

  write_file(rules_, "[vars]\nWHERE = \"d2\"\n");
  const Reply good = ask({Op::Reload, ScopeArg::All, "", "", "", ""});
  ASSERT_TRUE(good.ok()) << good.message;
  EXPECT_GT(state_->rules_generation(), generation);
  EXPECT_EQ(*ask({Op::Explain, ScopeArg::All, "", "", "${WHERE}", root_ + "/mnt"}).find("expansion"), "d2");
}

// A status line whose key the protocol cannot carry (longer than
// kMaxWord, or other characters) once made the whole reply one that
// vsymctl refused with EPROTO. It is left out; the rest is answered.
TEST_F(ServerTest, AStatusLineTheProtocolCannotCarryIsLeftOut) {
  struct Lines final : daemon::StatusProvider {
    void status(daemon::StatusLines& out) const override {
      out.emplace_back("a_key_of_thirty_three_characters_", "1");
      out.emplace_back("Upper", "2");
      out.emplace_back("fine_key", "3");
    }
  } lines;
  server_opts_.status = {&lines};
  restart();
  const Reply status = ask({Op::Status, ScopeArg::All, "", "", "", ""});
  server_.reset();  // before `lines` goes
  ASSERT_TRUE(status.ok()) << status.message;
  EXPECT_EQ(status.find("a_key_of_thirty_three_characters_"), nullptr);
  EXPECT_EQ(status.find("Upper"), nullptr);
  ASSERT_NE(status.find("fine_key"), nullptr);
  EXPECT_EQ(*status.find("fine_key"), "3");
  EXPECT_NE(status.find("mountpoint"), nullptr);
  EXPECT_NE(status.find("trace_dropped"), nullptr);
}

TEST_F(ServerTest, StatusAndUniverse) {
  const Reply status = ask({Op::Status, ScopeArg::All, "", "", "", ""});
  ASSERT_TRUE(status.ok());
  ASSERT_NE(status.find("mountpoint"), nullptr);
  EXPECT_EQ(*status.find("mountpoint"), root_ + "/mnt");
  EXPECT_EQ(*status.find("rules"), rules_);
  EXPECT_EQ(*status.find("state_file"), state_path_);

  const Reply universe = ask({Op::Universe, ScopeArg::All, "", "", "", ""});
  ASSERT_TRUE(universe.ok());
  ASSERT_NE(universe.find("env_var"), nullptr);
  EXPECT_EQ(*universe.find("env_var"), "UNIVERSE");
}

// explain and universe use the environment the client sent about itself,
// never /proc/<pid> (the pid may belong to someone else by now): none sent
// (an older vsymctl) means no process scope, and so does a client that says
// it runs set-id.
TEST_F(ServerTest, ExplainAndUniverseUseTheEnvironmentTheClientSent) {
  write_file(rules_, "[universe]\nnames = [\"att\", \"ucb\"]\ndefault = \"att\"\nenv = \"UNIVERSE\"\n"
                     "[vars]\nWHERE = \"d1\"\n");
  restart();
  Request explain{Op::Explain, ScopeArg::All, "", "", "${WHERE}", root_ + "/mnt"};
  Reply r = ask(explain);
  ASSERT_NE(r.find("expansion"), nullptr) << r.message;
  EXPECT_EQ(*r.find("expansion"), "d1");
  EXPECT_EQ(*r.find("scope"), "system");

  explain.has_environ = true;
  explain.environ = {"OTHER=x", "WHERE=sent"};
  r = ask(explain);
  ASSERT_NE(r.find("expansion"), nullptr) << r.message;
  EXPECT_EQ(*r.find("expansion"), "sent");
  EXPECT_EQ(*r.find("scope"), "process");

  explain.secure = true;
  r = ask(explain);
  ASSERT_NE(r.find("expansion"), nullptr) << r.message;
  EXPECT_EQ(*r.find("expansion"), "d1") << "a secure client gets no process scope";

  Request universe{Op::Universe, ScopeArg::All, "", "", "", ""};
  r = ask(universe);
  ASSERT_TRUE(r.ok()) << r.message;
  EXPECT_EQ(*r.find("universe"), "att");
  universe.has_environ = true;
  universe.environ = {"UNIVERSE=ucb"};
  r = ask(universe);
  ASSERT_TRUE(r.ok()) << r.message;
  EXPECT_EQ(*r.find("universe"), "ucb");
  EXPECT_EQ(*r.find("scope"), "process");
}

// Opens `n` connections to `socket` that send nothing, from a child running
// as `uid`, and holds them until released.
class IdleConnections {
 public:
  IdleConnections(const std::string& socket, uid_t uid, int n) {
    int ready[2];
    if (::pipe2(ready, O_CLOEXEC) != 0) return;
    pid_ = ::fork();
    if (pid_ == 0) {
      ::close(ready[0]);
      if (::setresgid(uid, uid, uid) != 0 || ::setresuid(uid, uid, uid) != 0) ::_exit(99);
      sockaddr_un addr{};
      addr.sun_family = AF_UNIX;
      std::strncpy(addr.sun_path, socket.c_str(), sizeof addr.sun_path - 1);
      int count = 0;
      for (int i = 0; i < n; ++i) {
        const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        // A full listen queue (a daemon that stopped accepting): give up on
        // this one after a while rather than wait for a slot.
        const timeval tv{0, 500'000};
        ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
        if (::connect(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof addr) == 0) ++count;
      }
      (void)!::write(ready[1], &count, sizeof count);
      for (;;) ::pause();  // until killed (a pipe would be inherited by the next holder)
    }
    ::close(ready[1]);
    pollfd p{ready[0], POLLIN, 0};
    if (::poll(&p, 1, 120'000) == 1 && ::read(ready[0], &connected_, sizeof connected_) != sizeof connected_)
      connected_ = -1;
    ::close(ready[0]);
  }
  ~IdleConnections() {
    if (pid_ <= 0) return;
    ::kill(pid_, SIGKILL);
    ::waitpid(pid_, nullptr, 0);
  }
  IdleConnections(const IdleConnections&) = delete;
  IdleConnections& operator=(const IdleConnections&) = delete;
  int connected() const { return connected_; }

 private:
  pid_t pid_ = -1;
  int connected_ = -1;
};

std::uint64_t status_number(const Reply& status, const std::string& key) {
  const std::string* v = status.find(key);
  return v == nullptr ? ~std::uint64_t{0} : std::stoull(*v);
}

// The attack of issue 18, finding 8: one user's 128 idle connections made
// another user's `vsymctl set` wait for their deadlines. Here nothing frees
// a slot by itself (60 s timeouts), so before the per-uid limit the set
// timed out; now it is answered at once and the surplus is refused.
TEST_F(ServerTest, OneUsersIdleConnectionsDoNotKeepAnotherUserOut) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to act as other uids";
  server_opts_.connection_deadline = server_opts_.idle_timeout = std::chrono::seconds(60);
  restart();
  IdleConnections attacker(socket_, 65534, 128);
  ASSERT_EQ(attacker.connected(), 128);
  const int rc = as_uid(65533, [&] {
    auto r = call(socket_, {Op::Set, ScopeArg::User, "V", "victim", "", ""}, 20'000);
    return r.ok() && r->ok() ? 0 : 1;
  });
  EXPECT_EQ(rc, 0) << "another uid's set was not answered";
  EXPECT_EQ(state_->runtime()->users.at(65533).at("V"), "victim");
  const Reply status = ask({Op::Status, ScopeArg::All, "", "", "", ""});
  EXPECT_EQ(status_number(status, "control_connections_refused"), 128 - kMaxConnectionsPerUid);
  EXPECT_EQ(status_number(status, "control_connections_timed_out"), 0u);
}

// A user with many uids (subordinate ids in a user namespace) fills every
// slot; a uid holding fewer still gets in, in the place of the oldest
// connection of a uid that holds the most.
TEST_F(ServerTest, WhenEverySlotIsTakenANewUidStillGetsIn) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to act as other uids";
  server_opts_.connection_deadline = server_opts_.idle_timeout = std::chrono::seconds(60);
  restart();
  std::vector<std::unique_ptr<IdleConnections>> attackers;
  const std::size_t uids = kMaxConnections / kMaxConnectionsPerUid;
  for (std::size_t i = 0; i < uids; ++i) {
    attackers.push_back(std::make_unique<IdleConnections>(socket_, static_cast<uid_t>(60001 + i),
                                                          static_cast<int>(kMaxConnectionsPerUid)));
    ASSERT_EQ(attackers.back()->connected(), static_cast<int>(kMaxConnectionsPerUid));
  }
  const int rc = as_uid(65533, [&] {
    auto r = call(socket_, {Op::Set, ScopeArg::User, "V", "victim", "", ""}, 20'000);
    return r.ok() && r->ok() ? 0 : 1;
  });
  EXPECT_EQ(rc, 0) << "a new uid was kept out by a full table";
  const Reply status = ask({Op::Status, ScopeArg::All, "", "", "", ""});
  EXPECT_GE(status_number(status, "control_connections_evicted"), 1u);
  EXPECT_EQ(status_number(status, "control_connections_refused"), 0u);
}

// A connection that sends nothing is closed after the idle timeout, long
// before its overall deadline.
TEST_F(ServerTest, AnIdleConnectionIsClosedBeforeItsDeadline) {
  server_opts_.connection_deadline = std::chrono::seconds(600);
  server_opts_.idle_timeout = std::chrono::milliseconds(200);
  restart();
  const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::strncpy(addr.sun_path, socket_.c_str(), sizeof addr.sun_path - 1);
  ASSERT_EQ(::connect(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof addr), 0);
  ASSERT_EQ(::send(fd, "\0\0", 2, MSG_NOSIGNAL), 2);  // half a frame header, then silence
  pollfd p{fd, POLLIN, 0};
  ASSERT_EQ(::poll(&p, 1, 60'000), 1) << "still open after 60 s";
  char c;
  EXPECT_EQ(::recv(fd, &c, 1, 0), 0) << "closed without a reply";
  ::close(fd);
  EXPECT_EQ(status_number(ask({Op::Status, ScopeArg::All, "", "", "", ""}), "control_connections_timed_out"), 1u);
}

// A uid at its limit is refused with EAGAIN; vsymctl asks again and gets in
// once one of its own connections closes.
TEST_F(ServerTest, AUserAtTheLimitIsRetriedUntilASlotFrees) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to ask as another uid while this one is at its limit";
  server_opts_.connection_deadline = server_opts_.idle_timeout = std::chrono::seconds(60);
  restart();
  ::chmod(root_.c_str(), 0755);
  std::vector<int> held;
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::strncpy(addr.sun_path, socket_.c_str(), sizeof addr.sun_path - 1);
  for (std::size_t i = 0; i < kMaxConnectionsPerUid; ++i) {
    held.push_back(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    ASSERT_EQ(::connect(held.back(), reinterpret_cast<const sockaddr*>(&addr), sizeof addr), 0);
  }
  std::optional<Result<Reply>> got;
  std::thread client([&] { got = call(socket_, {Op::Set, ScopeArg::User, "RETRIED", "yes", "", ""}, 60'000); });
  // Wait until the server has refused it at least once (asked by another uid).
  const auto refused = [&] {
    return as_uid(65534, [&] {
      auto r = call(socket_, {Op::Status, ScopeArg::All, "", "", "", ""}, 10'000);
      if (!r.ok() || !r->ok()) return 255;
      return static_cast<int>(std::min<std::uint64_t>(status_number(*r, "control_connections_refused"), 200));
    });
  };
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  int seen = 0;
  while ((seen = refused()) == 0 && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  EXPECT_GE(seen, 1);
  EXPECT_LT(seen, 255);
  for (int fd : held) ::close(fd);
  client.join();
  ASSERT_TRUE(got.has_value() && got->ok()) << (got && !got->ok() ? got->error().message : "");
  EXPECT_TRUE((*got)->ok()) << (*got)->message;
  EXPECT_EQ(state_->runtime()->users.at(::geteuid()).at("RETRIED"), "yes");
}

TEST_F(ServerTest, CredentialsComeFromTheKernel) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to act as another uid";
  ::chmod(root_.c_str(), 0755);
  const int rc = as_uid(65534, [&] {
    auto sys = call(socket_, {Op::Set, ScopeArg::System, "X", "y", "", ""});
    if (!sys.ok() || sys->error != EPERM) return 1;
    auto reload = call(socket_, {Op::Reload, ScopeArg::All, "", "", "", ""});
    if (!reload.ok() || reload->error != EPERM) return 2;
    auto mine = call(socket_, {Op::Set, ScopeArg::User, "X", "nobody's", "", ""});
    if (!mine.ok() || !mine->ok()) return 3;
    return 0;
  });
  EXPECT_EQ(rc, 0);
  const auto rt = state_->runtime();
  EXPECT_TRUE(rt->system.empty());
  ASSERT_TRUE(rt->users.contains(65534));
  EXPECT_EQ(rt->users.at(65534).at("X"), "nobody's");
  // Root's own list does not show another user's values.
  const Reply list = ask({Op::List, ScopeArg::All, "", "", "", ""});
  EXPECT_TRUE(list.fields.empty());
}

TEST_F(ServerTest, ASecondServerCannotStealALiveSocket) {
  auto second = Server::start(*state_, *links_, *contexts_, {socket_, root_ + "/other.toml"});
  ASSERT_FALSE(second.ok());
  EXPECT_EQ(second.error().code, EADDRINUSE);
  EXPECT_TRUE(ask({Op::Status, ScopeArg::All, "", "", "", ""}).ok()) << "the first still serves";
}

TEST_F(ServerTest, AStaleSocketFileIsReplaced) {
  server_.reset();
  // A socket file with no daemon behind it, as a crash leaves.
  ASSERT_EQ(::mknod(socket_.c_str(), S_IFSOCK | 0666, 0), 0);
  auto server = Server::start(*state_, *links_, *contexts_, {socket_, state_path_});
  ASSERT_TRUE(server.ok()) << server.error().message;
  server_ = std::move(server.value());
  EXPECT_TRUE(ask({Op::Status, ScopeArg::All, "", "", "", ""}).ok());
}

TEST(Client, DescribeSelfSendsThisProcesssOwnEnvironment) {
  ::setenv("VSYMFS_DESCRIBE_SELF", "yes", 1);
  Request req{Op::Universe, ScopeArg::All, "", "", "", ""};
  describe_self(req);
  EXPECT_TRUE(req.has_environ);
  EXPECT_FALSE(req.secure);
  EXPECT_FALSE(req.compat32);
  EXPECT_TRUE(req.emulated_machine.empty()) << "this test runs natively";
  EXPECT_THAT(req.environ, ::testing::Contains("VSYMFS_DESCRIBE_SELF=yes"));
  ::unsetenv("VSYMFS_DESCRIBE_SELF");
}

// A daemon from before the process fields refuses them as unexpected; the
// client asks once more without them (that daemon then reads /proc itself,
// as it always did).
TEST(Client, AnOldDaemonIsAskedAgainWithoutTheProcessFields) {
  const vsymfs::test::TempDir dir{"vsymfs-client-test", 0700, "/tmp"};
  const std::string path = dir.path() + "/old.sock";
  const int listener = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::strncpy(addr.sun_path, path.c_str(), sizeof addr.sun_path - 1);
  ASSERT_EQ(::bind(listener, reinterpret_cast<const sockaddr*>(&addr), sizeof addr), 0);
  ASSERT_EQ(::listen(listener, 4), 0);
  std::vector<std::string> seen;
  std::thread old_daemon([&] {
    for (int i = 0; i < 2; ++i) {
      pollfd p{listener, POLLIN, 0};
      if (::poll(&p, 1, 20'000) != 1) return;  // the client did not come back
      const int c = ::accept(listener, nullptr, nullptr);
      unsigned char header[kFrameHeader];
      if (::recv(c, header, sizeof header, MSG_WAITALL) != sizeof header) return;
      std::string payload(frame_length(header), '\0');
      if (::recv(c, payload.data(), payload.size(), MSG_WAITALL) != static_cast<ssize_t>(payload.size())) return;
      seen.push_back(payload);
      Reply r;
      if (payload.find("\nenviron ") != std::string::npos) {
        r = Reply::failure(make_error(EINVAL, "unexpected field 'environ' for universe"));
      } else {
        r.add("universe", "att");
      }
      const std::string bytes = frame(encode_reply(r));
      (void)::send(c, bytes.data(), bytes.size(), MSG_NOSIGNAL);
      ::close(c);
    }
  });
  Request req{Op::Universe, ScopeArg::All, "", "", "", ""};
  describe_self(req);
  auto reply = call(path, req, 20'000);
  old_daemon.join();
  ::close(listener);
  ASSERT_TRUE(reply.ok()) << reply.error().message;
  EXPECT_TRUE(reply->ok()) << reply->message;
  ASSERT_EQ(seen.size(), 2u);
  EXPECT_NE(seen[0].find("\nenviron "), std::string::npos);
  EXPECT_EQ(seen[1], "VSYMFS1 universe\n");
}

// The rules file: nobody but root and the daemon's own user may be able to
// change it (issue 18, hardening: a root daemon took a user-owned file and
// reloaded it whenever that user edited it).
class RulesFileTrust : public ::testing::Test {
 protected:
  void SetUp() override {
    fs::create_directories(dir_);
    ::chmod(dir_.c_str(), 0755);
    write_file(file_, "[vars]\nWHERE = \"trusted\"\n");
    ::chmod(file_.c_str(), 0644);
  }
  Result<void> check(const std::string& path) { return daemon::check_rules_file_trusted(path, ::geteuid()); }
  static void expect_refused(const Result<void>& r, const std::string& names) {
    ASSERT_FALSE(r.ok()) << "trusted, but should not be: " << names;
    EXPECT_EQ(r.error().code, EPERM) << r.error().message;
    EXPECT_THAT(r.error().message, HasSubstr(names));
  }

  const vsymfs::test::TempDir tmp_{"vsymfs-rules-trust", 0755, "/tmp"};
  const std::string dir_ = tmp_.path() + "/etc";
  const std::string file_ = dir_ + "/rules.toml";
};

TEST_F(RulesFileTrust, AFileOnlyRootOrTheDaemonCanChangeIsTaken) {
  EXPECT_TRUE(check(file_).ok()) << check(file_).error().message;
  // Writable by everyone, but sticky (as /tmp above it): nobody can replace
  // an entry of ours in it.
  ::chmod(dir_.c_str(), 01777);
  EXPECT_TRUE(check(file_).ok()) << "a sticky directory protects entries of others";
}

TEST_F(RulesFileTrust, AFileOrADirectoryAboveWritableByOthersIsRefused) {
  ::chmod(file_.c_str(), 0666);
  expect_refused(check(file_), file_ + " is writable by others (mode 0666)");
  ::chmod(file_.c_str(), 0664);
  expect_refused(check(file_), file_ + " is writable by others (mode 0664)");
  ::chmod(file_.c_str(), 0644);
  ::chmod(dir_.c_str(), 0777);
  expect_refused(check(file_), dir_ + " is writable by others (mode 0777)");
  ::chmod(dir_.c_str(), 0775);
  expect_refused(check(file_), dir_ + " is writable by others");
}

TEST_F(RulesFileTrust, AFileOrADirectoryOfAnotherUserIsRefused) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to give files to another uid";
  ASSERT_EQ(::chown(file_.c_str(), 65534, 65534), 0);
  expect_refused(check(file_), file_ + " belongs to uid 65534");
  EXPECT_TRUE(daemon::check_rules_file_trusted(file_, 65534).ok()) << "a daemon run by that uid trusts its own file";
  ASSERT_EQ(::chown(file_.c_str(), 0, 0), 0);
  ASSERT_EQ(::chown(dir_.c_str(), 65534, 65534), 0);
  expect_refused(check(file_), dir_ + " belongs to uid 65534");
}

TEST_F(RulesFileTrust, LinksAreFollowedAndWhereTheyLeadIsChecked) {
  const std::string open_dir = tmp_.path() + "/open";
  fs::create_directories(open_dir);
  write_file(open_dir + "/rules.toml", "[vars]\n");
  ::chmod(open_dir.c_str(), 0777);
  ASSERT_EQ(::symlink("../open/./rules.toml", (dir_ + "/via-open").c_str()), 0);
  expect_refused(check(dir_ + "/via-open"), open_dir + " is writable by others");
  ASSERT_EQ(::symlink(file_.c_str(), (open_dir + "/back").c_str()), 0);
  expect_refused(check(open_dir + "/back"), open_dir + " is writable by others");
  ASSERT_EQ(::symlink("rules.toml", (dir_ + "/alias").c_str()), 0);
  EXPECT_TRUE(check(dir_ + "/alias").ok());
  ASSERT_EQ(::symlink("loop", (dir_ + "/loop").c_str()), 0);
  auto loop = check(dir_ + "/loop");
  ASSERT_FALSE(loop.ok());
  EXPECT_EQ(loop.error().code, ELOOP);
  auto missing = check(dir_ + "/absent.toml");
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.error().code, ENOENT);
  if (::geteuid() == 0) {
    ASSERT_EQ(::lchown((dir_ + "/alias").c_str(), 65534, 65534), 0);
    expect_refused(check(dir_ + "/alias"), dir_ + "/alias belongs to uid 65534");
  }
}

// The daemon itself: an untrusted file is refused at start, and at a reload
// the old rules stay in force.
TEST_F(RulesFileTrust, TheDaemonRefusesAtStartAndKeepsItsRulesAtReload) {
  const vsymfs::test::TempDir mount{"vsymfs-rules-trust-mnt", 0755, "/tmp"};
  fs::create_directories(mount.path() + "/src");
  fs::create_directories(mount.path() + "/mnt");
  const daemon::MountState::Config cfg{mount.path() + "/src", mount.path() + "/mnt", file_, true};
  auto state = daemon::MountState::create(cfg);
  ASSERT_TRUE(state.ok()) << state.error().message;
  ::chmod(file_.c_str(), 0666);
  write_file(file_, "[locked]\nWHERE = \"attacker\"\n");
  ::chmod(file_.c_str(), 0666);
  const auto generation = (*state)->rules_generation();
  auto reloaded = (*state)->reload();
  ASSERT_FALSE(reloaded.ok());
  EXPECT_EQ(reloaded.error().code, EPERM);
  EXPECT_EQ((*state)->rules_generation(), generation);
  EXPECT_EQ((*state)->rules()->system.at("WHERE"), "trusted");

  auto refused = daemon::MountState::create(cfg);
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.error().code, EPERM);
  EXPECT_THAT(refused.error().message, HasSubstr("refusing rules file " + file_));
}

}  // namespace
}  // namespace vsymfs::control
