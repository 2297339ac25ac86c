// How vsymctl reports errors: "vsymctl: ENOENT: <reason>" on stderr.
#pragma once

#include <cstring>
#include <iostream>
#include <string>

#include "vsymfs/result.hpp"

namespace vsymfs::vsymctl {

inline std::string errno_name(int code) {
  const char* name = ::strerrorname_np(code);
  return name != nullptr ? name : "E" + std::to_string(code);
}

inline void print_error(const Error& e) {
  std::cerr << "vsymctl: " << errno_name(e.code) << ": " << e.message << '\n';
}

}  // namespace vsymfs::vsymctl
