#include "status.hpp"

#include <string>

#include "caller_contexts.hpp"
#include "link_service.hpp"

namespace vsymfs::daemon {

namespace {
std::string num(std::uint64_t v) { return std::to_string(v); }
}  // namespace

void CallerCacheStatus::status(StatusLines& out) const {
  const auto cs = contexts_.stats();
  out.emplace_back("caller_cache_entries", num(cs.entries));
  out.emplace_back("caller_cache_nss_entries", num(cs.nss_entries));
  out.emplace_back("caller_cache_hits", num(cs.hits));
  out.emplace_back("caller_cache_misses", num(cs.misses));
  out.emplace_back("caller_cache_timeouts", num(cs.timeouts));
  out.emplace_back("caller_cache_processes", num(cs.processes));
  out.emplace_back("caller_cache_environ_bytes", num(cs.environ_bytes));
  out.emplace_back("caller_cache_environ_limit", num(cs.environ_bytes_limit));
  out.emplace_back("caller_cache_evictions", num(cs.evictions));
}

void LinkCacheStatus::status(StatusLines& out) const {
  const auto ls = links_.cache_stats();
  out.emplace_back("template_cache_entries", num(ls.template_entries));
  out.emplace_back("template_cache_hits", num(ls.template_hits));
  out.emplace_back("template_cache_misses", num(ls.template_misses));
  out.emplace_back("sys_probe_cache_entries", num(ls.probe_entries));
  out.emplace_back("sys_probe_cache_hits", num(ls.probe_hits));
  out.emplace_back("sys_probe_cache_misses", num(ls.probe_misses));
}

}  // namespace vsymfs::daemon
