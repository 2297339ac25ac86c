// vsymfs: parse the command line, check the paths, detach, build the
// daemon, serve, tear down (fs/daemon.hpp).
#define FUSE_USE_VERSION 314
#include <fuse3/fuse_lowlevel.h>

#include <cstdio>
#include <string>
#include <utility>
#include <vector>

#include "fs/daemon.hpp"
#include "fs/logging.hpp"
#include "fs/options.hpp"
#include "fs/startup.hpp"
#include "vsymfs_config.h"

int main(int argc, char** argv) {
  using namespace vsymfs::fs;
  auto parsed = parse_options(std::vector<std::string>(argv + 1, argv + argc));
  if (!parsed) {
    std::fprintf(stderr, "vsymfs: %s\n", parsed.error().message.c_str());
    return kUsage;
  }
  Options o = std::move(*parsed);
  if (o.show_help) {
    std::fputs(usage_text().c_str(), stdout);
    return kOk;
  }
  if (o.show_version) {
    std::printf("vsymfs %s (libfuse %d)\n", VSYMFS_VERSION, fuse_version());
    return kOk;
  }
  if (std::string err = check_paths(o); !err.empty()) {
    std::fprintf(stderr, "vsymfs: %s\n", err.c_str());
    return kPaths;
  }
  Startup startup(o.foreground);  // forks unless -f; the parent waits for the verdict
  setup_logging(o);
  Daemon daemon(std::move(o), startup);  // sets up and mounts, or exits with the reason
  return daemon.run();                   // the destructor unmounts
}
