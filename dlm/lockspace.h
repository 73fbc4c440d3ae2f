// Lockspace: one node's handle on a cluster-wide lockspace (the dlm_lock()/dlm_unlock() API).
//
// Protocol (see docs/dlm.md): every member keeps a replica of the LockTable; each API call is
// turned into one message multicast through the Transport; every member applies every message in
// the agreed total order, so all replicas make identical grant decisions and the requester learns
// its result when its own message comes back. Membership changes, recovery completions and state
// transfers to joining members are events of the same ordered stream.
//
// Callbacks: completion (ast) and blocking (bast) callbacks run on the lockspace's CallbackQueue,
// one at a time and in order; never on the transport thread, never under the lockspace mutex.
// They may call Lock()/Unlock() again. Without quorum nothing is delivered: callbacks are held,
// and when quorum is lost the lockspace fences itself (FenceHook, fenced()), fails its pending
// requests with kStatusFenced, drops its replica, leaves the group and rejoins fresh once quorum
// is back.
//
// Heartbeats, eviction and the write lease (docs/dlm.md, "Heartbeats, eviction and the write
// lease"): every synced member multicasts a HEARTBEAT every heartbeat_interval; the lowest member
// that is not silent itself evicts (EVICT message, applied like a failure of that member) a member
// it has not heard from for evict_timeout. The lease (LeaseValid()) is renewed only when this node
// delivers its own heartbeat: expiry = the heartbeat's send time + lease. A frozen node's lease
// therefore expires before any survivor applies its EVICT, and an evicted node fences itself
// when it delivers the EVICT.
//
// Counters (Counters()): the messages this node multicast and was delivered, relaxed atomics
// (readable without the lockspace mutex).
//
// Threads: with heartbeats enabled (and heartbeat_thread set) the lockspace owns one timer thread
// that runs HeartbeatTick() every heartbeat_interval; it takes only mu_ and is joined by the
// destructor before the transport is stopped.
//
// Thread safety: all public methods may be called from any thread, including from callbacks
// (except the *Sync helpers, which refuse to block on the callback thread).
#ifndef UGFS2_DLM_LOCKSPACE_H_
#define UGFS2_DLM_LOCKSPACE_H_

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "callback_queue.h"
#include "common/status.h"
#include "lock_table.h"
#include "transport.h"
#include "types.h"
#include "wire.h"

namespace ugfs2::dlm {

using CompletionFn = std::function<void()>;
using BlockingFn = std::function<void(int mode)>;

struct LockspaceOptions {
  std::string name;
  // Where callbacks run. Null: the lockspace creates its own ThreadCallbackQueue.
  CallbackQueue* callbacks = nullptr;
  // Owner identity recorded with every lock (for dumps). 0/"" = this process.
  uint32_t pid = 0;
  std::string procname;
  // Called on the callback queue when node `nodeid` failed while being a member. The filesystem
  // replays that node's journal and then calls RecoveryDone(nodeid). Until some member reports
  // done, the failed node's granted locks keep blocking conflicting requests (except NOEXP ones).
  // If unset, the lockspace reports recovery done by itself.
  std::function<void(uint32_t nodeid)> recovery_hook;
  // Called on the callback queue when this node fences itself (true) and when it is serving
  // again after rejoining (false).
  std::function<void(bool fenced)> fence_hook;
  // Rejoin automatically (as a fresh member) once quorum returns after fencing.
  bool auto_rejoin = true;
  // Wall clock for queue timestamps (dumps only). Null: CLOCK_REALTIME.
  std::function<int64_t()> now_ns;
  // Heartbeats, eviction and the write lease. heartbeat_interval 0 disables all three (no
  // heartbeat or eviction messages; LeaseValid() is true whenever this node is a member).
  // Otherwise Join() requires 0 < lease < evict_timeout - heartbeat_interval.
  std::chrono::milliseconds heartbeat_interval{1000};
  std::chrono::milliseconds evict_timeout{8000};  // silence after which a member is evicted
  std::chrono::milliseconds lease{4000};          // validity of a delivered own heartbeat
  // Clock of heartbeats, silence and the lease (nanoseconds). Null: CLOCK_MONOTONIC. Must be
  // callable from any thread without taking locks (LeaseValid() calls it).
  std::function<int64_t()> monotonic_ns;
  // Run HeartbeatTick() from a timer thread owned by the lockspace. False: the owner calls
  // HeartbeatTick() itself (tests with a manual clock).
  bool heartbeat_thread = true;
  // kLkfBatch requests wait at most this long for company before they are sent (the timer
  // thread sends them; at once when kMaxBatch are waiting or another operation is sent). 0, or
  // without the timer thread (heartbeat_thread false): they wait only while a message of this
  // node's operations is on its way round.
  std::chrono::microseconds batch_delay{50000};
};

enum class LsState { kIdle, kJoining, kMember, kFenced, kLeft, kDead };
const char* LsStateName(LsState s);

struct LockspaceInfo {
  std::string name;
  LsState state = LsState::kIdle;
  MemberId self;
  uint32_t incarnation = 0;
  bool quorate = false;
  bool quorum_confirmed = false;
  std::vector<MemberInfo> members;
  std::map<uint32_t, uint32_t> recovery_pending;  // incarnation -> nodeid
  uint64_t seq = 0;
  size_t resources = 0;
  size_t locks = 0;
  size_t held_callbacks = 0;
  uint64_t fence_count = 0;
  // Heartbeats (all 0 / empty when disabled).
  int64_t lease_expiry_ns = 0;  // as LeaseExpiryNs()
  bool lease_valid = false;
  uint64_t evictions = 0;      // EVICTs applied by this node (this node's own included)
  uint64_t times_evicted = 0;  // how often this node was evicted itself
  // Live synced members (incarnation -> nanoseconds since this node last delivered a message
  // from it; this node itself included).
  std::map<uint32_t, int64_t> last_heard_age_ns;
};

// Since the lockspace was created. Sent = accepted by the transport's Multicast.
// Heartbeats are counted only in the heartbeat_* counters.
struct LockspaceCounters {
  uint64_t msgs_sent = 0;       // every message this node multicast (lock ops, sync, hello, ...)
  uint64_t bytes_sent = 0;      // their bytes
  uint64_t op_msgs_sent = 0;    // ... of which lock operations (lock, convert, unlock, cancel)
  uint64_t msgs_delivered = 0;  // messages the transport delivered (every member's, ours too)
  uint64_t heartbeats_sent = 0;
  uint64_t heartbeats_delivered = 0;  // every member's, ours too
  uint64_t evictions = 0;             // EVICTs applied (see LockspaceInfo::evictions)
};

class Lockspace final : public TransportListener {
 public:
  Lockspace(Transport* transport, LockspaceOptions opts);
  ~Lockspace() override;
  Lockspace(const Lockspace&) = delete;
  Lockspace& operator=(const Lockspace&) = delete;

  // Starts joining (the group is joined once this node is quorate); WaitMember() blocks until
  // the replica is in sync.
  Status Join();
  Status WaitMember(std::chrono::milliseconds timeout);
  // Leaves the group. Locks still held are released cluster-wide (a clean leave).
  Status Leave();

  // dlm_lock(): new request (lksb->lkid is set on return) or, with kLkfConvert, conversion of
  // lock lksb->lkid. Returns OK when the request was sent; the outcome (including EAGAIN and
  // EDEADLK) arrives through `ast` with lksb->status set. Errors: kInvalid (bad arguments),
  // kBusy (an operation is already in flight on that lock), kNotFound, kFenced, kNotConnected.
  // kLkfBatch (a new request only): the request may wait here and go with the operations that
  // follow it, in one message: for at most LockspaceOptions::batch_delay, and earlier if another
  // operation is sent meanwhile or the batch is full (without a delay: while a message of this
  // node's operations is on its way round). Operations leave in the order they were made.
  // For a conversion, `ast`/`bast` replace the lock's callbacks when non-null. One conversion
  // may be issued while a down-conversion of the same lock is still in flight (it is applied
  // after it); every other overlap is kBusy.
  Status Lock(int mode, Lksb* lksb, uint32_t flags, std::string_view name, CompletionFn ast,
              BlockingFn bast);
  // dlm_unlock(): flags kLkfCancel (cancel a pending request/conversion; if nothing is pending,
  // returns OK and no callback follows), kLkfForceUnlock, kLkfValBlk, kLkfIvValBlk. With
  // VALBLK the LVB is taken from the lock's lksb. Completion arrives through the lock's ast with
  // status kStatusUnlock (or kStatusCancel on the cancelled operation).
  Status Unlock(uint32_t lkid, uint32_t flags);
  // Sends the kLkfBatch requests waiting to be sent now (someone waits for their completions).
  void FlushBatch();

  // Synchronous helpers: wait at most `timeout` for the completion. On timeout a new request is
  // cancelled (and unlocked should it be granted later), a conversion is cancelled, and
  // kTimedOut is returned. Refused (kInvalid) on the callback thread. The return value is OK
  // when the completion arrived; the lock outcome is in lksb->status.
  Status LockSync(int mode, Lksb* lksb, uint32_t flags, std::string_view name, BlockingFn bast,
                  std::chrono::milliseconds timeout);
  Status UnlockSync(uint32_t lkid, uint32_t flags, Lksb* lksb, std::chrono::milliseconds timeout);

  // The recovery hook's answer: node `nodeid`'s journal has been recovered.
  Status RecoveryDone(uint32_t nodeid);

  // The write lease, lock-free. LeaseExpiryNs(): monotonic_ns time (CLOCK_MONOTONIC by default)
  // until which this node may write shared storage; 0 before it is a synced member, after it
  // fenced itself and after Leave(); INT64_MAX while a member with heartbeats disabled.
  // LeaseValid(): now < LeaseExpiryNs().
  int64_t LeaseExpiryNs() const { return lease_expiry_ns_.load(std::memory_order_acquire); }
  bool LeaseValid() const;
  // One heartbeat round: multicast our heartbeat (at most one outstanding), evict silent members
  // if we are the designated evicter. Run by the timer thread every heartbeat_interval; call it
  // yourself with heartbeat_thread = false. No-op with heartbeats disabled.
  void HeartbeatTick();

  // Whether this node's replica holds no lock of any node (granted, converting or waiting) on
  // resource `name`. False unless this node is a synced member. Says nothing of requests other
  // nodes have sent that are not yet delivered here.
  bool ResourceIdle(std::string_view name) const;
  bool fenced() const;
  LsState state() const;
  LockspaceInfo Info() const;
  LockspaceCounters Counters() const;
  const std::string& name() const { return opts_.name; }
  // This node's view of the lock table, rendered as text (dlm_tool lockdebug-like) or JSON.
  std::string Dump(bool json) const;
  // Asks every member for its Dump(json) through the ordered stream; one entry per answering
  // member, in nodeid order.
  Result<std::vector<std::string>> DumpAllNodes(bool json, std::chrono::milliseconds timeout);
  // Digest of the replica (tests).
  uint64_t TEST_Digest() const;
  std::string TEST_CheckInvariants() const;

  // TransportListener (transport thread).
  void OnDeliver(const MemberId& from, const uint8_t* data, size_t len) override;
  void OnConfChg(const std::vector<MemberId>& members,
                 const std::vector<std::pair<MemberId, LeaveReason>>& left,
                 const std::vector<MemberId>& joined) override;
  void OnQuorum(bool quorate) override;
  void OnFatal(const Status& why) override;

 private:
  struct SyncWaiter;
  struct LocalLock {
    uint32_t lkid = 0;
    Lksb* lksb = nullptr;
    CompletionFn ast;
    BlockingFn bast;
    int grmode = kIV;   // as of the last completion applied
    bool busy = false;  // request/convert/unlock sent, completion not yet applied
    int inflight = 0;   // ops sent whose completion has not been applied
    // The one op in flight is a down-conversion (always granted when applied): one more
    // conversion may be pipelined behind it (ping-pong style demote-then-re-request).
    bool pipelinable = false;
    int after_mode = kIV;  // granted mode once the in-flight conversion completes
    bool unlocking = false;
    bool orphan = false;  // its LockSync timed out: unlock as soon as granted
    std::shared_ptr<SyncWaiter> waiter;
    std::unique_ptr<Lksb> own_lksb;  // used once orphaned
  };
  // One event of the ordered stream, kept while we wait for the state transfer.
  struct Event {
    bool is_confchg = false;
    MemberId from;
    std::vector<uint8_t> msg;
    std::vector<MemberId> members;
    std::vector<std::pair<MemberId, LeaveReason>> left;
    std::vector<MemberId> joined;
  };

  Status LockInternal(int mode, Lksb* lksb, uint32_t flags, std::string_view name, CompletionFn ast,
                      BlockingFn bast, std::shared_ptr<SyncWaiter> waiter);
  Status UnlockInternal(uint32_t lkid, uint32_t flags, Lksb* lksb,
                        std::shared_ptr<SyncWaiter> waiter);
  // Sends `op` (`batch`: kLkfBatch, may wait in batch_). Everything waiting in batch_ goes first,
  // in the same message.
  Status SendOpLocked(const LockOp& op, bool batch = false);
  // Sends what waits in batch_ as one message; a failure fences this node (the operations were
  // accepted already).
  void FlushBatchLocked();
  // Sends batch_ and then `last` (may be null) as one message (kMsgOp for a single operation,
  // kMsgOps otherwise) and empties batch_. A failure is returned to the caller of `last`; when
  // the message also carried operations queued earlier (already answered), it fences this node.
  Status SendBatchLocked(const LockOp* last);
  // One of this node's op messages came back.
  void OwnOpDeliveredLocked();
  Status MulticastLocked(std::vector<uint8_t> msg);
  void ApplyEventLocked(const Event& ev, bool replay);
  void ApplyMessageLocked(const MemberId& from, const uint8_t* data, size_t len, bool replay);
  void HandleEffectsLocked(std::vector<Effect>* effects);
  // Runs `fn` now (inline_ok: under mu_, only for our own sync waiters) or posts it to the
  // callback queue; holds it while quorum is not confirmed.
  void DeliverLocked(std::function<void()> fn, bool inline_ok);
  void FlushHeldLocked();
  bool DeliverableLocked() const { return quorate_ && quorum_confirmed_; }
  void MaybeSendSyncLocked();
  void MaybeStartRecoveryLocked();
  void FoundLocked(const std::vector<MemberId>& members);
  void InstallSnapshotLocked(const uint8_t* data, size_t len);
  void FenceLocked(const char* why);
  void ResetLocalLocked();
  bool IsDesignatedLocked() const;
  uint32_t MyIncarnationLocked() const;
  int64_t NowNs() const;
  int64_t MonoNs() const;
  bool HeartbeatsOn() const { return opts_.heartbeat_interval.count() > 0; }
  bool BatchDelayOn() const { return opts_.batch_delay.count() > 0 && opts_.heartbeat_thread; }
  void TimerLoop();
  void TickLocked();
  void SendHeartbeatLocked(uint32_t incarnation, int64_t now);
  void ApplyHeartbeatLocked(const MemberId& from, ByteReader* r, bool replay);
  void ApplyEvictLocked(const MemberId& from, ByteReader* r, bool replay);
  void NoteHeardLocked(const MemberId& from);
  void BecameMemberLocked();
  void RejoinAfterEvictionLocked();
  std::string DumpLocked(bool json) const;

  Transport* const transport_;
  LockspaceOptions opts_;
  std::unique_ptr<ThreadCallbackQueue> own_callbacks_;
  CallbackQueue* callbacks_;
  MemberId self_;

  // Lock order: mu_ is the only lockspace mutex; under it the code calls into the callback queue
  // (Post) and the transport (Multicast/Join/Leave), whose internal locks come after it. It is
  // never held while user callbacks run. Taken by API callers, the transport thread and the
  // timer thread.
  mutable std::mutex mu_;
  std::condition_variable cv_;  // state changes, sync waiters, dump replies
  LsState state_ = LsState::kIdle;
  bool in_group_ = false;     // our own join confchg has been seen
  bool started_ = false;      // transport_->Start() done
  bool join_wanted_ = false;  // join the group as soon as quorate
  bool quorate_ = false;
  bool quorum_confirmed_ = true;
  // Joining: events since our own join (index 0 = our join), the members that were there before
  // us (still alive) and members that joined after us with the local index of their join.
  bool synced_ = false;
  uint64_t local_seq_ = 0;
  std::vector<Event> buffer_;
  std::set<MemberId> old_members_;
  struct LaterJoiner {
    uint64_t join_index = 0;
    uint64_t nonce = 0;
  };
  std::map<MemberId, LaterJoiner> later_joiners_;
  uint64_t nonce_ = 0;  // of our current join
  std::vector<MemberId> join_cohort_;
  LockTable table_;
  std::map<uint32_t, LocalLock> locks_;
  // kLkfBatch requests waiting to be sent, and how many op messages of ours are on their way
  // round (multicast, not yet delivered back here).
  std::vector<LockOp> batch_;
  std::chrono::steady_clock::time_point batch_due_;  // when batch_ goes (BatchDelayOn)
  int own_ops_in_flight_ = 0;
  static constexpr size_t kMaxBatch = 1024;  // ~50 bytes each
  uint32_t next_lkid_ = 1;
  std::vector<std::function<void()>> held_;  // callbacks held while not deliverable
  std::vector<bool> held_inline_;            // parallel to held_: run under mu_ (sync waiters)
  std::set<uint32_t> recovery_notified_;     // incarnations the hook was called for
  std::set<uint32_t> recovery_done_sent_;
  uint64_t fence_count_ = 0;
  // DumpAllNodes
  uint64_t next_query_ = 1;
  std::map<uint64_t, std::map<MemberId, std::string>> query_replies_;
  std::map<uint64_t, std::set<MemberId>> query_expected_;
  // Heartbeats (all under mu_ except the atomics). Own heartbeat counter (never reset, so a
  // counter identifies one heartbeat of this process), the one outstanding (sent, not yet
  // delivered back; 0 = none), when we last delivered a message from each live synced member
  // (incarnation -> MonoNs()), and the EVICTs we sent (incarnation -> heartbeat_seen).
  uint64_t hb_counter_ = 0;
  uint64_t hb_outstanding_ = 0;
  std::map<uint32_t, int64_t> last_heard_;
  std::map<uint32_t, uint64_t> evict_sent_;
  bool evicted_in_replay_ = false;
  uint64_t evictions_total_ = 0;
  uint64_t times_evicted_ = 0;
  std::atomic<int64_t> lease_expiry_ns_{0};
  // The timer thread (opts_.heartbeat_thread, with heartbeats or a batch delay): waits on
  // timer_cv_ with mu_, runs TickLocked() and sends due batches under mu_. Lock order: mu_ only
  // (callbacks_ and transport_ as everywhere else under mu_).
  std::condition_variable timer_cv_;
  bool timer_stop_ = false;
  std::thread timer_;
  // Counters (LockspaceCounters), relaxed; bumped under mu_ but read without it.
  std::atomic<uint64_t> msgs_sent_{0}, bytes_sent_{0}, op_msgs_sent_{0}, msgs_delivered_{0};
  std::atomic<uint64_t> heartbeats_sent_{0}, heartbeats_delivered_{0}, evictions_{0};
};

}  // namespace ugfs2::dlm

#endif  // UGFS2_DLM_LOCKSPACE_H_
