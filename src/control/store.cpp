#include "control/store.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <cstring>
#include <ctime>
#include <sstream>

#include <toml++/toml.h>

#include "control/paths.hpp"
#include "control/protocol.hpp"
#include "vsymfs/unique_fd.hpp"

namespace vsymfs::control {
namespace {

constexpr std::int64_t kStateVersion = 1;

Error sys_error(int code, const std::string& what) { return make_error(code, what + ": " + std::strerror(code)); }

std::string where(std::string_view origin, const toml::source_region& src) {
  return std::string(origin) + ":" + std::to_string(src.begin.line) + ":" + std::to_string(src.begin.column);
}

Result<void> read_table(const toml::table& table, std::string_view origin, std::size_t max_count, VarMap& out) {
  for (const auto& [key, node] : table) {
    const auto* str = node.as_string();
    if (str == nullptr)
      return make_error(EINVAL, where(origin, node.source()) + ": value of '" + std::string(key.str()) +
                                    "' is not a string");
    if (auto ok = check_runtime_set(out, key.str(), str->get(), max_count); !ok)
      return make_error(EINVAL, where(origin, node.source()) + ": " + ok.error().message);
    out.emplace(std::string(key.str()), str->get());
  }
  return {};
}

std::string now_stamp() {
  const std::time_t t = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y%m%dT%H%M%SZ", &tm);
  return buf;
}

Result<void> write_all(int fd, std::string_view data, const std::string& path) {
  while (!data.empty()) {
    const ssize_t n = ::write(fd, data.data(), data.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      return sys_error(errno, "cannot write " + path);
    }
    data.remove_prefix(static_cast<std::size_t>(n));
  }
  return {};
}

}  // namespace

std::string serialize_state(const RuntimeVars& vars) {
  toml::table root;
  root.insert("version", kStateVersion);
  toml::table system;
  for (const auto& [k, v] : vars.system) system.insert(k, v);
  root.insert("system", std::move(system));
  toml::table users;
  for (const auto& [uid, table] : vars.users) {
    if (table.empty()) continue;
    toml::table t;
    for (const auto& [k, v] : table) t.insert(k, v);
    users.insert(std::to_string(uid), std::move(t));
  }
  root.insert("user", std::move(users));
  std::ostringstream out;
  out << "# vsymfs run-time variables, written by the daemon (vsymctl set); edits are lost.\n";
  out << root << '\n';
  return out.str();
}

Result<RuntimeVars> parse_state(std::string_view text, std::string_view origin) {
  toml::table root;
  try {
    root = toml::parse(text, std::string(origin));
  } catch (const toml::parse_error& e) {
    return make_error(EINVAL, where(origin, e.source()) + ": " + std::string(e.description()));
  }
  RuntimeVars vars;
  for (const auto& [key, node] : root) {
    const std::string_view k = key.str();
    if (k == "version") {
      const auto* v = node.as_integer();
      if (v == nullptr || v->get() != kStateVersion)
        return make_error(EINVAL, where(origin, node.source()) + ": unsupported state version (expected 1)");
    } else if (k == "system") {
      const auto* t = node.as_table();
      if (t == nullptr) return make_error(EINVAL, where(origin, node.source()) + ": 'system' is not a table");
      if (auto ok = read_table(*t, origin, kMaxVarsSystem, vars.system); !ok) return ok.error();
    } else if (k == "user") {
      const auto* t = node.as_table();
      if (t == nullptr) return make_error(EINVAL, where(origin, node.source()) + ": 'user' is not a table");
      for (const auto& [uid_key, user_node] : *t) {
        const std::string_view u = uid_key.str();
        uid_t uid = 0;
        auto [end, ec] = std::from_chars(u.data(), u.data() + u.size(), uid);
        if (u.empty() || ec != std::errc{} || end != u.data() + u.size() || uid == static_cast<uid_t>(-1))
          return make_error(EINVAL, where(origin, user_node.source()) + ": '" + std::string(u) +
                                        "' is not a uid");
        const auto* ut = user_node.as_table();
        if (ut == nullptr)
          return make_error(EINVAL, where(origin, user_node.source()) + ": user." + std::string(u) +
                                        " is not a table");
        if (auto ok = read_table(*ut, origin, kMaxVarsPerUser, vars.users[uid]); !ok) return ok.error();
      }
    } else {
      return make_error(EINVAL, where(origin, node.source()) + ": unknown key '" + std::string(k) +
                                    "' (expected version, system or user)");
    }
  }
  return vars;
}

Result<std::shared_ptr<const RuntimeVars>> with_set(const RuntimeVars& current, bool system, uid_t uid,
                                                     std::string_view name, std::string_view value) {
  if (!valid_utf8(value)) return make_error(EINVAL, "value is not valid UTF-8");
  const VarMap empty;
  const VarMap* table = &current.system;
  if (!system) {
    auto it = current.users.find(uid);
    table = it == current.users.end() ? &empty : &it->second;
  }
  if (auto ok = check_runtime_set(*table, name, value, system ? kMaxVarsSystem : kMaxVarsPerUser); !ok)
    return ok.error();
  auto next = std::make_shared<RuntimeVars>(current);
  VarMap& target = system ? next->system : next->users[uid];
  target.insert_or_assign(std::string(name), std::string(value));
  return std::shared_ptr<const RuntimeVars>(std::move(next));
}

Result<std::shared_ptr<const RuntimeVars>> with_unset(const RuntimeVars& current, bool system, uid_t uid,
                                                       std::string_view name) {
  const std::string scope = system ? "system scope" : "user scope of uid " + std::to_string(uid);
  auto next = std::make_shared<RuntimeVars>(current);
  if (system) {
    auto it = next->system.find(name);
    if (it == next->system.end()) return make_error(ENOENT, std::string(name) + " is not set in the " + scope);
    next->system.erase(it);
  } else {
    auto user = next->users.find(uid);
    auto it = user == next->users.end() ? VarMap::iterator{} : user->second.find(name);
    if (user == next->users.end() || it == user->second.end())
      return make_error(ENOENT, std::string(name) + " is not set in the " + scope);
    user->second.erase(it);
    if (user->second.empty()) next->users.erase(user);
  }
  return std::shared_ptr<const RuntimeVars>(std::move(next));
}

Result<StateFile::Loaded> StateFile::load() const {
  Loaded out;
  UniqueFd owned(::open(path_.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW));
  const int fd = owned.get();
  if (fd < 0) {
    if (errno == ENOENT) return out;
    return sys_error(errno, "cannot open state file " + path_);
  }
  std::string text;
  char buf[16384];
  // A state file is at most a few hundred KiB; a much larger one is corrupt.
  constexpr std::size_t kMaxStateFile = 16 * 1024 * 1024;
  for (;;) {
    const ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0) {
      if (errno == EINTR) continue;
      const int err = errno;
      owned.reset();
      return sys_error(err, "cannot read state file " + path_);
    }
    if (n == 0) break;
    text.append(buf, static_cast<std::size_t>(n));
    if (text.size() > kMaxStateFile) break;
  }
  owned.reset();

  Result<RuntimeVars> parsed = text.size() > kMaxStateFile
                                   ? Result<RuntimeVars>(make_error(EFBIG, path_ + ": state file is too large"))
                                   : parse_state(text, path_);
  if (parsed) {
    out.vars = std::move(parsed.value());
    return out;
  }
  // Keep the evidence: the next save would otherwise replace it.
  const std::string aside = path_ + ".corrupt-" + now_stamp();
  if (::rename(path_.c_str(), aside.c_str()) != 0)
    return sys_error(errno, "state file " + path_ + " is corrupt (" + parsed.error().message +
                                ") and cannot be moved aside");
  out.warning = "state file is corrupt: " + parsed.error().message + "; moved it to " + aside +
                " and started with no run-time values";
  return out;
}

Result<void> StateFile::save(const RuntimeVars& vars) const {
  const std::string dir = parent_directory(path_);
  if (auto ok = ensure_directory(dir); !ok) return ok;
  const std::string text = serialize_state(vars);
  const std::string tmp = path_ + ".tmp." + std::to_string(::getpid());
  UniqueFd owned(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600));
  const int fd = owned.get();
  if (fd < 0) return sys_error(errno, "cannot create " + tmp);
  auto fail = [&](Error e) -> Result<void> {
    ::unlink(tmp.c_str());
    return e;
  };
  if (auto ok = write_all(fd, text, tmp); !ok) {
    owned.reset();
    return fail(ok.error());
  }
  if (::fsync(fd) != 0) {
    const int err = errno;
    owned.reset();
    return fail(sys_error(err, "cannot fsync " + tmp));
  }
  if (owned.close() != 0) return fail(sys_error(errno, "cannot close " + tmp));
  if (::rename(tmp.c_str(), path_.c_str()) != 0) return fail(sys_error(errno, "cannot rename " + tmp));
  // The rename is durable only once the directory entry is on disk.
  UniqueFd owned_dir(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  const int dfd = owned_dir.get();
  if (dfd < 0) return sys_error(errno, "cannot open " + dir + " to fsync it");
  const int rc = ::fsync(dfd);
  const int err = errno;
  owned_dir.reset();
  if (rc != 0) return sys_error(err, "cannot fsync " + dir);
  return {};
}

}  // namespace vsymfs::control
