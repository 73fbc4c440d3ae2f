#include "lockspace.h"

#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <fstream>
#include <sstream>

#include "common/log.h"
#include "dump.h"

namespace ugfs2::dlm {
namespace {

enum MsgType : uint8_t {
  kMsgOp = 1,
  // OPS{u16 n, n x op}: several lock operations of one node, applied in order (kLkfBatch).
  kMsgOps = 9,
  kMsgRecoveryDone = 2,
  kMsgSync = 3,
  kMsgQuery = 4,
  kMsgQueryReply = 5,
  kMsgHello = 6,
  // HEARTBEAT{u32 incarnation, u64 counter, i64 sent_ns}: sent_ns is the sender's monotonic_ns
  // clock when it multicast the message (only the sender itself interprets it: its lease).
  kMsgHeartbeat = 7,
  // EVICT{u32 nodeid, u32 pid, u32 incarnation, u64 heartbeat_seen, i64 silent_ns}: the sender
  // (a synced member) has not heard from that member for silent_ns (diagnostics only) and had
  // applied its heartbeats up to counter heartbeat_seen.
  kMsgEvict = 8,
};

int64_t Ns(std::chrono::milliseconds d) { return static_cast<int64_t>(d.count()) * 1000000; }

uint64_t NewNonce(uint32_t pid) {
  static std::atomic<uint64_t> counter{0};
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  uint64_t h = (uint64_t{pid} << 40) ^ (counter.fetch_add(1) << 20) ^
               static_cast<uint64_t>(ts.tv_nsec) ^ (static_cast<uint64_t>(ts.tv_sec) << 32);
  h ^= h >> 33;
  h *= 0xff51afd7ed558ccdULL;
  h ^= h >> 33;
  return h | 1;  // never 0
}

std::string SelfProcName() {
  std::ifstream f("/proc/self/comm");
  std::string s;
  std::getline(f, s);
  return s;
}

std::vector<MemberId> Sorted(std::vector<MemberId> v) {
  std::sort(v.begin(), v.end());
  return v;
}

}  // namespace

const char* LsStateName(LsState s) {
  switch (s) {
    case LsState::kIdle:
      return "idle";
    case LsState::kJoining:
      return "joining";
    case LsState::kMember:
      return "member";
    case LsState::kFenced:
      return "fenced";
    case LsState::kLeft:
      return "left";
    case LsState::kDead:
      return "dead";
  }
  return "?";
}

struct Lockspace::SyncWaiter {
  bool done = false;
};

Lockspace::Lockspace(Transport* transport, LockspaceOptions opts)
    : transport_(transport), opts_(std::move(opts)) {
  if (opts_.callbacks == nullptr) {
    own_callbacks_ = std::make_unique<ThreadCallbackQueue>();
    callbacks_ = own_callbacks_.get();
  } else {
    callbacks_ = opts_.callbacks;
  }
  if (opts_.pid == 0) opts_.pid = static_cast<uint32_t>(getpid());
  if (opts_.procname.empty()) opts_.procname = SelfProcName();
  self_ = transport_->self();
}

Lockspace::~Lockspace() {
  {
    std::lock_guard<std::mutex> l(mu_);
    timer_stop_ = true;
  }
  timer_cv_.notify_all();
  if (timer_.joinable()) timer_.join();
  transport_->Stop();
  own_callbacks_.reset();  // drains callbacks before members go away
}

int64_t Lockspace::NowNs() const {
  if (opts_.now_ns) return opts_.now_ns();
  timespec ts{};
  clock_gettime(CLOCK_REALTIME, &ts);
  return int64_t{ts.tv_sec} * 1000000000 + ts.tv_nsec;
}

int64_t Lockspace::MonoNs() const {
  if (opts_.monotonic_ns) return opts_.monotonic_ns();
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return int64_t{ts.tv_sec} * 1000000000 + ts.tv_nsec;
}

bool Lockspace::LeaseValid() const {
  const int64_t expiry = LeaseExpiryNs();
  return expiry != 0 && MonoNs() < expiry;
}

Status Lockspace::Join() {
  std::lock_guard<std::mutex> l(mu_);
  if (state_ != LsState::kIdle && state_ != LsState::kLeft) {
    return Status::Invalid("lockspace already joined");
  }
  if (HeartbeatsOn() &&
      (opts_.lease.count() <= 0 || opts_.lease >= opts_.evict_timeout - opts_.heartbeat_interval)) {
    return Status::Invalid("lockspace " + opts_.name +
                           ": need 0 < lease < evict_timeout - heartbeat_interval");
  }
  if (!started_) {
    RETURN_IF_ERROR(transport_->Start(this));
    started_ = true;
  }
  state_ = LsState::kJoining;
  synced_ = false;
  in_group_ = false;
  buffer_.clear();
  lease_expiry_ns_.store(0, std::memory_order_release);
  if ((HeartbeatsOn() || BatchDelayOn()) && opts_.heartbeat_thread && !timer_.joinable()) {
    timer_ = std::thread([this] { TimerLoop(); });
  }
  join_wanted_ = true;
  if (quorate_) {
    join_wanted_ = false;
    return transport_->Join();
  }
  LOG_INFO("dlm " << opts_.name << ": waiting for quorum before joining");
  return Status::Ok();
}

Status Lockspace::WaitMember(std::chrono::milliseconds timeout) {
  std::unique_lock<std::mutex> l(mu_);
  if (!cv_.wait_for(l, timeout,
                    [this] { return state_ == LsState::kMember || state_ == LsState::kDead; })) {
    return Status(Code::kTimedOut, "timed out joining lockspace " + opts_.name + " (state " +
                                       LsStateName(state_) + ")");
  }
  if (state_ == LsState::kDead) return Status(Code::kNotConnected, "transport failed");
  return Status::Ok();
}

Status Lockspace::Leave() {
  std::lock_guard<std::mutex> l(mu_);
  join_wanted_ = false;
  if (state_ == LsState::kIdle || state_ == LsState::kLeft) return Status::Ok();
  state_ = LsState::kLeft;
  ResetLocalLocked();
  return transport_->Leave();
}

// ---------------------------------------------------------------------------------------------
// API

Status Lockspace::SendOpLocked(const LockOp& op, bool batch) {
  if (batch && (BatchDelayOn() || own_ops_in_flight_ > 0)) {
    if (batch_.empty() && BatchDelayOn()) {
      batch_due_ = std::chrono::steady_clock::now() + opts_.batch_delay;
      timer_cv_.notify_all();
    }
    batch_.push_back(op);
    if (batch_.size() >= kMaxBatch) FlushBatchLocked();
    return Status::Ok();
  }
  return SendBatchLocked(&op);
}

void Lockspace::FlushBatchLocked() {
  if (!batch_.empty()) (void)SendBatchLocked(nullptr);
}

Status Lockspace::SendBatchLocked(const LockOp* last) {
  const size_t n = batch_.size() + (last != nullptr ? 1 : 0);
  if (n == 0) return Status::Ok();
  ByteWriter w;
  if (n == 1) {
    w.U8(kMsgOp);
    (last != nullptr ? *last : batch_[0]).Encode(&w);
  } else {
    w.U8(kMsgOps);
    w.U16(static_cast<uint16_t>(n));
    for (const LockOp& b : batch_) b.Encode(&w);
    if (last != nullptr) last->Encode(&w);
  }
  const bool accepted_earlier = !batch_.empty();
  batch_.clear();
  Status st = MulticastLocked(w.Take());
  if (st.ok()) {
    op_msgs_sent_.fetch_add(1, std::memory_order_relaxed);
    own_ops_in_flight_++;
  } else if (accepted_earlier) {
    // Batched operations were answered "sent" when they were queued; their callers cannot learn
    // of this failure, so the node's lock state is no longer what they believe.
    LOG_ERROR("dlm " << opts_.name << ": sending batched lock operations: " << st.ToString());
    FenceLocked("multicast of batched lock operations failed");
  }
  return st;
}

void Lockspace::FlushBatch() {
  std::lock_guard<std::mutex> l(mu_);
  if (state_ == LsState::kMember) FlushBatchLocked();
}

void Lockspace::OwnOpDeliveredLocked() {
  if (own_ops_in_flight_ > 0) own_ops_in_flight_--;
  if (own_ops_in_flight_ == 0 && state_ == LsState::kMember && !BatchDelayOn()) {
    FlushBatchLocked();
  }
}

Status Lockspace::MulticastLocked(std::vector<uint8_t> msg) {
  const size_t bytes = msg.size();
  Status st = transport_->Multicast(std::move(msg));
  if (st.ok()) {
    msgs_sent_.fetch_add(1, std::memory_order_relaxed);
    bytes_sent_.fetch_add(bytes, std::memory_order_relaxed);
  }
  return st;
}

namespace {
Status ValidateLock(int mode, const Lksb* lksb, uint32_t flags, std::string_view name) {
  if (mode < kNL || mode > kEX) return Status::Invalid("bad lock mode");
  if (lksb == nullptr) return Status::Invalid("lksb required");
  if (flags & ~kLockFlagsMask) return Status::Invalid("unsupported lock flags");
  const bool conv = flags & kLkfConvert;
  if ((flags & (kLkfQueCvt | kLkfConvDeadlk)) && !conv) {
    return Status::Invalid("QUECVT/CONVDEADLK need CONVERT");
  }
  if ((flags & kLkfConvDeadlk) && (flags & kLkfNoQueue)) {
    return Status::Invalid("CONVDEADLK with NOQUEUE");
  }
  if ((flags & kLkfExpedite) && (conv || mode != kNL || (flags & (kLkfQueCvt | kLkfNoQueue)))) {
    return Status::Invalid("EXPEDITE only for new NL requests");
  }
  if ((flags & kLkfAltPr) && (flags & kLkfAltCw)) return Status::Invalid("ALTPR with ALTCW");
  if ((flags & kLkfNoQueueBast) && !(flags & kLkfNoQueue)) {
    return Status::Invalid("NOQUEUEBAST needs NOQUEUE");
  }
  if (conv) {
    if (lksb->lkid == 0) return Status::Invalid("CONVERT needs lksb->lkid");
  } else if (name.empty() || name.size() > kResNameMax) {
    return Status::Invalid("resource name must be 1..64 bytes");
  }
  return Status::Ok();
}
}  // namespace

Status Lockspace::Lock(int mode, Lksb* lksb, uint32_t flags, std::string_view name,
                       CompletionFn ast, BlockingFn bast) {
  if (!ast && !(flags & kLkfConvert)) return Status::Invalid("completion callback required");
  return LockInternal(mode, lksb, flags, name, std::move(ast), std::move(bast), nullptr);
}

Status Lockspace::LockInternal(int mode, Lksb* lksb, uint32_t flags, std::string_view name,
                               CompletionFn ast, BlockingFn bast,
                               std::shared_ptr<SyncWaiter> waiter) {
  RETURN_IF_ERROR(ValidateLock(mode, lksb, flags, name));
  std::lock_guard<std::mutex> l(mu_);
  if (state_ != LsState::kMember) {
    if (state_ == LsState::kFenced || state_ == LsState::kDead) return Status::Fenced("fenced");
    return Status(Code::kNotConnected, "lockspace not joined");
  }
  LockOp op;
  op.mode = static_cast<int8_t>(mode);
  op.flags = flags & ~kLkfBatch;  // local only
  if (flags & kLkfConvert) {
    auto it = locks_.find(lksb->lkid);
    if (it == locks_.end()) return Status::NotFound("no such lock");
    LocalLock& lk = it->second;
    const bool pipelined =
        lk.busy && lk.inflight == 1 && lk.pipelinable && !lk.unlocking && !lk.waiter && !waiter;
    if ((lk.busy && !pipelined) || lk.orphan) {
      return Status::Busy("operation in progress on lock");
    }
    const int base = pipelined ? lk.after_mode : lk.grmode;
    if ((flags & kLkfQueCvt) && !QueCvtAllowed(base, mode)) {
      return Status::Invalid("QUECVT not allowed for this conversion");
    }
    op.type = LockOp::kConvert;
    op.lkid = lk.lkid;
    if ((flags & kLkfValBlk) && LvbWriteOnConvert(base, mode)) {
      op.has_lvb = true;
      op.lvb = lksb->lvb;
    }
    const bool middle = (base == kPR && mode == kCW) || (base == kCW && mode == kPR);
    lk.lksb = lksb;
    if (ast) lk.ast = std::move(ast);
    if (bast) lk.bast = std::move(bast);
    if (waiter) lk.waiter = std::move(waiter);
    Status st = SendOpLocked(op);
    if (!st.ok()) return st;
    lk.pipelinable = !pipelined && mode < base && !middle;
    lk.after_mode = mode;
    lk.inflight++;
    lk.busy = true;
    return st;
  }
  uint32_t lkid;
  do {
    lkid = next_lkid_++;
  } while (lkid == 0 || locks_.count(lkid) != 0);
  op.type = LockOp::kRequest;
  op.lkid = lkid;
  op.pid = opts_.pid;
  op.procname = opts_.procname;
  op.name = std::string(name);
  LocalLock& lk = locks_[lkid];
  lk.lkid = lkid;
  lk.lksb = lksb;
  lk.ast = std::move(ast);
  lk.bast = std::move(bast);
  lk.waiter = std::move(waiter);
  lk.busy = true;
  lk.inflight = 1;
  lksb->lkid = lkid;
  Status st = SendOpLocked(op, (flags & kLkfBatch) != 0);
  if (!st.ok()) locks_.erase(lkid);
  return st;
}

Status Lockspace::Unlock(uint32_t lkid, uint32_t flags) {
  return UnlockInternal(lkid, flags, nullptr, nullptr);
}

Status Lockspace::UnlockInternal(uint32_t lkid, uint32_t flags, Lksb* lksb,
                                 std::shared_ptr<SyncWaiter> waiter) {
  if (flags & ~kUnlockFlagsMask) return Status::Invalid("unsupported unlock flags");
  if ((flags & kLkfCancel) && (flags & kLkfForceUnlock)) {
    return Status::Invalid("CANCEL with FORCEUNLOCK");
  }
  std::lock_guard<std::mutex> l(mu_);
  if (state_ != LsState::kMember) {
    if (state_ == LsState::kFenced || state_ == LsState::kDead) return Status::Fenced("fenced");
    return Status(Code::kNotConnected, "lockspace not joined");
  }
  auto it = locks_.find(lkid);
  if (it == locks_.end()) return Status::NotFound("no such lock");
  LocalLock& lk = it->second;
  LockOp op;
  op.lkid = lkid;
  op.flags = flags;
  if (flags & kLkfCancel) {
    if (!lk.busy || lk.unlocking || lk.orphan) return Status::Ok();  // nothing to cancel
    op.type = LockOp::kCancel;
    return SendOpLocked(op);
  }
  if (lk.orphan || lk.unlocking) return Status::Busy("unlock in progress");
  if (lk.busy && !(flags & kLkfForceUnlock)) return Status::Busy("operation in progress on lock");
  if (lksb != nullptr) lk.lksb = lksb;
  op.type = LockOp::kUnlock;
  if ((flags & kLkfValBlk) && (lk.grmode == kPW || lk.grmode == kEX)) {
    op.has_lvb = true;
    op.lvb = lk.lksb->lvb;
  }
  if (waiter) lk.waiter = std::move(waiter);
  Status st = SendOpLocked(op);
  if (!st.ok()) return st;
  lk.busy = true;
  lk.unlocking = true;
  lk.pipelinable = false;
  lk.inflight++;
  return st;
}

Status Lockspace::LockSync(int mode, Lksb* lksb, uint32_t flags, std::string_view name,
                           BlockingFn bast, std::chrono::milliseconds timeout) {
  if (callbacks_->InCallback()) return Status::Invalid("LockSync on the callback thread");
  auto waiter = std::make_shared<SyncWaiter>();
  RETURN_IF_ERROR(LockInternal(mode, lksb, flags, name, nullptr, std::move(bast), waiter));
  const uint32_t lkid = lksb->lkid;
  std::unique_lock<std::mutex> l(mu_);
  if (cv_.wait_for(l, timeout, [&] { return waiter->done; })) return Status::Ok();
  auto it = locks_.find(lkid);
  if (it == locks_.end()) return Status(Code::kTimedOut, "lock request timed out");
  LocalLock& lk = it->second;
  LockOp op;
  op.type = LockOp::kCancel;
  op.lkid = lkid;
  if (flags & kLkfConvert) {
    // The lock stays the caller's; give the cancel one more timeout to settle it.
    (void)SendOpLocked(op);
    cv_.wait_for(l, timeout, [&] { return waiter->done; });
    auto again = locks_.find(lkid);  // the lock may be gone meanwhile (e.g. fenced)
    if (again != locks_.end() && again->second.waiter == waiter) again->second.waiter.reset();
    return Status(Code::kTimedOut, "lock conversion timed out");
  }
  // A new request: detach it from the caller's lksb; unlock it should it be granted later.
  (void)SendOpLocked(op);
  lk.orphan = true;
  lk.own_lksb = std::make_unique<Lksb>(*lksb);
  lk.lksb = lk.own_lksb.get();
  lk.ast = nullptr;
  lk.bast = nullptr;
  lk.waiter.reset();
  return Status(Code::kTimedOut,
                "lock request timed out after " + std::to_string(timeout.count()) + " ms");
}

Status Lockspace::UnlockSync(uint32_t lkid, uint32_t flags, Lksb* lksb,
                             std::chrono::milliseconds timeout) {
  if (callbacks_->InCallback()) return Status::Invalid("UnlockSync on the callback thread");
  auto waiter = std::make_shared<SyncWaiter>();
  RETURN_IF_ERROR(UnlockInternal(lkid, flags, lksb, waiter));
  std::unique_lock<std::mutex> l(mu_);
  if (cv_.wait_for(l, timeout, [&] { return waiter->done; })) return Status::Ok();
  auto it = locks_.find(lkid);
  if (it != locks_.end()) it->second.waiter.reset();
  return Status(Code::kTimedOut, "unlock timed out");
}

Status Lockspace::RecoveryDone(uint32_t nodeid) {
  std::lock_guard<std::mutex> l(mu_);
  if (state_ != LsState::kMember) return Status::Fenced("not a member");
  if (!DeliverableLocked()) return Status::Fenced("no quorum");
  ByteWriter w;
  w.U8(kMsgRecoveryDone);
  w.U32(nodeid);
  return MulticastLocked(w.Take());
}

bool Lockspace::ResourceIdle(std::string_view name) const {
  std::lock_guard<std::mutex> l(mu_);
  if (state_ != LsState::kMember || !synced_) return false;
  auto it = table_.resources().find(std::string(name));
  return it == table_.resources().end() || it->second.empty();
}

bool Lockspace::fenced() const {
  std::lock_guard<std::mutex> l(mu_);
  return state_ == LsState::kFenced || state_ == LsState::kDead;
}

LsState Lockspace::state() const {
  std::lock_guard<std::mutex> l(mu_);
  return state_;
}

LockspaceInfo Lockspace::Info() const {
  std::lock_guard<std::mutex> l(mu_);
  LockspaceInfo info;
  info.name = opts_.name;
  info.state = state_;
  info.self = self_;
  info.incarnation = synced_ ? MyIncarnationLocked() : 0;
  info.quorate = quorate_;
  info.quorum_confirmed = quorum_confirmed_;
  if (synced_) {
    info.members = table_.members();
    info.recovery_pending = table_.recovery_pending();
    info.seq = table_.seq();
    info.resources = table_.resources().size();
    info.locks = table_.lock_count();
  }
  info.held_callbacks = held_.size();
  info.fence_count = fence_count_;
  info.lease_expiry_ns = LeaseExpiryNs();
  info.lease_valid = LeaseValid();
  info.evictions = evictions_.load(std::memory_order_relaxed);
  info.times_evicted = times_evicted_;
  if (synced_ && HeartbeatsOn()) {
    const int64_t now = MonoNs();
    for (const auto& m : table_.members()) {
      if (!m.alive || !m.synced) continue;
      auto it = last_heard_.find(m.incarnation);
      if (it != last_heard_.end()) info.last_heard_age_ns[m.incarnation] = now - it->second;
    }
  }
  return info;
}

LockspaceCounters Lockspace::Counters() const {
  LockspaceCounters c;
  c.msgs_sent = msgs_sent_.load(std::memory_order_relaxed);
  c.bytes_sent = bytes_sent_.load(std::memory_order_relaxed);
  c.op_msgs_sent = op_msgs_sent_.load(std::memory_order_relaxed);
  c.msgs_delivered = msgs_delivered_.load(std::memory_order_relaxed);
  c.heartbeats_sent = heartbeats_sent_.load(std::memory_order_relaxed);
  c.heartbeats_delivered = heartbeats_delivered_.load(std::memory_order_relaxed);
  c.evictions = evictions_.load(std::memory_order_relaxed);
  return c;
}

uint64_t Lockspace::TEST_Digest() const {
  std::lock_guard<std::mutex> l(mu_);
  return table_.Digest();
}

std::string Lockspace::TEST_CheckInvariants() const {
  std::lock_guard<std::mutex> l(mu_);
  return synced_ ? table_.CheckInvariants() : std::string();
}

std::string Lockspace::Dump(bool json) const {
  std::lock_guard<std::mutex> l(mu_);
  return DumpLocked(json);
}

std::string Lockspace::DumpLocked(bool json) const {
  DumpContext ctx;
  ctx.lockspace = opts_.name;
  ctx.self = self_;
  ctx.state = LsStateName(state_);
  ctx.quorate = quorate_ && quorum_confirmed_;
  ctx.synced = synced_;
  ctx.incarnation = synced_ ? MyIncarnationLocked() : 0;
  ctx.now_ns = NowNs();
  ctx.held_callbacks = held_.size();
  for (const auto& [lkid, lk] : locks_) {
    if (lk.busy) ctx.in_flight.insert(lkid);
  }
  return json ? DumpJson(table_, ctx) : DumpText(table_, ctx);
}

Result<std::vector<std::string>> Lockspace::DumpAllNodes(bool json,
                                                         std::chrono::milliseconds timeout) {
  std::unique_lock<std::mutex> l(mu_);
  if (state_ != LsState::kMember) return Status(Code::kNotConnected, "not a member");
  const uint64_t qid = next_query_++;
  query_replies_[qid];
  ByteWriter w;
  w.U8(kMsgQuery);
  w.U64(qid);
  w.U32(self_.nodeid);
  w.U32(self_.pid);
  w.U8(json ? 1 : 0);
  RETURN_IF_ERROR(MulticastLocked(w.Take()));
  auto complete = [&] {
    auto e = query_expected_.find(qid);
    if (e == query_expected_.end()) return false;
    for (const auto& m : e->second) {
      if (query_replies_[qid].count(m) == 0) return false;
    }
    return true;
  };
  const bool all = cv_.wait_for(l, timeout, complete);
  std::vector<std::string> out;
  for (const auto& [m, text] : query_replies_[qid]) out.push_back(text);
  if (!all) {
    for (const auto& m : query_expected_[qid]) {
      if (query_replies_[qid].count(m) == 0) {
        out.push_back(json ? "{\"nodeid\":" + std::to_string(m.nodeid) +
                                 ",\"error\":\"no reply within timeout\"}"
                           : "node " + std::to_string(m.nodeid) + ": no reply within timeout\n");
      }
    }
  }
  query_replies_.erase(qid);
  query_expected_.erase(qid);
  return out;
}

// ---------------------------------------------------------------------------------------------
// The ordered stream

uint32_t Lockspace::MyIncarnationLocked() const {
  const MemberInfo* m = table_.FindMember(self_);
  return m ? m->incarnation : 0;
}

bool Lockspace::IsDesignatedLocked() const {
  const MemberInfo* best = nullptr;
  for (const auto& m : table_.members()) {
    if (!m.alive || !m.synced) continue;
    if (best == nullptr || m.id < best->id) best = &m;
  }
  return best != nullptr && best->id == self_;
}

void Lockspace::OnConfChg(const std::vector<MemberId>& members_in,
                          const std::vector<std::pair<MemberId, LeaveReason>>& left_in,
                          const std::vector<MemberId>& joined_in) {
  std::lock_guard<std::mutex> l(mu_);
  if (LogEnabled(LogLevel::kDebug)) {
    std::ostringstream o;
    o << "dlm " << opts_.name << " node " << self_.nodeid << "/" << self_.pid << " ("
      << LsStateName(state_) << (synced_ ? ",synced" : "") << ") confchg members";
    for (const auto& m : members_in) o << " " << m.nodeid << "/" << m.pid;
    o << " left";
    for (const auto& [m, why] : left_in) o << " " << m.nodeid << "/" << m.pid;
    o << " joined";
    for (const auto& m : joined_in) o << " " << m.nodeid << "/" << m.pid;
    LOG_DEBUG(o.str());
  }
  if (state_ != LsState::kJoining && state_ != LsState::kMember) return;
  Event ev;
  ev.is_confchg = true;
  ev.members = Sorted(members_in);
  ev.left = left_in;
  std::sort(ev.left.begin(), ev.left.end());
  ev.joined = Sorted(joined_in);
  if (!synced_) {
    if (!in_group_) {
      if (std::find(ev.joined.begin(), ev.joined.end(), self_) == ev.joined.end()) return;
      in_group_ = true;
      local_seq_ = 0;
      buffer_.clear();
      later_joiners_.clear();
      old_members_.clear();
      for (const auto& m : ev.members) {
        if (std::find(ev.joined.begin(), ev.joined.end(), m) == ev.joined.end()) {
          old_members_.insert(m);
        }
      }
      join_cohort_ = ev.joined;
      LOG_DEBUG("dlm " << opts_.name << ": joined group, " << old_members_.size()
                       << " members hold state");
      if (old_members_.empty()) {
        FoundLocked(ev.members);
        return;
      }
      nonce_ = NewNonce(self_.pid);
      ByteWriter w;
      w.U8(kMsgHello);
      w.U64(nonce_);
      (void)MulticastLocked(w.Take());
      return;
    }
    ++local_seq_;
    for (const auto& [m, why] : ev.left) {
      old_members_.erase(m);
      later_joiners_.erase(m);
      std::erase(join_cohort_, m);
    }
    for (const auto& m : ev.joined) later_joiners_[m] = LaterJoiner{local_seq_, 0};
    if (old_members_.empty()) {
      // Everyone who held the table is gone before handing it to us: start afresh.
      FoundLocked(ev.members);
      return;
    }
    buffer_.push_back(std::move(ev));
    return;
  }
  ApplyEventLocked(ev, /*replay=*/false);
}

void Lockspace::FoundLocked(const std::vector<MemberId>& members) {
  std::vector<MemberInfo> infos;
  for (const auto& m : members) {
    MemberInfo mi;
    mi.id = m;
    auto it = later_joiners_.find(m);
    if (it != later_joiners_.end()) {
      mi.synced = false;
      mi.join_seq = it->second.join_index;
      mi.nonce = it->second.nonce;
    } else {
      mi.synced = true;
      mi.join_seq = 0;
    }
    infos.push_back(mi);
  }
  table_.Found(infos, local_seq_);
  buffer_.clear();
  synced_ = true;
  state_ = LsState::kMember;
  LOG_INFO("dlm " << opts_.name << ": founded lockspace with " << infos.size() << " member(s)");
  BecameMemberLocked();
  cv_.notify_all();
  if (fence_count_ > 0 && opts_.fence_hook) {
    auto hook = opts_.fence_hook;
    callbacks_->Post([hook] { hook(false); });
  }
  MaybeSendSyncLocked();
}

void Lockspace::OnDeliver(const MemberId& from, const uint8_t* data, size_t len) {
  if (len > 0 && data[0] == kMsgHeartbeat) {
    heartbeats_delivered_.fetch_add(1, std::memory_order_relaxed);
  } else {
    msgs_delivered_.fetch_add(1, std::memory_order_relaxed);
  }
  std::lock_guard<std::mutex> l(mu_);
  if (state_ != LsState::kJoining && state_ != LsState::kMember) return;
  if (len == 0) return;
  if (!synced_) {
    if (!in_group_) return;
    ++local_seq_;
    Event ev;
    ev.from = from;
    ev.msg.assign(data, data + len);
    buffer_.push_back(std::move(ev));
    if (data[0] == kMsgHello && len >= 9) {
      auto it = later_joiners_.find(from);
      if (it != later_joiners_.end()) {
        ByteReader r(data + 1, len - 1);
        it->second.nonce = r.U64();
      }
    }
    // Only a member that held the table when we joined (or got it since) can hand it to us; a
    // SYNC from anyone else is a leftover of another history (e.g. sent before a partition).
    if (data[0] == kMsgSync && old_members_.count(from) != 0) {
      ByteReader r(data + 1, len - 1);
      uint32_t n = r.U32();
      bool mine = false;
      for (uint32_t i = 0; i < n && r.ok(); ++i) {
        MemberId m;
        m.nodeid = r.U32();
        m.pid = r.U32();
        const uint64_t nonce = r.U64();
        if (m == self_ && nonce == nonce_) mine = true;
        // Someone who joined after us now holds the table too: we must not found a fresh one
        // while it is around.
        auto it = later_joiners_.find(m);
        if (it != later_joiners_.end() && it->second.nonce == nonce) {
          later_joiners_.erase(it);
          old_members_.insert(m);
        }
      }
      if (mine && r.ok()) InstallSnapshotLocked(data, len);
    }
    return;
  }
  ApplyMessageLocked(from, data, len, /*replay=*/false);
}

void Lockspace::InstallSnapshotLocked(const uint8_t* data, size_t len) {
  ByteReader r(data + 1, len - 1);
  uint32_t n = r.U32();
  for (uint32_t i = 0; i < n; ++i) {
    r.U32();
    r.U32();
    r.U64();
  }
  if (!table_.DecodeSnapshot(&r)) {
    LOG_ERROR("dlm " << opts_.name << ": corrupt state transfer ignored");
    return;
  }
  const MemberInfo* me = table_.FindMember(self_);
  if (me == nullptr) {
    LOG_ERROR("dlm " << opts_.name << ": state transfer does not list us");
    return;
  }
  const uint64_t join_seq = me->join_seq;
  std::vector<Event> events = std::move(buffer_);
  buffer_.clear();
  synced_ = true;  // replay applies events like a member would
  for (size_t i = 0; i < events.size(); ++i) {
    const uint64_t s = join_seq + 1 + i;
    if (s <= table_.seq()) continue;
    if (s != table_.seq() + 1) {
      LOG_ERROR("dlm " << opts_.name << ": state transfer gap " << s << " vs " << table_.seq());
    }
    ApplyEventLocked(events[i], /*replay=*/true);
  }
  if (evicted_in_replay_) {
    // Cannot happen with honest members (only synced members are evicted, and we become synced
    // at the end of the replay), but never serve a table that no longer lists us.
    evicted_in_replay_ = false;
    FenceLocked("evicted (found during state transfer)");
    (void)transport_->Leave();
    RejoinAfterEvictionLocked();
    return;
  }
  const MemberInfo* after = table_.FindMember(self_);
  if (after == nullptr || !after->synced) {
    LOG_ERROR("dlm " << opts_.name << ": still unsynced after state transfer");
  }
  state_ = LsState::kMember;
  LOG_INFO("dlm " << opts_.name << ": state transfer complete at seq " << table_.seq() << ", "
                  << table_.lock_count() << " locks, incarnation " << MyIncarnationLocked());
  BecameMemberLocked();
  cv_.notify_all();
  if (fence_count_ > 0 && opts_.fence_hook) {
    auto hook = opts_.fence_hook;
    callbacks_->Post([hook] { hook(false); });
  }
  MaybeStartRecoveryLocked();
}

void Lockspace::ApplyEventLocked(const Event& ev, bool replay) {
  if (!ev.is_confchg) {
    ApplyMessageLocked(ev.from, ev.msg.data(), ev.msg.size(), replay);
    return;
  }
  table_.IncSeq();
  std::vector<Effect> effects;
  for (const auto& [m, why] : ev.left) {
    if (m == self_) return;  // our own departure; Leave() handled it
  }
  table_.ApplyConfChg(ev.members, ev.left, ev.joined, &effects);
  if (replay) return;
  if (!ev.left.empty()) quorum_confirmed_ = false;  // wait for quorum to confirm the new view
  HandleEffectsLocked(&effects);
  MaybeSendSyncLocked();
  MaybeStartRecoveryLocked();
}

void Lockspace::ApplyMessageLocked(const MemberId& from, const uint8_t* data, size_t len,
                                   bool replay) {
  table_.IncSeq();
  if (!replay && HeartbeatsOn()) NoteHeardLocked(from);
  ByteReader r(data + 1, len - 1);
  std::vector<Effect> effects;
  switch (data[0]) {
    case kMsgHeartbeat:
      ApplyHeartbeatLocked(from, &r, replay);
      return;
    case kMsgEvict:
      ApplyEvictLocked(from, &r, replay);
      return;
    case kMsgOp: {
      LockOp op;
      if (!op.Decode(&r)) {
        LOG_ERROR("dlm " << opts_.name << ": undecodable op from " << from.nodeid);
        return;
      }
      table_.ApplyOp(from, op, NowNs(), &effects);
      if (!replay && from == self_) OwnOpDeliveredLocked();
      break;
    }
    case kMsgOps: {
      const uint16_t n = r.U16();
      for (uint16_t i = 0; i < n; ++i) {
        LockOp op;
        if (!op.Decode(&r)) {
          LOG_ERROR("dlm " << opts_.name << ": undecodable op " << i << " of " << n << " from "
                           << from.nodeid);
          break;
        }
        table_.ApplyOp(from, op, NowNs(), &effects);
      }
      if (!replay && from == self_) OwnOpDeliveredLocked();
      break;
    }
    case kMsgRecoveryDone: {
      const uint32_t nodeid = r.U32();
      const MemberInfo* sender = table_.FindMember(from);
      if (sender == nullptr || !sender->synced) return;  // stale, from another history
      if (!table_.RecoveryPendingFor(nodeid)) return;
      LOG_INFO("dlm " << opts_.name << ": recovery of node " << nodeid << " done (reported by "
                      << from.nodeid << "), releasing its locks");
      table_.ApplyRecoveryDone(nodeid, &effects);
      break;
    }
    case kMsgSync: {
      const MemberInfo* sender = table_.FindMember(from);
      if (sender == nullptr || !sender->synced) return;  // stale, from another history
      uint32_t n = r.U32();
      std::vector<std::pair<MemberId, uint64_t>> targets;
      for (uint32_t i = 0; i < n && r.ok(); ++i) {
        MemberId m;
        m.nodeid = r.U32();
        m.pid = r.U32();
        targets.push_back({m, r.U64()});
      }
      table_.ApplySynced(targets);
      return;
    }
    case kMsgHello: {
      table_.ApplyHello(from, r.U64());
      if (!replay) MaybeSendSyncLocked();
      return;
    }
    case kMsgQuery: {
      const uint64_t qid = r.U64();
      MemberId req;
      req.nodeid = r.U32();
      req.pid = r.U32();
      const bool json = r.U8() != 0;
      if (replay) return;
      if (req == self_) {
        auto& exp = query_expected_[qid];
        for (const auto& m : table_.members()) {
          if (m.alive && m.synced) exp.insert(m.id);
        }
      }
      ByteWriter w;
      w.U8(kMsgQueryReply);
      w.U64(qid);
      w.U32(req.nodeid);
      w.U32(req.pid);
      w.Str(DumpLocked(json));
      (void)MulticastLocked(w.Take());
      return;
    }
    case kMsgQueryReply: {
      const uint64_t qid = r.U64();
      MemberId req;
      req.nodeid = r.U32();
      req.pid = r.U32();
      std::string text = r.Str(64 << 20);
      if (replay || req != self_) return;
      auto it = query_replies_.find(qid);
      if (it != query_replies_.end()) {
        it->second[from] = std::move(text);
        cv_.notify_all();
      }
      return;
    }
    default:
      LOG_WARN("dlm " << opts_.name << ": unknown message type " << int{data[0]});
      return;
  }
  if (!replay) HandleEffectsLocked(&effects);
}

void Lockspace::HandleEffectsLocked(std::vector<Effect>* effects) {
  if (effects->empty()) return;
  const uint32_t me = MyIncarnationLocked();
  for (Effect& e : *effects) {
    if (e.owner != me) continue;
    auto it = locks_.find(e.lkid);
    if (it == locks_.end()) continue;
    LocalLock& lk = it->second;
    if (e.kind == Effect::kBlock) {
      if (!lk.bast || lk.orphan) continue;
      if (ModesCompatible(e.mode, lk.grmode)) continue;  // nothing to give up for that mode
      BlockingFn bast = lk.bast;
      const int mode = e.mode;
      DeliverLocked([bast, mode] { bast(mode); }, false);
      continue;
    }
    lk.inflight = lk.inflight > 0 ? lk.inflight - 1 : 0;
    lk.busy = lk.inflight > 0;
    if (!lk.busy) {
      lk.unlocking = false;
      lk.pipelinable = false;
    }
    lk.grmode = e.gone ? int{kIV} : int{e.mode};
    if (lk.orphan) {
      if (e.gone) {
        locks_.erase(it);
      } else if (lk.grmode != kIV) {
        LockOp op;
        op.type = LockOp::kUnlock;
        op.lkid = lk.lkid;
        lk.busy = lk.unlocking = true;
        lk.inflight = 1;
        (void)SendOpLocked(op);
      }
      continue;
    }
    Lksb* lksb = lk.lksb;
    CompletionFn ast = lk.ast;
    std::shared_ptr<SyncWaiter> waiter = std::move(lk.waiter);
    lk.waiter.reset();
    if (e.gone) locks_.erase(it);
    const int status = e.status;
    const uint32_t sbf = e.sb_flags;
    const bool lvb_read = e.lvb_read;
    const Lvb lvb = e.lvb;
    auto fill = [lksb, status, sbf, lvb_read, lvb] {
      lksb->status = status;
      lksb->flags = sbf;
      if (lvb_read) lksb->lvb = lvb;
    };
    if (waiter) {
      // LockSync/UnlockSync: our own waiter, safe to complete under mu_ (no user code).
      DeliverLocked(
          [this, fill, waiter] {
            fill();
            waiter->done = true;
            cv_.notify_all();
          },
          true);
    } else {
      DeliverLocked(
          [fill, ast] {
            fill();
            if (ast) ast();
          },
          false);
    }
  }
}

void Lockspace::DeliverLocked(std::function<void()> fn, bool inline_ok) {
  if (!DeliverableLocked()) {
    held_.push_back(inline_ok ? [fn] { fn(); } : fn);
    held_inline_.push_back(inline_ok);
    return;
  }
  if (inline_ok) {
    fn();
  } else {
    callbacks_->Post(std::move(fn));
  }
}

void Lockspace::FlushHeldLocked() {
  std::vector<std::function<void()>> held = std::move(held_);
  std::vector<bool> inl = std::move(held_inline_);
  held_.clear();
  held_inline_.clear();
  for (size_t i = 0; i < held.size(); ++i) {
    if (inl[i]) {
      held[i]();
    } else {
      callbacks_->Post(std::move(held[i]));
    }
  }
}

void Lockspace::MaybeSendSyncLocked() {
  if (!synced_ || !IsDesignatedLocked()) return;
  std::vector<const MemberInfo*> targets;
  for (const auto& m : table_.members()) {
    if (m.alive && !m.synced && m.nonce != 0) targets.push_back(&m);
  }
  if (targets.empty()) return;
  ByteWriter w;
  w.U8(kMsgSync);
  w.U32(static_cast<uint32_t>(targets.size()));
  for (const MemberInfo* t : targets) {
    w.U32(t->id.nodeid);
    w.U32(t->id.pid);
    w.U64(t->nonce);
  }
  table_.EncodeSnapshot(&w);
  LOG_DEBUG("dlm " << opts_.name << ": sending state (" << w.buf().size() << " bytes) to "
                   << targets.size() << " joiner(s)");
  (void)MulticastLocked(w.Take());
}

void Lockspace::MaybeStartRecoveryLocked() {
  if (!synced_ || state_ != LsState::kMember || !DeliverableLocked()) return;
  const auto& pending = table_.recovery_pending();
  std::erase_if(recovery_notified_, [&](uint32_t inc) { return pending.count(inc) == 0; });
  std::erase_if(recovery_done_sent_, [&](uint32_t inc) { return pending.count(inc) == 0; });
  for (const auto& [inc, nodeid] : pending) {
    if (opts_.recovery_hook) {
      if (!recovery_notified_.insert(inc).second) continue;
      LOG_INFO("dlm " << opts_.name << ": node " << nodeid
                      << " failed; waiting for recovery hook before releasing its locks");
      auto hook = opts_.recovery_hook;
      const uint32_t n = nodeid;
      callbacks_->Post([hook, n] { hook(n); });
    } else if (IsDesignatedLocked() && recovery_done_sent_.insert(inc).second) {
      ByteWriter w;
      w.U8(kMsgRecoveryDone);
      w.U32(nodeid);
      (void)MulticastLocked(w.Take());
    }
  }
}

void Lockspace::OnQuorum(bool quorate) {
  std::lock_guard<std::mutex> l(mu_);
  LOG_DEBUG("dlm " << opts_.name << " node " << self_.nodeid << "/" << self_.pid << " ("
                   << LsStateName(state_) << ") quorum " << quorate);
  const bool was = quorate_;
  quorate_ = quorate;
  if (!quorate) {
    if (state_ == LsState::kMember || (state_ == LsState::kJoining && in_group_)) {
      // Our replica may be stale from now on: drop it and leave; rejoin fresh later.
      FenceLocked("lost quorum");
      (void)transport_->Leave();
    }
    return;
  }
  quorum_confirmed_ = true;
  if (state_ == LsState::kFenced && opts_.auto_rejoin) {
    LOG_INFO("dlm " << opts_.name << ": quorum regained, rejoining as a new member");
    state_ = LsState::kJoining;
    synced_ = false;
    in_group_ = false;
    buffer_.clear();
    join_wanted_ = true;
  }
  if (state_ == LsState::kJoining && join_wanted_) {
    join_wanted_ = false;
    Status st = transport_->Join();
    if (!st.ok()) LOG_ERROR("dlm " << opts_.name << ": join failed: " << st.ToString());
    return;
  }
  if (state_ == LsState::kMember) {
    if (!was) LOG_INFO("dlm " << opts_.name << ": quorate");
    FlushHeldLocked();
    MaybeStartRecoveryLocked();
  }
}

void Lockspace::FenceLocked(const char* why) {
  LOG_ERROR("dlm " << opts_.name << ": node " << self_.nodeid << " fenced: " << why
                   << "; dropping all locks");
  state_ = LsState::kFenced;
  ++fence_count_;
  ResetLocalLocked();
  if (opts_.fence_hook) {
    auto hook = opts_.fence_hook;
    callbacks_->Post([hook] { hook(true); });
  }
  cv_.notify_all();
}

void Lockspace::ResetLocalLocked() {
  synced_ = false;
  in_group_ = false;
  held_.clear();
  held_inline_.clear();
  buffer_.clear();
  batch_.clear();  // their locks fail below with the others
  own_ops_in_flight_ = 0;
  // Every pending operation fails; granted locks are simply gone.
  for (auto& [lkid, lk] : locks_) {
    if (!lk.busy || lk.orphan) continue;
    Lksb* lksb = lk.lksb;
    CompletionFn ast = lk.ast;
    auto waiter = lk.waiter;
    auto fill = [lksb] {
      lksb->status = kStatusFenced;
      lksb->flags = 0;
    };
    if (waiter) {
      fill();
      waiter->done = true;
    } else {
      callbacks_->Post([fill, ast] {
        fill();
        if (ast) ast();
      });
    }
  }
  locks_.clear();
  table_.Found({}, 0);
  recovery_notified_.clear();
  recovery_done_sent_.clear();
  lease_expiry_ns_.store(0, std::memory_order_release);
  hb_outstanding_ = 0;
  last_heard_.clear();
  evict_sent_.clear();
  evicted_in_replay_ = false;
  cv_.notify_all();
}

void Lockspace::OnFatal(const Status& why) {
  std::lock_guard<std::mutex> l(mu_);
  LOG_ERROR("dlm " << opts_.name << ": transport failed: " << why.ToString());
  if (state_ == LsState::kMember || state_ == LsState::kJoining) {
    FenceLocked("transport failed");
  }
  state_ = LsState::kDead;
  cv_.notify_all();
}

}  // namespace ugfs2::dlm

namespace ugfs2::dlm {

// ---------------------------------------------------------------------------------------------
// Heartbeats, eviction and the write lease (docs/dlm.md)

void Lockspace::BecameMemberLocked() {
  last_heard_.clear();
  evict_sent_.clear();
  hb_outstanding_ = 0;
  if (!HeartbeatsOn()) {
    lease_expiry_ns_.store(INT64_MAX, std::memory_order_release);
    return;
  }
  lease_expiry_ns_.store(0, std::memory_order_release);  // until our first heartbeat is back
  TickLocked();                                          // which is sent right now
}

void Lockspace::HeartbeatTick() {
  std::lock_guard<std::mutex> l(mu_);
  TickLocked();
}

void Lockspace::TimerLoop() {
  std::unique_lock<std::mutex> l(mu_);
  const bool heartbeats = HeartbeatsOn();
  const auto interval = heartbeats
                            ? std::chrono::duration_cast<std::chrono::steady_clock::duration>(
                                  opts_.heartbeat_interval)
                            : std::chrono::steady_clock::duration(std::chrono::hours(1));
  auto next = std::chrono::steady_clock::now() + interval;
  while (!timer_stop_) {
    const auto wake = !batch_.empty() && batch_due_ < next ? batch_due_ : next;
    // Woken early by the destructor and by the first request of a new batch.
    timer_cv_.wait_until(l, wake);
    if (timer_stop_) return;
    const auto now = std::chrono::steady_clock::now();
    if (!batch_.empty() && now >= batch_due_) {
      if (state_ == LsState::kMember) {
        FlushBatchLocked();
      } else {
        batch_.clear();  // not a member any more: their locks were failed when it stopped
      }
    }
    if (now < next) continue;
    next += interval;
    if (next <= now) next = now + interval;  // we were late (e.g. frozen): do not catch up
    if (heartbeats) TickLocked();
  }
}

void Lockspace::TickLocked() {
  if (!HeartbeatsOn() || state_ != LsState::kMember || !synced_) return;
  const MemberInfo* me = table_.FindMember(self_);
  if (me == nullptr || !me->synced) return;
  const int64_t now = MonoNs();
  // At most one heartbeat outstanding: a node that does not get its own messages back (its
  // delivery is stuck) goes silent, and is evicted, instead of looking alive to the others.
  if (hb_outstanding_ == 0) SendHeartbeatLocked(me->incarnation, now);

  // Eviction. Only with quorum and a valid lease: if our own heartbeats are not coming back in
  // time, our view of the others is stale (we may be the frozen one, catching up).
  if (!DeliverableLocked() || now >= LeaseExpiryNs()) return;
  const int64_t limit = Ns(opts_.evict_timeout);
  struct Silent {
    MemberId id;
    uint32_t incarnation;
    uint64_t heartbeat;
    int64_t silent_ns;
  };
  std::vector<Silent> silent;
  std::map<uint32_t, int64_t> heard;
  bool lowest = true;  // we are the lowest member that is not silent
  for (const auto& m : table_.members()) {
    if (!m.alive || !m.synced) continue;
    auto it = last_heard_.find(m.incarnation);
    const int64_t t = it == last_heard_.end() ? now : it->second;  // newly seen: from now on
    heard[m.incarnation] = t;
    if (m.id == self_) continue;
    if (now - t > limit) {
      silent.push_back({m.id, m.incarnation, m.heartbeat, now - t});
    } else if (m.id < self_) {
      lowest = false;
    }
  }
  last_heard_ = std::move(heard);
  std::erase_if(evict_sent_, [&](const auto& e) { return last_heard_.count(e.first) == 0; });
  if (!lowest) return;
  for (const Silent& s : silent) {
    auto sent = evict_sent_.find(s.incarnation);
    if (sent != evict_sent_.end() && sent->second == s.heartbeat) continue;  // in flight
    LOG_WARN("dlm " << opts_.name << ": node " << s.id.nodeid << "/" << s.id.pid << " (incarnation "
                    << s.incarnation << ") silent for " << s.silent_ns / 1000000
                    << " ms; evicting it");
    ByteWriter w;
    w.U8(kMsgEvict);
    w.U32(s.id.nodeid);
    w.U32(s.id.pid);
    w.U32(s.incarnation);
    w.U64(s.heartbeat);
    w.I64(s.silent_ns);
    if (MulticastLocked(w.Take()).ok()) evict_sent_[s.incarnation] = s.heartbeat;
  }
}

void Lockspace::SendHeartbeatLocked(uint32_t incarnation, int64_t now) {
  ByteWriter w;
  w.U8(kMsgHeartbeat);
  w.U32(incarnation);
  w.U64(++hb_counter_);
  w.I64(now);
  // Not MulticastLocked: heartbeats are kept out of msgs_sent/bytes_sent.
  if (transport_->Multicast(w.Take()).ok()) {
    hb_outstanding_ = hb_counter_;
    heartbeats_sent_.fetch_add(1, std::memory_order_relaxed);
  }
}

void Lockspace::NoteHeardLocked(const MemberId& from) {
  const MemberInfo* m = table_.FindMember(from);
  if (m != nullptr && m->synced) last_heard_[m->incarnation] = MonoNs();
}

void Lockspace::ApplyHeartbeatLocked(const MemberId& from, ByteReader* r, bool replay) {
  const uint32_t incarnation = r->U32();
  const uint64_t counter = r->U64();
  const int64_t sent_ns = r->I64();
  if (!r->ok()) return;
  // Stale heartbeats (an evicted process still in the group, an earlier incarnation) are
  // ignored by every replica alike.
  if (!table_.ApplyHeartbeat(from, incarnation, counter)) return;
  if (replay || from != self_) return;
  if (counter == hb_outstanding_) hb_outstanding_ = 0;
  if (state_ != LsState::kMember || !HeartbeatsOn()) return;
  // Only in a view that quorum has confirmed: a node cut off from the others delivers its own
  // heartbeats in a ring of its own, and corosync's quorum callback (which fences it) may come
  // after them; a confchg with members leaving unconfirms the view until then.
  if (!DeliverableLocked()) return;
  // Every member applies this heartbeat at this stream position, so no member can have applied
  // an EVICT of ours (decided before it) earlier: renewing from its send time is safe.
  const int64_t expiry = sent_ns + Ns(opts_.lease);
  if (expiry > LeaseExpiryNs()) lease_expiry_ns_.store(expiry, std::memory_order_release);
}

void Lockspace::ApplyEvictLocked(const MemberId& from, ByteReader* r, bool replay) {
  MemberId target;
  target.nodeid = r->U32();
  target.pid = r->U32();
  const uint32_t incarnation = r->U32();
  const uint64_t heartbeat_seen = r->U64();
  const int64_t silent_ns = r->I64();
  if (!r->ok()) return;
  const MemberInfo* sender = table_.FindMember(from);
  if (sender == nullptr || !sender->synced) return;  // stale, e.g. from an evicted process
  std::vector<Effect> effects;
  if (!table_.ApplyEvict(target, incarnation, heartbeat_seen, &effects)) {
    LOG_INFO("dlm " << opts_.name << ": eviction of node " << target.nodeid << " (incarnation "
                    << incarnation << ") by node " << from.nodeid
                    << " is void: already gone or heard from since");
    return;
  }
  evictions_.fetch_add(1, std::memory_order_relaxed);
  if (target == self_) {
    ++times_evicted_;
    if (replay) {
      evicted_in_replay_ = true;
      return;
    }
    std::ostringstream why;
    why << "evicted by node " << from.nodeid << " (silent for " << silent_ns / 1000000 << " ms)";
    FenceLocked(why.str().c_str());
    (void)transport_->Leave();
    RejoinAfterEvictionLocked();
    return;
  }
  LOG_WARN("dlm " << opts_.name << ": node " << target.nodeid << "/" << target.pid
                  << " evicted by node " << from.nodeid << " after " << silent_ns / 1000000
                  << " ms of silence; treating it as failed");
  if (replay) return;
  HandleEffectsLocked(&effects);
  MaybeSendSyncLocked();
  MaybeStartRecoveryLocked();
}

void Lockspace::RejoinAfterEvictionLocked() {
  if (!opts_.auto_rejoin) return;
  LOG_INFO("dlm " << opts_.name << ": rejoining as a new member after eviction");
  state_ = LsState::kJoining;
  synced_ = false;
  in_group_ = false;
  buffer_.clear();
  join_wanted_ = true;
  if (!quorate_) return;  // OnQuorum(true) joins
  join_wanted_ = false;
  Status st = transport_->Join();
  if (!st.ok()) LOG_ERROR("dlm " << opts_.name << ": rejoin failed: " << st.ToString());
}

}  // namespace ugfs2::dlm
