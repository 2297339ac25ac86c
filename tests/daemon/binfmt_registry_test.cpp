// Which files are emulators: a stand-in for /proc/sys/fs/binfmt_misc (a
// directory of entry files in the kernel's format) read by BinfmtRegistry.
// Covers files-not-names (an interpreter symlink, a same-named copy), entries
// that name no ELF machine, and that a registration change is seen at once
// while an unchanged directory is not read again.
#include "daemon/binfmt_registry.hpp"

#include <sched.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>

#include <gtest/gtest.h>

#include "common/temp_dir.hpp"

namespace vsymfs::daemon {
namespace {

namespace fs = std::filesystem;

constexpr const char* kAarch64Magic = "magic 7f454c460201010000000000000000000200b700\n"
                                      "mask ffffffffffffff00fffffffffffffffffeffffff\n";
constexpr const char* kArmMagic = "magic 7f454c4601010100000000000000000002002800\n"
                                  "mask ffffffffffffff00fffffffffffffffffeffffff\n";

struct Stage {
  test::TempDir tmp{"binfmt-registry"};
  std::string dir = tmp.path() + "/binfmt_misc";
  std::string bin = tmp.path() + "/bin";

  Stage() {
    fs::create_directories(dir);
    fs::create_directories(bin);
    std::ofstream(dir + "/register");
    std::ofstream(dir + "/status") << "enabled\n";
  }
  // An "emulator" file and a symlink to it, as Debian's
  // /usr/libexec/qemu-binfmt/aarch64-binfmt-P -> qemu-aarch64-static.
  std::string emulator(const std::string& name) {
    const std::string path = bin + "/" + name;
    std::ofstream(path) << name;
    fs::create_symlink(path, bin + "/" + name + "-link");
    return path;
  }
  // Written under a temporary name and renamed: a new inode, as the kernel
  // gives every registration.
  void entry(const std::string& name, const std::string& interpreter, const std::string& match) {
    const std::string tmp_path = dir + "/.new";
    std::ofstream(tmp_path) << "enabled\ninterpreter " << interpreter << "\nflags: POF\noffset 0\n" << match;
    fs::rename(tmp_path, dir + "/" + name);
  }
  static std::pair<dev_t, ino_t> id(const std::string& path) {
    struct stat st {};
    EXPECT_EQ(::stat(path.c_str(), &st), 0) << path;
    return {st.st_dev, st.st_ino};
  }
};

std::shared_ptr<const Emulation> of(BinfmtRegistry& r, const std::string& path) {
  const auto [dev, ino] = Stage::id(path);
  return r.emulation_of(dev, ino);
}

TEST(BinfmtRegistry, AnEntrysInterpreterFileIsAnEmulator) {
  Stage s;
  const std::string qemu = s.emulator("qemu-aarch64-static");
  s.entry("qemu-aarch64", qemu + "-link", kAarch64Magic);  // named through a symlink
  BinfmtRegistry r(s.dir);
  const auto em = of(r, qemu);
  ASSERT_NE(em, nullptr);
  EXPECT_EQ(em->machine, "aarch64");
  EXPECT_EQ(em->emul, "qemu-aarch64");  // the file's own name, not the link's
  EXPECT_EQ(em->entry, "qemu-aarch64");
  EXPECT_EQ(em->source, "emulated by qemu-aarch64 (binfmt_misc entry qemu-aarch64)");
  EXPECT_EQ(em->sysnames[0], "arm64_linux26");
  // Any other file is native, even one of the same name elsewhere.
  fs::create_directories(s.bin + "/other");
  std::ofstream(s.bin + "/other/qemu-aarch64-static") << "x";
  EXPECT_EQ(of(r, s.bin + "/other/qemu-aarch64-static"), nullptr);
  EXPECT_EQ(of(r, "/bin/sh"), nullptr);
}

TEST(BinfmtRegistry, EntriesWithoutAnElfMachineAreNoEmulators) {
  Stage s;
  const std::string py = s.emulator("python3.11");
  const std::string wine = s.emulator("wine");
  const std::string junk = s.emulator("junk");
  std::ofstream(s.dir + "/python3.11") << "enabled\ninterpreter " << py << "\nflags: \nextension .pyc\n";
  s.entry("wine", wine, "magic 4d5a\n");
  std::ofstream(s.dir + "/junk") << "interpreter " << junk << "\n";
  BinfmtRegistry r(s.dir);
  EXPECT_EQ(of(r, py), nullptr);
  EXPECT_EQ(of(r, wine), nullptr);
  EXPECT_EQ(of(r, junk), nullptr);
  EXPECT_EQ(r.stats().emulators, 0u);
}

TEST(BinfmtRegistry, RegistrationChangesAreSeenAtOnceAndOnlyThenReread) {
  Stage s;
  const std::string a64 = s.emulator("qemu-aarch64-static");
  const std::string arm = s.emulator("qemu-arm-static");
  BinfmtRegistry r(s.dir);
  EXPECT_EQ(of(r, a64), nullptr);
  EXPECT_EQ(r.stats().reloads, 1u);
  for (int i = 0; i < 5; ++i) EXPECT_EQ(of(r, a64), nullptr);
  EXPECT_EQ(r.stats().reloads, 1u);  // nothing changed: not read again

  s.entry("qemu-aarch64", a64, kAarch64Magic);  // registered
  ASSERT_NE(of(r, a64), nullptr);
  EXPECT_EQ(r.stats().reloads, 2u);
  EXPECT_EQ(of(r, arm), nullptr);

  s.entry("qemu-aarch64", arm, kArmMagic);  // removed and registered again, now for arm
  const auto now = of(r, arm);
  ASSERT_NE(now, nullptr);
  EXPECT_EQ(now->machine, "armv7l");
  EXPECT_TRUE(now->bits32);
  EXPECT_EQ(of(r, a64), nullptr);

  fs::remove(s.dir + "/qemu-aarch64");  // removed
  EXPECT_EQ(of(r, arm), nullptr);
  EXPECT_EQ(r.stats().emulators, 0u);
}

// binfmt_misc mounted over the directory after the registry first looked
// (as `mount -t binfmt_misc` after the daemon started): the mount is heard
// of through /proc/self/mountinfo and the new directory is read. A tmpfs
// stands in for binfmt_misc, mounted in a mount namespace of our own.
TEST(BinfmtRegistry, AFilesystemMountedOverTheDirectoryIsRead) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to mount";
  Stage s;
  const std::string qemu = s.emulator("qemu-aarch64-static");
  const std::string staged = s.tmp.path() + "/staged";
  fs::create_directories(staged);
  std::ofstream(staged + "/qemu-aarch64") << "enabled\ninterpreter " << qemu << "\nflags: POF\noffset 0\n"
                                          << kAarch64Magic;
  // In a child with its own mount namespace: nothing leaks to the machine.
  const pid_t pid = ::fork();
  if (pid == 0) {
    if (::unshare(CLONE_NEWNS) != 0 || ::mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0) ::_exit(2);
    BinfmtRegistry r(s.dir);
    const auto [dev, ino] = Stage::id(qemu);
    if (r.emulation_of(dev, ino) != nullptr) ::_exit(3);  // nothing registered yet
    if (::mount(staged.c_str(), s.dir.c_str(), nullptr, MS_BIND, nullptr) != 0) ::_exit(4);
    const auto em = r.emulation_of(dev, ino);
    if (em == nullptr || em->machine != "aarch64") ::_exit(5);
    if (::umount2(s.dir.c_str(), MNT_DETACH) != 0) ::_exit(6);
    if (r.emulation_of(dev, ino) != nullptr) ::_exit(7);  // and gone with the unmount
    ::_exit(0);
  }
  int status = -1;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0) << "2: no namespace, 3: seen before the mount, 4: bind mount failed, "
                                       "5: not seen after the mount, 6: unmount failed, 7: still seen after it";
}

TEST(BinfmtRegistry, NoDirectoryMeansNoEmulators) {
  BinfmtRegistry r("/nonexistent/binfmt_misc");
  EXPECT_EQ(of(r, "/bin/sh"), nullptr);
}

}  // namespace
}  // namespace vsymfs::daemon
