#include "vsymfs/mountinfo.hpp"

#include <cstddef>

namespace vsymfs {

namespace {

// Splits the first space-separated field off `rest`.
std::string_view next_field(std::string_view& rest) {
  const std::size_t sp = rest.find(' ');
  const std::string_view field = rest.substr(0, sp);
  rest = sp == std::string_view::npos ? std::string_view{} : rest.substr(sp + 1);
  return field;
}

}  // namespace

bool next_mountinfo_line(std::string_view& mountinfo, MountinfoLine& out) {
  const std::size_t eol = mountinfo.find('\n');
  std::string_view rest = mountinfo.substr(0, eol);
  mountinfo = eol == std::string_view::npos ? std::string_view{} : mountinfo.substr(eol + 1);
  std::string_view fields[5];
  std::size_t n = 0;
  while (n < 5 && !rest.empty()) fields[n++] = next_field(rest);
  const std::size_t dash = rest.find(" - ");
  if (n < 5 || dash == std::string_view::npos) return false;
  std::string_view tail = rest.substr(dash + 3);  // type source superoptions
  const std::string_view type = next_field(tail);
  next_field(tail);  // source
  out = {fields[2], fields[3], fields[4], type, next_field(tail)};
  return true;
}

std::string unescape_mountinfo(std::string_view field) {
  std::string out;
  out.reserve(field.size());
  for (std::size_t i = 0; i < field.size(); ++i) {
    const auto octal = [&](std::size_t k, char max) { return field[k] >= '0' && field[k] <= max; };
    if (field[i] == '\\' && i + 3 < field.size() && octal(i + 1, '3') && octal(i + 2, '7') && octal(i + 3, '7')) {
      out += static_cast<char>((field[i + 1] - '0') * 64 + (field[i + 2] - '0') * 8 + (field[i + 3] - '0'));
      i += 3;
    } else {
      out += field[i];
    }
  }
  return out;
}

}  // namespace vsymfs
