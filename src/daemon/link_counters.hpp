// What LinkService counts into MountState's Counters (`vsymctl status`):
// expansions, failed ones, and where each substituted value came from.
// Header-only: every expansion runs it, and out of line it cost about 100
// instructions per @sys expansion (callgrind, link_service_bench).
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>

#include "daemon/mount_state.hpp"
#include "vsymfs/value_source.hpp"

namespace vsymfs::daemon {

// Counts where substituted values came from without building a trace: a
// few increments on the stack, folded into the shared counters once.
class CountingSource final : public ValueSource {
 public:
  explicit CountingSource(const ValueSource& inner) noexcept : inner_(inner) {}

  std::optional<Value> variable(std::string_view name) const override { return count(inner_.variable(name)); }
  std::optional<Value> magic(std::string_view name) const override { return count(inner_.magic(name)); }
  std::span<const std::string> sysnames() const override {
    ++counts_[static_cast<std::size_t>(inner_.sysnames_scope()) % counts_.size()];
    return inner_.sysnames();
  }
  Scope sysnames_scope() const override { return inner_.sysnames_scope(); }
  Value universe() const override { return *count(inner_.universe()); }
  Value member() const override { return *count(inner_.member()); }

  using Counts = std::array<std::uint32_t, 8>;
  const Counts& counts() const noexcept { return counts_; }
  void add_to(Counters& c) const noexcept { add(counts_, c); }
  static void add(const Counts& counts, Counters& c) noexcept {
    for (std::size_t i = 0; i < counts.size(); ++i)
      if (counts[i]) c.by_scope[i].fetch_add(counts[i], std::memory_order_relaxed);
  }

 private:
  std::optional<Value> count(std::optional<Value> v) const noexcept {
    if (v) ++counts_[static_cast<std::size_t>(v->scope) % counts_.size()];
    return v;
  }
  const ValueSource& inner_;
  mutable Counts counts_{};
};

// One expansion begun, and (when it failed) one error.
inline void count_expansion(Counters& c) noexcept { c.expansions.fetch_add(1, std::memory_order_relaxed); }
inline void count_error(Counters& c) noexcept { c.errors.fetch_add(1, std::memory_order_relaxed); }

}  // namespace vsymfs::daemon
