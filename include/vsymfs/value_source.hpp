// The contract between the link language (link_template.hpp) and the scopes
// (resolver.hpp): the expander asks a ValueSource for values and records where
// each came from. Nothing here knows about FUSE, /proc or the rules file.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>

namespace vsymfs {

// Where a substituted value came from, highest precedence first (docs/vsymfs-rules.5, SCOPES).
enum class Scope : std::uint8_t {
  Locked,   // locked values from the rules file
  Process,  // the caller's environment (allow-listed)
  User,     // run-time per-uid values, [user.NAME]
  Group,    // [group.NAME] for the caller's groups
  Host,     // [host."pattern"]
  System,   // [vars] and root's run-time values
  Builtin,  // USER, UID, ..., the @ names, sysnames, universe default
  Default,  // the ":-default" text written in the link itself
};

std::string_view to_string(Scope s) noexcept;  // "locked", "process", ...

struct Value {
  std::string_view text;  // valid while the ValueSource (and what it borrows) lives
  Scope scope;
  // Why a builtin has this value, when it is not the host's own (for
  // `vsymctl explain`): "emulated by qemu-aarch64 (binfmt_misc entry ...)".
  std::string_view note{};
};

// The link-language families; each can be switched off per mount so trees whose
// links legitimately contain `$`, `@` or `%` stay untouched.
struct Families {
  bool magic = true;        // @name, @{name}, @sys
  bool dollar = true;       // ${NAME}, ${NAME:-d}, $NAME, $(NAME), $(NAME:-d)
  bool percent = true;      // %{NAME}, %{NAME:d}
  bool memb = true;         // {memb}
  bool conditional = true;  // att=/x ucb=/y default=/z
  bool operator==(const Families&) const = default;
};

// What an undefined variable with no default becomes.
enum class UndefinedPolicy : std::uint8_t {
  Literal,  // the reference is copied as written (BSD behaviour)
  Empty,    // the empty string (CernVM-FS behaviour)
  Error,    // the whole readlink fails with ENOENT
};

// Everything an expansion may ask about the calling process and the host.
// Implementations must not allocate on these calls (the hot path is readlink).
class ValueSource {
 public:
  virtual ~ValueSource() = default;
  // ${NAME} $NAME $(NAME) %{NAME}: scoped variables and the builtin variables.
  virtual std::optional<Value> variable(std::string_view name) const = 0;
  // @name / @{name} for every magic name except `sys`; nullopt = unknown name
  // (the reference is then copied literally).
  virtual std::optional<Value> magic(std::string_view name) const = 0;
  // The caller's @sys candidates, best first; never empty.
  virtual std::span<const std::string> sysnames() const = 0;
  // Scope the sysname list came from (for provenance).
  virtual Scope sysnames_scope() const = 0;
  // Why the list is this one when it is not the host's (see Value::note).
  virtual std::string_view sysnames_note() const { return {}; }
  // The caller's universe, for conditional links.
  virtual Value universe() const = 0;
  // {memb}: "member<N>".
  virtual Value member() const = 0;
};

}  // namespace vsymfs
