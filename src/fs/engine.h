// Engine: the single-node GFS2 engine behind FileSystem. Internal header (src/fs only).
//
// Structure (one file per concern):
//   engine.cc      mount/unmount, system files, statfs, remount, counters
//   log_manager.*  the LogManager: transaction lock, mod sequence, group-committed log flush
//   allocator.*    the Allocator: resource groups, bitmaps, allocation policy, deferred frees
//   inode.cc       in-core inodes, dinode I/O, metadata trees (map, grow, truncate, dealloc)
//   dir.cc         stuffed and exhash directories
//   rgrp_sets.cc   the resource groups an operation frees into or allocates from
//   glocks.cc      the glock hooks (sync, invalidate, refresh) and the demote control
//   op_scope.*     the per-operation scope: glocks in order, back-off, the transaction
//   ops.cc         the FileSystem operations
//
// Locking (docs/locking.md §5): glocks are the only locks an operation takes on filesystem
// objects. Every operation runs in an OpScope that takes its glocks (inode glocks SH to read, EX
// to change; the rename glock first for renames between directories) in ascending glock order,
// taking anything out of order with TRY and backing off; then, to modify, it enters the
// transaction (the LogManager's trans_mutex() shared). A log flush takes it exclusive only while it
// snapshots the dirty buffers. No glock is ever requested inside a transaction (a glock's sync hook
// flushes the log). Small local mutexes, each a leaf below the transaction:
//   Allocator::mu_, Allocator::pending_mu_   rgrps (under their node-scope glocks), statfs
//                                             deltas; deferred frees, revokes
//   inodes_mu_                                the in-core inode table and open counts
//   MetaCache::mu_, GlockRunner::mu_          (leaves)
// Lock order: remount_mu_ -> glocks (rename, inodes, rgrps, by number) -> LogManager::flush_mu_ ->
// LogManager::trans_mu_ (the transaction) -> Allocator::mu_ -> Allocator::pending_mu_ -> inodes_mu_
// -> MetaCache::mu_.
#ifndef UGFS2_SRC_FS_ENGINE_H_
#define UGFS2_SRC_FS_ENGINE_H_

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <shared_mutex>
#include <string>
#include <thread>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "block/block_device.h"
#include "format/ondisk.h"
#include "fs/allocator.h"
#include "fs/file_system.h"
#include "fs/log_manager.h"
#include "fs/meta_cache.h"
#include "glock/glock_runner.h"

namespace ugfs2::journal {
class Journal;
}

namespace ugfs2::fs {

// An in-core inode. `buf`, `di`, `damaged` and `stale` belong to the inode's glock (read under
// SH, changed under EX); `opens` is guarded by Engine::inodes_mu_; `last_mod` is atomic.
struct Inode {
  InodeNo no = 0;
  BufferRef buf;  // the dinode block, pinned while the Inode is cached
  format::Dinode di;
  int opens = 0;
  // Cluster mounts: the iopen glock's SH holder while opens > 0 (guarded with `opens`), and
  // whether the operation dropping the last link holds iopen EX, i.e. no node has it open
  // (set and read under the inode's glock EX).
  glock::HolderId iopen = 0;
  bool iopen_ex = false;
  bool damaged = false;
  bool stale = false;                 // invalidated: re-read the dinode before use
  std::atomic<uint64_t> last_mod{0};  // mod_seq_ of its newest change (the sync hook flushes that)
  // A direct write (under DF) found mtime or ctime older than the time granularity of direct
  // writes: Engine::TouchAfterDirectWrite updates them once the write's glock is released.
  std::atomic<bool> direct_times_due{false};
  bool is_dir() const { return (di.mode & 0170000) == 0040000; }
  bool is_reg() const { return (di.mode & 0170000) == 0100000; }
  bool is_lnk() const { return (di.mode & 0170000) == 0120000; }
};
using InodeRef = std::shared_ptr<Inode>;

// A dirent found in a directory block.
struct DirentLoc {
  BufferRef buf;
  uint32_t offset = 0;       // of the dirent in the block
  uint32_t prev_offset = 0;  // previous dirent in the same block (0 = this one is first)
  bool first = true;
  uint32_t block_start = 0;  // 232 (stuffed dinode) or 104 (leaf)
  format::Dirent de;
  uint64_t leaf_blk = 0;  // 0 for a stuffed directory
};

// a * b, saturating at 2^64 - 1 (spans of tall metadata trees).
inline uint64_t SatMul(uint64_t a, uint64_t b) {
  if (a != 0 && b > ~uint64_t{0} / a) return ~uint64_t{0};
  return a * b;
}

// format::CheckMeta plus a log line naming the damaged block.
Status CheckMetaLogged(const uint8_t* p, uint32_t type, uint64_t blkno);

class OpScope;

class Engine final : public FileSystem {
 public:
  Engine(std::unique_ptr<BlockDevice> dev, const MountOptions& opts);
  ~Engine() override;
  Status DoMount();

  // FileSystem
  Status Unmount() override;
  InodeNo root() const override { return sb_.root_dir.addr; }
  uint32_t block_size() const override { return geo_.bsize; }
  std::string Describe() const override;
  Result<Attr> Lookup(InodeNo parent, std::string_view name) override;
  Result<Attr> GetAttr(InodeNo ino) override;
  Result<Attr> SetAttr(InodeNo ino, const SetAttrRequest& req, const Cred& cred) override;
  Result<Attr> Mknod(InodeNo parent, std::string_view name, uint32_t mode, uint64_t rdev,
                     const Cred& cred) override;
  Result<Attr> Mkdir(InodeNo parent, std::string_view name, uint32_t mode,
                     const Cred& cred) override;
  Result<Attr> Create(InodeNo parent, std::string_view name, uint32_t mode, bool exclusive,
                      bool truncate, const Cred& cred) override;
  Result<Attr> Symlink(InodeNo parent, std::string_view name, std::string_view target,
                       const Cred& cred) override;
  Result<Attr> Link(InodeNo ino, InodeNo new_parent, std::string_view new_name) override {
    return LinkImpl(ino, std::nullopt, 0, new_parent, new_name);
  }
  Result<Attr> LinkGeneration(InodeNo ino, uint64_t generation, uint64_t mask, InodeNo new_parent,
                              std::string_view new_name) override {
    return LinkImpl(ino, generation, mask, new_parent, new_name);
  }
  Status Unlink(InodeNo parent, std::string_view name) override;
  Status Rmdir(InodeNo parent, std::string_view name) override;
  Status Rename(InodeNo parent, std::string_view name, InodeNo new_parent,
                std::string_view new_name, uint32_t flags) override;
  Result<std::string> ReadLink(InodeNo ino) override;
  Status Open(InodeNo ino, bool truncate, const Cred& cred) override {
    return OpenImpl(ino, truncate, cred, false, std::nullopt, 0);
  }
  Status OpenForUpdate(InodeNo ino, bool truncate, const Cred& cred) override {
    return OpenImpl(ino, truncate, cred, true, std::nullopt, 0);
  }
  Status OpenGeneration(InodeNo ino, uint64_t generation, uint64_t mask, bool truncate, bool update,
                        const Cred& cred) override {
    return OpenImpl(ino, truncate, cred, update, generation, mask);
  }
  Status Release(InodeNo ino) override;
  Result<size_t> Read(InodeNo ino, uint64_t off, std::span<uint8_t> buf) override {
    return ReadImpl(ino, off, buf, IoMode::kShared, 0);
  }
  Result<size_t> ReadForUpdate(InodeNo ino, uint64_t off, std::span<uint8_t> buf) override {
    return ReadImpl(ino, off, buf, IoMode::kUpdate, 0);
  }
  Result<uint64_t> HoldInode(InodeNo ino, IoMode mode, bool try_only) override;
  Status DropHold(uint64_t hold) override;
  Result<Attr> GetAttrUnder(InodeNo ino, uint64_t hold) override;
  Result<size_t> GetXattrUnder(InodeNo ino, std::string_view name, std::span<uint8_t> buf,
                               uint64_t hold) override;
  bool HoldContended(uint64_t hold) override;
  void MarkHoldRetained(uint64_t hold, bool retained) override;
  void SetRetainedContentionListener(std::function<void()> fn) override;
  void NoteIoRetry(InodeNo ino) override;
  Result<size_t> ReadIo(InodeNo ino, uint64_t off, std::span<uint8_t> buf, IoMode mode,
                        uint64_t hold) override {
    return ReadImpl(ino, off, buf, mode, hold);
  }
  Result<size_t> WriteIo(InodeNo ino, uint64_t off, std::span<const uint8_t> data, IoMode mode,
                         uint64_t hold) override;
  void SetNaiveLockOrder(bool naive) override { naive_order_.store(naive); }
  Result<size_t> Write(InodeNo ino, uint64_t off, std::span<const uint8_t> data,
                       bool kill_priv) override;
  Result<size_t> Append(InodeNo ino, std::span<const uint8_t> data, bool kill_priv) override {
    return WriteImpl(ino, std::nullopt, data, kill_priv, false);
  }
  Result<size_t> WriteBack(InodeNo ino, uint64_t off, std::span<const uint8_t> data) override {
    return WriteImpl(ino, off, data, false, true);
  }
  Status Fsync(InodeNo ino, bool datasync) override;
  Status SyncFs() override;
  Status Fallocate(InodeNo ino, int mode, uint64_t off, uint64_t len) override;
  Result<uint64_t> Lseek(InodeNo ino, uint64_t off, int whence) override;
  Result<size_t> CopyFileRange(InodeNo in, uint64_t off_in, InodeNo out, uint64_t off_out,
                               size_t len) override;
  Status ReadDir(InodeNo dir, uint64_t cookie,
                 const std::function<bool(const DirEntry&)>& emit) override;
  bool AtimeDue(InodeNo ino) override;
  void TouchAfterDirectWrite(InodeNo ino) override;
  Status SetXattr(InodeNo ino, std::string_view name, std::span<const uint8_t> value, int flags,
                  const Cred& cred) override;
  Result<size_t> GetXattr(InodeNo ino, std::string_view name, std::span<uint8_t> buf) override;
  Result<size_t> ListXattr(InodeNo ino, std::span<char> buf, const Cred& cred) override;
  Status RemoveXattr(InodeNo ino, std::string_view name) override;
  void SetAtimePolicy(AtimeMode mode, bool nodiratime) override;
  Status SetReadOnly(bool read_only) override;
  Result<StatFsInfo> StatFs() override;
  FsCounters Counters() const override;
  void SetKernelCache(KernelCache* kernel_cache) override { kernel_cache_ = kernel_cache; }
  Status DemoteGlock(std::string_view name) override;
  size_t DemoteAllGlocks() override;
  std::string DumpGlocks() const override;
  Result<RecoveryReport> RecoverJournals(std::chrono::milliseconds timeout) override;

  // Flushes the log: everything modified so far becomes durable. Thread-safe.
  Status FlushLog();
  // Makes every operation with sequence <= upto durable (joining a flush in progress if it covers
  // them: group commit).
  Status FlushLogUpTo(uint64_t upto);

 private:
  friend class EngineTestPeer;
  friend class OpScope;
  class Hooks;

  // Runs `body` in a fresh OpScope; when the body reports an out-of-order glock it could not
  // get (kLockConflict from OpScope::Lock), everything is released, the glocks it asked for are
  // taken again in order, and the body runs again.
  template <typename R, typename F>
  R RunOp(F&& body);

  // Link; with a generation, kStale unless the inode's generation & mask equals it.
  Result<Attr> LinkImpl(InodeNo ino, std::optional<uint64_t> generation, uint64_t mask,
                        InodeNo new_parent, std::string_view new_name);
  // Open and Read; `update`: EX shared among the local holders that ask for it (see
  // FileSystem::ReadForUpdate), otherwise SH (EX plain for a truncating open).
  // With a generation: kStale unless the inode's generation & mask equals it.
  Status OpenImpl(InodeNo ino, bool truncate, const Cred& cred, bool update,
                  std::optional<uint64_t> generation, uint64_t mask);
  Result<size_t> ReadImpl(InodeNo ino, uint64_t off, std::span<uint8_t> buf, IoMode mode,
                          uint64_t hold);
  // Write at `off`, or (nullopt) at the end of the file as the glock EX sees it.
  // `writeback`: the kernel's dirty pages (glock::kPrepareAny). `hold`: the caller's EX holder.
  Result<size_t> WriteImpl(InodeNo ino, std::optional<uint64_t> off, std::span<const uint8_t> data,
                           bool kill_priv, bool writeback, uint64_t hold = 0);
  // A DF write in place; kTryAgain when the range is not all allocated blocks within the size.
  Result<size_t> WriteInPlace(InodeNo ino, uint64_t off, std::span<const uint8_t> data,
                              uint64_t hold);

  // ---- glocks.cc
  static constexpr size_t kGlockLruBudget = 65536;   // idle cached glocks kept
  static constexpr int kGlockTrimIntervalMs = 1000;  // worker period without deadlines
  void StartGlocks();
  void StopGlocks();
  // Cluster mount protocol (glocks.cc): the mount glock EX serializes mounts; a TRY of the live
  // glock EX tells the first mounter; a journal glock EX taken with TRY claims a journal.
  Status ClusterMountBegin(glock::HolderId* mount_holder);
  Result<uint32_t> ClaimJournal(uint32_t journals);
  Status ClusterMountEnd(glock::HolderId mount_holder);
  void ClusterUnmount();
  // Folds this node's statfs delta into the master statfs under the statfs inode's glock EX
  // (cluster mounts; the caller holds no glock and is in no transaction).
  Status FoldStatfsClustered();
  void GlockWorker();  // ticks the glock table (hold times, retries) and trims its LRU
  Status SyncInodeGlock(InodeNo no);
  Status SyncRgrpGlock(uint64_t rgrp);  // flushes the log if the rgrp has changes not in place
  Status SyncAndRetire(uint64_t upto);  // cluster: flush up to `upto`, retire the newest commit
  void InvalidateInodeGlock(InodeNo no);
  Status RefreshInodeGlock(InodeNo no);

  // ---- engine.cc
  Status LoadSystemFiles();
  Status OpenJournal();
  Status FoldStatfs();                 // REQUIRES a transaction (or the transaction lock exclusive)
  void FoldStatfsInto(Inode& master);  // this node's delta into `master` (FoldStatfs's body)
  Status ResetStatfs();                // single-node mount: master = rgrp totals, deltas cleared
  Status AfterModify();  // after a modifying op, without locks: flush if the batch is large
  Status EnsureSpace(uint64_t blocks);  // before allocating: commit deferred frees if needed
  void FlusherThread();
  Status ReclaimUnlinked();  // mount time, before any other thread runs
  Status CheckWritable() const;
  Attr MakeAttr(const Inode& ip) const;
  static Timespec Now();

  // ---- allocator.cc is the Allocator; the engine reads the rindex for it
  Status LoadRgrps();
  uint64_t TotalFree() const { return alloc_->TotalFree(); }

  // ---- inode.cc
  Result<InodeRef> GetInode(InodeNo no);
  void DropInode(InodeNo no);
  void WriteDinode(Inode& ip);  // encode di into the buffer and mark it dirty
  // A new inode at `blk` (allocated with AllocDinodeAt, generation `gen`).
  Result<InodeRef> NewInode(uint64_t blk, uint64_t gen, uint32_t mode, uint32_t uid, uint32_t gid,
                            uint32_t flags);
  // Metadata tree.
  Result<uint64_t> MapBlock(Inode& ip, uint64_t lblk);  // 0 = hole
  // Maps a run starting at lblk: returns the physical start (0 = hole) and sets *len to the run
  // length (contiguous physical blocks or contiguous hole) up to max_len.
  Result<uint64_t> MapExtent(Inode& ip, uint64_t lblk, uint64_t max_len, uint64_t* len);
  // Ensures blocks [lblk, lblk+count) exist; returns newly allocated (lblk, pblk, n) extents.
  struct NewExtent {
    uint64_t lblk, pblk, n;
  };
  Status AllocRange(Inode& ip, uint64_t lblk, uint64_t count, bool jdata,
                    std::vector<NewExtent>* fresh);
  Status AllocRangeSteps(Inode& ip, uint64_t lblk, uint64_t count, bool jdata,
                         std::vector<NewExtent>* fresh);
  Status GrowHeight(Inode& ip, uint32_t height);
  Status Unstuff(Inode& ip);
  // Frees the blocks mapping logical blocks [first, end) and indirect blocks left empty.
  Status TruncateBlocks(Inode& ip, uint64_t first, uint64_t end = ~uint64_t{0});
  Status Dealloc(Inode& ip);
  Status FreeEattr(Inode& ip);
  Status ZeroDataRange(uint64_t pblk, uint32_t off, uint32_t len);
  Status SetSize(Inode& ip, uint64_t size);
  // The one walk over a file's mapping: visits [off, off + len) in runs, fn(pos, at, n) with
  // pos the offset into the range, at the device byte address (0 for a hole), n the bytes.
  template <typename Fn>  // Status fn(uint64_t pos, uint64_t at, uint64_t n)
  Status WalkExtents(Inode& ip, uint64_t off, uint64_t len, Fn&& fn);
  Status ReadData(Inode& ip, uint64_t off, uint8_t* out, size_t len, size_t* done);
  Status WriteData(Inode& ip, uint64_t off, const uint8_t* data, size_t len);
  uint64_t MaxFileSize() const;

  // ---- dir.cc
  Result<DirentLoc> DirFind(Inode& dir, std::string_view name, uint32_t hash);
  Status DirAdd(Inode& dir, std::string_view name, const format::Inum& inum, uint16_t type);
  Status DirRemove(Inode& dir, std::string_view name);
  Status DirRetarget(Inode& dir, std::string_view name, const format::Inum& inum, uint16_t type);
  Status DirInit(Inode& dir, const format::Inum& self, const format::Inum& parent);
  Status DirList(Inode& dir, uint64_t cookie, const std::function<bool(const DirEntry&)>& emit);
  Result<uint64_t> DirTableGet(Inode& dir, uint32_t index);
  Status DirTableRead(Inode& dir, std::vector<uint64_t>* table);
  Status DirTableWrite(Inode& dir, const std::vector<uint64_t>& table);
  Status DirConvertToExhash(Inode& dir);
  Status DirSplitLeaf(Inode& dir, uint32_t index, uint64_t leaf_blk);
  Status DirDouble(Inode& dir);
  Result<BufferRef> NewLeaf(Inode& dir, uint16_t depth, uint64_t goal);
  // The one walk over a leaf chain from `head`: checks each pointer, loop and header, and calls
  // fn on each leaf until it returns false.
  Status WalkChain(Inode& dir, uint64_t head,
                   const std::function<Result<bool>(const BufferRef&)>& fn);
  Status ForEachLeaf(Inode& dir, const std::function<Status(uint64_t)>& fn);
  // Visits each distinct leaf chain of an exhash directory in hash order, from table slot
  // `first_index`, until fn returns false.
  Status WalkLeafChains(Inode& dir, uint64_t first_index,
                        const std::function<Result<bool>(const std::vector<BufferRef>&)>& fn);
  Result<InodeRef> LookupChild(Inode& dir, std::string_view name, DirentLoc* loc);

  // ---- rgrp_sets.cc: the resource groups an operation needs, before its transaction
  // The rgrps of blocks TruncateBlocks(ip, first, end) may free (sorted, unique; appended).
  Status RgrpsOfRange(Inode& ip, uint64_t first, uint64_t end, std::vector<uint64_t>* out);
  // What FreeEattr frees (and how many blocks that is, if `blocks`).
  Status RgrpsOfEattr(Inode& ip, std::vector<uint64_t>* out, uint64_t* blocks = nullptr);
  Status RgrpsOfInode(Inode& ip, std::vector<uint64_t>* out);  // what Dealloc frees
  // Locks what DropLink(ip) may free; what SetSize(ip, size) may free or allocate.
  Status LockRgrpsToDrop(OpScope& s, Inode& ip);
  Status LockRgrpsToTruncate(OpScope& s, Inode& ip, uint64_t size);
  // Locks and reserves for WriteXattrs replacing ip's attributes, with `new_bytes` of new value.
  Status LockRgrpsToRewriteEattr(OpScope& s, Inode& ip, uint64_t new_bytes);
  // New blocks to reserve: `data_blocks` with the metadata tree over them; a DirAdd into `dir`;
  // a write of [off, off + len) of `ip` (0 when every block is mapped already).
  uint64_t TreeReserve(uint64_t data_blocks) const;
  uint64_t DirAddReserve(const Inode& dir) const;
  Result<uint64_t> WriteReserve(Inode& ip, uint64_t off, uint64_t len);

  // ---- ops.cc helpers
  // Takes parent EX in `s` and enters the transaction.
  Result<InodeRef> CreateNode(OpScope& s, InodeNo parent, std::string_view name, uint32_t mode,
                              uint64_t rdev, std::string_view link_target, const Cred& cred,
                              bool open = false);  // open: also the new inode's iopen SH
  // Finds `name` in `dir` (whose glock the caller holds), takes the child's glock in `state`
  // in `s` (kLockConflict: out of order and busy; no glock with a null scope: mount time) and
  // returns the child.
  Result<InodeRef> FindChild(OpScope* s, Inode& dir, std::string_view name, glock::State state,
                             DirentLoc* loc);
  Status CheckDirEmpty(Inode& dir, std::string_view name);  // kNotEmpty / kCorrupt
  Status DropLink(Inode& ip);  // nlink-- (or clear for dirs) and free/unlink at zero
  Status MaybeFree(Inode& ip);
  // iopen glocks (cluster mounts; gfs2's "inode in use" lock): every node holds iopen SH while
  // it has the inode open; whoever drops the last link or closes last tries iopen EX, which
  // only succeeds when no other node has it open, and frees the inode then.
  // An open takes iopen SH in its scope (after its other glocks, before any transaction) and,
  // at opens++, keeps it for the inode if it has none yet (KeepIopen, inside the scope).
  Status LockIopen(OpScope& s, InodeNo no, bool created = false);
  void KeepIopen(OpScope& s, Inode& ip);   // REQUIRES inodes_mu_
  void ClosedHere(glock::HolderId iopen);  // after the last close (gives iopen SH up)
  // Before the transaction: tries iopen EX for `ip` if dropping a link may free it.
  Status TryIopenToFree(OpScope& s, Inode& ip);
  Result<bool> TryIopenExclusive(OpScope& s, InodeNo no);  // false: another node has it open
  Status DoTruncate(Inode& ip, uint64_t size);
  void TouchMC(Inode& ip);  // mtime+ctime = now
  // ---- extended attributes (xattr.cc); callers hold the inode's glock (EX to write) ----
  struct XattrRec {
    uint8_t type = 0;  // format::kEaUser ... kEaTrusted
    std::string name;  // without the namespace prefix
    std::vector<uint8_t> value;
  };
  Result<std::vector<XattrRec>> ReadXattrs(Inode& ip);
  // Replaces the inode's whole attribute set (frees the old blocks, writes a packed layout).
  Status WriteXattrs(Inode& ip, const std::vector<XattrRec>& recs);
  uint32_t XattrRecordSize(size_t name_len, size_t value_len) const;
  Result<std::pair<uint8_t, std::string>> SplitXattrName(std::string_view full) const;
  // Default-ACL inheritance for a new inode in `dir`: adjusts *mode and appends the new inode's
  // ACL attributes to *out; false if `dir` has no default ACL (then the umask applies).
  Result<bool> InheritAcls(Inode& dir, uint32_t* mode, std::vector<XattrRec>* out);
  // After a chmod: the access ACL's owner/group-or-mask/other entries follow the new mode.
  Status ChmodAcl(Inode& ip);
  // The atime policy's verdict for a read at `now` (caller holds the inode's glock).
  bool AtimeNeedsUpdate(const Inode& ip, const Timespec& now) const;
  // Sets atime = now if still due (takes the inode's glock EX; caller holds no glock).
  void TouchAtime(InodeNo ino);
  // Whether a direct write at `now` leaves mtime or ctime older than the granularity of direct
  // writes' times (caller holds the inode's glock).
  static bool DirectWriteTimesDue(const Inode& ip, const Timespec& now);
  // The update of TouchAfterDirectWrite under a try of EX: kTouched, kNotDue (nothing to do, or
  // the inode is gone), or kBusy (EX could not be had at once: retried later).
  enum class TouchResult { kTouched, kNotDue, kBusy };
  TouchResult TryTouchDirectTimes(InodeNo ino);
  // Retries every pending update once (the flusher; Unmount): the ones still busy stay pending.
  void RetryPendingDirectTimes();
  void TouchC(Inode& ip);
  Status ValidateName(std::string_view name) const;
  // Whether maybe_ancestor is `dir` or above it; takes each directory on the way SH. The caller
  // holds the rename glock.
  Status IsAncestor(OpScope& s, InodeNo maybe_ancestor, InodeNo dir, bool* result);

  std::unique_ptr<BlockDevice> dev_;
  MountOptions opts_;
  format::Superblock sb_;
  format::Geometry geo_;
  uint64_t dev_blocks_ = 0;
  std::unique_ptr<MetaCache> cache_;
  KernelCache* kernel_cache_ = nullptr;

  // Glocks: the runner over the lock module (the cluster's, or lock_nolock) and the hooks.
  glock::NoLockModule nolock_;
  glock::LockModule* lm_ = &nolock_;
  // Cluster mount (lock_dlm through opts_.lock_module): whether this node was the first to
  // mount (it replayed every journal and may reclaim unlinked inodes), and the glocks it holds
  // for the whole mount: its journal EX and the live glock SH.
  bool cluster_ = false;
  bool first_mounter_ = false;
  glock::HolderId journal_holder_ = 0, live_holder_ = 0;
  std::unique_ptr<Hooks> hooks_;
  std::unique_ptr<glock::GlockRunner> glocks_;
  std::thread glock_worker_;
  // Leaf (taken under GlockRunner::mu_ by the deadline listener; never held while calling
  // into the runner); pairs with glock_worker_cv_.
  std::mutex glock_worker_mu_;
  std::condition_variable glock_worker_cv_;
  bool stop_glock_worker_ = false;  // guarded by glock_worker_mu_
  bool glock_worker_kick_ = false;  // guarded by glock_worker_mu_: an earlier deadline came
  bool glocks_stopped_ = false;     // StopGlocks ran (the lock module may be gone since)
  // Cluster mounts run glock syncs here, not on the thread that pumps the runner's effects
  // (often the lock manager's callback thread): a sync flushes the log, and a flush may wait for
  // the lock manager to confirm a provisional grant (LogManager::SetProvisionalGate), which
  // that callback thread delivers. Jobs run in order; StopGlocks runs what is left.
  void RunSyncJob(std::function<void()> job);
  void SyncWorker();
  std::thread sync_worker_;
  std::mutex sync_mu_;  // leaf; pairs with sync_cv_
  std::condition_variable sync_cv_;
  std::deque<std::function<void()>> sync_jobs_;  // guarded by sync_mu_
  bool stop_sync_worker_ = false;                // guarded by sync_mu_; set by StopGlocks

  // Resource groups, deferred frees, statfs deltas (its own mutexes: leaves below the transaction
  // lock).
  std::unique_ptr<Allocator> alloc_;
  // The log: transaction lock, mod sequence, group-committed flushes, the journal.
  std::unique_ptr<LogManager> log_;
  // System inodes.
  InodeRef master_, jindex_, per_node_, statfs_, rindex_, quota_, inum_, local_statfs_,
      journal_inode_;
  uint32_t jid_ = 0;
  InodeNo statfs_no_ = 0;  // the master statfs file (its glock guards it on cluster mounts)

  std::vector<std::pair<uint64_t, uint64_t>> journal_runs_;  // all journals, sorted [start, end)
  // Every journal of the volume, as found at mount (recovery.cc replays other nodes' ones).
  struct JournalDesc {
    uint32_t jid = 0;
    InodeNo ino = 0;
    std::vector<uint64_t> blocks;
    InodeNo statfs_change = 0, quota_change = 0;
  };
  std::vector<JournalDesc> journals_;
  std::mutex recovery_mu_;  // one RecoverJournals at a time here; lock order: before any glock
  std::atomic<uint64_t> recoveries_{0};  // journals replayed for failed nodes
  Result<JournalRecovery> RecoverOneJournal(const JournalDesc& jd);

  std::mutex inodes_mu_;
  std::unordered_map<InodeNo, InodeRef> inodes_;

  bool mounted_ = false;
  std::atomic<bool> read_only_{false};
  std::atomic<bool> ro_draining_{false};  // SetReadOnly(true) commits the last changes
  std::mutex
      remount_mu_;  // serializes SetReadOnly; lock order: remount_mu_ -> glocks -> LogManager
  std::atomic<int> atime_mode_{static_cast<int>(AtimeMode::kRelatime)};
  std::atomic<bool> nodiratime_{false};
  std::atomic<bool> naive_order_{false};  // FileSystem::SetNaiveLockOrder

  std::atomic<uint64_t> fsyncs_{0}, data_reads_{0}, data_writes_{0};
  std::atomic<uint64_t> invalidations_{0}, forced_demotes_{0};

  std::thread flusher_;
  std::mutex flusher_mu_;
  std::condition_variable flusher_cv_;
  bool stop_flusher_ = false;
  // AfterModify asks the flusher for a background commit; set before flusher_cv_ is notified
  // (under flusher_mu_ then), cleared by the flusher.
  std::atomic<bool> flush_kick_{false};
  // Direct writes whose mtime/ctime update found the glock busy (TouchAfterDirectWrite): the
  // flusher retries them every kDirectWriteTimeGranularityMs until the update is made or the
  // inode is gone, and Unmount once more. Lock order: flusher_mu_ -> pending_times_mu_ (a leaf).
  std::mutex pending_times_mu_;
  std::unordered_set<InodeNo> pending_times_;
};

template <typename Fn>
Status Engine::WalkExtents(Inode& ip, uint64_t off, uint64_t len, Fn&& fn) {
  const uint64_t bs = geo_.bsize;
  for (uint64_t pos = 0; pos < len;) {
    const uint64_t cur = off + pos;
    const uint64_t max_blocks = (cur % bs + (len - pos) + bs - 1) / bs;
    uint64_t run = 0;
    ASSIGN_OR_RETURN(uint64_t pblk, MapExtent(ip, cur / bs, max_blocks, &run));
    const uint64_t n = std::min<uint64_t>(run * bs - cur % bs, len - pos);
    RETURN_IF_ERROR(fn(pos, pblk == 0 ? 0 : pblk * bs + cur % bs, n));
    pos += n;
  }
  return Status::Ok();
}

// The glock hooks of the engine (glocks.cc): inode glocks sync, invalidate and refresh.
class Engine::Hooks final : public glock::GlockHooks {
 public:
  explicit Hooks(Engine* e) : e_(e) {}
  void Sync(const glock::GlockName& name, DoneFn done) override {
    if (name.type != glock::GlockType::kInode && name.type != glock::GlockType::kRgrp) {
      return done(Status::Ok());
    }
    auto job = [e = e_, name, done = std::move(done)] {
      done(name.type == glock::GlockType::kInode ? e->SyncInodeGlock(name.number)
                                                 : e->SyncRgrpGlock(name.number));
    };
    if (!e_->cluster_) return job();
    e_->RunSyncJob(std::move(job));
  }
  void Invalidate(const glock::GlockName& name, std::function<void()> done) override {
    if (name.type == glock::GlockType::kInode) e_->InvalidateInodeGlock(name.number);
    if (name.type == glock::GlockType::kRgrp) e_->alloc_->InvalidateRgrp(name.number);
    done();
  }
  // Inode glocks: the kernel's pages go before the demote admits no holders (the revoke needs
  // READs and launder WRITEs served), the attributes and names after (none can be filled anew).
  void Prepare(const glock::GlockName& name, std::function<void()> done) override {
    if (name.type == glock::GlockType::kInode && e_->kernel_cache_ != nullptr) {
      return e_->kernel_cache_->Revoke(name.number, std::move(done));
    }
    done();
  }
  std::string DumpObject(const glock::GlockName& name) override {
    if (name.type == glock::GlockType::kRgrp) return e_->alloc_->DumpRgrp(name.number);
    return {};
  }
  void Thaw(const glock::GlockName& name) override {
    if (name.type == glock::GlockType::kInode && e_->kernel_cache_ != nullptr) {
      e_->kernel_cache_->Thaw(name.number);
    }
  }
  void Refresh(const glock::GlockName& name, DoneFn done) override {
    switch (name.type) {
      case glock::GlockType::kInode:
        return done(e_->RefreshInodeGlock(name.number));
      case glock::GlockType::kRgrp:
        return done(e_->alloc_->RefreshRgrp(name.number));
      default:
        return done(Status::Ok());
    }
  }

 private:
  Engine* const e_;
};

}  // namespace ugfs2::fs

#endif  // UGFS2_SRC_FS_ENGINE_H_
