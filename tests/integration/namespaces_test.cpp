// Callers in other namespaces, without a container runtime (issue 12, test
// a): processes under new UTS, mount and pid namespaces (what `unshare
// --uts --mount --pid --fork` makes), each with its host name and its own
// /etc/passwd and /etc/group bind-mounted, read the same links of one mount
// served by a daemon on the host. And a daemon that cannot see its caller
// (pid 0).
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "child_process.hpp"
#include "mount_fixture.hpp"

namespace vsymfs::testing {
namespace {

namespace fs = std::filesystem;

constexpr const char* kRules = R"(
[process]
allow = ["FOO"]

[host."ctr-a"]
COLOR = "red"

[host."ctr-b"]
COLOR = "blue"

[host."*"]
COLOR = "grey"
)";

// One caller's view: what it should see in a container.
struct Container {
  std::string hostname;
  std::string domainname;
  std::string passwd;  // a file to bind over /etc/passwd
  std::string group;   // ... and /etc/group
  uid_t uid = 0;
  gid_t gid = 0;
  // When set: a root directory of its own (with /usr bound in, the mount
  // bound at /mnt), entered with chroot after the binds above.
  std::string root;
  std::string mount;
};

// Writes what each link reads as NAME=TARGET lines, in a shell of its own:
// `script` runs under /bin/sh with MNT set.
const char* const kReadAll =
    "for l in h hn d c u home g; do printf '%s=%s\\n' $l \"$(readlink \"$MNT/$l\")\"; done";

std::map<std::string, std::string> parse(const std::string& out) {
  std::map<std::string, std::string> m;
  std::istringstream in(out);
  std::string line;
  while (std::getline(in, line)) {
    const auto eq = line.find('=');
    if (eq != std::string::npos) m[line.substr(0, eq)] = line.substr(eq + 1);
  }
  return m;
}

// Runs `script` under /bin/sh as `c` says: new UTS, mount and pid
// namespaces (the shell is pid 1 of its own), the host name and domain name
// set, /etc/passwd and /etc/group bound over, then the ids switched.
Outcome run_in(const Container& c, const std::string& mnt, const std::string& script,
               std::vector<std::string> env = {}) {
  Spawn s;
  s.argv = {"/bin/sh", "-c", script};
  env.push_back("MNT=" + mnt);
  env.push_back("PATH=/usr/sbin:/usr/bin:/sbin:/bin");
  s.env = env;
  s.before_exec = [&c] {
    if (::unshare(CLONE_NEWUTS | CLONE_NEWNS | CLONE_NEWPID) != 0) ::_exit(130);
    const pid_t child = ::fork();
    if (child < 0) ::_exit(131);
    if (child > 0) {
      int status = 0;
      if (::waitpid(child, &status, 0) != child) ::_exit(132);
      ::_exit(WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status));
    }
    if (::mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0) ::_exit(133);
    if (::sethostname(c.hostname.data(), c.hostname.size()) != 0) ::_exit(134);
    if (::setdomainname(c.domainname.data(), c.domainname.size()) != 0) ::_exit(135);
    if (::mount(c.passwd.c_str(), "/etc/passwd", nullptr, MS_BIND, nullptr) != 0) ::_exit(136);
    if (::mount(c.group.c_str(), "/etc/group", nullptr, MS_BIND, nullptr) != 0) ::_exit(137);
    if (!c.root.empty()) {
      const std::string usr = c.root + "/usr", inner = c.root + "/mnt";
      if (::mount("/usr", usr.c_str(), nullptr, MS_BIND | MS_REC, nullptr) != 0) ::_exit(139);
      if (::mount(c.mount.c_str(), inner.c_str(), nullptr, MS_BIND, nullptr) != 0) ::_exit(140);
      if (::chroot(c.root.c_str()) != 0 || ::chdir("/") != 0) ::_exit(141);
    }
    if (::setgroups(0, nullptr) != 0 || ::setresgid(c.gid, c.gid, c.gid) != 0 || ::setresuid(c.uid, c.uid, c.uid) != 0)
      ::_exit(138);
  };
  return run(s);
}

class Namespaces : public ::testing::Test {
 protected:
  void SetUp() override {
    MountOptions o;
    o.rules_text = kRules;
    mount_ = std::make_unique<Mount>(o);
    for (const auto& [name, target] : std::vector<std::pair<std::string, std::string>>{
             {"h", "@hostname"}, {"hn", "${HOSTNAME}"}, {"d", "@domainname"}, {"c", "${COLOR}"},
             {"u", "${USER}"}, {"home", "${HOME}"}, {"g", "${GROUP}"}, {"foo", "${FOO:-none}"}})
      ASSERT_EQ(::symlink(target.c_str(), mount_->src(name).c_str()), 0) << name;
    files_ = mount_->root() + "/etc";
    fs::create_directory(files_);
    ::chmod(files_.c_str(), 0755);
    a_ = container("ctr-a", "dom-a", "alice-a", "/home/a");
    b_ = container("ctr-b", "dom-b", "bob-b", "/srv/b");
  }

  // uid/gid 4711 is "<user>" with `home` there, gid 4711 "<user>-grp".
  Container container(const std::string& host, const std::string& domain, const std::string& user,
                      const std::string& home) {
    Container c{host, domain, files_ + "/passwd." + host, files_ + "/group." + host, 4711, 4711};
    std::ofstream(c.passwd) << "root:x:0:0:root:/root:/bin/sh\n" << user << ":x:4711:4711::" << home << ":/bin/sh\n";
    std::ofstream(c.group) << "root:x:0:\n" << user << "-grp:x:4711:\n";
    return c;
  }

  std::unique_ptr<Mount> mount_;
  std::string files_;
  Container a_, b_;
};

TEST_F(Namespaces, EachContainerSeesItsOwnHostAndUsers) {
  Watchdog dog({mount_.get()}, std::chrono::seconds(60));
  const Outcome ra = run_in(a_, mount_->mnt(), kReadAll);
  const Outcome rb = run_in(b_, mount_->mnt(), kReadAll);
  ASSERT_TRUE(ra) << ra.status << " " << ra.out << mount_->daemon_log();
  ASSERT_TRUE(rb) << rb.status << " " << rb.out << mount_->daemon_log();
  auto a = parse(ra.out), b = parse(rb.out);
  EXPECT_EQ(a["h"], "ctr-a");
  EXPECT_EQ(a["hn"], "ctr-a");
  EXPECT_EQ(a["d"], "dom-a");
  EXPECT_EQ(a["c"], "red");
  EXPECT_EQ(a["u"], "alice-a");
  EXPECT_EQ(a["home"], "/home/a");
  EXPECT_EQ(a["g"], "alice-a-grp");
  EXPECT_EQ(b["h"], "ctr-b");
  EXPECT_EQ(b["hn"], "ctr-b");
  EXPECT_EQ(b["d"], "dom-b");
  EXPECT_EQ(b["c"], "blue");
  EXPECT_EQ(b["u"], "bob-b");
  EXPECT_EQ(b["home"], "/srv/b");
  EXPECT_EQ(b["g"], "bob-b-grp");

  // The host itself (the daemon's namespaces) still gets the host's.
  utsname u{};
  ASSERT_EQ(::uname(&u), 0);
  EXPECT_EQ(fs::read_symlink(mount_->mnt("h")).string(), u.nodename);
  EXPECT_EQ(fs::read_symlink(mount_->mnt("c")).string(),
            std::string(u.nodename) == "ctr-a" || std::string(u.nodename) == "ctr-b" ? fs::read_symlink(mount_->mnt("c")).string()
                                                                                      : "grey");
  dog.disarm();
}

// A sethostname inside the namespace shows at the next lookup the kernel
// does not answer from its cache (per-caller links are not cached).
TEST_F(Namespaces, ACallerThatChangesItsHostNameSeesTheNewOne) {
  Watchdog dog({mount_.get()}, std::chrono::seconds(60));
  Container root_a = a_;
  root_a.uid = root_a.gid = 0;
  const Outcome r = run_in(root_a, mount_->mnt(),
                           "printf 'before=%s\\n' \"$(readlink \"$MNT/h\")\"; hostname ctr-b || exit 3; "
                           "printf 'after=%s\\n' \"$(readlink \"$MNT/h\")\"; "
                           "printf 'color=%s\\n' \"$(readlink \"$MNT/c\")\"; "
                           "printf 'user=%s\\n' \"$(readlink \"$MNT/u\")\"");
  ASSERT_TRUE(r) << r.status << " " << r.out << mount_->daemon_log();
  auto m = parse(r.out);
  EXPECT_EQ(m["before"], "ctr-a");
  EXPECT_EQ(m["after"], "ctr-b");
  EXPECT_EQ(m["color"], "blue") << "the host tables follow the new name";
  EXPECT_EQ(m["user"], "root");
  dog.disarm();
}

// A container whose files the daemon cannot use gets numbers, never the
// host's names for its ids: /etc/passwd a link out of its root (which
// RESOLVE_IN_ROOT keeps inside: there is no such file there), or too large.
TEST_F(Namespaces, UnusableAccountFilesGiveNumbers) {
  Watchdog dog({mount_.get()}, std::chrono::seconds(60));
  Container big = a_;
  big.passwd = files_ + "/passwd.big";
  {
    std::ofstream out(big.passwd);
    out << "alice-a:x:4711:4711::/home/a:/bin/sh\n";
    const std::string filler(100, 'x');
    for (int i = 0; i < 50'000; ++i) out << "#" << filler << "\n";  // ~5 MB, over the 4 MiB bound
  }
  const Outcome r = run_in(big, mount_->mnt(), kReadAll);
  ASSERT_TRUE(r) << r.status << " " << r.out << mount_->daemon_log();
  auto m = parse(r.out);
  EXPECT_EQ(m["u"], "4711");
  EXPECT_EQ(m["h"], "ctr-a") << "the host name does not depend on the files";
  dog.disarm();
}

// /etc/passwd of a caller in a root of its own is a link to an absolute
// path that, resolved from the daemon's root, is a file saying uid 4711 is
// "escaped". Read through /proc/PID/root it must resolve inside the
// caller's root (RESOLVE_IN_ROOT), where there is no such file: a number.
TEST_F(Namespaces, ALinkNeverLeadsOutOfTheCallersRoot) {
  const std::string outside = files_ + "/outside-passwd";
  std::ofstream(outside) << "escaped:x:4711:4711::/escaped:/bin/sh\n";
  const std::string root = mount_->root() + "/croot";
  for (const char* d : {"", "/usr", "/mnt", "/etc", "/tmp", "/proc"}) fs::create_directory(root + d);
  for (const char* l : {"bin", "lib", "lib64", "sbin"}) {
    std::error_code ec;
    const fs::path target = fs::read_symlink(std::string("/") + l, ec);
    if (!ec) fs::create_symlink(target, root + "/" + l);
  }
  fs::create_symlink(outside, root + "/etc/passwd");
  std::ofstream(root + "/etc/group") << "g:x:4711:\n";
  Container c = a_;
  c.root = root;
  c.mount = mount_->mnt();
  Watchdog dog({mount_.get()}, std::chrono::seconds(60));
  const Outcome r = run_in(c, "/mnt", kReadAll);
  ASSERT_TRUE(r) << r.status << " " << r.out << mount_->daemon_log();
  auto m = parse(r.out);
  EXPECT_EQ(m["u"], "4711") << "the link was followed out of the caller's root";
  EXPECT_EQ(m["g"], "g") << "its own /etc/group is read";
  EXPECT_EQ(m["h"], "ctr-a");
  dog.disarm();
}

// -o daemon_nss: every caller's names from the daemon's NSS.
TEST(NamespacesOptions, DaemonNssGivesTheHostsNames) {
  MountOptions o;
  o.rules_text = kRules;
  o.extra_opts = {"daemon_nss"};
  Mount m(o);
  ASSERT_EQ(::symlink("${USER}", m.src("u").c_str()), 0);
  const std::string files = m.root() + "/etc";
  fs::create_directory(files);
  std::ofstream(files + "/passwd") << "croot:x:0:0::/croot:/bin/sh\n";
  std::ofstream(files + "/group") << "croot:x:0:\n";
  Container c{"ctr-a", "dom-a", files + "/passwd", files + "/group", 0, 0};
  Watchdog dog({&m}, std::chrono::seconds(60));
  const Outcome r = run_in(c, m.mnt(), "readlink \"$MNT/u\"");
  ASSERT_TRUE(r) << r.status << " " << r.out << m.daemon_log();
  EXPECT_EQ(r.out, "root\n");
  dog.disarm();
}

// The kernel gives pid 0 for a caller outside the daemon's pid namespace
// (a daemon in a container, a caller on the host). Such a caller gets the
// daemon's namespaces (its host name) and no process scope; it is served,
// not refused.
volatile pid_t g_daemon_child = 0;
void forward_term(int) {
  if (g_daemon_child > 0) ::kill(g_daemon_child, SIGTERM);
}

TEST(NamespacesInvisible, ACallerOutsideTheDaemonsPidNamespaceGetsTheDaemonsNamespaces) {
  MountOptions o;
  o.rules_text = kRules;
  // The daemon as pid 1 of a pid and UTS namespace of its own, host name
  // "vsymfs-daemon-ns" there; its parent forwards SIGTERM and its status.
  o.before_exec = [] {
    if (::unshare(CLONE_NEWPID | CLONE_NEWUTS) != 0) ::_exit(140);
    static const char kName[] = "vsymfs-daemon-ns";
    if (::sethostname(kName, sizeof kName - 1) != 0) ::_exit(141);
    const pid_t child = ::fork();
    if (child < 0) ::_exit(142);
    if (child == 0) return;
    g_daemon_child = child;
    struct sigaction sa {};
    sa.sa_handler = forward_term;
    ::sigaction(SIGTERM, &sa, nullptr);
    int status = 0;
    while (::waitpid(child, &status, 0) < 0 && errno == EINTR) {
    }
    ::_exit(WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status));
  };
  Mount m(o);
  ASSERT_EQ(::symlink("@hostname", m.src("h").c_str()), 0);
  ASSERT_EQ(::symlink("${FOO:-none}", m.src("foo").c_str()), 0);
  Watchdog dog({&m}, std::chrono::seconds(60));
  Spawn s;
  s.argv = {"/usr/bin/readlink", m.mnt("h"), m.mnt("foo")};
  s.env = {"FOO=from-the-environment"};
  const Outcome r = run(s);
  ASSERT_TRUE(r) << r.status << " " << r.out << m.daemon_log();
  EXPECT_EQ(r.out, "vsymfs-daemon-ns\nnone\n") << "the daemon's host name; no process scope for pid 0";
  dog.disarm();
}

}  // namespace
}  // namespace vsymfs::testing
