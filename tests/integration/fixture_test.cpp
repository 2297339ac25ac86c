// The integration fixture's own helpers. capture_as builds everything its
// child needs before fork (the child only makes system calls), so it
// searches $PATH itself the way execvpe(3) does; these check that search,
// the environment and identity it gives, the status it reports, that the
// command's exit ends the capture, and that a command that never ends is
// killed and fails the test instead of hanging.
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <gtest/gtest-spi.h>
#include <gtest/gtest.h>

#include <chrono>
#include <cstdlib>
#include <fstream>
#include <optional>
#include <string>

#include "common/temp_dir.hpp"
#include "mount_fixture.hpp"

namespace vsymfs::testing {
namespace {

// Sets $PATH for the guard's life (the test runs no other thread).
class PathIs {
 public:
  explicit PathIs(const std::string& path) {
    if (const char* old = std::getenv("PATH")) old_ = old;
    ::setenv("PATH", path.c_str(), 1);
  }
  ~PathIs() {
    if (old_) {
      ::setenv("PATH", old_->c_str(), 1);
    } else {
      ::unsetenv("PATH");
    }
  }
  PathIs(const PathIs&) = delete;
  PathIs& operator=(const PathIs&) = delete;

 private:
  std::optional<std::string> old_;
};

void script(const std::string& path, const std::string& says, mode_t mode) {
  std::ofstream(path) << "#!/bin/sh\necho " << says << "\n";
  ASSERT_EQ(::chmod(path.c_str(), mode), 0);
}

TEST(CaptureAs, ACommandWithoutASlashIsSearchedInPathAsExecvpeDoes) {
  int status = -1;
  EXPECT_EQ(capture_as(As{}, {"sh", "-c", "echo $0", "found"}, &status), "found\n");
  EXPECT_EQ(status, 0);

  const vsymfs::test::TempDir tmp("vsymfs-fixture", 0755, "/tmp");
  const std::string no_exec = tmp.path() + "/no-exec", runs = tmp.path() + "/runs", empty = tmp.path() + "/empty";
  for (const auto& d : {no_exec, runs, empty}) ASSERT_EQ(::mkdir(d.c_str(), 0755), 0);
  script(no_exec + "/vsymfs-fixture-cmd", "no-exec", 0644);
  script(runs + "/vsymfs-fixture-cmd", "runs", 0755);
  {
    // Missing in the first directory, not executable in the second: both
    // passed over, the third runs.
    PathIs path(empty + ":" + no_exec + ":" + runs);
    status = -1;
    EXPECT_EQ(capture_as(As{}, {"vsymfs-fixture-cmd"}, &status), "runs\n");
    EXPECT_EQ(status, 0);
  }
  {
    PathIs path(empty + ":" + no_exec);
    status = -1;
    EXPECT_EQ(capture_as(As{}, {"vsymfs-fixture-cmd"}, &status), "");
    EXPECT_EQ(status, 127) << "found only where it may not run";
  }
  {
    PathIs path(empty);
    status = -1;
    EXPECT_EQ(capture_as(As{}, {"vsymfs-fixture-cmd"}, &status), "");
    EXPECT_EQ(status, 127) << "found nowhere";
  }
  // With a slash, $PATH is not asked.
  PathIs path(runs);
  status = -1;
  capture_as(As{}, {"./vsymfs-fixture-cmd"}, &status);
  EXPECT_EQ(status, 127);
}

TEST(CaptureAs, TheCommandGetsTheEnvironmentAndIdentityItIsGiven) {
  int status = -1;
  EXPECT_EQ(capture_as(As{.env = {"A=1", "B=2"}}, {"/usr/bin/env"}, &status), "A=1\nB=2\n");
  EXPECT_EQ(status, 0);
  EXPECT_EQ(capture_as(As{}, {"/usr/bin/env"}, &status), "") << "no environment at all";
  ::setenv("VSYMFS_FIXTURE_TEST", "kept", 1);
  const std::string kept = capture_as(As{.env = {"A=1"}, .keep_env = true}, {"/usr/bin/env"}, &status);
  ::unsetenv("VSYMFS_FIXTURE_TEST");
  EXPECT_NE(kept.find("VSYMFS_FIXTURE_TEST=kept\n"), std::string::npos) << kept;
  EXPECT_NE(kept.find("A=1\n"), std::string::npos) << kept;

  EXPECT_EQ(capture_as(As{65534, 65533, {65532}}, {"/usr/bin/id", "-u"}, &status), "65534\n");
  EXPECT_EQ(capture_as(As{65534, 65533, {65532}}, {"/usr/bin/id", "-G"}, &status), "65533 65532\n");
  EXPECT_EQ(status, 0);
}

TEST(CaptureAs, AKilledCommandReportsItsSignal) {
  int status = -1;
  capture_as(As{}, {"/bin/sh", "-c", "kill -9 $$"}, &status);
  EXPECT_EQ(status, 128 + 9);
}

// The pipe's other end held by another process (here one the command
// leaves running; in faults_test, a process another thread forked while
// capture_as ran): the command's exit ends the wait, not the pipe's end.
TEST(CaptureAs, ItsOutputEndsWhenItExitsEvenWhileAnotherProcessHoldsThePipe) {
  int status = -1;
  const std::string out =
      capture_as(As{}, {"/bin/sh", "-c", "/bin/sleep 1000 & echo $!"}, &status, std::chrono::seconds(60));
  EXPECT_EQ(status, 0);
  ASSERT_FALSE(out.empty());
  EXPECT_EQ(out.back(), '\n');
  const pid_t left_running = static_cast<pid_t>(std::stol(out));
  ASSERT_GT(left_running, 0);
  EXPECT_EQ(::kill(left_running, SIGKILL), 0) << "the sleep should still hold the pipe";
}

TEST(CaptureAs, ACommandThatDoesNotFinishIsKilledAndFailsTheTest) {
  int status = -1;
  EXPECT_NONFATAL_FAILURE(capture_as(As{}, {"/bin/sleep", "1000"}, &status, std::chrono::seconds(1)),
                          "capture_as: `/bin/sleep 1000` had not finished after 1 s and was killed");
  EXPECT_EQ(status, 128 + 9);
}

}  // namespace
}  // namespace vsymfs::testing
