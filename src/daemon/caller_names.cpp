#include "daemon/caller_names.hpp"

#include <grp.h>
#include <pwd.h>

#include <cerrno>
#include <vector>

namespace vsymfs::daemon {

CallerNames::CallerNames(std::chrono::milliseconds nss_ttl, bool own_files, std::chrono::milliseconds files_timeout)
    : ttl_(nss_ttl),
      accounts_(own_files ? std::make_unique<CallerAccounts>(files_timeout) : nullptr),
      users_(kMaxNssEntries, generation_),
      groups_(kMaxNssEntries, generation_) {}

namespace {

// Answers from `cache` while younger than `ttl`, else `read(key)`, kept.
// NSS runs outside any lock: a slow one (LDAP) holds up only its caller.
template <class Info, class Key, class Read>
Info cached(GenerationCache<Key, Info>& cache, Key key, std::chrono::steady_clock::time_point now,
            std::chrono::steady_clock::duration ttl, Read read) {
  Info info;
  const bool hit = cache.lookup(key, [&](const Info& kept, std::uint64_t) {
    if (now - kept.read_at > ttl) return false;
    info = kept;
    return true;
  });
  if (hit) return info;
  info = read(key);
  info.read_at = now;
  cache.insert(key, info, cache.generation());
  return info;
}

}  // namespace

namespace {

// getpwuid_r or getgrgid_r, its buffer grown on ERANGE up to `max` bytes:
// the entry (pointing into `buf`), or null.
template <class Entry, class Id>
const Entry* nss_entry(int (*get)(Id, Entry*, char*, std::size_t, Entry**), Id id, std::size_t max, Entry& entry,
                       std::vector<char>& buf) {
  buf.resize(4096);
  Entry* res = nullptr;
  int rc;
  while ((rc = get(id, &entry, buf.data(), buf.size(), &res)) == ERANGE && buf.size() < max) buf.resize(buf.size() * 2);
  return rc == 0 ? res : nullptr;
}

}  // namespace

CallerNames::UserInfo CallerNames::read_user(uid_t uid) {
  std::vector<char> buf;
  struct passwd pw {};
  const struct passwd* p = nss_entry(::getpwuid_r, uid, 1u << 20, pw, buf);
  return p ? UserInfo{{}, true, p->pw_name, p->pw_dir ? p->pw_dir : ""} : UserInfo{};
}

CallerNames::GroupInfo CallerNames::read_group(gid_t gid) {
  std::vector<char> buf;
  struct group gr {};
  const struct group* g = nss_entry(::getgrgid_r, gid, 1u << 22, gr, buf);
  return g ? GroupInfo{{}, true, g->gr_name} : GroupInfo{};
}

CallerNames::UserInfo CallerNames::user(uid_t uid, Clock::time_point now) {
  return cached(users_, uid, now, ttl_, read_user);
}

CallerNames::GroupInfo CallerNames::group(gid_t gid, Clock::time_point now) {
  return cached(groups_, gid, now, ttl_, read_group);
}

void CallerNames::fill(Caller& c) {
  if (accounts_ && c.mnt_ns != 0) return fill_from_own_files(c);
  const auto now = Clock::now();
  const UserInfo u = user(c.uid, now);
  c.user_name = u.name;
  c.home = u.home;
  const GroupInfo g = group(c.gid, now);
  c.group_name = g.name;
  c.group_names.clear();
  if (g.found) c.group_names.push_back(g.name);
  for (gid_t sup : c.groups) {
    if (sup == c.gid) continue;
    const GroupInfo s = group(sup, now);
    if (s.found) c.group_names.push_back(s.name);
  }
}

// A caller in another mount namespace: its own /etc/passwd and
// /etc/group, read through its root; numbers when they cannot be read or
// do not list the id (the file is untrusted, and the daemon's NSS would
// give the host's names).
void CallerNames::fill_from_own_files(Caller& c) {
  const std::shared_ptr<const AccountFiles> files = accounts_->files(c.pid, c.mnt_ns);
  const AccountUser* u = files ? files->user(c.uid) : nullptr;
  c.user_name = u ? u->name : std::to_string(c.uid);
  c.home = u ? u->home : "";
  auto group_name = [&](gid_t gid) {
    const std::string* g = files ? files->group(gid) : nullptr;
    return g ? *g : std::to_string(gid);
  };
  c.group_name = group_name(c.gid);
  c.group_names = {c.group_name};
  for (gid_t sup : c.groups)
    if (sup != c.gid) c.group_names.push_back(group_name(sup));
}

std::size_t CallerNames::nss_entries() const { return users_.stats().entries + groups_.stats().entries; }

}  // namespace vsymfs::daemon
