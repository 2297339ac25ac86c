// Per-thread identity: a switch changes only the calling thread's fs ids
// and capabilities, a non-root identity holds no capability in effect, the
// scopes for daemon work take exactly what they need and give it back, and
// a thread started by a switched thread (libfuse starts workers from
// workers) does not trust what it inherited.
#include "daemon/identity.hpp"

#include <linux/capability.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cstdint>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

namespace {

using vsymfs::daemon::kBackingGid;
using vsymfs::daemon::kBackingUid;
using vsymfs::daemon::ReservedFor;
using vsymfs::daemon::ScopedAdminCapability;
using vsymfs::daemon::ScopedBackingIdentity;
using vsymfs::daemon::ScopedDaemonIdentity;
using vsymfs::daemon::ThreadIdentity;

uid_t fsuid_now() { return static_cast<uid_t>(::syscall(SYS_setfsuid, static_cast<uid_t>(-1))); }
gid_t fsgid_now() { return static_cast<gid_t>(::syscall(SYS_setfsgid, static_cast<gid_t>(-1))); }

std::vector<gid_t> groups_now() {
  std::vector<gid_t> g(64);
  long n = ::syscall(SYS_getgroups, static_cast<int>(g.size()), g.data());
  g.resize(n > 0 ? static_cast<size_t>(n) : 0);
  return g;
}

// This thread's effective capability set (CapEff in /proc/thread-self/status).
std::uint64_t effective_caps() {
  std::ifstream in("/proc/thread-self/status");
  std::string line;
  while (std::getline(in, line))
    if (line.rfind("CapEff:", 0) == 0) return std::stoull(line.substr(7), nullptr, 16);
  ADD_FAILURE() << "no CapEff line";
  return ~0ull;
}

constexpr std::uint64_t bit(int cap) { return 1ull << cap; }

class Identity : public ::testing::Test {
 protected:
  void SetUp() override {
    if (::geteuid() != 0) GTEST_SKIP() << "switching fs ids needs root";
    ASSERT_TRUE(ThreadIdentity::init());
    daemon_caps_ = effective_caps();
    ASSERT_NE(daemon_caps_ & bit(CAP_SYS_ADMIN), 0u) << "the tests need CAP_SYS_ADMIN in effect";
  }
  std::uint64_t daemon_caps_ = 0;
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

// The hardening item: a worker acting for a user keeps no
// capability (CAP_SYS_RESOURCE would pass reserved blocks and quotas,
// CAP_SYS_PTRACE would open other users' /proc files inside SOURCE, ...);
// a root caller and the daemon's own work have the daemon's.
TEST_F(Identity, ANonRootIdentityHoldsNoCapabilityAndRootGetsTheDaemons) {
  std::thread worker([&] {
    const gid_t groups[] = {3000};
    ASSERT_EQ(ThreadIdentity::become(1234, 1234, groups), 0);
    EXPECT_EQ(effective_caps(), 0u);
    ASSERT_EQ(ThreadIdentity::become(1235, 1235, {}), 0);  // user to user needs CAP_SETUID on the way
    EXPECT_EQ(fsuid_now(), 1235u);
    EXPECT_EQ(effective_caps(), 0u);
    ASSERT_EQ(ThreadIdentity::become(0, 0, {}), 0);  // a root caller
    EXPECT_EQ(fsuid_now(), 0u);
    EXPECT_EQ(effective_caps(), daemon_caps_);
    ASSERT_EQ(ThreadIdentity::become(1234, 1234, groups), 0);
    EXPECT_EQ(effective_caps(), 0u);
    ASSERT_EQ(ThreadIdentity::become_daemon(), 0);
    EXPECT_EQ(effective_caps(), daemon_caps_);
  });
  worker.join();
  EXPECT_EQ(effective_caps(), daemon_caps_) << "another thread's switch changed this one";
}

TEST_F(Identity, RepeatedIdentityChangesNoCapability) {
  std::thread worker([] {
    ASSERT_EQ(ThreadIdentity::become(1234, 1234, {}), 0);
    const unsigned long before = ThreadIdentity::capability_changes();
    for (int i = 0; i < 100; ++i) ASSERT_EQ(ThreadIdentity::become(1234, 1234, {}), 0);
    EXPECT_EQ(ThreadIdentity::capability_changes(), before);
  });
  worker.join();
}

TEST_F(Identity, ScopedDaemonIdentityLendsTheCapabilitiesAndTakesThemBack) {
  std::thread worker([&] {
    ASSERT_EQ(ThreadIdentity::become(1234, 1234, {}), 0);
    {
      ScopedDaemonIdentity as_daemon;
      EXPECT_EQ(fsuid_now(), 0u);
      EXPECT_EQ(effective_caps(), daemon_caps_);
    }
    EXPECT_EQ(fsuid_now(), 1234u);
    EXPECT_EQ(effective_caps(), 0u);
  });
  worker.join();
}

// Backing files keep their registrant's credentials for every opener's I/O:
// CAP_SYS_ADMIN (the ioctl needs it) and nothing else in effect, and no id
// the filesystem keeps reserved blocks for.
struct BackingCase {
  const char* what;
  ReservedFor reserve;
  uid_t uid;
  std::vector<gid_t> groups;
  uid_t want_uid;
  gid_t want_gid;
  std::vector<gid_t> want_groups;
};

TEST_F(Identity, ScopedBackingIdentityHoldsOnlyCapSysAdminAndNoReservedId) {
  const ReservedFor ext4_default{.known = true, .any = true, .uid = 0, .gid = 0};
  const ReservedFor ext4_custom{.known = true, .any = true, .uid = 65534, .gid = 3000};
  const ReservedFor xfs{.known = true, .any = false};
  const ReservedFor unknown{};
  const std::vector<BackingCase> cases = {
      {"root caller, ext4 defaults", ext4_default, 0, {3000}, kBackingUid, 0, {3000}},
      {"user, ext4 defaults", ext4_default, 1234, {3000}, 1234, 1234, {3000}},
      {"user in the resgid group", ext4_custom, 1234, {3000}, 1234, kBackingGid, {}},
      {"the resuid user", ext4_custom, 65534, {}, kBackingUid, 65534, {}},
      {"root caller, no uid reserve", xfs, 0, {3000}, 0, 0, {3000}},
      {"reserve unknown", unknown, 1234, {3000}, kBackingUid, kBackingGid, {}},
  };
  for (const BackingCase& c : cases) {
    SCOPED_TRACE(c.what);
    std::thread worker([&] {
      ASSERT_EQ(ThreadIdentity::become(c.uid, c.uid, c.groups), 0);
      const std::uint64_t before = effective_caps();
      {
        ScopedBackingIdentity as_backing(c.reserve);
        ASSERT_TRUE(as_backing.ok());
        EXPECT_EQ(fsuid_now(), c.want_uid);
        EXPECT_EQ(fsgid_now(), c.want_gid);
        EXPECT_EQ(groups_now(), c.want_groups);
        EXPECT_EQ(effective_caps(), bit(CAP_SYS_ADMIN));
      }
      EXPECT_EQ(fsuid_now(), c.uid);
      EXPECT_EQ(fsgid_now(), c.uid);
      EXPECT_EQ(groups_now(), c.groups);
      EXPECT_EQ(effective_caps(), before);
    });
    worker.join();
  }
}

// The common case, a user on a filesystem whose reserve is not hers, costs
// two capset calls and no id switch.
TEST_F(Identity, ScopedBackingIdentityForAnOrdinaryUserSwitchesNoIds) {
  std::thread worker([] {
    ASSERT_EQ(ThreadIdentity::become(1234, 1234, {}), 0);
    const unsigned long ids = ThreadIdentity::switches(), caps = ThreadIdentity::capability_changes();
    { ScopedBackingIdentity as_backing(ReservedFor{.known = true, .any = true}); }
    EXPECT_EQ(ThreadIdentity::switches(), ids);
    EXPECT_EQ(ThreadIdentity::capability_changes(), caps + 2);
  });
  worker.join();
}

TEST_F(Identity, ScopedAdminCapabilityKeepsTheIds) {
  std::thread worker([] {
    ASSERT_EQ(ThreadIdentity::become(1234, 1234, {}), 0);
    {
      ScopedAdminCapability as_admin;
      EXPECT_EQ(fsuid_now(), 1234u);
      EXPECT_EQ(effective_caps(), bit(CAP_SYS_ADMIN));
    }
    EXPECT_EQ(effective_caps(), 0u);
  });
  worker.join();
}

// A worker that never switched (every worker under -o single_user, which
// runs everything as the daemon) and closes a backing id must keep the
// daemon's capabilities afterwards, not be left with none.
TEST_F(Identity, ScopedAdminCapabilityInAThreadThatNeverSwitchedLeavesTheDaemonsSet) {
  std::thread worker([&] {
    { ScopedAdminCapability as_admin; }
    EXPECT_EQ(effective_caps(), daemon_caps_);
    EXPECT_EQ(fsuid_now(), 0u);
  });
  worker.join();
}

// libfuse starts a worker from inside a worker: the new thread inherits a
// caller's ids and an empty capability set, and must get the daemon's back.
TEST_F(Identity, AThreadStartedByACallerThreadGetsTheDaemonsCapabilitiesBack) {
  std::thread parent([&] {
    ASSERT_EQ(ThreadIdentity::become(1234, 1234, {}), 0);
    std::thread child([&] {
      EXPECT_EQ(effective_caps(), 0u) << "inherited at thread creation";
      {
        ScopedDaemonIdentity as_daemon;
        EXPECT_EQ(effective_caps(), daemon_caps_);
      }
      ASSERT_EQ(ThreadIdentity::become(1235, 1235, {}), 0);
      EXPECT_EQ(effective_caps(), 0u);
      ASSERT_EQ(ThreadIdentity::become(0, 0, {}), 0);
      EXPECT_EQ(effective_caps(), daemon_caps_);
    });
    child.join();
  });
  parent.join();
}

}  // namespace
