#include "vsymfs/account_files.hpp"

#include <gtest/gtest.h>

#include <string>

namespace vsymfs {
namespace {

TEST(AccountFiles, PasswdAndGroupGiveNamesAndHomes) {
  AccountFiles db;
  parse_passwd(
      "root:x:0:0:root:/root:/bin/bash\n"
      "# a comment\n"
      "\n"
      "alice:x:1000:1000:Alice,,,:/home/alice:/bin/sh\n"
      "alice2:x:1000:1000::/home/other:/bin/sh\n"  // the first line for a uid wins
      "bob:x:1001:100::/srv/bob:/bin/sh",          // no final newline
      db);
  parse_group("root:x:0:\nusers:x:100:alice,bob\nalice:x:1000:\n", db);
  ASSERT_NE(db.user(1000), nullptr);
  EXPECT_EQ(db.user(1000)->name, "alice");
  EXPECT_EQ(db.user(1000)->home, "/home/alice");
  EXPECT_EQ(db.user(1001)->home, "/srv/bob");
  EXPECT_EQ(db.user(0)->name, "root");
  EXPECT_EQ(db.user(1002), nullptr);
  ASSERT_NE(db.group(100), nullptr);
  EXPECT_EQ(*db.group(100), "users");
  EXPECT_EQ(db.group(5), nullptr);
}

// The files belong to another system, maybe a hostile one.
TEST(AccountFiles, HostileLinesAreSkipped) {
  AccountFiles db;
  const std::string long_home(kMaxAccountLine, 'h');
  parse_passwd(
      "short:x:1\n"                                  // too few fields
      "extra:x:2:2::/h:/bin/sh:more\n"               // too many
      "neg:x:-3:3::/h:/bin/sh\n"                     // not a number
      "big:x:4294967295:4::/h:/bin/sh\n"             // (uid_t)-1
      "huge:x:99999999999:5::/h:/bin/sh\n"           // out of range
      "sl/ash:x:6:6::/h:/bin/sh\n"                   // a name with a slash would be a path
      "..:x:7:7::/h:/bin/sh\n"
      "+nis:x:8:8::/h:/bin/sh\n"
      "ctl:x:9:9::/h\x01:/bin/sh\n"                  // control characters
      "long:x:10:10::/" + long_home + ":/bin/sh\n"   // longer than the bound: skipped, not cut
      "ok:x:11:11::/home/ok:/bin/sh\n",
      db);
  EXPECT_EQ(db.users.size(), 1u);
  ASSERT_NE(db.user(11), nullptr);
  EXPECT_EQ(db.user(11)->name, "ok");
  parse_group("g:x:12:" + std::string(3 * kMaxAccountLine, 'm') + "\nbad:x:z:\n", db);
  ASSERT_NE(db.group(12), nullptr) << "a long member list is cut, the name kept";
  EXPECT_EQ(*db.group(12), "g");
  EXPECT_EQ(db.groups.size(), 1u);
}

}  // namespace
}  // namespace vsymfs
