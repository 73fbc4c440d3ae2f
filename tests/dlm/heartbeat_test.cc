// Heartbeats, eviction and the write lease (docs/dlm.md, "Heartbeats, eviction and the write
// lease"). The LockspaceHeartbeatTest cases run on the deterministic loopback hub with the
// manual clock of SimCluster (heartbeat rounds are explicit Tick() calls); the
// ThreadedLockspaceHeartbeatTest cases use the real timer thread and CLOCK_MONOTONIC over the
// threaded in-process transport, with bounded waits.
#include <time.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "lockspace.h"
#include "sim_cluster.h"
#include "threaded_transport.h"

namespace ugfs2::dlm {
namespace {

using std::chrono::milliseconds;

constexpr milliseconds kInterval{100};
constexpr milliseconds kLease{400};
constexpr milliseconds kEvict{800};
constexpr int64_t kMs = 1000000;

struct Rec {
  Lksb lksb;
  int completions = 0;
  std::vector<int> basts;
};

Status Lock(Lockspace& ls, Rec* r, int mode, const std::string& name, uint32_t flags = 0) {
  return ls.Lock(
      mode, &r->lksb, flags, name, [r] { r->completions++; },
      [r](int m) { r->basts.push_back(m); });
}

// One heartbeat period: advance the clock, tick every (unfrozen) member, run the hub to idle.
void Round(SimCluster& c) {
  c.Advance(kInterval);
  c.TickAll();
  ASSERT_TRUE(c.Run());
}

bool HasMember(const LockspaceInfo& info, uint32_t nodeid) {
  for (const auto& m : info.members) {
    if (m.alive && m.id.nodeid == nodeid) return true;
  }
  return false;
}

TEST(LockspaceHeartbeatTest, FrozenMemberIsEvictedRecoveredAndFencesItselfOnResume) {
  SimCluster c(3, 101, /*quorum=*/true, /*manual_recovery=*/true);
  c.EnableHeartbeats(kInterval, kLease, kEvict);
  c.StartAll();
  ASSERT_TRUE(c.Run());
  for (int i = 0; i < 3; ++i) Round(c);
  for (uint32_t id : c.Ids()) {
    ASSERT_EQ(c.ls(id).state(), LsState::kMember);
    ASSERT_TRUE(c.ls(id).LeaseValid()) << "node " << id;
  }
  Rec a, b;
  ASSERT_TRUE(Lock(c.ls(3), &a, kEX, "inode").ok());
  ASSERT_TRUE(c.Run());
  ASSERT_EQ(a.completions, 1);
  ASSERT_TRUE(Lock(c.ls(1), &b, kEX, "inode").ok());
  ASSERT_TRUE(c.Run());
  ASSERT_EQ(b.completions, 0);
  ASSERT_EQ(a.basts.size(), 1u);
  const uint32_t old_inc = c.ls(3).Info().incarnation;
  ASSERT_NE(old_inc, 0u);

  // Node 3 freezes: it delivers nothing and sends nothing.
  c.freezable(3).Freeze();
  const int64_t frozen_at = c.now();
  const int64_t lease3 = c.ls(3).LeaseExpiryNs();
  EXPECT_LE(lease3, frozen_at + kLease.count() * kMs);
  int64_t evicted_at = 0;
  for (int round = 0; round < 30 && evicted_at == 0; ++round) {
    c.Advance(kInterval);
    c.TickAll();
    while (c.hub().Step()) {
      if (evicted_at == 0 && (c.ls(1).Counters().evictions + c.ls(2).Counters().evictions) > 0) {
        // The first survivor just applied the EVICT: the frozen node's lease is over already.
        evicted_at = c.now();
        EXPECT_FALSE(c.ls(3).LeaseValid());
        EXPECT_LT(c.ls(3).LeaseExpiryNs(), c.now());
      }
    }
  }
  ASSERT_NE(evicted_at, 0) << "node 3 was not evicted within 30 heartbeat intervals";
  EXPECT_LE(evicted_at - frozen_at, (kEvict + 3 * kInterval).count() * kMs)
      << "eviction took longer than evict_timeout + slack";
  EXPECT_GT(evicted_at - frozen_at, (kEvict - kInterval).count() * kMs) << "evicted too early";
  EXPECT_EQ(c.ls(1).Counters().evictions, 1u);
  EXPECT_EQ(c.ls(2).Counters().evictions, 1u);
  EXPECT_EQ(c.node(1).recovery_calls, std::vector<uint32_t>{3});
  EXPECT_EQ(c.node(2).recovery_calls, std::vector<uint32_t>{3});
  EXPECT_FALSE(HasMember(c.ls(1).Info(), 3));
  EXPECT_EQ(c.ls(1).Info().recovery_pending.size(), 1u);
  EXPECT_EQ(b.completions, 0) << "the evicted node's EX must hold until recovery is done";

  // Still frozen on the delivery side, node 3's timer and an application thread run first: a
  // heartbeat and an unlock of its EX, both from the evicted incarnation. Everyone ignores them.
  c.ls(3).HeartbeatTick();
  ASSERT_TRUE(c.ls(3).Unlock(a.lksb.lkid, 0).ok());
  for (int i = 0; i < 3; ++i) Round(c);
  EXPECT_EQ(b.completions, 0) << "a message of the evicted incarnation was applied";
  EXPECT_EQ(c.ls(1).TEST_Digest(), c.ls(2).TEST_Digest());
  EXPECT_EQ(c.ls(1).TEST_CheckInvariants(), "");
  EXPECT_EQ(c.ls(1).Counters().evictions, 1u) << "the survivors evicted someone else";
  EXPECT_TRUE(HasMember(c.ls(1).Info(), 2));

  // Recovery of node 3 done: the waiter gets the lock.
  ASSERT_TRUE(c.ls(2).RecoveryDone(3).ok());
  ASSERT_TRUE(c.Run());
  EXPECT_EQ(b.completions, 1);
  EXPECT_EQ(b.lksb.status, kStatusOk);

  // Node 3 resumes, reads its backlog, finds its own EVICT and fences itself; its lease never
  // comes back in that incarnation.
  EXPECT_TRUE(c.node(3).fence_calls.empty());
  while (c.freezable(3).ResumeOne()) {
    EXPECT_FALSE(c.ls(3).LeaseValid());
  }
  EXPECT_EQ(c.ls(3).Info().times_evicted, 1u);
  EXPECT_EQ(c.ls(3).Counters().evictions, 1u);
  while (c.hub().Step()) {
    const LockspaceInfo info = c.ls(3).Info();
    if (info.state != LsState::kMember || info.incarnation == old_inc) {
      EXPECT_FALSE(c.ls(3).LeaseValid()) << LsStateName(info.state);
    }
  }
  ASSERT_EQ(c.node(3).fence_calls.size(), 2u);
  EXPECT_TRUE(c.node(3).fence_calls[0]);
  EXPECT_FALSE(c.node(3).fence_calls[1]);
  EXPECT_EQ(a.lksb.status, kStatusFenced) << "the unlock in flight fails when fenced";
  // It is back as a fresh member, with a new incarnation, the same table, and a new lease.
  const LockspaceInfo info3 = c.ls(3).Info();
  EXPECT_EQ(info3.state, LsState::kMember);
  EXPECT_NE(info3.incarnation, old_inc);
  EXPECT_EQ(info3.fence_count, 1u);
  for (int i = 0; i < 2; ++i) Round(c);
  EXPECT_EQ(c.ls(3).TEST_Digest(), c.ls(1).TEST_Digest());
  EXPECT_TRUE(c.ls(3).LeaseValid());
  Rec d;
  ASSERT_TRUE(Lock(c.ls(3), &d, kPR, "inode").ok());
  ASSERT_TRUE(c.Run());
  EXPECT_EQ(d.completions, 0);  // b holds EX
  ASSERT_TRUE(c.ls(1).Unlock(b.lksb.lkid, 0).ok());
  ASSERT_TRUE(c.Run());
  EXPECT_EQ(d.completions, 1);
}

TEST(LockspaceHeartbeatTest, HeartbeatOrderedBeforeTheEvictVoidsIt) {
  SimCluster c(3, 102, /*quorum=*/true, /*manual_recovery=*/true);
  c.EnableHeartbeats(kInterval, kLease, kEvict);
  c.StartAll();
  ASSERT_TRUE(c.Run());
  for (int i = 0; i < 3; ++i) Round(c);
  const uint32_t inc3 = c.ls(3).Info().incarnation;
  c.freezable(3).Freeze();
  // Exactly evict_timeout of silence: not yet evicted.
  for (int i = 0; i < kEvict / kInterval; ++i) Round(c);
  ASSERT_EQ(c.ls(1).Counters().evictions, 0u);
  // One more period: node 1 (the evicter) decides, but its sends are held, so the EVICT is not
  // ordered yet. (msgs_sent counts the EVICT; heartbeats are not counted there.)
  c.freezable(1).HoldSends();
  const uint64_t before = c.ls(1).Counters().msgs_sent;
  c.Advance(kInterval);
  c.Tick(1);
  ASSERT_EQ(c.ls(1).Counters().msgs_sent, before + 1) << "node 1 did not decide to evict node 3";
  // Node 3's timer runs again first: its heartbeat is ordered before the EVICT.
  c.ls(3).HeartbeatTick();
  ASSERT_TRUE(c.Run());
  c.freezable(1).ReleaseSends();
  c.Tick(2);
  ASSERT_TRUE(c.Run());
  while (c.freezable(3).ResumeOne()) {
  }
  ASSERT_TRUE(c.Run());
  for (uint32_t id : c.Ids()) {
    EXPECT_EQ(c.ls(id).Counters().evictions, 0u) << "node " << id;
    EXPECT_TRUE(HasMember(c.ls(id).Info(), 3)) << "node " << id;
  }
  EXPECT_TRUE(c.node(1).recovery_calls.empty());
  EXPECT_TRUE(c.node(3).fence_calls.empty());
  EXPECT_EQ(c.ls(3).Info().incarnation, inc3);
  EXPECT_EQ(c.ls(3).state(), LsState::kMember);
  // Node 3 delivered its own heartbeat, which no replica can have preceded with an applied
  // eviction: its lease is valid again.
  EXPECT_TRUE(c.ls(3).LeaseValid());
  EXPECT_EQ(c.ls(1).TEST_Digest(), c.ls(3).TEST_Digest());
  for (int i = 0; i < 3; ++i) Round(c);
  EXPECT_EQ(c.ls(1).Counters().evictions, 0u);
}

TEST(LockspaceHeartbeatTest, LeaseRenewsWithOwnHeartbeats) {
  SimCluster c(3, 103);
  c.EnableHeartbeats(kInterval, kLease, kEvict);
  c.StartAll();
  for (uint32_t id : c.Ids()) {
    EXPECT_EQ(c.ls(id).LeaseExpiryNs(), 0) << "lease before the member is synced";
    EXPECT_FALSE(c.ls(id).LeaseValid());
  }
  ASSERT_TRUE(c.Run());
  // The first heartbeat goes out as soon as a member is synced.
  for (uint32_t id : c.Ids()) {
    EXPECT_EQ(c.ls(id).LeaseExpiryNs(), c.now() + kLease.count() * kMs) << "node " << id;
    EXPECT_TRUE(c.ls(id).LeaseValid());
  }
  const LockspaceCounters c0 = c.ls(1).Counters();
  EXPECT_EQ(c0.heartbeats_sent, 1u);
  for (int i = 1; i <= 5; ++i) {
    Round(c);
    EXPECT_EQ(c.ls(1).LeaseExpiryNs(), c.now() + kLease.count() * kMs);
  }
  const LockspaceCounters c1 = c.ls(1).Counters();
  EXPECT_EQ(c1.heartbeats_sent, c0.heartbeats_sent + 5);
  EXPECT_EQ(c1.heartbeats_delivered, c0.heartbeats_delivered + 15);
  EXPECT_EQ(c1.msgs_sent, c0.msgs_sent) << "heartbeats must not count as messages";
  EXPECT_EQ(c1.msgs_delivered, c0.msgs_delivered);
  EXPECT_EQ(c1.op_msgs_sent, 0u);
  // At most one heartbeat outstanding: a second tick before the first is back sends nothing.
  c.Tick(1);
  c.Tick(1);
  EXPECT_EQ(c.ls(1).Counters().heartbeats_sent, c1.heartbeats_sent + 1);
  ASSERT_TRUE(c.Run());
  const LockspaceInfo info = c.ls(1).Info();
  EXPECT_TRUE(info.lease_valid);
  EXPECT_EQ(info.lease_expiry_ns, c.ls(1).LeaseExpiryNs());
  EXPECT_EQ(info.last_heard_age_ns.size(), 3u);
  for (const auto& [inc, age] : info.last_heard_age_ns) EXPECT_LT(age, 2 * kInterval.count() * kMs);
  // Without heartbeats delivered the lease lapses, and a member with a lapsed lease evicts
  // nobody (its own view may be stale).
  c.Advance(kLease);
  EXPECT_FALSE(c.ls(1).LeaseValid());
  EXPECT_EQ(c.ls(1).state(), LsState::kMember);
  c.Advance(kEvict);
  c.TickAll();  // node 1 first: everyone looks silent, but its lease is over
  EXPECT_EQ(c.ls(1).Counters().msgs_sent, c1.msgs_sent) << "evicted with a stale view";
  ASSERT_TRUE(c.Run());
  EXPECT_TRUE(c.ls(1).LeaseValid());
  // After Leave the lease is gone.
  ASSERT_TRUE(c.ls(2).Leave().ok());
  EXPECT_EQ(c.ls(2).LeaseExpiryNs(), 0);
  EXPECT_FALSE(c.ls(2).LeaseValid());
  ASSERT_TRUE(c.Run());
  Round(c);
  EXPECT_EQ(c.ls(2).LeaseExpiryNs(), 0);
  EXPECT_EQ(c.ls(1).Counters().evictions, 0u);
}

TEST(LockspaceHeartbeatTest, DisabledMeansNoHeartbeatsNoEvictionAndAValidLease) {
  SimCluster c(3, 104, /*quorum=*/true, /*manual_recovery=*/true);  // heartbeat_interval 0
  c.StartAll();
  EXPECT_EQ(c.ls(1).LeaseExpiryNs(), 0);
  ASSERT_TRUE(c.Run());
  for (uint32_t id : c.Ids()) EXPECT_TRUE(c.ls(id).LeaseValid());
  c.freezable(3).Freeze();
  for (int i = 0; i < 100; ++i) {
    c.Advance(kEvict);
    c.TickAll();
    ASSERT_TRUE(c.Run());
  }
  for (uint32_t id : c.Ids()) {
    const LockspaceCounters k = c.ls(id).Counters();
    EXPECT_EQ(k.heartbeats_sent, 0u);
    EXPECT_EQ(k.heartbeats_delivered, 0u);
    EXPECT_EQ(k.evictions, 0u);
  }
  EXPECT_TRUE(HasMember(c.ls(1).Info(), 3));
  EXPECT_TRUE(c.node(1).recovery_calls.empty());
  EXPECT_TRUE(c.ls(1).Info().last_heard_age_ns.empty());
  while (c.freezable(3).ResumeOne()) {
  }
  ASSERT_TRUE(c.Run());
  EXPECT_TRUE(c.ls(3).LeaseValid());
  EXPECT_EQ(c.ls(3).Info().fence_count, 0u);
  ASSERT_TRUE(c.ls(3).Leave().ok());
  EXPECT_FALSE(c.ls(3).LeaseValid());
  EXPECT_EQ(c.ls(3).LeaseExpiryNs(), 0);
}

TEST(LockspaceHeartbeatTest, JoinRejectsALeaseThatDoesNotFitTheEvictTimeout) {
  SimCluster c(1, 105);
  c.EnableHeartbeats(milliseconds(1000), milliseconds(7500), milliseconds(8000));
  c.Start(1);  // Start() ignores the Join() result
  ASSERT_TRUE(c.Run());
  EXPECT_EQ(c.ls(1).state(), LsState::kIdle);
  EXPECT_EQ(c.ls(1).Join().code(), Code::kInvalid);
}

// --- Real threads, real clock ----------------------------------------------------------------

int64_t MonoNow() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return int64_t{ts.tv_sec} * 1000000000 + ts.tv_nsec;
}

// Polls `pred` until it holds or `timeout` passes (a bounded wait, not a synchronisation sleep).
bool WaitFor(const std::function<bool()>& pred, milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (!pred()) {
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::sleep_for(milliseconds(1));
  }
  return true;
}

struct ThreadedNode {
  std::unique_ptr<ThreadedTransport> t;
  std::unique_ptr<Lockspace> ls;
};

// Generous values: a healthy node must never look silent for kTEvict on a loaded test machine.
constexpr milliseconds kTInterval{50};
constexpr milliseconds kTLease{500};
constexpr milliseconds kTEvict{2000};

TEST(ThreadedLockspaceHeartbeatTest, LeaseFollowsTheTimerThread) {
  Sequencer seq;
  ThreadedTransport t(&seq, 1);
  LockspaceOptions o;
  o.name = "hb";
  o.heartbeat_interval = kTInterval;
  o.lease = kTLease;
  o.evict_timeout = kTEvict;
  Lockspace ls(&t, o);
  EXPECT_EQ(ls.LeaseExpiryNs(), 0);
  ASSERT_TRUE(ls.Join().ok());
  ASSERT_TRUE(ls.WaitMember(std::chrono::seconds(10)).ok());
  ASSERT_TRUE(WaitFor([&] { return ls.LeaseValid(); }, std::chrono::seconds(10)))
      << "no own heartbeat delivered within 10 s";
  const int64_t e1 = ls.LeaseExpiryNs();
  EXPECT_LE(e1, MonoNow() + kTLease.count() * kMs);
  ASSERT_TRUE(WaitFor([&] { return ls.LeaseExpiryNs() > e1; }, std::chrono::seconds(10)))
      << "the lease was not renewed within 10 s";
  EXPECT_GE(ls.Counters().heartbeats_sent, 2u);
  EXPECT_EQ(ls.Counters().op_msgs_sent, 0u);
  ASSERT_TRUE(ls.Leave().ok());
  EXPECT_EQ(ls.LeaseExpiryNs(), 0);
  EXPECT_FALSE(ls.LeaseValid());
}

TEST(ThreadedLockspaceHeartbeatTest, FrozenMemberIsEvictedAndFencesItself) {
  Sequencer seq;
  std::mutex mu;
  std::condition_variable cv;
  std::vector<uint32_t> recovery_calls;  // on node 1
  bool lease3_at_recovery = true;
  std::vector<bool> fence3;
  std::vector<ThreadedNode> nodes(3);
  for (uint32_t n = 1; n <= 3; ++n) {
    ThreadedNode& tn = nodes[n - 1];
    tn.t = std::make_unique<ThreadedTransport>(&seq, n);
    LockspaceOptions o;
    o.name = "hb";
    o.heartbeat_interval = kTInterval;
    o.lease = kTLease;
    o.evict_timeout = kTEvict;
    if (n == 3) {
      o.auto_rejoin = false;  // the threaded transport cannot rejoin
      o.fence_hook = [&](bool f) {
        std::lock_guard<std::mutex> l(mu);
        fence3.push_back(f);
        cv.notify_all();
      };
    } else {
      o.recovery_hook = [&, n](uint32_t dead) {
        if (n != 1) return;  // node 2 leaves the answer to node 1
        const bool valid = nodes[2].ls->LeaseValid();
        std::lock_guard<std::mutex> l(mu);
        lease3_at_recovery = valid;
        recovery_calls.push_back(dead);
        cv.notify_all();
      };
    }
    tn.ls = std::make_unique<Lockspace>(tn.t.get(), o);
    ASSERT_TRUE(tn.ls->Join().ok());
    ASSERT_TRUE(tn.ls->WaitMember(std::chrono::seconds(10)).ok());
  }
  Lockspace& ls1 = *nodes[0].ls;
  Lockspace& ls3 = *nodes[2].ls;
  ASSERT_TRUE(WaitFor([&] { return ls3.LeaseValid(); }, std::chrono::seconds(10)));
  Lksb held;
  ASSERT_TRUE(ls3.LockSync(kEX, &held, 0, "inode", nullptr, std::chrono::seconds(10)).ok());
  ASSERT_EQ(held.status, kStatusOk);
  Lksb want;
  std::atomic<bool> granted{false};
  ASSERT_TRUE(ls1.Lock(
                     kEX, &want, 0, "inode", [&] { granted = true; }, nullptr)
                  .ok());

  nodes[2].t->Pause();
  const int64_t paused_at = MonoNow();
  {
    std::unique_lock<std::mutex> l(mu);
    ASSERT_TRUE(cv.wait_for(l, kTEvict + std::chrono::seconds(10), [&] {
      return !recovery_calls.empty();
    })) << "node 3 not evicted within evict_timeout + 10 s";
    EXPECT_EQ(recovery_calls, std::vector<uint32_t>{3});
    EXPECT_FALSE(lease3_at_recovery) << "the frozen node's lease outlived its eviction";
  }
  EXPECT_GE(MonoNow() - paused_at, (kTEvict - kTInterval).count() * kMs);
  EXPECT_FALSE(ls3.LeaseValid());
  EXPECT_FALSE(granted.load()) << "the evicted node's EX must hold until recovery";
  EXPECT_EQ(ls1.Counters().evictions, 1u);
  ASSERT_TRUE(ls1.RecoveryDone(3).ok());
  ASSERT_TRUE(WaitFor([&] { return granted.load(); }, std::chrono::seconds(10)))
      << "waiter not granted within 10 s of RecoveryDone";
  EXPECT_EQ(want.status, kStatusOk);

  nodes[2].t->Resume();
  {
    std::unique_lock<std::mutex> l(mu);
    ASSERT_TRUE(cv.wait_for(l, std::chrono::seconds(10), [&] { return !fence3.empty(); }))
        << "the resumed node did not fence itself within 10 s";
    EXPECT_TRUE(fence3[0]);
  }
  EXPECT_TRUE(ls3.fenced());
  EXPECT_EQ(ls3.LeaseExpiryNs(), 0);
  EXPECT_FALSE(ls3.LeaseValid());
  EXPECT_EQ(ls3.Info().times_evicted, 1u);
  for (auto& n : nodes) n.ls.reset();
}

}  // namespace
}  // namespace ugfs2::dlm
