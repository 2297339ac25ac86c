// Tools for the fault, scale and stress tests: a vsymfs daemon the test
// starts, kills and restarts itself (the Mount fixture owns one daemon for
// its lifetime), a deadline that aborts hung FUSE connections so a failing
// test can never wedge the machine (DEPLOY-FACTS "When a mount hangs"), and
// small readers of a process's /proc.
#pragma once

#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <functional>
#include <mutex>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "mount_fixture.hpp"

namespace vsymfs::testing::faults {

using Clock = std::chrono::steady_clock;

// The FUSE connection number of the vsymfs mount on `mnt` (the minor device
// number in /proc/self/mountinfo), or "" when nothing is mounted there. Reads
// no file of the mount, so it works on a dead or hung one.
inline std::string fuse_connection_of(const std::string& mnt) {
  std::ifstream in("/proc/self/mountinfo");
  std::string line, found;
  while (std::getline(in, line)) {
    std::istringstream f(line);
    std::string id, parent, devno, root, point;
    f >> id >> parent >> devno >> root >> point;
    if (point != mnt) continue;
    const auto dash = line.find(" - ");
    if (dash == std::string::npos || line.compare(dash + 3, 5, "fuse.") != 0) continue;
    found = devno.substr(devno.find(':') + 1);  // the last one mounted there wins
  }
  return found;
}

inline bool is_fuse_mounted(const std::string& mnt) { return !fuse_connection_of(mnt).empty(); }

// Ends the connection of the FUSE mount on `mnt` as only the kernel can:
// every waiting request fails, then the mount is detached. fusectl is
// mounted for the moment when it is not. True when an abort was written.
inline bool abort_fuse(const std::string& mnt) {
  const std::string conn = fuse_connection_of(mnt);
  if (conn.empty()) return false;
  constexpr const char* kFusectl = "/sys/fs/fuse/connections";
  const std::string abort_file = std::string(kFusectl) + "/" + conn + "/abort";
  bool mounted_here = false;
  if (::access(abort_file.c_str(), W_OK) != 0 && ::mount("fusectl", kFusectl, "fusectl", 0, nullptr) == 0)
    mounted_here = true;
  bool written = false;
  if (int fd = ::open(abort_file.c_str(), O_WRONLY | O_CLOEXEC); fd >= 0) {
    written = ::write(fd, "1", 1) == 1;
    ::close(fd);
  }
  if (mounted_here) ::umount2(kFusectl, MNT_DETACH);
  ::umount2(mnt.c_str(), MNT_DETACH);
  return written;
}

// Aborts the FUSE connections on `mountpoints` unless disarmed within
// `limit`: hold one for as long as a test touches a mount that might hang.
class Deadline {
 public:
  Deadline(std::vector<std::string> mountpoints, std::chrono::milliseconds limit)
      : mountpoints_(std::move(mountpoints)) {
    thread_ = std::thread([this, limit] {
      std::unique_lock lock(mu_);
      if (cv_.wait_for(lock, limit, [this] { return disarmed_; })) return;
      fired_ = true;
      for (const auto& m : mountpoints_) abort_fuse(m);
    });
  }
  ~Deadline() { disarm(); }
  Deadline(const Deadline&) = delete;
  Deadline& operator=(const Deadline&) = delete;
  void disarm() {
    {
      std::lock_guard lock(mu_);
      disarmed_ = true;
    }
    cv_.notify_one();
    if (thread_.joinable()) thread_.join();
  }
  bool fired() const { return fired_.load(); }

 private:
  std::vector<std::string> mountpoints_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool disarmed_ = false;
  std::atomic<bool> fired_{false};
  std::thread thread_;
};

// `vsymfs -f ARGS... SOURCE MOUNTPOINT`, its stderr in `log`. The
// constructor returns once the mount is up (throws when it does not come up
// within 30 s). The destructor stops it (SIGTERM, then SIGKILL) and detaches
// whatever is left mounted.
class Daemon {
 public:
  Daemon(std::vector<std::string> args, std::string source, std::string mnt, std::string log_path)
      : mnt_(std::move(mnt)), log_(std::move(log_path)) {
    args.insert(args.begin(), {vsymfs_bin(), "-f"});
    args.push_back(std::move(source));
    args.push_back(mnt_);
    // Built before fork: the test may run other threads, and the child
    // makes only system calls (mount_fixture.cpp, child_fail).
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    const char* log_file = log_.c_str();
    pid_ = ::fork();
    if (pid_ < 0) throw std::runtime_error(std::string("fork: ") + std::strerror(errno));
    if (pid_ == 0) {
      const int fd = ::open(log_file, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
      if (fd >= 0) {
        ::dup2(fd, 1);
        ::dup2(fd, 2);
      }
      ::execv(argv[0], argv.data());
      const int err = errno;
      const char* why = ::strerrordesc_np(err);
      for (const char* part : {"faults::Daemon: cannot run ", static_cast<const char*>(argv[0]), ": ",
                               why != nullptr ? why : "unknown error", "\n"})
        (void)!::write(2, part, std::strlen(part));
      ::_exit(127);
    }
    const auto deadline = Clock::now() + std::chrono::seconds(30);
    while (!is_fuse_mounted(mnt_)) {
      int status = 0;
      if (::waitpid(pid_, &status, WNOHANG) == pid_) {
        pid_ = -1;
        throw std::runtime_error("vsymfs exited before mounting: " + log());
      }
      if (Clock::now() > deadline) {
        kill9();
        throw std::runtime_error("vsymfs did not mount within 30 s: " + log());
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
  }
  ~Daemon() {
    if (pid_ > 0) stop();
    if (is_fuse_mounted(mnt_)) abort_fuse(mnt_);
  }
  Daemon(const Daemon&) = delete;
  Daemon& operator=(const Daemon&) = delete;

  pid_t pid() const { return pid_; }
  std::string log() const {
    std::ifstream in(log_);
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
  }
  // SIGKILL and reap; the mount stays, dead.
  void kill9() {
    if (pid_ <= 0) return;
    ::kill(pid_, SIGKILL);
    ::waitpid(pid_, nullptr, 0);
    pid_ = -1;
  }
  // SIGTERM (a clean unmount) and reap within 20 s: the exit status, or
  // 128 + signal, or -1 when it had to be killed.
  int stop() {
    if (pid_ <= 0) return -1;
    ::kill(pid_, SIGTERM);
    int status = 0;
    const auto deadline = Clock::now() + std::chrono::seconds(20);
    while (::waitpid(pid_, &status, WNOHANG) == 0) {
      if (Clock::now() > deadline) {
        abort_fuse(mnt_);
        kill9();
        return -1;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    pid_ = -1;
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  }
  // Waits until the log contains `text` (true) or `limit` passes (false).
  bool wait_for_log(const std::string& text, std::chrono::milliseconds limit = std::chrono::seconds(20)) const {
    const auto deadline = Clock::now() + limit;
    while (log().find(text) == std::string::npos) {
      if (Clock::now() > deadline) return false;
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    return true;
  }

 private:
  std::string mnt_, log_;
  pid_t pid_ = -1;
};

// A thread that is always joined, also when an ASSERT leaves the test
// early: `stop` runs first to tell it to finish.
class Joined {
 public:
  Joined(std::function<void()> body, std::function<void()> stop = {})
      : stop_(std::move(stop)), thread_(std::move(body)) {}
  ~Joined() { join(); }
  Joined(const Joined&) = delete;
  Joined& operator=(const Joined&) = delete;
  void join() {
    if (!thread_.joinable()) return;
    if (stop_) stop_();
    thread_.join();
  }

 private:
  std::function<void()> stop_;
  std::thread thread_;
};

// Descriptors a process has open (/proc/PID/fd), or 0 when it is gone.
inline std::size_t open_fds(pid_t pid) {
  std::size_t n = 0;
  DIR* d = ::opendir(("/proc/" + std::to_string(pid) + "/fd").c_str());
  if (!d) return 0;
  while (struct dirent* e = ::readdir(d))
    if (e->d_name[0] != '.') ++n;
  ::closedir(d);
  return n;
}

// A line of /proc/PID/status in kB (VmRSS, VmHWM), or 0.
inline std::size_t status_kb(pid_t pid, const std::string& key) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(in, line))
    if (line.rfind(key + ":", 0) == 0) return std::stoul(line.substr(key.size() + 1));
  return 0;
}

// The `key: value` lines of `vsymctl status` for the mount on `mnt`.
inline std::string vsymctl_status(const std::string& mnt, int* status = nullptr) {
  return capture_as(As{}, {vsymctl_bin(), "--mount", mnt, "status"}, status);
}

inline std::string status_value(const std::string& status_text, const std::string& key) {
  std::istringstream in(status_text);
  std::string line;
  while (std::getline(in, line))
    if (line.rfind(key + ": ", 0) == 0) return line.substr(key.size() + 2);
  return "<no " + key + " line>";
}

}  // namespace vsymfs::testing::faults
