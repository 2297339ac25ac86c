// What a native caller pays for emulation detection (issue 19). The only
// new work is on a context cache miss (a process's first request after its
// execve): the exe's fstat, which comes with the open the 32-bit detection
// already made, and BinfmtRegistry::emulation_of (one poll(2) of its
// inotify watch and /proc/self/mountinfo; the directory is listed only
// after an event).
// Side by side: the /proc reads a miss made before (exe ELF class,
// personality, auxv, environ) and the same with the detection added, for a
// live child process. A cache hit runs neither.
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <string>
#include <vector>

#include <benchmark/benchmark.h>

#include "daemon/binfmt_registry.hpp"
#include "daemon/proc_reader.hpp"

namespace {

using namespace vsymfs::daemon;

pid_t child() {
  static pid_t pid = [] {
    const pid_t p = ::fork();
    if (p == 0) {
      ::execl("/bin/sleep", "sleep", "3600", static_cast<char*>(nullptr));
      ::_exit(127);
    }
    return p;
  }();
  return pid;
}

void old_miss(pid_t pid) {
  unsigned elf_class = 64;
  if (auto c = proc::read_exe_elf_class(pid)) elf_class = *c;
  benchmark::DoNotOptimize(proc::read_personality(pid));
  benchmark::DoNotOptimize(proc::read_auxv_secure(pid, elf_class == 32 ? 4 : 8));
  std::vector<std::string> env;
  benchmark::DoNotOptimize(proc::read_environ(pid, env));
}

void new_miss(pid_t pid, BinfmtRegistry& binfmt) {
  unsigned elf_class = 64;
  if (auto exe = proc::read_exe(pid)) {
    if (exe->elf_class != 0) elf_class = exe->elf_class;
    benchmark::DoNotOptimize(binfmt.emulation_of(exe->dev, exe->ino));
  }
  benchmark::DoNotOptimize(proc::read_personality(pid));
  benchmark::DoNotOptimize(proc::read_auxv_secure(pid, elf_class == 32 ? 4 : 8));
  std::vector<std::string> env;
  benchmark::DoNotOptimize(proc::read_environ(pid, env));
}

void BM_MissBefore(benchmark::State& state) {
  const pid_t pid = child();
  for (auto _ : state) old_miss(pid);
}
BENCHMARK(BM_MissBefore);

void BM_MissWithDetection(benchmark::State& state) {
  const pid_t pid = child();
  BinfmtRegistry binfmt;
  for (auto _ : state) new_miss(pid, binfmt);
  state.counters["emulators"] = static_cast<double>(binfmt.stats().emulators);
  state.counters["reloads"] = static_cast<double>(binfmt.stats().reloads);
  state.counters["listings"] = static_cast<double>(binfmt.stats().checks);
}
BENCHMARK(BM_MissWithDetection);

// The detection alone: one listing and a table lookup.
void BM_DetectionAlone(benchmark::State& state) {
  BinfmtRegistry binfmt;
  for (auto _ : state) benchmark::DoNotOptimize(binfmt.emulation_of(1, 1));
}
BENCHMARK(BM_DetectionAlone);

}  // namespace

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  if (child() > 0) {
    ::kill(child(), SIGKILL);
    ::waitpid(child(), nullptr, 0);
  }
  return 0;
}
