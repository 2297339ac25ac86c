// Reading another process's facts from /proc/<pid>: pure parsers that take
// the files' text (unit-tested without /proc) and bounded readers that never
// read more than a fixed size. Nothing here caches or knows about FUSE.
#pragma once

#include <sys/types.h>

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "vsymfs/result.hpp"

namespace vsymfs::daemon::proc {

// /proc/<pid>/environ is the whole initial environment; a hostile process can
// make it huge, so we stop here (the variables past the cap are ignored).
inline constexpr std::size_t kMaxEnvironBytes = 256 * 1024;
inline constexpr std::size_t kMaxStatusBytes = 16 * 1024;
inline constexpr std::size_t kMaxStatBytes = 4096;
inline constexpr std::size_t kMaxAuxvBytes = 4096;

// The credential lines of /proc/<pid>/status.
struct StatusIds {
  uid_t ruid = 0, euid = 0, suid = 0, fsuid = 0;
  gid_t rgid = 0, egid = 0, sgid = 0, fsgid = 0;
  std::vector<gid_t> groups;  // the Groups: line, as the kernel lists it
  pid_t tgid = 0;                   // the Tgid: line (the process of this thread); 0 if absent
  std::uint64_t cap_permitted = 0;  // the CapPrm: line (hex); 0 if absent
};
// EINVAL when the Uid:, Gid: or Groups: line is missing or malformed, or
// the Tgid: or CapPrm: line is present and malformed.
Result<StatusIds> parse_status(std::string_view text);

// Whether a process runs with more privilege than the user who started it,
// as far as its status tells: a real id differs from the effective or saved
// one (set-user-id or set-group-id, also after a temporary seteuid back), or
// a process of a non-root real user holds capabilities (a file-capability
// program; also one given ambient capabilities). The kernel's AT_SECURE
// says the same for the first two at execve; status also serves callers
// whose auxv we do not read.
bool status_says_secure(const StatusIds& ids) noexcept;

// The fields of /proc/<pid>/stat that identify one program image of one
// process: starttime changes on pid reuse; the argument and environment
// addresses change on every execve (a new stack, randomised by ASLR).
struct ExecIdentity {
  std::uint64_t starttime = 0;  // field 22, clock ticks since boot
  std::uint64_t arg_start = 0;  // field 48
  std::uint64_t env_start = 0;  // field 50
  std::uint64_t env_end = 0;    // field 51
  bool operator==(const ExecIdentity&) const = default;
};
// Parses from after the last ')' so a command name with spaces or parentheses
// cannot shift the fields. EINVAL when fields are missing.
Result<ExecIdentity> parse_stat(std::string_view text);

// NUL-separated "NAME=value" strings. Empty strings are skipped; a last
// string without its NUL (a truncated read) is dropped, since its value may
// be cut short.
void parse_environ(std::string_view bytes, std::vector<std::string>& out);

// AT_SECURE from /proc/<pid>/auxv. The kernel stores the vector in the
// target's own word size (a 32-bit process's entries are 4-byte pairs), so
// the caller says which: word_bytes is 4 or 8. EINVAL when malformed or no
// AT_NULL terminator is found.
Result<bool> parse_auxv_secure(std::span<const std::byte> bytes, unsigned word_bytes);

// ELF class from the first bytes of an executable: 32 or 64. EINVAL when it
// is not an ELF file (a script is never what /proc/<pid>/exe points to).
Result<unsigned> parse_elf_class(std::span<const std::byte> head);

// /proc/<pid>/personality is hex text ("00000008\n").
Result<unsigned long> parse_personality(std::string_view text);
// PER_LINUX32 is 0x0008 in the low byte (the personality type); the upper
// bits are flags such as ADDR_NO_RANDOMIZE.
bool is_linux32_personality(unsigned long persona) noexcept;

// /proc/<pid>/syscall: "NR ARG1 .. ARG6 SP PC" while the task is blocked in
// a system call, "-1 SP PC" when blocked outside one, "running" otherwise.
struct SyscallState {
  bool in_syscall = false;
  long nr = -1;
  std::uint64_t args[6] = {};
};
Result<SyscallState> parse_syscall(std::string_view text);

// Reads a file up to `max_bytes` into `out` (cleared first). Returns whether
// the file was longer than the cap. Errors carry the errno of open/read
// (ENOENT/ESRCH for a dead process, EACCES without ptrace access).
Result<bool> read_bounded(const char* path, std::size_t max_bytes, std::string& out);

// One read(2) of a small file into `buf` (no allocation): the byte count.
// EFBIG when the file fills the buffer (it may be longer).
Result<std::size_t> read_small(const char* path, std::span<char> buf);

// "/proc/<pid>/<leaf>" into a caller-provided buffer (no allocation).
struct ProcPath {
  char buf[64];
  ProcPath(pid_t pid, const char* leaf) noexcept;
  const char* c_str() const noexcept { return buf; }
};

// Convenience readers for one process. They allocate; the caller decides
// how often to call them.
Result<StatusIds> read_status(pid_t pid);
Result<ExecIdentity> read_exec_identity(pid_t pid);
// A hash of /proc/<pid>/auxv: the kernel writes the vector at execve and it
// holds stack and vDSO addresses (AT_RANDOM, AT_EXECFN, AT_SYSINFO_EHDR)
// that ASLR moves on every execve. Three times cheaper to read than stat.
// ESRCH when the process has no memory image (a zombie, a kernel thread).
Result<std::uint64_t> read_auxv_hash(pid_t pid);
// Returns whether the environment was truncated at kMaxEnvironBytes.
Result<bool> read_environ(pid_t pid, std::vector<std::string>& out);
Result<unsigned> read_exe_elf_class(pid_t pid);
// The same, plus which file the executable is (for binfmt_misc emulators:
// an emulated process's exe is its emulator). One open of /proc/<pid>/exe.
struct ExeFacts {
  unsigned elf_class = 0;  // 32 or 64; 0 when not an ELF file
  dev_t dev = 0;
  ino_t ino = 0;
};
Result<ExeFacts> read_exe(pid_t pid);
Result<bool> read_auxv_secure(pid_t pid, unsigned word_bytes);
Result<unsigned long> read_personality(pid_t pid);

// The environment a process is passing to execve right now, read from its
// memory (envp as given in /proc/<pid>/syscall), as Mic92/envfs does: while
// a process looks up the program or interpreter it execs, /proc/<pid>/environ
// still shows the old image's environment, but `VAR=x cmd` must see VAR.
// Returns false (out untouched) when the task is not inside execve/execveat
// of our own architecture. Needs ptrace access and Linux 5.7+ (before, the
// syscall file waits for the exec'ing task's cred_guard_mutex).
Result<bool> read_execve_envp(pid_t pid, std::vector<std::string>& out);

}  // namespace vsymfs::daemon::proc
