// Concurrency (issue 13, item 4): 8 workers for VSYMFS_STRESS_SECONDS
// (default 60) create, write, rename, link, unlink, chmod, truncate, set
// times, make and read variant links and execute a program through one, all
// in one directory of the mount, while reading variant links they share.
// Each worker is a process of its own (stress_worker), so each has its own
// environment and so its own expansion of the shared links; each uses only
// names with its own prefix, so it can keep an exact model of them, which
// it checks as it goes and, at the end, against the mount and SOURCE.
#include <sys/stat.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "child_process.hpp"
#include "fault_tools.hpp"
#include "mount_fixture.hpp"

namespace vsymfs::testing {
namespace {

using namespace std::chrono_literals;
namespace fsys = std::filesystem;

constexpr int kWorkers = 8;

double stress_seconds() {
  const char* s = std::getenv("VSYMFS_STRESS_SECONDS");
  return s != nullptr && std::atof(s) > 0 ? std::atof(s) : 60.0;
}

std::string worker_bin() {
  const char* p = std::getenv("STRESS_WORKER_BIN");
  return p != nullptr ? p : "stress_worker";
}

TEST(Stress, EightWorkersKeepEveryNameTheirModelSays) {
  const double seconds = stress_seconds();
  Mount m;
  faults::Deadline deadline({m.mnt()}, std::chrono::seconds(static_cast<long>(seconds) + 600));
  fsys::create_directory(m.src("work"));
  fsys::create_directory(m.src("shared"));
  ::chmod(m.src("work").c_str(), 0755);
  ASSERT_EQ(::symlink("${STRESS_WORKER}", m.src("shared/who").c_str()), 0);
  ASSERT_EQ(::symlink("prog-${STRESS_WORKER}", m.src("shared/prog").c_str()), 0);
  for (int i = 0; i < kWorkers; ++i) {
    const std::string script = m.src("shared/prog-w" + std::to_string(i));
    std::ofstream(script) << "#!/bin/sh\necho w" << i << "\n";
    ASSERT_EQ(::chmod(script.c_str(), 0755), 0);
  }

  std::vector<Outcome> results(kWorkers);
  {
    std::vector<std::thread> threads;
    for (int i = 0; i < kWorkers; ++i) {
      threads.emplace_back([&, i] {
        const std::string me = "w" + std::to_string(i);
        Spawn s{{worker_bin(), m.mnt("work"), m.src("work"), me, std::to_string(seconds), std::to_string(1000 + i)},
                {"STRESS_WORKER=" + me, "PATH=/usr/bin:/bin"}};
        s.before_exec = [] { ::dup2(1, 2); };
        s.timeout_ms = static_cast<int>(seconds * 1000) + 300'000;
        results[static_cast<std::size_t>(i)] = run(s);
      });
    }
    for (auto& t : threads) t.join();
  }
  long ops = 0, execs = 0, links = 0;
  for (int i = 0; i < kWorkers; ++i) {
    const Outcome& r = results[static_cast<std::size_t>(i)];
    EXPECT_FALSE(r.timed_out) << "worker " << i;
    EXPECT_EQ(r.status, 0) << "worker " << i << ":\n" << r.out;
    long o = 0, e = 0, l = 0;
    std::size_t errs = 0;
    if (std::sscanf(r.out.c_str(), "ops %ld execs %ld links %ld errors %zu", &o, &e, &l, &errs) == 4) {
      ops += o;
      execs += e;
      links += l;
    } else {
      ADD_FAILURE() << "worker " << i << " printed: " << r.out;
    }
  }
  std::printf("%d workers, %.0f s: %ld operations, %ld executions and %ld variant link reads\n",
              kWorkers, seconds, ops, execs, links);
  EXPECT_GT(ops, 100 * kWorkers) << "too little was done to mean anything";
  EXPECT_GT(execs, 0);
  EXPECT_EQ(::kill(m.daemon_pid(), 0), 0);
  EXPECT_FALSE(deadline.fired());
  deadline.disarm();
  m.stop();  // a clean exit 0, or the test fails
}

}  // namespace
}  // namespace vsymfs::testing
