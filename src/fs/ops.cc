// The FileSystem operations of the engine. Each public operation runs in an OpScope (op_scope.h):
// it takes its glocks (inode glocks SH to read, EX to change, in the order of docs/locking.md),
// enters the transaction before its first change, does its work through the helpers of
// inode.cc/dir.cc/alloc.cc, and leaves log flushing to FlushLog (fsync, periodic, batch size,
// unmount, a glock's sync).
#include <sys/stat.h>
#include <sys/sysmacros.h>

#include <algorithm>
#include <chrono>
#include <cstring>

#include "common/crc.h"
#include "common/log.h"
#include "fs/engine.h"
#include "fs/op_scope.h"
#include "journal/journal.h"

namespace ugfs2::fs {
namespace {

using glock::State;

uint16_t DtType(uint32_t mode) { return static_cast<uint16_t>((mode & S_IFMT) >> 12); }
constexpr uint32_t kMaxLinks = 0xFFFFFFF0u;
constexpr int kSeekData = 3;
constexpr int kSeekHole = 4;

void SetTime(uint64_t* sec, uint32_t* nsec, const Timespec& t) {
  *sec = static_cast<uint64_t>(t.sec);
  *nsec = t.nsec;
}

}  // namespace

void Engine::TouchMC(Inode& ip) {
  Timespec now = Now();
  SetTime(&ip.di.mtime, &ip.di.mtime_nsec, now);
  SetTime(&ip.di.ctime, &ip.di.ctime_nsec, now);
  WriteDinode(ip);
}

void Engine::TouchC(Inode& ip) {
  SetTime(&ip.di.ctime, &ip.di.ctime_nsec, Now());
  WriteDinode(ip);
}

Status Engine::ValidateName(std::string_view name) const {
  if (name.empty()) return Status::Invalid("empty name");
  if (name.size() > format::kMaxNameLen) return Status::NameTooLong(std::string(name));
  if (name.find('/') != std::string_view::npos || name.find('\0') != std::string_view::npos) {
    return Status::Invalid("name contains '/' or NUL");
  }
  if (name == "." || name == "..") return Status::Exists(std::string(name));
  return Status::Ok();
}

Status Engine::AfterModify() {
  if (!log_->journal() || read_only_) return Status::Ok();
  // As gfs2's logd: past an eighth of a commit's budget the flusher thread commits in the
  // background while operations go on; past half, the operation itself flushes (back-pressure).
  const uint64_t dirty = cache_->DirtyCount();
  const uint64_t budget = log_->max_blocks_per_commit();
  if (dirty > budget / 2) return FlushLog();
  if (dirty > budget / 8 && !flush_kick_.exchange(true)) {
    { std::lock_guard<std::mutex> l(flusher_mu_); }  // the flusher is waiting or will see the flag
    flusher_cv_.notify_all();
  }
  return Status::Ok();
}

Status Engine::EnsureSpace(uint64_t blocks) {
  const uint64_t free = TotalFree();
  const uint64_t pending = alloc_->DeferredFrees();
  if (pending > 0 && free < pending + blocks + 64) return FlushLog();
  return Status::Ok();
}

Status Engine::IsAncestor(OpScope& s, InodeNo maybe_ancestor, InodeNo dir, bool* result) {
  *result = false;
  InodeNo cur = dir;
  for (int i = 0; i < 65536; ++i) {
    if (cur == maybe_ancestor) {
      *result = true;
      return Status::Ok();
    }
    if (cur == root()) return Status::Ok();
    // The caller holds the rename glock, so the chain cannot change; each directory read on the
    // way is held SH (out of order: tried, or the operation restarts with it in order).
    RETURN_IF_ERROR(s.Shared(cur));
    ASSIGN_OR_RETURN(InodeRef ip, GetInode(cur));
    if (!ip->is_dir()) return Status::Corrupt("'..' chain reaches a non-directory");
    const uint32_t hash = Gfs2DirentHash("..", 2);
    ASSIGN_OR_RETURN(DirentLoc loc, DirFind(*ip, "..", hash));
    if (loc.de.inum.addr == cur) return Status::Ok();
    cur = loc.de.inum.addr;
  }
  return Status::Corrupt("directory '..' chain does not reach the root");
}

// ---- read-only operations -------------------------------------------------------------------

Result<Attr> Engine::Lookup(InodeNo parent, std::string_view name) {
  if (name.size() > format::kMaxNameLen) return Status::NameTooLong(std::string(name));
  return RunOp<Result<Attr>>([&](OpScope& s) -> Result<Attr> {
    RETURN_IF_ERROR(s.Shared(parent));
    ASSIGN_OR_RETURN(InodeRef dir, GetInode(parent));
    ASSIGN_OR_RETURN(InodeRef ip, FindChild(&s, *dir, name, State::kShared, nullptr));
    return MakeAttr(*ip);
  });
}

Result<Attr> Engine::GetAttr(InodeNo ino) { return GetAttrUnder(ino, 0); }

Result<std::string> Engine::ReadLink(InodeNo ino) {
  OpScope s(this);
  RETURN_IF_ERROR(s.Shared(ino));
  ASSIGN_OR_RETURN(InodeRef ip, GetInode(ino));
  if (!ip->is_lnk()) return Status::Invalid("not a symlink");
  if (ip->di.height != 0 || ip->di.size > geo_.max_stuffed) {
    LOG_ERROR("symlink " << ino << ": bad size " << ip->di.size << " / height " << ip->di.height);
    return Status::Corrupt("symlink " + std::to_string(ino) + " is damaged");
  }
  std::string target(ip->di.size, '\0');
  size_t done = 0;
  RETURN_IF_ERROR(
      ReadData(*ip, 0, reinterpret_cast<uint8_t*>(target.data()), target.size(), &done));
  target.resize(done);
  return target;
}

namespace {

// The holder state and flags of an I/O mode.
std::pair<State, uint32_t> HolderOf(IoMode mode) {
  switch (mode) {
    // Page fills (buffered reads, faults) are served in the state held while the glock prepares
    // a demote: the revoke waits for the folio such a READ holds, and under DF (direct I/O,
    // which admits no SH) nothing else would grant it until the demote is over.
    case IoMode::kShared:
      return {State::kShared, glock::kPrepareAny};
    case IoMode::kUpdate:
      return {State::kExclusive, glock::kNodeScope | glock::kPrepareAny};
    case IoMode::kDeferred:
      return {State::kDeferred, 0};
    case IoMode::kExclusive:
      return {State::kExclusive, 0};
  }
  return {State::kExclusive, 0};
}

}  // namespace

const char* IoModeName(IoMode m) {
  switch (m) {
    case IoMode::kShared:
      return "SH";
    case IoMode::kUpdate:
      return "EXn";
    case IoMode::kDeferred:
      return "DF";
    case IoMode::kExclusive:
      return "EX";
  }
  return "?";
}

Result<uint64_t> Engine::HoldInode(InodeNo ino, IoMode mode, bool try_only) {
  if (!glocks_) return Status::Invalid("no glocks");
  const auto [state, flags] = HolderOf(mode);
  return glocks_->Acquire({glock::GlockType::kInode, ino}, state,
                          flags | (try_only ? glock::kTry : 0));
}

Status Engine::DropHold(uint64_t hold) { return glocks_ ? glocks_->Release(hold) : Status::Ok(); }

Result<Attr> Engine::GetAttrUnder(InodeNo ino, uint64_t hold) {
  OpScope s(this);
  // 0: a holder of its own. Else the caller's: any granted mode covers reading the in-core
  // dinode (read, or refreshed, when the glock was granted; nobody else may change it while this
  // node holds the glock).
  RETURN_IF_ERROR(hold == 0 ? s.Shared(ino) : s.Adopt({glock::GlockType::kInode, ino}, hold));
  ASSIGN_OR_RETURN(InodeRef ip, GetInode(ino));
  return MakeAttr(*ip);
}

bool Engine::HoldContended(uint64_t hold) { return glocks_ && glocks_->Contended(hold); }

void Engine::MarkHoldRetained(uint64_t hold, bool retained) {
  if (glocks_) glocks_->SetRetained(hold, retained);
}

void Engine::SetRetainedContentionListener(std::function<void()> fn) {
  if (glocks_) glocks_->SetRetainedContentionListener(std::move(fn));
}

void Engine::NoteIoRetry(InodeNo ino) {
  if (glocks_) glocks_->NoteRetry({glock::GlockType::kInode, ino});
}

Result<size_t> Engine::ReadImpl(InodeNo ino, uint64_t off, std::span<uint8_t> buf, IoMode mode,
                                uint64_t hold) {
  size_t done = 0;
  bool touch = false;
  {
    OpScope s(this);
    const glock::GlockName name{glock::GlockType::kInode, ino};
    const auto [state, flags] = HolderOf(mode);
    if (hold != 0) RETURN_IF_ERROR(s.Adopt(name, hold));
    RETURN_IF_ERROR(s.Lock(name, state, flags));
    ASSIGN_OR_RETURN(InodeRef ip, GetInode(ino));
    if (ip->is_dir()) return Status::IsDir("is a directory");
    RETURN_IF_ERROR(ReadData(*ip, off, buf.data(), buf.size(), &done));
    // Under a caller's hold the atime waits for a later read: its update takes the inode EX,
    // which the caller's own holder would block.
    touch = hold == 0 && AtimeNeedsUpdate(*ip, Now());
  }
  if (touch) TouchAtime(ino);
  return done;
}

Status Engine::ReadDir(InodeNo dir, uint64_t cookie,
                       const std::function<bool(const DirEntry&)>& emit) {
  bool touch = false;
  {
    OpScope s(this);
    RETURN_IF_ERROR(s.Shared(dir));
    ASSIGN_OR_RETURN(InodeRef ip, GetInode(dir));
    if (!ip->is_dir()) return Status::NotDir("not a directory");
    RETURN_IF_ERROR(DirList(*ip, cookie, emit));
    touch = cookie == 0 && AtimeNeedsUpdate(*ip, Now());  // once per listing, as getdents
  }
  if (touch) TouchAtime(dir);
  return Status::Ok();
}

bool Engine::AtimeNeedsUpdate(const Inode& ip, const Timespec& now) const {
  if (read_only_ || log_->broken()) return false;
  const auto mode = static_cast<AtimeMode>(atime_mode_.load());
  if (mode == AtimeMode::kNoatime || (ip.di.flags & format::kDifNoatime)) return false;
  if (ip.is_dir() && nodiratime_) return false;
  const auto& di = ip.di;
  auto le = [](uint64_t as, uint32_t an, uint64_t bs, uint32_t bn) {
    return as < bs || (as == bs && an <= bn);
  };
  if (mode == AtimeMode::kStrictatime) {
    return !(di.atime == static_cast<uint64_t>(now.sec) && di.atime_nsec == now.nsec);
  }
  // relatime, as the kernel's relatime_need_update().
  if (le(di.atime, di.atime_nsec, di.mtime, di.mtime_nsec)) return true;
  if (le(di.atime, di.atime_nsec, di.ctime, di.ctime_nsec)) return true;
  return static_cast<int64_t>(di.atime) + 24 * 3600 <= now.sec;
}

void Engine::TouchAtime(InodeNo ino) {
  Status st = RunOp<Status>([&](OpScope& s) -> Status {
    if (cluster_) {
      // The READ that asked for it is answered only after this: on a cluster its folio stays
      // locked meanwhile, and a revoke of this inode on this node waits for that folio while
      // EX may wait for the revoke (docs/coherence.md). Best effort: only if EX comes at once.
      ASSIGN_OR_RETURN(bool got, s.TryLock({glock::GlockType::kInode, ino}, State::kExclusive, 0));
      if (!got) return Status::Ok();
    } else {
      RETURN_IF_ERROR(s.Exclusive(ino));
    }
    ASSIGN_OR_RETURN(InodeRef ip, GetInode(ino));
    Timespec now = Now();
    if (!AtimeNeedsUpdate(*ip, now)) return Status::Ok();  // someone else did it meanwhile
    RETURN_IF_ERROR(s.BeginTrans());
    SetTime(&ip->di.atime, &ip->di.atime_nsec, now);
    WriteDinode(*ip);
    return Status::Ok();
  });
  if (st.ok()) st = AfterModify();
  // An atime update is best effort: a failure here must not fail the read that caused it.
  if (!st.ok() && st.code() != Code::kReadOnly && st.code() != Code::kStale) {
    LOG_WARN("atime update of " << ino << ": " << st.ToString());
  }
}

bool Engine::AtimeDue(InodeNo ino) {
  OpScope s(this);
  if (!s.Shared(ino).ok()) return false;
  auto ip = GetInode(ino);
  return ip.ok() && AtimeNeedsUpdate(**ip, Now());
}

void Engine::SetAtimePolicy(AtimeMode mode, bool nodiratime) {
  atime_mode_.store(static_cast<int>(mode));
  nodiratime_.store(nodiratime);
}

Result<uint64_t> Engine::Lseek(InodeNo ino, uint64_t off, int whence) {
  OpScope s(this);
  RETURN_IF_ERROR(s.Shared(ino));
  ASSIGN_OR_RETURN(InodeRef ip, GetInode(ino));
  const uint64_t size = ip->di.size;
  if (whence != kSeekData && whence != kSeekHole) return Status::Invalid("bad whence");
  if (off >= size) return Status(Code::kOther, "offset beyond end of file", ENXIO);
  if (ip->di.height == 0) return whence == kSeekData ? off : size;
  const uint64_t bs = geo_.bsize;
  uint64_t lblk = off / bs;
  const uint64_t last = (size + bs - 1) / bs;
  while (lblk < last) {
    uint64_t run = 0;
    ASSIGN_OR_RETURN(uint64_t pblk, MapExtent(*ip, lblk, last - lblk, &run));
    bool data = pblk != 0;
    if (data == (whence == kSeekData)) return std::min(std::max(off, lblk * bs), size);
    lblk += std::max<uint64_t>(run, 1);
  }
  if (whence == kSeekHole) return size;
  return Status(Code::kOther, "no data after offset", ENXIO);
}

// ---- namespace operations -------------------------------------------------------------------

Result<InodeRef> Engine::CreateNode(OpScope& s, InodeNo parent, std::string_view name,
                                    uint32_t mode, uint64_t rdev, std::string_view link_target,
                                    const Cred& cred, bool open) {
  RETURN_IF_ERROR(ValidateName(name));
  RETURN_IF_ERROR(s.Exclusive(parent));
  ASSIGN_OR_RETURN(InodeRef dir, GetInode(parent));
  if (!dir->is_dir()) return Status::NotDir("parent is not a directory");
  if (dir->di.nlink == 0) return Status::NotFound("parent directory was removed");
  const uint32_t hash = Gfs2DirentHash(name.data(), name.size());
  auto existing = DirFind(*dir, name, hash);
  if (existing.ok()) return Status::Exists(std::string(name));
  if (!existing.status().IsNotFound()) return existing.status();
  const bool is_dir = S_ISDIR(mode);
  if (is_dir && dir->di.nlink >= kMaxLinks) return Status(Code::kTooManyLinks, "too many links");
  if (S_ISLNK(mode) && link_target.size() >= geo_.max_stuffed) {
    return Status::NameTooLong("symlink target too long for this block size");
  }
  // POSIX ACLs: a default ACL on the directory decides the permission bits (and the new inode's
  // ACLs); without one, the caller's umask does. Symlinks keep 0777.
  std::vector<XattrRec> inherited;
  ASSIGN_OR_RETURN(bool from_acl, InheritAcls(*dir, &mode, &inherited));
  if (!from_acl && !S_ISLNK(mode)) mode &= ~(cred.umask & 0777);
  uint32_t gid = cred.gid;
  if (dir->di.mode & S_ISGID) {
    gid = dir->di.gid;
    if (is_dir) mode |= S_ISGID;
  } else if (!is_dir && (mode & (S_ISGID | S_IXGRP)) == (S_ISGID | S_IXGRP) && cred.uid != 0 &&
             !cred.InGroup(gid)) {
    mode &= ~S_ISGID;
  }
  uint32_t flags = dir->di.flags & (format::kDifInheritJdata | format::kDifInheritDirectio);
  if (dir->di.flags & format::kDifSystem) flags |= format::kDifSystem;
  if (is_dir) flags |= format::kDifJdata;
  uint64_t goal = is_dir ? alloc_->PickDirGoal(dir->no) : dir->no;
  // The new inode's glock is taken before its block is allocated (as gfs2 holds the new inode
  // EX while it creates it): a glock of that address may still be cached from an inode freed
  // there, and a demote of it must not run under the new inode. The block is chosen first,
  // locked (kSkip: nothing to read), then allocated if still free; if another create took it
  // meanwhile, nothing was changed yet and the operation starts over.
  // Resource groups first (their glocks sort after the inodes', so the new inode's glock below
  // is taken out of order: tried, as nobody else should hold it; as kNewObject, a cluster's
  // lock module grants it provisionally, without a round trip, when no node has a lock on that
  // address): the new dinode near its goal, the directory's growth near the directory, the
  // inherited ACLs near the new inode.
  RETURN_IF_ERROR(s.ReserveBlocks(goal, 1 + (inherited.empty() ? 0 : TreeReserve(2))));
  RETURN_IF_ERROR(
      s.ReserveBlocks(dir->di.goal_meta ? dir->di.goal_meta : dir->no, DirAddReserve(*dir)));
  ASSIGN_OR_RETURN(uint64_t blk, alloc_->PeekFreeBlock(goal));
  RETURN_IF_ERROR(
      s.Lock({glock::GlockType::kInode, blk}, State::kExclusive, glock::kSkip | glock::kNewObject));
  if (open) RETURN_IF_ERROR(LockIopen(s, blk, /*created=*/true));
  RETURN_IF_ERROR(s.BeginTrans());
  uint64_t gen = 0;
  ASSIGN_OR_RETURN(bool got, alloc_->AllocDinodeAt(blk, &gen));
  if (!got) {
    s.EndTrans();
    return Status(Code::kLockConflict, "the chosen dinode block was taken meanwhile");
  }
  ASSIGN_OR_RETURN(InodeRef ip, NewInode(blk, gen, mode, cred.uid, gid, flags));
  if (is_dir) {
    ip->di.nlink = 2;
    RETURN_IF_ERROR(DirInit(*ip, ip->di.num, dir->di.num));
  } else if (S_ISLNK(mode)) {
    std::memcpy(ip->buf->bytes() + format::kDinodeSize, link_target.data(), link_target.size());
    ip->di.size = link_target.size();
  } else if (S_ISCHR(mode) || S_ISBLK(mode)) {
    ip->di.major = major(rdev);
    ip->di.minor = minor(rdev);
  }
  WriteDinode(*ip);
  Status st = inherited.empty() ? Status::Ok() : WriteXattrs(*ip, inherited);
  if (st.ok()) st = DirAdd(*dir, name, ip->di.num, DtType(mode));
  if (!st.ok()) {
    ip->di.nlink = 0;
    Status d = Dealloc(*ip);
    if (!d.ok()) LOG_ERROR("rollback of inode " << ip->no << ": " << d.ToString());
    return st;
  }
  if (is_dir) dir->di.nlink++;
  TouchMC(*dir);
  return ip;
}

Result<Attr> Engine::Mknod(InodeNo parent, std::string_view name, uint32_t mode, uint64_t rdev,
                           const Cred& cred) {
  RETURN_IF_ERROR(CheckWritable());
  uint32_t type = mode & S_IFMT;
  if (type == 0) mode |= S_IFREG;
  if (type == S_IFDIR || type == S_IFLNK) return Status::Invalid("use mkdir/symlink");
  RETURN_IF_ERROR(EnsureSpace(2));
  Result<Attr> r = RunOp<Result<Attr>>([&](OpScope& s) -> Result<Attr> {
    ASSIGN_OR_RETURN(InodeRef ip, CreateNode(s, parent, name, mode, rdev, {}, cred));
    return MakeAttr(*ip);
  });
  RETURN_IF_ERROR(AfterModify());
  return r;
}

Result<Attr> Engine::Create(InodeNo parent, std::string_view name, uint32_t mode, bool exclusive,
                            bool truncate, const Cred& cred) {
  RETURN_IF_ERROR(CheckWritable());
  RETURN_IF_ERROR(EnsureSpace(2));
  Result<Attr> r = RunOp<Result<Attr>>([&](OpScope& s) -> Result<Attr> {
    RETURN_IF_ERROR(s.Exclusive(parent));
    ASSIGN_OR_RETURN(InodeRef dir, GetInode(parent));
    if (!dir->is_dir()) return Status::NotDir("parent is not a directory");
    RETURN_IF_ERROR(ValidateName(name));
    InodeRef ip;
    auto existing = FindChild(&s, *dir, name, State::kExclusive, nullptr);
    if (existing.ok()) {
      ip = *existing;
      if (exclusive) return Status::Exists(std::string(name));
      if (ip->is_dir()) return Status::IsDir(std::string(name));
      RETURN_IF_ERROR(LockIopen(s, ip->no));
      if (truncate && ip->is_reg() && ip->di.size > 0) {
        RETURN_IF_ERROR(LockRgrpsToTruncate(s, *ip, 0));
        RETURN_IF_ERROR(s.BeginTrans());
        RETURN_IF_ERROR(DoTruncate(*ip, 0));
      }
    } else if (existing.status().IsNotFound()) {
      ASSIGN_OR_RETURN(ip, CreateNode(s, parent, name, (mode & 07777) | S_IFREG, 0, {}, cred,
                                      /*open=*/true));
    } else {
      return existing.status();
    }
    std::lock_guard<std::mutex> l(inodes_mu_);
    KeepIopen(s, *ip);
    ip->opens++;
    return MakeAttr(*ip);
  });
  RETURN_IF_ERROR(AfterModify());
  return r;
}

Result<Attr> Engine::Mkdir(InodeNo parent, std::string_view name, uint32_t mode, const Cred& cred) {
  RETURN_IF_ERROR(CheckWritable());
  RETURN_IF_ERROR(EnsureSpace(4));
  Result<Attr> r = RunOp<Result<Attr>>([&](OpScope& s) -> Result<Attr> {
    ASSIGN_OR_RETURN(InodeRef ip,
                     CreateNode(s, parent, name, (mode & 07777) | S_IFDIR, 0, {}, cred));
    return MakeAttr(*ip);
  });
  RETURN_IF_ERROR(AfterModify());
  return r;
}

Result<Attr> Engine::Symlink(InodeNo parent, std::string_view name, std::string_view target,
                             const Cred& cred) {
  RETURN_IF_ERROR(CheckWritable());
  if (target.empty()) return Status(Code::kNotFound, "empty symlink target");
  RETURN_IF_ERROR(EnsureSpace(2));
  Result<Attr> r = RunOp<Result<Attr>>([&](OpScope& s) -> Result<Attr> {
    ASSIGN_OR_RETURN(InodeRef ip, CreateNode(s, parent, name, S_IFLNK | 0777, 0, target, cred));
    return MakeAttr(*ip);
  });
  RETURN_IF_ERROR(AfterModify());
  return r;
}

Result<Attr> Engine::LinkImpl(InodeNo ino, std::optional<uint64_t> generation, uint64_t mask,
                              InodeNo new_parent, std::string_view new_name) {
  RETURN_IF_ERROR(CheckWritable());
  RETURN_IF_ERROR(ValidateName(new_name));
  Result<Attr> r = RunOp<Result<Attr>>([&](OpScope& s) -> Result<Attr> {
    if (naive_order_.load(std::memory_order_relaxed)) {
      // The naive policy: the inode, then the directory, both waited for (docs/deadlocks.md S7).
      RETURN_IF_ERROR(s.Exclusive(ino));
      RETURN_IF_ERROR(s.Exclusive(new_parent));
    } else {
      RETURN_IF_ERROR(s.Exclusive(std::min(ino, new_parent)));
      RETURN_IF_ERROR(s.Exclusive(std::max(ino, new_parent)));
    }
    ASSIGN_OR_RETURN(InodeRef ip, GetInode(ino));
    if (generation && (ip->di.generation & mask) != *generation) {
      return Status(Code::kStale, "inode " + std::to_string(ino) + " was freed and reused");
    }
    ASSIGN_OR_RETURN(InodeRef dir, GetInode(new_parent));
    if (!dir->is_dir()) return Status::NotDir("not a directory");
    if (dir->di.nlink == 0) return Status::NotFound("directory was removed");
    if (ip->is_dir()) return Status::Permission("hard links to directories are not allowed");
    if (ip->di.nlink == 0) return Status::NotFound("inode was removed");
    if (ip->di.nlink >= kMaxLinks) return Status(Code::kTooManyLinks, "too many links");
    const uint32_t hash = Gfs2DirentHash(new_name.data(), new_name.size());
    auto existing = DirFind(*dir, new_name, hash);
    if (existing.ok()) return Status::Exists(std::string(new_name));
    if (!existing.status().IsNotFound()) return existing.status();
    RETURN_IF_ERROR(s.ReserveBlocks(dir->no, DirAddReserve(*dir)));
    RETURN_IF_ERROR(s.BeginTrans());
    RETURN_IF_ERROR(DirAdd(*dir, new_name, ip->di.num, DtType(ip->di.mode)));
    ip->di.nlink++;
    TouchC(*ip);
    TouchMC(*dir);
    return MakeAttr(*ip);
  });
  RETURN_IF_ERROR(AfterModify());
  return r;
}

Status Engine::LockIopen(OpScope& s, InodeNo no, bool created) {
  if (!cluster_) return Status::Ok();
  // Sorts after every inode and rgrp glock of the operation; only a node freeing the inode
  // holds it EX, and that node holds the inode's glock EX, which this operation holds now.
  // Kept cached (SH) after the last close, as gfs2 keeps it while the inode is cached: opening
  // the file again costs no lock request. A node that wants to free the inode asks with
  // kTry1Cb, so an idle cached SH here is given up on its callback (TryIopenExclusive retries).
  // A new inode's (`created`): kNewObject, so that the lock module may grant it at once.
  return s.Lock({glock::GlockType::kIopen, no}, State::kShared, created ? glock::kNewObject : 0);
}

void Engine::KeepIopen(OpScope& s, Inode& ip) {
  if (!cluster_ || ip.iopen != 0) return;  // the scope releases its own holder then
  ip.iopen = s.Detach({glock::GlockType::kIopen, ip.no});
}

void Engine::ClosedHere(glock::HolderId iopen) {
  if (iopen == 0) return;
  Status st = glocks_->Release(iopen);
  if (!st.ok()) LOG_ERROR("releasing an iopen glock: " << st.ToString());
}

Status Engine::TryIopenToFree(OpScope& s, Inode& ip) {
  ip.iopen_ex = false;
  if (!cluster_ || !(ip.is_dir() || ip.di.nlink <= 1)) return Status::Ok();
  {
    std::lock_guard<std::mutex> l(inodes_mu_);
    if (ip.opens > 0) return Status::Ok();  // open here: freed at the last close
  }
  ASSIGN_OR_RETURN(ip.iopen_ex, TryIopenExclusive(s, ip.no));
  return Status::Ok();
}

Result<bool> Engine::TryIopenExclusive(OpScope& s, InodeNo no) {
  // Each try fails at once while another node holds iopen SH. A node that has it open keeps
  // it (and frees the inode at its own last close); a node whose last close is still giving
  // its SH back (kNoCache: on its way to UN) lets go within a lock-manager round trip, hence a
  // few tries, a few milliseconds apart (bounded: 20 tries, ~100 ms, on this rare path only).
  for (int attempt = 0; attempt < 20; ++attempt) {
    if (attempt > 0) std::this_thread::sleep_for(std::chrono::milliseconds(5));
    ASSIGN_OR_RETURN(bool got, s.TryLock({glock::GlockType::kIopen, no}, State::kExclusive,
                                         glock::kTry1Cb | glock::kNoCache));
    if (got) return true;
  }
  return false;
}

Status Engine::MaybeFree(Inode& ip) {
  if (ip.di.nlink != 0) return Status::Ok();
  int opens;
  {
    std::lock_guard<std::mutex> l(inodes_mu_);
    opens = ip.opens;
  }
  if (opens > 0) return alloc_->SetUnlinked(ip.no);  // freed at the last Release (or unmount)
  // On a cluster, only with iopen EX (no node has it open); otherwise it stays marked unlinked
  // and the node that closes it last frees it.
  if (cluster_ && !ip.iopen_ex) return alloc_->SetUnlinked(ip.no);
  return Dealloc(ip);
}

Status Engine::DropLink(Inode& ip) {
  if (ip.is_dir()) {
    ip.di.nlink = 0;
  } else if (ip.di.nlink > 0) {
    ip.di.nlink--;
  }
  TouchC(ip);
  return MaybeFree(ip);
}

Status Engine::Unlink(InodeNo parent, std::string_view name) {
  RETURN_IF_ERROR(CheckWritable());
  if (name == "." || name == "..") return Status::Invalid("cannot unlink . or ..");
  RETURN_IF_ERROR(RunOp<Status>([&](OpScope& s) -> Status {
    RETURN_IF_ERROR(s.Exclusive(parent));
    ASSIGN_OR_RETURN(InodeRef dir, GetInode(parent));
    if (!dir->is_dir()) return Status::NotDir("not a directory");
    ASSIGN_OR_RETURN(InodeRef ip, FindChild(&s, *dir, name, State::kExclusive, nullptr));
    if (ip->is_dir()) return Status::IsDir("is a directory");
    RETURN_IF_ERROR(LockRgrpsToDrop(s, *ip));
    RETURN_IF_ERROR(TryIopenToFree(s, *ip));
    RETURN_IF_ERROR(s.BeginTrans());
    RETURN_IF_ERROR(DirRemove(*dir, name));
    TouchMC(*dir);
    return DropLink(*ip);
  }));
  return AfterModify();
}

Status Engine::CheckDirEmpty(Inode& dir, std::string_view name) {
  // di_entries may be damaged: removing a directory that still has entries would orphan them.
  bool empty = true;
  RETURN_IF_ERROR(DirList(dir, 0, [&](const DirEntry& e) {
    if (e.name == "." || e.name == "..") return true;
    empty = false;
    return false;
  }));
  if (empty) return Status::Ok();
  LOG_ERROR("directory " << dir.no << " has entries but di_entries " << dir.di.entries
                         << ": damaged, not removing it");
  return Status::NotEmpty(std::string(name));
}

Status Engine::Rmdir(InodeNo parent, std::string_view name) {
  RETURN_IF_ERROR(CheckWritable());
  if (name == ".") return Status::Invalid("cannot remove .");
  if (name == "..") return Status::NotEmpty("cannot remove ..");
  RETURN_IF_ERROR(RunOp<Status>([&](OpScope& s) -> Status {
    RETURN_IF_ERROR(s.Exclusive(parent));
    ASSIGN_OR_RETURN(InodeRef dir, GetInode(parent));
    if (!dir->is_dir()) return Status::NotDir("not a directory");
    ASSIGN_OR_RETURN(InodeRef ip, FindChild(&s, *dir, name, State::kExclusive, nullptr));
    if (!ip->is_dir()) return Status::NotDir("not a directory");
    if (ip->no == root()) return Status::Busy("cannot remove the root");
    if (ip->di.entries > 2) return Status::NotEmpty(std::string(name));
    RETURN_IF_ERROR(CheckDirEmpty(*ip, name));
    RETURN_IF_ERROR(LockRgrpsToDrop(s, *ip));
    RETURN_IF_ERROR(TryIopenToFree(s, *ip));
    RETURN_IF_ERROR(s.BeginTrans());
    RETURN_IF_ERROR(DirRemove(*dir, name));
    if (dir->di.nlink > 2) dir->di.nlink--;
    TouchMC(*dir);
    return DropLink(*ip);
  }));
  return AfterModify();
}

Status Engine::Rename(InodeNo parent, std::string_view name, InodeNo new_parent,
                      std::string_view new_name, uint32_t flags) {
  RETURN_IF_ERROR(CheckWritable());
  if (flags & ~(kRenameNoReplace | kRenameExchange)) return Status::Invalid("bad rename flags");
  if ((flags & kRenameNoReplace) && (flags & kRenameExchange)) {
    return Status::Invalid("RENAME_NOREPLACE with RENAME_EXCHANGE");
  }
  if (name == "." || name == ".." || new_name == "." || new_name == "..") {
    return Status::Busy("cannot rename . or ..");
  }
  RETURN_IF_ERROR(ValidateName(new_name));
  RETURN_IF_ERROR(EnsureSpace(4));
  const bool cross = parent != new_parent;
  RETURN_IF_ERROR(RunOp<Status>([&](OpScope& s) -> Status {
    // Only renames between directories change the tree's shape: they take the rename glock
    // first, so the ancestry checks below see a tree nobody else is reshaping.
    if (cross) {
      RETURN_IF_ERROR(s.Lock({glock::GlockType::kNondisk, glock::kRenameLock}, State::kExclusive));
    }
    RETURN_IF_ERROR(s.Exclusive(std::min(parent, new_parent)));
    RETURN_IF_ERROR(s.Exclusive(std::max(parent, new_parent)));
    ASSIGN_OR_RETURN(InodeRef sdir, GetInode(parent));
    ASSIGN_OR_RETURN(InodeRef ddir, GetInode(new_parent));
    if (!sdir->is_dir() || !ddir->is_dir()) return Status::NotDir("not a directory");
    if (ddir->di.nlink == 0) return Status::NotFound("target directory was removed");
    ASSIGN_OR_RETURN(InodeRef src, FindChild(&s, *sdir, name, State::kExclusive, nullptr));
    InodeRef dst;
    {
      auto d = FindChild(&s, *ddir, new_name, State::kExclusive, nullptr);
      if (d.ok()) {
        dst = *d;
      } else if (!d.status().IsNotFound()) {
        return d.status();
      }
    }
    if (flags & kRenameExchange) {
      if (!dst) return Status::NotFound(std::string(new_name));
      if (src->no == dst->no) return Status::Ok();
      bool bad = false;
      if (src->is_dir() && cross) {
        RETURN_IF_ERROR(IsAncestor(s, src->no, ddir->no, &bad));
        if (bad) return Status::Invalid("cannot move a directory into itself");
      }
      if (dst->is_dir() && cross) {
        RETURN_IF_ERROR(IsAncestor(s, dst->no, sdir->no, &bad));
        if (bad) return Status::Invalid("cannot move a directory into itself");
      }
      RETURN_IF_ERROR(s.BeginTrans());
      RETURN_IF_ERROR(DirRetarget(*sdir, name, dst->di.num, DtType(dst->di.mode)));
      RETURN_IF_ERROR(DirRetarget(*ddir, new_name, src->di.num, DtType(src->di.mode)));
      if (cross) {
        if (src->is_dir()) {
          RETURN_IF_ERROR(DirRetarget(*src, "..", ddir->di.num, 4));
          sdir->di.nlink--;
          ddir->di.nlink++;
        }
        if (dst->is_dir()) {
          RETURN_IF_ERROR(DirRetarget(*dst, "..", sdir->di.num, 4));
          ddir->di.nlink--;
          sdir->di.nlink++;
        }
      }
      TouchC(*src);
      TouchC(*dst);
      TouchMC(*sdir);
      if (cross) TouchMC(*ddir);
      return Status::Ok();
    }
    if (dst && dst->no == src->no) return Status::Ok();  // two names of one inode: no-op
    if (dst && (flags & kRenameNoReplace)) return Status::Exists(std::string(new_name));
    if (src->is_dir()) {
      if (dst && !dst->is_dir()) return Status::NotDir("target is not a directory");
      if (dst && dst->di.entries > 2) return Status::NotEmpty(std::string(new_name));
      if (dst) RETURN_IF_ERROR(CheckDirEmpty(*dst, new_name));
      if (cross) {
        bool bad = false;
        RETURN_IF_ERROR(IsAncestor(s, src->no, ddir->no, &bad));
        if (bad) return Status::Invalid("cannot move a directory into itself");
      }
      if (!dst && cross && ddir->di.nlink >= kMaxLinks) {
        return Status(Code::kTooManyLinks, "too many links");
      }
    } else if (dst && dst->is_dir()) {
      return Status::IsDir("target is a directory");
    }
    if (dst) {
      RETURN_IF_ERROR(LockRgrpsToDrop(s, *dst));
      RETURN_IF_ERROR(TryIopenToFree(s, *dst));
    } else {
      RETURN_IF_ERROR(s.ReserveBlocks(ddir->no, DirAddReserve(*ddir)));
    }
    RETURN_IF_ERROR(s.BeginTrans());
    if (dst) {
      RETURN_IF_ERROR(DirRetarget(*ddir, new_name, src->di.num, DtType(src->di.mode)));
    } else {
      RETURN_IF_ERROR(DirAdd(*ddir, new_name, src->di.num, DtType(src->di.mode)));
    }
    RETURN_IF_ERROR(DirRemove(*sdir, name));
    if (src->is_dir()) {
      if (cross) {
        RETURN_IF_ERROR(DirRetarget(*src, "..", ddir->di.num, 4));
        sdir->di.nlink--;
        if (!dst) ddir->di.nlink++;
      } else if (dst) {
        sdir->di.nlink--;  // the replaced directory's ".." is gone
      }
    }
    TouchC(*src);
    TouchMC(*sdir);
    if (cross) TouchMC(*ddir);
    return dst ? DropLink(*dst) : Status::Ok();
  }));
  return AfterModify();
}

// ---- attributes, open/release, data -----------------------------------------------------------

Status Engine::DoTruncate(Inode& ip, uint64_t size) {
  RETURN_IF_ERROR(SetSize(ip, size));
  TouchMC(ip);
  return Status::Ok();
}

Result<Attr> Engine::SetAttr(InodeNo ino, const SetAttrRequest& req, const Cred& cred) {
  RETURN_IF_ERROR(CheckWritable());
  Result<Attr> r = RunOp<Result<Attr>>([&](OpScope& s) -> Result<Attr> {
    RETURN_IF_ERROR(s.Exclusive(ino));
    ASSIGN_OR_RETURN(InodeRef ip, GetInode(ino));
    if (req.generation && (ip->di.generation & req.generation_mask) != *req.generation) {
      return Status(Code::kStale, "inode " + std::to_string(ino) + " was freed and reused");
    }
    if ((req.mask & kSetSize) && ip->is_reg() && req.size <= MaxFileSize() &&
        req.size != ip->di.size) {
      RETURN_IF_ERROR(LockRgrpsToTruncate(s, *ip, req.size));
    }
    if ((req.mask & kSetMode) && ip->di.eattr != 0)
      RETURN_IF_ERROR(LockRgrpsToRewriteEattr(s, *ip, 0));
    RETURN_IF_ERROR(s.BeginTrans());
    auto& di = ip->di;
    if (req.mask & kSetSize) {
      if (ip->is_dir()) return Status::IsDir("is a directory");
      if (!ip->is_reg()) return Status::Invalid("not a regular file");
      if (req.size > MaxFileSize()) return Status(Code::kTooBig, "file too large");
      if (req.size != di.size) RETURN_IF_ERROR(DoTruncate(*ip, req.size));
    }
    if (req.mask & kSetMode) {
      di.mode = (di.mode & S_IFMT) | (req.mode & 07777);
      RETURN_IF_ERROR(ChmodAcl(*ip));
    }
    if (req.mask & (kSetUid | kSetGid)) {
      bool changed = ((req.mask & kSetUid) && req.uid != di.uid) ||
                     ((req.mask & kSetGid) && req.gid != di.gid);
      if (req.mask & kSetUid) di.uid = req.uid;
      if (req.mask & kSetGid) di.gid = req.gid;
      if (changed && !ip->is_dir()) {
        di.mode &= ~S_ISUID;
        if (di.mode & S_IXGRP) di.mode &= ~S_ISGID;
      }
    }
    if (req.mask & kKillSuidGid) {
      di.mode &= ~S_ISUID;
      if (di.mode & S_IXGRP) di.mode &= ~S_ISGID;
    }
    Timespec now = Now();
    if (req.mask & kSetAtimeNow)
      SetTime(&di.atime, &di.atime_nsec, now);
    else if (req.mask & kSetAtime)
      SetTime(&di.atime, &di.atime_nsec, req.atime);
    if (req.mask & kSetMtimeNow)
      SetTime(&di.mtime, &di.mtime_nsec, now);
    else if (req.mask & kSetMtime)
      SetTime(&di.mtime, &di.mtime_nsec, req.mtime);
    if (req.mask & kSetCtime)
      SetTime(&di.ctime, &di.ctime_nsec, req.ctime);
    else
      SetTime(&di.ctime, &di.ctime_nsec, now);
    WriteDinode(*ip);
    (void)cred;
    return MakeAttr(*ip);
  });
  RETURN_IF_ERROR(AfterModify());
  return r;
}

Status Engine::OpenImpl(InodeNo ino, bool truncate, const Cred& cred, bool update,
                        std::optional<uint64_t> generation, uint64_t mask) {
  if (truncate) RETURN_IF_ERROR(CheckWritable());
  {
    OpScope s(this);
    if (truncate) {
      RETURN_IF_ERROR(s.Exclusive(ino));
    } else if (update) {
      RETURN_IF_ERROR(
          s.Lock({glock::GlockType::kInode, ino}, State::kExclusive, glock::kNodeScope));
    } else {
      RETURN_IF_ERROR(s.Shared(ino));
    }
    ASSIGN_OR_RETURN(InodeRef ip, GetInode(ino));
    if (generation && (ip->di.generation & mask) != *generation) {
      return Status(Code::kStale, "inode " + std::to_string(ino) + " was freed and reused");
    }
    {
      std::lock_guard<std::mutex> l(inodes_mu_);
      if (ip->di.nlink == 0 && ip->opens == 0) return Status(Code::kStale, "inode was removed");
    }
    if (truncate && ip->is_reg() && ip->di.size > 0) {
      RETURN_IF_ERROR(LockRgrpsToTruncate(s, *ip, 0));
    }
    RETURN_IF_ERROR(LockIopen(s, ip->no));
    if (truncate && ip->is_reg() && ip->di.size > 0) {
      RETURN_IF_ERROR(s.BeginTrans());
      RETURN_IF_ERROR(DoTruncate(*ip, 0));
    }
    std::lock_guard<std::mutex> l(inodes_mu_);
    KeepIopen(s, *ip);
    ip->opens++;
  }
  (void)cred;
  return truncate ? AfterModify() : Status::Ok();
}

Status Engine::Release(InodeNo ino) {
  bool last = false;
  glock::HolderId iopen = 0;
  {
    OpScope s(this);
    {
      std::lock_guard<std::mutex> l(inodes_mu_);
      if (inodes_.find(ino) == inodes_.end()) return Status::Ok();  // never opened here
    }
    RETURN_IF_ERROR(s.Shared(ino));  // di_nlink is the glock's (a stale shell is re-read)
    std::lock_guard<std::mutex> l(inodes_mu_);
    auto it = inodes_.find(ino);
    if (it == inodes_.end()) return Status::Ok();
    Inode& ip = *it->second;
    if (ip.opens > 0) ip.opens--;
    if (ip.opens == 0) {
      iopen = ip.iopen;
      ip.iopen = 0;
    }
    last = ip.opens == 0 && !ip.stale && ip.di.nlink == 0;
  }
  ClosedHere(iopen);
  if (!last || read_only_ || log_->broken()) return Status::Ok();
  // The last close of an unlinked inode frees it, under its glock EX (re-checked: it may have
  // been opened again by handle meanwhile, or freed by another releaser).
  RETURN_IF_ERROR(RunOp<Status>([&](OpScope& s) -> Status {
    RETURN_IF_ERROR(s.Exclusive(ino));
    InodeRef ip;
    {
      std::lock_guard<std::mutex> l(inodes_mu_);
      auto it = inodes_.find(ino);
      if (it == inodes_.end() || it->second->opens > 0) return Status::Ok();
      ip = it->second;
    }
    if (ip->stale || ip->di.nlink > 0) return Status::Ok();
    std::vector<uint64_t> rgrps;
    RETURN_IF_ERROR(RgrpsOfInode(*ip, &rgrps));
    RETURN_IF_ERROR(s.LockRgrps(rgrps));
    // On a cluster: freed only if no other node has it open (else that node's last close does).
    if (cluster_) {
      ASSIGN_OR_RETURN(bool nobody, TryIopenExclusive(s, ino));
      if (!nobody) return Status::Ok();
    }
    RETURN_IF_ERROR(s.BeginTrans());
    return Dealloc(*ip);
  }));
  return AfterModify();
}

Result<size_t> Engine::Write(InodeNo ino, uint64_t off, std::span<const uint8_t> data,
                             bool kill_priv) {
  return WriteImpl(ino, off, data, kill_priv, false);
}

Result<size_t> Engine::WriteIo(InodeNo ino, uint64_t off, std::span<const uint8_t> data,
                               IoMode mode, uint64_t hold) {
  if (mode == IoMode::kDeferred) {
    Result<size_t> r = WriteInPlace(ino, off, data, hold);
    if (r.ok() || r.status().code() != Code::kTryAgain || hold != 0) return r;
    return WriteImpl(ino, off, data, false, false);  // gfs2's buffered fallback, under EX
  }
  if (mode == IoMode::kShared && hold != 0) {
    return Status(Code::kTryAgain, "a write needs the inode exclusively");
  }
  return WriteImpl(ino, off, data, false, false, hold);
}

Result<size_t> Engine::WriteInPlace(InodeNo ino, uint64_t off, std::span<const uint8_t> data,
                                    uint64_t hold) {
  RETURN_IF_ERROR(CheckWritable());
  OpScope s(this);
  const glock::GlockName name{glock::GlockType::kInode, ino};
  if (hold != 0) RETURN_IF_ERROR(s.Adopt(name, hold));
  RETURN_IF_ERROR(s.Lock(name, State::kDeferred));
  ASSIGN_OR_RETURN(InodeRef ip, GetInode(ino));
  if (ip->is_dir()) return Status::IsDir("is a directory");
  if (!ip->is_reg()) return Status::Invalid("not a regular file");
  const Status fallback(Code::kTryAgain, "direct write needs allocation: falls back to EX");
  if (data.empty()) return size_t{0};
  if (ip->di.height == 0 || off + data.size() > ip->di.size || off + data.size() < off) {
    return fallback;
  }
  bool holes = false;
  RETURN_IF_ERROR(WalkExtents(*ip, off, data.size(), [&](uint64_t, uint64_t at, uint64_t) {
    if (at == 0) holes = true;
    return Status::Ok();
  }));
  if (holes) return fallback;
  const uint64_t bs = geo_.bsize;
  RETURN_IF_ERROR(
      WalkExtents(*ip, off, data.size(), [&](uint64_t pos, uint64_t at, uint64_t n) -> Status {
        RETURN_IF_ERROR(alloc_->CheckDataRun(ip->no, at / bs, (at % bs + n + bs - 1) / bs));
        data_writes_++;
        return dev_->WriteAt(at, data.data() + pos, n);
      }));
  if (DirectWriteTimesDue(*ip, Now())) ip->direct_times_due = true;
  return data.size();
}

bool Engine::DirectWriteTimesDue(const Inode& ip, const Timespec& now) {
  auto ns = [](uint64_t s, uint32_t n) {
    return static_cast<int64_t>(s) * 1'000'000'000 + static_cast<int64_t>(n);
  };
  const int64_t t = ns(static_cast<uint64_t>(now.sec), static_cast<uint32_t>(now.nsec));
  const int64_t granularity = int64_t{kDirectWriteTimeGranularityMs} * 1'000'000;
  return t - ns(ip.di.mtime, ip.di.mtime_nsec) >= granularity ||
         t - ns(ip.di.ctime, ip.di.ctime_nsec) >= granularity;
}

void Engine::TouchAfterDirectWrite(InodeNo ino) {
  {
    std::lock_guard<std::mutex> l(inodes_mu_);
    auto it = inodes_.find(ino);
    if (it == inodes_.end() || !it->second->direct_times_due.exchange(false)) return;
  }
  if (TryTouchDirectTimes(ino) != TouchResult::kBusy) return;
  // The last write of a burst may be the one that found the glock busy: the flusher retries.
  {
    std::lock_guard<std::mutex> l(pending_times_mu_);
    pending_times_.insert(ino);
  }
  { std::lock_guard<std::mutex> l(flusher_mu_); }  // the flusher is in its wait or sees it
  flusher_cv_.notify_all();
}

Engine::TouchResult Engine::TryTouchDirectTimes(InodeNo ino) {
  bool busy = false, touched = false;
  Status st = RunOp<Status>([&](OpScope& s) -> Status {
    // Never waits: the caller's own process may keep DF on this inode (the kept glocks of the
    // proposal-2021 and naive I/O policies), which a waiting EX would wait for. On a cluster
    // the try asks the nodes sharing DF to give it up, so that the retry succeeds.
    ASSIGN_OR_RETURN(bool got, s.TryLock({glock::GlockType::kInode, ino}, State::kExclusive,
                                         cluster_ ? glock::kTry1Cb : 0));
    if (!got) {
      busy = true;
      return Status::Ok();
    }
    ASSIGN_OR_RETURN(InodeRef ip, GetInode(ino));
    if (!ip->is_reg() || !DirectWriteTimesDue(*ip, Now())) return Status::Ok();
    RETURN_IF_ERROR(s.BeginTrans());
    TouchMC(*ip);
    touched = true;
    return Status::Ok();
  });
  if (st.ok() && touched) st = AfterModify();
  // Best effort, like atime: a failure here must not fail the write that caused it.
  if (!st.ok() && st.code() != Code::kReadOnly && st.code() != Code::kStale &&
      st.code() != Code::kNotFound) {
    LOG_WARN("mtime update after a direct write to " << ino << ": " << st.ToString());
  }
  if (busy) return TouchResult::kBusy;
  return touched && st.ok() ? TouchResult::kTouched : TouchResult::kNotDue;
}

void Engine::RetryPendingDirectTimes() {
  std::unordered_set<InodeNo> batch;
  {
    std::lock_guard<std::mutex> l(pending_times_mu_);
    batch.swap(pending_times_);
  }
  for (InodeNo ino : batch) {
    switch (TryTouchDirectTimes(ino)) {
      case TouchResult::kBusy: {
        std::lock_guard<std::mutex> l(pending_times_mu_);
        pending_times_.insert(ino);
        break;
      }
      case TouchResult::kTouched:
        // No request of the kernel's is in progress for it: its cached attributes must go.
        if (kernel_cache_ != nullptr) kernel_cache_->InvalidateAttr(ino);
        break;
      case TouchResult::kNotDue:
        break;
    }
  }
}

Result<size_t> Engine::WriteImpl(InodeNo ino, std::optional<uint64_t> at,
                                 std::span<const uint8_t> data, bool kill_priv, bool writeback,
                                 uint64_t hold) {
  RETURN_IF_ERROR(CheckWritable());
  RETURN_IF_ERROR(EnsureSpace(data.size() / geo_.bsize + 8));
  Result<size_t> r = RunOp<Result<size_t>>([&](OpScope& s) -> Result<size_t> {
    if (hold != 0) RETURN_IF_ERROR(s.Adopt({glock::GlockType::kInode, ino}, hold));
    RETURN_IF_ERROR(
        writeback ? s.Lock({glock::GlockType::kInode, ino}, State::kExclusive, glock::kPrepareAny)
                  : s.Exclusive(ino));
    ASSIGN_OR_RETURN(InodeRef ip, GetInode(ino));
    if (ip->is_dir()) return Status::IsDir("is a directory");
    if (!ip->is_reg()) return Status::Invalid("not a regular file");
    const uint64_t off = at ? *at : ip->di.size;
    if (off + data.size() > MaxFileSize() || off + data.size() < off) {
      return Status(Code::kTooBig, "file too large");
    }
    // Holes to fill: their blocks (with the tree over them) from rgrps near the file's goal.
    ASSIGN_OR_RETURN(uint64_t need, WriteReserve(*ip, off, data.size()));
    RETURN_IF_ERROR(s.ReserveBlocks(ip->di.goal_data ? ip->di.goal_data : ip->no, need));
    RETURN_IF_ERROR(s.BeginTrans());
    Status st = WriteData(*ip, off, data.data(), data.size());
    if (!st.ok()) {
      // A partial allocation may have happened: keep metadata consistent and report it.
      WriteDinode(*ip);
      return st;
    }
    if (kill_priv && (ip->di.mode & (S_ISUID | S_ISGID))) {
      ip->di.mode &= ~S_ISUID;
      if (ip->di.mode & S_IXGRP) ip->di.mode &= ~S_ISGID;
    }
    TouchMC(*ip);
    return data.size();
  });
  RETURN_IF_ERROR(AfterModify());
  return r;
}

Status Engine::Fsync(InodeNo ino, bool datasync) {
  (void)ino;
  (void)datasync;
  fsyncs_++;
  return FlushLog();
}

Status Engine::SyncFs() { return FlushLog(); }

Status Engine::Fallocate(InodeNo ino, int mode, uint64_t off, uint64_t len) {
  RETURN_IF_ERROR(CheckWritable());
  if (len == 0) return Status::Invalid("zero length");
  const int known = kFallocKeepSize | kFallocPunchHole | kFallocZeroRange;
  if (mode & ~known) return Status::NotSupported("fallocate mode not supported");
  if ((mode & kFallocPunchHole) && !(mode & kFallocKeepSize)) {
    return Status::NotSupported("punch hole requires keep size");
  }
  const uint64_t end = off + len;
  if (end < off || end > MaxFileSize()) return Status(Code::kTooBig, "file too large");
  const uint64_t bs = geo_.bsize;
  if (!(mode & kFallocPunchHole)) RETURN_IF_ERROR(EnsureSpace(len / bs + 8));
  RETURN_IF_ERROR(RunOp<Status>([&](OpScope& s) -> Status {
    RETURN_IF_ERROR(s.Exclusive(ino));
    ASSIGN_OR_RETURN(InodeRef ip, GetInode(ino));
    if (!ip->is_reg())
      return ip->is_dir() ? Status::IsDir("is a directory")
                          : Status(Code::kNotSupported, "not a regular file");
    if (mode & kFallocPunchHole) {
      std::vector<uint64_t> rgrps;
      const uint64_t pend = std::min(end, ip->di.size);
      if (off < pend) RETURN_IF_ERROR(RgrpsOfRange(*ip, off / bs, (pend + bs - 1) / bs, &rgrps));
      RETURN_IF_ERROR(s.LockRgrps(rgrps));
    } else {
      ASSIGN_OR_RETURN(uint64_t need, WriteReserve(*ip, off, len));
      RETURN_IF_ERROR(s.ReserveBlocks(ip->di.goal_data ? ip->di.goal_data : ip->no, need));
    }
    RETURN_IF_ERROR(s.BeginTrans());
    auto& di = ip->di;
    if (mode & kFallocPunchHole) {
      uint64_t pend = std::min(end, di.size);
      if (off < pend) {
        if (di.height == 0) {
          std::memset(ip->buf->bytes() + format::kDinodeSize + off, 0, pend - off);
          WriteDinode(*ip);
        } else {
          uint64_t first_full = (off + bs - 1) / bs, end_full = pend / bs;
          if (pend == di.size) end_full = (pend + bs - 1) / bs;
          if (first_full < end_full) RETURN_IF_ERROR(TruncateBlocks(*ip, first_full, end_full));
          // Zero the partial edges that stay allocated.
          auto zero = [&](uint64_t a, uint64_t b) -> Status {
            while (a < b) {
              uint64_t lb = a / bs;
              uint64_t n = std::min(b, (lb + 1) * bs) - a;
              ASSIGN_OR_RETURN(uint64_t p, MapBlock(*ip, lb));
              if (p)
                RETURN_IF_ERROR(
                    ZeroDataRange(p, static_cast<uint32_t>(a % bs), static_cast<uint32_t>(n)));
              a += n;
            }
            return Status::Ok();
          };
          RETURN_IF_ERROR(zero(off, std::min(pend, first_full * bs)));
          if (end_full * bs < pend) RETURN_IF_ERROR(zero(std::max(off, end_full * bs), pend));
        }
      }
    } else {
      if (di.height == 0 && end <= geo_.max_stuffed) {
        if (mode & kFallocZeroRange) {
          uint64_t zend = std::min(end, di.size);
          if (off < zend) std::memset(ip->buf->bytes() + format::kDinodeSize + off, 0, zend - off);
        }
      } else {
        if (di.height == 0) RETURN_IF_ERROR(Unstuff(*ip));
        std::vector<NewExtent> fresh;
        Status alloc = AllocRange(*ip, off / bs, (end - 1) / bs - off / bs + 1, false, &fresh);
        // New blocks must read as zeros — also those a failed (ENOSPC) allocation kept.
        std::vector<uint8_t> zeros(std::min<uint64_t>(1 << 20, bs * 256), 0);
        for (const auto& e : fresh) {
          uint64_t bytes = e.n * bs, pos = 0;
          while (pos < bytes) {
            size_t n = static_cast<size_t>(std::min<uint64_t>(zeros.size(), bytes - pos));
            data_writes_++;
            RETURN_IF_ERROR(dev_->WriteAt(e.pblk * bs + pos, zeros.data(), n));
            pos += n;
          }
        }
        if (!alloc.ok()) return alloc;
        if (mode & kFallocZeroRange) {
          // Existing data in the range becomes zeros.
          const uint64_t zend = std::min(end, di.size);
          if (off < zend) {
            RETURN_IF_ERROR(
                WalkExtents(*ip, off, zend - off, [&](uint64_t, uint64_t at, uint64_t n) -> Status {
                  for (uint64_t z = 0; at != 0 && z < n;) {
                    size_t k = static_cast<size_t>(std::min<uint64_t>(zeros.size(), n - z));
                    RETURN_IF_ERROR(dev_->WriteAt(at + z, zeros.data(), k));
                    z += k;
                  }
                  return Status::Ok();
                }));
          }
        }
      }
      if (!(mode & kFallocKeepSize) && end > di.size) di.size = end;
    }
    TouchMC(*ip);
    return Status::Ok();
  }));
  return AfterModify();
}

Result<size_t> Engine::CopyFileRange(InodeNo in, uint64_t off_in, InodeNo out, uint64_t off_out,
                                     size_t len) {
  std::vector<uint8_t> buf(std::min<size_t>(len, 1 << 20));
  size_t copied = 0;
  if (naive_order_.load(std::memory_order_relaxed) && in != out) {
    // The naive policy: the source stays held (SH) while the target is taken (EX), waiting.
    ASSIGN_OR_RETURN(uint64_t hold, HoldInode(in, IoMode::kShared, false));
    while (copied < len) {
      size_t want = std::min(buf.size(), len - copied);
      auto n = ReadImpl(in, off_in + copied, std::span<uint8_t>(buf.data(), want), IoMode::kShared,
                        hold);
      if (!n.ok() || *n == 0) {
        (void)DropHold(hold);
        if (!n.ok()) return n.status();
        break;
      }
      auto w = Write(out, off_out + copied, std::span<const uint8_t>(buf.data(), *n), false);
      if (!w.ok()) {
        (void)DropHold(hold);
        return w.status();
      }
      copied += *w;
      if (*n < want) break;
    }
    (void)DropHold(hold);
    return copied;
  }
  while (copied < len) {
    size_t want = std::min(buf.size(), len - copied);
    ASSIGN_OR_RETURN(size_t n, Read(in, off_in + copied, std::span<uint8_t>(buf.data(), want)));
    if (n == 0) break;
    ASSIGN_OR_RETURN(size_t w,
                     Write(out, off_out + copied, std::span<const uint8_t>(buf.data(), n), false));
    copied += w;
    if (n < want) break;
  }
  return copied;
}

}  // namespace ugfs2::fs
