// DlmLockModule: GlockRunners on several nodes of one lockspace (the threaded in-process
// transport, real threads, the production callback queue) exclude each other through the lock
// manager the way gfs2 nodes do through the kernel DLM: remote demotes, try locks, compatible
// states, LVB hand-over, a mutual exclusion stress and fencing.
#include "glock_lock_module.h"

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <functional>
#include <memory>
#include <mutex>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <gtest/gtest.h>

#include "glock/glock.h"
#include "glock/glock_runner.h"
#include "lockspace.h"
#include "threaded_transport.h"

namespace ugfs2::dlm {
namespace {

using glock::GlockName;
using glock::GlockRunner;
using glock::GlockType;
using glock::HolderId;
using glock::LmReply;
using glock::State;
using std::chrono::milliseconds;

constexpr milliseconds kWait(20000);  // bound of every wait in these tests

// Wakes WaitUntil when something observable may have changed.
class Notifier {
 public:
  void Notify() {
    std::lock_guard<std::mutex> l(mu_);
    ++gen_;
    cv_.notify_all();
  }
  // Waits until pred() holds (false after `timeout`). pred runs without our mutex, after every
  // notification and at least every 10 ms (not every state change notifies).
  bool WaitUntil(const std::function<bool()>& pred, milliseconds timeout = kWait) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (true) {
      uint64_t seen;
      {
        std::lock_guard<std::mutex> l(mu_);
        seen = gen_;
      }
      if (pred()) return true;
      std::unique_lock<std::mutex> l(mu_);
      const auto now = std::chrono::steady_clock::now();
      if (now >= deadline) return false;
      cv_.wait_until(l, std::min(deadline, now + milliseconds(10)), [&] { return gen_ != seen; });
    }
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  uint64_t gen_ = 0;
};

// Passes everything to the DlmLockModule and notifies after each reply, so that a test can wait
// for the runner's state to move.
class NotifyingLockModule final : public glock::LockModule {
 public:
  NotifyingLockModule(glock::LockModule* inner, Notifier* n) : inner_(inner), n_(n) {}
  void Request(const GlockName& name, State from, State to, uint32_t flags,
               ReplyFn reply) override {
    Notifier* n = n_;
    inner_->Request(name, from, to, flags, [reply = std::move(reply), n](const LmReply& r) {
      reply(r);
      n->Notify();
    });
  }
  void Cancel(const GlockName& name) override { inner_->Cancel(name); }
  void SetBlockingCallback(BlockingCallback cb) override { inner_->SetBlockingCallback(cb); }
  bool ReadLvb(const GlockName& name, Lvb* out) override { return inner_->ReadLvb(name, out); }
  void WriteLvb(const GlockName& name, const Lvb& value) override { inner_->WriteLvb(name, value); }

 private:
  glock::LockModule* inner_;
  Notifier* n_;
};

// One node: transport, lockspace, lock module, runner (NoHooks) and a ticker thread that calls
// GlockRunner::Tick (delayed demotes and retries need it, as in the engine).
struct Node {
  uint32_t id = 0;
  std::unique_ptr<ThreadedTransport> transport;
  std::unique_ptr<Lockspace> ls;
  std::unique_ptr<DlmLockModule> lm;
  std::unique_ptr<NotifyingLockModule> nlm;
  glock::NoHooks hooks;
  std::unique_ptr<GlockRunner> runner;
  std::atomic<int> fence_calls{0};
  std::thread ticker;
  std::mutex mu;  // guards below
  std::condition_variable cv;
  bool stop = false;
  std::vector<std::pair<GlockName, State>> basts;  // blocking callbacks received

  std::vector<State> BastsFor(const GlockName& name) {
    std::lock_guard<std::mutex> l(mu);
    std::vector<State> v;
    for (const auto& [n, wanted] : basts) {
      if (n == name) v.push_back(wanted);
    }
    return v;
  }
};

glock::Options TestGlockOptions() {
  glock::Options o;
  o.min_hold = 5 * glock::kMillisecond;
  o.retry_delay = 10 * glock::kMillisecond;
  return o;
}

class Cluster {
 public:
  explicit Cluster(int n, DlmLockModuleOptions lm_options = {},
                   glock::Options glock_options = TestGlockOptions()) {
    for (int i = 1; i <= n; ++i) {
      auto node = std::make_unique<Node>();
      Node* np = node.get();
      np->id = static_cast<uint32_t>(i);
      np->transport = std::make_unique<ThreadedTransport>(&seq_, np->id);
      LockspaceOptions o;
      o.name = "glocks";
      o.auto_rejoin = false;
      o.fence_hook = [this, np](bool fenced) {
        if (fenced) np->fence_calls++;
        notifier_.Notify();
      };
      np->ls = std::make_unique<Lockspace>(np->transport.get(), o);
      np->lm = std::make_unique<DlmLockModule>(np->ls.get(), lm_options);
      np->nlm = std::make_unique<NotifyingLockModule>(np->lm.get(), &notifier_);
      np->runner = std::make_unique<GlockRunner>(np->nlm.get(), &np->hooks, glock_options);
      // What the engine will do: blocking callbacks become remote demote requests.
      np->lm->SetBlockingCallback([this, np](const GlockName& name, State wanted) {
        {
          std::lock_guard<std::mutex> l(np->mu);
          np->basts.emplace_back(name, wanted);
        }
        np->runner->RemoteDemote(name, wanted);
        notifier_.Notify();
      });
      np->ticker = std::thread([np] {
        std::unique_lock<std::mutex> l(np->mu);
        while (!np->stop) {
          np->cv.wait_for(l, milliseconds(2));
          if (np->stop) break;
          l.unlock();
          np->runner->Tick();
          l.lock();
        }
      });
      nodes_.push_back(std::move(node));
    }
  }
  ~Cluster() { (void)TearDown(); }

  Status Start() {
    for (auto& n : nodes_) {
      RETURN_IF_ERROR(n->ls->Join());
      RETURN_IF_ERROR(n->ls->WaitMember(kWait));
    }
    return Status::Ok();
  }

  // Shuts every module down (while its runner lives), then destroys runners, modules and
  // lockspaces in that order. Returns the first shutdown failure.
  Status TearDown() {
    Status first;
    for (auto& n : nodes_) {
      {
        std::lock_guard<std::mutex> l(n->mu);
        n->stop = true;
      }
      n->cv.notify_all();
      if (n->ticker.joinable()) n->ticker.join();
    }
    for (auto& n : nodes_) {
      if (!n->lm) continue;
      Status st = n->lm->Shutdown(kWait);
      if (!st.ok() && first.ok()) first = st;
      n->runner.reset();
      n->nlm.reset();
      n->lm.reset();
    }
    for (auto& n : nodes_) n->ls.reset();
    for (auto& n : nodes_) n->transport.reset();
    return first;
  }

  Node& node(int i) { return *nodes_.at(static_cast<size_t>(i - 1)); }
  size_t size() const { return nodes_.size(); }
  Notifier& notifier() { return notifier_; }
  void Isolate(int i) { seq_.Isolate(node(i).transport->self()); }

  std::string DumpAll() {
    std::ostringstream o;
    for (auto& n : nodes_) {
      o << "=== node " << n->id << " glocks\n"
        << (n->runner ? n->runner->Dump() : "") << "--- lock module\n"
        << (n->lm ? n->lm->Dump() : "") << "--- lockspace\n"
        << (n->ls ? n->ls->Dump(false) : "") << "\n";
    }
    return o.str();
  }

 private:
  Sequencer seq_;
  Notifier notifier_;
  std::vector<std::unique_ptr<Node>> nodes_;
};

// Acquires and waits at most `timeout` (the holder is cancelled with kTimedOut after that).
Result<HolderId> AcquireWithin(GlockRunner& r, const GlockName& name, State state,
                               uint32_t flags = 0, milliseconds timeout = kWait) {
  Result<HolderId> id = r.Acquire(name, state, flags | glock::kAsync);
  if (!id.ok()) return id;
  const glock::Time deadline =
      GlockRunner::SteadyNow() + static_cast<glock::Time>(timeout.count()) * glock::kMillisecond;
  Status st = r.Wait(*id, deadline);
  if (!st.ok()) return st;
  return id;
}

// The glock's cached state on a runner, from its dump ("UN" when the runner forgot it).
std::string StateOf(GlockRunner& r, const GlockName& name) {
  std::istringstream in(r.Dump());
  std::string line;
  const std::string key = " n:" + name.ToString() + " ";
  while (std::getline(in, line)) {
    if (line.rfind("G:", 0) != 0 || line.find(key) == std::string::npos) continue;
    const size_t s = line.find("s:");
    return line.substr(s + 2, 2);
  }
  return "UN";
}

glock::LockModule::Lvb MakeLvb(uint8_t seed) {
  glock::LockModule::Lvb v{};
  for (size_t i = 0; i < v.size(); ++i) v[i] = static_cast<uint8_t>(seed + i);
  return v;
}

// ---------------------------------------------------------------------------------------------

TEST(GlockLockModuleTest, MappingsFollowGfs2) {
  EXPECT_EQ(DlmLockModule::ModeFor(State::kUnlocked), kNL);
  EXPECT_EQ(DlmLockModule::ModeFor(State::kShared), kPR);
  EXPECT_EQ(DlmLockModule::ModeFor(State::kDeferred), kCW);
  EXPECT_EQ(DlmLockModule::ModeFor(State::kExclusive), kEX);
  EXPECT_EQ(DlmLockModule::WantedFor(kEX), State::kUnlocked);
  EXPECT_EQ(DlmLockModule::WantedFor(kCW), State::kDeferred);
  EXPECT_EQ(DlmLockModule::WantedFor(kPR), State::kShared);
  EXPECT_TRUE(DlmLockModule::HasLvb(GlockType::kRgrp));
  EXPECT_TRUE(DlmLockModule::HasLvb(GlockType::kQuota));
  EXPECT_FALSE(DlmLockModule::HasLvb(GlockType::kInode));
  using M = DlmLockModule;
  EXPECT_EQ(M::LockFlags(GlockType::kInode, kIV, kEX, 0), 0u);
  EXPECT_EQ(M::LockFlags(GlockType::kInode, kIV, kPR, glock::kTry), kLkfNoQueue);
  EXPECT_EQ(M::LockFlags(GlockType::kInode, kIV, kPR, glock::kTry1Cb),
            kLkfNoQueue | kLkfNoQueueBast);
  EXPECT_EQ(M::LockFlags(GlockType::kInode, kIV, kPR, glock::kNoExp), kLkfNoExp);
  EXPECT_EQ(M::LockFlags(GlockType::kRgrp, kIV, kEX, 0), kLkfValBlk);
  // Conversions: QUECVT only where it blocks (up, not a try lock), never NODLCKWT/CONVDEADLK.
  EXPECT_EQ(M::LockFlags(GlockType::kInode, kPR, kEX, 0), kLkfConvert | kLkfQueCvt);
  EXPECT_EQ(M::LockFlags(GlockType::kInode, kNL, kPR, 0), kLkfConvert | kLkfQueCvt);
  EXPECT_EQ(M::LockFlags(GlockType::kInode, kEX, kNL, 0), kLkfConvert);
  EXPECT_EQ(M::LockFlags(GlockType::kInode, kEX, kPR, 0), kLkfConvert);
  EXPECT_EQ(M::LockFlags(GlockType::kInode, kPR, kEX, glock::kTry), kLkfConvert | kLkfNoQueue);
  EXPECT_EQ(M::LockFlags(GlockType::kRgrp, kEX, kNL, 0), kLkfConvert | kLkfValBlk);
}

// Test 1: node 1 caches EX; node 2 asks SH; node 1 is asked (blocking callback), demotes EX->SH
// and node 2 is granted. Then node 1 asks EX and node 2 demotes SH->UN, keeping its NL lock.
TEST(GlockLockModuleTest, RemoteDemoteHandsTheGlockOver) {
  Cluster c(2);
  ASSERT_TRUE(c.Start().ok());
  Node& n1 = c.node(1);
  Node& n2 = c.node(2);
  const GlockName g{GlockType::kInode, 0x1b3a};

  Result<HolderId> h = AcquireWithin(*n1.runner, g, State::kExclusive);
  ASSERT_TRUE(h.ok()) << h.status().ToString();
  ASSERT_TRUE(n1.runner->Release(*h).ok());
  EXPECT_EQ(StateOf(*n1.runner, g), "EX");  // cached
  EXPECT_EQ(n1.lm->GrantedMode(g), kEX);

  Result<HolderId> h2 = AcquireWithin(*n2.runner, g, State::kShared);
  ASSERT_TRUE(h2.ok()) << h2.status().ToString() << "\n" << c.DumpAll();
  EXPECT_EQ(n1.BastsFor(g), std::vector<State>{State::kShared});
  ASSERT_TRUE(c.notifier().WaitUntil([&] { return StateOf(*n1.runner, g) == "SH"; }))
      << "node 1 did not demote EX->SH\n"
      << c.DumpAll();
  EXPECT_EQ(n1.lm->GrantedMode(g), kPR);
  EXPECT_EQ(n2.lm->GrantedMode(g), kPR);
  ASSERT_TRUE(n2.runner->Release(*h2).ok());

  // Node 1 shares SH from its cache, without asking anyone.
  Result<HolderId> h3 = AcquireWithin(*n1.runner, g, State::kShared);
  ASSERT_TRUE(h3.ok()) << h3.status().ToString();
  ASSERT_TRUE(n1.runner->Release(*h3).ok());
  EXPECT_TRUE(n2.BastsFor(g).empty());

  // EX on node 1: node 2 gives SH up (to UN) and keeps its lock in NL.
  Result<HolderId> h4 = AcquireWithin(*n1.runner, g, State::kExclusive);
  ASSERT_TRUE(h4.ok()) << h4.status().ToString() << "\n" << c.DumpAll();
  EXPECT_EQ(n2.BastsFor(g), std::vector<State>{State::kUnlocked});
  ASSERT_TRUE(c.notifier().WaitUntil([&] { return n2.lm->GrantedMode(g) == kNL; })) << c.DumpAll();
  EXPECT_EQ(StateOf(*n2.runner, g), "UN");
  EXPECT_EQ(n1.lm->GrantedMode(g), kEX);
  ASSERT_TRUE(n1.runner->Release(*h4).ok());
  EXPECT_TRUE(c.TearDown().ok());
}

// Test 2: try locks on a glock held EX elsewhere fail at once with kLockConflict. kTry does not
// disturb the holder; kTry1Cb sends it one blocking callback (NOQUEUEBAST), which only queues a
// demote: the holder keeps EX until it releases.
TEST(GlockLockModuleTest, TryLocksFailAtOnceAndOnlyTry1CbNotifies) {
  Cluster c(2);
  ASSERT_TRUE(c.Start().ok());
  Node& n1 = c.node(1);
  Node& n2 = c.node(2);
  const GlockName g{GlockType::kInode, 0x42};
  const GlockName probe{GlockType::kInode, 0x43};

  Result<HolderId> h = AcquireWithin(*n1.runner, g, State::kExclusive);
  ASSERT_TRUE(h.ok()) << h.status().ToString();

  Result<HolderId> t = AcquireWithin(*n2.runner, g, State::kShared, glock::kTry);
  ASSERT_FALSE(t.ok());
  EXPECT_EQ(t.status().code(), Code::kLockConflict) << t.status().ToString();
  // A round trip from node 1 ordered after node 2's request: a blocking callback caused by that
  // request would have run before this grant (callbacks run in order).
  Result<HolderId> p = AcquireWithin(*n1.runner, probe, State::kExclusive);
  ASSERT_TRUE(p.ok()) << p.status().ToString();
  ASSERT_TRUE(n1.runner->Release(*p).ok());
  EXPECT_TRUE(n1.BastsFor(g).empty()) << "kTry must not notify the holder";
  EXPECT_EQ(n2.lm->GrantedMode(g), kIV);  // the refused new lock is gone

  Result<HolderId> t1 = AcquireWithin(*n2.runner, g, State::kShared, glock::kTry1Cb);
  ASSERT_FALSE(t1.ok());
  EXPECT_EQ(t1.status().code(), Code::kLockConflict) << t1.status().ToString();
  ASSERT_TRUE(c.notifier().WaitUntil([&] { return !n1.BastsFor(g).empty(); }))
      << "kTry1Cb must notify the holder\n"
      << c.DumpAll();
  EXPECT_EQ(n1.BastsFor(g), std::vector<State>{State::kShared});
  EXPECT_EQ(StateOf(*n1.runner, g), "EX");  // still held
  EXPECT_EQ(n1.lm->GrantedMode(g), kEX);

  // Released, the queued demote runs.
  ASSERT_TRUE(n1.runner->Release(*h).ok());
  ASSERT_TRUE(c.notifier().WaitUntil([&] { return StateOf(*n1.runner, g) == "SH"; }))
      << c.DumpAll();
  EXPECT_EQ(n1.lm->GrantedMode(g), kPR);
  EXPECT_TRUE(c.TearDown().ok());
}

// Test 3: DF with DF and SH with SH are held on both nodes at once; EX excludes.
TEST(GlockLockModuleTest, CompatibleStatesShareAndExExcludes) {
  Cluster c(2);
  ASSERT_TRUE(c.Start().ok());
  Node& n1 = c.node(1);
  Node& n2 = c.node(2);
  for (State s : {State::kDeferred, State::kShared}) {
    const GlockName g{GlockType::kInode, s == State::kDeferred ? 0x10u : 0x11u};
    Result<HolderId> a = AcquireWithin(*n1.runner, g, s);
    ASSERT_TRUE(a.ok()) << a.status().ToString();
    Result<HolderId> b = AcquireWithin(*n2.runner, g, s);
    ASSERT_TRUE(b.ok()) << glock::StateName(s) << ": " << b.status().ToString() << "\n"
                        << c.DumpAll();
    const int mode = DlmLockModule::ModeFor(s);
    EXPECT_EQ(n1.lm->GrantedMode(g), mode);
    EXPECT_EQ(n2.lm->GrantedMode(g), mode);
    EXPECT_TRUE(n1.BastsFor(g).empty());
    ASSERT_TRUE(n1.runner->Release(*a).ok());
    ASSERT_TRUE(n2.runner->Release(*b).ok());
  }

  const GlockName g{GlockType::kInode, 0x12};
  Result<HolderId> a = AcquireWithin(*n1.runner, g, State::kExclusive);
  ASSERT_TRUE(a.ok()) << a.status().ToString();
  Result<HolderId> b = n2.runner->Acquire(g, State::kExclusive, glock::kAsync);
  ASSERT_TRUE(b.ok()) << b.status().ToString();
  ASSERT_TRUE(c.notifier().WaitUntil([&] { return !n1.BastsFor(g).empty(); }))
      << "node 2's EX request never reached node 1\n"
      << c.DumpAll();
  EXPECT_FALSE(n2.runner->Poll(*b)) << "EX granted on both nodes\n" << c.DumpAll();
  EXPECT_EQ(n2.lm->GrantedMode(g), kIV);  // its new lock waits
  ASSERT_TRUE(n1.runner->Release(*a).ok());
  const Status st =
      n2.runner->Wait(*b, GlockRunner::SteadyNow() + kWait.count() * glock::kMillisecond);
  ASSERT_TRUE(st.ok()) << st.ToString() << "\n" << c.DumpAll();
  EXPECT_EQ(n2.lm->GrantedMode(g), kEX);
  ASSERT_TRUE(c.notifier().WaitUntil([&] { return n1.lm->GrantedMode(g) == kNL; })) << c.DumpAll();
  EXPECT_EQ(StateOf(*n1.runner, g), "UN");
  ASSERT_TRUE(n2.runner->Release(*b).ok());
  EXPECT_TRUE(c.TearDown().ok());
}

// Test 4: the LVB of an rgrp glock written under EX reaches the next holder on another node.
TEST(GlockLockModuleTest, LvbTravelsWithTheRgrpGlock) {
  Cluster c(2);
  ASSERT_TRUE(c.Start().ok());
  Node& n1 = c.node(1);
  Node& n2 = c.node(2);
  const GlockName g{GlockType::kRgrp, 0x100};
  glock::LockModule::Lvb v{};

  Result<HolderId> a = AcquireWithin(*n1.runner, g, State::kExclusive);
  ASSERT_TRUE(a.ok()) << a.status().ToString();
  ASSERT_TRUE(n1.lm->ReadLvb(g, &v));
  EXPECT_EQ(v, glock::LockModule::Lvb{});  // never written: zeros
  const glock::LockModule::Lvb first = MakeLvb(1);
  n1.lm->WriteLvb(g, first);
  ASSERT_TRUE(n1.lm->ReadLvb(g, &v));
  EXPECT_EQ(v, first);
  ASSERT_TRUE(n1.runner->Release(*a).ok());  // cached EX: the value is still only here

  Result<HolderId> b = AcquireWithin(*n2.runner, g, State::kShared);
  ASSERT_TRUE(b.ok()) << b.status().ToString() << "\n" << c.DumpAll();
  ASSERT_TRUE(n2.lm->ReadLvb(g, &v));
  EXPECT_EQ(v, first);
  ASSERT_TRUE(n2.runner->Release(*b).ok());

  // EX on node 2 (node 1 gives SH up), a new value, then SH on node 1 reads it.
  Result<HolderId> b2 = AcquireWithin(*n2.runner, g, State::kExclusive);
  ASSERT_TRUE(b2.ok()) << b2.status().ToString() << "\n" << c.DumpAll();
  ASSERT_TRUE(n2.lm->ReadLvb(g, &v));
  EXPECT_EQ(v, first);
  const glock::LockModule::Lvb second = MakeLvb(100);
  n2.lm->WriteLvb(g, second);
  ASSERT_TRUE(n2.runner->Release(*b2).ok());
  Result<HolderId> a2 = AcquireWithin(*n1.runner, g, State::kShared);
  ASSERT_TRUE(a2.ok()) << a2.status().ToString() << "\n" << c.DumpAll();
  ASSERT_TRUE(n1.lm->ReadLvb(g, &v));
  EXPECT_EQ(v, second);
  ASSERT_TRUE(n1.runner->Release(*a2).ok());

  // Types without an LVB have none.
  const GlockName inode{GlockType::kInode, 0x100};
  Result<HolderId> i = AcquireWithin(*n1.runner, inode, State::kExclusive);
  ASSERT_TRUE(i.ok());
  EXPECT_FALSE(n1.lm->ReadLvb(inode, &v));
  ASSERT_TRUE(n1.runner->Release(*i).ok());
  EXPECT_TRUE(c.TearDown().ok());
}

// Test 5: 3 nodes x 4 threads x 200 iterations of EX or SH on one of 4 glocks: never a writer
// with anyone else; the rgrp glocks' LVB counts the EX holds exactly.
TEST(GlockLockModuleTest, MutualExclusionStress) {
  Cluster c(3);
  ASSERT_TRUE(c.Start().ok());
  const std::vector<GlockName> glocks = {{GlockType::kInode, 0x200},
                                         {GlockType::kInode, 0x201},
                                         {GlockType::kRgrp, 0x300},
                                         {GlockType::kRgrp, 0x301}};
  struct Counters {
    std::atomic<int> writers{0};
    std::atomic<int> readers{0};
    std::atomic<uint64_t> ex_holds{0};  // changed only under EX
  };
  std::vector<Counters> counters(glocks.size());
  std::atomic<int> violations{0};
  std::mutex fail_mu;
  std::string failure;  // the first failure, with dumps
  constexpr int kThreads = 4, kIters = 200;
  const auto start = std::chrono::steady_clock::now();
  std::vector<std::thread> workers;
  for (int n = 1; n <= 3; ++n) {
    for (int t = 0; t < kThreads; ++t) {
      workers.emplace_back([&, n, t] {
        Node& node = c.node(n);
        std::mt19937 rng(static_cast<uint32_t>(n * 100 + t));
        for (int i = 0; i < kIters; ++i) {
          const size_t gi = rng() % glocks.size();
          const GlockName& g = glocks[gi];
          const bool ex = rng() % 5 < 2;
          Result<HolderId> h =
              AcquireWithin(*node.runner, g, ex ? State::kExclusive : State::kShared);
          if (!h.ok()) {
            std::lock_guard<std::mutex> l(fail_mu);
            if (failure.empty()) {
              failure = "node " + std::to_string(n) + " thread " + std::to_string(t) +
                        " iteration " + std::to_string(i) + ": " + (ex ? "EX " : "SH ") +
                        g.ToString() + ": " + h.status().ToString() + "\n" + c.DumpAll();
            }
            return;
          }
          Counters& k = counters[gi];
          const bool lvb = g.type == GlockType::kRgrp;
          glock::LockModule::Lvb v{};
          uint64_t seen = 0;
          if (lvb) {
            if (!node.lm->ReadLvb(g, &v)) violations++;
            std::memcpy(&seen, v.data(), sizeof(seen));
          }
          if (ex) {
            if (k.writers.fetch_add(1) != 0 || k.readers.load() != 0) violations++;
            if (lvb) {
              if (seen != k.ex_holds.load()) violations++;
              const uint64_t next = seen + 1;
              std::memcpy(v.data(), &next, sizeof(next));
              node.lm->WriteLvb(g, v);
            }
            k.ex_holds.fetch_add(1);
            std::this_thread::yield();
            k.writers.fetch_sub(1);
          } else {
            k.readers.fetch_add(1);
            if (k.writers.load() != 0) violations++;
            if (lvb && seen != k.ex_holds.load()) violations++;
            std::this_thread::yield();
            k.readers.fetch_sub(1);
          }
          if (!node.runner->Release(*h).ok()) violations++;
        }
      });
    }
  }
  for (auto& w : workers) w.join();
  const auto secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - start);
  ASSERT_TRUE(failure.empty()) << failure;
  EXPECT_EQ(violations.load(), 0) << c.DumpAll();
  uint64_t holds = 0;
  for (auto& k : counters) holds += k.ex_holds.load();
  DlmLockModuleStats total;
  for (size_t n = 1; n <= c.size(); ++n) {
    const DlmLockModuleStats s = c.node(static_cast<int>(n)).lm->Stats();
    total.requests += s.requests;
    total.granted += s.granted;
    total.deadlocks += s.deadlocks;
    total.blocking += s.blocking;
  }
  std::printf(
      "stress: %d acquisitions (%llu EX) in %.2f s: %llu DLM requests, %llu granted, %llu "
      "conversion deadlocks, %llu blocking callbacks\n",
      3 * kThreads * kIters, static_cast<unsigned long long>(holds), secs.count(),
      static_cast<unsigned long long>(total.requests),
      static_cast<unsigned long long>(total.granted),
      static_cast<unsigned long long>(total.deadlocks),
      static_cast<unsigned long long>(total.blocking));
  EXPECT_GT(total.blocking, 20u) << "the nodes hardly contended";
  // The final LVB values, read on node 1.
  for (size_t gi = 2; gi < glocks.size(); ++gi) {
    Result<HolderId> h = AcquireWithin(*c.node(1).runner, glocks[gi], State::kShared);
    ASSERT_TRUE(h.ok()) << h.status().ToString();
    glock::LockModule::Lvb v{};
    ASSERT_TRUE(c.node(1).lm->ReadLvb(glocks[gi], &v));
    uint64_t seen = 0;
    std::memcpy(&seen, v.data(), sizeof(seen));
    EXPECT_EQ(seen, counters[gi].ex_holds.load()) << glocks[gi].ToString();
    ASSERT_TRUE(c.node(1).runner->Release(*h).ok());
  }
  for (size_t n = 1; n <= c.size(); ++n) {
    EXPECT_EQ(c.node(static_cast<int>(n)).ls->TEST_CheckInvariants(), "");
  }
  EXPECT_TRUE(c.TearDown().ok());
}

// Two nodes holding SH both convert to EX: the second conversion deadlocks, is refused
// (EDEADLK), and the glock layer unlocks to UN (NL) and asks again, letting the first one in.
// Node 2's demote is held back by the minimum hold time, so its conversion really is sent.
// Cancelling the re-request then leaves node 2 in UN with its NL lock.
TEST(GlockLockModuleTest, ConversionDeadlockIsRefusedThenRetriedFromUn) {
  glock::Options slow = TestGlockOptions();
  slow.min_hold = 2000 * glock::kMillisecond;
  Cluster c(2, {}, slow);
  ASSERT_TRUE(c.Start().ok());
  Node& n1 = c.node(1);
  Node& n2 = c.node(2);
  const GlockName g{GlockType::kInode, 0x600};
  Result<HolderId> h1 = AcquireWithin(*n1.runner, g, State::kShared);
  ASSERT_TRUE(h1.ok()) << h1.status().ToString();
  Result<HolderId> h2 = AcquireWithin(*n2.runner, g, State::kShared);
  ASSERT_TRUE(h2.ok()) << h2.status().ToString();
  Result<HolderId> w1 = n1.runner->Acquire(g, State::kExclusive, glock::kAsync);
  ASSERT_TRUE(w1.ok());
  Result<HolderId> w2 = n2.runner->Acquire(g, State::kExclusive, glock::kAsync);
  ASSERT_TRUE(w2.ok());
  ASSERT_TRUE(n1.runner->Release(*h1).ok());  // node 1 converts PR->EX and waits for node 2
  ASSERT_TRUE(c.notifier().WaitUntil([&] { return !n2.BastsFor(g).empty(); })) << c.DumpAll();
  ASSERT_TRUE(n2.runner->Release(*h2).ok());  // node 2 converts PR->EX too: deadlock
  const glock::Time deadline = GlockRunner::SteadyNow() + kWait.count() * glock::kMillisecond;
  Status st = n1.runner->Wait(*w1, deadline);
  ASSERT_TRUE(st.ok()) << st.ToString() << "\n" << c.DumpAll();
  EXPECT_EQ(n2.lm->Stats().deadlocks, 1u) << c.DumpAll();
  EXPECT_EQ(n1.lm->Stats().deadlocks, 0u);
  // Node 2 asks again from NL and waits behind node 1's EX.
  ASSERT_TRUE(c.notifier().WaitUntil([&] { return !n1.BastsFor(g).empty(); })) << c.DumpAll();
  EXPECT_FALSE(n2.runner->Poll(*w2));
  EXPECT_EQ(n2.lm->GrantedMode(g), kNL);
  ASSERT_TRUE(n2.runner->Cancel(*w2).ok());
  ASSERT_TRUE(c.notifier().WaitUntil([&] { return n2.lm->Stats().canceled == 1; })) << c.DumpAll();
  ASSERT_TRUE(c.notifier().WaitUntil([&] { return StateOf(*n2.runner, g) == "UN"; }))
      << c.DumpAll();
  EXPECT_EQ(n2.lm->GrantedMode(g), kNL);
  EXPECT_EQ(n1.lm->GrantedMode(g), kEX);
  ASSERT_TRUE(n1.runner->Release(*w1).ok());
  EXPECT_TRUE(c.TearDown().ok());
}

// Test 6: a node that loses quorum fences itself: its request in flight fails, new requests fail
// at once (kFenced), giving a glock up still works (UN), and the survivor gets its locks.
TEST(GlockLockModuleTest, FencedNodeFailsRequests) {
  Cluster c(2);
  ASSERT_TRUE(c.Start().ok());
  Node& n1 = c.node(1);
  Node& n2 = c.node(2);
  const GlockName ga{GlockType::kInode, 0x400};
  const GlockName gb{GlockType::kInode, 0x401};
  const GlockName gc{GlockType::kInode, 0x402};

  Result<HolderId> h2a = AcquireWithin(*n2.runner, ga, State::kExclusive);
  ASSERT_TRUE(h2a.ok()) << h2a.status().ToString();
  Result<HolderId> h1b = AcquireWithin(*n1.runner, gb, State::kExclusive);
  ASSERT_TRUE(h1b.ok()) << h1b.status().ToString();
  // Each node waits for the other's glock.
  Result<HolderId> w1a = n1.runner->Acquire(ga, State::kExclusive, glock::kAsync);
  ASSERT_TRUE(w1a.ok());
  Result<HolderId> w2b = n2.runner->Acquire(gb, State::kExclusive, glock::kAsync);
  ASSERT_TRUE(w2b.ok());
  ASSERT_TRUE(c.notifier().WaitUntil([&] {
    return !n2.BastsFor(ga).empty() && !n1.BastsFor(gb).empty();
  })) << c.DumpAll();

  c.Isolate(2);
  ASSERT_TRUE(c.notifier().WaitUntil([&] { return n2.fence_calls.load() > 0; }))
      << "node 2 did not fence itself\n"
      << c.DumpAll();
  EXPECT_TRUE(n2.ls->fenced());

  const glock::Time deadline = GlockRunner::SteadyNow() + kWait.count() * glock::kMillisecond;
  Status st = n2.runner->Wait(*w2b, deadline);
  EXPECT_EQ(st.code(), Code::kFenced) << st.ToString();
  Result<HolderId> r = AcquireWithin(*n2.runner, gc, State::kShared);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), Code::kFenced) << r.status().ToString();
  EXPECT_TRUE(n2.lm->fenced());
  EXPECT_EQ(n2.lm->LockCount(), 0u) << n2.lm->Dump();

  // The survivor recovers node 2's locks (no recovery hook: done at once) and is granted.
  st = n1.runner->Wait(*w1a, deadline);
  ASSERT_TRUE(st.ok()) << st.ToString() << "\n" << c.DumpAll();

  // Node 2 can still let go: the demote to UN node 1 asked for completes (the lock is gone).
  ASSERT_TRUE(n2.runner->Release(*h2a).ok());
  ASSERT_TRUE(c.notifier().WaitUntil([&] { return StateOf(*n2.runner, ga) == "UN"; }))
      << c.DumpAll();

  ASSERT_TRUE(n1.runner->Release(*w1a).ok());
  ASSERT_TRUE(n1.runner->Release(*h1b).ok());
  EXPECT_TRUE(c.TearDown().ok());
}

// Idle NL locks beyond DlmLockModuleOptions::max_idle_nl_locks are unlocked, oldest first; such
// a glock simply gets a new lock next time.
TEST(GlockLockModuleTest, IdleNlLocksAreCapped) {
  DlmLockModuleOptions o;
  o.max_idle_nl_locks = 2;
  Cluster c(1, o);
  ASSERT_TRUE(c.Start().ok());
  Node& n1 = c.node(1);
  for (uint64_t i = 0; i < 5; ++i) {
    const GlockName g{GlockType::kInode, 0x500 + i};
    Result<HolderId> h = AcquireWithin(*n1.runner, g, State::kExclusive, glock::kNoCache);
    ASSERT_TRUE(h.ok()) << h.status().ToString();
    ASSERT_TRUE(n1.runner->Release(*h).ok());  // kNoCache: demoted to UN (NL) at once
  }
  ASSERT_TRUE(c.notifier().WaitUntil([&] { return n1.lm->LockCount() == 2; })) << n1.lm->Dump();
  EXPECT_EQ(n1.lm->GrantedMode({GlockType::kInode, 0x500}), kIV);
  EXPECT_EQ(n1.lm->GrantedMode({GlockType::kInode, 0x504}), kNL);
  Result<HolderId> h = AcquireWithin(*n1.runner, {GlockType::kInode, 0x500}, State::kShared);
  ASSERT_TRUE(h.ok()) << h.status().ToString();
  EXPECT_EQ(n1.lm->GrantedMode({GlockType::kInode, 0x500}), kPR);
  ASSERT_TRUE(n1.runner->Release(*h).ok());
  EXPECT_TRUE(c.TearDown().ok());
}

// Counters: a glock this node caches costs no message however often it is used again; a request
// another node's lock blocks costs messages on both nodes (the requester's request, the holder's
// blocking callback and down-conversion); Shutdown counts its unlocks. Every lock-module call is
// one lock-operation message of the lockspace.
// kNewObject: a creator's new lock on a resource that nobody holds is answered provisionally at
// once (the holder runs), then confirmed by the lock manager's grant; a resource held elsewhere
// takes the ordinary way (a blocking callback, a demote, then the grant).
TEST(GlockLockModuleTest, NewObjectsAreGrantedProvisionallyWhenNobodyHoldsThem) {
  Cluster c(2);
  ASSERT_TRUE(c.Start().ok());
  Node& n1 = c.node(1);
  Node& n2 = c.node(2);
  const GlockName fresh{GlockType::kInode, 0x700};
  const GlockName held{GlockType::kInode, 0x701};
  const glock::Time deadline = GlockRunner::SteadyNow() + kWait.count() * glock::kMillisecond;

  Result<HolderId> h =
      AcquireWithin(*n1.runner, fresh, State::kExclusive, glock::kSkip | glock::kNewObject);
  ASSERT_TRUE(h.ok()) << h.status().ToString();
  EXPECT_EQ(n1.lm->Stats().provisional, 1u);
  EXPECT_EQ(n1.lm->Counters().provisional, 1u);
  EXPECT_EQ(n1.runner->ProvisionalMark(), 1u);
  ASSERT_TRUE(n1.runner->WaitProvisional(1, deadline)) << c.DumpAll();
  EXPECT_EQ(n1.lm->GrantedMode(fresh), kEX);
  EXPECT_FALSE(n1.runner->Info(fresh)->provisional);
  ASSERT_TRUE(n1.runner->Release(*h).ok());
  EXPECT_EQ(StateOf(*n1.runner, fresh), "EX");

  // Node 2 caches `held` SH: node 1's creator waits for the real grant after node 2's demote.
  Result<HolderId> h2 = AcquireWithin(*n2.runner, held, State::kShared);
  ASSERT_TRUE(h2.ok()) << h2.status().ToString();
  ASSERT_TRUE(n2.runner->Release(*h2).ok());
  // Node 2's grant is decided, but node 1's replica of the lock table may not have applied it
  // yet (each node delivers the ordered messages at its own pace): a request made before that
  // would see the resource idle and be answered provisionally, as designed. Wait until node 1
  // has applied everything node 2 had when its grant came.
  const uint64_t seq2 = n2.ls->Info().seq;
  ASSERT_TRUE(c.notifier().WaitUntil([&] { return n1.ls->Info().seq >= seq2; })) << c.DumpAll();
  Result<HolderId> h3 =
      AcquireWithin(*n1.runner, held, State::kExclusive, glock::kSkip | glock::kNewObject);
  ASSERT_TRUE(h3.ok()) << h3.status().ToString() << "\n" << c.DumpAll();
  EXPECT_EQ(n1.lm->Stats().provisional, 1u);  // not provisional: node 2 held it
  EXPECT_EQ(n2.BastsFor(held), std::vector<State>{State::kUnlocked});
  EXPECT_EQ(n1.lm->GrantedMode(held), kEX);
  EXPECT_EQ(n1.runner->ProvisionalMark(), 1u);
  ASSERT_TRUE(n1.runner->Release(*h3).ok());

  // Node 2 now wants the new inode: node 1 (its real grant long in) hands it over as usual.
  Result<HolderId> h4 = AcquireWithin(*n2.runner, fresh, State::kShared);
  ASSERT_TRUE(h4.ok()) << h4.status().ToString() << "\n" << c.DumpAll();
  ASSERT_TRUE(n2.runner->Release(*h4).ok());
  EXPECT_TRUE(c.TearDown().ok());
}

TEST(GlockLockModuleTest, CountersCountWhatIsSent) {
  Cluster c(2);
  ASSERT_TRUE(c.Start().ok());
  Node& n1 = c.node(1);
  Node& n2 = c.node(2);
  const GlockName g{GlockType::kInode, 0x600};
  const GlockName d{GlockType::kInode, 0x601};
  const LockspaceCounters ls0 = n1.ls->Counters();
  EXPECT_GT(ls0.msgs_sent, 0u);  // the join (hello)
  EXPECT_EQ(ls0.op_msgs_sent, 0u);
  EXPECT_GT(ls0.msgs_delivered, 0u);
  EXPECT_GT(ls0.bytes_sent, 0u);

  // Warm-up: two new locks (EX and SH), one message each.
  for (const auto& [name, state] :
       {std::pair{g, State::kExclusive}, std::pair{d, State::kShared}}) {
    Result<HolderId> h = AcquireWithin(*n1.runner, name, state);
    ASSERT_TRUE(h.ok()) << h.status().ToString();
    ASSERT_TRUE(n1.runner->Release(*h).ok());
  }
  DlmLockModuleCounters lm1 = n1.lm->Counters();
  EXPECT_EQ(lm1.requests, 2u);
  EXPECT_EQ(lm1.converts, 0u);
  EXPECT_EQ(lm1.completions, 2u);
  EXPECT_EQ(lm1.callbacks, 0u);
  const LockspaceCounters ls1 = n1.ls->Counters();
  EXPECT_EQ(ls1.op_msgs_sent, 2u);
  EXPECT_EQ(ls1.msgs_sent, ls0.msgs_sent + 2);
  EXPECT_GT(ls1.bytes_sent, ls0.bytes_sent);

  // Warm: the cached glocks, used again and again in every compatible state, send nothing.
  for (int i = 0; i < 50; ++i) {
    Result<HolderId> a = AcquireWithin(*n1.runner, g, i % 2 ? State::kShared : State::kExclusive);
    ASSERT_TRUE(a.ok()) << a.status().ToString();
    Result<HolderId> b = AcquireWithin(*n1.runner, d, State::kShared);
    ASSERT_TRUE(b.ok()) << b.status().ToString();
    ASSERT_TRUE(n1.runner->Release(*b).ok());
    ASSERT_TRUE(n1.runner->Release(*a).ok());
  }
  const LockspaceCounters ls2 = n1.ls->Counters();
  EXPECT_EQ(ls2.msgs_sent, ls1.msgs_sent) << c.DumpAll();
  EXPECT_EQ(ls2.bytes_sent, ls1.bytes_sent);
  const DlmLockModuleCounters lm2 = n1.lm->Counters();
  EXPECT_EQ(lm2.requests, lm1.requests);
  EXPECT_EQ(lm2.converts, lm1.converts);

  // Node 2 wants g SH: its new lock; node 1 is asked (a blocking callback) and converts EX->PR.
  Result<HolderId> h2 = AcquireWithin(*n2.runner, g, State::kShared);
  ASSERT_TRUE(h2.ok()) << h2.status().ToString() << "\n" << c.DumpAll();
  ASSERT_TRUE(c.notifier().WaitUntil([&] { return n1.lm->GrantedMode(g) == kPR; })) << c.DumpAll();
  ASSERT_TRUE(n2.runner->Release(*h2).ok());
  const DlmLockModuleCounters lm3 = n1.lm->Counters();
  EXPECT_EQ(lm3.callbacks, 1u);
  EXPECT_EQ(lm3.converts, 1u);
  EXPECT_EQ(lm3.requests, 2u);
  const LockspaceCounters ls3 = n1.ls->Counters();
  EXPECT_EQ(ls3.op_msgs_sent, ls2.op_msgs_sent + 1);
  EXPECT_EQ(ls3.msgs_sent, ls2.msgs_sent + 1);
  const DlmLockModuleCounters m2 = n2.lm->Counters();
  EXPECT_EQ(m2.requests, 1u);
  EXPECT_EQ(m2.callbacks, 0u);
  EXPECT_EQ(n2.ls->Counters().op_msgs_sent, 1u);

  // Shutdown unlocks every lock: one unlock (and message) each.
  const size_t locks1 = n1.lm->LockCount();
  EXPECT_EQ(locks1, 2u);
  ASSERT_TRUE(n1.lm->Shutdown(kWait).ok());
  EXPECT_EQ(n1.lm->Counters().unlocks, locks1);
  EXPECT_EQ(n1.ls->Counters().op_msgs_sent, ls3.op_msgs_sent + locks1);
  EXPECT_EQ(n1.lm->Counters().cancels, 0u);
  EXPECT_TRUE(c.TearDown().ok());
}

}  // namespace
}  // namespace ugfs2::dlm
