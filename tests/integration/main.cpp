// Integration tests mount for real. Without /dev/fuse, or without root (the
// tests switch uids and allow_other), they cannot run: report SKIP (exit 77,
// meson's skip code), never PASS. Every test case is reported skipped with
// the reason, in GoogleTest's XML too (--gtest_output=xml:FILE, which meson
// passes), so scripts/test counts and lists the cases, not one binary.
#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <string>

#include <gtest/gtest.h>

namespace {

std::string xml_escape(const std::string& s) {
  std::string out;
  for (char c : s) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&quot;"; break;
      case '\n': out += "&#x0A;"; break;
      default: out += c;
    }
  }
  return out;
}

// Says on stderr which cases are skipped and why, writes them as skipped
// into the XML file GoogleTest would have written, and returns 77.
int skip_all(const std::string& reason) {
  std::fprintf(stderr, "SKIP: %s\n", reason.c_str());
  const ::testing::UnitTest& all = *::testing::UnitTest::GetInstance();
  std::string suites;
  int total = 0;
  for (int i = 0; i < all.total_test_suite_count(); ++i) {
    const ::testing::TestSuite& suite = *all.GetTestSuite(i);
    std::string cases;
    int n = 0;
    for (int j = 0; j < suite.total_test_count(); ++j) {
      const ::testing::TestInfo& t = *suite.GetTestInfo(j);
      if (std::strncmp(t.name(), "DISABLED_", 9) == 0 || std::strncmp(suite.name(), "DISABLED_", 9) == 0) continue;
      std::fprintf(stderr, "SKIP: %s.%s\n", suite.name(), t.name());
      cases += "    <testcase name=\"" + xml_escape(t.name()) + "\" status=\"run\" result=\"skipped\" time=\"0\" classname=\"" +
               xml_escape(suite.name()) + "\">\n      <skipped message=\"" + xml_escape(reason) + "\"/>\n    </testcase>\n";
      ++n;
    }
    if (n == 0) continue;
    total += n;
    suites += "  <testsuite name=\"" + xml_escape(suite.name()) + "\" tests=\"" + std::to_string(n) +
              "\" failures=\"0\" disabled=\"0\" skipped=\"" + std::to_string(n) + "\" errors=\"0\" time=\"0\">\n" + cases +
              "  </testsuite>\n";
  }
  const std::string output = GTEST_FLAG_GET(output);
  if (output.rfind("xml:", 0) == 0 && output.size() > 4) {
    std::ofstream xml(output.substr(4));
    xml << "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<testsuites tests=\"" << total
        << "\" failures=\"0\" disabled=\"0\" errors=\"0\" time=\"0\" name=\"AllTests\">\n"
        << suites << "</testsuites>\n";
  }
  return 77;
}

}  // namespace

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  int fd = ::open("/dev/fuse", O_RDWR | O_CLOEXEC);
  if (fd < 0) return skip_all(std::string("/dev/fuse cannot be opened (") + std::strerror(errno) + "); integration tests need it");
  ::close(fd);
  if (::geteuid() != 0) return skip_all("integration tests need root (they switch uids and mount allow_other)");
  return RUN_ALL_TESTS();
}
