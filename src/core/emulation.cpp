// The pure half of foreign-architecture callers: which machine an ELF header
// (or a binfmt_misc magic) means, and what an emulated caller's values are.
#include "vsymfs/emulation.hpp"

#include <array>
#include <cerrno>
#include <charconv>

#include "vsymfs/rules.hpp"

namespace vsymfs {
namespace {

constexpr unsigned kAny = 0;
constexpr unsigned kClass32 = 1, kClass64 = 2;  // EI_CLASS
constexpr unsigned kLsb = 1, kMsb = 2;          // EI_DATA
constexpr std::uint32_t kMipsAbi2 = 0x20;       // EF_MIPS_ABI2: n32

struct Row {
  std::uint16_t e_machine;
  unsigned ei_class;
  unsigned ei_data;  // kAny: either byte order
  bool n32;          // MIPS only: the row for EF_MIPS_ABI2
  ElfMachine m;
};

// e_machine values from <elf.h> (spelled out: older headers lack some).
// The machine names are what uname -m says inside qemu-user for that target
// (linux-user's cpu_to_uname_machine), which is also what the native kernel
// says on such hardware.
constexpr std::array<Row, 36> kMachines{{
    {62, kClass64, kLsb, false, {"x86_64", "x86_64", false}},           // EM_X86_64
    {3, kClass32, kLsb, false, {"i686", "i386", true}},                 // EM_386
    {183, kClass64, kLsb, false, {"aarch64", "aarch64", false}},        // EM_AARCH64
    {183, kClass64, kMsb, false, {"aarch64_be", "aarch64_be", false}},
    {40, kClass32, kLsb, false, {"armv7l", "arm", true}},               // EM_ARM
    {40, kClass32, kMsb, false, {"armv7b", "armeb", true}},
    {243, kClass64, kLsb, false, {"riscv64", "riscv64", false}},        // EM_RISCV
    {243, kClass32, kLsb, false, {"riscv32", "riscv32", true}},
    {21, kClass64, kLsb, false, {"ppc64le", "ppc64le", false}},         // EM_PPC64
    {21, kClass64, kMsb, false, {"ppc64", "ppc64", false}},
    {20, kClass32, kMsb, false, {"ppc", "ppc", true}},                  // EM_PPC
    {22, kClass64, kMsb, false, {"s390x", "s390x", false}},             // EM_S390
    {22, kClass32, kMsb, false, {"s390", "s390", true}},
    {8, kClass32, kMsb, false, {"mips", "mips", true}},                 // EM_MIPS
    {8, kClass32, kLsb, false, {"mips", "mipsel", true}},
    {8, kClass32, kMsb, true, {"mips64", "mipsn32", true}},
    {8, kClass32, kLsb, true, {"mips64", "mipsn32el", true}},
    {8, kClass64, kMsb, false, {"mips64", "mips64", false}},
    {8, kClass64, kLsb, false, {"mips64", "mips64el", false}},
    {2, kClass32, kMsb, false, {"sparc", "sparc", true}},               // EM_SPARC
    {18, kClass32, kMsb, false, {"sparc", "sparc32plus", true}},        // EM_SPARC32PLUS
    {43, kClass64, kMsb, false, {"sparc64", "sparc64", false}},         // EM_SPARCV9
    {0x9026, kClass64, kLsb, false, {"alpha", "alpha", false}},         // EM_ALPHA
    {15, kClass32, kMsb, false, {"parisc", "hppa", true}},              // EM_PARISC
    {4, kClass32, kMsb, false, {"m68k", "m68k", true}},                 // EM_68K
    {42, kClass32, kLsb, false, {"sh4", "sh4", true}},                  // EM_SH
    {42, kClass32, kMsb, false, {"sh4eb", "sh4eb", true}},
    {189, kClass32, kMsb, false, {"microblaze", "microblaze", true}},   // EM_MICROBLAZE
    {0xbaab, kClass32, kMsb, false, {"microblaze", "microblaze", true}},  // its old number
    {189, kClass32, kLsb, false, {"microblaze", "microblazeel", true}},
    {76, kClass32, kLsb, false, {"cris", "cris", true}},                // EM_CRIS
    {94, kClass32, kLsb, false, {"xtensa", "xtensa", true}},            // EM_XTENSA
    {94, kClass32, kMsb, false, {"xtensa", "xtensaeb", true}},
    {258, kClass64, kLsb, false, {"loongarch64", "loongarch64", false}},  // EM_LOONGARCH
    {164, kClass32, kLsb, false, {"hexagon", "hexagon", true}},         // EM_HEXAGON
    {92, kClass32, kMsb, false, {"openrisc", "or1k", true}},            // EM_OPENRISC
}};

int hex_digit(char c) noexcept {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

bool parse_hex(std::string_view text, std::vector<unsigned char>& out) {
  if (text.size() % 2 != 0 || text.size() > 2 * 128) return false;  // the kernel's limit is 128 bytes
  out.clear();
  for (std::size_t i = 0; i < text.size(); i += 2) {
    const int hi = hex_digit(text[i]), lo = hex_digit(text[i + 1]);
    if (hi < 0 || lo < 0) return false;
    out.push_back(static_cast<unsigned char>(hi << 4 | lo));
  }
  return true;
}

// The byte of the magic at `i` as the kernel compares it, and whether the
// mask fixes all of it.
bool fixed(const BinfmtEntry& e, std::size_t i) noexcept {
  return i < e.magic.size() && (e.mask.empty() || (i < e.mask.size() && e.mask[i] == 0xff));
}

}  // namespace

std::optional<ElfMachine> elf_machine(std::uint16_t e_machine, unsigned ei_class, unsigned ei_data,
                                      std::uint32_t e_flags) noexcept {
  const bool n32 = e_machine == 8 && ei_class == kClass32 && (e_flags & kMipsAbi2) != 0;
  for (const Row& r : kMachines) {
    if (r.e_machine == e_machine && r.ei_class == ei_class && (r.ei_data == kAny || r.ei_data == ei_data) &&
        r.n32 == n32)
      return r.m;
  }
  return std::nullopt;
}

std::optional<ElfMachine> elf_machine_named(std::string_view name) noexcept {
  for (const Row& r : kMachines)
    if (r.m.machine == name) return r.m;
  for (const Row& r : kMachines)
    if (r.m.qemu == name) return r.m;
  return std::nullopt;
}

Result<BinfmtEntry> parse_binfmt_entry(std::string_view name, std::string_view text) {
  BinfmtEntry e;
  e.name = std::string(name);
  bool state_seen = false, interpreter_seen = false;
  while (!text.empty()) {
    const std::size_t nl = text.find('\n');
    const std::string_view line = text.substr(0, nl);
    text = nl == std::string_view::npos ? std::string_view() : text.substr(nl + 1);
    if (line.empty()) continue;
    const std::size_t sp = line.find(' ');
    const std::string_view key = line.substr(0, sp);
    const std::string_view value = sp == std::string_view::npos ? std::string_view() : line.substr(sp + 1);
    if (key == "enabled" || key == "disabled") {
      e.enabled = key == "enabled";
      state_seen = true;
    } else if (key == "interpreter") {
      e.interpreter = std::string(value);
      interpreter_seen = !value.empty();
    } else if (key == "flags:") {
      e.flags = std::string(value);
    } else if (key == "offset") {
      const auto [end, ec] = std::from_chars(value.data(), value.data() + value.size(), e.offset);
      if (ec != std::errc{} || end != value.data() + value.size())
        return make_error(EINVAL, "binfmt_misc entry " + e.name + ": bad offset");
    } else if (key == "magic") {
      e.by_magic = true;
      if (!parse_hex(value, e.magic)) return make_error(EINVAL, "binfmt_misc entry " + e.name + ": bad magic");
    } else if (key == "mask") {
      if (!parse_hex(value, e.mask)) return make_error(EINVAL, "binfmt_misc entry " + e.name + ": bad mask");
    } else if (key == "extension") {
      e.by_magic = false;
    }
    // Other lines (none today) are ignored: newer kernels may add some.
  }
  if (!state_seen || !interpreter_seen)
    return make_error(EINVAL, "binfmt_misc entry " + e.name + ": not an entry (no state or interpreter)");
  if (e.by_magic && e.magic.empty()) return make_error(EINVAL, "binfmt_misc entry " + e.name + ": empty magic");
  if (!e.mask.empty() && e.mask.size() != e.magic.size())
    return make_error(EINVAL, "binfmt_misc entry " + e.name + ": mask and magic differ in length");
  return e;
}

bool binfmt_matches(const BinfmtEntry& e, std::span<const unsigned char> head) noexcept {
  if (!e.by_magic || e.magic.empty()) return false;
  if (head.size() < e.offset || head.size() - e.offset < e.magic.size()) return false;
  for (std::size_t i = 0; i < e.magic.size(); ++i) {
    const unsigned char m = e.mask.empty() ? 0xff : e.mask[i];
    if ((head[e.offset + i] & m) != (e.magic[i] & m)) return false;
  }
  return true;
}

std::optional<ElfMachine> binfmt_guest(const BinfmtEntry& e) noexcept {
  if (!e.by_magic || e.offset != 0) return std::nullopt;
  static constexpr unsigned char kElf[4] = {0x7f, 'E', 'L', 'F'};
  for (std::size_t i = 0; i < 4; ++i)
    if (!fixed(e, i) || e.magic[i] != kElf[i]) return std::nullopt;
  // EI_CLASS, EI_DATA, and e_machine (bytes 18-19 in the file's byte
  // order): its low byte must be fixed; a masked-out high byte counts as 0
  // (Debian's ppc64le entry masks it).
  if (!fixed(e, 4) || !fixed(e, 5)) return std::nullopt;
  const unsigned ei_class = e.magic[4], ei_data = e.magic[5];
  if (ei_data != kLsb && ei_data != kMsb) return std::nullopt;
  const std::size_t low = ei_data == kLsb ? 18 : 19, high = ei_data == kLsb ? 19 : 18;
  if (!fixed(e, low)) return std::nullopt;
  const auto masked = [&](std::size_t i) -> std::uint32_t {
    if (i >= e.magic.size()) return 0;
    return static_cast<std::uint32_t>(e.magic[i] & (e.mask.empty() ? 0xff : e.mask[i]));
  };
  const auto machine = static_cast<std::uint16_t>(masked(low) | masked(high) << 8);
  // e_flags (bytes 36-39 of a 32-bit header) tells MIPS n32 apart; only
  // the bits the magic has and the mask fixes count (the little-endian
  // entries stop after the flag's byte).
  std::uint32_t flags = 0;
  if (ei_class == kClass32) {
    for (std::size_t k = 0; k < 4; ++k) flags |= masked(ei_data == kLsb ? 36 + k : 39 - k) << (8 * k);
  }
  return elf_machine(machine, ei_class, ei_data, flags);
}

Emulation make_emulation(const ElfMachine& guest, std::string_view emulator_file, std::string_view entry) {
  Emulation em;
  em.machine = std::string(guest.machine);
  em.bits32 = guest.bits32;
  std::string_view emul = emulator_file;
  if (emul.ends_with("-static")) emul.remove_suffix(std::string_view("-static").size());
  em.emul = emul.empty() ? "qemu-" + std::string(guest.qemu) : std::string(emul);
  em.entry = std::string(entry);
  em.source = "emulated by " + em.emul + " (binfmt_misc entry " + em.entry + ")";
  em.sysnames = default_sysnames(em.machine, false);
  return em;
}

}  // namespace vsymfs
