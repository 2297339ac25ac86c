// `vsymctl explain PATH`: walk PATH as the kernel would and show, for every
// symlink met, its raw text, this process's expansion and the scope of each
// substituted value.
#pragma once

#include <string>

namespace vsymfs::vsymctl {

int run_explain(const std::string& path);

}  // namespace vsymfs::vsymctl
