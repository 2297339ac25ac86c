#include "control/protocol.hpp"

#include <array>
#include <cerrno>
#include <charconv>
#include <optional>

#include "vsymfs/emulation.hpp"
#include "vsymfs/runtime_vars.hpp"

namespace vsymfs::control {
namespace {

Error bad(std::string message) { return make_error(EINVAL, std::move(message)); }

bool is_word_char(char c) noexcept { return (c >= 'a' && c <= 'z') || c == '_' || c == '.'; }

// Splits a payload into its verb and fields; checks only the framing rules
// shared by requests and replies.
struct Parsed {
  std::string_view verb;
  std::vector<std::pair<std::string_view, std::string_view>> fields;
};

Result<Parsed> parse_payload(std::string_view p) {
  Parsed out;
  const std::size_t nl = p.find('\n');
  if (nl == std::string_view::npos) return bad("truncated message: no header line");
  std::string_view header = p.substr(0, nl);
  p.remove_prefix(nl + 1);
  if (header.size() <= kMagic.size() || header.substr(0, kMagic.size()) != kMagic ||
      header[kMagic.size()] != ' ')
    return bad("not a vsymfs control message (expected \"VSYMFS1 <verb>\")");
  out.verb = header.substr(kMagic.size() + 1);
  if (!valid_word(out.verb)) return bad("malformed verb");

  while (!p.empty()) {
    const std::size_t sp = p.find(' ');
    const std::size_t eol = p.find('\n');
    if (sp == std::string_view::npos || eol == std::string_view::npos || sp > eol)
      return bad("malformed field header (expected \"<key> <length>\\n\")");
    std::string_view key = p.substr(0, sp);
    std::string_view len_text = p.substr(sp + 1, eol - sp - 1);
    if (!valid_word(key)) return bad("malformed field key");
    if (len_text.empty() || len_text.size() > 10 || (len_text.size() > 1 && len_text[0] == '0'))
      return bad("malformed length of field '" + std::string(key) + "'");
    std::uint64_t len = 0;
    auto [end, ec] = std::from_chars(len_text.data(), len_text.data() + len_text.size(), len);
    if (ec != std::errc{} || end != len_text.data() + len_text.size())
      return bad("malformed length of field '" + std::string(key) + "'");
    p.remove_prefix(eol + 1);
    // The value and its closing newline must both be present.
    if (len >= p.size()) return bad("truncated field '" + std::string(key) + "'");
    if (p[len] != '\n') return bad("field '" + std::string(key) + "' is not followed by a newline");
    out.fields.emplace_back(key, p.substr(0, len));
    p.remove_prefix(len + 1);
  }
  return out;
}

void put_field(std::string& out, std::string_view key, std::string_view value) {
  out += key;
  out += ' ';
  out += std::to_string(value.size());
  out += '\n';
  out += value;
  out += '\n';
}

std::optional<Op> op_from(std::string_view verb) noexcept {
  static constexpr std::array<Op, 8> kOps{Op::Set,    Op::Unset,    Op::List,   Op::Explain,
                                          Op::Reload, Op::Universe, Op::Status, Op::Trace};
  for (Op op : kOps)
    if (to_string(op) == verb) return op;
  return std::nullopt;
}

std::optional<ScopeArg> scope_from(std::string_view s) noexcept {
  if (s == "user") return ScopeArg::User;
  if (s == "system") return ScopeArg::System;
  if (s == "all") return ScopeArg::All;
  return std::nullopt;
}

bool has_nul(std::string_view s) noexcept { return s.find('\0') != std::string_view::npos; }

// The semantic checks shared by encode_request and decode_request.
Result<void> check_request(const Request& r) {
  const bool needs_name = r.op == Op::Set || r.op == Op::Unset;
  if (needs_name) {
    if (r.scope == ScopeArg::All) return bad(std::string(to_string(r.op)) + " needs scope user or system");
    if (!valid_var_name(r.name))
      return bad("invalid variable name (expected [A-Za-z_][A-Za-z0-9_]*, at most " +
                 std::to_string(kMaxVarName) + " bytes)");
  }
  if (r.op == Op::Set && !valid_utf8(r.value)) return bad("value is not valid UTF-8");
  if (r.op == Op::Explain) {
    if (r.raw.empty()) return bad("explain needs the link text");
    if (has_nul(r.raw) || has_nul(r.dir)) return bad("link text and directory must not contain NUL");
    if (r.dir.empty()) return bad("explain needs the link's directory");
    if (r.raw.size() > kMaxPathField || r.dir.size() > kMaxPathField)
      return make_error(ENAMETOOLONG, "link text or directory longer than PATH_MAX-1");
  }
  if (r.op == Op::Trace) {
    if (has_nul(r.prefix)) return bad("trace prefix must not contain NUL");
    if (r.prefix.size() > kMaxPathField) return make_error(ENAMETOOLONG, "trace prefix longer than PATH_MAX-1");
    if (r.uid && *r.uid == static_cast<std::uint32_t>(-1)) return bad("trace uid 4294967295 names no user");
    if (r.pid && *r.pid < 0) return bad("trace pid must not be negative");
  } else if (!r.prefix.empty() || r.uid || r.pid) {
    return bad(std::string(to_string(r.op)) + " takes no trace filters");
  }
  const bool takes_process = r.op == Op::Explain || r.op == Op::Universe;
  const bool emulated = !r.emulated_machine.empty() || !r.emulator.empty() || !r.binfmt_entry.empty();
  if (!takes_process && (r.has_environ || r.secure || r.compat32 || emulated))
    return bad(std::string(to_string(r.op)) + " takes no process fields");
  if (emulated) {
    if (!elf_machine_named(r.emulated_machine)) return bad("emulated: unknown machine '" + r.emulated_machine + "'");
    for (const std::string* name : {&r.emulator, &r.binfmt_entry}) {
      if (name->empty() || name->size() > kMaxEmulationName || has_nul(*name) ||
          name->find_first_of("\n/") != std::string::npos)
        return bad("emulated: the emulator and entry names must be 1-255 bytes without NUL, newline or '/'");
    }
  }
  if (r.has_environ) {
    std::size_t total = 0;
    for (const std::string& entry : r.environ) {
      const std::size_t eq = entry.find('=');
      if (eq == std::string::npos || eq == 0 || has_nul(entry))
        return bad("environment entries must be NAME=value without NUL");
      total += entry.size() + 1;
    }
    if (total > kMaxEnvironSize)
      return make_error(EMSGSIZE, "environment of " + std::to_string(total) + " bytes exceeds the limit of " +
                                      std::to_string(kMaxEnvironSize));
  }
  return {};
}

// A decimal number as the protocol writes it: digits only, no sign, no
// leading zero, at most `max`.
Result<std::uint64_t> number_from(std::string_view key, std::string_view text, std::uint64_t max) {
  std::uint64_t n = 0;
  if (text.empty() || text.size() > 10 || (text.size() > 1 && text[0] == '0'))
    return bad("field '" + std::string(key) + "' must be a decimal number");
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), n);
  if (ec != std::errc{} || end != text.data() + text.size() || n > max)
    return bad("field '" + std::string(key) + "' must be a decimal number of at most " + std::to_string(max));
  return n;
}

// "1"/"0" for the flag fields; absent means false.
Result<bool> flag_from(std::string_view key, std::string_view text, bool seen) {
  if (!seen || text == "0") return false;
  if (text == "1") return true;
  return bad("field '" + std::string(key) + "' must be 0 or 1");
}

// The environ field: entries each followed by a NUL.
Result<void> split_environ(std::string_view text, std::vector<std::string>& out) {
  out.clear();
  if (text.size() > kMaxEnvironSize)
    return make_error(EMSGSIZE, "environment of " + std::to_string(text.size()) + " bytes exceeds the limit of " +
                                    std::to_string(kMaxEnvironSize));
  if (!text.empty() && text.back() != '\0') return bad("environment entries must each end with a NUL");
  while (!text.empty()) {
    const std::size_t nul = text.find('\0');
    out.emplace_back(text.substr(0, nul));
    text.remove_prefix(nul + 1);
  }
  return {};
}

void put_process_fields(std::string& out, const Request& req) {
  if (req.has_environ) {
    std::string env;
    for (const std::string& entry : req.environ) {
      env += entry;
      env += '\0';
    }
    put_field(out, "environ", env);
  }
  if (req.secure) put_field(out, "secure", "1");
  if (req.compat32) put_field(out, "compat", "1");
  if (!req.emulated_machine.empty()) {
    std::string em;
    for (const std::string* part : {&req.emulated_machine, &req.emulator, &req.binfmt_entry}) {
      em += *part;
      em += '\0';
    }
    put_field(out, "emulated", em);
  }
}

}  // namespace

bool valid_word(std::string_view w) noexcept {
  if (w.empty() || w.size() > kMaxWord) return false;
  for (char c : w)
    if (!is_word_char(c)) return false;
  return true;
}

std::string_view to_string(Op op) noexcept {
  switch (op) {
    case Op::Set: return "set";
    case Op::Unset: return "unset";
    case Op::List: return "list";
    case Op::Explain: return "explain";
    case Op::Reload: return "reload";
    case Op::Universe: return "universe";
    case Op::Status: return "status";
    case Op::Trace: return "trace";
  }
  return "?";
}

std::string_view to_string(ScopeArg s) noexcept {
  switch (s) {
    case ScopeArg::User: return "user";
    case ScopeArg::System: return "system";
    case ScopeArg::All: return "all";
  }
  return "?";
}

const std::string* Reply::find(std::string_view key) const noexcept {
  for (const Field& f : fields)
    if (f.key == key) return &f.value;
  return nullptr;
}

bool valid_utf8(std::string_view s) noexcept {
  std::size_t i = 0;
  while (i < s.size()) {
    const auto c = static_cast<unsigned char>(s[i]);
    std::size_t extra = 0;
    std::uint32_t cp = 0;
    if (c < 0x80) {
      ++i;
      continue;
    } else if ((c & 0xE0) == 0xC0) {
      extra = 1;
      cp = c & 0x1F;
    } else if ((c & 0xF0) == 0xE0) {
      extra = 2;
      cp = c & 0x0F;
    } else if ((c & 0xF8) == 0xF0) {
      extra = 3;
      cp = c & 0x07;
    } else {
      return false;
    }
    if (i + extra >= s.size()) return false;  // truncated sequence
    for (std::size_t k = 1; k <= extra; ++k) {
      const auto cc = static_cast<unsigned char>(s[i + k]);
      if ((cc & 0xC0) != 0x80) return false;
      cp = (cp << 6) | (cc & 0x3F);
    }
    static constexpr std::uint32_t kMinForLength[4] = {0, 0x80, 0x800, 0x10000};
    if (cp < kMinForLength[extra] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return false;
    i += extra + 1;
  }
  return true;
}

Result<std::string> encode_request(const Request& req) {
  if (auto ok = check_request(req); !ok) return ok.error();
  std::string out;
  out += kMagic;
  out += ' ';
  out += to_string(req.op);
  out += '\n';
  switch (req.op) {
    case Op::Set:
      put_field(out, "scope", to_string(req.scope));
      put_field(out, "name", req.name);
      put_field(out, "value", req.value);
      break;
    case Op::Unset:
      put_field(out, "scope", to_string(req.scope));
      put_field(out, "name", req.name);
      break;
    case Op::List:
      put_field(out, "scope", to_string(req.scope));
      break;
    case Op::Explain:
      put_field(out, "raw", req.raw);
      put_field(out, "dir", req.dir);
      put_process_fields(out, req);
      break;
    case Op::Universe:
      put_process_fields(out, req);
      break;
    case Op::Trace:
      if (!req.prefix.empty()) put_field(out, "prefix", req.prefix);
      if (req.uid) put_field(out, "uid", std::to_string(*req.uid));
      if (req.pid) put_field(out, "pid", std::to_string(*req.pid));
      break;
    case Op::Reload:
    case Op::Status:
      break;
  }
  if (out.size() > kMaxRequestSize)
    return make_error(EMSGSIZE, "request of " + std::to_string(out.size()) + " bytes exceeds the limit of " +
                                    std::to_string(kMaxRequestSize));
  return out;
}

Result<Request> decode_request(std::string_view payload) {
  if (payload.size() > kMaxRequestSize)
    return make_error(EMSGSIZE, "request of " + std::to_string(payload.size()) + " bytes exceeds the limit of " +
                                    std::to_string(kMaxRequestSize));
  auto parsed = parse_payload(payload);
  if (!parsed) return parsed.error();
  Request req;
  const auto op = op_from(parsed->verb);
  if (!op) return bad("unknown operation '" + std::string(parsed->verb) + "'");
  req.op = *op;

  // Which fields each operation takes; each is required unless noted.
  struct Slot {
    std::string_view key;
    std::string* target;
    bool required;
    bool seen = false;
  };
  std::string scope_text, environ_text, secure_text, compat32_text, emulated_text, uid_text, pid_text;
  std::vector<Slot> slots;
  const std::vector<Slot> process = {{"environ", &environ_text, false},
                                     {"secure", &secure_text, false},
                                     {"compat", &compat32_text, false},
                                     {"emulated", &emulated_text, false}};
  switch (req.op) {
    case Op::Set:
      slots = {{"scope", &scope_text, true}, {"name", &req.name, true}, {"value", &req.value, true}};
      break;
    case Op::Unset: slots = {{"scope", &scope_text, true}, {"name", &req.name, true}}; break;
    case Op::List: slots = {{"scope", &scope_text, false}}; break;
    case Op::Explain:
      slots = {{"raw", &req.raw, true}, {"dir", &req.dir, true}};
      slots.insert(slots.end(), process.begin(), process.end());
      break;
    case Op::Universe: slots = process; break;
    case Op::Trace:
      slots = {{"prefix", &req.prefix, false}, {"uid", &uid_text, false}, {"pid", &pid_text, false}};
      break;
    case Op::Reload:
    case Op::Status: break;
  }
  for (const auto& [key, value] : parsed->fields) {
    Slot* slot = nullptr;
    for (Slot& s : slots)
      if (s.key == key) slot = &s;
    if (slot == nullptr)
      return bad("unexpected field '" + std::string(key) + "' for " + std::string(to_string(req.op)));
    if (slot->seen) return bad("field '" + std::string(key) + "' given twice");
    slot->seen = true;
    slot->target->assign(value);
  }
  for (const Slot& s : slots)
    if (s.required && !s.seen)
      return bad(std::string(to_string(req.op)) + " needs the field '" + std::string(s.key) + "'");
  const auto seen = [&](std::string_view key) {
    for (const Slot& s : slots)
      if (s.key == key) return s.seen;
    return false;
  };
  if (seen("environ")) {
    if (auto ok = split_environ(environ_text, req.environ); !ok) return ok.error();
    req.has_environ = true;
  }
  auto secure = flag_from("secure", secure_text, seen("secure"));
  if (!secure) return secure.error();
  req.secure = *secure;
  auto compat32 = flag_from("compat", compat32_text, seen("compat"));
  if (!compat32) return compat32.error();
  req.compat32 = *compat32;
  if (seen("emulated")) {
    // machine NUL emulator NUL entry NUL
    std::string* parts[3] = {&req.emulated_machine, &req.emulator, &req.binfmt_entry};
    std::string_view rest = emulated_text;
    for (std::string* part : parts) {
      const std::size_t nul = rest.find('\0');
      if (nul == std::string_view::npos) return bad("emulated: expected machine, emulator and entry, each ended by NUL");
      part->assign(rest.substr(0, nul));
      rest.remove_prefix(nul + 1);
    }
    if (!rest.empty() || req.emulated_machine.empty()) return bad("emulated: expected exactly three names");
  }
  if (seen("prefix") && req.prefix.empty()) return bad("field 'prefix' is empty (leave it out to trace every link)");
  if (seen("uid")) {
    auto uid = number_from("uid", uid_text, 4294967294u);
    if (!uid) return uid.error();
    req.uid = static_cast<std::uint32_t>(*uid);
  }
  if (seen("pid")) {
    auto pid = number_from("pid", pid_text, 2147483647u);
    if (!pid) return pid.error();
    req.pid = static_cast<std::int32_t>(*pid);
  }

  if (req.op == Op::Set || req.op == Op::Unset || req.op == Op::List) {
    if (scope_text.empty() && req.op == Op::List) scope_text = "all";
    const auto scope = scope_from(scope_text);
    if (!scope) return bad("unknown scope '" + scope_text + "' (expected user, system or all)");
    req.scope = *scope;
  }
  if (auto ok = check_request(req); !ok) return ok.error();
  return req;
}

std::string encode_reply(const Reply& reply) {
  std::string out;
  out += kMagic;
  if (reply.ok()) {
    out += " ok\n";
    for (const Field& f : reply.fields) put_field(out, f.key, f.value);
  } else {
    out += " error\n";
    put_field(out, "errno", std::to_string(reply.error));
    put_field(out, "message", reply.message);
  }
  return out;
}

Result<Reply> decode_reply(std::string_view payload) {
  if (payload.size() > kMaxReplySize) return make_error(EMSGSIZE, "reply exceeds the size limit");
  auto parsed = parse_payload(payload);
  if (!parsed) return make_error(EPROTO, "malformed reply from the daemon: " + parsed.error().message);
  Reply reply;
  if (parsed->verb == "ok") {
    for (const auto& [key, value] : parsed->fields) reply.add(std::string(key), std::string(value));
    return reply;
  }
  if (parsed->verb != "error") return make_error(EPROTO, "malformed reply from the daemon: unknown verb");
  bool have_errno = false;
  for (const auto& [key, value] : parsed->fields) {
    if (key == "errno") {
      int code = 0;
      auto [end, ec] = std::from_chars(value.data(), value.data() + value.size(), code);
      if (ec != std::errc{} || end != value.data() + value.size() || code <= 0)
        return make_error(EPROTO, "malformed reply from the daemon: bad errno");
      reply.error = code;
      have_errno = true;
    } else if (key == "message") {
      reply.message.assign(value);
    }
  }
  if (!have_errno) return make_error(EPROTO, "malformed reply from the daemon: error without errno");
  return reply;
}

std::string frame(std::string_view payload) {
  const auto n = static_cast<std::uint32_t>(payload.size());
  std::string out;
  out.reserve(kFrameHeader + payload.size());
  out += static_cast<char>((n >> 24) & 0xFF);
  out += static_cast<char>((n >> 16) & 0xFF);
  out += static_cast<char>((n >> 8) & 0xFF);
  out += static_cast<char>(n & 0xFF);
  out += payload;
  return out;
}

std::uint32_t frame_length(const unsigned char header[kFrameHeader]) noexcept {
  return (std::uint32_t{header[0]} << 24) | (std::uint32_t{header[1]} << 16) | (std::uint32_t{header[2]} << 8) |
         std::uint32_t{header[3]};
}

}  // namespace vsymfs::control
