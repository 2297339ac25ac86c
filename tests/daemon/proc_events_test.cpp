#include "proc_events.hpp"

#include <poll.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <vector>

#include <gtest/gtest.h>

namespace vsymfs::daemon {
namespace {

using namespace std::chrono_literals;

std::unique_ptr<ProcEvents> open_or_skip() {
  auto ev = ProcEvents::open(500ms);
  if (!ev) return nullptr;
  return std::move(*ev);
}

// Collects the pids reported until `want` is among them or 2 s pass.
bool wait_for_pid(ProcEvents& ev, pid_t want, std::vector<pid_t>& seen) {
  const auto deadline = std::chrono::steady_clock::now() + 2s;
  while (std::chrono::steady_clock::now() < deadline) {
    pollfd p{ev.fd(), POLLIN, 0};
    ::poll(&p, 1, 100);
    EXPECT_TRUE(ev.drain([&](pid_t pid) { seen.push_back(pid); }));
    if (std::find(seen.begin(), seen.end(), want) != seen.end()) return true;
  }
  return false;
}

TEST(ProcEvents, ReportsExecAndExit) {
  auto ev = open_or_skip();
  if (!ev) GTEST_SKIP() << "process events connector unavailable (needs root in the initial namespaces)";
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
  ASSERT_TRUE(wait_for_pid(*ev, child, seen)) << "no exec/exit event for the child";
  // exec and exit: two reports of the child (the exit is queued before
  // waitpid returns)
  ev->drain([&](pid_t pid) { seen.push_back(pid); });
  EXPECT_GE(std::count(seen.begin(), seen.end(), child), 2);
}

TEST(ProcEvents, AnIdleSocketDrainsToNothing) {
  auto ev = open_or_skip();
  if (!ev) GTEST_SKIP() << "process events connector unavailable";
  int calls = 0;
  // Whatever the rest of the machine does, a drain returns without blocking.
  const auto t0 = std::chrono::steady_clock::now();
  EXPECT_TRUE(ev->drain([&](pid_t) { ++calls; }));
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 1s);
}

// pending() is what requests ask instead of draining: it must see a queued
// event and leave it for drain().
TEST(ProcEvents, PendingSeesAQueuedEventWithoutConsumingIt) {
  auto ev = open_or_skip();
  if (!ev) GTEST_SKIP() << "process events connector unavailable";
  pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) ::_exit(0);
  ::waitpid(child, nullptr, 0);
  // The exit event was queued before waitpid returned.
  EXPECT_TRUE(ev->pending());
  EXPECT_TRUE(ev->pending()) << "asking consumed the event";
  std::vector<pid_t> seen;
  EXPECT_TRUE(ev->drain([&](pid_t pid) { seen.push_back(pid); }));
  EXPECT_NE(std::find(seen.begin(), seen.end(), child), seen.end()) << "the event pending() saw was not drained";
}

}  // namespace
}  // namespace vsymfs::daemon
