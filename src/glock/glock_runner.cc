#include "glock/glock_runner.h"

#include <chrono>
#include <utility>

#include "common/log.h"

namespace ugfs2::glock {

void NoLockModule::Request(const GlockName& name, State from, State to, uint32_t flags,
                           ReplyFn reply) {
  (void)name;
  (void)from;
  (void)flags;
  LmReply r;
  r.state = to;
  reply(r);
}

void NoHooks::Sync(const GlockName& name, DoneFn done) {
  (void)name;
  done(Status::Ok());
}

void NoHooks::Invalidate(const GlockName& name, std::function<void()> done) {
  (void)name;
  done();
}

void NoHooks::Refresh(const GlockName& name, DoneFn done) {
  (void)name;
  done(Status::Ok());
}

Time GlockRunner::SteadyNow() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

GlockRunner::GlockRunner(LockModule* lm, GlockHooks* hooks, Options options, Clock clock)
    : lm_(lm), hooks_(hooks), clock_(std::move(clock)), table_(options) {}

void GlockRunner::Apply(std::unique_lock<std::mutex>& l, std::vector<Effect> effects) {
  bool woke = false;
  for (Effect& e : effects) {
    if (e.kind == Effect::kGrant || e.kind == Effect::kFail) {
      Outcome& o = outcomes_[e.holder];
      o.done = true;
      o.status = e.kind == Effect::kGrant ? Status::Ok() : e.status;
      woke = true;
    } else {
      pending_.push_back(std::move(e));
    }
  }
  if (woke) cv_.notify_all();
  if (pumping_) return;  // the pumping thread will run what we queued
  pumping_ = true;
  while (!pending_.empty()) {
    const Effect e = std::move(pending_.front());
    pending_.pop_front();
    l.unlock();
    Execute(e);
    l.lock();
  }
  pumping_ = false;
}

void GlockRunner::Execute(const Effect& e) {
  const GlockName name = e.name;
  switch (e.kind) {
    case Effect::kRequest:
      lm_->Request(name, e.from, e.to, e.flags,
                   [this, name](const LmReply& r) { OnReply(name, r); });
      break;
    case Effect::kCancelRequest:
      lm_->Cancel(name);
      break;
    case Effect::kSync:
      hooks_->Sync(name, [this, name](const Status& st) { OnSyncDone(name, st); });
      break;
    case Effect::kInvalidate:
      hooks_->Invalidate(name, [this, name] { OnInvalidateDone(name); });
      break;
    case Effect::kRefresh:
      hooks_->Refresh(name, [this, name](const Status& st) { OnRefreshDone(name, st); });
      break;
    case Effect::kPrepare:
      hooks_->Prepare(name, [this, name] { OnPrepareDone(name); });
      break;
    case Effect::kThaw:
      hooks_->Thaw(name);
      break;
    case Effect::kGrant:
    case Effect::kFail:
      break;  // handled under the lock in Apply
  }
}

void GlockRunner::Report(const Status& st) {
  if (!st.ok()) LOG_ERROR("glock: input refused: " << st.ToString());
}

Result<HolderId> GlockRunner::Acquire(const GlockName& name, State state, uint32_t flags) {
  std::unique_lock l(mu_);
  std::vector<Effect> out;
  Result<HolderId> id = table_.Acquire(name, state, flags, clock_(), &out);
  if (!id.ok()) return id;
  // Fast path: granted at once with nothing else to do (a cached state): no outcome to record.
  if (!(flags & kAsync) && out.size() == 1 && out[0].kind == Effect::kGrant &&
      out[0].holder == *id) {
    return id;
  }
  outcomes_.try_emplace(*id);
  Apply(l, std::move(out));
  if (flags & kAsync) return id;
  Status st = WaitLocked(l, *id, std::nullopt);
  if (!st.ok()) return st;
  return id;
}

bool GlockRunner::Poll(HolderId id) const {
  std::lock_guard l(mu_);
  auto it = outcomes_.find(id);
  return it != outcomes_.end() && it->second.done;
}

Status GlockRunner::Wait(HolderId id, std::optional<Time> deadline) {
  std::unique_lock l(mu_);
  return WaitLocked(l, id, deadline);
}

Status GlockRunner::WaitLocked(std::unique_lock<std::mutex>& l, HolderId id,
                               std::optional<Time> deadline) {
  bool timed = deadline.has_value();
  const Time until = deadline.value_or(0);
  while (true) {
    auto it = outcomes_.find(id);
    if (it == outcomes_.end()) return Status::NotFound("no such glock holder");
    if (it->second.done) {
      Status st = it->second.status;
      if (!st.ok()) outcomes_.erase(it);
      return st;
    }
    if (!timed) {
      cv_.wait(l);
      continue;
    }
    const Time now = clock_();
    if (now >= until) {
      // Still waiting (a grant would have been recorded under this lock): withdraw it.
      std::vector<Effect> out;
      Report(table_.Cancel(id, now, &out, Code::kTimedOut));
      Apply(l, std::move(out));
      timed = false;
      continue;
    }
    cv_.wait_for(l, std::chrono::nanoseconds(until - now));
  }
}

Status GlockRunner::Release(HolderId id) {
  std::unique_lock l(mu_);
  std::vector<Effect> out;
  RETURN_IF_ERROR(table_.Release(id, clock_(), &out));
  outcomes_.erase(id);
  if (!out.empty()) Apply(l, std::move(out));
  return Status::Ok();
}

Status GlockRunner::Cancel(HolderId id) {
  std::unique_lock l(mu_);
  std::vector<Effect> out;
  Status st = table_.Cancel(id, clock_(), &out);
  auto it = outcomes_.find(id);
  if (st.code() == Code::kNotFound && it != outcomes_.end() && it->second.done) {
    outcomes_.erase(it);  // it had failed already: nothing left to withdraw
    return Status::Ok();
  }
  RETURN_IF_ERROR(st);
  Apply(l, std::move(out));
  outcomes_.erase(id);
  return Status::Ok();
}

void GlockRunner::RemoteDemote(const GlockName& name, State wanted) {
  std::unique_lock l(mu_);
  std::vector<Effect> out;
  Report(table_.DemoteRequest(name, wanted, clock_(), &out));
  Apply(l, std::move(out));
}

void GlockRunner::Tick() {
  std::unique_lock l(mu_);
  std::vector<Effect> out;
  table_.Tick(clock_(), &out);
  Apply(l, std::move(out));
}

size_t GlockRunner::ShrinkLru(size_t budget) {
  std::unique_lock l(mu_);
  std::vector<Effect> out;
  const size_t n = table_.ShrinkLru(budget, clock_(), &out);
  Apply(l, std::move(out));
  return n;
}

void GlockRunner::SetRecoveryBlocked(bool blocked) {
  std::unique_lock l(mu_);
  std::vector<Effect> out;
  table_.SetRecoveryBlocked(blocked, clock_(), &out);
  Apply(l, std::move(out));
}

std::optional<Time> GlockRunner::NextDeadline() const {
  std::lock_guard l(mu_);
  return table_.NextDeadline();
}

std::string GlockRunner::Dump() const {
  std::lock_guard l(mu_);
  return table_.Dump();
}

void GlockRunner::OnReply(const GlockName& name, const LmReply& reply) {
  std::unique_lock l(mu_);
  std::vector<Effect> out;
  Report(table_.LockModuleReply(name, reply, clock_(), &out));
  Apply(l, std::move(out));
}

void GlockRunner::OnSyncDone(const GlockName& name, const Status& st) {
  std::unique_lock l(mu_);
  std::vector<Effect> out;
  Report(table_.SyncDone(name, st, clock_(), &out));
  Apply(l, std::move(out));
}

void GlockRunner::OnInvalidateDone(const GlockName& name) {
  std::unique_lock l(mu_);
  std::vector<Effect> out;
  Report(table_.InvalidateDone(name, clock_(), &out));
  Apply(l, std::move(out));
}

void GlockRunner::OnRefreshDone(const GlockName& name, const Status& st) {
  std::unique_lock l(mu_);
  std::vector<Effect> out;
  Report(table_.RefreshDone(name, st, clock_(), &out));
  Apply(l, std::move(out));
}

void GlockRunner::OnPrepareDone(const GlockName& name) {
  std::unique_lock l(mu_);
  std::vector<Effect> out;
  Report(table_.PrepareDone(name, clock_(), &out));
  Apply(l, std::move(out));
}

}  // namespace ugfs2::glock

namespace ugfs2::glock {

std::vector<GlockName> GlockRunner::Names() const {
  std::lock_guard<std::mutex> l(mu_);
  return table_.Names();
}

size_t GlockRunner::LruSize() const {
  std::lock_guard<std::mutex> l(mu_);
  return table_.lru_size();
}

size_t GlockRunner::GlockCount() const {
  std::lock_guard<std::mutex> l(mu_);
  return table_.glock_count();
}

}  // namespace ugfs2::glock
