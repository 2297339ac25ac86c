// Directory listings through a real mount. The kernel caches listings
// (opendir sets cache_readdir and keep_cache), so these check that a cached
// listing is still right: complete for a large directory, seekable, and
// updated after changes made through the mount at once and after changes made
// in SOURCE directly within attr_timeout.
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

}  // namespace
}  // namespace vsymfs::testing
