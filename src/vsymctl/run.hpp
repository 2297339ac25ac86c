// `vsymctl run`: run a command in a universe and/or with extra variables.
#pragma once

#include <string>
#include <vector>

#include "vsymctl/daemon_ops.hpp"

namespace vsymfs::vsymctl {

struct RunArgs {
  std::string universe;
  std::vector<std::string> env;      // K=V
  std::vector<std::string> command;  // argv
};

// Returns only on failure (exit code 125/126/127); otherwise execs.
int run_command(const Connect& where, bool mount_given, const RunArgs& args);

}  // namespace vsymfs::vsymctl
