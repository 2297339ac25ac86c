// libFuzzer target: parse_rules on arbitrary bytes never crashes, and what it
// accepts satisfies the invariants the rest of vsymfs relies on.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "vsymfs/rules.hpp"
#include "vsymfs/runtime_vars.hpp"

namespace {

void check(bool ok) {
  if (!ok) std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  auto parsed = vsymfs::parse_rules(text, "fuzz.toml");
  if (!parsed) {
    // Every rejection names the file and says what was wrong.
    check(parsed.error().message.starts_with("fuzz.toml") && parsed.error().code != 0);
    return 0;
  }
  const vsymfs::Rules& r = *parsed;
  check(!r.sysnames.empty() && !r.sysnames32.empty());
  check(r.member >= 0);
  const auto& u = r.universes;
  if (!u.names.empty()) {
    bool found = false;
    for (const auto& n : u.names) found = found || n == u.default_universe;
    check(found);
  }
  for (const auto* table : {&r.locked, &r.system}) {
    for (const auto& [name, value] : *table) check(vsymfs::valid_var_name(name));
  }
  for (const auto& h : r.hosts) check(!h.pattern.empty());
  return 0;
}
