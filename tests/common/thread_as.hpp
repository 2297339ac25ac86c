// Runs test code as another user without forking. A test whose process
// has other threads (a server under test, its helper pools) must not run
// code in a forked child: a lock another thread held at fork time (the
// allocator's, stdio's; ASan's allocator has no fork handlers at all)
// stays locked in the child for ever, and the child hangs.
//
// The code runs in a new thread that changes only its own credentials,
// with the raw system calls: glibc's setresuid() and friends change every
// thread of the process, the kernel's change the calling thread only.
// What the kernel checks for a file access, and what it records for a
// connect() on a unix socket (SO_PEERCRED's uid and gid, SO_PEERGROUPS),
// are the calling thread's credentials. SO_PEERCRED's pid is still this
// process's: this suits a peer that judges the caller by the credentials
// the kernel reports, not one that reads /proc/<pid> of the caller.
#pragma once

#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <future>
#include <thread>

namespace vsymfs::test {

// Exit codes of run_in_thread_as that are not fn's.
inline constexpr int kThreadAsSwitchFailed = 99;  // the credentials could not be changed
inline constexpr int kThreadAsThrew = 98;         // fn threw

// Runs `fn` in a new thread with uid `uid`, gid `gid` (real, effective and
// saved) and no supplementary groups, and returns what fn returned. The
// thread is waited for at most `limit`: it uses its caller's state, so a
// test whose thread is stuck cannot go on, and the test program ends with
// a message naming the test (abort) instead of hanging.
inline int run_in_thread_as(uid_t uid, gid_t gid, const std::function<int()>& fn,
                            std::chrono::seconds limit = std::chrono::seconds(120)) {
  // The kernel makes the process non-dumpable when a thread changes its
  // effective ids (the flag belongs to the shared mm); put back afterwards.
  const int dumpable = ::prctl(PR_GET_DUMPABLE);
  std::promise<int> result;
  std::future<int> done = result.get_future();
  std::thread thread([&] {
    int rc = kThreadAsSwitchFailed;
    if (::syscall(SYS_setgroups, 0, nullptr) == 0 && ::syscall(SYS_setresgid, gid, gid, gid) == 0 &&
        ::syscall(SYS_setresuid, uid, uid, uid) == 0 && ::getuid() == uid && ::geteuid() == uid &&
        ::getgid() == gid && ::getegid() == gid && ::getgroups(0, nullptr) == 0) {
      try {
        rc = fn();
      } catch (...) {
        rc = kThreadAsThrew;
      }
    }
    result.set_value(rc);
  });
  if (done.wait_for(limit) != std::future_status::ready) {
    const ::testing::TestInfo* t = ::testing::UnitTest::GetInstance()->current_test_info();
    std::fprintf(stderr, "%s.%s: code run as uid %u did not finish within %lld s; aborting the test program\n",
                 t ? t->test_suite_name() : "?", t ? t->name() : "?", static_cast<unsigned>(uid),
                 static_cast<long long>(limit.count()));
    std::fflush(stderr);
    std::abort();
  }
  thread.join();
  if (dumpable >= 0) ::prctl(PR_SET_DUMPABLE, dumpable);
  return done.get();
}

}  // namespace vsymfs::test
