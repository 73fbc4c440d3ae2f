// LogManager: the engine's log (gfs2's log flush): the transaction lock, the mod sequence, and
// the group-committed flush that writes every dirty metadata buffer to the journal and then in
// place. Internal header (src/fs only).
//
// Transactions: every modifying section holds trans_mutex() shared (OpScope::BeginTrans) and
// takes the next mod sequence with Bump() before it leaves; a flush holds it exclusive only
// while it snapshots (the dirty buffers, the statfs delta through the engine's prepare hook, the
// allocator's revokes), so a commit never holds half an operation. FlushUpTo(seq) makes every
// operation with a sequence <= seq durable; a caller whose sequence an earlier commit covered
// returns at once, and concurrent callers share one commit (group commit, batched as jbd2 does).
// A failed commit breaks the log: broken() is then true for good and the engine refuses writes.
//
// Thread safety: all methods are thread-safe. Lock order: flush_mu_ -> trans_mu_ (exclusive) ->
// the prepare hook's locks (Allocator::mu_) -> MetaCache::mu_; batch_mu_ is a leaf. The
// provisional gate's mark is read under trans_mu_ (it takes the glock runner's leaf mutex); its
// wait runs under flush_mu_ only, and must not run on a thread the lock manager's replies need
// (the engine runs glock syncs of cluster mounts on a thread of their own for that reason).
#ifndef UGFS2_SRC_FS_LOG_MANAGER_H_
#define UGFS2_SRC_FS_LOG_MANAGER_H_

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <shared_mutex>
#include <vector>

#include "block/block_device.h"
#include "common/status.h"
#include "fs/allocator.h"
#include "fs/meta_cache.h"
#include "journal/journal.h"

namespace ugfs2::fs {

class LogManager {
 public:
  // Called with the transaction lock held exclusive at each snapshot: encode what must be in
  // this commit (the statfs change file) and return the statfs delta for the log header.
  using Prepare = std::function<journal::StatfsDelta()>;

  LogManager(BlockDevice* dev, MetaCache* cache, Allocator* alloc, uint32_t bsize)
      : dev_(dev), cache_(cache), alloc_(alloc), bsize_(bsize) {}
  LogManager(const LogManager&) = delete;
  LogManager& operator=(const LogManager&) = delete;

  // Gives the log its journal (after replay); without one (read-only mounts) flushes do nothing.
  void Attach(std::unique_ptr<journal::Journal> journal, Prepare prepare);
  // Provisional glock grants (glock::kNewObject, cluster mounts): `mark` is taken at each
  // snapshot (the latest provisional grant; it covers every operation in the snapshot), and
  // `wait(mark)` runs before the commit, so nothing a glock covers reaches the journal or its
  // place on the shared disk before the lock manager has confirmed the grant. Set once, before
  // the first flush; without it flushes do not wait.
  void SetProvisionalGate(std::function<uint64_t()> mark, std::function<void(uint64_t)> wait);
  journal::Journal* journal() const { return journal_.get(); }
  // The journal's commit budget (fixed once attached; 0 without a journal).
  uint64_t max_blocks_per_commit() const { return max_blocks_per_commit_; }

  std::shared_mutex& trans_mutex() const { return trans_mu_; }
  // The next mod sequence; call inside the transaction, after the changes.
  uint64_t Bump() { return ++mod_seq_; }
  uint64_t mod_seq() const { return mod_seq_.load(); }
  uint64_t flushed_seq() const { return flushed_seq_.load(); }
  bool broken() const { return broken_.load(); }
  void MarkBroken() { broken_ = true; }

  Status FlushUpTo(uint64_t upto);
  Status Flush() { return FlushUpTo(mod_seq()); }
  // Flushes up to `upto`, then retires the newest commit (Journal::Retire) so that no replay of
  // this journal can rewrite what another node changes next. Cluster glock syncs call it.
  Status FlushAndRetire(uint64_t upto);
  uint64_t retires() const { return retires_.load(); }

  uint64_t flushes() const { return flushes_.load(); }
  uint64_t meta_writes() const { return meta_writes_.load(); }
  // Device requests the in-place writes took (neighbouring blocks share one).
  uint64_t in_place_requests() const { return in_place_requests_.load(); }

 private:
  static constexpr uint64_t kMaxBatchWaitUs = 2000;
  static constexpr size_t kMaxInPlaceRun = 256;  // blocks per in-place write request

  // Writes a commit's (sorted) snapshot in place, neighbouring blocks in one request each, and
  // marks each block written. Called under flush_mu_ after the commit is durable.
  Status WriteInPlace(const std::vector<DirtySnapshot>& snap);

  BlockDevice* const dev_;
  MetaCache* const cache_;
  Allocator* const alloc_;
  const uint32_t bsize_;
  std::unique_ptr<journal::Journal> journal_;  // set once by Attach, before any flush
  Prepare prepare_;
  std::function<uint64_t()> provisional_mark_;
  std::function<void(uint64_t)> provisional_wait_;
  uint64_t max_blocks_per_commit_ = 0;

  mutable std::shared_mutex trans_mu_;  // the transaction lock (gfs2's sd_log_flush_lock)
  std::mutex flush_mu_;                 // one flush at a time; lock order: flush_mu_ -> trans_mu_
  // Group-commit batching: callers queued for flush_mu_, and what the last commit served.
  std::mutex batch_mu_;  // leaf; pairs with batch_cv_
  std::condition_variable batch_cv_;
  int flush_waiters_ = 0;  // guarded by batch_mu_
  std::atomic<uint32_t> last_batch_{1};
  std::atomic<uint64_t> last_commit_us_{0};

  std::atomic<uint64_t> mod_seq_{0};      // bumped by every modifying section
  std::atomic<uint64_t> flushed_seq_{0};  // everything <= this is durable
  std::atomic<bool> broken_{false};
  std::atomic<uint64_t> flushes_{0}, meta_writes_{0}, retires_{0}, in_place_requests_{0};
};

}  // namespace ugfs2::fs

#endif  // UGFS2_SRC_FS_LOG_MANAGER_H_
