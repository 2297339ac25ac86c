#include "fs/service_notify.hpp"

#include "vsymfs_config.h"

#ifdef VSYMFS_HAVE_LIBSYSTEMD
#include <systemd/sd-daemon.h>

#include <ctime>
#endif

namespace vsymfs::fs::service {

namespace {

void send([[maybe_unused]] const std::string& message) {
#ifdef VSYMFS_HAVE_LIBSYSTEMD
  // 0: keep NOTIFY_SOCKET, later messages need it. Failures are not ours to
  // handle: the manager then times out and says so.
  (void)sd_notify(0, message.c_str());
#endif
}

// STATUS= ends at the newline that separates assignments.
std::string one_line(std::string s) {
  for (char& c : s)
    if (c == '\n') c = ' ';
  return s;
}

}  // namespace

void ready(const std::string& status) { send("READY=1\nSTATUS=" + one_line(status)); }

void reloading() {
  std::string msg = "RELOADING=1";
#ifdef VSYMFS_HAVE_LIBSYSTEMD
  // systemd 253+ pairs a reload with this timestamp (Type=notify-reload).
  timespec ts{};
  if (::clock_gettime(CLOCK_MONOTONIC, &ts) == 0)
    msg += "\nMONOTONIC_USEC=" + std::to_string(static_cast<unsigned long long>(ts.tv_sec) * 1000000ULL +
                                                 static_cast<unsigned long long>(ts.tv_nsec) / 1000ULL);
#endif
  send(msg);
}

void reloaded(const std::string& status) { send("READY=1\nSTATUS=" + one_line(status)); }

void stopping() { send("STOPPING=1\nSTATUS=unmounting"); }

}  // namespace vsymfs::fs::service
