#include "caller_names.hpp"

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

CallerNames::UserInfo CallerNames::user(uid_t uid, Clock::time_point now) {
  UserInfo info;
  if (users_.lookup(uid, [&](const UserInfo& u, std::uint64_t) {
        if (now - u.read_at > ttl_) return false;
        info = u;
        return true;
      }))
    return info;
  // NSS runs outside any lock: a slow one (LDAP) holds up only this caller.
  std::vector<char> buf(4096);
  struct passwd pw{};
  struct passwd* res = nullptr;
  int rc;
  while ((rc = ::getpwuid_r(uid, &pw, buf.data(), buf.size(), &res)) == ERANGE && buf.size() < (1u << 20))
    buf.resize(buf.size() * 2);
  if (rc == 0 && res) {
    info.found = true;
    info.name = pw.pw_name;
    info.home = pw.pw_dir ? pw.pw_dir : "";
  }
  info.read_at = now;
  users_.insert(uid, info, users_.generation());
  return info;
}

CallerNames::GroupInfo CallerNames::group(gid_t gid, Clock::time_point now) {
  GroupInfo info;
  if (groups_.lookup(gid, [&](const GroupInfo& g, std::uint64_t) {
        if (now - g.read_at > ttl_) return false;
        info = g;
        return true;
      }))
    return info;
  std::vector<char> buf(4096);
  struct group gr{};
  struct group* res = nullptr;
  int rc;
  while ((rc = ::getgrgid_r(gid, &gr, buf.data(), buf.size(), &res)) == ERANGE && buf.size() < (1u << 22))
    buf.resize(buf.size() * 2);
  if (rc == 0 && res) {
    info.found = true;
    info.name = gr.gr_name;
  }
  info.read_at = now;
  groups_.insert(gid, info, groups_.generation());
  return info;
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
