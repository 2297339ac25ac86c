// `vsymfs [options] SOURCE MOUNTPOINT`: libfuse-style options, in any
// position (mount.fuse3 puts them last); our -o options are taken out and
// every other one reaches libfuse.
#include "fs/options.hpp"
#include "fs/linger.hpp"

#include <string>
#include <vector>

#include <gmock/gmock.h>
#include <unistd.h>

#include <gtest/gtest.h>

namespace {

using vsymfs::fs::Options;
using vsymfs::fs::parse_options;
using vsymfs::fs::UringMode;
using ::testing::HasSubstr;

Options ok(const std::vector<std::string>& args) {
  auto r = parse_options(args);
  EXPECT_TRUE(r.ok()) << (r.ok() ? "" : r.error().message);
  return r.ok() ? *r : Options{};
}

TEST(Options, PositionalsAnywhereAndPathsMadeAbsolute) {
  for (const auto& args : std::vector<std::vector<std::string>>{
           {"-o", "allow_other", "/srv/tree", "/tree/"},
           {"/srv/tree", "/tree", "-o", "allow_other"},  // as mount.fuse3 calls us
           {"/srv/tree", "-oallow_other", "/tree"},
       }) {
    Options o = ok(args);
    EXPECT_EQ(o.source, "/srv/tree");
    EXPECT_EQ(o.mountpoint, "/tree");
    EXPECT_THAT(o.fuse_mount_options, HasSubstr("allow_other"));
  }
  Options rel = ok({"src", "mnt"});
  EXPECT_EQ(rel.source.front(), '/');
  EXPECT_THAT(rel.source, ::testing::EndsWith("/src"));
}

TEST(Options, DefaultThreadsFollowTheCpus) {
  const long cpus = ::sysconf(_SC_NPROCESSORS_ONLN);
  EXPECT_EQ(vsymfs::fs::default_max_threads(), cpus > 2 ? cpus : 2);
  EXPECT_EQ(ok({"s", "m"}).max_threads, vsymfs::fs::default_max_threads());
}

TEST(Options, OwnOptionsAreTakenOutTheRestGoToLibfuse) {
  Options o = ok({"-o", "rules=/etc/r.toml,allow_other,fd_budget=300", "-o", "threads=4,ro,single_user", "s", "m"});
  EXPECT_EQ(o.rules_path, "/etc/r.toml");
  EXPECT_TRUE(o.rules_path_explicit);
  EXPECT_EQ(o.fd_budget, 300u);
  EXPECT_EQ(o.max_threads, 4u);
  EXPECT_TRUE(o.single_user);
  EXPECT_EQ(o.fuse_mount_options.find("rules="), std::string::npos);
  EXPECT_EQ(o.fuse_mount_options.find("fd_budget"), std::string::npos);
  EXPECT_THAT(o.fuse_mount_options, HasSubstr("allow_other,ro,"));
}

TEST(Options, DefaultsAddedUnlessGiven) {
  Options o = ok({"/a", "/b"});
  EXPECT_EQ(o.fuse_mount_options, "default_permissions,fsname=/a,subtype=vsymfs");
  EXPECT_FALSE(o.foreground);
  EXPECT_EQ(o.fd_budget, 0u);  // derived from RLIMIT_NOFILE at startup
  EXPECT_EQ(o.handles, vsymfs::fs::HandleOption::Auto);
  EXPECT_TRUE(o.passthrough);  // falls back at run time when the kernel or privileges lack it
  EXPECT_FALSE(o.daemon_nss);  // containers' names from their own files
  EXPECT_TRUE(ok({"-o", "daemon_nss", "/a", "/b"}).daemon_nss);
  Options named = ok({"-o", "fsname=tree,subtype=x", "/a", "/b"});
  EXPECT_EQ(named.fuse_mount_options, "fsname=tree,subtype=x,default_permissions");
}

TEST(Options, Flags) {
  Options d = ok({"-d", "/a", "/b"});
  EXPECT_TRUE(d.debug);
  EXPECT_TRUE(d.foreground);
  Options fs = ok({"-f", "-s", "/a", "/b", "-o", "builtin_rules,no_handles,entry_timeout=0.5,attr_timeout=0"});
  EXPECT_TRUE(fs.foreground);
  EXPECT_TRUE(fs.single_thread);
  EXPECT_TRUE(fs.builtin_rules);
  EXPECT_EQ(fs.handles, vsymfs::fs::HandleOption::Off);
  EXPECT_EQ(ok({"/a", "/b", "-o", "no_handles,handles"}).handles, vsymfs::fs::HandleOption::On);  // the last wins
  EXPECT_DOUBLE_EQ(fs.entry_timeout, 0.5);
  EXPECT_DOUBLE_EQ(fs.attr_timeout, 0.0);
  EXPECT_EQ(ok({"/a", "/b"}).environ_cache, std::size_t{32} << 20);
  EXPECT_EQ(ok({"-o", "environ_cache=4096", "/a", "/b"}).environ_cache, 4096u);
  EXPECT_EQ(ok({"-o", "environ_cache=8m", "/a", "/b"}).environ_cache, std::size_t{8} << 20);
  EXPECT_EQ(ok({"-o", "environ_cache=64K", "/a", "/b"}).environ_cache, std::size_t{64} << 10);
  EXPECT_EQ(ok({"-o", "environ_cache=1g", "/a", "/b"}).environ_cache, std::size_t{1} << 30);
  EXPECT_EQ(ok({"-o", "environ_cache=0", "/a", "/b"}).environ_cache, 0u);
  EXPECT_EQ(ok({"-o", "environ_cache=0", "/a", "/b"}).fuse_mount_options.find("environ_cache"), std::string::npos);
  Options off = ok({"-o", "nopassthrough", "/a", "/b"});
  EXPECT_FALSE(off.passthrough);
  EXPECT_EQ(off.fuse_mount_options.find("passthrough"), std::string::npos);  // ours, not libfuse's
  // The last word wins, as with every mount option.
  EXPECT_TRUE(ok({"-o", "nopassthrough,passthrough", "/a", "/b"}).passthrough);
  EXPECT_FALSE(ok({"-o", "passthrough", "/a", "/b", "-o", "nopassthrough"}).passthrough);
  EXPECT_TRUE(ok({"--help"}).show_help);
  EXPECT_TRUE(ok({"-V"}).show_version);
}

TEST(Options, UringTransport) {
  EXPECT_EQ(ok({"/a", "/b"}).uring, UringMode::automatic);  // io_uring where the kernel offers it
  Options on = ok({"-o", "uring", "/a", "/b"});
  EXPECT_EQ(on.uring, UringMode::on);
  EXPECT_EQ(on.fuse_mount_options.find("uring"), std::string::npos);  // ours, not libfuse's
  EXPECT_EQ(ok({"-o", "no_uring", "/a", "/b"}).uring, UringMode::off);
  EXPECT_EQ(ok({"-o", "uring,no_uring", "/a", "/b"}).uring, UringMode::off);  // the last word wins
  EXPECT_EQ(ok({"-o", "no_uring", "/a", "/b", "-o", "uring"}).uring, UringMode::on);
  EXPECT_EQ(ok({"-s", "-o", "no_uring", "/a", "/b"}).uring, UringMode::off);
  EXPECT_EQ(ok({"/a", "/b"}).uring_linger_us, 20u);
  EXPECT_EQ(ok({"-o", "uring_linger=0", "/a", "/b"}).uring_linger_us, 0u);
  EXPECT_EQ(ok({"-o", "uring_linger=1000", "/a", "/b"}).uring_linger_us, 1000u);
  EXPECT_EQ(ok({"-o", "uring_linger=5", "/a", "/b"}).fuse_mount_options.find("linger"), std::string::npos);
  // The /dev/fuse loop's linger (dev_loop.hpp): ours, not libfuse's.
  EXPECT_EQ(ok({"/a", "/b"}).dev_linger_us, 50u);
  EXPECT_EQ(ok({"-o", "dev_linger=0", "/a", "/b"}).dev_linger_us, 0u);
  EXPECT_EQ(ok({"-o", "dev_linger=1000", "/a", "/b"}).dev_linger_us, 1000u);
  EXPECT_EQ(ok({"-o", "dev_linger=5", "/a", "/b"}).fuse_mount_options.find("linger"), std::string::npos);
  EXPECT_FALSE(ok({"/a", "/b"}).allow_root);
  EXPECT_TRUE(ok({"-o", "allow_root", "/a", "/b"}).allow_root);
}

TEST(Options, AtimeOptions) {
  Options none = ok({"/a", "/b"});
  EXPECT_FALSE(none.noatime);
  EXPECT_FALSE(none.nodiratime);
  Options no = ok({"-o", "noatime,nodiratime", "/a", "/b"});
  EXPECT_TRUE(no.noatime);
  EXPECT_TRUE(no.nodiratime);
  EXPECT_THAT(no.fuse_mount_options, HasSubstr("noatime"));             // libfuse passes it on
  EXPECT_EQ(no.fuse_mount_options.find("nodiratime"), std::string::npos);  // libfuse 3.14 refuses it
  EXPECT_FALSE(ok({"-o", "noatime,relatime", "/a", "/b"}).noatime);      // the last word wins
  EXPECT_FALSE(ok({"-o", "noatime,strictatime", "/a", "/b"}).noatime);
  EXPECT_TRUE(ok({"-o", "strictatime,noatime", "/a", "/b"}).noatime);
  EXPECT_FALSE(ok({"-o", "nodiratime,diratime", "/a", "/b"}).nodiratime);
}

struct Bad {
  std::vector<std::string> args;
  const char* message;
};

TEST(Options, ErrorsNameTheOffendingWord) {
  const std::vector<Bad> table = {
      {{"/a"}, "missing SOURCE or MOUNTPOINT"},
      {{"/a", "/b", "/c"}, "unexpected argument /c"},
      {{"--bogus", "/a", "/b"}, "unknown option --bogus"},
      {{"-o"}, "-o needs a value"},
      {{"-o", "fd_budget=many", "/a", "/b"}, "fd_budget=many: expected a whole number"},
      {{"-o", "fd_budget=3", "/a", "/b"}, "from 16 to"},
      {{"-o", "threads=0", "/a", "/b"}, "threads=0"},
      {{"-o", "attr_timeout=-1", "/a", "/b"}, "attr_timeout=-1: expected seconds"},
      {{"-o", "rules=", "/a", "/b"}, "rules needs a value"},
      {{"-o", "single_user=yes", "/a", "/b"}, "single_user takes no value"},
      {{"-o", "passthrough=1", "/a", "/b"}, "passthrough takes no value"},
      {{"-o", "uring=1", "/a", "/b"}, "uring takes no value"},
      {{"-s", "-o", "uring", "/a", "/b"}, "-s and uring contradict"},
      {{"-o", "uring_linger=1001", "/a", "/b"}, "uring_linger"},
      {{"-o", "uring_linger", "/a", "/b"}, "uring_linger needs a value"},
      {{"-o", "uring_linger=soon", "/a", "/b"}, "uring_linger=soon"},
      {{"-o", "dev_linger=1001", "/a", "/b"}, "dev_linger"},
      {{"-o", "dev_linger", "/a", "/b"}, "dev_linger needs a value"},
      {{"-o", "dev_linger=-1", "/a", "/b"}, "dev_linger=-1"},
      {{"-o", "rules=/r,builtin_rules", "/a", "/b"}, "contradict"},
      {{"-o", "writeback_cache", "/a", "/b"}, "writeback_cache is not supported"},
      {{"-o", "environ_cache=lots", "/a", "/b"}, "environ_cache=lots: expected a number of bytes"},
      {{"-o", "environ_cache=8t", "/a", "/b"}, "environ_cache=8t: expected"},
      {{"-o", "environ_cache=2048g", "/a", "/b"}, "up to 1024g"},
      {{"-o", "environ_cache=-1", "/a", "/b"}, "environ_cache=-1"},
      {{"-o", "environ_cache=", "/a", "/b"}, "environ_cache needs a value"},
  };
  for (const auto& c : table) {
    auto r = parse_options(c.args);
    ASSERT_FALSE(r.ok()) << c.message;
    EXPECT_EQ(r.error().code, EINVAL);
    EXPECT_THAT(r.error().message, HasSubstr(c.message));
  }
}

TEST(Options, HelpMentionsEveryOwnOption) {
  const std::string help = vsymfs::fs::usage_text();
  for (const char* opt : {"rules=", "builtin_rules", "single_user", "fd_budget=", "handles", "no_handles", "threads=", "socket=",
                          "state=", "entry_timeout=", "attr_timeout=", "negative_timeout=", "passthrough", "nopassthrough", "uring", "no_uring", "environ_cache=", "noatime", "nodiratime", "-f",
                          "-d", "-s"})
    EXPECT_THAT(help, HasSubstr(opt));
}

}  // namespace

// Linger (linger.hpp) reads the runnable tasks from /proc/loadavg.
TEST(RunnableTasks, TheFourthFieldOfLoadavg) {
  using vsymfs::fs::runnable_tasks;
  EXPECT_EQ(runnable_tasks("0.20 0.31 0.35 2/345 12345\n"), 2);
  EXPECT_EQ(runnable_tasks("12.00 9.31 5.35 17/1001 4242\n"), 17);
  EXPECT_EQ(runnable_tasks("0.20 0.31 0.35 2"), std::nullopt);  // cut short
  EXPECT_EQ(runnable_tasks("0.20 0.31"), std::nullopt);
  EXPECT_EQ(runnable_tasks("0.20 0.31 0.35 x/345 1"), std::nullopt);
  EXPECT_EQ(runnable_tasks(""), std::nullopt);
}
