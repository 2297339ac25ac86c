// Microbenchmark of the link language: parse once, expand many times into a
// reused string, as the daemon's readlink path does. Every benchmark counts
// the calls to the global operator new inside its timed loop; the expansion
// paths that must not allocate fail (SkipWithError) when they do.
#include <benchmark/benchmark.h>

#include <array>
#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <new>
#include <string>
#include <vector>

#include <fnmatch.h>

#include "vsymfs/host_view.hpp"
#include "vsymfs/link_template.hpp"
#include "vsymfs/resolver.hpp"

namespace {
std::atomic<std::uint64_t> g_allocations{0};
}  // namespace

// Counting replacements of the global allocation functions; the array and
// nothrow forms forward to these in libstdc++. GCC cannot see that this
// operator new is malloc, so it flags the matching free() as mismatched.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"
void* operator new(std::size_t size) {
  g_allocations.fetch_add(1, std::memory_order_relaxed);
  if (void* p = std::malloc(size == 0 ? 1 : size)) return p;
  throw std::bad_alloc();
}
void operator delete(void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }
#pragma GCC diagnostic pop

namespace {

using vsymfs::Scope;
using vsymfs::Value;

// Answers from fixed tables, like the real resolver: no allocation per call.
class FixedSource final : public vsymfs::ValueSource {
 public:
  std::optional<Value> variable(std::string_view name) const override {
    for (const auto& [key, value] : kVars) {
      if (key == name) return Value{value, Scope::User};
    }
    return std::nullopt;
  }
  std::optional<Value> magic(std::string_view name) const override {
    if (name == "machine") return Value{"x86_64", Scope::Builtin};
    return std::nullopt;
  }
  std::span<const std::string> sysnames() const override { return sysnames_; }
  Scope sysnames_scope() const override { return Scope::Builtin; }
  Value universe() const override { return Value{"ucb", Scope::User}; }
  Value member() const override { return Value{"member0", Scope::Builtin}; }

 private:
  static constexpr std::array<std::pair<std::string_view, std::string_view>, 4> kVars = {
      {{"USER", "alice"}, {"HOME", "/home/alice"}, {"PROJECT", "vsymfs"}, {"ARCH", "x86_64"}}};
  std::vector<std::string> sysnames_ = {"missing_sys", "amd64_linux26"};
};

// Stands in for the daemon's fstatat: the second sysname exists.
class SecondExists final : public vsymfs::Probe {
 public:
  bool exists(std::string_view target) const override { return target.find("amd64_linux26") != target.npos; }
};

const std::vector<std::string> kUniverses = {"att", "ucb"};

void run_expand(benchmark::State& state, std::string_view raw, const vsymfs::ExpandOptions& opts,
                bool must_not_allocate) {
  const FixedSource source;
  const vsymfs::Template t = vsymfs::Template::parse(raw, vsymfs::ParseOptions{{}, kUniverses});
  std::string out;
  if (!t.expand(source, opts, out).ok()) {  // also the one reservation of `out`
    state.SkipWithError("expansion failed");
    return;
  }
  const std::uint64_t before = g_allocations.load(std::memory_order_relaxed);
  for (auto _ : state) {
    vsymfs::Result<void> r = t.expand(source, opts, out);
    benchmark::DoNotOptimize(r);
    benchmark::DoNotOptimize(out.data());
    if (opts.trace != nullptr) opts.trace->clear();
  }
  const std::uint64_t allocations = g_allocations.load(std::memory_order_relaxed) - before;
  state.counters["allocs_per_expand"] =
      benchmark::Counter(static_cast<double>(allocations), benchmark::Counter::kAvgIterations);
  state.SetLabel(out);
  if (must_not_allocate && allocations != 0) state.SkipWithError("heap allocation on the expansion path");
}

void BM_ExpandThreeVariables(benchmark::State& state) {
  run_expand(state, "/export/${USER}/@sys/%{PROJECT}", {}, true);
}
void BM_ExpandLiteral(benchmark::State& state) {
  run_expand(state, "/usr/lib/x86_64-linux-gnu/libc.so.6", {}, true);
}
void BM_ExpandConditional(benchmark::State& state) {
  run_expand(state, "att=/.attbin ucb=/.ucbbin default=/bin", {}, true);
}
void BM_ExpandSysProbeSecond(benchmark::State& state) {
  static const SecondExists probe;
  vsymfs::ExpandOptions opts;
  opts.probe = &probe;
  run_expand(state, "/afs/@sys/bin", opts, true);
}
// The `vsymctl explain` path: the trace may allocate (values longer than the
// small-string buffer), so it is measured but not held to zero.
void BM_ExpandThreeVariablesWithTrace(benchmark::State& state) {
  std::vector<vsymfs::Substitution> trace;
  trace.reserve(8);
  vsymfs::ExpandOptions opts;
  opts.trace = &trace;
  run_expand(state, "/export/${USER}/@sys/%{PROJECT}", opts, false);
}

void BM_ParseThreeVariables(benchmark::State& state) {
  const std::uint64_t before = g_allocations.load(std::memory_order_relaxed);
  for (auto _ : state) {
    vsymfs::Template t =
        vsymfs::Template::parse("/export/${USER}/@sys/%{PROJECT}", vsymfs::ParseOptions{{}, kUniverses});
    benchmark::DoNotOptimize(t);
  }
  state.counters["allocs_per_parse"] =
      benchmark::Counter(static_cast<double>(g_allocations.load(std::memory_order_relaxed) - before),
                         benchmark::Counter::kAvgIterations);
}

// A cluster's rules with N [host."pattern"] tables, of which only the last
// matches this host: expanding a link that reads a host value and a
// builtin (which falls through the host scope) must cost the same for 1,
// 100 and 10,000 tables, since HostView matched the patterns once.
vsymfs::Rules host_rules(int n) {
  vsymfs::Rules rules;
  rules.sysnames = {"amd64_linux26"};
  rules.sysnames32 = {"i386_linux26"};
  for (int i = 1; i < n; ++i)
    rules.hosts.push_back({"rack" + std::to_string(i) + "-node*", {{"SITE", "rack" + std::to_string(i)}}});
  rules.hosts.push_back({"login*", {{"SITE", "front"}}});
  return rules;
}

vsymfs::HostInfo login_host() {
  vsymfs::HostInfo h;
  h.hostname = "login1";
  h.machine = "x86_64";
  h.machine32 = "i686";
  return h;
}

vsymfs::Caller bench_caller() {
  vsymfs::Caller c;
  c.pid = 1;
  c.uid = 1000;
  c.user_name = "alice";
  return c;
}

void BM_ExpandWithHostTables(benchmark::State& state) {
  const vsymfs::Rules rules = host_rules(static_cast<int>(state.range(0)));
  const vsymfs::HostView view(rules, login_host());
  const vsymfs::Caller caller = bench_caller();
  const vsymfs::Template t = vsymfs::Template::parse("/site/${SITE}/${USER}", vsymfs::ParseOptions{{}, {}});
  std::string out;
  {
    const vsymfs::ScopedResolver r(rules, view, caller, nullptr);
    if (!t.expand(r, {}, out).ok() || out != "/site/front/alice") {
      state.SkipWithError("wrong expansion");
      return;
    }
  }
  const std::uint64_t before = g_allocations.load(std::memory_order_relaxed);
  for (auto _ : state) {
    // As the daemon does: a resolver per expansion, the view shared.
    const vsymfs::ScopedResolver r(rules, view, caller, nullptr);
    vsymfs::Result<void> res = t.expand(r, {}, out);
    benchmark::DoNotOptimize(res);
    benchmark::DoNotOptimize(out.data());
  }
  const std::uint64_t allocations = g_allocations.load(std::memory_order_relaxed) - before;
  state.counters["allocs_per_expand"] =
      benchmark::Counter(static_cast<double>(allocations), benchmark::Counter::kAvgIterations);
  if (allocations != 0) state.SkipWithError("heap allocation on the expansion path");
}

// What the same lookups cost when every host pattern is matched per lookup
// (the resolver before HostView: a hash lookup per table for every name
// that reaches the host scope, fnmatch for the tables that define it).
void BM_HostTablesMatchedPerLookup(benchmark::State& state) {
  const vsymfs::Rules rules = host_rules(static_cast<int>(state.range(0)));
  const std::string hostname = "login1";
  const auto lookup = [&](std::string_view name) -> const std::string* {
    for (const vsymfs::HostRules& h : rules.hosts) {
      const auto it = h.vars.find(name);
      if (it != h.vars.end() && ::fnmatch(h.pattern.c_str(), hostname.c_str(), FNM_CASEFOLD) == 0) return &it->second;
    }
    return nullptr;
  };
  for (auto _ : state) {
    benchmark::DoNotOptimize(lookup("SITE"));
    benchmark::DoNotOptimize(lookup("USER"));
  }
}

// Building the view: once per host name and rules generation (a reload).
void BM_BuildHostView(benchmark::State& state) {
  const vsymfs::Rules rules = host_rules(static_cast<int>(state.range(0)));
  const vsymfs::HostInfo host = login_host();
  for (auto _ : state) {
    vsymfs::HostView view(rules, host);
    benchmark::DoNotOptimize(view);
  }
}

BENCHMARK(BM_ExpandWithHostTables)->Arg(1)->Arg(100)->Arg(10000);
BENCHMARK(BM_HostTablesMatchedPerLookup)->Arg(1)->Arg(100)->Arg(10000);
BENCHMARK(BM_BuildHostView)->Arg(1)->Arg(100)->Arg(10000);
BENCHMARK(BM_ExpandThreeVariables);
BENCHMARK(BM_ExpandLiteral);
BENCHMARK(BM_ExpandConditional);
BENCHMARK(BM_ExpandSysProbeSecond);
BENCHMARK(BM_ExpandThreeVariablesWithTrace);
BENCHMARK(BM_ParseThreeVariables);

}  // namespace

BENCHMARK_MAIN();
