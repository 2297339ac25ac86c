// The vsymctl commands that need no mount (expand, check), the binary run
// for real: output, error messages and exit codes as documented in
// vsymctl(1).
#include <fcntl.h>
#include <poll.h>
#include <pwd.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "common/temp_dir.hpp"

namespace {

using ::testing::HasSubstr;

struct Outcome {
  int status = -1;
  std::string out, err;
};

std::string drain(int fd) {
  std::string s;
  char buf[4096];
  ssize_t n;
  while ((n = ::read(fd, buf, sizeof buf)) > 0) s.append(buf, static_cast<std::size_t>(n));
  return s;
}

// Runs vsymctl with a fixed, small environment (the dry run inherits ours).
Outcome vsymctl(const std::vector<std::string>& args) {
  const char* bin = std::getenv("VSYMCTL_BIN");
  std::vector<std::string> argv{bin != nullptr ? bin : "vsymctl"};
  argv.insert(argv.end(), args.begin(), args.end());
  int out[2], err[2];
  if (::pipe2(out, O_CLOEXEC) != 0 || ::pipe2(err, O_CLOEXEC) != 0) return {};
  const pid_t pid = ::fork();
  if (pid == 0) {
    ::dup2(out[1], 1);
    ::dup2(err[1], 2);
    std::vector<char*> cargv;
    for (auto& a : argv) cargv.push_back(a.data());
    cargv.push_back(nullptr);
    char env0[] = "PATH=/usr/bin:/bin";
    char* envp[] = {env0, nullptr};
    ::execve(cargv[0], cargv.data(), envp);
    ::_exit(99);
  }
  ::close(out[1]);
  ::close(err[1]);
  Outcome o;
  // Outputs are small: reading one pipe to its end cannot block the other.
  o.out = drain(out[0]);
  o.err = drain(err[0]);
  ::close(out[0]);
  ::close(err[0]);
  int status = 0;
  ::waitpid(pid, &status, 0);
  o.status = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  return o;
}

struct Case {
  const char* what;
  std::vector<std::string> args;
  int status;
  std::string out;        // exact stdout
  std::string err_has;    // substring of stderr ("" = stderr must be empty)
};

TEST(VsymctlExpand, Table) {
  const passwd* me = ::getpwuid(::getuid());
  ASSERT_NE(me, nullptr);
  const std::string name = me->pw_name;
  const std::string uid = std::to_string(me->pw_uid);
  const std::vector<Case> cases = {
      {"identity builtins", {"expand", "--user", name, "/h/${USER}/@{uid}"}, 0, "/h/" + name + "/" + uid + "\n", ""},
      {"numeric uid without passwd entry", {"expand", "--uid", "4242", "@{uid}:@{gid}"}, 0, "4242:4242\n", ""},
      {"our own environment is inherited", {"expand", "$PATH"}, 0, "/usr/bin:/bin\n", ""},
      {"not when asked", {"expand", "--clean-env", "${PATH:-none}"}, 0, "none\n", ""},
      {"another user does not get ours", {"expand", "--uid", "4242", "${PATH:-none}"}, 0, "none\n", ""},
      {"--env, first definition wins", {"expand", "-e", "P=x", "-e", "P=y", "--env", "Q=z", "${P}-${Q}"}, 0,
       "x-z\n", ""},
      {"secure ignores the process scope", {"expand", "--secure", "-e", "P=x", "${P:-none}"}, 0, "none\n", ""},
      {"32-bit arch", {"expand", "--arch", "i686", "@machine"}, 0, "i686\n", ""},
      {"32-bit arch gets the 32-bit sysnames", {"expand", "--arch", "i686", "@sys"}, 0, "i386_linux26\n", ""},
      {"another native arch gets its own sysnames", {"expand", "--arch", "aarch64", "@{sys}/@{machine}"}, 0,
       "arm64_linux26/aarch64\n", ""},
      {"hostname", {"expand", "--hostname", "node7", "@hostname"}, 0, "node7\n", ""},
      {"universe", {"expand", "--universe", "ucb", "att=/a ucb=/u"}, 0, "/u\n", ""},
      {"default universe", {"expand", "--clean-env", "att=/a ucb=/u"}, 0, "/a\n", ""},
      {"explain", {"expand", "--explain", "--clean-env", "-e", "P=x", "${P}/{memb}"}, 0,
       "x/member0\nrules: <built-in>\n  ${P} = x  (process)\n  {memb} = member0  (builtin)\n", ""},
      {"unknown universe", {"expand", "--universe", "bsd", "x"}, 2, "", "vsymctl: EINVAL: unknown universe 'bsd'"},
      {"unknown user", {"expand", "--user", "no-such-user-here", "x"}, 2, "", "vsymctl: ENOENT: no such user"},
      {"bad --env", {"expand", "--env", "novalue", "x"}, 2, "", "vsymctl: EINVAL: --env expects NAME=VALUE"},
      {"missing rules file", {"expand", "--rules", "/nonexistent/rules.toml", "x"}, 1, "", "vsymctl: ENOENT"},
      {"missing probe root", {"expand", "--probe-root", "/nonexistent", "@sys"}, 2, "", "cannot open --probe-root"},
      {"no text", {"expand"}, 2, "", "text is required"},
      {"unknown option", {"expand", "--bogus", "x"}, 2, "", "--bogus"},
      {"no command", {}, 2, "", "A subcommand is required"},
      {"too long", {"expand", std::string(5000, 'a')}, 1, "", "vsymctl: ENAMETOOLONG"},
  };
  for (const Case& c : cases) {
    const Outcome o = vsymctl(c.args);
    EXPECT_EQ(o.status, c.status) << c.what << "\n" << o.err;
    EXPECT_EQ(o.out, c.out) << c.what;
    if (c.err_has.empty()) {
      EXPECT_EQ(o.err, "") << c.what;
    } else {
      EXPECT_THAT(o.err, HasSubstr(c.err_has)) << c.what;
    }
  }
}

TEST(VsymctlExpand, UndefinedPolicyErrorAndProbing) {
  const vsymfs::test::TempDir tmp("vsymctl-test");
  const std::filesystem::path dir = tmp.path();
  std::filesystem::create_directories(dir / "probe/i386_linux26");
  const std::string rules = (dir / "rules.toml").string();
  std::ofstream(rules) << "[syntax]\nundefined = \"error\"\n";

  const Outcome undefined = vsymctl({"expand", "--rules", rules, "${NOPE}"});
  EXPECT_EQ(undefined.status, 1);
  EXPECT_EQ(undefined.out, "");
  EXPECT_THAT(undefined.err, ::testing::StartsWith("vsymctl: ENOENT: "));

  // Without probing @sys takes the first candidate; with it, the first that exists.
  const Outcome first = vsymctl({"expand", "@sys"});
  const Outcome probed = vsymctl({"expand", "--probe-root", (dir / "probe").string(), "@sys"});
  EXPECT_EQ(probed.status, 0);
  EXPECT_EQ(probed.out, "i386_linux26\n");
  EXPECT_NE(first.out, probed.out) << "the native list must not start with the 32-bit name";
}

TEST(VsymctlCheck, OkAndErrors) {
  const vsymfs::test::TempDir tmp("vsymctl-check");
  const std::filesystem::path dir = tmp.path();
  const std::string good = (dir / "good.toml").string();
  const std::string bad = (dir / "bad.toml").string();
  std::ofstream(good) << "[vars]\nA = \"1\"\n";
  std::ofstream(bad) << "[syntax]\nundefind = \"error\"\n";

  const Outcome ok = vsymctl({"check", good});
  EXPECT_EQ(ok.status, 0);
  EXPECT_EQ(ok.out, good + ": ok\n");
  EXPECT_EQ(ok.err, "");

  const Outcome both = vsymctl({"check", good, bad});
  EXPECT_EQ(both.status, 1);
  EXPECT_EQ(both.out, good + ": ok\n");
  EXPECT_THAT(both.err, HasSubstr(bad + ":2:1: unknown key 'undefind'"));

  const Outcome missing = vsymctl({"check", (dir / "absent.toml").string()});
  EXPECT_EQ(missing.status, 1);
  EXPECT_NE(missing.err, "");
}

TEST(VsymctlDaemonCommands, OutsideAMountExitWithNoDaemon) {
  for (const std::vector<std::string>& args :
       {std::vector<std::string>{"--mount", "/", "status"}, {"--mount", "/", "list"},
        {"--mount", "/", "set", "A", "b"}, {"--socket", "/nonexistent/sock", "status"}}) {
    const Outcome o = vsymctl(args);
    EXPECT_EQ(o.status, 3) << args.back() << ": " << o.err;
    EXPECT_THAT(o.err, ::testing::StartsWith("vsymctl: E"));
  }
  const Outcome run = vsymctl({"--mount", "/", "run", "--universe", "ucb", "--", "/bin/true"});
  EXPECT_EQ(run.status, 125) << "--mount named a path with no daemon";
  const Outcome run_default = vsymctl({"run", "--universe", "ucb", "--", "/bin/sh", "-c", "echo $UNIVERSE; exit 3"});
  EXPECT_EQ(run_default.status, 3);
  EXPECT_EQ(run_default.out, "ucb\n");
  EXPECT_EQ(vsymctl({"run", "--", "/nonexistent/cmd"}).status, 127);
  EXPECT_EQ(vsymctl({"run", "--", "/etc/passwd"}).status, 126);
}

}  // namespace
