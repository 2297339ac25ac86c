// A small passthrough FUSE filesystem on libfuse's high-level API, used as
// SOURCE by source_fuse_test: like GlusterFS's or sshfs's client it has no
// export support, so the kernel decodes a file handle of it only while the
// inode is still in its cache, and ESTALE after that.
//
//   plain_fuse_source ROOT MOUNTPOINT [-o opts]    (always in the foreground)
//
// Enough operations for the test: look up, list, read and write files,
// make and remove entries, symlinks.
#define FUSE_USE_VERSION 31
#include <fuse3/fuse.h>

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

namespace {

std::string g_root;

std::string real(const char* path) { return g_root + path; }

int err(int r) { return r < 0 ? -errno : r; }

void* do_init(fuse_conn_info*, fuse_config* cfg) {
  cfg->use_ino = 1;  // the source's own inode numbers, as a network filesystem's client gives
  cfg->entry_timeout = cfg->attr_timeout = 1.0;
  return nullptr;
}

int do_getattr(const char* path, struct stat* st, fuse_file_info*) { return err(::lstat(real(path).c_str(), st)); }

int do_readlink(const char* path, char* buf, size_t size) {
  const ssize_t n = ::readlink(real(path).c_str(), buf, size - 1);
  if (n < 0) return -errno;
  buf[n] = '\0';
  return 0;
}

int do_readdir(const char* path, void* buf, fuse_fill_dir_t fill, off_t, fuse_file_info*, fuse_readdir_flags) {
  DIR* d = ::opendir(real(path).c_str());
  if (d == nullptr) return -errno;
  while (const dirent* e = ::readdir(d)) {
    struct stat st {};
    st.st_ino = e->d_ino;
    st.st_mode = static_cast<mode_t>(DTTOIF(e->d_type));
    if (fill(buf, e->d_name, &st, 0, static_cast<fuse_fill_dir_flags>(0)) != 0) break;
  }
  ::closedir(d);
  return 0;
}

int do_open(const char* path, fuse_file_info* fi) {
  const int fd = ::open(real(path).c_str(), fi->flags | O_CLOEXEC);
  if (fd < 0) return -errno;
  fi->fh = static_cast<uint64_t>(fd);
  return 0;
}

int do_create(const char* path, mode_t mode, fuse_file_info* fi) {
  const int fd = ::open(real(path).c_str(), fi->flags | O_CREAT | O_CLOEXEC, mode);
  if (fd < 0) return -errno;
  fi->fh = static_cast<uint64_t>(fd);
  return 0;
}

int do_read(const char*, char* buf, size_t size, off_t off, fuse_file_info* fi) {
  return err(static_cast<int>(::pread(static_cast<int>(fi->fh), buf, size, off)));
}

int do_write(const char*, const char* buf, size_t size, off_t off, fuse_file_info* fi) {
  return err(static_cast<int>(::pwrite(static_cast<int>(fi->fh), buf, size, off)));
}

int do_release(const char*, fuse_file_info* fi) { return err(::close(static_cast<int>(fi->fh))); }

int do_truncate(const char* path, off_t size, fuse_file_info* fi) {
  return err(fi != nullptr ? ::ftruncate(static_cast<int>(fi->fh), size) : ::truncate(real(path).c_str(), size));
}

int do_utimens(const char* path, const struct timespec tv[2], fuse_file_info*) {
  return err(::utimensat(AT_FDCWD, real(path).c_str(), tv, AT_SYMLINK_NOFOLLOW));
}

int do_mkdir(const char* path, mode_t mode) { return err(::mkdir(real(path).c_str(), mode)); }
int do_unlink(const char* path) { return err(::unlink(real(path).c_str())); }
int do_rmdir(const char* path) { return err(::rmdir(real(path).c_str())); }
int do_symlink(const char* target, const char* path) { return err(::symlink(target, real(path).c_str())); }
int do_rename(const char* from, const char* to, unsigned int flags) {
  return err(::renameat2(AT_FDCWD, real(from).c_str(), AT_FDCWD, real(to).c_str(), flags));
}
int do_chmod(const char* path, mode_t mode, fuse_file_info*) { return err(::chmod(real(path).c_str(), mode)); }
int do_statfs(const char* path, struct statvfs* st) { return err(::statvfs(real(path).c_str(), st)); }

}  // namespace

int main(int argc, char** argv) {
  if (argc < 3) {
    std::fprintf(stderr, "usage: %s ROOT MOUNTPOINT [-o opts]\n", argv[0]);
    return 1;
  }
  char resolved[PATH_MAX];
  if (::realpath(argv[1], resolved) == nullptr) {
    std::perror(argv[1]);
    return 1;
  }
  g_root = resolved;
  if (g_root == "/") g_root.clear();

  fuse_operations ops{};
  ops.init = do_init;
  ops.getattr = do_getattr;
  ops.readlink = do_readlink;
  ops.readdir = do_readdir;
  ops.open = do_open;
  ops.create = do_create;
  ops.read = do_read;
  ops.write = do_write;
  ops.release = do_release;
  ops.truncate = do_truncate;
  ops.utimens = do_utimens;
  ops.mkdir = do_mkdir;
  ops.unlink = do_unlink;
  ops.rmdir = do_rmdir;
  ops.symlink = do_symlink;
  ops.rename = do_rename;
  ops.chmod = do_chmod;
  ops.statfs = do_statfs;

  std::vector<char*> args{argv[0], const_cast<char*>("-f")};
  for (int i = 2; i < argc; ++i) args.push_back(argv[i]);
  return fuse_main(static_cast<int>(args.size()), args.data(), &ops, nullptr);
}
