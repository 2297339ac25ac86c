// vsymfs: option parsing and startup. Everything that can fail at startup
// (arguments, SOURCE, MOUNTPOINT, rules, mount, control socket) fails before
// the daemon detaches, with one line on stderr and a distinct exit status.
#define FUSE_USE_VERSION 314
#include <fuse3/fuse_lowlevel.h>

#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <syslog.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdarg>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <sstream>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/sinks/syslog_sink.h>
#include <spdlog/spdlog.h>

#include "caller_contexts.hpp"
#include "filesystem.hpp"
#include "identity.hpp"
#include "inode_table.hpp"
#include "link_service.hpp"
#include "mount_state.hpp"
#include "options.hpp"
#include "atime.hpp"
#include "passthrough.hpp"
#include "paths.hpp"
#include "server.hpp"
#include "service_notify.hpp"
#include "status.hpp"
#include "uring_transport.hpp"
#include "vsymfs_config.h"

namespace {

using namespace vsymfs;

// Exit statuses (vsymfs(8), EXIT STATUS).
enum Exit : int {
  kOk = 0,
  kUsage = 1,       // bad command line or mount options
  kPaths = 2,       // SOURCE or MOUNTPOINT unusable
  kRules = 3,       // the rules file cannot be loaded
  kMount = 4,       // the kernel refused the mount
  kControl = 5,     // the control socket cannot be served
  kInternal = 6,    // anything else at startup
};

// Reports the outcome of startup to whoever started us. In the background
// the parent waits for the child's verdict on a pipe, so `mount` and fstab
// see the real error and status, not just "forked".
class Startup {
 public:
  // Forks when !foreground; returns only in the process that goes on.
  explicit Startup(bool foreground) {
    if (foreground) return;
    int p[2];
    if (::pipe2(p, O_CLOEXEC) != 0) fail(kInternal, std::string("pipe: ") + std::strerror(errno));
    pid_t pid = ::fork();
    if (pid < 0) fail(kInternal, std::string("fork: ") + std::strerror(errno));
    if (pid > 0) {
      ::close(p[1]);
      std::string verdict;
      char buf[512];
      ssize_t n;
      while ((n = ::read(p[0], buf, sizeof buf)) > 0) verdict.append(buf, static_cast<std::size_t>(n));
      if (verdict.empty()) {
        std::fprintf(stderr, "vsymfs: the daemon exited during startup\n");
        ::_exit(kInternal);
      }
      int status = verdict[0] - '0';
      if (verdict.size() > 1) std::fprintf(stderr, "%s\n", verdict.c_str() + 1);
      ::_exit(status);
    }
    ::close(p[0]);
    pipe_ = p[1];
    ::setsid();
  }

  [[noreturn]] void fail(int status, const std::string& message) {
    if (pipe_ >= 0) {
      std::string verdict = std::to_string(status) + "vsymfs: " + message;
      [[maybe_unused]] ssize_t n = ::write(pipe_, verdict.data(), verdict.size());
    } else {
      std::fprintf(stderr, "vsymfs: %s\n", message.c_str());
    }
    std::fflush(stderr);
    ::_exit(status);
  }

  // Detaches from the terminal and lets the parent exit 0.
  void succeeded() {
    if (pipe_ < 0) return;
    if (::chdir("/") != 0) { /* nothing depends on the cwd */ }
    int null = ::open("/dev/null", O_RDWR | O_CLOEXEC);
    if (null >= 0) {
      ::dup2(null, 0);
      ::dup2(null, 1);
      ::dup2(null, 2);
      ::close(null);
    }
    [[maybe_unused]] ssize_t n = ::write(pipe_, "0", 1);
    ::close(pipe_);
    pipe_ = -1;
  }

 private:
  int pipe_ = -1;
};

// The handler of the FUSE loop's wake-up signal: its delivery interrupts
// the main thread's wait, which is all it is for.
void interrupt_only(int) {}

std::atomic<bool> g_holding_fuse_messages{true};
std::mutex g_held_mu;
std::string g_held_fuse_messages;

// libfuse's own messages go to our log, one line each (libfuse writes some
// lines in pieces). Until startup succeeds they are held back and become
// part of the one-line startup error instead.
[[gnu::format(printf, 2, 0)]] void log_from_libfuse(enum fuse_log_level level, const char* fmt, va_list ap) {
  thread_local std::string pending;
  char buf[1024];
  std::vsnprintf(buf, sizeof buf, fmt, ap);
  pending += buf;
  if (pending.empty() || pending.back() != '\n') return;
  while (!pending.empty() && (pending.back() == '\n' || pending.back() == ' ')) pending.pop_back();
  if (g_holding_fuse_messages.load()) {
    std::lock_guard lock(g_held_mu);
    if (level <= FUSE_LOG_WARNING) g_held_fuse_messages += (g_held_fuse_messages.empty() ? "" : "; ") + pending;
  } else {
    spdlog::log(level <= FUSE_LOG_ERR      ? spdlog::level::err
                : level <= FUSE_LOG_NOTICE ? spdlog::level::info
                                           : spdlog::level::debug,
                "libfuse: {}", pending);
  }
  pending.clear();
}

void setup_logging(const fs::Options& o) {
  std::shared_ptr<spdlog::logger> log;
  if (o.foreground)
    log = std::make_shared<spdlog::logger>("vsymfs", std::make_shared<spdlog::sinks::stderr_sink_mt>());
  else
    log = std::make_shared<spdlog::logger>(
        "vsymfs", std::make_shared<spdlog::sinks::syslog_sink_mt>("vsymfs", LOG_PID, LOG_DAEMON, false));
  log->set_level(o.debug ? spdlog::level::debug : spdlog::level::info);
  spdlog::set_default_logger(std::move(log));
  fuse_set_log_func(log_from_libfuse);
}

std::string held_fuse_messages() {
  std::lock_guard lock(g_held_mu);
  return g_held_fuse_messages.empty() ? std::string() : " (libfuse: " + g_held_fuse_messages + ")";
}

bool is_vsymfs_mount(const std::string& path) {
  std::ifstream in("/proc/self/mountinfo");
  std::stringstream mountinfo;
  mountinfo << in.rdbuf();
  return control::has_mount_at(mountinfo.str(), path, "fuse.vsymfs");
}

std::string check_paths(const fs::Options& o) {
  struct stat st {};
  if (::stat(o.source.c_str(), &st) != 0) return "SOURCE " + o.source + ": " + std::strerror(errno);
  if (!S_ISDIR(st.st_mode)) return "SOURCE " + o.source + ": not a directory";
  if (::stat(o.mountpoint.c_str(), &st) != 0) return "MOUNTPOINT " + o.mountpoint + ": " + std::strerror(errno);
  if (!S_ISDIR(st.st_mode)) return "MOUNTPOINT " + o.mountpoint + ": not a directory";
  if (o.mountpoint.size() > o.source.size() && o.mountpoint.compare(0, o.source.size(), o.source) == 0 &&
      (o.source == "/" || o.mountpoint[o.source.size()] == '/'))
    return "MOUNTPOINT " + o.mountpoint + " is inside SOURCE " + o.source + ": the daemon would call into its own mount";
  if (is_vsymfs_mount(o.mountpoint)) return "MOUNTPOINT " + o.mountpoint + " is already a vsymfs mount (unmount it first)";
  return {};
}

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

// What the FUSE layer settled with the kernel (passthrough, ACLs, the
// transport) and the inode table's counts, once mounted.
struct FsStatus final : daemon::StatusProvider {
  std::atomic<bool> mounted{false};
  const fs::Filesystem* filesystem = nullptr;
  const fs::Passthrough* passthrough = nullptr;
  const fs::InodeTable* table = nullptr;
  const fs::UringTransport* transport = nullptr;
  void status(daemon::StatusLines& out) const override {
    if (!mounted.load(std::memory_order_acquire)) return;
    out.emplace_back("posix_acls", filesystem->kernel_enforces_acls() ? "enforced (-o acl)" : "mode bits only");
    out.emplace_back("passthrough", passthrough != nullptr ? passthrough->status() : "off");
    out.emplace_back("transport", transport->status());
    out.emplace_back("inodes_found_by", fs::inode_status(*table));
    out.emplace_back("stale_handles", std::to_string(table->stale_handles()) + " (found again by name: " +
                                          std::to_string(table->stale_handles_found()) + ")");
    out.emplace_back("source_reopened", std::to_string(table->source_reopens()));
  }
};

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  auto parsed = fs::parse_options(args);
  if (!parsed) {
    std::fprintf(stderr, "vsymfs: %s\n", parsed.error().message.c_str());
    return kUsage;
  }
  fs::Options o = std::move(*parsed);
  if (o.show_help) {
    std::fputs(fs::usage_text().c_str(), stdout);
    return kOk;
  }
  if (o.show_version) {
    std::printf("vsymfs %s (libfuse %d)\n", VSYMFS_VERSION, fuse_version());
    return kOk;
  }
  if (std::string err = check_paths(o); !err.empty()) {
    std::fprintf(stderr, "vsymfs: %s\n", err.c_str());
    return kPaths;
  }

  // Signals (vsymfs(8) SIGNALS). Before any thread exists: the daemon
  // forks, and SIGHUP, SIGINT, SIGTERM and the loop's wake-up signal are
  // blocked in every thread (all inherit this mask); one thread takes the
  // first three with sigwait (below). libfuse 3.14's handlers only set the
  // session's exit flag, and fuse_session_loop_mt notices it when a signal
  // interrupts the main thread's sem_wait. That lost SIGTERMs two ways: the
  // kernel gives a process's signal to any thread that can take it at that
  // instant (right after a SIGCONT, not the main thread, which still has the
  // stop pending), and one that reaches the main thread just as its
  // interrupted wait is restarted wakes nothing either. The daemon then
  // never exited.
  Startup startup(o.foreground);
  const int wake_signal = SIGRTMIN;
  sigset_t handled;
  sigemptyset(&handled);
  sigaddset(&handled, SIGHUP);
  sigaddset(&handled, SIGINT);
  sigaddset(&handled, SIGTERM);
  sigset_t wake;
  sigemptyset(&wake);
  sigaddset(&wake, wake_signal);
  sigset_t blocked = handled;
  sigaddset(&blocked, wake_signal);
  pthread_sigmask(SIG_BLOCK, &blocked, nullptr);
  {
    struct sigaction sa {};
    sa.sa_handler = interrupt_only;  // no SA_RESTART: the loop's wait returns EINTR
    sigemptyset(&sa.sa_mask);
    ::sigaction(wake_signal, &sa, nullptr);
  }
  setup_logging(o);

  // Modes arrive masked by the caller's umask, or (FUSE_DONT_MASK) with it
  // beside them, and a worker then makes it its own for that creation
  // (ThreadIdentity::use_umask). Ours must never mask again.
  ::umask(0);
  const bool can_switch = daemon::ThreadIdentity::init();
  if (!can_switch && !o.single_user) {
    spdlog::warn("cannot switch identity (not root, or root of a user namespace that denies setgroups): every "
                 "operation runs as uid {} (as with -o single_user)", ::geteuid());
    o.single_user = true;
  }
  // open_by_handle_at needs CAP_DAC_READ_SEARCH in the initial user
  // namespace: root of any other (unshare -Ur, rootless podman) gets EPERM.
  const bool can_open_handles = can_switch && control::DaemonUser::current().initial_user_namespace;
  const FdPlan plan = plan_descriptors(o.fd_budget, o.max_threads);

  auto state = daemon::MountState::create(o);  // rules: "" = the default path when it exists, else built-in
  if (!state) startup.fail(kRules, state.error().message);

  fs::InodeTable::Options iopts;
  iopts.fd_budget = plan.budget;
  iopts.handles = o.handles == fs::HandleOption::On    ? fs::HandleChoice::On
                  : o.handles == fs::HandleOption::Off ? fs::HandleChoice::Off
                                                       : fs::HandleChoice::Auto;
  iopts.can_open_handles = can_open_handles;  // open_by_handle_at needs CAP_DAC_READ_SEARCH in the initial user namespace
  iopts.reopen_source_by_path = o.source != o.mountpoint;
  auto inodes = fs::InodeTable::create(o.source, iopts);
  if (!inodes) startup.fail(kPaths, inodes.error().message);

  daemon::CallerContexts::Options copts;
  copts.max_environ_bytes = o.environ_cache;
  copts.caller_accounts = !o.daemon_nss;
  daemon::CallerContexts contexts(copts);
  contexts.follow_rules(**state);  // keep only the variables the rules can take
  daemon::LinkService links(**state, contexts);
  fs::FsConfig fcfg;
  fcfg.entry_timeout = o.entry_timeout;
  fcfg.attr_timeout = o.attr_timeout;
  fcfg.negative_timeout = o.negative_timeout;
  fcfg.single_user = o.single_user;
  fcfg.posix_acl = o.acl;
  fcfg.max_open_files = plan.max_open_files;
  fs::Filesystem filesystem(fcfg, **inodes, **state, contexts, links);
  // -o noatime / nodiratime: what the daemon and passthrough read leaves
  // SOURCE's atimes alone too (atime.hpp).
  std::optional<fs::QuietAtime> quiet_atime;
  if (o.noatime || o.nodiratime) {
    if (auto q = fs::QuietAtime::open(o.source); q) {
      quiet_atime.emplace(std::move(*q));
      filesystem.set_quiet_atime(&*quiet_atime, o.noatime);
    } else {
      spdlog::warn("{}: reads through the mount still update atimes in SOURCE ({})",
                   o.noatime ? "noatime" : "nodiratime", q.error().message);
    }
  }

  std::vector<std::string> fuse_argv_s{"vsymfs", "-o", o.fuse_mount_options};
  if (o.debug) fuse_argv_s.emplace_back("-d");
  std::vector<char*> fuse_argv;
  for (auto& s : fuse_argv_s) fuse_argv.push_back(s.data());
  fuse_args fargs = FUSE_ARGS_INIT(static_cast<int>(fuse_argv.size()), fuse_argv.data());
  const auto& ops = fs::Filesystem::operations();
  fuse_session* se = fuse_session_new(&fargs, &ops, sizeof ops, &filesystem);
  if (!se) startup.fail(kUsage, "invalid mount options: " + o.fuse_mount_options + held_fuse_messages());
  if (fuse_set_signal_handlers(se) != 0) startup.fail(kInternal, "cannot install signal handlers");
  // The control server before the mount: it loads the persisted run-time
  // values (the first lookups must see them) and opens SOURCE by path,
  // which with MOUNTPOINT == SOURCE must still find the underlying directory.
  control::ServerOptions sopts;
  sopts.socket_path = o.socket_path;
  sopts.state_path = o.state_path;
  // `vsymctl status`: the mount state's lines, then these, then the server's.
  FsStatus fs_status;
  daemon::CallerCacheStatus caller_status(contexts);
  daemon::LinkCacheStatus link_status(links);
  sopts.status = {&fs_status, &caller_status, &link_status};
  auto server = control::Server::start(**state, links, contexts, sopts);
  if (!server) startup.fail(kControl, server.error().message);
  // Created before the mount: it looks at SOURCE by path, which with
  // MOUNTPOINT == SOURCE would afterwards be our own (not yet served) mount.
  std::unique_ptr<fs::Passthrough> passthrough;
  if (o.passthrough) {
    if (auto cap = fs::Passthrough::check_capability(); cap)
      passthrough = std::make_unique<fs::Passthrough>(o.source);
    else
      spdlog::warn("passthrough: off, {}; file I/O goes through the daemon", cap.error().message);
  }
  // Whether requests may come over io_uring; -o uring fails here without it.
  auto transport = fs::UringTransport::create(o.uring, o.single_thread);
  if (!transport) {
    server->reset();
    startup.fail(kMount, transport.error().message);
  }
  if (fuse_session_mount(se, o.mountpoint.c_str()) != 0) {
    server->reset();  // _exit below runs no destructors: remove the socket now
    std::string hint;
    if (::geteuid() != 0 && ::access("/dev/fuse", R_OK | W_OK) != 0)
      hint = "; users can mount only where /dev/fuse is open to them (Debian's default is mode 0666; here it is "
             "not), so run vsymfs as root or ask for that";
    startup.fail(kMount, "cannot mount " + o.source + " on " + o.mountpoint + held_fuse_messages() + hint);
  }

  // The hooks go in before the loop reads INIT; whether the kernel takes
  // passthrough or io_uring is known only from INIT, and every refusal falls
  // back to plain FUSE reads and writes, or /dev/fuse reads (logged once).
  // The io_uring transport, when it may be used, owns the hooks and calls
  // passthrough's.
  if (passthrough) {
    if (auto r = (*transport)->install(se, passthrough.get()); r) {
      filesystem.set_passthrough(passthrough.get());
    } else {
      spdlog::warn("passthrough: off, {}", r.error().message);
      passthrough.reset();
    }
  }
  if (!passthrough)
    if (auto r = (*transport)->install(se, nullptr); !r) spdlog::warn("io_uring: off, {}", r.error().message);

  fs_status.filesystem = &filesystem;
  fs_status.passthrough = passthrough.get();
  fs_status.table = inodes->get();
  fs_status.transport = transport->get();
  fs_status.mounted.store(true, std::memory_order_release);
  filesystem.set_control_socket((*server)->socket_path());
  filesystem.attach_session(se);
  if (auto w = (*state)->start_watching(); !w)
    spdlog::warn("rules file changes will not be noticed (SIGHUP and vsymctl reload still work): {}", w.error().message);

  std::atomic<bool> stopping{false};
  std::mutex loop_mu;
  std::condition_variable loop_cv;
  bool loop_done = false;
  const pthread_t main_thread = pthread_self();
  std::thread signals([&] {
    for (;;) {
      int sig = 0;
      if (sigwait(&handled, &sig) != 0 || stopping.load()) return;
      if (sig != SIGHUP) {
        spdlog::info("{}: unmounting", sig == SIGTERM ? "SIGTERM" : "SIGINT");
        fuse_session_exit(se);
        // A wake-up that reaches the main thread before its wait begins, or
        // just as an interrupted wait restarts, is lost: repeat it until
        // the loop has returned.
        std::unique_lock lock(loop_mu);
        while (!loop_done) {
          pthread_kill(main_thread, wake_signal);
          loop_cv.wait_for(lock, std::chrono::milliseconds(100));
        }
        continue;
      }
      fs::service::reloading();
      if (auto r = (*state)->reload(); r) {
        spdlog::info("SIGHUP: rules reloaded from {}", (*state)->rules()->origin);
        fs::service::reloaded("serving; rules reloaded from " + (*state)->rules()->origin);
      } else {
        spdlog::error("SIGHUP: rules not reloaded, the old rules stay in force: {}", r.error().message);
        fs::service::reloaded("serving; rules not reloaded: " + r.error().message);
      }
    }
  });

  g_holding_fuse_messages = false;
  spdlog::info("mounted {} on {} (rules from {}; fd budget {}, open files at most {}, {} identity, inodes by {})",
               o.source, o.mountpoint, (*state)->rules()->origin, plan.budget, plan.max_open_files,
               o.single_user ? "single-user" : "per-caller", (*inodes)->handle_mode().use ? "file handle" : "name");
  // Details of the mount go after the "mounted" line: before it, any line
  // would break the one-line startup error (Process.StartupErrorsAreOneLine...).
  spdlog::info("evicted inodes are found again by {}: {}",
               (*inodes)->handle_mode().use ? "file handle (else by parent and name)" : "parent and name",
               (*inodes)->handle_mode().reason);
  if (int e = (*inodes)->quiet_links_error(); e != 0)
    spdlog::info("stat of a symlink may update its atime the first time the daemon meets it (no read-only clone of "
                 "SOURCE's mount: {}; vsymfs(8), SYMLINK TIMES)", std::strerror(e));
  startup.succeeded();
  fs::service::ready("serving " + o.source + " on " + o.mountpoint + " (rules from " + (*state)->rules()->origin + ")");

  // The wake-up signal may interrupt the loop's wait, nothing else.
  pthread_sigmask(SIG_UNBLOCK, &wake, nullptr);
  int rc = 0;
  if (o.single_thread) {
    rc = fuse_session_loop(se);
  } else {
    fuse_loop_config* lcfg = fuse_loop_cfg_create();
    fuse_loop_cfg_set_max_threads(lcfg, o.max_threads);
    fuse_loop_cfg_set_clone_fd(lcfg, 0);
    rc = fuse_session_loop_mt(se, lcfg);
    fuse_loop_cfg_destroy(lcfg);
  }
  pthread_sigmask(SIG_BLOCK, &wake, nullptr);
  {
    std::lock_guard lock(loop_mu);
    loop_done = true;
  }
  loop_cv.notify_all();

  fs::service::stopping();
  (*transport)->stop();  // no request runs past this point
  stopping = true;
  pthread_kill(signals.native_handle(), SIGHUP);
  signals.join();
  (*state)->stop_watching();
  server->reset();
  filesystem.detach_session();
  if (passthrough) spdlog::info("{}", passthrough->summary());
  fuse_session_unmount(se);
  fuse_remove_signal_handlers(se);
  fuse_session_destroy(se);
  fuse_opt_free_args(&fargs);
  spdlog::info("unmounted {}", o.mountpoint);
  // The loop returns the number of the signal that ended it (SIGTERM,
  // SIGINT: a clean unmount), or a negative errno when it failed.
  return rc >= 0 ? kOk : kInternal;
}
