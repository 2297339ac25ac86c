// What a caller in another UTS namespace (a container) is: the daemon's host
// facts with that namespace's host name and domain name, and what the rules
// give that host name (HostView: its [host."pattern"] tables, its member
// id). One view per (namespace, rules), kept while the namespace's names
// stay the same, so a lookup from a container costs a comparison of two
// short strings, not a match of every pattern. Pure: the names are read by
// the daemon (setns + uname, daemon/namespaces.hpp).
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string_view>

#include "vsymfs/caller.hpp"
#include "vsymfs/host_view.hpp"
#include "vsymfs/rules.hpp"

namespace vsymfs {

class NamespaceHosts {
 public:
  // At most `max_namespaces` are kept; beyond that all are dropped and
  // built again as callers come (a few microseconds each).
  explicit NamespaceHosts(std::size_t max_namespaces = 256);
  ~NamespaceHosts();
  NamespaceHosts(const NamespaceHosts&) = delete;
  NamespaceHosts& operator=(const NamespaceHosts&) = delete;

  // What `rules` give namespace `ns` (an inode number, never 0) whose names
  // are now `hostname` and `domainname`, the rest of its host facts being
  // `base` (the daemon's). The same object as last time while the names,
  // the rules (the same object) and `base` are the same. Thread-safe.
  std::shared_ptr<const HostView> get(std::uint64_t ns, std::string_view hostname, std::string_view domainname,
                                      const std::shared_ptr<const Rules>& rules, const HostInfo& base);
  std::size_t size() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace vsymfs
