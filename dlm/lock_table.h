// LockTable: the deterministic, replicated lock table of one lockspace.
//
// Every member of a lockspace holds an identical copy. The copies stay identical because every
// member applies the same inputs (lock operations, membership changes, recovery completions) in
// the same total order (the transport's agreed delivery) and this class is a pure function of its
// inputs: no clocks, no randomness, no hash-order iteration influence its decisions. The outputs
// are Effects (completion and blocking callbacks addressed to a lock owner); each node acts only
// on the effects addressed to its own locks. See docs/dlm.md for the protocol and invariants.
//
// Locks are identified by (owner incarnation, lkid). An incarnation is assigned when a process
// joins the lockspace, so a restarted process never aliases the locks of its dead predecessor.
//
// Thread safety: none; the owning Lockspace serialises all access under its mutex.
#ifndef UGFS2_DLM_LOCK_TABLE_H_
#define UGFS2_DLM_LOCK_TABLE_H_

#include <cstdint>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "types.h"
#include "wire.h"

namespace ugfs2::dlm {

enum class Queue : uint8_t { kNone = 0, kWaiting = 1, kGranted = 2, kConverting = 3 };

struct LockEntry {
  uint32_t owner = 0;  // incarnation
  uint32_t nodeid = 0;
  uint32_t lkid = 0;
  int8_t grmode = kIV;
  int8_t rqmode = kIV;
  Queue queue = Queue::kNone;
  uint32_t exflags = 0;
  int8_t highbast = kIV;     // strongest bast mode sent since the last grant
  uint32_t pending_sbf = 0;  // sb flags (DEMOTED) to report with the next completion
  bool deadlk_basted = false;
  bool noexp_grant = false;    // last granted with NOEXP (may overlap a dead node's lock)
  bool has_write_lvb = false;  // a write-direction convert carried an LVB (applied on grant)
  Lvb write_lvb{};
  uint32_t pid = 0;
  std::string procname;
  int64_t queued_ns = 0;  // CLOCK_REALTIME when put on its current queue; dumps only
  std::string* resname = nullptr;
};

struct Resource {
  std::string name;
  std::vector<LockEntry*> granted;  // strongest mode first
  std::vector<LockEntry*> convert;  // FIFO
  std::vector<LockEntry*> wait;     // FIFO
  Lvb lvb{};
  uint32_t lvbseq = 0;
  bool lvb_invalid = false;
  // Non-zero while inactive: no locks, kept only for its LVB (the kernel's "toss list"), in
  // toss order; the oldest inactive resources are forgotten beyond kMaxInactive.
  uint64_t toss_seq = 0;
  bool empty() const { return granted.empty() && convert.empty() && wait.empty(); }
};

// A callback addressed to a lock owner.
struct Effect {
  enum Kind : uint8_t { kComplete, kBlock };
  Kind kind = kComplete;
  uint32_t owner = 0;
  uint32_t lkid = 0;
  int status = 0;         // kComplete: kStatus*
  uint32_t sb_flags = 0;  // kComplete
  int8_t mode = kIV;      // kComplete: granted mode afterwards (kIV if gone); kBlock: wanted mode
  bool gone = false;      // kComplete: the lock no longer exists (unlocked, failed, canceled new)
  bool lvb_read = false;  // kComplete: lvb holds the resource LVB to copy into the lksb
  Lvb lvb{};
};

// One lock operation as carried in a message.
struct LockOp {
  enum Type : uint8_t { kRequest = 1, kConvert = 2, kUnlock = 3, kCancel = 4 };
  Type type = kRequest;
  uint32_t lkid = 0;
  int8_t mode = kIV;
  uint32_t flags = 0;
  uint32_t pid = 0;
  std::string procname;  // kRequest
  std::string name;      // kRequest
  bool has_lvb = false;  // write-direction convert/unlock with VALBLK
  Lvb lvb{};
  void Encode(ByteWriter* w) const;
  bool Decode(ByteReader* r);
};

enum class LeaveReason : uint8_t { kLeave = 1, kFailed = 2 };

struct MemberInfo {
  MemberId id;
  uint32_t incarnation = 0;
  bool synced = false;
  bool alive = true;
  uint64_t join_seq = 0;  // table seq of the membership change that added it
  uint64_t nonce = 0;     // from the joiner's HELLO; identifies this join for state transfer
  // Counter of the last HEARTBEAT of this incarnation applied (0: none yet). An EVICT decided
  // before a later heartbeat was applied is void (the member proved it is alive).
  uint64_t heartbeat = 0;
};

class LockTable {
 public:
  static constexpr size_t kMaxInactive = 4096;
  LockTable() = default;
  LockTable(const LockTable&) = delete;
  LockTable& operator=(const LockTable&) = delete;

  // --- Inputs, applied in total order. `now_ns` only stamps queue times (dumps). ---
  // Applies a lock op sent by `from`. Ops from unknown or unsynced senders are ignored.
  void ApplyOp(const MemberId& from, const LockOp& op, int64_t now_ns, std::vector<Effect>* out);
  // A membership change. Departed members' waiting requests are dropped at once; their granted
  // locks stay (blocking conflicting requests) until RecoveryDone, unless they left cleanly.
  void ApplyConfChg(const std::vector<MemberId>& members,
                    const std::vector<std::pair<MemberId, LeaveReason>>& left,
                    const std::vector<MemberId>& joined, std::vector<Effect>* out);
  // The recovery hook finished for `nodeid`: purge all its dead incarnations' locks.
  void ApplyRecoveryDone(uint32_t nodeid, std::vector<Effect>* out);
  // A joiner announced itself with `nonce` (first message after its join).
  void ApplyHello(const MemberId& from, uint64_t nonce);
  // Marks the given joins synced (they hold a copy of this table now); stale nonces are ignored.
  void ApplySynced(const std::vector<std::pair<MemberId, uint64_t>>& targets);
  // A heartbeat of `incarnation` from `from` (a synced live member; otherwise ignored, e.g. an
  // evicted process still in the group). Returns true when applied.
  bool ApplyHeartbeat(const MemberId& from, uint32_t incarnation, uint64_t counter);
  // Evicts `target` (incarnation `incarnation`), decided by a member that had applied its
  // heartbeats up to `heartbeat_seen`: applied exactly like a failure of that member (its
  // granted locks stay until ApplyRecoveryDone). Void (returns false) when the target is gone
  // already, is another incarnation, or a newer heartbeat of it was applied since the decision.
  bool ApplyEvict(const MemberId& target, uint32_t incarnation, uint64_t heartbeat_seen,
                  std::vector<Effect>* out);
  // Founding: marks every live member synced (used when no member held state).
  void MarkAllSynced();
  // Founding a fresh table: `members` (incarnations are assigned here, in order) at `seq`.
  void Found(const std::vector<MemberInfo>& members, uint64_t seq);

  // --- Queries ---
  uint64_t seq() const { return seq_; }
  void set_seq(uint64_t s) { seq_ = s; }
  void IncSeq() { ++seq_; }
  const MemberInfo* FindMember(const MemberId& id) const;  // live members only
  const std::vector<MemberInfo>& members() const { return members_; }
  // incarnation -> nodeid of dead members whose locks await the recovery hook.
  const std::map<uint32_t, uint32_t>& recovery_pending() const { return recovery_pending_; }
  bool RecoveryPendingFor(uint32_t nodeid) const;
  const std::map<std::string, Resource>& resources() const { return resources_; }
  const LockEntry* FindLock(uint32_t owner, uint32_t lkid) const;
  size_t lock_count() const { return locks_.size(); }

  // Checks internal invariants (queues consistent, granted locks of live owners pairwise
  // compatible unless a NOEXP grant overlaps a dead owner). Returns "" when fine.
  std::string CheckInvariants() const;
  // Deterministic digest of the replicated state (excludes queue timestamps).
  uint64_t Digest() const;

  // Snapshot for state transfer (everything, including queue timestamps).
  void EncodeSnapshot(ByteWriter* w) const;
  bool DecodeSnapshot(ByteReader* r);

 private:
  using Key = uint64_t;
  static Key MakeKey(uint32_t owner, uint32_t lkid) { return (uint64_t{owner} << 32) | lkid; }
  MemberInfo* FindMemberMut(const MemberId& id);
  bool OwnerAlive(uint32_t owner) const;
  bool OwnerDeadPending(uint32_t owner) const;

  void DoRequest(Resource* r, LockEntry* lk, std::vector<Effect>* out);
  void DoConvert(Resource* r, LockEntry* lk, const LockOp& op, std::vector<Effect>* out);
  void DoUnlock(Resource* r, LockEntry* lk, const LockOp& op, std::vector<Effect>* out);
  void DoCancel(Resource* r, LockEntry* lk, std::vector<Effect>* out);
  bool CanBeGranted(const Resource& r, const LockEntry* lk, int mode, bool now) const;
  // Tries rqmode, then the ALT mode. Grants and returns true on success.
  bool TryGrant(Resource* r, LockEntry* lk, bool now, std::vector<Effect>* out);
  bool ConversionDeadlock(const Resource& r, const LockEntry* lk) const;
  void Grant(Resource* r, LockEntry* lk, int mode, uint32_t extra_sbf, std::vector<Effect>* out);
  void GrantPending(Resource* r, std::vector<Effect>* out);
  void SendBlockingAsts(Resource* r, LockEntry* lk, bool include_convert, std::vector<Effect>* out);
  void QueueBast(LockEntry* lk, int mode, std::vector<Effect>* out);
  void Complete(LockEntry* lk, int status, uint32_t sbf, bool gone, std::vector<Effect>* out);
  void WriteLvb(Resource* r, LockEntry* lk, bool invalidate, const Lvb& value);
  void RemoveFromQueues(Resource* r, LockEntry* lk);
  void InsertGranted(Resource* r, LockEntry* lk);
  void Destroy(Resource* r, LockEntry* lk);  // frees lk and, if empty, r
  void PurgeOwner(uint32_t owner, std::vector<Effect>* out);

  std::map<std::string, Resource> resources_;
  std::map<Key, std::unique_ptr<LockEntry>> locks_;
  std::map<uint64_t, std::string> inactive_;  // toss_seq -> name
  uint64_t next_toss_ = 1;
  std::vector<MemberInfo> members_;                // live members plus dead ones awaiting recovery
  std::map<uint32_t, uint32_t> recovery_pending_;  // incarnation -> nodeid
  uint32_t next_incarnation_ = 1;
  uint64_t seq_ = 0;
};

// Which way the LVB moves on a grant from `grmode` to `rqmode` (kernel rules).
bool LvbReadOnGrant(int grmode, int rqmode);
bool LvbWriteOnConvert(int grmode, int rqmode);
// Conversions for which QUECVT is legal.
bool QueCvtAllowed(int grmode, int rqmode);

}  // namespace ugfs2::dlm

#endif  // UGFS2_DLM_LOCK_TABLE_H_
