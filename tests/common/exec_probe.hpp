// Can this machine run a 32-bit program? Some machines of ours refuse every
// i386 ELF (execve gives ENOEXEC although the kernel has
// CONFIG_IA32_EMULATION=y), others run them, and a build without gcc-multilib
// has no 32-bit program at all. A test that needs a real 32-bit caller asks
// here and skips with the reason:
//
//   if (auto p = vsymfs::test::probe_exec32(); !p) GTEST_SKIP() << p.reason;
//
// The probe runs the very program those tests run (caller_probe32, built
// with -m32 beside this file), so "it runs" means their helper runs too.
// VSYMFS_TEST_PROBE32=/path/to/elf, read only here, points the probe at
// another program: an ELF with a foreign e_machine (write_foreign_elf
// below, `scripts/test --refuse-32bit`) is refused on every machine, which
// is how the skip path is exercised where 32-bit programs do run.
#pragma once

#include <fcntl.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <climits>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>

extern char** environ;

namespace vsymfs::test {

struct ExecProbe {
  bool runs = false;
  std::string reason;  // why not, in words for a SKIP line; empty when it runs
  explicit operator bool() const { return runs; }
};

// The 32-bit helper meson built (tests/common/caller_probe.cpp with -m32):
// $VSYMFS_HELPER32 under `meson test`, where it is empty when the compiler
// could not target 32-bit x86. A binary run by hand looks in the build
// tree's tests/common/ instead (every test binary sits one directory below).
inline std::string helper32_path() {
  if (const char* p = std::getenv("VSYMFS_HELPER32"); p != nullptr) return p;
  char self[PATH_MAX];
  const ssize_t n = ::readlink("/proc/self/exe", self, sizeof self - 1);
  if (n <= 0) return {};
  std::string dir(self, static_cast<std::size_t>(n));
  dir.resize(dir.rfind('/'));
  return dir + "/../common/caller_probe32";
}

// Runs `elf true` (the helper's "exit 0" command) and says whether it ran.
// `forced_by` names the variable the path came from, so a reason never
// blames the kernel for a refusal that was asked for.
inline ExecProbe probe_exec(const std::string& elf, const char* forced_by = nullptr) {
  ExecProbe r;
  const std::string forced = forced_by ? std::string(" [probe forced to ") + elf + " by " + forced_by + "]" : "";
  if (elf.empty() || ::access(elf.c_str(), X_OK) != 0) {
    r.reason = forced_by ? std::string(forced_by) + "=" + elf + " is not an executable file"
                         : "no 32-bit helper built (gcc-multilib missing)";
    return r;
  }
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
  std::string arg0 = elf, arg1 = "true";
  char* argv[] = {arg0.data(), arg1.data(), nullptr};
  pid_t pid = -1;
  // glibc's posix_spawn returns execve's errno (the child reports it before
  // the parent returns); it never retries an ENOEXEC file with /bin/sh.
  const int err = ::posix_spawn(&pid, elf.c_str(), &fa, nullptr, argv, environ);
  posix_spawn_file_actions_destroy(&fa);
  if (err == ENOEXEC) {
    r.reason = std::string("this kernel refuses 32-bit executables (execve: ") + std::strerror(err) + ")" + forced;
    return r;
  }
  if (err != 0) {
    r.reason = "cannot run the 32-bit helper " + elf + " (execve: " + std::strerror(err) + ")" + forced;
    return r;
  }
  int status = 0;
  pid_t w;
  while ((w = ::waitpid(pid, &status, 0)) < 0 && errno == EINTR) {
  }
  if (w != pid) {
    r.reason = "cannot wait for the 32-bit helper " + elf + ": " + std::strerror(errno);
    return r;
  }
  if (WIFEXITED(status) && WEXITSTATUS(status) == 0) {
    r.runs = true;
    return r;
  }
  r.reason = "the 32-bit helper " + elf + " started but " +
             (WIFEXITED(status) ? "exited with status " + std::to_string(WEXITSTATUS(status))
                                : "was killed by signal " + std::to_string(WTERMSIG(status))) +
             " (32-bit runtime libraries missing?)" + forced;
  return r;
}

// What the 32-bit tests ask: $VSYMFS_TEST_PROBE32 when set, else the helper.
inline ExecProbe probe_exec32() {
  if (const char* forced = std::getenv("VSYMFS_TEST_PROBE32"); forced != nullptr && *forced != '\0')
    return probe_exec(forced, "VSYMFS_TEST_PROBE32");
  return probe_exec(helper32_path());
}

// Writes an ELF header that no x86 kernel runs: 64-bit little-endian, an
// executable for aarch64 (e_machine 183) with no program headers, mode
// 0755. execve refuses it with ENOEXEC on x86 (and on aarch64 too: an
// executable without a PT_LOAD segment). EI_VERSION is 0, which the
// kernel's ELF loader ignores but qemu-user's binfmt_misc entries (their
// magic demands 1) do not match, so a machine that has registered
// qemu-aarch64 still refuses it. Returns false (errno set) on failure.
inline bool write_foreign_elf(const std::string& path) {
  std::array<unsigned char, 64> h{};
  const unsigned char ident[] = {0x7f, 'E', 'L', 'F', 2 /* ELFCLASS64 */, 1 /* little-endian */, 0 /* EI_VERSION */};
  std::memcpy(h.data(), ident, sizeof ident);
  auto put16 = [&](std::size_t at, std::uint16_t v) {
    h[at] = static_cast<unsigned char>(v);
    h[at + 1] = static_cast<unsigned char>(v >> 8);
  };
  put16(16, 2);    // e_type: ET_EXEC
  put16(18, 183);  // e_machine: EM_AARCH64
  h[20] = 1;       // e_version
  put16(52, 64);   // e_ehsize
  put16(54, 56);   // e_phentsize (e_phnum stays 0)
  put16(58, 64);   // e_shentsize
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0755);
  if (fd < 0) return false;
  const bool ok = ::write(fd, h.data(), h.size()) == static_cast<ssize_t>(h.size()) && ::fchmod(fd, 0755) == 0;
  const int err = errno;
  ::close(fd);
  errno = err;
  return ok;
}

}  // namespace vsymfs::test
