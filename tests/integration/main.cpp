// Integration tests mount for real. Without /dev/fuse, or without root (the
// tests switch uids and allow_other), they cannot run: report SKIP (exit 77,
// meson's skip code), never PASS.
#include <fcntl.h>
#include <unistd.h>

#include <cstdio>

#include <gtest/gtest.h>

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  int fd = ::open("/dev/fuse", O_RDWR | O_CLOEXEC);
  if (fd < 0) {
    std::fprintf(stderr, "SKIP: /dev/fuse cannot be opened; integration tests need it\n");
    return 77;
  }
  ::close(fd);
  if (::geteuid() != 0) {
    std::fprintf(stderr, "SKIP: integration tests need root (they switch uids and mount allow_other)\n");
    return 77;
  }
  return RUN_ALL_TESTS();
}
