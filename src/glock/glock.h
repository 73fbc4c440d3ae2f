// GlockTable: one node's glocks, as a pure state machine (no threads, no clocks, no I/O).
//
// A glock is this node's cached copy of one cluster lock, named like gfs2's (type + 64-bit
// number). It is in one of four states: UN (nothing), SH (shared), DF (deferred: shared among
// direct-I/O users only) or EX (exclusive). Local users queue *holders* on it, first in, first
// out; the glock changes state through the lock module (the cluster lock manager, or
// lock_nolock on a single node) at most one transition at a time, gives its state up when a
// remote node asks (a demote request, i.e. a blocking callback), and keeps its state cached
// after the last holder leaves until it is asked to give it up or the LRU reclaims it.
//
// The table consumes inputs (Acquire, Release, Cancel, LockModuleReply, DemoteRequest, the hook
// completions, PrepareDone, Tick, ShrinkLru, SetRecoveryBlocked) and appends Effects to a vector
// for a runner to carry out (ask the lock module, run a hook, wake a holder). Hooks and the lock
// module report back through inputs, so nothing here ever blocks. Time is an input too: every
// input carries `now` (nanoseconds on any monotonic clock); the table never reads a clock. The
// same inputs in the same order always give the same effects.
//
// The rules are gfs2's (fs/gfs2/glock.c), summarised in docs/locking.md, which also lists the
// invariants that tests/src/glock_model_check_test.cc checks on thousands of random schedules.
//
// Thread safety: none. The owner (GlockRunner) serialises all access under its mutex.
#ifndef UGFS2_SRC_GLOCK_GLOCK_H_
#define UGFS2_SRC_GLOCK_GLOCK_H_

#include <compare>
#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "common/status.h"

namespace ugfs2::glock {

using Time = int64_t;  // nanoseconds on a monotonic clock chosen by the caller
using HolderId = uint64_t;

inline constexpr Time kMillisecond = 1'000'000;

// Glock types, with gfs2's numeric values (they appear in DLM resource names).
enum class GlockType : uint8_t {
  kNondisk = 1,  // cluster-wide events; numbers below
  kInode = 2,    // a dinode's metadata and data; number = dinode block address
  kRgrp = 3,     // a resource group's header and bitmaps; number = rgrp header block
  kMeta = 4,     // the superblock (number 0)
  kIopen = 5,    // "this inode is in use here"; number = dinode block address
  kFlock = 6,    // flock(2); number = dinode block address
  kPlock = 7,    // POSIX locks (gfs2 does these outside the glock layer)
  kQuota = 8,    // number = 2 * id + (0 user, 1 group)
  kJournal = 9,  // number = journal id
};

// Numbers of the kNondisk glocks.
inline constexpr uint64_t kMountLock = 0;     // serialises mounts cluster-wide
inline constexpr uint64_t kLiveLock = 1;      // held SH by every mounted node
inline constexpr uint64_t kFreezeLock = 2;    // gfs2's old "transaction" lock; SH while writable
inline constexpr uint64_t kRenameLock = 3;    // taken EX first by cross-directory renames
inline constexpr uint64_t kControlLock = 4;   // first-mounter detection (lock module internal)
inline constexpr uint64_t kMountedLock = 5;   // first-mounter detection (lock module internal)
inline constexpr uint64_t kRecoveryLock = 6;  // ugfs2's own: one journal recovery at a time
// Number of the kMeta glock for the superblock.
inline constexpr uint64_t kSuperblockLock = 0;

struct GlockName {
  GlockType type = GlockType::kInode;
  uint64_t number = 0;
  auto operator<=>(const GlockName&) const = default;
  // "type/hexnumber", the form of gfs2's glock dumps (e.g. "2/1b3a").
  std::string ToString() const;
  // The 24-byte DLM resource name: type in hex right-aligned in 8 columns, then the number in
  // hex right-aligned in 16 columns, space padded, no terminator (e.g. "       2            1b3a").
  std::string DlmResourceName() const;
};

// Glock states, with gfs2's numeric values (LM_ST_*).
enum class State : uint8_t { kUnlocked = 0, kExclusive = 1, kDeferred = 2, kShared = 3 };
const char* StateName(State s);  // "UN", "EX", "DF", "SH"

// Whether two nodes may hold these states at once (UN goes with all, SH with SH, DF with DF).
// These are the DLM's compatibilities for NL, EX, CW and PR.
bool Compatible(State a, State b);
// Whether holding `held` gives at least the rights of `want` (EX covers everything, UN only UN).
bool Covers(State held, State want);

// Holder flags, with gfs2's values.
inline constexpr uint32_t kTry = 0x1;         // fail (kLockConflict) rather than wait
inline constexpr uint32_t kTry1Cb = 0x2;      // like kTry; the lock manager also notifies holders
inline constexpr uint32_t kNoExp = 0x4;       // served while recovery blocks other replies
inline constexpr uint32_t kAny = 0x8;         // any non-UN cached state will do
inline constexpr uint32_t kNodeScope = 0x20;  // EX shared among local holders that all set it
inline constexpr uint32_t kAsync = 0x40;      // the caller polls/waits (runner only)
inline constexpr uint32_t kExact = 0x80;      // the cached state must equal the requested one
inline constexpr uint32_t kSkip = 0x100;      // grant without the refresh hook (e.g. new inode)
inline constexpr uint32_t kNoCache = 0x400;   // on release, give the cached state up (to UN)
// Like kAny, but only while the glock prepares a demote: a request the revoke above the glock
// waits for (a launder WRITE, a READ holding a folio) is served in the state held, since a
// promotion could need the very demote that waits for it (docs/coherence.md).
inline constexpr uint32_t kPrepareAny = 0x1000;
// Not gfs2's: the holder creates the object the glock covers (a new inode at a block this node
// has just allocated), so no other node can know of it until this operation publishes it. The
// lock module may then let the holder start before the lock manager has granted the request
// (LmReply::provisional): nothing is read under it and, until the real grant, nothing it covers
// may reach the shared disk (see GlockTable::ProvisionalMark). Passed on to the lock module.
inline constexpr uint32_t kNewObject = 0x2000;
// The flags passed on to the lock module with a request.
inline constexpr uint32_t kLockModuleFlags = kTry | kTry1Cb | kNoExp | kNewObject;
std::string FlagsString(uint32_t flags);  // gfs2's holder flag letters, e.g. "tE"

// Per-type behaviour: which hooks a transition runs, and whether remote demote requests wait for
// the minimum hold time.
struct TypeTraits {
  bool sync = false;        // write back before leaving EX (or DF)
  bool invalidate = false;  // drop cached data after dropping to UN or DF
  bool refresh = false;     // re-read before the first grant after an invalidate
  bool min_hold = false;    // remote demotes wait for Options::min_hold after a state change
  // Before a demote becomes active (and before any other move to a lower state), revoke what is
  // cached above the glock (the kernel's pages, attributes and names of an inode). The revoke
  // needs holders granted while it runs, so it comes before the demote stops admitting them.
  bool prepare = false;
};
TypeTraits TraitsOf(GlockType type);

struct Options {
  Time min_hold = 200 * kMillisecond;     // gfs2's default hold time (HZ/5)
  Time retry_delay = 100 * kMillisecond;  // after a failed sync or a lock-module error
};

// What the lock module says about a Request.
struct LmReply {
  State state = State::kUnlocked;  // the state now held (the old one if refused or canceled)
  bool canceled = false;           // the request was cancelled (state unchanged)
  Status error;                    // the lock module failed; waiting holders fail with it
  // An early answer to a kNewObject request from UN, before the lock manager's: the module
  // expects the grant (nobody holds or waits for the lock as far as it knows) and lets holders
  // start. The real reply follows as usual and confirms it. The table may ignore a provisional
  // reply (it then simply waits for the real one); see GlockTable::LockModuleReply.
  bool provisional = false;
};

struct Effect {
  enum Kind : uint8_t {
    kRequest,        // ask the lock module to move `name` from `from` to `to` with `flags`
    kCancelRequest,  // best effort: abort the request in flight on `name`
    kGrant,          // `holder` is granted
    kFail,           // `holder` failed with `status` and is gone
    kSync,           // write back what `name` protects; answer with SyncDone
    kInvalidate,     // drop cached data of `name`; answer with InvalidateDone
    kRefresh,        // re-read `name`'s object; answer with RefreshDone
    kPrepare,        // revoke what is cached above `name` while holders still run; answer
                     // with PrepareDone
    kThaw,           // informational, no answer: the demote a kPrepare was for has finished,
                     // or is no longer wanted
  };
  Kind kind = kRequest;
  GlockName name;
  HolderId holder = 0;
  State from = State::kUnlocked;
  State to = State::kUnlocked;
  uint32_t flags = 0;
  Status status;
  std::string ToString() const;
};
const char* EffectKindName(Effect::Kind k);

// Where a glock is in its current transition.
enum class Phase : uint8_t {
  kIdle,        // nothing in flight
  kSync,        // waiting for SyncDone before sending the request
  kRequest,     // waiting for the lock module's reply
  kInvalidate,  // waiting for InvalidateDone after a reply dropped to UN/DF
  kRefresh,     // waiting for RefreshDone before granting
};
const char* PhaseName(Phase p);

// Per-glock statistics, as gfs2's glstats: lock-module round trips (smoothed like TCP's RTT,
// gfs2's srtt/srttvar), demote requests received, holders queued, state given up on a demote
// (a bounce), and retries an I/O policy reported (NoteRetry). Kept while the glock is known.
struct GlockStats {
  Time srtt = 0;     // smoothed round trip of lock-module requests (ns)
  Time srttvar = 0;  // its mean deviation (ns)
  uint64_t requests = 0;
  uint64_t demote_requests = 0;
  uint64_t queued = 0;
  uint64_t bounces = 0;
  uint64_t retries = 0;
};

struct GlockInfo {
  GlockName name;
  State state = State::kUnlocked;
  State target = State::kUnlocked;  // meaningful while phase != kIdle
  Phase phase = Phase::kIdle;
  bool demote_in_progress = false;  // the transition in flight is a demote
  std::optional<State> demote;      // a demote is pending to this state
  bool demote_delayed = false;      // ... and waits for the minimum hold time
  bool frozen = false;              // a reply is withheld while recovery blocks replies
  bool needs_refresh = false;       // the next (non-kSkip) grant runs the refresh hook
  bool preparing = false;           // a kPrepare is out, its PrepareDone not yet in
  bool prepared = false;            // the prepare is done; its kThaw has not been emitted yet
  bool on_lru = false;
  bool provisional = false;  // granted early (LmReply::provisional); the real reply not yet in
  size_t granted = 0;
  size_t waiting = 0;
  Time tchange = 0;     // last state change
  Time request_at = 0;  // when the lock-module request in flight was sent (phase kRequest)
  GlockStats stats;
};

struct HolderInfo {
  HolderId id = 0;
  GlockName name;
  State state = State::kUnlocked;
  uint32_t flags = 0;
  bool granted = false;
  Time since = 0;  // queued (waiting) or granted (granted)
};

// What GlockTable::Dump adds per holder (text after "e:0 ", e.g. "p:PID w:MS [comm] label") and
// per glock (whole lines, e.g. " I: ..." for the object it covers); empty: nothing.
struct DumpExtras {
  std::function<std::string(HolderId)> holder;
  std::function<std::string(const GlockName&)> object;
  // Extra holder flag letters (e.g. "R" for a holder an I/O policy keeps across requests).
  std::function<std::string(HolderId)> holder_flags;
};

class GlockTable {
 public:
  explicit GlockTable(Options options = {});
  GlockTable(const GlockTable&) = delete;
  GlockTable& operator=(const GlockTable&) = delete;

  // --- Inputs. Each appends its effects to `out`. `now` never goes backwards (earlier values
  // are taken as the latest seen). ---

  // Queues a holder wanting `state` (not UN) on `name`. Returns its id; exactly one kGrant or
  // kFail effect follows for it, in this call or a later one.
  Result<HolderId> Acquire(const GlockName& name, State state, uint32_t flags, Time now,
                           std::vector<Effect>* out);
  // Releases a granted holder.
  Status Release(HolderId id, Time now, std::vector<Effect>* out);
  // Withdraws a waiting holder (a caller's deadline passed, or it gave up): kFail with `reason`.
  // A granted holder is not cancelled (kInvalid): release it instead.
  Status Cancel(HolderId id, Time now, std::vector<Effect>* out, Code reason = Code::kCanceled);
  // The lock module answers the kRequest in flight on `name`. A provisional reply (applied only
  // to a kNewObject request from UN that is still wanted, outside recovery; ignored otherwise)
  // sets the state and grants the waiters it fits without a refresh (the object is new), while
  // the request stays in flight: no other transition starts, and demotes wait, until the real
  // reply confirms it. Should the real reply not grant the state after all (the lock module
  // failed: the node is fenced), the holders granted keep running, as holders granted before a
  // fence do, and the waiters fail with the error.
  Status LockModuleReply(const GlockName& name, const LmReply& reply, Time now,
                         std::vector<Effect>* out);
  // A remote node asks this node to hold `name` in at most `wanted` (UN, SH or DF).
  Status DemoteRequest(const GlockName& name, State wanted, Time now, std::vector<Effect>* out);
  // Hook completions. A failed sync keeps the state (the lock is never given up over unwritten
  // data) and retries after Options::retry_delay; a failed refresh fails the holder it was for.
  Status SyncDone(const GlockName& name, const Status& result, Time now, std::vector<Effect>* out);
  Status InvalidateDone(const GlockName& name, Time now, std::vector<Effect>* out);
  Status RefreshDone(const GlockName& name, const Status& result, Time now,
                     std::vector<Effect>* out);
  // The kPrepare on `name` is done (kInvalid if none is in flight). The demote it was for now
  // runs as any other; if none is due any more, kThaw follows at once.
  Status PrepareDone(const GlockName& name, Time now, std::vector<Effect>* out);
  // An I/O policy dropped and re-took a holder of `name` because of contention (statistics).
  void NoteRetry(const GlockName& name);
  // Time passes: demotes whose minimum hold time is over, and retries, run.
  void Tick(Time now, std::vector<Effect>* out);
  // Memory pressure: demotes up to `budget` idle cached glocks, least recently used first.
  // Returns how many it demoted.
  size_t ShrinkLru(size_t budget, Time now, std::vector<Effect>* out);
  // While journal recovery runs, replies that would grant a state are withheld unless a kNoExp
  // holder waits on the glock; unblocking releases them.
  void SetRecoveryBlocked(bool blocked, Time now, std::vector<Effect>* out);

  // --- Queries ---
  // Provisional grants, numbered from 1 in the order they were applied. ProvisionalMark(): the
  // number of the latest one (0: none yet). ProvisionalConfirmed(mark): every provisional grant
  // numbered <= mark has had its real reply. Whoever writes what glocks cover to shared storage
  // takes a mark after the changes it writes were made and waits for it to be confirmed first.
  uint64_t ProvisionalMark() const { return next_provisional_ - 1; }
  bool ProvisionalConfirmed(uint64_t mark) const {
    return provisional_.empty() || provisional_.begin()->first > mark;
  }
  size_t provisional_count() const { return provisional_.size(); }
  // The earliest time at which Tick has work (a delayed demote or a retry), if any.
  std::optional<Time> NextDeadline() const;
  std::optional<GlockInfo> Info(const GlockName& name) const;
  std::optional<HolderInfo> Holder(HolderId id) const;
  std::vector<GlockName> Names() const;
  size_t glock_count() const { return glocks_.size(); }
  size_t lru_size() const { return lru_.size(); }
  size_t holder_count() const { return holders_.size(); }
  bool recovery_blocked() const { return recovery_blocked_; }
  // Checks internal consistency; "" when fine.
  std::string CheckInvariants() const;
  // gfs2-style dump (docs/deadlocks.md "The glock dump"): one "G:" line per glock, " H:" lines
  // for its holders in queue order, then what `extras` adds, then an " S:" statistics line.
  std::string Dump(const DumpExtras& extras = {}) const;

 private:
  struct HolderRec {
    HolderId id = 0;
    GlockName name;
    State state = State::kUnlocked;
    uint32_t flags = 0;
    bool granted = false;
    Time since = 0;
  };
  struct Glock {
    GlockName name;
    TypeTraits traits;
    State state = State::kUnlocked;
    State target = State::kUnlocked;
    Phase phase = Phase::kIdle;
    uint32_t lm_flags = 0;
    bool demote_in_progress = false;
    std::optional<State> demote;
    bool demote_delayed = false;
    bool needs_refresh = true;
    bool cancel_sent = false;
    bool preparing = false;  // kPrepare emitted, PrepareDone not yet in
    bool prepared = false;   // PrepareDone in, kThaw not yet emitted
    // A conversion out of SH/DF was refused and the unlock waits for a prepare: the head waiter
    // must not ask the lock module again meanwhile (it would be refused again, over and over).
    bool unlock_first = false;
    bool retry = false;
    Time retry_at = 0;
    Time tchange = 0;
    Time request_at = 0;
    GlockStats stats;
    HolderId refresh_for = 0;
    // Granted early (LmReply::provisional), numbered as in provisional_; the request stays in
    // flight (phase kRequest) until the real reply.
    bool provisional = false;
    uint64_t provisional_seq = 0;
    std::optional<LmReply> frozen;
    std::optional<LmReply> after_invalidate;
    std::vector<HolderId> queue;  // granted holders first, then waiters; FIFO
    uint64_t lru_seq = 0;         // 0 when not on the LRU
  };

  void Advance(Time now);
  Glock* Find(const GlockName& name);
  bool MayGrant(const Glock& g, const HolderRec* current, const HolderRec& h) const;
  const HolderRec* FirstGranted(const Glock& g) const;
  HolderRec* FirstWaiter(const Glock& g);
  bool AnyGranted(const Glock& g) const;
  bool DemoteDue(Glock* g);
  void RequestDemote(Glock* g, State wanted, bool delayed);
  void StartPrepare(Glock* g, std::vector<Effect>* out);
  void ThawIfUnwanted(Glock* g, std::vector<Effect>* out);
  void RunQueue(Glock* g, std::vector<Effect>* out);
  bool DoPromote(Glock* g, std::vector<Effect>* out);
  void StartTransition(Glock* g, State to, uint32_t lm_flags, bool demote,
                       std::vector<Effect>* out);
  void SendRequest(Glock* g, std::vector<Effect>* out);
  void ApplyReply(Glock* g, const LmReply& reply, std::vector<Effect>* out);
  void ApplyProvisional(Glock* g, const LmReply& reply, std::vector<Effect>* out);
  void FinishTransition(Glock* g, const LmReply& reply, std::vector<Effect>* out);
  void FailWaiters(Glock* g, bool only_try, const Status& status, std::vector<Effect>* out);
  void FailHolder(Glock* g, HolderId id, const Status& status, std::vector<Effect>* out);
  void Emit(const Glock& g, Effect::Kind kind, std::vector<Effect>* out);
  // Brings the LRU, the timer watch list and forgetting up to date. `g` may be erased.
  void Settle(Glock* g);

  Options options_;
  std::map<GlockName, Glock> glocks_;
  std::map<HolderId, HolderRec> holders_;
  std::map<uint64_t, GlockName> lru_;          // lru_seq -> glock, oldest first
  std::set<GlockName> watch_;                  // glocks with a delayed demote or a pending retry
  std::map<uint64_t, GlockName> provisional_;  // provisional grants awaiting their real reply
  uint64_t next_provisional_ = 1;
  uint64_t next_lru_seq_ = 1;
  HolderId next_holder_ = 1;
  Time now_ = 0;
  bool recovery_blocked_ = false;
};

}  // namespace ugfs2::glock

#endif  // UGFS2_SRC_GLOCK_GLOCK_H_
