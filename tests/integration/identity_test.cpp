// Operations run with the caller's identity: ownership of new files,
// permission checks by the source filesystem (not only by the kernel's
// default_permissions), supplementary groups, and -o single_user.
#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "mount_fixture.hpp"

namespace {

using vsymfs::testing::As;
using vsymfs::testing::Mount;
using vsymfs::testing::MountOptions;
using vsymfs::testing::run_as;

constexpr uid_t kAlice = 1234;
constexpr gid_t kAliceGroup = 1234;
constexpr uid_t kBob = 2000;
constexpr gid_t kProject = 3000;

const As alice{.uid = kAlice, .gid = kAliceGroup};
const As alice_in_project{.uid = kAlice, .gid = kAliceGroup, .groups = {kProject}};

// Exit codes from the child: 0 success, else the errno of the failed call.
int create_file(const std::string& path) {
  int fd = ::open(path.c_str(), O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, 0644);
  if (fd < 0) return errno;
  ::close(fd);
  return 0;
}

int read_file(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return errno;
  char c;
  int r = ::read(fd, &c, 1) < 0 ? errno : 0;
  ::close(fd);
  return r;
}

void make_dir(const std::string& path, mode_t mode, uid_t uid, gid_t gid) {
  ASSERT_EQ(::mkdir(path.c_str(), 0700), 0) << path << ": " << std::strerror(errno);
  ASSERT_EQ(::chown(path.c_str(), uid, gid), 0);
  ASSERT_EQ(::chmod(path.c_str(), mode), 0);
}

void make_file(const std::string& path, mode_t mode, uid_t uid, gid_t gid) {
  int fd = ::open(path.c_str(), O_CREAT | O_WRONLY | O_CLOEXEC, 0600);
  ASSERT_GE(fd, 0) << path << ": " << std::strerror(errno);
  ASSERT_EQ(::write(fd, "secret", 6), 6);
  ::close(fd);
  ASSERT_EQ(::chown(path.c_str(), uid, gid), 0);
  ASSERT_EQ(::chmod(path.c_str(), mode), 0);
}

struct stat lstat_of(const std::string& path) {
  struct stat st {};
  EXPECT_EQ(::lstat(path.c_str(), &st), 0) << path << ": " << std::strerror(errno);
  return st;
}

class Identity : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { mount_ = new Mount(); }
  static void TearDownTestSuite() {
    delete mount_;
    mount_ = nullptr;
  }
  // A fresh directory per test, created in SOURCE with the given owner.
  std::string dir(const char* name, mode_t mode, uid_t uid = 0, gid_t gid = 0) {
    make_dir(mount_->src(name), mode, uid, gid);
    return mount_->mnt(name);
  }
  static Mount* mount_;
};
Mount* Identity::mount_ = nullptr;

TEST_F(Identity, NewFilesBelongToTheirCreator) {
  const std::string d = dir("shared", 0777);
  EXPECT_EQ(run_as(alice, [&] { return create_file(d + "/by-alice"); }), 0);
  EXPECT_EQ(run_as(alice, [&] { return ::mkdir((d + "/dir-by-alice").c_str(), 0755) == 0 ? 0 : errno; }), 0);
  EXPECT_EQ(run_as(alice, [&] { return ::symlink("x", (d + "/link-by-alice").c_str()) == 0 ? 0 : errno; }), 0);
  EXPECT_EQ(run_as(alice, [&] { return ::mkfifo((d + "/fifo-by-alice").c_str(), 0600) == 0 ? 0 : errno; }), 0);
  ASSERT_EQ(create_file(d + "/by-root"), 0);
  // Checked in SOURCE: what the underlying filesystem recorded.
  for (const char* n : {"by-alice", "dir-by-alice", "link-by-alice", "fifo-by-alice"}) {
    struct stat st = lstat_of(mount_->src(std::string("shared/") + n));
    EXPECT_EQ(st.st_uid, kAlice) << n;
    EXPECT_EQ(st.st_gid, kAliceGroup) << n;
  }
  EXPECT_EQ(lstat_of(mount_->src("shared/by-root")).st_uid, 0u);
}

TEST_F(Identity, OthersCannotReadAPrivateFile) {
  const std::string d = dir("private", 0755);
  make_file(mount_->src("private/bobs"), 0600, kBob, kBob);
  EXPECT_EQ(run_as(alice, [&] { return read_file(d + "/bobs"); }), EACCES);
  EXPECT_EQ(run_as({.uid = kBob, .gid = kBob}, [&] { return read_file(d + "/bobs"); }), 0);
  EXPECT_EQ(read_file(d + "/bobs"), 0);  // root
  // Nor write into a directory that is not theirs.
  EXPECT_EQ(run_as(alice, [&] { return create_file(d + "/intruder"); }), EACCES);
}

// The kernel's default_permissions check sees the caller's groups anyway;
// creating in a group-writable directory also needs the daemon to pass the
// groups on to the source filesystem.
TEST_F(Identity, SupplementaryGroupGrantsAccess) {
  const std::string d = dir("project", 0770, 0, kProject);
  make_file(mount_->src("project/plan"), 0640, kBob, kProject);
  EXPECT_EQ(run_as(alice_in_project, [&] { return read_file(d + "/plan"); }), 0);
  EXPECT_EQ(run_as(alice_in_project, [&] { return create_file(d + "/by-member"); }), 0);
  EXPECT_EQ(lstat_of(mount_->src("project/by-member")).st_uid, kAlice);
  EXPECT_EQ(run_as(alice, [&] { return read_file(d + "/plan"); }), EACCES);
  EXPECT_EQ(run_as(alice, [&] { return create_file(d + "/by-outsider"); }), EACCES);
}

TEST_F(Identity, SetgidDirectoryAndOwnershipRules) {
  const std::string d = dir("sgid", 02777, 0, kProject);
  EXPECT_EQ(run_as(alice, [&] { return create_file(d + "/f"); }), 0);
  EXPECT_EQ(lstat_of(mount_->src("sgid/f")).st_gid, kProject);  // inherited, as natively
  // The owner may chmod; nobody but root may give a file away.
  EXPECT_EQ(run_as(alice, [&] { return ::chmod((d + "/f").c_str(), 0600) == 0 ? 0 : errno; }), 0);
  EXPECT_EQ(lstat_of(mount_->src("sgid/f")).st_mode & 07777, 0600u);
  EXPECT_EQ(run_as(alice, [&] { return ::chown((d + "/f").c_str(), kBob, static_cast<gid_t>(-1)) == 0 ? 0 : errno; }),
            EPERM);
  EXPECT_EQ(run_as({.uid = kBob, .gid = kBob}, [&] { return ::chmod((d + "/f").c_str(), 0666) == 0 ? 0 : errno; }),
            EPERM);
}

// r without x: the names can be listed, the entries cannot be looked up,
// as on a native filesystem (readdirplus must not turn that into an error).
TEST_F(Identity, ReadableButNotSearchableDirectoryListsItsNames) {
  const std::string d = dir("listonly", 0744, kBob, kBob);
  for (const char* n : {"one", "two", "three"}) make_file(mount_->src(std::string("listonly/") + n), 0644, kBob, kBob);
  EXPECT_EQ(run_as(alice, [&] {
              DIR* dp = ::opendir(d.c_str());
              if (!dp) return errno;
              int names = 0;
              errno = 0;
              while (struct dirent* e = ::readdir(dp))
                if (e->d_name[0] != '.') ++names;
              int err = errno;
              ::closedir(dp);
              if (err != 0) return err;
              return names == 3 ? 0 : 100 + names;
            }),
            0);
  EXPECT_EQ(run_as(alice, [&] {
              struct stat st {};
              return ::stat((d + "/one").c_str(), &st) == 0 ? 0 : errno;
            }),
            EACCES);
}

TEST_F(Identity, StickyDirectoryProtectsOthersFiles) {
  const std::string d = dir("sticky", 01777);
  make_file(mount_->src("sticky/bobs"), 0666, kBob, kBob);
  EXPECT_EQ(run_as(alice, [&] { return ::unlink((d + "/bobs").c_str()) == 0 ? 0 : errno; }), EPERM);
  EXPECT_EQ(run_as({.uid = kBob, .gid = kBob}, [&] { return ::unlink((d + "/bobs").c_str()) == 0 ? 0 : errno; }), 0);
}

TEST_F(Identity, WriteByAnotherUserClearsSetuid) {
  const std::string d = dir("suid", 0755);
  make_file(mount_->src("suid/prog"), 04777, kBob, kBob);
  EXPECT_EQ(run_as(alice, [&] {
              int fd = ::open((d + "/prog").c_str(), O_WRONLY | O_CLOEXEC);
              if (fd < 0) return errno;
              int r = ::write(fd, "x", 1) == 1 ? 0 : errno;
              ::close(fd);
              return r;
            }),
            0);
  EXPECT_EQ(lstat_of(mount_->src("suid/prog")).st_mode & S_ISUID, 0u);
}

// Many users at once over few worker threads: each thread's cached identity
// must never leak into another caller's request.
TEST_F(Identity, ConcurrentCallersKeepTheirOwnIdentity) {
  const std::string d = dir("concurrent", 0777);
  std::vector<pid_t> children;
  for (uid_t u = 5000; u < 5008; ++u) {
    pid_t pid = ::fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      int rc = run_as({.uid = u, .gid = u}, [&] {
        for (int i = 0; i < 40; ++i) {
          std::string p = d + "/u" + std::to_string(u) + "-" + std::to_string(i);
          if (int e = create_file(p); e != 0) return e;
          struct stat st {};
          if (::stat(p.c_str(), &st) != 0) return errno;
        }
        return 0;
      });
      ::_exit(rc);
    }
    children.push_back(pid);
  }
  for (pid_t pid : children) {
    int status = 0;
    ::waitpid(pid, &status, 0);
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "status " << status;
  }
  for (uid_t u = 5000; u < 5008; ++u)
    for (int i = 0; i < 40; ++i) {
      struct stat st = lstat_of(mount_->src("concurrent/u" + std::to_string(u) + "-" + std::to_string(i)));
      EXPECT_EQ(st.st_uid, u);
      EXPECT_EQ(st.st_gid, u);
    }
}

TEST(IdentitySingleUser, EverythingRunsAsTheDaemon) {
  Mount m(MountOptions{.extra_opts = {"single_user"}});
  ASSERT_EQ(::chmod(m.src().c_str(), 0777), 0);
  EXPECT_EQ(run_as(alice, [&] { return create_file(m.mnt("by-alice")); }), 0);
  struct stat st = lstat_of(m.src("by-alice"));
  EXPECT_EQ(st.st_uid, 0u);  // the daemon's uid, not alice's
  EXPECT_EQ(st.st_gid, 0u);
  // The kernel still checks permissions (default_permissions) with the caller's ids.
  make_file(m.src("bobs"), 0600, kBob, kBob);
  EXPECT_EQ(run_as(alice, [&] { return read_file(m.mnt("bobs")); }), EACCES);
}

}  // namespace
