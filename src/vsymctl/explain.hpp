// `vsymctl explain PATH`: walk PATH as the kernel would and show, for every
// symlink met, its raw text, this process's expansion and the scope of each
// substituted value.
#pragma once

#include <string>

#include "control/protocol.hpp"

namespace vsymfs::vsymctl {

int run_explain(const std::string& path);

// How the daemon is to find the absolute path `dir`: its path inside the
// mounted filesystem when /proc/self/mountinfo says where the mount starts
// (right through bind mounts), else `dir` itself (the daemon then matches
// its own mountpoint). explain and trace send paths this way.
std::string dir_for_daemon(const std::string& dir);

// The (ref, value, scope) fields of an explain reply, one per line after
// `indent`, as "REF = VALUE  (SCOPE)".
void print_substitutions(const control::Reply& reply, const char* indent);

}  // namespace vsymfs::vsymctl
