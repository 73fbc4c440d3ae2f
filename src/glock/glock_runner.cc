#include "glock/glock_runner.h"

#include <algorithm>
#include <chrono>
#include <fstream>
#include <utility>

#include "common/log.h"

namespace ugfs2::glock {

thread_local const HolderOwner* OwnerScope::current_ = nullptr;

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
  if (deadline_listener_) {
    const std::optional<Time> d = table_.NextDeadline();
    if (d && (!told_deadline_ || *d < *told_deadline_)) {
      told_deadline_ = d;
      deadline_listener_();
    }
  }
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
  if (const HolderOwner* owner = OwnerScope::Current()) owners_[*id] = OwnerRec{*owner, false};
  // Fast path: granted at once with nothing else to do (a cached state): no outcome to record.
  if (!(flags & kAsync) && out.size() == 1 && out[0].kind == Effect::kGrant &&
      out[0].holder == *id) {
    return id;
  }
  outcomes_.try_emplace(*id);
  Apply(l, std::move(out));
  if (retained_ > 0 && retained_listener_) {
    auto it = outcomes_.find(*id);
    if (it != outcomes_.end() && !it->second.done) retained_listener_();
  }
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

bool GlockRunner::WaitUntil(HolderId id, Time deadline) {
  std::unique_lock l(mu_);
  while (true) {
    auto it = outcomes_.find(id);
    if (it == outcomes_.end() || it->second.done) return true;
    const Time now = clock_();
    if (now >= deadline) return false;
    cv_.wait_for(l, std::chrono::nanoseconds(deadline - now));
  }
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
      if (!st.ok()) {
        outcomes_.erase(it);
        EraseOwnerLocked(id);
      }
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
  EraseOwnerLocked(id);
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
    EraseOwnerLocked(id);
    return Status::Ok();
  }
  RETURN_IF_ERROR(st);
  Apply(l, std::move(out));
  outcomes_.erase(id);
  EraseOwnerLocked(id);
  return Status::Ok();
}

void GlockRunner::RemoteDemote(const GlockName& name, State wanted) {
  std::unique_lock l(mu_);
  std::vector<Effect> out;
  Report(table_.DemoteRequest(name, wanted, clock_(), &out));
  Apply(l, std::move(out));
  if (retained_ > 0 && retained_listener_) retained_listener_();
}

void GlockRunner::EraseOwnerLocked(HolderId id) {
  auto it = owners_.find(id);
  if (it == owners_.end()) return;
  if (it->second.retained && retained_ > 0) retained_--;
  owners_.erase(it);
}

void GlockRunner::SetRetainedContentionListener(std::function<void()> fn) {
  std::lock_guard l(mu_);
  retained_listener_ = std::move(fn);
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
  told_deadline_ = table_.NextDeadline();
  return told_deadline_;
}

void GlockRunner::SetDeadlineListener(std::function<void()> fn) {
  std::lock_guard l(mu_);
  deadline_listener_ = std::move(fn);
}

namespace {

// /proc/PID/comm without its newline; "?" when the process is gone.
std::string CommOf(int pid) {
  std::ifstream f("/proc/" + std::to_string(pid) + "/comm");
  std::string comm;
  if (!std::getline(f, comm) || comm.empty()) return "?";
  for (char& c : comm) {
    if (c == ']' || c == '\n') c = '_';
  }
  return comm;
}

}  // namespace

std::string GlockRunner::Dump() const {
  // What needs I/O or other locks (object lines, process names) is gathered first, without mu_.
  std::map<GlockName, std::string> objects;
  std::map<int, std::string> comms;
  {
    std::lock_guard l(mu_);
    for (const GlockName& n : table_.Names()) objects[n];
    for (const auto& [id, rec] : owners_) comms[rec.owner.pid];
  }
  for (auto& [name, text] : objects) text = hooks_->DumpObject(name);
  for (auto& [pid, comm] : comms) comm = pid > 0 ? CommOf(pid) : "ugfs2";
  std::lock_guard l(mu_);
  const Time now = clock_();
  DumpExtras extras;
  extras.holder = [&](HolderId id) -> std::string {
    auto it = owners_.find(id);
    const auto h = table_.Holder(id);
    const Time since = h ? h->since : now;
    std::string s;
    const int pid = it == owners_.end() ? 0 : it->second.owner.pid;
    s = "p:" + std::to_string(pid) + " w:" + std::to_string((now - since) / kMillisecond) + " [";
    auto c = comms.find(pid);
    s += c != comms.end() ? c->second : (pid > 0 ? std::string("?") : std::string("ugfs2"));
    s += "] ";
    s += it == owners_.end() ? "id:" + std::to_string(id) : it->second.owner.label;
    return s;
  };
  extras.holder_flags = [&](HolderId id) -> std::string {
    auto it = owners_.find(id);
    return it != owners_.end() && it->second.retained ? "R" : "";
  };
  extras.object = [&](const GlockName& name) -> std::string {
    auto it = objects.find(name);
    return it == objects.end() ? std::string() : it->second;
  };
  return table_.Dump(extras);
}

void GlockRunner::SetRetained(HolderId id, bool retained) {
  std::lock_guard l(mu_);
  auto it = owners_.find(id);
  if (it == owners_.end()) {
    if (!retained) return;
    it = owners_.try_emplace(id).first;
  }
  if (it->second.retained != retained) {
    it->second.retained = retained;
    if (retained) {
      retained_++;
    } else if (retained_ > 0) {
      retained_--;
    }
  }
}

void GlockRunner::NoteRetry(const GlockName& name) {
  std::lock_guard l(mu_);
  table_.NoteRetry(name);
}

bool GlockRunner::Contended(HolderId id) const {
  std::lock_guard l(mu_);
  const auto h = table_.Holder(id);
  if (!h) return false;
  const auto g = table_.Info(h->name);
  return g && (g->demote.has_value() || g->waiting > 0);
}

std::optional<HolderInfo> GlockRunner::Holder(HolderId id) const {
  std::lock_guard l(mu_);
  return table_.Holder(id);
}

std::optional<GlockInfo> GlockRunner::Info(const GlockName& name) const {
  std::lock_guard l(mu_);
  return table_.Info(name);
}

void GlockRunner::OnReply(const GlockName& name, const LmReply& reply) {
  std::unique_lock l(mu_);
  std::vector<Effect> out;
  const size_t provisional = table_.provisional_count();
  Report(table_.LockModuleReply(name, reply, clock_(), &out));
  if (table_.provisional_count() < provisional) cv_.notify_all();  // WaitProvisional
  Apply(l, std::move(out));
}

uint64_t GlockRunner::ProvisionalMark() const {
  std::lock_guard<std::mutex> l(mu_);
  return table_.ProvisionalMark();
}

bool GlockRunner::WaitProvisional(uint64_t mark, Time deadline) {
  std::unique_lock l(mu_);
  while (!table_.ProvisionalConfirmed(mark)) {
    const Time now = clock_();
    if (now >= deadline) return false;
    cv_.wait_for(l, std::chrono::nanoseconds(std::min<Time>(deadline - now, 100 * kMillisecond)));
  }
  return true;
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
