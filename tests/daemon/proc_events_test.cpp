#include "daemon/proc_events.hpp"

#include <poll.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <string>
#include <vector>

#include <gtest/gtest.h>

namespace vsymfs::daemon {
namespace {

using namespace std::chrono_literals;

// Opens the connector, or says why not (for the SKIP line).
std::unique_ptr<ProcEvents> open_or_skip(std::string& why) {
  auto ev = ProcEvents::open(10s);
  if (!ev) {
    why = "process events connector unavailable: " + ev.error().message;
    return nullptr;
  }
  return std::move(*ev);
}

// Collects the pids reported until `want` is among them `times` times, or
// 30 s pass (a deadline for a machine under load; it returns at once when
// the events are there).
bool wait_for_pid(ProcEvents& ev, pid_t want, std::vector<pid_t>& seen, long times = 1) {
  const auto deadline = std::chrono::steady_clock::now() + 30s;
  while (std::chrono::steady_clock::now() < deadline) {
    pollfd p{ev.fd(), POLLIN, 0};
    ::poll(&p, 1, 100);
    EXPECT_TRUE(ev.drain([&](pid_t pid) { seen.push_back(pid); }));
    if (std::count(seen.begin(), seen.end(), want) >= times) return true;
  }
  return false;
}

TEST(ProcEvents, ReportsExecAndExit) {
  std::string why;
  auto ev = open_or_skip(why);
  if (!ev) GTEST_SKIP() << why;
  int go[2];
  ASSERT_EQ(::pipe(go), 0);
  pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    char c;
    ::close(go[1]);
    if (::read(go[0], &c, 1) != 1) ::_exit(1);
    const char* argv[] = {"/bin/true", nullptr};
    ::execv(argv[0], const_cast<char* const*>(argv));
    ::_exit(127);
  }
  ::close(go[0]);
  // Its fork: the id is new.
  std::vector<pid_t> seen;
  ASSERT_TRUE(wait_for_pid(*ev, child, seen)) << "no fork event for the child";
  seen.clear();

  ASSERT_EQ(::write(go[1], "x", 1), 1);
  ::close(go[1]);
  int status = 0;
  ::waitpid(child, &status, 0);
  // exec and exit: two reports of the child. Not "by the time waitpid
  // returns": the kernel wakes the parent before it reports the exit.
  EXPECT_TRUE(wait_for_pid(*ev, child, seen, 2)) << "the child was reported " << std::count(seen.begin(), seen.end(), child)
                                                 << " times, not twice (exec and exit)";
}

TEST(ProcEvents, AnIdleSocketDrainsToNothing) {
  std::string why;
  auto ev = open_or_skip(why);
  if (!ev) GTEST_SKIP() << why;
  int calls = 0;
  // Whatever the rest of the machine does, a drain returns without blocking:
  // a blocking read would wait for the next event for ever on an idle
  // machine and drain for ever on a busy one. The bound is for a loaded
  // machine; a drain takes microseconds.
  const auto t0 = std::chrono::steady_clock::now();
  EXPECT_TRUE(ev->drain([&](pid_t) { ++calls; }));
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 10s);
}

// pending() is what requests ask instead of draining: it must see a queued
// event and leave it for drain().
TEST(ProcEvents, PendingSeesAQueuedEventWithoutConsumingIt) {
  std::string why;
  auto ev = open_or_skip(why);
  if (!ev) GTEST_SKIP() << why;
  pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) ::_exit(0);
  ::waitpid(child, nullptr, 0);
  // The fork event was queued before fork() returned here (the exit event
  // may still be on its way: the kernel reports an exit after it has woken
  // the parent's waitpid).
  EXPECT_TRUE(ev->pending());
  EXPECT_TRUE(ev->pending()) << "asking consumed the event";
  std::vector<pid_t> seen;
  EXPECT_TRUE(ev->drain([&](pid_t pid) { seen.push_back(pid); }));
  EXPECT_NE(std::find(seen.begin(), seen.end(), child), seen.end()) << "the event pending() saw was not drained";
}

}  // namespace
}  // namespace vsymfs::daemon
