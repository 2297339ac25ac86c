#include "fs/daemon.hpp"

#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstring>

#include <spdlog/spdlog.h>

#include "daemon/identity.hpp"
#include "fs/logging.hpp"
#include "control/paths.hpp"
#include "fs/service_notify.hpp"

namespace vsymfs::fs {

namespace {

// The handler of the FUSE loop's wake-up signal: its delivery interrupts
// the main thread's wait, which is all it is for.
void interrupt_only(int) {}

// Descriptor plan: RLIMIT_NOFILE's hard limit cannot be raised, so the soft
// limit goes up to it and is split between cached O_PATH descriptors (the
// budget) and open files, with a reserve for everything else (mount fds,
// control socket clients, /proc reads, libfuse).
struct FdPlan {
  std::size_t budget;
  std::size_t max_open_files;
};

FdPlan plan_descriptors(std::size_t requested_budget, unsigned threads) {
  struct rlimit rl {};
  ::getrlimit(RLIMIT_NOFILE, &rl);
  if (rl.rlim_cur < rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max;
    ::setrlimit(RLIMIT_NOFILE, &rl);
  }
  ::getrlimit(RLIMIT_NOFILE, &rl);
  const std::size_t limit = rl.rlim_cur == RLIM_INFINITY ? (1u << 20) : static_cast<std::size_t>(rl.rlim_cur);
  const std::size_t reserve = 64 + 4 * static_cast<std::size_t>(threads);
  std::size_t budget = requested_budget != 0 ? requested_budget : std::min<std::size_t>(limit / 2, 8192);
  // Pinned descriptors can overshoot the budget by a few per thread.
  const std::size_t usable = limit > reserve ? limit - reserve : 16;
  budget = std::min(budget, usable / 2);
  return {budget, usable - budget};
}

}  // namespace

Daemon::Daemon(Options o, Startup& startup) : o_(std::move(o)) {
  // Signals (vsymfs(8) SIGNALS). Before any thread exists: the daemon
  // forks, and SIGHUP, SIGINT, SIGTERM and the loop's wake-up signal are
  // blocked in every thread (all inherit this mask); one thread takes the
  // first three with sigwait (handle_signals). libfuse 3.14's handlers only
  // set the session's exit flag, and fuse_session_loop_mt notices it when a
  // signal interrupts the main thread's sem_wait. That lost SIGTERMs two
  // ways: the kernel gives a process's signal to any thread that can take it
  // at that instant (right after a SIGCONT, not the main thread, which still
  // has the stop pending), and one that reaches the main thread just as its
  // interrupted wait is restarted wakes nothing either. The daemon then
  // never exited.
  wake_signal_ = SIGRTMIN;
  sigemptyset(&handled_);
  sigaddset(&handled_, SIGHUP);
  sigaddset(&handled_, SIGINT);
  sigaddset(&handled_, SIGTERM);
  sigemptyset(&wake_);
  sigaddset(&wake_, wake_signal_);
  sigset_t blocked = handled_;
  sigaddset(&blocked, wake_signal_);
  pthread_sigmask(SIG_BLOCK, &blocked, nullptr);
  {
    struct sigaction sa {};
    sa.sa_handler = interrupt_only;  // no SA_RESTART: the loop's wait returns EINTR
    sigemptyset(&sa.sa_mask);
    ::sigaction(wake_signal_, &sa, nullptr);
  }
  main_thread_ = pthread_self();

  // Modes arrive masked by the caller's umask, or (FUSE_DONT_MASK) with it
  // beside them, and a worker then makes it its own for that creation
  // (ThreadIdentity::use_umask). Ours must never mask again.
  ::umask(0);
  const bool can_switch = daemon::ThreadIdentity::init();
  if (!can_switch && !o_.single_user) {
    spdlog::warn("cannot switch identity (not root, or root of a user namespace that denies setgroups): every "
                 "operation runs as uid {} (as with -o single_user)", ::geteuid());
    o_.single_user = true;
  }
  // open_by_handle_at needs CAP_DAC_READ_SEARCH in the initial user
  // namespace: root of any other (unshare -Ur, rootless podman) gets EPERM.
  const bool can_open_handles = can_switch && control::DaemonUser::current().initial_user_namespace;
  const FdPlan plan = plan_descriptors(o_.fd_budget, o_.max_threads);
  fd_budget_ = plan.budget;
  max_open_files_ = plan.max_open_files;

  auto state = daemon::MountState::create(o_);  // rules: "" = the default path when it exists, else built-in
  if (!state) startup.fail(kRules, state.error().message);
  state_ = std::move(*state);

  InodeTable::Options iopts;
  iopts.fd_budget = plan.budget;
  iopts.handles = o_.handles == HandleOption::On    ? HandleChoice::On
                  : o_.handles == HandleOption::Off ? HandleChoice::Off
                                                    : HandleChoice::Auto;
  iopts.can_open_handles = can_open_handles;  // open_by_handle_at needs CAP_DAC_READ_SEARCH in the initial user namespace
  iopts.reopen_source_by_path = o_.source != o_.mountpoint;
  auto inodes = InodeTable::create(o_.source, iopts);
  if (!inodes) startup.fail(kPaths, inodes.error().message);
  inodes_ = std::move(*inodes);

  daemon::CallerContexts::Options copts;
  copts.max_environ_bytes = o_.environ_cache;
  copts.caller_accounts = !o_.daemon_nss;
  contexts_ = std::make_unique<daemon::CallerContexts>(copts);
  contexts_->follow_rules(*state_);  // keep only the variables the rules can take
  links_ = std::make_unique<daemon::LinkService>(*state_, *contexts_);
  FsConfig fcfg;
  fcfg.entry_timeout = o_.entry_timeout;
  fcfg.attr_timeout = o_.attr_timeout;
  fcfg.negative_timeout = o_.negative_timeout;
  fcfg.single_user = o_.single_user;
  fcfg.posix_acl = o_.acl;
  fcfg.max_open_files = plan.max_open_files;
  filesystem_ = std::make_unique<Filesystem>(fcfg, *inodes_, *state_, *contexts_, *links_);
  // -o noatime / nodiratime: what the daemon and passthrough read leaves
  // SOURCE's atimes alone too (atime.hpp).
  if (o_.noatime || o_.nodiratime) {
    if (auto q = QuietAtime::open(o_.source); q) {
      quiet_atime_.emplace(std::move(*q));
      filesystem_->set_quiet_atime(&*quiet_atime_, o_.noatime);
    } else {
      spdlog::warn("{}: reads through the mount still update atimes in SOURCE ({})",
                   o_.noatime ? "noatime" : "nodiratime", q.error().message);
    }
  }
  cache_status_ = std::make_unique<daemon::CacheStatus>(*contexts_, *links_);

  fuse_argv_s_ = {"vsymfs", "-o", o_.fuse_mount_options};
  if (o_.debug) fuse_argv_s_.emplace_back("-d");
  for (auto& s : fuse_argv_s_) fuse_argv_.push_back(s.data());
  fargs_ = FUSE_ARGS_INIT(static_cast<int>(fuse_argv_.size()), fuse_argv_.data());
  const auto& ops = Filesystem::operations();
  se_ = fuse_session_new(&fargs_, &ops, sizeof ops, filesystem_.get());
  if (!se_) startup.fail(kUsage, "invalid mount options: " + o_.fuse_mount_options + held_fuse_messages());
  if (fuse_set_signal_handlers(se_) != 0) startup.fail(kInternal, "cannot install signal handlers");
  // The control server before the mount: it loads the persisted run-time
  // values (the first lookups must see them) and opens SOURCE by path,
  // which with MOUNTPOINT == SOURCE must still find the underlying directory.
  // `vsymctl status`: the mount state's lines, then these, then the server's.
  control::ServerOptions sopts;
  sopts.socket_path = o_.socket_path;
  sopts.state_path = o_.state_path;
  sopts.status = {this, cache_status_.get()};
  auto server = control::Server::start(*state_, *links_, *contexts_, sopts);
  if (!server) startup.fail(kControl, server.error().message);
  server_ = std::move(*server);
  // Created before the mount: it looks at SOURCE by path, which with
  // MOUNTPOINT == SOURCE would afterwards be our own (not yet served) mount.
  if (o_.passthrough) {
    if (auto cap = Passthrough::check_capability(); cap)
      passthrough_ = std::make_unique<Passthrough>(o_.source);
    else
      spdlog::warn("passthrough: off, {}; file I/O goes through the daemon", cap.error().message);
  }
  // Whether requests may come over io_uring; -o uring fails here without it.
  auto transport = UringTransport::create(o_.uring, o_.single_thread, o_.uring_linger_us);
  if (!transport) {
    server_.reset();  // fail() runs no destructors: remove the socket now
    startup.fail(kMount, transport.error().message);
  }
  transport_ = std::move(*transport);
  if (fuse_session_mount(se_, o_.mountpoint.c_str()) != 0) {
    server_.reset();
    std::string hint;
    if (::geteuid() != 0 && ::access("/dev/fuse", R_OK | W_OK) != 0)
      hint = "; users can mount only where /dev/fuse is open to them (Debian's default is mode 0666; here it is "
             "not), so run vsymfs as root or ask for that";
    startup.fail(kMount, "cannot mount " + o_.source + " on " + o_.mountpoint + held_fuse_messages() + hint);
  }

  // The hooks go in before the loop reads INIT; whether the kernel takes
  // passthrough or io_uring is known only from INIT, and every refusal falls
  // back to plain FUSE reads and writes, or /dev/fuse reads (logged once).
  // The io_uring transport, when it may be used, owns the hooks and calls
  // passthrough's.
  // libfuse must see every request to print it (-d) or to refuse other
  // users (-o allow_root): then nothing is answered before it.
  filesystem_->allow_direct_replies(!o_.debug && !o_.allow_root);
  if (passthrough_) {
    if (auto r = transport_->install(se_, passthrough_.get(), filesystem_.get()); r) {
      filesystem_->set_passthrough(passthrough_.get());
    } else {
      spdlog::warn("passthrough: off, {}", r.error().message);
      passthrough_.reset();
    }
  }
  if (!passthrough_)
    if (auto r = transport_->install(se_, nullptr, filesystem_.get()); !r) spdlog::warn("io_uring: off, {}", r.error().message);
  mounted_.store(true, std::memory_order_release);
  filesystem_->set_control_socket(server_->socket_path());
  filesystem_->attach_session(se_);
  if (auto w = state_->start_watching(); !w)
    spdlog::warn("rules file changes will not be noticed (SIGHUP and vsymctl reload still work): {}", w.error().message);
  signals_ = std::thread([this] { handle_signals(); });

  stop_holding_fuse_messages();
  spdlog::info("mounted {} on {} (rules from {}; fd budget {}, open files at most {}, {} identity, inodes by {})",
               o_.source, o_.mountpoint, state_->rules()->origin, plan.budget, plan.max_open_files,
               o_.single_user ? "single-user" : "per-caller", inodes_->handle_mode().use ? "file handle" : "name");
  // Details of the mount go after the "mounted" line: before it, any line
  // would break the one-line startup error (Process.StartupErrorsAreOneLine...).
  spdlog::info("evicted inodes are found again by {}: {}",
               inodes_->handle_mode().use ? "file handle (else by parent and name)" : "parent and name",
               inodes_->handle_mode().reason);
  if (int e = inodes_->quiet_links_error(); e != 0)
    spdlog::info("stat of a symlink may update its atime the first time the daemon meets it (no read-only clone of "
                 "SOURCE's mount: {}; vsymfs(8), SYMLINK TIMES)", std::strerror(e));
  startup.succeeded();
  service::ready("serving " + o_.source + " on " + o_.mountpoint + " (rules from " + state_->rules()->origin + ")");
}

void Daemon::handle_signals() {
  for (;;) {
    int sig = 0;
    if (sigwait(&handled_, &sig) != 0 || stopping_.load()) return;
    if (sig != SIGHUP) {
      spdlog::info("{}: unmounting", sig == SIGTERM ? "SIGTERM" : "SIGINT");
      fuse_session_exit(se_);
      // A wake-up that reaches the main thread before its wait begins, or
      // just as an interrupted wait restarts, is lost: repeat it until
      // the loop has returned.
      std::unique_lock lock(loop_mu_);
      while (!loop_done_) {
        pthread_kill(main_thread_, wake_signal_);
        loop_cv_.wait_for(lock, std::chrono::milliseconds(100));
      }
      continue;
    }
    service::reloading();
    if (auto r = state_->reload(); r) {
      spdlog::info("SIGHUP: rules reloaded from {}", state_->rules()->origin);
      service::reloaded("serving; rules reloaded from " + state_->rules()->origin);
    } else {
      spdlog::error("SIGHUP: rules not reloaded, the old rules stay in force: {}", r.error().message);
      service::reloaded("serving; rules not reloaded: " + r.error().message);
    }
  }
}

int Daemon::run() {
  // The wake-up signal may interrupt the loop's wait, nothing else.
  pthread_sigmask(SIG_UNBLOCK, &wake_, nullptr);
  int rc = 0;
  if (o_.single_thread) {
    rc = fuse_session_loop(se_);
  } else if (o_.dev_linger_us > 0) {
    DevLoop::Config c;
    c.threads = o_.max_threads;
    c.linger_us = o_.dev_linger_us;
    c.wake_signal = wake_signal_;
    c.ring_active = [t = transport_.get()] { return t->active(); };
    {
      std::lock_guard lock(loop_mu_);
      dev_loop_ = std::make_unique<DevLoop>(se_, std::move(c));
    }
    rc = dev_loop_->run();
  } else {
    fuse_loop_config* lcfg = fuse_loop_cfg_create();
    fuse_loop_cfg_set_max_threads(lcfg, o_.max_threads);
    fuse_loop_cfg_set_clone_fd(lcfg, 0);
    rc = fuse_session_loop_mt(se_, lcfg);
    fuse_loop_cfg_destroy(lcfg);
  }
  pthread_sigmask(SIG_BLOCK, &wake_, nullptr);
  {
    std::lock_guard lock(loop_mu_);
    loop_done_ = true;
  }
  loop_cv_.notify_all();
  // The loop returns the number of the signal that ended it (SIGTERM,
  // SIGINT: a clean unmount), or a negative errno when it failed.
  return rc >= 0 ? kOk : kInternal;
}

Daemon::~Daemon() {
  service::stopping();
  transport_->stop();  // no request runs past this point
  stopping_ = true;
  pthread_kill(signals_.native_handle(), SIGHUP);
  signals_.join();
  state_->stop_watching();
  server_.reset();  // before what status() reads goes away
  filesystem_->detach_session();
  if (passthrough_) spdlog::info("{}", passthrough_->summary());
  fuse_session_unmount(se_);
  fuse_remove_signal_handlers(se_);
  fuse_session_destroy(se_);
  fuse_opt_free_args(&fargs_);
  spdlog::info("unmounted {}", o_.mountpoint);
}

void Daemon::status(daemon::StatusLines& out) const {
  if (!mounted_.load(std::memory_order_acquire)) return;
  const InodeTable& table = *inodes_;
  out.emplace_back("posix_acls", filesystem_->kernel_enforces_acls() ? "enforced (-o acl)" : "mode bits only");
  out.emplace_back("passthrough", passthrough_ ? passthrough_->status() : "off");
  out.emplace_back("transport", transport_->status());
  {
    std::lock_guard lock(loop_mu_);
    out.emplace_back("dev_loop", dev_loop_              ? dev_loop_->status()
                                 : o_.single_thread       ? "libfuse's single-threaded loop (-s)"
                                 : o_.dev_linger_us == 0 ? "libfuse's loop, every thread in read(2) (-o dev_linger=0)"
                                                          : "starting");
  }
  out.emplace_back("direct_replies", filesystem_->direct_replies_allowed()
                                         ? std::to_string(filesystem_->direct_replies_counter().load()) +
                                               " READLINKs answered on the ring threads without libfuse"
                                         : std::string(o_.debug ? "off (-d)" : "off (-o allow_root)"));
  out.emplace_back("inodes_found_by", inode_status(table));
  out.emplace_back("stale_handles", std::to_string(table.stale_handles()) + " (found again by name: " +
                                        std::to_string(table.stale_handles_found()) + ")");
  out.emplace_back("source_reopened", std::to_string(table.source_reopens()));
  const char* keeping = table.link_keeping() == LinkKeeping::Always     ? "kept (SOURCE stamps no atime)"
                        : table.link_keeping() == LinkKeeping::Relatime ? "kept while a read would not stamp the atime (relatime)"
                                                                        : "read every time (SOURCE's filesystem or its strictatime)";
  out.emplace_back("link_texts", std::string(keeping) + ", " + std::to_string(filesystem_->kept_texts_counter().load()) +
                                     " READLINKs answered without reading the link");
}

}  // namespace vsymfs::fs
