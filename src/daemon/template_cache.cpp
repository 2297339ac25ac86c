#include "daemon/template_cache.hpp"

#include <array>

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

namespace {
struct FrontEntry {
  std::uint64_t owner = 0, tag = 0;
  std::string raw;
  std::shared_ptr<const ParsedLink> parsed;  // per_thread_alias of the shared entry
};
struct Front {
  std::array<FrontEntry, TemplateCache::kFrontEntries> entries;
  std::size_t next = 0;  // replaced in turn
};
}  // namespace

std::shared_ptr<const ParsedLink> TemplateCache::get(std::string_view raw, std::uint64_t tag, const Rules& rules) {
  thread_local Front front;
  for (const FrontEntry& e : front.entries)
    if (e.owner == id_ && e.tag == tag && e.raw == raw) {
      front_hits_.fetch_add(1);
      return e.parsed;
    }
  FrontEntry& slot = front.entries[front.next++ % front.entries.size()];
  std::shared_ptr<const ParsedLink> p = get_shared(raw, tag, rules);
  slot.owner = id_;
  slot.tag = tag;
  slot.raw.assign(raw);
  slot.parsed = per_thread_alias(std::move(p));
  return slot.parsed;
}

std::shared_ptr<const ParsedLink> TemplateCache::get_shared(std::string_view raw, std::uint64_t tag,
                                                            const Rules& rules) {
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
