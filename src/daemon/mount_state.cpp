#include "mount_state.hpp"

#include <poll.h>
#include <sys/eventfd.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>

#include <spdlog/spdlog.h>

#include "vsymfs_config.h"

namespace vsymfs::daemon {

namespace {

// Editors save in bursts (write, rename, chmod); one reload per burst.
constexpr int kDebounceMs = 100;

bool file_exists(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0;
}

}  // namespace

MountState::MountState(Config cfg) : cfg_(std::move(cfg)) {}

MountState::~MountState() { stop_watching(); }

Result<std::unique_ptr<MountState>> MountState::create(Config cfg) {
  // @sys probes compare link targets with the mountpoint as text.
  for (std::string* path : {&cfg.source, &cfg.mountpoint})
    while (path->size() > 1 && path->back() == '/') path->pop_back();
  std::unique_ptr<MountState> st(new MountState(std::move(cfg)));
  const Config& c = st->cfg_;
  if (!c.builtin_rules) {
    if (c.rules_path.empty()) {
      st->rules_file_ = VSYMFS_DEFAULT_RULES_PATH;
      st->rules_file_required_ = false;
    } else {
      st->rules_file_ = c.rules_path;
      st->rules_file_required_ = c.rules_path_explicit || c.rules_path != VSYMFS_DEFAULT_RULES_PATH;
    }
  }
  st->host_ = read_host_info();

  auto rules = st->load_rules();
  if (!rules) return std::move(rules).error();
  st->rules_.store(std::move(*rules), std::memory_order_release);
  st->runtime_.store(std::make_shared<const RuntimeVars>(), std::memory_order_release);
  st->generation_.store(1, std::memory_order_release);
  st->loaded_at_ = std::chrono::system_clock::now();
  return st;
}

Result<std::shared_ptr<const Rules>> MountState::load_rules() const {
  if (rules_file_.empty()) return std::shared_ptr<const Rules>(std::make_shared<const Rules>(default_rules()));
  if (!rules_file_required_ && !file_exists(rules_file_)) {
    // The default path is optional: without it the built-in rules serve.
    return std::shared_ptr<const Rules>(std::make_shared<const Rules>(default_rules()));
  }
  auto loaded = load_rules_file(rules_file_);
  if (!loaded) {
    Error e = std::move(loaded).error();
    // load_rules_file names the file in parse errors; make sure every error does.
    if (e.message.find(rules_file_) == std::string::npos) e.message = rules_file_ + ": " + e.message;
    return e;
  }
  return std::shared_ptr<const Rules>(std::make_shared<const Rules>(std::move(*loaded)));
}

std::chrono::system_clock::time_point MountState::rules_loaded_at() const {
  std::lock_guard lock(mu_);
  return loaded_at_;
}

Result<void> MountState::reload() {
  {
    std::lock_guard reload_lock(reload_mu_);
    if (rules_file_.empty()) return {};  // built-in rules only: nothing to re-read
    auto rules = load_rules();
    if (!rules) {
      counters_.reload_failures.fetch_add(1, std::memory_order_relaxed);
      return std::move(rules).error();
    }
    // Rules before generation: a reader that sees the new generation is
    // guaranteed to see these rules (LinkService tags parsed templates with
    // the generation it read first).
    rules_.store(std::move(*rules), std::memory_order_release);
    generation_.fetch_add(1, std::memory_order_acq_rel);
    {
      std::lock_guard lock(mu_);
      loaded_at_ = std::chrono::system_clock::now();
    }
    counters_.reloads.fetch_add(1, std::memory_order_relaxed);
  }
  notify_change();
  return {};
}

void MountState::publish_runtime(std::shared_ptr<const RuntimeVars> vars) noexcept {
  if (!vars) vars = std::make_shared<const RuntimeVars>();
  runtime_.store(std::move(vars), std::memory_order_release);
  notify_change();
}

void MountState::set_on_change(std::function<void()> hook) {
  std::lock_guard lock(mu_);
  on_change_ = std::move(hook);
}

void MountState::notify_change() {
  std::function<void()> hook;
  {
    std::lock_guard lock(mu_);
    hook = on_change_;
  }
  // Outside the lock: the hook calls into the kernel (invalidations), which
  // may call back into the filesystem.
  if (hook) hook();
}

Result<void> MountState::start_watching() {
  std::lock_guard lock(watch_mu_);
  if (rules_file_.empty() || watcher_.joinable()) return {};
  namespace fs = std::filesystem;
  const std::string dir = fs::path(rules_file_).parent_path().string();

  int ifd = ::inotify_init1(IN_CLOEXEC | IN_NONBLOCK);
  if (ifd < 0) return make_error(errno, std::string("inotify_init1: ") + std::strerror(errno));
  // The directory, not the file: an editor replaces the file by rename, and
  // a watch on the old inode would never fire again.
  if (::inotify_add_watch(ifd, dir.empty() ? "." : dir.c_str(), IN_CLOSE_WRITE | IN_MOVED_TO | IN_CREATE | IN_DELETE) < 0) {
    int e = errno;
    ::close(ifd);
    return make_error(e, "cannot watch " + dir + " for changes to " + rules_file_ + ": " + std::strerror(e));
  }
  int efd = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (efd < 0) {
    int e = errno;
    ::close(ifd);
    return make_error(e, std::string("eventfd: ") + std::strerror(e));
  }
  watch_stop_fd_ = efd;
  watcher_ = std::thread([this, ifd, efd] {
    watch_loop(ifd, efd);
    ::close(ifd);
  });
  return {};
}

void MountState::stop_watching() noexcept {
  std::lock_guard lock(watch_mu_);
  if (!watcher_.joinable()) return;
  std::uint64_t one = 1;
  [[maybe_unused]] ssize_t n = ::write(watch_stop_fd_, &one, sizeof one);
  watcher_.join();
  ::close(watch_stop_fd_);
  watch_stop_fd_ = -1;
}

void MountState::watch_loop(int inotify_fd, int stop_fd) {
  const std::string name = std::filesystem::path(rules_file_).filename().string();
  alignas(inotify_event) char buf[4096];
  bool pending = false;
  for (;;) {
    pollfd fds[2] = {{inotify_fd, POLLIN, 0}, {stop_fd, POLLIN, 0}};
    int rc = ::poll(fds, 2, pending ? kDebounceMs : -1);
    if (rc < 0) {
      if (errno == EINTR) continue;
      spdlog::error("rules watcher: poll: {}; no longer reloading on change", std::strerror(errno));
      return;
    }
    if (fds[1].revents) return;
    if (rc == 0) {  // quiet for kDebounceMs after a change: reload now
      pending = false;
      if (auto r = reload(); r)
        spdlog::info("rules reloaded from {} (changed on disk)", rules_file_);
      else
        spdlog::error("rules not reloaded, the old rules stay in force: {}", r.error().message);
      continue;
    }
    ssize_t n = ::read(inotify_fd, buf, sizeof buf);
    if (n <= 0) continue;
    for (char* p = buf; p < buf + n;) {
      auto* ev = reinterpret_cast<inotify_event*>(p);
      if (ev->len > 0 && name == ev->name) pending = true;
      p += sizeof(inotify_event) + ev->len;
    }
  }
}

void MountState::set_fs_status(std::function<StatusLines()> provider) {
  std::lock_guard lock(mu_);
  fs_status_ = std::move(provider);
}

MountState::StatusLines MountState::fs_status() const {
  std::function<StatusLines()> provider;
  {
    std::lock_guard lock(mu_);
    provider = fs_status_;
  }
  return provider ? provider() : StatusLines{};
}

}  // namespace vsymfs::daemon
