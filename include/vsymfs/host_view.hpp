// What the rules give one host name (docs/vsymfs-rules.5, SCOPES and [cluster]): which
// [host."pattern"] tables match it, in file order, and its cluster member id.
// Hostname patterns are fnmatch(3) patterns, matched case-insensitively, so
// matching costs a call per pattern: a HostView does it ONCE per (host name,
// rules) and the resolver only reads the result. A readlink then costs the
// same whether the rules have one host table or ten thousand.
//
// Immutable once built: share it (std::shared_ptr<const HostView>) between
// threads. The daemon keeps one per host name it serves (its own today; one
// per caller's UTS namespace when the host name is the caller's) and builds
// it again when the rules change.
#pragma once

#include <cstddef>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "vsymfs/caller.hpp"
#include "vsymfs/rules.hpp"
#include "vsymfs/var_map.hpp"

namespace vsymfs {

class HostView {
 public:
  // Matches every pattern of `rules` against `host.hostname` (a copy of
  // both is kept: the view does not borrow the rules).
  HostView(const Rules& rules, HostInfo host);

  // uname's facts, the host name among them.
  const HostInfo& host() const noexcept { return host_; }

  // The host scope: `name` from the first matching [host."pattern"] table
  // (file order) that defines it, or null. No allocation, one hash lookup.
  const std::string* host_value(std::string_view name) const noexcept;

  // Indexes into Rules::hosts of the tables that match, in file order.
  std::span<const std::size_t> matched_tables() const noexcept { return matched_; }

  // The cluster member id: the first [cluster.members] pattern that matches
  // the host name, else [cluster] member (0, standalone, by default).
  int member() const noexcept { return member_; }
  std::string_view memb() const noexcept { return memb_; }  // "member<N>", what {memb} gives
  std::string_view member_number() const noexcept {          // "<N>", what ${MEMBER} gives
    return std::string_view(memb_).substr(kMembPrefix.size());
  }
  // The [cluster.members] pattern that gave the id, "" for the fallback.
  const std::string& member_pattern() const noexcept { return member_pattern_; }

 private:
  static constexpr std::string_view kMembPrefix = "member";

  HostInfo host_;
  VarMap host_vars_;  // merged: the first matching table that defines a name wins
  std::vector<std::size_t> matched_;
  int member_ = 0;
  std::string memb_;
  std::string member_pattern_;
};

// Whether `hostname` matches a [host."pattern"] / [cluster.members] pattern:
// fnmatch(3), case-insensitive, as host names are.
bool host_pattern_matches(const std::string& pattern, const std::string& hostname) noexcept;

}  // namespace vsymfs
