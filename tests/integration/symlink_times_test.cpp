// A symlink's timestamps through a real mount (issue 13, item 1). lstat
// reports the caller's expansion length as st_size, which needs the link's
// text; reading it must not update the link's atime, as natively only
// readlink and a path walk through the link do. These set a link's atime
// into the past (utimensat AT_SYMLINK_NOFOLLOW), stat, look up and list it
// every way a program does, and check that no timestamp moved: for links
// made through the mount and directly in SOURCE. They also check that
// readlink still updates the atime as natively, that st_size stays each
// caller's expansion length, and that a link replaced by one with the same
// inode number shows its new text (the text is cached per descriptor).
#include <dirent.h>
#include <fcntl.h>
#include <ftw.h>
#include <pwd.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <climits>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "common/temp_dir.hpp"
#include "mount_fixture.hpp"

namespace vsymfs::testing {
namespace {

namespace fs = std::filesystem;

constexpr time_t kPast = 1000000000;  // 2001-09-09: older than any mtime, so relatime would update it
constexpr uid_t kNobody = 65534;
constexpr auto kLimit = std::chrono::seconds(60);

struct Times {
  struct timespec a, m, c;
};

bool operator==(const struct timespec& x, const struct timespec& y) {
  return x.tv_sec == y.tv_sec && x.tv_nsec == y.tv_nsec;
}

std::ostream& operator<<(std::ostream& os, const Times& t) {
  return os << "atime " << t.a.tv_sec << "." << t.a.tv_nsec << ", mtime " << t.m.tv_sec << "." << t.m.tv_nsec
            << ", ctime " << t.c.tv_sec << "." << t.c.tv_nsec;
}

// lstat times of a path in SOURCE (or anywhere native): lstat does not read the link.
Times times_of(const std::string& path) {
  struct stat st {};
  if (::lstat(path.c_str(), &st) != 0) ADD_FAILURE() << "lstat " << path << ": " << std::strerror(errno);
  return {st.st_atim, st.st_mtim, st.st_ctim};
}

void expect_same(const Times& before, const Times& after, const std::string& what) {
  EXPECT_TRUE(before.a == after.a) << what << ": atime moved\n before: " << before << "\n after:  " << after;
  EXPECT_TRUE(before.m == after.m) << what << ": mtime moved\n before: " << before << "\n after:  " << after;
  EXPECT_TRUE(before.c == after.c) << what << ": ctime moved\n before: " << before << "\n after:  " << after;
}

void set_atime_past(const std::string& path) {
  struct timespec tv[2] = {{kPast, 0}, {0, UTIME_OMIT}};
  ASSERT_EQ(::utimensat(AT_FDCWD, path.c_str(), tv, AT_SYMLINK_NOFOLLOW), 0) << path << ": " << std::strerror(errno);
}

std::string raw_xattr(const std::string& path) {
  char buf[PATH_MAX];
  ssize_t n = ::lgetxattr(path.c_str(), "security.vsymfs.raw", buf, sizeof buf);
  if (n < 0) return std::string("error: ") + std::strerror(errno);
  return {buf, static_cast<size_t>(n)};
}

std::string read_link(const std::string& path) {
  char buf[PATH_MAX];
  ssize_t n = ::readlink(path.c_str(), buf, sizeof buf);
  if (n < 0) return std::string("error: ") + std::strerror(errno);
  return {buf, static_cast<size_t>(n)};
}

int nftw_nothing(const char*, const struct stat*, int, struct FTW*) { return 0; }

// Everything that looks at `dir/name` through the mount without reading it:
// lstat by two callers, a listing (READDIRPLUS, then a lookup of each
// entry), fstatat of each listed name, an nftw walk (FTW_PHYS: lstat), statx
// and the raw-text xattr. Each must leave the link's times alone.
void look_without_reading(const std::string& dir, const std::string& name) {
  const std::string path = dir + "/" + name;
  struct stat st {};
  ASSERT_EQ(::lstat(path.c_str(), &st), 0) << path << ": " << std::strerror(errno);
  ASSERT_TRUE(S_ISLNK(st.st_mode));
  DIR* d = ::opendir(dir.c_str());
  ASSERT_NE(d, nullptr) << dir << ": " << std::strerror(errno);
  bool seen = false;
  while (const dirent* e = ::readdir(d)) {
    struct stat est {};
    EXPECT_EQ(::fstatat(::dirfd(d), e->d_name, &est, AT_SYMLINK_NOFOLLOW), 0) << e->d_name;
    seen = seen || name == e->d_name;
  }
  ::closedir(d);
  EXPECT_TRUE(seen) << name << " not listed in " << dir;
  EXPECT_EQ(::nftw(dir.c_str(), nftw_nothing, 8, FTW_PHYS), 0);
  struct statx x {};
  EXPECT_EQ(::statx(AT_FDCWD, path.c_str(), AT_SYMLINK_NOFOLLOW, STATX_ALL, &x), 0);
  EXPECT_EQ(raw_xattr(path).rfind("error", 0), std::string::npos);
  EXPECT_EQ(run_as({.uid = kNobody, .gid = kNobody}, [&] {
              struct stat s {};
              return ::lstat(path.c_str(), &s) == 0 && S_ISLNK(s.st_mode) ? 0 : 1;
            }),
            0);
}

TEST(SymlinkTimes, StatLookupAndListingLeaveALinkMadeThroughTheMountAlone) {
  Mount m;
  fs::create_directory(m.src("d"));
  ASSERT_EQ(::symlink("some/target", m.mnt("d/l").c_str()), 0) << std::strerror(errno);
  // Through the mount: setattr answers with the link's attributes, which
  // needs its text; that must not undo the atime just set.
  set_atime_past(m.mnt("d/l"));
  const Times before = times_of(m.src("d/l"));
  EXPECT_EQ(before.a.tv_sec, kPast) << "utimensat through the mount: " << before;
  look_without_reading(m.mnt("d"), "l");
  expect_same(before, times_of(m.src("d/l")), "stat, lookup and listing through the mount");
  struct stat st {};
  ASSERT_EQ(::lstat(m.mnt("d/l").c_str(), &st), 0);
  EXPECT_EQ(st.st_atim.tv_sec, kPast) << "atime seen through the mount";
  EXPECT_EQ(st.st_size, 11);
}

TEST(SymlinkTimes, StatLookupAndListingLeaveALinkMadeInSourceAlone) {
  Mount m;
  fs::create_directory(m.src("d"));
  // Made and dated in SOURCE, never seen through the mount: the first
  // lookup is the daemon's first read of the text.
  ASSERT_EQ(::symlink("another/target", m.src("d/l").c_str()), 0);
  set_atime_past(m.src("d/l"));
  const Times before = times_of(m.src("d/l"));
  look_without_reading(m.mnt("d"), "l");
  expect_same(before, times_of(m.src("d/l")), "stat, lookup and listing through the mount");
  // Dated again through the mount, now that the daemon knows the link.
  struct timespec tv[2] = {{kPast + 5, 0}, {0, UTIME_OMIT}};
  ASSERT_EQ(::utimensat(AT_FDCWD, m.mnt("d/l").c_str(), tv, AT_SYMLINK_NOFOLLOW), 0);
  const Times again = times_of(m.src("d/l"));
  EXPECT_EQ(again.a.tv_sec, kPast + 5) << again;
  look_without_reading(m.mnt("d"), "l");
  expect_same(again, times_of(m.src("d/l")), "after utimensat through the mount");
}

TEST(SymlinkTimes, ReadlinkUpdatesTheAtimeAsNatively) {
  Mount m;
  const std::string native = m.root() + "/native";
  fs::create_directory(native);
  ASSERT_EQ(::symlink("plain/target", (native + "/l").c_str()), 0);
  ASSERT_EQ(::symlink("plain/target", m.src("l").c_str()), 0);
  set_atime_past(native + "/l");
  set_atime_past(m.mnt("l"));
  const Times native_before = times_of(native + "/l");
  const Times before = times_of(m.src("l"));
  EXPECT_EQ(read_link(native + "/l"), "plain/target");
  EXPECT_EQ(read_link(m.mnt("l")), "plain/target");
  const Times native_after = times_of(native + "/l");
  const Times after = times_of(m.src("l"));
  // relatime: an atime older than the mtime is updated by a read.
  EXPECT_FALSE(native_before.a == native_after.a) << "natively, readlink updates the atime: " << native_after;
  EXPECT_FALSE(before.a == after.a) << "through the mount, readlink updates the atime as natively: " << after;
  EXPECT_TRUE(native_before.m == native_after.m && native_before.c == native_after.c);
  EXPECT_TRUE(before.m == after.m && before.c == after.c) << before << " / " << after;
}

TEST(SymlinkTimes, SizeIsEachCallersExpansionLengthAndTimesStay) {
  Mount m;
  ASSERT_EQ(::symlink("/export/${USER}", m.src("home").c_str()), 0);
  set_atime_past(m.src("home"));
  const Times before = times_of(m.src("home"));
  const struct passwd* pw = ::getpwuid(kNobody);
  ASSERT_NE(pw, nullptr) << "no passwd entry for uid " << kNobody;
  const std::string nobody_home = std::string("/export/") + pw->pw_name;
  struct stat st {};
  ASSERT_EQ(::lstat(m.mnt("home").c_str(), &st), 0);
  EXPECT_EQ(st.st_size, static_cast<off_t>(std::strlen("/export/root")));
  const std::string path = m.mnt("home");
  const off_t want = static_cast<off_t>(nobody_home.size());
  EXPECT_EQ(run_as({.uid = kNobody, .gid = kNobody}, [&] {
              struct stat s {};
              return ::lstat(path.c_str(), &s) == 0 && s.st_size == want ? 0 : 1;
            }),
            0)
      << "uid " << kNobody << " should see st_size " << want;
  ASSERT_EQ(::lstat(m.mnt("home").c_str(), &st), 0);
  EXPECT_EQ(st.st_size, static_cast<off_t>(std::strlen("/export/root")));
  expect_same(before, times_of(m.src("home")), "lstat by two callers");
  EXPECT_EQ(read_link(m.mnt("home")), "/export/root");
}

// Two raw texts of one length whose expansions differ in length (as root):
// a stale cached text shows as a wrong st_size and a wrong raw xattr.
const std::string kTextA = "${USER}abc";  // expands to "rootabc", 7
const std::string kTextB = "0123456789";  // itself, 10

void expect_link_is(const Mount& m, const std::string& name, const std::string& text) {
  struct stat st {};
  ASSERT_EQ(::lstat(m.mnt(name).c_str(), &st), 0) << std::strerror(errno);
  EXPECT_EQ(st.st_size, text == kTextA ? 7 : 10) << name << " -> " << text;
  EXPECT_EQ(raw_xattr(m.mnt(name)), text);
  EXPECT_EQ(read_link(m.mnt(name)), text == kTextA ? "rootabc" : text);
}

ino_t source_ino(const Mount& m, const std::string& name) {
  struct stat st {};
  return ::lstat(m.src(name).c_str(), &st) == 0 ? st.st_ino : 0;
}

// Replaced through the mount: the old inode is forgotten and a new link may
// get its number at once (ext4 reuses freed numbers; tmpfs never does).
TEST(SymlinkTimes, ALinkReplacedThroughTheMountShowsItsNewText) {
  Mount m;
  int reused = 0;
  for (int i = 0; i < 100 && reused < 3; ++i) {
    const std::string& old_text = i % 2 ? kTextA : kTextB;
    const std::string& new_text = i % 2 ? kTextB : kTextA;
    ASSERT_EQ(::symlink(old_text.c_str(), m.mnt("r").c_str()), 0) << std::strerror(errno);
    expect_link_is(m, "r", old_text);
    const ino_t old_ino = source_ino(m, "r");
    ASSERT_EQ(::unlink(m.mnt("r").c_str()), 0);
    ASSERT_EQ(::symlink(new_text.c_str(), m.mnt("r").c_str()), 0) << std::strerror(errno);
    if (source_ino(m, "r") == old_ino) ++reused;
    expect_link_is(m, "r", new_text);
    ASSERT_EQ(::unlink(m.mnt("r").c_str()), 0);
    if (HasFailure()) break;
  }
  if (reused == 0)
    GTEST_SKIP() << "SOURCE's filesystem never gave a new link the old number in 100 tries "
                    "(the new text was right every time)";
}

// Replaced in SOURCE behind the daemon's back while the kernel still holds
// the old link: the daemon keeps its entry, and once its descriptor was
// evicted (fd_budget) the number may be reused, so the next lookup brings
// the new link to the old entry. Its text was cached under the old
// descriptor: it must be read again. (Made within one clock tick, the two
// links share size, mtime, ctime and birth time: no timestamp tells them
// apart.)
TEST(SymlinkTimes, ALinkReplacedInSourceUnderAnEvictedDescriptorShowsItsNewText) {
  constexpr int kBudget = 16;
  Mount m(MountOptions{.extra_opts = {"fd_budget=" + std::to_string(kBudget), "entry_timeout=0"}});
  fs::create_directory(m.src("other"));
  for (int i = 0; i < 8 * kBudget; ++i) std::ofstream(m.src("other/f" + std::to_string(i))) << "x";
  int reused = 0;
  for (int i = 0; i < 60 && reused < 3; ++i) {
    const std::string& old_text = i % 2 ? kTextA : kTextB;
    const std::string& new_text = i % 2 ? kTextB : kTextA;
    ASSERT_EQ(::symlink(old_text.c_str(), m.src("r").c_str()), 0);
    expect_link_is(m, "r", old_text);
    // Push the link's descriptor out: every other file takes one.
    for (int j = 0; j < 8 * kBudget; ++j) {
      struct stat st {};
      ::lstat(m.mnt("other/f" + std::to_string(j)).c_str(), &st);
    }
    const ino_t old_ino = source_ino(m, "r");
    ASSERT_EQ(::unlink(m.src("r").c_str()), 0);
    ASSERT_EQ(::symlink(new_text.c_str(), m.src("r").c_str()), 0);
    if (source_ino(m, "r") == old_ino) ++reused;
    expect_link_is(m, "r", new_text);
    ASSERT_EQ(::unlink(m.src("r").c_str()), 0);
    if (HasFailure()) break;
  }
  if (reused == 0)
    GTEST_SKIP() << "SOURCE's filesystem never gave a new link the old number in 60 tries "
                    "(the new text was right every time)";
}

// READLINK answers from the text it read last while a read would change
// nothing, the atime included (LinkText::kept). Through the mount, a
// SETATTR, a rename or a new hard link changes the link's ctime; natively (relatime) the
// next readlink then stamps the atime again, and so it must here.
TEST(SymlinkTimes, ReadlinkAfterASetattrRenameOrLinkThroughTheMountStampsTheAtimeAgain) {
  Mount m;
  Watchdog dog({&m}, kLimit);  // a hung mount fails the test instead of the run
  ASSERT_EQ(::symlink("plain/target", m.src("l").c_str()), 0);
  for (int i = 0; i < 3; ++i) EXPECT_EQ(read_link(m.mnt("l")), "plain/target");
  set_atime_past(m.mnt("l"));  // a SETATTR
  ASSERT_EQ(times_of(m.src("l")).a.tv_sec, kPast);
  EXPECT_EQ(read_link(m.mnt("l")), "plain/target");
  EXPECT_NE(times_of(m.src("l")).a.tv_sec, kPast) << "readlink after a setattr stamps the atime, as natively";

  for (int i = 0; i < 3; ++i) EXPECT_EQ(read_link(m.mnt("l")), "plain/target");
  set_atime_past(m.src("l"));  // in SOURCE: no request reaches the daemon
  ASSERT_EQ(::rename(m.mnt("l").c_str(), m.mnt("l2").c_str()), 0) << std::strerror(errno);
  EXPECT_EQ(read_link(m.mnt("l2")), "plain/target");
  EXPECT_NE(times_of(m.src("l2")).a.tv_sec, kPast) << "readlink after a rename stamps the atime, as natively";

  for (int i = 0; i < 3; ++i) EXPECT_EQ(read_link(m.mnt("l2")), "plain/target");
  set_atime_past(m.src("l2"));  // in SOURCE again
  ASSERT_EQ(::link(m.mnt("l2").c_str(), m.mnt("l3").c_str()), 0) << std::strerror(errno);  // a hard link to the link
  EXPECT_EQ(read_link(m.mnt("l2")), "plain/target");
  EXPECT_NE(times_of(m.src("l2")).a.tv_sec, kPast) << "readlink after a new hard link stamps the atime, as natively";
}

// On a local SOURCE with relatime (the common case), repeated readlinks of
// one link are answered from the kept text; vsymctl status counts them.
TEST(SymlinkTimes, RepeatedReadlinksOfALinkAreAnsweredFromItsKeptText) {
  Mount m;
  Watchdog dog({&m}, kLimit);  // a hung mount fails the test instead of the run
  ASSERT_EQ(::symlink("plain/target", m.src("l").c_str()), 0);
  int status = -1;
  const std::string before = capture_as(As{}, {vsymctl_bin(), "-m", m.mnt(), "status"}, &status);
  ASSERT_EQ(status, 0);
  if (before.find("link_texts: kept") == std::string::npos)
    GTEST_SKIP() << "SOURCE's filesystem keeps no link text (a network or FUSE filesystem, or strictatime): "
                 << before.substr(before.find("link_texts"), 120);
  // Many readlinks, most within one attr_timeout of the first.
  for (int i = 0; i < 50; ++i) ASSERT_EQ(read_link(m.mnt("l")), "plain/target");
  const std::string after = capture_as(As{}, {vsymctl_bin(), "-m", m.mnt(), "status"}, &status);
  const std::size_t at = after.find("link_texts: ");
  ASSERT_NE(at, std::string::npos) << after;
  const std::size_t comma = after.find(", ", at);
  ASSERT_NE(comma, std::string::npos) << after.substr(at, 160);
  EXPECT_GE(std::stol(after.substr(comma + 2)), 25) << after.substr(at, 160);
}

// With strictatime every read stamps the atime natively: READLINK then
// reads the link every time, even right after the last one.
TEST(SymlinkTimes, OnAStrictatimeSourceEveryReadlinkStampsTheAtime) {
  vsymfs::test::TempDir dir{"strictatime"};
  if (::mount("vsymfs-test", dir.path().c_str(), "tmpfs", MS_STRICTATIME, "mode=0755") != 0)
    GTEST_SKIP() << "cannot mount a tmpfs with strictatime here: " << std::strerror(errno);
  struct Unmount {
    std::string path;
    ~Unmount() { ::umount2(path.c_str(), MNT_DETACH); }
  } unmount{dir.path()};
  Mount m({.source = dir.path()});
  Watchdog dog({&m}, kLimit);
  const std::string link = dir.path() + "/l";
  ASSERT_EQ(::symlink("plain/target", link.c_str()), 0);
  for (int i = 0; i < 3; ++i) EXPECT_EQ(read_link(m.mnt("l")), "plain/target");
  set_atime_past(link);  // in SOURCE: no request reaches the daemon
  EXPECT_EQ(read_link(m.mnt("l")), "plain/target");
  EXPECT_NE(times_of(link).a.tv_sec, kPast) << "strictatime: every readlink stamps the atime";
  int status = -1;
  EXPECT_NE(capture_as(As{}, {vsymctl_bin(), "-m", m.mnt(), "status"}, &status).find("link_texts: read every time"),
            std::string::npos);
}

}  // namespace
}  // namespace vsymfs::testing
