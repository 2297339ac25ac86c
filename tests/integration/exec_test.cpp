// Executing through variant links: the binary's path, a `#!` script's
// interpreter path, repeatedly and in parallel. The daemon reads /proc of a
// process that is inside execve on this very mount; it must never deadlock.
// Every run has a time limit, so a hang fails the test instead of the suite.
#include <pwd.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "child_process.hpp"
#include "mount_fixture.hpp"

namespace vsymfs::testing {
namespace {

namespace fs = std::filesystem;

constexpr const char* kRules = R"(
[sysname]
native = ["missing_sys", "amd64_linux26"]
compat32 = ["i386_linux26"]
)";

constexpr int kTimeoutMs = 20'000;

class ExecThroughLinks : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    MountOptions opts;
    opts.rules_text = kRules;
    mount_ = std::make_unique<Mount>(opts);
    const Mount& m = *mount_;
    // bin -> @sys/bin, with hello (a copy of echo) only under the second sysname
    fs::create_directories(m.src("amd64_linux26/bin"));
    fs::copy_file("/bin/echo", m.src("amd64_linux26/bin/hello"));
    fs::create_symlink("@sys/bin", m.src("bin"));
    // ibin -> @sys/ibin holds the interpreter of a script
    fs::create_directories(m.src("amd64_linux26/ibin"));
    fs::copy_file("/bin/sh", m.src("amd64_linux26/ibin/sh"));
    fs::create_symlink("@sys/ibin", m.src("ibin"));
    // an interpreter chosen by the caller's environment, default @sys
    fs::create_symlink("${SHDIR:-@sys/ibin}", m.src("envbin"));
    write_script(m.src("script.sh"), "#!" + m.mnt("ibin/sh") + "\necho script-ok \"$1\"\n");
    write_script(m.src("envscript.sh"), "#!" + m.mnt("envbin/sh") + "\necho env-script-ok\n");
    // `TOOLDIR=... tool`: the variable exists only in the envp of the execve
    fs::create_symlink("$TOOLDIR/hello", m.src("tool"));
    // an interpreter that says who it is
    fs::create_directories(m.src("alt"));
    write_script(m.src("alt/sh"), "#!/bin/sh\necho alt-interpreter\n");
    // per-user binaries: ubin -> users/${USER}/bin
    fs::create_directories(m.src("users/root/bin"));
    fs::copy_file("/bin/echo", m.src("users/root/bin/whoami-echo"));
    fs::create_symlink("users/${USER}/bin", m.src("ubin"));
  }
  static void TearDownTestSuite() { mount_.reset(); }

  static void write_script(const std::string& path, const std::string& text) {
    std::ofstream(path) << text;
    fs::permissions(path, fs::perms::owner_all | fs::perms::group_read | fs::perms::group_exec |
                              fs::perms::others_read | fs::perms::others_exec);
  }

  static Spawn cmd(std::vector<std::string> argv, std::vector<std::string> env = {"PATH=/usr/bin:/bin"}) {
    Spawn s;
    s.argv = std::move(argv);
    s.env = std::move(env);
    s.timeout_ms = kTimeoutMs;
    return s;
  }

  static std::unique_ptr<Mount> mount_;
};

std::unique_ptr<Mount> ExecThroughLinks::mount_;

TEST_F(ExecThroughLinks, BinaryThroughASysLink) {
  auto r = run(cmd({mount_->mnt("bin/hello"), "hi"}));
  ASSERT_FALSE(r.timed_out) << "exec through bin -> @sys/bin hung";
  ASSERT_EQ(r.status, 0) << mount_->daemon_log();
  EXPECT_EQ(r.out, "hi\n");
}

TEST_F(ExecThroughLinks, ScriptWhoseInterpreterIsBehindASysLink) {
  auto r = run(cmd({mount_->mnt("script.sh"), "x"}));
  ASSERT_FALSE(r.timed_out) << "exec of a #! script through ibin -> @sys/ibin hung";
  ASSERT_EQ(r.status, 0) << mount_->daemon_log();
  EXPECT_EQ(r.out, "script-ok x\n");
}

TEST_F(ExecThroughLinks, InterpreterChosenByTheEnvironment) {
  // The interpreter's READLINK comes from a process inside execve: the
  // environment that counts is the one it passes to the new program.
  auto dflt = run(cmd({mount_->mnt("envscript.sh")}));
  ASSERT_FALSE(dflt.timed_out);
  ASSERT_EQ(dflt.status, 0) << mount_->daemon_log();
  EXPECT_EQ(dflt.out, "env-script-ok\n");
  auto chosen = run(cmd({mount_->mnt("envscript.sh")}, {"SHDIR=" + mount_->mnt("alt")}));
  ASSERT_FALSE(chosen.timed_out);
  ASSERT_EQ(chosen.status, 0) << mount_->daemon_log();
  EXPECT_EQ(chosen.out, "alt-interpreter\n");
}

TEST_F(ExecThroughLinks, VariableGivenOnlyToTheExecutedProgram) {
  // As `TOOLDIR=... tool` from a shell: TOOLDIR is in the execve's envp,
  // not in the environment of the process that calls execve.
  auto r = run(cmd({mount_->mnt("tool"), "via-envp"}, {"TOOLDIR=" + mount_->mnt("amd64_linux26/bin")}));
  ASSERT_FALSE(r.timed_out);
  ASSERT_EQ(r.status, 0) << mount_->daemon_log();
  EXPECT_EQ(r.out, "via-envp\n");
  // And from a shell that does not export it: the prefix assignment form.
  auto sh = run(cmd({"/bin/sh", "-c", "TOOLDIR=\"$1\" \"$2\" from-shell", "sh", mount_->mnt("amd64_linux26/bin"),
                     mount_->mnt("tool")}));
  ASSERT_FALSE(sh.timed_out);
  ASSERT_EQ(sh.status, 0) << mount_->daemon_log();
  EXPECT_EQ(sh.out, "from-shell\n");
}

TEST_F(ExecThroughLinks, PerUserBinaryDirectory) {
  auto r = run(cmd({mount_->mnt("ubin/whoami-echo"), "root's"}));
  ASSERT_FALSE(r.timed_out);
  ASSERT_EQ(r.status, 0);
  EXPECT_EQ(r.out, "root's\n");
}

TEST_F(ExecThroughLinks, FiftyTimesInARow) {
  for (int i = 0; i < 50; ++i) {
    auto bin = run(cmd({mount_->mnt("bin/hello"), std::to_string(i)}));
    ASSERT_FALSE(bin.timed_out) << "iteration " << i << " hung";
    ASSERT_EQ(bin.out, std::to_string(i) + "\n") << "iteration " << i;
    auto script = run(cmd({mount_->mnt("script.sh"), std::to_string(i)}));
    ASSERT_FALSE(script.timed_out) << "iteration " << i << " hung";
    ASSERT_EQ(script.out, "script-ok " + std::to_string(i) + "\n") << "iteration " << i;
  }
}

TEST_F(ExecThroughLinks, FiftyTimesInParallel) {
  // Each worker is a shell that loops over exec through the links, so the
  // daemon sees many processes inside execve on it at once.
  constexpr int kWorkers = 5;
  constexpr int kRounds = 10;  // 5 x 10 = 50 of each kind
  const std::string loop = "i=0; while [ $i -lt " + std::to_string(kRounds) +
                           " ]; do \"$1\" b$i || exit 1; \"$2\" s$i || exit 2; "
                           "\"$3\" || exit 3; i=$((i+1)); done";
  std::vector<Outcome> results(kWorkers);
  std::vector<std::thread> threads;
  for (int w = 0; w < kWorkers; ++w) {
    threads.emplace_back([&, w] {
      Spawn s = cmd({"/bin/sh", "-c", loop, "sh", mount_->mnt("bin/hello"), mount_->mnt("script.sh"),
                     mount_->mnt("envscript.sh")});
      s.timeout_ms = 60'000;
      results[static_cast<std::size_t>(w)] = run(s);
    });
  }
  for (auto& t : threads) t.join();
  for (int w = 0; w < kWorkers; ++w) {
    const Outcome& r = results[static_cast<std::size_t>(w)];
    ASSERT_FALSE(r.timed_out) << "worker " << w << " hung";
    ASSERT_EQ(r.status, 0) << "worker " << w << "\n" << mount_->daemon_log();
    std::string want;
    for (int i = 0; i < kRounds; ++i)
      want += "b" + std::to_string(i) + "\nscript-ok s" + std::to_string(i) + "\nenv-script-ok\n";
    EXPECT_EQ(r.out, want) << "worker " << w;
  }
  // The daemon is still serving afterwards.
  auto after = run(cmd({mount_->mnt("bin/hello"), "still-alive"}));
  ASSERT_FALSE(after.timed_out);
  EXPECT_EQ(after.out, "still-alive\n");
}

}  // namespace
}  // namespace vsymfs::testing
