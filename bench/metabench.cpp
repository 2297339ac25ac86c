// metabench: the metadata load generator that bench/run points at every
// system (native, vsymfs, bindfs, mergerfs, passthrough_ll).
//
//   metabench --op stat|readlink|open_read|create_unlink|readdir|resolve
//             --dir D [--seconds S] [--procs N] [--expect TEXT]
//             [--expect-entries N] [--setenv K=V ...]
//             [--against D2 [--against-expect TEXT2] [--slice-ms MS]]
//
// It forks N processes that each repeat the operation for S seconds and
// prints one JSON object with the total rate.
//
// With --against, every process alternates between D and D2 in slices of
// MS milliseconds (default 50) on one clock shared by all of them, and the
// JSON gives each side's rate and their ratio (D over D2). Two sides
// measured in alternating slices of one run see the same machine: a burst
// of load from elsewhere, or a daemon thread that landed on the other CPU
// for a while, falls on both alike. bench/run judges "variant readlink >=
// 0.9 x plain readlink" this way. A failed operation is counted
// as an error, never as a (suspiciously fast) operation; the exit status is
// 1 when any operation failed, 2 on a usage error.
//
// What one operation is:
//   stat          lstat() of one entry of D (warm: every entry is looked up
//                 once before timing starts)
//   resolve       stat() of D/NAME where D has a symlink component, so every
//                 call walks through that link (a FUSE mount without kernel
//                 symlink caching sends a READLINK each time)
//   readlink      readlink() of one entry of D; with --expect the text must
//                 equal TEXT (a variant link must come back expanded)
//   open_read     open(O_RDONLY) + read up to 64 KiB + close of one entry of D
//   create_unlink create(O_EXCL) + close + unlink of a new file in D
//   readdir       a full opendir/readdir/closedir scan of D; with
//                 --expect-entries the scan must see exactly N entries
#include <dirent.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <map>
#include <new>
#include <string>
#include <string_view>
#include <vector>

// GCC 12 at -O2 reports a false -Wnull-dereference inside libstdc++ code that
// CLI11 2.1.2 instantiates (CLI::detail::split); the warning is about their
// code, not ours, and -Werror builds must not fail on it.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wnull-dereference"
#include <CLI/CLI.hpp>
#pragma GCC diagnostic pop

namespace {

enum class Op { Stat, Resolve, Readlink, OpenRead, CreateUnlink, Readdir };

struct Options {
  Op op = Op::Stat;
  std::string op_name;
  std::string dir;
  double seconds = 1.0;
  int procs = 1;
  std::string expect;
  bool has_expect = false;
  long expect_entries = -1;
  std::vector<std::string> setenv;
  std::string against;         // empty: one side only
  std::string against_expect;  // --expect for the D2 side
  bool has_against_expect = false;
  double slice = 0.05;         // seconds per slice with --against
};

// Each worker's tally lives in one slot of a MAP_SHARED array, so the parent
// reads it after waitpid() without any pipe protocol.
struct Tally {
  std::uint64_t ops = 0;
  std::uint64_t errors = 0;
  double elapsed = 0.0;
  int first_errno = 0;  // 0 with errors > 0: a wrong result, see first_detail
  char first_detail[512] = {};
};

double now_seconds() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) * 1e-9;
}

void record_error(Tally& t, int err, const char* what, const char* path, std::string_view got = {}) {
  if (t.errors++ != 0) return;
  t.first_errno = err;
  if (err != 0) {
    std::snprintf(t.first_detail, sizeof t.first_detail, "%s %s: %s", what, path, std::strerror(err));
  } else {
    std::snprintf(t.first_detail, sizeof t.first_detail, "%s %s: got '%.*s'", what, path,
                  static_cast<int>(std::min<std::size_t>(got.size(), 200)), got.data());
  }
}

// The entries of dir, as full paths, in a stable order; built once so the
// timed loop does no allocation.
std::vector<std::string> list_paths(const std::string& dir, int* err) {
  std::vector<std::string> paths;
  DIR* d = opendir(dir.c_str());
  if (d == nullptr) {
    *err = errno;
    return paths;
  }
  errno = 0;
  while (dirent* e = readdir(d)) {
    std::string_view name = e->d_name;
    if (name == "." || name == "..") continue;
    paths.push_back(dir + "/" + std::string(name));
  }
  *err = errno;
  closedir(d);
  std::sort(paths.begin(), paths.end());
  return paths;
}

// True when some component of path (after the first) is a symlink.
bool has_symlink_component(const std::string& path) {
  for (std::size_t pos = path.find('/', 1); ; pos = path.find('/', pos + 1)) {
    std::string prefix = path.substr(0, pos);
    struct stat st {};
    if (lstat(prefix.c_str(), &st) == 0 && S_ISLNK(st.st_mode)) return true;
    if (pos == std::string::npos) return false;
  }
}

class Worker {
 public:
  Worker(const Options& opts, const std::vector<std::string>& paths, Tally& tally)
      : opts_(opts), paths_(paths), tally_(tally) {}

  // One operation; `i` picks the entry (callers spread it across workers).
  void run_one(std::size_t i) {
    switch (opts_.op) {
      case Op::Stat: {
        struct stat st {};
        const char* p = paths_[i % paths_.size()].c_str();
        if (lstat(p, &st) != 0) return record_error(tally_, errno, "lstat", p);
        break;
      }
      case Op::Resolve: {
        struct stat st {};
        const char* p = paths_[i % paths_.size()].c_str();
        if (stat(p, &st) != 0) return record_error(tally_, errno, "stat", p);
        break;
      }
      case Op::Readlink: {
        const char* p = paths_[i % paths_.size()].c_str();
        ssize_t n = readlink(p, buf_, sizeof buf_);
        if (n < 0) return record_error(tally_, errno, "readlink", p);
        std::string_view got(buf_, static_cast<std::size_t>(n));
        if (opts_.has_expect && got != opts_.expect) return record_error(tally_, 0, "readlink", p, got);
        break;
      }
      case Op::OpenRead: {
        const char* p = paths_[i % paths_.size()].c_str();
        int fd = open(p, O_RDONLY | O_CLOEXEC);
        if (fd < 0) return record_error(tally_, errno, "open", p);
        ssize_t n = read(fd, buf_, sizeof buf_);
        int read_errno = errno;
        close(fd);
        if (n < 0) return record_error(tally_, read_errno, "read", p);
        break;
      }
      case Op::CreateUnlink: {
        std::snprintf(name_, sizeof name_, "%s/.metabench.%d.%zu", opts_.dir.c_str(),
                      static_cast<int>(getpid()), i);
        int fd = open(name_, O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, 0644);
        if (fd < 0) return record_error(tally_, errno, "create", name_);
        if (close(fd) != 0) {
          record_error(tally_, errno, "close", name_);
          unlink(name_);
          return;
        }
        if (unlink(name_) != 0) return record_error(tally_, errno, "unlink", name_);
        break;
      }
      case Op::Readdir: {
        DIR* d = opendir(opts_.dir.c_str());
        if (d == nullptr) return record_error(tally_, errno, "opendir", opts_.dir.c_str());
        long entries = 0;
        errno = 0;
        while (dirent* e = readdir(d)) {
          if (std::strcmp(e->d_name, ".") != 0 && std::strcmp(e->d_name, "..") != 0) ++entries;
        }
        int read_errno = errno;
        closedir(d);
        if (read_errno != 0) return record_error(tally_, read_errno, "readdir", opts_.dir.c_str());
        if (opts_.expect_entries >= 0 && entries != opts_.expect_entries) {
          char got[32];
          int len = std::snprintf(got, sizeof got, "%ld entries", entries);
          return record_error(tally_, 0, "readdir", opts_.dir.c_str(), std::string_view(got, static_cast<std::size_t>(len)));
        }
        break;
      }
    }
    ++tally_.ops;
  }

  // One untimed pass over every entry, so "warm" means warm.
  void warm_up() {
    if (opts_.op == Op::CreateUnlink) return;
    std::size_t n = opts_.op == Op::Readdir ? 1 : paths_.size();
    for (std::size_t i = 0; i < n; ++i) run_one(i);
    tally_.ops = 0;  // warm-up errors stay counted
  }

  void run_timed(std::size_t start) {
    double begin = now_seconds();
    double deadline = begin + opts_.seconds;
    double t = begin;
    for (std::size_t i = start; ; ++i) {
      run_one(i);
      // Reading the clock costs ~20 ns (vDSO) against >= 500 ns for the
      // cheapest operation, so checking after every op keeps the end exact.
      t = now_seconds();
      if (t >= deadline) break;
    }
    tally_.elapsed = t - begin;
  }

  // Operations from entry `i` on until the clock passes `until`; the time
  // they took is added to this side's elapsed time. Returns the clock.
  double run_until(std::size_t& i, double until) {
    const double begin = now_seconds();
    double t = begin;
    do {
      run_one(i++);
      t = now_seconds();
    } while (t < until);
    tally_.elapsed += t - begin;
    return t;
  }

 private:
  const Options& opts_;
  const std::vector<std::string>& paths_;
  Tally& tally_;
  char buf_[65536] = {};
  char name_[4096] = {};
};

// One process's share of an --against run: slice k of the shared clock
// (from t0) goes to side a when k is even, to side b when it is odd.
void run_alternating(Worker& a, Worker& b, std::size_t start_a, std::size_t start_b, double t0, double seconds,
                     double slice) {
  const double deadline = t0 + seconds;
  std::size_t ia = start_a, ib = start_b;
  for (double t = now_seconds(); t < deadline;) {
    const auto k = static_cast<std::uint64_t>((t - t0) / slice);
    const double until = std::min(t0 + static_cast<double>(k + 1) * slice, deadline);
    t = (k % 2 == 0) ? a.run_until(ia, until) : b.run_until(ib, until);
  }
}

std::string json_escape(std::string_view s) {
  std::string out;
  for (char c : s) {
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\t': out += "\\t"; break;
      default:
        if (static_cast<unsigned char>(c) < 0x20) {
          char hex[8];
          std::snprintf(hex, sizeof hex, "\\u%04x", static_cast<unsigned>(c));
          out += hex;
        } else {
          out += c;
        }
    }
  }
  return out;
}

// /proc/<pid>/environ (what vsymfs reads) shows the environment of the last
// execve, not later setenv() calls, so a wanted variable is set by
// re-executing ourselves with it. Returns only when nothing had to change.
void apply_setenv_or_reexec(const std::vector<std::string>& assignments, char** argv) {
  bool changed = false;
  for (const std::string& kv : assignments) {
    std::size_t eq = kv.find('=');
    std::string key = kv.substr(0, eq);
    std::string value = kv.substr(eq + 1);
    const char* cur = std::getenv(key.c_str());
    if (cur != nullptr && value == cur) continue;
    setenv(key.c_str(), value.c_str(), 1);
    changed = true;
  }
  if (!changed) return;
  execv("/proc/self/exe", argv);
  std::fprintf(stderr, "metabench: re-exec with --setenv failed: %s\n", std::strerror(errno));
  std::exit(2);
}

}  // namespace

int main(int argc, char** argv) {
  Options opts;
  const std::map<std::string, Op> ops{
      {"stat", Op::Stat},         {"resolve", Op::Resolve},
      {"readlink", Op::Readlink}, {"open_read", Op::OpenRead},
      {"create_unlink", Op::CreateUnlink}, {"readdir", Op::Readdir}};

  CLI::App app{"metabench: metadata operations per second on a directory (JSON on stdout)"};
  app.add_option("--op", opts.op_name, "stat|resolve|readlink|open_read|create_unlink|readdir")
      ->required()
      ->check(CLI::IsMember(ops));
  app.add_option("--dir", opts.dir, "directory whose entries are used")->required();
  app.add_option("--seconds", opts.seconds, "timed duration per process")
      ->check(CLI::Range(0.01, 3600.0));
  app.add_option("--procs", opts.procs, "concurrent processes")->check(CLI::Range(1, 256));
  auto* expect = app.add_option("--expect", opts.expect, "readlink: the text every link must return");
  app.add_option("--expect-entries", opts.expect_entries, "readdir: entries a scan must see")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--setenv", opts.setenv, "K=V put in the environment (before forking)")
      ->check([](const std::string& kv) {
        return kv.find('=') == std::string::npos || kv.front() == '=' ? std::string("expected K=V")
                                                                       : std::string();
      });
  auto* against = app.add_option("--against", opts.against,
                                 "a second directory, measured in slices alternating with --dir");
  auto* against_expect =
      app.add_option("--against-expect", opts.against_expect, "readlink: the text every link of --against returns")
          ->needs(against);
  double slice_ms = 50;
  app.add_option("--slice-ms", slice_ms, "with --against: milliseconds per slice")
      ->check(CLI::Range(1.0, 10000.0))
      ->needs(against);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    int code = app.exit(e);
    return code == 0 ? 0 : 2;
  }
  opts.op = ops.at(opts.op_name);
  opts.has_expect = expect->count() > 0;
  opts.has_against_expect = against_expect->count() > 0;
  opts.slice = slice_ms / 1000.0;
  while (opts.dir.size() > 1 && opts.dir.back() == '/') opts.dir.pop_back();
  while (opts.against.size() > 1 && opts.against.back() == '/') opts.against.pop_back();
  // The D2 side: the same operation, its own directory and expected text.
  Options other = opts;
  other.dir = opts.against;
  other.expect = opts.against_expect;
  other.has_expect = opts.has_against_expect;
  const bool alternate = !opts.against.empty();

  apply_setenv_or_reexec(opts.setenv, argv);

  // The entries of a side's directory (none for the ops that use the
  // directory itself); false, said on stderr, when it cannot be used.
  const auto prepare = [&](const Options& o, std::vector<std::string>& paths) {
    if (o.op != Op::CreateUnlink && o.op != Op::Readdir) {
      int err = 0;
      paths = list_paths(o.dir, &err);
      if (err != 0) {
        std::fprintf(stderr, "metabench: cannot list %s: %s\n", o.dir.c_str(), std::strerror(err));
        return false;
      }
      if (paths.empty()) {
        std::fprintf(stderr, "metabench: %s has no entries to %s\n", o.dir.c_str(), o.op_name.c_str());
        return false;
      }
    }
    if (o.op == Op::Resolve && !has_symlink_component(o.dir)) {
      std::fprintf(stderr, "metabench: resolve needs a --dir that goes through a symlink; %s does not\n",
                   o.dir.c_str());
      return false;
    }
    return true;
  };
  std::vector<std::string> paths, other_paths;
  if (!prepare(opts, paths) || (alternate && !prepare(other, other_paths))) return 2;

  // Per side, a tally for each worker and one for the parent's warm-up
  // pass; then the clock the workers start from.
  const std::size_t per_side = static_cast<std::size_t>(opts.procs) + 1;
  const std::size_t tallies_bytes = sizeof(Tally) * per_side * 2 + sizeof(double);
  void* shared = mmap(nullptr, tallies_bytes, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (shared == MAP_FAILED) {
    std::fprintf(stderr, "metabench: mmap: %s\n", std::strerror(errno));
    return 2;
  }
  Tally* tallies = static_cast<Tally*>(shared);
  for (std::size_t i = 0; i < per_side * 2; ++i) new (&tallies[i]) Tally{};
  Tally* other_tallies = tallies + per_side;
  auto* t0 = reinterpret_cast<double*>(tallies + per_side * 2);
  Tally& warm = tallies[opts.procs];  // the parent's warm-up pass
  Tally& other_warm = other_tallies[opts.procs];

  Worker(opts, paths, warm).warm_up();
  if (alternate) Worker(other, other_paths, other_warm).warm_up();

  // The workers block on this pipe until the parent closes it, so they all
  // start together after every fork has been paid for.
  int start_pipe[2];
  if (pipe(start_pipe) != 0) {
    std::fprintf(stderr, "metabench: pipe: %s\n", std::strerror(errno));
    return 2;
  }
  std::vector<pid_t> children;
  for (int w = 0; w < opts.procs; ++w) {
    pid_t pid = fork();
    if (pid < 0) {
      std::fprintf(stderr, "metabench: fork: %s\n", std::strerror(errno));
      for (pid_t c : children) kill(c, SIGKILL);
      return 2;
    }
    if (pid == 0) {
      close(start_pipe[1]);
      char byte;
      while (read(start_pipe[0], &byte, 1) < 0 && errno == EINTR) {
      }
      // Spread the workers over the entries so they do not walk in lockstep.
      const auto spread = [&](const std::vector<std::string>& p) {
        return p.empty() ? 0 : p.size() * static_cast<std::size_t>(w) / static_cast<std::size_t>(opts.procs);
      };
      Worker mine(opts, paths, tallies[w]);
      if (alternate) {
        Worker theirs(other, other_paths, other_tallies[w]);
        run_alternating(mine, theirs, spread(paths), spread(other_paths), *t0, opts.seconds, opts.slice);
      } else {
        mine.run_timed(spread(paths));
      }
      _exit(0);
    }
    children.push_back(pid);
  }
  close(start_pipe[0]);
  *t0 = now_seconds();  // read by the workers after the close below wakes them
  close(start_pipe[1]);

  bool worker_died = false;
  for (pid_t c : children) {
    int status = 0;
    while (waitpid(c, &status, 0) < 0 && errno == EINTR) {
    }
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) worker_died = true;
  }
  if (worker_died) {
    std::fprintf(stderr, "metabench: a worker process died\n");
    return 2;
  }

  // A side's operations, failures and rate (the sum of its workers' rates).
  struct Side {
    std::uint64_t ops = 0, errors = 0;
    double rate = 0.0;
    const char* first_detail = nullptr;
  };
  const auto sum = [&](const Tally* t) {
    Side s;
    s.errors = t[opts.procs].errors;
    if (s.errors != 0) s.first_detail = t[opts.procs].first_detail;
    for (int w = 0; w < opts.procs; ++w) {
      s.ops += t[w].ops;
      s.errors += t[w].errors;
      if (t[w].elapsed > 0) s.rate += static_cast<double>(t[w].ops) / t[w].elapsed;
      if (s.first_detail == nullptr && t[w].errors != 0) s.first_detail = t[w].first_detail;
    }
    return s;
  };
  const Side one = sum(tallies);
  const Side two = alternate ? sum(other_tallies) : Side{};
  const std::uint64_t total_errors = one.errors + two.errors;
  const char* first_detail = one.first_detail != nullptr ? one.first_detail : two.first_detail;

  std::printf("{\"op\": \"%s\", \"dir\": \"%s\", \"procs\": %d, \"seconds\": %.3f, "
              "\"entries\": %zu, \"ops\": %llu, \"errors\": %llu, \"ops_per_sec\": %.1f",
              opts.op_name.c_str(), json_escape(opts.dir).c_str(), opts.procs, opts.seconds,
              paths.size(), static_cast<unsigned long long>(one.ops),
              static_cast<unsigned long long>(total_errors), one.rate);
  if (alternate) {
    std::printf(", \"slice_ms\": %.1f, \"against\": \"%s\", \"against_ops\": %llu, \"against_ops_per_sec\": %.1f, "
                "\"ratio\": %.4f",
                opts.slice * 1000.0, json_escape(opts.against).c_str(), static_cast<unsigned long long>(two.ops),
                two.rate, two.rate > 0 ? one.rate / two.rate : 0.0);
  }
  if (first_detail != nullptr) std::printf(", \"first_error\": \"%s\"", json_escape(first_detail).c_str());
  std::printf("}\n");
  return total_errors == 0 ? 0 : 1;
}
