// The scopes: precedence between every adjacent pair, who gets a process
// scope, identity builtins, groups, hosts, run-time values, per_caller=false,
// 32-bit callers, universes, and that lookups never allocate.
#include "vsymfs/resolver.hpp"

#include <sys/utsname.h>

#include <atomic>
#include <cstdlib>
#include <functional>
#include <memory>
#include <new>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "vsymfs/emulation.hpp"

// Counts allocations while armed, to check the no-allocation contract of the
// readlink hot path.
namespace {
std::atomic<bool> g_count_allocs{false};
std::atomic<long> g_allocs{0};
}  // namespace

void* operator new(std::size_t n) {
  if (g_count_allocs.load(std::memory_order_relaxed)) g_allocs.fetch_add(1, std::memory_order_relaxed);
  if (void* p = std::malloc(n == 0 ? 1 : n)) return p;
  throw std::bad_alloc();
}
// noinline: inlined into callers, GCC pairs the free() with the builtin
// operator new and warns (-Wmismatched-new-delete).
[[gnu::noinline]] void operator delete(void* p) noexcept { std::free(p); }
[[gnu::noinline]] void operator delete(void* p, std::size_t) noexcept { std::free(p); }

namespace vsymfs {
namespace {

HostInfo test_host() {
  HostInfo h;
  h.hostname = "node7.example.org";
  h.domainname = "example";
  h.machine = "x86_64";
  h.machine32 = "i686";
  h.osrelease = "6.1.0-test";
  h.ostype = "Linux";
  h.kernel_ident = "#1 SMP";
  return h;
}

Rules test_rules() {
  Rules r;
  r.sysnames = {"amd64_linux26", "i386_linux26"};
  r.sysnames32 = {"i386_linux26"};
  r.universes.names = {"att", "ucb"};
  r.universes.default_universe = "att";
  r.member = 3;
  return r;
}

Caller test_caller() {
  Caller c;
  c.pid = 4242;
  c.uid = c.ruid = 1000;
  c.gid = c.rgid = 100;
  c.groups = {100, 27, 50};
  c.user_name = "alice";
  c.group_name = "users";
  c.group_names = {"users", "sudo", "staff"};
  c.home = "/home/alice";
  c.environ_known = true;
  return c;
}

struct Fixture {
  Rules rules = test_rules();
  HostInfo host = test_host();
  Caller caller = test_caller();
  RuntimeVars runtime;

  // What the daemon keeps per host name and rules: built afresh here, as
  // the tests change the rules and the host between lookups.
  mutable std::optional<HostView> view;
  const HostView& host_view() const { return view.emplace(rules, host); }
  ScopedResolver resolver() const { return ScopedResolver(rules, host_view(), caller, &runtime); }
  // A copy: a Value may view the resolver's own number buffers, and the
  // resolver made here is gone when var() returns.
  struct Owned {
    std::string text;
    Scope scope;
  };
  std::optional<Owned> var(std::string_view name) const {
    const ScopedResolver r = resolver();
    const std::optional<Value> v = r.variable(name);
    if (!v) return std::nullopt;
    return Owned{std::string(v->text), v->scope};
  }
};

template <class V>
void expect_value(const std::optional<V>& v, std::string_view text, Scope scope, std::string_view what = {}) {
  ASSERT_TRUE(v.has_value()) << what;
  EXPECT_EQ(v->text, text) << what;
  EXPECT_EQ(v->scope, scope) << what;
}
void expect_value(const Value& v, std::string_view text, Scope scope, std::string_view what = {}) {
  expect_value(std::optional<Value>(v), text, scope, what);
}

// Each step removes the highest scope that still defines the name; the next
// one down must answer. This covers every adjacent pair of SPEC §2.
TEST(ScopedResolver, PrecedenceBetweenEveryAdjacentScope) {
  Fixture f;
  const char* kName = "HOSTNAME";  // also a builtin, so the chain ends there
  f.rules.locked[kName] = "locked";
  f.caller.environ = {"HOSTNAME=process"};
  f.runtime.users[1000][kName] = "runtime-user";
  f.rules.users["alice"][kName] = "rules-user";
  f.rules.groups["users"][kName] = "group";
  f.rules.hosts.push_back({"node*", {{kName, "host"}}});
  f.runtime.system[kName] = "runtime-system";
  f.rules.system[kName] = "rules-system";

  struct Step {
    std::string_view text;
    Scope scope;
    std::function<void(Fixture&)> remove;  // drops this step's definition
  };
  const std::vector<Step> steps = {
      {"locked", Scope::Locked, [](Fixture& x) { x.rules.locked.clear(); }},
      {"process", Scope::Process, [](Fixture& x) { x.caller.environ.clear(); }},
      {"runtime-user", Scope::User, [](Fixture& x) { x.runtime.users.clear(); }},
      {"rules-user", Scope::User, [](Fixture& x) { x.rules.users.clear(); }},
      {"group", Scope::Group, [](Fixture& x) { x.rules.groups.clear(); }},
      {"host", Scope::Host, [](Fixture& x) { x.rules.hosts.clear(); }},
      {"runtime-system", Scope::System, [](Fixture& x) { x.runtime.system.clear(); }},
      {"rules-system", Scope::System, [](Fixture& x) { x.rules.system.clear(); }},
      {"node7.example.org", Scope::Builtin, nullptr},
  };
  for (const Step& step : steps) {
    expect_value(f.var(kName), step.text, step.scope, step.text);
    if (step.remove) step.remove(f);
  }
}

TEST(ScopedResolver, ProcessScopeNeedsAnOrdinaryVisibleCallerWithAKnownEnvironment) {
  struct Case {
    const char* name;
    std::function<void(Caller&, Rules&)> change;
    bool active;
  };
  const std::vector<Case> cases = {
      {"ordinary caller", [](Caller&, Rules&) {}, true},
      {"secure execution", [](Caller& c, Rules&) { c.secure = true; }, false},
      {"pid 0", [](Caller& c, Rules&) { c.pid = 0; }, false},
      {"environment unreadable", [](Caller& c, Rules&) { c.environ_known = false; }, false},
      {"per_caller off", [](Caller&, Rules& r) { r.per_caller = false; }, false},
  };
  for (const Case& c : cases) {
    Fixture f;
    f.caller.environ = {"PROJ=/from/env"};
    f.rules.system["PROJ"] = "/from/system";
    c.change(f.caller, f.rules);
    EXPECT_EQ(f.resolver().process_scope_active(), c.active) << c.name;
    if (c.active) {
      expect_value(f.var("PROJ"), "/from/env", Scope::Process, c.name);
    } else {
      expect_value(f.var("PROJ"), "/from/system", Scope::System, c.name);
    }
  }
}

TEST(ScopedResolver, EnvironmentLookupIsExactAndFirstDefinitionWins) {
  Fixture f;
  f.caller.environ = {"PROJX=wrong", "PROJ", "PROJ=first", "PROJ=second", "EMPTY="};
  expect_value(f.var("PROJ"), "first", Scope::Process);
  expect_value(f.var("EMPTY"), "", Scope::Process);  // set but empty is defined
  EXPECT_FALSE(f.var("PROJX_").has_value());
  EXPECT_FALSE(f.var("UNKNOWN").has_value());
  EXPECT_FALSE(f.var("").has_value());
}

TEST(ScopedResolver, AllowAndDenyPatterns) {
  struct Case {
    std::vector<std::string> allow, deny;
    const char* name;
    bool from_env;
  };
  const std::vector<Case> cases = {
      {{"*"}, {}, "LD_PRELOAD", true},
      {{"*"}, {"LD_*"}, "LD_PRELOAD", false},
      {{"*"}, {"LD_*"}, "PROJ_A", true},
      {{"PROJ_*"}, {}, "PROJ_A", true},
      {{"PROJ_*"}, {}, "OTHER", false},
      {{"PROJ_?"}, {}, "PROJ_AB", false},
      {{"PROJ_[AB]"}, {}, "PROJ_B", true},
      {{"PROJ_*"}, {"PROJ_SECRET"}, "PROJ_SECRET", false},
      {{}, {}, "PROJ_A", false},  // an empty allow list turns the process scope off
  };
  for (const Case& c : cases) {
    Fixture f;
    f.rules.env_allow = c.allow;
    f.rules.env_deny = c.deny;
    f.caller.environ = {std::string(c.name) + "=env"};
    const auto v = f.var(c.name);
    EXPECT_EQ(v.has_value(), c.from_env) << c.name;
    if (v) {
      EXPECT_EQ(v->scope, Scope::Process) << c.name;
    }
  }
}

// The daemon keeps only the variables environment_name_used() accepts: it
// must accept every name the process scope or the universe can take, or a
// link would expand differently from the cache than from a fresh read.
TEST(ScopedResolver, EnvironmentNameUsedAgreesWithTheResolver) {
  struct Case {
    std::vector<std::string> allow, deny;
    std::string universe_var;
    bool per_caller;
  };
  const std::vector<Case> cases = {
      {{"*"}, {}, "UNIVERSE", true},          {{"*"}, {"LD_*", "SECRET*"}, "UNIVERSE", true},
      {{"PROJ_*"}, {}, "UNIVERSE", true},     {{}, {}, "UNIVERSE", true},
      {{"PROJ_*"}, {"*"}, "ATT_UCB", true},   {{"*"}, {}, "", true},
      {{"*"}, {}, "UNIVERSE", false},
  };
  const std::vector<std::string> names = {"PROJ_A", "LD_PRELOAD", "SECRET_KEY", "UNIVERSE", "ATT_UCB",
                                          "USER",   "HOME",       "OTHER",      "PROJ_"};
  for (const Case& c : cases) {
    for (const std::string& name : names) {
      Fixture f;
      f.rules.env_allow = c.allow;
      f.rules.env_deny = c.deny;
      f.rules.universes.env_var = c.universe_var;
      f.rules.per_caller = c.per_caller;
      // "ucb" is a declared universe, so the universe variable takes it.
      f.caller.environ = {name + "=ucb"};
      const ScopedResolver r = f.resolver();
      const auto v = r.variable(name);
      const bool as_variable = v && v->scope == Scope::Process;
      const bool as_universe = r.universe().scope == Scope::Process;
      const bool used = environment_name_used(f.rules, name);
      EXPECT_EQ(used, as_variable || as_universe) << name << " allow=" << (c.allow.empty() ? "" : c.allow[0])
                                                  << " universe var=" << c.universe_var;
    }
  }
}

TEST(ScopedResolver, IdentityBuiltinsNeverComeFromTheEnvironment) {
  Fixture f;
  f.caller.environ = {"USER=root", "UID=0", "GID=0", "GROUP=root", "HOME=/root"};
  expect_value(f.var("USER"), "alice", Scope::Builtin);
  expect_value(f.var("UID"), "1000", Scope::Builtin);
  expect_value(f.var("GID"), "100", Scope::Builtin);
  expect_value(f.var("GROUP"), "users", Scope::Builtin);
  expect_value(f.var("HOME"), "/home/alice", Scope::Builtin);
  for (const char* name : {"USER", "UID", "GID", "GROUP", "HOME"}) EXPECT_TRUE(is_identity_builtin(name)) << name;
  for (const char* name : {"HOSTNAME", "user", "USERNAME", ""}) EXPECT_FALSE(is_identity_builtin(name)) << name;
}

TEST(ScopedResolver, Builtins) {
  Fixture f;
  expect_value(f.var("HOSTNAME"), "node7.example.org", Scope::Builtin);
  expect_value(f.var("ARCH"), "x86_64", Scope::Builtin);
  expect_value(f.var("SYSNAME"), "amd64_linux26", Scope::Builtin);
  expect_value(f.var("UNIVERSE"), "att", Scope::Builtin);
  expect_value(f.var("MEMBER"), "3", Scope::Builtin);
  // Unknown names in NSS: undefined rather than guessed.
  f.caller.user_name.clear();
  f.caller.group_name.clear();
  f.caller.home.clear();
  EXPECT_FALSE(f.var("USER").has_value());
  EXPECT_FALSE(f.var("GROUP").has_value());
  EXPECT_FALSE(f.var("HOME").has_value());
  expect_value(f.var("UID"), "1000", Scope::Builtin);
}

TEST(ScopedResolver, LargeIdsAndMembersAreFormattedWhole) {
  Fixture f;
  f.caller.uid = 4294967294u;
  f.caller.ruid = 65534;
  f.caller.gid = 4294967295u;
  f.caller.rgid = 0;
  f.rules.member = 2147483647;
  const ScopedResolver r = f.resolver();
  EXPECT_EQ(r.variable("UID")->text, "4294967294");
  EXPECT_EQ(r.magic("uid")->text, "4294967294");
  EXPECT_EQ(r.magic("ruid")->text, "65534");
  EXPECT_EQ(r.magic("gid")->text, "4294967295");
  EXPECT_EQ(r.magic("rgid")->text, "0");
  EXPECT_EQ(r.member().text, "member2147483647");
  EXPECT_EQ(r.variable("MEMBER")->text, "2147483647");
}

TEST(ScopedResolver, GroupsPrimaryFirstThenSupplementaryInOrder) {
  Fixture f;
  f.rules.groups["staff"]["G"] = "staff";
  f.rules.groups["sudo"]["G"] = "sudo";
  expect_value(f.var("G"), "sudo", Scope::Group);  // sudo precedes staff in group_names
  f.rules.groups["users"]["G"] = "users";
  expect_value(f.var("G"), "users", Scope::Group);  // the primary group beats both
  // A group the caller is not in never applies.
  Fixture g;
  g.rules.groups["wheel"]["G"] = "wheel";
  EXPECT_FALSE(g.var("G").has_value());
}

TEST(ScopedResolver, HostPatternsInFileOrder) {
  Fixture f;
  f.rules.hosts.push_back({"other*", {{"H", "other"}}});
  f.rules.hosts.push_back({"node[0-9].*", {{"X", "only-x"}}});  // matches but lacks H
  f.rules.hosts.push_back({"node?.example.org", {{"H", "exact"}}});
  f.rules.hosts.push_back({"*", {{"H", "any"}}});
  expect_value(f.var("H"), "exact", Scope::Host);
  expect_value(f.var("X"), "only-x", Scope::Host);
  f.host.hostname = "NODE7.Example.ORG";  // host names are case-insensitive
  expect_value(f.var("H"), "exact", Scope::Host);
  f.host.hostname = "login1";
  expect_value(f.var("H"), "any", Scope::Host);
  EXPECT_FALSE(f.var("X").has_value());
}

TEST(ScopedResolver, RuntimeUserValuesAreIsolatedPerUid) {
  Fixture f;
  f.runtime.users[1000]["PROJ"] = "alice's";
  f.runtime.users[1001]["PROJ"] = "bob's";
  expect_value(f.var("PROJ"), "alice's", Scope::User);
  f.caller.uid = 1001;
  f.caller.user_name = "bob";
  expect_value(f.var("PROJ"), "bob's", Scope::User);
  f.caller.uid = 1002;
  f.caller.user_name = "carol";
  EXPECT_FALSE(f.var("PROJ").has_value());
  // Rules [user.NAME] go by name: alice's table is not bob's.
  f.rules.users["alice"]["R"] = "a";
  EXPECT_FALSE(f.var("R").has_value());
}

// Finding 4 of issue 18: `vsymctl set CONF ../../home/attk/evil.conf` by a
// user must not steer a set-id or file-capability program that user runs.
// Such a caller gets the administrator's [user.NAME] table and the scopes
// below, never what the user chose (environment or run-time values).
TEST(ScopedResolver, SecureCallersGetNoRuntimeUserValues) {
  struct Case {
    const char* name;
    std::function<void(Caller&)> change;
    bool runtime_active;
  };
  const std::vector<Case> cases = {
      {"ordinary caller", [](Caller&) {}, true},
      {"secure execution (set-id, file capabilities)", [](Caller& c) { c.secure = true; }, false},
      // Its secure-execution mode cannot be checked: trusted no more.
      {"pid 0 (not visible to the daemon)", [](Caller& c) { c.pid = 0; }, false},
      // No environment is not the same as secure: run-time values stay.
      {"environment unreadable", [](Caller& c) { c.environ_known = false; }, true},
  };
  for (const Case& c : cases) {
    Fixture f;
    f.caller.environ = {"CONF=../../home/alice/env.conf"};
    f.runtime.users[1000]["CONF"] = "../../home/alice/evil.conf";
    f.runtime.users[1000]["ONLY_RUNTIME"] = "evil";
    f.runtime.users[1000]["USER"] = "root";  // an identity builtin, overridden at run time
    f.rules.users["alice"]["CONF"] = "admin.conf";
    f.rules.groups["users"]["GROUP_ONLY"] = "group";
    f.runtime.users[1000]["GROUP_ONLY"] = "evil";
    f.rules.system["ONLY_RUNTIME"] = "system";
    c.change(f.caller);
    const ScopedResolver r = f.resolver();
    EXPECT_EQ(r.runtime_user_scope_active(), c.runtime_active) << c.name;
    if (r.process_scope_active()) {
      expect_value(f.var("CONF"), "../../home/alice/env.conf", Scope::Process, c.name);
      f.caller.environ.clear();
    }
    if (c.runtime_active) {
      expect_value(f.var("CONF"), "../../home/alice/evil.conf", Scope::User, c.name);
      expect_value(f.var("ONLY_RUNTIME"), "evil", Scope::User, c.name);
      expect_value(f.var("GROUP_ONLY"), "evil", Scope::User, c.name);
      expect_value(f.var("USER"), "root", Scope::User, c.name);
    } else {
      // The administrator's table, then the lower scopes, then the builtin.
      expect_value(f.var("CONF"), "admin.conf", Scope::User, c.name);
      expect_value(f.var("ONLY_RUNTIME"), "system", Scope::System, c.name);
      expect_value(f.var("GROUP_ONLY"), "group", Scope::Group, c.name);
      expect_value(f.var("USER"), "alice", Scope::Builtin, c.name);
    }
  }
}

TEST(ScopedResolver, SecureCallerWithNoAdministratorValueSeesTheNameUndefined) {
  Fixture f;
  f.caller.secure = true;
  f.runtime.users[1000]["CONF"] = "../../home/alice/evil.conf";
  EXPECT_FALSE(f.var("CONF").has_value());
  // Root's own run-time values are root's, and a set-user-id-root program
  // runs with uid 0: it gets them (they are not its invoker's choice).
  f.caller.uid = 0;
  f.caller.secure = false;
  f.runtime.users[0]["CONF"] = "root.conf";
  expect_value(f.var("CONF"), "root.conf", Scope::User);
}

TEST(ScopedResolver, NoRuntimeTable) {
  Fixture f;
  f.rules.system["S"] = "rules";
  const ScopedResolver r(f.rules, f.host_view(), f.caller, nullptr);
  expect_value(r.variable("S"), "rules", Scope::System);
}

TEST(ScopedResolver, PerCallerOffSeesOnlyLockedHostSystemAndHostBuiltins) {
  Fixture f;
  f.rules.per_caller = false;
  f.caller.compat32 = true;
  f.caller.environ = {"P=env", "UNIVERSE=ucb"};
  f.runtime.users[1000]["U"] = "user";
  f.rules.users["alice"]["U"] = "user";
  f.rules.groups["users"]["G"] = "group";
  f.rules.universes.by_user["alice"] = "ucb";
  f.rules.locked["L"] = "locked";
  f.rules.hosts.push_back({"*", {{"H", "host"}}});
  f.runtime.system["S"] = "system";
  const ScopedResolver r = f.resolver();
  EXPECT_FALSE(r.process_scope_active());
  EXPECT_FALSE(r.variable("P").has_value());
  EXPECT_FALSE(r.variable("U").has_value());
  EXPECT_FALSE(r.variable("G").has_value());
  expect_value(r.variable("L"), "locked", Scope::Locked);
  expect_value(r.variable("H"), "host", Scope::Host);
  expect_value(r.variable("S"), "system", Scope::System);
  for (const char* name : {"USER", "UID", "GID", "GROUP", "HOME"}) EXPECT_FALSE(r.variable(name).has_value()) << name;
  for (const char* name : {"uid", "ruid", "gid", "rgid"}) EXPECT_FALSE(r.magic(name).has_value()) << name;
  // Native values even for a 32-bit caller, and the default universe.
  expect_value(r.magic("machine"), "x86_64", Scope::Builtin);
  expect_value(r.magic("emul"), "linux", Scope::Builtin);
  expect_value(r.variable("ARCH"), "x86_64", Scope::Builtin);
  EXPECT_EQ(r.sysnames()[0], "amd64_linux26");
  expect_value(r.universe(), "att", Scope::Builtin);
  expect_value(r.variable("HOSTNAME"), "node7.example.org", Scope::Builtin);
}

TEST(ScopedResolver, MagicNames) {
  Fixture f;
  f.caller.ruid = 0;
  f.caller.rgid = 0;
  const ScopedResolver r = f.resolver();
  const std::vector<std::pair<const char*, const char*>> expected = {
      {"machine_arch", "x86_64"}, {"machine", "x86_64"},  {"hostname", "node7.example.org"},
      {"domainname", "example"},  {"osrelease", "6.1.0-test"}, {"ostype", "Linux"},
      {"kernel_ident", "#1 SMP"}, {"emul", "linux"},      {"uid", "1000"},
      {"ruid", "0"},              {"gid", "100"},         {"rgid", "0"},
  };
  for (const auto& [name, text] : expected) expect_value(r.magic(name), text, Scope::Builtin, name);
  for (const char* name : {"sys", "USER", "Machine", "", "machine_"}) EXPECT_FALSE(r.magic(name).has_value()) << name;
}

TEST(ScopedResolver, ThirtyTwoBitCaller) {
  Fixture f;
  f.caller.compat32 = true;
  const ScopedResolver r = f.resolver();
  expect_value(r.magic("machine"), "i686", Scope::Builtin);
  expect_value(r.magic("machine_arch"), "i686", Scope::Builtin);
  expect_value(r.magic("emul"), "linux32", Scope::Builtin);
  expect_value(r.variable("ARCH"), "i686", Scope::Builtin);
  expect_value(r.variable("SYSNAME"), "i386_linux26", Scope::Builtin);
  ASSERT_EQ(r.sysnames().size(), 1u);
  EXPECT_EQ(r.sysnames()[0], "i386_linux26");
  // Host facts do not change with the personality.
  expect_value(r.magic("osrelease"), "6.1.0-test", Scope::Builtin);
}

std::shared_ptr<const Emulation> emulated_as(const char* machine) {
  const std::string emulator = "qemu-" + std::string(elf_machine_named(machine)->qemu);
  return std::make_shared<const Emulation>(
      make_emulation(*elf_machine_named(machine), emulator + "-static", emulator));
}

TEST(ScopedResolver, EmulatedCallerGetsItsOwnArchitecture) {
  Fixture f;
  f.caller.emulation = emulated_as("aarch64");
  const ScopedResolver r = f.resolver();
  const std::string_view note = "emulated by qemu-aarch64 (binfmt_misc entry qemu-aarch64)";
  for (const char* name : {"machine", "machine_arch"}) {
    expect_value(r.magic(name), "aarch64", Scope::Builtin, name);
    EXPECT_EQ(r.magic(name)->note, note);
  }
  expect_value(r.magic("emul"), "qemu-aarch64", Scope::Builtin);
  expect_value(r.variable("ARCH"), "aarch64", Scope::Builtin);
  EXPECT_EQ(r.variable("ARCH")->note, note);
  expect_value(r.variable("SYSNAME"), "arm64_linux26", Scope::Builtin);
  ASSERT_EQ(r.sysnames().size(), 2u);
  EXPECT_EQ(r.sysnames()[0], "arm64_linux26");
  EXPECT_EQ(r.sysnames()[1], "arm_linux26");
  EXPECT_EQ(r.sysnames_scope(), Scope::Builtin);
  EXPECT_EQ(r.sysnames_note(), note);
  // Host facts stay the host's.
  expect_value(r.magic("osrelease"), "6.1.0-test", Scope::Builtin);
  EXPECT_TRUE(r.magic("osrelease")->note.empty());
}

TEST(ScopedResolver, EmulatedThirtyTwoBitGuest) {
  Fixture f;
  f.caller.emulation = emulated_as("armv7l");
  const ScopedResolver r = f.resolver();
  expect_value(r.magic("machine"), "armv7l", Scope::Builtin);
  expect_value(r.magic("emul"), "qemu-arm", Scope::Builtin);
  expect_value(r.variable("ARCH"), "armv7l", Scope::Builtin);
  ASSERT_EQ(r.sysnames().size(), 1u);
  EXPECT_EQ(r.sysnames()[0], "arm_linux26");
}

TEST(ScopedResolver, EmulatedCallerTakesThePerArchitectureSysnames) {
  Fixture f;
  f.caller.emulation = emulated_as("aarch64");
  f.rules.sysnames_configured = true;  // [sysname] native = ... is the host's, not the guest's
  f.rules.sysnames_by_arch["aarch64"] = {"arm64_deb12", "arm64_linux26"};
  f.rules.sysnames_by_arch["riscv64"] = {"riscv64_linux26"};
  const ScopedResolver r = f.resolver();
  ASSERT_EQ(r.sysnames().size(), 2u);
  EXPECT_EQ(r.sysnames()[0], "arm64_deb12");
  EXPECT_EQ(r.sysnames_scope(), Scope::System);
  // A native caller keeps the host's list.
  Fixture native;
  native.rules = f.rules;
  EXPECT_EQ(native.resolver().sysnames()[0], "amd64_linux26");
  EXPECT_TRUE(native.resolver().sysnames_note().empty());
}

TEST(ScopedResolver, RulesTurnEmulationOff) {
  for (bool per_caller : {true, false}) {
    Fixture f;
    f.caller.emulation = emulated_as("aarch64");
    f.rules.sysnames_by_arch["aarch64"] = {"arm64_linux26"};
    if (per_caller) f.rules.emulation = false;
    else f.rules.per_caller = false;
    const ScopedResolver r = f.resolver();
    expect_value(r.magic("machine"), "x86_64", Scope::Builtin);
    expect_value(r.magic("emul"), "linux", Scope::Builtin);
    expect_value(r.variable("ARCH"), "x86_64", Scope::Builtin);
    EXPECT_EQ(r.sysnames()[0], "amd64_linux26");
    EXPECT_TRUE(r.sysnames_note().empty());
    EXPECT_TRUE(r.magic("machine")->note.empty());
  }
}

TEST(ScopedResolver, SysnamesAndTheirScope) {
  Fixture f;
  const ScopedResolver r = f.resolver();
  ASSERT_EQ(r.sysnames().size(), 2u);
  EXPECT_EQ(r.sysnames()[1], "i386_linux26");
  EXPECT_EQ(r.sysnames_scope(), Scope::Builtin);
  f.rules.sysnames_configured = true;
  EXPECT_EQ(f.resolver().sysnames_scope(), Scope::System);
  // A hand-built Rules with no lists still has candidates (never empty).
  Rules bare;
  const HostView bare_view(bare, f.host);
  const ScopedResolver b(bare, bare_view, f.caller, nullptr);
  EXPECT_FALSE(b.sysnames().empty());
  EXPECT_FALSE(b.variable("SYSNAME")->text.empty());
}

TEST(ScopedResolver, UniverseSelection) {
  struct Case {
    const char* name;
    std::function<void(Fixture&)> setup;
    const char* universe;
    Scope scope;
  };
  const std::vector<Case> cases = {
      {"default", [](Fixture&) {}, "att", Scope::Builtin},
      {"by group (supplementary)", [](Fixture& f) { f.rules.universes.by_group["staff"] = "ucb"; }, "ucb", Scope::Group},
      {"primary group first",
       [](Fixture& f) {
         f.rules.universes.by_group["staff"] = "ucb";
         f.rules.universes.by_group["users"] = "att";
       },
       "att", Scope::Group},
      {"user beats group",
       [](Fixture& f) {
         f.rules.universes.by_group["users"] = "att";
         f.rules.universes.by_user["alice"] = "ucb";
       },
       "ucb", Scope::User},
      {"process beats user",
       [](Fixture& f) {
         f.rules.universes.by_user["alice"] = "ucb";
         f.caller.environ = {"UNIVERSE=att"};
       },
       "att", Scope::Process},
      {"undeclared env value ignored",
       [](Fixture& f) {
         f.rules.universes.by_user["alice"] = "ucb";
         f.caller.environ = {"UNIVERSE=posix"};
       },
       "ucb", Scope::User},
      {"secure caller's env ignored",
       [](Fixture& f) {
         f.caller.secure = true;
         f.caller.environ = {"UNIVERSE=ucb"};
       },
       "att", Scope::Builtin},
      {"custom env variable",
       [](Fixture& f) {
         f.rules.universes.env_var = "ATT_UCB";
         f.caller.environ = {"UNIVERSE=att", "ATT_UCB=ucb"};
       },
       "ucb", Scope::Process},
      {"env selection disabled",
       [](Fixture& f) {
         f.rules.universes.env_var.clear();
         f.caller.environ = {"UNIVERSE=ucb"};
       },
       "att", Scope::Builtin},
      {"deny list does not hide the universe variable",
       [](Fixture& f) {
         f.rules.env_deny = {"*"};
         f.caller.environ = {"UNIVERSE=ucb"};
       },
       "ucb", Scope::Process},
      {"no universes declared",
       [](Fixture& f) {
         f.rules.universes.names.clear();
         f.rules.universes.default_universe.clear();
         f.caller.environ = {"UNIVERSE=ucb"};
       },
       "", Scope::Builtin},
  };
  for (const Case& c : cases) {
    Fixture f;
    c.setup(f);
    const ScopedResolver r = f.resolver();
    expect_value(r.universe(), c.universe, c.scope, c.name);
  }
}

TEST(ScopedResolver, UniverseVariableFollowsTheCallersUniverse) {
  Fixture f;
  f.caller.environ = {"UNIVERSE=ucb"};
  expect_value(f.var("UNIVERSE"), "ucb", Scope::Process);
  f.caller.environ = {"UNIVERSE=bogus"};
  expect_value(f.var("UNIVERSE"), "att", Scope::Builtin);  // same as conditional links
  // Without universes UNIVERSE is an ordinary variable.
  f.rules.universes.names.clear();
  expect_value(f.var("UNIVERSE"), "bogus", Scope::Process);
  f.caller.environ.clear();
  EXPECT_FALSE(f.var("UNIVERSE").has_value());
}

TEST(ScopedResolver, Member) {
  Fixture f;
  expect_value(f.resolver().member(), "member3", Scope::Builtin);
  f.rules.member = 0;
  expect_value(f.resolver().member(), "member0", Scope::Builtin);
}

TEST(ScopedResolver, LookupsNeverAllocate) {
  Fixture f;
  f.caller.environ = {"A=1", "PROJ=/p", "UNIVERSE=ucb"};
  f.rules.env_deny = {"LD_*"};
  f.rules.locked["L"] = "l";
  f.runtime.users[1000]["U"] = "u";
  f.rules.groups["staff"]["G"] = "g";
  f.rules.hosts.push_back({"node*", {{"H", "h"}}});
  f.rules.system["S"] = "s";
  f.rules.universes.by_group["staff"] = "att";

  // Built once per host name and rules, not per lookup: outside the count.
  const HostView& view = f.host_view();
  g_allocs = 0;
  g_count_allocs = true;
  std::size_t total = 0;
  {
    const ScopedResolver r(f.rules, view, f.caller, &f.runtime);
    for (const char* name : {"L", "PROJ", "U", "G", "H", "S", "USER", "UID", "HOME", "ARCH", "SYSNAME", "UNIVERSE",
                             "MEMBER", "NOPE", "LD_PRELOAD"}) {
      if (auto v = r.variable(name)) total += v->text.size();
    }
    for (const char* name : {"machine", "emul", "uid", "rgid", "hostname", "nope"}) {
      if (auto v = r.magic(name)) total += v->text.size();
    }
    total += r.sysnames().size() + r.universe().text.size() + r.member().text.size();
  }
  g_count_allocs = false;
  EXPECT_EQ(g_allocs.load(), 0);
  EXPECT_GT(total, 0u);

  // The counter itself works (so the zero above means something).
  g_count_allocs = true;
  std::string grown(100, 'x');
  g_count_allocs = false;
  EXPECT_GE(g_allocs.load(), 1);
  EXPECT_EQ(grown.size(), 100u);
}

TEST(HostInfo, ReadsUname) {
  utsname uts{};
  ASSERT_EQ(::uname(&uts), 0);
  const HostInfo h = read_host_info();
  EXPECT_EQ(h.hostname, uts.nodename);
  EXPECT_EQ(h.domainname, uts.domainname);
  EXPECT_EQ(h.machine, uts.machine);
  EXPECT_EQ(h.osrelease, uts.release);
  EXPECT_EQ(h.ostype, "Linux");
  EXPECT_EQ(h.kernel_ident, uts.version);
  // What `linux32 uname -m` reports on this machine.
  const std::string machine = uts.machine;
  const std::string expected32 = machine == "x86_64" ? "i686" : machine == "aarch64" ? "armv7l" : h.machine32;
  EXPECT_EQ(h.machine32, expected32);
  EXPECT_FALSE(h.machine32.empty());
}

}  // namespace
}  // namespace vsymfs
