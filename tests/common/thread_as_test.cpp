// run_in_thread_as: only the thread takes the other identity, a unix socket
// peer sees that identity, the process is as it was afterwards, a switch
// that fails is reported rather than running the code as root, and a
// thread that never finishes ends the program rather than hanging it.
#include "common/thread_as.hpp"

#include <fcntl.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <string>
#include <vector>

#include "common/temp_dir.hpp"

namespace vsymfs::test {
namespace {

// The "Uid:" line of a /proc status file, e.g. "0\t0\t0\t0".
std::string uid_line(const std::string& path) {
  std::ifstream in(path);
  std::string line;
  while (std::getline(in, line))
    if (line.rfind("Uid:\t", 0) == 0) return line.substr(5);
  return "<no Uid line in " + path + ">";
}

TEST(RunInThreadAs, OnlyTheThreadChangesAndASocketPeerSeesItsIdentity) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to act as another uid";
  const TempDir dir("vsymfs-thread-as", 0755, "/tmp");
  const std::string path = dir.path() + "/sock";
  const int listener = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  ASSERT_GE(listener, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::strncpy(addr.sun_path, path.c_str(), sizeof addr.sun_path - 1);
  ASSERT_EQ(::bind(listener, reinterpret_cast<const sockaddr*>(&addr), sizeof addr), 0);
  ASSERT_EQ(::chmod(path.c_str(), 0666), 0);
  ASSERT_EQ(::listen(listener, 4), 0);
  const int dumpable = ::prctl(PR_GET_DUMPABLE);

  std::string thread_uids, process_uids;
  const int rc = run_in_thread_as(65534, 65533, [&] {
    thread_uids = uid_line("/proc/thread-self/status");
    process_uids = uid_line("/proc/self/status");  // the main thread's
    const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    const bool connected = ::connect(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof addr) == 0;
    ::close(fd);  // the kernel recorded the credentials at connect
    return connected ? 7 : 1;
  });
  EXPECT_EQ(rc, 7) << "fn's value is returned";
  EXPECT_EQ(thread_uids, "65534\t65534\t65534\t65534");
  EXPECT_EQ(process_uids, "0\t0\t0\t0") << "the other threads kept their credentials";
  EXPECT_EQ(::geteuid(), 0u);
  EXPECT_EQ(::prctl(PR_GET_DUMPABLE), dumpable) << "dumpable is put back";

  const int conn = ::accept4(listener, nullptr, nullptr, SOCK_CLOEXEC);
  ASSERT_GE(conn, 0);
  ucred peer{};
  socklen_t len = sizeof peer;
  ASSERT_EQ(::getsockopt(conn, SOL_SOCKET, SO_PEERCRED, &peer, &len), 0);
  EXPECT_EQ(peer.uid, 65534u);
  EXPECT_EQ(peer.gid, 65533u);
  EXPECT_EQ(peer.pid, ::getpid());
  std::vector<gid_t> groups(8);
  len = static_cast<socklen_t>(groups.size() * sizeof(gid_t));
  ASSERT_EQ(::getsockopt(conn, SOL_SOCKET, SO_PEERGROUPS, groups.data(), &len), 0);
  EXPECT_EQ(len, 0u) << "no supplementary groups";
  ::close(conn);
  ::close(listener);
}

// A thread that may not switch (here: one that already left root) runs
// nothing and says so.
TEST(RunInThreadAs, AFailedSwitchRunsNothing) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to act as another uid";
  bool ran = false;
  const int rc = run_in_thread_as(65534, 65534, [&] {
    return run_in_thread_as(0, 0, [&] {
      ran = true;
      return 0;
    });
  });
  EXPECT_EQ(rc, kThreadAsSwitchFailed);
  EXPECT_FALSE(ran);
}

// Code that never finishes ends the test program with a message naming the
// test, instead of hanging it.
TEST(RunInThreadAsDeathTest, AThreadThatNeverFinishesAbortsTheProgramSayingSo) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to act as another uid";
  EXPECT_DEATH(
      {
        int never[2];
        if (::pipe2(never, O_CLOEXEC) != 0) std::abort();
        run_in_thread_as(
            65534, 65534,
            [&] {
              char c;
              return static_cast<int>(::read(never[0], &c, 1));  // nobody writes
            },
            std::chrono::seconds(1));
      },
      "RunInThreadAsDeathTest.AThreadThatNeverFinishesAbortsTheProgramSayingSo: code run as uid 65534 did not "
      "finish within 1 s");
}

}  // namespace
}  // namespace vsymfs::test
