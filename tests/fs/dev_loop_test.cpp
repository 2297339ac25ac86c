// DevLoop (src/fs/dev_loop.hpp) over a real libfuse session whose "device"
// is a SOCK_SEQPACKET socket pair: the test plays the kernel, one request
// per message as /dev/fuse gives them. No mount, no root. Whether the
// machine has a CPU to spare, and how long a request may keep the leader,
// are set by each test, so that none of them depends on the machine.
#include "fs/dev_loop.hpp"

#include <fcntl.h>
#include <linux/fuse.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

namespace {

using vsymfs::fs::DevLoop;
using namespace std::chrono_literals;

constexpr fuse_ino_t kFast = 2;  // READLINK answered at once
constexpr fuse_ino_t kSlow = 3;  // READLINK answered when the test says so

void interrupt_only(int) {}

int wake_signal() {
  static const int sig = [] {
    const int s = SIGRTMIN + 3;
    struct sigaction sa {};
    sa.sa_handler = interrupt_only;  // no SA_RESTART: a blocked read returns EINTR
    sigemptyset(&sa.sa_mask);
    ::sigaction(s, &sa, nullptr);
    return s;
  }();
  return sig;
}

// A read of the "device" as /dev/fuse does it (fuse_dev_do_read): a reader
// woken for a request that another thread took first looks at the file's
// O_NONBLOCK again, and returns EAGAIN if it is set now. A socket's read
// decides blocking once, when it starts, and would wait on until it won a
// request: the loop's other threads would then reach their park only when
// they beat the lingering leader to one, which a fast leader may never
// let them do.
ssize_t kernel_read(int fd, void* buf, size_t len) {
  for (;;) {
    const ssize_t n = ::recv(fd, buf, len, MSG_DONTWAIT);
    if (n >= 0 || errno != EAGAIN) return n;
    const int flags = ::fcntl(fd, F_GETFL);
    if (flags < 0) return -1;
    if ((flags & O_NONBLOCK) != 0) {
      errno = EAGAIN;
      return -1;
    }
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, -1) < 0) return -1;  // EINTR: the wake signal
  }
}

struct Reply {
  int error = 0;
  std::string data;
};

class Harness {
 public:
  explicit Harness(unsigned threads, std::chrono::milliseconds stuck_after = 1h) {
    if (::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv_) != 0) throw std::runtime_error("socketpair");
    fuse_lowlevel_ops ops{};
    ops.readlink = [](fuse_req_t req, fuse_ino_t ino) {
      auto* h = static_cast<Harness*>(fuse_req_userdata(req));
      h->on_readlink(req, ino);
    };
    char arg0[] = "dev_loop_test";
    char* argv[] = {arg0, nullptr};
    fuse_args args = FUSE_ARGS_INIT(1, argv);
    se_ = fuse_session_new(&args, &ops, sizeof ops, this);
    fuse_opt_free_args(&args);  // what parsing them allocated
    if (se_ == nullptr) throw std::runtime_error("fuse_session_new");
    fuse_custom_io io{};
    io.read = [](int fd, void* buf, size_t len, void*) -> ssize_t { return kernel_read(fd, buf, len); };
    io.writev = [](int, iovec* iov, int count, void* ud) -> ssize_t {
      return static_cast<Harness*>(ud)->on_reply(iov, count);
    };
    if (fuse_session_custom_io(se_, &io, sv_[0]) != 0) throw std::runtime_error("fuse_session_custom_io");
    DevLoop::Config c;
    c.threads = threads;
    c.linger_us = 50;
    c.wake_signal = wake_signal();
    c.ring_active = [this] { return ring.load(); };
    c.linger_wanted = [this] { return spare_cpu.load(); };
    c.stuck_after = stuck_after;
    loop_ = std::make_unique<DevLoop>(se_, std::move(c));
    runner_ = std::thread([this] {
      rc_ = loop_->run();
      returned_.store(true);
    });
    // INIT, as the kernel sends it first.
    fuse_init_in init{};
    init.major = FUSE_KERNEL_VERSION;
    init.minor = 31;
    const std::uint64_t u = send(FUSE_INIT, 0, &init, sizeof init);
    if (!wait(u, 30s)) throw std::runtime_error("INIT not answered");
  }

  ~Harness() {
    release_slow();  // a test that failed while a request was held must still end
    stop();
    loop_.reset();
    fuse_session_destroy(se_);  // closes sv_[0]
    ::close(sv_[1]);
  }

  // Ends the loop as the daemon does (the session's exit flag, then the
  // wake signal to the thread in run()); whether run() returned in time.
  bool stop(std::chrono::seconds limit = 30s) {
    if (!runner_.joinable()) return true;
    fuse_session_exit(se_);
    const auto until = std::chrono::steady_clock::now() + limit;
    while (!returned_.load() && std::chrono::steady_clock::now() < until) {
      pthread_kill(runner_.native_handle(), wake_signal());
      std::this_thread::sleep_for(2ms);
    }
    if (!returned_.load()) return false;  // the thread is left to the process's end
    runner_.join();
    return true;
  }
  int rc() const { return rc_; }

  std::uint64_t send(std::uint32_t opcode, fuse_ino_t ino, const void* body = nullptr, std::size_t len = 0,
                     std::uint32_t pid = static_cast<std::uint32_t>(::getpid())) {
    std::lock_guard lock(send_mu_);
    fuse_in_header in{};
    in.len = static_cast<std::uint32_t>(sizeof in + len);
    in.opcode = opcode;
    in.unique = next_unique_ += 2;
    in.nodeid = ino;
    in.uid = ::geteuid();
    in.gid = ::getegid();
    in.pid = pid;
    iovec iov[2] = {{&in, sizeof in}, {const_cast<void*>(body), len}};
    msghdr m{};
    m.msg_iov = iov;
    m.msg_iovlen = len > 0 ? 2 : 1;
    if (::sendmsg(sv_[1], &m, 0) != static_cast<ssize_t>(in.len)) throw std::runtime_error("sendmsg");
    return in.unique;
  }
  std::optional<Reply> wait(std::uint64_t unique, std::chrono::milliseconds limit = 30s) {
    std::unique_lock lock(mu_);
    if (!cv_.wait_for(lock, limit, [&] { return replies_.count(unique) != 0; })) return std::nullopt;
    Reply r = replies_[unique];
    replies_.erase(unique);
    return r;
  }
  // One READLINK, sent and waited for: its text, or why there is none.
  std::string readlink(fuse_ino_t ino, std::chrono::milliseconds limit = 30s) {
    auto r = wait(send(FUSE_READLINK, ino), limit);
    if (!r) return "(no reply)";
    if (r->error != 0) return "(error " + std::to_string(r->error) + ")";
    return r->data;
  }

  // Sends READLINKs one at a time, as a lone caller does, until the loop
  // lingers with every other thread parked (false after `limit`). The
  // other threads park when they next get a CPU: that can take thousands
  // of the leader's requests on a machine whose two CPUs the leader and
  // this thread keep busy, so the wait is for the event, not a count.
  bool until_lingering(unsigned threads, std::chrono::seconds limit = 30s) {
    const auto until = std::chrono::steady_clock::now() + limit;
    while (std::chrono::steady_clock::now() < until) {
      const auto c = loop_->counts();
      if (c.lingering && c.parked == threads - 1) return true;
      if (readlink(kFast) != "fast") return false;
    }
    return false;
  }

  DevLoop& loop() { return *loop_; }
  std::set<std::thread::id> take_servers() {
    std::lock_guard lock(mu_);
    return std::exchange(servers_, {});
  }
  bool slow_started(std::chrono::seconds limit) {
    std::unique_lock lock(mu_);
    return cv_.wait_for(lock, limit, [&] { return slow_in_; });
  }
  void release_slow() {
    {
      std::lock_guard lock(mu_);
      slow_go_ = true;
    }
    cv_.notify_all();
  }

  std::atomic<bool> ring{false};
  std::atomic<bool> spare_cpu{true};

 private:
  void on_readlink(fuse_req_t req, fuse_ino_t ino) {
    if (ino == kSlow) {
      std::unique_lock lock(mu_);
      slow_in_ = true;
      cv_.notify_all();
      cv_.wait(lock, [&] { return slow_go_; });
      lock.unlock();
      fuse_reply_readlink(req, "slow");
      return;
    }
    {
      std::lock_guard lock(mu_);
      servers_.insert(std::this_thread::get_id());
    }
    fuse_reply_readlink(req, "fast");
  }
  ssize_t on_reply(iovec* iov, int count) {
    std::string bytes;
    for (int i = 0; i < count; ++i) bytes.append(static_cast<const char*>(iov[i].iov_base), iov[i].iov_len);
    if (bytes.size() < sizeof(fuse_out_header)) return -1;
    fuse_out_header out;
    std::memcpy(&out, bytes.data(), sizeof out);
    {
      std::lock_guard lock(mu_);
      replies_[out.unique] = Reply{out.error, bytes.substr(sizeof out)};
    }
    cv_.notify_all();
    return static_cast<ssize_t>(bytes.size());
  }

  int sv_[2] = {-1, -1};
  fuse_session* se_ = nullptr;
  std::unique_ptr<DevLoop> loop_;
  std::thread runner_;
  std::atomic<bool> returned_{false};
  int rc_ = 0;
  std::mutex send_mu_;
  std::uint64_t next_unique_ = 0;
  std::mutex mu_;
  std::condition_variable cv_;
  std::map<std::uint64_t, Reply> replies_;
  std::set<std::thread::id> servers_;
  bool slow_in_ = false, slow_go_ = false;
};

// The loop starts shared (every thread in read(2)); a lone caller turns it
// to lingering, and then one thread answers everything.
TEST(DevLoop, ALoneCallerIsServedByOneLingeringThread) {
  Harness h(3);
  EXPECT_FALSE(h.loop().counts().lingering);
  ASSERT_TRUE(h.until_lingering(3)) << h.loop().status();
  EXPECT_EQ(h.loop().counts().to_lingering, 1u);
  EXPECT_EQ(h.loop().counts().parked, 2u);
  (void)h.take_servers();
  for (int i = 0; i < 200; ++i) ASSERT_EQ(h.readlink(kFast), "fast");
  EXPECT_EQ(h.take_servers().size(), 1u) << "a lone caller's requests were spread over threads";
  const auto c = h.loop().counts();
  EXPECT_TRUE(c.lingering);
  EXPECT_EQ(c.demand + c.busy_machine + c.stuck + c.ring, 0u);
  EXPECT_NE(h.loop().status().find("lingering (3 threads, linger 50 us)"), std::string::npos) << h.loop().status();
  EXPECT_TRUE(h.stop());
  EXPECT_EQ(h.rc(), 0);
}

// Requests of two callers waiting as soon as the leader answered the one
// before: callers queue behind it, and every thread takes the device again.
// One caller's requests found that soon do not count (the caller was only
// quick): ALoneCallerIsServedByOneLingeringThread.
TEST(DevLoop, CallersQueueingBehindTheLeaderTurnItShared) {
  Harness h(2);
  ASSERT_TRUE(h.until_lingering(2)) << h.loop().status();
  // The leader held by one request while 16 more come in: they queue.
  const std::uint64_t slow = h.send(FUSE_READLINK, kSlow);
  ASSERT_TRUE(h.slow_started(30s));
  std::vector<std::uint64_t> sent;
  for (std::uint32_t i = 0; i < 16; ++i) sent.push_back(h.send(FUSE_READLINK, kFast, nullptr, 0, 1000 + i % 2));
  EXPECT_EQ(h.loop().counts().demand, 0u);
  h.release_slow();
  ASSERT_TRUE(h.wait(slow).has_value());
  for (auto u : sent) {
    auto r = h.wait(u);
    ASSERT_TRUE(r.has_value());
    EXPECT_EQ(r->data, "fast");
  }
  const auto c = h.loop().counts();
  EXPECT_EQ(c.demand, 1u) << h.loop().status();
  EXPECT_FALSE(c.lingering);
  // A lone caller again: lingering again.
  ASSERT_TRUE(h.until_lingering(2)) << h.loop().status();
  EXPECT_EQ(h.loop().counts().to_lingering, 2u);
}

// A request that keeps the leader (a hung SOURCE) does not hold up the
// others: the watching thread turns the loop shared, and another thread
// answers, while the hung one still waits.
TEST(DevLoop, AHungRequestIsHandedOnAndTheOthersAreAnswered) {
  Harness h(2, 2ms);
  // With a 2 ms limit a leader preempted mid-request also counts as stuck
  // (on a loaded machine), which the loop survives; the test wants it
  // lingering when the hung request comes.
  bool lingering = false;
  for (int attempt = 0; attempt < 20 && !lingering; ++attempt) lingering = h.until_lingering(2);
  ASSERT_TRUE(lingering) << h.loop().status();
  const auto before = h.loop().counts();
  const std::uint64_t slow = h.send(FUSE_READLINK, kSlow);
  ASSERT_TRUE(h.slow_started(30s));
  EXPECT_EQ(h.readlink(kFast, 30s), "fast") << "the mount waited for a hung request";
  const auto c = h.loop().counts();
  EXPECT_GE(c.stuck, before.stuck + 1) << h.loop().status();
  EXPECT_FALSE(h.wait(slow, 0ms).has_value());
  h.release_slow();
  auto r = h.wait(slow);
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(r->data, "slow");
  EXPECT_TRUE(h.stop());
}

// Requests on io_uring, or no CPU to spare: nothing lingers.
TEST(DevLoop, TheRingOrABusyMachineTurnItShared) {
  Harness h(2);
  ASSERT_TRUE(h.until_lingering(2)) << h.loop().status();
  // The leader looks after a request (asleep in poll(2), it sees none).
  h.ring = true;
  for (int i = 0; i < 5000 && h.loop().counts().ring == 0; ++i) ASSERT_EQ(h.readlink(kFast), "fast");
  EXPECT_EQ(h.loop().counts().ring, 1u) << h.loop().status();
  EXPECT_FALSE(h.loop().counts().lingering);
  for (int i = 0; i < 300; ++i) ASSERT_EQ(h.readlink(kFast), "fast");
  EXPECT_FALSE(h.loop().counts().lingering) << "lingered while the ring serves";
  h.ring = false;
  ASSERT_TRUE(h.until_lingering(2)) << h.loop().status();
  h.spare_cpu = false;
  for (int i = 0; i < 5000 && h.loop().counts().busy_machine == 0; ++i) ASSERT_EQ(h.readlink(kFast), "fast");
  EXPECT_EQ(h.loop().counts().busy_machine, 1u) << h.loop().status();
  for (int i = 0; i < 300; ++i) ASSERT_EQ(h.readlink(kFast), "fast");
  EXPECT_FALSE(h.loop().counts().lingering) << "lingered without a CPU to spare";
}

// The loop ends with its threads in every place they wait: blocked in
// read(2) (shared), parked, watching, and the leader in poll(2).
TEST(DevLoop, StopEndsEveryThreadWhereverItWaits) {
  {
    Harness h(3);
    EXPECT_EQ(h.readlink(kFast), "fast");
    EXPECT_TRUE(h.stop()) << "a thread blocked in read(2) did not end";
    EXPECT_EQ(h.rc(), 0);
  }
  {
    Harness h(3);
    ASSERT_TRUE(h.until_lingering(3)) << h.loop().status();
    std::this_thread::sleep_for(5ms);  // past the linger: the leader sleeps in poll(2)
    EXPECT_TRUE(h.stop()) << "a parked thread or the polling leader did not end";
    EXPECT_EQ(h.rc(), 0);
  }
}

}  // namespace
