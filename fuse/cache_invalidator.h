// CacheInvalidator: the bridge that tells the kernel to drop cached pages, attributes and names
// (fuse_lowlevel_notify_inval_inode / _inval_entry), with the deadlock rules of fuse/README.md
// ("Notifications that can deadlock", cases N1-N6) built in.
//
// Rules enforced here:
//  * A data invalidation (off >= 0) is never issued from inside a READ or WRITE handler for the
//    same inode: the kernel holds the page lock or writeback bit of the very request being served
//    (N3, N4). Handlers mark themselves with IoScope; InvalidateInodeNow refuses
//    (Code::kDeadlock), and Post* calls are always safe because they run on the invalidator's own
//    thread, never on a FUSE worker (N1).
//  * Inodes the kernel does not reference (lookup count 0 in the InodeTable) are skipped: the
//    kernel would answer ENOENT. ENOENT from the kernel (evicted meanwhile) counts as success.
//    InodeNo -> node id goes through the InodeTable (KnownKernelIno: the generation the kernel
//    was last given), so callers pass dinode addresses.
// Rules the CALLER must keep (not checkable here): hold no lock that a READ/WRITE handler of the
// inode needs while an inode invalidation runs (launder WRITEs must be served, N2), and no
// lock a LOOKUP/CREATE in the parent needs while an entry invalidation runs (N5).
//
// Posted work is coalesced: a Post* that an item still waiting in the queue already covers (the
// same notification, or for an inode a whole-file data invalidation, which also drops the
// attributes; or any data invalidation, for an attribute-only one) is dropped, since the queued
// item is issued after it anyway. So the queue holds at most one item per distinct
// notification, however often the core asks (a loop of `ugfs2-tool demote all`).
//
// Thread safety: all methods are thread-safe. The backend is called from the caller's thread
// (…Now) or from the invalidator's worker thread (Post…), never with an internal lock held.
#ifndef UGFS2_FUSE_CACHE_INVALIDATOR_H_
#define UGFS2_FUSE_CACHE_INVALIDATOR_H_

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <mutex>
#include <set>
#include <string>
#include <string_view>
#include <thread>
#include <tuple>

#include "common/status.h"
#include "inode_table.h"

namespace ugfs2::fusefs {

// The kernel side. Returns 0 or a negative errno, like the libfuse notify functions.
class NotifyBackend {
 public:
  virtual ~NotifyBackend() = default;
  virtual int InvalInode(KernelIno ino, int64_t off, int64_t len) = 0;
  virtual int InvalEntry(KernelIno parent, std::string_view name) = 0;
};

// Marks the current thread as serving a READ or WRITE for `ino` (RAII; not nestable).
class IoScope {
 public:
  explicit IoScope(InodeNo ino);
  ~IoScope();
  IoScope(const IoScope&) = delete;
  IoScope& operator=(const IoScope&) = delete;
  // The inode whose READ/WRITE the current thread is serving, or 0.
  static InodeNo Current();
};

class CacheInvalidator {
 public:
  // `backend` and `inodes` must outlive this object.
  CacheInvalidator(NotifyBackend* backend, const InodeTable* inodes);
  ~CacheInvalidator();  // drains the queue, then stops the worker
  CacheInvalidator(const CacheInvalidator&) = delete;
  CacheInvalidator& operator=(const CacheInvalidator&) = delete;

  // Synchronous. off < 0: attributes only (never blocks on pages); off >= 0, len 0: to EOF.
  // Refuses with kDeadlock inside a READ/WRITE handler for `ino` when off >= 0.
  Status InvalidateInodeNow(InodeNo ino, int64_t off, int64_t len);
  Status InvalidateEntryNow(InodeNo parent, std::string_view name);

  // Asynchronous: queued to the invalidator thread; safe from any context.
  void PostInvalidateInode(InodeNo ino, int64_t off, int64_t len);
  void PostInvalidateEntry(InodeNo parent, std::string_view name);
  // Waits until everything posted before this call has been issued.
  void Drain();

  uint64_t issued() const;     // notifications sent to the backend
  uint64_t skipped() const;    // skipped: inode/parent unknown to the kernel
  uint64_t coalesced() const;  // posts dropped: covered by an item still queued

 private:
  struct Item {
    bool entry = false;
    InodeNo ino = 0;
    int64_t off = 0;
    int64_t len = 0;
    std::string name;
  };
  // Identifies a queued item: (entry, ino, off, len, name).
  using Key = std::tuple<bool, InodeNo, int64_t, int64_t, std::string>;
  static Key KeyOf(const Item& item);
  // Whether a queued item already covers `item`. Requires mu_.
  bool CoveredLocked(const Item& item) const;
  void Post(Item item);
  Status Issue(const Item& item);
  void Run();

  NotifyBackend* const backend_;
  const InodeTable* const inodes_;
  mutable std::mutex mu_;  // guards the fields below; never held while calling the backend
  std::condition_variable cv_;
  std::deque<Item> queue_;
  std::set<Key> queued_;  // keys of queue_'s items (not of the one being issued)
  uint64_t posted_ = 0;   // items queued (coalesced posts are not)
  uint64_t done_ = 0;     // items issued (or skipped)
  uint64_t issued_ = 0;
  uint64_t skipped_ = 0;
  uint64_t coalesced_ = 0;
  bool stop_ = false;
  std::thread worker_;  // last member: started after everything else is initialised
};

}  // namespace ugfs2::fusefs

#endif  // UGFS2_FUSE_CACHE_INVALIDATOR_H_
