// DlmLockModule: the glock layer's lock module over a ugfs2 lockspace (gfs2's lock_dlm).
//
// One DLM lock per glock, named GlockName::DlmResourceName() (24 bytes). States map to modes as
// in gfs2: UN->NL, SH->PR, DF->CW, EX->EX. The first request of a glock is a new lock; every
// later one converts it, "to UN" included, which converts to NL: the lock (its id and LVB) stays
// until the module shuts down, or until more than DlmLockModuleOptions::max_idle_nl_locks glocks
// sit idle in NL, when the least recently used NL locks are unlocked (as gfs2 unlocks when it frees
// a glock). A request to UN for a glock without a lock replies UN at once.
//
// Flags (what gfs2's make_flags does, as far as dlm/lock_table.cc implements it):
//  * glock::kTry -> NOQUEUE; glock::kTry1Cb -> NOQUEUE|NOQUEUEBAST (the holders are told, then
//    the request fails); glock::kNoExp -> kLkfNoExp (ugfs2's own: ignore a dead node's locks).
//  * VALBLK on every request of an rgrp or quota glock (gfs2's GLOF_LVB). Leaving EX stores the
//    value (see WriteLvb); if it was never valid since the grant, IVVALBLK keeps it marked
//    invalid instead of storing stale bytes.
//  * CONVERT on every request after the first, plus QUECVT on conversions that are not
//    down-conversions (those QueCvtAllowed() accepts) unless it is a try lock: a conversion then
//    waits its turn behind conversions already queued, so readers cannot starve a writer.
//  * kLkfBatch (ugfs2's own, never sent) on provisionally answered requests: the lockspace may
//    hold them back for a moment to send many in one message; Expedite() sends them at once.
//  * Not used: CONVDEADLK (the lock would silently drop to NL, the glock layer would not know
//    its cache is stale), NODLCKWT (a deadlocked conversion would then queue for ever and only
//    basts its own owner; the glock layer never cancels a request on a demote, so the nodes would
//    hang), EXPEDITE (the lockspace accepts it on new NL requests only, and a glock never starts
//    with NL). A conversion deadlock therefore completes with EDEADLK and is reported as a
//    refusal (the old state); the glock layer then unlocks to UN and asks again, as gfs2 does.
//
// Provisional grants (glock::kNewObject, not gfs2's): a new lock to a state above UN (a try lock
// too: it is then sent without NOQUEUE, as it must be had), on a resource that has no lock of
// any node in this node's replica of the lock table
// (Lockspace::ResourceIdle) is answered at once with {state = to, provisional} after the request
// is sent, then with its real reply once the lock manager has decided; the real reply is never
// delivered before the provisional one. A creator of a new inode needs no round trip that way:
// only a request of another node ordered before ours can make the lock wait, and such a node
// cannot know the new object yet (glock.h, docs/locking.md).
//
// Replies: each Request calls its ReplyFn exactly once (twice with a provisional reply). Granted ->
// {state = to}; refused (EAGAIN: NOQUEUE; EDEADLK: conversion deadlock) -> {state = from};
// cancelled -> {canceled, state = from}; any other failed completion -> {error = kIoError}; a Lock
// call the lockspace refuses at once (not joined, busy) -> {error = its Status}. Blocking callbacks
// map the mode the other node wants to the state this node may keep: EX -> UN, CW -> DF, PR -> SH
// (gfs2's gdlm_bast), and go to the callback set with SetBlockingCallback.
//
// Fencing: once the lockspace has fenced itself (lost quorum, transport failure, or it was fenced
// and rejoined since the module was created), its locks are gone and the module stays fenced for
// good (gfs2 withdraws): requests fail at once with {error = kFenced}, the request in flight fails
// the same way, except that a request to UN replies UN (the lock is gone, which is what UN means;
// the glock can be forgotten instead of retrying for ever). Holders granted before the fence keep
// running: stopping them is the filesystem's business (LockspaceOptions::fence_hook).
//
// Thread safety: every method may be called from any thread, including the lockspace's callback
// thread (except Shutdown and a destructor that must still unlock: they wait). ReplyFns and the
// blocking callback run on the lockspace's callback thread, or synchronously inside Request when
// the answer is known at once (UN, fenced, a refused call); never under the module's mutex.
// Lock order: caller's locks (e.g. none of GlockRunner's; it calls with its mutex released) ->
// the module's mutex `mu` -> the lockspace's mutex (Lock/Unlock/Info are called under `mu`; they
// never call back synchronously). The UnlockSync calls of Shutdown are made without `mu`.
// Per glock it keeps the lock id, the Lksb (valid until the final unlock completes), the granted
// mode, the request in flight and the LVB, all under `mu`.
//
// Lifetime: call Shutdown (from a non-callback thread) while the GlockRunner that uses this
// module is still alive, then destroy the runner, then the module, then the lockspace. Shutdown
// cancels requests in flight (their replies still arrive), then unlocks every lock (UnlockSync)
// so the lockspace can be left cleanly; afterwards requests to UN reply UN and others fail with
// kNotConnected. Once it returns OK no reply or blocking callback is running or will start, so
// the runner may go; it waits for running ones, so do not call it holding a lock they take. The
// destructor shuts down if that was not done; callbacks that arrive after it are dropped (the
// module's state lives on in a shared block until the lockspace lets go of it).
#ifndef UGFS2_DLM_GLOCK_LOCK_MODULE_H_
#define UGFS2_DLM_GLOCK_LOCK_MODULE_H_

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "common/status.h"
#include "glock/glock.h"
#include "glock/glock_runner.h"
#include "lockspace.h"
#include "types.h"

namespace ugfs2::dlm {

struct DlmLockModuleOptions {
  // At most this many glocks keep an idle NL lock; beyond that the least recently used are
  // unlocked. 0 = no limit (NL locks live until Shutdown).
  size_t max_idle_nl_locks = 4096;
};

// Counters since the module was created (dumps, tests).
struct DlmLockModuleStats {
  uint64_t requests = 0;     // Lock calls made (new locks and conversions)
  uint64_t granted = 0;      // ... granted
  uint64_t refused = 0;      // ... refused with EAGAIN (NOQUEUE)
  uint64_t deadlocks = 0;    // ... refused with EDEADLK (conversion deadlock)
  uint64_t canceled = 0;     // ... cancelled
  uint64_t failed = 0;       // ... failed otherwise (fenced included), at once or later
  uint64_t blocking = 0;     // blocking callbacks passed on
  uint64_t nl_unlocks = 0;   // idle NL locks unlocked to stay within max_idle_nl_locks
  uint64_t provisional = 0;  // new locks answered provisionally (kNewObject)
};

// What the module asked of the lock manager, since it was created: one lockspace message each
// (the lockspace sends one per call). Relaxed atomics, read without the module's mutex
// (Counters()).
struct DlmLockModuleCounters {
  uint64_t requests = 0;     // new locks requested (Lock calls the lockspace accepted)
  uint64_t converts = 0;     // conversions requested (Lock with CONVERT, "to UN" included)
  uint64_t unlocks = 0;      // unlocks (idle NL locks beyond the cap, Shutdown)
  uint64_t cancels = 0;      // cancels of a request in flight
  uint64_t completions = 0;  // completion callbacks received (grants, refusals, unlocks, ...)
  uint64_t callbacks = 0;    // blocking callbacks received (another node wants a glock)
  uint64_t provisional = 0;  // provisional replies (requests counts them too)
};

class DlmLockModule final : public glock::LockModule {
 public:
  // `ls` must outlive the module (and the lockspace's callbacks may outlive it; see above).
  explicit DlmLockModule(Lockspace* ls, DlmLockModuleOptions options = {});
  ~DlmLockModule() override;
  DlmLockModule(const DlmLockModule&) = delete;
  DlmLockModule& operator=(const DlmLockModule&) = delete;

  // glock::LockModule.
  void Request(const glock::GlockName& name, glock::State from, glock::State to, uint32_t flags,
               ReplyFn reply) override;
  void Cancel(const glock::GlockName& name) override;
  void Expedite() override;  // Lockspace::FlushBatch
  void SetBlockingCallback(BlockingCallback cb) override;
  // The value as of the last grant, or as written since; false without a lock held above NL, for
  // types without an LVB, and while the lock manager marks the value invalid (VALNOTVALID). A
  // value never written by anyone reads as zeros (as in the kernel).
  bool ReadLvb(const glock::GlockName& name, Lvb* out) override;
  // Only while this node holds the glock's lock in EX (ignored otherwise, with a warning).
  void WriteLvb(const glock::GlockName& name, const Lvb& value) override;

  // Cancels the requests in flight, waits for their replies, then unlocks every lock, all within
  // `timeout`. OK when nothing is left (also when fenced: the locks are gone already); kTimedOut
  // or the first unlock failure otherwise. Refused (kInvalid) on the lockspace's callback thread.
  Status Shutdown(std::chrono::milliseconds timeout);

  // The lockspace fenced this node (call it from its fence hook): the module is fenced for
  // good, and every request still in flight (or deferred) is answered {error = kFenced} now,
  // since the lockspace may never complete it.
  void Fence(const std::string& why);

  // Queries (tests, dumps).
  int GrantedMode(const glock::GlockName& name) const;  // kIV when the glock has no lock
  size_t LockCount() const;                             // DLM locks held
  bool fenced() const;
  DlmLockModuleStats Stats() const;
  DlmLockModuleCounters Counters() const;  // lock-free
  std::string Dump() const;                // counters, then one line per lock

  // The mappings above.
  static int ModeFor(glock::State state);
  static glock::State WantedFor(int bast_mode);
  static bool HasLvb(glock::GlockType type);
  // DLM flags for a request from `grmode` (kIV: a new lock) to `rqmode` with glock holder flags.
  static uint32_t LockFlags(glock::GlockType type, int grmode, int rqmode, uint32_t holder_flags);

 private:
  struct Core;  // the state shared with the lockspace's callbacks (glock_lock_module.cc)
  std::shared_ptr<Core> core_;
};

}  // namespace ugfs2::dlm

#endif  // UGFS2_DLM_GLOCK_LOCK_MODULE_H_
