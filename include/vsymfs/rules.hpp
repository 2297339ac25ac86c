// The rules file (docs/vsymfs-rules.5): what a mount's administrator decides. Parsed with
// toml++ into this plain struct; the rest of vsymfs only ever sees the struct.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "vsymfs/result.hpp"
#include "vsymfs/value_source.hpp"
#include "vsymfs/var_map.hpp"

namespace vsymfs {

// Whether the kernel may cache symlink bodies (FUSE_CAP_CACHE_SYMLINKS).
enum class SymlinkCache : std::uint8_t {
  Auto,   // on exactly when every expansion is the same for all callers
  Never,  // always ask the daemon
};

struct UniverseRules {
  std::vector<std::string> names;    // declared universes; empty = conditional links off
  std::string default_universe;      // must be one of names (when names is non-empty)
  std::string env_var = "UNIVERSE";  // the process variable that picks one
  VarMap by_user;                    // user name -> universe
  VarMap by_group;                   // group name -> universe
};

struct HostRules {
  std::string pattern;  // fnmatch(3) pattern against the hostname
  VarMap vars;
};

// [cluster.members]: "pattern" = id; the first pattern (file order) that
// matches the host name gives its member id.
struct MemberRule {
  std::string pattern;  // fnmatch(3) pattern against the hostname, case-insensitive
  int member = 0;
};

struct Rules {
  std::string origin;  // the file path, or "<built-in>"

  Families families;
  UndefinedPolicy undefined = UndefinedPolicy::Literal;

  // Scopes a mount uses. With only locked/host/system (per_caller == false)
  // every expansion is the same for every caller: caller builtins and process,
  // user and group scopes are off, per-process @ names get the host's native
  // values, and the kernel may cache symlink bodies.
  bool per_caller = true;
  SymlinkCache symlink_cache = SymlinkCache::Auto;
  // A program of another architecture run by an emulator through
  // binfmt_misc gets its own machine's @machine, @machine_arch, @emul,
  // ${ARCH} and @sys ([scopes] emulation; needs per_caller). false: the
  // host's values, as for any native process.
  bool emulation = true;

  // Process scope: fnmatch patterns; a name is taken when it matches an allow
  // pattern and no deny pattern. Identity builtins are never taken.
  std::vector<std::string> env_allow{"*"};
  std::vector<std::string> env_deny;

  VarMap locked;                                 // [locked]
  VarMap system;                                 // [vars]
  StringMap<VarMap> users;                       // [user.NAME]
  StringMap<VarMap> groups;                      // [group.NAME]
  std::vector<HostRules> hosts;                  // [host."pattern"], file order

  std::vector<std::string> sysnames;             // @sys for native callers, best first
  std::vector<std::string> sysnames32;           // @sys for 32-bit callers
  // [sysname.MACHINE] native = [...]: @sys for a caller emulated as MACHINE
  // (uname -m inside it: aarch64, armv7l). An emulated machine without a
  // list gets the built-in OpenAFS names for it (Emulation::sysnames).
  StringMap<std::vector<std::string>> sysnames_by_arch;
  // [sysname] set the lists (provenance: system scope) rather than the
  // derivation from the host's machine (builtin scope).
  bool sysnames_configured = false;
  UniverseRules universes;
  // {memb} -> "member<N>": the first [cluster.members] pattern matching
  // the host name, else `member` ([cluster] member). See HostView.
  int member = 0;
  std::vector<MemberRule> members;               // file order

  // True when the kernel may cache symlink bodies for this mount.
  bool kernel_may_cache_symlinks() const noexcept {
    return symlink_cache == SymlinkCache::Auto && !per_caller;
  }
};

// Rules files larger than this are rejected (EFBIG): a rules file is a few
// kilobytes, and the daemon re-reads it on every change.
inline constexpr std::size_t kMaxRulesFileSize = std::size_t{1} << 20;

// The AFS-style sysname list derived from a machine name (uname -m) when the
// rules have no [sysname]: e.g. x86_64 -> amd64_linux26, i386_linux26 for
// native callers and i386_linux26 for 32-bit ones.
std::vector<std::string> default_sysnames(std::string_view machine, bool compat32);

// The built-in default rules text (embedded from src/core/default_rules.toml).
extern const std::string_view kDefaultRulesText;

// Parse rules text. `origin` names the file in error messages, which read
// "FILE:LINE:COLUMN: what was expected" (unknown keys suggest the nearest
// valid key). Error code EINVAL.
Result<Rules> parse_rules(std::string_view text, std::string_view origin);

// Read and parse a file (ENOENT/EACCES/... when it cannot be read).
Result<Rules> load_rules_file(const std::filesystem::path& path);

// The built-in default rules (parsing them cannot fail; tested).
const Rules& default_rules();

}  // namespace vsymfs
