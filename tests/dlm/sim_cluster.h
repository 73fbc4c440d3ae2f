// SimCluster: N lockspace members over the deterministic LoopbackHub, for tests.
#ifndef UGFS2_TESTS_DLM_SIM_CLUSTER_H_
#define UGFS2_TESTS_DLM_SIM_CLUSTER_H_

#include <map>
#include <memory>
#include <vector>

#include "callback_queue.h"
#include "lockspace.h"
#include "loopback_transport.h"

namespace ugfs2::dlm {

struct SimNode {
  uint32_t nodeid = 0;
  std::unique_ptr<ManualCallbackQueue> cbq;
  LoopbackTransport* transport = nullptr;
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

  // Starts a fresh process on `id` and joins the lockspace (does not run the hub).
  void Start(uint32_t id) {
    SimNode& n = *nodes_[id];
    n.ls.reset();
    n.nodeid = id;
    n.cbq = std::make_unique<ManualCallbackQueue>();
    n.transport = hub_.AddProcess(id, n.cbq.get());
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
    n.ls = std::make_unique<Lockspace>(n.transport, o);
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
  std::map<uint32_t, std::unique_ptr<SimNode>> nodes_;
};

}  // namespace ugfs2::dlm

#endif  // UGFS2_TESTS_DLM_SIM_CLUSTER_H_
