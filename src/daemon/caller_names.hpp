// The names of a caller's user and groups, and its home: the daemon's
// name service (NSS: getpwuid_r, getgrgid_r, which may be slow, LDAP),
// answers kept per uid and gid for a TTL; or, for a caller in another
// mount namespace (a container), that namespace's own /etc/passwd and
// /etc/group (namespaces.hpp: CallerAccounts).
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstddef>
#include <memory>
#include <string>

#include "daemon/generation_cache.hpp"
#include "daemon/namespaces.hpp"
#include "vsymfs/caller.hpp"

namespace vsymfs::daemon {

class CallerNames {
 public:
  // `nss_ttl`: how long an NSS answer is trusted. `own_files`: read a
  // container's own files (with this timeout for a helper's read), else
  // (-o daemon_nss) the daemon's NSS serves everyone.
  CallerNames(std::chrono::milliseconds nss_ttl, bool own_files, std::chrono::milliseconds files_timeout);

  // Fills user_name, home, group_name and group_names from c's ids and groups.
  void fill(Caller& c);

  // Users and groups kept from NSS.
  std::size_t nss_entries() const;

 private:
  using Clock = std::chrono::steady_clock;
  struct UserInfo {
    Clock::time_point read_at;
    bool found = false;
    std::string name, home;
  };
  struct GroupInfo {
    Clock::time_point read_at;
    bool found = false;
    std::string name;
  };
  static constexpr std::size_t kMaxNssEntries = 1024;  // of each kind

  void fill_from_own_files(Caller& c);
  UserInfo user(uid_t uid, Clock::time_point now);
  GroupInfo group(gid_t gid, Clock::time_point now);
  static UserInfo read_user(uid_t uid);
  static GroupInfo read_group(gid_t gid);

  const Clock::duration ttl_;
  std::unique_ptr<CallerAccounts> accounts_;  // null: -o daemon_nss
  CacheGeneration generation_;                // never bumped: the TTL is what ages NSS answers
  GenerationCache<uid_t, UserInfo> users_;
  GenerationCache<gid_t, GroupInfo> groups_;
};

}  // namespace vsymfs::daemon
