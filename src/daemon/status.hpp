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

// The caller-context cache's lines (caller_cache_*).
class CallerCacheStatus final : public StatusProvider {
 public:
  explicit CallerCacheStatus(const CallerContexts& contexts) noexcept : contexts_(contexts) {}
  void status(StatusLines& out) const override;

 private:
  const CallerContexts& contexts_;
};

// The link service's caches (template_cache_*, sys_probe_cache_*).
class LinkCacheStatus final : public StatusProvider {
 public:
  explicit LinkCacheStatus(const LinkService& links) noexcept : links_(links) {}
  void status(StatusLines& out) const override;

 private:
  const LinkService& links_;
};

}  // namespace vsymfs::daemon
