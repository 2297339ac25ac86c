// POSIX ACLs of SOURCE's files, through a real mount with -o acl: the kernel
// checks them (FUSE_POSIX_ACL) as SOURCE would, so an ACL grants and denies
// through the mount exactly what it does natively. Without it (the default)
// the kernel checks mode bits only.
#include <fcntl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "mount_fixture.hpp"

namespace vsymfs::testing {
namespace {

constexpr uid_t kNobody = 65534;
constexpr gid_t kNogroup = 65534;
constexpr const char* kAccess = "system.posix_acl_access";
constexpr const char* kDefault = "system.posix_acl_default";

// The xattr form of an ACL (linux/posix_acl_xattr.h): a version, then
// (tag, perm, id) entries, little-endian.
struct Entry {
  std::uint16_t tag;
  std::uint16_t perm;
  std::uint32_t id;
};
constexpr std::uint16_t kUserObj = 0x01, kUser = 0x02, kGroupObj = 0x04, kMask = 0x10, kOther = 0x20;
constexpr std::uint32_t kNoId = 0xffffffff;

std::string acl_xattr(const std::vector<Entry>& entries) {
  std::string out;
  auto put = [&out](std::uint64_t v, int bytes) {
    for (int i = 0; i < bytes; ++i) out.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
  };
  put(2, 4);
  for (const Entry& e : entries) {
    put(e.tag, 2);
    put(e.perm, 2);
    put(e.id, 4);
  }
  return out;
}

// owner rw, nobody `perm`, group and others nothing.
std::string nobody_may(std::uint16_t perm) {
  return acl_xattr({{kUserObj, 6, kNoId}, {kUser, perm, kNobody}, {kGroupObj, 0, kNoId}, {kMask, perm, kNoId},
                    {kOther, 0, kNoId}});
}

void set_acl(const std::string& path, const char* which, const std::string& value) {
  ASSERT_EQ(::setxattr(path.c_str(), which, value.data(), value.size(), 0), 0)
      << path << ": " << std::strerror(errno) << " (does the test directory's filesystem support ACLs?)";
}

// What open(O_RDONLY) as nobody gives: 0 or the errno.
int open_as_nobody(const std::string& path, int flags = O_RDONLY) {
  return run_as(As{kNobody, kNogroup, {}, {}}, [&] {
    const int fd = ::open(path.c_str(), flags | O_CLOEXEC);
    if (fd < 0) return errno;
    ::close(fd);
    return 0;
  });
}

const MountOptions kAcl{.extra_opts = {"acl"}};

void write_file(const std::string& path, mode_t mode) {
  std::ofstream(path) << "contents\n";
  ASSERT_EQ(::chmod(path.c_str(), mode), 0);
}

TEST(Acl, ANamedUsersGrantWorksThroughTheMountAsNatively) {
  Mount m(kAcl);
  int status = -1;
  EXPECT_NE(capture_as(As{}, {vsymctl_bin(), "-m", m.mnt(), "status"}, &status).find("posix_acls: enforced"),
            std::string::npos);
  EXPECT_EQ(status, 0);
  write_file(m.src("f"), 0600);
  set_acl(m.src("f"), kAccess, nobody_may(4));
  ASSERT_EQ(open_as_nobody(m.src("f")), 0) << "natively the ACL lets nobody read";
  EXPECT_EQ(open_as_nobody(m.mnt("f")), 0) << "through the mount";
  EXPECT_EQ(open_as_nobody(m.mnt("f"), O_WRONLY), EACCES) << "the ACL grants reading only";
}

TEST(Acl, ANamedUsersDenialWorksThroughTheMountAsNatively) {
  Mount m(kAcl);
  write_file(m.src("f"), 0644);
  set_acl(m.src("f"), kAccess, acl_xattr({{kUserObj, 6, kNoId}, {kUser, 0, kNobody}, {kGroupObj, 4, kNoId},
                                          {kMask, 4, kNoId}, {kOther, 4, kNoId}}));
  ASSERT_EQ(open_as_nobody(m.src("f")), EACCES) << "natively the named entry beats 'other'";
  EXPECT_EQ(open_as_nobody(m.mnt("f")), EACCES);
}

TEST(Acl, AnAclSetOrChangedThroughTheMountTakesEffectAtOnce) {
  Mount m(kAcl);
  write_file(m.src("f"), 0600);
  ASSERT_EQ(open_as_nobody(m.mnt("f")), EACCES);
  set_acl(m.mnt("f"), kAccess, nobody_may(4));
  EXPECT_EQ(open_as_nobody(m.mnt("f")), 0) << "the ACL set through the mount";
  char buf[256];
  const ssize_t n = ::getxattr(m.src("f").c_str(), kAccess, buf, sizeof buf);
  EXPECT_EQ(std::string(buf, n > 0 ? static_cast<std::size_t>(n) : 0), nobody_may(4)) << "stored on SOURCE";

  // chmod recomputes the mask (SOURCE does it), and the kernel must not go
  // on using the ACL it cached before.
  ASSERT_EQ(::chmod(m.mnt("f").c_str(), 0600), 0);
  EXPECT_EQ(open_as_nobody(m.mnt("f")), EACCES) << "chmod 600 left nobody's read in the mask";
}

TEST(Acl, NewEntriesInheritTheDirectorysDefaultAcl) {
  Mount m(kAcl);
  ASSERT_EQ(::mkdir(m.src("shared").c_str(), 0700), 0);
  const std::string dflt = acl_xattr(
      {{kUserObj, 7, kNoId}, {kUser, 7, kNobody}, {kGroupObj, 0, kNoId}, {kMask, 7, kNoId}, {kOther, 0, kNoId}});
  set_acl(m.src("shared"), kDefault, dflt);
  set_acl(m.src("shared"), kAccess, acl_xattr({{kUserObj, 7, kNoId}, {kUser, 7, kNobody}, {kGroupObj, 0, kNoId},
                                               {kMask, 7, kNoId}, {kOther, 0, kNoId}}));
  // Created through the mount by root (mode 0666 & ~umask): SOURCE applies
  // the default ACL, and nobody may write the new file.
  const int fd = ::open(m.mnt("shared/new").c_str(), O_CREAT | O_WRONLY | O_CLOEXEC, 0666);
  ASSERT_GE(fd, 0) << std::strerror(errno);
  ::close(fd);
  ASSERT_EQ(::mkdir(m.mnt("shared/sub").c_str(), 0777), 0);
  EXPECT_GT(::getxattr(m.src("shared/new").c_str(), kAccess, nullptr, 0), 0) << "the new file has no ACL";
  EXPECT_GT(::getxattr(m.src("shared/sub").c_str(), kDefault, nullptr, 0), 0) << "the new directory inherits none";
  EXPECT_EQ(open_as_nobody(m.mnt("shared/new"), O_WRONLY), 0);
}

// Where the parent has no default ACL the caller's umask applies, as
// natively: with -o acl the daemon applies it (the kernel leaves it to the
// daemon so that a default ACL can replace it), without it the kernel does.
// Callers with different umasks take turns on the same workers; none may see
// another's.
TEST(Acl, TheCallersUmaskAppliesWhereThereIsNoDefaultAcl) {
  for (const MountOptions& opts : {kAcl, MountOptions{}}) {
  Mount m(opts);
  ASSERT_EQ(::mkdir(m.src("plain").c_str(), 0777), 0);
  ASSERT_EQ(::chmod(m.src("plain").c_str(), 0777), 0);
  for (int i = 0; i < 20; ++i) {
    const mode_t mask = i % 2 == 0 ? 022 : 077;
    const std::string n = std::to_string(i);
    const int rc = run_as(As{kNobody, kNogroup, {}, {}}, [&] {
      ::umask(mask);
      const int fd = ::open(m.mnt("plain/f" + n).c_str(), O_CREAT | O_WRONLY | O_CLOEXEC, 0666);
      if (fd < 0) return 10;
      ::close(fd);
      if (::mkdir(m.mnt("plain/d" + n).c_str(), 0777) != 0) return 11;
      if (::mknod(m.mnt("plain/p" + n).c_str(), S_IFIFO | 0666, 0) != 0) return 12;
      return 0;
    });
    ASSERT_EQ(rc, 0) << i;
    struct stat st {};
    ASSERT_EQ(::stat(m.src("plain/f" + n).c_str(), &st), 0);
    EXPECT_EQ(st.st_mode & 0777, 0666 & ~mask) << "file " << i;
    ASSERT_EQ(::stat(m.src("plain/d" + n).c_str(), &st), 0);
    EXPECT_EQ(st.st_mode & 0777, 0777 & ~mask) << "directory " << i;
    ASSERT_EQ(::stat(m.src("plain/p" + n).c_str(), &st), 0);
    EXPECT_EQ(st.st_mode & 0777, 0666 & ~mask) << "fifo " << i;
  }
  }
}

// A filesystem without ACLs inside SOURCE answers the kernel's ACL question
// with EOPNOTSUPP, which the kernel would take as a failed permission check.
TEST(Acl, FilesOnAFilesystemWithoutAclsInsideSourceStayReachable) {
  Mount m(kAcl);
  ASSERT_EQ(::mkdir(m.src("ram").c_str(), 0755), 0);
  if (::mount("vsymfs-test", m.src("ram").c_str(), "ramfs", 0, "mode=0755") != 0)
    GTEST_SKIP() << "cannot mount a ramfs: " << std::strerror(errno);
  write_file(m.src("ram/f"), 0644);
  ASSERT_LT(::getxattr(m.src("ram/f").c_str(), kAccess, nullptr, 0), 0);
  const int native_errno = errno;
  EXPECT_EQ(open_as_nobody(m.mnt("ram/f")), 0);
  EXPECT_EQ(open_as_nobody(m.mnt("ram/f"), O_WRONLY), EACCES);
  errno = 0;
  EXPECT_LT(::getxattr(m.mnt("ram/f").c_str(), kAccess, nullptr, 0), 0);
  EXPECT_TRUE(errno == ENODATA || errno == native_errno) << std::strerror(errno);
  m.stop();
  ::umount2(m.src("ram").c_str(), MNT_DETACH);
}

// By default (and with -o noacl) the kernel checks mode bits only: what only
// an ACL grants is refused, and what an ACL denies is still refused, by
// SOURCE, since the daemon acts as the caller.
TEST(Acl, WithoutAclTheKernelChecksModeBitsAndAclDenialsStillHold) {
  for (const MountOptions& opts : {MountOptions{}, MountOptions{.extra_opts = {"noacl"}}}) {
    Mount m(opts);
    write_file(m.src("granted"), 0600);
    set_acl(m.src("granted"), kAccess, nobody_may(4));
    EXPECT_EQ(open_as_nobody(m.mnt("granted")), EACCES);
    write_file(m.src("denied"), 0644);
    set_acl(m.src("denied"), kAccess, acl_xattr({{kUserObj, 6, kNoId}, {kUser, 0, kNobody}, {kGroupObj, 4, kNoId},
                                                 {kMask, 4, kNoId}, {kOther, 4, kNoId}}));
    EXPECT_EQ(open_as_nobody(m.mnt("denied")), EACCES);
    EXPECT_NE(m.daemon_log().find("POSIX ACLs not enforced"), std::string::npos) << m.daemon_log();
  }
}

}  // namespace
}  // namespace vsymfs::testing
