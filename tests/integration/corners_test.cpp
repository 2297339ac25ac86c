// Native behaviour in the corners (issue 20): what a file-system test suite
// found different from a native directory. Each test does the same thing to
// a file in a native directory (beside SOURCE, on the same file system) and
// to one through the mount, and compares. They run on each transport and
// with and without passthrough, where the kernel takes different paths.
#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <linux/falloc.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <sys/wait.h>
#include <unistd.h>

#include <time.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <memory>
#include <string>
#include <tuple>
#include <vector>

#include <gtest/gtest.h>

#include "mount_fixture.hpp"

namespace {

using vsymfs::testing::As;
using vsymfs::testing::Mount;
using vsymfs::testing::MountOptions;
using vsymfs::testing::run_as;

constexpr uid_t kOther = 1234;  // owns nothing, in no group
const As other{.uid = kOther, .gid = kOther};

std::string octal(mode_t m) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "%04o", static_cast<unsigned>(m & 07777));
  return buf;
}

// A file of `size` bytes, then `mode` (chmod after the write, as root).
void make_file(const std::string& path, size_t size, mode_t mode) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  ASSERT_GE(fd, 0) << path << ": " << std::strerror(errno);
  std::string data(size, 'x');
  ASSERT_EQ(::write(fd, data.data(), data.size()), static_cast<ssize_t>(data.size()));
  ::close(fd);
  ASSERT_EQ(::chmod(path.c_str(), mode), 0) << path;
}

// The bytes written by an O_DIRECT pwrite of `len` bytes at `off` from an
// aligned buffer, or -errno.
long odirect_pwrite(const std::string& path, off_t off, size_t len) {
  int fd = ::open(path.c_str(), O_WRONLY | O_DIRECT | O_CLOEXEC);
  if (fd < 0) return -errno;
  void* buf = nullptr;
  if (::posix_memalign(&buf, 4096, len) != 0) {
    ::close(fd);
    return -ENOMEM;
  }
  std::memset(buf, 'd', len);
  ssize_t n = ::pwrite(fd, buf, len, off);
  long r = n < 0 ? -errno : n;
  std::free(buf);
  ::close(fd);
  return r;
}

std::string result(long r) { return r < 0 ? std::string(strerrorname_np(static_cast<int>(-r))) : std::to_string(r); }

// The transports and I/O paths, by their -o options. The first names no
// transport, so the io_uring run of the suite (with_uring) takes io_uring.
const std::vector<std::vector<std::string>> kConfigs = {
    {}, {"no_uring"}, {"no_uring", "nopassthrough"}, {"acl"}};

std::string config_name(const ::testing::TestParamInfo<std::vector<std::string>>& info) {
  if (info.param.empty()) return "default_transport";
  std::string s;
  for (const auto& o : info.param) s += (s.empty() ? "" : "_") + o;
  return s;
}

class Corners : public ::testing::TestWithParam<std::vector<std::string>> {
 protected:
  void SetUp() override {
    MountOptions o;
    o.extra_opts = GetParam();
    m_ = std::make_unique<Mount>(o);
    // The native side: beside SOURCE, on the same file system.
    native_ = m_->root() + "/native";
    std::filesystem::create_directory(native_);
    ::chmod(native_.c_str(), 0777);
    ::chmod(m_->mnt().c_str(), 0777);
  }
  void TearDown() override { m_.reset(); }

  std::string native(const std::string& rel) const { return native_ + "/" + rel; }

  std::unique_ptr<Mount> m_;
  std::string native_;
};

// Item 3: O_DIRECT writes to set-id files (which never get a passthrough
// backing file, so their writes reach the daemon) and, without passthrough,
// to every file. The daemon's buffer is not aligned as O_DIRECT wants.
TEST_P(Corners, DirectWritesWorkAsNatively) {
  for (mode_t mode : {04644, 06666, 02644, 0755, 0644}) {
    const std::string name = "direct-" + octal(mode);
    make_file(native(name), 1 << 20, mode);
    make_file(m_->mnt(name), 1 << 20, mode);
    struct Write {
      off_t off;
      size_t len;
    };
    // Aligned, a whole 1 MiB request, and unaligned (EINVAL natively too).
    for (Write w : {Write{0, 4096}, Write{0, 1 << 20}, Write{4096, 8192}, Write{1, 512}}) {
      EXPECT_EQ(result(odirect_pwrite(m_->mnt(name), w.off, w.len)),
                result(odirect_pwrite(native(name), w.off, w.len)))
          << name << " pwrite " << w.len << " at " << w.off << " as root";
    }
  }
  // As someone who is not the owner (mode 6666 lets everyone write).
  make_file(native("direct-other"), 1 << 16, 06666);
  make_file(m_->mnt("direct-other"), 1 << 16, 06666);
  auto as_other = [](const std::string& path) {
    return run_as(other, [&] { return odirect_pwrite(path, 0, 4096) == 4096 ? 0 : 1; });
  };
  EXPECT_EQ(as_other(m_->mnt("direct-other")), as_other(native("direct-other")));
}

// The mode the kernel gives for a path when asked for the mode alone
// (statx STATX_MODE, as `stat -c %a` does): served from the kernel's cache
// unless the cached mode itself was marked stale.
mode_t mode_only(const std::string& path) {
  struct statx stx {};
  if (::statx(AT_FDCWD, path.c_str(), AT_SYMLINK_NOFOLLOW, STATX_MODE, &stx) != 0) return 0177777;
  return stx.stx_mode & 07777;
}

constexpr gid_t kShared = 2010;
constexpr uid_t kMember = 1235;  // in group kShared
const As member{.uid = kMember, .gid = kMember, .groups = {kShared}};

// What a non-owner does to a set-id file.
struct SetIdKill {
  const char* name;
  int falloc_mode;  // -1: a write
  off_t off;
  off_t len;
};

int kill_setid(const std::string& path, const SetIdKill& k) {
  int fd = ::open(path.c_str(), O_RDWR | O_CLOEXEC);
  if (fd < 0) return 10;
  int r;
  if (k.falloc_mode < 0) {
    std::string data(static_cast<size_t>(k.len), 'w');
    r = ::pwrite(fd, data.data(), data.size(), k.off) == k.len ? 0 : 11;
  } else {
    r = ::fallocate(fd, k.falloc_mode, k.off, k.len) == 0 ? 0 : 12;
  }
  ::close(fd);
  return r;
}

// Items 2 and 7 of issue 20: after an operation that clears set-id bits in
// SOURCE, the mode the kernel holds is SOURCE's. Before, the kernel's own
// notice ahead of the write cleared set-user-ID in its cache (FUSE's older
// rule) and a mode-only stat went on showing set-group-ID, which the write
// cleared in SOURCE (Linux 6.2+: a writer outside the group, no group
// execute), for up to attr_timeout.
TEST_P(Corners, SetIdBitsAfterWritesAndFallocateAsNatively) {
  const SetIdKill kills[] = {
      {"write", -1, 0, 4096},
      {"write-inside", -1, 65536, 4096},
      {"falloc", 0, 65536, 65536},
      {"falloc-keep-size", FALLOC_FL_KEEP_SIZE, 65536, 65536},
      {"punch-hole", FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 65536, 65536},
      {"zero-range", FALLOC_FL_ZERO_RANGE, 65536, 65536},
      {"zero-range-keep-size", FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE, 65536, 65536},
      {"falloc-beyond-eof", 0, 1 << 20, 65536},
  };
  struct Who {
    const char* name;
    const As* as;
  };
  for (mode_t mode : {06666, 06777, 02666, 04666}) {
    for (Who who : {Who{"other", &other}, Who{"member", &member}}) {
      for (const SetIdKill& k : kills) {
        const std::string name = std::string("setid-") + octal(mode) + "-" + who.name + "-" + k.name;
        for (const std::string& path : {native(name), m_->mnt(name)}) {
          make_file(path, 1 << 20, 0600);
          ASSERT_EQ(::chown(path.c_str(), 0, kShared), 0);
          ASSERT_EQ(::chmod(path.c_str(), mode), 0);
          ASSERT_EQ(mode_only(path), mode) << path;  // and the kernel holds it
        }
        ASSERT_EQ(run_as(*who.as, [&] { return kill_setid(native(name), k); }), 0) << name;
        ASSERT_EQ(run_as(*who.as, [&] { return kill_setid(m_->mnt(name), k); }), 0) << name;
        EXPECT_EQ(octal(mode_only(m_->mnt(name))), octal(mode_only(native(name)))) << name;
      }
    }
  }
}

// posix_acl_xattr: version 2, then (tag, perm, id) per entry.
std::string acl_value(std::initializer_list<std::tuple<uint16_t, uint16_t, uint32_t>> entries) {
  std::string v;
  auto put = [&](const void* p, size_t n) { v.append(static_cast<const char*>(p), n); };
  uint32_t version = 2;
  put(&version, 4);
  for (auto [tag, perm, id] : entries) {
    put(&tag, 2);
    put(&perm, 2);
    put(&id, 4);
  }
  return v;
}
constexpr uint16_t kUserObj = 1, kUser = 2, kGroupObj = 4, kMask = 0x10, kOtherTag = 0x20;
constexpr uint32_t kNoId = 0xffffffff;

// Item 7: an owner's setfacl changes the mode in SOURCE; through the mount
// the mode must change at once, as natively.
TEST_P(Corners, ModeAfterAclWriteAsNatively) {
  struct Step {
    const char* name;
    std::string value;
  };
  const Step steps[] = {
      // a named user: mode 0644 becomes 0674 (group bits show the mask)
      {"extended", acl_value({{kUserObj, 6, kNoId}, {kUser, 7, kMember}, {kGroupObj, 4, kNoId}, {kMask, 7, kNoId},
                              {kOtherTag, 4, kNoId}})},
      // equivalent to a mode: 0750, stored as the mode alone
      {"minimal", acl_value({{kUserObj, 7, kNoId}, {kGroupObj, 5, kNoId}, {kOtherTag, 0, kNoId}})},
  };
  for (const std::string& path : {native("acl"), m_->mnt("acl")}) {
    make_file(path, 16, 0644);
    ASSERT_EQ(::chown(path.c_str(), kOther, kOther), 0);
    ASSERT_EQ(mode_only(path), 0644u);
  }
  for (const Step& step : steps) {
    for (const std::string& path : {native("acl"), m_->mnt("acl")}) {
      const int r = run_as(other, [&] {
        return ::setxattr(path.c_str(), "system.posix_acl_access", step.value.data(), step.value.size(), 0) == 0
                   ? 0 : 1;
      });
      ASSERT_EQ(r, 0) << step.name << " " << path;
    }
    EXPECT_EQ(octal(mode_only(m_->mnt("acl"))), octal(mode_only(native("acl")))) << step.name;
  }
}

// Whether the mtime and the ctime differ from `before`'s, as "mc" flags,
// asking for those two alone (as `stat -c '%y %z'` does): a stat that also
// asks for the atime makes the kernel refresh everything after a read or
// mapping, which marks the atime stale.
std::string times_changed(const struct stat& before, const std::string& path) {
  struct statx now {};
  if (::statx(AT_FDCWD, path.c_str(), 0, STATX_MTIME | STATX_CTIME, &now) != 0) return "statx failed";
  std::string r;
  r += now.stx_mtime.tv_sec != before.st_mtim.tv_sec || now.stx_mtime.tv_nsec != before.st_mtim.tv_nsec ? 'm' : '-';
  r += now.stx_ctime.tv_sec != before.st_ctim.tv_sec || now.stx_ctime.tv_nsec != before.st_ctim.tv_nsec ? 'c' : '-';
  return r;
}

// Waits until the coarse clock the kernel stamps files with has passed
// `t`, so that a change made from now on shows as a different time.
void wait_for_clock_past(const struct timespec& t) {
  for (int i = 0; i < 5000; ++i) {
    struct timespec now {};
    ::clock_gettime(CLOCK_REALTIME_COARSE, &now);
    if (now.tv_sec > t.tv_sec || (now.tv_sec == t.tv_sec && now.tv_nsec > t.tv_nsec)) return;
    ::usleep(1000);
  }
  FAIL() << "the clock did not pass a fresh ctime within 5 s";
}

// Writes a byte through a shared mapping of `fd` (open on `path`), then
// closes it: whether the times differ from `start`'s while mapped and
// after the close ("mapped: mc", "closed: mc"; times_changed).
std::vector<std::string> write_through_mapping(const std::string& path, int fd, const struct stat& start) {
  void* map = ::mmap(nullptr, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (map == MAP_FAILED) {
    ::close(fd);
    return {"mmap failed: " + std::string(std::strerror(errno))};
  }
  static_cast<char*>(map)[0] = 'm';
  std::vector<std::string> seen{"mapped: " + times_changed(start, path)};
  ::munmap(map, 4096);
  ::close(fd);
  seen.push_back("closed: " + times_changed(start, path));
  return seen;
}

// What a write through a mapping shows natively (`native`) and through the
// mount (`mount`): the same, but without passthrough, where the mapped
// pages are the mount's, written to SOURCE only when the kernel writes them
// back (munmap, msync, close): the times change then (vsymfs(8), FILE I/O
// PASSTHROUGH).
void expect_mapped_times_as_natively(const std::vector<std::string>& native, const std::vector<std::string>& mount,
                                     const std::vector<std::string>& opts, const std::string& what) {
  EXPECT_EQ(native, (std::vector<std::string>{"mapped: mc", "closed: mc"})) << what;
  if (std::find(opts.begin(), opts.end(), "nopassthrough") != opts.end()) {
    EXPECT_EQ(mount, (std::vector<std::string>{"mapped: --", "closed: mc"})) << what;
    return;
  }
  EXPECT_EQ(mount, native) << what << ": through the mount (left) and natively (right)";
}

// Item 4: a write through a shared mapping changes the mtime and ctime,
// seen by a stat while the file is mapped and after it is closed. With
// passthrough the mapping is the backing file's, and the pages fault in
// SOURCE without any request: the kernel kept the old times for up to
// attr_timeout.
TEST_P(Corners, TimesAfterMmapWriteAsNatively) {
  for (const std::string& path : {native("mapped"), m_->mnt("mapped")}) {
    make_file(path, 4096, 0644);
    const struct timespec old_times[2] = {{1'000'000'000, 0}, {1'000'000'000, 0}};
    ASSERT_EQ(::utimensat(AT_FDCWD, path.c_str(), old_times, 0), 0);
  }
  struct stat before {};
  ASSERT_EQ(::stat(native("mapped").c_str(), &before), 0);
  wait_for_clock_past(before.st_ctim);
  std::vector<std::string> seen[2];
  int side = 0;
  for (const std::string& path : {native("mapped"), m_->mnt("mapped")}) {
    struct stat start {};
    ASSERT_EQ(::stat(path.c_str(), &start), 0);  // the kernel holds the times now
    int fd = ::open(path.c_str(), O_RDWR | O_CLOEXEC);
    ASSERT_GE(fd, 0) << path;
    seen[side++] = write_through_mapping(path, fd, start);
  }
  expect_mapped_times_as_natively(seen[0], seen[1], GetParam(), "opened");
}

// The same for a file created through the mount: its create is answered
// with the attribute timeout (an empty file cannot be written through a
// mapping), so the times must still show once it has grown, whichever way
// it grew.
TEST_P(Corners, TimesAfterMmapWriteOfANewFileAsNatively) {
  for (const std::string how : {"write", "ftruncate"}) {
    std::vector<std::string> seen[2];
    int side = 0;
    for (const std::string& path : {native("new-" + how), m_->mnt("new-" + how)}) {
      int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
      ASSERT_GE(fd, 0) << path << ": " << std::strerror(errno);
      if (how == "write") {
        const std::string page(4096, 'w');
        ASSERT_EQ(::write(fd, page.data(), page.size()), 4096) << path;
      } else {
        ASSERT_EQ(::ftruncate(fd, 4096), 0) << path;
      }
      struct stat start {};
      ASSERT_EQ(::stat(path.c_str(), &start), 0);  // the kernel holds the times now
      wait_for_clock_past(start.st_ctim);
      seen[side++] = write_through_mapping(path, fd, start);
    }
    expect_mapped_times_as_natively(seen[0], seen[1], GetParam(), "created, grown by " + how);
  }
}

// Whether `path`'s atime is still the one set_old_atime gave it.
bool atime_kept(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0 && st.st_atim.tv_sec == 1'000'000'000;
}
void set_old_atime(const std::string& path) {
  const struct timespec t[2] = {{1'000'000'000, 0}, {0, UTIME_OMIT}};
  ASSERT_EQ(::utimensat(AT_FDCWD, path.c_str(), t, 0), 0) << path;
}

// Reads `path` (a directory: lists it; "exec": runs it) as `who`; 0 on success.
int touch_by_reading(const std::string& path, const std::string& how, const As& who) {
  return run_as(who, [&] {
    if (how == "exec") {
      pid_t pid = ::fork();
      if (pid == 0) {
        char* argv[] = {const_cast<char*>(path.c_str()), nullptr};
        ::execv(path.c_str(), argv);
        ::_exit(127);
      }
      int status = 0;
      return ::waitpid(pid, &status, 0) == pid && WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 0 : 1;
    }
    if (how == "list") {
      DIR* d = ::opendir(path.c_str());
      if (d == nullptr) return 1;
      while (::readdir(d) != nullptr) {
      }
      ::closedir(d);
      return 0;
    }
    int fd = ::open(path.c_str(), (how == "read-rw" ? O_RDWR : O_RDONLY) | O_CLOEXEC);
    if (fd < 0) return 2;
    char buf[65536];
    while (::read(fd, buf, sizeof buf) > 0) {
    }
    ::close(fd);
    return 0;
  });
}

// Item 6: -o noatime and -o nodiratime keep SOURCE's atimes as a native
// mount with those options keeps its own, whoever reads and however (the
// daemon's reads of a small file, passthrough's of a large one, exec,
// readdir). Natively: a bind mount of a directory with the same option.
TEST_P(Corners, AtimeOptionsAsNatively) {
  const std::string cp = "cp /bin/true ";
  for (const char* option : {"noatime", "nodiratime"}) {
    SCOPED_TRACE(option);
    MountOptions o;
    o.extra_opts = GetParam();
    o.extra_opts.emplace_back(option);
    Mount m(o);
    const std::string nat = m.root() + "/native-" + option;
    std::filesystem::create_directory(nat);
    ASSERT_EQ(::mount(nat.c_str(), nat.c_str(), nullptr, MS_BIND, nullptr), 0);
    struct Unmount {
      std::string path;
      ~Unmount() { ::umount2(path.c_str(), MNT_DETACH); }
    } unmount{nat};
    const unsigned long flag = std::string(option) == "noatime" ? MS_NOATIME : MS_NODIRATIME;
    ASSERT_EQ(::mount(nullptr, nat.c_str(), nullptr, MS_REMOUNT | MS_BIND | flag, nullptr), 0);
    struct Target {
      const char* name;
      const char* how;
      size_t size;  // 0: a directory; 1: a copy of /bin/true
    };
    const Target targets[] = {{"small", "read", 100},    {"large", "read", 1 << 20}, {"rw", "read-rw", 1 << 20},
                              {"binary", "exec", 1},     {"dir", "list", 0}};
    // A fresh file per reader: a second read may be served from the
    // kernel's page cache of the mount, which reaches no one (a FUSE limit
    // with or without these options).
    for (const Target& t : targets) {
      for (const char* who : {"user", "root"}) {
        const std::string name = std::string(t.name) + "-" + who;
        for (const std::string& dir : {nat, m.src()}) {
          const std::string path = dir + "/" + name;
          if (t.size == 0) {
            ASSERT_EQ(::mkdir(path.c_str(), 0755), 0);
            make_file(path + "/entry", 1, 0644);
          } else if (t.size == 1) {
            std::filesystem::copy_file("/bin/true", path);
            ::chmod(path.c_str(), 0755);
          } else {
            make_file(path, t.size, 0666);
          }
          set_old_atime(path);
        }
        const As root{};
        const As& as = std::string(who) == "user" ? other : root;
        ASSERT_EQ(touch_by_reading(nat + "/" + name, t.how, as), 0) << name;
        ASSERT_EQ(touch_by_reading(m.mnt(name), t.how, as), 0) << name;
        EXPECT_EQ(atime_kept(m.src(name)), atime_kept(nat + "/" + name))
            << name << " (" << t.how << "): the atime in SOURCE (left) and natively (right) kept";
      }
    }
  }
}

// Item 8, a documented limit (vsymfs(8), FILE HANDLES AND NFS): no export
// support, so a handle opens while the kernel still holds its inode and
// gives ESTALE once the kernel has forgotten it; the daemon is never asked
// about a node id it has forgotten, and serves on.
TEST_P(Corners, FileHandlesWorkWhileCachedAndGoStaleAfter) {
  make_file(m_->mnt("handled"), 16, 0644);
  union {
    file_handle fh;
    char buf[sizeof(file_handle) + MAX_HANDLE_SZ];
  } h{};
  h.fh.handle_bytes = MAX_HANDLE_SZ;
  int mount_id = 0;
  ASSERT_EQ(::name_to_handle_at(AT_FDCWD, m_->mnt("handled").c_str(), &h.fh, &mount_id, 0), 0)
      << std::strerror(errno);
  const int mnt_fd = ::open(m_->mnt().c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  ASSERT_GE(mnt_fd, 0);
  int fd = ::open_by_handle_at(mnt_fd, &h.fh, O_RDONLY | O_CLOEXEC);
  EXPECT_GE(fd, 0) << "while the kernel holds the inode: " << std::strerror(errno);
  if (fd >= 0) ::close(fd);
  // Let the kernel forget it: no descriptor, no dentry (drop_caches 2
  // frees unused dentries and inodes; FORGET follows).
  int drop = ::open("/proc/sys/vm/drop_caches", O_WRONLY | O_CLOEXEC);
  ASSERT_GE(drop, 0);
  ASSERT_EQ(::write(drop, "2", 1), 1);
  ::close(drop);
  fd = ::open_by_handle_at(mnt_fd, &h.fh, O_RDONLY | O_CLOEXEC);
  const int err = fd < 0 ? errno : 0;
  if (fd >= 0) ::close(fd);
  // Still cached (something kept it) or stale; never anything else.
  EXPECT_TRUE(err == 0 || err == ESTALE) << std::strerror(err);
  ::close(mnt_fd);
  struct stat st {};
  EXPECT_EQ(::stat(m_->mnt("handled").c_str(), &st), 0) << "the mount still serves";
}

INSTANTIATE_TEST_SUITE_P(Configs, Corners, ::testing::ValuesIn(kConfigs), config_name);

// Item 5: umount returns before the daemon has finished (it may still be
// answering the kernel's FORGETs, or freeing a large removed file), and its
// control socket still answers then. A mount at the same place right after
// must not be refused for it. The slow exit here: the old daemon is
// stopped (SIGSTOP) before the unmount, so it cannot even notice it, and
// its socket keeps accepting connections in the kernel.
TEST(RemountAfterUnmount, ExitingDaemonsSocketDoesNotBlockTheNextMount) {
  Mount a;
  const pid_t old_pid = a.daemon_pid();
  ASSERT_EQ(::kill(old_pid, SIGSTOP), 0);
  struct Resume {
    pid_t pid;
    ~Resume() { ::kill(pid, SIGCONT); }
  } resume{old_pid};
  if (::umount2(a.mnt().c_str(), 0) != 0) {
    ASSERT_EQ(::umount2(a.mnt().c_str(), MNT_DETACH), 0);
  }

  const std::string log = a.root() + "/second-daemon.log";
  std::string o = "allow_other,builtin_rules";
  if (vsymfs::testing::uring_run()) o += ",uring";
  struct stat parent {};
  ASSERT_EQ(::stat(a.root().c_str(), &parent), 0);
  const pid_t b = ::fork();
  ASSERT_GE(b, 0);
  if (b == 0) {
    int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd >= 0) {
      ::dup2(fd, 1);
      ::dup2(fd, 2);
    }
    const std::string bin = vsymfs::testing::vsymfs_bin();
    ::execl(bin.c_str(), bin.c_str(), "-f", "-o", o.c_str(), a.src().c_str(), a.mnt().c_str(), nullptr);
    ::_exit(127);
  }
  auto slurp = [&] {
    std::ifstream in(log);
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
  };
  // Up within 15 s, or exited (refused).
  bool up = false, exited = false;
  int status = 0;
  for (int i = 0; i < 1500 && !up && !exited; ++i) {
    struct stat st {};
    up = ::stat(a.mnt().c_str(), &st) == 0 && st.st_dev != parent.st_dev;
    exited = !up && ::waitpid(b, &status, WNOHANG) == b;
    if (!up && !exited) ::usleep(10'000);
  }
  EXPECT_TRUE(up) << "the second daemon " << (exited ? "exited" : "did not mount within 15 s") << ":\n" << slurp();
  // Only the new daemon can answer: the old one is stopped, then gone.
  auto status_of_b = [&] {
    int st = -1;
    const std::string out = vsymfs::testing::capture_as(
        As{}, {vsymfs::testing::vsymctl_bin(), "--mount", a.mnt(), "status"}, &st);
    return st == 0 ? std::string("answered") : "status " + std::to_string(st) + ": " + out;
  };
  if (up) {
    EXPECT_EQ(status_of_b(), "answered");
    // The old daemon goes on and exits; it must leave the new socket alone.
    ::kill(old_pid, SIGCONT);
    int old_status = 0;
    bool old_gone = false;
    for (int i = 0; i < 1500 && !old_gone; ++i) {
      old_gone = ::waitpid(old_pid, &old_status, WNOHANG) == old_pid;
      if (!old_gone) ::usleep(10'000);
    }
    EXPECT_TRUE(old_gone) << "the old daemon did not exit within 15 s of SIGCONT";
    EXPECT_EQ(status_of_b(), "answered");
    ::kill(b, SIGTERM);
    for (int i = 0; i < 1500 && !exited; ++i) {
      exited = ::waitpid(b, &status, WNOHANG) == b;
      if (!exited) ::usleep(10'000);
    }
    if (!exited) {
      ::kill(b, SIGKILL);
      ::waitpid(b, &status, 0);
    }
    EXPECT_TRUE(exited && WIFEXITED(status) && WEXITSTATUS(status) == 0) << slurp();
  }
  ::umount2(a.mnt().c_str(), MNT_DETACH);
}

}  // namespace
