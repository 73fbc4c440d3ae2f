// The GFS2 log of one journal (jindex/journal<jid>): finding the head, replay (recovery), the
// mount/unmount header protocol and writing commits, in the real GFS2 on-disk log format
// (linux/gfs2_ondisk.h; docs/format.md section 7; docs/journal.md).
//
// A Journal addresses its blocks by journal index 0..size()-1; `blocks[i]` is the physical block
// of index i (the caller maps the journal dinode, e.g. with MapJournalBlocks). Protocol:
//
//   Open -> FindHead -> (dirty? Replay) -> MarkMounted -> Commit* -> WriteUnmountHeader
//
// Commit rule (the "tail rule"): each commit's header has lh_tail = the first block of that very
// commit, so only the newest commit is ever replayable. The caller therefore MUST have written
// every block of the previous commit in place before calling Commit again (Commit's first Flush
// makes those writes durable before the new header retires the old commit), and must never write
// a block in place before the Commit that logs it has returned OK.
//
// Replay works on any GFS2 journal (also one written by the kernel or another node, with several
// commits and revokes in its active region). It validates every descriptor before writing
// anything in place and returns kCorrupt on a damaged log; it is idempotent.
//
// Thread-compatible: one caller at a time (the engine serializes calls). Errors via Status; after
// any failed write the in-memory head is forgotten and FindHead() must be called again.
#ifndef UGFS2_SRC_JOURNAL_JOURNAL_H_
#define UGFS2_SRC_JOURNAL_JOURNAL_H_

#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "block/block_device.h"
#include "common/status.h"
#include "format/ondisk.h"

namespace ugfs2::journal {

// One metadata block to log: its in-place block number and its full new image (bsize bytes,
// starting with the GFS2 metadata magic).
struct LogBlock {
  uint64_t blkno = 0;
  const uint8_t* data = nullptr;
};

// Local statfs deltas (lh_local_total / lh_local_free / lh_local_dinodes).
struct StatfsDelta {
  int64_t total = 0;
  int64_t free = 0;
  int64_t dinodes = 0;
  bool operator==(const StatfsDelta&) const = default;
};

struct ReplayStats {
  bool was_dirty = false;      // head lacked UNMOUNT (false: nothing was done)
  uint64_t head_sequence = 0;  // the head found before replay
  uint32_t head_blkno = 0;
  uint32_t tail = 0;             // head's lh_tail
  uint32_t region_blocks = 0;    // active region length [tail, head)
  uint32_t descriptors = 0;      // LD blocks visited
  uint32_t metadata_copies = 0;  // METADATA entries in the region
  uint32_t jdata_copies = 0;     // JDATA entries in the region
  uint32_t revokes = 0;          // REVOKE entries in the region
  uint32_t revoked_copies = 0;   // copies skipped because a later revoke covers them
  uint32_t blocks_replayed = 0;  // distinct blocks written in place (last copy wins)
  StatfsDelta local;             // the head's lh_local_* (the dead node's unsynced deltas)
};

// Maps a journal dinode's metadata tree (heights 1..kMaxMetaHeight, IN blocks) to the physical
// block of each journal block: result[i] = physical block of journal block i, size = di_size /
// bsize. kCorrupt for a non-dinode, a hole, a bad pointer or a size that is not a multiple of
// bsize.
Result<std::vector<uint64_t>> MapJournalBlocks(BlockDevice& dev, const format::Geometry& geo,
                                               uint64_t dinode_addr);

class Journal {
 public:
  // Smallest journal we accept (mkfs.gfs2's minimum is 8 MiB; this is only a sanity bound).
  static constexpr uint32_t kMinBlocks = 8;

  // `dev` must outlive the Journal. statfs_addr / quota_addr: no_addr of this journal's
  // per_node/statfs_change<jid> and quota_change<jid> (written into every header).
  static Result<Journal> Open(BlockDevice* dev, uint32_t bsize, uint32_t jid, uint64_t jinode_addr,
                              std::vector<uint64_t> blocks, uint64_t statfs_addr,
                              uint64_t quota_addr);

  // Scans every block for the valid log header (magic, type, lh_hash, lh_crc if set, lh_blkno
  // == position) with the highest sequence. kCorrupt if there is none.
  Status FindHead();
  bool head_known() const { return head_known_; }
  // The current head (valid after FindHead and after every successful write).
  const format::LogHeader& head() const { return head_; }
  // True if the head has the UNMOUNT flag (the log is clean).
  bool IsClean() const { return head_known_ && (head_.flags & format::kLogHeadUnmount) != 0; }

  // If the journal is dirty, replays its active region in place, flushes, and writes a clean
  // header (seq+1, UNMOUNT|RECOVERY, tail = own blkno) at head+1. No-op on a clean journal.
  Result<ReplayStats> Replay();

  // Marks the journal in use: header at head+1, seq+1, FLUSH_NORMAL, tail = own blkno. Refuses
  // (kInvalid) a dirty journal: Replay first. `local`: see Commit.
  Status MarkMounted(const StatfsDelta& local = {});

  // Writes one commit at head+1: REVOKE chunk (if any revokes), METADATA chunks, Flush, log
  // header (seq+1, FLUSH_NORMAL, tail = first block of this commit, lh_local_* = local), Flush.
  // `local` is the node's whole not-yet-folded statfs delta (what statfs_change<jid> plus
  // unsynced changes amount to), as the kernel writes it; Replay reports the head's value.
  // A block listed both in `meta` and in `revokes` is replayed (revokes only cancel copies
  // logged by earlier commits). kNoSpace if BlocksNeeded() > MaxBlocksPerCommit(); kInvalid if
  // an image does not start with the GFS2 magic or a block number is out of range.
  Status Commit(std::span<const LogBlock> meta, std::span<const uint64_t> revokes,
                const StatfsDelta& local);

  // Retires the newest commit (cluster mounts, before a glock that covers its blocks leaves
  // this node): Flush (its in-place writes become durable), header at head+1 (seq+1,
  // FLUSH_NORMAL, tail = own blkno, the head's lh_local_*), Flush. Afterwards nothing is
  // replayable, so a replay of this journal by another node can never rewrite a block that a
  // node has changed since. No-op when nothing is replayable (tail == blkno, or clean).
  Status Retire();
  // True if a replay would write something (the head's commit is not retired).
  bool Replayable() const { return head_known_ && !IsClean() && head_.tail != head_.blkno; }
  // Clean unmount: Flush, header at head+1, seq+1, UNMOUNT|LFC_SHUTDOWN (0x101), tail = own
  // blkno, Flush. The caller must have written everything in place first.
  Status WriteUnmountHeader(const StatfsDelta& local = {});

  // Journal blocks one Commit(nmeta metadata blocks, nrevoke revokes) occupies, including its
  // descriptors, revoke continuation blocks and the log header.
  uint64_t BlocksNeeded(uint64_t nmeta, uint64_t nrevoke) const;
  // Budget for the engine: any commit with nmeta + nrevoke <= MaxBlocksPerCommit() fits (room
  // for descriptors and the header is already set aside). Commit itself accepts anything with
  // BlocksNeeded() <= size() - 2.
  uint64_t MaxBlocksPerCommit() const;

  uint32_t size() const { return static_cast<uint32_t>(blocks_.size()); }
  uint32_t jid() const { return jid_; }
  uint32_t bsize() const { return bsize_; }
  const std::vector<uint64_t>& blocks() const { return blocks_; }
  // Metadata entries per METADATA descriptor, revokes in a descriptor / in an LB block.
  uint32_t MetaPerDescriptor() const { return (bsize_ - format::kLogDescSize) / 8; }
  uint32_t RevokesPerLb() const { return (bsize_ - format::kMetaHeaderSize) / 8; }

 private:
  Journal() = default;

  uint32_t Next(uint32_t idx, uint64_t n = 1) const {
    return static_cast<uint32_t>((idx + n) % blocks_.size());
  }
  // Reads `count` journal blocks starting at index `first` (wrapping), coalescing physically
  // contiguous runs.
  Status ReadBlocks(uint32_t first, uint32_t count, uint8_t* buf);
  // Writes `count` journal blocks starting at index `first` (wrapping).
  Status WriteBlocks(uint32_t first, uint32_t count, const uint8_t* buf);
  // Calls io(device offset, buffer offset, length) for each physically contiguous run.
  Status ForEachRun(uint32_t first, uint32_t count,
                    const std::function<Status(uint64_t, uint64_t, uint64_t)>& io) const;
  // Encodes a header for journal index `idx` with the given fields.
  format::LogHeader MakeHeader(uint32_t idx, uint64_t seq, uint32_t flags, uint32_t tail,
                               const StatfsDelta& local) const;
  // Flush, write `h` at its blkno, Flush; on success h becomes the head.
  Status WriteHeader(const format::LogHeader& h);
  std::string Where() const;             // "journal<jid>" for messages
  bool InJournal(uint64_t blkno) const;  // is blkno one of this journal's blocks?

  BlockDevice* dev_ = nullptr;
  uint32_t bsize_ = 0;
  uint32_t jid_ = 0;
  uint64_t jinode_addr_ = 0;
  uint64_t statfs_addr_ = 0;
  uint64_t quota_addr_ = 0;
  std::vector<uint64_t> blocks_;
  std::vector<std::pair<uint64_t, uint64_t>> runs_;  // sorted physical runs [start, end)
  bool head_known_ = false;
  format::LogHeader head_;
};

}  // namespace ugfs2::journal

#endif  // UGFS2_SRC_JOURNAL_JOURNAL_H_
