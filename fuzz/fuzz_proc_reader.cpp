// libFuzzer target for the /proc parsers (src/daemon/proc_reader.hpp): what
// a caller's /proc files say is the caller's to shape (its environment, its
// command name in stat), so every parser takes any bytes without crashing.
// Each input goes to every parser. Invariants checked (abort on violation):
//   - environ: entries are the input's non-empty NUL-terminated strings, in
//     order, with none of the unterminated tail;
//   - status, personality, syscall: what a parser accepts, written back in
//     the kernel's format, parses to the same values;
//   - auxv: the answer agrees with a plain scan of the pairs (both word
//     sizes); ELF class is 32 or 64 exactly when the header says so;
//   - read_bounded (on a memfd holding the input, when the first byte is
//     odd): never more than the cap, the input's prefix, truncation flagged.
#include <elf.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "daemon/proc_reader.hpp"

namespace {

namespace proc = vsymfs::daemon::proc;

[[noreturn]] void fail(const char* what, std::string_view input) {
  std::fprintf(stderr, "invariant broken: %s (input length %zu)\n", what, input.size());
  std::abort();
}

void check_environ(std::string_view input) {
  std::vector<std::string> out{"stale"};
  proc::parse_environ(input, out);
  std::vector<std::string> expect;
  std::size_t start = 0;
  for (std::size_t i = 0; i < input.size(); ++i) {
    if (input[i] != '\0') continue;
    if (i > start) expect.emplace_back(input.substr(start, i - start));
    start = i + 1;
  }
  if (out != expect) fail("environ entries differ from the NUL-terminated strings", input);
}

void check_status(std::string_view input) {
  auto ids = proc::parse_status(input);
  if (!ids) {
    if (ids.error().code != EINVAL) fail("status refused without EINVAL", input);
    return;
  }
  std::string text = "Uid:\t" + std::to_string(ids->ruid) + "\t" + std::to_string(ids->euid) + "\t" +
                     std::to_string(ids->suid) + "\t" + std::to_string(ids->fsuid) + "\nGid:\t" +
                     std::to_string(ids->rgid) + "\t" + std::to_string(ids->egid) + "\t" +
                     std::to_string(ids->sgid) + "\t" + std::to_string(ids->fsgid) + "\nGroups:";
  for (gid_t g : ids->groups) text += " " + std::to_string(g);
  text += "\n";
  auto back = proc::parse_status(text);
  if (!back || back->ruid != ids->ruid || back->euid != ids->euid || back->suid != ids->suid ||
      back->fsuid != ids->fsuid || back->rgid != ids->rgid || back->egid != ids->egid || back->sgid != ids->sgid ||
      back->fsgid != ids->fsgid || back->groups != ids->groups)
    fail("status does not round-trip", input);
}

void check_stat(std::string_view input) {
  auto id = proc::parse_stat(input);
  if (!id && id.error().code != EINVAL) fail("stat refused without EINVAL", input);
  if (id && input.rfind(')') == std::string_view::npos) fail("stat accepted without ')'", input);
}

// The auxv answer by a plain scan: the first AT_NULL or AT_SECURE pair decides.
int reference_auxv(std::span<const std::byte> bytes, unsigned word) {
  for (std::size_t off = 0; off + 2 * word <= bytes.size(); off += 2 * word) {
    std::uint64_t type = 0, value = 0;
    for (unsigned k = 0; k < word; ++k) {
      type |= std::uint64_t(std::to_integer<unsigned>(bytes[off + k])) << (8 * k);
      value |= std::uint64_t(std::to_integer<unsigned>(bytes[off + word + k])) << (8 * k);
    }
    if (type == AT_NULL) return 0;
    if (type == AT_SECURE) return value != 0 ? 1 : 0;
  }
  return -1;  // malformed
}

void check_auxv(std::string_view input) {
  const std::span<const std::byte> bytes(reinterpret_cast<const std::byte*>(input.data()), input.size());
  for (unsigned word : {4u, 8u}) {
    auto got = proc::parse_auxv_secure(bytes, word);
    const int want = reference_auxv(bytes, word);
    if (want < 0 ? got.ok() : (!got || int(*got) != want)) fail("auxv answer differs from a plain scan", input);
  }
  if (proc::parse_auxv_secure(bytes, 5).ok()) fail("auxv accepted a word size of 5", input);
}

void check_elf(std::string_view input) {
  const std::span<const std::byte> bytes(reinterpret_cast<const std::byte*>(input.data()), input.size());
  auto cls = proc::parse_elf_class(bytes);
  const bool elf = input.size() >= EI_NIDENT && std::memcmp(input.data(), ELFMAG, SELFMAG) == 0;
  const int want = !elf ? 0 : input[EI_CLASS] == ELFCLASS32 ? 32 : input[EI_CLASS] == ELFCLASS64 ? 64 : 0;
  if (want == 0 ? cls.ok() : (!cls || *cls != unsigned(want))) fail("ELF class differs from the header", input);
}

void check_personality(std::string_view input) {
  auto p = proc::parse_personality(input);
  if (!p) return;
  char buf[32];
  std::snprintf(buf, sizeof buf, "%08lx\n", *p);
  auto back = proc::parse_personality(buf);
  if (!back || *back != *p) fail("personality does not round-trip", input);
  (void)proc::is_linux32_personality(*p);
}

void check_syscall(std::string_view input) {
  auto st = proc::parse_syscall(input);
  if (!st || !st->in_syscall) return;
  std::string text = std::to_string(st->nr);
  for (std::uint64_t a : st->args) {
    char buf[24];
    std::snprintf(buf, sizeof buf, " 0x%llx", static_cast<unsigned long long>(a));
    text += buf;
  }
  text += " 0x7ffc0000 0x7f000000\n";
  auto back = proc::parse_syscall(text);
  if (!back || !back->in_syscall || back->nr != st->nr ||
      std::memcmp(back->args, st->args, sizeof st->args) != 0)
    fail("syscall does not round-trip", input);
}

void check_read_bounded(std::string_view input) {
  static const int fd = ::memfd_create("fuzz_proc_reader", MFD_CLOEXEC);
  if (fd < 0) return;
  if (::ftruncate(fd, 0) != 0 || ::pwrite(fd, input.data(), input.size(), 0) != ssize_t(input.size())) return;
  const std::size_t cap = input.size() < 2 ? 1 : std::uint8_t(input[1]) * 37 % (input.size() + 8) + 1;
  std::string out;
  auto truncated = proc::read_bounded(("/proc/self/fd/" + std::to_string(fd)).c_str(), cap, out);
  if (!truncated) fail("read_bounded failed on a memfd", input);
  if (out.size() > cap || input.substr(0, out.size()) != out) fail("read_bounded is not the input's prefix", input);
  if (*truncated != (input.size() > cap) || (!*truncated && out.size() != input.size()))
    fail("read_bounded truncation flag wrong", input);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  check_environ(input);
  check_status(input);
  check_stat(input);
  check_auxv(input);
  check_elf(input);
  check_personality(input);
  check_syscall(input);
  if (size > 0 && (data[0] & 1) != 0) check_read_bounded(input);
  return 0;
}
