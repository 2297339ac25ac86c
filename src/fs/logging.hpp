// The daemon's log: stderr in the foreground, else syslog; libfuse's own
// messages go there too, one line each. Until startup succeeds libfuse's
// warnings are held back and become part of the one-line startup error.
#pragma once

#include <string>

#include "fs/options.hpp"

namespace vsymfs::fs {

void setup_logging(const Options& o);

// libfuse's held-back warnings as " (libfuse: ...)", or "".
std::string held_fuse_messages();

// Startup succeeded: libfuse's messages go to the log from now on.
void stop_holding_fuse_messages() noexcept;

}  // namespace vsymfs::fs
