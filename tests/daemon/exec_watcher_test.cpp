// ExecWatcher::sync() (exec_watcher.hpp): when it returns, every exec event
// queued before it was called has been applied, whether the watcher checks
// its io_uring doorbell (no syscall) or polls the events socket.
#include "daemon/exec_watcher.hpp"

#include <liburing.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <mutex>
#include <set>
#include <string>

#include <gtest/gtest.h>

namespace vsymfs::daemon {
namespace {

struct Forgotten {
  std::mutex mu;
  std::set<pid_t> pids;
  long all = 0;
  bool has(pid_t p) {
    std::lock_guard lock(mu);
    return pids.count(p) != 0 || all != 0;
  }
};

std::unique_ptr<ExecWatcher> open_watcher(Forgotten& f, bool thread_drains = true) {
  return ExecWatcher::open(
      [&f](pid_t p) {
        std::lock_guard lock(f.mu);
        f.pids.insert(p);
      },
      [&f] {
        std::lock_guard lock(f.mu);
        ++f.all;
      },
      thread_drains);
}

// Whether this process may make the ring the doorbell needs.
std::string why_no_ring() {
  io_uring ring{};
  io_uring_params p{};
  p.flags = IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN | IORING_SETUP_TASKRUN_FLAG;
  const int r = io_uring_queue_init_params(4, &ring, &p);
  if (r != 0) return "io_uring with DEFER_TASKRUN refused here: " + std::string(strerror(-r));
  io_uring_queue_exit(&ring);
  return "";
}

// A child that execs a shell, which writes one byte to `fd` from its new
// image: when the parent has read it, the exec event is queued (the kernel
// queues it before the new image runs).
pid_t exec_and_signal(int fd) {
  const pid_t child = ::fork();
  if (child == 0) {
    ::dup2(fd, 3);
    const char* argv[] = {"/bin/sh", "-c", "printf x >&3", nullptr};
    ::execv(argv[0], const_cast<char* const*>(argv));
    ::_exit(127);
  }
  return child;
}

TEST(ExecWatcher, UsesTheDoorbellWhereTheKernelLetsIt) {
  Forgotten f;
  auto w = open_watcher(f);
  if (!w) GTEST_SKIP() << "process events connector unavailable (needs CAP_NET_ADMIN, the initial namespaces)";
  const std::string why = why_no_ring();
  if (!why.empty()) GTEST_SKIP() << why;
  // The thread sets it up after open() returns: wait for it (an event, not a timer).
  for (int i = 0; i < 10000 && !w->doorbell(); ++i) ::usleep(1000);
  EXPECT_TRUE(w->doorbell());
}

// Each time: the child's exec is applied by the time sync() returns. With
// the watcher's thread racing us to it (it mostly wins), and with a thread
// that leaves every event to sync(), which must then see it by itself.
class SyncTest : public ::testing::TestWithParam<bool> {};
INSTANTIATE_TEST_SUITE_P(ExecWatcher, SyncTest, ::testing::Values(true, false),
                         [](const ::testing::TestParamInfo<bool>& p) { return p.param ? "ThreadDrains" : "OnlySyncDrains"; });

TEST_P(SyncTest, SyncAppliesEveryExecQueuedBeforeIt) {
  Forgotten f;
  auto w = open_watcher(f, GetParam());
  if (!w) GTEST_SKIP() << "process events connector unavailable (needs CAP_NET_ADMIN, the initial namespaces)";
  if (why_no_ring().empty())
    for (int i = 0; i < 10000 && !w->doorbell(); ++i) ::usleep(1000);  // the thread sets it up
  int missed = 0, runs = 0;
  for (int i = 0; i < 200; ++i) {
    int p[2];
    ASSERT_EQ(::pipe(p), 0);
    const pid_t child = exec_and_signal(p[1]);
    ASSERT_GT(child, 0);
    ::close(p[1]);
    char c = 0;
    const bool ran = ::read(p[0], &c, 1) == 1;
    ::close(p[0]);
    if (ran) {
      ++runs;
      w->sync();
      if (!f.has(child)) ++missed;
    }
    int status = 0;
    ::waitpid(child, &status, 0);
  }
  ASSERT_GT(runs, 0) << "the shell never ran";
  EXPECT_EQ(missed, 0) << "of " << runs << " execs, " << missed << " were not applied when sync() returned"
                       << (w->doorbell() ? " (doorbell)" : " (poll)");
}

}  // namespace
}  // namespace vsymfs::daemon
