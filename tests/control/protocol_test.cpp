#include "control/protocol.hpp"

#include <gtest/gtest.h>

#include <random>
#include <string>
#include <vector>

namespace vsymfs::control {
namespace {

std::string field(std::string_view key, std::string_view value) {
  return std::string(key) + " " + std::to_string(value.size()) + "\n" + std::string(value) + "\n";
}

TEST(Protocol, EveryRequestRoundTrips) {
  const std::vector<Request> requests = {
      {Op::Set, ScopeArg::User, "ARCH", "x86_64", "", ""},
      {Op::Set, ScopeArg::System, "EMPTY", "", "", ""},
      {Op::Set, ScopeArg::User, "U", "caf\xc3\xa9 with\ttab", "", ""},
      {Op::Unset, ScopeArg::System, "ARCH", "", "", ""},
      {Op::List, ScopeArg::All, "", "", "", ""},
      {Op::List, ScopeArg::User, "", "", "", ""},
      {Op::Explain, ScopeArg::All, "", "", "@sys/bin\nwith newline \xff", "/mnt/tree/dir"},
      {Op::Reload, ScopeArg::All, "", "", "", ""},
      {Op::Universe, ScopeArg::All, "", "", "", ""},
      {Op::Status, ScopeArg::All, "", "", "", ""},
  };
  for (const Request& r : requests) {
    SCOPED_TRACE(std::string(to_string(r.op)));
    auto payload = encode_request(r);
    ASSERT_TRUE(payload.ok()) << payload.error().message;
    auto back = decode_request(*payload);
    ASSERT_TRUE(back.ok()) << back.error().message;
    EXPECT_EQ(back->op, r.op);
    EXPECT_EQ(back->scope, r.scope);
    EXPECT_EQ(back->name, r.name);
    EXPECT_EQ(back->value, r.value);
    EXPECT_EQ(back->raw, r.raw);
    EXPECT_EQ(back->dir, r.dir);
  }
}

TEST(Protocol, WireFormatIsTheDocumentedOne) {
  auto payload = encode_request({Op::Set, ScopeArg::User, "N", "v1", "", ""});
  ASSERT_TRUE(payload.ok());
  EXPECT_EQ(*payload, "VSYMFS1 set\nscope 4\nuser\nname 1\nN\nvalue 2\nv1\n");
}

TEST(Protocol, ListScopeDefaultsToAll) {
  auto r = decode_request("VSYMFS1 list\n");
  ASSERT_TRUE(r.ok()) << r.error().message;
  EXPECT_EQ(r->scope, ScopeArg::All);
}

struct Malformed {
  const char* what;
  std::string payload;
  int code;
};

TEST(Protocol, MalformedRequestsAreRefusedWithAReason) {
  const std::string big(kMaxRequestSize, 'x');
  const std::vector<Malformed> cases = {
      {"empty", "", EINVAL},
      {"no newline", "VSYMFS1 status", EINVAL},
      {"wrong magic", "VSYMFS2 status\n", EINVAL},
      {"no verb", "VSYMFS1 \n", EINVAL},
      {"magic only", "VSYMFS1\n", EINVAL},
      {"unknown op", "VSYMFS1 format_disk\n", EINVAL},
      {"upper-case op", "VSYMFS1 STATUS\n", EINVAL},
      {"field on status", "VSYMFS1 status\n" + field("name", "X"), EINVAL},
      {"set without value", "VSYMFS1 set\n" + field("scope", "user") + field("name", "X"), EINVAL},
      {"set without scope", "VSYMFS1 set\n" + field("name", "X") + field("value", "v"), EINVAL},
      {"set scope all", "VSYMFS1 set\n" + field("scope", "all") + field("name", "X") + field("value", "v"), EINVAL},
      {"unknown scope", "VSYMFS1 list\n" + field("scope", "group"), EINVAL},
      {"duplicate field",
       "VSYMFS1 set\n" + field("scope", "user") + field("name", "X") + field("name", "Y") + field("value", "v"),
       EINVAL},
      {"unknown field", "VSYMFS1 unset\n" + field("scope", "user") + field("name", "X") + field("extra", ""),
       EINVAL},
      {"bad name", "VSYMFS1 unset\n" + field("scope", "user") + field("name", "1X"), EINVAL},
      {"name with slash", "VSYMFS1 unset\n" + field("scope", "user") + field("name", "A/B"), EINVAL},
      {"name too long", "VSYMFS1 unset\n" + field("scope", "user") + field("name", std::string(65, 'A')), EINVAL},
      {"non-UTF-8 value", "VSYMFS1 set\n" + field("scope", "user") + field("name", "X") + field("value", "\xc3("),
       EINVAL},
      {"overlong UTF-8", "VSYMFS1 set\n" + field("scope", "user") + field("name", "X") + field("value", "\xc0\xaf"),
       EINVAL},
      {"surrogate", "VSYMFS1 set\n" + field("scope", "user") + field("name", "X") + field("value", "\xed\xa0\x80"),
       EINVAL},
      {"explain empty dir", "VSYMFS1 explain\n" + field("raw", "a") + field("dir", ""), EINVAL},
      {"explain empty raw", "VSYMFS1 explain\n" + field("raw", "") + field("dir", "/"), EINVAL},
      {"explain NUL", "VSYMFS1 explain\n" + field("raw", std::string("a\0b", 3)) + field("dir", "/"), EINVAL},
      {"length too big", "VSYMFS1 list\nscope 99\nall\n", EINVAL},
      {"length too small", "VSYMFS1 list\nscope 2\nall\n", EINVAL},
      {"leading zero", "VSYMFS1 list\nscope 03\nall\n", EINVAL},
      {"negative length", "VSYMFS1 list\nscope -3\nall\n", EINVAL},
      {"huge length", "VSYMFS1 list\nscope 99999999999\nall\n", EINVAL},
      {"length not a number", "VSYMFS1 list\nscope x\nall\n", EINVAL},
      {"no length", "VSYMFS1 list\nscope\nall\n", EINVAL},
      {"missing final newline", "VSYMFS1 list\nscope 3\nall", EINVAL},
      {"trailing garbage", "VSYMFS1 list\n" + field("scope", "all") + "x", EINVAL},
      {"key with digits", "VSYMFS1 list\nsc0pe 3\nall\n", EINVAL},
      {"oversized", "VSYMFS1 status\n" + big, EMSGSIZE},
  };
  for (const Malformed& c : cases) {
    auto r = decode_request(c.payload);
    ASSERT_FALSE(r.ok()) << c.what;
    EXPECT_EQ(r.error().code, c.code) << c.what;
    EXPECT_FALSE(r.error().message.empty()) << c.what;
  }
}

TEST(Protocol, EncoderRefusesWhatTheDecoderWould) {
  EXPECT_FALSE(encode_request({Op::Set, ScopeArg::User, "bad-name", "v", "", ""}).ok());
  EXPECT_FALSE(encode_request({Op::Set, ScopeArg::All, "N", "v", "", ""}).ok());
  EXPECT_FALSE(encode_request({Op::Explain, ScopeArg::All, "", "", "x", ""}).ok());
  // A directory inside the mounted filesystem (what vsymctl sends) is relative.
  auto inside = encode_request({Op::Explain, ScopeArg::All, "", "", "x", "proj/d1"});
  ASSERT_TRUE(inside.ok());
  auto back = decode_request(*inside);
  ASSERT_TRUE(back.ok()) << back.error().message;
  EXPECT_EQ(back->dir, "proj/d1");
  auto big = encode_request({Op::Explain, ScopeArg::All, "", "", std::string(kMaxRequestSize, 'a'), "/"});
  ASSERT_FALSE(big.ok());
  EXPECT_EQ(big.error().code, ENAMETOOLONG);
  Request env{Op::Universe, ScopeArg::All, "", "", "", ""};
  env.has_environ = true;
  env.environ = {"A=" + std::string(kMaxEnvironSize, 'a')};
  auto huge = encode_request(env);
  ASSERT_FALSE(huge.ok());
  EXPECT_EQ(huge.error().code, EMSGSIZE);
}

// explain and universe carry what the client says about its own process:
// the daemon reads nothing of the client's from /proc.
TEST(Protocol, ProcessFieldsRoundTrip) {
  Request explain{Op::Explain, ScopeArg::All, "", "", "${HOME}", "."};
  explain.has_environ = true;
  explain.environ = {"HOME=/home/a", "EMPTY=", "MULTI=a=b\nc"};
  explain.compat32 = true;
  auto payload = encode_request(explain);
  ASSERT_TRUE(payload.ok()) << payload.error().message;
  const std::string wire = std::string("HOME=/home/a") + '\0' + "EMPTY=" + '\0' + "MULTI=a=b\nc" + '\0';
  EXPECT_NE(payload->find(field("environ", wire)), std::string::npos) << *payload;
  auto back = decode_request(*payload);
  ASSERT_TRUE(back.ok()) << back.error().message;
  EXPECT_TRUE(back->has_environ);
  EXPECT_EQ(back->environ, explain.environ);
  EXPECT_FALSE(back->secure);
  EXPECT_TRUE(back->compat32);

  // An empty environment is not the same as none.
  Request universe{Op::Universe, ScopeArg::All, "", "", "", ""};
  universe.has_environ = true;
  auto empty = decode_request(*encode_request(universe));
  ASSERT_TRUE(empty.ok()) << empty.error().message;
  EXPECT_TRUE(empty->has_environ);
  EXPECT_TRUE(empty->environ.empty());
  auto none = decode_request(*encode_request({Op::Universe, ScopeArg::All, "", "", "", ""}));
  ASSERT_TRUE(none.ok());
  EXPECT_FALSE(none->has_environ);

  Request secure{Op::Universe, ScopeArg::All, "", "", "", ""};
  secure.secure = true;
  auto sec = decode_request(*encode_request(secure));
  ASSERT_TRUE(sec.ok());
  EXPECT_TRUE(sec->secure);
  EXPECT_FALSE(sec->has_environ);
}

// A client of another architecture (qemu-user) says so: its machine, the
// emulator's name and the binfmt_misc entry's.
TEST(Protocol, EmulatedClientRoundTrip) {
  Request explain{Op::Explain, ScopeArg::All, "", "", "@machine", "."};
  explain.emulated_machine = "aarch64";
  explain.emulator = "qemu-aarch64";
  explain.binfmt_entry = "qemu-aarch64";
  auto payload = encode_request(explain);
  ASSERT_TRUE(payload.ok()) << payload.error().message;
  const std::string wire = std::string("aarch64") + '\0' + "qemu-aarch64" + '\0' + "qemu-aarch64" + '\0';
  EXPECT_NE(payload->find(field("emulated", wire)), std::string::npos) << *payload;
  auto back = decode_request(*payload);
  ASSERT_TRUE(back.ok()) << back.error().message;
  EXPECT_EQ(back->emulated_machine, "aarch64");
  EXPECT_EQ(back->emulator, "qemu-aarch64");
  EXPECT_EQ(back->binfmt_entry, "qemu-aarch64");
  // Native: no field at all.
  auto native = encode_request({Op::Explain, ScopeArg::All, "", "", "@machine", "."});
  ASSERT_TRUE(native.ok());
  EXPECT_EQ(native->find("emulated"), std::string::npos);

  const std::string head = "VSYMFS1 explain\n" + field("raw", "x") + field("dir", ".");
  const auto nul = [](std::initializer_list<const char*> parts) {
    std::string s;
    for (const char* p : parts) s += std::string(p) + '\0';
    return s;
  };
  for (const auto& [what, payload_text] : std::vector<std::pair<const char*, std::string>>{
           {"unknown machine", head + field("emulated", nul({"sun4", "qemu-x", "e"}))},
           {"two names", head + field("emulated", nul({"aarch64", "qemu-aarch64"}))},
           {"four names", head + field("emulated", nul({"aarch64", "q", "e", "x"}))},
           {"empty emulator", head + field("emulated", nul({"aarch64", "", "e"}))},
           {"slash in entry", head + field("emulated", nul({"aarch64", "q", "a/b"}))},
           {"no final NUL", head + field("emulated", "aarch64")},
           {"on status", "VSYMFS1 status\n" + field("emulated", nul({"aarch64", "q", "e"}))}}) {
    auto r = decode_request(payload_text);
    ASSERT_FALSE(r.ok()) << what;
    EXPECT_EQ(r.error().code, EINVAL) << what << ": " << r.error().message;
  }
}

TEST(Protocol, MalformedProcessFieldsAreRefused) {
  const std::string explain = "VSYMFS1 explain\n" + field("raw", "x") + field("dir", ".");
  const std::vector<Malformed> cases = {
      {"environ on set",
       "VSYMFS1 set\n" + field("scope", "user") + field("name", "X") + field("value", "v") +
           field("environ", std::string("A=1\0", 4)),
       EINVAL},
      {"secure on status", "VSYMFS1 status\n" + field("secure", "1"), EINVAL},
      {"no final NUL", explain + field("environ", "A=1"), EINVAL},
      {"entry without =", explain + field("environ", std::string("A=1\0B\0", 6)), EINVAL},
      {"entry without name", explain + field("environ", std::string("=1\0", 3)), EINVAL},
      {"empty entry", explain + field("environ", std::string("A=1\0\0", 5)), EINVAL},
      {"secure 2", explain + field("secure", "2"), EINVAL},
      {"compat yes", explain + field("compat", "yes"), EINVAL},
      {"environ twice", explain + field("environ", "") + field("environ", ""), EINVAL},
      {"environ too big", explain + field("environ", std::string(kMaxEnvironSize, 'A').replace(0, 2, "A=") + '\0'),
       EMSGSIZE},
      {"raw longer than PATH_MAX-1",
       "VSYMFS1 explain\n" + field("raw", std::string(kMaxPathField + 1, 'r')) + field("dir", "."), ENAMETOOLONG},
      {"dir longer than PATH_MAX-1",
       "VSYMFS1 explain\n" + field("raw", "x") + field("dir", std::string(kMaxPathField + 1, 'd')), ENAMETOOLONG},
  };
  for (const Malformed& c : cases) {
    auto r = decode_request(c.payload);
    ASSERT_FALSE(r.ok()) << c.what;
    EXPECT_EQ(r.error().code, c.code) << c.what << ": " << r.error().message;
  }
  // "0" is the same as absent.
  auto zero = decode_request(explain + field("secure", "0") + field("compat", "0"));
  ASSERT_TRUE(zero.ok()) << zero.error().message;
  EXPECT_FALSE(zero->secure);
  EXPECT_FALSE(zero->compat32);
  // The largest environment and the longest link text fit in one request.
  Request big{Op::Explain, ScopeArg::All, "", "", std::string(kMaxPathField, 'r'), std::string(kMaxPathField, 'd')};
  big.has_environ = true;
  big.environ = {std::string(kMaxEnvironSize - 1, 'V').replace(0, 2, "V=")};
  auto fits = encode_request(big);
  ASSERT_TRUE(fits.ok()) << fits.error().message;
  EXPECT_LE(fits->size(), kMaxRequestSize);
  ASSERT_TRUE(decode_request(*fits).ok());
}

TEST(Protocol, RepliesRoundTrip) {
  Reply ok;
  ok.add("user", "A=1");
  ok.add("user", "B=two\nlines");
  ok.add("system", "");
  auto back = decode_reply(encode_reply(ok));
  ASSERT_TRUE(back.ok()) << back.error().message;
  EXPECT_TRUE(back->ok());
  EXPECT_EQ(back->fields, ok.fields);
  ASSERT_NE(back->find("user"), nullptr);
  EXPECT_EQ(*back->find("user"), "A=1");
  EXPECT_EQ(back->find("absent"), nullptr);

  const Reply err = Reply::failure(make_error(EPERM, "only root may change the system scope"));
  auto err_back = decode_reply(encode_reply(err));
  ASSERT_TRUE(err_back.ok());
  EXPECT_EQ(err_back->error, EPERM);
  EXPECT_EQ(err_back->message, "only root may change the system scope");
}

TEST(Protocol, MalformedRepliesAreProtocolErrors) {
  for (const std::string& p : {std::string("garbage"), std::string("VSYMFS1 maybe\n"),
                               std::string("VSYMFS1 error\n") + field("message", "no errno"),
                               std::string("VSYMFS1 error\n") + field("errno", "-1"),
                               std::string("VSYMFS1 ok\nkey 5\nab\n")}) {
    auto r = decode_reply(p);
    ASSERT_FALSE(r.ok()) << p;
    EXPECT_EQ(r.error().code, EPROTO) << p;
  }
}

TEST(Protocol, FrameLengthIsBigEndian) {
  const std::string f = frame(std::string(0x010203, 'z'));
  ASSERT_EQ(f.size(), kFrameHeader + 0x010203);
  unsigned char header[kFrameHeader];
  for (std::size_t i = 0; i < kFrameHeader; ++i) header[i] = static_cast<unsigned char>(f[i]);
  EXPECT_EQ(frame_length(header), 0x010203u);
}

TEST(Protocol, Utf8Validation) {
  EXPECT_TRUE(valid_utf8(""));
  EXPECT_TRUE(valid_utf8("plain"));
  EXPECT_TRUE(valid_utf8("\xe2\x82\xac"));          // U+20AC
  EXPECT_TRUE(valid_utf8("\xf0\x9f\x98\x80"));      // U+1F600
  EXPECT_FALSE(valid_utf8("\xe2\x82"));             // truncated
  EXPECT_FALSE(valid_utf8("\xf4\x90\x80\x80"));     // above U+10FFFF
  EXPECT_FALSE(valid_utf8("\xe0\x80\x80"));         // overlong
  EXPECT_FALSE(valid_utf8("\x80"));                 // lone continuation
  EXPECT_FALSE(valid_utf8("\xff"));
}

// Random bytes and random mutations of valid requests: decoding must never
// crash, and whatever it accepts must re-encode to the same request.
TEST(Protocol, FuzzDecodeNeverCrashesAndAcceptsOnlyValidRequests) {
  std::mt19937 rng(20261122);
  std::vector<std::string> seeds;
  for (const Request& r : {Request{Op::Set, ScopeArg::User, "N", "v", "", ""},
                           Request{Op::Explain, ScopeArg::All, "", "", "${X}/@sys", "/m"},
                           Request{Op::List, ScopeArg::System, "", "", "", ""}}) {
    seeds.push_back(*encode_request(r));
  }
  std::uniform_int_distribution<int> byte(0, 255);
  int accepted = 0;
  for (int i = 0; i < 20000; ++i) {
    std::string p;
    if (i % 2 == 0) {
      p.resize(static_cast<std::size_t>(rng() % 64));
      for (char& c : p) c = static_cast<char>(byte(rng));
    } else {
      p = seeds[rng() % seeds.size()];
      const int edits = 1 + static_cast<int>(rng() % 4);
      for (int e = 0; e < edits && !p.empty(); ++e) {
        const std::size_t at = rng() % p.size();
        switch (rng() % 3) {
          case 0: p[at] = static_cast<char>(byte(rng)); break;
          case 1: p.erase(at, 1); break;
          default: p.insert(at, 1, static_cast<char>(byte(rng))); break;
        }
      }
    }
    auto r = decode_request(p);
    if (!r.ok()) {
      EXPECT_FALSE(r.error().message.empty());
      continue;
    }
    ++accepted;
    auto again = encode_request(*r);
    ASSERT_TRUE(again.ok()) << again.error().message;
    auto twice = decode_request(*again);
    ASSERT_TRUE(twice.ok());
    EXPECT_EQ(twice->name, r->name);
    EXPECT_EQ(twice->value, r->value);
    EXPECT_EQ(twice->raw, r->raw);
  }
  // Mutations that only touch a value stay valid: the loop must have
  // exercised the accepting path too, or it proves little.
  EXPECT_GT(accepted, 0);
}

}  // namespace
}  // namespace vsymfs::control

// vsymctl trace (appended: the trace request and its stream's records).
#include "control/trace_wire.hpp"

namespace vsymfs::control {
namespace {

TEST(ProtocolTrace, RequestsRoundTripWithEachFilter) {
  std::vector<Request> requests(4);
  for (Request& r : requests) r.op = Op::Trace;
  requests[1].prefix = "usr/local/bin";
  requests[2].uid = 0;
  requests[2].pid = 0;
  requests[3].prefix = "/mnt/abs with space";
  requests[3].uid = 4294967294u;
  requests[3].pid = 2147483647;
  for (const Request& r : requests) {
    auto payload = encode_request(r);
    ASSERT_TRUE(payload.ok()) << payload.error().message;
    auto back = decode_request(*payload);
    ASSERT_TRUE(back.ok()) << back.error().message << " in " << *payload;
    EXPECT_EQ(*back, r);
  }
  EXPECT_EQ(*encode_request(requests[0]), "VSYMFS1 trace\n");
  EXPECT_EQ(*encode_request(requests[2]), "VSYMFS1 trace\nuid 1\n0\npid 1\n0\n");
}

TEST(ProtocolTrace, MalformedTraceRequestsAreRefused) {
  const std::vector<std::string> bad = {
      "VSYMFS1 trace\nuid 2\n01\n",           // leading zero: not canonical
      "VSYMFS1 trace\nuid 2\n-1\n",           // sign
      "VSYMFS1 trace\nuid 10\n4294967295\n",  // (uid_t)-1 names no one
      "VSYMFS1 trace\nuid 11\n99999999999\n",
      "VSYMFS1 trace\nuid 0\n\n",
      "VSYMFS1 trace\npid 10\n2147483648\n",
      "VSYMFS1 trace\npid 2\n1x\n",
      "VSYMFS1 trace\nprefix 0\n\n",          // empty: leave it out
      std::string("VSYMFS1 trace\nprefix 3\na\0b\n", sizeof "VSYMFS1 trace\nprefix 3\na\0b\n" - 1),
      "VSYMFS1 trace\nuid 1\n1\nuid 1\n2\n",  // twice
      "VSYMFS1 trace\nraw 1\nx\n",            // not a trace field
      "VSYMFS1 trace\nenviron 0\n\n",         // no process fields
      "VSYMFS1 status\nuid 1\n0\n",           // filters belong to trace only
      "VSYMFS1 explain\nraw 1\nx\ndir 1\n.\nprefix 1\na\n",
  };
  for (const std::string& p : bad) {
    auto r = decode_request(p);
    EXPECT_FALSE(r.ok()) << p;
    if (!r.ok()) {
      EXPECT_NE(r.error().code, 0);
    }
  }
  Request r;
  r.op = Op::Trace;
  r.prefix = std::string(kMaxPathField + 1, 'a');
  EXPECT_EQ(encode_request(r).error().code, ENAMETOOLONG);
  r.prefix.clear();
  r.uid = 4294967295u;
  EXPECT_FALSE(encode_request(r).ok());
  Request status;
  status.op = Op::Status;
  status.pid = 1;
  EXPECT_FALSE(encode_request(status).ok());
}

TraceEvent sample() {
  TraceEvent e;
  e.time = std::chrono::system_clock::time_point(std::chrono::microseconds(1764952452123456LL));
  e.pid = 4242;
  e.uid = 1000;
  e.comm = "cat";
  e.path = "bin";
  e.raw = "@sys/bin";
  e.expansion = "amd64_linux26/bin";
  e.substitutions = {{"@sys", "amd64_linux26", Scope::Builtin}};
  return e;
}

TEST(TraceWire, AnEventTravelsAndPrintsAsOneLine) {
  const Reply wire = trace_event(sample());
  auto back = decode_reply(encode_reply(wire));
  ASSERT_TRUE(back.ok());
  EXPECT_EQ(back->fields, wire.fields);
  EXPECT_EQ(*back->find("kind"), "event");
  EXPECT_EQ(format_trace_record(*back),
            "2025-12-05T16:34:12.123456Z uid 1000 pid 4242 (cat) bin: @sys/bin -> amd64_linux26/bin"
            "  [@sys = amd64_linux26  (builtin)]");
}

TEST(TraceWire, AnErrorAndAnUnknownPathPrint) {
  TraceEvent e = sample();
  e.path.clear();
  e.error = ENOENT;
  e.message = "no universe matches";
  e.substitutions.clear();
  EXPECT_EQ(format_trace_record(trace_event(e)),
            "2025-12-05T16:34:12.123456Z uid 1000 pid 4242 (cat) ?: @sys/bin -> error ENOENT: no universe matches");
}

TEST(TraceWire, DropsAreReportedAndUnknownKindsSkipped) {
  EXPECT_EQ(format_trace_record(trace_dropped(17, 40)), "dropped 17 events (this reader was too slow; 40 in all)");
  EXPECT_EQ(format_trace_record(trace_started(true)), "");
  Reply future;
  future.add("kind", "something_newer");
  EXPECT_EQ(format_trace_record(future), "");
  EXPECT_EQ(*trace_started(false).find("sees"), "own");
}

TEST(TraceWire, SubstitutionsAreTheFieldsExplainSends) {
  Reply r;
  add_substitutions(r, {{"${A}", "1", Scope::User}, {"@sys", "x", Scope::Builtin}});
  ASSERT_EQ(r.fields.size(), 6u);
  EXPECT_EQ(r.fields[0], (Field{"ref", "${A}"}));
  EXPECT_EQ(r.fields[2], (Field{"scope", "user"}));
  EXPECT_EQ(substitution_lines(r), (std::vector<std::string>{"${A} = 1  (user)", "@sys = x  (builtin)"}));
}

}  // namespace
}  // namespace vsymfs::control
