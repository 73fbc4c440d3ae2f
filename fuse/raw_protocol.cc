#include "raw_protocol.h"

#include <linux/fuse.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace ugfs2::fusefs {
namespace {

// Bits newer than this system's <linux/fuse.h> (Debian 12 ships the 6.1 header).
constexpr uint64_t kDirectIoAllowMmap = 1ull << 36;  // FUSE_DIRECT_IO_ALLOW_MMAP
constexpr uint32_t kInitExt = 1u << 30;              // FUSE_INIT_EXT
constexpr uint32_t kFopenDirectIo = 1u << 0;         // FOPEN_DIRECT_IO
constexpr uint32_t kFopenParallelDirectWrites = 1u << 6;
constexpr uint32_t kOpInit = 26, kOpOpen = 14, kOpCreate = 35;

// Byte view of a reply's argument: libfuse sends the header in iov[0] and the argument struct in
// iov[1] (fuse_reply_open/create/init each send one argument buffer).
uint8_t* ArgBytes(iovec* iov, int count, size_t need) {
  if (count < 2 || iov[1].iov_len < need) return nullptr;
  return static_cast<uint8_t*>(iov[1].iov_base);
}

}  // namespace

ssize_t RawProtocol::ReadHook(int fd, void* buf, size_t len, void* self) {
  ssize_t n = ::read(fd, buf, len);
  if (n > 0) static_cast<RawProtocol*>(self)->OnRequest(buf, static_cast<size_t>(n));
  return n;
}

ssize_t RawProtocol::WritevHook(int fd, iovec* iov, int count, void* self) {
  static_cast<RawProtocol*>(self)->OnReply(iov, count);
  return ::writev(fd, iov, count);
}

void RawProtocol::OnRequest(const void* buf, size_t len) {
  if (len < sizeof(fuse_in_header)) return;
  fuse_in_header h;
  std::memcpy(&h, buf, sizeof(h));
  if (h.opcode == kOpInit && len >= sizeof(h) + sizeof(fuse_init_in)) {
    fuse_init_in in;
    std::memcpy(&in, static_cast<const uint8_t*>(buf) + sizeof(h), sizeof(in));
    bool ext = (in.flags & kInitExt) != 0;
    kernel_offers_mmap_.store(ext &&
                              ((static_cast<uint64_t>(in.flags2) << 32) & kDirectIoAllowMmap));
    init_unique_.store(h.unique);
  } else if ((h.opcode == kOpOpen || h.opcode == kOpCreate) && cfg_.parallel_direct_writes) {
    std::lock_guard<std::mutex> l(mu_);
    if (open_uniques_.insert(h.unique).second) pending_opens_.fetch_add(1);
  }
}

void RawProtocol::OnReply(iovec* iov, int count) {
  if (count < 1 || iov[0].iov_len < sizeof(fuse_out_header)) return;
  fuse_out_header h;
  std::memcpy(&h, iov[0].iov_base, sizeof(h));
  if (h.unique == 0) return;  // a notification, not a reply
  if (uint64_t init = init_unique_.load(); init != 0 && h.unique == init) {
    init_unique_.store(0);
    if (h.error != 0 || !cfg_.allow_mmap || !kernel_offers_mmap_.load()) return;
    uint8_t* out = ArgBytes(iov, count, sizeof(fuse_init_out));
    if (out == nullptr) return;
    fuse_init_out o;
    std::memcpy(&o, out, sizeof(o));
    o.flags |= kInitExt;
    o.flags2 |= static_cast<uint32_t>(kDirectIoAllowMmap >> 32);
    std::memcpy(out, &o, sizeof(o));
    mmap_allowed_.store(true);
    return;
  }
  if (pending_opens_.load() == 0) return;
  {
    std::lock_guard<std::mutex> l(mu_);
    if (open_uniques_.erase(h.unique) == 0) return;
    pending_opens_.fetch_sub(1);
  }
  if (h.error != 0) return;
  // OPEN replies carry fuse_open_out; CREATE replies fuse_entry_out then fuse_open_out.
  size_t at = 0;
  if (count >= 2 && iov[1].iov_len == sizeof(fuse_entry_out) + sizeof(fuse_open_out)) {
    at = sizeof(fuse_entry_out);
  } else if (count < 2 || iov[1].iov_len != sizeof(fuse_open_out)) {
    return;
  }
  uint8_t* arg = ArgBytes(iov, count, at + sizeof(fuse_open_out));
  if (arg == nullptr) return;
  fuse_open_out o;
  std::memcpy(&o, arg + at, sizeof(o));
  if (o.open_flags & kFopenDirectIo) {
    o.open_flags |= kFopenParallelDirectWrites;
    std::memcpy(arg + at, &o, sizeof(o));
  }
}

}  // namespace ugfs2::fusefs
