// Run a command as some identity, with an exact environment, capturing its
// stdout, and never wait forever: a test that would hang fails instead. For
// the variant-link tests, which need what mount_fixture's run_as cannot give:
// an environment visible in /proc (so an execve), real and effective ids
// that differ, a personality, a time limit.
#pragma once

#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <functional>
#include <string>
#include <vector>

namespace vsymfs::testing {

struct Spawn {
  std::vector<std::string> argv;       // argv[0] is a path (no PATH search)
  std::vector<std::string> env;        // the whole environment of the new image
  uid_t ruid = 0, euid = 0;            // ids after the switch (root: no switch)
  gid_t gid = 0;
  std::vector<gid_t> groups;
  std::function<void()> before_exec;   // in the child, after the id switch
  std::string cwd;                     // "" = inherit
  int timeout_ms = 20'000;
};

struct Outcome {
  bool timed_out = false;
  int status = -1;  // exit status, or 128+signal
  std::string out;  // stdout
  explicit operator bool() const { return !timed_out && status == 0; }
};

inline Outcome run(const Spawn& s) {
  Outcome o;
  int pipefd[2];
  if (::pipe2(pipefd, O_CLOEXEC) != 0) return o;
  std::vector<std::string> argv = s.argv, env = s.env;
  std::vector<char*> a, e;
  for (auto& x : argv) a.push_back(x.data());
  a.push_back(nullptr);
  for (auto& x : env) e.push_back(x.data());
  e.push_back(nullptr);

  pid_t pid = ::fork();
  if (pid < 0) return o;
  if (pid == 0) {
    ::dup2(pipefd[1], 1);
    if (::setgroups(s.groups.size(), s.groups.data()) != 0) ::_exit(120);
    if (::setresgid(s.gid, s.gid, s.gid) != 0) ::_exit(121);
    if (::setresuid(s.ruid, s.euid, s.euid) != 0) ::_exit(122);
    if (!s.cwd.empty() && ::chdir(s.cwd.c_str()) != 0) ::_exit(123);
    if (s.before_exec) s.before_exec();
    ::execve(a[0], a.data(), e.data());
    ::_exit(127);
  }
  ::close(pipefd[1]);
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(s.timeout_ms);
  char buf[4096];
  for (;;) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now()).count();
    if (left <= 0) {
      o.timed_out = true;
      break;
    }
    pollfd p{pipefd[0], POLLIN, 0};
    int rc = ::poll(&p, 1, static_cast<int>(left));
    if (rc < 0 && errno == EINTR) continue;
    if (rc <= 0) {
      o.timed_out = rc == 0;
      break;
    }
    ssize_t n = ::read(pipefd[0], buf, sizeof buf);
    if (n <= 0) break;  // EOF: the command closed stdout (exited)
    o.out.append(buf, static_cast<std::size_t>(n));
  }
  ::close(pipefd[0]);
  if (o.timed_out) ::kill(pid, SIGKILL);
  // stdout is closed; the exit itself must follow promptly.
  int status = 0;
  for (int i = 0; i < 2000; ++i) {
    if (::waitpid(pid, &status, o.timed_out ? 0 : WNOHANG) == pid) {
      o.status = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
      return o;
    }
    ::usleep(10'000);
  }
  o.timed_out = true;
  ::kill(pid, SIGKILL);
  ::waitpid(pid, &status, 0);
  return o;
}

}  // namespace vsymfs::testing
