#include "daemon/template_cache.hpp"

namespace vsymfs::daemon {

LinkNeeds classify(const Template& t) noexcept {
  if (t.is_literal()) return LinkNeeds::Nothing;
  if (!t.needs_caller()) return LinkNeeds::Host;
  // Conditional branches may use anything, and the universe may come from
  // the environment (needs_environment() says so for them).
  if (t.needs_personality() || t.needs_environment()) return LinkNeeds::Process;
  return LinkNeeds::Identity;
}

TemplateCache::TemplateCache(std::size_t capacity, const CacheGeneration& generation)
    : cache_(capacity, generation) {}

std::shared_ptr<const ParsedLink> TemplateCache::get(std::string_view raw, std::uint64_t tag, const Rules& rules) {
  std::shared_ptr<const ParsedLink> hit;
  if (cache_.lookup(raw, [&](const std::shared_ptr<const ParsedLink>& p, std::uint64_t) {
        hit = p;
        return true;
      }))
    return hit;
  // Parse outside the lock.
  auto p = std::make_shared<ParsedLink>();
  p->tmpl = Template::parse(raw, ParseOptions{rules.families, rules.universes.names});
  p->needs = classify(p->tmpl);
  cache_.insert(raw, p, tag);
  return p;
}

}  // namespace vsymfs::daemon
