#include "fs/uring_transport.hpp"

#include <fcntl.h>
#include <liburing.h>
#include <linux/fuse.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <charconv>
#include <cstddef>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <thread>

#include <spdlog/spdlog.h>

#include "fs/direct_replies.hpp"
#include "fs/linger.hpp"
#include "fs/passthrough.hpp"

namespace vsymfs::fs {

namespace {

// Protocol 7.42 (Linux 6.14) pieces that Debian 12's <linux/fuse.h> (7.38)
// lacks. Layouts are the kernel's ABI (include/uapi/linux/fuse.h).
constexpr std::uint32_t kOverIoUringFlags2 = 1u << (41 - 32);  // FUSE_OVER_IO_URING, in flags2
constexpr std::uint32_t kCmdRegister = 1;                      // FUSE_IO_URING_CMD_REGISTER
constexpr std::uint32_t kCmdCommitAndFetch = 2;                // FUSE_IO_URING_CMD_COMMIT_AND_FETCH

struct UringEntInOut {  // struct fuse_uring_ent_in_out
  std::uint64_t flags;
  std::uint64_t commit_id;  // the request's unique id, to name it in the commit
  std::uint32_t payload_sz;
  std::uint32_t padding;
  std::uint64_t reserved;
};
static_assert(sizeof(UringEntInOut) == 32);

struct UringReqHeader {  // struct fuse_uring_req_header
  char in_out[128];      // fuse_in_header of a request, fuse_out_header of its reply
  char op_in[128];       // the request's first argument (its fixed-size header), if any
  UringEntInOut ring_ent_in_out;
};
static_assert(sizeof(UringReqHeader) == 288);
static_assert(offsetof(UringReqHeader, ring_ent_in_out) == 256);

struct UringCmdReq {  // struct fuse_uring_cmd_req, in the SQE's 80-byte command area
  std::uint64_t flags;
  std::uint64_t commit_id;
  std::uint16_t qid;
  std::uint8_t padding[6];
};
static_assert(sizeof(UringCmdReq) == 24);

// io_uring pieces of Linux 6.15 that liburing 2.3 (Debian 12) lacks
// (include/uapi/linux/io_uring.h). A task that waits in io_uring_enter with
// requests of its own in flight is counted as waiting for I/O
// (io_cqring_wait sets in_iowait), and a ring thread always has one: its
// entry's command. Unasked, every idle ring thread would show as a task in
// I/O wait (procs_blocked in /proc/stat, "wa" in top and vmstat, "full"
// I/O pressure in /proc/pressure/io): an idle machine that mounts vsymfs
// on io_uring would look 100% stalled on I/O to its administrators and
// their monitoring. IORING_ENTER_NO_IOWAIT waits without that, where the
// kernel has it (IORING_FEAT_NO_IOWAIT).
constexpr unsigned kFeatNoIowait = 1u << 17;  // IORING_FEAT_NO_IOWAIT
constexpr unsigned kEnterNoIowait = 1u << 7;  // IORING_ENTER_NO_IOWAIT

constexpr const char* kEnableUring = "/sys/module/fuse/parameters/enable_uring";
constexpr std::uint64_t kStopTag = ~std::uint64_t{0};  // user_data of the poll on the stop eventfd
constexpr std::size_t kMinPayload = 8192;              // FUSE_MIN_READ_BUFFER
constexpr unsigned kDefaultMaxPages = 32;              // FUSE_DEFAULT_MAX_PAGES_PER_REQ
// Room in front of the payload for the request's headers: the kernel puts
// the fuse_in_header and the op's own header apart from the rest, and
// libfuse wants them all in one piece, so both are copied in front of it.
constexpr std::size_t kHeadRoom = 4096;
static_assert(kHeadRoom >= sizeof(fuse_in_header) + sizeof(UringReqHeader::op_in));
// Ring threads per CPU queue. Each owns one entry: a second one serves the
// CPU's callers while the first is held up by a slow request (a stuck
// SOURCE, a late /proc read), and otherwise sleeps, because the kernel
// hands a request to the entry that was freed last.
constexpr unsigned kThreadsPerQueue = 2;

UringTransport* g_transport = nullptr;  // one mount per process; the hooks find it here

std::string errno_text(int err) { return std::strerror(err); }

// "Y", "N", or "" when the kernel has no such parameter.
std::string read_enable_uring() {
  std::ifstream in(kEnableUring);
  std::string v;
  in >> v;
  return v;
}

// The CPUs of a sysfs CPU list ("0-3,8"), or none when it cannot be read.
std::vector<unsigned> read_cpu_list(const char* path) {
  std::ifstream in(path);
  std::string list;
  std::vector<unsigned> cpus;
  if (!std::getline(in, list)) return cpus;
  std::size_t pos = 0;
  while (pos < list.size()) {
    const std::size_t comma = std::min(list.find(',', pos), list.size());
    const std::string range = list.substr(pos, comma - pos);
    pos = comma + 1;
    unsigned a = 0, b = 0;
    const int n = std::sscanf(range.c_str(), "%u-%u", &a, &b);
    if (n == 1) b = a;
    if (n >= 1 && b >= a && b - a < 65536)
      for (unsigned c = a; c <= b; ++c) cpus.push_back(c);
  }
  return cpus;
}

// io_uring_submit_and_wait(&ring, 1), not counted as I/O wait when
// `no_iowait` (kFeatNoIowait): one io_uring_enter that submits what is
// queued and waits for a completion. liburing 2.3 takes no flags for that
// call, so the queued SQEs are handed to the kernel here as liburing does
// (the SQ array is the identity; the tail published, the count submitted).
int submit_and_wait(io_uring& ring, bool no_iowait) {
  if (!no_iowait) return io_uring_submit_and_wait(&ring, 1);
  io_uring_sq& sq = ring.sq;
  const unsigned tail = sq.sqe_tail;
  if (sq.sqe_head != tail) {
    sq.sqe_head = tail;
    io_uring_smp_store_release(sq.ktail, tail);
  }
  const unsigned pending = tail - IO_URING_READ_ONCE(*sq.khead);
  return io_uring_enter(static_cast<unsigned>(ring.ring_fd), pending, 1, IORING_ENTER_GETEVENTS | kEnterNoIowait,
                        nullptr);
}

// Submits a commit and waits for the next request: first on the CPU,
// yielding, for up to the linger span, then asleep (Linger, linger.hpp).
int submit_and_linger(io_uring& ring, bool no_iowait, Linger& linger) {
  const int rc = io_uring_submit(&ring);
  if (rc < 0) return rc;
  io_uring_cqe* cqe = nullptr;
  if (io_uring_peek_cqe(&ring, &cqe) == 0 || linger.spin([&] { return io_uring_peek_cqe(&ring, &cqe) == 0; }))
    return rc;
  return submit_and_wait(ring, no_iowait);
}

// `no_iowait`: whether the kernel can wait without counting it as I/O wait.
int setup_ring(io_uring& ring, bool& no_iowait) {
  io_uring_params p{};
  p.flags = IORING_SETUP_SQE128;  // the command area holds fuse_uring_cmd_req
  // Two SQEs in flight at most: the entry's command and the stop poll.
  const int rc = io_uring_queue_init_params(4, &ring, &p);
  no_iowait = rc == 0 && (p.features & kFeatNoIowait) != 0;
  return rc;
}

// A free SQE. There is always one (each ring has room for its entry's
// command and the stop poll); should there not be, submitting makes room.
io_uring_sqe* next_sqe(io_uring& ring) {
  io_uring_sqe* sqe = io_uring_get_sqe(&ring);
  while (sqe == nullptr) {
    io_uring_submit(&ring);
    sqe = io_uring_get_sqe(&ring);
  }
  return sqe;
}

void prep_cmd(io_uring& ring, std::uint32_t op, unsigned qid, std::uint64_t commit_id, const iovec* iov, void* data) {
  io_uring_sqe* sqe = next_sqe(ring);
  io_uring_prep_rw(IORING_OP_URING_CMD, sqe, 0, nullptr, 0, 0);
  sqe->flags |= IOSQE_FIXED_FILE;  // index 0: /dev/fuse, registered with the ring
  sqe->cmd_op = op;
  if (iov != nullptr) {  // REGISTER names the entry's two buffers
    sqe->addr = reinterpret_cast<std::uint64_t>(iov);
    sqe->len = 2;
  }
  UringCmdReq req{};
  req.commit_id = commit_id;
  req.qid = static_cast<std::uint16_t>(qid);
  // The command area runs from sqe->cmd into the second half of the
  // 128-byte SQE, past what struct io_uring_sqe declares.
  static_assert(offsetof(io_uring_sqe, cmd) == 48 && sizeof req <= 80);
  void* cmd = reinterpret_cast<void*>(reinterpret_cast<std::uintptr_t>(sqe) + offsetof(io_uring_sqe, cmd));
  std::memcpy(cmd, &req, sizeof req);
  io_uring_sqe_set_data(sqe, data);
}

std::size_t page_size() {
  const long p = ::sysconf(_SC_PAGESIZE);
  return p > 0 ? static_cast<std::size_t>(p) : 4096;
}

}  // namespace

// One ring entry: its thread, its io_uring and its buffers.
struct UringTransport::Ring {
  unsigned qid = 0;
  io_uring ring{};
  bool ring_ok = false;
  bool no_iowait = false;  // waits are not counted as I/O wait (kFeatNoIowait)
  UringReqHeader* hdr = nullptr;  // on its own page
  char* area = nullptr;           // kHeadRoom, then the payload
  std::size_t area_len = 0;
  std::size_t payload_sz = 0;
  iovec iov[2]{};
  int error = 0;  // why setup or registration failed (an errno)
  std::string error_what;
  std::uint32_t last_cmd = kCmdRegister;
  std::uint64_t commit_id = 0;
  // The request being served, for a reply from another thread (0: none).
  std::atomic<std::uint64_t> unique{0};
  std::atomic<bool> replied{false};
  std::atomic<std::uint64_t> served{0};
  // Why the thread ended before stop_threads() asked it to (an errno from
  // the kernel: ENOTCONN, ECONNABORTED when the connection went away), for
  // the summary stop() logs; 0 while it serves or when we stopped it.
  std::atomic<int> ended_by{0};
  std::thread thread;

  char* payload() const noexcept { return area + kHeadRoom; }
  ~Ring() {
    if (ring_ok) io_uring_queue_exit(&ring);
    if (area != nullptr) ::munmap(area, area_len);
    std::free(hdr);
  }
};

thread_local UringTransport::Ring* UringTransport::tl_ring_ = nullptr;

Result<std::unique_ptr<UringTransport>> UringTransport::create(UringMode mode, bool single_thread,
                                                               unsigned linger_us) {
  std::string why_not;
  bool kernel_says_no = false;
  if (mode == UringMode::off) {
    why_not = "-o no_uring";
  } else if (single_thread) {
    why_not = "-s";
  } else if (std::string v = read_enable_uring(); v.empty()) {
    why_not = "this kernel has no FUSE over io_uring (needs Linux 6.14+ with CONFIG_FUSE_IO_URING)";
  } else if (v != "Y") {
    why_not = std::string("the kernel does not offer io_uring: ") + kEnableUring + " is " + v;
    kernel_says_no = true;
  } else {
    io_uring probe{};
    bool no_iowait = false;
    if (int r = setup_ring(probe, no_iowait); r < 0)
      why_not = "io_uring is refused to this process (" + errno_text(-r) + "; see sysctl kernel.io_uring_disabled)";
    else
      io_uring_queue_exit(&probe);
  }
  if (!why_not.empty() && mode == UringMode::on) {
    if (kernel_says_no) why_not += " (root turns it on: echo Y > " + std::string(kEnableUring) + ")";
    return make_error(EOPNOTSUPP, "-o uring: " + why_not);
  }
  return std::unique_ptr<UringTransport>(new UringTransport(mode, why_not, linger_us));
}

UringTransport::UringTransport(UringMode mode, std::string why_not, unsigned linger_us)
    : mode_(mode), linger_us_(linger_us), wanted_(why_not.empty()), why_not_(std::move(why_not)) {}

UringTransport::~UringTransport() {
  stop();
  if (g_transport == this) g_transport = nullptr;
  rings_.clear();
  stop_fd_.reset();
}

Result<void> UringTransport::install(fuse_session* se, Passthrough* pt, Filesystem* fs) {
  if (!wanted_) {
    if (pt != nullptr) return pt->install(se);
    return {};
  }
  se_ = se;
  pt_ = pt;
  fs_ = fs;
  dev_fd_ = fuse_session_fd(se);
  if (pt != nullptr) pt->attach(se);
  g_transport = this;
  {
    std::lock_guard lock(mu_);
    why_not_ = "io_uring asked for, INIT not yet answered";
  }
  fuse_custom_io io{};
  io.read = read_hook;
  io.writev = writev_hook;
  // No splice hooks: every request and reply passes through the two above.
  if (int r = fuse_session_custom_io(se, &io, dev_fd_); r != 0)
    return make_error(-r, std::string("fuse_session_custom_io: ") + std::strerror(-r));
  return {};
}

ssize_t UringTransport::read_hook(int fd, void* buf, size_t len, void* /*userdata*/) {
  ssize_t n = ::read(fd, buf, len);
  UringTransport* t = g_transport;
  if (n <= 0 || t == nullptr) return n;
  if (t->pt_ != nullptr) t->pt_->on_request(buf, static_cast<size_t>(n));
  if (static_cast<size_t>(n) >= sizeof(fuse_in_header)) {
    fuse_in_header in;
    std::memcpy(&in, buf, sizeof in);
    if (in.opcode == FUSE_INIT) {
      fuse_init_in init{};
      std::memcpy(&init, static_cast<const char*>(buf) + sizeof in,
                  std::min(sizeof init, static_cast<size_t>(n) - sizeof in));
      t->kernel_offers_.store((init.flags & FUSE_INIT_EXT) && (init.flags2 & kOverIoUringFlags2));
      t->init_unique_.store(in.unique);
      t->init_seen_.store(true, std::memory_order_release);
    }
  }
  return n;
}

ssize_t UringTransport::writev_hook(int fd, struct iovec* iov, int count, void* /*userdata*/) {
  UringTransport* t = g_transport;
  if (t == nullptr || count < 1 || iov[0].iov_len < sizeof(fuse_out_header)) return ::writev(fd, iov, count);
  if (t->pt_ != nullptr) t->pt_->on_reply(iov, count);
  return t->reply(fd, iov, count);
}

ssize_t UringTransport::reply(int fd, struct iovec* iov, int count) {
  fuse_out_header out;
  std::memcpy(&out, iov[0].iov_base, sizeof out);
  // The request this thread is serving from the ring: the common case.
  if (Ring* r = tl_ring_;
      r != nullptr && out.unique == r->unique.load(std::memory_order_relaxed) && !r->replied.load(std::memory_order_relaxed)) {
    const ssize_t n = fill_entry(*r, iov, count);
    r->replied.store(true, std::memory_order_relaxed);
    return n;
  }
  // A ring request answered by another thread than the one serving it.
  // Unique ids are unique on the connection, /dev/fuse and ring alike.
  if (out.unique != 0 && active_.load(std::memory_order_acquire)) {
    for (auto& ring : rings_) {
      Ring& r = *ring;
      if (r.unique.load(std::memory_order_acquire) != out.unique || r.replied.load(std::memory_order_acquire))
        continue;
      const ssize_t n = fill_entry(r, iov, count);
      r.replied.store(true, std::memory_order_release);
      r.replied.notify_one();
      return n;
    }
  }
  if (!init_seen_.load(std::memory_order_acquire) || out.unique != init_unique_.load())
    return ::writev(fd, iov, count);

  // The INIT reply: ask for io_uring when the kernel offers it and every
  // ring could be set up; the rings register once the kernel has the reply.
  init_seen_.store(false);
  bool asked = false;
  if (!kernel_offers_.load()) {
    refuse("the kernel did not offer io_uring at mount time (enable_uring was not Y)");
  } else if (out.error != 0 || count < 2 || iov[1].iov_len < offsetof(fuse_init_out, flags2) + sizeof(std::uint32_t)) {
    refuse("INIT failed");
  } else {
    try {
      asked = start_rings(iov[1]);
    } catch (const std::exception& e) {  // std::thread: no exception may reach libfuse
      refuse(std::string("cannot start the ring threads: ") + e.what());
      stop_threads();
    }
  }
  const ssize_t n = ::writev(fd, iov, count);
  if (asked) finish_start(n >= 0 ? 0 : errno);
  if (must_exit_) {
    // Through the signal handler libfuse installed: a clean unmount.
    spdlog::error("-o uring: io_uring could not be had ({}); stopping", why_not_);
    ::kill(::getpid(), SIGTERM);
  }
  return n;
}

ssize_t UringTransport::fill_entry(Ring& r, const iovec* iov, int count) {
  fuse_out_header out;
  std::memcpy(&out, iov[0].iov_base, sizeof out);
  std::size_t total = iov[0].iov_len, len = 0;
  bool fits = true;
  for (int i = 1; i < count; ++i) {
    total += iov[i].iov_len;
    if (!fits) continue;
    if (len + iov[i].iov_len > r.payload_sz) {
      fits = false;  // cannot happen within the limits INIT set; never overrun the entry
      continue;
    }
    // memmove: a reply may point into the request it answers.
    std::memmove(r.payload() + len, iov[i].iov_base, iov[i].iov_len);
    len += iov[i].iov_len;
  }
  if (!fits) {
    spdlog::error("io_uring: a reply of {} bytes does not fit a ring entry of {}", total, r.payload_sz);
    out.error = -EIO;
    len = 0;
  }
  out.len = static_cast<std::uint32_t>(sizeof out + len);
  std::memcpy(r.hdr->in_out, &out, sizeof out);
  r.hdr->ring_ent_in_out.payload_sz = static_cast<std::uint32_t>(len);
  return static_cast<ssize_t>(total);
}

void UringTransport::refuse(const std::string& why) {
  {
    std::lock_guard lock(mu_);
    why_not_ = "io_uring refused: " + why;
  }
  if (mode_ == UringMode::on)
    must_exit_ = true;
  else
    spdlog::warn("io_uring: off, {}; requests are read from /dev/fuse", why);
}

bool UringTransport::start_rings(iovec& init_reply) {
  fuse_init_out init{};
  const std::size_t init_len = std::min(sizeof init, init_reply.iov_len);
  std::memcpy(&init, init_reply.iov_base, init_len);
  // The kernel wants room for the largest request or reply INIT allows.
  const std::size_t page = page_size();
  const unsigned max_pages = (init.flags & FUSE_MAX_PAGES) ? std::max<unsigned>(init.max_pages, 1) : kDefaultMaxPages;
  payload_sz_ = std::max({kMinPayload, std::size_t{init.max_write}, std::size_t{max_pages} * page});

  stop_fd_.reset(::eventfd(0, EFD_CLOEXEC));
  if (!stop_fd_) {
    refuse("eventfd: " + errno_text(errno));
    return false;
  }
  // The kernel keeps a queue per possible CPU (num_possible_cpus()) and
  // uses a request's CPU number as its queue's index. A CPU that is not
  // online gets one thread: nobody runs there unless it comes online.
  const std::vector<unsigned> possible = read_cpu_list("/sys/devices/system/cpu/possible");
  const std::vector<unsigned> online = read_cpu_list("/sys/devices/system/cpu/online");
  if (!possible.empty()) {
    queues_ = static_cast<unsigned>(possible.size());
  } else {
    const long n = ::sysconf(_SC_NPROCESSORS_CONF);
    queues_ = n > 0 ? static_cast<unsigned>(n) : 1;
  }
  for (unsigned q = 0; q < queues_; ++q) {
    const bool is_online = online.empty() || std::find(online.begin(), online.end(), q) != online.end();
    for (unsigned t = 0; t < (is_online ? kThreadsPerQueue : 1); ++t) {
      auto r = std::make_unique<Ring>();
      r->qid = q;
      r->payload_sz = payload_sz_;
      rings_.push_back(std::move(r));
    }
  }
  for (auto& r : rings_) r->thread = std::thread([this, ring = r.get()] { serve(*ring); });

  std::string failure;
  {
    std::unique_lock lock(mu_);
    cv_.wait(lock, [this] { return prepared_ == rings_.size(); });
    for (auto& r : rings_)
      if (r->error != 0 && failure.empty()) failure = r->error_what + ": " + errno_text(r->error);
  }
  if (!failure.empty()) {
    refuse(failure);
    stop_threads();
    return false;
  }
  init.flags |= FUSE_INIT_EXT;
  init.flags2 |= kOverIoUringFlags2;
  std::memcpy(init_reply.iov_base, &init, init_len);
  return true;
}

void UringTransport::finish_start(int init_error) {
  if (init_error != 0) {
    refuse("the kernel did not take the INIT reply (" + errno_text(init_error) + ")");
    stop_threads();
    return;
  }
  std::string failure;
  bool every_queue = true;
  {
    std::unique_lock lock(mu_);
    phase_ = Phase::go;
    cv_.notify_all();
    cv_.wait(lock, [this] { return registered_ == rings_.size(); });
    // The kernel moves requests to the ring once each queue has an entry.
    std::vector<bool> has_entry(queues_, false);
    for (auto& r : rings_) {
      if (r->error == 0)
        has_entry[r->qid] = true;
      else if (failure.empty())
        failure = r->error_what + ": " + errno_text(r->error);
    }
    every_queue = std::find(has_entry.begin(), has_entry.end(), false) == has_entry.end();
  }
  if (!every_queue) {
    refuse(failure);
    stop_threads();
    return;
  }
  if (!failure.empty()) spdlog::warn("io_uring: some ring entries are missing ({})", failure);
  {
    std::lock_guard lock(mu_);
    why_not_.clear();
  }
  active_.store(true, std::memory_order_release);
  spdlog::info("io_uring: on, {} CPU queues, {} ring threads (requests are served on their caller's CPU)", queues_,
               rings_.size());
}

void UringTransport::report(std::size_t& counter) {
  {
    std::lock_guard lock(mu_);
    ++counter;
  }
  cv_.notify_all();
}

UringTransport::Phase UringTransport::wait_phase_change() {
  std::unique_lock lock(mu_);
  cv_.wait(lock, [this] { return phase_ != Phase::setup; });
  return phase_;
}

int UringTransport::prepare(Ring& r) {
  if (int e = setup_ring(r.ring, r.no_iowait); e < 0) {
    r.error_what = "io_uring_queue_init";
    return -e;
  }
  r.ring_ok = true;
  int fds[1] = {dev_fd_};
  if (int e = io_uring_register_files(&r.ring, fds, 1); e < 0) {
    r.error_what = "io_uring_register_files";
    return -e;
  }
  const std::size_t page = page_size();
  r.hdr = static_cast<UringReqHeader*>(std::aligned_alloc(page, page));
  if (r.hdr == nullptr) {
    r.error_what = "header buffer";
    return ENOMEM;
  }
  std::memset(r.hdr, 0, page);
  r.area_len = (kHeadRoom + r.payload_sz + page - 1) / page * page;
  void* area = ::mmap(nullptr, r.area_len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (area == MAP_FAILED) {
    r.error_what = "payload buffer";
    return errno;
  }
  r.area = static_cast<char*>(area);
  r.iov[0] = {r.hdr, sizeof(UringReqHeader)};
  r.iov[1] = {r.payload(), r.payload_sz};
  return 0;
}

int UringTransport::register_entry(Ring& r) {
  r.last_cmd = kCmdRegister;
  prep_cmd(r.ring, kCmdRegister, r.qid, 0, r.iov, &r);
  io_uring_sqe* poll = next_sqe(r.ring);
  io_uring_prep_poll_add(poll, stop_fd_.get(), POLLIN);
  io_uring_sqe_set_data64(poll, kStopTag);
  if (int n = io_uring_submit(&r.ring); n < 0) {
    r.error_what = "io_uring_submit";
    return -n;
  }
  // The kernel registers during the submit: a refusal is already posted.
  io_uring_cqe* cqe = nullptr;
  if (io_uring_peek_cqe(&r.ring, &cqe) == 0 && cqe->user_data != kStopTag && cqe->res < 0) {
    const int err = -cqe->res;
    io_uring_cqe_seen(&r.ring, cqe);
    r.error_what = "FUSE_IO_URING_CMD_REGISTER";
    return err;
  }
  return 0;
}

void UringTransport::serve(Ring& r) {
  // Signals are for the libfuse loop and the SIGHUP thread, never for these.
  sigset_t all;
  sigfillset(&all);
  pthread_sigmask(SIG_BLOCK, &all, nullptr);
  char name[16];
  std::snprintf(name, sizeof name, "vsymfs-ring%u", r.qid);
  pthread_setname_np(pthread_self(), name);
  // On the queue's CPU: the caller that wakes this thread runs there, and
  // sleeps there while the thread serves it. An offline CPU refuses the
  // mask; nobody's requests arrive on its queue then.
  cpu_set_t cpus;
  CPU_ZERO(&cpus);
  CPU_SET(r.qid, &cpus);
  pthread_setaffinity_np(pthread_self(), sizeof cpus, &cpus);

  r.error = prepare(r);
  report(prepared_);
  if (wait_phase_change() != Phase::go || r.error != 0) return;
  r.error = register_entry(r);
  report(registered_);
  if (r.error != 0) return;

  Linger linger(linger_us_);
  bool committed = false;
  for (;;) {
    // After a reply the commit goes in with the wait for the next request,
    // unless the thread lingers (Linger, linger.hpp).
    const int rc = committed && linger.wanted() ? submit_and_linger(r.ring, r.no_iowait, linger)
                                                 : submit_and_wait(r.ring, r.no_iowait);
    committed = false;
    if (rc < 0 && rc != -EINTR) {
      spdlog::error("io_uring: CPU queue {}: a ring thread ends: {}", r.qid, errno_text(-rc));
      r.ended_by.store(-rc);
      return;
    }
    bool stop = false, commit = false;
    io_uring_cqe* cqe = nullptr;
    while (io_uring_peek_cqe(&r.ring, &cqe) == 0) {
      const std::uint64_t tag = cqe->user_data;
      const int res = cqe->res;
      io_uring_cqe_seen(&r.ring, cqe);
      if (tag == kStopTag) {
        stop = true;
      } else if (res == 0) {
        serve_request(r);
        prep_cmd(r.ring, kCmdCommitAndFetch, r.qid, r.commit_id, nullptr, &r);
        r.last_cmd = kCmdCommitAndFetch;
        commit = true;
      } else if (res == -EINTR || res == -EAGAIN) {
        prep_cmd(r.ring, r.last_cmd, r.qid, r.commit_id,
                 r.last_cmd == kCmdRegister ? r.iov : nullptr, &r);
      } else {
        // ENOTCONN, ECONNABORTED: the connection is going away (an unmount
        // or an abort; the kernel ends every entry then, and the /dev/fuse
        // readers get ENODEV and end the loop). Anything else is logged now.
        if (res != -ENOTCONN && res != -ECONNABORTED)
          spdlog::error("io_uring: CPU queue {}: the kernel ended a ring entry: {}", r.qid, errno_text(-res));
        else
          spdlog::debug("io_uring: CPU queue {}: the kernel ended a ring entry: {}", r.qid, errno_text(-res));
        r.ended_by.store(-res);
        stop = true;
      }
    }
    if (stop) {
      if (commit) io_uring_submit(&r.ring);  // never leave a caller without its reply
      return;
    }
    committed = commit;
  }
}

void UringTransport::serve_request(Ring& r) {
  UringReqHeader& h = *r.hdr;
  fuse_in_header in;
  std::memcpy(&in, h.in_out, sizeof in);
  const UringEntInOut ent = h.ring_ent_in_out;
  r.commit_id = ent.commit_id;
  r.served.store(r.served.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
  // As a read of /dev/fuse delivers it: fuse_in_header, the op's header,
  // then the rest (names, data), which the kernel put in the payload.
  const std::size_t rest = ent.payload_sz;
  const std::size_t args = in.len >= sizeof in ? in.len - sizeof in : 0;
  if (in.len < sizeof in || rest > r.payload_sz || args < rest || args - rest > sizeof h.op_in) {
    spdlog::error("io_uring: a request of {} bytes with {} bytes of payload makes no sense; answered EIO", in.len,
                  rest);
    fuse_out_header out{sizeof(fuse_out_header), -EIO, in.unique};
    std::memcpy(h.in_out, &out, sizeof out);
    h.ring_ent_in_out.payload_sz = 0;
    return;
  }
  const std::size_t op_len = args - rest;
  char* start = r.payload() - op_len - sizeof in;
  std::memcpy(start + sizeof in, h.op_in, op_len);
  std::memcpy(start, &in, sizeof in);
  fuse_buf buf{};
  buf.mem = start;
  buf.size = in.len;

  r.replied.store(false, std::memory_order_relaxed);
  r.unique.store(in.unique, std::memory_order_release);
  tl_ring_ = &r;
  if (DirectReply direct; fs_ != nullptr && answer_directly(*fs_, start, in.len, direct)) {
    fill_entry(r, direct.iov, direct.count);
    r.replied.store(true, std::memory_order_relaxed);
  } else {
    if (pt_ != nullptr) pt_->on_request(start, in.len);
    fuse_session_process_buf(se_, &buf);
  }
  tl_ring_ = nullptr;
  // Every ring request is answered exactly once; a handler that answers on
  // another thread has its reply copied in from there. Checked before
  // waiting: libstdc++'s wait() counts its waiters in a table shared by
  // every thread (two atomic read-modify-writes) even when the value has
  // changed already, the common case.
  if (!r.replied.load(std::memory_order_acquire)) r.replied.wait(false, std::memory_order_acquire);
  r.unique.store(0, std::memory_order_relaxed);
}

void UringTransport::stop_threads() {
  {
    std::lock_guard lock(mu_);
    phase_ = Phase::stop;
  }
  cv_.notify_all();
  if (stop_fd_) {
    const std::uint64_t one = 1;
    [[maybe_unused]] ssize_t n = ::write(stop_fd_.get(), &one, sizeof one);
  }
  for (auto& r : rings_)
    if (r->thread.joinable() && r->thread.get_id() != std::this_thread::get_id()) r->thread.join();
}

void UringTransport::stop() {
  if (stopped_.exchange(true)) return;
  stop_threads();
  if (active_.load()) {
    std::uint64_t served = 0;
    std::size_t ended = 0;
    int why = 0;
    for (auto& r : rings_) {
      served += r->served.load(std::memory_order_relaxed);
      if (int e = r->ended_by.load(); e != 0) {
        ++ended;
        why = e;
      }
    }
    spdlog::info("io_uring: {} requests were served on the ring", served);
    if (ended != 0)
      spdlog::info("io_uring: {} of {} ring threads had ended before the daemon stopped (the kernel ended their "
                   "entries: {})",
                   ended, rings_.size(), errno_text(why));
  }
}

std::string UringTransport::status() const {
  if (active_.load(std::memory_order_acquire)) {
    std::uint64_t served = 0;
    bool no_iowait = true;
    for (auto& r : rings_) {
      served += r->served.load(std::memory_order_relaxed);
      no_iowait = no_iowait && r->no_iowait;
    }
    return "io_uring; " + std::to_string(queues_) + " CPU queues, " + std::to_string(rings_.size()) +
           " ring threads; " + std::to_string(served) + " requests served on the ring; " +
           (no_iowait ? "idle waits not counted as I/O wait"
                      : "idle waits counted as I/O wait (the kernel has no IORING_ENTER_NO_IOWAIT, Linux 6.15)") +
           "; linger " + std::to_string(linger_us_) + " us";
  }
  std::lock_guard lock(mu_);
  return "/dev/fuse (" + why_not_ + ")";
}

}  // namespace vsymfs::fs
