// The link language (docs/vsymfs-rules.5, [syntax]): the text stored in an underlying symlink is a
// template, parsed once and expanded many times, once per calling process.
// Parsing never fails: anything that is not a well-formed reference is plain
// text. Expansion is one left-to-right pass into a bounded buffer; values are
// never re-scanned.
#pragma once

#include <climits>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "vsymfs/result.hpp"
#include "vsymfs/value_source.hpp"

namespace vsymfs {

// The longest expansion readlink may return: PATH_MAX-1 bytes.
inline constexpr std::size_t kMaxExpansion = PATH_MAX - 1;

// The suffix of an AFS-style @sys path component (docs/vsymfs-rules.5, [sysname]; docs/vsymfs.8, "@sys probes").
inline constexpr std::string_view kSysSuffix = "@sys";

// Whether a path component is an AFS-style @sys component: exactly "@sys",
// or a name that ends in "@sys" (`lib@sys`). Such a component resolves per
// caller when it does not exist literally; the candidates are the part
// before the suffix followed by each of the caller's sysnames. The one test
// every layer uses (FUSE lookup, LinkService, vsymctl explain).
constexpr bool is_sys_component(std::string_view name) noexcept { return name.ends_with(kSysSuffix); }

struct ParseOptions {
  Families families;
  // Declared universe names: text is a conditional link only when every
  // `u=` key is one of these (or `default`). Empty: no conditional links.
  std::span<const std::string> universes;
};

// One substituted value, for `vsymctl explain`.
struct Substitution {
  std::string reference;  // as written in the link, e.g. "${USER}", "@sys", "{memb}"
  std::string value;      // what it became ("" for Empty policy)
  Scope scope;            // where the value came from
  std::string note;       // why, for a builtin that is not the host's (Value::note)
};

// Checks whether an expanded candidate target exists (used for @sys lists).
// The daemon resolves relative targets against the link's directory inside
// SOURCE; tests pass a lambda.
class Probe {
 public:
  virtual ~Probe() = default;
  virtual bool exists(std::string_view expanded_target) const = 0;
};

struct ExpandOptions {
  UndefinedPolicy undefined = UndefinedPolicy::Literal;
  const Probe* probe = nullptr;                // null: @sys takes the first sysname
  std::vector<Substitution>* trace = nullptr;  // null: no provenance (the fast path)
};

class Template {
 public:
  Template() = default;
  static Template parse(std::string_view raw, const ParseOptions& opts);

  std::string_view raw() const noexcept { return raw_; }
  // No reference at all: every caller gets raw() (fast path, cacheable).
  bool is_literal() const noexcept { return literal_; }
  // Contains @sys (expansion may probe the filesystem).
  bool uses_sys() const noexcept { return uses_sys_; }
  bool is_conditional() const noexcept { return conditional_; }
  // The expansion may depend on the caller's environment: some variable
  // reference (any scope may be the process scope) or a conditional link (the
  // universe may come from the environment). False: the daemon need not read
  // /proc/<pid>/environ for this link.
  bool needs_process_scope() const noexcept { return needs_process_scope_; }
  // The expansion may differ between callers. False when only host-constant
  // forms are used (@hostname @domainname @osrelease @ostype @kernel_ident,
  // {memb}) or the template is literal.
  bool needs_caller() const noexcept { return needs_caller_; }
  // Uses a per-process 32-bit value (@machine @machine_arch @emul @sys): the
  // caller's compat32 flag must be known, which identity alone does not give.
  bool needs_personality() const noexcept { return needs_personality_; }
  // The expansion may take a value from the caller's environment: a
  // variable that is not an identity builtin (${USER} and the like never
  // come from it), or a conditional link (the universe may). False: the
  // caller's identity is enough, /proc/<pid>/environ need not be read.
  bool needs_environment() const noexcept { return needs_environment_; }

  // Expand for one caller into `out` (cleared first). Errors:
  //   ENAMETOOLONG  the result would exceed kMaxExpansion bytes
  //   ENOENT        undefined variable under UndefinedPolicy::Error, or a
  //                 conditional link with no branch for the caller's universe
  Result<void> expand(const ValueSource& values, const ExpandOptions& opts, std::string& out) const;

  // Implementation detail, public for tests and the fuzzer's invariants.
  struct Segment {
    enum class Kind : std::uint8_t { Text, Variable, Magic, Sys, Memb, Escape };
    Kind kind;
    std::uint32_t offset;  // into raw_: the literal text, or the name
    std::uint32_t length;
    std::uint32_t ref_offset;  // the whole reference as written (for Literal policy / trace)
    std::uint32_t ref_length;
    std::int32_t default_offset = -1;  // the ":-default" text, -1 when none
    std::uint32_t default_length = 0;
  };
  struct Branch {          // conditional links: universe -> target template
    std::string universe;  // "default" for the fallback
    std::vector<Segment> segments;
  };
  std::span<const Segment> segments() const noexcept { return segments_; }
  // Conditional links only (segments() is then empty); offsets are into raw().
  std::span<const Branch> branches() const noexcept { return branches_; }

 private:
  Result<void> expand_segments(std::span<const Segment> segments, const ValueSource& values,
                               const ExpandOptions& opts, std::size_t sys_index, std::string& out) const;
  // The branch for `universe`, else the `default` one, else null.
  const Branch* find_branch(std::string_view universe) const noexcept;

  std::string raw_;
  std::vector<Segment> segments_;
  std::vector<Branch> branches_;
  bool literal_ = true;
  bool uses_sys_ = false;
  bool conditional_ = false;
  bool needs_process_scope_ = false;
  bool needs_caller_ = false;
  bool needs_personality_ = false;
  bool needs_environment_ = false;
};

}  // namespace vsymfs
