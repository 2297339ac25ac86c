// Foreign-architecture callers, the pure half: the ELF machine table, the
// kernel's binfmt_misc entry text, magic/mask matching, which machine an
// entry's magic selects (every entry Debian's qemu-user-static ships), and
// the values an emulated caller gets.
#include "vsymfs/emulation.hpp"

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>

namespace vsymfs {
namespace {

// /proc/sys/fs/binfmt_misc/qemu-aarch64 once Debian 12's
// /usr/lib/binfmt.d/qemu-aarch64.conf is registered.
constexpr const char* kAarch64Entry =
    "enabled\n"
    "interpreter /usr/libexec/qemu-binfmt/aarch64-binfmt-P\n"
    "flags: POF\n"
    "offset 0\n"
    "magic 7f454c460201010000000000000000000200b700\n"
    "mask ffffffffffffff00fffffffffffffffffeffffff\n";

std::vector<unsigned char> bytes(std::string_view hex) {
  std::vector<unsigned char> out;
  for (std::size_t i = 0; i + 1 < hex.size(); i += 2) out.push_back(static_cast<unsigned char>(std::stoi(std::string(hex.substr(i, 2)), nullptr, 16)));
  return out;
}

std::string entry_text(std::string_view magic, std::string_view mask) {
  return "enabled\ninterpreter /usr/libexec/qemu-binfmt/x-binfmt-P\nflags: POF\noffset 0\nmagic " + std::string(magic) +
         "\nmask " + std::string(mask) + "\n";
}

TEST(ElfMachine, TableCoversTheEmulatedTargets) {
  struct Case {
    std::uint16_t e_machine;
    unsigned ei_class, ei_data;
    std::uint32_t flags;
    const char* machine;
    const char* qemu;
    bool bits32;
  };
  const std::vector<Case> cases = {
      {183, 2, 1, 0, "aarch64", "aarch64", false}, {40, 1, 1, 0, "armv7l", "arm", true},
      {40, 1, 2, 0, "armv7b", "armeb", true},      {243, 2, 1, 0, "riscv64", "riscv64", false},
      {21, 2, 1, 0, "ppc64le", "ppc64le", false},  {21, 2, 2, 0, "ppc64", "ppc64", false},
      {22, 2, 2, 0, "s390x", "s390x", false},      {3, 1, 1, 0, "i686", "i386", true},
      {62, 2, 1, 0, "x86_64", "x86_64", false},    {8, 1, 2, 0, "mips", "mips", true},
      {8, 1, 2, 0x20, "mips64", "mipsn32", true},  {8, 2, 1, 0, "mips64", "mips64el", false},
      {0x9026, 2, 1, 0, "alpha", "alpha", false},  {258, 2, 1, 0, "loongarch64", "loongarch64", false},
  };
  for (const Case& c : cases) {
    const auto m = elf_machine(c.e_machine, c.ei_class, c.ei_data, c.flags);
    ASSERT_TRUE(m) << c.machine;
    EXPECT_EQ(m->machine, c.machine);
    EXPECT_EQ(m->qemu, c.qemu);
    EXPECT_EQ(m->bits32, c.bits32) << c.machine;
  }
  EXPECT_FALSE(elf_machine(183, 1, 1));  // aarch64 has no ELFCLASS32 programs (ILP32 is not emulated)
  EXPECT_FALSE(elf_machine(0, 2, 1));
  EXPECT_FALSE(elf_machine(62, 3, 1));
}

TEST(ElfMachine, ByName) {
  EXPECT_EQ(elf_machine_named("aarch64")->qemu, "aarch64");
  EXPECT_EQ(elf_machine_named("armv7l")->qemu, "arm");
  EXPECT_EQ(elf_machine_named("arm")->machine, "armv7l");  // qemu's name works too
  EXPECT_EQ(elf_machine_named("i386")->machine, "i686");
  EXPECT_TRUE(elf_machine_named("armv7l")->bits32);
  EXPECT_FALSE(elf_machine_named("sun4"));
  EXPECT_FALSE(elf_machine_named(""));
}

TEST(BinfmtEntry, ParsesTheKernelsText) {
  auto e = parse_binfmt_entry("qemu-aarch64", kAarch64Entry);
  ASSERT_TRUE(e.ok()) << e.error().message;
  EXPECT_EQ(e->name, "qemu-aarch64");
  EXPECT_TRUE(e->enabled);
  EXPECT_EQ(e->interpreter, "/usr/libexec/qemu-binfmt/aarch64-binfmt-P");
  EXPECT_EQ(e->flags, "POF");
  EXPECT_TRUE(e->by_magic);
  EXPECT_EQ(e->offset, 0u);
  EXPECT_EQ(e->magic.size(), 20u);
  EXPECT_EQ(e->mask.size(), 20u);
  EXPECT_EQ(e->magic[18], 0xb7);

  auto off = parse_binfmt_entry("x", "disabled\ninterpreter /bin/x\nflags: \noffset 0\nmagic 7f454c46\n");
  ASSERT_TRUE(off.ok()) << off.error().message;
  EXPECT_FALSE(off->enabled);
  EXPECT_TRUE(off->mask.empty());

  auto ext = parse_binfmt_entry("python3.11", "enabled\ninterpreter /usr/bin/python3.11\nflags: \nextension .pyc\n");
  ASSERT_TRUE(ext.ok()) << ext.error().message;
  EXPECT_FALSE(ext->by_magic);
  EXPECT_FALSE(binfmt_guest(*ext));
}

TEST(BinfmtEntry, RejectsWhatIsNoEntry) {
  EXPECT_FALSE(parse_binfmt_entry("status", "enabled\n").ok());  // the status file
  EXPECT_FALSE(parse_binfmt_entry("x", "").ok());
  EXPECT_FALSE(parse_binfmt_entry("x", "enabled\ninterpreter /x\nmagic 7f4\n").ok());  // odd length
  EXPECT_FALSE(parse_binfmt_entry("x", "enabled\ninterpreter /x\nmagic zz\n").ok());
  EXPECT_FALSE(parse_binfmt_entry("x", "enabled\ninterpreter /x\nmagic 7f45\nmask ff\n").ok());  // lengths differ
  EXPECT_FALSE(parse_binfmt_entry("x", "enabled\ninterpreter /x\noffset -1\nmagic 7f45\n").ok());
  EXPECT_FALSE(parse_binfmt_entry("x", "enabled\ninterpreter /x\nmagic " + std::string(258, 'f') + "\n").ok());
}

TEST(BinfmtEntry, MagicAndMaskMatchAsTheKernelDoes) {
  auto e = parse_binfmt_entry("qemu-aarch64", kAarch64Entry);
  ASSERT_TRUE(e.ok());
  // A static aarch64 executable (ET_EXEC) and a PIE (ET_DYN: the mask's
  // 0xfe lets e_type 2 and 3 both match).
  auto exec = bytes("7f454c460201010000000000000000000200b700");
  auto pie = bytes("7f454c460201010000000000000000000300b700");
  auto osabi = bytes("7f454c460201010300000000000000000200b700");  // EI_OSABI is masked out
  auto x86 = bytes("7f454c4602010100000000000000000002003e00");
  EXPECT_TRUE(binfmt_matches(*e, exec));
  EXPECT_TRUE(binfmt_matches(*e, pie));
  EXPECT_TRUE(binfmt_matches(*e, osabi));
  EXPECT_FALSE(binfmt_matches(*e, x86));
  EXPECT_FALSE(binfmt_matches(*e, std::span(exec).first(19)));  // too short
}

TEST(BinfmtEntry, GuestMachineFromTheMagicOfDebianEntries) {
  // Magic and mask as in /usr/lib/binfmt.d/qemu-*.conf of Debian 12
  // qemu-user-static (1:7.2), the guest's uname -m and qemu's name.
  struct Case {
    const char* magic;
    const char* mask;
    const char* machine;
    const char* qemu;
  };
  const char* m20 = "ffffffffffffff00fffffffffffffffffeffffff";
  const char* m20be = "ffffffffffffff00fffffffffffffffffffeffff";
  const std::vector<Case> cases = {
      {"7f454c460201010000000000000000000200b700", m20, "aarch64", "aarch64"},
      {"7f454c460101010000000000000000000200280000", "ffffffffffffff00fffffffffffffffffeffffffff", "armv7l", "arm"},
      {"7f454c460102010000000000000000000002002800", "ffffffffffffff00fffffffffffffffffffeffffff", "armv7b", "armeb"},
      {"7f454c460201010000000000000000000200f300", m20, "riscv64", "riscv64"},
      // ppc64le masks e_machine's high byte out.
      {"7f454c4602010100000000000000000002001500", "fffffffffffffffcfffffffffffffffffeffff00", "ppc64le", "ppc64le"},
      {"7f454c4602020100000000000000000000020015", m20be, "ppc64", "ppc64"},
      {"7f454c4602020100000000000000000000020016", m20be, "s390x", "s390x"},
      {"7f454c4601010100000000000000000002000300", m20, "i686", "i386"},
      {"7f454c4601020100000000000000000000020014", m20be, "ppc", "ppc"},
      {"7f454c460201010000000000000000000200029", m20, "", ""},  // malformed: odd length
      // MIPS: o32 and n32 share e_machine and class; EF_MIPS_ABI2 tells them apart.
      {"7f454c46010201000000000000000000000200080000000000000000000000000000000000000000",
       "ffffffffffffff00fffffffffffffffffffeffff0000000000000000000000000000000000000020", "mips", "mips"},
      {"7f454c46010201000000000000000000000200080000000000000000000000000000000000000020",
       "ffffffffffffff00fffffffffffffffffffeffff0000000000000000000000000000000000000020", "mips64", "mipsn32"},
      // The little-endian ones end with the flag's byte.
      {"7f454c46010101000000000000000000020008000000000000000000000000000000000020",
       "ffffffffffffff00fefffffffffffffffeffffff0000000000000000000000000000000020", "mips64", "mipsn32el"},
      {"7f454c46010101000000000000000000020008000000000000000000000000000000000000",
       "ffffffffffffff00fefffffffffffffffeffffff0000000000000000000000000000000020", "mips", "mipsel"},
  };
  for (const Case& c : cases) {
    auto e = parse_binfmt_entry("e", entry_text(c.magic, c.mask));
    if (std::string(c.machine).empty()) {
      EXPECT_FALSE(e.ok()) << c.magic;
      continue;
    }
    ASSERT_TRUE(e.ok()) << c.magic << ": " << e.error().message;
    const auto g = binfmt_guest(*e);
    ASSERT_TRUE(g) << c.machine;
    EXPECT_EQ(g->machine, c.machine);
    EXPECT_EQ(g->qemu, c.qemu);
  }
}

// Every entry qemu-user-static installs on this machine, when it is
// installed: the magic selects the machine whose qemu name the file has.
TEST(BinfmtEntry, EveryInstalledQemuEntrySelectsItsMachine) {
  const std::filesystem::path dir = "/usr/lib/binfmt.d";
  std::vector<std::filesystem::path> confs;
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator(dir, ec))
    if (e.path().filename().string().starts_with("qemu-") && e.path().extension() == ".conf") confs.push_back(e.path());
  if (confs.empty()) GTEST_SKIP() << "no " << dir.string() << "/qemu-*.conf (qemu-user-static is not installed)";
  // ":name:M:offset:magic:mask:interpreter:flags", magic and mask with \xHH escapes.
  const auto unescape = [](std::string_view text) {
    std::vector<unsigned char> out;
    for (std::size_t i = 0; i < text.size(); ++i) {
      if (text[i] == '\\' && i + 3 < text.size() && text[i + 1] == 'x') {
        out.push_back(static_cast<unsigned char>(std::stoi(std::string(text.substr(i + 2, 2)), nullptr, 16)));
        i += 3;
      } else {
        out.push_back(static_cast<unsigned char>(text[i]));
      }
    }
    return out;
  };
  for (const auto& conf : confs) {
    std::ifstream in(conf);
    std::string line;
    ASSERT_TRUE(std::getline(in, line)) << conf;
    std::vector<std::string> f;
    std::stringstream ss(line.substr(1));
    for (std::string part; std::getline(ss, part, line[0]);) f.push_back(part);
    ASSERT_GE(f.size(), 6u) << conf;
    BinfmtEntry e;
    e.name = f[0];
    e.by_magic = f[1] == "M";
    e.offset = f[2].empty() ? 0u : static_cast<unsigned>(std::stoul(f[2]));
    e.magic = unescape(f[3]);
    e.mask = unescape(f[4]);
    const auto guest = binfmt_guest(e);
    ASSERT_TRUE(guest) << conf;
    EXPECT_EQ("qemu-" + std::string(guest->qemu), e.name) << conf;
  }
}

TEST(BinfmtEntry, NoGuestWhereTheMagicDoesNotFixTheMachine) {
  // e_machine's low byte masked out (twice), no ELF magic, an unknown machine.
  for (const auto& [magic, mask] : std::vector<std::pair<const char*, const char*>>{
           {"7f454c460201010000000000000000000200b700", "ffffffffffffff00fffffffffffffffffeff00ff"},
           {"7f454c460201010000000000000000000200b7", "ffffffffffffff00fffffffffffffffffeff00"},
           {"4d5a", "ffff"},
           {"7f454c460201010000000000000000000200ff7f", "ffffffffffffff00fffffffffffffffffeffffff"}}) {
    auto e = parse_binfmt_entry("e", entry_text(magic, mask));
    ASSERT_TRUE(e.ok()) << magic;
    EXPECT_FALSE(binfmt_guest(*e)) << magic << " " << mask;
  }
  auto shifted = parse_binfmt_entry("e", "enabled\ninterpreter /x\noffset 2\nmagic 7f454c4602010100\n");
  ASSERT_TRUE(shifted.ok());
  EXPECT_FALSE(binfmt_guest(*shifted));
}

TEST(Emulation, ValuesOfAnEmulatedCaller) {
  const Emulation a = make_emulation(*elf_machine_named("aarch64"), "qemu-aarch64-static", "qemu-aarch64");
  EXPECT_EQ(a.machine, "aarch64");
  EXPECT_FALSE(a.bits32);
  EXPECT_EQ(a.emul, "qemu-aarch64");
  EXPECT_EQ(a.entry, "qemu-aarch64");
  EXPECT_EQ(a.source, "emulated by qemu-aarch64 (binfmt_misc entry qemu-aarch64)");
  EXPECT_EQ(a.sysnames, (std::vector<std::string>{"arm64_linux26", "arm_linux26"}));
  // A 32-bit guest gets the 32-bit values.
  const Emulation arm = make_emulation(*elf_machine_named("arm"), "qemu-arm-static", "qemu-arm");
  EXPECT_EQ(arm.machine, "armv7l");
  EXPECT_TRUE(arm.bits32);
  EXPECT_EQ(arm.emul, "qemu-arm");
  EXPECT_EQ(arm.sysnames, std::vector<std::string>{"arm_linux26"});
  // Another emulator keeps its own name; an empty one gets qemu's.
  EXPECT_EQ(make_emulation(*elf_machine_named("x86_64"), "FEXInterpreter", "FEX-x86_64").emul, "FEXInterpreter");
  EXPECT_EQ(make_emulation(*elf_machine_named("riscv64"), "", "e").emul, "qemu-riscv64");
  EXPECT_EQ(make_emulation(*elf_machine_named("riscv64"), "", "e").sysnames,
            std::vector<std::string>{"riscv64_linux26"});
}

}  // namespace
}  // namespace vsymfs
