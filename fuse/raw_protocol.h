// RawProtocol: the few FUSE protocol bits libfuse 3.14 cannot express, patched into the raw
// requests and replies through fuse_session_custom_io() on the session's own /dev/fuse fd.
//
//  * FUSE_DIRECT_IO_ALLOW_MMAP (INIT flags2 bit 4, kernel 6.6+, libfuse 3.17+): files opened with
//    O_DIRECT are served FOPEN_DIRECT_IO, and without this bit the kernel refuses MAP_SHARED on
//    them with ENODEV. With it, a shared mmap of such a file works as on every kernel
//    filesystem, and the kernel writes back and invalidates the mapped range around each direct
//    write.
//  * FOPEN_PARALLEL_DIRECT_WRITES (open_flags bit 6, libfuse 3.15+): direct writes to one file
//    that do not extend it are sent concurrently instead of under the inode's exclusive lock.
//
// The INIT reply gets the bit only if the kernel offered it (INIT request flags2) and set
// FUSE_INIT_EXT; otherwise nothing is patched and MAP_SHARED on an O_DIRECT open keeps failing
// with ENODEV (older kernels). Splice is not used (no splice hooks), as before.
//
// Thread safety: Read and Writev run on every worker thread concurrently; the state is a few
// atomics and one mutex-protected set of pending OPEN/CREATE request ids (leaf lock, taken only
// while such a request is outstanding).
#ifndef UGFS2_FUSE_RAW_PROTOCOL_H_
#define UGFS2_FUSE_RAW_PROTOCOL_H_

#include <sys/types.h>
#include <sys/uio.h>

#include <atomic>
#include <cstdint>
#include <mutex>
#include <unordered_set>

namespace ugfs2::fusefs {

class RawProtocol {
 public:
  struct Config {
    bool allow_mmap = true;
    bool parallel_direct_writes = true;
  };
  explicit RawProtocol(Config cfg) : cfg_(cfg) {}
  RawProtocol(const RawProtocol&) = delete;
  RawProtocol& operator=(const RawProtocol&) = delete;

  // The custom_io hooks (userdata is the RawProtocol).
  static ssize_t ReadHook(int fd, void* buf, size_t len, void* self);
  static ssize_t WritevHook(int fd, iovec* iov, int count, void* self);

  // Inspects one request as read from /dev/fuse / patches one reply before it is written.
  // Exposed for unit tests (they feed synthetic protocol buffers).
  void OnRequest(const void* buf, size_t len);
  void OnReply(iovec* iov, int count);

  // True once the INIT reply carried FUSE_DIRECT_IO_ALLOW_MMAP.
  bool mmap_allowed() const { return mmap_allowed_.load(); }

 private:
  const Config cfg_;
  std::atomic<uint64_t> init_unique_{0};
  std::atomic<bool> kernel_offers_mmap_{false};
  std::atomic<bool> mmap_allowed_{false};
  std::atomic<int> pending_opens_{0};
  std::mutex mu_;  // leaf lock: guards open_uniques_
  std::unordered_set<uint64_t> open_uniques_;
};

}  // namespace ugfs2::fusefs

#endif  // UGFS2_FUSE_RAW_PROTOCOL_H_
