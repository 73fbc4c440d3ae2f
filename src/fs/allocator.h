// Allocator: the resource groups of one mount — their headers and bitmaps, block allocation with
// a locality policy, deferred frees and the revokes they need, and this node's statfs deltas.
// Internal header (src/fs only).
//
// Policy: a file's blocks are allocated near a goal (its last allocated block, else its dinode);
// dinodes of new files go near their parent directory; new directories are spread round-robin
// over resource groups with more than average free space (an Orlov-like rule), which also keeps
// different nodes in different rgrps once several nodes mount.
//
// Deferred frees: a block freed in the current log batch is not reused before the commit that
// frees it is durable (pending, then committing); if its old image may still be replayed from
// the log, the next commit revokes it. BeginCommit/EndCommit bracket a log flush.
//
// Resource-group glocks (type 3, number = the rgrp's header block). An rgrp's header and bitmaps
// are covered by its glock: they are owned by it in the MetaCache (owner = the header address),
// dropped by its invalidate hook (InvalidateRgrp) and re-read by its refresh hook (RefreshRgrp).
// Operations hold rgrp glocks EX with kNodeScope (as gfs2's LM_FLAG_NODE_SCOPE): the holders of
// one node share the EX state and `mu_` serializes them locally. OpScope takes the rgrp glocks
// an operation needs before its transaction (the rgrps it frees into, found by walking what it
// will free; and, to allocate, the rgrps ReserveRgrps picked), and tells the allocator
// (Hold/Unhold). While enforcement is on (the glock layer is running), a transaction allocates
// and frees only in rgrps some local operation holds; the rule that makes a demote safe is
// that every change to an rgrp happens under mu_ while it has a holder, so the demote's sync
// (a log flush, which waits for every transaction in flight) covers it. Mount and unmount run
// alone, with enforcement off.
//
// Thread safety: every public method is thread-safe. `mu_` guards the rgrps (headers, bitmap
// buffers' contents, hints, holders, reservations), the round-robin cursor and the statfs
// deltas; `pending_mu_` the deferred frees, revokes and the newest commit's blocks. Both are
// leaves below the engine's transaction lock; no allocator method calls the glock runner.
// Lock order: mu_ -> pending_mu_ -> MetaCache::mu_.
#ifndef UGFS2_SRC_FS_ALLOCATOR_H_
#define UGFS2_SRC_FS_ALLOCATOR_H_

#include <cstdint>
#include <functional>
#include <mutex>
#include <unordered_set>
#include <utility>
#include <vector>

#include "common/status.h"
#include "format/ondisk.h"
#include "fs/meta_cache.h"

namespace ugfs2::fs {

struct Rgrp {
  format::Rindex ri;
  format::Rgrp hdr;
  std::vector<BufferRef> bufs;  // header block + bitmap blocks, pinned
  uint32_t hint = 0;            // next data offset to search from
  bool damaged = false;
  bool stale = false;     // its glock was invalidated: header and bitmaps are re-read first
  int holders = 0;        // local holders of its glock (operations between Hold and Unhold)
  uint64_t reserved = 0;  // blocks ReserveRgrps promised to operations in flight
  uint64_t pending = 0;   // freed blocks not reusable yet (their commit is not durable)
  uint32_t unlinked = 0;  // dinodes in the unlinked state (its lock value block carries it)
  uint64_t end() const { return ri.data0 + ri.data; }
};

// This node's statfs change not yet folded into the master statfs file.
struct StatfsDelta {
  int64_t total = 0, free = 0, dinodes = 0;
};

class Allocator {
 public:
  Allocator(MetaCache* cache, const format::Geometry& geo, uint64_t dev_blocks)
      : cache_(cache), geo_(geo), dev_blocks_(dev_blocks) {}
  Allocator(const Allocator&) = delete;
  Allocator& operator=(const Allocator&) = delete;

  // ---- mount
  // Loads and checks every rgrp the rindex (its whole contents) lists; damaged ones are kept but
  // never allocated from. kCorrupt if the rindex itself is implausible.
  Status Load(const std::vector<uint8_t>& rindex, uint64_t dev_size);
  // The journals' extents (sorted [start, end)): no pointer may lead into them.
  void SetJournalRuns(std::vector<std::pair<uint64_t, uint64_t>> runs);
  // Dinodes marked unlinked (left by an earlier mount that went away).
  std::vector<uint64_t> UnlinkedDinodes();
  bool empty() const { return rgrps_.empty(); }

  // ---- pointers read from disk
  // Plausible: inside the device, inside some rgrp's data, not in a journal.
  bool PtrOk(uint64_t blk) const;
  // Before writing file data in place: every block of the run is USED (kCorrupt + log line).
  Status CheckDataRun(uint64_t ino, uint64_t pblk, uint64_t n);
  enum class DinodeState { kLinked, kUnlinked, kUntrusted, kGone, kOutside };
  // What the bitmap says of `blk` as a dinode (kUntrusted: its rgrp is damaged; kOutside: not in
  // any rgrp).
  DinodeState StateOfDinode(uint64_t blk);

  // ---- allocation (state: format::kUsed or kDinode)
  Result<std::pair<uint64_t, uint32_t>> AllocBlocks(uint64_t goal, uint32_t want, uint8_t state);
  // A block free now near `goal` (a create locks its glock before allocating it).
  Result<uint64_t> PeekFreeBlock(uint64_t goal);
  // Allocates exactly `blk` as a dinode with the rgrp's next generation; false if it is taken.
  Result<bool> AllocDinodeAt(uint64_t blk, uint64_t* generation);
  Status FreeBlocks(uint64_t start, uint32_t count);  // data/metadata blocks (USED)
  Status FreeDinode(uint64_t blk);
  Status SetUnlinked(uint64_t blk);
  uint64_t PickDirGoal(uint64_t parent_goal);
  // Cluster mounts: node `index` of `count` (its journal id and the journal count) prefers every
  // count-th rgrp from index for new directories (gfs2's preferred rgrps, GFS2_RDF_PREFERRED).
  void SetShare(uint32_t index, uint32_t count);

  // ---- rgrp glocks
  // On while the glock layer runs: transactions then touch only held rgrps.
  void SetEnforced(bool on);
  // The header address of the rgrp holding `blk` (its glock number); 0 if none.
  uint64_t RgrpOf(uint64_t blk) const;
  // Picks rgrps, starting at the goal's, whose free blocks (less what is reserved) add up to
  // `blocks`, and reserves that many in them (all the volume has if it has less). Returns
  // (rgrp address, blocks reserved) pairs; the caller takes their glocks, then Unreserve.
  std::vector<std::pair<uint64_t, uint64_t>> ReserveRgrps(uint64_t goal, uint64_t blocks);
  void Unreserve(uint64_t rgrp, uint64_t blocks);
  // An operation got (Hold) / is giving up (Unhold) rgrp `rgrp`'s glock.
  void Hold(uint64_t rgrp);
  void Unhold(uint64_t rgrp);
  // Glock hooks. RgrpDirty: changes not yet in place (the sync hook flushes the log).
  bool RgrpDirty(uint64_t rgrp) const;
  void InvalidateRgrp(uint64_t rgrp);
  void InvalidateAll();  // every rgrp stale (a cluster mount, after reading them without glocks)
  Status RefreshRgrp(uint64_t rgrp);
  // Cluster mounts: the rgrp glocks' lock value blocks (gfs2's rgrp LVB, format::RgrpLvb, 32
  // bytes). `read` gives the value as of the glock's grant (false: none, or marked invalid);
  // `write` hands the lock module the value to store when the EX lock is given up. With them,
  // every header change made under EX also goes into the LVB, and a refresh checks the header it
  // reads against a valid LVB (a mismatch marks the rgrp damaged: a change made on another node
  // did not reach the disk). Set once, before the first refresh; the hooks are called under mu_
  // and must not call back (lock order: mu_ -> the lock module's mutex).
  // The glock dump's line for rgrp `rgrp` (gfs2's " R:" line, our fields): " R: n:ADDR
  // b:FREE i:DINODES u:UNLINKED r:RESERVED p:PENDING", then " stale" / " damaged", and a newline;
  // "" if there is no such rgrp.
  std::string DumpRgrp(uint64_t rgrp) const;
  using LvbRead = std::function<bool(uint64_t rgrp, uint8_t* out)>;
  using LvbWrite = std::function<void(uint64_t rgrp, const uint8_t* value)>;
  void SetLvbHooks(LvbRead read, LvbWrite write);

  // ---- space
  uint64_t TotalFree() const;
  size_t DeferredFrees() const;  // freed blocks waiting for their commit
  struct Totals {
    int64_t total = 0, free = 0, dinodes = 0;
    bool damaged = false;  // some rgrp is damaged: its counts are not in free/dinodes
  };
  Totals Sum() const;
  // Runs `fn` on this node's statfs delta and the part of it already written to its
  // statfs_change file, under mu_ (fn must not call back into the allocator).
  void WithStatfs(const std::function<void(StatfsDelta& local, StatfsDelta& on_disk)>& fn);

  // ---- log flush
  // At the snapshot of a flush: returns the revokes for this commit; this batch's frees become
  // the committing ones.
  std::vector<uint64_t> BeginCommit();
  // After the commit: on success the committing frees become reusable and `blocks` are the
  // newest commit's; on failure the frees stay unusable.
  void EndCommit(bool ok, const std::vector<uint64_t>& blocks);

 private:
  Rgrp* RgrpFor(uint64_t blk);
  const Rgrp* RgrpFor(uint64_t blk) const;
  Rgrp* RgrpAt(uint64_t addr);  // by header address
  // Reads the header and bitmaps of `rg` (owned by its glock, pinned) and checks them; a damaged
  // rgrp is kept but flagged. REQUIRES mu_.
  Status ReadRgrpLocked(Rgrp& rg);
  void DropRgrpLocked(Rgrp& rg);  // unpins and forgets its buffers; REQUIRES mu_
  // May a transaction change `rg` now (REQUIRES mu_)? Reloads a stale rgrp when enforcement
  // is off.
  bool UsableLocked(Rgrp& rg);
  // Bitmap state for read-only checks, also of an rgrp nobody holds (a stale one is read from
  // the device, not kept pinned). REQUIRES mu_.
  Result<uint8_t> PeekStateLocked(Rgrp& rg, uint64_t blk);
  size_t StartIndexLocked(uint64_t goal) const;  // the rgrp a search from `goal` starts in
  static Status NotHeld(uint64_t blk);           // kDeadlock + log line: an OpScope bug
  uint8_t GetBlockState(const Rgrp& rg, uint64_t blk) const;  // REQUIRES mu_
  void SetBlockState(Rgrp& rg, uint64_t blk, uint8_t state);  // REQUIRES mu_
  void WriteRgrpHeader(Rgrp& rg);                             // REQUIRES mu_
  Result<std::pair<uint64_t, uint32_t>> FindFreeLocked(uint64_t goal, uint32_t want, uint8_t state,
                                                       bool take);
  void NoteFreed(uint64_t blk);  // REQUIRES mu_
  bool IsPendingFree(uint64_t blk) const;

  MetaCache* const cache_;
  const format::Geometry geo_;
  const uint64_t dev_blocks_;
  std::vector<std::pair<uint64_t, uint64_t>> journal_runs_;  // set once at mount

  mutable std::mutex mu_;               // lock order: mu_ -> pending_mu_ -> MetaCache::mu_
  void StoreLvbLocked(const Rgrp& rg);  // hands lvb_write_ the rgrp's LVB; REQUIRES mu_
  LvbRead lvb_read_;                    // set once (SetLvbHooks), before concurrent use
  LvbWrite lvb_write_;
  std::vector<Rgrp> rgrps_;  // sorted by address; the vector itself is fixed after Load
  size_t alloc_rr_ = 0;      // round-robin cursor for spreading directories
  bool enforced_ = false;    // SetEnforced
  uint32_t share_index_ = 0, share_count_ = 1;  // SetShare
  StatfsDelta local_;                           // not yet folded into the master statfs
  StatfsDelta local_on_disk_;                   // the part of local_ written to statfs_change<jid>

  mutable std::mutex pending_mu_;                    // leaf
  std::unordered_set<uint64_t> pending_free_;        // freed in the current batch
  std::unordered_set<uint64_t> committing_free_;     // freed in the batch being committed
  std::unordered_set<uint64_t> last_commit_blocks_;  // the newest commit's blocks
  std::vector<uint64_t> revokes_;                    // for the next commit
};

}  // namespace ugfs2::fs

#endif  // UGFS2_SRC_FS_ALLOCATOR_H_
