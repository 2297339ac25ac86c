// Host facts for the @ names and builtin variables, read once per daemon.
#include <sys/utsname.h>

#include <array>
#include <string_view>

#include "vsymfs/caller.hpp"

namespace vsymfs {
namespace {

// What `uname -m` says inside a 32-bit personality (linux32/setarch) on a
// 64-bit kernel; a machine with no 32-bit personality reports itself.
std::string_view machine32_for(std::string_view machine) {
  struct Row {
    std::string_view machine64, machine32;
  };
  static constexpr std::array<Row, 7> kTable{{
      {"x86_64", "i686"},
      {"aarch64", "armv7l"},
      {"ppc64", "ppc"},
      {"s390x", "s390"},
      {"sparc64", "sparc"},
      {"mips64", "mips"},
      {"parisc64", "parisc"},
  }};
  for (const Row& row : kTable) {
    if (row.machine64 == machine) return row.machine32;
  }
  return machine;
}

}  // namespace

HostInfo read_host_info() {
  HostInfo info;
  utsname uts{};
  if (::uname(&uts) != 0) {
    // uname(2) only fails on a bad pointer; keep the fields non-empty anyway
    // so links never expand to an empty component by surprise.
    info.hostname = info.domainname = info.machine = info.machine32 = info.osrelease = info.kernel_ident = "unknown";
    info.ostype = "Linux";
    return info;
  }
  info.hostname = uts.nodename;
  info.domainname = uts.domainname;  // GNU extension; "(none)" when unset
  info.machine = uts.machine;
  info.machine32 = std::string(machine32_for(info.machine));
  info.osrelease = uts.release;
  info.ostype = uts.sysname;
  info.kernel_ident = uts.version;
  return info;
}

}  // namespace vsymfs
