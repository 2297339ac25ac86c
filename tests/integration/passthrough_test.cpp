// The mount behaves like the filesystem under it: each case runs the same
// sequence of syscalls in a plain directory and through the mount, records
// every result and errno, and the two records must be equal. Each case also
// names results it must contain, so a sequence that fails the same way on
// both sides cannot pass.
#include <dirent.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/mount.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/wait.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <fstream>
#include <thread>
#include <cerrno>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <functional>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "common/temp_dir.hpp"
#include "mount_fixture.hpp"

namespace {

using vsymfs::testing::Mount;

// What a sequence did: one line per step, "step=value" or "step=ERRNONAME".
class Trace {
 public:
  explicit Trace(std::string base) : base_(std::move(base)) {}
  std::string path(const std::string& rel) const { return base_ + "/" + rel; }
  const char* p(const std::string& rel) {
    paths_.push_back(path(rel));
    return paths_.back().c_str();
  }

  // Records r (or errno when r < 0) and returns r.
  long rc(const std::string& step, long r) {
    lines_.push_back(step + "=" + (r < 0 ? errname(errno) : std::to_string(r)));
    return r;
  }
  void note(const std::string& step, const std::string& value) { lines_.push_back(step + "=" + value); }
  const std::vector<std::string>& lines() const { return lines_; }

  static std::string errname(int e) {
    const char* n = strerrorname_np(e);
    return n ? n : "E?" + std::to_string(e);
  }

 private:
  std::string base_;
  std::vector<std::string> paths_;  // keeps c_str() alive (vector of strings: pointers into heap blocks)
  std::vector<std::string> lines_;
};

std::string read_all(int fd) {
  std::string out;
  char buf[65536];
  ssize_t n;
  while ((n = ::read(fd, buf, sizeof buf)) > 0) out.append(buf, static_cast<size_t>(n));
  return out;
}

std::string slurp(const char* path) {
  int fd = ::open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return "<" + Trace::errname(errno) + ">";
  std::string s = read_all(fd);
  ::close(fd);
  return s;
}

void write_file(const char* path, const std::string& data, mode_t mode = 0644) {
  int fd = ::open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
  if (fd < 0) return;
  [[maybe_unused]] ssize_t n = ::write(fd, data.data(), data.size());
  ::close(fd);
}

struct Case {
  const char* name;
  std::function<void(Trace&)> run;
  std::vector<std::string> must_contain;  // lines both records must have
};

const std::vector<Case>& cases() {
  static const std::vector<Case> all = {
      {"create_exclusive",
       [](Trace& t) {
         long fd = t.rc("create", ::open(t.p("f"), O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, 0640));
         if (fd >= 0) ::close(static_cast<int>(fd));
         t.rc("create_again", ::open(t.p("f"), O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, 0640));
         struct stat st {};
         t.rc("stat", ::stat(t.p("f"), &st));
         t.note("mode", std::to_string(st.st_mode & 07777));
         t.rc("open_missing", ::open(t.p("missing"), O_RDONLY));
       },
       {"create_again=EEXIST", "mode=416", "open_missing=ENOENT"}},

      {"read_write_append",
       [](Trace& t) {
         int fd = static_cast<int>(t.rc("open", ::open(t.p("f"), O_CREAT | O_RDWR | O_CLOEXEC, 0644)));
         t.rc("write", ::write(fd, "hello world", 11));
         t.rc("pwrite", ::pwrite(fd, "HELLO", 5, 0));
         t.rc("pwrite_past_end", ::pwrite(fd, "!", 1, 20));
         ::close(fd);
         fd = static_cast<int>(t.rc("open_append", ::open(t.p("f"), O_WRONLY | O_APPEND | O_CLOEXEC)));
         t.rc("append", ::write(fd, "tail", 4));
         ::close(fd);
         std::string s = slurp(t.p("f"));
         std::replace(s.begin(), s.end(), '\0', '.');
         t.note("content", s);
         fd = static_cast<int>(t.rc("open_trunc", ::open(t.p("f"), O_WRONLY | O_TRUNC | O_CLOEXEC)));
         ::close(fd);
         t.note("after_trunc", slurp(t.p("f")));
         fd = static_cast<int>(t.rc("open_rdonly", ::open(t.p("f"), O_RDONLY | O_CLOEXEC)));
         t.rc("write_rdonly", ::write(fd, "x", 1));
         ::close(fd);
       },
       {"content=HELLO world.........!tail", "after_trunc=", "write_rdonly=EBADF"}},

      {"large_io",
       [](Trace& t) {
         // 3 MiB: several max_write-sized requests and reads.
         std::string data(3 << 20, '\0');
         for (size_t i = 0; i < data.size(); ++i) data[i] = static_cast<char>('a' + (i * 7919) % 26);
         write_file(t.p("big"), data);
         t.note("equal", slurp(t.p("big")) == data ? "yes" : "no");
         struct stat st {};
         t.rc("stat", ::stat(t.p("big"), &st));
         t.note("size", std::to_string(st.st_size));
       },
       {"equal=yes", "size=3145728"}},

      {"truncate",
       [](Trace& t) {
         write_file(t.p("f"), "0123456789");
         t.rc("truncate", ::truncate(t.p("f"), 4));
         t.note("content", slurp(t.p("f")));
         int fd = ::open(t.p("f"), O_RDWR | O_CLOEXEC);
         t.rc("ftruncate", ::ftruncate(fd, 100));
         struct stat st {};
         t.rc("fstat", ::fstat(fd, &st));
         t.note("size", std::to_string(st.st_size));
         ::close(fd);
         t.rc("truncate_dir", ::truncate(t.p("."), 0));
         t.rc("truncate_negative", ::truncate(t.p("f"), -1));
       },
       {"content=0123", "size=100", "truncate_dir=EISDIR", "truncate_negative=EINVAL"}},

      {"chmod_chown",
       [](Trace& t) {
         write_file(t.p("f"), "x");
         t.rc("chmod", ::chmod(t.p("f"), 04751));
         t.rc("chown", ::chown(t.p("f"), 1234, 2345));
         struct stat st {};
         t.rc("stat", ::stat(t.p("f"), &st));
         // chown by root clears set-user-ID on an executable.
         t.note("mode", std::to_string(st.st_mode & 07777));
         t.note("owner", std::to_string(st.st_uid) + ":" + std::to_string(st.st_gid));
         t.rc("lchown_missing", ::lchown(t.p("missing"), 1, 1));
       },
       {"mode=489", "owner=1234:2345", "lchown_missing=ENOENT"}},

      {"utimens",
       [](Trace& t) {
         write_file(t.p("f"), "x");
         struct timespec ts[2] = {{1000000000, 5}, {1200000000, 123456789}};
         t.rc("utimensat", ::utimensat(AT_FDCWD, t.p("f"), ts, 0));
         struct stat st {};
         ::stat(t.p("f"), &st);
         t.note("times", std::to_string(st.st_atim.tv_sec) + "." + std::to_string(st.st_atim.tv_nsec) + " " +
                             std::to_string(st.st_mtim.tv_sec) + "." + std::to_string(st.st_mtim.tv_nsec));
         struct timespec omit_now[2] = {{0, UTIME_OMIT}, {0, UTIME_NOW}};
         t.rc("omit_now", ::utimensat(AT_FDCWD, t.p("f"), omit_now, 0));
         ::stat(t.p("f"), &st);
         t.note("atime_kept", st.st_atim.tv_sec == 1000000000 ? "yes" : "no");
         t.note("mtime_recent", std::labs(st.st_mtim.tv_sec - ::time(nullptr)) < 60 ? "yes" : "no");
         ::symlink("nowhere", t.p("l"));
         t.rc("lutimes", ::utimensat(AT_FDCWD, t.p("l"), ts, AT_SYMLINK_NOFOLLOW));
         ::lstat(t.p("l"), &st);
         t.note("link_mtime", std::to_string(st.st_mtim.tv_sec));
       },
       {"times=1000000000.5 1200000000.123456789", "atime_kept=yes", "mtime_recent=yes", "link_mtime=1200000000"}},

      {"mkdir_rmdir",
       [](Trace& t) {
         t.rc("mkdir", ::mkdir(t.p("d"), 0750));
         t.rc("mkdir_again", ::mkdir(t.p("d"), 0750));
         write_file(t.p("d/f"), "x");
         t.rc("rmdir_nonempty", ::rmdir(t.p("d")));
         t.rc("unlink_dir", ::unlink(t.p("d")));
         t.rc("rmdir_file", ::rmdir(t.p("d/f")));
         t.rc("unlink", ::unlink(t.p("d/f")));
         t.rc("rmdir", ::rmdir(t.p("d")));
         t.rc("rmdir_again", ::rmdir(t.p("d")));
         t.rc("mkdir_under_file", (write_file(t.p("g"), "x"), ::mkdir(t.p("g/sub"), 0755)));
       },
       {"mkdir_again=EEXIST", "rmdir_nonempty=ENOTEMPTY", "unlink_dir=EISDIR", "rmdir_file=ENOTDIR",
        "rmdir_again=ENOENT", "mkdir_under_file=ENOTDIR"}},

      {"rename",
       [](Trace& t) {
         write_file(t.p("a"), "A");
         write_file(t.p("b"), "B");
         t.rc("noreplace", ::renameat2(AT_FDCWD, t.p("a"), AT_FDCWD, t.p("b"), RENAME_NOREPLACE));
         t.rc("exchange", ::renameat2(AT_FDCWD, t.p("a"), AT_FDCWD, t.p("b"), RENAME_EXCHANGE));
         t.note("a", slurp(t.p("a")));
         t.note("b", slurp(t.p("b")));
         t.rc("replace", ::rename(t.p("a"), t.p("b")));
         t.note("b_after", slurp(t.p("b")));
         t.note("a_after", slurp(t.p("a")));
         ::mkdir(t.p("d1"), 0755);
         ::mkdir(t.p("d2"), 0755);
         write_file(t.p("d2/x"), "x");
         t.rc("dir_over_nonempty", ::rename(t.p("d1"), t.p("d2")));
         t.rc("file_over_dir", ::rename(t.p("b"), t.p("d1")));
         t.rc("dir_into_itself", ::rename(t.p("d1"), t.p("d1/sub")));
         t.rc("move_into_dir", ::rename(t.p("b"), t.p("d1/b")));
         t.note("moved", slurp(t.p("d1/b")));
         t.rc("exchange_missing", ::renameat2(AT_FDCWD, t.p("nope"), AT_FDCWD, t.p("d1/b"), RENAME_EXCHANGE));
       },
       {"noreplace=EEXIST", "exchange=0", "a=B", "b=A", "b_after=B", "a_after=<ENOENT>",
        "dir_over_nonempty=ENOTEMPTY", "file_over_dir=EISDIR", "dir_into_itself=EINVAL", "moved=B",
        "exchange_missing=ENOENT"}},

      {"hard_link",
       [](Trace& t) {
         write_file(t.p("f"), "data");
         t.rc("link", ::link(t.p("f"), t.p("g")));
         struct stat a {}, b {};
         ::stat(t.p("f"), &a);
         ::stat(t.p("g"), &b);
         t.note("nlink", std::to_string(a.st_nlink) + "," + std::to_string(b.st_nlink));
         t.note("same_ino", a.st_ino == b.st_ino ? "yes" : "no");
         t.note("content", slurp(t.p("g")));
         t.rc("link_existing", ::link(t.p("f"), t.p("g")));
         ::mkdir(t.p("d"), 0755);
         t.rc("link_dir", ::link(t.p("d"), t.p("d2")));
         t.rc("unlink_one", ::unlink(t.p("f")));
         ::stat(t.p("g"), &b);
         t.note("nlink_after", std::to_string(b.st_nlink));
       },
       {"nlink=2,2", "same_ino=yes", "content=data", "link_existing=EEXIST", "link_dir=EPERM", "nlink_after=1"}},

      {"mknod_fifo",
       [](Trace& t) {
         t.rc("mkfifo", ::mkfifo(t.p("fifo"), 0600));
         t.rc("mknod_sock", ::mknod(t.p("sock"), S_IFSOCK | 0600, 0));
         struct stat st {};
         ::lstat(t.p("fifo"), &st);
         t.note("fifo", S_ISFIFO(st.st_mode) ? "yes" : "no");
         ::lstat(t.p("sock"), &st);
         t.note("sock", S_ISSOCK(st.st_mode) ? "yes" : "no");
         t.rc("mkfifo_again", ::mkfifo(t.p("fifo"), 0600));
       },
       {"mkfifo=0", "fifo=yes", "sock=yes", "mkfifo_again=EEXIST"}},

      {"symlink",
       [](Trace& t) {
         t.rc("symlink", ::symlink("plain/target", t.p("l")));
         char buf[256];
         long n = t.rc("readlink", ::readlink(t.p("l"), buf, sizeof buf));
         t.note("text", n > 0 ? std::string(buf, static_cast<size_t>(n)) : "");
         struct stat st {};
         ::lstat(t.p("l"), &st);
         t.note("size", std::to_string(st.st_size));
         t.rc("open_dangling", ::open(t.p("l"), O_RDONLY));
         t.rc("open_nofollow", ::open(t.p("l"), O_RDONLY | O_NOFOLLOW));
         t.rc("symlink_existing", ::symlink("x", t.p("l")));
         write_file(t.p("target"), "T");
         ::symlink("target", t.p("l2"));
         t.note("through", slurp(t.p("l2")));
         t.rc("readlink_file", ::readlink(t.p("target"), buf, sizeof buf));
       },
       {"text=plain/target", "size=12", "open_dangling=ENOENT", "open_nofollow=ELOOP", "symlink_existing=EEXIST",
        "through=T", "readlink_file=EINVAL"}},

      {"xattrs",
       [](Trace& t) {
         write_file(t.p("f"), "x");
         t.rc("set", ::setxattr(t.p("f"), "user.color", "blue", 4, 0));
         t.rc("set_create_existing", ::setxattr(t.p("f"), "user.color", "red", 3, XATTR_CREATE));
         t.rc("set_replace_missing", ::setxattr(t.p("f"), "user.size", "1", 1, XATTR_REPLACE));
         char buf[256];
         long n = t.rc("get", ::getxattr(t.p("f"), "user.color", buf, sizeof buf));
         t.note("value", n > 0 ? std::string(buf, static_cast<size_t>(n)) : "");
         t.rc("get_size", ::getxattr(t.p("f"), "user.color", nullptr, 0));
         t.rc("get_small", ::getxattr(t.p("f"), "user.color", buf, 2));
         n = t.rc("list", ::listxattr(t.p("f"), buf, sizeof buf));
         t.note("names", n > 0 ? std::string(buf, static_cast<size_t>(n) - 1) : "");
         t.rc("remove", ::removexattr(t.p("f"), "user.color"));
         t.rc("get_removed", ::getxattr(t.p("f"), "user.color", buf, sizeof buf));
         t.rc("remove_missing", ::removexattr(t.p("f"), "user.color"));
       },
       {"set=0", "set_create_existing=EEXIST", "set_replace_missing=ENODATA", "value=blue", "get_size=4",
        "get_small=ERANGE", "names=user.color", "get_removed=ENODATA", "remove_missing=ENODATA"}},

      {"fallocate_seek",
       [](Trace& t) {
         int fd = static_cast<int>(::open(t.p("f"), O_CREAT | O_RDWR | O_CLOEXEC, 0644));
         t.rc("fallocate", ::fallocate(fd, 0, 0, 1 << 20));
         struct stat st {};
         ::fstat(fd, &st);
         t.note("size", std::to_string(st.st_size));
         t.rc("keep_size", ::fallocate(fd, FALLOC_FL_KEEP_SIZE, 1 << 20, 1 << 20));
         ::fstat(fd, &st);
         t.note("size_kept", std::to_string(st.st_size));
         t.rc("punch", ::fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 0, 4096));
         t.rc("bad_mode", ::fallocate(fd, FALLOC_FL_PUNCH_HOLE, 0, 4096));
         ::close(fd);
         // A sparse file: data at 0 and at 1 MiB, a hole between.
         fd = static_cast<int>(::open(t.p("sparse"), O_CREAT | O_RDWR | O_CLOEXEC, 0644));
         [[maybe_unused]] ssize_t w = ::pwrite(fd, "a", 1, 0);
         w = ::pwrite(fd, "b", 1, 1 << 20);
         ::fsync(fd);
         t.rc("seek_data_0", ::lseek(fd, 0, SEEK_DATA));
         t.rc("seek_hole_0", ::lseek(fd, 0, SEEK_HOLE));
         t.rc("seek_data_mid", ::lseek(fd, 8192, SEEK_DATA));
         t.rc("seek_hole_end", ::lseek(fd, 1 << 20, SEEK_HOLE));
         t.rc("seek_data_past", ::lseek(fd, (1 << 20) + 10, SEEK_DATA));
         t.rc("seek_end", ::lseek(fd, -1, SEEK_END));
         ::close(fd);
       },
       {"size=1048576", "size_kept=1048576", "punch=0", "bad_mode=EOPNOTSUPP", "seek_data_0=0",
        "seek_data_mid=1048576", "seek_hole_end=1048577", "seek_data_past=ENXIO", "seek_end=1048576"}},

      {"copy_file_range",
       [](Trace& t) {
         write_file(t.p("src"), "0123456789abcdef");
         int in = ::open(t.p("src"), O_RDONLY | O_CLOEXEC);
         int out = ::open(t.p("dst"), O_CREAT | O_WRONLY | O_CLOEXEC, 0644);
         loff_t off_in = 4, off_out = 2;
         t.rc("copy", ::copy_file_range(in, &off_in, out, &off_out, 8, 0));
         t.note("offsets", std::to_string(off_in) + "," + std::to_string(off_out));
         t.rc("copy_bad_flags", ::copy_file_range(in, &off_in, out, &off_out, 8, 1));
         ::close(in);
         ::close(out);
         std::string s = slurp(t.p("dst"));
         std::replace(s.begin(), s.end(), '\0', '.');
         t.note("dst", s);
       },
       {"copy=8", "offsets=12,10", "copy_bad_flags=EINVAL", "dst=..456789ab"}},

      {"statfs_access",
       [](Trace& t) {
         struct statvfs sv {};
         t.rc("statvfs", ::statvfs(t.p("."), &sv));
         t.note("geometry", std::to_string(sv.f_bsize) + "/" + std::to_string(sv.f_blocks) + "/" +
                                std::to_string(sv.f_namemax));
         write_file(t.p("f"), "x", 0644);
         t.rc("access_rw", ::access(t.p("f"), R_OK | W_OK));
         t.rc("access_x", ::access(t.p("f"), X_OK));
         t.rc("access_missing", ::access(t.p("missing"), F_OK));
         t.rc("faccessat_eaccess", ::faccessat(AT_FDCWD, t.p("f"), R_OK, AT_EACCESS));
       },
       {"statvfs=0", "access_rw=0", "access_x=EACCES", "access_missing=ENOENT", "faccessat_eaccess=0"}},

      {"readdir",
       [](Trace& t) {
         ::mkdir(t.p("d"), 0755);
         for (const char* n : {"b", "a", "c"}) write_file(t.p(std::string("d/") + n), n);
         ::mkdir(t.p("d/sub"), 0755);
         ::symlink("a", t.p("d/ln"));
         ::mkfifo(t.p("d/pipe"), 0600);
         for (int i = 0; i < 300; ++i) write_file(t.p("d/many" + std::to_string(i)), "");  // several readdir calls
         DIR* d = ::opendir(t.p("d"));
         std::vector<std::string> names;
         while (struct dirent* e = ::readdir(d)) {
           std::string n = e->d_name;
           if (n.rfind("many", 0) == 0) continue;
           names.push_back(n + ":" + std::to_string(e->d_type));
         }
         ::rewinddir(d);
         size_t count = 0;
         while (::readdir(d)) ++count;
         ::closedir(d);
         std::sort(names.begin(), names.end());
         std::string joined;
         for (const auto& n : names) joined += n + " ";
         t.note("entries", joined);
         t.note("count_after_rewind", std::to_string(count));
         t.rc("opendir_file", ::opendir(t.p("d/a")) ? 0 : -1);
         t.rc("opendir_missing", ::opendir(t.p("nope")) ? 0 : -1);
       },
       {"entries=..:4 .:4 a:8 b:8 c:8 ln:10 pipe:1 sub:4 ", "count_after_rewind=308", "opendir_file=ENOTDIR",
        "opendir_missing=ENOENT"}},

      {"fsync",
       [](Trace& t) {
         int fd = ::open(t.p("f"), O_CREAT | O_WRONLY | O_CLOEXEC, 0644);
         [[maybe_unused]] ssize_t w = ::write(fd, "x", 1);
         t.rc("fsync", ::fsync(fd));
         t.rc("fdatasync", ::fdatasync(fd));
         t.rc("close", ::close(fd));
         int dfd = ::open(t.p("."), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
         t.rc("fsync_dir", ::fsync(dfd));
         ::close(dfd);
       },
       {"fsync=0", "fdatasync=0", "close=0", "fsync_dir=0"}},

      {"path_errors",
       [](Trace& t) {
         write_file(t.p("file"), "x");
         t.rc("enotdir", ::open(t.p("file/x"), O_RDONLY));
         t.rc("enoent_dir", ::open(t.p("nodir/x"), O_RDONLY));
         t.rc("enametoolong", ::open(t.p(std::string(300, 'n')), O_CREAT | O_WRONLY, 0644));
         ::mkdir(t.p("d"), 0755);
         t.rc("eisdir", ::open(t.p("d"), O_WRONLY));
         t.rc("o_directory_file", ::open(t.p("file"), O_RDONLY | O_DIRECTORY));
         t.rc("create_in_missing", ::open(t.p("nodir/x"), O_CREAT | O_WRONLY, 0644));
         t.rc("unlink_missing", ::unlink(t.p("missing")));
       },
       {"enotdir=ENOTDIR", "enoent_dir=ENOENT", "enametoolong=ENAMETOOLONG", "eisdir=EISDIR",
        "o_directory_file=ENOTDIR", "create_in_missing=ENOENT", "unlink_missing=ENOENT"}},

      {"posix_and_bsd_locks",
       [](Trace& t) {
         write_file(t.p("f"), "0123456789");
         int fd = ::open(t.p("f"), O_RDWR | O_CLOEXEC);
         int ready[2], done[2];
         if (::pipe(ready) != 0 || ::pipe(done) != 0) return t.note("pipe", "failed");
         pid_t child = ::fork();
         if (child == 0) {
           int cfd = ::open(t.path("f").c_str(), O_RDWR | O_CLOEXEC);
           struct flock fl {};
           fl.l_type = F_WRLCK;
           fl.l_whence = SEEK_SET;
           fl.l_start = 0;
           fl.l_len = 5;
           int ok = ::fcntl(cfd, F_SETLK, &fl) == 0 && ::flock(cfd, LOCK_EX | LOCK_NB) == 0;
           char c = ok ? '1' : '0';
           [[maybe_unused]] ssize_t w = ::write(ready[1], &c, 1);
           [[maybe_unused]] ssize_t r = ::read(done[0], &c, 1);  // hold the locks until told
           ::_exit(0);
         }
         char c = 0;
         [[maybe_unused]] ssize_t r = ::read(ready[0], &c, 1);
         t.note("child_locked", std::string(1, c));
         struct flock fl {};
         fl.l_type = F_WRLCK;
         fl.l_whence = SEEK_SET;
         fl.l_start = 2;
         fl.l_len = 2;
         t.rc("setlk_conflict", ::fcntl(fd, F_SETLK, &fl));
         fl.l_type = F_WRLCK;
         t.rc("getlk", ::fcntl(fd, F_GETLK, &fl));
         t.note("holder", fl.l_pid == child ? "child" : std::to_string(fl.l_pid));
         fl.l_type = F_WRLCK;
         fl.l_start = 5;
         fl.l_len = 5;
         t.rc("setlk_free_range", ::fcntl(fd, F_SETLK, &fl));
         t.rc("flock_conflict", ::flock(fd, LOCK_EX | LOCK_NB));
         [[maybe_unused]] ssize_t w = ::write(done[1], "x", 1);
         ::waitpid(child, nullptr, 0);
         t.rc("flock_after_exit", ::flock(fd, LOCK_EX | LOCK_NB));
         for (int p : {ready[0], ready[1], done[0], done[1], fd}) ::close(p);
       },
       {"child_locked=1", "setlk_conflict=EAGAIN", "holder=child", "setlk_free_range=0",
        "flock_conflict=EAGAIN", "flock_after_exit=0"}},
  };
  return all;
}

class Passthrough : public ::testing::TestWithParam<size_t> {
 protected:
  static void SetUpTestSuite() {
    mount_ = std::make_unique<Mount>();
    plain_ = mount_->root() + "/plain";
    std::filesystem::create_directory(plain_);
  }
  static void TearDownTestSuite() { mount_.reset(); }

  static std::unique_ptr<Mount> mount_;
  static std::string plain_;
};
std::unique_ptr<Mount> Passthrough::mount_;
std::string Passthrough::plain_;

TEST_P(Passthrough, SameResultsAsTheSourceFilesystem) {
  const Case& c = cases()[GetParam()];
  const std::string plain_dir = plain_ + "/" + c.name;
  const std::string mounted_dir = mount_->mnt(c.name);
  ASSERT_EQ(::mkdir(plain_dir.c_str(), 0755), 0) << std::strerror(errno);
  ASSERT_EQ(::mkdir(mounted_dir.c_str(), 0755), 0) << std::strerror(errno);

  Trace native(plain_dir), mounted(mounted_dir);
  c.run(native);
  c.run(mounted);
  EXPECT_EQ(mounted.lines(), native.lines()) << "daemon log:\n" << mount_->daemon_log();
  for (const auto& line : c.must_contain) {
    EXPECT_THAT(native.lines(), ::testing::Contains(line)) << "on the plain directory";
    EXPECT_THAT(mounted.lines(), ::testing::Contains(line)) << "through the mount";
  }
}

INSTANTIATE_TEST_SUITE_P(Ops, Passthrough, ::testing::Range<size_t>(0, cases().size()),
                         [](const ::testing::TestParamInfo<size_t>& param) { return std::string(cases()[param.param].name); });

// Writing a link through the mount stores the raw text, template and all.
TEST(PassthroughLinks, SymlinkStoresRawText) {
  Mount m;
  const std::string raw = "/opt/${UNDEFINED_VSYMFS_TEST_VAR}/@sys/bin";
  ASSERT_EQ(::symlink(raw.c_str(), m.mnt("tmpl").c_str()), 0) << std::strerror(errno);
  char buf[512];
  ssize_t n = ::readlink(m.src("tmpl").c_str(), buf, sizeof buf);
  ASSERT_GT(n, 0);
  EXPECT_EQ(std::string(buf, static_cast<size_t>(n)), raw);
  // The raw text stays readable through the mount.
  n = ::lgetxattr(m.mnt("tmpl").c_str(), "security.vsymfs.raw", buf, sizeof buf);
  ASSERT_GT(n, 0) << std::strerror(errno);
  EXPECT_EQ(std::string(buf, static_cast<size_t>(n)), raw);
  // Anyone who can lstat the link can read it, not only root (the kernel
  // refuses user.* on symlinks; security.* reads need no capability).
  const int unprivileged = vsymfs::testing::run_as({.uid = 65534, .gid = 65534}, [&]() -> int {
    char b[512];
    const ssize_t k = ::lgetxattr(m.mnt("tmpl").c_str(), "security.vsymfs.raw", b, sizeof b);
    if (k < 0) return 10 + errno % 100;
    return std::string(b, static_cast<size_t>(k)) == raw ? 0 : 1;
  });
  EXPECT_EQ(unprivileged, 0) << "1: wrong text; 10+errno: lgetxattr failed";
  // ... but is not listed, and cannot be written.
  EXPECT_EQ(::llistxattr(m.mnt("tmpl").c_str(), buf, sizeof buf), 0);
  EXPECT_EQ(::lsetxattr(m.mnt("tmpl").c_str(), "security.vsymfs.raw", "x", 1, 0), -1);
  EXPECT_EQ(errno, EPERM);
  // Not a symlink: no raw text.
  std::filesystem::create_directory(m.mnt("dir"));
  EXPECT_EQ(::getxattr(m.mnt("dir").c_str(), "security.vsymfs.raw", buf, sizeof buf), -1);
  EXPECT_EQ(errno, ENODATA);
}

// Changes made to SOURCE behind the mount's back show through.
TEST(PassthroughLinks, ChangesInSourceAreVisible) {
  Mount m({.extra_opts = {"entry_timeout=0", "attr_timeout=0"}});
  write_file(m.src("a").c_str(), "one");
  EXPECT_EQ(slurp(m.mnt("a").c_str()), "one");
  ASSERT_EQ(::rename(m.src("a").c_str(), m.src("b").c_str()), 0);
  EXPECT_EQ(slurp(m.mnt("a").c_str()), "<ENOENT>");
  EXPECT_EQ(slurp(m.mnt("b").c_str()), "one");
  // Same length, new content: the kernel's cached pages must not be served.
  ::usleep(20000);  // a distinct mtime
  write_file(m.src("b").c_str(), "owt");
  EXPECT_EQ(slurp(m.mnt("b").c_str()), "owt");
  write_file(m.src("b").c_str(), "two!");
  struct stat st {};
  ASSERT_EQ(::stat(m.mnt("b").c_str(), &st), 0);
  EXPECT_EQ(st.st_size, 4);
  EXPECT_EQ(slurp(m.mnt("b").c_str()), "two!");
}

// ---- The process: command line, startup errors, mount.fuse3, signals ----

struct CommandResult {
  int status = -1;
  std::string output;  // stdout and stderr
};

CommandResult run_command(const std::vector<std::string>& argv, const std::vector<std::string>& extra_env = {}) {
  int p[2];
  if (::pipe2(p, O_CLOEXEC) != 0) return {};
  pid_t pid = ::fork();
  if (pid == 0) {
    ::dup2(p[1], 1);
    ::dup2(p[1], 2);
    for (const auto& kv : extra_env) ::putenv(const_cast<char*>(kv.c_str()));
    std::vector<char*> args;
    for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    ::execvp(args[0], args.data());
    ::_exit(127);
  }
  ::close(p[1]);
  CommandResult r;
  char buf[4096];
  ssize_t n;
  while ((n = ::read(p[0], buf, sizeof buf)) > 0) r.output.append(buf, static_cast<size_t>(n));
  ::close(p[0]);
  int status = 0;
  ::waitpid(pid, &status, 0);
  r.status = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  return r;
}

bool mounted_at(const std::string& path) {
  std::ifstream in("/proc/self/mounts");
  std::string src, mnt, type, rest;
  while (in >> src >> mnt >> type && std::getline(in, rest))
    if (mnt == path && type == "fuse.vsymfs") return true;
  return false;
}

// Polls `cond` until it holds or 30 s pass (a deadline for a loaded machine).
bool wait_until(const std::function<bool()>& cond) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (!cond()) {
    if (std::chrono::steady_clock::now() > deadline) return cond();
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return true;
}

class Process : public ::testing::Test {
 protected:
  void SetUp() override {
    src_ = dir_ + "/src";
    mnt_ = dir_ + "/mnt";
    ::mkdir(src_.c_str(), 0755);
    ::mkdir(mnt_.c_str(), 0755);
    write_file((src_ + "/hello").c_str(), "hi");
    // Private control socket and state: never touch a system-wide default.
    own_opts_ = "socket=" + dir_ + "/ctl.sock,state=" + dir_ + "/state.toml";
  }
  void TearDown() override {
    if (mounted_at(mnt_)) ::umount2(mnt_.c_str(), MNT_DETACH);
  }
  // Under /tmp whatever $TMPDIR says: the control socket in it must fit a
  // socket address.
  const vsymfs::test::TempDir tmp_{"vsymfs-proc", 0700, "/tmp"};
  const std::string& dir_ = tmp_.path();
  std::string src_, mnt_, own_opts_;
};

TEST_F(Process, HelpAndVersion) {
  CommandResult help = run_command({vsymfs::testing::vsymfs_bin(), "--help"});
  EXPECT_EQ(help.status, 0);
  EXPECT_NE(help.output.find("usage: vsymfs [options] SOURCE MOUNTPOINT"), std::string::npos) << help.output;
  EXPECT_NE(help.output.find("fd_budget=N"), std::string::npos);
  CommandResult version = run_command({vsymfs::testing::vsymfs_bin(), "--version"});
  EXPECT_EQ(version.status, 0);
  EXPECT_EQ(version.output.rfind("vsymfs ", 0), 0u) << version.output;
}

struct BadStart {
  const char* name;
  std::function<std::vector<std::string>(const std::string& src, const std::string& mnt, const std::string& dir)> args;
  int status;
  const char* message;
};

TEST_F(Process, StartupErrorsAreOneLineAndMountNothing) {
  const std::vector<BadStart> table = {
      {"unknown option", [](auto& s, auto& m, auto&) { return std::vector<std::string>{"--frobnicate", s, m}; }, 1,
       "unknown option --frobnicate"},
      {"bad number", [](auto& s, auto& m, auto&) { return std::vector<std::string>{"-o", "fd_budget=lots", s, m}; }, 1,
       "fd_budget=lots"},
      {"missing mountpoint", [](auto& s, auto&, auto&) { return std::vector<std::string>{s}; }, 1,
       "missing SOURCE or MOUNTPOINT"},
      {"no source", [](auto&, auto& m, auto& d) { return std::vector<std::string>{d + "/nope", m}; }, 2,
       "No such file or directory"},
      {"source is a file", [](auto& s, auto& m, auto&) { return std::vector<std::string>{s + "/hello", m}; }, 2,
       "not a directory"},
      {"no mountpoint", [](auto& s, auto&, auto& d) { return std::vector<std::string>{s, d + "/nomnt"}; }, 2,
       "MOUNTPOINT"},
      {"mountpoint inside source", [](auto& s, auto&, auto&) { return std::vector<std::string>{s, s}; }, 0, ""},
      {"bad rules", [](auto& s, auto& m, auto& d) { return std::vector<std::string>{"-o", "rules=" + d + "/bad.toml", s, m}; },
       3, "bad.toml:1:"},
      {"missing rules", [](auto& s, auto& m, auto& d) { return std::vector<std::string>{"-o", "rules=" + d + "/none.toml", s, m}; },
       3, "none.toml"},
      {"bad mount option", [](auto& s, auto& m, auto&) { return std::vector<std::string>{"-o", "no_such_mount_opt", s, m}; },
       1, "invalid mount options"},
  };
  std::ofstream(dir_ + "/bad.toml") << "[vars\n";
  ::mkdir((src_ + "/inner").c_str(), 0755);
  for (const auto& c : table) {
    if (c.status == 0) continue;  // covered below
    for (const char* mode : {"-f", ""}) {  // foreground and daemonizing: same verdict
      std::vector<std::string> argv{vsymfs::testing::vsymfs_bin()};
      if (*mode) argv.push_back(mode);
      for (auto& a : c.args(src_, mnt_, dir_)) argv.push_back(a);
      argv.push_back("-o");
      argv.push_back(own_opts_);
      CommandResult r = run_command(argv);
      EXPECT_EQ(r.status, c.status) << c.name << " " << mode << ": " << r.output;
      EXPECT_NE(r.output.find(c.message), std::string::npos) << c.name << ": " << r.output;
      EXPECT_EQ(std::count(r.output.begin(), r.output.end(), '\n'), 1) << c.name << ": " << r.output;
      EXPECT_FALSE(mounted_at(mnt_)) << c.name;
    }
  }
  CommandResult inside = run_command({vsymfs::testing::vsymfs_bin(), "-f", src_, src_ + "/inner", "-o", own_opts_});
  EXPECT_EQ(inside.status, 2) << inside.output;
  EXPECT_NE(inside.output.find("inside SOURCE"), std::string::npos) << inside.output;
}

TEST_F(Process, DaemonizesAfterMountingAndRefusesADoubleMount) {
  CommandResult r = run_command({vsymfs::testing::vsymfs_bin(), src_, mnt_, "-o", "builtin_rules," + own_opts_});
  ASSERT_EQ(r.status, 0) << r.output;
  // Mounted by the time the command returns: fstab and scripts rely on it.
  EXPECT_TRUE(mounted_at(mnt_));
  EXPECT_EQ(slurp((mnt_ + "/hello").c_str()), "hi");
  CommandResult again = run_command({vsymfs::testing::vsymfs_bin(), src_, mnt_, "-o", "builtin_rules," + own_opts_});
  EXPECT_EQ(again.status, 2) << again.output;
  EXPECT_NE(again.output.find("already a vsymfs mount"), std::string::npos) << again.output;
  EXPECT_EQ(run_command({"fusermount3", "-u", mnt_}).status, 0);
  EXPECT_FALSE(mounted_at(mnt_));
}

// fstab entries go through mount.fuse3, which runs "vsymfs SOURCE MOUNTPOINT
// -o OPTIONS" found in PATH (mount(8) gives helpers /usr/bin:/bin:/usr/sbin:/sbin).
TEST_F(Process, MountFuse3FindsTheDaemonInPath) {
  const std::string bin_dir = std::filesystem::path(vsymfs::testing::vsymfs_bin()).parent_path().string();
  if (::access("/sbin/mount.fuse3", X_OK) != 0) GTEST_SKIP() << "mount.fuse3 is not installed";
  const std::string path = "PATH=" + bin_dir + ":/usr/bin:/bin:/usr/sbin:/sbin";
  CommandResult r = run_command({"/sbin/mount.fuse3", src_, mnt_, "-t", "vsymfs", "-o", "builtin_rules,allow_other,rw," + own_opts_},
                      {path});
  ASSERT_EQ(r.status, 0) << r.output;
  EXPECT_TRUE(mounted_at(mnt_));
  EXPECT_EQ(slurp((mnt_ + "/hello").c_str()), "hi");
  EXPECT_EQ(run_command({"umount", mnt_}).status, 0);
  EXPECT_TRUE(wait_until([&] { return !mounted_at(mnt_); }));
}

TEST_F(Process, SigtermAndSigintUnmountCleanly) {
  for (int sig : {SIGTERM, SIGINT}) {
    pid_t pid = ::fork();
    if (pid == 0) {
      int null = ::open("/dev/null", O_WRONLY);
      ::dup2(null, 2);
      std::string bin = vsymfs::testing::vsymfs_bin(), o = "builtin_rules," + own_opts_;
      ::execl(bin.c_str(), bin.c_str(), "-f", "-o", o.c_str(), src_.c_str(), mnt_.c_str(), nullptr);
      ::_exit(127);
    }
    ASSERT_TRUE(wait_until([&] { return mounted_at(mnt_); })) << "signal " << sig;
    // Busy with an open file: still unmounts.
    int fd = ::open((mnt_ + "/hello").c_str(), O_RDONLY | O_CLOEXEC);
    EXPECT_GE(fd, 0);
    ::kill(pid, sig);
    int status = 0;
    ::waitpid(pid, &status, 0);
    if (fd >= 0) ::close(fd);
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "signal " << sig << " status " << status;
    EXPECT_TRUE(wait_until([&] { return !mounted_at(mnt_); })) << "signal " << sig;
  }
}

// SIGHUP re-reads the rules. With host/system values only the kernel caches
// link bodies (FUSE_CAP_CACHE_SYMLINKS): the reload must invalidate them, or
// readlink would keep returning the old expansion.
TEST_F(Process, SighupReloadsAndInvalidatesKernelCachedLinks) {
  // The daemon watches the rules file's directory; keeping the real file
  // elsewhere (behind a symlink) leaves SIGHUP as the only trigger.
  ::mkdir((dir_ + "/real").c_str(), 0755);
  ::mkdir((dir_ + "/conf").c_str(), 0755);
  const std::string real = dir_ + "/real/rules.toml", rules = dir_ + "/conf/rules.toml";
  auto write_rules = [&](const char* value) {
    std::ofstream(real + ".new") << "[scopes]\nper_caller = false\n[vars]\nWHERE = \"" << value << "\"\n";
    std::filesystem::rename(real + ".new", real);
  };
  write_rules("one");
  ASSERT_EQ(::symlink(real.c_str(), rules.c_str()), 0);
  ASSERT_EQ(::symlink("/data/${WHERE}", (src_ + "/v").c_str()), 0);

  const std::string log = dir_ + "/daemon.log";
  auto daemon_log = [&] {
    std::ifstream in(log);
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
  };
  pid_t pid = ::fork();
  if (pid == 0) {
    int out = ::open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    ::dup2(out, 2);
    std::string bin = vsymfs::testing::vsymfs_bin(), o = "rules=" + rules + "," + own_opts_;
    ::execl(bin.c_str(), bin.c_str(), "-f", "-o", o.c_str(), src_.c_str(), mnt_.c_str(), nullptr);
    ::_exit(127);
  }
  ASSERT_TRUE(wait_until([&] { return mounted_at(mnt_); }));
  auto link_text = [&] {
    char buf[256];
    ssize_t n = ::readlink((mnt_ + "/v").c_str(), buf, sizeof buf);
    return n < 0 ? "<" + Trace::errname(errno) + ">" : std::string(buf, static_cast<size_t>(n));
  };
  EXPECT_EQ(link_text(), "/data/one");
  EXPECT_EQ(link_text(), "/data/one");  // now from the kernel's cache
  write_rules("two");
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  EXPECT_EQ(link_text(), "/data/one") << "nothing but SIGHUP may have reloaded the rules";
  ::kill(pid, SIGHUP);
  EXPECT_TRUE(wait_until([&] { return link_text() == "/data/two"; })) << link_text();
  struct stat st {};
  EXPECT_EQ(::lstat((mnt_ + "/v").c_str(), &st), 0);
  EXPECT_EQ(st.st_size, 9);  // "/data/two"
  // An invalid file is refused (the daemon says so, and only then is it
  // certain that the SIGHUP has been handled) and the old rules stay.
  std::ofstream(real) << "[vars\n";
  ::kill(pid, SIGHUP);
  EXPECT_TRUE(wait_until([&] { return daemon_log().find("SIGHUP: rules not reloaded") != std::string::npos; }))
      << daemon_log();
  EXPECT_EQ(link_text(), "/data/two");
  ::kill(pid, SIGTERM);
  int status = 0;
  ::waitpid(pid, &status, 0);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;
}


// Mounted over SOURCE itself: the daemon keeps working on the directory
// underneath (opened before the mount), and nothing of its own keeps the
// mount busy.
TEST_F(Process, MountOverTheSourceItself) {
  ASSERT_EQ(::symlink("plain-${NO_SUCH_VSYMFS_VAR:-fallback}", (src_ + "/l").c_str()), 0);
  CommandResult r = run_command({vsymfs::testing::vsymfs_bin(), src_, src_, "-o", "builtin_rules," + own_opts_});
  ASSERT_EQ(r.status, 0) << r.output;
  ASSERT_TRUE(mounted_at(src_));
  EXPECT_EQ(slurp((src_ + "/hello").c_str()), "hi");
  char buf[64];
  ssize_t n = ::readlink((src_ + "/l").c_str(), buf, sizeof buf);
  EXPECT_EQ(n > 0 ? std::string(buf, static_cast<size_t>(n)) : "", "plain-fallback");
  write_file((src_ + "/new").c_str(), "through");
  CommandResult u = run_command({"fusermount3", "-u", src_});
  EXPECT_EQ(u.status, 0) << u.output;
  EXPECT_FALSE(mounted_at(src_));
  EXPECT_EQ(slurp((src_ + "/new").c_str()), "through");  // stored underneath
}

}  // namespace
