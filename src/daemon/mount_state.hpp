// What one mount's FUSE layer, link service and control server share: the
// rules in force, the run-time values, the counters. Readers on the hot path
// take no lock: rules and run-time values are immutable snapshots swapped
// atomically (std::atomic<std::shared_ptr>).
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>

#include "vsymfs/caller.hpp"
#include "vsymfs/result.hpp"
#include "vsymfs/rules.hpp"
#include "vsymfs/runtime_vars.hpp"

namespace vsymfs::daemon {

struct Counters {
  std::atomic<std::uint64_t> readlinks{0};        // READLINK requests answered
  std::atomic<std::uint64_t> expansions{0};       // templates expanded (readlink, getattr, @sys)
  std::atomic<std::uint64_t> by_scope[8]{};       // values substituted, indexed by Scope
  std::atomic<std::uint64_t> errors{0};           // expansions that failed (ENOENT, ENAMETOOLONG)
  std::atomic<std::uint64_t> environ_timeouts{0}; // /proc reads abandoned
  std::atomic<std::uint64_t> reloads{0};
  std::atomic<std::uint64_t> reload_failures{0};
};

class MountState {
 public:
  struct Config {
    std::string source;       // absolute, as given
    std::string mountpoint;   // absolute
    std::string rules_path;   // "" = built-in default rules only
    bool rules_path_explicit = false;  // given with -o rules=; missing file is then an error
  };

  // Loads the rules (file, or built-in default when the default path is absent).
  static Result<std::unique_ptr<MountState>> create(Config cfg);

  const Config& config() const noexcept { return cfg_; }
  const HostInfo& host() const noexcept { return host_; }

  std::shared_ptr<const Rules> rules() const noexcept { return rules_.load(std::memory_order_acquire); }
  std::uint64_t rules_generation() const noexcept { return generation_.load(std::memory_order_acquire); }
  std::chrono::system_clock::time_point rules_loaded_at() const;

  // Re-read the rules file. A valid file is swapped in atomically and the
  // on_rules_changed hook runs; an invalid one is returned as an error and
  // the old rules stay in force. Serialised internally.
  Result<void> reload();

  std::shared_ptr<const RuntimeVars> runtime() const noexcept { return runtime_.load(std::memory_order_acquire); }
  // Publish a new run-time table (the control server does copy-on-write and
  // persists before publishing).
  void publish_runtime(std::shared_ptr<const RuntimeVars> vars) noexcept;

  // Called after a successful reload or runtime change (the FUSE layer
  // invalidates kernel-cached symlinks / attributes there).
  void set_on_change(std::function<void()> hook);

  Counters& counters() noexcept { return counters_; }

 private:
  explicit MountState(Config cfg);
  void notify_change();

  Config cfg_;
  HostInfo host_;
  std::atomic<std::shared_ptr<const Rules>> rules_;
  std::atomic<std::shared_ptr<const RuntimeVars>> runtime_;
  std::atomic<std::uint64_t> generation_{0};
  mutable std::mutex mu_;  // serialises reload() and guards loaded_at_, on_change_
  std::chrono::system_clock::time_point loaded_at_{};
  std::function<void()> on_change_;
  Counters counters_;
};

}  // namespace vsymfs::daemon
