#include "io_policy.h"

#include <algorithm>

#include "common/log.h"

namespace ugfs2::fusefs {

namespace {

constexpr size_t kPage = 4096;
// A request of up to kWindow (the largest the kernel sends: max_read/max_write 1 MiB) is one
// round: one device request per extent. A smaller first window (it was 256 KiB, growing) cost a
// 1 MiB O_DIRECT read or write three device requests in a row, for a retry point no waiter
// needs (a waiter waits for at most one window either way).
constexpr size_t kWindow = 1024 * 1024;

// Whether a glock kept in `held` serves a request needing `want` (docs/deadlocks.md): EX serves
// everything; the other modes only themselves, and EXn (shared among local page fills) SH too.
bool Serves(IoMode held, IoMode want) {
  if (held == IoMode::kExclusive || held == want) return true;
  return held == IoMode::kUpdate && want == IoMode::kShared;
}

}  // namespace

const char* PolicyName(Policy p) {
  switch (p) {
    case Policy::kMerged:
      return "merged";
    case Policy::kProposal2021:
      return "proposal-2021";
    case Policy::kNaive:
      return "naive";
  }
  return "?";
}

std::optional<Policy> ParsePolicy(std::string_view name) {
  if (name == "merged") return Policy::kMerged;
  if (name == "proposal-2021" || name == "proposal") return Policy::kProposal2021;
  if (name == "naive") return Policy::kNaive;
  return std::nullopt;
}

IoPolicy::IoPolicy(FileSystem* fs, Policy policy, std::chrono::milliseconds linger)
    : fs_(fs), linger_(std::max(linger, std::chrono::milliseconds(1))), policy_(policy) {
  fs_->SetNaiveLockOrder(policy == Policy::kNaive);
  reaper_ = std::thread([this] { Reaper(); });
  // A waiter behind a kept glock wakes the reaper at once (proposal-2021 yields such glocks;
  // a doomed or lingered-out one goes too): a process's GETATTR after its buffered write used
  // to wait up to a reaper period (10 ms) for the process's own kept EX.
  fs_->SetRetainedContentionListener([this] {
    kick_.store(true);
    cv_.notify_all();
  });
}

IoPolicy::~IoPolicy() {
  fs_->SetRetainedContentionListener(nullptr);
  Stop();
  if (reaper_.joinable()) reaper_.join();
}

Policy IoPolicy::policy() const {
  std::lock_guard l(mu_);
  return stopped_ ? Policy::kMerged : policy_;
}

void IoPolicy::Set(Policy policy) {
  std::vector<uint64_t> drop;
  {
    std::lock_guard l(mu_);
    if (stopped_) return;
    policy_ = policy;
    for (auto& [pid, p] : procs_) DoomLocked(&p, &drop);
  }
  fs_->SetNaiveLockOrder(policy == Policy::kNaive);
  LOG_INFO("I/O policy: " << PolicyName(policy));
  Drop(drop);
}

void IoPolicy::Stop() {
  std::vector<uint64_t> drop;
  {
    std::lock_guard l(mu_);
    stopped_ = true;
    policy_ = Policy::kMerged;
    for (auto& [pid, p] : procs_) DoomLocked(&p, &drop);
  }
  cv_.notify_all();
  fs_->SetNaiveLockOrder(false);
  Drop(drop);
}

void IoPolicy::DoomLocked(Proc* p, std::vector<uint64_t>* drop) {
  for (auto& k : p->kept) k.doomed = true;
  DropDoomedLocked(p, drop);
}

void IoPolicy::DropDoomedLocked(Proc* p, std::vector<uint64_t>* drop) {
  for (auto it = p->kept.begin(); it != p->kept.end();) {
    if (it->doomed && it->users == 0) {
      drop->push_back(it->hold);
      it = p->kept.erase(it);
    } else {
      ++it;
    }
  }
}

void IoPolicy::UnuseLocked(int pid, uint64_t hold, std::vector<uint64_t>* drop) {
  Proc& p = procs_[pid];
  for (auto it = p.kept.begin(); it != p.kept.end(); ++it) {
    if (it->hold != hold) continue;
    it->users--;
    it->last_used = std::chrono::steady_clock::now();
    if (it->users == 0 && (it->doomed || stopped_ || policy_ == Policy::kMerged)) {
      drop->push_back(it->hold);
      p.kept.erase(it);
    }
    return;
  }
}

void IoPolicy::Drop(const std::vector<uint64_t>& holds) {
  if (holds.empty()) return;
  {
    std::lock_guard l(mu_);
    stats_.kept_now -= std::min<uint64_t>(stats_.kept_now, holds.size());
  }
  for (uint64_t h : holds) {
    fs_->MarkHoldRetained(h, false);
    Status st = fs_->DropHold(h);
    if (!st.ok()) LOG_WARN("I/O policy: dropping a kept glock: " << st.ToString());
  }
}

Result<size_t> IoPolicy::Run(int pid, InodeNo ino, IoMode mode, bool write, size_t len,
                             const IoFn& io) {
  Policy policy;
  {
    std::lock_guard l(mu_);
    policy = stopped_ ? Policy::kMerged : policy_;
  }
  if (policy == Policy::kMerged || pid <= 0) return RunMerged(ino, mode, write, len, io);
  return RunKept(pid, ino, mode, write, len, io, policy);
}

Result<size_t> IoPolicy::RunMerged(InodeNo ino, IoMode mode, bool write, size_t len,
                                   const IoFn& io) {
  // One round under a holder of the callee's own: the common case.
  if (len <= kWindow) return io(0, mode, 0, len);
  ASSIGN_OR_RETURN(uint64_t hold, fs_->HoldInode(ino, mode, false));
  size_t done = 0;
  size_t window = kWindow;
  for (;;) {
    const size_t n = std::min(window, len - done);
    Result<size_t> r = io(hold, mode, done, n);
    if (!r.ok()) {
      (void)fs_->DropHold(hold);
      if (write && mode == IoMode::kDeferred && r.status().code() == Code::kTryAgain) {
        // A direct write that needs allocation: the rest as an EX write (gfs2's fallback).
        {
          std::lock_guard l(mu_);
          stats_.fallbacks++;
        }
        ASSIGN_OR_RETURN(size_t rest, io(0, IoMode::kExclusive, done, len - done));
        return done + rest;
      }
      return r.status();
    }
    done += *r;
    if (*r < n || done >= len) break;  // EOF, or all done
    // Progress: the window grows; one page after a round without any.
    window = *r > 0 ? std::min(window * 2, kWindow) : kPage;
    if (fs_->HoldContended(hold)) {
      // Someone waits for this glock: let them in, then resume at the byte reached.
      (void)fs_->DropHold(hold);
      fs_->NoteIoRetry(ino);
      {
        std::lock_guard l(mu_);
        stats_.retries++;
      }
      ASSIGN_OR_RETURN(hold, fs_->HoldInode(ino, mode, false));
    }
  }
  (void)fs_->DropHold(hold);
  return done;
}

Result<size_t> IoPolicy::RunKept(int pid, InodeNo ino, IoMode mode, bool write, size_t len,
                                 const IoFn& io, Policy policy) {
  uint64_t hold = 0;
  std::vector<uint64_t> drop;
  bool others = false;
  {
    std::lock_guard l(mu_);
    Proc& p = procs_[pid];
    for (auto& k : p.kept) {
      if (k.ino != ino || k.doomed || k.lent || !Serves(k.mode, mode)) continue;
      if (fs_->HoldContended(k.hold)) {
        // Someone waits for it: this request does not reuse it but queues again, behind the
        // waiter (gfs2 grants no new holder while a demote is pending). proposal-2021 counts a
        // retry; naive waits for it keeping the process's other glocks.
        k.doomed = true;
        if (policy == Policy::kProposal2021) stats_.retries++;
        continue;
      }
      k.users++;
      hold = k.hold;
      break;
    }
    if (hold == 0) {
      for (const auto& k : p.kept) others |= !k.doomed;
      p.waiting++;
    }
    DropDoomedLocked(&p, &drop);
  }
  Drop(drop);
  drop.clear();
  if (hold == 0) {
    Result<uint64_t> got = Status(Code::kLockConflict, "");
    if (others && policy == Policy::kProposal2021) {
      // An inner acquisition: tried; on failure the process unwinds its outer glocks.
      got = fs_->HoldInode(ino, mode, true);
      if (!got.ok() && got.status().code() == Code::kLockConflict) {
        {
          std::lock_guard l(mu_);
          stats_.unwinds++;
          stats_.retries++;
          DoomLocked(&procs_[pid], &drop);
        }
        Drop(drop);
        drop.clear();
        fs_->NoteIoRetry(ino);
        got = fs_->HoldInode(ino, mode, false);
      }
    } else {
      if (others) {
        std::lock_guard l(mu_);
        stats_.waits++;
      }
      got = fs_->HoldInode(ino, mode, false);  // naive: waits with the outer glocks kept
    }
    std::lock_guard l(mu_);
    Proc& p = procs_[pid];
    p.waiting--;
    RestartLingerLocked(&p);
    if (!got.ok()) return got.status();
    hold = *got;
    p.kept.push_back(Kept{ino, mode, hold, 1, false, std::chrono::steady_clock::now()});
    stats_.kept++;
    stats_.kept_now++;
  }
  fs_->MarkHoldRetained(hold, true);
  Result<size_t> r = io(hold, mode, 0, len);
  if (!r.ok() && write && mode == IoMode::kDeferred && r.status().code() == Code::kTryAgain) {
    // The direct write needs EX: this process's own DF glock on the inode goes first.
    {
      std::lock_guard l(mu_);
      stats_.fallbacks++;
      UnuseLocked(pid, hold, &drop);
      for (auto& k : procs_[pid].kept) {
        if (k.ino == ino) k.doomed = true;
      }
      DropDoomedLocked(&procs_[pid], &drop);
    }
    Drop(drop);
    return io(0, IoMode::kExclusive, 0, len);
  }
  {
    std::lock_guard l(mu_);
    UnuseLocked(pid, hold, &drop);
  }
  Drop(drop);
  return r;
}

bool IoPolicy::UnderKept(int pid, InodeNo ino, const std::function<void(uint64_t hold)>& read) {
  if (pid <= 0) return false;
  uint64_t hold = 0;
  {
    std::lock_guard l(mu_);
    auto p = procs_.find(pid);
    if (p == procs_.end()) return false;
    for (auto& k : p->second.kept) {
      // Not one a request runs under: that request may be changing the inode.
      if (k.ino != ino || k.doomed || k.lent || k.users > 0) continue;
      k.users = 1;  // the reaper and Set leave it alone meanwhile
      k.lent = true;
      hold = k.hold;
      break;
    }
    if (hold == 0) return false;
    stats_.lent++;
  }
  read(hold);
  std::vector<uint64_t> drop;
  {
    std::lock_guard l(mu_);
    Proc& p = procs_[pid];
    for (auto it = p.kept.begin(); it != p.kept.end(); ++it) {
      if (it->hold != hold) continue;
      // Not a use of the glock by the process's I/O: its linger goes on from its last request.
      it->users = 0;
      it->lent = false;
      // What the reaper skipped meanwhile: proposal-2021 yields a glock someone waits for.
      const bool yield = policy_ == Policy::kProposal2021 && fs_->HoldContended(it->hold);
      if (it->doomed || stopped_ || policy_ == Policy::kMerged || yield) {
        drop.push_back(it->hold);
        p.kept.erase(it);
      }
      break;
    }
  }
  Drop(drop);
  return true;
}

void IoPolicy::Reaper() {
  std::unique_lock l(mu_);
  while (!stopped_) {
    // Periodic (lingers; a kick that came just before this wait), or kicked by a waiter.
    cv_.wait_for(
        l, std::clamp(linger_ / 2, std::chrono::milliseconds(1), std::chrono::milliseconds(50)),
        [this] { return stopped_ || kick_.exchange(false); });
    if (stopped_) break;
    const auto now = std::chrono::steady_clock::now();
    std::vector<uint64_t> drop;
    for (auto it = procs_.begin(); it != procs_.end();) {
      Proc& p = it->second;
      for (auto k = p.kept.begin(); k != p.kept.end();) {
        // Unused kept glocks end after the linger, unless the process waits for a glock in
        // another request or has one parked (naive's deadlock: a blocked task keeps its glocks).
        // proposal-2021 also ends one another waits for at once, even then: its unwinding never
        // waits for its own kept glocks (one can be granted past the process's own waiter, FIFO
        // admitting compatible holders).
        const bool yield = policy_ == Policy::kProposal2021 && fs_->HoldContended(k->hold);
        const bool idle = !p.BlockedBeyond(k->ino) && now - k->last_used >= linger_;
        if (k->users == 0 && (k->doomed || yield || idle)) {
          drop.push_back(k->hold);
          k = p.kept.erase(k);
        } else {
          ++k;
        }
      }
      if (p.kept.empty() && p.waiting == 0 && p.parked.empty()) {
        it = procs_.erase(it);
      } else {
        ++it;
      }
    }
    if (drop.empty()) continue;
    l.unlock();
    Drop(drop);
    l.lock();
  }
}

void IoPolicy::RestartLingerLocked(Proc* p) {
  const auto now = std::chrono::steady_clock::now();
  for (auto& k : p->kept) k.last_used = now;
}

void IoPolicy::Parked(int pid, InodeNo ino) {
  if (pid <= 0) return;
  std::lock_guard l(mu_);
  Proc& p = procs_[pid];
  if (++p.parked[ino] == 0) p.parked.erase(ino);
  stats_.parked++;
}

void IoPolicy::Unparked(int pid, InodeNo ino) {
  if (pid <= 0) return;
  std::lock_guard l(mu_);
  Proc& p = procs_[pid];
  if (--p.parked[ino] == 0) p.parked.erase(ino);
  RestartLingerLocked(&p);
}

IoPolicy::Stats IoPolicy::stats() const {
  std::lock_guard l(mu_);
  return stats_;
}

std::vector<std::pair<std::string, uint64_t>> IoPolicy::Counters() const {
  const Stats s = stats();
  return {{"io_retries", s.retries}, {"io_unwinds", s.unwinds},   {"io_fallbacks", s.fallbacks},
          {"io_kept", s.kept},       {"io_kept_now", s.kept_now}, {"io_naive_waits", s.waits},
          {"io_parked", s.parked},   {"io_lent", s.lent}};
}

}  // namespace ugfs2::fusefs
