// RawProtocol on synthetic protocol buffers: the INIT reply gets FUSE_DIRECT_IO_ALLOW_MMAP only
// if the kernel offered it, direct-I/O OPEN/CREATE replies get FOPEN_PARALLEL_DIRECT_WRITES,
// everything else passes untouched.
#include "raw_protocol.h"

#include <linux/fuse.h>

#include <cstring>
#include <vector>

#include <gtest/gtest.h>

namespace ugfs2::fusefs {
namespace {

constexpr uint32_t kInitExt = 1u << 30;
constexpr uint32_t kAllowMmapFlags2 = 1u << 4;  // FUSE_DIRECT_IO_ALLOW_MMAP >> 32

std::vector<uint8_t> Request(uint32_t opcode, uint64_t unique, const void* arg, size_t len) {
  fuse_in_header h = {};
  h.len = static_cast<uint32_t>(sizeof(h) + len);
  h.opcode = opcode;
  h.unique = unique;
  std::vector<uint8_t> buf(sizeof(h) + len);
  std::memcpy(buf.data(), &h, sizeof(h));
  if (len) std::memcpy(buf.data() + sizeof(h), arg, len);
  return buf;
}

fuse_out_header Out(uint64_t unique, int error, size_t arglen) {
  fuse_out_header o = {};
  o.unique = unique;
  o.error = error;
  o.len = static_cast<uint32_t>(sizeof(o) + arglen);
  return o;
}

void Init(RawProtocol& raw, bool kernel_offers) {
  fuse_init_in in = {};
  in.major = 7;
  in.minor = 45;
  in.flags = kInitExt;
  in.flags2 = kernel_offers ? kAllowMmapFlags2 : 0;
  auto req = Request(FUSE_INIT, 7, &in, sizeof(in));
  raw.OnRequest(req.data(), req.size());
}

TEST(RawProtocolTest, InitReplyGetsAllowMmapWhenOffered) {
  RawProtocol raw({});
  Init(raw, true);
  fuse_init_out o = {};
  o.major = 7;
  o.minor = 38;
  fuse_out_header h = Out(7, 0, sizeof(o));
  iovec iov[2] = {{&h, sizeof(h)}, {&o, sizeof(o)}};
  raw.OnReply(iov, 2);
  EXPECT_TRUE(o.flags & kInitExt);
  EXPECT_EQ(o.flags2 & kAllowMmapFlags2, kAllowMmapFlags2);
  EXPECT_TRUE(raw.mmap_allowed());
}

TEST(RawProtocolTest, InitReplyUntouchedWhenNotOfferedOrDisabled) {
  // Not offered by the kernel (older than 6.6), or offered but dio=kernel: no patch.
  for (bool offered : {false, true}) {
    RawProtocol raw({.allow_mmap = !offered, .parallel_direct_writes = true});
    Init(raw, offered);
    fuse_init_out o = {};
    fuse_out_header h = Out(7, 0, sizeof(o));
    iovec iov[2] = {{&h, sizeof(h)}, {&o, sizeof(o)}};
    raw.OnReply(iov, 2);
    EXPECT_EQ(o.flags2, 0u);
    EXPECT_EQ(o.flags, 0u);
    EXPECT_FALSE(raw.mmap_allowed());
  }
}

TEST(RawProtocolTest, DirectIoOpenAndCreateRepliesGetParallelWrites) {
  RawProtocol raw({});
  Init(raw, true);
  fuse_open_in oin = {};
  auto open_req = Request(FUSE_OPEN, 11, &oin, sizeof(oin));
  raw.OnRequest(open_req.data(), open_req.size());
  auto plain_req = Request(FUSE_OPEN, 12, &oin, sizeof(oin));
  raw.OnRequest(plain_req.data(), plain_req.size());
  fuse_create_in cin = {};
  auto create_req = Request(FUSE_CREATE, 13, &cin, sizeof(cin));
  raw.OnRequest(create_req.data(), create_req.size());

  fuse_open_out direct = {};
  direct.open_flags = FOPEN_DIRECT_IO;
  fuse_out_header h1 = Out(11, 0, sizeof(direct));
  iovec v1[2] = {{&h1, sizeof(h1)}, {&direct, sizeof(direct)}};
  raw.OnReply(v1, 2);
  EXPECT_EQ(direct.open_flags, FOPEN_DIRECT_IO | FOPEN_PARALLEL_DIRECT_WRITES);

  fuse_open_out cached = {};
  cached.open_flags = FOPEN_KEEP_CACHE;
  fuse_out_header h2 = Out(12, 0, sizeof(cached));
  iovec v2[2] = {{&h2, sizeof(h2)}, {&cached, sizeof(cached)}};
  raw.OnReply(v2, 2);
  EXPECT_EQ(cached.open_flags, FOPEN_KEEP_CACHE);

  struct {
    fuse_entry_out e;
    fuse_open_out o;
  } create = {};
  create.o.open_flags = FOPEN_DIRECT_IO;
  fuse_out_header h3 = Out(13, 0, sizeof(create));
  iovec v3[2] = {{&h3, sizeof(h3)}, {&create, sizeof(create)}};
  raw.OnReply(v3, 2);
  EXPECT_EQ(create.o.open_flags, FOPEN_DIRECT_IO | FOPEN_PARALLEL_DIRECT_WRITES);

  // A reply to some other request with the same shape is left alone.
  fuse_open_out other = {};
  other.open_flags = FOPEN_DIRECT_IO;
  fuse_out_header h4 = Out(99, 0, sizeof(other));
  iovec v4[2] = {{&h4, sizeof(h4)}, {&other, sizeof(other)}};
  raw.OnReply(v4, 2);
  EXPECT_EQ(other.open_flags, FOPEN_DIRECT_IO);
}

}  // namespace
}  // namespace ugfs2::fusefs
