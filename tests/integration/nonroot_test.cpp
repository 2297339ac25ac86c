// A daemon started by an ordinary user: no /run/vsymfs or /var/lib/vsymfs to
// write, no identity switching, a mount only its user may enter. It must
// start with its defaults, keep its socket and run-time values in that
// user's directories, and work.
#include <fcntl.h>
#include <grp.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "common/temp_dir.hpp"
#include "mount_fixture.hpp"

namespace vsymfs::testing {
namespace {

namespace fs = std::filesystem;

constexpr uid_t kNobody = 65534;
constexpr gid_t kNogroup = 65534;

std::string slurp(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

bool mounted(const std::string& mnt) {
  return slurp("/proc/self/mounts").find(" " + mnt + " fuse.vsymfs ") != std::string::npos;
}

// Debian's udev rule makes /dev/fuse 0666, which is what lets a user mount
// at all (libfuse opens it before asking fusermount3). Some machines ship it
// 0600; this test then opens it up for its own duration and puts it back.
class DevFuseOpenToUsers {
 public:
  DevFuseOpenToUsers() {
    struct stat st {};
    if (::stat("/dev/fuse", &st) != 0) return;
    if ((st.st_mode & 0006) != 0006 && ::chmod("/dev/fuse", 0666) == 0) restore_ = st.st_mode & 07777;
  }
  ~DevFuseOpenToUsers() {
    if (restore_ != 0) ::chmod("/dev/fuse", restore_);
  }
  DevFuseOpenToUsers(const DevFuseOpenToUsers&) = delete;
  DevFuseOpenToUsers& operator=(const DevFuseOpenToUsers&) = delete;

 private:
  mode_t restore_ = 0;
};

class NonRootDaemon : public ::testing::Test {
 protected:
  void SetUp() override {
    if (::access("/usr/bin/fusermount3", X_OK) != 0) GTEST_SKIP() << "no fusermount3: users cannot mount";
    root_ = tmp_.path();
    for (const char* d : {"src", "mnt", "home", "run"}) {
      const std::string p = root_ + "/" + d;
      ASSERT_EQ(::mkdir(p.c_str(), 0700), 0) << p;
      ASSERT_EQ(::chown(p.c_str(), kNobody, kNogroup), 0) << p;
    }
    ASSERT_EQ(::symlink("/export/${USER}", (root_ + "/src/home").c_str()), 0);
    ASSERT_EQ(::lchown((root_ + "/src/home").c_str(), kNobody, kNogroup), 0);
  }

  void TearDown() override { stop(); }

  std::vector<std::string> user_env(bool with_runtime_dir) const {
    std::vector<std::string> env{"HOME=" + root_ + "/home", "PATH=/usr/bin:/bin", "LC_ALL=C"};
    if (with_runtime_dir) env.push_back("XDG_RUNTIME_DIR=" + root_ + "/run");
    return env;
  }

  // Starts `vsymfs -f` as nobody with `env`; returns once it mounted, or
  // false (with the log in *why) when it exited or took too long.
  bool start(const std::vector<std::string>& env, std::string* why) {
    const std::string log = root_ + "/daemon.log";
    pid_ = ::fork();
    if (pid_ < 0) return false;
    if (pid_ == 0) {
      const int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
      if (fd >= 0) {
        ::dup2(fd, 1);
        ::dup2(fd, 2);
      }
      if (::setgroups(0, nullptr) != 0 || ::setresgid(kNogroup, kNogroup, kNogroup) != 0 ||
          ::setresuid(kNobody, kNobody, kNobody) != 0)
        ::_exit(120);
      std::vector<std::string> args{vsymfs_bin(), "-f", "-o", "builtin_rules", root_ + "/src", root_ + "/mnt"};
      std::vector<char*> argv, envp;
      for (auto& a : args) argv.push_back(a.data());
      argv.push_back(nullptr);
      std::vector<std::string> e = env;
      for (auto& kv : e) envp.push_back(kv.data());
      envp.push_back(nullptr);
      ::execve(argv[0], argv.data(), envp.data());
      ::_exit(127);
    }
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(15);
    while (!mounted(root_ + "/mnt")) {
      int status = 0;
      if (::waitpid(pid_, &status, WNOHANG) == pid_) {
        pid_ = -1;
        exit_status_ = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
        *why = slurp(log);
        return false;
      }
      if (std::chrono::steady_clock::now() > deadline) {
        *why = "did not mount within 15 s: " + slurp(log);
        return false;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    return true;
  }

  void stop() {
    if (pid_ <= 0) return;
    ::kill(pid_, SIGTERM);  // the daemon unmounts (through fusermount3) and exits 0
    int status = 0;
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (::waitpid(pid_, &status, WNOHANG) == 0) {
      if (std::chrono::steady_clock::now() > deadline) {
        ::kill(pid_, SIGKILL);
        ::waitpid(pid_, &status, 0);
        ADD_FAILURE() << "the daemon did not exit within 10 s of SIGTERM";
        break;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    pid_ = -1;
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "status " << status << "; log:\n"
                                                                << slurp(root_ + "/daemon.log");
    if (mounted(root_ + "/mnt")) ::umount2((root_ + "/mnt").c_str(), MNT_DETACH);
  }

  vsymfs::test::TempDir tmp_{"vsymfs-nonroot", 0755, "/tmp"};
  DevFuseOpenToUsers dev_fuse_;
  std::string root_;
  pid_t pid_ = -1;
  int exit_status_ = -1;
};

TEST_F(NonRootDaemon, StartsWithItsDefaultsAndKeepsItsFilesInTheUsersDirectories) {
  std::string why;
  ASSERT_TRUE(start(user_env(true), &why)) << why;
  const As nobody{kNobody, kNogroup, {}, user_env(true)};

  int status = -1;
  EXPECT_EQ(capture_as(nobody, {"readlink", root_ + "/mnt/home"}, &status), "/export/nobody\n");
  EXPECT_EQ(status, 0);
  EXPECT_EQ(capture_as(nobody, {"touch", root_ + "/mnt/made-by-nobody"}, &status), "");
  EXPECT_EQ(status, 0);
  struct stat st {};
  ASSERT_EQ(::lstat((root_ + "/src/made-by-nobody").c_str(), &st), 0);
  EXPECT_EQ(st.st_uid, kNobody);

  // Without CAP_SYS_ADMIN the kernel takes no backing files: reads and
  // writes go through the daemon (the passthrough fallback), and must work.
  EXPECT_NE(slurp(root_ + "/daemon.log").find("passthrough: off"), std::string::npos) << slurp(root_ + "/daemon.log");
  const std::string data(300000, 'v');
  status = run_as(nobody, [&] {
    const int fd = ::open((root_ + "/mnt/data").c_str(), O_CREAT | O_WRONLY | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) return 10;
    if (::write(fd, data.data(), data.size()) != static_cast<ssize_t>(data.size())) return 11;
    if (::close(fd) != 0) return 12;
    return slurp(root_ + "/mnt/data") == data ? 0 : 13;
  });
  EXPECT_EQ(status, 0) << "10 open, 11 write, 12 close, 13 read back";
  EXPECT_EQ(slurp(root_ + "/src/data"), data);

  // The socket: in $XDG_RUNTIME_DIR/vsymfs, which only nobody may enter.
  const std::string run = root_ + "/run/vsymfs";
  ASSERT_EQ(::stat(run.c_str(), &st), 0) << "no " << run;
  EXPECT_EQ(st.st_mode & 07777, 0700u);
  EXPECT_EQ(st.st_uid, kNobody);
  std::vector<std::string> sockets;
  for (const auto& e : fs::directory_iterator(run))
    if (e.is_socket()) sockets.push_back(e.path());
  ASSERT_EQ(sockets.size(), 1u);
  const std::string out = capture_as(nobody, {vsymctl_bin(), "-m", root_ + "/mnt", "status"}, &status);
  EXPECT_EQ(status, 0) << out;
  EXPECT_NE(out.find("socket: " + sockets[0]), std::string::npos) << out;

  // Run-time values: in ~/.local/state/vsymfs, private, and really saved.
  capture_as(nobody, {vsymctl_bin(), "-m", root_ + "/mnt", "set", "PROJECT", "apollo"}, &status);
  EXPECT_EQ(status, 0);
  const std::string state = root_ + "/home/.local/state/vsymfs";
  ASSERT_EQ(::stat(state.c_str(), &st), 0) << "no " << state;
  EXPECT_EQ(st.st_mode & 07777, 0700u);
  std::string saved;
  for (const auto& e : fs::directory_iterator(state)) saved += slurp(e.path());
  EXPECT_NE(saved.find("apollo"), std::string::npos) << saved;
}

// Without $XDG_RUNTIME_DIR the socket goes to /tmp/vsymfs-UID, which must be
// the user's own: one made first by someone else is refused, with the reason.
TEST_F(NonRootDaemon, RefusesARuntimeDirectorySomeoneElseMadeFirst) {
  const std::string shared = "/tmp/vsymfs-" + std::to_string(kNobody);
  if (::mkdir(shared.c_str(), 0777) != 0) GTEST_SKIP() << shared << " exists already; not touching it";
  ::chmod(shared.c_str(), 0777);
  std::string why;
  const bool started = start(user_env(false), &why);
  ::rmdir(shared.c_str());
  ASSERT_FALSE(started) << "mounted with a socket directory root made";
  EXPECT_NE(exit_status_, 0);
  EXPECT_NE(why.find("refusing to use " + shared + ": it belongs to uid 0"), std::string::npos) << why;
}

}  // namespace
}  // namespace vsymfs::testing
