// libFuzzer target for the link language. Input: two flag bytes, then the raw
// link text.
//   byte 0: bit 0-4 families (magic dollar percent memb conditional),
//           bit 5-6 undefined policy (0 literal, 1 empty, 2 error, 3 literal),
//           bit 7 use a probe for @sys lists
//   byte 1: bit 0 declare universes, bit 1-2 which universe the caller is in
// Invariants checked (abort on violation): the result fits kMaxExpansion or
// is ENAMETOOLONG; ENOENT only where documented; a literal template expands
// to its raw text; segments stay inside the raw text; the traced expansion
// equals the plain one; a template that says it needs no caller expands the
// same for two different callers.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

#include "vsymfs/link_template.hpp"

namespace {

using vsymfs::Scope;
using vsymfs::Value;

[[noreturn]] void fail(const char* what, std::string_view raw) {
  std::fprintf(stderr, "invariant broken: %s (raw length %zu)\n", what, raw.size());
  std::abort();
}

// Two callers on one host: `other` changes every caller-dependent answer and
// keeps the host-constant ones (hostname, domainname, osrelease, ostype,
// kernel_ident, member).
class FuzzSource final : public vsymfs::ValueSource {
 public:
  FuzzSource(bool other, std::string_view universe) : other_(other), universe_(universe) {}

  std::optional<Value> variable(std::string_view name) const override {
    if (name == "USER") return Value{other_ ? "bob" : "alice", Scope::Builtin};
    if (name == "EMPTY") return Value{"", Scope::System};
    if (name == "SIGILS") return Value{"${USER}@sys%{X}$$@@{memb}att=/x", Scope::Process};
    if (name == "LONG") return Value{long_, Scope::User};
    if (name == "X") return Value{other_ ? "x2" : "x1", Scope::Host};
    return std::nullopt;
  }
  std::optional<Value> magic(std::string_view name) const override {
    if (name == "hostname") return Value{"node1", Scope::Builtin};
    if (name == "domainname") return Value{"(none)", Scope::Builtin};
    if (name == "osrelease") return Value{"6.1.0", Scope::Builtin};
    if (name == "ostype") return Value{"Linux", Scope::Builtin};
    if (name == "kernel_ident") return Value{"#1 SMP", Scope::Builtin};
    if (name == "machine" || name == "machine_arch") return Value{other_ ? "i686" : "x86_64", Scope::Builtin};
    if (name == "uid") return Value{other_ ? "1001" : "1000", Scope::Builtin};
    if (name == "gid") return Value{other_ ? "101" : "100", Scope::Builtin};
    return std::nullopt;  // emul ruid rgid: known names without a value
  }
  std::span<const std::string> sysnames() const override { return other_ ? sys_other_ : sys_; }
  Scope sysnames_scope() const override { return Scope::Host; }
  Value universe() const override { return Value{universe_, Scope::Process}; }
  Value member() const override { return Value{"member0", Scope::Builtin}; }

 private:
  bool other_;
  std::string_view universe_;
  std::string long_ = std::string(2000, 'L');
  std::vector<std::string> sys_ = {"missing_sys", "amd64_linux26", std::string(3000, 's')};
  std::vector<std::string> sys_other_ = {"i386_linux26"};
};

class HashProbe final : public vsymfs::Probe {
 public:
  bool exists(std::string_view target) const override { return target.find("linux26/") != target.npos; }
};

struct Outcome {
  bool ok;
  int code;
  std::string out;
};

Outcome run(const vsymfs::Template& t, const vsymfs::ValueSource& src, const vsymfs::ExpandOptions& opts) {
  Outcome o;
  vsymfs::Result<void> r = t.expand(src, opts, o.out);
  o.ok = r.ok();
  o.code = o.ok ? 0 : r.error().code;
  if (!o.ok && r.error().message.empty()) fail("error without a message", t.raw());
  return o;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 2) return 0;
  const std::uint8_t f0 = data[0];
  const std::uint8_t f1 = data[1];
  const std::string_view raw(reinterpret_cast<const char*>(data + 2), size - 2);

  vsymfs::ParseOptions popts;
  popts.families = {(f0 & 1) != 0, (f0 & 2) != 0, (f0 & 4) != 0, (f0 & 8) != 0, (f0 & 16) != 0};
  static const std::vector<std::string> universes = {"att", "ucb"};
  if ((f1 & 1) != 0) popts.universes = universes;
  static constexpr std::string_view kCallerUniverses[] = {"att", "ucb", "sysv", ""};
  const std::string_view universe = kCallerUniverses[(f1 >> 1) & 3];

  vsymfs::ExpandOptions eopts;
  constexpr vsymfs::UndefinedPolicy kPolicies[] = {
      vsymfs::UndefinedPolicy::Literal, vsymfs::UndefinedPolicy::Empty, vsymfs::UndefinedPolicy::Error,
      vsymfs::UndefinedPolicy::Literal};
  eopts.undefined = kPolicies[(f0 >> 5) & 3];
  static const HashProbe probe;
  if ((f0 & 128) != 0) eopts.probe = &probe;

  const vsymfs::Template t = vsymfs::Template::parse(raw, popts);
  if (t.raw() != raw) fail("raw() differs from the input", raw);
  for (const auto& s : t.segments()) {
    if (std::size_t{s.offset} + s.length > raw.size() ||
        std::size_t{s.ref_offset} + s.ref_length > raw.size())
      fail("segment outside the raw text", raw);
    if (s.default_offset >= 0 && static_cast<std::size_t>(s.default_offset) + s.default_length > raw.size())
      fail("default outside the raw text", raw);
  }
  if (popts.families == vsymfs::Families{false, false, false, false, false} && !t.is_literal())
    fail("all families off but not literal", raw);

  const FuzzSource caller(false, universe);
  const Outcome a = run(t, caller, eopts);
  if (a.ok && a.out.size() > vsymfs::kMaxExpansion) fail("result longer than kMaxExpansion", raw);
  if (!a.ok) {
    const bool enoent_allowed = eopts.undefined == vsymfs::UndefinedPolicy::Error || t.is_conditional();
    if (a.code != ENAMETOOLONG && !(a.code == ENOENT && enoent_allowed)) fail("undocumented error code", raw);
  }
  if (t.is_literal()) {
    const bool fits = raw.size() <= vsymfs::kMaxExpansion;
    if (fits != a.ok || (a.ok && a.out != raw)) fail("literal template does not expand to its raw text", raw);
  }

  std::vector<vsymfs::Substitution> trace;
  vsymfs::ExpandOptions traced = eopts;
  traced.trace = &trace;
  const Outcome b = run(t, caller, traced);
  if (b.ok != a.ok || b.code != a.code || (a.ok && b.out != a.out)) fail("trace changes the expansion", raw);
  if (t.is_literal() && !trace.empty()) fail("literal template produced a trace", raw);

  if (!t.needs_caller()) {
    const FuzzSource other(true, universe == "att" ? "ucb" : "att");
    const Outcome c = run(t, other, eopts);
    if (c.ok != a.ok || c.code != a.code || (a.ok && c.out != a.out))
      fail("needs_caller() is false but another caller gets another expansion", raw);
  }
  return 0;
}
