#include "daemon/identity.hpp"

#include <sched.h>
#include <sys/capability.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <fstream>
#include <string>

namespace vsymfs::daemon {

namespace {

// The capability sets a thread can be in. Each is the daemon's permitted
// and inheritable sets with a different effective set.
enum CapSet : std::uint8_t {
  kUnknown,     // a new thread, or after a failed change: whatever it inherited
  kDaemonCaps,  // the daemon's effective set (root callers, daemon work)
  kNoCaps,      // nothing in effect (non-root callers)
  kAdminCaps,   // CAP_SYS_ADMIN alone (backing files)
  kSwitchCaps,  // CAP_SETUID and CAP_SETGID alone (changing fs ids)
  kDirty,       // the kernel changed the effective set (fsuid crossed 0)
  kSetCount
};

FsIds g_daemon;           // written once by init(), read-only afterwards
bool g_can_switch = false;
// The daemon's effective set already holds every file-system capability it
// is permitted: the kernel's raise when the fsuid returns to 0 changes
// nothing in it.
bool g_daemon_has_fs_caps = false;
bool g_admin_available = false;  // CAP_SYS_ADMIN is in the permitted set
std::array<cap_t, kSetCount> g_sets{};  // kDaemonCaps .. kSwitchCaps

struct ThreadState {
  // False until this thread first switches. A new thread inherits the
  // credentials of the thread that created it, and libfuse starts workers
  // from inside other workers: an unknown state may be any caller's.
  bool known = false;
  FsIds ids;
  std::uint8_t caps = kUnknown;
  unsigned long switches = 0;
  unsigned long cap_changes = 0;
  // This thread's own copies of g_sets: libcap holds a cap_t's lock while
  // it applies it, so shared ones would serialise the workers' capsets.
  std::array<cap_t, kSetCount> sets{};
  ~ThreadState() {
    for (cap_t s : sets)
      if (s) cap_free(s);
  }
};
thread_local ThreadState t_state;

bool is_set(std::uint8_t s) { return s == kDaemonCaps || s == kNoCaps || s == kAdminCaps || s == kSwitchCaps; }

// The set an identity runs with when nothing more precise is known.
std::uint8_t caps_for(uid_t uid) { return uid == 0 ? kDaemonCaps : kNoCaps; }

// Makes `want` this thread's capability set (capset on this thread only).
bool apply(ThreadState& st, std::uint8_t want) {
  if (st.caps == want) return true;
  cap_t& mine = st.sets[want];
  if (!mine) mine = cap_dup(g_sets[want]);
  if (!mine || cap_set_proc(mine) != 0) {
    st.caps = kUnknown;
    return false;
  }
  st.caps = want;
  ++st.cap_changes;
  return true;
}

// Makes the thread's fs ids uid/gid/groups and its capability set `want`.
// Only what differs is changed: each change commits new credentials.
int switch_to(ThreadState& st, uid_t uid, gid_t gid, std::span<const gid_t> groups, std::uint8_t want) {
  const bool uid_same = st.known && st.ids.uid == uid;
  const bool gid_same = st.known && st.ids.gid == gid;
  const bool groups_same =
      st.known && std::equal(st.ids.groups.begin(), st.ids.groups.end(), groups.begin(), groups.end());
  if (uid_same && gid_same && groups_same) return apply(st, want) ? 0 : EPERM;
  // Changing fs ids needs CAP_SETUID and CAP_SETGID in effect.
  if (st.caps != kDaemonCaps && st.caps != kSwitchCaps && !apply(st, want == kDaemonCaps ? kDaemonCaps : kSwitchCaps))
    return EPERM;
  const bool crosses_root = !uid_same && (!st.known || (st.ids.uid == 0) != (uid == 0));
  // Groups first: setgroups needs CAP_SETGID, which a non-zero fsuid does not
  // clear, but keeping the fsuid change last keeps the window where the
  // thread has mixed credentials as small as one syscall.
  if (!groups_same && ::syscall(SYS_setgroups, groups.size(), groups.data()) != 0) {
    const int e = errno;
    st.known = false;  // nothing changed, but be sure the next switch redoes all
    return e;
  }
  if (!gid_same) ::syscall(SYS_setfsgid, gid);
  if (!uid_same) ::syscall(SYS_setfsuid, uid);
  // setfsuid/setfsgid report failure only through the value they return on
  // the next call; ask again so a refused switch is never silent.
  if ((!uid_same && static_cast<uid_t>(::syscall(SYS_setfsuid, static_cast<uid_t>(-1))) != uid) ||
      (!gid_same && static_cast<gid_t>(::syscall(SYS_setfsgid, static_cast<gid_t>(-1))) != gid)) {
    st.known = false;
    st.caps = kUnknown;
    return EPERM;
  }
  if (crosses_root) {
    // The kernel dropped the file-system capabilities from the effective
    // set (fsuid left 0) or raised them from the permitted set (back to 0).
    const bool unchanged = (st.caps == kSwitchCaps && uid != 0) || (st.caps == kDaemonCaps && uid == 0 && g_daemon_has_fs_caps);
    if (!unchanged) st.caps = kDirty;
  }
  st.ids.uid = uid;
  st.ids.gid = gid;
  if (!groups_same) st.ids.groups.assign(groups.begin(), groups.end());
  st.known = true;
  ++st.switches;
  return apply(st, want) ? 0 : EPERM;
}

cap_t with_effective(cap_t base, std::initializer_list<cap_value_t> caps) {
  cap_t c = cap_dup(base);
  if (!c) return nullptr;
  cap_clear_flag(c, CAP_EFFECTIVE);
  for (cap_value_t v : caps) {
    cap_flag_value_t permitted = CAP_CLEAR;
    if (cap_get_flag(c, v, CAP_PERMITTED, &permitted) == 0 && permitted == CAP_SET)
      cap_set_flag(c, CAP_EFFECTIVE, 1, &v, CAP_SET);
  }
  return c;
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
  g_can_switch = false;
  if (g_daemon.uid != 0) return false;
  // A user namespace made without privilege (unshare -Ur) denies setgroups
  // (it maps a single uid anyway): root there cannot take a caller's groups.
  if (std::ifstream f("/proc/self/setgroups"); f) {
    std::string word;
    if (f >> word && word == "deny") return false;
  }
  for (cap_t& c : g_sets) {  // a second init (tests) starts over
    if (c) cap_free(c);
    c = nullptr;
  }
  cap_t daemon = cap_get_proc();
  if (!daemon) return false;
  g_sets[kDaemonCaps] = daemon;
  g_sets[kNoCaps] = with_effective(daemon, {});
  g_sets[kAdminCaps] = with_effective(daemon, {CAP_SYS_ADMIN});
  g_sets[kSwitchCaps] = with_effective(daemon, {CAP_SETUID, CAP_SETGID});
  if (!g_sets[kNoCaps] || !g_sets[kAdminCaps] || !g_sets[kSwitchCaps]) return false;
  cap_flag_value_t v = CAP_CLEAR;
  g_admin_available = cap_get_flag(daemon, CAP_SYS_ADMIN, CAP_PERMITTED, &v) == 0 && v == CAP_SET;
  g_daemon_has_fs_caps = true;
  // The kernel's file-system set (CAP_FS_SET).
  for (cap_value_t c : {CAP_CHOWN, CAP_MKNOD, CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH, CAP_FOWNER, CAP_FSETID,
                        CAP_MAC_OVERRIDE, CAP_LINUX_IMMUTABLE}) {
    cap_flag_value_t p = CAP_CLEAR, e = CAP_CLEAR;
    cap_get_flag(daemon, c, CAP_PERMITTED, &p);
    cap_get_flag(daemon, c, CAP_EFFECTIVE, &e);
    if (p == CAP_SET && e != CAP_SET) g_daemon_has_fs_caps = false;
  }
  g_can_switch = true;
  return true;
}

bool ThreadIdentity::can_switch() noexcept { return g_can_switch; }

int ThreadIdentity::become(uid_t uid, gid_t gid, std::span<const gid_t> groups) {
  if (!g_can_switch) return 0;
  return switch_to(t_state, uid, gid, groups, caps_for(uid));
}

int ThreadIdentity::become_daemon() {
  if (!g_can_switch) return 0;
  return switch_to(t_state, g_daemon.uid, g_daemon.gid, g_daemon.groups, kDaemonCaps);
}

bool ThreadIdentity::is(uid_t uid, gid_t gid) noexcept {
  if (!g_can_switch) return true;
  const ThreadState& st = t_state;
  return st.known && st.ids.uid == uid && st.ids.gid == gid && st.caps == caps_for(uid);
}

unsigned long ThreadIdentity::switches() noexcept { return t_state.switches; }

unsigned long ThreadIdentity::capability_changes() noexcept { return t_state.cap_changes; }

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

ScopedCallerIdentity::ScopedCallerIdentity(uid_t uid, gid_t gid, std::span<const gid_t> groups) {
  if (!g_can_switch) return;
  ThreadState& st = t_state;
  known_ = st.known;
  saved_ = st.ids;
  saved_caps_ = st.caps;
  switched_ = true;  // even a failed switch may have changed some ids: always put back
  ThreadIdentity::become(uid, gid, groups);
}

ScopedCallerIdentity::~ScopedCallerIdentity() {
  if (!switched_) return;
  if (!known_) {
    ThreadIdentity::become_daemon();  // as ScopedDaemonIdentity leaves an unknown thread
    return;
  }
  switch_to(t_state, saved_.uid, saved_.gid, saved_.groups, is_set(saved_caps_) ? saved_caps_ : caps_for(saved_.uid));
}

ScopedDaemonIdentity::ScopedDaemonIdentity() {
  if (!g_can_switch) return;
  ThreadState& st = t_state;
  if (!st.known) {
    // Nothing worth restoring: leave the thread as the daemon.
    ThreadIdentity::become_daemon();
    return;
  }
  if (st.ids.uid == g_daemon.uid && st.ids.gid == g_daemon.gid && st.caps == kDaemonCaps) return;
  saved_ = st.ids;
  saved_caps_ = st.caps;
  switched_ = switch_to(st, g_daemon.uid, g_daemon.gid, g_daemon.groups, kDaemonCaps) == 0;
}

ScopedDaemonIdentity::~ScopedDaemonIdentity() {
  if (!switched_) return;
  switch_to(t_state, saved_.uid, saved_.gid, saved_.groups, is_set(saved_caps_) ? saved_caps_ : caps_for(saved_.uid));
}

ScopedBackingIdentity::ScopedBackingIdentity(const ReservedFor& reserve) {
  if (!g_can_switch || !g_admin_available) return;
  ThreadState& st = t_state;
  known_ = st.known;
  saved_ = st.ids;
  saved_caps_ = st.caps;
  restore_ = true;
  // Which of the thread's ids the reserve is for (all, when unknown).
  const bool unknown = !st.known || !reserve.known;
  const bool for_uid = unknown || (reserve.any && st.ids.uid == reserve.uid);
  const bool for_gid = unknown || (reserve.any && reserve.gid != 0 &&
                                   (st.ids.gid == reserve.gid ||
                                    std::find(st.ids.groups.begin(), st.ids.groups.end(), reserve.gid) != st.ids.groups.end()));
  if (!for_uid && !for_gid) {
    ok_ = apply(st, kAdminCaps);
    return;
  }
  ids_changed_ = true;
  const uid_t uid = for_uid ? kBackingUid : st.ids.uid;
  const gid_t gid = for_gid ? kBackingGid : st.ids.gid;
  const std::vector<gid_t> groups = for_gid ? std::vector<gid_t>{} : st.ids.groups;
  ok_ = switch_to(st, uid, gid, groups, kAdminCaps) == 0;
}

ScopedBackingIdentity::~ScopedBackingIdentity() {
  if (!restore_) return;
  ThreadState& st = t_state;
  const std::uint8_t caps = is_set(saved_caps_) ? saved_caps_ : caps_for(saved_.uid);
  if (!ids_changed_) {  // the thread's ids were known and are unchanged
    apply(st, caps);
    return;
  }
  if (!known_) {
    ThreadIdentity::become_daemon();  // as ScopedDaemonIdentity leaves an unknown thread
    return;
  }
  switch_to(st, saved_.uid, saved_.gid, saved_.groups, caps);
}

ScopedAdminCapability::ScopedAdminCapability() {
  if (!g_can_switch || !g_admin_available) return;
  ThreadState& st = t_state;
  if (!st.known) {
    // As ScopedDaemonIdentity: a thread that never switched (all of them
    // under -o single_user) becomes the daemon, which has CAP_SYS_ADMIN.
    ThreadIdentity::become_daemon();
    return;
  }
  if (st.caps == kDaemonCaps || st.caps == kAdminCaps) return;
  saved_caps_ = st.caps;
  restore_ = apply(st, kAdminCaps);
}

ScopedAdminCapability::~ScopedAdminCapability() {
  if (!restore_) return;
  ThreadState& st = t_state;
  apply(st, is_set(saved_caps_) ? saved_caps_ : caps_for(st.ids.uid));
}

}  // namespace vsymfs::daemon
