#include "loopback_transport.h"

#include <algorithm>

namespace ugfs2::dlm {

Status LoopbackTransport::Start(TransportListener* listener) {
  listener_ = listener;
  LoopbackTransport::Ev ev;
  ev.kind = Ev::kQuorum;
  ev.quorate = hub_->Quorate(id_.nodeid);
  inbox_.push_back(ev);
  return Status::Ok();
}

Status LoopbackTransport::Join() { return hub_->DoJoin(this); }

Status LoopbackTransport::Leave() { return hub_->DoLeave(this); }

void LoopbackTransport::Stop() {
  if (in_group_) (void)hub_->DoLeave(this);
  listener_ = nullptr;
}

Status LoopbackTransport::Multicast(std::vector<uint8_t> msg) {
  if (!alive_ || !in_group_) return Status(Code::kNotConnected, "not in group");
  outbox_.push_back(std::move(msg));
  return Status::Ok();
}

LoopbackHub::LoopbackHub(uint64_t seed, int expected_votes)
    : rng_(seed), expected_votes_(expected_votes) {}

LoopbackHub::~LoopbackHub() = default;

LoopbackTransport* LoopbackHub::AddProcess(uint32_t nodeid, ManualCallbackQueue* callbacks) {
  auto t = std::make_unique<LoopbackTransport>();
  t->hub_ = this;
  t->id_ = MemberId{nodeid, next_pid_++};
  t->callbacks_ = callbacks;
  Node& n = nodes_[nodeid];
  n.current = t.get();
  procs_.push_back(std::move(t));
  SendQuorum(n.component);
  return n.current;
}

int LoopbackHub::Alive(int component) const {
  int n = 0;
  for (const auto& [id, node] : nodes_) {
    if (node.component == component && node.current && node.current->alive_) ++n;
  }
  return n;
}

bool LoopbackHub::Quorate(uint32_t nodeid) const {
  if (expected_votes_ == 0) return true;
  auto it = nodes_.find(nodeid);
  if (it == nodes_.end()) return false;
  return Alive(it->second.component) * 2 > expected_votes_;
}

std::vector<LoopbackTransport*> LoopbackHub::GroupIn(int component) const {
  std::vector<LoopbackTransport*> out;
  for (LoopbackTransport* t : group_) {
    if (nodes_.at(t->id_.nodeid).component == component) out.push_back(t);
  }
  return out;
}

void LoopbackHub::SendQuorum(int component) {
  for (const auto& [id, node] : nodes_) {
    if (node.component != component || !node.current || !node.current->alive_) continue;
    LoopbackTransport::Ev ev;
    ev.kind = LoopbackTransport::Ev::kQuorum;
    ev.quorate = Quorate(id);
    node.current->inbox_.push_back(ev);
  }
}

Status LoopbackHub::DoJoin(LoopbackTransport* t) {
  if (!t->alive_) return Status(Code::kNotConnected, "process is dead");
  if (t->in_group_) return Status::Ok();
  t->in_group_ = true;
  group_.push_back(t);
  const int comp = nodes_.at(t->id_.nodeid).component;
  auto members = GroupIn(comp);
  LoopbackTransport::Ev ev;
  ev.kind = LoopbackTransport::Ev::kConfChg;
  for (auto* m : members) ev.members.push_back(m->id_);
  ev.joined.push_back(t->id_);
  for (auto* m : members) m->inbox_.push_back(ev);
  SendQuorum(comp);
  return Status::Ok();
}

Status LoopbackHub::DoLeave(LoopbackTransport* t) {
  if (!t->in_group_) return Status::Ok();
  t->in_group_ = false;
  std::erase(group_, t);
  t->outbox_.clear();
  std::erase_if(t->inbox_, [](const auto& e) { return e.kind != LoopbackTransport::Ev::kQuorum; });
  const int comp = nodes_.at(t->id_.nodeid).component;
  auto members = GroupIn(comp);
  LoopbackTransport::Ev ev;
  ev.kind = LoopbackTransport::Ev::kConfChg;
  for (auto* m : members) ev.members.push_back(m->id_);
  ev.left.push_back({t->id_, t->alive_ ? LeaveReason::kLeave : LeaveReason::kFailed});
  for (auto* m : members) m->inbox_.push_back(ev);
  return Status::Ok();
}

void LoopbackHub::Crash(uint32_t nodeid) {
  auto it = nodes_.find(nodeid);
  if (it == nodes_.end() || !it->second.current) return;
  LoopbackTransport* t = it->second.current;
  t->alive_ = false;
  t->inbox_.clear();
  if (t->callbacks_) t->callbacks_->Clear();
  (void)DoLeave(t);  // reason kFailed since !alive_
  it->second.current = nullptr;
  SendQuorum(it->second.component);
}

void LoopbackHub::Partition(const std::vector<std::vector<uint32_t>>& groups) {
  // Everything already ordered stays ordered; the split happens after it.
  std::map<uint32_t, int> old_comp;
  for (const auto& [id, n] : nodes_) old_comp[id] = n.component;
  int next = 1;
  for (const auto& [id, n] : nodes_) next = std::max(next, n.component + 1);
  for (const auto& g : groups) {
    for (uint32_t id : g) nodes_[id].component = next;
    ++next;
  }
  // Each process in the group learns who is no longer reachable.
  for (LoopbackTransport* t : group_) {
    const int mine = nodes_.at(t->id_.nodeid).component;
    LoopbackTransport::Ev ev;
    ev.kind = LoopbackTransport::Ev::kConfChg;
    for (LoopbackTransport* o : group_) {
      if (nodes_.at(o->id_.nodeid).component == mine) {
        ev.members.push_back(o->id_);
      } else if (old_comp[o->id_.nodeid] == old_comp[t->id_.nodeid]) {
        ev.left.push_back({o->id_, LeaveReason::kFailed});
      }
    }
    if (!ev.left.empty()) t->inbox_.push_back(ev);
  }
  std::set<int> comps;
  for (const auto& [id, n] : nodes_) comps.insert(n.component);
  for (int c : comps) SendQuorum(c);
}

void LoopbackHub::Heal() {
  std::map<uint32_t, int> old_comp;
  for (auto& [id, n] : nodes_) {
    old_comp[id] = n.component;
    n.component = 0;
  }
  for (LoopbackTransport* t : group_) {
    LoopbackTransport::Ev ev;
    ev.kind = LoopbackTransport::Ev::kConfChg;
    for (LoopbackTransport* o : group_) {
      ev.members.push_back(o->id_);
      if (old_comp[o->id_.nodeid] != old_comp[t->id_.nodeid]) ev.joined.push_back(o->id_);
    }
    if (!ev.joined.empty()) t->inbox_.push_back(ev);
  }
  SendQuorum(0);
}

bool LoopbackHub::Step() {
  // Candidate actions: order one outbox message, consume one inbox event, run one callback.
  std::vector<std::pair<int, LoopbackTransport*>> cands;
  for (auto& p : procs_) {
    LoopbackTransport* t = p.get();
    if (!t->alive_) continue;
    if (!t->outbox_.empty()) cands.push_back({0, t});
    if (!t->inbox_.empty()) cands.push_back({1, t});
    if (t->callbacks_ && !t->callbacks_->empty()) cands.push_back({2, t});
  }
  if (cands.empty()) return false;
  ++steps_;
  size_t pick = randomize_ ? std::uniform_int_distribution<size_t>(0, cands.size() - 1)(rng_)
                           : steps_ % cands.size();
  auto [kind, t] = cands[pick];
  if (kind == 0) {
    auto msg = std::make_shared<const std::vector<uint8_t>>(std::move(t->outbox_.front()));
    t->outbox_.pop_front();
    LoopbackTransport::Ev ev;
    ev.kind = LoopbackTransport::Ev::kDeliver;
    ev.from = t->id_;
    ev.msg = msg;
    for (LoopbackTransport* m : GroupIn(nodes_.at(t->id_.nodeid).component)) {
      m->inbox_.push_back(ev);
    }
  } else if (kind == 1) {
    LoopbackTransport::Ev ev = std::move(t->inbox_.front());
    t->inbox_.pop_front();
    TransportListener* l = t->listener_;
    if (l == nullptr) return true;
    switch (ev.kind) {
      case LoopbackTransport::Ev::kDeliver:
        if (t->in_group_) l->OnDeliver(ev.from, ev.msg->data(), ev.msg->size());
        break;
      case LoopbackTransport::Ev::kConfChg:
        if (t->in_group_) l->OnConfChg(ev.members, ev.left, ev.joined);
        break;
      case LoopbackTransport::Ev::kQuorum:
        l->OnQuorum(ev.quorate);
        break;
    }
  } else {
    t->callbacks_->RunOne();
  }
  return true;
}

bool LoopbackHub::RunUntilIdle(size_t max_steps) {
  for (size_t i = 0; i < max_steps; ++i) {
    if (!Step()) return true;
  }
  return false;
}

}  // namespace ugfs2::dlm
