// SimCluster: N lockspace members over the deterministic LoopbackHub, for tests.
//
// Every member's transport is wrapped in a FreezableTransport, which can simulate a frozen
// process (SIGSTOP, VM pause): Freeze() holds every event for it (it delivers nothing), and
// ResumeOne() then hands the held events over one at a time, as a resumed process reads its
// backlog. HoldSends() keeps its multicasts back until ReleaseSends() (to force an order).
// Heartbeats are off unless EnableHeartbeats(); then time is the cluster's manual clock
// (Advance()) and heartbeat rounds run only when the test calls Tick()/TickAll().
#ifndef UGFS2_TESTS_DLM_SIM_CLUSTER_H_
#define UGFS2_TESTS_DLM_SIM_CLUSTER_H_

#include <algorithm>
#include <chrono>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <vector>

#include "callback_queue.h"
#include "lockspace.h"
#include "loopback_transport.h"

namespace ugfs2::dlm {

class FreezableTransport final : public Transport, private TransportListener {
 public:
  explicit FreezableTransport(Transport* inner) : inner_(inner) {}
  Status Start(TransportListener* l) override {
    listener_ = l;
    return inner_->Start(this);
  }
  Status Join() override { return inner_->Join(); }
  Status Leave() override {
    // As the hub does: what was not yet consumed from the group is gone (quorum reports stay).
    std::erase_if(backlog_, [](const Ev& e) { return e.kind != Ev::kQuorum; });
    held_sends_.clear();
    return inner_->Leave();
  }
  void Stop() override {
    inner_->Stop();
    listener_ = nullptr;
  }
  Status Multicast(std::vector<uint8_t> msg) override {
    if (hold_sends_) {
      held_sends_.push_back(std::move(msg));
      return Status::Ok();
    }
    return inner_->Multicast(std::move(msg));
  }
  MemberId self() const override { return inner_->self(); }

  void Freeze() { frozen_ = true; }
  bool frozen() const { return frozen_; }
  size_t backlog() const { return backlog_.size(); }
  // Delivers the oldest held event; when none is left the transport is live again (false).
  bool ResumeOne() {
    if (backlog_.empty()) {
      frozen_ = false;
      return false;
    }
    Ev ev = std::move(backlog_.front());
    backlog_.pop_front();
    Dispatch(ev);
    return true;
  }
  void HoldSends() { hold_sends_ = true; }
  void ReleaseSends() {
    hold_sends_ = false;
    for (auto& m : held_sends_) (void)inner_->Multicast(std::move(m));
    held_sends_.clear();
  }

 private:
  struct Ev {
    enum Kind { kDeliver, kConfChg, kQuorum } kind = kDeliver;
    MemberId from;
    std::vector<uint8_t> msg;
    std::vector<MemberId> members, joined;
    std::vector<std::pair<MemberId, LeaveReason>> left;
    bool quorate = false;
  };
  void Dispatch(const Ev& ev) {
    if (listener_ == nullptr) return;
    switch (ev.kind) {
      case Ev::kDeliver:
        listener_->OnDeliver(ev.from, ev.msg.data(), ev.msg.size());
        break;
      case Ev::kConfChg:
        listener_->OnConfChg(ev.members, ev.left, ev.joined);
        break;
      case Ev::kQuorum:
        listener_->OnQuorum(ev.quorate);
        break;
    }
  }
  void Hold(Ev ev) {
    if (frozen_) {
      backlog_.push_back(std::move(ev));
    } else {
      Dispatch(ev);
    }
  }
  void OnDeliver(const MemberId& from, const uint8_t* data, size_t len) override {
    Ev ev;
    ev.kind = Ev::kDeliver;
    ev.from = from;
    ev.msg.assign(data, data + len);
    Hold(std::move(ev));
  }
  void OnConfChg(const std::vector<MemberId>& members,
                 const std::vector<std::pair<MemberId, LeaveReason>>& left,
                 const std::vector<MemberId>& joined) override {
    Ev ev;
    ev.kind = Ev::kConfChg;
    ev.members = members;
    ev.left = left;
    ev.joined = joined;
    Hold(std::move(ev));
  }
  void OnQuorum(bool quorate) override {
    Ev ev;
    ev.kind = Ev::kQuorum;
    ev.quorate = quorate;
    Hold(std::move(ev));
  }
  void OnFatal(const Status& why) override {
    if (listener_ != nullptr) listener_->OnFatal(why);
  }

  Transport* inner_;
  TransportListener* listener_ = nullptr;
  bool frozen_ = false;
  std::deque<Ev> backlog_;
  bool hold_sends_ = false;
  std::vector<std::vector<uint8_t>> held_sends_;
};

struct SimNode {
  uint32_t nodeid = 0;
  std::unique_ptr<ManualCallbackQueue> cbq;
  LoopbackTransport* transport = nullptr;
  std::unique_ptr<FreezableTransport> freezable;  // wraps `transport`; outlives `ls`
  std::unique_ptr<Lockspace> ls;
  std::vector<uint32_t> recovery_calls;
  std::vector<bool> fence_calls;
  bool manual_recovery = false;
};

class SimCluster {
 public:
  // expected_votes = n (majority quorum) unless quorum == false.
  SimCluster(int n, uint64_t seed, bool quorum = true, bool manual_recovery = false)
      : hub_(seed, quorum ? n : 0), manual_recovery_(manual_recovery) {
    for (int i = 1; i <= n; ++i) nodes_[i] = std::make_unique<SimNode>();
  }
  ~SimCluster() {
    for (auto& [id, n] : nodes_) n->ls.reset();
  }
  LoopbackHub& hub() { return hub_; }
  SimNode& node(uint32_t id) { return *nodes_.at(id); }
  Lockspace& ls(uint32_t id) { return *nodes_.at(id)->ls; }
  FreezableTransport& freezable(uint32_t id) { return *nodes_.at(id)->freezable; }

  // Heartbeats for the members started from now on (manual clock, manual ticks).
  void EnableHeartbeats(std::chrono::milliseconds interval, std::chrono::milliseconds lease,
                        std::chrono::milliseconds evict_timeout) {
    hb_interval_ = interval;
    hb_lease_ = lease;
    hb_evict_ = evict_timeout;
  }
  // Options applied to the members started from now on, after the defaults.
  void set_options_hook(std::function<void(uint32_t nodeid, LockspaceOptions*)> f) {
    options_hook_ = std::move(f);
  }
  int64_t now() const { return mono_ns_; }
  void Advance(std::chrono::milliseconds d) {
    mono_ns_ += static_cast<int64_t>(d.count()) * 1000000;
  }
  // One heartbeat round on `id` (skipped while it is frozen: a frozen process does nothing).
  void Tick(uint32_t id) {
    SimNode& n = *nodes_.at(id);
    if (n.ls && !n.freezable->frozen()) n.ls->HeartbeatTick();
  }
  void TickAll() {
    for (auto& [id, n] : nodes_) Tick(id);
  }

  // Starts a fresh process on `id` and joins the lockspace (does not run the hub).
  void Start(uint32_t id) {
    SimNode& n = *nodes_[id];
    n.ls.reset();
    n.nodeid = id;
    n.cbq = std::make_unique<ManualCallbackQueue>();
    n.transport = hub_.AddProcess(id, n.cbq.get());
    n.freezable = std::make_unique<FreezableTransport>(n.transport);
    LockspaceOptions o;
    o.name = "test";
    o.callbacks = n.cbq.get();
    o.pid = n.transport->self().pid;
    o.procname = "sim" + std::to_string(id);
    o.now_ns = [this] { return static_cast<int64_t>(hub_.steps()); };
    SimNode* np = &n;
    if (manual_recovery_) {
      o.recovery_hook = [np](uint32_t dead) { np->recovery_calls.push_back(dead); };
    }
    o.fence_hook = [np](bool f) { np->fence_calls.push_back(f); };
    o.heartbeat_interval = hb_interval_;
    o.lease = hb_lease_;
    o.evict_timeout = hb_evict_;
    o.heartbeat_thread = false;  // the hub is single-threaded: ticks come from the test
    o.monotonic_ns = [this] { return mono_ns_; };
    if (options_hook_) options_hook_(id, &o);
    n.ls = std::make_unique<Lockspace>(n.freezable.get(), o);
    (void)n.ls->Join();
  }
  void StartAll() {
    for (auto& [id, n] : nodes_) Start(id);
  }
  void Crash(uint32_t id) {
    hub_.Crash(id);
    nodes_[id]->ls.reset();
  }
  bool Run() { return hub_.RunUntilIdle(); }
  std::vector<uint32_t> Ids() const {
    std::vector<uint32_t> v;
    for (const auto& [id, n] : nodes_) v.push_back(id);
    return v;
  }

 private:
  LoopbackHub hub_;
  bool manual_recovery_;
  std::chrono::milliseconds hb_interval_{0}, hb_lease_{0}, hb_evict_{0};
  std::function<void(uint32_t, LockspaceOptions*)> options_hook_;
  int64_t mono_ns_ = int64_t{1000} * 1000000000;  // the manual monotonic clock
  std::map<uint32_t, std::unique_ptr<SimNode>> nodes_;
};

}  // namespace ugfs2::dlm

#endif  // UGFS2_TESTS_DLM_SIM_CLUSTER_H_
