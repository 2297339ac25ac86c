// Limits on run-time values (`vsymctl set`): names, values, counts, and the
// exact errno and sentence for each.
#include "vsymfs/runtime_vars.hpp"

#include <cerrno>
#include <string>
#include <vector>

#include <gtest/gtest.h>

namespace vsymfs {
namespace {

TEST(ValidVarName, Table) {
  const std::vector<std::pair<std::string, bool>> cases = {
      {"A", true},
      {"_", true},
      {"a1_B2", true},
      {"PROJ_ROOT", true},
      {std::string(kMaxVarName, 'N'), true},
      {std::string(kMaxVarName + 1, 'N'), false},
      {"", false},
      {"1A", false},
      {"A-B", false},
      {"A.B", false},
      {"A B", false},
      {"A=B", false},
      {"Ä", false},
      {std::string("A\0B", 3), false},
  };
  for (const auto& [name, valid] : cases) EXPECT_EQ(valid_var_name(name), valid) << name;
}

struct SetCase {
  const char* what;
  std::string name;
  std::string value;
  int code;  // 0: accepted
  std::string message;
};

TEST(CheckRuntimeSet, LimitsAndExactErrors) {
  const VarMap table = {{"OLD", "1"}};
  const std::vector<SetCase> cases = {
      {"plain", "PROJ", "/proj", 0, ""},
      {"empty value", "PROJ", "", 0, ""},
      {"value at the limit", "PROJ", std::string(kMaxVarValue, 'v'), 0, ""},
      {"name at the limit", std::string(kMaxVarName, 'N'), "v", 0, ""},
      {"empty name", "", "v", EINVAL,
       "invalid variable name '': expected letters, digits and '_', not starting with a digit"},
      {"bad name", "my-var", "v", EINVAL,
       "invalid variable name 'my-var': expected letters, digits and '_', not starting with a digit"},
      {"control byte in name", "A\nB", "v", EINVAL,
       "invalid variable name 'A\\x0aB': expected letters, digits and '_', not starting with a digit"},
      {"name too long", std::string(kMaxVarName + 1, 'N'), "v", ENAMETOOLONG,
       "variable name '" + std::string(64, 'N') + "...' is 65 bytes; the limit is 64"},
      {"value too long", "PROJ", std::string(kMaxVarValue + 1, 'v'), E2BIG,
       "value of 'PROJ' is 257 bytes; the limit is 256"},
      {"NUL in value", "PROJ", std::string("a\0b", 3), EINVAL, "value of 'PROJ' contains a NUL byte"},
      {"newline in value", "PROJ", "a\nb", EINVAL, "value of 'PROJ' contains a newline"},
  };
  for (const SetCase& c : cases) {
    const auto r = check_runtime_set(table, c.name, c.value, kMaxVarsPerUser);
    EXPECT_EQ(r.ok(), c.code == 0) << c.what;
    if (!r.ok()) {
      EXPECT_EQ(r.error().code, c.code) << c.what;
      EXPECT_EQ(r.error().message, c.message) << c.what;
    }
  }
}

TEST(CheckRuntimeSet, CountLimit) {
  VarMap table;
  for (std::size_t i = 0; i < kMaxVarsPerUser; ++i) {
    const std::string name = "V" + std::to_string(i);
    ASSERT_TRUE(check_runtime_set(table, name, "x", kMaxVarsPerUser).ok()) << i;
    table.emplace(name, "x");
  }
  const auto full = check_runtime_set(table, "ONE_MORE", "x", kMaxVarsPerUser);
  ASSERT_FALSE(full.ok());
  EXPECT_EQ(full.error().code, ENOSPC);
  EXPECT_EQ(full.error().message, "cannot set 'ONE_MORE': the scope already holds 256 variables, the limit is 256");
  // Replacing a value in a full table needs no room.
  EXPECT_TRUE(check_runtime_set(table, "V0", "new", kMaxVarsPerUser).ok());
  // The system scope has its own, larger limit.
  EXPECT_TRUE(check_runtime_set(table, "ONE_MORE", "x", kMaxVarsSystem).ok());
  EXPECT_GT(kMaxVarsSystem, kMaxVarsPerUser);
}

}  // namespace
}  // namespace vsymfs
