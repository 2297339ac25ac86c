#include "fs/startup.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <sstream>

#include "control/paths.hpp"

namespace vsymfs::fs {

namespace {

bool is_vsymfs_mount(const std::string& path) {
  std::ifstream in("/proc/self/mountinfo");
  std::stringstream mountinfo;
  mountinfo << in.rdbuf();
  return control::has_mount_at(mountinfo.str(), path, "fuse.vsymfs");
}

}  // namespace

std::string check_paths(const Options& o) {
  struct stat st {};
  if (::stat(o.source.c_str(), &st) != 0) return "SOURCE " + o.source + ": " + std::strerror(errno);
  if (!S_ISDIR(st.st_mode)) return "SOURCE " + o.source + ": not a directory";
  if (::stat(o.mountpoint.c_str(), &st) != 0) return "MOUNTPOINT " + o.mountpoint + ": " + std::strerror(errno);
  if (!S_ISDIR(st.st_mode)) return "MOUNTPOINT " + o.mountpoint + ": not a directory";
  if (o.mountpoint.size() > o.source.size() && o.mountpoint.compare(0, o.source.size(), o.source) == 0 &&
      (o.source == "/" || o.mountpoint[o.source.size()] == '/'))
    return "MOUNTPOINT " + o.mountpoint + " is inside SOURCE " + o.source + ": the daemon would call into its own mount";
  if (is_vsymfs_mount(o.mountpoint)) return "MOUNTPOINT " + o.mountpoint + " is already a vsymfs mount (unmount it first)";
  return {};
}

Startup::Startup(bool foreground) {
  if (foreground) return;
  int p[2];
  if (::pipe2(p, O_CLOEXEC) != 0) fail(kInternal, std::string("pipe: ") + std::strerror(errno));
  pid_t pid = ::fork();
  if (pid < 0) fail(kInternal, std::string("fork: ") + std::strerror(errno));
  UniqueFd read_end(p[0]);
  UniqueFd write_end(p[1]);
  if (pid > 0) {
    write_end.reset();
    std::string verdict;
    char buf[512];
    ssize_t n;
    while ((n = ::read(read_end.get(), buf, sizeof buf)) > 0) verdict.append(buf, static_cast<std::size_t>(n));
    if (verdict.empty()) {
      std::fprintf(stderr, "vsymfs: the daemon exited during startup\n");
      ::_exit(kInternal);
    }
    int status = verdict[0] - '0';
    if (verdict.size() > 1) std::fprintf(stderr, "%s\n", verdict.c_str() + 1);
    ::_exit(status);
  }
  read_end.reset();
  pipe_ = std::move(write_end);
  ::setsid();
}

void Startup::fail(int status, const std::string& message) {
  if (pipe_) {
    std::string verdict = std::to_string(status) + "vsymfs: " + message;
    [[maybe_unused]] ssize_t n = ::write(pipe_.get(), verdict.data(), verdict.size());
  } else {
    std::fprintf(stderr, "vsymfs: %s\n", message.c_str());
  }
  std::fflush(stderr);
  ::_exit(status);
}

void Startup::succeeded() {
  if (!pipe_) return;
  if (::chdir("/") != 0) { /* nothing depends on the cwd */ }
  int null = ::open("/dev/null", O_RDWR | O_CLOEXEC);
  if (null >= 0) {
    ::dup2(null, 0);
    ::dup2(null, 1);
    ::dup2(null, 2);
    UniqueFd(null).reset();
  }
  [[maybe_unused]] ssize_t n = ::write(pipe_.get(), "0", 1);
  pipe_.reset();
}

}  // namespace vsymfs::fs
