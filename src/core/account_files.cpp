// Parsing a container's /etc/passwd and /etc/group (account_files.hpp).
#include "vsymfs/account_files.hpp"

#include <array>
#include <charconv>
#include <cstdint>

namespace vsymfs {
namespace {

// Calls f(line, too_long) for every line, at most kMaxAccountLine of it.
template <class F>
void for_each_line(std::string_view text, F&& f) {
  while (!text.empty()) {
    const std::size_t eol = text.find('\n');
    std::string_view line = text.substr(0, eol);
    text = eol == std::string_view::npos ? std::string_view{} : text.substr(eol + 1);
    const bool too_long = line.size() > kMaxAccountLine;
    if (too_long) line = line.substr(0, kMaxAccountLine);
    f(line, too_long);
  }
}

// Splits `line` at ':' into up to N fields; returns how many it found,
// N + 1 when there are more.
template <std::size_t N>
std::size_t split(std::string_view line, std::array<std::string_view, N>& fields) {
  std::size_t n = 0;
  while (n < N) {
    const std::size_t colon = line.find(':');
    fields[n++] = line.substr(0, colon);
    if (colon == std::string_view::npos) return n;
    line.remove_prefix(colon + 1);
  }
  return N + 1;
}

bool parse_id(std::string_view s, std::uint32_t& out) {
  if (s.empty() || s.size() > 10) return false;
  const auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), out);
  return ec == std::errc{} && end == s.data() + s.size() && out != static_cast<std::uint32_t>(-1);
}

// A name the link language may substitute: no NUL, no '/', not "." or "..",
// printable. useradd allows far less; anything else is a hostile file.
bool usable_name(std::string_view s) {
  if (s.empty() || s == "." || s == ".." || s.front() == '+' || s.front() == '-' || s.front() == '#') return false;
  for (const unsigned char c : s) {
    if (c < 0x20 || c == 0x7f || c == '/') return false;
  }
  return true;
}

bool usable_home(std::string_view s) {
  for (const unsigned char c : s) {
    if (c < 0x20 || c == 0x7f) return false;
  }
  return true;
}

}  // namespace

const AccountUser* AccountFiles::user(uid_t uid) const noexcept {
  const auto it = users.find(uid);
  return it == users.end() ? nullptr : &it->second;
}

const std::string* AccountFiles::group(gid_t gid) const noexcept {
  const auto it = groups.find(gid);
  return it == groups.end() ? nullptr : &it->second;
}

void parse_passwd(std::string_view text, AccountFiles& into) {
  for_each_line(text, [&](std::string_view line, bool too_long) {
    if (too_long) return;  // its home would be cut: skip it
    std::array<std::string_view, 7> f;
    std::uint32_t uid = 0;
    if (split(line, f) != 7 || !usable_name(f[0]) || !parse_id(f[2], uid) || !usable_home(f[5])) return;
    into.users.try_emplace(static_cast<uid_t>(uid), AccountUser{std::string(f[0]), std::string(f[5])});
  });
}

void parse_group(std::string_view text, AccountFiles& into) {
  for_each_line(text, [&](std::string_view line, bool) {
    std::array<std::string_view, 4> f;
    std::uint32_t gid = 0;
    if (const std::size_t n = split(line, f); n < 3 || !usable_name(f[0]) || !parse_id(f[2], gid)) return;
    into.groups.try_emplace(static_cast<gid_t>(gid), std::string(f[0]));
  });
}

}  // namespace vsymfs
