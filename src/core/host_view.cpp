// Everything the rules derive from one host name, computed once (see
// include/vsymfs/host_view.hpp).
#include "vsymfs/host_view.hpp"

#include <fnmatch.h>

#include <utility>

namespace vsymfs {

bool host_pattern_matches(const std::string& pattern, const std::string& hostname) noexcept {
  return ::fnmatch(pattern.c_str(), hostname.c_str(), FNM_CASEFOLD) == 0;
}

const std::string* HostView::host_value(std::string_view name) const noexcept {
  const auto it = host_vars_.find(name);
  return it == host_vars_.end() ? nullptr : &it->second;
}

HostView::HostView(const Rules& rules, HostInfo host) : host_(std::move(host)) {
  for (std::size_t i = 0; i < rules.hosts.size(); ++i) {
    const HostRules& h = rules.hosts[i];
    if (!host_pattern_matches(h.pattern, host_.hostname)) continue;
    matched_.push_back(i);
    // emplace keeps an existing entry: an earlier table wins.
    for (const auto& [name, value] : h.vars) host_vars_.emplace(name, value);
  }
  member_ = rules.member;
  for (const MemberRule& m : rules.members) {
    if (host_pattern_matches(m.pattern, host_.hostname)) {
      member_ = m.member;
      member_pattern_ = m.pattern;
      break;
    }
  }
  memb_ = std::string(kMembPrefix) + std::to_string(member_);
}

}  // namespace vsymfs
