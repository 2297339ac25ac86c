// One worker of stress_test: for a given time it creates, writes, renames,
// links, unlinks, chmods, truncates, sets times, makes and reads variant
// links and executes a program through one, in a directory it shares with
// the other workers, using only names that begin with its own prefix. It
// keeps a model of what its names must be, checks every result against it
// as it goes, and at the end checks the directory through the mount and in
// SOURCE against the model.
//
//   stress_worker MOUNT_DIR SOURCE_DIR WORKER SECONDS SEED
//
// MOUNT_DIR and SOURCE_DIR are the same directory seen through the mount and
// directly. The worker's environment must hold STRESS_WORKER=<WORKER> (read
// by the daemon from /proc for the variant links). Prints one line:
// "ops N execs N links N errors N" and then the first errors; exits 0 when
// there were none.
#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <random>
#include <set>
#include <string>
#include <vector>

namespace {

// A file or a symlink. Hard links share one (link(2) does not follow a
// symlink: it makes a second name of the link itself).
struct Inode {
  std::string content;            // files
  std::string raw;                // symlinks: the template as stored
  std::string expansion;          // symlinks: what this worker must read
  mode_t mode = 0644;
  bool times_set = false;  // the last change was utimensat: mtime is known
  long mtime = 0;
};

struct Entry {
  bool symlink = false;
  std::shared_ptr<Inode> inode;  // shared by hard links
};

class Worker {
 public:
  Worker(std::string mnt, std::string src, std::string me, unsigned seed)
      : mnt_(std::move(mnt)), src_(std::move(src)), me_(std::move(me)), rng_(seed) {}

  void run(double seconds) {
    ::mkdir((mnt_ + "/" + me_ + ".d").c_str(), 0755);
    const auto until = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
    while (std::chrono::steady_clock::now() < until) step();
    verify(mnt_, true);
    verify(src_, false);
  }

  int report() const {
    std::printf("ops %ld execs %ld links %ld errors %zu\n", ops_, execs_, link_reads_, errors_.size());
    for (std::size_t i = 0; i < errors_.size() && i < 20; ++i) std::printf("  %s\n", errors_[i].c_str());
    return errors_.empty() ? 0 : 1;
  }

 private:
  // Names: a few, so that operations meet existing names often.
  std::string name() {
    const unsigned n = rng_() % 24;
    return (n % 3 == 0 ? me_ + ".d/" : "") + me_ + "-" + std::to_string(n);
  }
  std::string path(const std::string& rel) const { return mnt_ + "/" + rel; }
  std::string token() { return me_ + ":" + std::to_string(rng_()) + "\n"; }

  void error(const std::string& what) { errors_.push_back(what); }
  void expect_errno(const char* op, const std::string& rel, int rc, int want) {
    const int got = rc == 0 ? 0 : errno;
    if (got != want)
      error(std::string(op) + " " + rel + ": got " + (got ? std::strerror(got) : "success") + ", want " +
            (want ? std::strerror(want) : "success"));
  }
  bool is_file(const std::string& rel) const {
    auto it = model_.find(rel);
    return it != model_.end() && !it->second.symlink;
  }

  void step() {
    ++ops_;
    const unsigned op = rng_() % 100;
    if (op < 14) do_create();
    else if (op < 24) do_append();
    else if (op < 36) do_rename();
    else if (op < 44) do_link();
    else if (op < 54) do_unlink();
    else if (op < 60) do_chmod();
    else if (op < 66) do_truncate();
    else if (op < 72) do_utimes();
    else if (op < 80) do_symlink();
    else if (op < 88) do_read_back();
    else if (op < 98) do_shared_link();
    else do_exec();
  }

  void do_create() {
    const std::string rel = name();
    const std::string data = token();
    const int fd = ::open(path(rel).c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    expect_errno("create", rel, fd >= 0 ? 0 : -1, model_.contains(rel) ? EEXIST : 0);
    if (fd < 0) return;
    if (::write(fd, data.data(), data.size()) != static_cast<ssize_t>(data.size())) error("write " + rel);
    ::close(fd);
    auto inode = std::make_shared<Inode>();
    inode->content = data;
    model_[rel] = Entry{false, inode};
  }

  void do_append() {
    const std::string rel = name();
    if (!is_file(rel)) return;
    const std::string data = token();
    const int fd = ::open(path(rel).c_str(), O_WRONLY | O_APPEND | O_CLOEXEC);
    if (fd < 0) return error("open for append " + rel + ": " + std::strerror(errno));
    if (::write(fd, data.data(), data.size()) != static_cast<ssize_t>(data.size())) error("append " + rel);
    ::close(fd);
    Inode& in = *model_[rel].inode;
    in.content += data;
    in.times_set = false;
  }

  void do_rename() {
    const std::string from = name(), to = name();
    const int rc = ::rename(path(from).c_str(), path(to).c_str());
    auto f = model_.find(from);
    if (f == model_.end()) return expect_errno("rename", from, rc, ENOENT);
    expect_errno("rename", from + " -> " + to, rc, 0);
    if (rc != 0) return;
    auto t = model_.find(to);
    // Two names of one file or link: rename does nothing (POSIX).
    if (t != model_.end() && f->second.inode == t->second.inode) return;
    if (from == to) return;
    model_[to] = f->second;
    model_.erase(from);
  }

  void do_link() {
    const std::string from = name(), to = name();
    const int rc = ::link(path(from).c_str(), path(to).c_str());
    if (!model_.contains(from)) return expect_errno("link", from, rc, ENOENT);
    if (model_.contains(to)) return expect_errno("link", from + " -> " + to, rc, EEXIST);
    expect_errno("link", from + " -> " + to, rc, 0);
    if (rc == 0) model_[to] = model_[from];
  }

  void do_unlink() {
    const std::string rel = name();
    const int rc = ::unlink(path(rel).c_str());
    expect_errno("unlink", rel, rc, model_.contains(rel) ? 0 : ENOENT);
    if (rc == 0) model_.erase(rel);
  }

  void do_chmod() {
    const std::string rel = name();
    if (!is_file(rel)) return;
    const mode_t mode = 0600 | (rng_() % 2 ? 0040 : 0) | (rng_() % 2 ? 0004 : 0) | (rng_() % 2 ? 0100 : 0);
    expect_errno("chmod", rel, ::chmod(path(rel).c_str(), mode), 0);
    model_[rel].inode->mode = mode;
  }

  void do_truncate() {
    const std::string rel = name();
    if (!is_file(rel)) return;
    Inode& in = *model_[rel].inode;
    const std::size_t len = in.content.empty() ? 0 : rng_() % (in.content.size() + 1);
    expect_errno("truncate", rel, ::truncate(path(rel).c_str(), static_cast<off_t>(len)), 0);
    in.content.resize(len);
    in.times_set = false;
  }

  void do_utimes() {
    const std::string rel = name();
    if (!is_file(rel)) return;
    const long t = 1'000'000'000L + static_cast<long>(rng_() % 100'000'000);
    const timespec ts[2] = {{t, 0}, {t, 0}};
    expect_errno("utimensat", rel, ::utimensat(AT_FDCWD, path(rel).c_str(), ts, 0), 0);
    Inode& in = *model_[rel].inode;
    in.times_set = true;
    in.mtime = t;
  }

  // A variant link of our own: its expansion names this worker.
  void do_symlink() {
    const std::string rel = name();
    const std::string n = std::to_string(rng_() % 1000);
    const std::string raw = "${STRESS_WORKER}-" + n;
    const int rc = ::symlink(raw.c_str(), path(rel).c_str());
    expect_errno("symlink", rel, rc, model_.contains(rel) ? EEXIST : 0);
    if (rc == 0) {
      auto inode = std::make_shared<Inode>();
      inode->raw = raw;
      inode->expansion = me_ + "-" + n;
      model_[rel] = Entry{true, inode};
    }
  }

  void do_read_back() {
    const std::string rel = name();
    auto it = model_.find(rel);
    if (it == model_.end()) return;
    if (it->second.symlink) {
      check_link(rel, it->second.inode->expansion);
    } else {
      const std::string got = read_file(path(rel));
      if (got != it->second.inode->content) error("read " + rel + ": content differs");
    }
  }

  void check_link(const std::string& rel, const std::string& want) {
    ++link_reads_;
    char buf[256];
    const ssize_t n = ::readlink(path(rel).c_str(), buf, sizeof buf);
    const std::string got = n < 0 ? std::string("<") + std::strerror(errno) + ">" : std::string(buf, std::size_t(n));
    if (got != want) error("readlink " + rel + ": got '" + got + "', want '" + want + "'");
    struct stat st {};
    if (::lstat(path(rel).c_str(), &st) != 0 || st.st_size != static_cast<off_t>(want.size()))
      error("lstat " + rel + ": size is not the expansion's length");
  }

  // Links every worker reads at once: each must get its own answer.
  void do_shared_link() { check_link("../shared/who", me_); }

  // Executes ../shared/prog, a variant link to prog-<worker>, a script
  // that prints its own name.
  void do_exec() {
    ++execs_;
    int p[2];
    if (::pipe2(p, O_CLOEXEC) != 0) return error("pipe");
    const std::string prog = path("../shared/prog");
    const pid_t pid = ::fork();
    if (pid == 0) {
      ::dup2(p[1], 1);
      char* argv[] = {const_cast<char*>(prog.c_str()), nullptr};
      ::execve(argv[0], argv, environ);
      ::_exit(127);
    }
    ::close(p[1]);
    std::string out;
    char buf[128];
    ssize_t n;
    while ((n = ::read(p[0], buf, sizeof buf)) > 0) out.append(buf, static_cast<std::size_t>(n));
    ::close(p[0]);
    int status = 0;
    ::waitpid(pid, &status, 0);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0 || out != me_ + "\n")
      error("exec through the variant link: status " + std::to_string(status) + ", printed '" + out + "'");
  }

  static std::string read_file(const std::string& p) {
    std::string out;
    const int fd = ::open(p.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) return "<" + std::string(std::strerror(errno)) + ">";
    char buf[4096];
    ssize_t n;
    while ((n = ::read(fd, buf, sizeof buf)) > 0) out.append(buf, static_cast<std::size_t>(n));
    ::close(fd);
    return out;
  }

  // Everything in `root` that is ours must be the model, nothing more.
  void verify(const std::string& root, bool through_mount) {
    const std::string where = through_mount ? "mount" : "SOURCE";
    std::set<std::string> seen;
    for (const std::string& dir : {std::string(), me_ + ".d/"}) {
      std::unique_ptr<DIR, int (*)(DIR*)> d(::opendir((root + "/" + dir).c_str()), ::closedir);
      if (!d) {
        error(where + ": cannot list " + dir);
        continue;
      }
      while (dirent* e = ::readdir(d.get())) {
        const std::string n = e->d_name;
        if (n.rfind(me_ + "-", 0) == 0) seen.insert(dir + n);
      }
    }
    std::set<std::string> want;
    for (const auto& [rel, entry] : model_) want.insert(rel);
    if (seen != want) error(where + ": the names differ from the model");
    // Hard links: one inode per model inode.
    std::map<const Inode*, ino_t> inos;
    for (const auto& [rel, entry] : model_) {
      const std::string p = root + "/" + rel;
      struct stat st {};
      if (::lstat(p.c_str(), &st) != 0) {
        error(where + ": lstat " + rel + ": " + std::strerror(errno));
        continue;
      }
      const Inode& in = *entry.inode;
      if (entry.symlink) {
        char buf[256];
        const ssize_t n = ::readlink(p.c_str(), buf, sizeof buf);
        const std::string got = n < 0 ? "" : std::string(buf, static_cast<std::size_t>(n));
        const std::string& want_text = through_mount ? in.expansion : in.raw;
        if (!S_ISLNK(st.st_mode) || got != want_text)
          error(where + ": link " + rel + " reads '" + got + "', want '" + want_text + "'");
        if (through_mount && st.st_size != static_cast<off_t>(in.expansion.size()))
          error(where + ": link " + rel + ": size is not the expansion's length");
      } else {
        if (!S_ISREG(st.st_mode) || (st.st_mode & 07777) != in.mode)
          error(where + ": " + rel + " has mode " + std::to_string(st.st_mode & 07777) + ", want " +
                std::to_string(in.mode));
        if (st.st_size != static_cast<off_t>(in.content.size()) || read_file(p) != in.content)
          error(where + ": " + rel + " content differs");
        if (in.times_set && st.st_mtime != in.mtime) error(where + ": " + rel + " mtime differs");
      }
      const long links = std::count_if(model_.begin(), model_.end(),
                                       [&](const auto& kv) { return kv.second.inode.get() == &in; });
      if (st.st_nlink != static_cast<nlink_t>(links))
        error(where + ": " + rel + " has " + std::to_string(st.st_nlink) + " links, want " + std::to_string(links));
      auto [it, fresh] = inos.emplace(&in, st.st_ino);
      if (!fresh && it->second != st.st_ino) error(where + ": " + rel + " is not the same file as its hard links");
    }
  }

  std::string mnt_, src_, me_;
  std::mt19937 rng_;
  std::map<std::string, Entry> model_;
  std::vector<std::string> errors_;
  long ops_ = 0, execs_ = 0, link_reads_ = 0;
};

}  // namespace

int main(int argc, char** argv) {
  if (argc != 6) {
    std::fprintf(stderr, "usage: stress_worker MOUNT_DIR SOURCE_DIR WORKER SECONDS SEED\n");
    return 2;
  }
  const char* env = std::getenv("STRESS_WORKER");
  if (env == nullptr || std::string(env) != argv[3]) {
    std::fprintf(stderr, "stress_worker: STRESS_WORKER must be %s\n", argv[3]);
    return 2;
  }
  Worker w(argv[1], argv[2], argv[3], static_cast<unsigned>(std::strtoul(argv[5], nullptr, 10)));
  w.run(std::strtod(argv[4], nullptr));
  return w.report();
}
