// Callers of another architecture (issue 19): a program that qemu-user runs
// through binfmt_misc sees its own machine in uname(2), and so it should in
// @machine, @machine_arch, @emul, ${ARCH} and @sys. This is the pure half:
// the ELF machine table, binfmt_misc entry text and magic matching, and what
// an emulated caller's values are. Reading /proc/sys/fs/binfmt_misc and
// /proc/<pid>/exe is the daemon's (src/daemon/binfmt_registry.hpp).
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "vsymfs/result.hpp"

namespace vsymfs {

// One architecture as a Linux program of it sees itself.
struct ElfMachine {
  std::string_view machine;  // uname -m inside it, as qemu-user reports it: aarch64, armv7l, i686
  std::string_view qemu;     // qemu-user's target name: aarch64, arm, i386
  bool bits32;               // a 32-bit program (ELFCLASS32)
};

// The machine of an ELF executable from its header fields (e_machine,
// EI_CLASS, EI_DATA; e_flags tells MIPS n32 from o32). nullopt: not in the
// table. Covers every target Debian's qemu-user-static registers.
std::optional<ElfMachine> elf_machine(std::uint16_t e_machine, unsigned ei_class, unsigned ei_data,
                                      std::uint32_t e_flags = 0) noexcept;

// The table row whose machine (uname -m) or qemu name is `name`
// (`vsymctl expand --arch`, and a client's word about itself).
std::optional<ElfMachine> elf_machine_named(std::string_view name) noexcept;

// One /proc/sys/fs/binfmt_misc/NAME file, parsed.
struct BinfmtEntry {
  std::string name;
  bool enabled = false;
  std::string interpreter;
  std::string flags;
  bool by_magic = false;  // false: an extension entry (matches file names, never an ELF machine)
  unsigned offset = 0;
  std::vector<unsigned char> magic;
  std::vector<unsigned char> mask;  // empty: all ones
};

// Parses the kernel's text ("enabled\ninterpreter ...\nflags: OPF\noffset 0\n
// magic 7f45...\nmask ff...\n"). EINVAL for text that is not an entry.
Result<BinfmtEntry> parse_binfmt_entry(std::string_view name, std::string_view text);

// Whether the kernel would hand a file that starts with `head` to this
// entry's interpreter (the magic and mask at the offset; extension entries
// never match here).
bool binfmt_matches(const BinfmtEntry& entry, std::span<const unsigned char> head) noexcept;

// The ELF machine an entry's magic selects: the magic must fix "\x7fELF",
// the class, the byte order and e_machine (as every qemu entry does).
// nullopt for any other entry (extension entries, Wine, Java, Python...).
std::optional<ElfMachine> binfmt_guest(const BinfmtEntry& entry) noexcept;

// What an emulated caller is, fixed when its image is found to be emulated.
struct Emulation {
  std::string machine;           // @machine, @machine_arch, ${ARCH}: aarch64
  bool bits32 = false;           // a 32-bit guest (armv7l under qemu-arm)
  std::string emul;              // @emul: the emulator's file name without "-static", qemu-aarch64
  std::string entry;             // the binfmt_misc entry's name
  std::string source;            // for `vsymctl explain`: "emulated by qemu-aarch64 (binfmt_misc entry qemu-aarch64)"
  std::vector<std::string> sysnames;  // @sys from the built-in OpenAFS table for `machine`
};

// Builds the values for a guest of `guest` run by the file named
// `emulator_file` (its base name, e.g. qemu-aarch64-static) for `entry`.
Emulation make_emulation(const ElfMachine& guest, std::string_view emulator_file, std::string_view entry);

}  // namespace vsymfs
