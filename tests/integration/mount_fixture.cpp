#include "mount_fixture.hpp"

#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/mount.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <string_view>
#include <thread>

namespace fs = std::filesystem;

namespace vsymfs::testing {

std::string vsymfs_bin() {
  const char* p = std::getenv("VSYMFS_BIN");
  return p ? p : "vsymfs";
}
bool uring_run() {
  const char* p = std::getenv("VSYMFS_TEST_URING");
  return p != nullptr && std::string(p) == "1";
}
bool stop_and_wait(pid_t pid) {
  if (::kill(pid, SIGSTOP) != 0) return false;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  const std::string dir = "/proc/" + std::to_string(pid) + "/task";
  while (std::chrono::steady_clock::now() < deadline) {
    bool all = true;
    std::error_code ec;
    for (const auto& task : std::filesystem::directory_iterator(dir, ec)) {
      std::ifstream in(task.path() / "stat");
      std::string line;
      std::getline(in, line);
      // pid (comm) S ...: the comm may hold spaces and parentheses.
      const auto close = line.rfind(')');
      if (close == std::string::npos || close + 2 >= line.size()) continue;  // gone meanwhile
      const std::string comm = line.substr(line.find('(') + 1, close - line.find('(') - 1);
      if (comm.rfind("iou-", 0) == 0) continue;
      const char state = line[close + 2];
      if (state != 'T' && state != 't') all = false;
    }
    if (ec) return false;
    if (all) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return false;
}

std::string vsymctl_bin() {
  const char* p = std::getenv("VSYMCTL_BIN");
  return p ? p : "vsymctl";
}

namespace {

bool is_mounted(const std::string& mnt, dev_t parent_dev, dev_t* dev) {
  struct stat st {};
  if (::stat(mnt.c_str(), &st) != 0) return false;
  *dev = st.st_dev;
  return st.st_dev != parent_dev;
}

constexpr const char* kFusectl = "/sys/fs/fuse/connections";

// Each thread of `pid`: its name, state, blocked and pending signals and
// kernel stack, for the report of a daemon that does not exit.
std::string thread_report(pid_t pid) {
  std::string out;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator("/proc/" + std::to_string(pid) + "/task", ec)) {
    std::ifstream comm(e.path() / "comm"), status(e.path() / "status"), stack(e.path() / "stack");
    std::string name, line;
    std::getline(comm, name);
    out += "  thread " + e.path().filename().string() + " " + name + ":";
    while (std::getline(status, line))
      if (line.rfind("State:", 0) == 0 || line.rfind("SigPnd:", 0) == 0 || line.rfind("SigBlk:", 0) == 0)
        out += " " + line;
    out += "\n";
    while (std::getline(stack, line)) out += "    " + line + "\n";
  }
  return out;
}

// A child forked while other threads of the test run (a test's helper
// threads, a Watchdog) may find the allocator, stdio or the environment
// locked by a thread that does not exist in the child, and would wait for
// it forever (ASan's allocator has no fork handlers at all). So everything
// a child needs is built before fork, and the child makes only system
// calls until execve or _exit; these helpers are its way to say why it
// failed.
void write_stderr(std::initializer_list<const char*> parts) {
  for (const char* p : parts)
    if (p != nullptr) (void)!::write(2, p, std::strlen(p));
}
// Writes "<what...>: <errno text>" and ends the child with `code`.
[[noreturn]] void child_fail(int code, int err, std::initializer_list<const char*> what) {
  write_stderr(what);
  const char* why = ::strerrordesc_np(err);  // a table lookup: no locale, no allocation
  write_stderr({": ", why != nullptr ? why : "unknown error", "\n"});
  ::_exit(code);
}

// argv or envp for execve: pointers into `strings`, which must outlive it.
std::vector<char*> c_array(std::vector<std::string>& strings) {
  std::vector<char*> out;
  out.reserve(strings.size() + 1);
  for (auto& s : strings) out.push_back(s.data());
  out.push_back(nullptr);
  return out;
}

// The paths execvpe(3) tries for `file`, in its order: `file` itself when
// it holds a slash, else `file` in each directory of our $PATH (glibc's
// default when unset; an empty entry is the working directory). Found
// before fork: glibc's execvpe allocates as it searches.
std::vector<std::string> exec_candidates(const std::string& file) {
  if (file.find('/') != std::string::npos) return {file};
  const char* env_path = std::getenv("PATH");
  const std::string_view path = env_path != nullptr ? env_path : "/bin:/usr/bin";
  std::vector<std::string> out;
  for (std::size_t start = 0;;) {
    const std::size_t end = std::min(path.find(':', start), path.size());
    const std::string_view dir = path.substr(start, end - start);
    out.push_back(dir.empty() ? file : std::string(dir) + "/" + file);
    if (end == path.size()) break;
    start = end + 1;
  }
  return out;
}

// In the child: execve each candidate as execvpe does (a missing one, or
// one we may not run, is passed over; any other failure ends the search),
// or report and _exit(127). Unlike execvpe, a file without a #! line is
// not handed to /bin/sh: no caller runs one.
[[noreturn]] void child_exec(const std::vector<char*>& paths, char* const* argv, char* const* envp,
                             const char* who) {
  int err = ENOENT;
  bool denied = false;
  for (char* p : paths) {
    ::execve(p, argv, envp);
    err = errno;
    if (err == EACCES) {
      denied = true;
    } else if (err != ENOENT && err != ESTALE && err != ENOTDIR && err != ENODEV && err != ETIMEDOUT) {
      break;
    }
  }
  if (denied && (err == ENOENT || err == ESTALE || err == ENOTDIR || err == ENODEV || err == ETIMEDOUT)) err = EACCES;
  child_fail(127, err, {who, ": cannot run ", argv[0]});
}

}  // namespace

// Under /tmp whatever $TMPDIR says, and 0755: the tests run_as() other uids,
// which must be able to reach the mount.
Mount::Mount(const MountOptions& opts) : tmp_("vsymfs-it", 0755, "/tmp") {
  const std::string& root = tmp_.path();
  src_ = root + "/src";
  mnt_ = root + "/mnt";
  log_ = root + "/daemon.log";
  fs::create_directory(src_);
  fs::create_directory(mnt_);
  ::chmod(src_.c_str(), 0755);

  std::vector<std::string> args{vsymfs_bin(), "-f"};
  // allow_other, unless the test asks for allow_root (libfuse takes one).
  const bool allow_root =
      std::find(opts.extra_opts.begin(), opts.extra_opts.end(), "allow_root") != opts.extra_opts.end();
  std::string o = allow_root ? "default_permissions" : "allow_other";
  if (!opts.rules_text.empty()) {
    rules_ = root + "/rules.toml";
    std::ofstream(rules_) << opts.rules_text;
    o += ",rules=" + rules_;
  } else {
    o += ",builtin_rules";
  }
  // The io_uring run of the suite (with_uring): before the test's own
  // options, so that a test that names its transport keeps it.
  if (uring_run()) o += ",uring";
  for (const auto& e : opts.extra_opts) o += "," + e;
  args.push_back("-o");
  args.push_back(o);
  for (const auto& a : opts.extra_args) args.push_back(a);
  args.push_back(opts.source.empty() ? src_ : opts.source);
  args.push_back(mnt_);

  struct stat parent {};
  ::stat(root.c_str(), &parent);

  // The child only makes system calls (see child_fail).
  const std::vector<char*> argv = c_array(args);
  const char* log = log_.c_str();
  pid_ = ::fork();
  if (pid_ < 0) throw std::runtime_error(std::string("fork: ") + std::strerror(errno));
  if (pid_ == 0) {
    int fd = ::open(log, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd >= 0) {
      ::dup2(fd, 2);
      ::dup2(fd, 1);
    }
    if (opts.nofile_limit != 0) {
      struct rlimit rl {opts.nofile_limit, opts.nofile_limit};
      if (::setrlimit(RLIMIT_NOFILE, &rl) != 0) child_fail(126, errno, {"Mount: setrlimit(RLIMIT_NOFILE)"});
    }
    if (opts.before_exec) opts.before_exec();
    ::execv(argv[0], argv.data());
    child_fail(127, errno, {"Mount: cannot run ", argv[0]});
  }
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(15);
  while (!is_mounted(mnt_, parent.st_dev, &dev_)) {
    int status = 0;
    if (::waitpid(pid_, &status, WNOHANG) == pid_) {
      pid_ = -1;
      throw std::runtime_error("vsymfs exited before mounting: " + daemon_log());
    }
    if (std::chrono::steady_clock::now() > deadline) {
      stop();
      throw std::runtime_error("vsymfs did not mount within 15 s: " + daemon_log());
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
}

std::string Mount::daemon_log() const {
  std::ifstream in(log_);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

void Mount::stop() {
  stop_with([](pid_t pid) { ::kill(pid, SIGTERM); });  // SIGTERM must unmount cleanly
}

void Mount::stop_with(const std::function<void(pid_t)>& send) {
  if (pid_ > 0) {
    send(pid_);
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    int status = 0;
    bool forced = false;
    std::string threads;
    while (::waitpid(pid_, &status, WNOHANG) == 0) {
      if (std::chrono::steady_clock::now() > deadline) {
        threads = thread_report(pid_);
        ::kill(pid_, SIGKILL);
        ::waitpid(pid_, &status, 0);
        forced = true;
        break;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    pid_ = -1;
    // The only clean end is exit 0 after SIGTERM. A sanitizer build reports
    // memory errors and leaks as a non-zero exit, so this is also what makes
    // the integration suite an ASan/UBSan test of the daemon. A SIGKILL the
    // test sent itself (a crash-safety test) is not the daemon's fault.
    if (forced) {
      ADD_FAILURE() << "vsymfs did not exit within 10 s of SIGTERM; its threads then:\n"
                    << threads << "log:\n" << daemon_log();
    } else if (WIFSIGNALED(status) && WTERMSIG(status) != SIGKILL) {
      ADD_FAILURE() << "vsymfs died of signal " << WTERMSIG(status) << "; log:\n" << daemon_log();
    } else if (WIFEXITED(status) && WEXITSTATUS(status) != 0) {
      ADD_FAILURE() << "vsymfs exited with status " << WEXITSTATUS(status) << " after SIGTERM; log:\n"
                    << daemon_log();
    }
  }
  // Whatever the daemon did, leave nothing mounted.
  ::umount2(mnt_.c_str(), MNT_DETACH);
}

Mount::~Mount() { stop(); }

bool Mount::abort_connection() {
  // The kernel names a connection by its device number, as dev_t is inside
  // the kernel (major << 20 | minor).
  const std::string abort_file = std::string(kFusectl) + "/" +
                                 std::to_string((static_cast<unsigned long>(major(dev_)) << 20) | minor(dev_)) +
                                 "/abort";
  bool mounted_here = false;
  if (::access(abort_file.c_str(), W_OK) != 0 && ::mount("fusectl", kFusectl, "fusectl", 0, nullptr) == 0)
    mounted_here = true;
  bool written = false;
  if (int fd = ::open(abort_file.c_str(), O_WRONLY | O_CLOEXEC); fd >= 0) {
    written = ::write(fd, "1", 1) == 1;
    ::close(fd);
  }
  if (mounted_here) ::umount2(kFusectl, MNT_DETACH);  // as we found it
  ::umount2(mnt_.c_str(), MNT_DETACH);
  aborted_ = true;
  return written;
}

Watchdog::Watchdog(std::vector<Mount*> mounts, std::chrono::milliseconds limit) : mounts_(std::move(mounts)) {
  thread_ = std::thread([this, limit] {
    std::unique_lock lock(mu_);
    if (cv_.wait_for(lock, limit, [this] { return disarmed_; })) return;
    fired_ = true;
    for (Mount* m : mounts_) m->abort_connection();
  });
}

void Watchdog::disarm() {
  {
    std::lock_guard lock(mu_);
    disarmed_ = true;
  }
  cv_.notify_one();
  if (thread_.joinable()) thread_.join();
}

Watchdog::~Watchdog() { disarm(); }

int run_as(const As& who, const std::function<int()>& fn) {
  pid_t pid = ::fork();
  if (pid < 0) return -1;
  if (pid == 0) {
    if (::setgroups(who.groups.size(), who.groups.data()) != 0) ::_exit(120);
    if (::setresgid(who.gid, who.gid, who.gid) != 0) ::_exit(121);
    if (::setresuid(who.uid, who.uid, who.uid) != 0) ::_exit(122);
    if (!who.env.empty() || !who.keep_env) {
      if (!who.keep_env) ::clearenv();
      for (const auto& kv : who.env) ::putenv(const_cast<char*>(kv.c_str()));
    }
    ::_exit(fn());
  }
  int status = 0;
  ::waitpid(pid, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

std::string capture_as(const As& who, const std::vector<std::string>& argv, int* status_out,
                       std::chrono::seconds limit) {
  if (status_out) *status_out = -1;
  std::string name;  // the command, for failure messages
  for (const auto& a : argv) name += (name.empty() ? "" : " ") + a;
  if (argv.empty()) {
    ADD_FAILURE() << "capture_as: no command";
    return {};
  }
  // Everything the child needs, built here: it only makes system calls
  // (see child_fail). Our environment is copied, not pointed into.
  std::vector<std::string> args = argv, env, paths = exec_candidates(argv[0]);
  if (who.keep_env)
    for (char** e = environ; *e != nullptr; ++e) env.emplace_back(*e);
  env.insert(env.end(), who.env.begin(), who.env.end());
  const std::vector<char*> cargv = c_array(args), envp = c_array(env);
  std::vector<char*> cpaths = c_array(paths);
  cpaths.pop_back();  // a list to try, not an argv

  int pipefd[2];
  if (::pipe2(pipefd, O_CLOEXEC) != 0) {
    ADD_FAILURE() << "capture_as: pipe2: " << std::strerror(errno);
    return {};
  }
  const pid_t pid = ::fork();
  if (pid < 0) {
    const int err = errno;
    ::close(pipefd[0]);
    ::close(pipefd[1]);
    ADD_FAILURE() << "capture_as: fork for `" << name << "`: " << std::strerror(err);
    return {};
  }
  if (pid == 0) {
    ::dup2(pipefd[1], 1);
    if (::setgroups(who.groups.size(), who.groups.data()) != 0) child_fail(120, errno, {"capture_as: setgroups"});
    if (::setresgid(who.gid, who.gid, who.gid) != 0) child_fail(121, errno, {"capture_as: setresgid"});
    if (::setresuid(who.uid, who.uid, who.uid) != 0) child_fail(122, errno, {"capture_as: setresuid"});
    child_exec(cpaths, cargv.data(), envp.data(), "capture_as");
  }
  ::close(pipefd[1]);

  // The command's output is read until it exits, not until the pipe's
  // end: another process may hold the pipe too (one forked meanwhile by
  // another thread of the test inherits it, as does anything the command
  // leaves running), and end-of-file would then wait for that one. And
  // never wait forever: a command not done by the deadline is killed, and
  // the test fails saying so.
  using Clock = std::chrono::steady_clock;
  const auto deadline = Clock::now() + limit;
  const auto ms_left = [&] {
    return std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
  };
  const int pidfd = static_cast<int>(::syscall(SYS_pidfd_open, pid, 0));
  std::string out;
  bool exited = false, timed_out = false, failed = pidfd < 0;
  if (failed) ADD_FAILURE() << "capture_as: pidfd_open: " << std::strerror(errno);
  bool eof = false;
  char buf[4096];
  while (!failed && !exited) {
    const auto left = ms_left();
    if (left <= 0) {
      timed_out = true;
      break;
    }
    pollfd p[2] = {{eof ? -1 : pipefd[0], POLLIN, 0}, {pidfd, POLLIN, 0}};
    const int rc = ::poll(p, 2, static_cast<int>(left));
    if (rc < 0 && errno == EINTR) continue;
    if (rc < 0) {
      ADD_FAILURE() << "capture_as: poll: " << std::strerror(errno);
      failed = true;
    } else if (p[0].revents != 0) {  // output first, then the exit
      const ssize_t n = ::read(pipefd[0], buf, sizeof buf);
      if (n > 0) {
        out.append(buf, static_cast<size_t>(n));
      } else if (n == 0 || errno != EINTR) {
        eof = true;
      }
    } else if (p[1].revents != 0) {
      exited = true;
    }
  }
  // Whatever it wrote before it exited is in the pipe.
  if (exited && !eof && ::fcntl(pipefd[0], F_SETFL, O_NONBLOCK) == 0) {
    ssize_t n;
    while ((n = ::read(pipefd[0], buf, sizeof buf)) > 0 || (n < 0 && errno == EINTR))
      if (n > 0) out.append(buf, static_cast<size_t>(n));
  }
  ::close(pipefd[0]);
  if (pidfd >= 0) ::close(pidfd);
  if (!exited) ::kill(pid, SIGKILL);  // timed out, or nobody can wait for it
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  const int code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  if (timed_out)
    ADD_FAILURE() << "capture_as: `" << name << "` had not finished after " << limit.count()
                  << " s and was killed; its output so far:\n"
                  << out;
  if (status_out) *status_out = code;
  return out;
}

}  // namespace vsymfs::testing
