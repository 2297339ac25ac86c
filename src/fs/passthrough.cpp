#include "fs/passthrough.hpp"

#include <linux/fuse.h>
#include <linux/magic.h>
#include <sys/capability.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstddef>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>
#include <string_view>

#include <spdlog/spdlog.h>

#include "fs/filesystem.hpp"
#include "daemon/identity.hpp"
#include "vsymfs/mountinfo.hpp"

namespace vsymfs::fs {

namespace {

// Protocol 7.40 (Linux 6.9) pieces that Debian 12's <linux/fuse.h> (7.37)
// lacks. Layouts are the kernel's ABI: the sizes are checked below.
constexpr std::uint32_t kPassthroughFlags2 = 1u << (37 - 32);  // FUSE_PASSTHROUGH, in flags2
constexpr std::uint32_t kFopenPassthrough = 1u << 7;           // FOPEN_PASSTHROUGH
// What fs/fuse/iomode.c allows next to FOPEN_PASSTHROUGH, less
// FOPEN_DIRECT_IO (it would send reads and writes to us again).
constexpr std::uint32_t kFopenPassthroughCompatible = FOPEN_NOFLUSH;

struct InitOut740 {  // struct fuse_init_out
  std::uint32_t major, minor, max_readahead, flags;
  std::uint16_t max_background, congestion_threshold;
  std::uint32_t max_write, time_gran;
  std::uint16_t max_pages, map_alignment;
  std::uint32_t flags2;
  std::uint32_t max_stack_depth;  // was unused[0]
  std::uint32_t unused[6];
};
static_assert(sizeof(InitOut740) == sizeof(fuse_init_out));
static_assert(offsetof(InitOut740, flags2) == offsetof(fuse_init_out, flags2));
static_assert(offsetof(InitOut740, max_stack_depth) == 36);

struct OpenOut740 {  // struct fuse_open_out
  std::uint64_t fh;
  std::uint32_t open_flags;
  std::int32_t backing_id;  // was padding
};
static_assert(sizeof(OpenOut740) == sizeof(fuse_open_out));

struct BackingMap {  // struct fuse_backing_map
  std::int32_t fd;
  std::uint32_t flags;
  std::uint64_t padding;
};
static_assert(sizeof(BackingMap) == 16);

constexpr unsigned kDevIocMagic = 229;  // FUSE_DEV_IOC_MAGIC
constexpr unsigned long kBackingOpen = _IOW(kDevIocMagic, 1, BackingMap);
constexpr unsigned long kBackingClose = _IOW(kDevIocMagic, 2, std::uint32_t);


// The backing id the calling thread's next OPEN/CREATE reply must carry.
thread_local int tl_reply_backing_id = 0;

Passthrough* from_userdata(void* userdata) { return static_cast<Filesystem*>(userdata)->passthrough(); }

// Below this size a read-only open stays plain FUSE: measured here,
// registering and closing a backing file costs more per open+read+close of
// a 4 KiB file (44k/s) than one READ whose pages the kernel then keeps
// (64k/s). Larger files and every open for writing gain (sequential write
// 0.9 GB/s -> 5 GB/s).
constexpr off_t kSmallFile = 256 * 1024;

// Whether an inode nobody has open may start passthrough for this open;
// fills `st` and `fs_type` of the file when it may. A set-user-ID or
// set-group-ID file keeps plain FUSE writes: they run as the writer, so the
// kernel clears (or, for root, keeps) the bits exactly as it would
// natively. Passthrough writes run with the backing identity. Set-group-ID
// without group execute too: since Linux 6.2 a write by someone outside the
// file's group clears it (tests/parity: setid/*-2767/write).
bool may_start_passthrough(const Passthrough::OpenedFile& f, struct stat& st, long& fs_type) {
  // A read-only open of a file last seen small stays plain without asking
  // again: a hint only, for a file that grew since then reads correctly
  // through FUSE too.
  const bool read_only = (f.flags & O_ACCMODE) == O_RDONLY;
  if (!f.st && read_only && f.size_seen >= 0 && f.size_seen < kSmallFile) return false;
  if (f.st) st = *f.st;
  else if (::fstat(f.fd, &st) != 0) return false;
  if (!S_ISREG(st.st_mode)) return false;
  if (st.st_mode & (S_ISUID | S_ISGID)) return false;
  if (read_only && st.st_size < kSmallFile) return false;
  fs_type = f.fs_type;
  if (fs_type == 0) {
    struct statfs sf {};
    if (::fstatfs(f.fd, &sf) != 0) return false;
    fs_type = static_cast<long>(sf.f_type);
  }
  return Passthrough::may_use_backing_files(fs_type);
}

// The reserve ext4 or f2fs keeps on the device `dev`, from the mount's
// super options in /proc/self/mountinfo (both show resuid= and resgid=
// whenever they are not the default 0). Unknown when no mount of it is
// listed.
daemon::ReservedFor read_reserve(dev_t dev) {
  daemon::ReservedFor r;
  std::ifstream in("/proc/self/mountinfo");
  std::stringstream buf;
  buf << in.rdbuf();
  const std::string text = buf.str();
  const std::string want = std::to_string(major(dev)) + ":" + std::to_string(minor(dev));
  std::string_view rest = text;
  while (!rest.empty()) {
    MountinfoLine line;
    if (!next_mountinfo_line(rest, line) || line.devno != want) continue;
    r.known = true;
    r.any = true;
    std::string_view opts = line.super_options;
    while (!opts.empty()) {
      const std::size_t comma = opts.find(',');
      const std::string opt(opts.substr(0, comma));
      opts = comma == std::string_view::npos ? std::string_view{} : opts.substr(comma + 1);
      if (opt.rfind("resuid=", 0) == 0) r.uid = static_cast<uid_t>(std::strtoul(opt.c_str() + 7, nullptr, 10));
      if (opt.rfind("resgid=", 0) == 0) r.gid = static_cast<gid_t>(std::strtoul(opt.c_str() + 7, nullptr, 10));
    }
    return r;
  }
  return r;
}

}  // namespace

Result<void> Passthrough::check_capability() {
  cap_t caps = cap_get_proc();
  if (!caps) return make_error(errno, std::string("cap_get_proc: ") + std::strerror(errno));
  cap_flag_value_t admin = CAP_CLEAR;
  cap_get_flag(caps, CAP_SYS_ADMIN, CAP_EFFECTIVE, &admin);
  cap_free(caps);
  if (admin != CAP_SET)
    return make_error(EPERM, "the daemon lacks CAP_SYS_ADMIN, which the kernel requires to register backing files");
  return {};
}

bool Passthrough::may_use_backing_files(long fs_type) noexcept {
  switch (static_cast<unsigned long>(fs_type)) {
    case EXT4_SUPER_MAGIC:  // also ext2 and ext3
    case XFS_SUPER_MAGIC:
    case BTRFS_SUPER_MAGIC:
    case F2FS_SUPER_MAGIC:
    case TMPFS_MAGIC:
    case OVERLAYFS_SUPER_MAGIC:
      return true;
    default:
      return false;
  }
}

Passthrough::Passthrough(const std::string& source) {
  // The fuse superblock gets s_stack_depth = max_stack_depth, and a backing
  // file must come from a shallower one: SOURCE on overlayfs needs 2 (which
  // keeps vsymfs itself from being stacked on). The kernel allows 1 or 2.
  struct statfs sfs {};
  if (::statfs(source.c_str(), &sfs) == 0 && sfs.f_type == OVERLAYFS_SUPER_MAGIC) max_stack_depth_ = 2;
}

Result<void> Passthrough::install(fuse_session* se) {
  attach(se);
  fuse_custom_io io{};
  io.read = read_hook;
  io.writev = writev_hook;
  // No splice hooks: libfuse then never splices, so every request and reply
  // passes through the two hooks above.
  if (int r = fuse_session_custom_io(se, &io, dev_fd_); r != 0)
    return make_error(-r, std::string("fuse_session_custom_io: ") + std::strerror(-r));
  return {};
}

ssize_t Passthrough::read_hook(int fd, void* buf, size_t len, void* userdata) {
  ssize_t n = ::read(fd, buf, len);
  if (n > 0) from_userdata(userdata)->on_request(buf, static_cast<size_t>(n));
  return n;
}

ssize_t Passthrough::writev_hook(int fd, struct iovec* iov, int count, void* userdata) {
  from_userdata(userdata)->on_reply(iov, count);
  return ::writev(fd, iov, count);
}

void Passthrough::on_request(const void* buf, size_t len) {
  if (len < sizeof(fuse_in_header)) return;
  fuse_in_header in;
  std::memcpy(&in, buf, sizeof in);
  switch (in.opcode) {
    case FUSE_READ:
      reads_seen_.fetch_add(1, std::memory_order_relaxed);
      break;
    case FUSE_WRITE:
      writes_seen_.fetch_add(1, std::memory_order_relaxed);
      break;
    case FUSE_INIT: {
      fuse_init_in init{};
      std::memcpy(&init, static_cast<const char*>(buf) + sizeof in, std::min(sizeof init, len - sizeof in));
      const bool offers = (init.flags & FUSE_INIT_EXT) && (init.flags2 & kPassthroughFlags2);
      kernel_offers_.store(offers);
      init_unique_.store(in.unique);
      init_seen_.store(true, std::memory_order_release);
      break;
    }
    default:
      break;
  }
}

void Passthrough::on_reply(struct iovec* iov, int count) {
  if (count < 2 || iov[0].iov_len < sizeof(fuse_out_header)) return;
  fuse_out_header out;
  std::memcpy(&out, iov[0].iov_base, sizeof out);
  if (tl_reply_backing_id != 0) {
    // The last bytes of an OPEN or CREATE reply are its fuse_open_out.
    iovec& arg = iov[count - 1];
    if (out.error != 0 || arg.iov_len < sizeof(OpenOut740)) return;
    char* p = static_cast<char*>(arg.iov_base) + arg.iov_len - sizeof(OpenOut740);
    OpenOut740 open_out;
    std::memcpy(&open_out, p, sizeof open_out);
    // The kernel refuses (EIO) passthrough with any open flag but a few:
    // FOPEN_KEEP_CACHE, which ops_file sets for cached opens, is not one.
    open_out.open_flags = (open_out.open_flags & kFopenPassthroughCompatible) | kFopenPassthrough;
    open_out.backing_id = tl_reply_backing_id;
    std::memcpy(p, &open_out, sizeof open_out);
    tl_reply_backing_id = 0;
    return;
  }
  if (!init_seen_.load(std::memory_order_acquire) || out.unique != init_unique_.load()) return;
  init_seen_.store(false);
  if (!kernel_offers_.load()) {
    spdlog::warn("passthrough: the kernel does not offer it (needs Linux 6.9+ with CONFIG_FUSE_PASSTHROUGH); "
                 "file I/O goes through the daemon");
    return;
  }
  if (out.error != 0 || iov[1].iov_len < offsetof(InitOut740, max_stack_depth) + sizeof(std::uint32_t)) return;
  InitOut740 init{};
  std::memcpy(&init, iov[1].iov_base, std::min(sizeof init, iov[1].iov_len));
  if (init.flags & FUSE_WRITEBACK_CACHE) {
    spdlog::warn("passthrough: off, the writeback cache is on; file I/O goes through the daemon");
    return;
  }
  init.flags |= FUSE_INIT_EXT;
  init.flags2 |= kPassthroughFlags2;
  init.max_stack_depth = max_stack_depth_;
  std::memcpy(iov[1].iov_base, &init, std::min(sizeof init, iov[1].iov_len));
  enabled_.store(true, std::memory_order_release);
  spdlog::info("passthrough: on (file reads and writes go from the kernel to SOURCE directly)");
}

daemon::ReservedFor Passthrough::reserve_of(dev_t dev, long fs_type) {
  // Only these keep blocks for a uid or gid; elsewhere only capabilities
  // (CAP_SYS_RESOURCE) reach a reserve or pass a quota.
  if (fs_type != EXT4_SUPER_MAGIC && fs_type != F2FS_SUPER_MAGIC) return daemon::ReservedFor{.known = true};
  {
    std::lock_guard lock(reserves_mu_);
    if (auto it = reserves_.find(dev); it != reserves_.end()) return it->second;
  }
  const daemon::ReservedFor r = read_reserve(dev);
  std::lock_guard lock(reserves_mu_);
  if (reserves_.size() >= 256) reserves_.clear();
  reserves_[dev] = r;
  return r;
}

int Passthrough::open_backing(int fd, const daemon::ReservedFor& reserve) {
  // The kernel keeps the registering thread's credentials for the file's
  // I/O, whoever opens it (see the top of the header).
  daemon::ScopedBackingIdentity as_backing(reserve);
  if (!as_backing.ok()) {
    if (!logged_identity_failure_.exchange(true))
      spdlog::error("passthrough: cannot take the backing-file identity; such opens use plain FUSE I/O (logged once)");
    return 0;  // plain FUSE I/O is always correct
  }
  BackingMap map{fd, 0, 0};
  const int id = ::ioctl(dev_fd_, kBackingOpen, &map);
  const int err = errno;
  if (id > 0) {
    backing_opened_.fetch_add(1, std::memory_order_relaxed);
    return id;
  }
  if (err == EPERM || err == ENOTTY || err == EINVAL || err == ENOSYS) {
    // The kernel refuses backing files altogether: stop asking.
    if (registering_.exchange(false))
      spdlog::warn("passthrough: off, the kernel refused a backing file ({}); file I/O goes through the daemon",
                   std::strerror(err));
  } else if (!logged_file_refusal_.exchange(true)) {
    // ELOOP (a stacked filesystem inside SOURCE), ENOMEM, ...: this file only.
    spdlog::warn("passthrough: the kernel refused a backing file ({}); such files use plain FUSE I/O "
                 "(logged once)",
                 std::strerror(err));
  }
  return 0;
}

void Passthrough::close_backing(int backing_id) {
  // The ioctl needs CAP_SYS_ADMIN, which a worker last acting for a user
  // (releases come with no caller) does not hold.
  daemon::ScopedAdminCapability as_admin;
  std::uint32_t id = static_cast<std::uint32_t>(backing_id);
  if (::ioctl(dev_fd_, kBackingClose, &id) != 0)
    spdlog::error("passthrough: cannot close backing id {}: {}", backing_id, std::strerror(errno));
}

int Passthrough::acquire(std::uint64_t nodeid, const OpenedFile& file) {
  if (!enabled()) return 0;
  Shard& s = shard_of(nodeid);
  std::lock_guard lock(s.mu);
  InodeIo& io = s.inodes[nodeid];
  // Only the first open chooses: the kernel fails any open whose mode
  // differs from the opens the inode already has.
  if (io.opens == 0) {
    io.backing_id = 0;
    struct stat st {};
    long fs_type = 0;
    if (registering_.load(std::memory_order_relaxed) && may_start_passthrough(file, st, fs_type))
      io.backing_id = open_backing(file.fd, reserve_of(st.st_dev, fs_type));
  }
  ++io.opens;
  if (io.backing_id != 0 && !io.writable && (file.flags & O_ACCMODE) != O_RDONLY) {
    io.writable = true;
    writable_inodes_.fetch_add(1, std::memory_order_relaxed);
  }
  return io.backing_id;
}

bool Passthrough::written_directly(std::uint64_t nodeid) noexcept {
  if (writable_inodes_.load(std::memory_order_relaxed) == 0) return false;
  Shard& s = shard_of(nodeid);
  std::lock_guard lock(s.mu);
  auto it = s.inodes.find(nodeid);
  return it != s.inodes.end() && it->second.writable;
}

void Passthrough::release(std::uint64_t nodeid) {
  if (!enabled()) return;
  Shard& s = shard_of(nodeid);
  std::lock_guard lock(s.mu);
  auto it = s.inodes.find(nodeid);
  if (it == s.inodes.end()) return;
  if (--it->second.opens != 0) return;
  // The kernel keeps its own reference while a file still uses the backing
  // file; closing the id only stops new opens from naming it.
  if (it->second.backing_id != 0) close_backing(it->second.backing_id);
  if (it->second.writable) writable_inodes_.fetch_sub(1, std::memory_order_relaxed);
  s.inodes.erase(it);
}

Passthrough::Shard& Passthrough::shard_of(std::uint64_t nodeid) noexcept {
  // Node ids are addresses: mix the bits so neighbours spread over shards.
  return shards_[(nodeid * 0x9E3779B97F4A7C15ull) >> 60 & (shards_.size() - 1)];
}

std::string Passthrough::summary() const {
  std::string s = status();
  s.replace(s.find(';'), 1, ":");
  return "passthrough " + s;
}

std::string Passthrough::status() const {
  return std::string(enabled() && registering_.load() ? "on" : "off") + "; " +
         std::to_string(backing_files_opened()) + " backing files opened; " + std::to_string(reads_seen()) +
         " reads and " + std::to_string(writes_seen()) + " writes reached the daemon";
}

Passthrough::ReplyMark::ReplyMark(int backing_id) noexcept { tl_reply_backing_id = backing_id; }
Passthrough::ReplyMark::~ReplyMark() { tl_reply_backing_id = 0; }

}  // namespace vsymfs::fs
