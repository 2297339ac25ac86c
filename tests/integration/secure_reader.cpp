// A small reader for the security tests, which copy it and make the copy
// set-group-id or give it a file capability (the build makes it, so the
// tests need no program from the system):
//   secure_reader readlink PATH...
//       prints "secure=N" (the kernel's AT_SECURE for this process), then
//       each link's target on a line of its own ("<errno N>" on failure)
//   secure_reader threads N PATH WANT
//       starts up to N threads that each read the link at PATH once and
//       then stay alive; when all have read, prints "threads T good G"
//       (T started, G read WANT), then waits for stdin to close and exits
#include <pthread.h>
#include <sys/auxv.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

namespace {

std::string read_link(const char* path) {
  char buf[PATH_MAX];
  const ssize_t n = ::readlink(path, buf, sizeof buf);
  if (n < 0) return "<errno " + std::to_string(errno) + ">";
  return std::string(buf, static_cast<std::size_t>(n));
}

struct Shared {
  pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
  pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
  const char* path = nullptr;
  const char* want = nullptr;
  int done = 0, good = 0;
  bool release = false;
};

void* reader(void* arg) {
  auto* s = static_cast<Shared*>(arg);
  const bool ok = read_link(s->path) == s->want;
  pthread_mutex_lock(&s->mu);
  ++s->done;
  if (ok) ++s->good;
  pthread_cond_broadcast(&s->cv);
  // Alive until told: the daemon sees every thread at once.
  while (!s->release) pthread_cond_wait(&s->cv, &s->mu);
  pthread_mutex_unlock(&s->mu);
  return nullptr;
}

int threads(int n, const char* path, const char* want) {
  Shared s;
  s.path = path;
  s.want = want;
  pthread_attr_t attr;
  pthread_attr_init(&attr);
  pthread_attr_setstacksize(&attr, 64 * 1024);
  std::vector<pthread_t> ids;
  for (int i = 0; i < n; ++i) {
    pthread_t t;
    if (pthread_create(&t, &attr, reader, &s) != 0) break;  // a limit: report how many
    ids.push_back(t);
  }
  pthread_mutex_lock(&s.mu);
  while (s.done < static_cast<int>(ids.size())) pthread_cond_wait(&s.cv, &s.mu);
  const int good = s.good;
  pthread_mutex_unlock(&s.mu);
  std::printf("threads %zu good %d\n", ids.size(), good);
  std::fflush(stdout);
  char c;
  while (::read(0, &c, 1) > 0) {
  }
  pthread_mutex_lock(&s.mu);
  s.release = true;
  pthread_cond_broadcast(&s.cv);
  pthread_mutex_unlock(&s.mu);
  for (pthread_t t : ids) pthread_join(t, nullptr);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc >= 2 && std::strcmp(argv[1], "readlink") == 0) {
    std::printf("secure=%lu\n", ::getauxval(AT_SECURE));
    for (int i = 2; i < argc; ++i) std::printf("%s\n", read_link(argv[i]).c_str());
    return 0;
  }
  if (argc == 5 && std::strcmp(argv[1], "threads") == 0) return threads(std::atoi(argv[2]), argv[3], argv[4]);
  std::fprintf(stderr, "usage: secure_reader readlink PATH... | threads N PATH WANT\n");
  return 64;
}
