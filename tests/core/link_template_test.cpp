// The link language (SPEC §1) against a fake ValueSource: every form, every
// family switch, malformed input, the bound, conditional links, @sys probing,
// provenance and the undefined-variable policies.
#include "vsymfs/link_template.hpp"

#include <gtest/gtest.h>

#include <cstdint>
#include <functional>
#include <map>
#include <random>
#include <set>
#include <string>
#include <vector>

namespace vsymfs {
namespace {

using namespace std::string_literals;

// A ValueSource whose every answer the test decides.
class FakeSource final : public ValueSource {
 public:
  std::map<std::string, Value, std::less<>> vars = {
      {"USER", {"alice", Scope::Builtin}},
      {"PROJECT", {"vsymfs", Scope::User}},
      {"EMPTY", {"", Scope::System}},
      {"SIGILS", {"${USER}@sys%{PROJECT}$$@@%%{memb}$USER", Scope::Process}},
      {"LOCKED", {"admin", Scope::Locked}},
  };
  std::map<std::string, Value, std::less<>> magics = {
      {"machine_arch", {"x86_64", Scope::Builtin}},
      {"machine", {"x86_64", Scope::Builtin}},
      {"hostname", {"node1", Scope::Builtin}},
      {"domainname", {"(none)", Scope::Builtin}},
      {"osrelease", {"6.1.0", Scope::Builtin}},
      {"ostype", {"Linux", Scope::Builtin}},
      {"kernel_ident", {"#1 SMP", Scope::Builtin}},
      {"emul", {"linux", Scope::Builtin}},
      {"uid", {"1000", Scope::Builtin}},
      {"ruid", {"1001", Scope::Builtin}},
      {"gid", {"100", Scope::Builtin}},
      {"rgid", {"101", Scope::Builtin}},
  };
  std::vector<std::string> sys = {"amd64_linux26", "amd64_linux24"};
  Scope sys_scope = Scope::Host;
  Value universe_value{"att", Scope::User};
  Value member_value{"member3", Scope::Builtin};

  std::optional<Value> variable(std::string_view name) const override {
    auto it = vars.find(name);
    if (it == vars.end()) return std::nullopt;
    return it->second;
  }
  std::optional<Value> magic(std::string_view name) const override {
    auto it = magics.find(name);
    if (it == magics.end()) return std::nullopt;
    return it->second;
  }
  std::span<const std::string> sysnames() const override { return sys; }
  Scope sysnames_scope() const override { return sys_scope; }
  Value universe() const override { return universe_value; }
  Value member() const override { return member_value; }
};

class SetProbe final : public Probe {
 public:
  std::set<std::string, std::less<>> existing;
  mutable std::vector<std::string> asked;
  bool exists(std::string_view target) const override {
    asked.emplace_back(target);
    return existing.contains(target);
  }
};

const std::vector<std::string> kUniverses = {"att", "ucb"};

ParseOptions options(Families families = {}) { return ParseOptions{families, kUniverses}; }

Result<std::string> expand(std::string_view raw, const ValueSource& src, ExpandOptions eo = {},
                           Families families = {}) {
  const Template t = Template::parse(raw, options(families));
  std::string out = "garbage that expand must clear";
  Result<void> r = t.expand(src, eo, out);
  if (!r) return std::move(r).error();
  return out;
}

struct Case {
  std::string raw;
  std::string want;
};

void expect_table(const std::vector<Case>& cases, const ValueSource& src, ExpandOptions eo = {},
                  Families families = {}) {
  for (const Case& c : cases) {
    SCOPED_TRACE("raw: '" + c.raw + "'");
    Result<std::string> got = expand(c.raw, src, eo, families);
    ASSERT_TRUE(got.ok()) << got.error().message;
    EXPECT_EQ(*got, c.want);
  }
}

TEST(ScopeTest, EveryScopeHasItsName) {
  const std::vector<std::pair<Scope, std::string_view>> names = {
      {Scope::Locked, "locked"},   {Scope::Process, "process"}, {Scope::User, "user"},
      {Scope::Group, "group"},     {Scope::Host, "host"},       {Scope::System, "system"},
      {Scope::Builtin, "builtin"}, {Scope::Default, "default"}};
  for (const auto& [scope, name] : names) EXPECT_EQ(to_string(scope), name);
}

TEST(LinkTemplateTest, EveryForm) {
  FakeSource src;
  expect_table(
      {
          {"", ""},
          {"/plain/path", "/plain/path"},
          // magic, NetBSD: the name runs to the next '/' or the end
          {"@machine_arch", "x86_64"},
          {"@machine", "x86_64"},
          {"@hostname", "node1"},
          {"@domainname", "(none)"},
          {"@osrelease", "6.1.0"},
          {"@ostype", "Linux"},
          {"@kernel_ident", "#1 SMP"},
          {"@emul", "linux"},
          {"@uid/@ruid/@gid/@rgid", "1000/1001/100/101"},
          {"lib@machine/x", "libx86_64/x"},
          {"/usr/@machine/bin", "/usr/x86_64/bin"},
          {"@{ostype}-@{machine}", "Linux-x86_64"},
          {"x@{uid}y", "x1000y"},
          // @sys, AFS
          {"@sys", "amd64_linux26"},
          {"/afs/@sys/bin", "/afs/amd64_linux26/bin"},
          {"bin.@sys", "bin.amd64_linux26"},
          {"@{sys}-x", "amd64_linux26-x"},
          // dollar
          {"${USER}", "alice"},
          {"/home/${USER}/x", "/home/alice/x"},
          {"${NOPE:-dflt}", "dflt"},
          {"${USER:-dflt}", "alice"},
          {"${NOPE:-}", ""},
          {"$USER", "alice"},
          {"$USER/x", "alice/x"},
          {"$USER.x", "alice.x"},
          {"$(USER)", "alice"},
          {"$(NOPE:-d)", "d"},
          {"$(USER:-d)", "alice"},
          // percent, FreeBSD: single colon
          {"%{USER}", "alice"},
          {"%{NOPE:d}", "d"},
          {"%{NOPE:-d}", "-d"},
          {"%{USER:d}", "alice"},
          // memb, Tru64
          {"{memb}", "member3"},
          {"cluster/members/{memb}/local", "cluster/members/member3/local"},
          // the typical three-variable link
          {"/export/${USER}/@sys/%{PROJECT}", "/export/alice/amd64_linux26/vsymfs"},
          // scope does not change the value
          {"${LOCKED}", "admin"},
      },
      src);
}

TEST(LinkTemplateTest, DefaultAppliesToUndefinedAndEmptyAlike) {
  FakeSource src;
  expect_table({{"${EMPTY}", ""}, {"${EMPTY:-d}", "d"}, {"$(EMPTY:-d)", "d"}, {"%{EMPTY:d}", "d"}}, src);
}

TEST(LinkTemplateTest, EscapesAndLoneSigils) {
  FakeSource src;
  expect_table(
      {
          {"$$", "$"},
          {"@@", "@"},
          {"%%", "%"},
          {"$$USER", "$USER"},
          {"$${USER}", "${USER}"},
          {"a@@machine", "a@machine"},
          {"100%%", "100%"},
          {"$$$USER", "$alice"},
          {"$", "$"},
          {"$1", "$1"},
          {"$1USER", "$1USER"},
          {"$/x", "$/x"},
          {"$-x", "$-x"},
          {"x$", "x$"},
          {"%", "%"},
          {"%x", "%x"},
          {"%USER", "%USER"},
          {"@", "@"},
          {"trailing@", "trailing@"},
          {"@/", "@/"},
          {"a/@/b", "a/@/b"},
          {"{", "{"},
          {"}", "}"},
      },
      src);
}

TEST(LinkTemplateTest, UnknownMagicIsLiteralAndScanningResumes) {
  FakeSource src;
  expect_table(
      {
          {"@foo", "@foo"},
          {"@foo/bar", "@foo/bar"},
          {"@machine-x", "@machine-x"},  // the name runs to '/': "machine-x" is unknown
          {"@machine x", "@machine x"},
          {"@machinex/y", "@machinex/y"},
          {"@foo@machine", "@foox86_64"},
          {"@{foo}", "@{foo}"},
          {"@{foo}@{ostype}", "@{foo}Linux"},
          {"@{machine", "@{machine"},
          {"@{}", "@{}"},
          {"@Machine", "@Machine"},
          {"@sysx", "@sysx"},
      },
      src);
}

TEST(LinkTemplateTest, MagicWithoutValueIsLiteralWhateverThePolicy) {
  FakeSource src;
  src.magics.erase("emul");
  src.sys.clear();  // breaks the ValueSource contract; must still not crash
  for (UndefinedPolicy policy : {UndefinedPolicy::Literal, UndefinedPolicy::Empty, UndefinedPolicy::Error}) {
    expect_table({{"@emul/@{emul}/@sys/@{sys}", "@emul/@{emul}/@sys/@{sys}"}}, src, ExpandOptions{policy});
  }
}

TEST(LinkTemplateTest, MalformedReferencesAreLiteral) {
  FakeSource src;
  expect_table(
      {
          // unterminated
          {"${USER", "${USER"},
          {"${USER:-dflt", "${USER:-dflt"},
          {"$(USER", "$(USER"},
          {"$(USER:-d", "$(USER:-d"},
          {"%{USER", "%{USER"},
          {"%{USER:d", "%{USER:d"},
          {"@{ostype", "@{ostype"},
          {"{memb", "{memb"},
          // empty names
          {"${}", "${}"},
          {"$()", "$()"},
          {"%{}", "%{}"},
          {"${:-d}", "${:-d}"},
          // invalid name characters or separators
          {"${1A}", "${1A}"},
          {"${A-B}", "${A-B}"},
          {"${USER:x}", "${USER:x}"},
          {"${USER-x}", "${USER-x}"},
          {"$(USER}", "$(USER}"},
          {"${USER)", "${USER)"},
          {"%{A-b}", "%{A-b}"},
          {"%{USER:-x", "%{USER:-x"},
          {"{member}", "{member}"},
          {"{MEMB}", "{MEMB}"},
          // only the sigil is given up: later references still expand
          {"${NOPE:-$USER", "${NOPE:-alice"},
          {"${1}$USER", "${1}alice"},
          {"%{USER${USER}", "%{USERalice"},
      },
      src);
}

TEST(LinkTemplateTest, DefaultTextIsNotExpanded) {
  FakeSource src;
  expect_table({{"${NOPE:-$USER}", "$USER"},
                {"${NOPE:-@sys}", "@sys"},
                {"$(NOPE:-{memb})", "{memb}"},
                {"%{NOPE:$$}", "$$"},
                {"${NOPE:-a)b}", "a)b"},
                {"$(NOPE:-a}b)", "a}b"}},
               src);
}

TEST(LinkTemplateTest, ValuesAreNeverRescanned) {
  FakeSource src;
  expect_table({{"${SIGILS}", "${USER}@sys%{PROJECT}$$@@%%{memb}$USER"},
                {"$SIGILS/@sys", "${USER}@sys%{PROJECT}$$@@%%{memb}$USER/amd64_linux26"}},
               src);
  src.member_value = {"${USER}", Scope::Builtin};
  src.sys = {"@machine"};
  expect_table({{"{memb}/@sys", "${USER}/@machine"}}, src);
}

// One line that uses every family; each switch must leave exactly its own
// forms literal.
TEST(LinkTemplateTest, EachFamilyCanBeSwitchedOff) {
  FakeSource src;
  const std::string raw = "@machine/@{ostype}/@sys/${USER}/$USER/$(USER)/%{USER}/{memb}/$$/@@/%%";
  struct FamilyCase {
    const char* what;
    Families families;
    std::string want;
  };
  const std::vector<FamilyCase> cases = {
      {"all on", {}, "x86_64/Linux/amd64_linux26/alice/alice/alice/alice/member3/$/@/%"},
      {"magic off", {.magic = false}, "@machine/@{ostype}/@sys/alice/alice/alice/alice/member3/$/@@/%"},
      {"dollar off",
       {.dollar = false},
       "x86_64/Linux/amd64_linux26/${USER}/$USER/$(USER)/alice/member3/$$/@/%"},
      {"percent off",
       {.percent = false},
       "x86_64/Linux/amd64_linux26/alice/alice/alice/%{USER}/member3/$/@/%%"},
      {"memb off", {.memb = false}, "x86_64/Linux/amd64_linux26/alice/alice/alice/alice/{memb}/$/@/%"},
      {"all off", {false, false, false, false, false}, raw},
  };
  for (const FamilyCase& c : cases) {
    SCOPED_TRACE(c.what);
    Result<std::string> got = expand(raw, src, {}, c.families);
    ASSERT_TRUE(got.ok()) << got.error().message;
    EXPECT_EQ(*got, c.want);
  }
  const Template off = Template::parse(raw, options({false, false, false, false, false}));
  EXPECT_TRUE(off.is_literal());
  EXPECT_FALSE(off.needs_caller());

  // With the conditional family off a conditional text is plain.
  Result<std::string> plain = expand("att=/a ucb=/u", src, {}, {.conditional = false});
  ASSERT_TRUE(plain.ok());
  EXPECT_EQ(*plain, "att=/a ucb=/u");
}

TEST(LinkTemplateTest, UndefinedVariablePolicies) {
  FakeSource src;
  const std::vector<std::string> refs = {"${NOPE}", "$NOPE", "$(NOPE)", "%{NOPE}"};
  for (const std::string& ref : refs) {
    SCOPED_TRACE(ref);
    const std::string raw = "/a/" + ref + "/b";
    Result<std::string> literal = expand(raw, src, {UndefinedPolicy::Literal});
    ASSERT_TRUE(literal.ok());
    EXPECT_EQ(*literal, raw);
    Result<std::string> empty = expand(raw, src, {UndefinedPolicy::Empty});
    ASSERT_TRUE(empty.ok());
    EXPECT_EQ(*empty, "/a//b");
    Result<std::string> error = expand(raw, src, {UndefinedPolicy::Error});
    ASSERT_FALSE(error.ok());
    EXPECT_EQ(error.error().code, ENOENT);
    EXPECT_NE(error.error().message.find("NOPE"), std::string::npos) << error.error().message;
  }
  // A default or a defined value makes the policy irrelevant.
  Result<std::string> with_default = expand("${NOPE:-d}$USER", src, {UndefinedPolicy::Error});
  ASSERT_TRUE(with_default.ok());
  EXPECT_EQ(*with_default, "dalice");
}

TEST(LinkTemplateTest, NameTooLongExactlyAtTheBound) {
  ASSERT_EQ(kMaxExpansion, 4095U);
  FakeSource src;
  const std::string v4095(4095, 'v');  // Value borrows: the text must outlive src
  const std::string v4000(4000, 'v');
  src.vars["V4095"] = {v4095, Scope::System};
  src.vars["V4000"] = {v4000, Scope::System};
  struct BoundCase {
    const char* what;
    std::string raw;
    std::size_t want_size;  // 0: ENAMETOOLONG
  };
  const std::vector<BoundCase> cases = {
      {"literal text 4095", std::string(4095, 'a'), 4095},
      {"literal text 4096", std::string(4096, 'a'), 0},
      {"value 4095", "${V4095}", 4095},
      {"value 4095 + 1 text", "${V4095}x", 0},
      {"value 4095 + empty value", "${V4095}${EMPTY}", 4095},
      {"value 4095 + 1 escape", "${V4095}$$", 0},
      {"value 4000 + text 95", "${V4000}" + std::string(95, 't'), 4095},
      {"value 4000 + text 96", "${V4000}" + std::string(96, 't'), 0},
      {"text 94 + value 4000 + value 1", std::string(94, 't') + "${V4000}{memb}", 0},
      {"two values 8000", "${V4000}${V4000}", 0},
      {"value 4000 + default 95", "${V4000}${NOPE:-" + std::string(95, 'd') + "}", 4095},
      {"value 4000 + default 96", "${V4000}${NOPE:-" + std::string(96, 'd') + "}", 0},
      // Longer than any Linux symlink body: not parsed, never expanded.
      {"raw 4096 with a reference", "${EMPTY}" + std::string(4088, 'a'), 0},
  };
  for (const BoundCase& c : cases) {
    SCOPED_TRACE(c.what);
    Result<std::string> got = expand(c.raw, src);
    if (c.want_size == 0) {
      ASSERT_FALSE(got.ok()) << "got " << got->size() << " bytes";
      EXPECT_EQ(got.error().code, ENAMETOOLONG);
      EXPECT_NE(got.error().message.find("4095"), std::string::npos) << got.error().message;
    } else {
      ASSERT_TRUE(got.ok()) << got.error().message;
      EXPECT_EQ(got->size(), c.want_size);
    }
  }
}

TEST(LinkTemplateTest, ConditionalLinks) {
  FakeSource src;
  struct CondCase {
    std::string raw;
    std::string universe;
    std::string want;  // "ENOENT" for the error
    bool conditional;
  };
  const std::vector<CondCase> cases = {
      {"att=/.attbin ucb=/.ucbbin", "att", "/.attbin", true},
      {"att=/.attbin ucb=/.ucbbin", "ucb", "/.ucbbin", true},
      {"att=/.attbin ucb=/.ucbbin", "sysv", "ENOENT", true},
      {"att=/a ucb=/u default=/d", "sysv", "/d", true},
      {"default=/d att=/a", "att", "/a", true},
      {"att=/home/${USER} ucb=/u", "att", "/home/alice", true},
      {"att=@sys/bin ucb=/u", "att", "amd64_linux26/bin", true},
      {"att=/a=b", "att", "/a=b", true},
      {"att=/first att=/second", "att", "/first", true},
      {"  att=/a\tucb=/u\n", "ucb", "/u", true},
      {"ucb=/u", "ucb", "/u", true},
      // not conditional: plain templates
      {"att=/a bsd=/b", "att", "att=/a bsd=/b", false},
      {"ATT=/a", "att", "ATT=/a", false},
      {"default=/d", "att", "default=/d", false},
      {"att= ucb=/u", "att", "att= ucb=/u", false},
      {"=/a att=/b", "att", "=/a att=/b", false},
      {"att=/a junk", "att", "att=/a junk", false},
      {"att=/a ${USER}", "att", "att=/a alice", false},
      {" ", "att", " ", false},
  };
  for (const CondCase& c : cases) {
    SCOPED_TRACE("raw: '" + c.raw + "' universe " + c.universe);
    src.universe_value = {c.universe, Scope::Process};
    EXPECT_EQ(Template::parse(c.raw, options()).is_conditional(), c.conditional);
    Result<std::string> got = expand(c.raw, src);
    if (c.want == "ENOENT") {
      ASSERT_FALSE(got.ok());
      EXPECT_EQ(got.error().code, ENOENT);
      EXPECT_NE(got.error().message.find("sysv"), std::string::npos) << got.error().message;
    } else {
      ASSERT_TRUE(got.ok()) << got.error().message;
      EXPECT_EQ(*got, c.want);
    }
  }
  // No declared universes: nothing is conditional.
  const Template undeclared = Template::parse("att=/a ucb=/u", ParseOptions{});
  EXPECT_FALSE(undeclared.is_conditional());
  EXPECT_TRUE(undeclared.is_literal());
}

TEST(LinkTemplateTest, SysnameListIsProbedInOrder) {
  FakeSource src;
  src.sys = {"missing_sys", "amd64_linux26", "amd64_linux24"};
  SetProbe probe;
  probe.existing = {"/afs/amd64_linux26/x/amd64_linux26", "/afs/amd64_linux24/x/amd64_linux24"};
  ExpandOptions eo;
  eo.probe = &probe;

  // The first candidate is missing, the second exists: the second wins, and
  // every @sys in the link gets the same candidate.
  Result<std::string> got = expand("/afs/@sys/x/@{sys}", src, eo);
  ASSERT_TRUE(got.ok());
  EXPECT_EQ(*got, "/afs/amd64_linux26/x/amd64_linux26");
  EXPECT_EQ(probe.asked, (std::vector<std::string>{"/afs/missing_sys/x/missing_sys",
                                                   "/afs/amd64_linux26/x/amd64_linux26"}));

  // None exists: the first candidate.
  probe.existing.clear();
  probe.asked.clear();
  got = expand("/afs/@sys/x", src, eo);
  ASSERT_TRUE(got.ok());
  EXPECT_EQ(*got, "/afs/missing_sys/x");
  EXPECT_EQ(probe.asked.size(), 3U);

  // No probe: the first, and nothing is asked.
  got = expand("/afs/@sys/x", src);
  ASSERT_TRUE(got.ok());
  EXPECT_EQ(*got, "/afs/missing_sys/x");

  // One candidate, or no @sys: the probe is not worth a syscall.
  probe.asked.clear();
  src.sys = {"only"};
  got = expand("/afs/@sys/x", src, eo);
  ASSERT_TRUE(got.ok());
  EXPECT_EQ(*got, "/afs/only/x");
  got = expand("/afs/${USER}", src, eo);
  ASSERT_TRUE(got.ok());
  EXPECT_TRUE(probe.asked.empty());
}

TEST(LinkTemplateTest, SysnameCandidateTooLongIsSkipped) {
  FakeSource src;
  src.sys = {std::string(4095, 's'), "short"};
  SetProbe probe;
  probe.existing = {"short/x"};
  ExpandOptions eo;
  eo.probe = &probe;
  Result<std::string> got = expand("@sys/x", src, eo);
  ASSERT_TRUE(got.ok()) << got.error().message;
  EXPECT_EQ(*got, "short/x");
  // Nothing exists: the first candidate, and its error.
  probe.existing.clear();
  got = expand("@sys/x", src, eo);
  ASSERT_FALSE(got.ok());
  EXPECT_EQ(got.error().code, ENAMETOOLONG);
}

TEST(LinkTemplateTest, CompatValuesComeFromTheValueSource) {
  // A 32-bit caller is the ValueSource's business; the template just asks.
  FakeSource src;
  src.magics["machine"] = {"i686", Scope::Builtin};
  src.magics["emul"] = {"linux32", Scope::Builtin};
  src.sys = {"i386_linux26"};
  expect_table({{"lib/@machine/@emul/@sys", "lib/i686/linux32/i386_linux26"}}, src);
}

TEST(LinkTemplateTest, TraceRecordsEverySubstitution) {
  FakeSource src;
  src.sys = {"missing_sys", "amd64_linux26"};
  SetProbe probe;
  probe.existing = {"/export/alice/amd64_linux26/vsymfs/d/member3/x86_64/${NOPE}/$NOPE2$"};
  std::vector<Substitution> trace;
  ExpandOptions eo;
  eo.probe = &probe;
  eo.trace = &trace;
  const std::string raw = "/export/${USER}/@sys/%{PROJECT}/${NOPE:-d}/{memb}/@machine/${NOPE}/$NOPE2$$";
  Result<std::string> got = expand(raw, src, eo);
  ASSERT_TRUE(got.ok()) << got.error().message;
  EXPECT_EQ(*got, "/export/alice/amd64_linux26/vsymfs/d/member3/x86_64/${NOPE}/$NOPE2$");

  struct Want {
    std::string reference, value;
    Scope scope;
  };
  // Exactly one entry per reference: the rejected @sys candidate left none.
  const std::vector<Want> want = {
      {"${USER}", "alice", Scope::Builtin},   {"@sys", "amd64_linux26", Scope::Host},
      {"%{PROJECT}", "vsymfs", Scope::User},  {"${NOPE:-d}", "d", Scope::Default},
      {"{memb}", "member3", Scope::Builtin},  {"@machine", "x86_64", Scope::Builtin},
      {"${NOPE}", "${NOPE}", Scope::Default}, {"$NOPE2", "$NOPE2", Scope::Default},
  };
  ASSERT_EQ(trace.size(), want.size());
  for (std::size_t i = 0; i < want.size(); ++i) {
    SCOPED_TRACE(i);
    EXPECT_EQ(trace[i].reference, want[i].reference);
    EXPECT_EQ(trace[i].value, want[i].value);
    EXPECT_EQ(trace[i].scope, want[i].scope);
  }

  // Empty policy: the value is recorded as empty.
  trace.clear();
  eo.undefined = UndefinedPolicy::Empty;
  got = expand("/${NOPE}", src, eo);
  ASSERT_TRUE(got.ok());
  ASSERT_EQ(trace.size(), 1U);
  EXPECT_EQ(trace[0].reference, "${NOPE}");
  EXPECT_EQ(trace[0].value, "");
  EXPECT_EQ(trace[0].scope, Scope::Default);

  // A conditional link records the universe that chose the branch.
  trace.clear();
  src.universe_value = {"ucb", Scope::Process};
  got = expand("att=/a ucb=/u/${USER}", src, eo);
  ASSERT_TRUE(got.ok());
  EXPECT_EQ(*got, "/u/alice");
  ASSERT_EQ(trace.size(), 2U);
  EXPECT_EQ(trace[0].reference, "ucb=");
  EXPECT_EQ(trace[0].value, "ucb");
  EXPECT_EQ(trace[0].scope, Scope::Process);
  EXPECT_EQ(trace[1].reference, "${USER}");
}

TEST(LinkTemplateTest, WhatATemplateNeeds) {
  struct NeedsCase {
    std::string raw;
    bool literal, process_scope, caller, personality, sys;
  };
  const std::vector<NeedsCase> cases = {
      {"", true, false, false, false, false},
      {"/plain", true, false, false, false, false},
      {"$1 @foo %x {x}", true, false, false, false, false},
      {"$$", false, false, false, false, false},
      {"@hostname/@{domainname}/@osrelease/@ostype/@kernel_ident/{memb}", false, false, false, false, false},
      {"@uid", false, false, true, false, false},
      {"@machine", false, false, true, true, false},
      {"@{machine_arch}", false, false, true, true, false},
      {"@emul", false, false, true, true, false},
      {"@sys", false, false, true, true, true},
      {"${USER}", false, true, true, false, false},
      {"%{X:d}", false, true, true, false, false},
      {"att=/a ucb=/u", false, true, true, false, false},
      {"att=/@sys ucb=/u", false, true, true, true, true},
  };
  for (const NeedsCase& c : cases) {
    SCOPED_TRACE("raw: '" + c.raw + "'");
    const Template t = Template::parse(c.raw, options());
    EXPECT_EQ(t.raw(), c.raw);
    EXPECT_EQ(t.is_literal(), c.literal);
    EXPECT_EQ(t.needs_process_scope(), c.process_scope);
    EXPECT_EQ(t.needs_caller(), c.caller);
    EXPECT_EQ(t.needs_personality(), c.personality);
    EXPECT_EQ(t.uses_sys(), c.sys);
  }
}

// Which templates need the caller's environment (LinkService reads
// /proc/<pid>/environ only for these): a variable that is not an identity
// builtin, or a conditional link, whose universe may come from it.
TEST(LinkTemplateTest, WhetherATemplateNeedsTheEnvironment) {
  const std::vector<std::pair<std::string, bool>> cases = {
      {"/plain", false},         {"@uid/@hostname/{memb}", false}, {"@sys", false},
      {"${USER}/$HOME", false},  {"$(UID)-%{GID}/${GROUP}", false}, {"${USER}/$FOO", true},
      {"%{X:d}", true},          {"att=/a ucb=/u", true},           {"$USERNAME", true},
  };
  for (const auto& [raw, environment] : cases) {
    EXPECT_EQ(Template::parse(raw, options()).needs_environment(), environment) << raw;
  }
}

TEST(LinkTemplateTest, SysComponents) {
  for (std::string_view name : {"@sys", "lib@sys", "@sys@sys"}) EXPECT_TRUE(is_sys_component(name)) << name;
  for (std::string_view name : {"", "@sy", "sys", "@sys.d", "@sysx", "@SYS", "@{sys}"})
    EXPECT_FALSE(is_sys_component(name)) << name;
}

TEST(LinkTemplateTest, SegmentsPointIntoTheRawText) {
  const Template t = Template::parse("a${B:-cd}e", options());
  using Kind = Template::Segment::Kind;
  const auto segs = t.segments();
  ASSERT_EQ(segs.size(), 3U);
  EXPECT_EQ(segs[0].kind, Kind::Text);
  EXPECT_EQ(t.raw().substr(segs[0].offset, segs[0].length), "a");
  EXPECT_EQ(segs[1].kind, Kind::Variable);
  EXPECT_EQ(t.raw().substr(segs[1].offset, segs[1].length), "B");
  EXPECT_EQ(t.raw().substr(segs[1].ref_offset, segs[1].ref_length), "${B:-cd}");
  ASSERT_GE(segs[1].default_offset, 0);
  EXPECT_EQ(t.raw().substr(static_cast<std::size_t>(segs[1].default_offset), segs[1].default_length), "cd");
  EXPECT_EQ(segs[2].kind, Kind::Text);
  EXPECT_EQ(t.raw().substr(segs[2].offset, segs[2].length), "e");
}

TEST(LinkTemplateTest, NulAndBinaryBytesPassThrough) {
  FakeSource src;
  expect_table({{"a\0${USER}\0b"s, "a\0alice\0b"s},
                {"\0"s, "\0"s},
                {"${US\0ER}"s, "${US\0ER}"s},
                {"@mach\0ine"s, "@mach\0ine"s},
                {"\xff\xfe@machine\x80"s, "\xff\xfe@machine\x80"s}},
               src);
  std::string every_byte;
  for (int b = 0; b < 256; ++b) every_byte.push_back(static_cast<char>(b));
  Result<std::string> off = expand(every_byte, src, {}, {false, false, false, false, false});
  ASSERT_TRUE(off.ok());
  EXPECT_EQ(*off, every_byte);
  // All families on: every sigil in the table is alone, so it stays literal.
  Result<std::string> on = expand(every_byte, src);
  ASSERT_TRUE(on.ok());
  EXPECT_EQ(*on, every_byte);
}

// A deterministic sweep of sigil-heavy text: no crash, and the invariants the
// fuzzer checks (bounded output, only the documented errors, literal = raw).
TEST(LinkTemplateTest, RandomSigilSoupKeepsTheInvariants) {
  FakeSource src;
  const std::string long_value(1500, 'L');
  src.vars["LONG"] = {long_value, Scope::System};
  const std::string alphabet = "$@%{}():-=/ \t_aUSERLONGmbsy1\0"s;
  std::mt19937 rng(12345);
  std::uniform_int_distribution<std::size_t> pick(0, alphabet.size() - 1);
  std::uniform_int_distribution<std::size_t> length(0, 40);
  for (int i = 0; i < 20000; ++i) {
    std::string raw;
    const std::size_t n = length(rng);
    for (std::size_t k = 0; k < n; ++k) raw.push_back(alphabet[pick(rng)]);
    const Template t = Template::parse(raw, options());
    std::string out;
    Result<void> r = t.expand(src, {}, out);
    if (r.ok()) {
      ASSERT_LE(out.size(), kMaxExpansion) << raw;
      if (t.is_literal()) {
        ASSERT_EQ(out, raw);
      }
    } else {
      const int code = r.error().code;
      ASSERT_TRUE(code == ENAMETOOLONG || (code == ENOENT && t.is_conditional())) << raw << ": " << code;
    }
  }
}

}  // namespace
}  // namespace vsymfs
