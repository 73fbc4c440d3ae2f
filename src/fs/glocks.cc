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

namespace ugfs2::fs {

using glock::GlockName;
using glock::GlockType;

void Engine::StartGlocks() {
  hooks_ = std::make_unique<Hooks>(this);
  glocks_ = std::make_unique<glock::GlockRunner>(&lock_module_, hooks_.get());
  alloc_->SetEnforced(true);  // from now on, transactions touch only rgrps held here
  glock_worker_ = std::thread([this] { GlockWorker(); });
}

void Engine::StopGlocks() {
  if (!glocks_) return;
  {
    std::lock_guard<std::mutex> l(glock_worker_mu_);
    stop_glock_worker_ = true;
  }
  glock_worker_cv_.notify_all();
  if (glock_worker_.joinable()) glock_worker_.join();
}

void Engine::GlockWorker() {
  using std::chrono::nanoseconds;
  std::unique_lock<std::mutex> l(glock_worker_mu_);
  while (!stop_glock_worker_) {
    auto wait = std::chrono::milliseconds(kGlockTrimIntervalMs);
    if (auto next = glocks_->NextDeadline()) {
      const glock::Time now = glock::GlockRunner::SteadyNow();
      wait = std::min(wait, std::chrono::duration_cast<std::chrono::milliseconds>(
                                nanoseconds(std::max<glock::Time>(*next - now, 0))) +
                                std::chrono::milliseconds(1));
    }
    glock_worker_cv_.wait_for(l, wait, [this] { return stop_glock_worker_; });
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
  uint64_t upto = 0;
  {
    std::lock_guard<std::mutex> l(inodes_mu_);
    auto it = inodes_.find(no);
    // Not cached: its newest change is unknown here (the inode was evicted): flush everything.
    upto = it != inodes_.end() ? it->second->last_mod.load() : log_->mod_seq();
  }
  if (upto == 0 || log_->flushed_seq() >= upto) return Status::Ok();
  return FlushLogUpTo(upto);
}

Status Engine::SyncRgrpGlock(uint64_t rgrp) {
  // Every change to the rgrp was made while some operation held its glock, inside a
  // transaction. The last holder is gone, but a transaction that allocated from the rgrp under
  // another operation's holder may still be open: wait for the open ones (they bump the mod
  // sequence as they end), then flush if any of its buffers is dirty.
  { std::unique_lock<std::shared_mutex> quiesce(log_->trans_mutex()); }
  if (!alloc_->RgrpDirty(rgrp)) return Status::Ok();
  return FlushLog();
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
