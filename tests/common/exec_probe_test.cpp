// The 32-bit probe: its skip path (a program the kernel refuses) runs on
// every machine through a foreign ELF, its "runs" path through a 64-bit
// program, and the real helper's answer is one of the two.
#include "common/exec_probe.hpp"

#include <sys/stat.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <string>

#include "common/temp_dir.hpp"

namespace vsymfs::test {
namespace {

// Sets an environment variable for one scope and puts the old value back.
class ScopedEnv {
 public:
  ScopedEnv(const char* name, const std::string& value) : name_(name) {
    if (const char* old = std::getenv(name)) old_ = old;
    ::setenv(name, value.c_str(), 1);
  }
  ~ScopedEnv() {
    if (old_)
      ::setenv(name_, old_->c_str(), 1);
    else
      ::unsetenv(name_);
  }
  ScopedEnv(const ScopedEnv&) = delete;
  ScopedEnv& operator=(const ScopedEnv&) = delete;

 private:
  const char* name_;
  std::optional<std::string> old_;
};

TEST(ExecProbe, AForeignElfIsRefusedWithTheKernelsReason) {
  TempDir dir("exec-probe");
  const std::string elf = dir.path() + "/aarch64";
  ASSERT_TRUE(write_foreign_elf(elf)) << std::strerror(errno);
  struct stat st {};
  ASSERT_EQ(::stat(elf.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0755u);
  EXPECT_EQ(st.st_size, 64);

  const ExecProbe p = probe_exec(elf);
  EXPECT_FALSE(p.runs);
  EXPECT_EQ(p.reason, "this kernel refuses 32-bit executables (execve: Exec format error)");
}

TEST(ExecProbe, TheVariableForcesTheProbeAndTheReasonSaysSo) {
  TempDir dir("exec-probe");
  const std::string elf = dir.path() + "/aarch64";
  ASSERT_TRUE(write_foreign_elf(elf)) << std::strerror(errno);
  ScopedEnv forced("VSYMFS_TEST_PROBE32", elf);
  const ExecProbe p = probe_exec32();
  EXPECT_FALSE(p);
  EXPECT_EQ(p.reason, "this kernel refuses 32-bit executables (execve: Exec format error) [probe forced to " + elf +
                          " by VSYMFS_TEST_PROBE32]");
}

TEST(ExecProbe, NoHelperBuiltSaysGccMultilibIsMissing) {
  EXPECT_EQ(probe_exec("").reason, "no 32-bit helper built (gcc-multilib missing)");
  TempDir dir("exec-probe");
  EXPECT_EQ(probe_exec(dir.path() + "/absent").reason, "no 32-bit helper built (gcc-multilib missing)");
  // Under meson an empty VSYMFS_HELPER32 is the build saying "not built".
  ScopedEnv none("VSYMFS_HELPER32", "");
  ScopedEnv unforced("VSYMFS_TEST_PROBE32", "");
  EXPECT_EQ(probe_exec32().reason, "no 32-bit helper built (gcc-multilib missing)");
}

TEST(ExecProbe, AForcedPathThatIsNoProgramIsNamed) {
  TempDir dir("exec-probe");
  ScopedEnv forced("VSYMFS_TEST_PROBE32", dir.path() + "/absent");
  EXPECT_EQ(probe_exec32().reason, "VSYMFS_TEST_PROBE32=" + dir.path() + "/absent is not an executable file");
}

// The path that says "runs", on any machine: a native program that exits 0.
TEST(ExecProbe, AProgramThatRunsAndExitsZeroRuns) {
  const ExecProbe p = probe_exec("/bin/true");
  EXPECT_TRUE(p.runs) << p.reason;
  EXPECT_TRUE(p.reason.empty());
}

TEST(ExecProbe, AProgramThatRunsButFailsIsNotTakenForRunning) {
  const ExecProbe p = probe_exec("/bin/false");
  EXPECT_FALSE(p.runs);
  EXPECT_EQ(p.reason, "the 32-bit helper /bin/false started but exited with status 1 (32-bit runtime libraries missing?)");
}

// The helper meson built: on x86-64 with gcc-multilib it exists, and it
// either runs or the kernel refuses it; nothing else may come back.
TEST(ExecProbe, TheBuiltHelperRunsOrIsRefusedByTheKernel) {
  const std::string helper = helper32_path();
  if (helper.empty()) GTEST_SKIP() << "no 32-bit helper built (gcc-multilib missing)";
  ScopedEnv unforced("VSYMFS_TEST_PROBE32", "");
  const ExecProbe p = probe_exec32();
  if (p.runs) {
    SUCCEED() << "this machine runs 32-bit executables";
  } else {
    EXPECT_EQ(p.reason, "this kernel refuses 32-bit executables (execve: Exec format error)");
  }
  std::printf("32-bit executables on this machine: %s\n", p.runs ? "run" : p.reason.c_str());
}

}  // namespace
}  // namespace vsymfs::test
