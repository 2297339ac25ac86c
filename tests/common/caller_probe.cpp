// A tiny program the tests run as a *32-bit* process (built with -m32 when
// the compiler can): the daemon must see it as compat32 (ELF class 32, auxv
// in 4-byte words) and give it 32-bit @machine and @sys values.
//   caller_probe32 true           exit 0 (common/exec_probe.hpp: can it run?)
//   caller_probe32 wait           write one byte to stdout, then sleep
//   caller_probe32 readlink PATH  print readlink(PATH) (no newline)
#include <unistd.h>

#include <climits>
#include <cstring>

int main(int argc, char** argv) {
  if (argc == 2 && std::strcmp(argv[1], "true") == 0) return 0;
  if (argc == 2 && std::strcmp(argv[1], "wait") == 0) {
    if (::write(1, "r", 1) != 1) return 1;
    ::sleep(30);  // the test kills us
    return 0;
  }
  if (argc == 3 && std::strcmp(argv[1], "readlink") == 0) {
    char buf[PATH_MAX];
    ssize_t n = ::readlink(argv[2], buf, sizeof buf);
    if (n < 0) return 2;
    return ::write(1, buf, static_cast<std::size_t>(n)) == n ? 0 : 1;
  }
  return 64;
}
