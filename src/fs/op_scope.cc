#include "fs/op_scope.h"

#include <algorithm>

#include "common/log.h"

namespace ugfs2::fs {

namespace {
constexpr glock::Time kNaiveSlice = 100 * glock::kMillisecond;
}  // namespace

using glock::GlockName;
using glock::State;

bool OpScope::Holds(const GlockName& name, State state) const {
  for (const auto& h : held_) {
    if (h.name == name && glock::Covers(h.state, state)) return true;
  }
  return false;
}

Status OpScope::Acquire(const GlockName& name, State state, uint32_t flags) {
  ASSIGN_OR_RETURN(glock::HolderId id, e_->glocks_->Acquire(name, state, flags));
  held_.push_back({name, state, flags & ~glock::kTry, id});
  if (name.type == glock::GlockType::kRgrp) e_->alloc_->Hold(name.number);
  return Status::Ok();
}

Status OpScope::LockRgrps(const std::vector<uint64_t>& rgrps) {
  std::vector<uint64_t> sorted = rgrps;
  std::sort(sorted.begin(), sorted.end());
  sorted.erase(std::unique(sorted.begin(), sorted.end()), sorted.end());
  for (uint64_t rg : sorted) {
    if (rg == 0) continue;
    RETURN_IF_ERROR(Lock({glock::GlockType::kRgrp, rg}, State::kExclusive, glock::kNodeScope));
  }
  return Status::Ok();
}

Status OpScope::ReserveBlocks(uint64_t goal, uint64_t blocks) {
  if (blocks == 0) return Status::Ok();
  auto picked = e_->alloc_->ReserveRgrps(goal, blocks);
  std::vector<uint64_t> rgrps;
  for (const auto& [rg, n] : picked) {
    reserved_.emplace_back(rg, n);
    rgrps.push_back(rg);
  }
  // The goal's rgrp first when it is in order; the rest ascending.
  return LockRgrps(rgrps);
}

Status OpScope::Lock(const GlockName& name, State state, uint32_t flags) {
  if (in_trans()) {
    LOG_ERROR("glock " << name.ToString() << " requested inside a transaction");
    return Status(Code::kDeadlock, "glock requested inside a transaction");
  }
  if (Holds(name, state)) return Status::Ok();
  bool in_order = true;
  bool held_weaker = false;
  for (const auto& h : held_) {
    if (h.name == name) held_weaker = true;  // SH held, EX wanted: only a restart can upgrade
    if (!(h.name < name)) in_order = false;
  }
  if (held_weaker) {
    refused_.push_back({name, state, flags});
    return Status(Code::kLockConflict, "glock upgrade: " + name.ToString());
  }
  if (in_order) return Acquire(name, state, flags);
  // The naive I/O policy waits in whatever order the operation asks (docs/deadlocks.md), but in
  // slices: once the policy is switched away (or stops at unmount) the operation backs off and
  // restarts in order, which is what breaks a naive deadlock of this kind.
  // The holder stays queued all along (a dump taken at any moment shows it waiting).
  if (e_->naive_order_.load(std::memory_order_relaxed)) {
    ASSIGN_OR_RETURN(glock::HolderId id, e_->glocks_->Acquire(name, state, flags | glock::kAsync));
    while (e_->naive_order_.load(std::memory_order_relaxed) &&
           !e_->glocks_->WaitUntil(id, glock::GlockRunner::SteadyNow() + kNaiveSlice)) {
    }
    // Granted, failed, or (no longer naive) withdrawn with kTimedOut.
    Status st = e_->glocks_->Wait(id, glock::GlockRunner::SteadyNow());
    if (st.ok()) {
      held_.push_back({name, state, flags, id});
      if (name.type == glock::GlockType::kRgrp) e_->alloc_->Hold(name.number);
      return Status::Ok();
    }
    if (st.code() != Code::kTimedOut) return st;
  }
  Status st = Acquire(name, state, flags | glock::kTry);
  if (st.code() == Code::kLockConflict) {
    refused_.push_back({name, state, flags});
    return Status(Code::kLockConflict, "glock " + name.ToString() + " busy (out of order)");
  }
  return st;
}

Result<bool> OpScope::TryLock(const GlockName& name, State state, uint32_t flags) {
  if (in_trans()) {
    LOG_ERROR("glock " << name.ToString() << " tried inside a transaction");
    return Status(Code::kDeadlock, "glock requested inside a transaction");
  }
  if (Holds(name, state)) return true;
  auto id = e_->glocks_->Acquire(name, state, flags | glock::kTry);
  if (!id.ok()) {
    if (id.status().code() == Code::kLockConflict) return false;
    return id.status();
  }
  held_.push_back({name, state, flags, *id, /*optional=*/true});
  return true;
}

glock::HolderId OpScope::Detach(const GlockName& name) {
  for (auto it = held_.begin(); it != held_.end(); ++it) {
    if (it->name == name) {
      const glock::HolderId id = it->id;
      held_.erase(it);
      return id;
    }
  }
  return 0;
}

Status OpScope::BeginTrans() {
  if (in_trans()) return Status::Ok();
  trans_ = std::shared_lock<std::shared_mutex>(e_->log_->trans_mutex());
  Status st = e_->CheckWritable();
  if (!st.ok()) trans_.unlock();
  return st;
}

void OpScope::EndTrans() {
  if (!in_trans()) return;
  const uint64_t seq = e_->log_->Bump();
  {
    std::lock_guard<std::mutex> l(e_->inodes_mu_);
    for (const auto& h : held_) {
      if (h.name.type != glock::GlockType::kInode || h.state != State::kExclusive) continue;
      auto it = e_->inodes_.find(h.name.number);
      if (it != e_->inodes_.end()) it->second->last_mod = seq;
    }
  }
  for (const auto& ip : modified_) ip->last_mod = seq;
  modified_.clear();
  trans_.unlock();
}

void OpScope::ReleaseAll() {
  EndTrans();
  for (const auto& [rg, n] : reserved_) e_->alloc_->Unreserve(rg, n);
  reserved_.clear();
  std::vector<Held> adopted;
  while (!held_.empty()) {
    Held h = held_.back();
    held_.pop_back();
    if (h.adopted) {
      adopted.insert(adopted.begin(), h);
      continue;
    }
    if (h.name.type == glock::GlockType::kRgrp) e_->alloc_->Unhold(h.name.number);
    Status st = e_->glocks_->Release(h.id);
    if (!st.ok()) LOG_ERROR("releasing glock " << h.name.ToString() << ": " << st.ToString());
  }
  held_ = std::move(adopted);
}

Status OpScope::Adopt(const GlockName& name, glock::HolderId id) {
  auto h = e_->glocks_->Holder(id);
  if (!h || !h->granted || h->name != name) {
    return Status::Invalid("hold " + std::to_string(id) + " is not a granted holder of " +
                           name.ToString());
  }
  Held held{name, h->state, h->flags, id};
  held.adopted = true;
  held_.push_back(held);
  return Status::Ok();
}

Status OpScope::Restart() {
  // Everything held and everything refused, the strongest state per glock, in ascending order.
  std::vector<Want> all = std::move(refused_);
  refused_.clear();
  for (const auto& h : held_) {
    if (!h.optional && !h.adopted) all.push_back({h.name, h.state, h.flags});
  }
  std::sort(all.begin(), all.end(), [](const Want& a, const Want& b) {
    return a.name < b.name ||
           (a.name == b.name && a.state == State::kExclusive && b.state != State::kExclusive);
  });
  all.erase(std::unique(all.begin(), all.end(),
                        [](const Want& a, const Want& b) { return a.name == b.name; }),
            all.end());
  ReleaseAll();
  if (++restarts_ % 1000 == 0) {
    LOG_WARN("operation restarted " << restarts_ << " times for glocks out of order");
  }
  for (const auto& w : all) RETURN_IF_ERROR(Acquire(w.name, w.state, w.flags));
  return Status::Ok();
}

}  // namespace ugfs2::fs
