// The tests' scratch directory: where it is made, with which mode, that it
// goes with everything in it (but nothing a symlink in it points at), and
// who owns it after a move.
#include "common/temp_dir.hpp"

#include <sys/stat.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <optional>
#include <stdexcept>
#include <string>
#include <utility>

namespace vsymfs::test {
namespace {

namespace fs = std::filesystem;

bool exists_nofollow(const std::string& path) {
  struct stat st {};
  return ::lstat(path.c_str(), &st) == 0;
}

mode_t mode_of(const std::string& path) {
  struct stat st {};
  EXPECT_EQ(::lstat(path.c_str(), &st), 0) << path;
  return st.st_mode & 07777;
}

// Sets (or, with nullopt, unsets) $TMPDIR for one test and restores it.
class ScopedTmpdir {
 public:
  explicit ScopedTmpdir(const std::optional<std::string>& value) {
    if (const char* old = std::getenv("TMPDIR")) old_ = old;
    if (value) {
      ::setenv("TMPDIR", value->c_str(), 1);
    } else {
      ::unsetenv("TMPDIR");
    }
  }
  ~ScopedTmpdir() {
    if (old_) {
      ::setenv("TMPDIR", old_->c_str(), 1);
    } else {
      ::unsetenv("TMPDIR");
    }
  }
  ScopedTmpdir(const ScopedTmpdir&) = delete;
  ScopedTmpdir& operator=(const ScopedTmpdir&) = delete;

 private:
  std::optional<std::string> old_;
};

TEST(TempDir, IsAFreshPrivateDirectoryNamedAfterItsPrefix) {
  const TempDir parent("temp-dir-test-parent");
  const TempDir a("some-test", 0700, parent.path());
  const TempDir b("some-test", 0700, parent.path());
  EXPECT_NE(a.path(), b.path());
  for (const TempDir* d : {&a, &b}) {
    EXPECT_EQ(fs::path(d->path()).parent_path(), fs::path(parent.path()));
    EXPECT_EQ(fs::path(d->path()).filename().string().rfind("some-test-", 0), 0u) << d->path();
    EXPECT_TRUE(fs::is_directory(d->path()));
    EXPECT_EQ(mode_of(d->path()), 0700u);
    EXPECT_TRUE(fs::is_empty(d->path()));
  }
}

TEST(TempDir, GetsTheAskedModeWhateverTheUmask) {
  const mode_t old = ::umask(077);
  const TempDir d("temp-dir-test-mode", 0755);
  ::umask(old);
  EXPECT_EQ(mode_of(d.path()), 0755u);
}

TEST(TempDir, ParentIsAnAbsoluteTmpdirElseTmp) {
  struct Case {
    std::optional<std::string> tmpdir;
    std::string parent;
  };
  const Case cases[] = {
      {std::nullopt, "/tmp"},
      {"", "/tmp"},
      {"relative/dir", "/tmp"},
      {"/var/tmp", "/var/tmp"},
  };
  for (const Case& c : cases) {
    const ScopedTmpdir env(c.tmpdir);
    EXPECT_EQ(TempDir::default_parent(), c.parent) << c.tmpdir.value_or("(unset)");
  }
}

TEST(TempDir, AParentThatCannotHoldItIsAnErrorNamingThePath) {
  const TempDir parent("temp-dir-test-missing");
  const std::string missing = parent.path() + "/absent";
  try {
    const TempDir d("x", 0700, missing);
    ADD_FAILURE() << "made " << d.path() << " in a directory that does not exist";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find(missing + "/x-XXXXXX"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("No such file or directory"), std::string::npos) << e.what();
  }
}

TEST(TempDir, GoesWithItsWholeTreeButNotWhatItsLinksPointAt) {
  const TempDir outside("temp-dir-test-outside");
  const std::string kept = outside.path() + "/kept";
  std::ofstream(kept) << "stays";
  fs::create_directory(outside.path() + "/kept-dir");
  std::ofstream(outside.path() + "/kept-dir/f") << "stays";

  std::string path;
  {
    const TempDir d("temp-dir-test-tree");
    path = d.path();
    fs::create_directories(path + "/a/b/c");
    std::ofstream(path + "/a/b/c/file") << "x";
    ASSERT_EQ(::mkfifo((path + "/a/fifo").c_str(), 0600), 0);
    fs::create_symlink(kept, path + "/a/link-to-file");
    fs::create_directory_symlink(outside.path() + "/kept-dir", path + "/a/link-to-dir");
    ASSERT_EQ(::chmod((path + "/a/b/c/file").c_str(), 0), 0);
  }
  EXPECT_FALSE(exists_nofollow(path)) << path;
  EXPECT_TRUE(exists_nofollow(kept));
  EXPECT_TRUE(exists_nofollow(outside.path() + "/kept-dir/f"));
}

TEST(TempDir, AMoveHandsTheTreeOver) {
  TempDir from("temp-dir-test-move");
  const std::string path = from.path();
  {
    const TempDir to(std::move(from));
    EXPECT_EQ(to.path(), path);
    EXPECT_TRUE(from.path().empty());  // the moved-from state is the point
    EXPECT_TRUE(exists_nofollow(path));
  }
  EXPECT_FALSE(exists_nofollow(path)) << "the new owner removes it; the moved-from one owns nothing";
}

TEST(TempDir, MoveAssignmentRemovesTheTreeItReplaces) {
  TempDir to("temp-dir-test-assign-to");
  TempDir from("temp-dir-test-assign-from");
  const std::string replaced = to.path();
  const std::string moved = from.path();
  to = std::move(from);
  EXPECT_FALSE(exists_nofollow(replaced)) << replaced;
  EXPECT_EQ(to.path(), moved);
  EXPECT_TRUE(exists_nofollow(moved));
  EXPECT_TRUE(from.path().empty());  // the moved-from state is the point
}

}  // namespace
}  // namespace vsymfs::test
