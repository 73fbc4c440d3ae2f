#include "glock/glock.h"

#include <algorithm>
#include <cstdio>
#include <sstream>
#include <utility>

namespace ugfs2::glock {

using S = State;

// ---------------------------------------------------------------------------------------------
// Names, states, flags

std::string GlockName::ToString() const {
  char buf[40];
  std::snprintf(buf, sizeof(buf), "%u/%llx", static_cast<unsigned>(type),
                static_cast<unsigned long long>(number));
  return buf;
}

std::string GlockName::DlmResourceName() const {
  char buf[40];
  std::snprintf(buf, sizeof(buf), "%8x%16llx", static_cast<unsigned>(type),
                static_cast<unsigned long long>(number));
  return std::string(buf, 24);
}

const char* StateName(State s) {
  switch (s) {
    case S::kUnlocked:
      return "UN";
    case S::kExclusive:
      return "EX";
    case S::kDeferred:
      return "DF";
    case S::kShared:
      return "SH";
  }
  return "??";
}

bool Compatible(State a, State b) {
  if (a == S::kUnlocked || b == S::kUnlocked) return true;
  if (a == S::kExclusive || b == S::kExclusive) return false;
  return a == b;
}

bool Covers(State held, State want) {
  if (held == want || want == S::kUnlocked) return true;
  return held == S::kExclusive;
}

std::string FlagsString(uint32_t flags) {
  static constexpr std::pair<uint32_t, char> kLetters[] = {
      {kTry, 't'},       {kTry1Cb, 'T'},     {kNoExp, 'e'},     {kAny, 'A'},
      {kNodeScope, 'n'}, {kAsync, 'a'},      {kExact, 'E'},     {kSkip, 's'},
      {kNoCache, 'c'},   {kPrepareAny, 'P'}, {kNewObject, 'N'},
  };
  std::string s;
  for (const auto& [bit, letter] : kLetters) {
    if (flags & bit) s += letter;
  }
  return s;
}

TypeTraits TraitsOf(GlockType type) {
  switch (type) {
    case GlockType::kInode:
      return {.sync = true, .invalidate = true, .refresh = true, .min_hold = true, .prepare = true};
    case GlockType::kRgrp:
      return {.sync = true, .invalidate = true, .refresh = true, .min_hold = false};
    default:
      return {};
  }
}

const char* EffectKindName(Effect::Kind k) {
  switch (k) {
    case Effect::kRequest:
      return "Request";
    case Effect::kCancelRequest:
      return "CancelRequest";
    case Effect::kGrant:
      return "Grant";
    case Effect::kFail:
      return "Fail";
    case Effect::kSync:
      return "Sync";
    case Effect::kInvalidate:
      return "Invalidate";
    case Effect::kRefresh:
      return "Refresh";
    case Effect::kPrepare:
      return "Prepare";
    case Effect::kThaw:
      return "Thaw";
  }
  return "?";
}

std::string Effect::ToString() const {
  std::string s = std::string(EffectKindName(kind)) + " " + name.ToString();
  if (kind == kRequest) {
    s += std::string(" ") + StateName(from) + "->" + StateName(to);
    if (flags) s += " f:" + FlagsString(flags);
  }
  if (kind == kGrant || kind == kFail) s += " h" + std::to_string(holder);
  if (kind == kFail) s += " " + status.ToString();
  return s;
}

const char* PhaseName(Phase p) {
  switch (p) {
    case Phase::kIdle:
      return "idle";
    case Phase::kSync:
      return "sync";
    case Phase::kRequest:
      return "request";
    case Phase::kInvalidate:
      return "invalidate";
    case Phase::kRefresh:
      return "refresh";
  }
  return "?";
}

namespace {

// Leaving a state in which holders may have dirtied cached data needs a write-back first.
bool NeedsSync(State from, State to) {
  if (from == S::kExclusive) return to != S::kExclusive;
  if (from == S::kDeferred) return to == S::kShared || to == S::kUnlocked;
  return false;
}

bool IsTry(uint32_t flags) { return (flags & (kTry | kTry1Cb)) != 0; }

// A remote demote to `wanted` is satisfied once this node holds `wanted` or nothing.
bool Satisfied(State state, State wanted) { return state == S::kUnlocked || state == wanted; }

// Moves after which what was cached above the glock may be wrong or was dirtied beyond what the
// new state allows: anything that drops to UN or DF (caches get invalidated), and EX to SH
// (dirty kernel pages must be written back first). These need a completed prepare.
bool Lowers(State from, State to) {
  if (from == S::kUnlocked || from == to) return false;
  return to == S::kUnlocked || to == S::kDeferred || (from == S::kExclusive && to == S::kShared);
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Helpers

GlockTable::GlockTable(Options options) : options_(options) {}

void GlockTable::Advance(Time now) { now_ = std::max(now_, now); }

GlockTable::Glock* GlockTable::Find(const GlockName& name) {
  auto it = glocks_.find(name);
  return it == glocks_.end() ? nullptr : &it->second;
}

const GlockTable::HolderRec* GlockTable::FirstGranted(const Glock& g) const {
  if (g.queue.empty()) return nullptr;
  const HolderRec& h = holders_.at(g.queue.front());
  return h.granted ? &h : nullptr;
}

GlockTable::HolderRec* GlockTable::FirstWaiter(const Glock& g) {
  for (HolderId id : g.queue) {
    HolderRec& h = holders_.at(id);
    if (!h.granted) return &h;
  }
  return nullptr;
}

bool GlockTable::AnyGranted(const Glock& g) const { return FirstGranted(g) != nullptr; }

// gfs2's may_grant: with holders granted, a new one must match them (SH with SH, DF with DF, EX
// only among kNodeScope holders); with none granted, the cached state decides.
// One addition to gfs2's rule: a newcomer must also fit the cached state. gfs2 compares it with
// the granted holder's requested state only, so after a kAny holder asking DF got in under a
// cached SH, a plain DF holder would be granted in SH.
bool GlockTable::MayGrant(const Glock& g, const HolderRec* current, const HolderRec& h) const {
  const bool any = (h.flags & kAny) || ((h.flags & kPrepareAny) && g.preparing);
  if (current != nullptr) {
    const bool fits =
        g.state == h.state || g.state == S::kExclusive || (any && g.state != S::kUnlocked);
    if (!fits) return false;
    switch (current->state) {
      case S::kExclusive:
        return h.state == S::kExclusive && (current->flags & kNodeScope) && (h.flags & kNodeScope);
      case S::kShared:
      case S::kDeferred:
        return h.state == current->state;
      default:
        return false;
    }
  }
  if (g.state == h.state) return true;
  if (h.flags & kExact) return false;
  if (g.state == S::kExclusive) return h.state == S::kShared || h.state == S::kDeferred;
  if (any) return g.state != S::kUnlocked;
  return false;
}

void GlockTable::Emit(const Glock& g, Effect::Kind kind, std::vector<Effect>* out) {
  Effect e;
  e.kind = kind;
  e.name = g.name;
  out->push_back(std::move(e));
}

void GlockTable::FailHolder(Glock* g, HolderId id, const Status& status, std::vector<Effect>* out) {
  std::erase(g->queue, id);
  holders_.erase(id);
  Effect e;
  e.kind = Effect::kFail;
  e.name = g->name;
  e.holder = id;
  e.status = status;
  out->push_back(std::move(e));
}

// gfs2's do_error: fails waiting holders (only the try-lock ones unless `only_try` is false).
void GlockTable::FailWaiters(Glock* g, bool only_try, const Status& status,
                             std::vector<Effect>* out) {
  std::vector<HolderId> doomed;
  for (HolderId id : g->queue) {
    const HolderRec& h = holders_.at(id);
    if (!h.granted && (!only_try || IsTry(h.flags))) doomed.push_back(id);
  }
  for (HolderId id : doomed) FailHolder(g, id, status, out);
}

bool GlockTable::DemoteDue(Glock* g) {
  if (!g->demote) return false;
  if (g->demote_delayed && now_ >= g->tchange + options_.min_hold) g->demote_delayed = false;
  return !g->demote_delayed;
}

// gfs2's request_demote: two different non-UN wishes merge into UN; an immediate request
// overrides a delayed one.
void GlockTable::RequestDemote(Glock* g, State wanted, bool delayed) {
  if (!g->demote) {
    g->demote = wanted;
    g->demote_delayed = delayed;
    return;
  }
  if (*g->demote != S::kUnlocked && *g->demote != wanted) g->demote = S::kUnlocked;
  if (!delayed) g->demote_delayed = false;
}

// Emits kPrepare unless one is out already. Never while prepared: each kPrepare gets its kThaw
// before the next one.
void GlockTable::StartPrepare(Glock* g, std::vector<Effect>* out) {
  if (g->preparing || g->prepared) return;
  g->preparing = true;
  Emit(*g, Effect::kPrepare, out);
}

// A completed prepare is kept only while the demote it was for is still due (or running); once
// that demote is gone (satisfied, or ended by its transition) the layer above may cache again.
void GlockTable::ThawIfUnwanted(Glock* g, std::vector<Effect>* out) {
  if (!g->prepared || g->demote_in_progress) return;
  if (g->demote && !Satisfied(g->state, *g->demote) && DemoteDue(g)) return;
  g->prepared = false;
  Emit(*g, Effect::kThaw, out);
}

// ---------------------------------------------------------------------------------------------
// The queue runner (gfs2's run_queue / do_promote / do_xmote / finish_xmote)

// Grants waiters in queue order while they may be granted. Returns false only when the holder
// at the very head cannot be granted (the glock must change state); true otherwise, including
// when a refresh was started on a waiter's behalf.
bool GlockTable::DoPromote(Glock* g, std::vector<Effect>* out) {
  const HolderRec* current = FirstGranted(*g);
  bool blocked_head = false;  // preparing: the first waiter cannot be granted (skipped)
  bool granted_any = false;
  std::vector<HolderId> doomed;
  for (size_t i = 0; i < g->queue.size(); ++i) {
    HolderRec& h = holders_.at(g->queue[i]);
    if (h.granted) continue;
    if (!MayGrant(*g, current, h)) {
      if (g->preparing) {
        // The revoke in flight waits for requests that need a holder in the current state (a
        // READ, a launder WRITE under EX): FIFO must not queue them behind a waiter that needs
        // another state (a promotion, or a conversion refused and waiting for UN), or the
        // prepare never finishes. Grant the compatible ones past it; the skipped waiter goes
        // first again once the demote is over.
        if (!granted_any && current == nullptr && i == 0) blocked_head = true;
        if (IsTry(h.flags)) doomed.push_back(h.id);  // a try lock never waits
        continue;
      }
      if (i == 0) return false;
      FailWaiters(g, /*only_try=*/true, Status(Code::kLockConflict, "glock try lock failed"), out);
      return true;
    }
    if (g->needs_refresh && g->traits.refresh && !(h.flags & kSkip)) {
      g->phase = Phase::kRefresh;
      g->refresh_for = h.id;
      Emit(*g, Effect::kRefresh, out);
      return true;
    }
    h.granted = true;
    h.since = now_;
    granted_any = true;
    // Granted past a skipped waiter: keep "granted holders first" in the queue (FirstGranted,
    // AnyGranted and the exclusivity of MayGrant rely on it).
    for (size_t j = i; j > 0 && !holders_.at(g->queue[j - 1]).granted; --j) {
      std::swap(g->queue[j - 1], g->queue[j]);
    }
    Effect e;
    e.kind = Effect::kGrant;
    e.name = g->name;
    e.holder = h.id;
    out->push_back(std::move(e));
    if (current == nullptr) current = &h;
  }
  for (HolderId id : doomed) {
    FailHolder(g, id, Status(Code::kLockConflict, "glock try lock failed"), out);
  }
  // Nothing granted and the head needs another state: let the caller start its transition.
  return !(blocked_head && !granted_any);
}

void GlockTable::RunQueue(Glock* g, std::vector<Effect>* out) {
  if (g->phase != Phase::kIdle) {
    // Granted provisionally: newcomers the state fits join the creator (nothing to re-read:
    // the object is new); a pending demote waits for the real reply, and so do they then.
    if (g->provisional && !g->demote) DoPromote(g, out);
    return;
  }
  g->retry = false;
  if (g->demote && Satisfied(g->state, *g->demote)) {
    g->demote.reset();
    g->demote_delayed = false;
  }
  ThawIfUnwanted(g, out);
  if (g->demote && DemoteDue(g)) {
    if (!g->traits.prepare || g->prepared) {
      // An active demote admits no new holders; it runs once the granted ones have left.
      if (AnyGranted(*g)) return;
      StartTransition(g, *g->demote, 0, /*demote=*/true, out);
      return;
    }
    // The revoke above the glock needs holders to be served while it runs (reads, write-backs
    // of dirty pages), so until PrepareDone the glock carries on as if no demote were pending.
    StartPrepare(g, out);
  }
  if (DoPromote(g, out)) return;
  const HolderRec* head = FirstWaiter(*g);
  if (head == nullptr) return;  // the only waiters were try locks, failed while preparing
  if (g->traits.prepare && Lowers(g->state, head->state)) {
    // A waiter that needs a lower state (kExact SH under EX, DF): that move must be prepared
    // like any demote, so make it one; the waiter is granted when it is over. (Not prepared
    // here: a prepared glock has a due demote and returned above.)
    RequestDemote(g, head->state, /*delayed=*/false);
    StartPrepare(g, out);
    return;
  }
  // No transition while a revoke runs: a promotion in flight admits no holder, and the revoke
  // waits for holders (READs) whose folios it must drop, while the promotion may wait for
  // another node whose own revoke waits the same way (a cycle across nodes). The head waiter
  // is served once the demote is over. (After a refused conversion it asks again only from UN.)
  if (g->preparing) {
    // Every waiter left could not be granted: a try lock does not wait for the demote.
    FailWaiters(g, /*only_try=*/true, Status(Code::kLockConflict, "glock try lock failed"), out);
    return;
  }
  const State target = head->state;
  const uint32_t flags = head->flags & kLockModuleFlags;
  if (!IsTry(head->flags)) {
    FailWaiters(g, /*only_try=*/true, Status(Code::kLockConflict, "glock try lock failed"), out);
  }
  StartTransition(g, target, flags, /*demote=*/false, out);
}

void GlockTable::StartTransition(Glock* g, State to, uint32_t lm_flags, bool demote,
                                 std::vector<Effect>* out) {
  g->target = to;
  g->lm_flags = lm_flags;
  g->demote_in_progress = demote;
  g->cancel_sent = false;
  g->unlock_first = false;
  if ((to == S::kUnlocked || to == S::kDeferred) && g->traits.invalidate) {
    FailWaiters(g, /*only_try=*/true, Status(Code::kLockConflict, "glock try lock failed"), out);
  }
  // Prepare types sync on every downward move too: the hook drops what the kernel caches of
  // the inode's attributes once no holder can be admitted (docs/coherence.md).
  const bool sync = g->traits.sync && (NeedsSync(g->state, to) ||
                                       (g->traits.prepare && demote && g->state != S::kUnlocked));
  if (sync) {
    g->phase = Phase::kSync;
    Emit(*g, Effect::kSync, out);
    return;
  }
  SendRequest(g, out);
}

void GlockTable::SendRequest(Glock* g, std::vector<Effect>* out) {
  g->phase = Phase::kRequest;
  g->request_at = now_;
  g->stats.requests++;
  Effect e;
  e.kind = Effect::kRequest;
  e.name = g->name;
  e.from = g->state;
  e.to = g->target;
  e.flags = g->lm_flags;
  out->push_back(std::move(e));
}

void GlockTable::ApplyProvisional(Glock* g, const LmReply& reply, std::vector<Effect>* out) {
  g->provisional = true;
  g->provisional_seq = next_provisional_++;
  provisional_.emplace(g->provisional_seq, g->name);
  g->state = reply.state;
  g->tchange = now_;
  g->needs_refresh = false;  // the holder creates the object: there is nothing to re-read
  DoPromote(g, out);
}

void GlockTable::ApplyReply(Glock* g, const LmReply& in, std::vector<Effect>* out) {
  LmReply reply = in;
  if (g->provisional) {
    // The real reply to a provisional grant.
    provisional_.erase(g->provisional_seq);
    g->provisional = false;
    g->provisional_seq = 0;
    if (!reply.error.ok() || reply.canceled || reply.state != g->state) {
      // Holders already run in the state: they keep it (the lock module failed, which fences
      // the node); the waiters fail and the glock retries later, as after any error.
      if (reply.error.ok()) {
        reply.error = Status(Code::kIoError, "the lock manager did not grant " +
                                                 g->name.ToString() + " as provisionally granted");
      }
      reply.state = g->state;
      reply.canceled = false;
    }
  }
  const State old = g->state;
  if (reply.state != old) {
    g->state = reply.state;
    g->tchange = now_;
  }
  if (old != S::kUnlocked && reply.state != old &&
      (reply.state == S::kUnlocked || reply.state == S::kDeferred)) {
    g->needs_refresh = true;
    if (g->traits.invalidate) {
      g->phase = Phase::kInvalidate;
      g->after_invalidate = reply;
      Emit(*g, Effect::kInvalidate, out);
      return;
    }
  }
  FinishTransition(g, reply, out);
}

void GlockTable::FinishTransition(Glock* g, const LmReply& reply, std::vector<Effect>* out) {
  g->phase = Phase::kIdle;
  g->cancel_sent = false;
  g->after_invalidate.reset();
  const bool was_demote = g->demote_in_progress;
  g->demote_in_progress = false;
  if (was_demote && reply.error.ok() && !reply.canceled) g->stats.bounces++;
  if (was_demote && g->prepared) {
    // Whatever the outcome, the demote this prepare was for is over; a retry or a further
    // demote prepares again.
    g->prepared = false;
    Emit(*g, Effect::kThaw, out);
  }
  // A promotion that was in flight when PrepareDone came may have satisfied the demote.
  ThawIfUnwanted(g, out);
  if (!reply.error.ok()) {
    FailWaiters(g, /*only_try=*/false, reply.error, out);
    g->retry = true;
    g->retry_at = now_ + options_.retry_delay;
    return;
  }
  if (g->state == g->target) {
    // Waiters that asked for this state get it before a demote that arrived meanwhile runs;
    // not after a prepare for it is done, though: the layer above has revoked its caches and
    // holders granted now would fill them again.
    if (!was_demote && g->state != S::kUnlocked && !g->prepared) DoPromote(g, out);
    RunQueue(g, out);
    return;
  }
  // The lock module did not move to the target.
  const HolderRec* head = FirstWaiter(*g);
  if (!was_demote && !reply.canceled && head != nullptr && IsTry(head->flags)) {
    FailWaiters(g, /*only_try=*/true, Status(Code::kLockConflict, "glock try lock failed"), out);
    RunQueue(g, out);
    return;
  }
  if (reply.canceled || g->state == S::kUnlocked || g->state == S::kExclusive) {
    RunQueue(g, out);
    return;
  }
  // A conversion out of SH or DF was refused (a conversion deadlock): unlock, then try again.
  if (g->traits.prepare) {
    // The unlock gives the state up like any demote, so it is one and goes through prepare;
    // the head waiter stays queued and is promoted from UN afterwards.
    g->unlock_first = true;
    RequestDemote(g, S::kUnlocked, /*delayed=*/false);
    RunQueue(g, out);
    return;
  }
  StartTransition(g, S::kUnlocked, 0, was_demote, out);
}

// ---------------------------------------------------------------------------------------------
// Inputs

Result<HolderId> GlockTable::Acquire(const GlockName& name, State state, uint32_t flags, Time now,
                                     std::vector<Effect>* out) {
  if (state == S::kUnlocked) return Status::Invalid("glock holders cannot ask for UN");
  Advance(now);
  auto [it, created] = glocks_.try_emplace(name);
  Glock* g = &it->second;
  if (created) {
    g->name = name;
    g->traits = TraitsOf(name.type);
    g->tchange = now_;
  }
  const HolderId id = next_holder_++;
  HolderRec h;
  h.id = id;
  h.name = name;
  h.state = state;
  h.flags = flags;
  h.since = now_;
  g->stats.queued++;
  if (IsTry(flags)) {
    // gfs2's add_to_queue: a try lock fails at once while an invalidation is under way, or when
    // the glock is busy, it could not be granted now, and a blocking holder is queued. One
    // addition: while a transition is in flight for a blocking waiter, nothing is granted until
    // it completes, and that may take another node's release, so a try lock fails even if the
    // cached state would do for it (gfs2 queues it there: an operation that holds a later glock
    // and tries this one out of order then waits for a node that waits for it).
    bool fail =
        (g->phase == Phase::kSync && (g->target == S::kUnlocked || g->target == S::kDeferred)) ||
        g->phase == Phase::kInvalidate;
    if (!fail && g->phase != Phase::kIdle) {
      const bool grantable = MayGrant(*g, FirstGranted(*g), h);
      for (HolderId other : g->queue) {
        const HolderRec& o = holders_.at(other);
        if (!IsTry(o.flags) && (!grantable || !o.granted)) fail = true;
      }
    }
    if (fail) {
      Effect e;
      e.kind = Effect::kFail;
      e.name = name;
      e.holder = id;
      e.status = Status(Code::kLockConflict, "glock try lock failed");
      out->push_back(std::move(e));
      Settle(g);
      return id;
    }
  }
  holders_.emplace(id, h);
  g->queue.push_back(id);
  if ((flags & kNoExp) && g->frozen) {
    const LmReply reply = *g->frozen;
    g->frozen.reset();
    ApplyReply(g, reply, out);
  }
  RunQueue(g, out);
  Settle(g);
  return id;
}

Status GlockTable::Release(HolderId id, Time now, std::vector<Effect>* out) {
  Advance(now);
  auto it = holders_.find(id);
  if (it == holders_.end()) return Status::NotFound("no such glock holder");
  if (!it->second.granted) return Status::Invalid("glock holder not granted; cancel it");
  Glock* g = Find(it->second.name);
  if (it->second.flags & kNoCache) RequestDemote(g, S::kUnlocked, /*delayed=*/false);
  std::erase(g->queue, id);
  holders_.erase(it);
  RunQueue(g, out);
  Settle(g);
  return Status::Ok();
}

Status GlockTable::Cancel(HolderId id, Time now, std::vector<Effect>* out, Code reason) {
  Advance(now);
  auto it = holders_.find(id);
  if (it == holders_.end()) return Status::NotFound("no such glock holder");
  if (it->second.granted) return Status::Invalid("glock holder already granted; release it");
  Glock* g = Find(it->second.name);
  const HolderRec* head = FirstWaiter(*g);
  const bool was_head = head != nullptr && head->id == id;
  if (it->second.flags & kNoCache) RequestDemote(g, S::kUnlocked, /*delayed=*/false);
  FailHolder(g, id, Status(reason, "glock request cancelled"), out);
  if (g->phase == Phase::kRequest && !g->frozen && !g->demote_in_progress && was_head &&
      !g->cancel_sent && !g->provisional) {
    // Abort the request made for it unless the next waiter wants the same.
    const HolderRec* next = FirstWaiter(*g);
    if (next == nullptr || next->state != g->target) {
      g->cancel_sent = true;
      Emit(*g, Effect::kCancelRequest, out);
    }
  }
  RunQueue(g, out);
  Settle(g);
  return Status::Ok();
}

Status GlockTable::LockModuleReply(const GlockName& name, const LmReply& reply, Time now,
                                   std::vector<Effect>* out) {
  Advance(now);
  Glock* g = Find(name);
  if (g == nullptr || g->phase != Phase::kRequest || g->frozen) {
    return Status::Invalid("lock module reply without a request in flight: " + name.ToString());
  }
  if (reply.provisional) {
    // Only an early grant of what a creator asked for, from nothing, that nobody has withdrawn
    // or re-purposed since the request was sent; anything else waits for the real reply.
    const HolderRec* head = FirstWaiter(*g);
    const bool apply = !g->provisional && !recovery_blocked_ && !g->cancel_sent &&
                       !g->demote_in_progress && g->state == S::kUnlocked &&
                       g->target != S::kUnlocked && reply.state == g->target && reply.error.ok() &&
                       !reply.canceled && (g->lm_flags & kNewObject) && head != nullptr &&
                       (head->flags & kNewObject) && head->state == g->target;
    if (apply) {
      ApplyProvisional(g, reply, out);
      Settle(g);
    }
    return Status::Ok();
  }
  // The real reply to a provisional grant is applied even while recovery blocks replies: its
  // holders already run, and a log flush (which recovery itself needs) waits for it.
  if (recovery_blocked_ && !g->provisional && reply.error.ok() && !reply.canceled &&
      g->target != S::kUnlocked) {
    bool noexp_waiter = false;
    for (HolderId id : g->queue) {
      const HolderRec& h = holders_.at(id);
      if (!h.granted && (h.flags & kNoExp)) noexp_waiter = true;
    }
    if (!noexp_waiter) {
      g->frozen = reply;
      return Status::Ok();
    }
  }
  // gfs2's srtt: smoothed with gain 1/8, its deviation with gain 1/4.
  const Time sample = now_ - g->request_at;
  GlockStats& st = g->stats;
  if (st.srtt == 0 && st.srttvar == 0) {
    st.srtt = sample;
    st.srttvar = sample / 2;
  } else {
    const Time err = sample - st.srtt;
    st.srtt += err / 8;
    st.srttvar += ((err < 0 ? -err : err) - st.srttvar) / 4;
  }
  ApplyReply(g, reply, out);
  Settle(g);
  return Status::Ok();
}

void GlockTable::NoteRetry(const GlockName& name) {
  if (Glock* g = Find(name)) g->stats.retries++;
}

Status GlockTable::DemoteRequest(const GlockName& name, State wanted, Time now,
                                 std::vector<Effect>* out) {
  if (wanted == S::kExclusive) return Status::Invalid("a demote request cannot ask for EX");
  Advance(now);
  Glock* g = Find(name);
  if (g == nullptr) return Status::Ok();  // nothing cached: already satisfied
  g->stats.demote_requests++;
  // gfs2's gfs2_glock_cb: with holders queued, an inode glock keeps its state for the minimum
  // hold time after its last state change, so local users make progress between demotes.
  const bool delayed = g->traits.min_hold && options_.min_hold > 0 && !g->queue.empty() &&
                       now_ < g->tchange + options_.min_hold;
  RequestDemote(g, wanted, delayed);
  RunQueue(g, out);
  Settle(g);
  return Status::Ok();
}

Status GlockTable::SyncDone(const GlockName& name, const Status& result, Time now,
                            std::vector<Effect>* out) {
  Advance(now);
  Glock* g = Find(name);
  if (g == nullptr || g->phase != Phase::kSync) {
    return Status::Invalid("sync completion without a sync in flight: " + name.ToString());
  }
  if (!result.ok()) {
    g->phase = Phase::kIdle;
    g->demote_in_progress = false;
    g->retry = true;
    g->retry_at = now_ + options_.retry_delay;
    Settle(g);
    return Status::Ok();
  }
  SendRequest(g, out);
  Settle(g);
  return Status::Ok();
}

Status GlockTable::InvalidateDone(const GlockName& name, Time now, std::vector<Effect>* out) {
  Advance(now);
  Glock* g = Find(name);
  if (g == nullptr || g->phase != Phase::kInvalidate) {
    return Status::Invalid("invalidate completion without one in flight: " + name.ToString());
  }
  const LmReply reply = *g->after_invalidate;
  FinishTransition(g, reply, out);
  Settle(g);
  return Status::Ok();
}

Status GlockTable::RefreshDone(const GlockName& name, const Status& result, Time now,
                               std::vector<Effect>* out) {
  Advance(now);
  Glock* g = Find(name);
  if (g == nullptr || g->phase != Phase::kRefresh) {
    return Status::Invalid("refresh completion without one in flight: " + name.ToString());
  }
  g->phase = Phase::kIdle;
  const HolderId for_holder = g->refresh_for;
  g->refresh_for = 0;
  if (result.ok()) {
    g->needs_refresh = false;
  } else if (holders_.count(for_holder) && !holders_.at(for_holder).granted) {
    FailHolder(g, for_holder, result, out);
  }
  // A prepare that completed during the refresh stops grants, as in FinishTransition.
  if (!g->prepared) DoPromote(g, out);
  RunQueue(g, out);
  Settle(g);
  return Status::Ok();
}

Status GlockTable::PrepareDone(const GlockName& name, Time now, std::vector<Effect>* out) {
  Advance(now);
  Glock* g = Find(name);
  if (g == nullptr || !g->preparing) {
    return Status::Invalid("prepare completion without one in flight: " + name.ToString());
  }
  g->preparing = false;
  g->prepared = true;
  // If the demote went away meanwhile, thaw at once, even during a transition (a promotion).
  ThawIfUnwanted(g, out);
  RunQueue(g, out);
  Settle(g);
  return Status::Ok();
}

void GlockTable::Tick(Time now, std::vector<Effect>* out) {
  Advance(now);
  const std::vector<GlockName> names(watch_.begin(), watch_.end());
  for (const GlockName& name : names) {
    Glock* g = Find(name);
    if (g == nullptr) continue;
    const bool retry_due = g->retry && now_ >= g->retry_at;
    const bool demote_due = g->demote && g->demote_delayed && DemoteDue(g);
    if (retry_due || demote_due) RunQueue(g, out);
    Settle(g);
  }
}

size_t GlockTable::ShrinkLru(size_t budget, Time now, std::vector<Effect>* out) {
  Advance(now);
  size_t n = 0;
  while (n < budget && !lru_.empty()) {
    const GlockName name = lru_.begin()->second;
    lru_.erase(lru_.begin());
    Glock* g = Find(name);
    g->lru_seq = 0;
    RequestDemote(g, S::kUnlocked, /*delayed=*/false);
    RunQueue(g, out);
    Settle(g);
    ++n;
  }
  return n;
}

void GlockTable::SetRecoveryBlocked(bool blocked, Time now, std::vector<Effect>* out) {
  Advance(now);
  recovery_blocked_ = blocked;
  if (blocked) return;
  std::vector<GlockName> thaw;
  for (const auto& [name, g] : glocks_) {
    if (g.frozen) thaw.push_back(name);
  }
  for (const GlockName& name : thaw) {
    Glock* g = Find(name);
    const LmReply reply = *g->frozen;
    g->frozen.reset();
    ApplyReply(g, reply, out);
    Settle(g);
  }
}

void GlockTable::Settle(Glock* g) {
  // A glock with a prepare out is kept (PrepareDone will name it) and off the LRU.
  const bool idle = g->phase == Phase::kIdle && !g->frozen && !g->preparing;
  const GlockName name = g->name;
  if (idle && g->queue.empty() && g->state == S::kUnlocked) {
    if (g->lru_seq) lru_.erase(g->lru_seq);
    watch_.erase(name);
    glocks_.erase(name);
    return;
  }
  const bool on_lru = idle && g->queue.empty() && !g->demote;
  if (on_lru && g->lru_seq == 0) {
    g->lru_seq = next_lru_seq_++;
    lru_.emplace(g->lru_seq, name);
  } else if (!on_lru && g->lru_seq != 0) {
    lru_.erase(g->lru_seq);
    g->lru_seq = 0;
  }
  if (g->retry || (g->demote && g->demote_delayed)) {
    watch_.insert(name);
  } else {
    watch_.erase(name);
  }
}

// ---------------------------------------------------------------------------------------------
// Queries

std::optional<Time> GlockTable::NextDeadline() const {
  std::optional<Time> best;
  for (const GlockName& name : watch_) {
    const Glock& g = glocks_.at(name);
    std::optional<Time> t;
    if (g.retry) t = g.retry_at;
    if (g.demote && g.demote_delayed) {
      const Time d = g.tchange + options_.min_hold;
      t = t ? std::min(*t, d) : d;
    }
    if (t && (!best || *t < *best)) best = t;
  }
  return best;
}

std::optional<GlockInfo> GlockTable::Info(const GlockName& name) const {
  auto it = glocks_.find(name);
  if (it == glocks_.end()) return std::nullopt;
  const Glock& g = it->second;
  GlockInfo i;
  i.name = g.name;
  i.state = g.state;
  i.target = g.target;
  i.phase = g.phase;
  i.demote_in_progress = g.demote_in_progress;
  i.demote = g.demote;
  i.demote_delayed = g.demote_delayed;
  i.frozen = g.frozen.has_value();
  i.needs_refresh = g.needs_refresh && g.traits.refresh;
  i.preparing = g.preparing;
  i.prepared = g.prepared;
  i.on_lru = g.lru_seq != 0;
  i.provisional = g.provisional;
  for (HolderId id : g.queue) (holders_.at(id).granted ? i.granted : i.waiting)++;
  i.tchange = g.tchange;
  i.request_at = g.request_at;
  i.stats = g.stats;
  return i;
}

std::optional<HolderInfo> GlockTable::Holder(HolderId id) const {
  auto it = holders_.find(id);
  if (it == holders_.end()) return std::nullopt;
  const HolderRec& h = it->second;
  return HolderInfo{h.id, h.name, h.state, h.flags, h.granted, h.since};
}

std::vector<GlockName> GlockTable::Names() const {
  std::vector<GlockName> v;
  for (const auto& [name, g] : glocks_) v.push_back(name);
  return v;
}

std::string GlockTable::CheckInvariants() const {
  std::ostringstream err;
  size_t queued = 0;
  for (const auto& [name, g] : glocks_) {
    const std::string n = name.ToString();
    if (g.name != name) err << n << ": name mismatch\n";
    queued += g.queue.size();
    bool waiter_seen = false;
    std::vector<const HolderRec*> granted;
    for (HolderId id : g.queue) {
      auto it = holders_.find(id);
      if (it == holders_.end()) {
        err << n << ": queued holder " << id << " unknown\n";
        continue;
      }
      const HolderRec& h = it->second;
      if (h.name != name) err << n << ": holder " << id << " belongs elsewhere\n";
      if (!h.granted) {
        waiter_seen = true;
        continue;
      }
      if (waiter_seen) err << n << ": granted holder " << id << " behind a waiter\n";
      granted.push_back(&h);
    }
    for (size_t i = 0; i < granted.size(); ++i) {
      const HolderRec& h = *granted[i];
      if (g.state == S::kUnlocked) err << n << ": holder " << h.id << " granted in UN\n";
      // With holders granted, gfs2 compares a newcomer with them only, so an EXACT holder may
      // join others under a cached EX; hence no EXACT test here.
      // A kPrepareAny holder granted while preparing keeps its grant after the prepare.
      const bool fits = g.state == h.state || g.state == S::kExclusive ||
                        ((h.flags & (kAny | kPrepareAny)) && g.state != S::kUnlocked);
      if (!fits) {
        err << n << ": holder " << h.id << " wants " << StateName(h.state) << " in "
            << StateName(g.state) << "\n";
      }
      if (i > 0) {
        const HolderRec& first = *granted[0];
        const bool ok =
            h.state == first.state &&
            (h.state != S::kExclusive || ((h.flags & kNodeScope) && (first.flags & kNodeScope)));
        if (!ok) err << n << ": holders " << first.id << " and " << h.id << " conflict\n";
      }
    }
    if (g.provisional) {
      if (g.phase != Phase::kRequest || g.state != g.target || g.state == S::kUnlocked) {
        err << n << ": provisional outside its request\n";
      }
      auto it = provisional_.find(g.provisional_seq);
      if (it == provisional_.end() || it->second != name) err << n << ": provisional unlisted\n";
    }
    if (!granted.empty() && g.phase != Phase::kIdle && g.phase != Phase::kRefresh &&
        !g.provisional) {
      err << n << ": holders granted during phase " << PhaseName(g.phase) << "\n";
    }
    if (g.frozen && g.phase != Phase::kRequest) err << n << ": frozen reply outside request\n";
    if (g.after_invalidate.has_value() != (g.phase == Phase::kInvalidate)) {
      err << n << ": invalidate bookkeeping wrong\n";
    }
    if (g.demote_in_progress && g.phase == Phase::kIdle) err << n << ": stale demote flag\n";
    if (g.preparing && g.prepared) err << n << ": preparing and prepared at once\n";
    if ((g.preparing || g.prepared) && !g.traits.prepare)
      err << n << ": prepare on a type without it\n";
    if (g.demote_in_progress && g.traits.prepare && !g.prepared) {
      err << n << ": demote running without a completed prepare\n";
    }
    if (g.prepared && g.phase == Phase::kIdle &&
        (!g.demote || Satisfied(g.state, *g.demote) || g.demote_delayed)) {
      err << n << ": prepared without a due demote\n";
    }
    if (g.prepared && g.phase == Phase::kIdle && !g.retry && granted.empty()) {
      err << n << ": prepared demote not started\n";
    }
    if (g.lru_seq != 0) {
      auto it = lru_.find(g.lru_seq);
      if (it == lru_.end() || it->second != name) err << n << ": LRU entry missing\n";
      if (!g.queue.empty() || g.phase != Phase::kIdle || g.state == S::kUnlocked || g.preparing) {
        err << n << ": on the LRU while not idle\n";
      }
    }
    const bool idle = g.phase == Phase::kIdle && !g.frozen && !g.preparing;
    if (idle && g.queue.empty() && g.state == S::kUnlocked) {
      err << n << ": idle UN glock not forgotten\n";
    }
    if (idle && g.queue.empty() && !g.demote && g.lru_seq == 0) {
      err << n << ": idle cached glock not on the LRU\n";
    }
  }
  for (const auto& [seq, name] : provisional_) {
    auto it = glocks_.find(name);
    if (it == glocks_.end() || !it->second.provisional || it->second.provisional_seq != seq) {
      err << "stale provisional entry\n";
    }
  }
  if (queued != holders_.size()) {
    err << "holder count mismatch: " << queued << " queued vs " << holders_.size() << "\n";
  }
  for (const auto& [seq, name] : lru_) {
    auto it = glocks_.find(name);
    if (it == glocks_.end() || it->second.lru_seq != seq) err << "stale LRU entry\n";
  }
  return err.str();
}

std::string GlockTable::Dump(const DumpExtras& extras) const {
  std::ostringstream o;
  const auto ms = [this](Time t) { return (now_ - t) / kMillisecond; };
  for (const auto& [name, g] : glocks_) {
    o << "G:  s:" << StateName(g.state) << " n:" << name.ToString() << " f:";
    if (g.phase != Phase::kIdle) o << 'l';
    if (g.demote && !g.demote_delayed) o << 'D';
    if (g.demote && g.demote_delayed) o << 'd';
    if (g.demote_in_progress) o << 'p';
    if (g.preparing) o << 'v';  // not gfs2's: revoking what is cached above
    if (g.prepared) o << 'V';   // not gfs2's: revoked, the demote may run
    if (g.phase == Phase::kInvalidate) o << 'i';
    if (g.frozen) o << 'F';
    if (g.provisional) o << 'N';  // not gfs2's: granted early to a creator, real grant not in
    if (!g.queue.empty()) o << 'q';
    if (g.lru_seq) o << 'L';
    if (g.demote) o << 'b';
    size_t active = 0;
    for (HolderId id : g.queue) active += holders_.at(id).granted ? 1 : 0;
    o << " t:" << StateName(g.phase == Phase::kIdle ? g.state : g.target)
      << " d:" << StateName(g.demote.value_or(S::kExclusive)) << "/" << ms(g.tchange)
      << " a:" << active << " v:0 r:" << g.queue.size() << " m:" << options_.min_hold / kMillisecond
      << " p:0 phase:" << PhaseName(g.phase);
    if (g.phase == Phase::kRequest) {
      o << " lm:" << StateName(g.state) << ">" << StateName(g.target) << "/" << ms(g.request_at);
    }
    o << "\n";
    for (HolderId id : g.queue) {
      const HolderRec& h = holders_.at(id);
      o << " H: s:" << StateName(h.state) << " f:" << FlagsString(h.flags)
        << (h.granted ? 'H' : 'W');
      if (extras.holder_flags) o << extras.holder_flags(id);
      o << " e:0";
      std::string more = extras.holder ? extras.holder(id) : std::string();
      if (more.empty()) {
        o << " p:0 w:" << ms(h.since) << " [ugfs2] id:" << id;
      } else {
        o << " " << more;
      }
      o << "\n";
    }
    if (extras.object) o << extras.object(name);
    const GlockStats& st = g.stats;
    o << " S: srtt:" << st.srtt / 1000 << " srttvar:" << st.srttvar / 1000 << " req:" << st.requests
      << " dcnt:" << st.demote_requests << " qcnt:" << st.queued << " bounce:" << st.bounces
      << " retry:" << st.retries << "\n";
  }
  return o.str();
}

}  // namespace ugfs2::glock
