// MetaCache: the metadata buffer cache. Holds filesystem-block-sized images of metadata blocks
// (dinodes, indirect blocks, leaves, hash-table blocks, rgrp headers and bitmaps, system files).
// File data never goes through it.
//
// A buffer is dirty from MarkDirty until a log flush has written it in place (MarkWritten with
// the modification count it snapshotted). Dirty and pinned buffers are never evicted; clean ones
// are evicted LRU when the cache exceeds its byte budget.
//
// Ownership: every buffer has an owner, the number of the glock that covers it (an inode glock:
// its dinode, indirect blocks, directory leaves and hash table, EA blocks; an rgrp glock, whose
// number is the rgrp's header address: its header and bitmaps; kNoOwner for system blocks).
// DropOwned(owner) forgets exactly the clean buffers of one owner, for the glock's invalidate hook.
//
// Thread safety: all methods are safe to call concurrently. The *contents* of a buffer are
// protected by the glock of its owner (readers shared, writers exclusive; rgrp buffers also by
// the allocator's mutex, as rgrp glocks are shared among a node's holders; system buffers by the
// allocator's mutex); the cache's own mutex `mu_` protects only the map,
// the LRU, the owner index and the dirty bookkeeping. It is a leaf lock.
#ifndef UGFS2_SRC_FS_META_CACHE_H_
#define UGFS2_SRC_FS_META_CACHE_H_

#include <cstdint>
#include <list>
#include <memory>
#include <mutex>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "block/block_device.h"
#include "common/status.h"

namespace ugfs2::fs {

struct Buffer {
  explicit Buffer(uint64_t b, uint32_t bsize) : blkno(b), data(bsize, 0) {}
  uint64_t blkno;
  std::vector<uint8_t> data;
  uint64_t owner = 0;  // guarded by MetaCache::mu_
  // Bookkeeping below is guarded by MetaCache::mu_.
  bool dirty = false;
  uint64_t mods = 0;  // bumped by every MarkDirty
  int pins = 0;
  std::list<uint64_t>::iterator lru;
  bool in_lru = false;
  uint8_t* bytes() { return data.data(); }
};
using BufferRef = std::shared_ptr<Buffer>;

struct DirtySnapshot {
  BufferRef buf;
  uint64_t mods;
  std::vector<uint8_t> image;
};

inline constexpr uint64_t kNoOwner = 0;

class MetaCache {
 public:
  MetaCache(BlockDevice* dev, uint32_t bsize, uint64_t budget_bytes)
      : dev_(dev), bsize_(bsize), budget_blocks_(std::max<uint64_t>(budget_bytes / bsize, 1024)) {}

  // Returns the buffer for blkno, reading it from the device if it is not cached; a buffer read
  // now (or owned by nobody so far) gets `owner`.
  Result<BufferRef> Get(uint64_t blkno, uint64_t owner = kNoOwner);
  // The block as the device has it now (or this cache's dirty image), not kept in the cache: for
  // reads of metadata whose glock this node does not hold.
  Result<BufferRef> ReadFresh(uint64_t blkno);
  // Returns a zeroed buffer for a newly allocated block without reading it. Marks it dirty and
  // gives it to `owner`.
  BufferRef GetNew(uint64_t blkno, uint64_t owner = kNoOwner);
  // Forgets every clean, unpinned buffer of `owner`; returns how many. Dirty or pinned buffers of
  // the owner stay (the caller synced first; a survivor is a bug it may log): their count goes to
  // *kept if given.
  size_t DropOwned(uint64_t owner, size_t* kept = nullptr);
  // Whether some buffer of `owner` is dirty (changed, not yet written in place).
  bool HasDirtyOwned(uint64_t owner) const;
  void MarkDirty(const BufferRef& b);
  void Pin(const BufferRef& b);
  void Unpin(const BufferRef& b);
  // Drops a block (it was freed). Returns true if it was dirty (its update is discarded).
  bool Forget(uint64_t blkno);
  // Copies every dirty buffer (for a log flush).
  std::vector<DirtySnapshot> SnapshotDirty();
  size_t DirtyCount() const;
  // After the snapshot image was written in place: clean unless modified again since.
  void MarkWritten(const DirtySnapshot& s);
  // Drops every clean, unpinned buffer (e.g. when a cluster lock is lost).
  void DropClean();
  uint64_t reads() const { return reads_; }
  size_t size() const;

 private:
  void TouchLocked(Buffer* b);
  void SetDirtyLocked(Buffer* b);
  void SetCleanLocked(Buffer* b);
  void EvictLocked();
  void SetOwnerLocked(Buffer* b, uint64_t owner);  // re-indexes b under `owner`
  void UnindexLocked(Buffer* b);                   // removes b from owned_ (b->owner stays)
  void EraseLocked(std::unordered_map<uint64_t, BufferRef>::iterator it);

  BlockDevice* dev_;
  uint32_t bsize_;
  uint64_t budget_blocks_;
  mutable std::mutex mu_;
  std::unordered_map<uint64_t, BufferRef> map_;
  std::list<uint64_t> lru_;            // front = most recent; only clean unpinned buffers
  std::unordered_set<Buffer*> dirty_;  // every buffer with dirty set; each is also in map_
  std::unordered_map<uint64_t, std::unordered_set<uint64_t>> owned_;  // owner -> blknos in map_
  uint64_t reads_ = 0;
};

}  // namespace ugfs2::fs

#endif  // UGFS2_SRC_FS_META_CACHE_H_
