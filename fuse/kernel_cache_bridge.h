// KernelCacheBridge: the core's KernelCache (src/fs/kernel_cache.h) on top of the daemon's
// CacheInvalidator. The core calls it from glock hooks when a glock gives up what it covered
// (a demote: sync, invalidate); it turns each call into an asynchronous kernel notification.
//
// Rules kept here:
//  * Every call returns at once: it only queues (CacheInvalidator::Post*, one short lock of the
//    invalidator's queue) and never waits for the kernel. The notifications are issued by the
//    invalidator's own thread, never by the calling (core or FUSE worker) thread, so none of
//    fuse/README.md's cases N1-N5 can involve the caller's locks or request (the core calls with
//    glocks held, possibly from inside a READ/WRITE of the same inode).
//  * Core InodeNo (dinode address) -> FUSE node id (root = FUSE_ROOT_ID, the generation in the
//    high bits) is done by the CacheInvalidator through the InodeTable, for the generation the
//    kernel was last given. Inodes the kernel does not reference are skipped there.
//  * Before Attach and after Detach calls are dropped (counted in dropped()): nothing above the
//    core caches then (the FUSE session is not mounted yet, or already gone). Detach waits for
//    calls in progress, so that after it returns (and a CacheInvalidator::Drain) nothing reaches
//    the FUSE session any more: call both before fuse_session_destroy.
// Consequences for the caller (the core): the kernel drops its pages and attributes some time
// after the call, not before it returns; the core must never wait for that (a notification can
// wait for a page lock held by a READ that waits for the very glock being demoted). Nothing here
// says when a notification completed.
//
// Thread safety: all methods are thread-safe; the KernelCache calls may come from any thread.
#ifndef UGFS2_FUSE_KERNEL_CACHE_BRIDGE_H_
#define UGFS2_FUSE_KERNEL_CACHE_BRIDGE_H_

#include <atomic>
#include <cstdint>
#include <mutex>
#include <string_view>

#include "cache_invalidator.h"
#include "fs/kernel_cache.h"

namespace ugfs2::fusefs {

class KernelCacheBridge final : public KernelCache {
 public:
  KernelCacheBridge() = default;
  KernelCacheBridge(const KernelCacheBridge&) = delete;
  KernelCacheBridge& operator=(const KernelCacheBridge&) = delete;

  // Starts forwarding to `invalidator`, which must stay valid until Detach returns.
  void Attach(CacheInvalidator* invalidator);
  // Stops forwarding; returns once no call is forwarding any more. Idempotent.
  void Detach();

  // KernelCache. len 0 = to the end of the file; the data invalidation also drops attributes.
  void InvalidateData(InodeNo ino, uint64_t off, uint64_t len) override;
  void InvalidateAttr(InodeNo ino) override;
  void InvalidateEntry(InodeNo parent, std::string_view name) override;

  // Calls forwarded to the invalidator, per kind, and calls dropped while detached.
  uint64_t data_calls() const { return data_calls_.load(std::memory_order_relaxed); }
  uint64_t attr_calls() const { return attr_calls_.load(std::memory_order_relaxed); }
  uint64_t entry_calls() const { return entry_calls_.load(std::memory_order_relaxed); }
  uint64_t dropped() const { return dropped_.load(std::memory_order_relaxed); }

 private:
  // Lock order: mu_ -> CacheInvalidator::mu_ (taken inside Post*). Held only around one Post*,
  // which never blocks on anything else, so callers holding core locks or glocks cannot stall.
  std::mutex mu_;
  CacheInvalidator* target_ = nullptr;  // guarded by mu_
  std::atomic<uint64_t> data_calls_{0};
  std::atomic<uint64_t> attr_calls_{0};
  std::atomic<uint64_t> entry_calls_{0};
  std::atomic<uint64_t> dropped_{0};
};

}  // namespace ugfs2::fusefs

#endif  // UGFS2_FUSE_KERNEL_CACHE_BRIDGE_H_
