// InodeTable: the kernel's view of inodes (FUSE lookup counts) and the fuse_ino_t <-> InodeNo map.
//
// fuse_ino_t values are dinode block addresses, except that the root directory is FUSE_ROOT_ID (1)
// on the FUSE side and fs.root() on the core side (no dinode lives at block 1). Every successful
// entry reply (lookup, mknod, mkdir, symlink, link, create, readdirplus except "." and "..")
// counts +1 (AddLookup, BEFORE replying so a racing FORGET never sees a missing entry; undo with
// Forget if the reply fails); FORGET/BATCH_FORGET subtract. An inode with count 0 is not in the
// table: the kernel holds no reference, so cache-invalidation notifications for it are pointless.
// The root is pinned by the kernel and is never forgotten.
//
// This class has no FUSE types and is unit-tested on its own (including under TSan).
// Thread safety: all methods are safe to call concurrently (sharded mutexes; no lock is held while
// calling out).
#ifndef UGFS2_FUSE_INODE_TABLE_H_
#define UGFS2_FUSE_INODE_TABLE_H_

#include <array>
#include <cstdint>
#include <mutex>
#include <unordered_map>

#include "fs/file_system.h"

namespace ugfs2::fusefs {

using KernelIno = uint64_t;                     // fuse_ino_t
inline constexpr KernelIno kKernelRootIno = 1;  // FUSE_ROOT_ID

class InodeTable {
 public:
  explicit InodeTable(InodeNo root) : root_(root) {}
  InodeTable(const InodeTable&) = delete;
  InodeTable& operator=(const InodeTable&) = delete;

  InodeNo root() const { return root_; }
  KernelIno ToKernel(InodeNo ino) const { return ino == root_ ? kKernelRootIno : ino; }
  InodeNo FromKernel(KernelIno ino) const { return ino == kKernelRootIno ? root_ : ino; }

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

  const InodeNo root_;
  std::array<Shard, kShards> shards_;
};

}  // namespace ugfs2::fusefs

#endif  // UGFS2_FUSE_INODE_TABLE_H_
