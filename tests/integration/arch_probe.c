/* A small static program built for the host and for aarch64 (where the
 * cross compiler is installed), run through a vsymfs mount by
 * emulation_test: what does a program of each architecture see?
 *   arch_probe hello            "hello from <the architecture it was built for>"
 *   arch_probe readlink P...    each link's target on its own line (or "error ERRNO")
 *   arch_probe cat P            the file's contents
 *   arch_probe exec P ARGS...   execv(P), as a program of this architecture
 *   arch_probe selfstat         st_dev:st_ino of stat("/proc/self/exe") */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#if defined(__aarch64__)
#define BUILT_FOR "aarch64"
#elif defined(__x86_64__)
#define BUILT_FOR "x86_64"
#else
#define BUILT_FOR "unknown"
#endif

int main(int argc, char** argv) {
  if (argc < 2) return 2;
  if (strcmp(argv[1], "hello") == 0) {
    printf("hello from %s\n", BUILT_FOR);
    return 0;
  }
  if (strcmp(argv[1], "readlink") == 0) {
    for (int i = 2; i < argc; ++i) {
      char buf[PATH_MAX];
      ssize_t n = readlink(argv[i], buf, sizeof buf - 1);
      if (n < 0) {
        printf("error %d\n", errno);
      } else {
        buf[n] = '\0';
        printf("%s\n", buf);
      }
    }
    return 0;
  }
  if (strcmp(argv[1], "cat") == 0 && argc == 3) {
    int fd = open(argv[2], O_RDONLY);
    if (fd < 0) {
      printf("error %d\n", errno);
      return 1;
    }
    char buf[4096];
    ssize_t n;
    while ((n = read(fd, buf, sizeof buf)) > 0) fwrite(buf, 1, (size_t)n, stdout);
    close(fd);
    return 0;
  }
  if (strcmp(argv[1], "exec") == 0 && argc >= 3) {
    fflush(stdout);
    execv(argv[2], argv + 2);
    printf("error %d\n", errno);
    return 1;
  }
  if (strcmp(argv[1], "selfstat") == 0) {
    struct stat st;
    if (stat("/proc/self/exe", &st) != 0) return 1;
    printf("%lu:%lu\n", (unsigned long)st.st_dev, (unsigned long)st.st_ino);
    return 0;
  }
  return 2;
}
