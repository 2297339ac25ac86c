// `vsymctl expand` and `vsymctl check`: the link language and the rules
// without a mount or a daemon.
#pragma once

#include <string>
#include <vector>

namespace vsymfs::vsymctl {

struct ExpandArgs {
  std::string text;
  std::string rules_file;          // "" = the built-in default rules
  std::string user;                // a name or a numeric uid; "" = our own uid
  std::string gid;                 // a numeric gid or a group name; "" = the user's primary group
  std::vector<std::string> env;    // K=V, highest precedence first
  bool clean_env = false;          // do not start from vsymctl's own environment
  std::string arch;                // uname -m of the simulated process
  std::string universe;
  std::string hostname;
  std::string probe_root;          // "" = no probing: @sys takes its first candidate
  bool secure = false;             // a set-id process: the process scope is ignored
  bool explain = false;            // print every substitution and its scope
};

int run_expand(const ExpandArgs& args);
// Validates each file; with hostnames, also prints what each host gets
// (member id, matching [host] tables).
int run_check(const std::vector<std::string>& files, const std::vector<std::string>& hostnames);

}  // namespace vsymfs::vsymctl
