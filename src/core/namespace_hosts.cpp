// One host per UTS namespace (namespace_hosts.hpp).
#include "vsymfs/namespace_hosts.hpp"

#include <mutex>
#include <unordered_map>

namespace vsymfs {

struct NamespaceHosts::Impl {
  std::size_t max;
  mutable std::mutex mu;
  std::unordered_map<std::uint64_t, std::shared_ptr<const HostInfo>> hosts;
};

NamespaceHosts::NamespaceHosts(std::size_t max_namespaces) : impl_(std::make_unique<Impl>()) {
  impl_->max = max_namespaces == 0 ? 1 : max_namespaces;
}

NamespaceHosts::~NamespaceHosts() = default;

namespace {

bool same_base(const HostInfo& a, const HostInfo& b) {
  return a.machine == b.machine && a.machine32 == b.machine32 && a.osrelease == b.osrelease && a.ostype == b.ostype &&
         a.kernel_ident == b.kernel_ident;
}

}  // namespace

std::shared_ptr<const HostInfo> NamespaceHosts::get(std::uint64_t ns, std::string_view hostname,
                                                    std::string_view domainname, const HostInfo& base) {
  std::lock_guard lock(impl_->mu);
  auto it = impl_->hosts.find(ns);
  if (it != impl_->hosts.end() && it->second->hostname == hostname && it->second->domainname == domainname &&
      same_base(*it->second, base))
    return it->second;
  auto host = std::make_shared<HostInfo>(base);
  host->hostname = hostname;
  host->domainname = domainname;
  if (it == impl_->hosts.end() && impl_->hosts.size() >= impl_->max) impl_->hosts.clear();
  impl_->hosts[ns] = host;
  return host;
}

std::size_t NamespaceHosts::size() const {
  std::lock_guard lock(impl_->mu);
  return impl_->hosts.size();
}

}  // namespace vsymfs
