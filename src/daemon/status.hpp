// What `vsymctl status` prints, gathered from the objects that know it. Each
// object that has something to say implements StatusProvider; the control
// server asks its providers in turn (control::ServerOptions::status) and
// reaches into none of them. Providers run on the control server's thread
// and must outlive the server.
#pragma once

#include <string>
#include <utility>
#include <vector>

namespace vsymfs::daemon {

class CallerContexts;
class LinkService;

// key, value: one `key: value` line each, in order.
using StatusLines = std::vector<std::pair<std::string, std::string>>;

class StatusProvider {
 public:
  virtual ~StatusProvider() = default;
  virtual void status(StatusLines& out) const = 0;
};

// The daemon's caches: caller contexts (caller_cache_*), then the link
// service's templates and @sys probes (template_cache_*, sys_probe_cache_*).
class CacheStatus final : public StatusProvider {
 public:
  CacheStatus(const CallerContexts& contexts, const LinkService& links) noexcept
      : contexts_(contexts), links_(links) {}
  void status(StatusLines& out) const override;

 private:
  const CallerContexts& contexts_;
  const LinkService& links_;
};

}  // namespace vsymfs::daemon
