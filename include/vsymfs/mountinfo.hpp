// The one parser of /proc/<pid>/mountinfo lines (proc(5)). Text only: the
// caller reads the file.
#pragma once

#include <string>
#include <string_view>

namespace vsymfs {

// One line of mountinfo:
//   id parent major:minor root mountpoint options [optional...] - type source superoptions
// Views into the text; root and point as written (escaped, see
// unescape_mountinfo).
struct MountinfoLine {
  std::string_view devno;  // "major:minor"
  std::string_view root, point, type;
  std::string_view super_options;  // "" when the line has none
};

// Splits the first line off `mountinfo` (which then holds the rest) into
// `out`. False for a line of another shape (`out` is then unspecified).
bool next_mountinfo_line(std::string_view& mountinfo, MountinfoLine& out);

// mountinfo escapes space, tab, newline and backslash as \ooo.
std::string unescape_mountinfo(std::string_view field);

}  // namespace vsymfs
