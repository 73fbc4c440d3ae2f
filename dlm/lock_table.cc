#include "lock_table.h"

#include <algorithm>
#include <sstream>

#include "common/log.h"

namespace ugfs2::dlm {

bool LvbReadOnGrant(int gr, int rq) {
  if (gr == kIV) return true;
  if (gr >= kNL && gr <= kPR) return rq >= gr;
  return gr == kPW && rq == kEX;
}

bool LvbWriteOnConvert(int gr, int rq) {
  if (gr == kEX) return true;
  return gr == kPW && rq >= kNL && rq <= kPW;
}

bool QueCvtAllowed(int gr, int rq) {
  switch (gr) {
    case kNL:
      return rq >= kCR;
    case kCR:
      return rq >= kCW;
    case kCW:
      return rq >= kPR;
    case kPR:
      return rq == kCW || rq == kPW || rq == kEX;
    case kPW:
      return rq == kEX;
  }
  return false;
}

void LockOp::Encode(ByteWriter* w) const {
  w->U8(type);
  w->U32(lkid);
  w->U8(static_cast<uint8_t>(mode));
  w->U32(flags);
  if (type == kRequest) {
    w->U32(pid);
    w->Str(procname);
    w->Str(name);
  }
  w->U8(has_lvb ? 1 : 0);
  if (has_lvb) w->Bytes(lvb.data(), lvb.size());
}

bool LockOp::Decode(ByteReader* r) {
  type = static_cast<Type>(r->U8());
  lkid = r->U32();
  mode = static_cast<int8_t>(r->U8());
  flags = r->U32();
  if (type == kRequest) {
    pid = r->U32();
    procname = r->Str(256);
    name = r->Str(kResNameMax);
  }
  has_lvb = r->U8() != 0;
  if (has_lvb) r->Bytes(lvb.data(), lvb.size());
  return r->ok() && type >= kRequest && type <= kCancel;
}

// ---------------------------------------------------------------------------------------------
// Membership

MemberInfo* LockTable::FindMemberMut(const MemberId& id) {
  for (auto& m : members_) {
    if (m.alive && m.id == id) return &m;
  }
  return nullptr;
}

const MemberInfo* LockTable::FindMember(const MemberId& id) const {
  for (const auto& m : members_) {
    if (m.alive && m.id == id) return &m;
  }
  return nullptr;
}

bool LockTable::OwnerAlive(uint32_t owner) const {
  for (const auto& m : members_) {
    if (m.incarnation == owner) return m.alive;
  }
  return false;
}

bool LockTable::OwnerDeadPending(uint32_t owner) const {
  return recovery_pending_.count(owner) != 0;
}

bool LockTable::RecoveryPendingFor(uint32_t nodeid) const {
  for (const auto& [inc, node] : recovery_pending_) {
    if (node == nodeid) return true;
  }
  return false;
}

const LockEntry* LockTable::FindLock(uint32_t owner, uint32_t lkid) const {
  auto it = locks_.find(MakeKey(owner, lkid));
  return it == locks_.end() ? nullptr : it->second.get();
}

void LockTable::ApplyConfChg(const std::vector<MemberId>& members,
                             const std::vector<std::pair<MemberId, LeaveReason>>& left,
                             const std::vector<MemberId>& joined, std::vector<Effect>* out) {
  (void)members;
  std::set<std::string> touched;
  for (const auto& [id, reason] : left) {
    MemberInfo* m = FindMemberMut(id);
    if (m == nullptr) continue;
    m->alive = false;
    const uint32_t inc = m->incarnation;
    // Requests that were never granted can go at once: nobody relied on them.
    std::vector<LockEntry*> mine;
    for (auto& [key, lk] : locks_) {
      if (lk->owner == inc) mine.push_back(lk.get());
    }
    for (LockEntry* lk : mine) {
      Resource* r = &resources_.at(*lk->resname);
      touched.insert(r->name);
      if (lk->queue == Queue::kWaiting) {
        Destroy(r, lk);
        continue;
      }
      if (lk->queue == Queue::kConverting) {
        RemoveFromQueues(r, lk);
        lk->rqmode = kIV;
        InsertGranted(r, lk);
      }
      // The dead node may have modified what its PW/EX lock protects: its LVB is suspect.
      if (lk->grmode == kPW || lk->grmode == kEX) r->lvb_invalid = true;
    }
    if (reason == LeaveReason::kFailed && m->synced) {
      recovery_pending_[inc] = id.nodeid;
    } else {
      PurgeOwner(inc, nullptr);
    }
  }
  // Drop member records that need nothing more.
  std::erase_if(members_, [&](const MemberInfo& m) {
    return !m.alive && recovery_pending_.count(m.incarnation) == 0;
  });
  for (const auto& id : joined) {
    if (FindMember(id) != nullptr) continue;
    MemberInfo m;
    m.id = id;
    m.incarnation = next_incarnation_++;
    m.join_seq = seq_;
    members_.push_back(m);
  }
  for (const auto& name : touched) {
    auto it = resources_.find(name);
    if (it != resources_.end()) GrantPending(&it->second, out);
  }
}

void LockTable::ApplyRecoveryDone(uint32_t nodeid, std::vector<Effect>* out) {
  std::vector<uint32_t> incs;
  for (const auto& [inc, node] : recovery_pending_) {
    if (node == nodeid) incs.push_back(inc);
  }
  for (uint32_t inc : incs) {
    recovery_pending_.erase(inc);
    PurgeOwner(inc, out);
    std::erase_if(members_, [&](const MemberInfo& m) { return m.incarnation == inc; });
  }
  if (recovery_pending_.empty()) {
    for (auto& [key, lk] : locks_) lk->noexp_grant = false;
  }
}

void LockTable::ApplyHello(const MemberId& from, uint64_t nonce) {
  MemberInfo* m = FindMemberMut(from);
  // The latest HELLO wins: an older one may be a leftover of a previous join of the same
  // process, and one sender's messages stay in order.
  if (m != nullptr && !m->synced) m->nonce = nonce;
}

bool LockTable::ApplyHeartbeat(const MemberId& from, uint32_t incarnation, uint64_t counter) {
  MemberInfo* m = FindMemberMut(from);
  if (m == nullptr || !m->synced || m->incarnation != incarnation) return false;
  m->heartbeat = std::max(m->heartbeat, counter);
  return true;
}

bool LockTable::ApplyEvict(const MemberId& target, uint32_t incarnation, uint64_t heartbeat_seen,
                           std::vector<Effect>* out) {
  const MemberInfo* m = FindMember(target);
  if (m == nullptr || m->incarnation != incarnation || m->heartbeat > heartbeat_seen) return false;
  ApplyConfChg({}, {{target, LeaveReason::kFailed}}, {}, out);
  return true;
}

void LockTable::ApplySynced(const std::vector<std::pair<MemberId, uint64_t>>& targets) {
  for (const auto& [id, nonce] : targets) {
    MemberInfo* m = FindMemberMut(id);
    if (m != nullptr && m->nonce == nonce) m->synced = true;
  }
}

void LockTable::MarkAllSynced() {
  for (auto& m : members_) {
    if (m.alive) m.synced = true;
  }
}

void LockTable::Found(const std::vector<MemberInfo>& members, uint64_t seq) {
  resources_.clear();
  inactive_.clear();
  next_toss_ = 1;
  locks_.clear();
  recovery_pending_.clear();
  members_.clear();
  next_incarnation_ = 1;
  seq_ = seq;
  for (MemberInfo m : members) {
    m.incarnation = next_incarnation_++;
    m.alive = true;
    members_.push_back(m);
  }
}

void LockTable::PurgeOwner(uint32_t owner, std::vector<Effect>* out) {
  std::vector<LockEntry*> mine;
  for (auto& [key, lk] : locks_) {
    if (lk->owner == owner) mine.push_back(lk.get());
  }
  std::set<std::string> touched;
  for (LockEntry* lk : mine) {
    // (Their LVBs were already invalidated when the owner left; a NOEXP holder may have written
    // a fresh value since.)
    Resource* r = &resources_.at(*lk->resname);
    touched.insert(r->name);
    Destroy(r, lk);
  }
  if (out == nullptr) return;  // caller re-scans
  for (const auto& name : touched) {
    auto it = resources_.find(name);
    if (it != resources_.end()) GrantPending(&it->second, out);
  }
}

// ---------------------------------------------------------------------------------------------
// Lock operations

void LockTable::ApplyOp(const MemberId& from, const LockOp& op, int64_t now_ns,
                        std::vector<Effect>* out) {
  const MemberInfo* m = FindMember(from);
  if (m == nullptr || !m->synced) {
    LOG_WARN("dlm: ignoring op from non-member " << from.nodeid << "/" << from.pid);
    return;
  }
  const uint32_t owner = m->incarnation;
  const Key key = MakeKey(owner, op.lkid);
  auto it = locks_.find(key);
  if (op.type == LockOp::kRequest) {
    if (it != locks_.end() || op.name.empty() || op.name.size() > kResNameMax || op.mode < kNL ||
        op.mode > kEX) {
      Effect e;
      e.owner = owner;
      e.lkid = op.lkid;
      e.status = kStatusInvalid;
      e.gone = it == locks_.end();
      out->push_back(e);
      return;
    }
    auto [rit, inserted] = resources_.try_emplace(op.name);
    Resource* r = &rit->second;
    if (inserted) r->name = op.name;
    if (r->toss_seq != 0) {
      inactive_.erase(r->toss_seq);
      r->toss_seq = 0;
    }
    auto lk = std::make_unique<LockEntry>();
    lk->owner = owner;
    lk->nodeid = from.nodeid;
    lk->lkid = op.lkid;
    lk->rqmode = op.mode;
    lk->exflags = op.flags;
    lk->pid = op.pid;
    lk->procname = op.procname;
    lk->queued_ns = now_ns;
    lk->resname = &r->name;
    LockEntry* raw = lk.get();
    locks_.emplace(key, std::move(lk));
    DoRequest(r, raw, out);
    return;
  }
  if (it == locks_.end()) {
    if (op.type != LockOp::kCancel) {
      Effect e;
      e.owner = owner;
      e.lkid = op.lkid;
      e.status = kStatusInvalid;
      e.gone = true;
      out->push_back(e);
    }
    return;
  }
  LockEntry* lk = it->second.get();
  Resource* r = &resources_.at(*lk->resname);
  switch (op.type) {
    case LockOp::kConvert:
      if (lk->queue != Queue::kGranted || op.mode < kNL || op.mode > kEX) {
        Complete(lk, kStatusInvalid, 0, false, out);
        return;
      }
      lk->queued_ns = now_ns;
      DoConvert(r, lk, op, out);
      return;
    case LockOp::kUnlock:
      DoUnlock(r, lk, op, out);
      return;
    case LockOp::kCancel:
      DoCancel(r, lk, out);
      return;
    default:
      return;
  }
}

void LockTable::Complete(LockEntry* lk, int status, uint32_t sbf, bool gone,
                         std::vector<Effect>* out) {
  if (!OwnerAlive(lk->owner)) return;
  Effect e;
  e.kind = Effect::kComplete;
  e.owner = lk->owner;
  e.lkid = lk->lkid;
  e.status = status;
  e.sb_flags = sbf;
  e.gone = gone;
  e.mode = gone ? static_cast<int8_t>(kIV) : lk->grmode;
  out->push_back(e);
}

void LockTable::QueueBast(LockEntry* lk, int mode, std::vector<Effect>* out) {
  lk->highbast = static_cast<int8_t>(mode);
  if (!OwnerAlive(lk->owner)) return;
  Effect e;
  e.kind = Effect::kBlock;
  e.owner = lk->owner;
  e.lkid = lk->lkid;
  e.mode = static_cast<int8_t>(mode);
  out->push_back(e);
}

void LockTable::RemoveFromQueues(Resource* r, LockEntry* lk) {
  auto drop = [lk](std::vector<LockEntry*>* q) { std::erase(*q, lk); };
  switch (lk->queue) {
    case Queue::kGranted:
      drop(&r->granted);
      break;
    case Queue::kConverting:
      drop(&r->convert);
      break;
    case Queue::kWaiting:
      drop(&r->wait);
      break;
    case Queue::kNone:
      break;
  }
  lk->queue = Queue::kNone;
}

void LockTable::InsertGranted(Resource* r, LockEntry* lk) {
  auto pos = std::find_if(r->granted.begin(), r->granted.end(),
                          [lk](const LockEntry* o) { return o->grmode < lk->grmode; });
  r->granted.insert(pos, lk);
  lk->queue = Queue::kGranted;
}

void LockTable::Destroy(Resource* r, LockEntry* lk) {
  RemoveFromQueues(r, lk);
  locks_.erase(MakeKey(lk->owner, lk->lkid));
  if (!r->empty()) return;
  if (r->lvbseq == 0 && !r->lvb_invalid) {
    resources_.erase(r->name);
    return;
  }
  r->toss_seq = next_toss_++;
  inactive_[r->toss_seq] = r->name;
  while (inactive_.size() > kMaxInactive) {
    resources_.erase(inactive_.begin()->second);
    inactive_.erase(inactive_.begin());
  }
}

void LockTable::WriteLvb(Resource* r, LockEntry* lk, bool invalidate, const Lvb& value) {
  if (invalidate) {
    r->lvb_invalid = true;
    return;
  }
  r->lvb = value;
  r->lvbseq++;
  r->lvb_invalid = false;
}

bool LockTable::CanBeGranted(const Resource& r, const LockEntry* lk, int mode, bool now) const {
  const bool conv = lk->grmode != kIV;
  if (now && !conv && (lk->exflags & kLkfExpedite)) return true;
  // NOEXP requests (and conversions of locks granted that way, so they can always convert
  // down) ignore the locks of dead nodes awaiting recovery.
  const bool noexp = ((lk->exflags & kLkfNoExp) || lk->noexp_grant) && !recovery_pending_.empty();
  for (const LockEntry* g : r.granted) {
    if (g == lk) continue;
    if (noexp && OwnerDeadPending(g->owner)) continue;
    if (!ModesCompatible(g->grmode, mode)) return false;
  }
  for (const LockEntry* c : r.convert) {
    if (c == lk) continue;
    if (noexp && OwnerDeadPending(c->owner)) continue;
    if (!ModesCompatible(c->grmode, mode)) return false;
  }
  if (noexp || (lk->exflags & kLkfNoOrder)) return true;
  if (conv && now) return !(lk->exflags & kLkfQueCvt) || r.convert.empty();
  if (conv) return !r.convert.empty() && r.convert.front() == lk;
  if (now) return r.convert.empty() && r.wait.empty();
  return r.convert.empty() && !r.wait.empty() && r.wait.front() == lk;
}

bool LockTable::ConversionDeadlock(const Resource& r, const LockEntry* lk) const {
  bool self_seen = false;
  for (const LockEntry* o : r.convert) {
    if (o == lk) {
      self_seen = true;
      continue;
    }
    if (!self_seen) {
      if (!ModesCompatible(o->rqmode, lk->grmode)) return true;
    } else if (!ModesCompatible(o->rqmode, lk->grmode) && !ModesCompatible(lk->rqmode, o->grmode)) {
      return true;
    }
  }
  return false;
}

void LockTable::Grant(Resource* r, LockEntry* lk, int mode, uint32_t extra_sbf,
                      std::vector<Effect>* out) {
  const int old = lk->grmode;
  uint32_t sbf = extra_sbf | lk->pending_sbf;
  lk->pending_sbf = 0;
  bool read = false;
  if (lk->exflags & kLkfValBlk) {
    if (old != kIV && LvbWriteOnConvert(old, mode) && lk->has_write_lvb) {
      WriteLvb(r, lk, (lk->exflags & kLkfIvValBlk) != 0, lk->write_lvb);
    } else if (LvbReadOnGrant(old, mode)) {
      read = true;
      if (r->lvb_invalid) sbf |= kSbfValNotValid;
    }
  }
  lk->has_write_lvb = false;
  RemoveFromQueues(r, lk);
  lk->grmode = static_cast<int8_t>(mode);
  lk->rqmode = kIV;
  lk->highbast = kIV;
  lk->deadlk_basted = false;
  lk->noexp_grant = (lk->exflags & kLkfNoExp) || (old != kIV && lk->noexp_grant);
  InsertGranted(r, lk);
  if (!OwnerAlive(lk->owner)) return;
  Effect e;
  e.kind = Effect::kComplete;
  e.owner = lk->owner;
  e.lkid = lk->lkid;
  e.status = kStatusOk;
  e.sb_flags = sbf;
  e.mode = static_cast<int8_t>(mode);
  if (read) {
    e.lvb_read = true;
    e.lvb = r->lvb;
  }
  out->push_back(e);
}

bool LockTable::TryGrant(Resource* r, LockEntry* lk, bool now, std::vector<Effect>* out) {
  if (CanBeGranted(*r, lk, lk->rqmode, now)) {
    Grant(r, lk, lk->rqmode, 0, out);
    return true;
  }
  int alt = kIV;
  if (lk->exflags & kLkfAltPr) alt = kPR;
  if (lk->exflags & kLkfAltCw) alt = kCW;
  if (alt != kIV && alt != lk->rqmode && CanBeGranted(*r, lk, alt, now)) {
    Grant(r, lk, alt, kSbfAltMode, out);
    return true;
  }
  return false;
}

void LockTable::SendBlockingAsts(Resource* r, LockEntry* lk, bool include_convert,
                                 std::vector<Effect>* out) {
  auto visit = [&](const std::vector<LockEntry*>& q) {
    for (LockEntry* g : std::vector<LockEntry*>(q)) {
      if (g == lk) continue;
      const bool middle =
          (g->grmode == kPR && lk->rqmode == kCW) || (g->grmode == kCW && lk->rqmode == kPR);
      bool need;
      if (middle) {
        need = g->highbast < kEX;
      } else {
        need = g->highbast < lk->rqmode && !ModesCompatible(g->grmode, lk->rqmode);
      }
      if (need) QueueBast(g, lk->rqmode, out);
    }
  };
  visit(r->granted);
  if (include_convert) visit(r->convert);
}

void LockTable::DoRequest(Resource* r, LockEntry* lk, std::vector<Effect>* out) {
  if (TryGrant(r, lk, /*now=*/true, out)) {
    // Granted past queued locks (EXPEDITE/NOEXP/NOORDER): make sure the queued ones' wishes
    // reach the new holder too.
    if (!r->convert.empty() || !r->wait.empty()) GrantPending(r, out);
    return;
  }
  if (lk->exflags & kLkfNoQueue) {
    if (lk->exflags & kLkfNoQueueBast) SendBlockingAsts(r, lk, true, out);
    Complete(lk, kStatusAgain, 0, true, out);
    Destroy(r, lk);
    return;
  }
  if (lk->exflags & kLkfHeadQue) {
    r->wait.insert(r->wait.begin(), lk);
  } else {
    r->wait.push_back(lk);
  }
  lk->queue = Queue::kWaiting;
  SendBlockingAsts(r, lk, false, out);
}

void LockTable::DoConvert(Resource* r, LockEntry* lk, const LockOp& op, std::vector<Effect>* out) {
  lk->rqmode = op.mode;
  lk->exflags = op.flags;
  lk->has_write_lvb = op.has_lvb;
  if (op.has_lvb) lk->write_lvb = op.lvb;
  if (TryGrant(r, lk, /*now=*/true, out)) {
    GrantPending(r, out);
    return;
  }
  if (ConversionDeadlock(*r, lk)) {
    if (lk->exflags & kLkfConvDeadlk) {
      // Resolve by giving up our own protection: demote to NL, let others go first.
      RemoveFromQueues(r, lk);
      lk->grmode = kNL;
      lk->pending_sbf |= kSbfDemoted;
      InsertGranted(r, lk);
      GrantPending(r, out);
      if (TryGrant(r, lk, /*now=*/true, out)) return;
    } else if (!(lk->exflags & kLkfNoDlckWt)) {
      lk->rqmode = kIV;
      lk->has_write_lvb = false;
      Complete(lk, kStatusDeadlock, 0, false, out);
      return;
    }
  }
  if (lk->exflags & kLkfNoQueue) {
    if (lk->exflags & kLkfNoQueueBast) SendBlockingAsts(r, lk, true, out);
    lk->rqmode = kIV;
    lk->has_write_lvb = false;
    Complete(lk, kStatusAgain, 0, false, out);
    return;
  }
  RemoveFromQueues(r, lk);
  if (lk->exflags & kLkfHeadQue) {
    r->convert.insert(r->convert.begin(), lk);
  } else {
    r->convert.push_back(lk);
  }
  lk->queue = Queue::kConverting;
  SendBlockingAsts(r, lk, false, out);
}

void LockTable::DoUnlock(Resource* r, LockEntry* lk, const LockOp& op, std::vector<Effect>* out) {
  if (lk->queue != Queue::kGranted && !(op.flags & kLkfForceUnlock)) {
    Complete(lk, kStatusInvalid, 0, false, out);
    return;
  }
  if ((op.flags & kLkfValBlk) && (lk->grmode == kPW || lk->grmode == kEX)) {
    if (op.flags & kLkfIvValBlk) {
      WriteLvb(r, lk, true, op.lvb);
    } else if (op.has_lvb) {
      WriteLvb(r, lk, false, op.lvb);
    }
  }
  Complete(lk, kStatusUnlock, 0, true, out);
  std::string name = r->name;
  Destroy(r, lk);
  auto it = resources_.find(name);
  if (it != resources_.end()) GrantPending(&it->second, out);
}

void LockTable::DoCancel(Resource* r, LockEntry* lk, std::vector<Effect>* out) {
  if (lk->queue == Queue::kWaiting) {
    Complete(lk, kStatusCancel, 0, true, out);
    std::string name = r->name;
    Destroy(r, lk);
    auto it = resources_.find(name);
    if (it != resources_.end()) GrantPending(&it->second, out);
    return;
  }
  if (lk->queue == Queue::kConverting) {
    RemoveFromQueues(r, lk);
    lk->rqmode = kIV;
    lk->has_write_lvb = false;
    InsertGranted(r, lk);
    Complete(lk, kStatusCancel, lk->pending_sbf, false, out);
    lk->pending_sbf = 0;
    GrantPending(r, out);
  }
  // Granted already (the cancel lost the race) or gone: nothing to cancel, no callback.
}

void LockTable::GrantPending(Resource* r, std::vector<Effect>* out) {
  int high = kIV;
  bool cw = false;
  bool progress = true;
  while (progress) {
    progress = false;
    high = kIV;
    cw = false;
    for (LockEntry* lk : std::vector<LockEntry*>(r->convert)) {
      if (TryGrant(r, lk, /*now=*/false, out)) {
        progress = true;
        break;
      }
      if (ConversionDeadlock(*r, lk)) {
        if ((lk->exflags & kLkfConvDeadlk) && lk->grmode != kNL) {
          lk->grmode = kNL;
          lk->pending_sbf |= kSbfDemoted;
          progress = true;
          break;
        }
        if ((lk->exflags & kLkfNoDlckWt) && !lk->deadlk_basted) {
          lk->deadlk_basted = true;
          QueueBast(lk, lk->rqmode, out);
        }
      }
      high = std::max<int>(high, lk->rqmode);
      if (lk->rqmode == kCW) cw = true;
    }
  }
  for (LockEntry* lk : std::vector<LockEntry*>(r->wait)) {
    if (TryGrant(r, lk, /*now=*/false, out)) continue;
    high = std::max<int>(high, lk->rqmode);
    if (lk->rqmode == kCW) cw = true;
  }
  if (high == kIV) return;
  for (LockEntry* g : std::vector<LockEntry*>(r->granted)) {
    if (cw && high == kPR && g->grmode == kPR) {
      if (g->highbast < kCW) QueueBast(g, kCW, out);
    } else if (g->highbast < high && !ModesCompatible(g->grmode, high)) {
      QueueBast(g, high, out);
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Checks, digest, snapshot

std::string LockTable::CheckInvariants() const {
  std::ostringstream err;
  size_t n = 0;
  for (const auto& [name, r] : resources_) {
    if (r.empty() != (r.toss_seq != 0)) err << "inactive flag wrong: " << name << "\n";
    for (auto* q : {&r.granted, &r.convert, &r.wait}) n += q->size();
    std::vector<const LockEntry*> held;
    for (const LockEntry* g : r.granted) {
      if (g->queue != Queue::kGranted) err << "bad queue tag on granted " << g->lkid << "\n";
      held.push_back(g);
    }
    for (const LockEntry* c : r.convert) {
      if (c->queue != Queue::kConverting) err << "bad queue tag on convert " << c->lkid << "\n";
      held.push_back(c);
    }
    for (size_t i = 0; i < held.size(); ++i) {
      for (size_t j = i + 1; j < held.size(); ++j) {
        const LockEntry* a = held[i];
        const LockEntry* b = held[j];
        if (ModesCompatible(a->grmode, b->grmode)) continue;
        const bool a_dead = OwnerDeadPending(a->owner);
        const bool b_dead = OwnerDeadPending(b->owner);
        if ((a_dead && b->noexp_grant) || (b_dead && a->noexp_grant) ||
            (a->exflags & kLkfExpedite) || (b->exflags & kLkfExpedite))
          continue;
        err << "incompatible granted modes on \"" << name << "\": " << a->nodeid << ":" << a->lkid
            << " " << ModeName(a->grmode) << " vs " << b->nodeid << ":" << b->lkid << " "
            << ModeName(b->grmode) << "\n";
      }
    }
  }
  if (n != locks_.size()) err << "lock count mismatch " << n << " vs " << locks_.size() << "\n";
  return err.str();
}

namespace {
uint64_t Mix(uint64_t h, uint64_t v) {
  h ^= v + 0x9e3779b97f4a7c15ULL + (h << 6) + (h >> 2);
  return h * 0xff51afd7ed558ccdULL;
}
uint64_t MixStr(uint64_t h, const std::string& s) {
  for (unsigned char c : s) h = Mix(h, c);
  return Mix(h, s.size());
}
}  // namespace

uint64_t LockTable::Digest() const {
  uint64_t h = Mix(0, seq_);
  h = Mix(h, next_toss_);
  h = Mix(h, next_incarnation_);
  for (const auto& m : members_) {
    h = Mix(h, m.id.nodeid);
    h = Mix(h, m.id.pid);
    h = Mix(h, m.incarnation);
    h = Mix(h, (m.synced ? 1 : 0) | (m.alive ? 2 : 0));
    h = Mix(h, m.join_seq);
    h = Mix(h, m.nonce);
    h = Mix(h, m.heartbeat);
  }
  for (const auto& [inc, node] : recovery_pending_) h = Mix(Mix(h, inc), node);
  for (const auto& [name, r] : resources_) {
    h = MixStr(h, name);
    for (uint8_t b : r.lvb) h = Mix(h, b);
    h = Mix(h, r.lvbseq);
    h = Mix(h, r.lvb_invalid);
    h = Mix(h, r.toss_seq);
    for (auto* q : {&r.granted, &r.convert, &r.wait}) {
      h = Mix(h, q->size());
      for (const LockEntry* lk : *q) {
        h = Mix(h, lk->owner);
        h = Mix(h, lk->lkid);
        h = Mix(h, static_cast<uint8_t>(lk->grmode));
        h = Mix(h, static_cast<uint8_t>(lk->rqmode));
        h = Mix(h, lk->exflags);
        h = Mix(h, static_cast<uint8_t>(lk->highbast));
        h = Mix(h, lk->pending_sbf);
        h = Mix(h, lk->noexp_grant);
      }
    }
  }
  return h;
}

void LockTable::EncodeSnapshot(ByteWriter* w) const {
  w->U64(seq_);
  w->U64(next_toss_);
  w->U32(next_incarnation_);
  w->U32(static_cast<uint32_t>(members_.size()));
  for (const auto& m : members_) {
    w->U32(m.id.nodeid);
    w->U32(m.id.pid);
    w->U32(m.incarnation);
    w->U8((m.synced ? 1 : 0) | (m.alive ? 2 : 0));
    w->U64(m.join_seq);
    w->U64(m.nonce);
  }
  w->U32(static_cast<uint32_t>(recovery_pending_.size()));
  for (const auto& [inc, node] : recovery_pending_) {
    w->U32(inc);
    w->U32(node);
  }
  w->U32(static_cast<uint32_t>(resources_.size()));
  for (const auto& [name, r] : resources_) {
    w->Str(name);
    w->Bytes(r.lvb.data(), r.lvb.size());
    w->U32(r.lvbseq);
    w->U8(r.lvb_invalid);
    w->U64(r.toss_seq);
    for (auto* q : {&r.granted, &r.convert, &r.wait}) {
      w->U32(static_cast<uint32_t>(q->size()));
      for (const LockEntry* lk : *q) {
        w->U32(lk->owner);
        w->U32(lk->nodeid);
        w->U32(lk->lkid);
        w->U8(static_cast<uint8_t>(lk->grmode));
        w->U8(static_cast<uint8_t>(lk->rqmode));
        w->U32(lk->exflags);
        w->U8(static_cast<uint8_t>(lk->highbast));
        w->U32(lk->pending_sbf);
        w->U8(lk->deadlk_basted);
        w->U8(lk->noexp_grant);
        w->U8(lk->has_write_lvb);
        w->Bytes(lk->write_lvb.data(), lk->write_lvb.size());
        w->U32(lk->pid);
        w->Str(lk->procname);
        w->I64(lk->queued_ns);
      }
    }
  }
  // Appended last so that older decoders, which stop after the resources, still understand the
  // snapshot: the members' heartbeat counters, in member order.
  w->U32(static_cast<uint32_t>(members_.size()));
  for (const auto& m : members_) w->U64(m.heartbeat);
}

bool LockTable::DecodeSnapshot(ByteReader* rd) {
  resources_.clear();
  locks_.clear();
  members_.clear();
  recovery_pending_.clear();
  inactive_.clear();
  seq_ = rd->U64();
  next_toss_ = rd->U64();
  next_incarnation_ = rd->U32();
  uint32_t nm = rd->U32();
  for (uint32_t i = 0; i < nm && rd->ok(); ++i) {
    MemberInfo m;
    m.id.nodeid = rd->U32();
    m.id.pid = rd->U32();
    m.incarnation = rd->U32();
    uint8_t f = rd->U8();
    m.synced = f & 1;
    m.alive = f & 2;
    m.join_seq = rd->U64();
    m.nonce = rd->U64();
    members_.push_back(m);
  }
  uint32_t nr = rd->U32();
  for (uint32_t i = 0; i < nr && rd->ok(); ++i) {
    uint32_t inc = rd->U32();
    recovery_pending_[inc] = rd->U32();
  }
  uint32_t nres = rd->U32();
  for (uint32_t i = 0; i < nres && rd->ok(); ++i) {
    std::string name = rd->Str(kResNameMax);
    Resource& r = resources_[name];
    r.name = name;
    rd->Bytes(r.lvb.data(), r.lvb.size());
    r.lvbseq = rd->U32();
    r.lvb_invalid = rd->U8() != 0;
    r.toss_seq = rd->U64();
    if (r.toss_seq != 0) inactive_[r.toss_seq] = name;
    const Queue tags[3] = {Queue::kGranted, Queue::kConverting, Queue::kWaiting};
    std::vector<LockEntry*>* qs[3] = {&r.granted, &r.convert, &r.wait};
    for (int qi = 0; qi < 3; ++qi) {
      uint32_t n = rd->U32();
      for (uint32_t j = 0; j < n && rd->ok(); ++j) {
        auto lk = std::make_unique<LockEntry>();
        lk->owner = rd->U32();
        lk->nodeid = rd->U32();
        lk->lkid = rd->U32();
        lk->grmode = static_cast<int8_t>(rd->U8());
        lk->rqmode = static_cast<int8_t>(rd->U8());
        lk->exflags = rd->U32();
        lk->highbast = static_cast<int8_t>(rd->U8());
        lk->pending_sbf = rd->U32();
        lk->deadlk_basted = rd->U8() != 0;
        lk->noexp_grant = rd->U8() != 0;
        lk->has_write_lvb = rd->U8() != 0;
        rd->Bytes(lk->write_lvb.data(), lk->write_lvb.size());
        lk->pid = rd->U32();
        lk->procname = rd->Str(256);
        lk->queued_ns = rd->I64();
        lk->queue = tags[qi];
        lk->resname = &r.name;
        qs[qi]->push_back(lk.get());
        locks_.emplace(MakeKey(lk->owner, lk->lkid), std::move(lk));
      }
    }
  }
  if (rd->ok() && rd->remaining() > 0) {  // absent in snapshots of older senders
    const uint32_t nh = rd->U32();
    for (uint32_t i = 0; i < nh && rd->ok(); ++i) {
      const uint64_t hb = rd->U64();
      if (i < members_.size()) members_[i].heartbeat = hb;
    }
  }
  return rd->ok();
}

}  // namespace ugfs2::dlm
