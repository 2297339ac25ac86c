// Programs of another architecture (issue 19): an aarch64 program run by
// qemu-user through binfmt_misc gets aarch64's @sys, @machine,
// @machine_arch, @emul and ${ARCH} through a real mount, a native program
// the host's; `bin -> @sys/bin` runs each architecture's own binary;
// `vsymctl expand --arch aarch64` agrees with the emulated program; and
// `vsymctl explain` names the emulation as the source of the values.
//
// The test registers its own binfmt_misc entries (vsymfs-test-qemu-aarch64,
// and vsymfs-test-qemu-x86_64 whose magic no real file has, see
// ExplainNamesTheEmulation) and removes exactly those afterwards; entries it
// did not make are never touched. binfmt_misc is mounted when it is not
// (and left mounted: other entries may have been registered there since).
// Each check skips, saying why, where binfmt_misc cannot be mounted or the
// cross compiler or qemu-user-static is missing.
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "child_process.hpp"
#include "mount_fixture.hpp"

namespace vsymfs::testing {
namespace {

namespace fs = std::filesystem;

constexpr const char* kBinfmtDir = "/proc/sys/fs/binfmt_misc";
constexpr long kBinfmtMagic = 0x42494e4d;  // BINFMTFS_MAGIC
constexpr const char* kEntry = "vsymfs-test-qemu-aarch64";
constexpr const char* kExplainEntry = "vsymfs-test-qemu-x86_64";
constexpr auto kLimit = std::chrono::seconds(120);

// Debian 12's /usr/lib/binfmt.d/qemu-aarch64.conf, used when the file is
// not there (other releases keep it elsewhere or not at all).
constexpr const char* kAarch64Magic =
    R"(\x7f\x45\x4c\x46\x02\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\xb7\x00)";
constexpr const char* kAarch64Mask =
    R"(\xff\xff\xff\xff\xff\xff\xff\x00\xff\xff\xff\xff\xff\xff\xff\xff\xfe\xff\xff\xff)";

std::string env_or_empty(const char* name) {
  const char* v = std::getenv(name);
  return v != nullptr ? v : "";
}

// Where binfmt_misc cannot be had, the reason; "" when it is mounted.
std::string ensure_binfmt_misc() {
  struct statfs sf {};
  if (::statfs(kBinfmtDir, &sf) == 0 && static_cast<long>(sf.f_type) == kBinfmtMagic) return "";
  if (::mount("none", kBinfmtDir, "binfmt_misc", 0, nullptr) != 0)
    return std::string("binfmt_misc cannot be mounted on ") + kBinfmtDir + ": " + std::strerror(errno);
  return "";
}

bool write_file(const std::string& path, const std::string& text) {
  std::ofstream out(path);
  out << text;
  out.flush();
  return static_cast<bool>(out);
}

// One binfmt_misc entry this test made; removed (only it) when it goes.
class Registration {
 public:
  // `line` is the register line without its name: ":M::magic:mask:interp:flags".
  Registration(std::string name, const std::string& rest) : name_(std::move(name)) {
    const std::string path = std::string(kBinfmtDir) + "/" + name_;
    // A leftover of this very test (a killed run) is ours to remove.
    if (::access(path.c_str(), F_OK) == 0) write_file(path, "-1");
    ok_ = write_file(std::string(kBinfmtDir) + "/register", ":" + name_ + rest);
    if (!ok_) error_ = std::strerror(errno);
  }
  ~Registration() {
    if (ok_) write_file(std::string(kBinfmtDir) + "/" + name_, "-1");
  }
  Registration(const Registration&) = delete;
  Registration& operator=(const Registration&) = delete;
  bool ok() const { return ok_; }
  const std::string& error() const { return error_; }

 private:
  std::string name_;
  bool ok_ = false;
  std::string error_;
};

// The aarch64 line: magic and mask from Debian's .conf where it exists,
// our own interpreter path (the file qemu-aarch64-static, which is what
// an emulated process's /proc/PID/exe shows) and the flags OPF.
std::string aarch64_register_rest(const std::string& qemu) {
  std::string magic = kAarch64Magic, mask = kAarch64Mask;
  std::ifstream conf("/usr/lib/binfmt.d/qemu-aarch64.conf");
  std::string line;
  if (std::getline(conf, line) && line.size() > 1) {
    // :name:type:offset:magic:mask:interpreter:flags (the first byte is the delimiter)
    std::vector<std::string> parts;
    std::stringstream ss(line.substr(1));
    for (std::string p; std::getline(ss, p, line[0]);) parts.push_back(p);
    if (parts.size() >= 5 && parts[1] == "M") {
      magic = parts[3];
      mask = parts[4];
    }
  }
  return ":M::" + magic + ":" + mask + ":" + qemu + ":OPF";
}

class EmulatedCallers : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    probe_aarch64_ = env_or_empty("ARCH_PROBE_AARCH64");
    probe_native_ = env_or_empty("ARCH_PROBE_NATIVE");
    qemu_ = env_or_empty("QEMU_AARCH64");
    if (probe_aarch64_.empty()) {
      skip_ = "no aarch64 test program: no cross compiler when the build was configured (aarch64-linux-gnu-gcc, "
              "or clang with lld and libc6-dev-arm64-cross libgcc-12-dev-arm64-cross)";
      return;
    }
    if (qemu_.empty()) {
      skip_ = "qemu-aarch64-static was not found when the build was configured (apt-get install qemu-user-static)";
      return;
    }
    skip_ = ensure_binfmt_misc();
    if (!skip_.empty()) return;
    registration_ = std::make_unique<Registration>(kEntry, aarch64_register_rest(qemu_));
    if (!registration_->ok()) {
      skip_ = "binfmt_misc refused the aarch64 entry: " + registration_->error();
      return;
    }
    mount_ = std::make_unique<Mount>();
    const Mount& m = *mount_;
    fs::create_symlink("@sys", m.src("sys"));
    fs::create_symlink("lib@machine", m.src("mach"));
    fs::create_symlink("@{machine_arch}", m.src("march"));
    fs::create_symlink("${ARCH}", m.src("arch"));
    fs::create_symlink("@emul", m.src("emul"));
    fs::create_symlink("@sys/bin", m.src("bin"));
    for (const char* sys : {"arm64_linux26", "amd64_linux26"}) {
      fs::create_directories(m.src(std::string(sys) + "/bin"));
      fs::create_directories(m.src(std::string("comp/") + sys));
      write_file(m.src(std::string("comp/") + sys + "/id"), std::string(sys) + "\n");
    }
    fs::create_directories(m.src("libx86_64"));  // explain walks to the target
    fs::copy_file(probe_aarch64_, m.src("arm64_linux26/bin/hello"));
    fs::copy_file(probe_native_, m.src("amd64_linux26/bin/hello"));
  }
  static void TearDownTestSuite() {
    mount_.reset();
    registration_.reset();
  }
  void SetUp() override {
    if (!skip_.empty()) GTEST_SKIP() << skip_;
  }

  static Outcome probe(const std::string& program, std::vector<std::string> args) {
    Spawn s;
    s.argv = {program};
    s.argv.insert(s.argv.end(), args.begin(), args.end());
    s.env = {"PATH=/usr/bin:/bin"};
    s.timeout_ms = 60'000;
    return run(s);
  }
  static std::string links(const std::string& program) {
    const Mount& m = *mount_;
    auto o = probe(program, {"readlink", m.mnt("sys"), m.mnt("mach"), m.mnt("march"), m.mnt("arch"), m.mnt("emul"),
                             m.mnt("bin")});
    EXPECT_TRUE(o) << program << " status " << o.status << (o.timed_out ? " (timed out)" : "");
    return o.out;
  }

  static inline std::string skip_, probe_aarch64_, probe_native_, qemu_;
  static inline std::unique_ptr<Registration> registration_;
  static inline std::unique_ptr<Mount> mount_;
};

TEST_F(EmulatedCallers, EmulatedProgramSeesItsOwnArchitecture) {
  Watchdog dog({mount_.get()}, kLimit);
  // The issue's table: what the aarch64 program reads through the mount.
  EXPECT_EQ(links(probe_aarch64_),
            "arm64_linux26\n"
            "libaarch64\n"
            "aarch64\n"
            "aarch64\n"
            "qemu-aarch64\n"
            "arm64_linux26/bin\n");
}

TEST_F(EmulatedCallers, NativeProgramSeesTheHosts) {
  Watchdog dog({mount_.get()}, kLimit);
  // The same probe built for this host (x86_64: the names below are its).
  if (probe(probe_native_, {"hello"}).out != "hello from x86_64\n") GTEST_SKIP() << "the host is not x86_64";
  EXPECT_EQ(links(probe_native_),
            "amd64_linux26\n"
            "libx86_64\n"
            "x86_64\n"
            "x86_64\n"
            "linux\n"
            "amd64_linux26/bin\n");
}

TEST_F(EmulatedCallers, SysComponentResolvesPerArchitecture) {
  Watchdog dog({mount_.get()}, kLimit);
  const std::string path = mount_->mnt("comp/@sys/id");
  EXPECT_EQ(probe(probe_aarch64_, {"cat", path}).out, "arm64_linux26\n");
  if (probe(probe_native_, {"hello"}).out == "hello from x86_64\n") {
    EXPECT_EQ(probe(probe_native_, {"cat", path}).out, "amd64_linux26\n");
  }
}

TEST_F(EmulatedCallers, EachArchitectureExecsItsOwnBinaryThroughSysBin) {
  Watchdog dog({mount_.get()}, kLimit);
  const std::string hello = mount_->mnt("bin/hello");
  // An aarch64 process execs bin/hello: the kernel walks bin -> @sys/bin
  // for it (qemu makes the execve), and runs arm64_linux26/bin/hello,
  // itself an aarch64 program, under qemu again.
  EXPECT_EQ(probe(probe_aarch64_, {"exec", hello, "hello"}).out, "hello from aarch64\n");
  // A native process gets amd64_linux26/bin/hello.
  if (probe(probe_native_, {"hello"}).out == "hello from x86_64\n") {
    EXPECT_EQ(probe(probe_native_, {"exec", hello, "hello"}).out, "hello from x86_64\n");
  }
  // The same from a shell and a native exec of the path itself.
  Spawn s;
  s.argv = {hello, "hello"};
  s.env = {"PATH=/usr/bin:/bin"};
  const Outcome direct = run(s);
  EXPECT_TRUE(direct);
  EXPECT_EQ(direct.out, "hello from x86_64\n");
}

TEST_F(EmulatedCallers, DryRunWithArchAgreesWithTheEmulatedProgram) {
  Watchdog dog({mount_.get()}, kLimit);
  const Mount& m = *mount_;
  std::string expected;
  for (const char* text : {"@sys", "lib@machine", "@{machine_arch}", "${ARCH}", "@emul", "@sys/bin"}) {
    Spawn s;
    s.argv = {vsymctl_bin(), "expand", "--arch", "aarch64", "--probe-root", m.src(), "--clean-env", text};
    s.env = {"PATH=/usr/bin:/bin"};
    const Outcome o = run(s);
    EXPECT_TRUE(o) << text;
    expected += o.out;
  }
  EXPECT_EQ(links(probe_aarch64_), expected);
}

// `vsymctl explain` as a program run by an emulator. vsymctl is built for
// this host, so the emulator here is qemu-x86_64 running it, registered for
// a magic that no real file has (an x86_64 ELF header whose EI_PAD bytes
// spell "vsymfs"): the registration makes nothing else run under qemu, and
// the daemon and vsymctl see exactly what they see for an aarch64 caller.
TEST_F(EmulatedCallers, ExplainNamesTheEmulation) {
  const std::string qemu_x86 = "/usr/bin/qemu-x86_64-static";
  if (::access(qemu_x86.c_str(), X_OK) != 0) GTEST_SKIP() << qemu_x86 << " is missing (qemu-user-static)";
  Registration reg(kExplainEntry, R"(:M::\x7f\x45\x4c\x46\x02\x01\x01\x00\x00\x76\x73\x79\x6d\x66\x73\x00\x02\x00\x3e\x00::)" +
                                      qemu_x86 + ":");
  if (!reg.ok()) GTEST_SKIP() << "binfmt_misc refused the x86_64 entry: " << reg.error();
  // An AddressSanitizer program never starts under qemu-user (it hangs
  // reserving ASan's shadow memory), so in the ASan build the emulated
  // client is the plain build's vsymctl, which scripts/test names in
  // VSYMFS_PLAIN_VSYMCTL; the daemon that answers it is still this build's.
  std::string client = vsymctl_bin();
  if (kAddressSanitizerBuild) {
    client = env_or_empty("VSYMFS_PLAIN_VSYMCTL");
    if (client.empty())
      GTEST_SKIP() << "ASan build without VSYMFS_PLAIN_VSYMCTL (scripts/test sets it): an ASan vsymctl does not start "
                      "under qemu-user";
  }
  Watchdog dog({mount_.get()}, kLimit);
  Spawn s;
  s.argv = {qemu_x86, client, "explain", mount_->mnt("mach")};
  s.env = {"PATH=/usr/bin:/bin"};
  s.timeout_ms = 60'000;
  const Outcome o = run(s);
  EXPECT_TRUE(o) << o.out;
  EXPECT_NE(o.out.find("@machine = x86_64  (builtin: emulated by qemu-x86_64 (binfmt_misc entry " +
                       std::string(kExplainEntry) + "))"),
            std::string::npos)
      << o.out;
  // Natively, the same explain names no emulation.
  Spawn native = s;
  native.argv.erase(native.argv.begin());
  const Outcome n = run(native);
  EXPECT_TRUE(n) << n.out;
  EXPECT_NE(n.out.find("@machine = x86_64  (builtin)\n"), std::string::npos) << n.out;
}

// Rules turn it off: with [scopes] emulation = false the aarch64 program
// gets the host's values, like any native one.
TEST(EmulationOff, RulesTurnItOff) {
  const std::string probe_aarch64 = env_or_empty("ARCH_PROBE_AARCH64"), qemu = env_or_empty("QEMU_AARCH64");
  if (probe_aarch64.empty()) GTEST_SKIP() << "no aarch64 test program (no cross compiler at configure)";
  if (qemu.empty()) GTEST_SKIP() << "qemu-aarch64-static missing at configure (qemu-user-static)";
  if (const std::string why = ensure_binfmt_misc(); !why.empty()) GTEST_SKIP() << why;
  Registration reg(kEntry, aarch64_register_rest(qemu));
  if (!reg.ok()) GTEST_SKIP() << "binfmt_misc refused the aarch64 entry: " << reg.error();
  MountOptions opts;
  opts.rules_text = "[scopes]\nemulation = false\n";
  Mount m(opts);
  fs::create_symlink("lib@machine", m.src("mach"));
  fs::create_symlink("@emul", m.src("emul"));
  Watchdog dog({&m}, kLimit);
  Spawn s;
  s.argv = {probe_aarch64, "readlink", m.mnt("mach"), m.mnt("emul")};
  s.env = {"PATH=/usr/bin:/bin"};
  s.timeout_ms = 60'000;
  const Outcome o = run(s);
  EXPECT_TRUE(o);
  utsname host{};
  ASSERT_EQ(::uname(&host), 0);
  EXPECT_EQ(o.out, "lib" + std::string(host.machine) + "\nlinux\n");
}

}  // namespace
}  // namespace vsymfs::testing
