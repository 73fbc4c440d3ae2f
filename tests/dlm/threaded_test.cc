// The lockspace with real threads: a small in-process total-order transport with one delivery
// thread per node, the production ThreadCallbackQueue, and LockSync/UnlockSync from many
// application threads. Checks mutual exclusion under EX, LVB hand-over and sync timeouts.
#include <atomic>
#include <condition_variable>
#include <deque>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "lockspace.h"

namespace ugfs2::dlm {
namespace {

// Total order = order of appends to one log; each node's thread delivers the log in order.
class Sequencer {
 public:
  struct Ev {
    bool confchg = false;
    MemberId from;
    std::vector<uint8_t> msg;
    std::vector<MemberId> members, joined;
  };
  void Append(Ev ev) {
    std::lock_guard<std::mutex> l(mu_);
    log_.push_back(std::move(ev));
    cv_.notify_all();
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
  void Wake() { cv_.notify_all(); }
  std::vector<MemberId> members;  // guarded by mu_ in Join

  std::mutex mu_;

 private:
  std::condition_variable cv_;
  std::deque<Ev> log_;
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
    Sequencer::Ev ev;
    ev.confchg = true;
    {
      std::lock_guard<std::mutex> l(seq_->mu_);
      seq_->members.push_back(id_);
      ev.members = seq_->members;
    }
    ev.joined = {id_};
    start_at_ = seq_->size();  // our join is the next event
    joined_ = true;
    seq_->Append(std::move(ev));
    return Status::Ok();
  }
  Status Leave() override { return Status::Ok(); }
  void Stop() override {
    stop_ = true;
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

 private:
  void Run() {
    listener_->OnQuorum(true);
    while (!joined_ && !stop_) std::this_thread::yield();
    for (size_t i = start_at_; !stop_; ++i) {
      Sequencer::Ev ev;
      if (!seq_->Get(i, &ev, stop_)) return;
      if (ev.confchg) {
        listener_->OnConfChg(ev.members, {}, ev.joined);
      } else {
        listener_->OnDeliver(ev.from, ev.msg.data(), ev.msg.size());
      }
    }
  }
  Sequencer* seq_;
  MemberId id_;
  TransportListener* listener_ = nullptr;
  std::thread thread_;
  std::atomic<bool> stop_{false}, joined_{false};
  std::atomic<size_t> start_at_{0};
};

TEST(ThreadedLockspaceTest, ManyThreadsMutualExclusionAndLvb) {
  Sequencer seq;
  std::vector<std::unique_ptr<ThreadedTransport>> ts;
  std::vector<std::unique_ptr<Lockspace>> ls;
  for (uint32_t n = 1; n <= 3; ++n) {
    ts.push_back(std::make_unique<ThreadedTransport>(&seq, n));
    LockspaceOptions o;
    o.name = "threaded";
    ls.push_back(std::make_unique<Lockspace>(ts.back().get(), o));
    ASSERT_TRUE(ls.back()->Join().ok());
    ASSERT_TRUE(ls.back()->WaitMember(std::chrono::seconds(10)).ok());
  }
  std::atomic<int> inside{0};
  std::atomic<int> violations{0};
  std::atomic<uint64_t> counter{0};
  constexpr int kThreadsPerNode = 3, kIters = 150;
  std::vector<std::thread> workers;
  for (int n = 0; n < 3; ++n) {
    for (int t = 0; t < kThreadsPerNode; ++t) {
      workers.emplace_back([&, n] {
        for (int i = 0; i < kIters; ++i) {
          Lksb lksb;
          Status st =
              ls[n]->LockSync(kEX, &lksb, kLkfValBlk, "shared", nullptr, std::chrono::seconds(20));
          if (!st.ok() || lksb.status != kStatusOk) {
            violations++;
            continue;
          }
          if (inside.fetch_add(1) != 0) violations++;
          // The LVB carries the counter: it must equal what the last holder wrote.
          uint64_t v;
          std::memcpy(&v, lksb.lvb.data(), 8);
          if (v != counter.load()) violations++;
          counter.store(v + 1);
          v += 1;
          std::memcpy(lksb.lvb.data(), &v, 8);
          inside.fetch_sub(1);
          st = ls[n]->UnlockSync(lksb.lkid, kLkfValBlk, &lksb, std::chrono::seconds(20));
          if (!st.ok() || lksb.status != kStatusUnlock) violations++;
        }
      });
    }
  }
  for (auto& w : workers) w.join();
  EXPECT_EQ(violations.load(), 0);
  EXPECT_EQ(counter.load(), uint64_t{3 * kThreadsPerNode * kIters});
  // A request that cannot be granted times out, is cancelled, and leaves nothing behind.
  Lksb hold, wait;
  ASSERT_TRUE(ls[0]->LockSync(kEX, &hold, 0, "blocked", nullptr, std::chrono::seconds(5)).ok());
  Status st = ls[1]->LockSync(kPR, &wait, 0, "blocked", nullptr, std::chrono::milliseconds(50));
  EXPECT_EQ(st.code(), Code::kTimedOut);
  ASSERT_TRUE(ls[0]->UnlockSync(hold.lkid, 0, &hold, std::chrono::seconds(5)).ok());
  // Everything settles: the same table everywhere and no locks left (the cancelled request may
  // have been granted and then auto-unlocked).
  for (int i = 0; i < 200 && (ls[1]->Info().locks != 0 || ls[2]->Info().locks != 0); ++i) {
    Lksb probe;  // a round trip through the ordered stream lets every queued event apply
    ASSERT_TRUE(ls[2]->LockSync(kNL, &probe, 0, "probe", nullptr, std::chrono::seconds(5)).ok());
    ASSERT_TRUE(ls[2]->UnlockSync(probe.lkid, 0, &probe, std::chrono::seconds(5)).ok());
  }
  EXPECT_EQ(ls[1]->Info().locks, 0u) << ls[1]->Dump(false);
  for (auto& l : ls) l.reset();
}

}  // namespace
}  // namespace ugfs2::dlm
