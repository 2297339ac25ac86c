#include "daemon/status.hpp"

#include <cstdint>
#include <string>
#include <utility>

#include "daemon/caller_contexts.hpp"
#include "daemon/link_service.hpp"

namespace vsymfs::daemon {

void CacheStatus::status(StatusLines& out) const {
  const auto cs = contexts_.stats();
  const auto ls = links_.cache_stats();
  const std::pair<const char*, std::uint64_t> lines[] = {
      {"caller_cache_entries", cs.entries},       {"caller_cache_nss_entries", cs.nss_entries},
      {"caller_cache_hits", cs.hits},             {"caller_cache_misses", cs.misses},
      {"caller_cache_timeouts", cs.timeouts},     {"caller_cache_processes", cs.processes},
      {"caller_cache_environ_bytes", cs.environ_bytes}, {"caller_cache_environ_limit", cs.environ_bytes_limit},
      {"caller_cache_evictions", cs.evictions},
      {"caller_thread_identity_hits", cs.identity_front_hits},
      {"caller_thread_context_hits", cs.full_front_hits},
      {"template_cache_entries", ls.template_entries},
      {"template_cache_hits", ls.template_hits},  {"template_cache_misses", ls.template_misses},
      {"sys_probe_cache_entries", ls.probe_entries}, {"sys_probe_cache_hits", ls.probe_hits},
      {"sys_probe_cache_misses", ls.probe_misses},
      {"expansion_memo_hits", ls.memo_hits},
  };
  for (const auto& [key, value] : lines) out.emplace_back(key, std::to_string(value));
  out.emplace_back("caller_exec_events", contexts_.exec_events_check());
}

}  // namespace vsymfs::daemon
