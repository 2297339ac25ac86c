// The daemon's readlink path without FUSE: LinkService::expand for links
// whose templates, caller contexts and @sys answers are cached, as on a
// busy mount after the first request. What is timed is what a FUSE worker
// does between the request and the reply: the template cache, the caller
// context caches, the scopes, the @sys answer cache. Threads(2): two
// workers at once (the machine has two CPUs), where shard locks and shared
// counters show.
#include <fcntl.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>

#include <benchmark/benchmark.h>

#include "daemon/caller_contexts.hpp"
#include "daemon/link_service.hpp"
#include "daemon/mount_state.hpp"

namespace {

using namespace vsymfs::daemon;

struct Fixture {
  std::string root;
  std::unique_ptr<MountState> state;
  std::unique_ptr<CallerContexts> contexts;
  std::unique_ptr<LinkService> links;
  int dir_fd = -1;

  Fixture() {
    char tmpl[] = "/tmp/link_service_bench.XXXXXX";
    root = ::mkdtemp(tmpl);
    std::filesystem::create_directories(root + "/src/dir/amd64_linux26/bin");
    std::filesystem::create_directories(root + "/mnt");
    std::ofstream(root + "/rules.toml") << "[sysname]\nnative = [\"missing_sys\", \"amd64_linux26\"]\n"
                                           "compat32 = [\"i386_linux26\"]\n[vars]\nFOO = \"system\"\n";
    MountState::Config cfg;
    cfg.source = root + "/src";
    cfg.mountpoint = root + "/mnt";
    cfg.entry_timeout = 3600;
    cfg.rules_path = root + "/rules.toml";
    cfg.rules_path_explicit = true;
    auto st = MountState::create(cfg);
    if (!st) std::abort();
    state = std::move(*st);
    contexts = std::make_unique<CallerContexts>();
    contexts->follow_rules(*state);
    links = std::make_unique<LinkService>(*state, *contexts);
    dir_fd = ::open((root + "/src/dir").c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC);
  }
  ~Fixture() {
    ::close(dir_fd);
    links.reset();
    contexts.reset();
    state.reset();
    std::filesystem::remove_all(root);
  }
};

Fixture& fixture() {
  static Fixture f;
  return f;
}

void expand(benchmark::State& state, const char* raw) {
  Fixture& f = fixture();
  const RequestIds ids{::getpid(), ::geteuid(), ::getegid()};
  std::string out;
  if (!f.links->expand(raw, f.dir_fd, ids, out)) state.SkipWithError("expansion failed");
  for (auto _ : state) {
    benchmark::DoNotOptimize(f.links->expand(raw, f.dir_fd, ids, out));
  }
}

void BM_Plain(benchmark::State& s) { expand(s, "/usr/lib/plain/target"); }
void BM_Hostname(benchmark::State& s) { expand(s, "/h/@hostname/x"); }
void BM_User(benchmark::State& s) { expand(s, "/home/${USER}/x"); }
void BM_Env(benchmark::State& s) { expand(s, "/opt/${FOO}/x"); }
void BM_Sys(benchmark::State& s) { expand(s, "@sys/bin"); }

BENCHMARK(BM_Plain)->Threads(1)->Threads(2)->UseRealTime();
BENCHMARK(BM_Hostname)->Threads(1)->Threads(2)->UseRealTime();
BENCHMARK(BM_User)->Threads(1)->Threads(2)->UseRealTime();
BENCHMARK(BM_Env)->Threads(1)->Threads(2)->UseRealTime();
BENCHMARK(BM_Sys)->Threads(1)->Threads(2)->UseRealTime();

}  // namespace

BENCHMARK_MAIN();
