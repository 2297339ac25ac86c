// The control protocol between vsymctl and the daemon: pure encode/decode,
// no sockets. Everything a peer sends is untrusted; decoding is strict and
// every violation is an Error (EINVAL / EMSGSIZE / EPROTO), never a crash.
//
// Transport: a unix SOCK_STREAM socket; one request and one reply per
// connection. Each message is a frame: a 4-byte big-endian payload length,
// then the payload. Requests are at most kMaxRequestSize bytes, replies at
// most kMaxReplySize.
//
// Payload (binary-safe, readable when it is text):
//
//     VSYMFS1 <verb>\n
//     <key> <length>\n<length bytes>\n        (zero or more fields)
//
// <verb> and <key> are [a-z_.] words (at most 32 bytes); <length> is decimal
// with no sign and no leading zero. Nothing may follow the last field.
//
// Request verbs and their fields (each at most once, no others allowed):
//     set       scope (user|system), name, value
//     unset     scope (user|system), name
//     list      scope (user|system|all)                    optional, default all
//     explain   raw (a link's text), dir (the link's directory: its path
//               inside the mounted filesystem, relative and without a
//               leading slash ("." for the root), which holds through bind
//               mounts; or its absolute path as the client sees it),
//               and the optional process fields below
//     universe  the optional process fields below
//     trace     prefix (a path inside the mounted filesystem, as for
//               explain's dir; or an absolute path as the client sees it),
//               uid, pid (decimal)                      each optional
//     reload, status                                        no fields
// Names are variable names ([A-Za-z_][A-Za-z0-9_]*); a value must be valid
// UTF-8 (it is persisted as TOML); raw and dir may be any bytes but NUL, at
// most PATH_MAX-1 (a link's text cannot be longer).
//
// Process fields (explain, universe; each optional): what the client says
// about its own process, which the daemon uses instead of reading anything
// from /proc (a pid names whoever holds it by now, not necessarily who
// connected). Each describes only the client, to the client.
//     environ   the client's environment: "NAME=value" entries, each
//               followed by a NUL (as in /proc/<pid>/environ), at most
//               kMaxEnvironSize bytes. Absent: the daemon uses no process
//               scope for this request (an old client, a secure one).
//     secure    "1": the client runs in secure-execution mode (set-id,
//               file capabilities); "0" or absent: it does not
//     compat    "1": the client is a 32-bit process (personality or
//               executable); "0" or absent: it is not
//     emulated  the client is a program of another architecture run by an
//               emulator through binfmt_misc: its machine (uname -m, one
//               the daemon knows), the emulator's name and the entry's
//               name, each followed by a NUL. Absent: a native process.
//
// A trace request is answered by a stream of replies on its connection
// (see trace_wire.hpp): `ok` when the trace has started, then one `ok` per
// event or per run of dropped events, until either side closes.
//
// Reply verbs: `ok` (fields depend on the request, in a meaningful order,
// keys may repeat) or `error` with the fields `errno` (decimal) and
// `message`.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "vsymfs/result.hpp"

namespace vsymfs::control {

inline constexpr std::string_view kMagic = "VSYMFS1";
inline constexpr std::size_t kFrameHeader = 4;
// The daemon reads no more of /proc/<pid>/environ than this either.
inline constexpr std::size_t kMaxEnvironSize = 256 * 1024;
// raw and dir are each shorter than PATH_MAX (4096).
inline constexpr std::size_t kMaxPathField = 4095;
inline constexpr std::size_t kMaxRequestSize = 16 * 1024 + kMaxEnvironSize;
inline constexpr std::size_t kMaxReplySize = 1024 * 1024;
inline constexpr std::size_t kMaxWord = 32;
// Whether `w` can be a verb or a field key: 1 to kMaxWord of [a-z_.].
bool valid_word(std::string_view w) noexcept;

enum class Op : std::uint8_t { Set, Unset, List, Explain, Reload, Universe, Status, Trace };
enum class ScopeArg : std::uint8_t { User, System, All };

std::string_view to_string(Op op) noexcept;
std::string_view to_string(ScopeArg s) noexcept;

struct Request {
  Op op = Op::Status;
  ScopeArg scope = ScopeArg::All;  // set/unset: User or System; list: any
  std::string name;                // set, unset
  std::string value;               // set
  std::string raw;                 // explain
  std::string dir;                 // explain
  // explain, universe: the process fields (see above).
  bool has_environ = false;            // `environ` was sent
  std::vector<std::string> environ{};  // "NAME=value" entries, in order
  bool secure = false;
  bool compat32 = false;
  // `emulated`: all three set, or all empty (a native client).
  std::string emulated_machine, emulator, binfmt_entry;
  // trace: the filters, each optional.
  std::string prefix{};
  std::optional<std::uint32_t> uid{};
  std::optional<std::int32_t> pid{};

  bool operator==(const Request&) const = default;
};

// The longest emulator or binfmt_misc entry name a request may carry.
inline constexpr std::size_t kMaxEmulationName = 255;

struct Field {
  std::string key;
  std::string value;
  bool operator==(const Field&) const = default;
};

struct Reply {
  int error = 0;  // 0: ok; else an errno value
  std::string message;
  std::vector<Field> fields;  // ok replies only

  bool ok() const noexcept { return error == 0; }
  void add(std::string key, std::string value) { fields.push_back({std::move(key), std::move(value)}); }
  // The first field named `key`, or nullptr.
  const std::string* find(std::string_view key) const noexcept;

  static Reply failure(const Error& e) { return Reply{e.code == 0 ? EIO : e.code, e.message, {}}; }
};

// Payloads (no frame header). Encoding a request checks it the way the
// decoder will, so a client cannot send what the server must refuse.
Result<std::string> encode_request(const Request& req);
Result<Request> decode_request(std::string_view payload);
std::string encode_reply(const Reply& reply);
Result<Reply> decode_reply(std::string_view payload);

// Frame header helpers.
std::string frame(std::string_view payload);
std::uint32_t frame_length(const unsigned char header[kFrameHeader]) noexcept;

// Whether `s` is well-formed UTF-8 (no overlongs, no surrogates, <= U+10FFFF).
bool valid_utf8(std::string_view s) noexcept;

}  // namespace vsymfs::control
