#include "glock_lock_module.h"

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <sstream>
#include <string_view>
#include <utility>
#include <vector>

#include "common/log.h"
#include "lock_table.h"

namespace ugfs2::dlm {

using glock::GlockName;
using glock::GlockType;
using glock::LmReply;
using glock::State;

namespace {

// Work to do once the module's mutex is released (replies, callbacks).
using AfterUnlock = std::vector<std::function<void()>>;

}  // namespace

// ---------------------------------------------------------------------------------------------
// Mappings

int DlmLockModule::ModeFor(State state) {
  switch (state) {
    case State::kUnlocked:
      return kNL;
    case State::kShared:
      return kPR;
    case State::kDeferred:
      return kCW;
    case State::kExclusive:
      return kEX;
  }
  return kNL;
}

State DlmLockModule::WantedFor(int bast_mode) {
  switch (bast_mode) {
    case kEX:
      return State::kUnlocked;
    case kCW:
      return State::kDeferred;
    case kPR:
      return State::kShared;
    default:
      // No glock asks for CR or PW; give everything up rather than guess.
      LOG_ERROR("glock lock module: blocking callback for unexpected mode " << ModeName(bast_mode));
      return State::kUnlocked;
  }
}

bool DlmLockModule::HasLvb(GlockType type) {
  return type == GlockType::kRgrp || type == GlockType::kQuota;
}

uint32_t DlmLockModule::LockFlags(GlockType type, int grmode, int rqmode, uint32_t holder_flags) {
  uint32_t f = 0;
  if (HasLvb(type)) f |= kLkfValBlk;
  if (holder_flags & glock::kTry) f |= kLkfNoQueue;
  if (holder_flags & glock::kTry1Cb) f |= kLkfNoQueue | kLkfNoQueueBast;
  if (holder_flags & glock::kNoExp) f |= kLkfNoExp;
  if (grmode != kIV) {
    f |= kLkfConvert;
    // gfs2: QUECVT on conversions that block (not down-conversions, not try locks).
    if (!(f & kLkfNoQueue) && QueCvtAllowed(grmode, rqmode)) f |= kLkfQueCvt;
  }
  return f;
}

// ---------------------------------------------------------------------------------------------
// The shared state

struct DlmLockModule::Core : std::enable_shared_from_this<Core> {
  // A request waiting for an unlock of the same glock's NL lock to finish.
  struct Pending {
    State from = State::kUnlocked;
    State to = State::kUnlocked;
    uint32_t flags = 0;
    ReplyFn reply;
  };
  struct Entry {
    GlockName name;
    uint64_t gen = 0;  // tells this entry's callbacks from those of an earlier lock on the name
    Lksb lksb;         // lksb.lkid != 0 while the DLM lock exists
    int grmode = kIV;  // as of the last completion
    // The request in flight.
    bool inflight = false;
    bool inflight_new = false;
    // A provisional reply (glock::kNewObject) is on its way to the caller outside mu: the real
    // reply waits until it has been delivered, so the runner sees them in order.
    bool early_pending = false;
    int rqmode = kIV;
    State from = State::kUnlocked;
    State to = State::kUnlocked;
    ReplyFn reply;
    // An unlock in flight (NL cache eviction, or a Shutdown unlock that timed out).
    bool unlocking = false;
    std::optional<Pending> deferred;
    // The LVB (types with one): our copy, handed to the lksb before leaving EX.
    bool lvb_valid = false;
    Lvb lvb{};
    uint64_t nl_seq = 0;  // position in nl_lru; 0 when not there
    bool has_lock() const { return lksb.lkid != 0; }
    bool idle() const { return !inflight && !unlocking; }
  };

  Core(Lockspace* l, DlmLockModuleOptions o) : ls(l), options(o) {}

  Entry* Find(const GlockName& name) {
    auto it = entries.find(name);
    return it == entries.end() ? nullptr : it->second.get();
  }
  void Erase(Entry* e) {
    NlRemove(e);
    entries.erase(e->name);
  }
  void NlRemove(Entry* e) {
    if (e->nl_seq == 0) return;
    nl_lru.erase(e->nl_seq);
    e->nl_seq = 0;
  }
  // `e` now sits idle in NL: put it at the young end; unlock the oldest beyond the limit.
  void NlAdd(Entry* e) {
    if (options.max_idle_nl_locks == 0) return;
    NlRemove(e);
    e->nl_seq = next_nl_seq++;
    nl_lru.emplace(e->nl_seq, e->name);
    while (nl_lru.size() > options.max_idle_nl_locks) {
      Entry* old = Find(nl_lru.begin()->second);
      nl_lru.erase(nl_lru.begin());
      old->nl_seq = 0;
      Status st = ls->Unlock(old->lksb.lkid, 0);
      if (st.ok()) {
        old->unlocking = true;
        stats.nl_unlocks++;
        Bump(unlocks);
      } else {
        LOG_WARN("glock lock module: unlocking idle NL lock of " << old->name.ToString()
                                                                 << " failed: " << st.ToString());
      }
    }
  }

  // Latches `fenced` when the lockspace is (or has been, since we started) fenced.
  bool CheckFenced() {
    if (fenced) return true;
    const LockspaceInfo info = ls->Info();
    if (info.state == LsState::kFenced || info.state == LsState::kDead ||
        info.fence_count != base_fence_count) {
      SetFenced(std::string("lockspace state ") + LsStateName(info.state) + ", fenced " +
                std::to_string(info.fence_count) + " time(s)");
    }
    return fenced;
  }
  // Every lock is gone: idle entries are dropped (entries with an operation in flight still get
  // that operation's completion, which the lockspace posts with kStatusFenced).
  void SetFenced(const std::string& why) {
    if (!fenced) {
      LOG_ERROR("glock lock module on lockspace " << ls->name() << ": fenced (" << why
                                                  << "); all its locks are gone");
    }
    fenced = true;
    for (auto it = entries.begin(); it != entries.end();) {
      Entry* e = it->second.get();
      if (e->idle() && !e->deferred) {
        NlRemove(e);
        it = entries.erase(it);
      } else {
        ++it;
      }
    }
  }
  // The lockspace fenced this node (its fence hook, on the callback thread): every request still
  // in flight is answered now and every entry goes. The lockspace posts the fenced completions
  // of the operations it still tracked before it posts the fence hook (one queue, in order), so
  // whatever is still in flight here never gets one: a completion it was holding back while
  // quorum was unconfirmed is dropped when it fences. (Nothing of the lockspace refers to an
  // entry's Lksb any more, so the entries may go.)
  void FenceNow(const std::string& why, AfterUnlock* after) {
    SetFenced(why);
    for (auto& [name, ep] : entries) {
      Entry* e = ep.get();
      if (e->inflight && e->reply) {
        stats.failed++;
        Reply(after, std::move(e->reply), FencedReply(e->from, e->to));
      }
      if (e->deferred && e->deferred->reply) {
        Reply(after, std::move(e->deferred->reply),
              FencedReply(e->deferred->from, e->deferred->to));
      }
    }
    entries.clear();
    nl_lru.clear();
    cv.notify_all();
  }
  LmReply FencedReply(State from, State to) const {
    LmReply r;
    if (to == State::kUnlocked) {
      r.state = State::kUnlocked;  // the lock is gone: that is UN
      return r;
    }
    r.state = from;
    r.error = Status::Fenced("lockspace " + ls->name() + " fenced: glock locks are gone");
    return r;
  }
  // Runs `after` (collected under mu; Begin() counted it) with mu released. Shutdown waits for
  // `running` to drop to 0, so no reply or callback is still executing once it returns.
  bool Begin(const AfterUnlock& after) {
    if (after.empty()) return false;
    ++running;
    return true;
  }
  void Deliver(AfterUnlock* after) {
    for (auto& fn : *after) fn();
    after->clear();
    std::lock_guard<std::mutex> l(mu);
    --running;
    cv.notify_all();
  }

  void Reply(AfterUnlock* after, ReplyFn reply, LmReply r) const {
    if (dead || !reply) return;
    after->push_back([reply = std::move(reply), r = std::move(r)] { reply(r); });
  }

  // Request, under mu.
  void Start(const GlockName& name, State from, State to, uint32_t flags, ReplyFn reply,
             AfterUnlock* after) {
    if (shut_down) {
      LmReply r;
      r.state = to == State::kUnlocked ? to : from;
      if (to != State::kUnlocked)
        r.error = Status(Code::kNotConnected, "glock lock module shut down");
      Reply(after, std::move(reply), r);
      return;
    }
    if (CheckFenced()) {
      Reply(after, std::move(reply), FencedReply(from, to));
      return;
    }
    Entry* e = Find(name);
    if (e != nullptr && (e->inflight || (e->unlocking && e->deferred))) {
      LmReply r;
      r.state = from;
      r.error = Status::Busy("glock lock module: a request is in flight on " + name.ToString());
      Reply(after, std::move(reply), r);
      return;
    }
    if (e != nullptr && e->unlocking) {
      e->deferred = Pending{from, to, flags, std::move(reply)};
      return;
    }
    if (e == nullptr || !e->has_lock()) {
      if (to == State::kUnlocked) {
        if (e != nullptr) Erase(e);
        LmReply r;
        r.state = State::kUnlocked;
        Reply(after, std::move(reply), r);
        return;
      }
      if (e == nullptr) {
        auto fresh = std::make_unique<Entry>();
        fresh->name = name;
        fresh->gen = next_gen++;
        e = fresh.get();
        entries.emplace(name, std::move(fresh));
      }
    } else {
      NlRemove(e);
      if (to == State::kUnlocked && e->grmode == kNL) {
        NlAdd(e);
        LmReply r;
        r.state = State::kUnlocked;
        Reply(after, std::move(reply), r);
        return;
      }
    }
    const bool convert = e->has_lock();
    const int mode = ModeFor(to);
    uint32_t lkf = LockFlags(name.type, convert ? e->grmode : int{kIV}, mode, flags);
    if (convert && HasLvb(name.type) && e->grmode == kEX) {
      e->lksb.lvb = e->lvb;  // stored by the lock manager when this conversion is granted
      if (!e->lvb_valid) lkf |= kLkfIvValBlk;
    }
    e->inflight = true;
    e->inflight_new = !convert;
    e->rqmode = mode;
    e->from = from;
    e->to = to;
    e->reply = std::move(reply);
    CompletionFn ast;
    BlockingFn bast;
    std::string resname;
    if (!convert) {
      // A new lock gets new callbacks (a conversion keeps the lock's); a fresh generation keeps
      // them apart from any earlier lock of this entry.
      e->gen = next_gen++;
      std::shared_ptr<Core> self = shared_from_this();
      const uint64_t gen = e->gen;
      ast = [self, name, gen] { self->OnCompletion(name, gen); };
      bast = [self, name, gen](int m) { self->OnBlocking(name, gen, m); };
      resname = name.DlmResourceName();
    }
    // A creator's new lock on a resource nobody holds or waits for in our replica: answer at
    // once, provisionally (the grant is expected; the real reply follows). Only another node's
    // request ordered before ours, for an object it cannot know yet, can make it wait.
    // Nobody waits for its real reply: it may travel with the requests that follow (kLkfBatch).
    // A try lock answered provisionally must be had: it queues (no NOQUEUE) like any request.
    const bool early = !convert && to != State::kUnlocked && (flags & glock::kNewObject) &&
                       ls->ResourceIdle(resname);
    if (early) lkf = (lkf & ~(kLkfNoQueue | kLkfNoQueueBast)) | kLkfBatch;
    const Status st = ls->Lock(mode, &e->lksb, lkf, resname, std::move(ast), std::move(bast));
    stats.requests++;
    if (st.ok()) {
      Bump(convert ? converts : requests);
      if (early && e->reply) {
        stats.provisional++;
        Bump(provisional);
        e->early_pending = true;
        LmReply r;
        r.state = to;
        r.provisional = true;
        ReplyFn fn = e->reply;  // the real reply keeps its own copy
        std::shared_ptr<Core> self = shared_from_this();
        const uint64_t gen = e->gen;
        after->push_back([self, name, gen, fn = std::move(fn), r = std::move(r)] {
          if (!self->dead) fn(r);
          std::lock_guard<std::mutex> l(self->mu);
          Entry* pe = self->Find(name);
          if (pe != nullptr && pe->gen == gen) pe->early_pending = false;
          self->cv.notify_all();
        });
      }
      return;
    }
    stats.failed++;
    e->inflight = false;
    ReplyFn fn = std::move(e->reply);
    e->reply = nullptr;
    if (!convert) e->lksb.lkid = 0;  // Lock sets it before sending
    if (st.code() == Code::kFenced || (convert && st.code() == Code::kNotFound)) {
      // kNotFound: our lock vanished under us, which only a fence (or a Leave) does.
      SetFenced("request on " + name.ToString() + ": " + st.ToString());
      Reply(after, std::move(fn), FencedReply(from, to));
      return;
    }
    if (!e->has_lock()) {
      Erase(e);
    } else if (e->grmode == kNL) {
      NlAdd(e);
    }
    LmReply r;
    r.state = from;
    r.error = st;
    Reply(after, std::move(fn), r);
  }

  // The lock's completion callback (callback thread).
  void OnCompletion(const GlockName& name, uint64_t gen) {
    Bump(completions);
    AfterUnlock after;
    {
      std::unique_lock<std::mutex> l(mu);
      // The provisional reply of this request goes first (its deliverer never waits for us).
      cv.wait(l, [&] {
        Entry* pe = Find(name);
        return pe == nullptr || pe->gen != gen || !pe->early_pending;
      });
      Entry* e = Find(name);
      if (e == nullptr || e->gen != gen) {
        LOG_WARN("glock lock module: stray completion for " << name.ToString());
        return;
      }
      const int status = e->lksb.status;
      if (e->unlocking) {
        FinishUnlock(e, status, &after);
      } else if (!e->inflight) {
        LOG_WARN("glock lock module: completion without a request for "
                 << name.ToString() << " (" << StatusName(status) << ")");
      } else {
        FinishRequest(e, status, &after);
      }
      cv.notify_all();
      if (!Begin(after)) return;
    }
    Deliver(&after);
  }

  void FinishUnlock(Entry* e, int status, AfterUnlock* after) {
    e->unlocking = false;
    std::optional<Pending> d = std::move(e->deferred);
    e->deferred.reset();
    const GlockName name = e->name;
    if (status == kStatusFenced) {
      Erase(e);
      SetFenced("unlock of " + name.ToString() + " failed: fenced");
      if (d) Reply(after, std::move(d->reply), FencedReply(d->from, d->to));
      return;
    }
    if (status == kStatusUnlock) {
      e->lksb.lkid = 0;
      e->grmode = kIV;
      e->lvb_valid = false;
    } else {
      LOG_WARN("glock lock module: unlock of " << name.ToString()
                                               << " failed: " << StatusName(status));
    }
    if (d && !dead) {
      Start(name, d->from, d->to, d->flags, std::move(d->reply), after);
    } else if (!e->has_lock()) {
      Erase(e);
    } else if (e->grmode == kNL && !shut_down) {
      NlAdd(e);
    }
  }

  void FinishRequest(Entry* e, int status, AfterUnlock* after) {
    e->inflight = false;
    ReplyFn reply = std::move(e->reply);
    e->reply = nullptr;
    const int old = e->grmode;
    LmReply r;
    r.state = e->from;
    bool gone = false;
    switch (status) {
      case kStatusOk:
        stats.granted++;
        e->grmode = e->rqmode;
        r.state = e->to;
        if (HasLvb(e->name.type) && LvbReadOnGrant(old, e->grmode)) {
          e->lvb = e->lksb.lvb;
          e->lvb_valid = !(e->lksb.flags & kSbfValNotValid);
        }
        break;
      case kStatusAgain:  // NOQUEUE: would block
        stats.refused++;
        gone = e->inflight_new;
        break;
      case kStatusDeadlock:  // conversion deadlock: refused, the old mode is kept
        stats.deadlocks++;
        gone = e->inflight_new;
        break;
      case kStatusCancel:
        stats.canceled++;
        r.canceled = true;
        gone = e->inflight_new;
        break;
      case kStatusFenced: {
        stats.failed++;
        const GlockName name = e->name;
        r = FencedReply(e->from, e->to);
        Erase(e);
        SetFenced("request on " + name.ToString() + " failed: fenced");
        Reply(after, std::move(reply), r);
        return;
      }
      default:
        stats.failed++;
        gone = e->inflight_new;
        r.error = Status::IoError("dlm request " + std::string(ModeName(old)) + "->" +
                                  ModeName(e->rqmode) + " on glock " + e->name.ToString() +
                                  " failed: " + StatusName(status));
        break;
    }
    if (gone) {
      e->lksb.lkid = 0;
      e->grmode = kIV;
    }
    Reply(after, std::move(reply), r);
    if (!e->has_lock()) {
      Erase(e);
    } else if (e->grmode == kNL && !shut_down) {
      NlAdd(e);
    }
  }

  // The lock's blocking callback (callback thread).
  void OnBlocking(const GlockName& name, uint64_t gen, int mode) {
    Bump(callbacks);
    AfterUnlock after;
    {
      std::lock_guard<std::mutex> l(mu);
      if (dead || shut_down || !blocking) return;
      Entry* e = Find(name);
      if (e == nullptr || e->gen != gen || !e->has_lock()) return;
      after.push_back([cb = blocking, name, wanted = WantedFor(mode)] { cb(name, wanted); });
      stats.blocking++;
      Begin(after);
    }
    Deliver(&after);
  }

  // A request waiting behind an unlock of the same glock never reached the lock manager: it
  // answers "canceled" from where it was. REQUIRES mu.
  void CancelDeferredLocked(Entry* e, AfterUnlock* after) {
    Pending d = std::move(*e->deferred);
    e->deferred.reset();
    LmReply r;
    r.canceled = true;
    r.state = d.from;
    Reply(after, std::move(d.reply), r);
  }

  void CancelRequest(const GlockName& name) {
    AfterUnlock after;
    {
      std::lock_guard<std::mutex> l(mu);
      Entry* e = Find(name);
      if (e == nullptr) return;
      if (e->deferred) {
        CancelDeferredLocked(e, &after);
      } else if (e->inflight && e->has_lock()) {
        const Status st = ls->Unlock(e->lksb.lkid, kLkfCancel);
        if (st.ok()) {
          Bump(cancels);
        } else {
          LOG_DEBUG("glock lock module: cancel " << name.ToString() << ": " << st.ToString());
        }
      }
      if (!Begin(after)) return;
    }
    Deliver(&after);
  }

  Status Shutdown(std::chrono::milliseconds timeout) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    // UnlockSync refuses the callback thread before anything else (lock id 0 never exists).
    const Status probe = ls->UnlockSync(0, 0, nullptr, std::chrono::milliseconds(0));
    if (probe.code() == Code::kInvalid) {
      return Status::Invalid("glock lock module: Shutdown on the lockspace's callback thread");
    }
    AfterUnlock after;
    std::unique_lock<std::mutex> l(mu);
    if (shutdown_done) return Status::Ok();
    shut_down = true;
    for (auto& [name, e] : entries) {
      NlRemove(e.get());
      if (e->deferred) CancelDeferredLocked(e.get(), &after);
      if (e->inflight && e->has_lock() && ls->Unlock(e->lksb.lkid, kLkfCancel).ok()) {
        Bump(cancels);
      }
    }
    if (Begin(after)) {
      l.unlock();
      Deliver(&after);
      l.lock();
    }
    auto all_idle = [this] {
      for (const auto& [name, e] : entries) {
        if (!e->idle()) return false;
      }
      return running == 0;
    };
    const bool settled = cv.wait_until(l, deadline, all_idle);
    struct Target {
      GlockName name;
      uint64_t gen = 0;
      uint32_t lkid = 0;
      uint32_t flags = 0;
      Lksb* lksb = nullptr;
    };
    std::vector<Target> targets;
    if (!CheckFenced()) {
      for (auto& [name, e] : entries) {
        if (!e->idle() || !e->has_lock()) continue;
        uint32_t f = 0;
        if (HasLvb(name.type)) {
          f |= kLkfValBlk;
          if (e->grmode == kEX) {
            e->lksb.lvb = e->lvb;
            if (!e->lvb_valid) f |= kLkfIvValBlk;
          }
        }
        e->unlocking = true;
        targets.push_back(Target{name, e->gen, e->lksb.lkid, f, &e->lksb});
      }
    }
    l.unlock();
    Status first;
    for (const Target& t : targets) {
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
          deadline - std::chrono::steady_clock::now());
      const Status st =
          ls->UnlockSync(t.lkid, t.flags, t.lksb, std::max(left, std::chrono::milliseconds(0)));
      if (st.ok() || st.code() == Code::kTimedOut) Bump(unlocks);  // sent (maybe not done)
      std::lock_guard<std::mutex> g(mu);
      Entry* e = Find(t.name);
      if (e == nullptr || e->gen != t.gen) continue;
      if (st.code() == Code::kTimedOut) {
        // Still unlocking: the completion comes through OnCompletion later.
        if (first.ok()) first = st;
        continue;
      }
      e->unlocking = false;
      if (st.ok() && e->lksb.status == kStatusUnlock) {
        Erase(e);
      } else if (st.code() == Code::kFenced || (st.ok() && e->lksb.status == kStatusFenced)) {
        Erase(e);
        SetFenced("unlock during shutdown: fenced");
      } else if (first.ok()) {
        first = st.ok() ? Status::IoError("unlock of glock " + t.name.ToString() +
                                          " failed: " + StatusName(e->lksb.status))
                        : st;
      }
    }
    l.lock();
    if (!settled && first.ok()) {
      std::string busy;
      for (const auto& [name, e] : entries) {
        if (!e->idle()) busy += " " + name.ToString();
      }
      first = Status(Code::kTimedOut, "glock lock module: requests still in flight on" + busy);
    }
    if (first.ok() && fenced) entries.clear();  // (only entries without locks can be left)
    shutdown_done = first.ok();
    return first;
  }

  std::string Dump() const {
    std::ostringstream o;
    o << "glock lock module on " << ls->name() << ": " << entries.size() << " lock(s)"
      << (fenced ? ", fenced" : "") << (shut_down ? ", shut down" : "") << "; requests "
      << stats.requests << " granted " << stats.granted << " refused " << stats.refused
      << " deadlocks " << stats.deadlocks << " canceled " << stats.canceled << " failed "
      << stats.failed << " blocking " << stats.blocking << " nl-unlocks " << stats.nl_unlocks
      << " provisional " << stats.provisional << "\n";
    for (const auto& [name, e] : entries) {
      o << "  " << name.ToString() << " lkid:" << std::hex << e->lksb.lkid << std::dec
        << " gr:" << ModeName(e->grmode);
      if (e->inflight) {
        o << " rq:" << ModeName(e->rqmode) << (e->inflight_new ? " (new)" : "") << " "
          << glock::StateName(e->from) << "->" << glock::StateName(e->to);
      }
      if (e->early_pending) o << " provisional";
      if (e->unlocking) o << " unlocking";
      if (e->deferred) o << " deferred->" << glock::StateName(e->deferred->to);
      if (HasLvb(name.type)) o << (e->lvb_valid ? " lvb" : " lvb-invalid");
      if (e->nl_seq) o << " nl-cached";
      o << "\n";
    }
    return o.str();
  }

  Lockspace* const ls;
  const DlmLockModuleOptions options;
  mutable std::mutex mu;       // guards everything below
  std::condition_variable cv;  // an operation completed
  std::map<GlockName, std::unique_ptr<Entry>> entries;
  std::map<uint64_t, GlockName> nl_lru;  // idle NL locks, least recently used first
  uint64_t next_nl_seq = 1;
  uint64_t next_gen = 1;
  BlockingCallback blocking;
  uint64_t base_fence_count = 0;
  bool fenced = false;
  bool shut_down = false;
  bool shutdown_done = false;
  bool dead = false;  // the module object is gone: replies and blocking callbacks are dropped
  DlmLockModuleStats stats;
  // DlmLockModuleCounters: relaxed atomics (read without mu).
  std::atomic<uint64_t> requests{0}, converts{0}, unlocks{0}, cancels{0}, completions{0},
      callbacks{0}, provisional{0};
  static void Bump(std::atomic<uint64_t>& c) { c.fetch_add(1, std::memory_order_relaxed); }
  int running = 0;  // batches of replies and callbacks executing outside mu (Begin/Deliver)
};

// ---------------------------------------------------------------------------------------------
// The module

DlmLockModule::DlmLockModule(Lockspace* ls, DlmLockModuleOptions options)
    : core_(std::make_shared<Core>(ls, options)) {
  core_->base_fence_count = ls->Info().fence_count;
}

DlmLockModule::~DlmLockModule() {
  {
    // By contract the runner is gone: nobody is left to receive replies.
    std::lock_guard<std::mutex> l(core_->mu);
    core_->dead = true;
    core_->blocking = nullptr;
  }
  const Status st = core_->Shutdown(std::chrono::seconds(5));
  if (!st.ok()) LOG_WARN("glock lock module: shutdown in destructor: " << st.ToString());
  std::lock_guard<std::mutex> l(core_->mu);
  for (auto& [name, e] : core_->entries) e->reply = nullptr;
}

void DlmLockModule::Request(const GlockName& name, State from, State to, uint32_t flags,
                            ReplyFn reply) {
  AfterUnlock after;
  {
    std::lock_guard<std::mutex> l(core_->mu);
    core_->Start(name, from, to, flags, std::move(reply), &after);
    if (!core_->Begin(after)) return;
  }
  core_->Deliver(&after);
}

void DlmLockModule::Cancel(const GlockName& name) { core_->CancelRequest(name); }

void DlmLockModule::Expedite() { core_->ls->FlushBatch(); }

void DlmLockModule::SetBlockingCallback(BlockingCallback cb) {
  std::lock_guard<std::mutex> l(core_->mu);
  core_->blocking = std::move(cb);
}

bool DlmLockModule::ReadLvb(const GlockName& name, Lvb* out) {
  std::lock_guard<std::mutex> l(core_->mu);
  if (!HasLvb(name.type)) return false;
  Core::Entry* e = core_->Find(name);
  if (e == nullptr || !e->has_lock() || e->grmode <= kNL || !e->lvb_valid) return false;
  *out = e->lvb;
  return true;
}

void DlmLockModule::WriteLvb(const GlockName& name, const Lvb& value) {
  std::lock_guard<std::mutex> l(core_->mu);
  Core::Entry* e = HasLvb(name.type) ? core_->Find(name) : nullptr;
  if (e == nullptr || !e->has_lock() || e->grmode != kEX) {
    LOG_WARN("glock lock module: WriteLvb on " << name.ToString() << " without holding EX");
    return;
  }
  e->lvb = value;
  e->lvb_valid = true;
}

Status DlmLockModule::Shutdown(std::chrono::milliseconds timeout) {
  return core_->Shutdown(timeout);
}

int DlmLockModule::GrantedMode(const GlockName& name) const {
  std::lock_guard<std::mutex> l(core_->mu);
  Core::Entry* e = core_->Find(name);
  return e != nullptr && e->has_lock() ? e->grmode : int{kIV};
}

size_t DlmLockModule::LockCount() const {
  std::lock_guard<std::mutex> l(core_->mu);
  size_t n = 0;
  for (const auto& [name, e] : core_->entries) n += e->has_lock() ? 1 : 0;
  return n;
}

void DlmLockModule::Fence(const std::string& why) {
  AfterUnlock after;
  {
    std::lock_guard<std::mutex> l(core_->mu);
    core_->FenceNow(why, &after);
    if (!core_->Begin(after)) return;
  }
  core_->Deliver(&after);
}

bool DlmLockModule::fenced() const {
  std::lock_guard<std::mutex> l(core_->mu);
  return core_->fenced;
}

DlmLockModuleStats DlmLockModule::Stats() const {
  std::lock_guard<std::mutex> l(core_->mu);
  return core_->stats;
}

DlmLockModuleCounters DlmLockModule::Counters() const {
  const Core& c = *core_;
  DlmLockModuleCounters out;
  out.requests = c.requests.load(std::memory_order_relaxed);
  out.converts = c.converts.load(std::memory_order_relaxed);
  out.unlocks = c.unlocks.load(std::memory_order_relaxed);
  out.cancels = c.cancels.load(std::memory_order_relaxed);
  out.completions = c.completions.load(std::memory_order_relaxed);
  out.callbacks = c.callbacks.load(std::memory_order_relaxed);
  out.provisional = c.provisional.load(std::memory_order_relaxed);
  return out;
}

std::string DlmLockModule::Dump() const {
  std::lock_guard<std::mutex> l(core_->mu);
  return core_->Dump();
}

}  // namespace ugfs2::dlm
