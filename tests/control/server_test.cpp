// The control server without a mount: a MountState over a plain directory,
// a real socket, the real client.
#include "server.hpp"

#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <functional>
#include <string>

#include "client.hpp"
#include "common/temp_dir.hpp"
#include "store.hpp"

namespace vsymfs::control {
namespace {

using ::testing::HasSubstr;

namespace fs = std::filesystem;

void write_file(const std::string& path, const std::string& text) {
  const std::string tmp = path + ".new";
  std::ofstream(tmp) << text;
  fs::rename(tmp, path);
}

// Runs `fn` in a child with another uid; its return value is the exit code.
int as_uid(uid_t uid, const std::function<int()>& fn) {
  const pid_t pid = ::fork();
  if (pid == 0) {
    if (::setresgid(uid, uid, uid) != 0 || ::setresuid(uid, uid, uid) != 0) ::_exit(99);
    ::_exit(fn());
  }
  int status = 0;
  ::waitpid(pid, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : 98;
}

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
    auto state = daemon::MountState::create({root_ + "/src", root_ + "/mnt", rules_, true});
    ASSERT_TRUE(state.ok()) << state.error().message;
    state_ = std::move(state.value());
    contexts_ = std::make_unique<daemon::CallerContexts>(context_opts);
    links_ = std::make_unique<daemon::LinkService>(*state_, *contexts_);
    auto server = Server::start(*state_, *links_, *contexts_, {socket_, state_path_});
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

// A universe reported without the environment that may choose it would be
// a wrong answer, as for links: refusing every /proc read (max_queued = 0)
// makes the environment late, deterministically.
TEST_F(ServerTest, UniverseFailsWhenTheEnvironmentIsNotReadInTime) {
  daemon::CallerContexts::Options late;
  late.max_queued = 0;
  restart(late);
  const Reply universe = ask({Op::Universe, ScopeArg::All, "", "", "", ""});
  EXPECT_EQ(universe.error, EAGAIN);
  EXPECT_NE(universe.message.find("not read in time"), std::string::npos) << universe.message;
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
