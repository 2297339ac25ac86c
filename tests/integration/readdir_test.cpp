// Directory listings through a real mount. The kernel caches listings
// (opendir sets cache_readdir and keep_cache), so these check that a cached
// listing is still right: complete for a large directory, seekable, and
// updated after changes made through the mount at once and after changes made
// in SOURCE directly within attr_timeout. READDIRPLUS hands the kernel
// attributes only for directories, so these also check that every entry's
// attributes are right whichever way they came.
#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "mount_fixture.hpp"

namespace vsymfs::testing {
namespace {

namespace fs = std::filesystem;

// Every name readdir(3) returns, in order, without "." and "..".
std::vector<std::string> list(const std::string& dir) {
  std::vector<std::string> names;
  DIR* d = ::opendir(dir.c_str());
  if (d == nullptr) {
    ADD_FAILURE() << "opendir " << dir << ": " << std::strerror(errno);
    return names;
  }
  while (const dirent* e = ::readdir(d)) {
    std::string n = e->d_name;
    if (n != "." && n != "..") names.push_back(std::move(n));
  }
  ::closedir(d);
  return names;
}

std::set<std::string> sorted(const std::vector<std::string>& v) { return {v.begin(), v.end()}; }

void touch(const std::string& path) { std::ofstream(path) << "x"; }

std::string numbered(int i) {
  char name[16];
  std::snprintf(name, sizeof name, "f%05d", i);
  return name;
}

// Polls until `done()` or the deadline; returns done().
template <class Pred>
bool eventually(Pred done, std::chrono::milliseconds limit) {
  const auto end = std::chrono::steady_clock::now() + limit;
  while (!done()) {
    if (std::chrono::steady_clock::now() > end) return done();
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return true;
}

// attr_timeout is 1 s by default; a change in SOURCE must show after it.
constexpr auto kSourceChangeLimit = std::chrono::milliseconds(3000);

TEST(Readdir, LargeDirectoryIsCompleteOnEveryScanAndTypesAreRight) {
  Mount m;
  const int n = 10000;
  fs::create_directory(m.src("big"));
  for (int i = 0; i < n; ++i) touch(m.src("big/" + numbered(i)));
  fs::create_directory(m.src("big/sub"));
  fs::create_symlink("target", m.src("big/link"));

  std::set<std::string> expected;
  for (int i = 0; i < n; ++i) expected.insert(numbered(i));
  expected.insert("sub");
  expected.insert("link");
  // The first scan fills the kernel's cache, the later ones read it.
  for (int scan = 0; scan < 3; ++scan) {
    auto names = list(m.mnt("big"));
    EXPECT_EQ(names.size(), expected.size()) << "scan " << scan;
    EXPECT_EQ(sorted(names), expected) << "scan " << scan;
  }
  DIR* d = ::opendir(m.mnt("big").c_str());
  ASSERT_NE(d, nullptr);
  std::set<std::pair<std::string, int>> typed;
  while (const dirent* e = ::readdir(d)) {
    std::string name = e->d_name;
    if (name == "sub" || name == "link" || name == numbered(0)) typed.insert({name, e->d_type});
  }
  ::closedir(d);
  EXPECT_EQ(typed, (std::set<std::pair<std::string, int>>{{"sub", DT_DIR}, {"link", DT_LNK}, {numbered(0), DT_REG}}));
}

TEST(Readdir, SeekdirReturnsToTheSameEntryInACachedListing) {
  Mount m;
  fs::create_directory(m.src("d"));
  for (int i = 0; i < 3000; ++i) touch(m.src("d/" + numbered(i)));
  list(m.mnt("d"));  // fill the cache

  DIR* d = ::opendir(m.mnt("d").c_str());
  ASSERT_NE(d, nullptr);
  std::vector<std::pair<long, std::string>> positions;  // telldir before each entry
  for (;;) {
    long pos = ::telldir(d);
    const dirent* e = ::readdir(d);
    if (e == nullptr) break;
    positions.emplace_back(pos, e->d_name);
  }
  ASSERT_EQ(positions.size(), 3002u);
  for (std::size_t i : {std::size_t{0}, std::size_t{1}, std::size_t{1500}, std::size_t{2999}, std::size_t{3001}}) {
    ::seekdir(d, positions[i].first);
    const dirent* e = ::readdir(d);
    ASSERT_NE(e, nullptr) << "after seekdir to entry " << i;
    EXPECT_EQ(e->d_name, positions[i].second) << "entry " << i;
  }
  ::closedir(d);
}

// The kernel sends RELEASEDIR only after the last close, and asynchronously;
// a daemon told to stop while a directory is open never gets it. The handle
// must still be closed and freed (in a sanitizer build a leak fails stop()).
TEST(Readdir, ADirectoryStillOpenWhenTheDaemonStopsIsClosedWithIt) {
  Mount m;
  fs::create_directory(m.src("d"));
  for (int i = 0; i < 10; ++i) touch(m.src("d/" + numbered(i)));
  DIR* d = ::opendir(m.mnt("d").c_str());
  ASSERT_NE(d, nullptr);
  ASSERT_NE(::readdir(d), nullptr);
  m.stop();  // fails the test unless the daemon exits 0
  ::closedir(d);  // ENOTCONN or 0: the connection is gone either way
}

TEST(Readdir, ChangesThroughTheMountShowInTheNextScanAtOnce) {
  Mount m;
  fs::create_directory(m.src("d"));
  touch(m.src("d/old"));
  EXPECT_EQ(sorted(list(m.mnt("d"))), (std::set<std::string>{"old"}));

  touch(m.mnt("d/new"));
  EXPECT_EQ(sorted(list(m.mnt("d"))), (std::set<std::string>{"old", "new"}));
  fs::rename(m.mnt("d/old"), m.mnt("d/renamed"));
  EXPECT_EQ(sorted(list(m.mnt("d"))), (std::set<std::string>{"renamed", "new"}));
  fs::remove(m.mnt("d/new"));
  EXPECT_EQ(sorted(list(m.mnt("d"))), (std::set<std::string>{"renamed"}));
  fs::create_directory(m.mnt("d/sub"));
  EXPECT_EQ(sorted(list(m.mnt("d"))), (std::set<std::string>{"renamed", "sub"}));
}

TEST(Readdir, ChangesInSourceShowWithinAttrTimeout) {
  Mount m;
  fs::create_directory(m.src("d"));
  for (int i = 0; i < 100; ++i) touch(m.src("d/" + numbered(i)));
  // Cached now, and scanned again so the cache is certainly the one served.
  ASSERT_EQ(list(m.mnt("d")).size(), 100u);
  ASSERT_EQ(list(m.mnt("d")).size(), 100u);
  // The kernel notices the change by the directory's mtime, which ticks in
  // coarse steps: a change within the same tick as the last one is not seen
  // (a documented limit), so this one comes a few ticks later.
  std::this_thread::sleep_for(std::chrono::milliseconds(50));

  touch(m.src("d/added"));
  EXPECT_TRUE(eventually([&] { return sorted(list(m.mnt("d"))).count("added") == 1; }, kSourceChangeLimit))
      << "a file created in SOURCE never appeared in the listing";

  fs::remove(m.src("d/" + numbered(7)));
  EXPECT_TRUE(eventually([&] { return sorted(list(m.mnt("d"))).count(numbered(7)) == 0; }, kSourceChangeLimit))
      << "a file removed in SOURCE stayed in the listing";
  EXPECT_EQ(list(m.mnt("d")).size(), 100u);
}

TEST(Readdir, ACallerWithoutReadPermissionCannotListACachedDirectory) {
  Mount m;
  fs::create_directory(m.src("private"));
  touch(m.src("private/secret"));
  ::chmod(m.src("private").c_str(), 0700);
  fs::create_directory(m.src("public"));
  ASSERT_EQ(list(m.mnt("private")).size(), 1u);  // root fills the cache

  const int status = run_as({65534, 65534, {}, {}, false}, [&] {
    DIR* pub = ::opendir(m.mnt("public").c_str());
    if (pub == nullptr) return 3;  // the control: nobody may list a 0755 directory
    ::closedir(pub);
    DIR* d = ::opendir(m.mnt("private").c_str());
    if (d != nullptr) {
      ::closedir(d);
      return 1;  // listed what it may not read
    }
    return errno == EACCES ? 0 : 2;
  });
  EXPECT_EQ(status, 0) << "1: nobody listed a 0700 root directory; 2: the error was not EACCES; 3: nobody could not list a public directory";
}

// What must agree between SOURCE and the mount for one entry (st_dev and
// st_atime legitimately differ).
std::string attrs_of(const struct stat& st) {
  return std::to_string(st.st_ino) + " mode=" + std::to_string(st.st_mode) + " nlink=" + std::to_string(st.st_nlink) +
         " uid=" + std::to_string(st.st_uid) + " gid=" + std::to_string(st.st_gid) +
         " size=" + std::to_string(st.st_size) + " mtime=" + std::to_string(st.st_mtim.tv_sec) + "." +
         std::to_string(st.st_mtim.tv_nsec);
}

// lstat of every entry of `rel`, through the mount and in SOURCE: the
// entries whose attributes differ, as "name: mount | source".
std::vector<std::string> attribute_mismatches(const Mount& m, const std::string& rel) {
  std::vector<std::string> bad;
  for (const std::string& name : list(m.mnt(rel))) {
    struct stat via_mount {}, in_source {};
    const bool mount_ok = ::lstat(m.mnt(rel + "/" + name).c_str(), &via_mount) == 0;
    const bool source_ok = ::lstat(m.src(rel + "/" + name).c_str(), &in_source) == 0;
    if (!mount_ok || !source_ok) {
      bad.push_back(name + ": lstat " + (mount_ok ? "" : "through the mount ") + (source_ok ? "" : "in SOURCE ") + "failed");
      continue;
    }
    if (attrs_of(via_mount) != attrs_of(in_source))
      bad.push_back(name + ": " + attrs_of(via_mount) + " | " + attrs_of(in_source));
  }
  return bad;
}

// Past entry_timeout and attr_timeout (1 s): the kernel asks again.
void outlive_timeouts() { std::this_thread::sleep_for(std::chrono::milliseconds(1200)); }

TEST(Readdir, LsOfALargeDirectoryShowsEveryEntrysAttributesColdAndWarm) {
  Mount m;
  const int n = 10000;
  fs::create_directory(m.src("big"));
  for (int i = 0; i < n; ++i) {
    const std::string path = m.src("big/" + numbered(i));
    std::ofstream(path) << std::string(static_cast<std::size_t>(i % 97), 'x');
    ::chmod(path.c_str(), static_cast<mode_t>(0600 | (i % 8) << 3));
  }
  fs::create_directory(m.src("big/sub"));
  fs::create_symlink("f00001", m.src("big/link"));

  // Cold: the daemon knows none of the entries when the kernel lists them.
  auto bad = attribute_mismatches(m, "big");
  EXPECT_TRUE(bad.empty()) << bad.size() << " entries wrong, first: " << bad.front();
  // Warm: every entry is known now, and the next scan after the timeouts
  // refreshes them from the listing.
  outlive_timeouts();
  bad = attribute_mismatches(m, "big");
  EXPECT_TRUE(bad.empty()) << bad.size() << " entries wrong, first: " << bad.front();
}

TEST(Readdir, AttributesStayRightAfterChangesInSourceBehindTheMount) {
  Mount m;
  fs::create_directory(m.src("d"));
  for (const char* name : {"chmodded", "grown", "renamed", "removed", "replaced", "kept"}) touch(m.src(std::string("d/") + name));
  fs::create_directory(m.src("d/subdir"));
  // The kernel and the daemon now know every entry.
  ASSERT_TRUE(attribute_mismatches(m, "d").empty());

  ::chmod(m.src("d/chmodded").c_str(), 0751);
  std::ofstream(m.src("d/grown"), std::ios::app) << "more bytes";
  fs::rename(m.src("d/renamed"), m.src("d/renamed-to"));
  fs::remove(m.src("d/removed"));
  fs::remove(m.src("d/replaced"));
  std::ofstream(m.src("d/replaced")) << "a new file under the old name";
  ::chmod(m.src("d/subdir").c_str(), 0700);
  outlive_timeouts();

  EXPECT_EQ(sorted(list(m.mnt("d"))),
            (std::set<std::string>{"chmodded", "grown", "renamed-to", "replaced", "kept", "subdir"}));
  auto bad = attribute_mismatches(m, "d");
  EXPECT_TRUE(bad.empty()) << bad.size() << " entries wrong, first: " << bad.front();
  std::ifstream replaced(m.mnt("d/replaced"));
  std::string content;
  std::getline(replaced, content);
  EXPECT_EQ(content, "a new file under the old name");
}

std::size_t open_fds(pid_t pid) {
  std::size_t n = 0;
  for ([[maybe_unused]] const auto& e : fs::directory_iterator("/proc/" + std::to_string(pid) + "/fd")) ++n;
  return n;
}

// `find` needs only names and types: a first scan of files the daemon does
// not know yet must not look each of them up (open a descriptor, make an
// inode), which made a cold scan several times slower than its listing.
TEST(Readdir, AScanDoesNotLookUpFilesTheDaemonDoesNotKnow) {
  Mount m;
  const int n = 2000;
  fs::create_directory(m.src("d"));
  for (int i = 0; i < n; ++i) touch(m.src("d/" + numbered(i)));
  fs::create_directory(m.src("d/sub"));
  const std::size_t before = open_fds(m.daemon_pid());

  EXPECT_EQ(list(m.mnt("d")).size(), static_cast<std::size_t>(n) + 1);
  const std::size_t after = open_fds(m.daemon_pid());
  // The open directory handle is closed again; a few descriptors of slack
  // for the subdirectory and the daemon's own business.
  EXPECT_LT(after, before + 10) << "the scan left " << after - before << " descriptors open in the daemon";
  // The files still stat right, looked up one by one now.
  struct stat st {};
  EXPECT_EQ(::lstat(m.mnt("d/" + numbered(1234)).c_str(), &st), 0) << std::strerror(errno);
  EXPECT_TRUE(S_ISREG(st.st_mode));
}

std::size_t occurrences(const std::string& text, const std::string& what) {
  std::size_t n = 0;
  for (auto pos = text.find(what); pos != std::string::npos; pos = text.find(what, pos + what.size())) ++n;
  return n;
}

// LOOKUP requests in the daemon's trace, once it has settled.
std::size_t lookups(const Mount& m) {
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  return occurrences(m.daemon_log(), "opcode: LOOKUP");
}

// Files the kernel already holds are listed by name too: find, rm -r and
// grep -r right after a copy never stat what they list, and refreshing each
// entry (an fstatat in the daemon) made such a find 3x slower. A stat after
// the entry timeout then asks the daemon, as it would without a listing.
// Subdirectories still come with attributes: a walk enters them next.
TEST(Readdir, AScanOfKnownFilesListsNamesAndRefreshesOnlyDirectories) {
  Mount m(MountOptions{.extra_args = {"-d"}});
  const int n = 300;
  fs::create_directory(m.src("d"));
  for (int i = 0; i < n; ++i) touch(m.src("d/" + numbered(i)));
  fs::create_directory(m.src("d/sub"));
  fs::create_directory(m.src("d/sub/leaf"));
  auto bad = attribute_mismatches(m, "d");  // the daemon and the kernel now know every entry
  ASSERT_TRUE(bad.empty()) << bad.front();
  // A change through the mount drops the kernel's cached listing, so the next
  // scan asks the daemon, as the first scan after a copy does.
  touch(m.mnt("d/new"));
  outlive_timeouts();

  const std::size_t before = lookups(m);
  ASSERT_EQ(list(m.mnt("d")).size(), static_cast<std::size_t>(n) + 2);
  const std::size_t after_list = lookups(m);
  EXPECT_LE(after_list, before + 1) << "listing a directory looked up more than the directory itself";
  struct stat st {};
  ASSERT_EQ(::lstat(m.mnt("d/sub/leaf").c_str(), &st), 0) << std::strerror(errno);
  const std::size_t after_dir = lookups(m);
  EXPECT_EQ(after_dir, after_list + 1) << "the subdirectory was not refreshed by the listing (only leaf is new)";
  for (int i = 0; i < n; ++i) ASSERT_EQ(::lstat(m.mnt("d/" + numbered(i)).c_str(), &st), 0) << i;
  EXPECT_GE(lookups(m), after_dir + n) << "files were refreshed by a listing nobody stat'ed";
  bad = attribute_mismatches(m, "d");
  EXPECT_TRUE(bad.empty()) << bad.size() << " entries wrong, first: " << bad.front();
}

}  // namespace
}  // namespace vsymfs::testing
