#include "revoker.h"

#include <algorithm>
#include <cerrno>
#include <utility>

#include "common/log.h"

namespace ugfs2::fusefs {
namespace {
constexpr uint64_t kPage = 4096;
uint64_t FirstPage(uint64_t off) { return off / kPage; }
uint64_t EndPage(uint64_t off, uint64_t len) {
  return (off + std::max<uint64_t>(len, 1) + kPage - 1) / kPage;
}
}  // namespace

Revoker::Revoker(NotifyBackend* backend, const InodeTable* inodes, Options options)
    : backend_(backend), inodes_(inodes), options_(options) {
  coordinator_ = std::thread([this] { Coordinator(); });
  notifier_ = std::thread([this] { Notifier(); });
  for (unsigned i = 0; i < std::max(1u, options_.replay_threads); ++i) {
    replayers_.emplace_back([this] { Replay(); });
  }
}

Revoker::~Revoker() { Shutdown(); }

void Revoker::Shutdown() {
  {
    std::lock_guard<std::mutex> l(mu_);
    if (stop_) return;
    stop_ = true;
  }
  cv_.notify_all();
  if (coordinator_.joinable()) coordinator_.join();
  // The coordinator answered every queued job. Thaw what is left and serve the parked requests.
  std::vector<Rerun> reruns;
  {
    std::lock_guard<std::mutex> l(mu_);
    helpers_stop_ = true;
    for (auto& [ino, st] : states_) {
      for (Parked& p : st.parked) reruns.push_back(std::move(p.rerun));
    }
    states_.clear();
    active_.store(0);
  }
  Dispatch(std::move(reruns));
  notifier_cv_.notify_all();
  if (notifier_.joinable()) notifier_.join();
  replay_cv_.notify_all();
  for (std::thread& t : replayers_) {
    if (t.joinable()) t.join();
  }
}

bool Revoker::AdmitSlow(InodeNo ino, Kind kind, uint64_t off, uint64_t len,
                        const std::function<Rerun()>& make_rerun) {
  std::lock_guard<std::mutex> l(mu_);
  if (kind == Kind::kWritePage) {
    ++launders_;  // progress of the notify in flight, whatever inode it is for
    cv_.notify_all();
    return false;
  }
  auto it = states_.find(ino);
  if (it == states_.end()) return false;
  InodeState& st = it->second;
  const uint64_t first = FirstPage(off);
  const uint64_t end = EndPage(off, len);
  ++st.recv_seq;
  if (st.phase == Phase::kRevoking) {
    for (uint64_t p = first; p < end; ++p) st.recorded.insert(p);
    return false;
  }
  Parked parked;
  parked.seq = st.recv_seq;
  parked.kind = kind;
  parked.first = first;
  parked.end = end;
  parked.rerun = make_rerun();
  st.parked.push_back(std::move(parked));
  ++stats_.parked;
  return true;
}

void Revoker::Revoke(InodeNo ino, std::function<void()> done) {
  std::optional<KernelIno> kino = inodes_->KnownKernelIno(ino);
  {
    std::unique_lock<std::mutex> l(mu_);
    if (!kino || stop_) {
      ++stats_.skipped;
      l.unlock();
      done();
      return;
    }
    if (states_.count(ino) != 0) {
      // The glock layer prepares a glock at most once until its thaw; a second one means the
      // hooks misbehaved. Do the work again rather than release over cached pages.
      LOG_ERROR("revoke of inode " << ino << " while it is already being revoked");
    } else {
      states_.emplace(ino, InodeState{});
      // seq_cst, and before phase 1 starts: a handler that still reads 0 received its READ
      // before this store, so the folio it fills existed before phase 1's scan starts.
      active_.fetch_add(1);
    }
    jobs_.push_back(Job{ino, *kino, std::move(done), std::chrono::steady_clock::now()});
  }
  cv_.notify_all();
}

void Revoker::Thaw(InodeNo ino) {
  std::vector<Rerun> reruns;
  {
    std::lock_guard<std::mutex> l(mu_);
    auto it = states_.find(ino);
    if (it == states_.end()) return;  // skipped (unknown inode) or after Shutdown
    for (Parked& p : it->second.parked) reruns.push_back(std::move(p.rerun));
    states_.erase(it);
    active_.fetch_sub(1);
  }
  Dispatch(std::move(reruns));
}

void Revoker::Dispatch(std::vector<Rerun> reruns) {
  if (reruns.empty()) return;
  {
    std::lock_guard<std::mutex> l(mu_);
    for (Rerun& r : reruns) replay_.push_back(std::move(r));
  }
  replay_cv_.notify_all();
}

void Revoker::Replay() {
  std::unique_lock<std::mutex> l(mu_);
  for (;;) {
    replay_cv_.wait(l, [&] { return !replay_.empty() || helpers_stop_; });
    if (replay_.empty()) return;
    Rerun r = std::move(replay_.front());
    replay_.pop_front();
    l.unlock();
    r();
    l.lock();
  }
}

void Revoker::Coordinator() {
  std::unique_lock<std::mutex> l(mu_);
  for (;;) {
    cv_.wait(l, [&] { return !jobs_.empty() || stop_; });
    if (jobs_.empty()) break;
    Job job = std::move(jobs_.front());
    jobs_.pop_front();
    l.unlock();
    RunRevoke(job);
    const auto us = std::chrono::duration_cast<std::chrono::microseconds>(
                        std::chrono::steady_clock::now() - job.start)
                        .count();
    job.done();  // the glock may demote now; the inode stays frozen until Thaw
    l.lock();
    ++stats_.revokes;
    stats_.total_revoke_us += static_cast<uint64_t>(us);
    stats_.max_revoke_us = std::max<uint64_t>(stats_.max_revoke_us, static_cast<uint64_t>(us));
  }
}

void Revoker::RunRevoke(const Job& job) {
  // Phase 1: drop everything; requests are served meanwhile and their pages recorded.
  Notify(job.ino, job.kino, 0, 0, /*frozen=*/false, 0, nullptr);
  std::set<uint64_t> work;
  {
    std::lock_guard<std::mutex> l(mu_);
    InodeState& st = states_[job.ino];
    st.phase = Phase::kFrozen;
    work.swap(st.recorded);
  }
  // Phase 2: the recorded pages again, frozen, until a round answers nothing.
  while (!work.empty()) {
    uint64_t seq_floor = 0;
    {
      std::lock_guard<std::mutex> l(mu_);
      const InodeState& st = states_[job.ino];
      // A parked READ's folio is locked until its answer: skip its pages (it fills them only
      // after the thaw, under the glock held again).
      for (const Parked& p : st.parked) {
        if (p.kind != Kind::kRead) continue;
        for (uint64_t pg = p.first; pg < p.end; ++pg) work.erase(pg);
      }
      seq_floor = st.recv_seq;
    }
    std::set<uint64_t> redo;
    auto it = work.begin();
    while (it != work.end()) {
      const uint64_t a = *it;
      uint64_t b = a + 1;
      ++it;
      while (it != work.end() && *it == b) {
        ++b;
        ++it;
      }
      Notify(job.ino, job.kino, a, b, /*frozen=*/true, seq_floor, &redo);
    }
    work.swap(redo);
    if (!work.empty()) {
      std::lock_guard<std::mutex> l(mu_);
      stats_.redo_pages += work.size();
    }
  }
}

void Revoker::Notify(InodeNo ino, KernelIno kino, uint64_t first, uint64_t end, bool frozen,
                     uint64_t seq_floor, std::set<uint64_t>* redo) {
  using Clock = std::chrono::steady_clock;
  std::unique_lock<std::mutex> l(mu_);
  call_ = NotifyCall{kino, static_cast<int64_t>(first * kPage),
                     end == 0 ? 0 : static_cast<int64_t>((end - first) * kPage)};
  call_done_ = false;
  ++stats_.notifies;
  notifier_cv_.notify_all();
  const Clock::time_point start = Clock::now();
  bool warned = false;
  uint64_t launders = launders_;
  Clock::time_point last_progress = start;
  while (!call_done_) {
    cv_.wait_for(l, options_.stall);
    if (call_done_) break;
    const Clock::time_point now = Clock::now();
    if (launders_ != launders) {
      launders = launders_;
      last_progress = now;
    } else if (frozen && now - last_progress >= options_.stall) {
      // Stalled: the kernel waits for a folio that a parked request holds. Answer the parked
      // requests inside the range (with current data: the glock is still held) and redo them.
      std::vector<Rerun> reruns;
      InodeState& st = states_[ino];
      for (auto p = st.parked.begin(); p != st.parked.end();) {
        const bool overlaps = p->first < end && first < p->end;
        const bool eligible = p->kind == Kind::kRead ? p->seq > seq_floor : true;
        if (overlaps && eligible) {
          for (uint64_t pg = p->first; pg < p->end; ++pg) redo->insert(pg);
          reruns.push_back(std::move(p->rerun));
          p = st.parked.erase(p);
        } else {
          ++p;
        }
      }
      stats_.stall_answers += reruns.size();
      last_progress = now;
      if (!reruns.empty()) {
        l.unlock();
        Dispatch(std::move(reruns));
        l.lock();
      }
    }
    if (!warned && now - start >= options_.warn_after) {
      warned = true;
      LOG_ERROR(
          "revoke of inode "
          << ino << ": notify_inval_inode of pages [" << first << ", " << end << ") blocked for "
          << std::chrono::duration_cast<std::chrono::milliseconds>(options_.warn_after).count()
          << " ms; " << states_[ino].parked.size() << " requests parked on it");
    }
  }
}

void Revoker::Notifier() {
  std::unique_lock<std::mutex> l(mu_);
  for (;;) {
    notifier_cv_.wait(l, [&] { return call_.has_value() || helpers_stop_; });
    if (!call_) return;
    NotifyCall c = *call_;
    call_.reset();
    l.unlock();
    const int rc = backend_->InvalInode(c.kino, c.off, c.len);
    if (rc != 0 && rc != -ENOENT) {
      LOG_WARN("revoke: notify_inval_inode(" << c.kino << ", " << c.off << ", " << c.len
                                             << ") = " << rc);
    }
    l.lock();
    call_done_ = true;
    cv_.notify_all();
  }
}

Revoker::Stats Revoker::stats() const {
  std::lock_guard<std::mutex> l(mu_);
  return stats_;
}

size_t Revoker::parked_now() const {
  std::lock_guard<std::mutex> l(mu_);
  size_t n = 0;
  for (const auto& [ino, st] : states_) n += st.parked.size();
  return n;
}

}  // namespace ugfs2::fusefs
