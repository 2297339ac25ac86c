#include "link_counters.hpp"

namespace vsymfs::daemon {

std::span<const std::string> CountingSource::sysnames() const {
  ++counts_[static_cast<std::size_t>(inner_.sysnames_scope()) % counts_.size()];
  return inner_.sysnames();
}

void CountingSource::add_to(Counters& c) const noexcept {
  for (std::size_t i = 0; i < counts_.size(); ++i)
    if (counts_[i]) c.by_scope[i].fetch_add(counts_[i], std::memory_order_relaxed);
}

}  // namespace vsymfs::daemon
