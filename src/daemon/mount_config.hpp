// What one mount is configured with that the daemon's objects need: the
// paths, where the rules come from, how long the kernel trusts a name. The
// command line (fs::Options) is this plus what only the FUSE layer uses.
#pragma once

#include <string>

namespace vsymfs::daemon {

struct MountConfig {
  std::string source;      // absolute, as given
  std::string mountpoint;  // absolute
  // The rules file (-o rules=PATH). "" = the default path
  // (VSYMFS_DEFAULT_RULES_PATH), used when it exists, else the built-in
  // rules. A non-empty path must load, unless it is the default path and
  // rules_path_explicit is false.
  std::string rules_path;
  bool rules_path_explicit = false;  // given with -o rules=; missing file is then an error
  bool builtin_rules = false;        // -o builtin_rules: no file at all, not even the default
  // -o entry_timeout=S: how long the kernel trusts a name it looked up. An
  // @sys probe result (whether a candidate exists in SOURCE) is trusted as
  // long, so a candidate made behind the mount's back shows as late as a
  // changed name would. 0: every expansion probes.
  double entry_timeout = 1.0;
};

}  // namespace vsymfs::daemon
