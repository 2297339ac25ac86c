// Requests the daemon answers itself, before libfuse's request layer.
//
// READLINK is the request a variant-link mount lives on: every per-caller
// readlink crosses into the daemon. libfuse 3.14 spends about 1,000
// instructions of a READLINK's 2,400 around the operation (a calloc'd
// request with its own mutex, the session lock twice for the interrupt
// list, the reply's iovec copy, free). On io_uring that time is on the
// caller's path: the ring thread serves the request on the caller's CPU
// while the caller waits. So the ring threads hand each request to
// answer_directly() first; it answers a READLINK itself with the same code
// as the libfuse operation (Filesystem::readlink) and gives everything else
// back.
//
// Only the ring threads, which are ours: the /dev/fuse workers are
// libfuse's, which counts a worker busy only while libfuse processes its
// request and starts another when none is free. A worker answering
// requests inside its read hook would look free while it works, and a slow
// readlink (an @sys probe, a /proc read) would hold the others' requests.
//
// What libfuse would have done around a READLINK that matters here:
// - refuse requests before INIT: the lane opens only once INIT is answered
//   (Filesystem::note_initialized), and the kernel sends none before;
// - `-o allow_root` (users other than the owner and root refused in
//   libfuse) and `-d` (every request printed): the lane stays closed;
// - interrupts: an INTERRUPT for a READLINK answered here finds no libfuse
//   request, so libfuse keeps it and answers it EAGAIN at its next request;
//   the kernel drops it then, the READLINK being answered (as it would for
//   one libfuse answered first).
#pragma once

#define FUSE_USE_VERSION 314
#include <fuse3/fuse_lowlevel.h>
#include <linux/fuse.h>

#include <sys/types.h>
#include <sys/uio.h>

#include <cstddef>

namespace vsymfs::fs {

class Filesystem;

// A reply built by answer_directly(): iov[0..count) as /dev/fuse takes it.
// Its text stays valid until the thread's next answer.
struct DirectReply {
  fuse_out_header out{};
  iovec iov[2]{};
  int count = 0;
};

// Answers the request `buf` (`len` bytes as a read of /dev/fuse delivers
// it) when it is one the lane takes: fills `reply` and returns true. False:
// libfuse's to answer, nothing done.
bool answer_directly(Filesystem& fs, const void* buf, std::size_t len, DirectReply& reply);

}  // namespace vsymfs::fs
