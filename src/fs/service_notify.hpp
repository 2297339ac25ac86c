// Tells a service manager (systemd, Type=notify) where the daemon is in its
// life: sd_notify(3) messages on $NOTIFY_SOCKET. Without that variable, or in
// a build without libsystemd, every call does nothing.
#pragma once

#include <string>

namespace vsymfs::fs::service {

// The mount is up and the daemon is about to serve it; `status` is the
// one-line state `systemctl status` shows.
void ready(const std::string& status);

// A rules reload begins (RELOADING=1), and ends: READY=1 with the outcome.
void reloading();
void reloaded(const std::string& status);

// The daemon is unmounting and will exit.
void stopping();

}  // namespace vsymfs::fs::service
