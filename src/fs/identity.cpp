#include "identity.hpp"

#include <sched.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>

namespace vsymfs::fs {

namespace {

FsIds g_daemon;           // written once by init(), read-only afterwards
bool g_can_switch = false;

struct ThreadState {
  // False until this thread first switches. A new thread inherits the
  // credentials of the thread that created it, and libfuse starts workers
  // from inside other workers: an unknown state may be any caller's.
  bool known = false;
  FsIds ids;
  unsigned long switches = 0;
};
thread_local ThreadState t_state;

bool same(const FsIds& cur, uid_t uid, gid_t gid, std::span<const gid_t> groups) {
  return cur.uid == uid && cur.gid == gid && std::equal(cur.groups.begin(), cur.groups.end(), groups.begin(), groups.end());
}

}  // namespace

bool ThreadIdentity::init() {
  g_daemon.uid = ::geteuid();
  g_daemon.gid = ::getegid();
  int n = ::getgroups(0, nullptr);
  if (n > 0) {
    g_daemon.groups.resize(static_cast<std::size_t>(n));
    n = ::getgroups(n, g_daemon.groups.data());
    g_daemon.groups.resize(n > 0 ? static_cast<std::size_t>(n) : 0);
  }
  // setfsuid/setgroups need CAP_SETUID/CAP_SETGID; in practice that is root.
  g_can_switch = g_daemon.uid == 0;
  return g_can_switch;
}

bool ThreadIdentity::can_switch() noexcept { return g_can_switch; }

int ThreadIdentity::become(uid_t uid, gid_t gid, std::span<const gid_t> groups) {
  if (!g_can_switch) return 0;
  ThreadState& st = t_state;
  if (st.known && same(st.ids, uid, gid, groups)) return 0;
  // Groups first: setgroups needs CAP_SETGID, which a non-zero fsuid does not
  // clear, but keeping the fsuid change last keeps the window where the
  // thread has mixed credentials as small as one syscall.
  if (::syscall(SYS_setgroups, groups.size(), groups.data()) != 0) return errno;
  ::syscall(SYS_setfsgid, gid);
  ::syscall(SYS_setfsuid, uid);
  // setfsuid/setfsgid report failure only through the value they return on
  // the next call; ask again so a refused switch is never silent.
  if (static_cast<uid_t>(::syscall(SYS_setfsuid, static_cast<uid_t>(-1))) != uid ||
      static_cast<gid_t>(::syscall(SYS_setfsgid, static_cast<gid_t>(-1))) != gid) {
    st.known = false;
    return EPERM;
  }
  st.ids.uid = uid;
  st.ids.gid = gid;
  st.ids.groups.assign(groups.begin(), groups.end());
  st.known = true;
  ++st.switches;
  return 0;
}

int ThreadIdentity::become_daemon() { return become(g_daemon.uid, g_daemon.gid, g_daemon.groups); }

unsigned long ThreadIdentity::switches() noexcept { return t_state.switches; }

int ThreadIdentity::use_umask(mode_t mask) {
  // What this thread's private umask is, once it has one.
  thread_local bool own = false;
  thread_local mode_t current = 0;
  if (!own) {
    if (::unshare(CLONE_FS) != 0) return errno;
    own = true;
    ::umask(mask);
    current = mask;
    return 0;
  }
  if (mask != current) {
    ::umask(mask);
    current = mask;
  }
  return 0;
}

ScopedDaemonIdentity::ScopedDaemonIdentity() {
  if (!g_can_switch) return;
  ThreadState& st = t_state;
  if (!st.known) {
    // Nothing worth restoring: leave the thread as the daemon.
    ThreadIdentity::become_daemon();
    return;
  }
  if (st.ids.uid == g_daemon.uid && st.ids.gid == g_daemon.gid) return;  // already has the capabilities
  saved_ = st.ids;
  switched_ = ThreadIdentity::become_daemon() == 0;
}

ScopedDaemonIdentity::~ScopedDaemonIdentity() {
  if (switched_) ThreadIdentity::become(saved_.uid, saved_.gid, saved_.groups);
}

}  // namespace vsymfs::fs
