// The scopes: one caller's view of the variables, the @ names, @sys and the
// universe. Built on the stack for every expansion, so construction and every
// lookup borrow and never allocate: values are string_views into the Rules,
// the RuntimeVars, the Caller and the HostView, or into the resolver's own
// small number buffers.
#include "vsymfs/resolver.hpp"

#include "vsymfs/emulation.hpp"

#include <fnmatch.h>

#include <algorithm>
#include <array>
#include <charconv>
#include <cstring>
#include <vector>

namespace vsymfs {
namespace {

// Format into a buffer the resolver owns; the buffers are sized for any
// 32-bit id and "member" + INT_MAX, so to_chars cannot fail.
template <std::size_t N, class Int>
std::string_view format_into(char (&buf)[N], std::string_view prefix, Int value) noexcept {
  if (!prefix.empty()) std::memcpy(buf, prefix.data(), prefix.size());
  const auto res = std::to_chars(buf + prefix.size(), buf + N, value);
  return {buf, static_cast<std::size_t>(res.ptr - buf)};
}

// fnmatch(3) needs a C string; the name is a view into a link template. Names
// longer than the buffer never match (valid names are at most 64 bytes; a
// longer one cannot have been set anywhere but the environment).
bool name_matches_any(std::span<const std::string> patterns, std::string_view name) noexcept {
  char buf[256];
  bool have_buf = false;
  for (const std::string& pattern : patterns) {
    // "*" is the default allow list: answer it without a copy or a call.
    if (pattern == "*") return true;
    if (!have_buf) {
      if (name.size() >= sizeof buf) return false;
      std::memcpy(buf, name.data(), name.size());
      buf[name.size()] = '\0';
      have_buf = true;
    }
    if (::fnmatch(pattern.c_str(), buf, 0) == 0) return true;
  }
  return false;
}

// getenv over a captured environment: the first "NAME=" entry wins.
const std::string* find_env(const std::vector<std::string>& environ, std::string_view name) noexcept {
  for (const std::string& entry : environ) {
    if (entry.size() > name.size() && entry[name.size()] == '=' && std::string_view(entry).starts_with(name)) {
      return &entry;
    }
  }
  return nullptr;
}

std::optional<Value> find_in(const VarMap& map, std::string_view name, Scope scope) noexcept {
  const auto it = map.find(name);
  if (it == map.end()) return std::nullopt;
  return Value{it->second, scope};
}

// A hand-built Rules (tests, the daemon before its first load) may have no
// sysnames; the contract is "never empty", so fall back to the host's
// derivation, computed once.
std::span<const std::string> fallback_sysnames(bool compat32) {
  static const std::array<std::vector<std::string>, 2> lists = [] {
    const HostInfo host = read_host_info();
    return std::array<std::vector<std::string>, 2>{default_sysnames(host.machine, false),
                                                   default_sysnames(host.machine, true)};
  }();
  return lists[compat32 ? 1 : 0];
}

}  // namespace

bool is_identity_builtin(std::string_view name) noexcept {
  return name == "USER" || name == "UID" || name == "GID" || name == "GROUP" || name == "HOME";
}

bool environment_name_used(const Rules& rules, std::string_view name) noexcept {
  if (!rules.per_caller) return false;
  if (!rules.universes.names.empty()) {
    if (!rules.universes.env_var.empty() && name == rules.universes.env_var) return true;
    if (name == "UNIVERSE") return false;  // then the caller's universe, never the variable
  }
  return !is_identity_builtin(name) && name_matches_any(rules.env_allow, name) && !name_matches_any(rules.env_deny, name);
}

ScopedResolver::ScopedResolver(const Rules& rules, const HostView& host, const Caller& caller,
                               const RuntimeVars* runtime) noexcept
    : rules_(rules), view_(host), host_(host.host()), caller_(caller), runtime_(runtime) {
  // Formatting all four numbers eagerly: the whole constructor measured
  // ~10 ns of CPU, against a READLINK round trip of 10-25 us; lazy
  // formatting would make const lookups write to the object.
  uid_s_ = format_into(uid_buf_, {}, caller.uid);
  gid_s_ = format_into(gid_buf_, {}, caller.gid);
  ruid_s_ = format_into(ruid_buf_, {}, caller.ruid);
  rgid_s_ = format_into(rgid_buf_, {}, caller.rgid);
}

bool ScopedResolver::process_scope_active() const noexcept {
  return rules_.per_caller && caller_.pid != 0 && !caller_.secure && caller_.environ_known;
}

bool ScopedResolver::runtime_user_scope_active() const noexcept {
  return rules_.per_caller && caller_.pid != 0 && !caller_.secure;
}

std::optional<Value> ScopedResolver::variable(std::string_view name) const {
  if (auto v = find_in(rules_.locked, name, Scope::Locked)) return v;

  // With universes declared, UNIVERSE is the caller's universe, so that
  // ${UNIVERSE} and conditional links always agree (the rules file rejects a
  // UNIVERSE variable then).
  if (name == "UNIVERSE" && !rules_.universes.names.empty()) return universe();

  const bool per_caller = rules_.per_caller;
  if (process_scope_active() && !is_identity_builtin(name)) {
    // The scan is cheaper than fnmatch: match patterns only for names the
    // process actually has.
    const std::string* entry = find_env(caller_.environ, name);
    if (entry != nullptr && name_matches_any(rules_.env_allow, name) && !name_matches_any(rules_.env_deny, name)) {
      return Value{std::string_view(*entry).substr(name.size() + 1), Scope::Process};
    }
  }

  if (per_caller) {
    // What a user set at run time is the user's choice, like the
    // environment: a set-id or file-capability program started by that
    // user must not follow it (`vsymctl set CONF ../../evil` would steer a
    // setgid program's /etc/app/${CONF}). The administrator's [user.NAME]
    // tables below still apply.
    if (runtime_ != nullptr && runtime_user_scope_active()) {
      if (const auto it = runtime_->users.find(caller_.uid); it != runtime_->users.end()) {
        if (auto v = find_in(it->second, name, Scope::User)) return v;
      }
    }
    if (!caller_.user_name.empty()) {
      if (const auto it = rules_.users.find(std::string_view(caller_.user_name)); it != rules_.users.end()) {
        if (auto v = find_in(it->second, name, Scope::User)) return v;
      }
    }
    if (!rules_.groups.empty()) {
      const auto in_group = [&](const std::string& group) -> std::optional<Value> {
        if (group.empty()) return std::nullopt;
        const auto it = rules_.groups.find(std::string_view(group));
        if (it == rules_.groups.end()) return std::nullopt;
        return find_in(it->second, name, Scope::Group);
      };
      // Primary group first, then the supplementary groups in order.
      if (auto v = in_group(caller_.group_name)) return v;
      for (const std::string& group : caller_.group_names) {
        if (auto v = in_group(group)) return v;
      }
    }
  }

  // File order: the first matching [host."pattern"] that defines the name,
  // matched once per host name and rules (HostView), not per lookup.
  if (const std::string* v = view_.host_value(name)) return Value{*v, Scope::Host};

  if (runtime_ != nullptr) {
    if (auto v = find_in(runtime_->system, name, Scope::System)) return v;
  }
  if (auto v = find_in(rules_.system, name, Scope::System)) return v;

  // Builtins. The caller's identity is undefined (not guessed) when the
  // rules are per-host only or NSS has no name for the id.
  const auto builtin = [](std::string_view text) -> std::optional<Value> { return Value{text, Scope::Builtin}; };
  const auto known = [&](const std::string& text) -> std::optional<Value> {
    if (!per_caller || text.empty()) return std::nullopt;
    return Value{text, Scope::Builtin};
  };
  if (name == "USER") return known(caller_.user_name);
  if (name == "GROUP") return known(caller_.group_name);
  if (name == "HOME") return known(caller_.home);
  if (name == "UID") return per_caller ? builtin(uid_s_) : std::nullopt;
  if (name == "GID") return per_caller ? builtin(gid_s_) : std::nullopt;
  if (name == "HOSTNAME") return builtin(host_.hostname);
  if (name == "ARCH") {
    if (const Emulation* em = emulated()) return Value{em->machine, Scope::Builtin, em->source};
    return builtin(per_caller && caller_.compat32 ? host_.machine32 : host_.machine);
  }
  if (name == "SYSNAME") return builtin(sysnames().front());
  if (name == "MEMBER") return builtin(view_.member_number());
  return std::nullopt;
}

std::optional<Value> ScopedResolver::magic(std::string_view name) const {
  const bool compat32 = rules_.per_caller && caller_.compat32;
  const auto builtin = [](std::string_view text) -> std::optional<Value> { return Value{text, Scope::Builtin}; };
  if (const Emulation* em = emulated()) {
    if (name == "machine_arch" || name == "machine") return Value{em->machine, Scope::Builtin, em->source};
    if (name == "emul") return Value{em->emul, Scope::Builtin, em->source};
  }
  if (name == "machine_arch" || name == "machine") return builtin(compat32 ? host_.machine32 : host_.machine);
  if (name == "hostname") return builtin(host_.hostname);
  if (name == "domainname") return builtin(host_.domainname);
  if (name == "osrelease") return builtin(host_.osrelease);
  if (name == "ostype") return builtin(host_.ostype);
  if (name == "kernel_ident") return builtin(host_.kernel_ident);
  if (name == "emul") return builtin(compat32 ? "linux32" : "linux");
  // The caller's ids make no sense when every caller must see the same
  // expansion: unknown, so the reference stays literal.
  if (!rules_.per_caller) return std::nullopt;
  if (name == "uid") return builtin(uid_s_);
  if (name == "ruid") return builtin(ruid_s_);
  if (name == "gid") return builtin(gid_s_);
  if (name == "rgid") return builtin(rgid_s_);
  return std::nullopt;
}

const Emulation* ScopedResolver::emulated() const noexcept {
  return rules_.per_caller && rules_.emulation ? caller_.emulation.get() : nullptr;
}

const std::vector<std::string>* ScopedResolver::arch_sysnames(const Emulation& em) const noexcept {
  const auto it = rules_.sysnames_by_arch.find(std::string_view(em.machine));
  return it == rules_.sysnames_by_arch.end() ? nullptr : &it->second;
}

std::span<const std::string> ScopedResolver::sysnames() const {
  if (const Emulation* em = emulated()) {
    if (const auto* configured = arch_sysnames(*em)) return *configured;
    if (!em->sysnames.empty()) return em->sysnames;
  }
  const bool compat32 = rules_.per_caller && caller_.compat32;
  const std::vector<std::string>& list = compat32 ? rules_.sysnames32 : rules_.sysnames;
  if (list.empty()) return fallback_sysnames(compat32);
  return list;
}

Scope ScopedResolver::sysnames_scope() const {
  if (const Emulation* em = emulated()) {
    if (arch_sysnames(*em) != nullptr) return Scope::System;
    if (!em->sysnames.empty()) return Scope::Builtin;
  }
  return rules_.sysnames_configured ? Scope::System : Scope::Builtin;
}

std::string_view ScopedResolver::sysnames_note() const {
  const Emulation* em = emulated();
  return em != nullptr ? std::string_view(em->source) : std::string_view();
}

Value ScopedResolver::universe() const {
  const UniverseRules& u = rules_.universes;
  if (u.names.empty()) return Value{std::string_view(), Scope::Builtin};
  const auto declared = [&](std::string_view name) {
    return std::find(u.names.begin(), u.names.end(), name) != u.names.end();
  };
  // The process's own choice (`UNIVERSE=ucb cmd`, like DYNIX's `ucb cmd`);
  // an undeclared value is ignored rather than breaking every conditional
  // link of that process. The allow/deny lists do not apply: the rules chose
  // this variable explicitly.
  if (process_scope_active() && !u.env_var.empty()) {
    if (const std::string* entry = find_env(caller_.environ, u.env_var)) {
      const std::string_view value = std::string_view(*entry).substr(u.env_var.size() + 1);
      if (declared(value)) return Value{value, Scope::Process};
    }
  }
  if (rules_.per_caller) {
    if (!caller_.user_name.empty()) {
      if (const auto it = u.by_user.find(std::string_view(caller_.user_name)); it != u.by_user.end()) {
        return Value{it->second, Scope::User};
      }
    }
    if (!u.by_group.empty()) {
      const auto in_group = [&](const std::string& group) -> const std::string* {
        if (group.empty()) return nullptr;
        const auto it = u.by_group.find(std::string_view(group));
        return it == u.by_group.end() ? nullptr : &it->second;
      };
      if (const std::string* v = in_group(caller_.group_name)) return Value{*v, Scope::Group};
      for (const std::string& group : caller_.group_names) {
        if (const std::string* v = in_group(group)) return Value{*v, Scope::Group};
      }
    }
  }
  // A hand-built Rules may declare names without a default: the first name.
  return Value{u.default_universe.empty() ? std::string_view(u.names.front()) : std::string_view(u.default_universe),
               Scope::Builtin};
}

Value ScopedResolver::member() const { return Value{view_.memb(), Scope::Builtin}; }

}  // namespace vsymfs
