// The engine's side of the glock layer: the per-type hooks the GlockRunner calls around state
// changes, the worker that ticks the table, and the forced-demote control.
//
// Inode glock (type 2, number = dinode address) covers the in-core inode and every metadata
// buffer owned by it (MetaCache owner = the address):
//   sync        flush the log up to the inode's newest change (its blocks then go in place;
//               file data is written to the device directly and needs nothing more)
//   invalidate  forget the owned clean buffers and the in-core dinode (kept as a stale shell
//               while the file is open), and tell the kernel-cache bridge to drop the inode's
//               pages and attributes
//   refresh     re-read a stale dinode before the next holder is granted
// Rgrp glock (type 3, number = rgrp header address) covers the rgrp's header and bitmaps
// (MetaCache owner = that address; see allocator.h for how operations hold it):
//   sync        flush the log if any of its buffers changed since they were written in place
//   invalidate  unpin and forget its buffers; the rgrp is stale until refreshed
//   refresh     re-read and re-check the header and bitmaps
// Other types have no cached objects yet.
#include <charconv>
#include <chrono>

#include "common/log.h"
#include "fs/engine.h"
#include "fs/op_scope.h"

namespace ugfs2::fs {

using glock::GlockName;
using glock::GlockType;

void Engine::StartGlocks() {
  hooks_ = std::make_unique<Hooks>(this);
  glocks_ = std::make_unique<glock::GlockRunner>(lm_, hooks_.get());
  glock::GlockRunner* runner = glocks_.get();
  // A deadline earlier than the one the worker sleeps until: wake it to look again. (A remote
  // demote that came while holders were queued waits for the minimum hold time; if they all
  // left before that, nothing but the worker's Tick runs it, and the worker, asleep for its
  // period of 1 s when it last looked, kept it waiting up to 1 s instead of up to 200 ms.)
  runner->SetDeadlineListener([this] {
    {
      std::lock_guard<std::mutex> l(glock_worker_mu_);
      glock_worker_kick_ = true;
    }
    glock_worker_cv_.notify_all();
  });
  lm_->SetBlockingCallback(
      [runner](const GlockName& name, glock::State wanted) { runner->RemoteDemote(name, wanted); });
  glock_worker_ = std::thread([this] { GlockWorker(); });
  if (cluster_) {
    sync_worker_ = std::thread([this] { SyncWorker(); });
    glock::LockModule* lm = lm_;
    log_->SetProvisionalGate([runner] { return runner->ProvisionalMark(); },
                             [runner, lm](uint64_t mark) {
                               lm->Expedite();  // the requests may wait to be batched
                               for (int waited = 10;; waited += 10) {
                                 const glock::Time deadline =
                                     glock::GlockRunner::SteadyNow() + 10'000 * glock::kMillisecond;
                                 if (runner->WaitProvisional(mark, deadline)) return;
                                 // Ends when the lock manager answers, or fails (a fence).
                                 LOG_WARN("log flush: waited " << waited
                                                               << " s for the lock manager to "
                                                                  "confirm provisional grants");
                               }
                             });
  }
}

void Engine::RunSyncJob(std::function<void()> job) {
  {
    std::lock_guard<std::mutex> l(sync_mu_);
    if (!stop_sync_worker_) {
      sync_jobs_.push_back(std::move(job));
      sync_cv_.notify_one();
      return;
    }
  }
  job();  // no worker (any more): the caller's thread
}

void Engine::SyncWorker() {
  std::unique_lock<std::mutex> l(sync_mu_);
  for (;;) {
    sync_cv_.wait(l, [this] { return stop_sync_worker_ || !sync_jobs_.empty(); });
    if (sync_jobs_.empty()) return;  // stopping, and nothing is left
    std::function<void()> job = std::move(sync_jobs_.front());
    sync_jobs_.pop_front();
    l.unlock();
    job();
    l.lock();
  }
}

void Engine::StopGlocks() {
  // Once only: after the unmount the lock module may be gone (the daemon leaves the cluster
  // before it destroys the core), so the destructor must not touch it again.
  if (!glocks_ || glocks_stopped_) return;
  glocks_stopped_ = true;
  // No more remote demotes: a request that arrives now waits until this node leaves the
  // lockspace (which releases every lock), after the unmount.
  lm_->SetBlockingCallback(nullptr);
  glocks_->SetDeadlineListener(nullptr);  // the worker ends below
  {
    std::lock_guard<std::mutex> l(glock_worker_mu_);
    stop_glock_worker_ = true;
  }
  glock_worker_cv_.notify_all();
  if (glock_worker_.joinable()) glock_worker_.join();
  {
    std::lock_guard<std::mutex> l(sync_mu_);
    stop_sync_worker_ = true;  // the worker runs what is queued, then ends; later syncs run inline
  }
  sync_cv_.notify_all();
  if (sync_worker_.joinable()) sync_worker_.join();
}

void Engine::GlockWorker() {
  using std::chrono::nanoseconds;
  std::unique_lock<std::mutex> l(glock_worker_mu_);
  while (!stop_glock_worker_) {
    // Not under glock_worker_mu_ (the deadline listener takes it under the runner's mutex). A
    // deadline that comes after this look sets the kick, so the wait below does not miss it.
    glock_worker_kick_ = false;
    l.unlock();
    const std::optional<glock::Time> next = glocks_->NextDeadline();
    l.lock();
    auto wait = std::chrono::milliseconds(kGlockTrimIntervalMs);
    if (next) {
      const glock::Time now = glock::GlockRunner::SteadyNow();
      wait = std::min(wait, std::chrono::duration_cast<std::chrono::milliseconds>(
                                nanoseconds(std::max<glock::Time>(*next - now, 0))) +
                                std::chrono::milliseconds(1));
    }
    glock_worker_cv_.wait_for(l, wait, [this] { return stop_glock_worker_ || glock_worker_kick_; });
    if (stop_glock_worker_) break;
    l.unlock();
    glocks_->Tick();
    // Idle glocks beyond the budget go back to UN, oldest first (gfs2's glock shrinker).
    const size_t lru = glocks_->LruSize();
    if (lru > kGlockLruBudget) glocks_->ShrinkLru(lru - kGlockLruBudget);
    l.lock();
  }
}

Status Engine::SyncInodeGlock(InodeNo no) {
  // The demote admits no holders any more, so nothing read under this glock can be answered
  // from here on: drop the kernel's attributes (and wait out its names) before the lock goes.
  // The pages went in the prepare hook (Revoke), while requests were still served.
  if (kernel_cache_ != nullptr) {
    kernel_cache_->DropAttrsNow(no);
    kernel_cache_->ExpireNames(no);
  }
  uint64_t upto = 0;
  {
    std::lock_guard<std::mutex> l(inodes_mu_);
    auto it = inodes_.find(no);
    // Not cached: its newest change is unknown here (the inode was evicted): flush everything.
    upto = it != inodes_.end() ? it->second->last_mod.load() : log_->mod_seq();
  }
  if (cluster_) return SyncAndRetire(upto);
  if (upto == 0 || log_->flushed_seq() >= upto) return Status::Ok();
  return FlushLogUpTo(upto);
}

Status Engine::SyncAndRetire(uint64_t upto) {
  // Another node may change what this glock covers as soon as it goes: the newest commit of
  // our journal must then not be replayable any more (a replay after our death would rewrite
  // those blocks with what they held before). gfs2 gets the same from the revokes its glock sync
  // logs.
  if (read_only_ || log_->journal() == nullptr) return Status::Ok();
  return log_->FlushAndRetire(upto);
}

Status Engine::SyncRgrpGlock(uint64_t rgrp) {
  // Every change to the rgrp was made while some operation held its glock, inside a
  // transaction, and dirtied its buffers at once: clean buffers mean nothing to write. The last
  // holder is gone, but a transaction that allocated from the rgrp under another operation's
  // holder may still be open and not yet have bumped the mod sequence (a flush up to the current
  // one would then miss it): wait for the open ones, then flush.
  if (!alloc_->RgrpDirty(rgrp)) return cluster_ ? SyncAndRetire(0) : Status::Ok();
  { std::unique_lock<std::shared_mutex> quiesce(log_->trans_mutex()); }
  return cluster_ ? SyncAndRetire(log_->mod_seq()) : FlushLog();
}

void Engine::InvalidateInodeGlock(InodeNo no) {
  BufferRef dinode_buf;
  {
    std::lock_guard<std::mutex> l(inodes_mu_);
    auto it = inodes_.find(no);
    if (it != inodes_.end()) {
      Inode& ip = *it->second;
      dinode_buf = std::move(ip.buf);
      ip.buf.reset();
      ip.stale = true;
      // Nobody holds the glock, so nobody uses the inode; an open file keeps its shell (the
      // open count) until it is refreshed or released.
      if (ip.opens == 0) inodes_.erase(it);
    }
  }
  if (dinode_buf) cache_->Unpin(dinode_buf);
  size_t kept = 0;
  cache_->DropOwned(no, &kept);
  if (kept != 0) {
    LOG_ERROR("glock 2/" << std::hex << no << std::dec << ": " << kept
                         << " dirty or pinned buffers survived the sync; kept");
  }
  invalidations_++;
  if (kernel_cache_ != nullptr) kernel_cache_->InvalidateData(no, 0, 0);
}

Status Engine::RefreshInodeGlock(InodeNo no) {
  bool stale = false;
  {
    std::lock_guard<std::mutex> l(inodes_mu_);
    auto it = inodes_.find(no);
    stale = it != inodes_.end() && it->second->stale;
  }
  if (!stale) return Status::Ok();  // nothing cached: the first GetInode reads it
  auto r = GetInode(no);            // re-reads a stale shell in place
  return r.ok() ? Status::Ok() : r.status();
}

// ---- the cluster mount protocol ---------------------------------------------------------------

namespace {
constexpr auto kMountLockWait = std::chrono::seconds(120);

// Acquire with a bounded wait: a cluster that does not answer (no quorum, a node that holds the
// mount lock and hangs) fails the mount with a message instead of hanging it.
Result<glock::HolderId> AcquireBounded(glock::GlockRunner* r, const GlockName& name,
                                       glock::State state, uint32_t flags, const char* what) {
  ASSIGN_OR_RETURN(glock::HolderId id, r->Acquire(name, state, flags | glock::kAsync));
  const glock::Time deadline =
      glock::GlockRunner::SteadyNow() +
      std::chrono::duration_cast<std::chrono::nanoseconds>(kMountLockWait).count();
  Status st = r->Wait(id, deadline);
  if (st.code() == Code::kTimedOut) {
    return Status(Code::kTimedOut,
                  std::string("timed out after ") + std::to_string(kMountLockWait.count()) +
                      " s waiting for the " + what +
                      " (is the cluster quorate? is another node stuck mounting?)");
  }
  if (!st.ok()) return st;
  return id;
}
}  // namespace

Status Engine::ClusterMountBegin(glock::HolderId* mount_holder) {
  ASSIGN_OR_RETURN(*mount_holder,
                   AcquireBounded(glocks_.get(), {GlockType::kNondisk, glock::kMountLock},
                                  glock::State::kExclusive, 0, "mount lock"));
  // Every mounted node holds the live glock SH: EX is granted only to a node alone.
  auto live = glocks_->Acquire({GlockType::kNondisk, glock::kLiveLock}, glock::State::kExclusive,
                               glock::kTry);
  if (live.ok()) {
    first_mounter_ = true;
    RETURN_IF_ERROR(glocks_->Release(*live));
  } else if (live.status().code() != Code::kLockConflict) {
    return live.status().WithContext("live lock");
  }
  LOG_INFO(
      "cluster mount: " << (first_mounter_ ? "first node to mount" : "other nodes are mounted"));
  return Status::Ok();
}

Result<uint32_t> Engine::ClaimJournal(uint32_t journals) {
  auto try_one = [&](uint32_t j) -> Result<bool> {
    auto h = glocks_->Acquire({GlockType::kJournal, j}, glock::State::kExclusive, glock::kTry);
    if (!h.ok()) {
      if (h.status().code() == Code::kLockConflict) return false;
      return h.status();
    }
    Status claim = dev_->ClaimJournal(j);
    if (!claim.ok()) {
      (void)glocks_->Release(*h);
      return claim;
    }
    journal_holder_ = *h;
    return true;
  };
  if (opts_.jid >= 0) {
    const uint32_t j = static_cast<uint32_t>(opts_.jid);
    if (j >= journals) {
      return Status::Invalid("journal " + std::to_string(j) +
                             " does not exist on this volume (it has " + std::to_string(journals) +
                             ")");
    }
    ASSIGN_OR_RETURN(bool got, try_one(j));
    if (!got) return Status::Busy("journal " + std::to_string(j) + " is in use by another node");
    return j;
  }
  for (uint32_t j = 0; j < journals; ++j) {
    auto got = try_one(j);
    if (got.ok() && *got) return j;
    if (!got.ok() && got.status().code() != Code::kBusy) return got.status();
  }
  return Status::Busy("all " + std::to_string(journals) +
                      " journals of this volume are in use by other nodes: add one with "
                      "gfs2_jadd (one journal per node)");
}

Status Engine::ClusterMountEnd(glock::HolderId mount_holder) {
  // kExact: the first mounter's cached EX is converted to SH (other nodes' SH requests would
  // otherwise wait for a demote that this holder blocks).
  ASSIGN_OR_RETURN(live_holder_,
                   AcquireBounded(glocks_.get(), {GlockType::kNondisk, glock::kLiveLock},
                                  glock::State::kShared, glock::kExact, "live lock"));
  return glocks_->Release(mount_holder);
}

void Engine::ClusterUnmount() {
  for (glock::HolderId* h : {&journal_holder_, &live_holder_}) {
    if (*h == 0) continue;
    Status st = glocks_->Release(*h);
    if (!st.ok()) LOG_ERROR("releasing a mount glock: " << st.ToString());
    *h = 0;
  }
}

Status Engine::FoldStatfsClustered() {
  bool any = false;
  alloc_->WithStatfs(
      [&](StatfsDelta& l, StatfsDelta&) { any = l.total != 0 || l.free != 0 || l.dinodes != 0; });
  if (!any || read_only_ || log_->broken()) return Status::Ok();
  const InodeNo master_no = statfs_no_;
  return RunOp<Status>([&](OpScope& s) -> Status {
    RETURN_IF_ERROR(s.Exclusive(master_no));
    ASSIGN_OR_RETURN(InodeRef m, GetInode(master_no));
    if (m->di.height != 0 || m->di.size < format::kStatfsChangeSize) {
      return Status::Corrupt("master statfs file damaged");
    }
    RETURN_IF_ERROR(s.BeginTrans());
    FoldStatfsInto(*m);
    return Status::Ok();
  });
}

namespace {

Result<GlockName> ParseGlockName(std::string_view s) {
  const size_t slash = s.find('/');
  if (slash == std::string_view::npos || slash == 0 || slash + 1 == s.size()) {
    return Status::Invalid("glock name '" + std::string(s) + "' is not TYPE/HEXNUMBER");
  }
  unsigned type = 0;
  uint64_t number = 0;
  auto [p1, e1] = std::from_chars(s.data(), s.data() + slash, type, 10);
  auto [p2, e2] = std::from_chars(s.data() + slash + 1, s.data() + s.size(), number, 16);
  if (e1 != std::errc() || p1 != s.data() + slash || e2 != std::errc() ||
      p2 != s.data() + s.size() || type < 1 || type > 9) {
    return Status::Invalid("glock name '" + std::string(s) + "' is not TYPE/HEXNUMBER");
  }
  return GlockName{static_cast<GlockType>(type), number};
}

}  // namespace

Status Engine::DemoteGlock(std::string_view name) {
  if (!glocks_) return Status::Invalid("not mounted");
  ASSIGN_OR_RETURN(GlockName n, ParseGlockName(name));
  bool known = false;
  for (const auto& g : glocks_->Names()) known |= g == n;
  if (!known) return Status::NotFound("no glock " + n.ToString() + " on this node");
  glocks_->RemoteDemote(n, glock::State::kUnlocked);
  forced_demotes_++;
  return Status::Ok();
}

size_t Engine::DemoteAllGlocks() {
  if (!glocks_) return 0;
  size_t n = 0;
  for (const auto& g : glocks_->Names()) {
    glocks_->RemoteDemote(g, glock::State::kUnlocked);
    n++;
  }
  forced_demotes_ += n;
  return n;
}

std::string Engine::DumpGlocks() const { return glocks_ ? glocks_->Dump() : std::string(); }

}  // namespace ugfs2::fs
