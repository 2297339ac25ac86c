// The rules file: TOML (toml++) into the plain Rules struct, validated so that
// everything downstream can trust it. Every error names FILE:LINE:COLUMN and
// what was expected; the first error wins (a second one is often a
// consequence of the first).
#include "vsymfs/rules.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <climits>
#include <cstring>
#include <initializer_list>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <tuple>
#include <utility>
#include <vector>

#include <toml++/toml.h>

#include "vsymfs/runtime_vars.hpp"
#include "vsymfs/unique_fd.hpp"

namespace vsymfs {
namespace {

using namespace std::string_literals;

constexpr std::string_view kBuiltinOrigin = "<built-in>";
constexpr std::string_view kUniverseBuiltin = "UNIVERSE";

// A name or value as it may appear in a message: bounded, and with control
// bytes escaped so a hostile file cannot forge log lines.
std::string printable(std::string_view s) {
  constexpr std::size_t kMaxShown = 64;
  std::string out;
  const std::size_t shown = std::min(s.size(), kMaxShown);
  out.reserve(shown + 8);
  for (std::size_t i = 0; i < shown; ++i) {
    const auto c = static_cast<unsigned char>(s[i]);
    if (c < 0x20 || c == 0x7f) {
      static constexpr char kHex[] = "0123456789abcdef";
      out += "\\x";
      out += kHex[c >> 4];
      out += kHex[c & 0xf];
    } else {
      out += static_cast<char>(c);
    }
  }
  if (s.size() > kMaxShown) out += "...";
  return out;
}

std::string_view type_phrase(toml::node_type t) {
  switch (t) {
    case toml::node_type::string: return "a string";
    case toml::node_type::integer: return "an integer";
    case toml::node_type::floating_point: return "a floating-point number";
    case toml::node_type::boolean: return "a boolean";
    case toml::node_type::date: return "a date";
    case toml::node_type::time: return "a time";
    case toml::node_type::date_time: return "a date-time";
    case toml::node_type::array: return "an array";
    case toml::node_type::table: return "a table";
    case toml::node_type::none: break;
  }
  return "nothing";
}

char lower(char c) { return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c; }

// Optimal-string-alignment distance (Damerau-Levenshtein with adjacent
// transpositions), case-insensitive: "undefind" -> "undefined" is 1,
// "sytnax" -> "syntax" is 1. Keys are short, so the O(n*m) table is tiny.
std::size_t edit_distance(std::string_view a, std::string_view b) {
  constexpr std::size_t kMaxLen = 64;
  if (a.size() > kMaxLen || b.size() > kMaxLen) return SIZE_MAX;
  std::array<std::array<std::size_t, kMaxLen + 1>, kMaxLen + 1> d{};
  for (std::size_t i = 0; i <= a.size(); ++i) d[i][0] = i;
  for (std::size_t j = 0; j <= b.size(); ++j) d[0][j] = j;
  for (std::size_t i = 1; i <= a.size(); ++i) {
    for (std::size_t j = 1; j <= b.size(); ++j) {
      const std::size_t cost = lower(a[i - 1]) == lower(b[j - 1]) ? 0 : 1;
      d[i][j] = std::min({d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + cost});
      if (i > 1 && j > 1 && lower(a[i - 1]) == lower(b[j - 2]) && lower(a[i - 2]) == lower(b[j - 1])) {
        d[i][j] = std::min(d[i][j], d[i - 2][j - 2] + 1);
      }
    }
  }
  return d[a.size()][b.size()];
}

// "; did you mean 'x'?" for the nearest valid key within a third of its
// length (at least 1, at most 3 edits), else the list of valid keys: a
// far-off guess would mislead more than it helps.
std::string suggestion(std::string_view bad, std::span<const std::string_view> valid, bool as_table) {
  std::string_view best;
  std::size_t best_distance = SIZE_MAX;
  for (std::string_view v : valid) {
    const std::size_t dist = edit_distance(bad, v);
    if (dist < best_distance) {
      best_distance = dist;
      best = v;
    }
  }
  const std::size_t limit = std::clamp<std::size_t>(best.size() / 3, 1, 3);
  if (best_distance <= limit) {
    return as_table ? "; did you mean [" + std::string(best) + "]?" : "; did you mean '" + std::string(best) + "'?";
  }
  std::string out = as_table ? "; valid tables are: " : "; valid keys are: ";
  bool first = true;
  for (std::string_view v : valid) {
    if (!first) out += ", ";
    first = false;
    out += v;
  }
  return out;
}

// A string from TOML that must not carry a NUL byte (toml "\u0000"): it ends
// up in paths and C strings.
bool has_nul(std::string_view s) { return s.find('\0') != std::string_view::npos; }

bool valid_universe_name(std::string_view name) { return valid_var_name(name) && name != "default"; }

class RulesParser {
 public:
  RulesParser(std::string_view origin, Rules& rules) : origin_(origin), rules_(rules) {}

  Result<void> parse_document(const toml::table& doc);

 private:
  using Section = Result<void> (RulesParser::*)(const toml::table&, std::string_view);

  Error error_at(const toml::source_region& where, std::string_view what) const {
    std::string msg(origin_);
    msg += ':';
    msg += std::to_string(where.begin.line);
    msg += ':';
    msg += std::to_string(where.begin.column);
    msg += ": ";
    msg += what;
    return make_error(EINVAL, std::move(msg));
  }

  Error type_error(const toml::node& node, std::string_view key, std::string_view section,
                   std::string_view expected) const {
    return error_at(node.source(), "expected "s.append(expected) + " for '" + printable(key) + "' in " +
                                       std::string(section) + ", found " + std::string(type_phrase(node.type())));
  }

  Result<void> check_keys(const toml::table& tbl, std::string_view section,
                          std::initializer_list<std::string_view> valid) const {
    for (auto&& [key, node] : tbl) {
      if (std::find(valid.begin(), valid.end(), key.str()) != valid.end()) continue;
      return error_at(key.source(), "unknown key '" + printable(key.str()) + "' in " + std::string(section) +
                                        suggestion(key.str(), std::span(valid.begin(), valid.size()), false));
    }
    return {};
  }

  Result<void> get_bool(const toml::table& tbl, std::string_view key, std::string_view section, bool& out) const {
    const toml::node* node = tbl.get(key);
    if (node == nullptr) return {};
    const auto* b = node->as_boolean();
    if (b == nullptr) return type_error(*node, key, section, "a boolean (true or false)");
    out = b->get();
    return {};
  }

  // A string, also checked for NUL bytes. Returns nullptr (no error) when absent.
  Result<const toml::value<std::string>*> get_string(const toml::table& tbl, std::string_view key,
                                                     std::string_view section, std::string_view expected) const {
    const toml::node* node = tbl.get(key);
    if (node == nullptr) return static_cast<const toml::value<std::string>*>(nullptr);
    const auto* s = node->as_string();
    if (s == nullptr) return type_error(*node, key, section, expected);
    if (has_nul(s->get())) return error_at(node->source(), "'" + std::string(key) + "' in " + std::string(section) +
                                                               " contains a NUL character");
    return s;
  }

  // An array of strings; `what` names one element in messages ("a pattern").
  Result<std::vector<std::string>> get_string_array(const toml::node& node, std::string_view key,
                                                    std::string_view section, std::string_view what) const {
    const auto* arr = node.as_array();
    if (arr == nullptr) {
      return type_error(node, key, section, "an array of strings");
    }
    std::vector<std::string> out;
    out.reserve(arr->size());
    for (const toml::node& elem : *arr) {
      const auto* s = elem.as_string();
      if (s == nullptr) {
        return error_at(elem.source(), "expected "s.append(what) + " (a string) in '" + std::string(key) + "' in " +
                                           std::string(section) + ", found " + std::string(type_phrase(elem.type())));
      }
      if (s->get().empty() || has_nul(s->get())) {
        return error_at(elem.source(), "expected "s.append(what) + " in '" + std::string(key) + "' in " +
                                           std::string(section) + ", found " +
                                           (s->get().empty() ? "an empty string" : "a string with a NUL character"));
      }
      out.push_back(s->get());
    }
    return out;
  }

  // A table of variables: NAME = "value" (or an integer, kept as its decimal
  // text, because `VERSION = 3` is what people write).
  Result<void> parse_vars(const toml::node& node, std::string_view section, VarMap& out) {
    const auto* tbl = node.as_table();
    if (tbl == nullptr) {
      return error_at(node.source(), "expected a table of variables for " + std::string(section) + ", found " +
                                         std::string(type_phrase(node.type())));
    }
    for (auto&& [key, value] : *tbl) {
      const std::string_view name = key.str();
      if (!valid_var_name(name)) {
        return error_at(key.source(), "invalid variable name '" + printable(name) + "' in " + std::string(section) +
                                          ": expected letters, digits and '_', not starting with a digit, at most " +
                                          std::to_string(kMaxVarName) + " bytes");
      }
      std::string text;
      if (const auto* s = value.as_string()) {
        if (has_nul(s->get())) {
          return error_at(value.source(), "value of '" + std::string(name) + "' in " + std::string(section) +
                                              " contains a NUL character");
        }
        text = s->get();
      } else if (const auto* i = value.as_integer()) {
        text = std::to_string(i->get());
      } else {
        return type_error(value, name, section, "a string or an integer");
      }
      if (text.size() > kMaxExpansionValue) {
        return error_at(value.source(), "value of '" + std::string(name) + "' in " + std::string(section) + " is " +
                                            std::to_string(text.size()) + " bytes; the limit is " +
                                            std::to_string(kMaxExpansionValue) + " (PATH_MAX - 1)");
      }
      if (name == kUniverseBuiltin) universe_var_positions_.push_back(key.source());
      out.emplace(std::string(name), std::move(text));
    }
    return {};
  }

  void note_per_caller_only(const toml::source_region& where, std::string what) {
    if (!per_caller_only_) per_caller_only_.emplace(where, std::move(what));
  }

  // [user.NAME] / [group.NAME]: a table of tables of variables.
  Result<void> parse_named_vars(const toml::table& tbl, std::string_view section, StringMap<VarMap>& out) {
    for (auto&& [key, node] : tbl) {
      const std::string sub = "[" + std::string(section) + "." + printable(key.str()) + "]";
      if (key.str().empty()) return error_at(key.source(), "expected a " + std::string(section) + " name, found an empty key");
      if (!node.is_table()) {
        return error_at(node.source(), "expected a table " + sub + " of variables, found " +
                                           std::string(type_phrase(node.type())));
      }
      VarMap vars;
      if (auto r = parse_vars(node, sub, vars); !r) return r;
      note_per_caller_only(key.source(), sub);
      out.emplace(std::string(key.str()), std::move(vars));
    }
    return {};
  }

  Result<void> syntax(const toml::table& tbl, std::string_view s);
  Result<void> scopes(const toml::table& tbl, std::string_view s);
  Result<void> process(const toml::table& tbl, std::string_view s);
  Result<void> sysname(const toml::table& tbl, std::string_view s);
  Result<void> universe(const toml::table& tbl, std::string_view s);
  Result<void> cluster(const toml::table& tbl, std::string_view s);
  Result<void> locked(const toml::table& tbl, std::string_view s) { return parse_vars(tbl, s, rules_.locked); }
  Result<void> vars(const toml::table& tbl, std::string_view s) { return parse_vars(tbl, s, rules_.system); }
  Result<void> user(const toml::table& tbl, std::string_view) { return parse_named_vars(tbl, "user", rules_.users); }
  Result<void> group(const toml::table& tbl, std::string_view) { return parse_named_vars(tbl, "group", rules_.groups); }
  Result<void> host(const toml::table& tbl, std::string_view s);

  Result<std::vector<std::string>> sysname_list(const toml::node& node, std::string_view key, std::string_view section);

  // Checks that need the whole file (variable tables may precede [universe]).
  Result<void> cross_checks();

  // Values of toml strings longer than this can never fit in a link.
  static constexpr std::size_t kMaxExpansionValue = PATH_MAX - 1;

  std::string_view origin_;
  Rules& rules_;
  std::vector<toml::source_region> universe_var_positions_;

  // The first setting that only means something per caller (a user or group
  // table), for the check against per_caller = false.
  std::optional<std::pair<toml::source_region, std::string>> per_caller_only_;
};

Result<void> RulesParser::parse_document(const toml::table& doc) {
  struct Entry {
    std::string_view name;
    Section parse;
  };
  static constexpr std::array<Entry, 11> kSections{{
      {"syntax", &RulesParser::syntax},
      {"scopes", &RulesParser::scopes},
      {"process", &RulesParser::process},
      {"sysname", &RulesParser::sysname},
      {"universe", &RulesParser::universe},
      {"cluster", &RulesParser::cluster},
      {"locked", &RulesParser::locked},
      {"vars", &RulesParser::vars},
      {"user", &RulesParser::user},
      {"group", &RulesParser::group},
      {"host", &RulesParser::host},
  }};
  static constexpr std::array<std::string_view, kSections.size()> kNames = {
      "syntax", "scopes", "process", "sysname", "universe", "cluster", "locked", "vars", "user", "group", "host"};
  for (auto&& [key, node] : doc) {
    const std::string_view name = key.str();  // clang 14 cannot capture a structured binding
    const auto it = std::find_if(kSections.begin(), kSections.end(), [name](const Entry& e) { return e.name == name; });
    if (it == kSections.end()) {
      return error_at(key.source(), "unknown " + std::string(node.is_table() ? "table [" : "key '") + printable(key.str()) +
                                        (node.is_table() ? "]" : "'") + " at the top level" +
                                        suggestion(key.str(), kNames, true));
    }
    const auto* tbl = node.as_table();
    const std::string section = "[" + std::string(it->name) + "]";
    if (tbl == nullptr) {
      return error_at(node.source(), "expected a table " + section + ", found " + std::string(type_phrase(node.type())));
    }
    if (auto r = (this->*(it->parse))(*tbl, section); !r) return r;
  }
  return cross_checks();
}

Result<void> RulesParser::syntax(const toml::table& tbl, std::string_view s) {
  if (auto r = check_keys(tbl, s, {"magic", "dollar", "percent", "memb", "conditional", "undefined"}); !r) return r;
  Families& f = rules_.families;
  for (auto [key, flag] : {std::pair{"magic", &f.magic}, std::pair{"dollar", &f.dollar}, std::pair{"percent", &f.percent},
                           std::pair{"memb", &f.memb}, std::pair{"conditional", &f.conditional}}) {
    if (auto r = get_bool(tbl, key, s, *flag); !r) return r;
  }
  auto undefined = get_string(tbl, "undefined", s, "\"literal\", \"empty\" or \"error\"");
  if (!undefined) return std::move(undefined).error();
  if (const auto* u = *undefined) {
    const std::string& v = u->get();
    if (v == "literal") {
      rules_.undefined = UndefinedPolicy::Literal;
    } else if (v == "empty") {
      rules_.undefined = UndefinedPolicy::Empty;
    } else if (v == "error") {
      rules_.undefined = UndefinedPolicy::Error;
    } else {
      return error_at(u->source(), "expected \"literal\", \"empty\" or \"error\" for 'undefined' in [syntax], found \"" +
                                       printable(v) + "\"");
    }
  }
  return {};
}

Result<void> RulesParser::scopes(const toml::table& tbl, std::string_view s) {
  if (auto r = check_keys(tbl, s, {"per_caller", "symlink_cache", "emulation"}); !r) return r;
  if (auto r = get_bool(tbl, "per_caller", s, rules_.per_caller); !r) return r;
  if (auto r = get_bool(tbl, "emulation", s, rules_.emulation); !r) return r;
  auto cache = get_string(tbl, "symlink_cache", s, "\"auto\" or \"never\"");
  if (!cache) return std::move(cache).error();
  if (const auto* c = *cache) {
    if (c->get() == "auto") {
      rules_.symlink_cache = SymlinkCache::Auto;
    } else if (c->get() == "never") {
      rules_.symlink_cache = SymlinkCache::Never;
    } else {
      return error_at(c->source(), "expected \"auto\" or \"never\" for 'symlink_cache' in [scopes], found \"" +
                                       printable(c->get()) + "\"");
    }
  }
  return {};
}

Result<void> RulesParser::process(const toml::table& tbl, std::string_view s) {
  if (auto r = check_keys(tbl, s, {"allow", "deny"}); !r) return r;
  for (auto [key, out] : {std::pair{"allow", &rules_.env_allow}, std::pair{"deny", &rules_.env_deny}}) {
    const toml::node* node = tbl.get(key);
    if (node == nullptr) continue;
    auto list = get_string_array(*node, key, s, "a pattern");
    if (!list) return std::move(list).error();
    *out = std::move(list).value();
  }
  return {};
}

Result<std::vector<std::string>> RulesParser::sysname_list(const toml::node& node, std::string_view key,
                                                           std::string_view section) {
  auto list = get_string_array(node, key, section, "a sysname");
  if (!list) return list;
  if (list->empty()) {
    return error_at(node.source(), "expected at least one sysname in '" + std::string(key) + "' in " +
                                       std::string(section) + ", found an empty array");
  }
  const auto& arr = *node.as_array();
  for (std::size_t i = 0; i < list->size(); ++i) {
    const std::string& name = (*list)[i];
    if (name.find('/') != std::string::npos || name == "." || name == "..") {
      return error_at(arr[i].source(), "expected a sysname (one path component, no '/') in '" + std::string(key) +
                                           "' in " + std::string(section) + ", found \"" + printable(name) + "\"");
    }
    if (std::find(list->begin(), list->begin() + static_cast<std::ptrdiff_t>(i), name) !=
        list->begin() + static_cast<std::ptrdiff_t>(i)) {
      return error_at(arr[i].source(), "duplicate sysname \"" + printable(name) + "\" in '" + std::string(key) +
                                           "' in " + std::string(section));
    }
  }
  return list;
}

Result<void> RulesParser::sysname(const toml::table& tbl, std::string_view s) {
  // [sysname.MACHINE] tables: the lists for callers emulated as MACHINE.
  for (auto&& [key, node] : tbl) {
    const std::string_view machine = key.str();
    if (machine == "native" || machine == "compat32" || !node.is_table()) continue;
    const std::string sub = "[sysname." + printable(machine) + "]";
    if (machine.empty() || machine.find('/') != std::string_view::npos || has_nul(machine))
      return error_at(key.source(), "expected a machine name (uname -m, e.g. aarch64) in [sysname.MACHINE], found \"" +
                                        printable(machine) + "\"");
    const toml::table& arch = *node.as_table();
    if (auto r = check_keys(arch, sub, {"native"}); !r) return r;
    const toml::node* list_node = arch.get("native");
    if (list_node == nullptr) return error_at(node.source(), "expected 'native = [...]' in " + sub);
    auto list = sysname_list(*list_node, "native", sub);
    if (!list) return std::move(list).error();
    rules_.sysnames_by_arch.insert_or_assign(std::string(machine), std::move(list).value());
  }
  static constexpr std::array<std::string_view, 2> kKeys{"native", "compat32"};
  for (auto&& [key, node] : tbl) {
    if (node.is_table() || std::find(kKeys.begin(), kKeys.end(), key.str()) != kKeys.end()) continue;
    return error_at(key.source(), "unknown key '" + printable(key.str()) + "' in " + std::string(s) +
                                      suggestion(key.str(), kKeys, false) + " (or a [sysname.MACHINE] table)");
  }
  for (auto [key, out] : {std::pair{"native", &rules_.sysnames}, std::pair{"compat32", &rules_.sysnames32}}) {
    const toml::node* node = tbl.get(key);
    if (node == nullptr) continue;
    auto list = sysname_list(*node, key, s);
    if (!list) return std::move(list).error();
    *out = std::move(list).value();
    rules_.sysnames_configured = true;
  }
  return {};
}

Result<void> RulesParser::universe(const toml::table& tbl, std::string_view s) {
  if (auto r = check_keys(tbl, s, {"names", "default", "env", "users", "groups"}); !r) return r;
  UniverseRules& u = rules_.universes;
  // Names first: every other key is checked against them.
  if (const toml::node* node = tbl.get("names")) {
    auto list = get_string_array(*node, "names", s, "a universe name");
    if (!list) return std::move(list).error();
    const auto& arr = *node->as_array();
    for (std::size_t i = 0; i < list->size(); ++i) {
      const std::string& name = (*list)[i];
      if (!valid_universe_name(name)) {
        return error_at(arr[i].source(), "expected a universe name (letters, digits and '_', not \"default\") in "
                                         "'names' in [universe], found \"" + printable(name) + "\"");
      }
      if (std::find(list->begin(), list->begin() + static_cast<std::ptrdiff_t>(i), name) !=
          list->begin() + static_cast<std::ptrdiff_t>(i)) {
        return error_at(arr[i].source(), "duplicate universe \"" + printable(name) + "\" in 'names' in [universe]");
      }
    }
    u.names = std::move(list).value();
  }
  const auto declared = [&](std::string_view name) {
    return std::find(u.names.begin(), u.names.end(), name) != u.names.end();
  };
  // `msg` starts with the offending value: default universe "sysv".
  const auto undeclared = [&](const toml::node& where, std::string msg) {
    msg += " is not a declared universe; ";
    if (u.names.empty()) {
      msg += "'names' in [universe] is empty";
    } else {
      msg += "'names' in [universe] has: ";
      for (std::size_t i = 0; i < u.names.size(); ++i) msg += (i == 0 ? "" : ", ") + u.names[i];
    }
    return error_at(where.source(), msg);
  };

  auto def = get_string(tbl, "default", s, "a universe name (a string)");
  if (!def) return std::move(def).error();
  if (const auto* d = *def) {
    if (!declared(d->get())) return undeclared(*d, "default universe \"" + printable(d->get()) + "\"");
    u.default_universe = d->get();
  } else {
    u.default_universe = u.names.empty() ? std::string() : u.names.front();
  }

  auto env = get_string(tbl, "env", s, "a variable name (a string)");
  if (!env) return std::move(env).error();
  if (const auto* e = *env) {
    if (!e->get().empty() && !valid_var_name(e->get())) {
      return error_at(e->source(), "expected a variable name (or \"\" for none) for 'env' in [universe], found \"" +
                                       printable(e->get()) + "\"");
    }
    u.env_var = e->get();
  }

  for (auto [key, out, kind] : {std::tuple{"users", &u.by_user, "user"}, std::tuple{"groups", &u.by_group, "group"}}) {
    const toml::node* node = tbl.get(key);
    if (node == nullptr) continue;
    const auto* map = node->as_table();
    if (map == nullptr) return type_error(*node, key, s, "a table of name = \"universe\"");
    out->clear();
    for (auto&& [name, value] : *map) {
      const auto* v = value.as_string();
      if (v == nullptr) return type_error(value, name.str(), "'"s + key + "' in [universe]", "a universe name (a string)");
      if (!declared(v->get())) {
        return undeclared(value, "universe \"" + printable(v->get()) + "\" for " + kind + " '" + printable(name.str()) + "'");
      }
      note_per_caller_only(name.source(), "'"s + key + "' in [universe]");
      out->emplace(std::string(name.str()), v->get());
    }
  }
  return {};
}

Result<void> RulesParser::cluster(const toml::table& tbl, std::string_view s) {
  if (auto r = check_keys(tbl, s, {"member", "members"}); !r) return r;
  const auto member_number = [&](const toml::node& node, std::string_view key,
                                 std::string_view section) -> Result<int> {
    const auto* m = node.as_integer();
    if (m == nullptr) return type_error(node, key, section, "a member number (an integer)");
    if (m->get() < 0 || m->get() > INT_MAX) {
      return error_at(node.source(), "expected a member number from 0 to " + std::to_string(INT_MAX) + " for '" +
                                         printable(key) + "' in " + std::string(section) + ", found " +
                                         std::to_string(m->get()));
    }
    return static_cast<int>(m->get());
  };
  if (const toml::node* node = tbl.get("member")) {
    auto m = member_number(*node, "member", s);
    if (!m) return std::move(m).error();
    rules_.member = *m;
  }
  const toml::node* node = tbl.get("members");
  if (node == nullptr) return {};
  const auto* map = node->as_table();
  if (map == nullptr) return type_error(*node, "members", s, "a table of \"hostname pattern\" = member number");
  // As for [host."pattern"]: the first match in file order wins, and toml++
  // keeps keys sorted.
  std::vector<std::pair<const toml::key*, const toml::node*>> entries;
  for (auto&& [key, value] : *map) entries.emplace_back(&key, &value);
  std::stable_sort(entries.begin(), entries.end(), [](const auto& a, const auto& b) {
    const auto& pa = a.first->source().begin;
    const auto& pb = b.first->source().begin;
    return pa.line != pb.line ? pa.line < pb.line : pa.column < pb.column;
  });
  for (const auto& [key, value] : entries) {
    const std::string_view pattern = key->str();
    if (pattern.empty() || has_nul(pattern)) {
      return error_at(key->source(), "expected a hostname pattern in [cluster.members], found " +
                                         std::string(pattern.empty() ? "an empty key" : "a NUL character"));
    }
    auto m = member_number(*value, pattern, "[cluster.members]");
    if (!m) return std::move(m).error();
    rules_.members.push_back(MemberRule{std::string(pattern), *m});
  }
  return {};
}

Result<void> RulesParser::host(const toml::table& tbl, std::string_view) {
  // toml++ keeps keys sorted; the contract is file order (first match wins),
  // so sort the tables back by where they were written.
  std::vector<std::pair<const toml::key*, const toml::node*>> entries;
  for (auto&& [key, node] : tbl) entries.emplace_back(&key, &node);
  std::stable_sort(entries.begin(), entries.end(), [](const auto& a, const auto& b) {
    const auto& pa = a.first->source().begin;
    const auto& pb = b.first->source().begin;
    return pa.line != pb.line ? pa.line < pb.line : pa.column < pb.column;
  });
  for (const auto& [key, node] : entries) {
    const std::string_view pattern = key->str();
    const std::string sub = "[host.\"" + printable(pattern) + "\"]";
    if (pattern.empty() || has_nul(pattern)) {
      return error_at(key->source(), "expected a hostname pattern in [host.\"PATTERN\"], found " +
                                         std::string(pattern.empty() ? "an empty key" : "a NUL character"));
    }
    if (!node->is_table()) {
      return error_at(node->source(), "expected a table " + sub + " of variables, found " +
                                          std::string(type_phrase(node->type())));
    }
    HostRules h;
    h.pattern = std::string(pattern);
    if (auto r = parse_vars(*node, sub, h.vars); !r) return r;
    rules_.hosts.push_back(std::move(h));
  }
  return {};
}

Result<void> RulesParser::cross_checks() {
  // With universes declared, UNIVERSE is the caller's universe (the same one
  // conditional links use); a variable of that name would make the two
  // disagree, so it is rejected rather than silently ignored.
  if (!rules_.universes.names.empty() && !universe_var_positions_.empty()) {
    return error_at(universe_var_positions_.front(),
                    "'UNIVERSE' cannot be set as a variable while universes are declared: it is the caller's "
                    "universe; choose it with 'default', 'users' or 'groups' in [universe]");
  }
  // With per_caller = false nobody's user or group is consulted; a table
  // for one is a mistake the administrator should hear about.
  if (!rules_.per_caller && per_caller_only_) {
    return error_at(per_caller_only_->first, per_caller_only_->second +
                                                 " has no effect with 'per_caller = false' in [scopes]: every caller "
                                                 "sees the same expansion");
  }
  return {};
}

// Everything a rules file leaves out: the same values the built-in default
// file states, with sysnames derived from this machine.
Rules base_rules() {
  Rules r;
  r.origin = std::string(kBuiltinOrigin);
  r.universes.names = {"att", "ucb"};
  r.universes.default_universe = "att";
  r.universes.env_var = "UNIVERSE";
  utsname uts{};
  const std::string_view machine = ::uname(&uts) == 0 ? std::string_view(uts.machine) : std::string_view();
  r.sysnames = default_sysnames(machine, false);
  r.sysnames32 = default_sysnames(machine, true);
  return r;
}

}  // namespace

std::vector<std::string> default_sysnames(std::string_view machine, bool compat32) {
  // OpenAFS's names for Linux since 2.6; a 64-bit host also lists the 32-bit
  // name second, as `fs sysname amd64_linux26 i386_linux26` setups do.
  struct Row {
    std::string_view machine;
    std::string_view native;
    std::string_view native32;  // empty: no 32-bit personality
  };
  static constexpr std::array<Row, 10> kTable{{
      {"x86_64", "amd64_linux26", "i386_linux26"},
      {"amd64", "amd64_linux26", "i386_linux26"},
      {"aarch64", "arm64_linux26", "arm_linux26"},
      {"arm64", "arm64_linux26", "arm_linux26"},
      {"ppc64le", "ppc64le_linux26", ""},
      {"ppc64", "ppc64_linux26", "ppc_linux26"},
      {"s390x", "s390x_linux26", "s390_linux26"},
      {"sparc64", "sparc64_linux26", "sparc_linux26"},
      {"ia64", "ia64_linux26", ""},
      {"alpha", "alpha_linux_26", ""},
  }};
  for (const Row& row : kTable) {
    if (row.machine != machine) continue;
    if (row.native32.empty()) return {std::string(row.native)};
    if (compat32) return {std::string(row.native32)};
    return {std::string(row.native), std::string(row.native32)};
  }
  if (machine.size() == 4 && machine[0] == 'i' && machine.substr(2) == "86") return {"i386_linux26"};
  if (machine.starts_with("arm")) return {"arm_linux26"};
  if (machine.empty() || machine.find('/') != std::string_view::npos) return {"unknown_linux26"};
  return {std::string(machine) + "_linux26"};
}

Result<Rules> parse_rules(std::string_view text, std::string_view origin) {
  if (text.size() > kMaxRulesFileSize) {
    return make_error(EFBIG, std::string(origin) + ": the rules file is " + std::to_string(text.size()) +
                                 " bytes; the limit is " + std::to_string(kMaxRulesFileSize));
  }
  Rules rules = base_rules();
  rules.origin = std::string(origin);
  toml::table doc;
  try {
    doc = toml::parse(text, origin);
  } catch (const toml::parse_error& e) {
    const auto& pos = e.source().begin;
    return make_error(EINVAL, std::string(origin) + ":" + std::to_string(pos.line) + ":" + std::to_string(pos.column) +
                                  ": " + std::string(e.description()));
  } catch (const std::exception& e) {  // allocation failure inside toml++
    return make_error(ENOMEM, std::string(origin) + ": " + e.what());
  }
  RulesParser parser(origin, rules);
  if (auto r = parser.parse_document(doc); !r) return std::move(r).error();
  return rules;
}

Result<Rules> load_rules_file(const std::filesystem::path& path) {
  const std::string name = path.string();
  const auto sys_error = [&](int code) { return make_error(code, name + ": " + std::strerror(code)); };
  // O_NONBLOCK: opening a FIFO must not hang the daemon's reload.
  const UniqueFd owned(::open(name.c_str(), O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK));
  if (!owned) return sys_error(errno);
  const int fd = owned.get();

  struct stat st{};
  if (::fstat(fd, &st) != 0) return sys_error(errno);
  if (S_ISDIR(st.st_mode)) return make_error(EISDIR, name + ": is a directory, not a rules file");
  if (!S_ISREG(st.st_mode)) return make_error(EINVAL, name + ": not a regular file");
  if (static_cast<std::uintmax_t>(st.st_size) > kMaxRulesFileSize) {
    return make_error(EFBIG, name + ": the rules file is " + std::to_string(st.st_size) + " bytes; the limit is " +
                                 std::to_string(kMaxRulesFileSize));
  }
  std::string text;
  text.resize(static_cast<std::size_t>(st.st_size) + 1);
  std::size_t used = 0;
  // Read to EOF rather than trusting st_size: the file may grow while an
  // editor writes it; past the limit it is rejected like a big file.
  for (;;) {
    if (used == text.size()) {
      if (text.size() > kMaxRulesFileSize) break;
      text.resize(std::min(text.size() * 2 + 4096, kMaxRulesFileSize + 1));
    }
    const ssize_t n = ::read(fd, text.data() + used, text.size() - used);
    if (n < 0) {
      if (errno == EINTR) continue;
      return sys_error(errno);
    }
    if (n == 0) break;
    used += static_cast<std::size_t>(n);
  }
  if (used > kMaxRulesFileSize) {
    return make_error(EFBIG, name + ": the rules file is larger than the limit of " + std::to_string(kMaxRulesFileSize) +
                                 " bytes");
  }
  text.resize(used);
  return parse_rules(text, name);
}

const Rules& default_rules() {
  static const Rules rules = [] {
    auto parsed = parse_rules(kDefaultRulesText, kBuiltinOrigin);
    // The embedded text is tested to parse; should it ever not, the struct
    // defaults are the same policy minus the comments.
    return parsed ? std::move(parsed).value() : base_rules();
  }();
  return rules;
}

}  // namespace vsymfs
