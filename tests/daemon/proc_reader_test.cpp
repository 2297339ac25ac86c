#include "daemon/proc_reader.hpp"

#include <elf.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <climits>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "common/exec_probe.hpp"

namespace vsymfs::daemon::proc {
namespace {

using namespace std::string_view_literals;

// --- status ---------------------------------------------------------------

constexpr std::string_view kStatus =
    "Name:\tbash\nUmask:\t0022\nState:\tS (sleeping)\nTgid:\t42\nPid:\t42\n"
    "Uid:\t1000\t1001\t1002\t1003\nGid:\t100\t101\t102\t103\nFDSize:\t256\n"
    "Groups:\t4 24 27 100 \nNStgid:\t42\n";

TEST(ParseStatus, ReadsAllFourIdsAndGroups) {
  auto s = parse_status(kStatus);
  ASSERT_TRUE(s) << s.error().message;
  EXPECT_EQ(s->ruid, 1000u);
  EXPECT_EQ(s->euid, 1001u);
  EXPECT_EQ(s->suid, 1002u);
  EXPECT_EQ(s->fsuid, 1003u);
  EXPECT_EQ(s->rgid, 100u);
  EXPECT_EQ(s->egid, 101u);
  EXPECT_EQ(s->sgid, 102u);
  EXPECT_EQ(s->fsgid, 103u);
  EXPECT_EQ(s->groups, (std::vector<gid_t>{4, 24, 27, 100}));
}

TEST(ParseStatus, EmptyGroupsLineIsNoGroups) {
  auto s = parse_status("Uid:\t0\t0\t0\t0\nGid:\t0\t0\t0\t0\nGroups:\t\n");
  ASSERT_TRUE(s) << s.error().message;
  EXPECT_TRUE(s->groups.empty());
}

TEST(ParseStatus, RejectsMalformedInput) {
  struct Case {
    const char* what;
    std::string_view text;
    std::string_view message_part;
  } cases[] = {
      {"no Uid line", "Gid:\t0\t0\t0\t0\nGroups:\n", "Uid:"},
      {"short Uid line", "Uid:\t0\t0\t0\nGid:\t0\t0\t0\t0\nGroups:\n", "Uid:"},
      {"no Gid line", "Uid:\t0\t0\t0\t0\nGroups:\n", "Gid:"},
      {"no Groups line", "Uid:\t0\t0\t0\t0\nGid:\t0\t0\t0\t0\n", "Groups:"},
      {"garbage in Groups", "Uid:\t0\t0\t0\t0\nGid:\t0\t0\t0\t0\nGroups:\t4 x\n", "Groups:"},
      {"empty", "", "Uid:"},
  };
  for (const auto& c : cases) {
    auto s = parse_status(c.text);
    ASSERT_FALSE(s) << c.what;
    EXPECT_EQ(s.error().code, EINVAL) << c.what;
    EXPECT_NE(s.error().message.find(c.message_part), std::string::npos) << c.what << ": " << s.error().message;
  }
}

TEST(ParseStatus, ReadsTheThreadGroupAndPermittedCapabilities) {
  auto s = parse_status(std::string(kStatus) + "CapInh:\t0000000000000000\nCapPrm:\t0000000000002000\n");
  ASSERT_TRUE(s) << s.error().message;
  EXPECT_EQ(s->tgid, 42);
  EXPECT_EQ(s->cap_permitted, 0x2000u);  // cap_net_raw
  // Both lines are optional (a kernel or a test text without them).
  auto bare = parse_status("Uid:\t0\t0\t0\t0\nGid:\t0\t0\t0\t0\nGroups:\n");
  ASSERT_TRUE(bare);
  EXPECT_EQ(bare->tgid, 0);
  EXPECT_EQ(bare->cap_permitted, 0u);
  // NStgid: is not Tgid:.
  auto ns = parse_status("NStgid:\t7\nUid:\t0\t0\t0\t0\nGid:\t0\t0\t0\t0\nGroups:\n");
  ASSERT_TRUE(ns);
  EXPECT_EQ(ns->tgid, 0);
  EXPECT_FALSE(parse_status(std::string(kStatus) + "CapPrm:\tzz\n"));
  EXPECT_FALSE(parse_status("Tgid:\tx\nUid:\t0\t0\t0\t0\nGid:\t0\t0\t0\t0\nGroups:\n"));
}

// Issue 18, finding 4: which statuses mean "more privilege than the user".
TEST(StatusSaysSecure, SetIdsSavedIdsAndCapabilitiesOfNonRootUsers) {
  auto ids = [](uid_t r, uid_t e, uid_t s, gid_t rg, gid_t eg, gid_t sg, std::uint64_t caps) {
    StatusIds st;
    st.ruid = r, st.euid = e, st.suid = s, st.fsuid = e;
    st.rgid = rg, st.egid = eg, st.sgid = sg, st.fsgid = eg;
    st.cap_permitted = caps;
    return st;
  };
  struct Case {
    const char* what;
    StatusIds st;
    bool secure;
  } cases[] = {
      {"ordinary user", ids(1000, 1000, 1000, 100, 100, 100, 0), false},
      {"root", ids(0, 0, 0, 0, 0, 0, 0x1ffffffffffull), false},
      {"set-user-id", ids(1000, 0, 0, 100, 100, 100, 0x1ffffffffffull), true},
      {"set-user-id, effective id dropped for now", ids(1000, 1000, 0, 100, 100, 100, 0), true},
      {"set-group-id", ids(1000, 1000, 1000, 100, 5, 5, 0), true},
      {"set-group-id, effective gid dropped for now", ids(1000, 1000, 1000, 100, 100, 5, 0), true},
      {"file capability (cap_net_raw+ep)", ids(1000, 1000, 1000, 100, 100, 100, 0x2000), true},
  };
  for (const Case& c : cases) EXPECT_EQ(status_says_secure(c.st), c.secure) << c.what;
}

// --- stat -----------------------------------------------------------------

// A /proc/<pid>/stat line with the given command name; fields are numbered
// as in proc(5) and field N holds N*10 (so a shift by one is visible).
std::string stat_line(std::string_view comm) {
  std::string s = "1234 (" + std::string(comm) + ") S";
  for (int field = 4; field <= 52; ++field) s += " " + std::to_string(field * 10);
  return s + "\n";
}

TEST(ParseStat, ReadsStarttimeAndImageAddresses) {
  for (std::string_view comm : {"bash"sv, "a b c"sv, "evil) 1 2 3 (x"sv, ")"sv, ""sv}) {
    auto id = parse_stat(stat_line(comm));
    ASSERT_TRUE(id) << comm << ": " << id.error().message;
    EXPECT_EQ(id->starttime, 220u) << comm;
    EXPECT_EQ(id->arg_start, 480u) << comm;
    EXPECT_EQ(id->env_start, 500u) << comm;
    EXPECT_EQ(id->env_end, 510u) << comm;
  }
}

TEST(ParseStat, RejectsTruncatedOrGarbage) {
  std::string full = stat_line("x");
  std::string truncated = full.substr(0, full.find(" 490"));  // up to field 48
  for (std::string_view text : {std::string_view(truncated), "no parenthesis here"sv, ""sv, "1 (x) S 2 3"sv}) {
    auto id = parse_stat(text);
    ASSERT_FALSE(id) << text;
    EXPECT_EQ(id.error().code, EINVAL);
  }
  std::string bad = full;
  bad.replace(bad.find(" 220 "), 5, " abc ");
  auto id = parse_stat(bad);
  ASSERT_FALSE(id);
  EXPECT_NE(id.error().message.find("22"), std::string::npos) << id.error().message;
}

// --- environ --------------------------------------------------------------

TEST(ParseEnviron, SplitsOnNulSkipsEmptyAndDropsCutOffTail) {
  struct Case {
    std::string_view bytes;
    std::vector<std::string> want;
  } cases[] = {
      {""sv, {}},
      {"A=1\0"sv, {"A=1"}},
      {"A=1\0B=two words\0"sv, {"A=1", "B=two words"}},
      {"A=1\0\0B=2\0"sv, {"A=1", "B=2"}},
      {"A=1\0B=trunc"sv, {"A=1"}},  // the cap cut B's value short: not used
      {"A=x=y\0"sv, {"A=x=y"}},
  };
  for (const auto& c : cases) {
    std::vector<std::string> out{"stale"};
    parse_environ(c.bytes, out);
    EXPECT_EQ(out, c.want);
  }
}

// --- auxv -----------------------------------------------------------------

template <class Word>
std::vector<std::byte> auxv(std::initializer_list<std::pair<Word, Word>> pairs) {
  std::vector<std::byte> out;
  for (auto [t, v] : pairs) {
    for (Word w : {t, v}) {
      std::byte b[sizeof(Word)];
      std::memcpy(b, &w, sizeof w);
      out.insert(out.end(), b, b + sizeof w);
    }
  }
  return out;
}

TEST(ParseAuxv, FindsAtSecureIn64BitLayout) {
  using W = std::uint64_t;
  auto secure = auxv<W>({{AT_PAGESZ, 4096}, {AT_SECURE, 1}, {AT_NULL, 0}});
  auto plain = auxv<W>({{AT_PAGESZ, 4096}, {AT_SECURE, 0}, {AT_NULL, 0}});
  auto absent = auxv<W>({{AT_PAGESZ, 4096}, {AT_NULL, 0}});
  EXPECT_TRUE(*parse_auxv_secure(secure, 8));
  EXPECT_FALSE(*parse_auxv_secure(plain, 8));
  EXPECT_FALSE(*parse_auxv_secure(absent, 8));
}

TEST(ParseAuxv, FindsAtSecureIn32BitLayout) {
  using W = std::uint32_t;
  // What the kernel shows for a 32-bit process: 4-byte pairs, then zeros up
  // to its own word size.
  auto secure = auxv<W>({{AT_PAGESZ, 4096}, {AT_SECURE, 1}, {AT_NULL, 0}, {0, 0}});
  auto plain = auxv<W>({{AT_PAGESZ, 4096}, {AT_SECURE, 0}, {AT_NULL, 0}});
  EXPECT_TRUE(*parse_auxv_secure(secure, 4));
  EXPECT_FALSE(*parse_auxv_secure(plain, 4));
  // Read with the wrong word size, the pairs merge and AT_SECURE is not
  // found: that is why the caller must pass the target's word size.
  EXPECT_FALSE(parse_auxv_secure(secure, 8).ok() && *parse_auxv_secure(secure, 8));
}

TEST(ParseAuxv, RejectsMissingTerminatorAndBadWordSize) {
  auto unterminated = auxv<std::uint64_t>({{AT_PAGESZ, 4096}});
  EXPECT_EQ(parse_auxv_secure(unterminated, 8).error().code, EINVAL);
  EXPECT_EQ(parse_auxv_secure({}, 8).error().code, EINVAL);
  auto ok = auxv<std::uint64_t>({{AT_NULL, 0}});
  EXPECT_EQ(parse_auxv_secure(ok, 2).error().code, EINVAL);
}

// --- ELF class, personality ----------------------------------------------

std::vector<std::byte> elf_head(unsigned char cls) {
  std::vector<std::byte> h(EI_NIDENT, std::byte{0});
  std::memcpy(h.data(), ELFMAG, SELFMAG);
  h[EI_CLASS] = std::byte{cls};
  return h;
}

TEST(ParseElfClass, TellsThirtyTwoFromSixtyFour) {
  EXPECT_EQ(*parse_elf_class(elf_head(ELFCLASS32)), 32u);
  EXPECT_EQ(*parse_elf_class(elf_head(ELFCLASS64)), 64u);
  EXPECT_EQ(parse_elf_class(elf_head(7)).error().code, EINVAL);
  auto script = std::as_bytes(std::span("#!/bin/sh\necho hi\n"));
  EXPECT_EQ(parse_elf_class(script).error().code, EINVAL);
  auto short_head = elf_head(ELFCLASS64);
  short_head.resize(5);
  EXPECT_EQ(parse_elf_class(short_head).error().code, EINVAL);
}

TEST(ParsePersonality, ReadsHexAndRecognisesLinux32) {
  struct Case {
    std::string_view text;
    unsigned long value;
    bool linux32;
  } cases[] = {
      {"00000000\n", 0x0, false},
      {"00000008\n", 0x8, true},
      {"00040008\n", 0x40008, true},   // ADDR_NO_RANDOMIZE | PER_LINUX32
      {"00400000\n", 0x400000, false}, // READ_IMPLIES_EXEC only
      {"00000018\n", 0x18, false},     // another personality type entirely
  };
  for (const auto& c : cases) {
    auto p = parse_personality(c.text);
    ASSERT_TRUE(p) << c.text;
    EXPECT_EQ(*p, c.value) << c.text;
    EXPECT_EQ(is_linux32_personality(*p), c.linux32) << c.text;
  }
  EXPECT_FALSE(parse_personality("zz\n"));
  EXPECT_FALSE(parse_personality(""));
  EXPECT_FALSE(parse_personality("8 9"));
}

// --- syscall --------------------------------------------------------------

TEST(ParseSyscall, ReadsNumberAndArguments) {
  auto st = parse_syscall("59 0x55d0c0a0 0x7ffd1000 0x7ffd2000 0x0 0x0 0x0 0x7ffd0ff8 0x7f00aa\n");
  ASSERT_TRUE(st) << st.error().message;
  EXPECT_TRUE(st->in_syscall);
  EXPECT_EQ(st->nr, 59);
  EXPECT_EQ(st->args[0], 0x55d0c0a0u);
  EXPECT_EQ(st->args[2], 0x7ffd2000u);
  EXPECT_EQ(st->args[5], 0u);
}

TEST(ParseSyscall, NotInASyscallAndGarbage) {
  for (std::string_view text : {"running\n"sv, "-1 0x7ffd0ff8 0x7f00aa\n"sv}) {
    auto st = parse_syscall(text);
    ASSERT_TRUE(st) << text;
    EXPECT_FALSE(st->in_syscall) << text;
  }
  for (std::string_view text : {""sv, "x"sv, "59 0x1 0x2"sv, "59 12 13 14 15 16 17"sv}) {
    auto st = parse_syscall(text);
    ASSERT_FALSE(st) << text;
    EXPECT_EQ(st.error().code, EINVAL);
  }
}

// The fuzzer's find: "-1" was recognised by its text, so "-0001 ..." (and
// -1 written any other way) read as system call number -1 in progress, and
// any other negative number counted as a system call.
TEST(ParseSyscall, MinusOneIsNotInASyscallHoweverItIsWritten) {
  auto st = parse_syscall("-0001 0x7ff20 0x0 0x1 0x10 0x7ffd00 0x7f10\n");
  ASSERT_TRUE(st) << st.error().message;
  EXPECT_FALSE(st->in_syscall);
  for (std::string_view text : {"-10 0x1 0x2 0x3 0x4 0x5 0x6 0x7 0x8\n"sv, "-0001484338138 0x7ff20 0x0 0x1 0x10 0x7ffd00 0x7f10"sv}) {
    auto neg = parse_syscall(text);
    ASSERT_FALSE(neg) << text;
    EXPECT_EQ(neg.error().code, EINVAL);
  }
}

// --- readers against the real /proc --------------------------------------

TEST(ReadBounded, CapsTheReadAndSaysSo) {
  char path[] = "/tmp/vsymfs-proc-reader-XXXXXX";
  int fd = ::mkstemp(path);
  ASSERT_GE(fd, 0);
  std::string content(10000, 'x');
  ASSERT_EQ(::write(fd, content.data(), content.size()), static_cast<ssize_t>(content.size()));
  ::close(fd);

  std::string out;
  auto whole = read_bounded(path, 20000, out);
  ASSERT_TRUE(whole);
  EXPECT_FALSE(*whole);
  EXPECT_EQ(out, content);

  auto capped = read_bounded(path, 100, out);
  ASSERT_TRUE(capped);
  EXPECT_TRUE(*capped);
  EXPECT_EQ(out.size(), 100u);

  auto exact = read_bounded(path, 10000, out);
  ASSERT_TRUE(exact);
  EXPECT_FALSE(*exact);
  EXPECT_EQ(out.size(), 10000u);
  ::unlink(path);

  auto missing = read_bounded(path, 100, out);
  ASSERT_FALSE(missing);
  EXPECT_EQ(missing.error().code, ENOENT);
  EXPECT_NE(missing.error().message.find(path), std::string::npos);
}

TEST(ProcReaders, ReadOurOwnProcess) {
  auto st = read_status(::getpid());
  ASSERT_TRUE(st) << st.error().message;
  EXPECT_EQ(st->ruid, ::getuid());
  EXPECT_EQ(st->euid, ::geteuid());
  EXPECT_EQ(st->rgid, ::getgid());

  auto id = read_exec_identity(::getpid());
  ASSERT_TRUE(id) << id.error().message;
  EXPECT_GT(id->starttime, 0u);
  EXPECT_NE(id->env_start, 0u);  // root, or our own process: the addresses are shown
  EXPECT_GT(id->env_end, id->env_start);

  EXPECT_EQ(*read_exe_elf_class(::getpid()), sizeof(void*) * 8);
  auto secure = read_auxv_secure(::getpid(), sizeof(void*));
  ASSERT_TRUE(secure) << secure.error().message;
  EXPECT_FALSE(*secure);
  auto pers = read_personality(::getpid());
  ASSERT_TRUE(pers) << pers.error().message;
}

TEST(ProcReaders, ReadAChildsEnvironment) {
  int ready[2];
  ASSERT_EQ(::pipe(ready), 0);
  pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    ::setpgid(0, 0);  // so the kill below reaches the script's sleep too
    ::close(ready[0]);
    // exec so /proc shows this environment, not the test's
    ::dup2(ready[1], 3);
    const char* argv[] = {"/bin/sh", "-c", "echo >&3; sleep 30; :", nullptr};  // killed below
    const char* envp[] = {"VSYMFS_A=1", "VSYMFS_B=two words", nullptr};
    ::execve(argv[0], const_cast<char* const*>(argv), const_cast<char* const*>(envp));
    ::_exit(127);
  }
  ::close(ready[1]);
  char c;
  ASSERT_EQ(::read(ready[0], &c, 1), 1);
  ::close(ready[0]);
  // The shell stays (the trailing ':' keeps it from exec'ing sleep); it may
  // add PWD and more to what it was given, never remove.
  std::vector<std::string> env;
  auto r = read_environ(pid, env);
  ::kill(-pid, SIGKILL);
  ::kill(pid, SIGKILL);
  ::waitpid(pid, nullptr, 0);
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_FALSE(*r);
  EXPECT_NE(std::find(env.begin(), env.end(), "VSYMFS_A=1"), env.end());
  EXPECT_NE(std::find(env.begin(), env.end(), "VSYMFS_B=two words"), env.end());
}

TEST(ProcReaders, ExecveEnvpIsOnlyReadInsideExecve) {
  if (::geteuid() != 0) GTEST_SKIP() << "reading another process's syscall state needs root";
  int ready[2];
  ASSERT_EQ(::pipe(ready), 0);
  pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    ::close(ready[0]);
    if (::write(ready[1], "r", 1) != 1) ::_exit(1);
    ::pause();  // blocked in a system call that is not execve
    ::_exit(0);
  }
  ::close(ready[1]);
  char c;
  ASSERT_EQ(::read(ready[0], &c, 1), 1);
  ::close(ready[0]);
  std::vector<std::string> env{"untouched"};
  // The child may still be on its way into pause(): either way, not execve.
  auto r = read_execve_envp(pid, env);
  ::kill(pid, SIGKILL);
  ::waitpid(pid, nullptr, 0);
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_FALSE(*r);
  EXPECT_EQ(env, std::vector<std::string>{"untouched"});
}

TEST(ProcReaders, AGoneProcessIsAnErrorNotACrash) {
  pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) ::_exit(0);
  ::waitpid(pid, nullptr, 0);
  std::vector<std::string> env;
  EXPECT_FALSE(read_environ(pid, env));
  EXPECT_FALSE(read_status(pid));
  EXPECT_FALSE(read_exec_identity(pid));
  EXPECT_FALSE(read_exe_elf_class(pid));
}

// A real 32-bit process: its auxv uses 4-byte words. The helper is built
// only where the compiler can target 32-bit (gcc-multilib), and some
// kernels refuse to run it: common/exec_probe.hpp says which, as the SKIP.
TEST(ProcReaders, ThirtyTwoBitProcessHasFourByteAuxv) {
  if (const auto probe = vsymfs::test::probe_exec32(); !probe) GTEST_SKIP() << probe.reason;
  const std::string helper_path = vsymfs::test::helper32_path();
  const char* helper = helper_path.c_str();
  int ready[2];
  ASSERT_EQ(::pipe(ready), 0);
  pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    ::close(ready[0]);
    ::dup2(ready[1], 1);
    const char* argv[] = {helper, "wait", nullptr};
    ::execv(helper, const_cast<char* const*>(argv));
    ::_exit(127);
  }
  ::close(ready[1]);
  char c;
  ASSERT_EQ(::read(ready[0], &c, 1), 1);  // the helper says it is running

  auto cls = read_exe_elf_class(pid);
  auto secure32 = read_auxv_secure(pid, 4);
  std::string raw;
  auto raw_ok = read_bounded(ProcPath(pid, "auxv").c_str(), kMaxAuxvBytes, raw);
  ::close(ready[0]);
  ::kill(pid, SIGKILL);
  ::waitpid(pid, nullptr, 0);

  ASSERT_TRUE(cls) << cls.error().message;
  EXPECT_EQ(*cls, 32u);
  ASSERT_TRUE(secure32) << secure32.error().message;
  EXPECT_FALSE(*secure32);
  ASSERT_TRUE(raw_ok);
  // The first 32-bit pair's type is a small AT_* number; read as a 64-bit
  // word it would carry the value in its upper half.
  ASSERT_GE(raw.size(), 8u);
  std::uint32_t first_type;
  std::memcpy(&first_type, raw.data(), 4);
  EXPECT_LT(first_type, 64u);
  std::uint32_t first_value_half;
  std::memcpy(&first_value_half, raw.data() + 4, 4);
  EXPECT_NE(first_value_half, 0u);
}

}  // namespace
}  // namespace vsymfs::daemon::proc
