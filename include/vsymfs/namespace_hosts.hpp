// What a caller in another UTS namespace (a container) is: the daemon's host
// facts with that namespace's host name and domain name. One object per
// namespace, kept while its names stay the same, so a lookup from a
// container costs a comparison of two short strings, not a rebuild. Pure:
// the names are read by the daemon (setns + uname, daemon/namespaces.hpp).
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string_view>

#include "vsymfs/caller.hpp"

namespace vsymfs {

class NamespaceHosts {
 public:
  // At most `max_namespaces` are kept; beyond that all are dropped and
  // built again as callers come (a few microseconds each).
  explicit NamespaceHosts(std::size_t max_namespaces = 256);
  ~NamespaceHosts();
  NamespaceHosts(const NamespaceHosts&) = delete;
  NamespaceHosts& operator=(const NamespaceHosts&) = delete;

  // `base` with the names of namespace `ns` (an inode number, never 0): the
  // same object as last time while the names and `base` are the same.
  // Thread-safe.
  std::shared_ptr<const HostInfo> get(std::uint64_t ns, std::string_view hostname, std::string_view domainname,
                                      const HostInfo& base);
  std::size_t size() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace vsymfs
