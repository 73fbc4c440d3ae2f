// FileSystem: one node's mount of a GFS2 volume, with a POSIX-shaped API over inode numbers.
//
// Inode numbers are dinode block addresses (no_addr). The API is what the FUSE layer (fuse/)
// calls; it has no FUSE types. Every call is synchronous and thread-safe. Permission checks that
// the kernel does with default_permissions (mode bits, sticky directories) are NOT repeated here;
// the core does what a filesystem must do itself: setgid-directory inheritance, suid/sgid clearing
// on chown and on write by a non-owner, size limits, name validation, nlink rules.
//
// Object lifetime: the kernel's lookup counts live in fuse/inode_table; the core only needs to
// know how many opens an inode has (Open/Release) so that an unlinked inode that is still open
// stays readable and is deallocated at its last Release (or at unmount).
#ifndef UGFS2_SRC_FS_FILE_SYSTEM_H_
#define UGFS2_SRC_FS_FILE_SYSTEM_H_

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "block/block_device.h"
#include "common/status.h"
#include "fs/kernel_cache.h"

namespace ugfs2 {

struct Timespec {
  int64_t sec = 0;
  uint32_t nsec = 0;
};

struct Attr {
  InodeNo ino = 0;
  uint64_t generation = 0;
  uint32_t mode = 0;
  uint32_t nlink = 0;
  uint32_t uid = 0;
  uint32_t gid = 0;
  uint64_t rdev = 0;
  uint64_t size = 0;
  uint64_t blocks512 = 0;  // st_blocks (512-byte units)
  uint32_t blksize = 0;
  Timespec atime, mtime, ctime;
};

// Credentials of the calling process.
struct Cred {
  uint32_t uid = 0;
  uint32_t gid = 0;
  pid_t pid = 0;
  // Applied to the mode of a new inode unless its directory has a default ACL (the kernel
  // leaves both to the filesystem when it enforces POSIX ACLs).
  uint32_t umask = 0;
  std::vector<uint32_t> groups;  // supplementary groups (may be empty)
  bool InGroup(uint32_t g) const;
};

// Which fields of SetAttrRequest are valid.
enum SetAttrMask : uint32_t {
  kSetMode = 1 << 0,
  kSetUid = 1 << 1,
  kSetGid = 1 << 2,
  kSetSize = 1 << 3,
  kSetAtime = 1 << 4,
  kSetMtime = 1 << 5,
  kSetAtimeNow = 1 << 6,
  kSetMtimeNow = 1 << 7,
  kSetCtime = 1 << 8,
  kKillSuidGid = 1 << 9,  // clear suid/sgid as after a write by a non-privileged process
};

struct SetAttrRequest {
  uint32_t mask = 0;
  uint32_t mode = 0;
  uint32_t uid = 0;
  uint32_t gid = 0;
  uint64_t size = 0;
  Timespec atime, mtime, ctime;
  // If set: refuse (kStale) unless the inode's generation & generation_mask equals it (the
  // caller's inode number may name a dinode another node freed and reused; see LinkGeneration).
  std::optional<uint64_t> generation;
  uint64_t generation_mask = 0;
};

struct StatFsInfo {
  uint64_t bsize = 0;
  uint64_t blocks = 0;
  uint64_t bfree = 0;
  uint64_t bavail = 0;
  uint64_t files = 0;
  uint64_t ffree = 0;
  uint32_t namemax = 255;
};

// setxattr flags (values as in linux/xattr.h)
constexpr int kXattrCreate = 1;
constexpr int kXattrReplace = 2;

// rename flags (values as in linux/fs.h)
constexpr uint32_t kRenameNoReplace = 1;
constexpr uint32_t kRenameExchange = 2;

// fallocate modes (values as in linux/falloc.h)
constexpr int kFallocKeepSize = 0x01;
constexpr int kFallocPunchHole = 0x02;
constexpr int kFallocZeroRange = 0x10;

struct DirEntry {
  std::string name;
  InodeNo ino = 0;
  uint32_t type = 0;     // DT_* value
  uint64_t next_cookie;  // pass to ReadDir to continue after this entry
};

// When reads update atime (the mount options noatime / relatime / strictatime; gfs2's default
// is relatime): relatime updates it when it is not newer than mtime or ctime, or is a day old.
enum class AtimeMode { kNoatime, kRelatime, kStrictatime };

namespace glock {
class LockModule;
}

struct MountOptions {
  // "lock_nolock" or "lock_dlm"; empty = use the superblock's. A lock_dlm volume mounts
  // single-node only if lockproto == "lock_nolock" is given explicitly.
  std::string lockproto;
  int jid = -1;  // journal to use (-1: first one, 0 for lock_nolock)
  bool read_only = false;
  uint32_t commit_interval_s = 30;  // periodic log flush
  uint64_t meta_cache_bytes = 256ull << 20;
  AtimeMode atime = AtimeMode::kRelatime;
  bool nodiratime = false;  // directories never get atime updates
  bool acl = true;          // POSIX ACLs (system.posix_acl_*); false: EOPNOTSUPP for them
  // Tests only: the journal recovery of a failed node pauses this long before each block it
  // writes in place, so that a test can crash the recovering node mid-replay.
  uint32_t replay_delay_us = 0;
  // The cluster's lock module (lock_dlm: several nodes mount at once). Not owned; connected to
  // the volume's lockspace. It must deliver no more replies or callbacks (shut it down) before
  // the FileSystem is destroyed. A lock_dlm volume mounts with it, or single-node with
  // lockproto == "lock_nolock". Unused for lock_nolock volumes.
  glock::LockModule* lock_module = nullptr;
};

// Per-operation counters for diagnostics (exposed by the daemon).
struct FsCounters {
  uint64_t log_flushes = 0;
  uint64_t fsyncs = 0;
  uint64_t meta_reads = 0;
  uint64_t meta_writes = 0;
  uint64_t meta_write_requests = 0;  // device requests of those writes (neighbours coalesced)
  uint64_t data_reads = 0;
  uint64_t data_writes = 0;
  uint64_t cached_meta_blocks = 0;
};

// One journal looked at by FileSystem::RecoverJournals.
struct JournalRecovery {
  uint32_t jid = 0;
  bool replayed = false;         // it was dirty: replayed, its statfs delta folded, marked clean
  uint32_t blocks_replayed = 0;  // distinct blocks written in place
  uint32_t log_blocks = 0;       // length of the active region replayed
  int64_t statfs_free = 0;       // the folded delta (free blocks, dinodes)
  int64_t statfs_dinodes = 0;
  uint64_t usec = 0;  // time to replay and fold
};
struct RecoveryReport {
  std::vector<JournalRecovery> journals;  // the journals no live node held
  uint32_t live = 0;                      // journals skipped: a live node holds them
};

// The inode glock mode of a data request (docs/deadlocks.md): gfs2's SH for buffered reads and
// read faults, the cluster's EX-shared-among-local-users for pages of files open read-write
// (FileSystem::ReadForUpdate), DF for O_DIRECT, EX for writes.
enum class IoMode : uint8_t { kShared, kUpdate, kDeferred, kExclusive };
const char* IoModeName(IoMode m);  // "SH", "EXn", "DF", "EX"

// The time granularity of direct writes' mtime/ctime (FileSystem::TouchAfterDirectWrite): a
// direct write updates them if they are at least this much older than now. The kernel's own
// coarse clock ticks every few milliseconds; here each update costs an EX round of the inode's
// glock (and, on a cluster, the other nodes' DF), so it is coarser.
inline constexpr uint32_t kDirectWriteTimeGranularityMs = 100;

class FileSystem {
 public:
  virtual ~FileSystem() = default;

  // Mounts the volume on `dev`. Fails (with a message meant for a human) for a foreign or
  // damaged superblock, a dirty journal, or a lock protocol that needs an explicit option.
  static Result<std::unique_ptr<FileSystem>> Mount(std::unique_ptr<BlockDevice> dev,
                                                   const MountOptions& opts);

  // Flushes everything, deallocates unlinked inodes, folds statfs and writes a clean (UNMOUNT)
  // journal header, then releases the device claim (so a new mount may start). The object must
  // not be used afterwards except to be destroyed.
  virtual Status Unmount() = 0;

  virtual InodeNo root() const = 0;
  virtual uint32_t block_size() const = 0;
  virtual std::string Describe() const = 0;  // one line: device, block size, lock table, jid

  virtual Result<Attr> Lookup(InodeNo parent, std::string_view name) = 0;
  virtual Result<Attr> GetAttr(InodeNo ino) = 0;
  virtual Result<Attr> SetAttr(InodeNo ino, const SetAttrRequest& req, const Cred& cred) = 0;

  virtual Result<Attr> Mknod(InodeNo parent, std::string_view name, uint32_t mode, uint64_t rdev,
                             const Cred& cred) = 0;
  virtual Result<Attr> Mkdir(InodeNo parent, std::string_view name, uint32_t mode,
                             const Cred& cred) = 0;
  // open(2) with O_CREAT, as one operation: creates the regular file `name` (permission bits of
  // `mode`) and opens it (as Open). If `name` exists: kExists with `exclusive` (O_EXCL), kIsDir
  // for a directory, otherwise the existing file is opened (and emptied with `truncate`).
  virtual Result<Attr> Create(InodeNo parent, std::string_view name, uint32_t mode, bool exclusive,
                              bool truncate, const Cred& cred) = 0;
  virtual Result<Attr> Symlink(InodeNo parent, std::string_view name, std::string_view target,
                               const Cred& cred) = 0;
  virtual Result<Attr> Link(InodeNo ino, InodeNo new_parent, std::string_view new_name) = 0;
  // Link, refusing (kStale) unless the inode's generation, masked with `mask`, is `generation`:
  // the caller's inode number may name a dinode that another node freed and reused since, and
  // only under the inode's glock can that be told. Default: Link.
  virtual Result<Attr> LinkGeneration(InodeNo ino, uint64_t generation, uint64_t mask,
                                      InodeNo new_parent, std::string_view new_name) {
    (void)generation;
    (void)mask;
    return Link(ino, new_parent, new_name);
  }
  virtual Status Unlink(InodeNo parent, std::string_view name) = 0;
  virtual Status Rmdir(InodeNo parent, std::string_view name) = 0;
  virtual Status Rename(InodeNo parent, std::string_view name, InodeNo new_parent,
                        std::string_view new_name, uint32_t flags) = 0;
  virtual Result<std::string> ReadLink(InodeNo ino) = 0;

  // Open/Release count opens of an inode (files and directories). `truncate` applies O_TRUNC.
  virtual Status Open(InodeNo ino, bool truncate, const Cred& cred) = 0;
  virtual Status Release(InodeNo ino) = 0;

  // Reads up to buf.size() bytes at `off`; returns fewer at EOF. Holes read as zeros.
  virtual Result<size_t> Read(InodeNo ino, uint64_t off, std::span<uint8_t> buf) = 0;
  // For files open for reading and writing on a cluster mount. Such a file may be mapped
  // shared, and the kernel dirties mapped pages without telling the daemon, so its pages may be
  // filled, and its open made, only while this node holds the inode exclusively (then every
  // dirty page is flushed by the revoke before another node gets the inode). These take the
  // inode glock EX, shared among local users of these calls, where Open and Read take SH.
  // Defaults: the plain calls (nothing caches above a single-node core).
  virtual Status OpenForUpdate(InodeNo ino, bool truncate, const Cred& cred) {
    return Open(ino, truncate, cred);
  }
  virtual Result<size_t> ReadForUpdate(InodeNo ino, uint64_t off, std::span<uint8_t> buf) {
    return Read(ino, off, buf);
  }
  // Open (or, with `update`, OpenForUpdate), refusing (kStale) unless the inode's generation,
  // masked with `mask`, is `generation` (see LinkGeneration). Default: the plain calls.
  virtual Status OpenGeneration(InodeNo ino, uint64_t generation, uint64_t mask, bool truncate,
                                bool update, const Cred& cred) {
    (void)generation;
    (void)mask;
    return update ? OpenForUpdate(ino, truncate, cred) : Open(ino, truncate, cred);
  }
  // Writes data at `off` (extending the file as needed). `kill_priv`: clear suid/sgid (the writer
  // is not privileged).
  virtual Result<size_t> Write(InodeNo ino, uint64_t off, std::span<const uint8_t> data,
                               bool kill_priv) = 0;
  // A launder or writeback WRITE of the kernel's dirty (mapped) pages. While the inode glock
  // prepares a demote it is served in the state held (glock::kPrepareAny): the revoke waits for
  // it. Default: Write.
  virtual Result<size_t> WriteBack(InodeNo ino, uint64_t off, std::span<const uint8_t> data) {
    return Write(ino, off, data, false);
  }
  // O_APPEND on a cluster mount: writes at the end of the file as it is under the inode's glock
  // EX (the kernel's idea of the size may be older: another node may have appended since).
  // Returns the bytes written; the offset used is the size before. Default: not supported.
  virtual Result<size_t> Append(InodeNo ino, std::span<const uint8_t> data, bool kill_priv) {
    (void)ino;
    (void)data;
    (void)kill_priv;
    return Status::NotSupported("append");
  }
  virtual Status Fsync(InodeNo ino, bool datasync) = 0;
  virtual Status SyncFs() = 0;
  virtual Status Fallocate(InodeNo ino, int mode, uint64_t off, uint64_t len) = 0;
  // SEEK_DATA (3) / SEEK_HOLE (4); other whence values are handled by the kernel.
  virtual Result<uint64_t> Lseek(InodeNo ino, uint64_t off, int whence) = 0;
  virtual Result<size_t> CopyFileRange(InodeNo in, uint64_t off_in, InodeNo out, uint64_t off_out,
                                       size_t len) = 0;

  // Lists a directory from `cookie` (0 = start; otherwise a DirEntry::next_cookie). Calls `emit`
  // per entry until it returns false. Entries include "." and "..".
  virtual Status ReadDir(InodeNo dir, uint64_t cookie,
                         const std::function<bool(const DirEntry&)>& emit) = 0;

  virtual Result<StatFsInfo> StatFs() = 0;

  // Extended attributes, by full name ("user.x", "trusted.x", "security.x", and the POSIX ACLs
  // "system.posix_acl_access" / "_default"), stored in the GFS2 format. SetXattr: kExists /
  // kNoData for kXattrCreate / kXattrReplace, kRange beyond gfs2's limits (name 255 bytes, value
  // 64 KiB and one EA block's payload for the record), kNotSupported for other namespaces.
  // Setting an access ACL sets the mode's permission bits. GetXattr/ListXattr with an empty
  // buffer return the size needed; kRange if the buffer is too small; kNoData if absent.
  virtual Status SetXattr(InodeNo ino, std::string_view name, std::span<const uint8_t> value,
                          int flags, const Cred& cred) = 0;
  virtual Result<size_t> GetXattr(InodeNo ino, std::string_view name, std::span<uint8_t> buf) = 0;
  // trusted.* names are listed for uid 0 only.
  virtual Result<size_t> ListXattr(InodeNo ino, std::span<char> buf, const Cred& cred) = 0;
  virtual Status RemoveXattr(InodeNo ino, std::string_view name) = 0;

  // After a direct write to `ino` has returned (the caller holds no glock of it): mtime and
  // ctime = now, as gfs2's file_update_time before a direct write, at most once per
  // kDirectWriteTimeGranularityMs (a direct write runs under DF, which cannot change the
  // dinode; the update takes EX, so a burst of direct writes pays for one glock change per
  // period, not per write). Never waits: when EX cannot be had at once (another local holder,
  // or on a cluster another node's glock; there a try that asks that node to give it up), the
  // update is retried in the background every kDirectWriteTimeGranularityMs until it is
  // made (the cached attributes are then dropped from the kernel), and once more at unmount.
  virtual void TouchAfterDirectWrite(InodeNo ino) { (void)ino; }
  // Whether a read of `ino` now would update its atime (the caller may then make sure the read
  // reaches Read/ReadDir instead of a cache). False for unknown inodes and read-only mounts.
  virtual bool AtimeDue(InodeNo ino) = 0;
  // Changes the atime policy (remount).
  virtual void SetAtimePolicy(AtimeMode mode, bool nodiratime) = 0;
  // Remount. true: flush everything, write a clean journal header and refuse every further
  // modification (kReadOnly); false: mark the journal in use again and accept writes. A mount
  // that started read-only cannot become writable (its device is opened read-only, shared).
  virtual Status SetReadOnly(bool read_only) = 0;
  virtual FsCounters Counters() const = 0;

  // Glocks (docs/locking.md). The kernel-cache bridge told what to drop when a glock gives up
  // what it covered; null = nothing caches above the core. Set once, before the first request;
  // it must outlive the mount.
  virtual void SetKernelCache(KernelCache* kernel_cache) = 0;
  // Demotes one glock to UN exactly as a remote node's request would (sync, invalidate, and
  // the kernel-cache bridge), once its holders leave. `name` is "TYPE/HEXNUMBER" as in the
  // dump (e.g. "2/1b3a"). kNotFound if this node has no such glock, kInvalid for a bad name.
  virtual Status DemoteGlock(std::string_view name) = 0;
  // Demotes every glock this node holds (as above); returns how many were asked.
  virtual size_t DemoteAllGlocks() = 0;
  // This node's glocks and holders, in the style of gfs2's glocks file.
  virtual std::string DumpGlocks() const = 0;

  // ---- I/O under a caller's glock holder (the I/O policies, fuse/io_policy.h; docs/deadlocks.md)
  // Takes `ino`'s inode glock in `mode` for the caller, who keeps it across calls and passes it
  // to ReadIo/WriteIo; `try_only`: kLockConflict at once instead of waiting. Returns the hold.
  virtual Result<uint64_t> HoldInode(InodeNo ino, IoMode mode, bool try_only) {
    (void)ino;
    (void)mode;
    (void)try_only;
    return Status::NotSupported("glock holds");
  }
  virtual Status DropHold(uint64_t hold) {
    (void)hold;
    return Status::Ok();
  }
  // Whether someone else waits for the glock of `hold` (a demote pending, a holder queued).
  virtual bool HoldContended(uint64_t hold) {
    (void)hold;
    return false;
  }
  // Dumps show `hold` as kept across requests (flag R); statistics count a policy's retry.
  virtual void MarkHoldRetained(uint64_t hold, bool retained) {
    (void)hold;
    (void)retained;
  }
  virtual void NoteIoRetry(InodeNo ino) { (void)ino; }
  // GetAttr / GetXattr under `hold` (from HoldInode, in any mode) instead of a holder of their
  // own: a request of the process that keeps `hold` must not wait for its own glock (gfs2's
  // getattr does not take a glock its task holds: gfs2_glock_is_locked_by_me). The caller
  // guarantees that no request runs under `hold` meanwhile (nothing changes the inode under it).
  virtual Result<Attr> GetAttrUnder(InodeNo ino, uint64_t hold) {
    (void)hold;
    return GetAttr(ino);
  }
  virtual Result<size_t> GetXattrUnder(InodeNo ino, std::string_view name, std::span<uint8_t> buf,
                                       uint64_t hold) {
    (void)hold;
    return GetXattr(ino, name, buf);
  }
  // `fn` is called when a holder has to wait, or another node asks for a glock, while some hold
  // is marked retained: the cue for an I/O policy to give kept glocks up without waiting for its
  // next periodic look. Called with glock-layer locks held: must return at once and take no
  // lock. Replaces the previous one (which is not called after this returns); empty: none.
  virtual void SetRetainedContentionListener(std::function<void()> fn) { (void)fn; }
  // Read/Write in `mode`: kShared as Read, kUpdate as ReadForUpdate, kDeferred (DF, gfs2's
  // O_DIRECT mode: shared among direct I/O on every node, no page cache) and kExclusive. Under
  // `hold` (from HoldInode, covering `mode`) when non-zero, else under a holder of their own.
  // A kDeferred write changes data in place only (gfs2: DIO needs the blocks and the size to
  // exist; its times are TouchAfterDirectWrite's); where it cannot (a hole, beyond EOF, a stuffed
  // file) it is written as kExclusive instead, or, under a hold, answers kTryAgain so the caller
  // drops its hold first (the buffered fallback of gfs2's direct write).
  virtual Result<size_t> ReadIo(InodeNo ino, uint64_t off, std::span<uint8_t> buf, IoMode mode,
                                uint64_t hold) {
    (void)hold;
    return mode == IoMode::kUpdate ? ReadForUpdate(ino, off, buf) : Read(ino, off, buf);
  }
  virtual Result<size_t> WriteIo(InodeNo ino, uint64_t off, std::span<const uint8_t> data,
                                 IoMode mode, uint64_t hold) {
    (void)mode;
    (void)hold;
    return Write(ino, off, data, false);
  }
  // The naive I/O policy's lock order: operations wait for every glock in the order they ask
  // for it (no TRY and back-off for out-of-order ones) and copy_file_range keeps its source
  // while it takes its target, as gfs2 did before the 2021 fix. For deadlock demonstrations.
  virtual void SetNaiveLockOrder(bool naive) { (void)naive; }

  // Cluster mounts, after other nodes failed (docs/recovery.md): recovers every journal no live
  // node holds, as gfs2's journal recovery does for a dead node's jid. Cluster-wide one recovery
  // runs at a time (the recovery glock EX); each other journal's glock is tried EX with kNoExp
  // (the lock manager then ignores the locks of failed nodes awaiting recovery): busy = a live
  // node holds it; granted and dirty = replay it in place, take its statfs delta into this
  // node's own (folded into the master statfs with it later) with its statfs_change file
  // zeroed, in one transaction of our journal, and make that durable. Waits at most `timeout` for
  // the recovery glock. Only after it returns OK may the lock manager be told that the failed
  // node's journal is recovered. Idempotent. kInvalid on a single-node or read-only mount;
  // kFenced/kIoError when this node may not write.
  virtual Result<RecoveryReport> RecoverJournals(std::chrono::milliseconds timeout) {
    (void)timeout;
    return Status::Invalid("journal recovery needs a read-write cluster mount");
  }
};

}  // namespace ugfs2

#endif  // UGFS2_SRC_FS_FILE_SYSTEM_H_
