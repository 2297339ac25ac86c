// Parsed link templates, kept by their raw text: a readlink of a link
// whose text was seen before parses nothing. Each entry also says how much
// of the caller its expansion needs, decided once at parse time from what
// the parse found, so the readlink path reads /proc only when it must.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "daemon/generation_cache.hpp"
#include "daemon/per_thread.hpp"
#include "vsymfs/link_template.hpp"
#include "vsymfs/rules.hpp"
#include "vsymfs/var_map.hpp"

namespace vsymfs::daemon {

// How much of the caller a template can depend on, cheapest first.
enum class LinkNeeds : std::uint8_t {
  Nothing,   // literal text: the raw text for everyone
  Host,      // host facts only ({memb}, @hostname, ...): no /proc at all
  Identity,  // ids, groups, NSS names (identity builtins, @uid): status only
  Process,   // environment, secure mode, 32-bit personality: the full context
};

LinkNeeds classify(const Template& t) noexcept;

struct ParsedLink {
  Template tmpl;
  LinkNeeds needs;
};

class TemplateCache {
 public:
  // A rules reload changes what a text parses to (families, universes):
  // `generation` is bumped then (LinkService follows the rules generation).
  TemplateCache(std::size_t capacity, const CacheGeneration& generation);

  // The template for `raw` under `rules`, which were read after `tag` was
  // read from generation(). Two threads may both parse the same text once.
  // Each thread first looks in a few entries of its own (the texts it got
  // last, under the same tag), which write nothing shared (per_thread.hpp).
  std::shared_ptr<const ParsedLink> get(std::string_view raw, std::uint64_t tag, const Rules& rules);

  // Hits count parses avoided, misses parses done.
  using Stats = GenerationCache<std::string, std::shared_ptr<const ParsedLink>, StringHash, std::equal_to<>>::Stats;
  Stats stats() const {
    Stats s = cache_.stats();
    s.hits += front_hits_.load();
    return s;
  }

  // Entries each thread keeps in front of the shared cache.
  static constexpr std::size_t kFrontEntries = 8;

 private:
  std::shared_ptr<const ParsedLink> get_shared(std::string_view raw, std::uint64_t tag, const Rules& rules);

  GenerationCache<std::string, std::shared_ptr<const ParsedLink>, StringHash, std::equal_to<>> cache_;
  const std::uint64_t id_ = next_instance_id();
  ShardedCounter front_hits_;
};

}  // namespace vsymfs::daemon
