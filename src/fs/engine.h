// Engine: the single-node GFS2 engine behind FileSystem. Internal header (src/fs only).
//
// Structure (one file per concern):
//   engine.cc      mount/unmount, system files, log flush, statfs, counters
//   alloc.cc       resource groups, bitmaps, allocation policy, deferred frees
//   inode.cc       in-core inodes, dinode I/O, metadata trees (map, grow, truncate, dealloc)
//   dir.cc         stuffed and exhash directories
//   glocks.cc      the glock hooks (sync, invalidate, refresh) and the demote control
//   op_scope.h/.cc the per-operation scope: glocks in order, back-off, the transaction
//   ops.cc         the FileSystem operations
//
// Locking (docs/locking.md §5): glocks are the only locks an operation takes on filesystem
// objects. Every operation runs in an OpScope that takes its glocks (inode glocks SH to read, EX
// to change; the rename glock first for renames between directories) in ascending glock order,
// taking anything out of order with TRY and backing off; then, to modify, it enters the
// transaction (`log_mu_` shared). A log flush takes `log_mu_` exclusive only while it snapshots
// the dirty buffers. No glock is ever requested inside a transaction (a glock's sync hook flushes
// the log). Small local mutexes, each a leaf below the transaction:
//   alloc_mu_   rgrps (headers, bitmaps, hints), statfs deltas, the round-robin cursor
//   pending_mu_ deferred frees, revokes, the newest commit's blocks
//   inodes_mu_  the in-core inode table and open counts
//   MetaCache::mu_, GlockRunner::mu_ (leaves)
// Lock order: remount_mu_ -> glocks (rename, then inodes by number) -> flush_mu_ -> log_mu_ ->
// alloc_mu_ -> pending_mu_ -> inodes_mu_ -> MetaCache::mu_. Blocks freed in a batch stay
// unallocatable until that batch is committed (pending_free_), so a crash can never expose a
// block's new contents to its previous owner or resurrect stale metadata over new data.
#ifndef UGFS2_SRC_FS_ENGINE_H_
#define UGFS2_SRC_FS_ENGINE_H_

#include <atomic>
#include <condition_variable>
#include <map>
#include <memory>
#include <mutex>
#include <shared_mutex>
#include <string>
#include <thread>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "block/block_device.h"
#include "format/ondisk.h"
#include "fs/file_system.h"
#include "fs/meta_cache.h"
#include "glock/glock_runner.h"

namespace ugfs2::journal {
class Journal;
}

namespace ugfs2::fs {

struct Rgrp {
  format::Rindex ri;
  format::Rgrp hdr;
  std::vector<BufferRef> bufs;  // header block + bitmap blocks, pinned
  uint32_t hint = 0;            // next data offset to search from
  bool damaged = false;
  uint64_t end() const { return ri.data0 + ri.data; }
};

// An in-core inode. `buf`, `di`, `damaged` and `stale` belong to the inode's glock (read under
// SH, changed under EX); `opens` is guarded by Engine::inodes_mu_; `last_mod` is atomic.
struct Inode {
  InodeNo no = 0;
  BufferRef buf;  // the dinode block, pinned while the Inode is cached
  format::Dinode di;
  int opens = 0;
  bool damaged = false;
  bool stale = false;                  // invalidated: re-read the dinode before use
  std::atomic<uint64_t> last_mod{0};  // mod_seq_ of its newest change (the sync hook flushes that)
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

struct StatfsDelta {
  int64_t total = 0, free = 0, dinodes = 0;
};

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
  Result<Attr> Link(InodeNo ino, InodeNo new_parent, std::string_view new_name) override;
  Status Unlink(InodeNo parent, std::string_view name) override;
  Status Rmdir(InodeNo parent, std::string_view name) override;
  Status Rename(InodeNo parent, std::string_view name, InodeNo new_parent,
                std::string_view new_name, uint32_t flags) override;
  Result<std::string> ReadLink(InodeNo ino) override;
  Status Open(InodeNo ino, bool truncate, const Cred& cred) override;
  Status Release(InodeNo ino) override;
  Result<size_t> Read(InodeNo ino, uint64_t off, std::span<uint8_t> buf) override;
  Result<size_t> Write(InodeNo ino, uint64_t off, std::span<const uint8_t> data,
                       bool kill_priv) override;
  Status Fsync(InodeNo ino, bool datasync) override;
  Status SyncFs() override;
  Status Fallocate(InodeNo ino, int mode, uint64_t off, uint64_t len) override;
  Result<uint64_t> Lseek(InodeNo ino, uint64_t off, int whence) override;
  Result<size_t> CopyFileRange(InodeNo in, uint64_t off_in, InodeNo out, uint64_t off_out,
                               size_t len) override;
  Status ReadDir(InodeNo dir, uint64_t cookie,
                 const std::function<bool(const DirEntry&)>& emit) override;
  bool AtimeDue(InodeNo ino) override;
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

  // ---- glocks.cc
  static constexpr size_t kGlockLruBudget = 65536;   // idle cached glocks kept
  static constexpr int kGlockTrimIntervalMs = 1000;  // worker period without deadlines
  void StartGlocks();
  void StopGlocks();
  void GlockWorker();  // ticks the glock table (hold times, retries) and trims its LRU
  Status SyncInodeGlock(InodeNo no);
  void InvalidateInodeGlock(InodeNo no);
  Status RefreshInodeGlock(InodeNo no);

  // ---- engine.cc
  Status LoadSystemFiles();
  Status OpenJournal();
  Status FoldStatfs();   // REQUIRES a transaction or log_mu_ exclusive; takes alloc_mu_
  Status ResetStatfs();  // single-node mount: master = rgrp totals, deltas cleared
  Status AfterModify();  // after a modifying op, without locks: flush if the batch is large
  Status EnsureSpace(uint64_t blocks);  // before allocating: commit deferred frees if needed
  void FlusherThread();
  Status ReclaimUnlinked();  // mount time, before any other thread runs
  Status CheckWritable() const;
  Attr MakeAttr(const Inode& ip) const;
  static Timespec Now();

  // ---- alloc.cc
  Status LoadRgrps();
  Rgrp* RgrpFor(uint64_t blk);
  uint8_t GetBlockState(Rgrp& rg, uint64_t blk) const;
  void SetBlockState(Rgrp& rg, uint64_t blk, uint8_t state);
  void WriteRgrpHeader(Rgrp& rg);
  // Allocates up to `want` contiguous blocks (at least 1) near `goal`. state: kUsed or kDinode.
  // Allocator entry points take alloc_mu_ themselves; *Locked helpers and GetBlockState /
  // SetBlockState / WriteRgrpHeader require it held.
  Result<std::pair<uint64_t, uint32_t>> AllocBlocks(uint64_t goal, uint32_t want, uint8_t state);
  Result<std::pair<uint64_t, uint32_t>> AllocBlocksLocked(uint64_t goal, uint32_t want,
                                                          uint8_t state);
  // Finds (take=false: only reports) or takes a free run near `goal`; REQUIRES alloc_mu_.
  Result<std::pair<uint64_t, uint32_t>> FindFreeLocked(uint64_t goal, uint32_t want,
                                                       uint8_t state, bool take);
  // A block that is free now near `goal` (a create locks its glock before allocating it).
  Result<uint64_t> PeekFreeBlock(uint64_t goal);
  // Allocates exactly `blk` as a dinode; false if it is no longer free.
  Result<bool> AllocDinodeAt(uint64_t blk, uint64_t* generation);
  Status FreeBlocks(uint64_t start, uint32_t count);  // data/metadata blocks (USED)
  Status FreeDinode(uint64_t blk);
  Status SetUnlinked(uint64_t blk);
  void NoteFreed(uint64_t blk);  // REQUIRES alloc_mu_
  uint64_t PickDirGoal(uint64_t parent_goal);
  bool IsPendingFree(uint64_t blk);
  // A block pointer read from disk is plausible: inside the device, inside a resource group's
  // data (once rgrps are loaded) and not one of the journals' blocks.
  bool PtrOk(uint64_t blk);
  // Before writing file data in place: every block of the run is USED in the bitmap (a damaged
  // pointer must not make us overwrite a dinode or a free block). kCorrupt + log line otherwise.
  Status CheckDataRun(uint64_t ino, uint64_t pblk, uint64_t n);
  uint64_t TotalFree() const;

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
  Status ForEachLeaf(Inode& dir, const std::function<Status(uint64_t)>& fn);
  // Visits each distinct leaf chain of an exhash directory in hash order, from table slot
  // `first_index`, until fn returns false.
  Status WalkLeafChains(Inode& dir, uint64_t first_index,
                        const std::function<Result<bool>(const std::vector<BufferRef>&)>& fn);
  Result<InodeRef> LookupChild(Inode& dir, std::string_view name, DirentLoc* loc);

  // ---- ops.cc helpers
  // Takes parent EX in `s` and enters the transaction.
  Result<InodeRef> CreateNode(OpScope& s, InodeNo parent, std::string_view name, uint32_t mode,
                              uint64_t rdev, std::string_view link_target, const Cred& cred);
  // Finds `name` in `dir` (whose glock the caller holds), takes the child's glock in `state`
  // (kLockConflict: out of order and busy) and returns the child.
  Result<InodeRef> LockChild(OpScope& s, Inode& dir, std::string_view name, glock::State state,
                             DirentLoc* loc);
  Status CheckDirEmpty(Inode& dir, std::string_view name);  // kNotEmpty / kCorrupt
  Status DropLink(Inode& ip);  // nlink-- (or clear for dirs) and free/unlink at zero
  Status MaybeFree(Inode& ip);
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

  // Glocks: the runner over the lock module (lock_nolock here) and the engine's hooks.
  glock::NoLockModule lock_module_;
  std::unique_ptr<Hooks> hooks_;
  std::unique_ptr<glock::GlockRunner> glocks_;
  std::thread glock_worker_;
  std::mutex glock_worker_mu_;  // leaf; pairs with glock_worker_cv_
  std::condition_variable glock_worker_cv_;
  bool stop_glock_worker_ = false;  // guarded by glock_worker_mu_

  // The transaction lock (gfs2's sd_log_flush_lock): shared by every modifying section, taken
  // exclusive by a log flush while it snapshots. Lock order: glocks -> flush_mu_ -> log_mu_.
  mutable std::shared_mutex log_mu_;
  // rgrps_ (headers, bitmaps, hints), alloc_rr_, local_ and local_on_disk_. Lock order:
  // log_mu_ -> alloc_mu_ -> pending_mu_.
  mutable std::mutex alloc_mu_;
  std::mutex flush_mu_;  // serializes log flushes; lock order: glocks -> flush_mu_ -> log_mu_
  // Group-commit batching: callers queued for flush_mu_, and what the last commit served.
  static constexpr uint64_t kMaxBatchWaitUs = 2000;
  std::mutex batch_mu_;
  std::condition_variable batch_cv_;
  int flush_waiters_ = 0;  // guarded by batch_mu_
  std::atomic<uint32_t> last_batch_{1};
  std::atomic<uint64_t> last_commit_us_{0};

  // System inodes.
  InodeRef master_, jindex_, per_node_, statfs_, rindex_, quota_, inum_, local_statfs_,
      journal_inode_;
  uint32_t jid_ = 0;
  std::unique_ptr<journal::Journal> journal_;
  std::unordered_set<uint64_t> last_commit_blocks_;  // newest commit's blocks; pending_mu_
  std::vector<uint64_t> revokes_;                    // for the next commit; pending_mu_

  std::vector<std::pair<uint64_t, uint64_t>> journal_runs_;  // all journals, sorted [start, end)
  std::vector<Rgrp> rgrps_;                                  // sorted by address
  size_t alloc_rr_ = 0;  // round-robin cursor for spreading directories
  std::mutex pending_mu_;
  std::unordered_set<uint64_t> pending_free_;     // freed in the current batch
  std::unordered_set<uint64_t> committing_free_;  // freed in the batch being committed

  std::mutex inodes_mu_;
  std::unordered_map<InodeNo, InodeRef> inodes_;

  StatfsDelta local_;  // not yet written to statfs_change<jid>
  StatfsDelta local_on_disk_;
  bool mounted_ = false;
  std::atomic<bool> read_only_{false};
  std::atomic<bool> ro_draining_{false};  // SetReadOnly(true) commits the last changes
  std::mutex remount_mu_;  // serializes SetReadOnly; lock order: remount_mu_ -> flush_mu_ -> mu_
  std::atomic<int> atime_mode_{static_cast<int>(AtimeMode::kRelatime)};
  std::atomic<bool> nodiratime_{false};
  std::atomic<bool> log_broken_{false};  // a flush failed: refuse further writes

  std::atomic<uint64_t> mod_seq_{0};      // bumped by every modifying op
  std::atomic<uint64_t> flushed_seq_{0};  // everything <= this is durable
  std::atomic<uint64_t> log_flushes_{0}, fsyncs_{0}, data_reads_{0}, data_writes_{0};
  std::atomic<uint64_t> invalidations_{0}, forced_demotes_{0};
  uint64_t meta_writes_ = 0;

  std::thread flusher_;
  std::mutex flusher_mu_;
  std::condition_variable flusher_cv_;
  bool stop_flusher_ = false;
};

// The glock hooks of the engine (glocks.cc): inode glocks sync, invalidate and refresh.
class Engine::Hooks final : public glock::GlockHooks {
 public:
  explicit Hooks(Engine* e) : e_(e) {}
  void Sync(const glock::GlockName& name, DoneFn done) override {
    done(name.type == glock::GlockType::kInode ? e_->SyncInodeGlock(name.number) : Status::Ok());
  }
  void Invalidate(const glock::GlockName& name, std::function<void()> done) override {
    if (name.type == glock::GlockType::kInode) e_->InvalidateInodeGlock(name.number);
    done();
  }
  void Refresh(const glock::GlockName& name, DoneFn done) override {
    done(name.type == glock::GlockType::kInode ? e_->RefreshInodeGlock(name.number)
                                               : Status::Ok());
  }

 private:
  Engine* const e_;
};

}  // namespace ugfs2::fs

#endif  // UGFS2_SRC_FS_ENGINE_H_
