#include "control/store.hpp"

#include <dirent.h>
#include <sys/stat.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "common/temp_dir.hpp"

namespace vsymfs::control {
namespace {

using vsymfs::test::TempDir;

std::vector<std::string> entries(const std::string& dir) {
  std::vector<std::string> out;
  if (DIR* d = ::opendir(dir.c_str())) {
    while (dirent* e = ::readdir(d))
      if (std::string(e->d_name) != "." && std::string(e->d_name) != "..") out.emplace_back(e->d_name);
    ::closedir(d);
  }
  return out;
}

std::string read_file(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

void write_file(const std::string& path, const std::string& text) { std::ofstream(path) << text; }

RuntimeVars sample() {
  RuntimeVars v;
  v.system["ARCH"] = "x86_64";
  v.system["QUOTED"] = "a \"quoted\" \\ value\twith tab";
  v.users[1000]["PROJECT"] = "alpha";
  v.users[1000]["UNICODE"] = "caf\xc3\xa9";
  v.users[1001]["PROJECT"] = "beta";
  return v;
}

TEST(Store, SerializeParseRoundTrip) {
  const RuntimeVars v = sample();
  auto back = parse_state(serialize_state(v), "state.toml");
  ASSERT_TRUE(back.ok()) << back.error().message;
  EXPECT_EQ(back->system, v.system);
  EXPECT_EQ(back->users, v.users);
}

TEST(Store, SaveThenLoadRoundTripsAndLeavesNoTemporaries) {
  const TempDir dir("vsymfs-store-test");
  const StateFile file(dir.path() + "/sub/dir/state.toml");  // directories are created
  ASSERT_TRUE(file.save(sample()).ok());
  auto loaded = file.load();
  ASSERT_TRUE(loaded.ok()) << loaded.error().message;
  EXPECT_TRUE(loaded->warning.empty());
  EXPECT_EQ(loaded->vars.users, sample().users);
  EXPECT_EQ(loaded->vars.system, sample().system);
  struct stat st {};
  ASSERT_EQ(::stat(file.path().c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  std::vector<std::string> names;
  if (DIR* d = ::opendir((dir.path() + "/sub/dir").c_str())) {
    while (dirent* e = ::readdir(d)) names.emplace_back(e->d_name);
    ::closedir(d);
  }
  EXPECT_EQ(names.size(), 3u) << "only ., .. and state.toml expected";
}

TEST(Store, MissingFileIsEmpty) {
  const TempDir dir("vsymfs-store-test");
  auto loaded = StateFile(dir.path() + "/absent.toml").load();
  ASSERT_TRUE(loaded.ok());
  EXPECT_TRUE(loaded->vars.users.empty());
  EXPECT_TRUE(loaded->vars.system.empty());
  EXPECT_TRUE(loaded->warning.empty());
}

// A write that fails (the temporary cannot be renamed over a directory)
// must leave the old state file exactly as it was.
TEST(Store, FailedSaveKeepsTheOldFileIntact) {
  const TempDir dir("vsymfs-store-test");
  const std::string path = dir.path() + "/state.toml";
  const StateFile file(path);
  ASSERT_TRUE(file.save(sample()).ok());
  const std::string before = read_file(path);

  // Permissions cannot make a write fail for root, so point a second store
  // at a path that is a non-empty directory: rename(2) cannot replace it.
  const std::string blocked = dir.path() + "/blocked";
  ASSERT_EQ(::mkdir(blocked.c_str(), 0755), 0);
  ASSERT_EQ(::mkdir((blocked + "/state.toml").c_str(), 0755), 0);
  ASSERT_EQ(::mkdir((blocked + "/state.toml/child").c_str(), 0755), 0);
  RuntimeVars changed = sample();
  changed.system["ARCH"] = "changed";
  auto failed = StateFile(blocked + "/state.toml").save(changed);
  ASSERT_FALSE(failed.ok());
  EXPECT_NE(failed.error().message.find("rename"), std::string::npos) << failed.error().message;
  // No temporary left behind.
  std::vector<std::string> names;
  if (DIR* d = ::opendir(blocked.c_str())) {
    while (dirent* e = ::readdir(d)) names.emplace_back(e->d_name);
    ::closedir(d);
  }
  EXPECT_EQ(names.size(), 3u);

  // And the good file was never touched by the failed attempt.
  EXPECT_EQ(read_file(path), before);
  auto loaded = file.load();
  ASSERT_TRUE(loaded.ok());
  EXPECT_EQ(loaded->vars.system.at("ARCH"), "x86_64");
}

TEST(Store, CorruptFileIsMovedAsideNotOverwritten) {
  const TempDir dir("vsymfs-store-test");
  const std::string path = dir.path() + "/state.toml";
  const std::string garbage = "version = 1\n[system\nARCH = \"x\"\n";
  write_file(path, garbage);
  auto loaded = StateFile(path).load();
  ASSERT_TRUE(loaded.ok()) << loaded.error().message;
  EXPECT_TRUE(loaded->vars.system.empty());
  EXPECT_NE(loaded->warning.find(path + ":"), std::string::npos) << loaded->warning;  // file:line:col
  EXPECT_NE(loaded->warning.find(".corrupt-"), std::string::npos) << loaded->warning;
  const auto names = entries(dir.path());
  ASSERT_EQ(names.size(), 1u);
  EXPECT_EQ(names[0].rfind("state.toml.corrupt-", 0), 0u) << names[0];
  EXPECT_EQ(read_file(dir.path() + "/" + names[0]), garbage);
}

struct BadState {
  const char* what;
  std::string text;
  const char* expect_in_message;
};

TEST(Store, ParseRejectsInvalidContentWithLocation) {
  const std::string long_value(kMaxVarValue + 1, 'v');
  const std::vector<BadState> cases = {
      {"syntax", "version = \n", "state.toml:1:"},
      {"wrong version", "version = 2\n", "unsupported state version"},
      {"unknown key", "colour = 1\n", "unknown key 'colour'"},
      {"non-string value", "[system]\nA = 1\n", "not a string"},
      {"bad name", "[system]\n\"A-B\" = \"x\"\n", "state.toml:2:"},
      {"value too long", "[system]\nA = \"" + long_value + "\"\n", "state.toml:2:"},
      {"uid not a number", "[user.alice]\nA = \"x\"\n", "'alice' is not a uid"},
      {"user not a table", "[user]\n1000 = \"x\"\n", "is not a table"},
      {"newline in value", "[system]\nA = \"x\\ny\"\n", "state.toml:2:"},
  };
  for (const BadState& c : cases) {
    auto r = parse_state(c.text, "state.toml");
    ASSERT_FALSE(r.ok()) << c.what;
    EXPECT_EQ(r.error().code, EINVAL) << c.what;
    EXPECT_NE(r.error().message.find(c.expect_in_message), std::string::npos)
        << c.what << ": " << r.error().message;
  }
}

TEST(Store, SetIsCopyOnWriteAndUidsAreIsolated) {
  const RuntimeVars empty;
  auto a = with_set(empty, false, 1000, "PROJECT", "alpha");
  ASSERT_TRUE(a.ok()) << a.error().message;
  auto b = with_set(**a, false, 1001, "PROJECT", "beta");
  ASSERT_TRUE(b.ok());
  EXPECT_TRUE(empty.users.empty()) << "the old table must not change";
  EXPECT_EQ((*a)->users.size(), 1u);
  EXPECT_EQ((*b)->users.at(1000).at("PROJECT"), "alpha");
  EXPECT_EQ((*b)->users.at(1001).at("PROJECT"), "beta");
  EXPECT_TRUE((*b)->system.empty());

  auto c = with_unset(**b, false, 1000, "PROJECT");
  ASSERT_TRUE(c.ok());
  EXPECT_FALSE((*c)->users.contains(1000));
  EXPECT_EQ((*c)->users.at(1001).at("PROJECT"), "beta");

  auto missing = with_unset(**c, false, 1000, "PROJECT");
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.error().code, ENOENT);
  auto missing_sys = with_unset(**c, true, 0, "PROJECT");
  ASSERT_FALSE(missing_sys.ok());
  EXPECT_EQ(missing_sys.error().code, ENOENT);

  auto sys = with_set(**c, true, 1000, "ARCH", "x86_64");
  ASSERT_TRUE(sys.ok());
  EXPECT_EQ((*sys)->system.at("ARCH"), "x86_64");
  EXPECT_FALSE((*sys)->users.contains(1000)) << "system set must not create a user table";
}

TEST(Store, SetEnforcesLimits) {
  RuntimeVars full;
  for (std::size_t i = 0; i < kMaxVarsPerUser; ++i) full.users[7]["V" + std::to_string(i)] = "x";
  auto over = with_set(full, false, 7, "ONE_MORE", "x");
  ASSERT_FALSE(over.ok());
  EXPECT_EQ(over.error().code, ENOSPC);
  EXPECT_TRUE(with_set(full, false, 7, "V0", "replaced").ok()) << "replacing is not adding";
  EXPECT_TRUE(with_set(full, false, 8, "ONE_MORE", "x").ok()) << "the limit is per user";

  auto long_value = with_set(RuntimeVars{}, false, 7, "N", std::string(kMaxVarValue + 1, 'v'));
  ASSERT_FALSE(long_value.ok());
  EXPECT_NE(long_value.error().code, 0);
  EXPECT_FALSE(with_set(RuntimeVars{}, false, 7, "N", "a\nb").ok());
  EXPECT_FALSE(with_set(RuntimeVars{}, false, 7, "9N", "x").ok());
  auto bad_utf8 = with_set(RuntimeVars{}, false, 7, "N", "\xff");
  ASSERT_FALSE(bad_utf8.ok());
  EXPECT_EQ(bad_utf8.error().code, EINVAL);
}

}  // namespace
}  // namespace vsymfs::control
