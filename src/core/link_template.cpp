// The link language (docs/vsymfs-rules.5, [syntax]). Parsing turns the raw text into segments that
// point back into it, so expansion is one left-to-right copy with a ValueSource
// lookup per reference: no re-scanning of values, no allocation except the
// output string (and the trace, which only `vsymctl explain` asks for).
//
// Decisions vsymfs-rules(5) states under [syntax] ("How link text is read"); keep both in step:
// - A malformed or unknown reference gives up only its sigil: the sigil is
//   copied and scanning resumes at the next byte, as NetBSD's symlink_magic()
//   does. So `@foo@machine` keeps `@foo` and still expands `@machine`.
// - Default texts (`${A:-d}` `$(A:-d)` `%{A:d}`) are literal: a reference
//   inside a default is not expanded, in keeping with the single pass.
// - A default applies when the variable is undefined or empty, as in the
//   shell's `:-` (the FreeBSD `%{A:d}` form behaves the same, for one rule).
// - Magic names are recognised by the fixed list at parse time; when the
//   ValueSource has no value for one (or no sysnames) it is copied literally,
//   whatever the undefined-variable policy says (NetBSD behaviour).
// - A conditional link needs at least one declared universe key; every token
//   must be `key=target` with a non-empty target, else the text is plain.
//   Duplicate keys: the first one wins.
// - Provenance: an undefined variable copied or emptied by the policy is
//   traced with Scope::Default (the value comes from the link itself); a
//   conditional link traces "key=" with the caller's universe and its scope.
// - @sys with a probe: a candidate whose expansion fails (too long) is
//   skipped; when none exists, the first candidate's result is returned.
// - Text longer than kMaxExpansion cannot be a Linux symlink body; it is not
//   parsed and always expands to ENAMETOOLONG.
#include "vsymfs/link_template.hpp"

#include <algorithm>
#include <array>
#include <optional>

#include "vsymfs/resolver.hpp"  // is_identity_builtin

namespace vsymfs {
namespace {

using Segment = Template::Segment;
using Kind = Segment::Kind;

// NetBSD's twelve magic names plus AFS's sys.
constexpr std::array<std::string_view, 13> kMagicNames = {
    "machine_arch", "machine", "hostname", "domainname", "osrelease", "ostype", "kernel_ident",
    "emul",         "uid",     "ruid",     "gid",        "rgid",      "sys"};
// The same for every caller on this host.
constexpr std::array<std::string_view, 5> kHostConstantMagic = {"hostname", "domainname", "osrelease",
                                                                "ostype", "kernel_ident"};
// Differ for a 32-bit process (@sys is a Sys segment, handled apart).
constexpr std::array<std::string_view, 3> kPersonalityMagic = {"machine", "machine_arch", "emul"};

template <std::size_t N>
bool one_of(const std::array<std::string_view, N>& names, std::string_view name) noexcept {
  return std::find(names.begin(), names.end(), name) != names.end();
}

// ASCII only, never the locale: a link must mean the same in every daemon.
bool is_name_start(char c) noexcept { return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || c == '_'; }
bool is_name_char(char c) noexcept { return is_name_start(c) || (c >= '0' && c <= '9'); }
bool is_space(char c) noexcept {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f';
}

std::uint32_t u32(std::size_t n) noexcept { return static_cast<std::uint32_t>(n); }

// What the segments found so far ask of the caller (see the accessors in the header).
struct Needs {
  bool reference = false;
  bool sys = false;
  bool process_scope = false;
  bool caller = false;
  bool personality = false;
  bool environment = false;
};

class SegmentParser {
 public:
  SegmentParser(std::string_view raw, const Families& families, std::vector<Segment>& out, Needs& needs)
      : raw_(raw), families_(families), out_(out), needs_(needs) {}

  // Splits raw[begin, end) into segments.
  void parse(std::size_t begin, std::size_t end) {
    end_ = end;
    text_begin_ = begin;
    std::size_t i = begin;
    while (i < end_) {
      const char c = raw_[i];
      std::size_t next = i + 1;  // where scanning resumes when nothing is recognised here
      if (c == '@' && families_.magic) {
        next = magic_at(i);
      } else if (c == '$' && families_.dollar) {
        next = dollar_at(i);
      } else if (c == '%' && families_.percent) {
        next = percent_at(i);
      } else if (c == '{' && families_.memb) {
        next = memb_at(i);
      }
      i = next;
    }
    flush_text(end_);
  }

 private:
  char at(std::size_t i) const noexcept { return i < end_ ? raw_[i] : '\0'; }

  void flush_text(std::size_t upto) {
    if (upto > text_begin_) {
      out_.push_back(Segment{Kind::Text, u32(text_begin_), u32(upto - text_begin_), u32(text_begin_),
                             u32(upto - text_begin_)});
    }
  }

  // Records a reference spanning raw[ref_begin, ref_end); returns ref_end.
  std::size_t emit(Segment seg, std::size_t ref_begin, std::size_t ref_end) {
    flush_text(ref_begin);
    seg.ref_offset = u32(ref_begin);
    seg.ref_length = u32(ref_end - ref_begin);
    out_.push_back(seg);
    text_begin_ = ref_end;
    needs_.reference = true;  // escapes too: the output differs from the raw text
    return ref_end;
  }

  std::size_t escape(std::size_t i) { return emit(Segment{Kind::Escape, u32(i), 1, 0, 0}, i, i + 2); }

  std::size_t magic_name(std::size_t ref_begin, std::size_t name_begin, std::size_t name_end,
                         std::size_t ref_end) {
    const std::string_view name = raw_.substr(name_begin, name_end - name_begin);
    if (!one_of(kMagicNames, name)) return ref_begin + 1;  // unknown: only the '@' is consumed
    const bool sys = name == "sys";
    needs_.sys |= sys;
    needs_.caller |= !one_of(kHostConstantMagic, name);
    needs_.personality |= sys || one_of(kPersonalityMagic, name);
    return emit(Segment{sys ? Kind::Sys : Kind::Magic, u32(name_begin), u32(name_end - name_begin), 0, 0},
                ref_begin, ref_end);
  }

  // `@@`, `@{name}`, or NetBSD's `@name` running to the next '/' or the end.
  std::size_t magic_at(std::size_t i) {
    if (at(i + 1) == '@') return escape(i);
    if (at(i + 1) == '{') {
      const std::size_t close = raw_.substr(0, end_).find('}', i + 2);
      if (close == std::string_view::npos) return i + 1;
      return magic_name(i, i + 2, close, close + 1);
    }
    std::size_t name_end = raw_.substr(0, end_).find('/', i + 1);
    if (name_end == std::string_view::npos) name_end = end_;
    return magic_name(i, i + 1, name_end, name_end);
  }

  std::size_t variable(std::size_t ref_begin, std::size_t name_begin, std::size_t name_end,
                       std::size_t ref_end, std::int32_t default_offset = -1,
                       std::size_t default_length = 0) {
    needs_.process_scope = true;
    needs_.caller = true;
    needs_.environment |= !is_identity_builtin(raw_.substr(name_begin, name_end - name_begin));
    return emit(Segment{Kind::Variable, u32(name_begin), u32(name_end - name_begin), 0, 0, default_offset,
                        u32(default_length)},
                ref_begin, ref_end);
  }

  // The braced forms: NAME, then `close` or `separator default close`.
  std::size_t braced(std::size_t ref_begin, char close, std::string_view separator) {
    const std::size_t name_begin = ref_begin + 2;
    std::size_t j = name_begin;
    if (!is_name_start(at(j))) return ref_begin + 1;
    while (is_name_char(at(j))) ++j;
    const std::size_t name_end = j;
    if (at(j) == close) return variable(ref_begin, name_begin, name_end, j + 1);
    if (raw_.substr(j, std::min(separator.size(), end_ - j)) != separator) return ref_begin + 1;
    const std::size_t default_begin = j + separator.size();
    const std::size_t default_end = raw_.substr(0, end_).find(close, default_begin);
    if (default_end == std::string_view::npos) return ref_begin + 1;
    return variable(ref_begin, name_begin, name_end, default_end + 1,
                    static_cast<std::int32_t>(default_begin), default_end - default_begin);
  }

  std::size_t dollar_at(std::size_t i) {
    const char n = at(i + 1);
    if (n == '$') return escape(i);
    if (n == '{') return braced(i, '}', ":-");
    if (n == '(') return braced(i, ')', ":-");
    if (!is_name_start(n)) return i + 1;
    std::size_t j = i + 1;
    while (is_name_char(at(j))) ++j;
    return variable(i, i + 1, j, j);
  }

  std::size_t percent_at(std::size_t i) {
    if (at(i + 1) == '%') return escape(i);
    if (at(i + 1) == '{') return braced(i, '}', ":");
    return i + 1;
  }

  std::size_t memb_at(std::size_t i) {
    constexpr std::string_view kMemb = "{memb}";
    if (raw_.substr(i, std::min(kMemb.size(), end_ - i)) != kMemb) return i + 1;
    return emit(Segment{Kind::Memb, u32(i + 1), 4, 0, 0}, i, i + kMemb.size());
  }

  std::string_view raw_;
  const Families& families_;
  std::vector<Segment>& out_;
  Needs& needs_;
  std::size_t end_ = 0;
  std::size_t text_begin_ = 0;
};

// `u1=t1 u2=t2 [default=t]`: fills `branches` and returns true only when the
// whole text has that shape (see the decisions at the top of the file).
bool parse_conditional(std::string_view raw, const ParseOptions& opts,
                       std::vector<Template::Branch>& branches, Needs& needs) {
  if (!opts.families.conditional || opts.universes.empty()) return false;
  Families target_families = opts.families;
  target_families.conditional = false;
  bool saw_universe = false;
  std::vector<Template::Branch> found;
  Needs target_needs;
  std::size_t i = 0;
  while (true) {
    while (i < raw.size() && is_space(raw[i])) ++i;
    if (i == raw.size()) break;
    std::size_t token_end = i;
    while (token_end < raw.size() && !is_space(raw[token_end])) ++token_end;
    const std::string_view token = raw.substr(i, token_end - i);
    const std::size_t eq = token.find('=');
    if (eq == std::string_view::npos || eq == 0 || eq + 1 == token.size()) return false;
    const std::string_view key = token.substr(0, eq);
    const bool is_default = key == "default";
    if (!is_default && std::find(opts.universes.begin(), opts.universes.end(), key) == opts.universes.end()) {
      return false;
    }
    saw_universe |= !is_default;
    Template::Branch& branch = found.emplace_back();
    branch.universe = std::string(key);
    SegmentParser(raw, target_families, branch.segments, target_needs).parse(i + eq + 1, token_end);
    i = token_end;
  }
  if (!saw_universe) return false;
  branches = std::move(found);
  needs = target_needs;
  needs.reference = true;
  needs.process_scope = true;  // the universe may come from the caller's environment
  needs.environment = true;
  needs.caller = true;
  return true;
}

Error too_long() {
  return make_error(ENAMETOOLONG, "link expansion is longer than " + std::to_string(kMaxExpansion) +
                                      " bytes (PATH_MAX-1); it is never truncated");
}

bool has_sys(std::span<const Segment> segments) noexcept {
  return std::any_of(segments.begin(), segments.end(), [](const Segment& s) { return s.kind == Kind::Sys; });
}

}  // namespace

Template Template::parse(std::string_view raw, const ParseOptions& opts) {
  Template t;
  t.raw_ = std::string(raw);
  if (raw.size() > kMaxExpansion) return t;  // cannot be a symlink body; expands to ENAMETOOLONG
  const std::string_view text = t.raw_;
  Needs needs;
  if (parse_conditional(text, opts, t.branches_, needs)) {
    t.conditional_ = true;
  } else {
    SegmentParser(text, opts.families, t.segments_, needs).parse(0, text.size());
  }
  t.literal_ = !needs.reference;
  t.uses_sys_ = needs.sys;
  t.needs_process_scope_ = needs.process_scope;
  t.needs_caller_ = needs.caller;
  t.needs_personality_ = needs.personality;
  t.needs_environment_ = needs.environment;
  return t;
}

Result<void> Template::expand_segments(std::span<const Segment> segments, const ValueSource& values,
                                       const ExpandOptions& opts, std::size_t sys_index,
                                       std::string& out) const {
  out.clear();
  const std::string_view raw = raw_;
  auto append = [&out](std::string_view piece) {
    if (piece.size() > kMaxExpansion - out.size()) return false;
    out.append(piece);
    return true;
  };
  auto record = [&opts](std::string_view reference, std::string_view value, Scope scope,
                        std::string_view note = {}) {
    if (opts.trace != nullptr)
      opts.trace->push_back({std::string(reference), std::string(value), scope, std::string(note)});
  };

  for (const Segment& seg : segments) {
    const std::string_view name = raw.substr(seg.offset, seg.length);
    const std::string_view reference = raw.substr(seg.ref_offset, seg.ref_length);
    std::string_view piece;
    switch (seg.kind) {
      case Kind::Text:
      case Kind::Escape:
        piece = name;
        break;
      case Kind::Variable: {
        const std::optional<Value> v = values.variable(name);
        const bool has_default = seg.default_offset >= 0;
        if (v && !(has_default && v->text.empty())) {
          piece = v->text;
          record(reference, piece, v->scope, v->note);
        } else if (has_default) {
          piece = raw.substr(static_cast<std::size_t>(seg.default_offset), seg.default_length);
          record(reference, piece, Scope::Default);
        } else if (opts.undefined == UndefinedPolicy::Error) {
          return make_error(ENOENT, "undefined variable " + std::string(name) + " in " +
                                        std::string(reference) +
                                        " has no default and the undefined policy is 'error'");
        } else {
          // Literal and Empty both come from the link itself, hence Scope::Default.
          piece = opts.undefined == UndefinedPolicy::Literal ? reference : std::string_view{};
          record(reference, piece, Scope::Default);
        }
        break;
      }
      case Kind::Magic: {
        const std::optional<Value> v = values.magic(name);
        if (v) {
          piece = v->text;
          record(reference, piece, v->scope, v->note);
        } else {
          piece = reference;
        }
        break;
      }
      case Kind::Sys: {
        const std::span<const std::string> names = values.sysnames();
        if (sys_index < names.size()) {
          piece = names[sys_index];
          record(reference, piece, values.sysnames_scope(), values.sysnames_note());
        } else {
          piece = reference;
        }
        break;
      }
      case Kind::Memb: {
        const Value v = values.member();
        piece = v.text;
        record(reference, piece, v.scope);
        break;
      }
    }
    if (!append(piece)) return too_long();
  }
  return {};
}

const Template::Branch* Template::find_branch(std::string_view universe) const noexcept {
  const Branch* fallback = nullptr;
  for (const Branch& b : branches_) {
    if (b.universe == universe) return &b;
    if (fallback == nullptr && b.universe == "default") fallback = &b;
  }
  return fallback;
}

Result<void> Template::expand(const ValueSource& values, const ExpandOptions& opts, std::string& out) const {
  out.clear();
  if (literal_) {
    if (raw_.size() > kMaxExpansion) return too_long();
    out.append(raw_);
    return {};
  }
  // One reservation for the bound: a reused buffer never reallocates.
  out.reserve(kMaxExpansion);
  const std::vector<Segment>* segments = &segments_;
  if (conditional_) {
    const Value universe = values.universe();
    const Branch* branch = find_branch(universe.text);
    if (branch == nullptr) {
      return make_error(ENOENT, "conditional link has no target for universe '" + std::string(universe.text) +
                                    "' and no default= target");
    }
    if (opts.trace != nullptr)
      opts.trace->push_back({branch->universe + "=", std::string(universe.text), universe.scope});
    segments = &branch->segments;
  }
  if (opts.probe == nullptr || !uses_sys_ || !has_sys(*segments)) {
    return expand_segments(*segments, values, opts, 0, out);
  }
  const std::size_t candidates = values.sysnames().size();
  if (candidates <= 1) return expand_segments(*segments, values, opts, 0, out);

  // AFS semantics: the first candidate whose whole expansion exists wins; a
  // candidate that fails to expand (too long) is skipped, not fatal.
  const std::size_t trace_mark = opts.trace != nullptr ? opts.trace->size() : 0;
  for (std::size_t i = 0; i < candidates; ++i) {
    Result<void> r = expand_segments(*segments, values, opts, i, out);
    if (r.ok() && opts.probe->exists(out)) return r;
    if (opts.trace != nullptr) {
      opts.trace->erase(opts.trace->begin() + static_cast<std::ptrdiff_t>(trace_mark), opts.trace->end());
    }
  }
  return expand_segments(*segments, values, opts, 0, out);
}

}  // namespace vsymfs
