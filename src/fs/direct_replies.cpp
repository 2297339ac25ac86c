#include "fs/direct_replies.hpp"

#include <cstring>
#include <string>

#include "fs/filesystem.hpp"

namespace vsymfs::fs {

namespace {

// The key of requests answered here (RequestFrom::key): an address of this
// thread's that no libfuse request can have.
thread_local const char t_direct_key = 0;

}  // namespace

bool answer_directly(Filesystem& fs, const void* buf, std::size_t len, DirectReply& reply) {
  if (len < sizeof(fuse_in_header) || !fs.direct_replies()) return false;
  fuse_in_header in;
  std::memcpy(&in, buf, sizeof in);
  // READLINK has no argument past the header.
  if (in.opcode != FUSE_READLINK || in.len != len) return false;

  thread_local std::string text;
  const RequestFrom from{&t_direct_key, static_cast<pid_t>(in.pid), in.uid, in.gid};
  const int e = fs.readlink(from, fs.inode(in.nodeid), text);
  fs.direct_replies_counter().fetch_add(1, std::memory_order_relaxed);
  reply.out.unique = in.unique;
  reply.out.error = -e;
  reply.iov[0] = {&reply.out, sizeof reply.out};
  if (e != 0) {
    reply.out.len = sizeof reply.out;
    reply.count = 1;
  } else {
    reply.out.len = static_cast<std::uint32_t>(sizeof reply.out + text.size());
    reply.iov[1] = {text.data(), text.size()};
    reply.count = 2;
  }
  return true;
}

}  // namespace vsymfs::fs
