// libFuzzer target for the control protocol (src/control/protocol.*): the
// bytes a client sends the daemon, and the bytes a daemon sends vsymctl, are
// decoded strictly and never crash. Invariants checked (abort on violation):
//   - every refusal carries an errno and a message;
//   - a decoded request encodes again, that encoding decodes to the same
//     request, and encoding is canonical (decode + encode changes nothing);
//   - a decoded reply encodes and decodes to the same reply;
//   - a frame's header gives back the payload length.
// The input is one payload (without the frame header), tried as a request
// and as a reply.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>

#include "control/protocol.hpp"

namespace {

using namespace vsymfs::control;

[[noreturn]] void fail(const char* what, std::string_view input) {
  std::fprintf(stderr, "invariant broken: %s (input length %zu)\n", what, input.size());
  std::abort();
}

// Every field, the trace filters and the emulated machine included.
bool same(const Request& a, const Request& b) { return a == b; }

void check_request(std::string_view input) {
  auto req = decode_request(input);
  if (!req) {
    if (req.error().code == 0 || req.error().message.empty()) fail("request refused without errno or message", input);
    return;
  }
  auto again = encode_request(*req);
  if (!again) fail("a decoded request does not encode", input);
  auto back = decode_request(*again);
  if (!back) fail("an encoded request does not decode", input);
  if (!same(*req, *back)) fail("request changed by encode + decode", input);
  auto third = encode_request(*back);
  if (!third || *third != *again) fail("request encoding is not canonical", input);
  if (again->size() > kMaxRequestSize) fail("encoded request exceeds kMaxRequestSize", input);
}

void check_reply(std::string_view input) {
  auto reply = decode_reply(input);
  if (!reply) {
    if (reply.error().code == 0 || reply.error().message.empty()) fail("reply refused without errno or message", input);
    return;
  }
  if (!reply->ok() && reply->error <= 0) fail("error reply with errno <= 0", input);
  auto back = decode_reply(encode_reply(*reply));
  if (!back) fail("an encoded reply does not decode", input);
  if (back->error != reply->error || back->message != reply->message || back->fields != reply->fields)
    fail("reply changed by encode + decode", input);
}

void check_frame(std::string_view input) {
  const std::string framed = frame(input);
  unsigned char header[kFrameHeader];
  for (std::size_t i = 0; i < kFrameHeader; ++i) header[i] = static_cast<unsigned char>(framed[i]);
  if (frame_length(header) != input.size() || framed.substr(kFrameHeader) != input)
    fail("frame does not give back its payload", input);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  check_request(input);
  check_reply(input);
  check_frame(input);
  (void)valid_utf8(input);
  return 0;
}
