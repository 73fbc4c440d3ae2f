// KernelCache: what the core tells the kernel (or whatever caches on top of it) to forget when a
// glock gives up what it covered. The core owns this interface; fuse/ implements it with its
// CacheInvalidator. Without one (unit tests, tools) nothing is cached above the core.
//
// Contract for implementations:
//  * The Invalidate* calls return at once: the notification is queued and issued later, from a
//    thread of the implementation's own, never from the calling thread. The core calls these from
//    glock hooks, with glocks and possibly the caller's FUSE request in progress; a synchronous
//    notification could wait for a page lock held by a request that waits for that very glock
//    (fuse/README.md, cases N1-N5).
//  * Calls are thread-safe and may come from any thread.
//  * Unknown inodes (never looked up by the kernel) are skipped silently.
#ifndef UGFS2_SRC_FS_KERNEL_CACHE_H_
#define UGFS2_SRC_FS_KERNEL_CACHE_H_

#include <cstdint>
#include <functional>
#include <string_view>

namespace ugfs2 {

using InodeNo = uint64_t;

class KernelCache {
 public:
  virtual ~KernelCache() = default;
  // Drops the cached pages of [off, off + len) (len 0: to the end of the file) and the cached
  // attributes of `ino`.
  virtual void InvalidateData(InodeNo ino, uint64_t off, uint64_t len) = 0;
  // Drops only the cached attributes of `ino` (for a directory also its cached listing).
  virtual void InvalidateAttr(InodeNo ino) = 0;
  // Drops the cached name `name` in directory `parent` (positive or negative).
  virtual void InvalidateEntry(InodeNo parent, std::string_view name) = 0;

  // The coherence protocol (docs/coherence.md), called by the inode glock's hooks around a
  // demote. Defaults: nothing is cached above the core.
  //
  // Revoke (the glock's prepare hook): drop every page cached of `ino`, and its mappings,
  // while requests for it are still served under the glock; call `done` once nothing filled
  // before is left (from any thread, possibly before returning). Must not block.
  virtual void Revoke(InodeNo ino, std::function<void()> done) { done(); }
  // Thaw (after the demote, or when it was dropped): requests held back by Revoke go on.
  virtual void Thaw(InodeNo ino) { (void)ino; }
  // From the sync hook, once the demote admits no new holders: drop the cached attributes of
  // `ino` now (synchronously; never waits for pages or requests), and for a directory wait
  // until no name looked up in it can still be cached (a bounded wait).
  virtual void DropAttrsNow(InodeNo ino) { (void)ino; }
  virtual void ExpireNames(InodeNo dir) { (void)dir; }
};

}  // namespace ugfs2

#endif  // UGFS2_SRC_FS_KERNEL_CACHE_H_
