#include "fs/log_manager.h"

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "common/log.h"

namespace ugfs2::fs {

void LogManager::Attach(std::unique_ptr<journal::Journal> journal, Prepare prepare) {
  journal_ = std::move(journal);
  prepare_ = std::move(prepare);
  max_blocks_per_commit_ = journal_ ? journal_->MaxBlocksPerCommit() : 0;
}

void LogManager::SetProvisionalGate(std::function<uint64_t()> mark,
                                    std::function<void(uint64_t)> wait) {
  provisional_mark_ = std::move(mark);
  provisional_wait_ = std::move(wait);
}

Status LogManager::FlushUpTo(uint64_t upto) {
  if (!journal_) return Status::Ok();
  if (flushed_seq_.load() >= upto) return Status::Ok();
  {
    std::lock_guard<std::mutex> bl(batch_mu_);
    flush_waiters_++;
  }
  batch_cv_.notify_all();
  std::unique_lock<std::mutex> fl(flush_mu_);
  {
    std::lock_guard<std::mutex> bl(batch_mu_);
    flush_waiters_--;
  }
  // Group commit: the flush we waited for may already have covered everything we need.
  if (flushed_seq_.load() >= upto) return Status::Ok();
  if (broken_) return Status::IoError("log is broken after an earlier I/O error");
  // Batching (as jbd2 does): when the last commits served several callers at once, give the
  // others a moment to finish the operation they are in and join this commit, bounded by half a
  // commit time; the wait ends early once twice as many callers as last time are queued.
  const uint32_t last_batch = last_batch_.load();
  if (last_batch > 1) {
    auto hold =
        std::chrono::microseconds(std::min<uint64_t>(last_commit_us_.load() / 2, kMaxBatchWaitUs));
    std::unique_lock<std::mutex> bl(batch_mu_);
    batch_cv_.wait_for(bl, hold,
                       [&] { return static_cast<uint32_t>(flush_waiters_) + 1 >= 2 * last_batch; });
  }
  const auto commit_start = std::chrono::steady_clock::now();
  uint32_t batch;
  {
    std::lock_guard<std::mutex> bl(batch_mu_);
    batch = static_cast<uint32_t>(flush_waiters_) + 1;
  }
  std::vector<DirtySnapshot> snap;
  std::vector<uint64_t> revokes;
  journal::StatfsDelta local;
  uint64_t target;
  uint64_t provisional = 0;
  {
    std::unique_lock<std::shared_mutex> lk(trans_mu_);  // no transaction is half done now
    target = mod_seq_.load();  // everything up to here is in this batch (group commit)
    local = prepare_();
    snap = cache_->SnapshotDirty();
    revokes = alloc_->BeginCommit();
    if (provisional_mark_) provisional = provisional_mark_();
  }
  // Creates of this snapshot may run under glocks granted provisionally: their grants must be
  // real before anything of them is written (no other node may see the blocks before).
  if (provisional != 0 && !snap.empty()) provisional_wait_(provisional);
  Status st;
  if (snap.empty() && revokes.empty()) {
    st = dev_->Flush();  // data-only changes
  } else {
    std::sort(snap.begin(), snap.end(), [](const DirtySnapshot& a, const DirtySnapshot& b) {
      return a.buf->blkno < b.buf->blkno;
    });
    std::vector<journal::LogBlock> blocks;
    blocks.reserve(snap.size());
    for (const auto& s : snap) blocks.push_back({s.buf->blkno, s.image.data()});
    st = journal_->Commit(blocks, revokes, local);
    if (st.ok()) {
      // The log is durable: write the blocks in place (made durable by the next commit's flush).
      st = WriteInPlace(snap);
      meta_writes_ += snap.size();
    }
  }
  {
    std::vector<uint64_t> committed;
    committed.reserve(snap.size());
    for (const auto& s : snap) committed.push_back(s.buf->blkno);
    alloc_->EndCommit(st.ok(), committed);
  }
  if (!st.ok()) {
    broken_ = true;
    LOG_ERROR("log flush failed: " << st.ToString() << "; refusing further writes");
    return st;
  }
  flushes_++;
  flushed_seq_ = std::max(flushed_seq_.load(), target);
  last_batch_ = batch;
  last_commit_us_ = static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::microseconds>(
                                              std::chrono::steady_clock::now() - commit_start)
                                              .count());
  return Status::Ok();
}

Status LogManager::WriteInPlace(const std::vector<DirtySnapshot>& snap) {
  // `snap` is sorted by block number: blocks that are neighbours on the device go out as one
  // request (new dinodes of a burst of creates sit side by side), through one aligned buffer.
  std::unique_ptr<uint8_t, decltype(&std::free)> run_buf(nullptr, &std::free);
  size_t i = 0;
  while (i < snap.size()) {
    size_t n = 1;
    while (i + n < snap.size() && n < kMaxInPlaceRun &&
           snap[i + n].buf->blkno == snap[i].buf->blkno + n) {
      n++;
    }
    const uint64_t off = snap[i].buf->blkno * bsize_;
    Status st;
    if (n == 1) {
      st = dev_->WriteAt(off, snap[i].image.data(), bsize_);
    } else {
      if (!run_buf) {
        run_buf.reset(static_cast<uint8_t*>(std::aligned_alloc(4096, kMaxInPlaceRun * bsize_)));
        if (!run_buf) return Status::NoSpace("in-place write buffer");
      }
      for (size_t k = 0; k < n; ++k) {
        std::memcpy(run_buf.get() + k * bsize_, snap[i + k].image.data(), bsize_);
      }
      st = dev_->WriteAt(off, run_buf.get(), n * bsize_);
    }
    if (!st.ok()) return st;
    for (size_t k = 0; k < n; ++k) cache_->MarkWritten(snap[i + k]);
    in_place_requests_++;
    i += n;
  }
  return Status::Ok();
}

Status LogManager::FlushAndRetire(uint64_t upto) {
  RETURN_IF_ERROR(FlushUpTo(upto));
  if (!journal_) return Status::Ok();
  std::unique_lock<std::mutex> fl(flush_mu_);
  if (broken_) return Status::IoError("log is broken after an earlier I/O error");
  if (!journal_->Replayable()) return Status::Ok();
  Status st = journal_->Retire();
  if (!st.ok()) {
    broken_ = true;
    LOG_ERROR("log retire failed: " << st.ToString() << "; refusing further writes");
    return st;
  }
  retires_++;
  return Status::Ok();
}

}  // namespace ugfs2::fs
