// InodeTable: the kernel's view of inodes (FUSE lookup counts) and the fuse_ino_t <-> InodeNo map.
//
// Node ids (fuse_ino_t) carry the dinode's generation: nodeid = (generation & 0xffff) << 48 |
// address, so that a dinode address reused by a new file (new generation) while the kernel
// still references the old file gives the kernel a different node id instead of aliasing the
// two. The root directory is FUSE_ROOT_ID (1) on the FUSE side and fs.root() on the core side
// (no dinode lives at block 1). Addresses must be below 2^48 (the daemon refuses larger
// volumes). st_ino / d_ino stay the plain dinode address (what the kernel gfs2 reports).
// FromKernel gives back the address; Resolve also checks the generation: a node id whose
// generation is not the one the kernel was last given for its address (at the last AddLookup)
// names a dinode freed and reused since, and is kStale (ESTALE).
//
// Every successful entry reply (lookup, mknod, mkdir, symlink, link, create, readdirplus except
// "." and "..") counts +1 (AddLookup, BEFORE replying so a racing FORGET never sees a missing
// entry; undo with Forget if the reply fails); FORGET/BATCH_FORGET subtract. Counts are kept per
// address: the node ids of an old and a new generation of one address share one count (the sum
// of what the kernel holds on both). An inode with count 0 is not in the table: the kernel holds
// no reference, so cache-invalidation notifications for it are pointless. The root is pinned by
// the kernel and is never forgotten.
//
// This class has no FUSE types and is unit-tested on its own (including under TSan).
// Thread safety: all methods are safe to call concurrently (sharded mutexes; no lock is held while
// calling out).
#ifndef UGFS2_FUSE_INODE_TABLE_H_
#define UGFS2_FUSE_INODE_TABLE_H_

#include <array>
#include <cstdint>
#include <mutex>
#include <optional>
#include <unordered_map>

#include "common/status.h"
#include "fs/file_system.h"

namespace ugfs2::fusefs {

using KernelIno = uint64_t;                     // fuse_ino_t
inline constexpr KernelIno kKernelRootIno = 1;  // FUSE_ROOT_ID
// Node id layout: the low 48 bits are the dinode address, the high 16 the generation's low bits.
inline constexpr int kNodeIdGenerationShift = 48;
inline constexpr InodeNo kMaxNodeIdAddress = (InodeNo{1} << kNodeIdGenerationShift) - 1;

class InodeTable {
 public:
  explicit InodeTable(InodeNo root) : root_(root) {}
  InodeTable(const InodeTable&) = delete;
  InodeTable& operator=(const InodeTable&) = delete;

  InodeNo root() const { return root_; }
  // The node id of the dinode at `ino` with `generation` (FUSE_ROOT_ID for the root).
  KernelIno ToKernel(InodeNo ino, uint64_t generation) const {
    if (ino == root_) return kKernelRootIno;
    return (generation & kGenerationMask) << kNodeIdGenerationShift | (ino & kMaxNodeIdAddress);
  }
  // The dinode address a node id names (no generation check: FORGET, RELEASE).
  InodeNo FromKernel(KernelIno kino) const {
    return kino == kKernelRootIno ? root_ : kino & kMaxNodeIdAddress;
  }
  // FromKernel for a request: kStale if the kernel references the address (lookup count > 0)
  // under another generation than the one `kino` carries. A node id whose address the kernel
  // holds no reference on (the LOOKUP "." of a file handle it no longer caches) passes; the
  // caller compares the generation of the attributes it gets (SameGeneration).
  Result<InodeNo> Resolve(KernelIno kino) const;
  // Whether `kino` carries (the low bits of) `generation`; always true for the root.
  static bool SameGeneration(KernelIno kino, uint64_t generation) {
    return kino == kKernelRootIno ||
           (kino >> kNodeIdGenerationShift) == (generation & kGenerationMask);
  }
  // The node id under which the kernel references `ino` now (the generation of the last
  // AddLookup), or nullopt if it holds no reference. The root is always referenced.
  std::optional<KernelIno> KnownKernelIno(InodeNo ino) const;

  // The kernel got one more reference to `ino` (an entry reply). Returns the new count.
  uint64_t AddLookup(InodeNo ino, uint64_t generation);
  // The kernel dropped `n` references. Returns the remaining count. Forgetting more than the
  // table knows about (a protocol violation) clamps to 0 and is counted in underflows().
  uint64_t Forget(InodeNo ino, uint64_t n);

  // Current kernel lookup count of `ino` (0 if unknown).
  uint64_t LookupCount(InodeNo ino) const;
  // Generation recorded at the last AddLookup (0 if unknown).
  uint64_t Generation(InodeNo ino) const;
  bool Known(InodeNo ino) const { return LookupCount(ino) > 0; }
  // Number of inodes the kernel currently references.
  size_t Size() const;
  uint64_t underflows() const;

 private:
  struct Entry {
    uint64_t nlookup = 0;
    uint64_t generation = 0;
  };
  struct Shard {
    mutable std::mutex mu;  // leaf lock: nothing else is acquired while holding it
    std::unordered_map<InodeNo, Entry> map;
    uint64_t underflows = 0;
  };
  static constexpr size_t kShards = 32;
  Shard& ShardFor(InodeNo ino) { return shards_[Hash(ino) % kShards]; }
  const Shard& ShardFor(InodeNo ino) const { return shards_[Hash(ino) % kShards]; }
  static uint64_t Hash(InodeNo ino) { return (ino * 0x9E3779B97F4A7C15ull) >> 32; }
  static constexpr uint64_t kGenerationMask = 0xffff;

  const InodeNo root_;
  std::array<Shard, kShards> shards_;
};

}  // namespace ugfs2::fusefs

#endif  // UGFS2_FUSE_INODE_TABLE_H_
