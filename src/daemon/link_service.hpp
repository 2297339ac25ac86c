// Expansion of variant links for the process that asks: the one place where
// the FUSE layer meets the link language, the scopes and the caller context.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "vsymfs/link_template.hpp"
#include "vsymfs/result.hpp"
#include "daemon/caller_contexts.hpp"
#include "daemon/mount_state.hpp"
#include "daemon/sys_probes.hpp"  // LinkDirectory
#include "daemon/template_cache.hpp"  // LinkNeeds
#include "daemon/trace_hub.hpp"

namespace vsymfs::daemon {

// The ids the kernel gave us for a request (fuse_req_ctx), and the caller's
// context when the request already fetched it to take the caller's identity:
// an expansion whose template needs no more than `known` uses it and does not
// ask CallerContexts again. `known` is the tier that was fetched
// (LinkNeeds::Host: identity and groups, CallerContexts::identity();
// Identity: with names, named(); Process: everything, full()).
struct RequestIds {
  pid_t pid;
  uid_t uid;
  gid_t gid;
  const Caller* caller = nullptr;  // not owned; lives for the request
  // The request's own reference to `caller`, when it keeps one: lets the
  // expansion be remembered (a remembered caller must stay alive, so that
  // no other context can take its address).
  const std::shared_ptr<const Caller>* caller_ref = nullptr;
  LinkNeeds known = LinkNeeds::Nothing;
};

class LinkService {
 public:
  struct Options {
    // How long one expansion may wait for @sys probes that leave SOURCE (on
    // a probe thread): a candidate not answered by then counts as absent,
    // that once, and is not remembered.
    std::chrono::milliseconds probe_timeout{1000};
    unsigned probe_threads = 4;
  };
  LinkService(MountState& state, CallerContexts& contexts);
  LinkService(MountState& state, CallerContexts& contexts, Options opts);
  ~LinkService();

  // The mount is up: probes that reach it by any path continue in SOURCE
  // (probe_walk.hpp). Call once, after mounting.
  void note_mounted();

  // The expansion of `raw` (the underlying link's text) for this caller.
  // `link_dir_fd` is an fd (O_PATH is fine) of the link's directory inside
  // SOURCE: @sys candidates with relative targets are probed there. A probe
  // never calls into this mount or any other FUSE filesystem (see
  // probe_walk.hpp). Probes run with the calling thread's filesystem
  // identity, which must be the caller's (the FUSE operations and the
  // control server switch to it first), and their answers are cached for
  // that identity only. With `per_caller = false` probes run as nobody
  // (65534) on a probe thread, so that the one answer every caller gets
  // shows only what anyone may see.
  Result<void> expand(std::string_view raw, int link_dir_fd, const RequestIds& ids, std::string& out);
  // The same, with the directory found only if a probe needs it. `needs`,
  // when given, receives how much of the caller the text needed: a request
  // that fetches that much before its next expansion of the same link
  // enters CallerContexts once.
  // How much of its caller the link text `raw` needs (Nothing: a plain
  // link, which expands to itself). From the parsed-template cache.
  LinkNeeds needs(std::string_view raw);
  Result<void> expand(std::string_view raw, LinkDirectory& link_dir, const RequestIds& ids, std::string& out,
                      LinkNeeds* needs = nullptr);

  // The same with provenance for `vsymctl explain`. Its probes read the
  // cache but never fill it: a client can send any text.
  Result<void> explain(std::string_view raw, int link_dir_fd, const RequestIds& ids, std::string& out,
                       std::vector<Substitution>& trace);

  // The same for a caller known by other means than a FUSE request (a
  // control-socket client: kernel-reported ids and the environment it sent).
  // Nothing of the caller's is read from /proc.
  Result<void> explain(std::string_view raw, int link_dir_fd, const Caller& caller, std::string& out,
                       std::vector<Substitution>& trace);

  // Who traces expansions (`vsymctl trace`). expand() hands each of its
  // expansions to it while anyone subscribes; explain() never does.
  TraceHub& tracer() noexcept;

  // Whether symlink expansions may differ between callers under the rules in
  // force now (then symlink attributes get attr_timeout 0).
  bool per_caller() const noexcept;

  // For a path component that is exactly "@sys" or ends in "@sys" and does
  // not exist literally: the names to try in order, for this caller.
  void sys_component_candidates(std::string_view name, const RequestIds& ids, std::vector<std::string>& out);

  // Drop parsed templates and @sys probe results now: one generation bump.
  // A rules reload needs no call: the next expansion notices the new rules
  // generation and bumps once itself.
  void clear_cache();

  // For `vsymctl status`. Template hits/misses count parses avoided/done;
  // probe hits/misses count @sys candidate checks answered from the cache
  // or asked of SOURCE.
  struct CacheStats {
    std::size_t template_entries;
    std::uint64_t template_hits, template_misses;
    std::size_t probe_entries;
    std::uint64_t probe_hits, probe_misses;
    // Probes that had to leave SOURCE (run on a probe thread), of those the
    // ones abandoned (deadline, or no thread free), and walks stopped at a
    // FUSE mount other than ours (or a mount the table does not list).
    std::uint64_t probe_outside, probe_abandoned, probe_refused;
    // Expansions answered from the thread's memo (see link_service.cpp).
    std::uint64_t memo_hits;
  };
  CacheStats cache_stats() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace vsymfs::daemon
