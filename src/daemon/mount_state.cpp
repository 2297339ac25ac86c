#include "daemon/mount_state.hpp"

#include <fcntl.h>
#include <poll.h>
#include <pwd.h>
#include <sys/eventfd.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <climits>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <deque>
#include <filesystem>
#include <utility>
#include <vector>

#include <spdlog/spdlog.h>

#include "vsymfs/value_source.hpp"
#include "vsymfs_config.h"

namespace vsymfs::daemon {

namespace {

// Editors save in bursts (write, rename, chmod); one reload per burst.
constexpr int kDebounceMs = 100;
// How often the watcher looks whether SOURCE is still where it was: a
// readlink and an fstat, about 2 us.
constexpr auto kSourceCheckInterval = std::chrono::seconds(1);

// The path the kernel gives an open descriptor (d_path: " (deleted)" when
// removed; relative to its filesystem's root when that is no longer
// reachable, e.g. after a lazy unmount).
std::string fd_path(int fd) {
  char link[64];
  std::snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
  char buf[PATH_MAX];
  const ssize_t n = ::readlink(link, buf, sizeof buf);
  return n < 0 ? std::string() : std::string(buf, static_cast<std::size_t>(n));
}

bool file_exists(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0;
}

// The kernel's limit on links followed in one path walk.
constexpr int kMaxLinks = 40;

void push_components(std::string_view path, std::deque<std::string>& todo) {
  std::deque<std::string> parts;
  std::size_t i = 0;
  while (i < path.size()) {
    const std::size_t slash = path.find('/', i);
    const std::size_t end = slash == std::string_view::npos ? path.size() : slash;
    if (end > i) parts.emplace_back(path.substr(i, end - i));
    i = end + 1;
  }
  todo.insert(todo.begin(), parts.begin(), parts.end());
}

std::string owner_name(uid_t uid) {
  std::vector<char> buf(4096);
  passwd pw{};
  passwd* res = nullptr;
  if (::getpwuid_r(uid, &pw, buf.data(), buf.size(), &res) == 0 && res != nullptr)
    return std::to_string(uid) + " (" + pw.pw_name + ")";
  return std::to_string(uid);
}

std::string octal_mode(mode_t mode) {
  char buf[8];
  std::snprintf(buf, sizeof buf, "%04o", static_cast<unsigned>(mode & 07777));
  return buf;
}

std::string iso_time(std::chrono::system_clock::time_point tp) {
  const std::time_t t = std::chrono::system_clock::to_time_t(tp);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

}  // namespace

Result<void> check_rules_file_trusted(const std::string& path, uid_t self) {
  if (path.empty()) return make_error(ENOENT, "empty rules file path");
  std::deque<std::string> todo;
  if (path[0] != '/') {
    char cwd[PATH_MAX];
    if (::getcwd(cwd, sizeof cwd) == nullptr)
      return make_error(errno, path + ": cannot tell where it is: getcwd: " + std::strerror(errno));
    push_components(path, todo);
    push_components(cwd, todo);
  } else {
    push_components(path, todo);
  }
  const std::string fix_owner = self == 0 ? "root" : "root or uid " + std::to_string(self);
  const auto refuse = [&](const std::string& what, const std::string& why, const std::string& fix) {
    return make_error(EPERM, "refusing rules file " + path + ": " + what + " " + why +
                                 ", so others could change this mount's rules ([locked] values included); " + fix);
  };
  const auto trusted_owner = [&](const struct stat& st) { return st.st_uid == 0 || st.st_uid == self; };
  const auto writable_by_others = [](const struct stat& st) { return (st.st_mode & (S_IWGRP | S_IWOTH)) != 0; };

  std::string cur = "/";  // a directory, every symbolic link before it resolved
  struct stat st {};
  if (::lstat("/", &st) != 0) return make_error(errno, std::string("/: ") + std::strerror(errno));
  if (!trusted_owner(st)) return refuse("/", "belongs to uid " + owner_name(st.st_uid), "chown root /");
  if (writable_by_others(st) && (st.st_mode & S_ISVTX) == 0)
    return refuse("/", "is writable by others (mode " + octal_mode(st.st_mode) + ")", "chmod go-w /");
  int links = 0;
  while (!todo.empty()) {
    const std::string name = std::move(todo.front());
    todo.pop_front();
    if (name == ".") continue;
    if (name == "..") {  // cur holds no symbolic link: its parent is textual
      const auto slash = cur.rfind('/');
      cur = slash == 0 || slash == std::string::npos ? "/" : cur.substr(0, slash);
      continue;
    }
    const std::string next = cur == "/" ? "/" + name : cur + "/" + name;
    if (::lstat(next.c_str(), &st) != 0) return make_error(errno, next + ": " + std::strerror(errno));
    if (!trusted_owner(st))
      return refuse(next, "belongs to uid " + owner_name(st.st_uid), "chown " + fix_owner + " " + next);
    if (S_ISLNK(st.st_mode)) {
      // Who may change the link is settled: its directory and its owner
      // were checked. Where it leads is checked next.
      if (++links > kMaxLinks) return make_error(ELOOP, path + ": too many levels of symbolic links");
      char target[PATH_MAX];
      const ssize_t n = ::readlink(next.c_str(), target, sizeof target);
      if (n < 0) return make_error(errno, next + ": " + std::strerror(errno));
      const std::string_view t(target, static_cast<std::size_t>(n));
      if (!t.empty() && t.front() == '/') cur = "/";
      push_components(t, todo);
      continue;
    }
    if (S_ISDIR(st.st_mode)) {
      if (writable_by_others(st) && (st.st_mode & S_ISVTX) == 0)
        return refuse(next, "is writable by others (mode " + octal_mode(st.st_mode) + ")", "chmod go-w " + next);
      cur = next;
      continue;
    }
    if (!todo.empty()) return make_error(ENOTDIR, next + ": " + std::strerror(ENOTDIR));
    if (writable_by_others(st))
      return refuse(next, "is writable by others (mode " + octal_mode(st.st_mode) + ")", "chmod go-w " + next);
    cur = next;
  }
  return {};
}

MountState::MountState(Config cfg) : cfg_(std::move(cfg)) {}

MountState::~MountState() {
  stop_watching();
  source_fd_.reset();
}

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
  // What SOURCE is now, to notice later when its path leads elsewhere
  // (opened before the mount: with MOUNTPOINT == SOURCE this is the
  // directory underneath). Failing here is not ours to report: the inode
  // table opens SOURCE next and says why it cannot.
  st->source_fd_.reset(::open(c.source.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
  if (st->source_fd_) st->source_seen_ = fd_path(st->source_fd_.get());

  auto rules = st->load_rules();
  if (!rules) return std::move(rules).error();
  st->publish_host(*rules);
  st->rules_.store(std::move(*rules));
  st->runtime_.store(std::make_shared<const RuntimeVars>());
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
  // As sshd does for its files: rules that another user could have written
  // are not taken (a daemon serving other users would follow them). Checked
  // at every load, as the file may have been replaced since.
  if (auto trusted = check_rules_file_trusted(rules_file_, ::geteuid()); !trusted) return std::move(trusted).error();
  auto loaded = load_rules_file(rules_file_);
  if (!loaded) {
    Error e = std::move(loaded).error();
    // load_rules_file names the file in parse errors; make sure every error does.
    if (e.message.find(rules_file_) == std::string::npos) e.message = rules_file_ + ": " + e.message;
    return e;
  }
  return std::shared_ptr<const Rules>(std::make_shared<const Rules>(std::move(*loaded)));
}

void MountState::publish_host(std::shared_ptr<const Rules> rules) {
  // The host name again: one set after the daemon started (hostnamectl,
  // a container's runtime) counts from the next reload on.
  HostView view(*rules, read_host_info());
  host_.store(std::make_shared<const HostSnapshot>(HostSnapshot{std::move(rules), std::move(view)}));
}

std::shared_ptr<const HostView> MountState::host_view(const Rules& rules) const {
  std::shared_ptr<const HostSnapshot> snap = host_.load();
  // Both objects are alive (the snapshot holds its rules, the caller its
  // own), so equal addresses mean the same rules.
  if (snap->rules.get() == &rules) return std::shared_ptr<const HostView>(snap, &snap->view);
  return std::make_shared<const HostView>(rules, snap->view.host());
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
    // The default file is optional at start, but once its rules are in
    // force, its disappearing is not a request for the built-in ones (an
    // editor may delete before it writes): they stay, as for any bad file.
    if (rules && !rules_file_required_ && (*rules)->origin != rules_file_ && rules_.load()->origin == rules_file_)
      rules = make_error(ENOENT, rules_file_ + ": " + std::strerror(ENOENT) +
                                     " (the rules read from it stay in force; a restart without it takes the "
                                     "built-in rules)");
    if (!rules) {
      counters_.reload_failures.fetch_add(1, std::memory_order_relaxed);
      std::lock_guard lock(mu_);
      reload_error_ = {rules.error().message, std::chrono::system_clock::now()};
      return std::move(rules).error();
    }
    // The host view before the rules (a reader of the new rules finds its
    // view), rules before generation: a reader that sees the new generation
    // is guaranteed to see these rules (LinkService tags parsed templates
    // with the generation it read first).
    publish_host(*rules);
    rules_.store(std::move(*rules));
    generation_.fetch_add(1, std::memory_order_acq_rel);
    {
      std::lock_guard lock(mu_);
      loaded_at_ = std::chrono::system_clock::now();
      reload_error_ = {};
    }
    counters_.reloads.fetch_add(1, std::memory_order_relaxed);
  }
  notify_change();
  return {};
}

void MountState::publish_runtime(std::shared_ptr<const RuntimeVars> vars) noexcept {
  if (!vars) vars = std::make_shared<const RuntimeVars>();
  runtime_.store(std::move(vars));
  notify_change();
}

MountState::Subscription MountState::subscribe(std::function<void()> on_change) {
  std::lock_guard lock(subs_mu_);
  const std::uint64_t id = next_sub_id_++;
  subs_.emplace_back(id, std::move(on_change));
  return Subscription(this, id);
}

void MountState::unsubscribe(std::uint64_t id) noexcept {
  std::lock_guard lock(subs_mu_);
  std::erase_if(subs_, [id](const auto& s) { return s.first == id; });
}

MountState::Subscription::Subscription(Subscription&& other) noexcept
    : state_(std::exchange(other.state_, nullptr)), id_(other.id_) {}

MountState::Subscription& MountState::Subscription::operator=(Subscription&& other) noexcept {
  if (this != &other) {
    if (state_ != nullptr) state_->unsubscribe(id_);
    state_ = std::exchange(other.state_, nullptr);
    id_ = other.id_;
  }
  return *this;
}

MountState::Subscription::~Subscription() {
  if (state_ != nullptr) state_->unsubscribe(id_);
}

void MountState::notify_change() {
  // Under subs_mu_ (never mu_ or reload_mu_): a subscription dropped
  // meanwhile waits until its callback has returned.
  std::lock_guard lock(subs_mu_);
  for (const auto& [id, on_change] : subs_) on_change();
}

MountState::ReloadError MountState::last_reload_error() const {
  std::lock_guard lock(mu_);
  return reload_error_;
}

std::string MountState::source_problem() const {
  std::lock_guard lock(mu_);
  return source_problem_;
}

Result<void> MountState::start_watching() {
  std::lock_guard lock(watch_mu_);
  if (watcher_.joinable()) return {};
  UniqueFd stop(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (!stop) return make_error(errno, std::string("eventfd: ") + std::strerror(errno));
  // Without a rules file the thread only checks SOURCE.
  UniqueFd inotify;
  Result<void> watching;
  if (!rules_file_.empty()) {
    namespace fs = std::filesystem;
    const std::string dir = fs::path(rules_file_).parent_path().string();
    inotify.reset(::inotify_init1(IN_CLOEXEC | IN_NONBLOCK));
    // The directory, not the file: an editor replaces the file by rename,
    // and a watch on the old inode would never fire again.
    if (!inotify) {
      watching = make_error(errno, std::string("inotify_init1: ") + std::strerror(errno));
    } else if (::inotify_add_watch(inotify.get(), dir.empty() ? "." : dir.c_str(),
                                   IN_CLOSE_WRITE | IN_MOVED_TO | IN_CREATE | IN_DELETE) < 0) {
      const int e = errno;
      inotify.reset();
      watching = make_error(e, "cannot watch " + dir + " for changes to " + rules_file_ + ": " + std::strerror(e));
    }
  }
  const int efd = stop.get();
  watch_stop_fd_ = std::move(stop);
  // The thread owns the inotify descriptor and closes it when it ends.
  watcher_ = std::thread([this, ifd = inotify.release(), efd] {
    const UniqueFd owned(ifd);
    watch_loop(ifd, efd);
  });
  return watching;
}

void MountState::stop_watching() noexcept {
  std::lock_guard lock(watch_mu_);
  if (!watcher_.joinable()) return;
  std::uint64_t one = 1;
  [[maybe_unused]] ssize_t n = ::write(watch_stop_fd_.get(), &one, sizeof one);
  watcher_.join();
  watch_stop_fd_.reset();
}

void MountState::watch_loop(int inotify_fd, int stop_fd) {
  using Clock = std::chrono::steady_clock;
  const std::string name = std::filesystem::path(rules_file_).filename().string();
  alignas(inotify_event) char buf[4096];
  bool pending = false;
  // A regular file was created under the rules file's name and its writer
  // has not closed it yet: reading it now could take half a file (which may
  // well parse), so the reload waits for IN_CLOSE_WRITE.
  bool being_written = false;
  auto next_source_check = Clock::now();
  for (;;) {
    const auto now = Clock::now();
    if (now >= next_source_check) {
      check_source();
      next_source_check = now + kSourceCheckInterval;
    }
    auto wait_ms = std::chrono::duration_cast<std::chrono::milliseconds>(next_source_check - now).count() + 1;
    if (pending) wait_ms = std::min<long long>(wait_ms, kDebounceMs);
    pollfd fds[2] = {{stop_fd, POLLIN, 0}, {inotify_fd, POLLIN, 0}};
    const int rc = ::poll(fds, inotify_fd >= 0 ? 2 : 1, static_cast<int>(wait_ms));
    if (rc < 0) {
      if (errno == EINTR) continue;
      spdlog::error("rules watcher: poll: {}; no longer reloading on change nor checking SOURCE", std::strerror(errno));
      return;
    }
    if (fds[0].revents) return;
    if (rc == 0) {
      if (!pending) continue;  // only the SOURCE check was due
      // Quiet for kDebounceMs after a change: reload now.
      pending = false;
      if (being_written) continue;  // the writer's close brings it back
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
      p += sizeof(inotify_event) + ev->len;
      if (ev->len == 0 || name != ev->name) continue;
      pending = true;
      if (ev->mask & IN_CREATE) {
        // Created by open(O_CREAT): a file with one link, written next. A
        // hard link or symlink made there is complete already.
        struct stat st {};
        being_written = ::lstat(rules_file_.c_str(), &st) == 0 && S_ISREG(st.st_mode) && st.st_nlink == 1;
      } else {
        being_written = false;  // closed, renamed over, or deleted
      }
    }
  }
}

void MountState::check_source() {
  if (!source_fd_) return;
  std::string problem;
  struct stat st {};
  const std::string now = fd_path(source_fd_.get());
  if (::fstat(source_fd_.get(), &st) == 0 && st.st_nlink == 0) {
    problem = "SOURCE " + cfg_.source +
              " was removed: this mount serves the deleted directory, which has no names left and takes "
              "no new ones (ENOENT); a directory made at that path since is not served: unmount and mount "
              "again";
  } else if (!now.empty() && now != source_seen_) {
    struct stat there {};
    if (::stat(now.c_str(), &there) == 0 && there.st_dev == st.st_dev && there.st_ino == st.st_ino)
      problem = "SOURCE " + cfg_.source + " was moved to " + now + ": this mount goes on serving it there";
    else
      problem = "SOURCE " + cfg_.source +
                " is out of reach (the filesystem it is on was unmounted, or a directory above it was moved "
                "where this daemon cannot see): this mount goes on serving it until it is unmounted";
  }
  {
    std::lock_guard lock(mu_);
    if (problem == source_problem_) return;
    source_problem_ = problem;
  }
  if (!problem.empty())
    spdlog::error("{}", problem);
  else
    spdlog::info("SOURCE {} is back where it was", cfg_.source);
}

void MountState::status(StatusLines& out) const {
  const auto rules = this->rules();
  const auto rt = runtime();
  const auto num = [](std::uint64_t v) { return std::to_string(v); };
  const auto add = [&out](std::string key, std::string value) { out.emplace_back(std::move(key), std::move(value)); };
  add("mountpoint", cfg_.mountpoint);
  add("source", cfg_.source);
  const std::string problem = source_problem();
  add("source_state", problem.empty() ? "ok" : problem);
  add("rules", rules ? rules->origin : "");
  add("rules_loaded_at", iso_time(rules_loaded_at()));
  add("rules_generation", num(rules_generation()));
  // Why the last reload failed, until one succeeds: the old rules are in force.
  const auto reload_error = last_reload_error();
  add("rules_error", reload_error.message.empty()
                         ? "none"
                         : iso_time(reload_error.at) + " " + reload_error.message + " (the rules above stay in force)");
  add("per_caller", rules && rules->per_caller ? "yes" : "no");
  add("kernel_symlink_cache", rules && rules->kernel_may_cache_symlinks() ? "on" : "off");
  if (rules) {
    // What the shared rules give this host (docs/cluster.md).
    const std::shared_ptr<const HostView> host = host_view(*rules);
    add("hostname", host->host().hostname);
    add("member", std::to_string(host->member()) +
                      (host->member_pattern().empty() ? " ([cluster] member)"
                                                      : " ([cluster.members] \"" + host->member_pattern() + "\")"));
    std::string tables;
    for (std::size_t i : host->matched_tables())
      tables += (tables.empty() ? "\"" : ", \"") + rules->hosts[i].pattern + "\"";
    add("host_tables", tables.empty() ? "none" : tables);
  }
  std::size_t user_vars = 0;
  if (rt) {
    for (const auto& [uid, table] : rt->users) user_vars += table.size();
  }
  add("runtime_users", num(rt ? rt->users.size() : 0));
  add("runtime_user_vars", num(user_vars));
  add("runtime_system_vars", num(rt ? rt->system.size() : 0));
  const Counters& k = counters_;
  add("readlinks", num(k.readlinks.load()));
  add("expansions", num(k.expansions.load()));
  add("expansion_errors", num(k.errors.load()));
  for (int s = 0; s <= static_cast<int>(Scope::Default); ++s)
    add("values_from_" + std::string(to_string(static_cast<Scope>(s))), num(k.by_scope[s].load()));
  add("environ_timeouts", num(k.environ_timeouts.load()));
  add("reloads", num(k.reloads.load()));
  add("reload_failures", num(k.reload_failures.load()));
}

}  // namespace vsymfs::daemon
