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

#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <mutex>
#include <string_view>

#include "cache_invalidator.h"
#include "fs/kernel_cache.h"
#include "revoker.h"

namespace ugfs2::fusefs {

class KernelCacheBridge final : public KernelCache {
 public:
  KernelCacheBridge() = default;
  KernelCacheBridge(const KernelCacheBridge&) = delete;
  KernelCacheBridge& operator=(const KernelCacheBridge&) = delete;

  // Starts forwarding to `invalidator` and (may be null: revoke=async) `revoker`, which must
  // stay valid until Detach returns.
  void Attach(CacheInvalidator* invalidator, Revoker* revoker = nullptr);
  // Stops forwarding; returns once no call is forwarding any more. Idempotent.
  void Detach();
  // The session is going away (DESTROY, or the end of the loop): from now on Revoke, DropAttrsNow
  // and ExpireNames return at once (a synchronous notify could wait for the unmount that waits
  // for us; the kernel drops its caches itself).
  void BeginShutdown() { closing_.store(true); }
  // Whether ExpireNames waits (the kernel keeps names only within a clock tick: entry_timeout=0
  // on a cluster mount). Set before the session starts.
  void SetExpireNames(bool on) { expire_names_ = on; }
  // revoke=none (tests only): data invalidations are dropped, so the kernel keeps pages another
  // node has changed (the negative control of tests/integration/cluster_coherence.sh).
  void SetKeepPages(bool on) { keep_pages_ = on; }

  // Handlers of requests that make the kernel cache names in `dir` (LOOKUP, CREATE, MKNOD,
  // MKDIR, SYMLINK, LINK, RENAME, READDIRPLUS) bracket them with these (see ExpireNames).
  void NameRequestBegin(InodeNo dir);
  void NameRequestEnd(InodeNo dir);

  // KernelCache. len 0 = to the end of the file; the data invalidation also drops attributes.
  void InvalidateData(InodeNo ino, uint64_t off, uint64_t len) override;
  void InvalidateAttr(InodeNo ino) override;
  void InvalidateEntry(InodeNo parent, std::string_view name) override;
  // The coherence protocol (docs/coherence.md). Revoke/Thaw go to the Revoker (without one,
  // done at once: revoke=async keeps only the posted invalidations). DropAttrsNow notifies the
  // kernel synchronously (attributes only: never waits for pages or requests). ExpireNames: on
  // cluster mounts the kernel keeps names for the rest of the clock tick in which they were
  // answered (entry_timeout=0); it waits until every name request in `dir` in flight has
  // answered and kNameExpiry has passed since the last answer, at most kNameExpiryBound.
  void Revoke(InodeNo ino, std::function<void()> done) override;
  void Thaw(InodeNo ino) override;
  void DropAttrsNow(InodeNo ino) override;
  void ExpireNames(InodeNo dir) override;
  static constexpr std::chrono::milliseconds kNameExpiry{10};  // > one tick at HZ >= 100
  static constexpr std::chrono::milliseconds kNameExpiryBound{30};
  uint64_t name_waits() const { return name_waits_.load(std::memory_order_relaxed); }

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
  Revoker* revoker_ = nullptr;          // guarded by mu_
  std::atomic<bool> closing_{false};
  bool expire_names_ = false;
  bool keep_pages_ = false;
  // Name requests per directory, hashed into slots (a collision only makes a wait longer).
  struct NameSlot {
    std::atomic<int> in_flight{0};
    std::atomic<int64_t> last_ns{0};  // steady clock, nanoseconds: the last answer
  };
  static constexpr size_t kNameSlots = 1024;
  std::array<NameSlot, kNameSlots> names_;
  static size_t SlotOf(InodeNo dir) { return (dir * 0x9E3779B97F4A7C15ull >> 40) % kNameSlots; }
  std::atomic<uint64_t> name_waits_{0};
  std::atomic<uint64_t> data_calls_{0};
  std::atomic<uint64_t> attr_calls_{0};
  std::atomic<uint64_t> entry_calls_{0};
  std::atomic<uint64_t> dropped_{0};
};

}  // namespace ugfs2::fusefs

#endif  // UGFS2_FUSE_KERNEL_CACHE_BRIDGE_H_
