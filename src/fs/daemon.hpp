// One running vsymfs: everything main builds, in the order it is built. The
// constructor sets up and mounts (a failure is reported through Startup,
// which exits); run() serves until SIGTERM, SIGINT or an unmount; the
// destructor tears down and unmounts, in the reverse order.
#pragma once

#define FUSE_USE_VERSION 314
#include <fuse3/fuse_lowlevel.h>

#include <pthread.h>
#include <signal.h>

#include <atomic>
#include <condition_variable>
#include <cstddef>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "fs/atime.hpp"
#include "fs/dev_loop.hpp"
#include "daemon/caller_contexts.hpp"
#include "fs/filesystem.hpp"
#include "fs/inode_table.hpp"
#include "daemon/link_service.hpp"
#include "daemon/mount_state.hpp"
#include "fs/options.hpp"
#include "fs/passthrough.hpp"
#include "control/server.hpp"
#include "fs/startup.hpp"
#include "daemon/status.hpp"
#include "fs/uring_transport.hpp"

namespace vsymfs::fs {

class Daemon final : public daemon::StatusProvider {
 public:
  // Call before any other thread exists: it sets the signal mask every
  // thread inherits.
  Daemon(Options o, Startup& startup);
  ~Daemon() override;
  Daemon(const Daemon&) = delete;
  Daemon& operator=(const Daemon&) = delete;

  // Serves until the session ends; the exit status.
  int run();

  // What the FUSE layer settled with the kernel (ACLs, passthrough, the
  // transport) and the inode table's counts, once mounted.
  void status(daemon::StatusLines& out) const override;

 private:
  void handle_signals();

  Options o_;
  sigset_t handled_{};  // SIGHUP, SIGINT, SIGTERM: taken by the signal thread
  sigset_t wake_{};     // the loop's wake-up signal
  int wake_signal_ = 0;
  std::size_t fd_budget_ = 0;
  std::size_t max_open_files_ = 0;

  std::unique_ptr<daemon::MountState> state_;
  std::unique_ptr<InodeTable> inodes_;
  std::unique_ptr<daemon::CallerContexts> contexts_;
  std::unique_ptr<daemon::LinkService> links_;
  std::unique_ptr<Filesystem> filesystem_;
  std::optional<QuietAtime> quiet_atime_;
  std::unique_ptr<daemon::CacheStatus> cache_status_;
  std::vector<std::string> fuse_argv_s_;
  std::vector<char*> fuse_argv_;
  fuse_args fargs_{};
  fuse_session* se_ = nullptr;
  std::unique_ptr<control::Server> server_;
  std::unique_ptr<Passthrough> passthrough_;
  std::unique_ptr<UringTransport> transport_;
  std::atomic<bool> mounted_{false};  // status() has something to say

  // The signal thread, and its handshake with the loop's end.
  std::thread signals_;
  std::atomic<bool> stopping_{false};
  mutable std::mutex loop_mu_;  // also guards dev_loop_'s creation against status()
  std::condition_variable loop_cv_;
  bool loop_done_ = false;
  std::unique_ptr<DevLoop> dev_loop_;  // our /dev/fuse loop, unless -s or -o dev_linger=0
  pthread_t main_thread_{};
};

}  // namespace vsymfs::fs
