// One host view per UTS namespace (namespace_hosts.hpp).
#include "vsymfs/namespace_hosts.hpp"

#include <mutex>
#include <unordered_map>

namespace vsymfs {

struct NamespaceHosts::Impl {
  struct Entry {
    std::shared_ptr<const Rules> rules;  // what `view` was built from
    std::shared_ptr<const HostView> view;
  };
  std::size_t max;
  mutable std::mutex mu;
  std::unordered_map<std::uint64_t, Entry> hosts;
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

std::shared_ptr<const HostView> NamespaceHosts::get(std::uint64_t ns, std::string_view hostname,
                                                    std::string_view domainname,
                                                    const std::shared_ptr<const Rules>& rules, const HostInfo& base) {
  {
    std::lock_guard lock(impl_->mu);
    auto it = impl_->hosts.find(ns);
    if (it != impl_->hosts.end()) {
      const HostInfo& h = it->second.view->host();
      if (it->second.rules == rules && h.hostname == hostname && h.domainname == domainname && same_base(h, base))
        return it->second.view;
    }
  }
  // Built outside the lock: matching every pattern of a large rules file
  // takes a while, and other namespaces' callers need not wait for it.
  HostInfo host = base;
  host.hostname = hostname;
  host.domainname = domainname;
  auto view = std::make_shared<const HostView>(*rules, std::move(host));
  std::lock_guard lock(impl_->mu);
  if (!impl_->hosts.contains(ns) && impl_->hosts.size() >= impl_->max) impl_->hosts.clear();
  impl_->hosts[ns] = Impl::Entry{rules, view};
  return view;
}

std::size_t NamespaceHosts::size() const {
  std::lock_guard lock(impl_->mu);
  return impl_->hosts.size();
}

}  // namespace vsymfs
