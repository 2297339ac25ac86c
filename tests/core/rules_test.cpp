// The rules file: the built-in default, each section, the exact error text
// (with line and column) for malformed files, loading from disk, and every
// example in config/.
#include "vsymfs/rules.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <fstream>
#include <ostream>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "common/temp_dir.hpp"
#include "vsymfs/link_template.hpp"
#include "vsymfs/resolver.hpp"

namespace vsymfs {
namespace {

namespace fs = std::filesystem;

Rules parse_ok(std::string_view text) {
  auto r = parse_rules(text, "r.toml");
  EXPECT_TRUE(r.ok()) << r.error().message;
  return r ? std::move(r).value() : Rules{};
}

TEST(DefaultRules, ParseAndStateTheDocumentedDefaults) {
  auto parsed = parse_rules(kDefaultRulesText, "<built-in>");
  ASSERT_TRUE(parsed.ok()) << parsed.error().message;
  const Rules& r = default_rules();
  EXPECT_EQ(r.origin, "<built-in>");
  EXPECT_EQ(r.families, Families{});
  EXPECT_EQ(r.undefined, UndefinedPolicy::Literal);
  EXPECT_TRUE(r.per_caller);
  EXPECT_EQ(r.symlink_cache, SymlinkCache::Auto);
  EXPECT_FALSE(r.kernel_may_cache_symlinks());
  EXPECT_EQ(r.env_allow, std::vector<std::string>{"*"});
  EXPECT_TRUE(r.env_deny.empty());
  EXPECT_EQ(r.universes.names, (std::vector<std::string>{"att", "ucb"}));
  EXPECT_EQ(r.universes.default_universe, "att");
  EXPECT_EQ(r.universes.env_var, "UNIVERSE");
  EXPECT_EQ(r.member, 0);
  EXPECT_TRUE(r.locked.empty());
  EXPECT_TRUE(r.system.empty());
  EXPECT_TRUE(r.users.empty());
  EXPECT_TRUE(r.groups.empty());
  EXPECT_TRUE(r.hosts.empty());
  EXPECT_FALSE(r.sysnames_configured);
  EXPECT_FALSE(r.sysnames.empty());
  EXPECT_FALSE(r.sysnames32.empty());
}

TEST(DefaultRules, AnEmptyFileMeansTheBuiltInDefaults) {
  const Rules empty = parse_ok("");
  const Rules& def = default_rules();
  EXPECT_EQ(empty.origin, "r.toml");
  EXPECT_EQ(empty.families, def.families);
  EXPECT_EQ(empty.undefined, def.undefined);
  EXPECT_EQ(empty.per_caller, def.per_caller);
  EXPECT_EQ(empty.env_allow, def.env_allow);
  EXPECT_EQ(empty.env_deny, def.env_deny);
  EXPECT_EQ(empty.universes.names, def.universes.names);
  EXPECT_EQ(empty.universes.default_universe, def.universes.default_universe);
  EXPECT_EQ(empty.universes.env_var, def.universes.env_var);
  EXPECT_EQ(empty.sysnames, def.sysnames);
  EXPECT_EQ(empty.sysnames32, def.sysnames32);
  EXPECT_EQ(empty.member, def.member);
}

struct SysnameCase {
  const char* machine;
  std::vector<std::string> native;
  std::vector<std::string> compat32;
};

TEST(DefaultSysnames, DerivedFromTheMachine) {
  const std::vector<SysnameCase> cases = {
      {"x86_64", {"amd64_linux26", "i386_linux26"}, {"i386_linux26"}},
      {"aarch64", {"arm64_linux26", "arm_linux26"}, {"arm_linux26"}},
      {"i686", {"i386_linux26"}, {"i386_linux26"}},
      {"i386", {"i386_linux26"}, {"i386_linux26"}},
      {"armv7l", {"arm_linux26"}, {"arm_linux26"}},
      {"ppc64le", {"ppc64le_linux26"}, {"ppc64le_linux26"}},
      {"s390x", {"s390x_linux26", "s390_linux26"}, {"s390_linux26"}},
      {"riscv64", {"riscv64_linux26"}, {"riscv64_linux26"}},
      {"", {"unknown_linux26"}, {"unknown_linux26"}},
  };
  for (const auto& c : cases) {
    EXPECT_EQ(default_sysnames(c.machine, false), c.native) << c.machine;
    EXPECT_EQ(default_sysnames(c.machine, true), c.compat32) << c.machine;
  }
}

TEST(RulesSections, Syntax) {
  const Rules r = parse_ok(
      "[syntax]\nmagic = false\ndollar = false\npercent = false\nmemb = false\nconditional = false\n"
      "undefined = \"empty\"\n");
  EXPECT_EQ(r.families, (Families{false, false, false, false, false}));
  EXPECT_EQ(r.undefined, UndefinedPolicy::Empty);
  EXPECT_EQ(parse_ok("[syntax]\nundefined = \"error\"\n").undefined, UndefinedPolicy::Error);
  EXPECT_EQ(parse_ok("[syntax]\nundefined = \"literal\"\n").undefined, UndefinedPolicy::Literal);
  // Keys left out keep their defaults.
  EXPECT_EQ(parse_ok("[syntax]\npercent = false\n").families, (Families{true, true, false, true, true}));
}

TEST(RulesSections, Scopes) {
  const Rules r = parse_ok("[scopes]\nper_caller = false\n");
  EXPECT_FALSE(r.per_caller);
  EXPECT_TRUE(r.kernel_may_cache_symlinks());
  const Rules never = parse_ok("[scopes]\nper_caller = false\nsymlink_cache = \"never\"\n");
  EXPECT_EQ(never.symlink_cache, SymlinkCache::Never);
  EXPECT_FALSE(never.kernel_may_cache_symlinks());
}

TEST(RulesSections, Process) {
  const Rules r = parse_ok("[process]\nallow = [\"PROJ_*\", \"ARCH\"]\ndeny = [\"PROJ_SECRET\"]\n");
  EXPECT_EQ(r.env_allow, (std::vector<std::string>{"PROJ_*", "ARCH"}));
  EXPECT_EQ(r.env_deny, std::vector<std::string>{"PROJ_SECRET"});
  EXPECT_TRUE(parse_ok("[process]\nallow = []\n").env_allow.empty());
}

TEST(RulesSections, Sysname) {
  const Rules r = parse_ok("[sysname]\nnative = [\"amd64_linux26\", \"i386_linux26\"]\ncompat32 = [\"i386_linux26\"]\n");
  EXPECT_TRUE(r.sysnames_configured);
  EXPECT_EQ(r.sysnames, (std::vector<std::string>{"amd64_linux26", "i386_linux26"}));
  EXPECT_EQ(r.sysnames32, std::vector<std::string>{"i386_linux26"});
  // Each list left out is derived independently.
  const Rules only_native = parse_ok("[sysname]\nnative = [\"mysys\"]\n");
  EXPECT_EQ(only_native.sysnames, std::vector<std::string>{"mysys"});
  EXPECT_EQ(only_native.sysnames32, default_rules().sysnames32);
}

TEST(RulesSections, SysnamePerArchitecture) {
  const Rules r = parse_ok(
      "[sysname]\nnative = [\"amd64_linux26\"]\n"
      "[sysname.aarch64]\nnative = [\"arm64_linux26\", \"arm64_generic\"]\n"
      "[sysname.armv7l]\nnative = [\"arm_linux26\"]\n");
  EXPECT_EQ(r.sysnames, std::vector<std::string>{"amd64_linux26"});
  ASSERT_EQ(r.sysnames_by_arch.size(), 2u);
  EXPECT_EQ(r.sysnames_by_arch.at("aarch64"), (std::vector<std::string>{"arm64_linux26", "arm64_generic"}));
  EXPECT_EQ(r.sysnames_by_arch.at("armv7l"), std::vector<std::string>{"arm_linux26"});
  // A per-architecture table alone leaves the host's lists derived.
  const Rules only_arch = parse_ok("[sysname.riscv64]\nnative = [\"riscv64_linux26\"]\n");
  EXPECT_FALSE(only_arch.sysnames_configured);
  EXPECT_EQ(only_arch.sysnames, default_rules().sysnames);
  EXPECT_TRUE(default_rules().sysnames_by_arch.empty());

  const auto error_of = [](std::string_view text) {
    auto bad = parse_rules(text, "r.toml");
    return bad ? std::string("(parsed)") : bad.error().message;
  };
  EXPECT_EQ(error_of("[sysname.aarch64]\ncompat32 = [\"x\"]\n"),
            "r.toml:2:1: unknown key 'compat32' in [sysname.aarch64]; valid keys are: native");
  EXPECT_EQ(error_of("[sysname.aarch64]\n"), "r.toml:1:1: expected 'native = [...]' in [sysname.aarch64]");
  EXPECT_EQ(error_of("[sysname.aarch64]\nnative = []\n"),
            "r.toml:2:10: expected at least one sysname in 'native' in [sysname.aarch64], found an empty array");
  EXPECT_EQ(error_of("[sysname.aarch64]\nnative = [\"a/b\"]\n"),
            "r.toml:2:11: expected a sysname (one path component, no '/') in 'native' in [sysname.aarch64], found \"a/b\"");
  EXPECT_EQ(error_of("[sysname]\nnatve = [\"x\"]\n"),
            "r.toml:2:1: unknown key 'natve' in [sysname]; did you mean 'native'? (or a [sysname.MACHINE] table)");
  EXPECT_EQ(error_of("[sysname.\"a/b\"]\nnative = [\"x\"]\n"),
            "r.toml:1:10: expected a machine name (uname -m, e.g. aarch64) in [sysname.MACHINE], found \"a/b\"");
}

TEST(RulesSections, EmulationCanBeTurnedOff) {
  EXPECT_TRUE(default_rules().emulation);
  EXPECT_TRUE(parse_ok("[scopes]\nper_caller = true\n").emulation);
  EXPECT_FALSE(parse_ok("[scopes]\nemulation = false\n").emulation);
  auto bad = parse_rules("[scopes]\nemulation = \"no\"\n", "r.toml");
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.error().message,
            "r.toml:2:13: expected a boolean (true or false) for 'emulation' in [scopes], found a string");
}

TEST(RulesSections, Universe) {
  const Rules r = parse_ok(
      "[universe]\nnames = [\"sysv\", \"bsd\", \"posix\"]\ndefault = \"bsd\"\nenv = \"ENV_UNIVERSE\"\n"
      "users = { alice = \"sysv\", bob = \"posix\" }\ngroups = { staff = \"sysv\" }\n");
  EXPECT_EQ(r.universes.names, (std::vector<std::string>{"sysv", "bsd", "posix"}));
  EXPECT_EQ(r.universes.default_universe, "bsd");
  EXPECT_EQ(r.universes.env_var, "ENV_UNIVERSE");
  EXPECT_EQ(r.universes.by_user.size(), 2u);
  EXPECT_EQ(r.universes.by_user.at("bob"), "posix");
  EXPECT_EQ(r.universes.by_group.at("staff"), "sysv");
  // No default: the first declared name.
  EXPECT_EQ(parse_ok("[universe]\nnames = [\"ucb\", \"att\"]\n").universes.default_universe, "ucb");
  // No universes at all: conditional links are off, no default.
  const Rules none = parse_ok("[universe]\nnames = []\nenv = \"\"\n");
  EXPECT_TRUE(none.universes.names.empty());
  EXPECT_TRUE(none.universes.default_universe.empty());
  EXPECT_TRUE(none.universes.env_var.empty());
  // Without universes UNIVERSE is an ordinary variable.
  EXPECT_EQ(parse_ok("[universe]\nnames = []\n[vars]\nUNIVERSE = \"x\"\n").system.at("UNIVERSE"), "x");
}

TEST(RulesSections, Cluster) {
  EXPECT_EQ(parse_ok("[cluster]\nmember = 7\n").member, 7);
  EXPECT_EQ(parse_ok("[cluster]\nmember = 2147483647\n").member, 2147483647);
  EXPECT_TRUE(parse_ok("[cluster]\nmember = 7\n").members.empty());
  // One file for the whole cluster: host-name patterns to ids, in file
  // order (toml++ sorts keys; "node1*" must stay before "node*").
  const Rules r = parse_ok(
      "[cluster]\nmember = 9\n"
      "[cluster.members]\n\"zeta\" = 4\n\"node1*\" = 1\n\"node*\" = 2\n\"alpha\" = 0\n");
  EXPECT_EQ(r.member, 9);
  ASSERT_EQ(r.members.size(), 4u);
  EXPECT_EQ(r.members[0].pattern, "zeta");
  EXPECT_EQ(r.members[0].member, 4);
  EXPECT_EQ(r.members[1].pattern, "node1*");
  EXPECT_EQ(r.members[1].member, 1);
  EXPECT_EQ(r.members[2].pattern, "node*");
  EXPECT_EQ(r.members[3].pattern, "alpha");
  EXPECT_EQ(r.members[3].member, 0);
  // The inline form is the same table.
  const Rules inl = parse_ok("[cluster]\nmembers = { \"b*\" = 2, \"a*\" = 1 }\n");
  ASSERT_EQ(inl.members.size(), 2u);
  EXPECT_EQ(inl.members[0].pattern, "b*");
}

TEST(RulesSections, VariableTables) {
  const Rules r = parse_ok(
      "[locked]\nSITE = \"cern\"\n"
      "[vars]\nPROJ = \"/proj\"\nVERSION = 3\n"
      "[user.alice]\nPROJ = \"/home/alice/proj\"\n"
      "[user.\"bob.smith\"]\nPROJ = \"/b\"\n"
      "[group.staff]\nPROJ = \"/staff\"\n");
  EXPECT_EQ(r.locked.at("SITE"), "cern");
  EXPECT_EQ(r.system.at("PROJ"), "/proj");
  EXPECT_EQ(r.system.at("VERSION"), "3");  // integers become their decimal text
  EXPECT_EQ(r.users.at("alice").at("PROJ"), "/home/alice/proj");
  EXPECT_EQ(r.users.at("bob.smith").at("PROJ"), "/b");
  EXPECT_EQ(r.groups.at("staff").at("PROJ"), "/staff");
}

TEST(RulesSections, HostTablesKeepFileOrder) {
  // toml++ sorts keys; the contract is file order, so "z*" must stay first.
  const Rules r = parse_ok(
      "[host.\"z*\"]\nX = \"1\"\n[host.\"a*\"]\nX = \"2\"\n[host.\"m?\"]\nX = \"3\"\n[host.node1]\nY = \"4\"\n");
  ASSERT_EQ(r.hosts.size(), 4u);
  EXPECT_EQ(r.hosts[0].pattern, "z*");
  EXPECT_EQ(r.hosts[1].pattern, "a*");
  EXPECT_EQ(r.hosts[2].pattern, "m?");
  EXPECT_EQ(r.hosts[3].pattern, "node1");
  EXPECT_EQ(r.hosts[3].vars.at("Y"), "4");
}

struct BadRules {
  const char* name;
  std::string text;
  int code;
  std::string message;  // exact
};

void PrintTo(const BadRules& c, std::ostream* os) { *os << c.name; }

class MalformedRules : public ::testing::TestWithParam<BadRules> {};

TEST_P(MalformedRules, ExactError) {
  const BadRules& c = GetParam();
  auto r = parse_rules(c.text, "r.toml");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, c.code);
  EXPECT_EQ(r.error().message, c.message);
}

const std::string kTopLevel =
    "valid tables are: syntax, scopes, process, sysname, universe, cluster, locked, vars, user, group, host";

INSTANTIATE_TEST_SUITE_P(
    Rules, MalformedRules,
    ::testing::Values(
        BadRules{"BadTomlSyntax", "[syntax\nmagic = true\n", EINVAL,
                 "r.toml:1:8: Error while parsing table header: expected ']', saw '\\n'"},
        BadRules{"UnknownKeySuggests", "[syntax]\nundefind = \"empty\"\n", EINVAL,
                 "r.toml:2:1: unknown key 'undefind' in [syntax]; did you mean 'undefined'?"},
        BadRules{"UnknownTableSuggests", "\n[sytnax]\n", EINVAL,
                 "r.toml:2:2: unknown table [sytnax] at the top level; did you mean [syntax]?"},
        BadRules{"UnknownKeyListsValidKeys", "[cluster]\nfoo = 1\n", EINVAL,
                 "r.toml:2:1: unknown key 'foo' in [cluster]; valid keys are: member, members"},
        BadRules{"TopLevelKey", "magic = true\n", EINVAL, "r.toml:1:1: unknown key 'magic' at the top level; " + kTopLevel},
        BadRules{"SectionNotATable", "syntax = 1\n", EINVAL, "r.toml:1:10: expected a table [syntax], found an integer"},
        BadRules{"WrongType", "[syntax]\nmagic = \"yes\"\n", EINVAL,
                 "r.toml:2:9: expected a boolean (true or false) for 'magic' in [syntax], found a string"},
        BadRules{"BadVariableName", "[vars]\nOK = \"1\"\n\"my-var\" = \"x\"\n", EINVAL,
                 "r.toml:3:1: invalid variable name 'my-var' in [vars]: expected letters, digits and '_', not "
                 "starting with a digit, at most 64 bytes"},
        BadRules{"VariableNameStartsWithDigit", "[user.alice]\n1X = \"x\"\n", EINVAL,
                 "r.toml:2:1: invalid variable name '1X' in [user.alice]: expected letters, digits and '_', not "
                 "starting with a digit, at most 64 bytes"},
        BadRules{"FloatValue", "[vars]\nA = 1.5\n", EINVAL,
                 "r.toml:2:5: expected a string or an integer for 'A' in [vars], found a floating-point number"},
        BadRules{"NulInValue", "[user.alice]\nA = \"x\\u0000y\"\n", EINVAL,
                 "r.toml:2:5: value of 'A' in [user.alice] contains a NUL character"},
        BadRules{"UndeclaredDefaultUniverse", "[universe]\nnames = [\"att\", \"ucb\"]\ndefault = \"sysv\"\n", EINVAL,
                 "r.toml:3:11: default universe \"sysv\" is not a declared universe; 'names' in [universe] has: att, ucb"},
        BadRules{"DefaultWithNoUniverses", "[universe]\nnames = []\ndefault = \"att\"\n", EINVAL,
                 "r.toml:3:11: default universe \"att\" is not a declared universe; 'names' in [universe] is empty"},
        BadRules{"UndeclaredUserUniverse", "[universe]\nusers = { alice = \"bsd\" }\n", EINVAL,
                 "r.toml:2:19: universe \"bsd\" for user 'alice' is not a declared universe; 'names' in [universe] "
                 "has: att, ucb"},
        BadRules{"DuplicateUniverse", "[universe]\nnames = [\"att\", \"att\"]\n", EINVAL,
                 "r.toml:2:17: duplicate universe \"att\" in 'names' in [universe]"},
        BadRules{"ReservedUniverseName", "[universe]\nnames = [\"att\", \"default\"]\n", EINVAL,
                 "r.toml:2:17: expected a universe name (letters, digits and '_', not \"default\") in 'names' in "
                 "[universe], found \"default\""},
        BadRules{"BadEnvName", "[universe]\nenv = \"1UNIVERSE\"\n", EINVAL,
                 "r.toml:2:7: expected a variable name (or \"\" for none) for 'env' in [universe], found \"1UNIVERSE\""},
        BadRules{"UniverseVariableWithUniverses", "[vars]\nUNIVERSE = \"att\"\n[universe]\nnames = [\"att\"]\n", EINVAL,
                 "r.toml:2:1: 'UNIVERSE' cannot be set as a variable while universes are declared: it is the "
                 "caller's universe; choose it with 'default', 'users' or 'groups' in [universe]"},
        BadRules{"UserTableWithoutPerCaller", "[scopes]\nper_caller = false\n[user.alice]\nA = \"1\"\n", EINVAL,
                 "r.toml:3:7: [user.alice] has no effect with 'per_caller = false' in [scopes]: every caller sees "
                 "the same expansion"},
        BadRules{"GroupUniverseWithoutPerCaller", "[universe]\ngroups = { staff = \"ucb\" }\n[scopes]\nper_caller = false\n",
                 EINVAL,
                 "r.toml:2:12: 'groups' in [universe] has no effect with 'per_caller = false' in [scopes]: every "
                 "caller sees the same expansion"},
        BadRules{"BadUndefinedPolicy", "[syntax]\nundefined = \"ignore\"\n", EINVAL,
                 "r.toml:2:13: expected \"literal\", \"empty\" or \"error\" for 'undefined' in [syntax], found "
                 "\"ignore\""},
        BadRules{"BadSymlinkCache", "[scopes]\nsymlink_cache = \"always\"\n", EINVAL,
                 "r.toml:2:17: expected \"auto\" or \"never\" for 'symlink_cache' in [scopes], found \"always\""},
        BadRules{"EmptySysnameList", "[sysname]\nnative = []\n", EINVAL,
                 "r.toml:2:10: expected at least one sysname in 'native' in [sysname], found an empty array"},
        BadRules{"SysnameWithSlash", "[sysname]\ncompat32 = [\"i386/linux\"]\n", EINVAL,
                 "r.toml:2:13: expected a sysname (one path component, no '/') in 'compat32' in [sysname], found "
                 "\"i386/linux\""},
        BadRules{"DuplicateSysname", "[sysname]\nnative = [\"a\", \"b\", \"a\"]\n", EINVAL,
                 "r.toml:2:21: duplicate sysname \"a\" in 'native' in [sysname]"},
        BadRules{"NegativeMember", "[cluster]\nmember = -1\n", EINVAL,
                 "r.toml:2:10: expected a member number from 0 to 2147483647 for 'member' in [cluster], found -1"},
        BadRules{"HugeMember", "[cluster]\nmember = 3000000000\n", EINVAL,
                 "r.toml:2:10: expected a member number from 0 to 2147483647 for 'member' in [cluster], found "
                 "3000000000"},
        BadRules{"MemberNotANumber", "[cluster]\nmember = \"1\"\n", EINVAL,
                 "r.toml:2:10: expected a member number (an integer) for 'member' in [cluster], found a string"},
        BadRules{"MembersNotATable", "[cluster]\nmembers = [\"node1\"]\n", EINVAL,
                 "r.toml:2:11: expected a table of \"hostname pattern\" = member number for 'members' in [cluster], "
                 "found an array"},
        BadRules{"MembersValueNotANumber", "[cluster.members]\n\"node1*\" = 1\n\"node2*\" = \"two\"\n", EINVAL,
                 "r.toml:3:12: expected a member number (an integer) for 'node2*' in [cluster.members], found a "
                 "string"},
        BadRules{"MembersNegative", "[cluster]\nmembers = { \"n*\" = -2 }\n", EINVAL,
                 "r.toml:2:20: expected a member number from 0 to 2147483647 for 'n*' in [cluster.members], found -2"},
        BadRules{"MembersEmptyPattern", "[cluster.members]\n\"\" = 1\n", EINVAL,
                 "r.toml:2:1: expected a hostname pattern in [cluster.members], found an empty key"},
        BadRules{"HostPatternNotATable", "[host]\n\"node*\" = \"x\"\n", EINVAL,
                 "r.toml:2:11: expected a table [host.\"node*\"] of variables, found a string"},
        BadRules{"DuplicateKey", "[vars]\nA = \"1\"\nA = \"2\"\n", EINVAL,
                 "r.toml:3:5: Error while parsing key-value pair: cannot redefine existing string 'A'"},
        BadRules{"UserEntryNotATable", "[user]\nalice = \"x\"\n", EINVAL,
                 "r.toml:2:9: expected a table [user.alice] of variables, found a string"},
        BadRules{"AllowNotAnArray", "[process]\nallow = \"*\"\n", EINVAL,
                 "r.toml:2:9: expected an array of strings for 'allow' in [process], found a string"},
        BadRules{"DenyElementNotAString", "[process]\ndeny = [\"LD_*\", 3]\n", EINVAL,
                 "r.toml:2:17: expected a pattern (a string) in 'deny' in [process], found an integer"},
        BadRules{"BinaryGarbage", std::string("\x7f" "ELF\x02\x01\x01\x00\xff\xfe", 10), EINVAL,
                 "r.toml:1:8: Encountered invalid utf-8 sequence"},
        BadRules{"EmbeddedNul", std::string("[vars]\nA = 1\0", 13), EINVAL,
                 "r.toml:2:6: Error while parsing decimal integer: expected digit, saw '\\u0000'"},
        BadRules{"TooBig", "#" + std::string(kMaxRulesFileSize, 'x'), EFBIG,
                 "r.toml: the rules file is 1048577 bytes; the limit is 1048576"}),
    [](const ::testing::TestParamInfo<BadRules>& param) { return std::string(param.param.name); });

TEST(RulesErrors, ControlCharactersInNamesAreEscaped) {
  auto r = parse_rules("[vars]\n\"A\\nB\" = \"x\"\n", "r.toml");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().message,
            "r.toml:2:1: invalid variable name 'A\\x0aB' in [vars]: expected letters, digits and '_', not starting "
            "with a digit, at most 64 bytes");
}

class RulesFileTest : public ::testing::Test {
 protected:
  fs::path write(const std::string& name, const std::string& text) {
    const fs::path p = dir_ / name;
    std::ofstream(p, std::ios::binary) << text;
    return p;
  }
  // 0755 under /tmp: UnreadableFile's unprivileged child must reach the
  // file, so that its EACCES comes from the file's mode, not the directory's.
  const vsymfs::test::TempDir tmp_{"vsymfs-rules-test", 0755, "/tmp"};
  const fs::path dir_ = tmp_.path();
};

TEST_F(RulesFileTest, LoadsAFileAndNamesItInErrors) {
  const fs::path good = write("good.toml", "[vars]\nPROJ = \"/proj\"\n");
  auto r = load_rules_file(good);
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_EQ(r->origin, good.string());
  EXPECT_EQ(r->system.at("PROJ"), "/proj");

  const fs::path bad = write("bad.toml", "[vars]\nPROJ = /proj\n");
  auto e = load_rules_file(bad);
  ASSERT_FALSE(e.ok());
  EXPECT_EQ(e.error().code, EINVAL);
  EXPECT_EQ(e.error().message.rfind(bad.string() + ":2:8: ", 0), 0u) << e.error().message;
}

TEST_F(RulesFileTest, MissingFile) {
  const fs::path p = dir_ / "absent.toml";
  auto r = load_rules_file(p);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, ENOENT);
  EXPECT_EQ(r.error().message, p.string() + ": No such file or directory");
}

TEST_F(RulesFileTest, DirectoryIsNotARulesFile) {
  auto r = load_rules_file(dir_);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, EISDIR);
  EXPECT_EQ(r.error().message, dir_.string() + ": is a directory, not a rules file");
}

TEST_F(RulesFileTest, FifoIsRejectedWithoutBlocking) {
  const fs::path p = dir_ / "fifo";
  ASSERT_EQ(::mkfifo(p.c_str(), 0600), 0);
  auto r = load_rules_file(p);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, EINVAL);
  EXPECT_EQ(r.error().message, p.string() + ": not a regular file");
}

TEST_F(RulesFileTest, FileTooBig) {
  const fs::path p = write("big.toml", std::string(kMaxRulesFileSize + 1, '\n'));
  auto r = load_rules_file(p);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, EFBIG);
  EXPECT_EQ(r.error().message, p.string() + ": the rules file is 1048577 bytes; the limit is 1048576");
  // Exactly at the limit is accepted.
  EXPECT_TRUE(load_rules_file(write("max.toml", std::string(kMaxRulesFileSize, '\n'))).ok());
}

TEST_F(RulesFileTest, UnreadableFile) {
  const fs::path p = write("secret.toml", "");
  ASSERT_EQ(::chmod(p.c_str(), 0), 0);
  auto check = [&p]() -> int {  // 0: the expected error; else which check failed
    auto r = load_rules_file(p);
    if (r.ok()) return 1;
    if (r.error().code != EACCES) return 2;
    if (r.error().message != p.string() + ": Permission denied") return 3;
    return 0;
  };
  if (::geteuid() != 0) {
    EXPECT_EQ(check(), 0);
    return;
  }
  // Root reads files regardless of their mode: load as an unprivileged child.
  const pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    if (::setresgid(65534, 65534, 65534) != 0 || ::setresuid(65534, 65534, 65534) != 0) ::_exit(10);
    ::_exit(check());
  }
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0) << "1: loaded, 2: wrong errno, 3: wrong message, 10: setresuid failed";
}

// Every worked example in config/ must be a valid rules file.
TEST(ConfigExamples, EveryFileParses) {
  const char* dir = std::getenv("CONFIG_DIR");
  ASSERT_NE(dir, nullptr) << "set CONFIG_DIR to the source tree's config/ (meson test does)";
  std::vector<fs::path> files;
  for (const auto& entry : fs::directory_iterator(dir)) {
    if (entry.path().extension() == ".toml") files.push_back(entry.path());
  }
  // One per historical system (see the brief): a missing one is a failure.
  EXPECT_GE(files.size(), 8u);
  for (const auto& f : files) {
    auto r = load_rules_file(f);
    EXPECT_TRUE(r.ok()) << (r ? "" : r.error().message);
  }
}

TEST(ConfigExamples, CernvmfsUsesTheEmptyPolicyAndNoOtherFamilies) {
  const char* dir = std::getenv("CONFIG_DIR");
  ASSERT_NE(dir, nullptr) << "set CONFIG_DIR to the source tree's config/ (meson test does)";
  auto r = load_rules_file(fs::path(dir) / "cernvmfs.toml");
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_EQ(r->undefined, UndefinedPolicy::Empty);
  EXPECT_TRUE(r->families.dollar);
  EXPECT_FALSE(r->families.magic);
  EXPECT_FALSE(r->families.percent);
}

// The links each config/ example says it is meant for expand as its comments
// promise, through the real link language and scopes.
struct ExampleLink {
  const char* file;
  const char* raw;
  std::function<void(Caller&, HostInfo&)> setup;  // may be null
  const char* expected;
};

TEST(ConfigExamples, DocumentedLinksExpand) {
  const char* dir = std::getenv("CONFIG_DIR");
  ASSERT_NE(dir, nullptr) << "set CONFIG_DIR to the source tree's config/ (meson test does)";
  const auto env = [](std::vector<std::string> e) {
    return [e](Caller& c, HostInfo&) { c.environ = e; };
  };
  const auto host = [](const char* name) { return [name](Caller&, HostInfo& h) { h.hostname = name; }; };
  const std::vector<ExampleLink> cases = {
      {"netbsd-magic.toml", "lib.@machine_arch", nullptr, "lib.x86_64"},
      {"netbsd-magic.toml", "lib.@machine_arch", [](Caller& c, HostInfo&) { c.compat32 = true; }, "lib.i686"},
      {"netbsd-magic.toml", "tool-@{ostype}-@{osrelease}", nullptr, "tool-Linux-6.1.0"},
      {"netbsd-magic.toml", "/var/tmp/@uid", nullptr, "/var/tmp/1000"},
      {"netbsd-magic.toml", "bin.@emul/${USER}", nullptr, "bin.linux/${USER}"},  // no '$' family
      {"dragonfly-varsym.toml", "/build/${USER}/obj", nullptr, "/build/alice/obj"},
      {"dragonfly-varsym.toml", "/usr/src-${BRANCH}", nullptr, "/usr/src-master"},
      {"dragonfly-varsym.toml", "/usr/src-${BRANCH}", env({"BRANCH=release"}), "/usr/src-release"},
      {"dragonfly-varsym.toml", "/x/${LD_PRELOAD}", env({"LD_PRELOAD=/evil.so"}), "/x/${LD_PRELOAD}"},
      {"dragonfly-varsym.toml", "/scratch/${SCRATCH:-default}", nullptr, "/scratch/shared"},
      {"freebsd-varsym.toml", "/data/%{SITE}/distfiles", env({"SITE=mine"}), "/data/mirror1/distfiles"},
      {"freebsd-varsym.toml", "/etc/app.%{APP_PROFILE:prod}", env({"APP_PROFILE=dev"}), "/etc/app.prod"},
      {"freebsd-varsym.toml", "/etc/app.%{APP_PROFILE:prod}", [](Caller& c, HostInfo&) { c.user_name = "ci"; },
       "/etc/app.staging"},
      {"openafs-sys.toml", "@sys/bin", nullptr, "amd64_linux26/bin"},
      {"openafs-sys.toml", "@sys/bin", [](Caller& c, HostInfo&) { c.compat32 = true; }, "amd64_linux26/bin"},
      {"domainos.toml", "/$(SYSTYPE)/bin", nullptr, "/bsd4.3/bin"},
      {"domainos.toml", "/$(SYSTYPE)/bin", env({"SYSTYPE=sys5.3"}), "/sys5.3/bin"},
      {"domainos.toml", "/$(SYSTYPE)/bin", [](Caller& c, HostInfo&) { c.group_names.push_back("sysv"); },
       "/sys5.3/bin"},
      {"domainos.toml", "$(NODEDATA)/tmp", nullptr, "/sys/node_data/tmp"},
      {"dynix-universe.toml", "att=/.attbin ucb=/.ucbbin", nullptr, "/.attbin"},
      {"dynix-universe.toml", "att=/.attbin ucb=/.ucbbin", env({"UNIVERSE=ucb"}), "/.ucbbin"},
      {"dynix-universe.toml", "att=/.attbin ucb=/.ucbbin", [](Caller& c, HostInfo&) { c.user_name = "bill"; },
       "/.ucbbin"},
      {"dynix-universe.toml", "ucb=/usr/.ucbetc/termcap default=/usr/lib/terminfo/termcap", nullptr,
       "/usr/lib/terminfo/termcap"},
      {"tru64-cdsl.toml", "../cluster/members/{memb}/etc/rc.config", nullptr, "../cluster/members/member1/etc/rc.config"},
      {"cluster.toml", "cluster/members/{memb}", host("head1"), "cluster/members/member1"},
      {"cluster.toml", "cluster/members/{memb}", host("NODE03.example.org"), "cluster/members/member4"},
      {"cluster.toml", "cluster/members/{memb}", host("login"), "cluster/members/member0"},
      {"cluster.toml", "${SCRATCH}/${USER}", host("node02"), "/local/scratch/alice"},
      {"cluster.toml", "${SCRATCH}/${USER}", host("head1"), "/scratch/shared/alice"},
      {"cluster.toml", "motd.${ROLE}", host("login"), "motd.other"},
      {"cluster.toml", "/var/log/${CLUSTER}/@hostname", host("node04"), "/var/log/lab/node04"},
      {"tru64-cdsl.toml", "${CONSOLE}", host("tc1-m1"), "/dev/ttyS0"},
      {"tru64-cdsl.toml", "${CONSOLE}", host("tc1-m2"), "/dev/tty0"},
      {"cernvmfs.toml", "$(SW_VERSION:-2024.1)", nullptr, "2024.1"},
      {"cernvmfs.toml", "$(SW_VERSION:-2024.1)", host("lxbatch042"), "2023.3"},
      {"cernvmfs.toml", "sites/$(SITE)", env({"SITE=elsewhere"}), "sites/cern"},
      {"cernvmfs.toml", "gpu-$(GPU_DRIVER)", nullptr, "gpu-"},
  };
  for (const ExampleLink& c : cases) {
    auto rules = load_rules_file(fs::path(dir) / c.file);
    ASSERT_TRUE(rules.ok()) << rules.error().message;
    HostInfo h{"node1", "(none)", "x86_64", "i686", "6.1.0", "Linux", "#1 SMP"};
    Caller caller;
    caller.pid = 4242;
    caller.uid = caller.ruid = 1000;
    caller.gid = caller.rgid = 100;
    caller.user_name = "alice";
    caller.group_name = "users";
    caller.group_names = {"users"};
    caller.home = "/home/alice";
    caller.environ_known = true;
    if (c.setup) c.setup(caller, h);
    const ParseOptions popts{rules->families, rules->universes.names};
    const Template tmpl = Template::parse(c.raw, popts);
    const HostView view(*rules, h);
    const ScopedResolver resolver(*rules, view, caller, nullptr);
    ExpandOptions eopts;
    eopts.undefined = rules->undefined;
    std::string out;
    const auto r = tmpl.expand(resolver, eopts, out);
    ASSERT_TRUE(r.ok()) << c.file << " " << c.raw << ": " << r.error().message;
    EXPECT_EQ(out, c.expected) << c.file << " " << c.raw;
  }
}

}  // namespace
}  // namespace vsymfs
