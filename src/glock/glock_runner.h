// GlockRunner: drives a GlockTable. It turns calls and callbacks into the table's inputs and
// carries out the table's effects through two seams: a LockModule (the cluster lock manager, or
// NoLockModule on a single node) and GlockHooks (write back, invalidate, re-read, revoke what is
// cached above; supplied by the filesystem engine). It makes no decisions of its own: every rule
// lives in GlockTable.
//
// Waiting: Acquire without kAsync blocks until the holder is granted or fails. With kAsync it
// returns the holder at once; Poll and Wait (optionally with a deadline, after which the holder
// is cancelled with kTimedOut) collect the outcome. Every holder must end in Release (granted)
// or in a failure collected by Acquire/Wait; Cancel withdraws a waiting one.
//
// Thread safety: every method is thread-safe. One mutex, `mu_`, guards the table and the
// runner's own state; it is a leaf lock: it is never held while the LockModule or a hook runs,
// and nothing else is locked while it is held.
// Lock order: caller's locks -> mu_. Effects run, in the order the table emitted them, on the
// thread of whichever caller found them pending (the "pumping" thread; Acquire, Release,
// callbacks alike) with mu_ released. Hence:
//  * LockModule and hook implementations may complete synchronously (call their callback before
//    returning) or later from any thread; callbacks only enqueue inputs and never block.
//  * A hook must not call Acquire or Wait (it could be waiting for itself), and a caller must
//    not hold, while calling into the runner, a lock that a hook or the LockModule needs.
//  * The LockModule and the hooks must have delivered every callback before the runner dies.
#ifndef UGFS2_SRC_GLOCK_GLOCK_RUNNER_H_
#define UGFS2_SRC_GLOCK_GLOCK_RUNNER_H_

#include <array>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "common/status.h"
#include "glock/glock.h"
#include "glock/holder_owner.h"

namespace ugfs2::glock {

// The lock module (gfs2's lm_lockops). Remote demote requests (blocking callbacks) are delivered
// by whoever owns the lock module through GlockRunner::RemoteDemote (see SetBlockingCallback).
// The DLM implementation is ugfs2::dlm::DlmLockModule (dlm/glock_lock_module.h).
class LockModule {
 public:
  using ReplyFn = std::function<void(const LmReply&)>;
  virtual ~LockModule() = default;
  // Moves `name` from `from` to `to` (flags: kLockModuleFlags bits). Calls `reply` exactly once.
  virtual void Request(const GlockName& name, State from, State to, uint32_t flags,
                       ReplyFn reply) = 0;
  // Best effort: aborts the request in flight on `name`; its reply then says canceled, or
  // reports the grant if it came too late.
  virtual void Cancel(const GlockName& name) { (void)name; }
  // Someone waits for the real replies of provisional grants: send whatever requests the module
  // holds back to batch them (default: nothing is held back).
  virtual void Expedite() {}

  // Where the lock module reports that another node wants `name` held in at most `wanted` (UN,
  // SH or DF): a blocking callback. The owner points it at GlockRunner::RemoteDemote. It may be
  // called from any thread and must only enqueue. Modules without remote nodes never call it.
  using BlockingCallback = std::function<void(const GlockName& name, State wanted)>;
  virtual void SetBlockingCallback(BlockingCallback cb) { (void)cb; }

  // Lock value blocks: 32 bytes the lock manager keeps with the lock of an rgrp or quota glock
  // (gfs2's GLOF_LVB types). ReadLvb gives the value as of the last grant (or as last written
  // here since); false when there is none or it is marked invalid. WriteLvb, while holding EX,
  // sets the value handed back to the lock manager with the next conversion down from EX.
  // Modules without value blocks keep none.
  static constexpr size_t kLvbSize = 32;
  using Lvb = std::array<uint8_t, kLvbSize>;
  virtual bool ReadLvb(const GlockName& name, Lvb* out) {
    (void)name;
    (void)out;
    return false;
  }
  virtual void WriteLvb(const GlockName& name, const Lvb& value) {
    (void)name;
    (void)value;
  }
};

// lock_nolock: one node alone; every request is granted at once.
class NoLockModule final : public LockModule {
 public:
  void Request(const GlockName& name, State from, State to, uint32_t flags, ReplyFn reply) override;
};

// What the filesystem does around state changes. Each hook calls `done` exactly once.
class GlockHooks {
 public:
  using DoneFn = std::function<void(const Status&)>;
  virtual ~GlockHooks() = default;
  // Write back everything `name` protects (before its EX/DF state is given up).
  virtual void Sync(const GlockName& name, DoneFn done) = 0;
  // Drop cached data of `name` (after dropping to UN or DF). Cannot fail.
  virtual void Invalidate(const GlockName& name, std::function<void()> done) = 0;
  // Re-read `name`'s object (before the first grant after an invalidate).
  virtual void Refresh(const GlockName& name, DoneFn done) = 0;
  // Lines describing the object `name` covers, for glock dumps (gfs2's go_dump: " I: ..." for
  // an inode, " R: ..." for an rgrp), each ending in a newline. Called without the runner's
  // lock. Default: none.
  virtual std::string DumpObject(const GlockName& name) {
    (void)name;
    return {};
  }
  // Revoke what is cached above `name` (e.g. kernel pages) while holders still run; call done
  // exactly once (may be synchronous). Default: done() at once.
  // The revoke needs holders granted (the kernel's reads and write-backs), and granting one may
  // need effects run on this very thread: so do not wait here for the revoke to finish; call
  // done from whichever thread sees it finish.
  virtual void Prepare(const GlockName& name, std::function<void()> done) {
    (void)name;
    done();
  }
  // The demote a Prepare was for is over (or no longer wanted). Must not block. Default: nothing.
  virtual void Thaw(const GlockName& name) { (void)name; }
};

// Hooks that have nothing to do (every type behaves as if it had no cached objects).
class NoHooks final : public GlockHooks {
 public:
  void Sync(const GlockName& name, DoneFn done) override;
  void Invalidate(const GlockName& name, std::function<void()> done) override;
  void Refresh(const GlockName& name, DoneFn done) override;
};

class GlockRunner {
 public:
  using Clock = std::function<Time()>;
  static Time SteadyNow();
  // `lm` and `hooks` must outlive the runner.
  GlockRunner(LockModule* lm, GlockHooks* hooks, Options options = {}, Clock clock = SteadyNow);
  GlockRunner(const GlockRunner&) = delete;
  GlockRunner& operator=(const GlockRunner&) = delete;

  // Without kAsync: waits, returns the granted holder or the failure. With kAsync: returns the
  // holder at once (it may already have failed; Wait tells).
  Result<HolderId> Acquire(const GlockName& name, State state, uint32_t flags);
  // True once the holder is granted or has failed.
  bool Poll(HolderId id) const;
  // Waits until granted (OK) or failed (the failure; the holder is gone). With a deadline on
  // the runner's clock, a holder still waiting then is cancelled with kTimedOut.
  Status Wait(HolderId id, std::optional<Time> deadline = std::nullopt);
  // Waits until the holder is granted or has failed (true), or until `deadline` on the runner's
  // clock (false; the holder stays queued).
  bool WaitUntil(HolderId id, Time deadline);
  Status Release(HolderId id);
  Status Cancel(HolderId id);

  // Provisional grants (kNewObject; GlockTable::ProvisionalMark): the latest one's number, and a
  // wait until every one numbered <= `mark` has had its real reply (true), or until `deadline`
  // on the runner's clock (false). Whoever writes to shared storage what glocks cover takes a
  // mark once the changes it writes were made, and waits for it before it writes.
  uint64_t ProvisionalMark() const;
  bool WaitProvisional(uint64_t mark, Time deadline);

  // Inputs from the outside world.
  void RemoteDemote(const GlockName& name, State wanted);
  void Tick();  // call at NextDeadline() (or periodically)
  size_t ShrinkLru(size_t budget);
  void SetRecoveryBlocked(bool blocked);
  // The earliest time Tick has work (a delayed demote or a retry falls due); remembered, for
  // the deadline listener.
  std::optional<Time> NextDeadline() const;
  // `fn` is called when a deadline earlier than the one NextDeadline last returned appears
  // (e.g. a remote demote delayed for the minimum hold time): whoever sleeps until that
  // deadline must look again. Called with the runner's mutex held: it must return at once and
  // may take only a leaf lock (one never held while calling into the runner). Empty: none.
  void SetDeadlineListener(std::function<void()> fn);
  // The glock dump (GlockTable::Dump) with each holder's owner (holder_owner.h: "p:PID w:MS
  // [comm] label"), the hooks' object lines and the statistics line.
  std::string Dump() const;
  // Marks a holder as kept across requests by an I/O policy (shown as flag R in dumps).
  void SetRetained(HolderId id, bool retained);
  // Statistics: an I/O policy dropped and re-took `name` because of contention.
  void NoteRetry(const GlockName& name);
  // Whether someone else wants the glock of granted holder `id`: a demote is pending on it or a
  // holder waits behind it (the contention an I/O policy yields to).
  bool Contended(HolderId id) const;
  // `fn` is called whenever a holder has to wait or a remote demote request comes while some
  // holder is marked retained (SetRetained): the I/O policy's cue to look for kept glocks
  // someone wants, instead of finding them at its next periodic look. Called with the runner's
  // mutex held: it must return at once and take no lock (set a flag, notify a condition
  // variable). Empty: none. Once this returns, the previous function is no longer called.
  void SetRetainedContentionListener(std::function<void()> fn);
  std::optional<HolderInfo> Holder(HolderId id) const;
  std::optional<GlockInfo> Info(const GlockName& name) const;
  // Every glock the table knows, and how many sit idle on the LRU.
  std::vector<GlockName> Names() const;
  size_t LruSize() const;
  size_t GlockCount() const;

 private:
  struct Outcome {
    bool done = false;
    Status status;  // OK = granted
  };
  // Records holder outcomes, queues the other effects and, unless another thread is already
  // doing it, executes queued effects with mu_ released. Called with `l` locked.
  void Apply(std::unique_lock<std::mutex>& l, std::vector<Effect> effects);
  void Execute(const Effect& e);
  Status WaitLocked(std::unique_lock<std::mutex>& l, HolderId id, std::optional<Time> deadline);
  void OnReply(const GlockName& name, const LmReply& reply);
  void OnSyncDone(const GlockName& name, const Status& st);
  void OnInvalidateDone(const GlockName& name);
  void OnRefreshDone(const GlockName& name, const Status& st);
  void OnPrepareDone(const GlockName& name);
  void Report(const Status& st);       // an input the table refused: a seam misbehaved
  void EraseOwnerLocked(HolderId id);  // owners_.erase(id), keeping retained_ (mu_ held)

  LockModule* const lm_;
  GlockHooks* const hooks_;
  const Clock clock_;
  mutable std::mutex mu_;  // guards everything below
  std::function<void()> retained_listener_;
  std::function<void()> deadline_listener_;
  mutable std::optional<Time> told_deadline_;  // what NextDeadline last returned
  size_t retained_ = 0;  // holders marked retained (owners_ entries with `retained`)
  std::condition_variable cv_;
  GlockTable table_;
  std::map<HolderId, Outcome> outcomes_;
  struct OwnerRec {
    HolderOwner owner;
    bool retained = false;
  };
  std::map<HolderId, OwnerRec> owners_;  // holders acquired under an OwnerScope
  std::deque<Effect> pending_;
  bool pumping_ = false;
};

}  // namespace ugfs2::glock

#endif  // UGFS2_SRC_GLOCK_GLOCK_RUNNER_H_
