// Per-thread identity: a switch changes only the calling thread's fs ids,
// and a thread started by a switched thread (libfuse starts workers from
// workers) does not trust what it inherited.
#include "identity.hpp"

#include <sys/syscall.h>
#include <unistd.h>

#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

namespace {

using vsymfs::fs::ScopedDaemonIdentity;
using vsymfs::fs::ThreadIdentity;

uid_t fsuid_now() { return static_cast<uid_t>(::syscall(SYS_setfsuid, static_cast<uid_t>(-1))); }
gid_t fsgid_now() { return static_cast<gid_t>(::syscall(SYS_setfsgid, static_cast<gid_t>(-1))); }

std::vector<gid_t> groups_now() {
  std::vector<gid_t> g(64);
  long n = ::syscall(SYS_getgroups, static_cast<int>(g.size()), g.data());
  g.resize(n > 0 ? static_cast<size_t>(n) : 0);
  return g;
}

class Identity : public ::testing::Test {
 protected:
  void SetUp() override {
    if (::geteuid() != 0) GTEST_SKIP() << "switching fs ids needs root";
    ASSERT_TRUE(ThreadIdentity::init());
  }
};

TEST_F(Identity, SwitchChangesOnlyThisThread) {
  std::thread worker([] {
    const gid_t groups[] = {3000, 3001};
    ASSERT_EQ(ThreadIdentity::become(1234, 4321, groups), 0);
    EXPECT_EQ(fsuid_now(), 1234u);
    EXPECT_EQ(fsgid_now(), 4321u);
    EXPECT_EQ(groups_now(), (std::vector<gid_t>{3000, 3001}));
    ASSERT_EQ(ThreadIdentity::become_daemon(), 0);
    EXPECT_EQ(fsuid_now(), 0u);
  });
  worker.join();
  EXPECT_EQ(fsuid_now(), 0u);
  EXPECT_EQ(::geteuid(), 0u);
}

TEST_F(Identity, RepeatedIdentityCostsNoSyscall) {
  std::thread worker([] {
    const gid_t groups[] = {3000};
    ASSERT_EQ(ThreadIdentity::become(1234, 1234, groups), 0);
    const unsigned long before = ThreadIdentity::switches();
    for (int i = 0; i < 100; ++i) ASSERT_EQ(ThreadIdentity::become(1234, 1234, groups), 0);
    EXPECT_EQ(ThreadIdentity::switches(), before);
    const gid_t other[] = {3001};
    ASSERT_EQ(ThreadIdentity::become(1234, 1234, other), 0);  // same ids, other groups: a switch
    EXPECT_EQ(ThreadIdentity::switches(), before + 1);
    EXPECT_EQ(groups_now(), (std::vector<gid_t>{3001}));
  });
  worker.join();
}

TEST_F(Identity, AThreadStartedBySwitchedThreadSwitchesOnFirstUse) {
  std::thread parent([] {
    ASSERT_EQ(ThreadIdentity::become(1234, 1234, {}), 0);
    std::thread child([] {
      EXPECT_EQ(fsuid_now(), 1234u) << "credentials are inherited at thread creation";
      // Asking for the daemon's identity must really switch back.
      ASSERT_EQ(ThreadIdentity::become_daemon(), 0);
      EXPECT_EQ(fsuid_now(), 0u);
    });
    child.join();
  });
  parent.join();
}

TEST_F(Identity, ScopedDaemonIdentityRestoresTheCaller) {
  std::thread worker([] {
    const gid_t groups[] = {3000};
    ASSERT_EQ(ThreadIdentity::become(1234, 1234, groups), 0);
    {
      ScopedDaemonIdentity as_daemon;
      EXPECT_EQ(fsuid_now(), 0u);
    }
    EXPECT_EQ(fsuid_now(), 1234u);
    EXPECT_EQ(groups_now(), (std::vector<gid_t>{3000}));
  });
  worker.join();
}

}  // namespace
