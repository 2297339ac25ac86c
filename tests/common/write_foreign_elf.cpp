// write_foreign_elf PATH: writes an executable that no kernel runs (see
// common/exec_probe.hpp), for `scripts/test --refuse-32bit`, which points
// the tests' 32-bit probe at it (VSYMFS_TEST_PROBE32=PATH).
#include <cerrno>
#include <cstdio>
#include <cstring>

#include "common/exec_probe.hpp"

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: write_foreign_elf PATH\n");
    return 2;
  }
  if (!vsymfs::test::write_foreign_elf(argv[1])) {
    std::fprintf(stderr, "write_foreign_elf: %s: %s\n", argv[1], std::strerror(errno));
    return 1;
  }
  return 0;
}
