// The inode table's lookups that a directory listing uses: an inode the
// table already has is found and counted without a syscall, an unknown one
// is not made up, and counting keeps an inode alive exactly as long as the
// kernel's lookups do.
#include "fs/inode_table.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/vfs.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>

#include <gtest/gtest.h>

#include "common/temp_dir.hpp"

namespace {

namespace stdfs = std::filesystem;
using vsymfs::fs::Inode;
using vsymfs::fs::InodeTable;

class InodeTableTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::ofstream(dir_ + "/file") << "x";
    stdfs::create_directory(dir_ + "/sub");
    auto t = InodeTable::create(dir_, InodeTable::Options{.fd_budget = 16});
    ASSERT_TRUE(t) << t.error().message;
    table_ = std::move(*t);
  }
  struct stat stat_of(const std::string& name) {
    struct stat st {};
    EXPECT_EQ(::lstat((dir_ + "/" + name).c_str(), &st), 0) << name;
    return st;
  }
  // Looks `name` up the way a LOOKUP does: one counted kernel lookup.
  Inode* adopt(const std::string& name) {
    vsymfs::UniqueFd fd(::open((dir_ + "/" + name).c_str(), O_PATH | O_NOFOLLOW | O_CLOEXEC));
    EXPECT_TRUE(fd) << name;
    auto inode = table_->adopt(table_->root(), name, std::move(fd), stat_of(name));
    EXPECT_TRUE(inode);
    return inode ? *inode : nullptr;
  }

  // Declared first, so removed last: after the table has closed its descriptors.
  const vsymfs::test::TempDir tmp_{"inode_table_test"};
  const std::string& dir_ = tmp_.path();
  std::unique_ptr<InodeTable> table_;
};

TEST_F(InodeTableTest, ContainsOnlyWhatWasLookedUp) {
  const struct stat file = stat_of("file"), sub = stat_of("sub");
  EXPECT_FALSE(table_->contains(file.st_dev, file.st_ino));
  Inode* inode = adopt("file");
  ASSERT_NE(inode, nullptr);
  EXPECT_TRUE(table_->contains(file.st_dev, file.st_ino));
  EXPECT_FALSE(table_->contains(sub.st_dev, sub.st_ino));
  table_->forget(*inode, 1);
  EXPECT_FALSE(table_->contains(file.st_dev, file.st_ino)) << "forgotten inodes must leave the table";
}

TEST_F(InodeTableTest, RefKnownFindsAKnownInodeAndCountsOneMoreLookup) {
  Inode* inode = adopt("file");
  ASSERT_NE(inode, nullptr);
  const std::size_t size = table_->size();
  EXPECT_EQ(table_->ref_known(table_->root(), "file", stat_of("file")), inode);
  EXPECT_EQ(table_->size(), size) << "a known inode must not be added again";
  // Two lookups now: the first forget leaves it, the second removes it.
  const struct stat st = stat_of("file");
  table_->forget(*inode, 1);
  EXPECT_TRUE(table_->contains(st.st_dev, st.st_ino));
  table_->forget(*inode, 1);
  EXPECT_FALSE(table_->contains(st.st_dev, st.st_ino));
}

TEST_F(InodeTableTest, RefKnownMakesNothingUp) {
  EXPECT_EQ(table_->ref_known(table_->root(), "sub", stat_of("sub")), nullptr);
  const struct stat st = stat_of("sub");
  EXPECT_FALSE(table_->contains(st.st_dev, st.st_ino));

  // The same number with another type is a reused number, not the inode.
  Inode* inode = adopt("file");
  ASSERT_NE(inode, nullptr);
  struct stat as_dir = stat_of("file");
  as_dir.st_mode = S_IFDIR | 0755;
  EXPECT_EQ(table_->ref_known(table_->root(), "file", as_dir), nullptr);
  table_->forget(*inode, 1);
}

// A LOOKUP answered without opening the name (Filesystem::lookup's
// known_first): only for a known inode whose descriptor is open, which keeps
// its number from going to another file; adopt() tells the same thing.
TEST_F(InodeTableTest, RefKnownOpenNeedsTheDescriptorOpen) {
  bool was_open = true;
  {
    vsymfs::UniqueFd fd(::open((dir_ + "/file").c_str(), O_PATH | O_NOFOLLOW | O_CLOEXEC));
    auto first = table_->adopt(table_->root(), "file", std::move(fd), stat_of("file"), &was_open);
    ASSERT_TRUE(first);
    EXPECT_FALSE(was_open) << "a new inode was not known";
  }
  Inode* inode = table_->ref_known_open(table_->root(), "file", stat_of("file"));
  ASSERT_NE(inode, nullptr);
  EXPECT_NE(adopt("file"), nullptr);  // three lookups counted now
  {
    vsymfs::UniqueFd fd(::open((dir_ + "/file").c_str(), O_PATH | O_NOFOLLOW | O_CLOEXEC));
    ASSERT_TRUE(table_->adopt(table_->root(), "file", std::move(fd), stat_of("file"), &was_open));
    EXPECT_TRUE(was_open);
  }
  // Twice the budget of other inodes: its descriptor is evicted.
  for (int i = 0; i < 32; ++i) {
    const std::string name = "other" + std::to_string(i);
    std::ofstream(dir_ + "/" + name) << "y";
    ASSERT_NE(adopt(name), nullptr);
  }
  EXPECT_EQ(table_->ref_known_open(table_->root(), "file", stat_of("file")), nullptr);
  {
    vsymfs::UniqueFd fd(::open((dir_ + "/file").c_str(), O_PATH | O_NOFOLLOW | O_CLOEXEC));
    ASSERT_TRUE(table_->adopt(table_->root(), "file", std::move(fd), stat_of("file"), &was_open));
    EXPECT_FALSE(was_open) << "known, but its descriptor was closed";
  }
  // Unknown names, and the root, never.
  EXPECT_EQ(table_->ref_known_open(table_->root(), "sub", stat_of("sub")), nullptr);
  struct stat root {};
  ASSERT_EQ(::lstat(dir_.c_str(), &root), 0);
  EXPECT_EQ(table_->ref_known_open(table_->root(), ".", root), nullptr);
  const struct stat st = stat_of("file");
  table_->forget(*inode, 5);
  EXPECT_FALSE(table_->contains(st.st_dev, st.st_ino));
}

// An operation's reply goes out before its locals are destroyed, and the
// kernel may send the inode's last FORGET as soon as it has the reply (ASan
// caught FdRef::reset writing into a freed inode after OPEN's reply, in
// corners_test). The forgotten inode, and its descriptor, must last until the
// operation's FdRef lets go; then both go.
TEST_F(InodeTableTest, AnInodeForgottenWhileAnOperationPinsItLastsUntilItLetsGo) {
  Inode* inode = adopt("file");
  ASSERT_NE(inode, nullptr);
  const struct stat st = stat_of("file");
  vsymfs::fs::FdRef pinned;
  ASSERT_EQ(table_->fd(*inode, pinned), 0);
  const int fd = pinned.get();
  ASSERT_GE(fd, 0);
  table_->forget(*inode, 1);  // the kernel's last FORGET, after the reply
  EXPECT_FALSE(table_->contains(st.st_dev, st.st_ino)) << "no lookup may find it any more";
  EXPECT_GE(::fcntl(fd, F_GETFD), 0) << "the descriptor was closed under the operation that pins it";
  struct stat via_fd {};
  EXPECT_EQ(::fstatat(fd, "", &via_fd, AT_EMPTY_PATH), 0);
  EXPECT_EQ(via_fd.st_ino, st.st_ino) << "the pinned descriptor must still be the inode's";
  pinned.reset();  // the operation ends: the inode and its descriptor go
  errno = 0;
  EXPECT_EQ(::fcntl(fd, F_GETFD), -1) << "the retired inode's descriptor must be closed by its last FdRef";
  EXPECT_EQ(errno, EBADF);

  // Not pinned at its FORGET: dropped at once, as before.
  Inode* again = adopt("file");
  ASSERT_NE(again, nullptr);
  int unpinned_fd = -1;
  {
    vsymfs::fs::FdRef ref;
    ASSERT_EQ(table_->fd(*again, ref), 0);
    unpinned_fd = ref.get();
  }
  table_->forget(*again, 1);
  errno = 0;
  EXPECT_EQ(::fcntl(unpinned_fd, F_GETFD), -1);
  EXPECT_EQ(errno, EBADF);
}

}  // namespace

namespace {

using vsymfs::fs::decide_handles;
using vsymfs::fs::HandleChoice;

// Which sources' file handles are used: by type, by a live round trip,
// and as forced by -o handles / -o no_handles.
TEST(DecideHandles, ByTypeProbeAndChoice) {
  constexpr unsigned long kFuse = 0x65735546, kNfs = 0x6969, kExt4 = 0xEF53, kCifs = 0xFF534D42, k9p = 0x01021997;
  for (unsigned long t : {kFuse, kCifs, k9p}) {
    const auto d = decide_handles(HandleChoice::Auto, true, t, "");
    EXPECT_FALSE(d.use) << t;
    EXPECT_NE(d.reason.find("-o handles to use them anyway"), std::string::npos) << d.reason;
  }
  EXPECT_NE(decide_handles(HandleChoice::Auto, true, kFuse, "").reason.find("SOURCE is FUSE (f_type 0x65735546)"),
            std::string::npos);
  EXPECT_TRUE(decide_handles(HandleChoice::Auto, true, kNfs, "").use);
  EXPECT_TRUE(decide_handles(HandleChoice::Auto, true, kExt4, "").use);
  EXPECT_TRUE(decide_handles(HandleChoice::Auto, true, 0x12345678, "").use) << "unknown types: the probe decides";
  // A failed round trip wins over the type, and over -o handles.
  const auto failed = decide_handles(HandleChoice::Auto, true, kExt4, "name_to_handle_at: Operation not supported");
  EXPECT_FALSE(failed.use);
  EXPECT_NE(failed.reason.find("Operation not supported"), std::string::npos);
  EXPECT_FALSE(decide_handles(HandleChoice::On, true, kExt4, "open_by_handle_at: Stale file handle").use);
  // Forced.
  EXPECT_TRUE(decide_handles(HandleChoice::On, true, kFuse, "").use);
  EXPECT_FALSE(decide_handles(HandleChoice::Off, true, kExt4, "").use);
  EXPECT_EQ(decide_handles(HandleChoice::Off, true, kExt4, "").reason, "-o no_handles");
  // Not root: open_by_handle_at is refused anyway.
  EXPECT_FALSE(decide_handles(HandleChoice::On, false, kExt4, "").use);
}

}  // namespace

// Every inode keeps its directory, not only those without a handle: a
// handle that goes stale falls back to it.
TEST_F(InodeTableTest, EveryInodeKnowsItsParent) {
  Inode* file = adopt("file");
  ASSERT_NE(file, nullptr);
  vsymfs::fs::FdRef parent;
  ASSERT_EQ(table_->parent_fd(*file, parent), 0);
  struct stat st {}, root {};
  ASSERT_EQ(::fstat(parent.get(), &st), 0);
  ASSERT_EQ(::stat(dir_.c_str(), &root), 0);
  EXPECT_EQ(st.st_ino, root.st_ino);
  vsymfs::fs::FdRef none;
  EXPECT_EQ(table_->parent_fd(table_->root(), none), ENOENT);
}

// What READLINK may answer without reading the link (LinkKeeping): only
// local filesystems, and by their atime mode.
TEST(LinkKeeping, ByTypeAndAtimeMode) {
  using vsymfs::fs::link_keeping;
  using vsymfs::fs::LinkKeeping;
  constexpr unsigned long kExt4 = 0xEF53, kTmpfs = 0x01021994, kXfs = 0x58465342;
  EXPECT_EQ(link_keeping(kExt4, ST_RELATIME), LinkKeeping::Relatime);
  EXPECT_EQ(link_keeping(kTmpfs, ST_NOATIME), LinkKeeping::Always);
  EXPECT_EQ(link_keeping(kXfs, ST_RDONLY | ST_RELATIME), LinkKeeping::Always);
  EXPECT_EQ(link_keeping(kExt4, 0), LinkKeeping::Never) << "strictatime: every read stamps the atime";
  EXPECT_EQ(link_keeping(0x65735546, ST_NOATIME), LinkKeeping::Never) << "FUSE: a server may change a link in place";
  EXPECT_EQ(link_keeping(0x6969, ST_RELATIME), LinkKeeping::Never) << "NFS";
  EXPECT_EQ(link_keeping(0x794C7630, ST_RELATIME), LinkKeeping::Never) << "overlayfs";
}

// The kept text of a link: only for the descriptor it was read through,
// until its deadline, short texts only, and gone once dropped.
TEST_F(InodeTableTest, AKeptLinkTextIsForItsDescriptorAndItsTimeOnly) {
  ASSERT_EQ(::symlink("some/target", (dir_ + "/l").c_str()), 0);
  Inode* inode = adopt("l");
  ASSERT_NE(inode, nullptr);
  vsymfs::fs::LinkText* t = inode->link_text();
  ASSERT_NE(t, nullptr);
  struct statfs sfs {};
  ASSERT_EQ(::statfs(dir_.c_str(), &sfs), 0);
  if (vsymfs::fs::link_keeping(static_cast<unsigned long>(sfs.f_type), static_cast<unsigned long>(sfs.f_flags)) ==
      vsymfs::fs::LinkKeeping::Never) {
    EXPECT_FALSE(t->keepable());
    GTEST_SKIP() << "the temporary directory's filesystem (f_type 0x" << std::hex << sfs.f_type
                 << ") keeps no link text: every READLINK reads";
  }
  ASSERT_TRUE(t->keepable());
  std::string out;
  EXPECT_FALSE(t->kept(7, 100, out)) << "nothing kept yet";
  t->keep(7, 200, "some/target");
  ASSERT_TRUE(t->kept(7, 100, out));
  EXPECT_EQ(out, "some/target");
  EXPECT_FALSE(t->kept(8, 100, out)) << "another descriptor (the inode may be another file)";
  EXPECT_FALSE(t->kept(0, 100, out)) << "no descriptor pinned";
  EXPECT_FALSE(t->kept(7, 200, out)) << "past its deadline";
  const std::string longest(vsymfs::fs::LinkText::kKeptBytes, 'x');
  t->keep(9, 300, longest);
  ASSERT_TRUE(t->kept(9, 100, out));
  EXPECT_EQ(out, longest);
  EXPECT_FALSE(t->kept(7, 100, out)) << "replaced";
  t->keep(10, 300, longest + "y");
  EXPECT_FALSE(t->kept(10, 100, out)) << "too long to keep";
  EXPECT_TRUE(t->kept(9, 100, out)) << "a text too long to keep leaves the kept one alone";
  t->keep(11, 300, "a");
  ASSERT_TRUE(t->kept(11, 100, out));
  EXPECT_EQ(out, "a") << "a shorter text after a longer one";
  t->drop_kept();
  EXPECT_FALSE(t->kept(11, 100, out)) << "dropped";
}

// Readers on other threads never see a mix of two texts.
TEST_F(InodeTableTest, AKeptLinkTextIsNeverSeenTorn) {
  ASSERT_EQ(::symlink("t", (dir_ + "/l").c_str()), 0);
  Inode* inode = adopt("l");
  ASSERT_NE(inode, nullptr);
  vsymfs::fs::LinkText* t = inode->link_text();
  if (!t->keepable()) GTEST_SKIP() << "the temporary directory's filesystem keeps no link text";
  const std::string a(100, 'a'), b(100, 'b');
  std::atomic<bool> stop{false};
  std::atomic<long> seen{0}, torn{0};
  std::thread reader([&] {
    std::string out;
    while (!stop.load()) {
      if (!t->kept(1, 0, out)) continue;
      seen.fetch_add(1);
      if (out != a && out != b) torn.fetch_add(1);
    }
  });
  for (int i = 0; i < 200000; ++i) t->keep(1, 1, i % 2 ? a : b);
  // Until the reader has seen some (a slow machine may not have started
  // it), for at most 30 s: a kept() that never answers fails, not hangs.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (seen.load() < 1000 && std::chrono::steady_clock::now() < deadline) t->keep(1, 1, a);
  stop.store(true);
  reader.join();
  EXPECT_GE(seen.load(), 1000) << "the reader never saw the kept text";
  EXPECT_EQ(torn.load(), 0) << "of " << seen.load() << " reads";
}

// open_serial names the descriptor open now, as a pin would, and nothing
// once the descriptor is gone.
TEST_F(InodeTableTest, OpenSerialNamesTheDescriptorOpenNow) {
  ASSERT_EQ(::symlink("t", (dir_ + "/l").c_str()), 0);
  Inode* inode = adopt("l");
  ASSERT_NE(inode, nullptr);
  vsymfs::fs::FdRef ref;
  ASSERT_EQ(table_->fd(*inode, ref), 0);
  const std::uint64_t pinned = InodeTable::serial(*inode, ref);
  ASSERT_NE(pinned, 0u);
  EXPECT_EQ(InodeTable::open_serial(*inode), pinned);
  ref.reset();
  EXPECT_EQ(InodeTable::open_serial(table_->root()), 0u) << "the root has no serial";
  // More files than the budget of 16: the link's descriptor is evicted.
  for (int i = 0; i < 40; ++i) {
    const std::string name = "f" + std::to_string(i);
    std::ofstream(dir_ + "/" + name) << "x";
    Inode* f = adopt(name);
    vsymfs::fs::FdRef r;
    ASSERT_EQ(table_->fd(*f, r), 0);
  }
  const std::uint64_t now = InodeTable::open_serial(*inode);
  EXPECT_NE(now, pinned) << "an evicted descriptor's serial must not be named";
  ASSERT_EQ(table_->fd(*inode, ref), 0);
  EXPECT_EQ(InodeTable::open_serial(*inode), InodeTable::serial(*inode, ref)) << "the new descriptor";
  EXPECT_NE(InodeTable::serial(*inode, ref), pinned);
}
