// An in-process total-order transport with real threads, for tests.
//
// Sequencer: the total order is the order of appends to one shared log. ThreadedTransport: one
// process in that group; its own thread delivers the log to its listener, in order, starting at
// its join. Every member is quorate from the start. Isolate(node) injects a quorum loss: the node
// is told OnQuorum(false) (the lockspace fences itself), it hears nothing more, and the others see
// it fail in a configuration change followed by a quorum confirmation (so they recover its locks
// and go on). There is no healing. Pause() simulates a frozen process on the delivery side: its
// thread stops delivering (events stay in the log) until Resume(); nobody else notices.
//
// Thread safety: every method may be called from any thread; listener callbacks of one transport
// come from its own thread only.
#ifndef UGFS2_TESTS_DLM_THREADED_TRANSPORT_H_
#define UGFS2_TESTS_DLM_THREADED_TRANSPORT_H_

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <mutex>
#include <thread>
#include <utility>
#include <vector>

#include "transport.h"

namespace ugfs2::dlm {

class Sequencer {
 public:
  struct Ev {
    enum Kind { kMessage, kConfChg, kQuorum } kind = kMessage;
    MemberId from;                                       // kMessage
    std::vector<uint8_t> msg;                            // kMessage
    std::vector<MemberId> members, joined;               // kConfChg
    std::vector<std::pair<MemberId, LeaveReason>> left;  // kConfChg
    MemberId target;                                     // kQuorum: only this member hears it
    bool quorate = true;                                 // kQuorum
  };

  void Append(Ev ev) {
    std::lock_guard<std::mutex> l(mu_);
    AppendLocked(std::move(ev));
  }
  // Adds `id` to the members; returns the log index of its join confchg.
  size_t AppendJoin(const MemberId& id) {
    std::lock_guard<std::mutex> l(mu_);
    members_.push_back(id);
    Ev ev;
    ev.kind = Ev::kConfChg;
    ev.members = members_;
    ev.joined = {id};
    AppendLocked(std::move(ev));
    return log_.size() - 1;
  }
  // Quorum loss of `id` alone (see the file comment).
  void Isolate(const MemberId& id) {
    std::lock_guard<std::mutex> l(mu_);
    Ev q;
    q.kind = Ev::kQuorum;
    q.target = id;
    q.quorate = false;
    AppendLocked(std::move(q));
    std::erase(members_, id);
    Ev c;
    c.kind = Ev::kConfChg;
    c.members = members_;
    c.left = {{id, LeaveReason::kFailed}};
    AppendLocked(std::move(c));
  }
  // Blocks until event `i` exists or stop; returns a copy.
  bool Get(size_t i, Ev* out, const std::atomic<bool>& stop) {
    std::unique_lock<std::mutex> l(mu_);
    cv_.wait(l, [&] { return stop || i < log_.size(); });
    if (i >= log_.size()) return false;
    *out = log_[i];
    return true;
  }
  size_t size() {
    std::lock_guard<std::mutex> l(mu_);
    return log_.size();
  }
  void Wake() {
    std::lock_guard<std::mutex> l(mu_);
    cv_.notify_all();
  }

 private:
  void AppendLocked(Ev ev) {
    log_.push_back(std::move(ev));
    cv_.notify_all();
  }
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Ev> log_;
  std::vector<MemberId> members_;
};

class ThreadedTransport final : public Transport {
 public:
  ThreadedTransport(Sequencer* s, uint32_t nodeid) : seq_(s), id_{nodeid, 5000 + nodeid} {}
  ~ThreadedTransport() override { Stop(); }
  Status Start(TransportListener* l) override {
    listener_ = l;
    thread_ = std::thread([this] { Run(); });
    return Status::Ok();
  }
  Status Join() override {
    start_at_ = seq_->AppendJoin(id_);  // our join is the first event we see
    joined_ = true;
    return Status::Ok();
  }
  Status Leave() override { return Status::Ok(); }
  void Stop() override {
    stop_ = true;
    {
      std::lock_guard<std::mutex> l(pause_mu_);
      pause_cv_.notify_all();
    }
    seq_->Wake();
    if (thread_.joinable()) thread_.join();
  }
  Status Multicast(std::vector<uint8_t> msg) override {
    Sequencer::Ev ev;
    ev.from = id_;
    ev.msg = std::move(msg);
    seq_->Append(std::move(ev));
    return Status::Ok();
  }
  MemberId self() const override { return id_; }
  void Pause() {
    std::lock_guard<std::mutex> l(pause_mu_);
    paused_ = true;
  }
  void Resume() {
    std::lock_guard<std::mutex> l(pause_mu_);
    paused_ = false;
    pause_cv_.notify_all();
  }

 private:
  void Run() {
    listener_->OnQuorum(true);
    while (!joined_ && !stop_) std::this_thread::yield();
    for (size_t i = start_at_; !stop_; ++i) {
      {
        std::unique_lock<std::mutex> l(pause_mu_);
        pause_cv_.wait(l, [this] { return !paused_ || stop_; });
      }
      Sequencer::Ev ev;
      if (!seq_->Get(i, &ev, stop_)) return;
      switch (ev.kind) {
        case Sequencer::Ev::kQuorum:
          if (ev.target != id_) break;
          listener_->OnQuorum(ev.quorate);
          if (!ev.quorate) return;  // cut off: nothing reaches us any more
          break;
        case Sequencer::Ev::kConfChg: {
          const bool gone = std::any_of(ev.left.begin(), ev.left.end(),
                                        [this](const auto& l) { return l.first == id_; });
          if (gone) break;
          listener_->OnConfChg(ev.members, ev.left, ev.joined);
          // The survivors keep quorum: confirm it for the new view.
          if (!ev.left.empty()) listener_->OnQuorum(true);
          break;
        }
        case Sequencer::Ev::kMessage:
          listener_->OnDeliver(ev.from, ev.msg.data(), ev.msg.size());
          break;
      }
    }
  }
  Sequencer* seq_;
  MemberId id_;
  TransportListener* listener_ = nullptr;
  std::thread thread_;
  std::atomic<bool> stop_{false}, joined_{false};
  std::atomic<size_t> start_at_{0};
  std::mutex pause_mu_;  // leaf lock: guards paused_
  std::condition_variable pause_cv_;
  bool paused_ = false;
};

}  // namespace ugfs2::dlm

#endif  // UGFS2_TESTS_DLM_THREADED_TRANSPORT_H_
