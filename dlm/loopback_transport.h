// LoopbackHub: an in-process, deterministic stand-in for corosync CPG + votequorum.
//
// Many simulated processes ("nodes") in one test binary share one hub. The hub provides what the
// Transport contract promises and nothing more: per-component total order, FIFO per sender,
// confchgs at the same stream position for everyone in a component, quorum reports after every
// membership change. Everything the contract leaves open is chosen by a seeded PRNG in Step():
// which sender's next message is ordered next (interleaving of independent senders), how far each
// node lags behind in consuming the ordered stream (delays), when callbacks run, and crashes drop
// a sender's not-yet-ordered messages. The test drives time with Step()/RunUntilIdle() and
// injects Crash/Restart/Partition/Heal.
//
// Thread safety: none; single-threaded by design (the test thread drives everything).
#ifndef UGFS2_DLM_LOOPBACK_TRANSPORT_H_
#define UGFS2_DLM_LOOPBACK_TRANSPORT_H_

#include <deque>
#include <map>
#include <memory>
#include <random>
#include <vector>

#include "callback_queue.h"
#include "transport.h"

namespace ugfs2::dlm {

class LoopbackHub;

class LoopbackTransport final : public Transport {
 public:
  Status Start(TransportListener* listener) override;
  Status Join() override;
  Status Leave() override;
  Status Multicast(std::vector<uint8_t> msg) override;
  MemberId self() const override { return id_; }
  void Stop() override;
  bool alive() const { return alive_; }
  bool in_group() const { return in_group_; }

 private:
  friend class LoopbackHub;
  struct Ev {
    enum Kind { kDeliver, kConfChg, kQuorum } kind = kDeliver;
    MemberId from;
    std::shared_ptr<const std::vector<uint8_t>> msg;
    std::vector<MemberId> members;
    std::vector<std::pair<MemberId, LeaveReason>> left;
    std::vector<MemberId> joined;
    bool quorate = false;
  };
  LoopbackHub* hub_ = nullptr;
  MemberId id_;
  bool alive_ = true;
  bool in_group_ = false;
  TransportListener* listener_ = nullptr;
  ManualCallbackQueue* callbacks_ = nullptr;
  std::deque<std::vector<uint8_t>> outbox_;  // sent, not yet ordered
  std::deque<Ev> inbox_;                     // ordered, not yet consumed
};

class LoopbackHub {
 public:
  // `expected_votes`: quorum is a strict majority of it (0 disables quorum: always quorate).
  LoopbackHub(uint64_t seed, int expected_votes);
  ~LoopbackHub();

  // A new process on node `nodeid` (node must not have a live process). `callbacks`, if given,
  // is drained by Step() as part of the schedule.
  LoopbackTransport* AddProcess(uint32_t nodeid, ManualCallbackQueue* callbacks = nullptr);
  // The node's process dies (CPG reason NODEDOWN for the others).
  void Crash(uint32_t nodeid);
  // Splits the nodes into components; nodes not listed stay where they are.
  void Partition(const std::vector<std::vector<uint32_t>>& groups);
  void Heal();
  bool Quorate(uint32_t nodeid) const;

  // One scheduling step; false when nothing is left to do.
  bool Step();
  // Steps until idle; returns false if `max_steps` was hit (livelock).
  bool RunUntilIdle(size_t max_steps = 10000000);
  // When false, Step() is FIFO-ish (order senders round-robin, deliver node by node).
  void set_randomize(bool r) { randomize_ = r; }
  std::mt19937_64& rng() { return rng_; }
  uint64_t steps() const { return steps_; }

 private:
  friend class LoopbackTransport;
  struct Node {
    int component = 0;
    LoopbackTransport* current = nullptr;
  };
  Status DoJoin(LoopbackTransport* t);
  Status DoLeave(LoopbackTransport* t);
  std::vector<LoopbackTransport*> GroupIn(int component) const;
  void SendQuorum(int component);
  int Alive(int component) const;

  std::mt19937_64 rng_;
  int expected_votes_;
  bool randomize_ = true;
  uint64_t steps_ = 0;
  uint32_t next_pid_ = 1000;
  std::map<uint32_t, Node> nodes_;
  std::vector<std::unique_ptr<LoopbackTransport>> procs_;
  std::vector<LoopbackTransport*> group_;  // join order
};

}  // namespace ugfs2::dlm

#endif  // UGFS2_DLM_LOOPBACK_TRANSPORT_H_
