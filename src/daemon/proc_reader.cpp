#include "daemon/proc_reader.hpp"

#include <elf.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <charconv>
#include <cstdio>
#include <cstring>
#include <functional>

#include "vsymfs/unique_fd.hpp"

namespace vsymfs::daemon::proc {

namespace {

bool is_space(char c) noexcept { return c == ' ' || c == '\t' || c == '\n'; }

std::string_view skip_spaces(std::string_view s) noexcept {
  while (!s.empty() && is_space(s.front())) s.remove_prefix(1);
  return s;
}

// Reads one unsigned decimal number from the front of `s` (after blanks).
template <class T>
bool take_number(std::string_view& s, T& out, int base = 10) noexcept {
  s = skip_spaces(s);
  const char* end = s.data() + s.size();
  auto [p, ec] = std::from_chars(s.data(), end, out, base);
  if (ec != std::errc{} || p == s.data()) return false;
  s.remove_prefix(static_cast<std::size_t>(p - s.data()));
  return true;
}

// The rest of the line that starts with `key` (e.g. "Uid:"), or nullopt-ish:
// returns false when no line starts with it.
bool find_line(std::string_view text, std::string_view key, std::string_view& rest) noexcept {
  std::size_t pos = 0;
  while (pos < text.size()) {
    std::size_t eol = text.find('\n', pos);
    if (eol == std::string_view::npos) eol = text.size();
    std::string_view line = text.substr(pos, eol - pos);
    if (line.starts_with(key)) {
      rest = line.substr(key.size());
      return true;
    }
    pos = eol + 1;
  }
  return false;
}

template <class T>
bool take_four(std::string_view line, T (&ids)[4]) noexcept {
  for (T& id : ids)
    if (!take_number(line, id)) return false;
  return true;
}

Error errno_error(int code, const char* what, const char* path) {
  return make_error(code, std::string(what) + " " + path + ": " + std::strerror(code));
}

}  // namespace

Result<StatusIds> parse_status(std::string_view text) {
  StatusIds ids;
  std::string_view line;
  uid_t u[4];
  if (!find_line(text, "Uid:", line) || !take_four(line, u))
    return make_error(EINVAL, "status: missing or malformed Uid: line");
  gid_t g[4];
  std::string_view gline;
  if (!find_line(text, "Gid:", gline) || !take_four(gline, g))
    return make_error(EINVAL, "status: missing or malformed Gid: line");
  ids.ruid = u[0], ids.euid = u[1], ids.suid = u[2], ids.fsuid = u[3];
  ids.rgid = g[0], ids.egid = g[1], ids.sgid = g[2], ids.fsgid = g[3];

  std::string_view groups;
  if (!find_line(text, "Groups:", groups)) return make_error(EINVAL, "status: missing Groups: line");
  for (;;) {
    groups = skip_spaces(groups);
    if (groups.empty()) break;
    gid_t gid = 0;
    if (!take_number(groups, gid)) return make_error(EINVAL, "status: malformed Groups: line");
    ids.groups.push_back(gid);
  }
  std::string_view tgid;
  if (find_line(text, "Tgid:", tgid) && (!take_number(tgid, ids.tgid) || !skip_spaces(tgid).empty()))
    return make_error(EINVAL, "status: malformed Tgid: line");
  std::string_view caps;
  if (find_line(text, "CapPrm:", caps) && (!take_number(caps, ids.cap_permitted, 16) || !skip_spaces(caps).empty()))
    return make_error(EINVAL, "status: malformed CapPrm: line");
  return ids;
}

bool status_says_secure(const StatusIds& ids) noexcept {
  if (ids.ruid != ids.euid || ids.ruid != ids.suid || ids.rgid != ids.egid || ids.rgid != ids.sgid) return true;
  return ids.ruid != 0 && ids.cap_permitted != 0;
}

Result<ExecIdentity> parse_stat(std::string_view text) {
  std::size_t close = text.rfind(')');
  if (close == std::string_view::npos) return make_error(EINVAL, "stat: no ')' after the command name");
  std::string_view rest = text.substr(close + 1);
  // Field 3 (state) follows the ')'. Walk blank-separated fields counting
  // from 3; fields we do not need are skipped without parsing.
  ExecIdentity id;
  int field = 3;
  int found = 0;
  while (found < 4) {
    rest = skip_spaces(rest);
    if (rest.empty()) return make_error(EINVAL, "stat: too few fields (kernel older than 3.5?)");
    std::uint64_t* target = nullptr;
    switch (field) {
      case 22: target = &id.starttime; break;
      case 48: target = &id.arg_start; break;
      case 50: target = &id.env_start; break;
      case 51: target = &id.env_end; break;
      default: break;
    }
    if (target) {
      if (!take_number(rest, *target)) return make_error(EINVAL, "stat: field " + std::to_string(field) + " is not a number");
      ++found;
    } else {
      std::size_t end = rest.find_first_of(" \t\n");
      rest.remove_prefix(end == std::string_view::npos ? rest.size() : end);
    }
    ++field;
  }
  return id;
}

void parse_environ(std::string_view bytes, std::vector<std::string>& out) {
  out.clear();
  std::size_t pos = 0;
  while (pos < bytes.size()) {
    std::size_t nul = bytes.find('\0', pos);
    if (nul == std::string_view::npos) break;  // cut short by the size cap
    if (nul > pos) out.emplace_back(bytes.substr(pos, nul - pos));
    pos = nul + 1;
  }
}

Result<bool> parse_auxv_secure(std::span<const std::byte> bytes, unsigned word_bytes) {
  if (word_bytes != 4 && word_bytes != 8) return make_error(EINVAL, "auxv: word size must be 4 or 8");
  const std::size_t pair = 2 * word_bytes;
  auto word = [&](std::size_t off) -> std::uint64_t {
    if (word_bytes == 4) {
      std::uint32_t v;
      std::memcpy(&v, bytes.data() + off, 4);
      return v;
    }
    std::uint64_t v;
    std::memcpy(&v, bytes.data() + off, 8);
    return v;
  };
  for (std::size_t off = 0; off + pair <= bytes.size(); off += pair) {
    std::uint64_t type = word(off);
    if (type == AT_NULL) return false;
    if (type == AT_SECURE) return word(off + word_bytes) != 0;
  }
  return make_error(EINVAL, "auxv: no AT_NULL terminator");
}

Result<unsigned> parse_elf_class(std::span<const std::byte> head) {
  if (head.size() < EI_NIDENT || std::memcmp(head.data(), ELFMAG, SELFMAG) != 0)
    return make_error(EINVAL, "exe: not an ELF file");
  switch (static_cast<unsigned char>(head[EI_CLASS])) {
    case ELFCLASS32: return 32u;
    case ELFCLASS64: return 64u;
    default: return make_error(EINVAL, "exe: unknown ELF class");
  }
}

Result<unsigned long> parse_personality(std::string_view text) {
  unsigned long v = 0;
  std::string_view s = text;
  if (!take_number(s, v, 16) || !skip_spaces(s).empty())
    return make_error(EINVAL, "personality: not a hexadecimal number");
  return v;
}

bool is_linux32_personality(unsigned long persona) noexcept {
  constexpr unsigned long kPerMask = 0xff;   // PER_MASK
  constexpr unsigned long kPerLinux32 = 0x0008;
  return (persona & kPerMask) == kPerLinux32;
}

Result<SyscallState> parse_syscall(std::string_view text) {
  SyscallState st;
  std::string_view s = skip_spaces(text);
  if (s.starts_with("running")) return st;
  long nr = 0;
  if (!take_number(s, nr)) return make_error(EINVAL, "syscall: no system call number");
  if (nr == -1) return st;  // blocked, but not in a system call
  if (nr < 0) return make_error(EINVAL, "syscall: negative system call number");
  st.nr = nr;
  for (std::uint64_t& arg : st.args) {
    s = skip_spaces(s);
    if (!s.starts_with("0x")) return make_error(EINVAL, "syscall: argument is not 0x-hex");
    s.remove_prefix(2);
    if (!take_number(s, arg, 16)) return make_error(EINVAL, "syscall: argument is not 0x-hex");
  }
  st.in_syscall = true;
  return st;
}

Result<bool> read_bounded(const char* path, std::size_t max_bytes, std::string& out) {
  out.clear();
  UniqueFd owned(::open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY));
  const int fd = owned.get();
  if (fd < 0) return errno_error(errno, "open", path);
  // Small files are read in one go; environ may need several reads (the
  // kernel returns at most a page per read for it).
  out.resize(max_bytes < 4096 ? max_bytes + 1 : 4096);
  std::size_t len = 0;
  bool truncated = false;
  for (;;) {
    if (len == out.size()) {
      if (len > max_bytes) {
        truncated = true;
        break;
      }
      out.resize(std::min(out.size() * 2, max_bytes + 1));
    }
    ssize_t n = ::read(fd, out.data() + len, out.size() - len);
    if (n < 0) {
      if (errno == EINTR) continue;
      int e = errno;
      owned.reset();
      out.clear();
      return errno_error(e, "read", path);
    }
    if (n == 0) break;
    len += static_cast<std::size_t>(n);
  }
  owned.reset();
  if (len > max_bytes) {
    truncated = true;
    len = max_bytes;
  }
  out.resize(len);
  return truncated;
}

ProcPath::ProcPath(pid_t pid, const char* leaf) noexcept {
  std::snprintf(buf, sizeof buf, "/proc/%d/%s", static_cast<int>(pid), leaf);
}

Result<StatusIds> read_status(pid_t pid) {
  std::string text;
  auto r = read_bounded(ProcPath(pid, "status").c_str(), kMaxStatusBytes, text);
  if (!r) return std::move(r).error();
  return parse_status(text);
}

Result<std::size_t> read_small(const char* path, std::span<char> buf) {
  UniqueFd owned(::open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY));
  const int fd = owned.get();
  if (fd < 0) return errno_error(errno, "open", path);
  ssize_t n;
  do {
    n = ::read(fd, buf.data(), buf.size());
  } while (n < 0 && errno == EINTR);
  int e = errno;
  owned.reset();
  if (n < 0) return errno_error(e, "read", path);
  if (static_cast<std::size_t>(n) == buf.size()) return make_error(EFBIG, std::string(path) + ": larger than expected");
  return static_cast<std::size_t>(n);
}

Result<ExecIdentity> read_exec_identity(pid_t pid) {
  // On the readlink path (old kernels): read into the stack, no heap.
  char buf[kMaxStatBytes];
  auto n = read_small(ProcPath(pid, "stat").c_str(), buf);
  if (!n) return std::move(n).error();
  return parse_stat(std::string_view(buf, *n));
}

Result<std::uint64_t> read_auxv_hash(pid_t pid) {
  // The vector is at most a few hundred bytes (AT_VECTOR_SIZE words).
  char buf[1024];
  ProcPath path(pid, "auxv");
  auto n = read_small(path.c_str(), buf);
  if (!n) return std::move(n).error();
  if (*n == 0) return make_error(ESRCH, std::string(path.c_str()) + ": no memory image");
  return static_cast<std::uint64_t>(std::hash<std::string_view>{}(std::string_view(buf, *n)));
}

Result<bool> read_environ(pid_t pid, std::vector<std::string>& out) {
  std::string bytes;
  auto r = read_bounded(ProcPath(pid, "environ").c_str(), kMaxEnvironBytes, bytes);
  if (!r) return std::move(r).error();
  parse_environ(bytes, out);
  return *r;
}

Result<ExeFacts> read_exe(pid_t pid) {
  ProcPath path(pid, "exe");
  UniqueFd owned(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  const int fd = owned.get();
  if (fd < 0) return errno_error(errno, "open", path.c_str());
  std::byte head[EI_NIDENT];
  ssize_t n;
  do {
    n = ::pread(fd, head, sizeof head, 0);
  } while (n < 0 && errno == EINTR);
  int e = errno;
  struct stat st {};
  const bool stat_ok = n >= 0 && ::fstat(fd, &st) == 0;
  if (n >= 0 && !stat_ok) e = errno;
  owned.reset();
  if (n < 0) return errno_error(e, "read", path.c_str());
  if (!stat_ok) return errno_error(e, "fstat", path.c_str());
  ExeFacts facts;
  facts.dev = st.st_dev;
  facts.ino = st.st_ino;
  if (auto c = parse_elf_class(std::span<const std::byte>(head, static_cast<std::size_t>(n)))) facts.elf_class = *c;
  return facts;
}

Result<unsigned> read_exe_elf_class(pid_t pid) {
  ProcPath path(pid, "exe");
  UniqueFd owned(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  const int fd = owned.get();
  if (fd < 0) return errno_error(errno, "open", path.c_str());
  std::byte head[EI_NIDENT];
  ssize_t n;
  do {
    n = ::pread(fd, head, sizeof head, 0);
  } while (n < 0 && errno == EINTR);
  int e = errno;
  owned.reset();
  if (n < 0) return errno_error(e, "read", path.c_str());
  return parse_elf_class(std::span<const std::byte>(head, static_cast<std::size_t>(n)));
}

Result<bool> read_auxv_secure(pid_t pid, unsigned word_bytes) {
  std::string bytes;
  auto r = read_bounded(ProcPath(pid, "auxv").c_str(), kMaxAuxvBytes, bytes);
  if (!r) return std::move(r).error();
  return parse_auxv_secure(std::as_bytes(std::span<const char>(bytes.data(), bytes.size())), word_bytes);
}

Result<bool> read_execve_envp(pid_t pid, std::vector<std::string>& out) {
  char text[256];
  auto n = read_small(ProcPath(pid, "syscall").c_str(), text);
  if (!n) return std::move(n).error();
  auto st = parse_syscall(std::string_view(text, *n));
  if (!st) return std::move(st).error();
  std::uint64_t envp = 0;
  if (st->in_syscall && st->nr == SYS_execve) envp = st->args[2];
  else if (st->in_syscall && st->nr == SYS_execveat) envp = st->args[3];
  else return false;
  if (envp == 0) {  // Linux takes a null envp as an empty environment
    out.clear();
    return true;
  }

  ProcPath path(pid, "mem");
  UniqueFd owned(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  const int fd = owned.get();
  if (fd < 0) return errno_error(errno, "open", path.c_str());
  auto read_at = [&](std::uint64_t addr, void* buf, std::size_t len) -> ssize_t {
    ssize_t r;
    do {
      r = ::pread(fd, buf, len, static_cast<off_t>(addr));
    } while (r < 0 && errno == EINTR);
    return r;
  };
  std::vector<std::uint64_t> pointers;
  bool ok = true;
  // The pointer array, in chunks, up to its NULL; bounded like environ.
  constexpr std::size_t kChunk = 64;
  constexpr std::size_t kMaxPointers = kMaxEnvironBytes / 8;
  for (std::uint64_t addr = envp; ok && pointers.size() < kMaxPointers; addr += kChunk * sizeof(std::uint64_t)) {
    std::uint64_t chunk[kChunk];
    ssize_t r = read_at(addr, chunk, sizeof chunk);
    if (r < static_cast<ssize_t>(sizeof(std::uint64_t))) {
      ok = false;
      break;
    }
    std::size_t count = static_cast<std::size_t>(r) / sizeof(std::uint64_t);
    bool end = false;
    for (std::size_t i = 0; i < count; ++i) {
      if (chunk[i] == 0) {
        end = true;
        break;
      }
      pointers.push_back(chunk[i]);
    }
    if (end) break;
  }
  std::vector<std::string> env;
  std::size_t total = 0;
  for (std::uint64_t addr : pointers) {
    if (!ok || total >= kMaxEnvironBytes) break;
    std::string entry;
    char buf[256];
    for (;;) {
      ssize_t r = read_at(addr + entry.size(), buf, sizeof buf);
      if (r <= 0) {
        ok = false;
        break;
      }
      const char* nul = static_cast<const char*>(std::memchr(buf, '\0', static_cast<std::size_t>(r)));
      entry.append(buf, nul ? static_cast<std::size_t>(nul - buf) : static_cast<std::size_t>(r));
      if (nul) break;
      if (total + entry.size() >= kMaxEnvironBytes) break;  // cut short: dropped below
    }
    if (!ok) break;
    total += entry.size() + 1;
    if (total > kMaxEnvironBytes) break;
    if (!entry.empty()) env.push_back(std::move(entry));
  }
  int e = errno;
  owned.reset();
  if (!ok) return errno_error(e ? e : EIO, "read", path.c_str());
  out = std::move(env);
  return true;
}

Result<unsigned long> read_personality(pid_t pid) {
  std::string text;
  auto r = read_bounded(ProcPath(pid, "personality").c_str(), 64, text);
  if (!r) return std::move(r).error();
  return parse_personality(text);
}

}  // namespace vsymfs::daemon::proc
