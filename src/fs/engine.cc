// Engine: mount and unmount, system files, the log flush (journal commit + in-place writeback),
// statfs accounting and the periodic flusher.
#include "fs/engine.h"

#include <sys/sysmacros.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <ctime>

#include "common/endian.h"
#include "common/log.h"
#include "journal/journal.h"

namespace ugfs2 {
bool Cred::InGroup(uint32_t g) const {
  if (g == gid) return true;
  return std::find(groups.begin(), groups.end(), g) != groups.end();
}

Result<std::unique_ptr<FileSystem>> FileSystem::Mount(std::unique_ptr<BlockDevice> dev,
                                                      const MountOptions& opts) {
  std::string where = dev->Describe();
  auto e = std::make_unique<fs::Engine>(std::move(dev), opts);
  Status st = e->DoMount();
  if (!st.ok()) return st.WithContext("cannot mount " + where);
  return std::unique_ptr<FileSystem>(std::move(e));
}

}  // namespace ugfs2

namespace ugfs2::fs {

Engine::Engine(std::unique_ptr<BlockDevice> dev, const MountOptions& opts)
    : dev_(std::move(dev)), opts_(opts) {}

Engine::~Engine() {
  {
    std::lock_guard<std::mutex> l(flusher_mu_);
    stop_flusher_ = true;
  }
  flusher_cv_.notify_all();
  if (flusher_.joinable()) flusher_.join();
  StopGlocks();
  // Without Unmount() nothing more is written: this is what a crash looks like.
}

Timespec Engine::Now() {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return {ts.tv_sec, static_cast<uint32_t>(ts.tv_nsec)};
}

namespace {
Result<InodeRef> MustLookup(Engine* e, Inode& dir, std::string_view name,
                            const std::function<Result<InodeRef>(Inode&, std::string_view)>& fn) {
  auto r = fn(dir, name);
  if (!r.ok()) {
    return Status::Corrupt("system file '" + std::string(name) +
                           "' missing or damaged: " + r.status().message());
  }
  return r;
}
}  // namespace

Status Engine::DoMount() {
  const uint64_t size = dev_->Size();
  if (size < format::kSuperblockOffset + 4096) {
    return Status::Invalid("device is too small to hold a GFS2 filesystem");
  }
  std::vector<uint8_t> sbbuf(4096);
  RETURN_IF_ERROR(dev_->ReadAt(format::kSuperblockOffset, sbbuf.data(), sbbuf.size()));
  auto sb = format::Superblock::Decode(sbbuf.data());
  if (!sb.ok()) return sb.status().WithContext("not a usable GFS2 volume");
  sb_ = *sb;
  if (sb_.lockproto == "lock_dlm") {
    if (opts_.lockproto == "lock_nolock") {
      // single node, on purpose
    } else if (opts_.lock_module != nullptr) {
      cluster_ = true;
      lm_ = opts_.lock_module;
    } else {
      return Status::Invalid("volume uses lock_dlm (lock table '" + sb_.locktable +
                             "'); mount it through the cluster (the node's corosync and lock "
                             "manager), or, to mount it on this node only, make sure no other "
                             "node has it mounted and pass -o lockproto=lock_nolock");
    }
  } else if (sb_.lockproto != "lock_nolock") {
    return Status::Invalid("unknown lock protocol '" + sb_.lockproto + "' in superblock");
  } else if (!opts_.lockproto.empty() && opts_.lockproto != "lock_nolock") {
    return Status::Invalid("lockproto=" + opts_.lockproto + " is not supported by this daemon");
  }
  geo_ = format::Geometry::For(sb_.bsize);
  dev_blocks_ = size / sb_.bsize;
  if (sb_.master_dir.addr >= dev_blocks_ || sb_.root_dir.addr >= dev_blocks_ ||
      sb_.master_dir.addr == 0 || sb_.root_dir.addr == 0) {
    return Status::Corrupt("superblock points outside the device (truncated image?)");
  }
  read_only_ = opts_.read_only;
  SetAtimePolicy(opts_.atime, opts_.nodiratime);
  cache_ = std::make_unique<MetaCache>(dev_.get(), sb_.bsize, opts_.meta_cache_bytes);
  alloc_ = std::make_unique<Allocator>(cache_.get(), geo_, dev_blocks_);
  log_ = std::make_unique<LogManager>(dev_.get(), cache_.get(), alloc_.get(), geo_.bsize);

  // A cluster mount takes its glocks from the start: the mount glock serializes it against the
  // other nodes' mounts, and its journal is the one whose glock it gets.
  glock::HolderId mount_holder = 0;
  if (cluster_) {
    StartGlocks();
    RETURN_IF_ERROR(ClusterMountBegin(&mount_holder));
  }
  RETURN_IF_ERROR(OpenJournal());
  alloc_->SetJournalRuns(journal_runs_);
  // Replay may have rewritten anything: start from a clean slate.
  {
    std::lock_guard<std::mutex> l(inodes_mu_);
    for (auto& [no, ip] : inodes_) {
      if (ip->buf) cache_->Unpin(ip->buf);
    }
    inodes_.clear();
  }
  master_.reset();
  jindex_.reset();
  per_node_.reset();
  journal_inode_.reset();
  cache_->DropClean();
  RETURN_IF_ERROR(LoadSystemFiles());
  RETURN_IF_ERROR(LoadRgrps());
  ASSIGN_OR_RETURN(InodeRef root, GetInode(sb_.root_dir.addr));
  if (!root->is_dir()) return Status::Corrupt("root inode is not a directory");
  // Only a node alone on the volume knows the rgrp totals are exact.
  const bool alone = !cluster_ || first_mounter_;
  if (!read_only_ && alone) RETURN_IF_ERROR(ResetStatfs());

  mounted_ = true;
  if (!read_only_) {
    // Nothing else runs yet: no glocks are needed for the mount-time changes.
    {
      std::unique_lock<std::shared_mutex> lk(log_->trans_mutex());
      StatfsDelta local;
      alloc_->WithStatfs([&](StatfsDelta& l, StatfsDelta&) { local = l; });
      RETURN_IF_ERROR(log_->journal()->MarkMounted({local.total, local.free, local.dinodes}));
      if (!cluster_) RETURN_IF_ERROR(FoldStatfs());
      // Unlinked inodes left by earlier mounts: only a node alone may free them (another node
      // could still have one open).
      if (alone) RETURN_IF_ERROR(ReclaimUnlinked());
      log_->Bump();
    }
    RETURN_IF_ERROR(FlushLog());
    flusher_ = std::thread([this] { FlusherThread(); });
  }
  if (cluster_) {
    // What the mount read without glocks (rgrps, the root directory) may change under other
    // nodes from now on: it is re-read under its glock at first use.
    alloc_->InvalidateAll();
    InvalidateInodeGlock(sb_.root_dir.addr);
    InvalidateInodeGlock(statfs_no_);  // the master statfs: each node folds into it
    RETURN_IF_ERROR(ClusterMountEnd(mount_holder));
  } else {
    StartGlocks();
  }
  if (cluster_) {
    // The rgrp glocks carry gfs2's rgrp LVB from now on (the mount-time changes above ran
    // without glocks; nobody else could see them).
    static_assert(glock::LockModule::kLvbSize == format::RgrpLvb::kSize);
    glock::LockModule* lm = lm_;
    alloc_->SetLvbHooks(
        [lm](uint64_t rgrp, uint8_t* out) {
          glock::LockModule::Lvb v;
          if (!lm->ReadLvb({glock::GlockType::kRgrp, rgrp}, &v)) return false;
          std::memcpy(out, v.data(), v.size());
          return true;
        },
        [lm](uint64_t rgrp, const uint8_t* value) {
          glock::LockModule::Lvb v;
          std::memcpy(v.data(), value, v.size());
          lm->WriteLvb({glock::GlockType::kRgrp, rgrp}, v);
        });
  }
  alloc_->SetEnforced(true);  // from now on, transactions touch only rgrps held here
  if (cluster_ && !read_only_) RETURN_IF_ERROR(FoldStatfsClustered());  // an earlier mount's
  LOG_INFO("mounted " << Describe());
  return Status::Ok();
}

Status Engine::OpenJournal() {
  ASSIGN_OR_RETURN(InodeRef master, GetInode(sb_.master_dir.addr));
  if (!master->is_dir()) return Status::Corrupt("master directory is not a directory");
  auto lookup = [this](Inode& d, std::string_view n) { return LookupChild(d, n, nullptr); };
  ASSIGN_OR_RETURN(InodeRef jindex, MustLookup(this, *master, "jindex", lookup));
  ASSIGN_OR_RETURN(InodeRef per_node, MustLookup(this, *master, "per_node", lookup));
  if (cluster_) {
    uint32_t journals = 0;
    while (LookupChild(*jindex, "journal" + std::to_string(journals), nullptr).ok()) journals++;
    ASSIGN_OR_RETURN(jid_, ClaimJournal(journals));
    alloc_->SetShare(jid_, journals);
  } else {
    jid_ = opts_.jid >= 0 ? static_cast<uint32_t>(opts_.jid) : 0;
  }
  std::string jname = "journal" + std::to_string(jid_);
  auto jr = LookupChild(*jindex, jname, nullptr);
  if (!jr.ok()) {
    return Status::Invalid("journal " + std::to_string(jid_) + " does not exist on this volume (" +
                           jr.status().message() + ")");
  }
  InodeRef jip = *jr;
  ASSIGN_OR_RETURN(InodeRef sc,
                   MustLookup(this, *per_node, "statfs_change" + std::to_string(jid_), lookup));
  ASSIGN_OR_RETURN(InodeRef qc,
                   MustLookup(this, *per_node, "quota_change" + std::to_string(jid_), lookup));
  std::unique_ptr<journal::Journal> own;
  // A single-node mount is the only user of the volume: recover every dirty journal (another
  // node's too, as gfs2's first mounter does), then open our own.
  for (uint32_t j = 0;; ++j) {
    std::string name = "journal" + std::to_string(j);
    auto other = LookupChild(*jindex, name, nullptr);
    if (!other.ok()) {
      if (other.status().IsNotFound()) break;
      return other.status().WithContext(name);
    }
    auto osc = LookupChild(*per_node, "statfs_change" + std::to_string(j), nullptr);
    auto oqc = LookupChild(*per_node, "quota_change" + std::to_string(j), nullptr);
    ASSIGN_OR_RETURN(auto blocks, journal::MapJournalBlocks(*dev_, geo_, (*other)->no));
    journals_.push_back(
        {j, (*other)->no, blocks, osc.ok() ? (*osc)->no : 0, oqc.ok() ? (*oqc)->no : 0});
    for (uint64_t b : blocks) {
      if (!journal_runs_.empty() && journal_runs_.back().second == b) {
        journal_runs_.back().second++;
      } else {
        journal_runs_.push_back({b, b + 1});
      }
    }
    ASSIGN_OR_RETURN(
        journal::Journal jrn,
        journal::Journal::Open(dev_.get(), geo_.bsize, j, (*other)->no, std::move(blocks),
                               osc.ok() ? (*osc)->no : 0, oqc.ok() ? (*oqc)->no : 0));
    RETURN_IF_ERROR(jrn.FindHead().WithContext(name));
    if (!jrn.IsClean() && cluster_ && !first_mounter_) {
      // Other nodes are mounted: they may have changed what this journal would rewrite. A dead
      // node's journal is replayed by the survivors when it dies; one found dirty here was not.
      if (j == jid_) {
        return Status::Busy(name +
                            " is dirty and other nodes have the volume mounted; replaying it "
                            "now could undo their changes. Unmount every node, then mount again "
                            "(the first node to mount replays every journal)");
      }
      LOG_INFO(name << " is in use by a mounted node (dirty)");
      continue;
    }
    if (!jrn.IsClean()) {
      if (read_only_) {
        return Status::Invalid(name +
                               " is dirty and needs replay, which a read-only mount "
                               "cannot do; mount read-write once (or run fsck.gfs2)");
      }
      LOG_WARN(name << " is dirty: replaying");
      ASSIGN_OR_RETURN(journal::ReplayStats rs, jrn.Replay());
      LOG_INFO(name << " replayed: " << rs.blocks_replayed << " blocks from " << rs.region_blocks
                    << " log blocks, " << rs.revokes << " revokes");
    }
    if (j == jid_) own = std::make_unique<journal::Journal>(std::move(jrn));
  }
  std::sort(journal_runs_.begin(), journal_runs_.end());
  (void)jip;
  (void)sc;
  (void)qc;
  if (!own) return Status::Invalid(jname + " not found");
  // At each commit's snapshot: this node's statfs delta goes into its statfs_change file.
  log_->Attach(std::move(own), [this] {
    journal::StatfsDelta local;
    alloc_->WithStatfs([&](StatfsDelta& l, StatfsDelta& on_disk) {
      if (l.total != on_disk.total || l.free != on_disk.free || l.dinodes != on_disk.dinodes) {
        format::StatfsChange{l.total, l.free, l.dinodes}.Encode(local_statfs_->buf->bytes() +
                                                                format::kDinodeSize);
        cache_->MarkDirty(local_statfs_->buf);
        on_disk = l;
      }
      local = {l.total, l.free, l.dinodes};
    });
    return local;
  });
  return Status::Ok();
}

Status Engine::LoadSystemFiles() {
  ASSIGN_OR_RETURN(master_, GetInode(sb_.master_dir.addr));
  auto lookup = [this](Inode& d, std::string_view n) { return LookupChild(d, n, nullptr); };
  ASSIGN_OR_RETURN(jindex_, MustLookup(this, *master_, "jindex", lookup));
  ASSIGN_OR_RETURN(per_node_, MustLookup(this, *master_, "per_node", lookup));
  ASSIGN_OR_RETURN(statfs_, MustLookup(this, *master_, "statfs", lookup));
  statfs_no_ = statfs_->no;
  ASSIGN_OR_RETURN(rindex_, MustLookup(this, *master_, "rindex", lookup));
  ASSIGN_OR_RETURN(journal_inode_,
                   MustLookup(this, *jindex_, "journal" + std::to_string(jid_), lookup));
  ASSIGN_OR_RETURN(local_statfs_,
                   MustLookup(this, *per_node_, "statfs_change" + std::to_string(jid_), lookup));
  if (statfs_->di.height != 0 || statfs_->di.size < format::kStatfsChangeSize ||
      local_statfs_->di.height != 0 || local_statfs_->di.size < format::kStatfsChangeSize) {
    return Status::Corrupt("statfs files damaged");
  }
  for (auto* ip : {&statfs_, &local_statfs_, &rindex_}) {
    if (!(*ip)->is_reg()) return Status::Corrupt("system file is not a regular file");
  }
  format::StatfsChange lc =
      format::StatfsChange::Decode(local_statfs_->buf->bytes() + format::kDinodeSize);
  alloc_->WithStatfs([&](StatfsDelta& local, StatfsDelta& on_disk) {
    local = {lc.total, lc.free, lc.dinodes};
    on_disk = local;
  });
  return Status::Ok();
}

Status Engine::LoadRgrps() {
  const uint64_t size = rindex_->di.size;
  // A bigger rindex than the device could hold is damage (Allocator::Load checks the rest).
  if (size == 0 || size / format::kRindexSize > dev_->Size() / (1 << 20) + 64) {
    return Status::Corrupt("rindex size " + std::to_string(size) +
                           " is not a plausible multiple of 96: volume damaged");
  }
  std::vector<uint8_t> raw(size);
  size_t done = 0;
  RETURN_IF_ERROR(ReadData(*rindex_, 0, raw.data(), raw.size(), &done));
  if (done != size) return Status::Corrupt("short rindex read");
  return alloc_->Load(raw, dev_->Size());
}

Status Engine::ResetStatfs() {
  // Only this node uses the volume: the rgrp headers are exact, so the master statfs becomes their
  // sum and every node's unfolded delta (ours and any crashed node's) is cleared. This also
  // undoes the double counting left when fsck.gfs2 fixed the master but kept the deltas.
  const Allocator::Totals sum = alloc_->Sum();
  if (sum.damaged) return Status::Ok();  // counts unknown: leave statfs alone
  const int64_t total = sum.total, free = sum.free, dinodes = sum.dinodes;
  std::unique_lock<std::shared_mutex> lk(log_->trans_mutex());
  uint8_t* m = statfs_->buf->bytes() + format::kDinodeSize;
  format::StatfsChange cur = format::StatfsChange::Decode(m);
  if (cur.total != total || cur.free != free || cur.dinodes != dinodes) {
    LOG_INFO("statfs: master (" << cur.total << "/" << cur.free << "/" << cur.dinodes
                                << ") set to the resource group totals (" << total << "/" << free
                                << "/" << dinodes << ")");
    format::StatfsChange{total, free, dinodes}.Encode(m);
    cache_->MarkDirty(statfs_->buf);
  }
  for (uint32_t j = 0;; ++j) {
    auto sc = LookupChild(*per_node_, "statfs_change" + std::to_string(j), nullptr);
    if (!sc.ok()) break;
    InodeRef ip = *sc;
    if (ip->di.height != 0 || ip->di.size < format::kStatfsChangeSize) continue;
    uint8_t* p = ip->buf->bytes() + format::kDinodeSize;
    format::StatfsChange d = format::StatfsChange::Decode(p);
    if (d.total != 0 || d.free != 0 || d.dinodes != 0) {
      format::StatfsChange{}.Encode(p);
      cache_->MarkDirty(ip->buf);
    }
  }
  alloc_->WithStatfs([](StatfsDelta& local, StatfsDelta& on_disk) { local = on_disk = {}; });
  log_->Bump();
  return Status::Ok();
}

Status Engine::FoldStatfs() {
  FoldStatfsInto(*statfs_);
  return Status::Ok();
}

void Engine::FoldStatfsInto(Inode& master_ip) {
  alloc_->WithStatfs([&](StatfsDelta& local, StatfsDelta& on_disk) {
    if (local.total == 0 && local.free == 0 && local.dinodes == 0 && on_disk.total == 0 &&
        on_disk.free == 0 && on_disk.dinodes == 0) {
      return;
    }
    uint8_t* m = master_ip.buf->bytes() + format::kDinodeSize;
    format::StatfsChange master = format::StatfsChange::Decode(m);
    master.total += local.total;
    master.free += local.free;
    master.dinodes += local.dinodes;
    master.Encode(m);
    cache_->MarkDirty(master_ip.buf);
    local = {};
    format::StatfsChange{}.Encode(local_statfs_->buf->bytes() + format::kDinodeSize);
    cache_->MarkDirty(local_statfs_->buf);
    on_disk = {};
  });
}

Status Engine::ReclaimUnlinked() {
  size_t n = 0;
  for (uint64_t blk : alloc_->UnlinkedDinodes()) {
    auto ip = GetInode(blk);
    if (!ip.ok()) {
      LOG_ERROR("unlinked inode " << blk << " unreadable: " << ip.status().message());
      continue;
    }
    if ((*ip)->di.nlink != 0) {
      LOG_WARN("inode " << blk << " marked unlinked but has links; keeping it");
      continue;
    }
    RETURN_IF_ERROR(Dealloc(**ip));
    n++;
  }
  if (n) LOG_INFO("reclaimed " << n << " unlinked inodes left by an earlier mount");
  return Status::Ok();
}

Status Engine::FlushLog() { return FlushLogUpTo(log_->mod_seq()); }

Status Engine::FlushLogUpTo(uint64_t upto) {
  if (read_only_ && !ro_draining_) return Status::Ok();
  return log_->FlushUpTo(upto);
}

void Engine::FlusherThread() {
  const auto interval = std::chrono::seconds(std::max<uint32_t>(opts_.commit_interval_s, 1));
  std::unique_lock<std::mutex> l(flusher_mu_);
  auto next_periodic = std::chrono::steady_clock::now() + interval;
  const auto retry_every = std::chrono::milliseconds(kDirectWriteTimeGranularityMs);
  auto next_retry = std::chrono::steady_clock::time_point::max();
  auto times_pending = [this] {
    std::lock_guard<std::mutex> p(pending_times_mu_);
    return !pending_times_.empty();
  };
  while (!stop_flusher_) {
    // Pending mtime updates of direct writes (TouchAfterDirectWrite) are retried on their own
    // period; a new one wakes the flusher to schedule it.
    const bool pending = times_pending();
    if (!pending) {
      next_retry = std::chrono::steady_clock::time_point::max();
    } else if (next_retry == std::chrono::steady_clock::time_point::max()) {
      next_retry = std::chrono::steady_clock::now() + retry_every;
    }
    flusher_cv_.wait_until(l, std::min(next_periodic, next_retry), [&] {
      return stop_flusher_ || flush_kick_.load() || (!pending && times_pending());
    });
    if (stop_flusher_) break;
    if (std::chrono::steady_clock::now() >= next_retry) {
      next_retry = std::chrono::steady_clock::time_point::max();
      l.unlock();
      RetryPendingDirectTimes();
      l.lock();
      continue;
    }
    if (flush_kick_.exchange(false)) {
      // AfterModify: enough is dirty for a commit in the background (the periodic one keeps
      // its own time, and folds statfs).
      l.unlock();
      Status st = FlushLog();
      if (!st.ok()) LOG_ERROR("background log flush: " << st.ToString());
      l.lock();
      continue;
    }
    next_periodic = std::chrono::steady_clock::now() + interval;
    l.unlock();
    if (log_->mod_seq() > log_->flushed_seq()) {
      if (cluster_) {
        Status fold = FoldStatfsClustered();
        if (!fold.ok()) LOG_ERROR("periodic statfs fold: " << fold.ToString());
      } else {
        std::shared_lock<std::shared_mutex> trans(log_->trans_mutex());
        (void)FoldStatfs();
        log_->Bump();
      }
      Status st = FlushLog();
      if (!st.ok()) LOG_ERROR("periodic log flush: " << st.ToString());
    }
    l.lock();
  }
}

Status Engine::CheckWritable() const {
  if (read_only_) return Status(Code::kReadOnly, "mounted read-only");
  if (log_->broken()) return Status::IoError("filesystem stopped after a log write error");
  return Status::Ok();
}

Status Engine::SetReadOnly(bool read_only) {
  std::lock_guard<std::mutex> g(remount_mu_);
  if (!mounted_) return Status::Invalid("not mounted");
  if (read_only == read_only_.load()) return Status::Ok();
  if (!read_only) {
    if (opts_.read_only) {
      return Status(Code::kReadOnly,
                    "mounted read-only from the start (device opened read-only): unmount and "
                    "mount it read-write");
    }
    if (log_->broken()) return Status::IoError("filesystem stopped after a log write error");
    std::unique_lock<std::shared_mutex> lk(log_->trans_mutex());
    StatfsDelta local;
    alloc_->WithStatfs([&](StatfsDelta& l, StatfsDelta&) { local = l; });
    RETURN_IF_ERROR(log_->journal()->MarkMounted({local.total, local.free, local.dinodes}));
    read_only_ = false;
    LOG_INFO("remounted " << dev_->Describe() << " read-write");
    return Status::Ok();
  }
  // Read-only: the kernel refuses a remount while files are open for writing, so only stray
  // metadata updates (atime, releases) can race; they check read_only_ inside their
  // transaction (OpScope::BeginTrans), which this exclusive section waits for.
  if (cluster_) RETURN_IF_ERROR(FoldStatfsClustered());
  {
    std::unique_lock<std::shared_mutex> lk(log_->trans_mutex());
    read_only_ = true;
    if (!cluster_) RETURN_IF_ERROR(FoldStatfs());
    log_->Bump();
  }
  // FlushLog skips read-only mounts unless it is this last commit.
  ro_draining_ = true;
  Status st = FlushLog();
  ro_draining_ = false;
  if (st.ok()) st = dev_->Flush();
  if (st.ok()) st = log_->journal()->WriteUnmountHeader({});
  if (st.ok()) st = dev_->Flush();
  if (!st.ok()) {
    log_->MarkBroken();
    LOG_ERROR("remount read-only of " << dev_->Describe() << " failed: " << st.ToString());
    return st;
  }
  LOG_INFO("remounted " << dev_->Describe() << " read-only (journal clean)");
  return Status::Ok();
}

Status Engine::Unmount() {
  if (!mounted_) return Status::Ok();
  {
    std::lock_guard<std::mutex> l(flusher_mu_);
    stop_flusher_ = true;
  }
  flusher_cv_.notify_all();
  if (flusher_.joinable()) flusher_.join();
  // Every request has ended: the kept glocks of the I/O policies are gone, so a pending mtime
  // update of a direct write can be had now (on a cluster, unless another node holds the glock).
  if (!read_only_) RetryPendingDirectTimes();
  // A cluster node folds its statfs delta under the master's glock while glocks still run.
  if (cluster_) {
    Status st = FoldStatfsClustered();
    if (!st.ok()) LOG_ERROR("folding statfs at unmount: " << st.ToString());
  }
  StopGlocks();  // no more ticks or trims; every operation has finished (the caller drained them)
  alloc_->SetEnforced(false);  // what follows runs alone, as the mount did
  Status result;
  if (!read_only_ && !log_->broken()) {
    {
      std::unique_lock<std::shared_mutex> lk(log_->trans_mutex());
      // Inodes still open at unmount whose last link is gone.
      std::vector<InodeRef> orphans;
      {
        std::lock_guard<std::mutex> l(inodes_mu_);
        for (auto& [no, ip] : inodes_) {
          if (ip->di.nlink == 0 && !ip->damaged) orphans.push_back(ip);
        }
      }
      // On a cluster these are inodes another node had open at their last close here: that
      // node frees them at its own last close (iopen glocks), so they stay marked unlinked.
      if (cluster_) orphans.clear();
      for (auto& ip : orphans) {
        Status st = Dealloc(*ip);
        if (!st.ok()) LOG_ERROR("deallocating inode " << ip->no << ": " << st.ToString());
      }
      if (!cluster_) result = FoldStatfs();
      log_->Bump();
    }
    if (result.ok()) result = FlushLog();
    // Everything is in place once the in-place writes are durable.
    if (result.ok()) result = dev_->Flush();
    if (result.ok()) {
      result = log_->journal()->WriteUnmountHeader({});
    }
  }
  if (result.ok()) result = dev_->Flush();
  mounted_ = false;
  // The journal is clean and everything in place: its glock (and the live glock) may go; the
  // daemon then leaves the lockspace.
  if (cluster_) ClusterUnmount();
  dev_->ReleaseClaim();  // nothing more is written: the next mount may start now
  if (result.ok()) {
    LOG_INFO("unmounted " << dev_->Describe() << " cleanly");
  } else {
    LOG_ERROR("unmount of " << dev_->Describe() << " failed: " << result.ToString());
  }
  return result;
}

std::string Engine::Describe() const {
  return dev_->Describe() + " (GFS2, " + std::to_string(geo_.bsize) + "-byte blocks, " +
         sb_.lockproto + (sb_.locktable.empty() ? "" : " " + sb_.locktable) + ", journal" +
         std::to_string(jid_) + (read_only_ ? ", read-only" : "") + ")";
}

Attr Engine::MakeAttr(const Inode& ip) const {
  Attr a;
  const auto& di = ip.di;
  a.ino = ip.no;
  a.generation = di.generation;
  a.mode = di.mode;
  a.nlink = di.nlink;
  a.uid = di.uid;
  a.gid = di.gid;
  a.rdev = makedev(di.major, di.minor);
  a.size = di.size;
  a.blocks512 = di.blocks * (geo_.bsize / 512);
  a.blksize = geo_.bsize;
  a.atime = {static_cast<int64_t>(di.atime), di.atime_nsec};
  a.mtime = {static_cast<int64_t>(di.mtime), di.mtime_nsec};
  a.ctime = {static_cast<int64_t>(di.ctime), di.ctime_nsec};
  return a;
}

Result<StatFsInfo> Engine::StatFs() {
  const Allocator::Totals t = alloc_->Sum();
  StatFsInfo s;
  s.bsize = geo_.bsize;
  s.blocks = static_cast<uint64_t>(t.total);
  s.bfree = static_cast<uint64_t>(t.free);
  s.bavail = s.bfree;
  s.files = static_cast<uint64_t>(t.dinodes + t.free);
  s.ffree = s.bfree;
  s.namemax = format::kMaxNameLen;
  return s;
}

FsCounters Engine::Counters() const {
  FsCounters c;
  c.log_flushes = log_ ? log_->flushes() : 0;
  c.fsyncs = fsyncs_;
  c.meta_reads = cache_ ? cache_->reads() : 0;
  c.meta_writes = log_ ? log_->meta_writes() : 0;
  c.meta_write_requests = log_ ? log_->in_place_requests() : 0;
  c.data_reads = data_reads_;
  c.data_writes = data_writes_;
  c.cached_meta_blocks = cache_ ? cache_->size() : 0;
  return c;
}

}  // namespace ugfs2::fs
