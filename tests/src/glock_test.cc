// The glock state machine's rules, one at a time: grants, FIFO, holder flags, demotes, the
// minimum hold time, the LRU, one transition in flight, the order of the hooks, and the prepare
// step before an inode glock gives its state up. Then the runner with lock_nolock, recording
// seams and several threads.
#include "glock/glock.h"

#include <atomic>
#include <mutex>
#include <thread>

#include <gtest/gtest.h>

#include "common/log.h"
#include "glock/glock_runner.h"

namespace ugfs2::glock {
namespace {

using S = State;

constexpr GlockName kInode{GlockType::kInode, 0x1b3a};
constexpr GlockName kInode2{GlockType::kInode, 0x1b3b};
constexpr GlockName kInode3{GlockType::kInode, 0x1b3c};
constexpr GlockName kRgrp{GlockType::kRgrp, 0x11221};
constexpr GlockName kFlock{GlockType::kFlock, 0x42};  // a type without hooks or hold time
constexpr GlockName kFlock2{GlockType::kFlock, 0x43};
constexpr GlockName kFlock3{GlockType::kFlock, 0x44};

constexpr Time kMs = kMillisecond;

class GlockTest : public ::testing::Test {
 protected:
  GlockTest() : t_(Options{.min_hold = 200 * kMs, .retry_delay = 100 * kMs}) {}

  void TearDown() override { EXPECT_EQ(t_.CheckInvariants(), ""); }

  // Each helper replaces out_ with the effects of one input.
  HolderId Acq(const GlockName& n, State s, uint32_t flags = 0) {
    out_.clear();
    Result<HolderId> r = t_.Acquire(n, s, flags, now_, &out_);
    EXPECT_TRUE(r.ok()) << r.status().ToString();
    Check();
    return r.ok() ? *r : 0;
  }
  void Rel(HolderId id) {
    out_.clear();
    EXPECT_TRUE(t_.Release(id, now_, &out_).ok());
    Check();
  }
  void Reply(const GlockName& n, State s, bool canceled = false) {
    out_.clear();
    LmReply r;
    r.state = s;
    r.canceled = canceled;
    Status st = t_.LockModuleReply(n, r, now_, &out_);
    EXPECT_TRUE(st.ok()) << st.ToString();
    Check();
  }
  void Demote(const GlockName& n, State s) {
    out_.clear();
    EXPECT_TRUE(t_.DemoteRequest(n, s, now_, &out_).ok());
    Check();
  }
  void SyncDone(const GlockName& n, Status st = Status::Ok()) {
    out_.clear();
    Status r = t_.SyncDone(n, st, now_, &out_);
    EXPECT_TRUE(r.ok()) << r.ToString();
    Check();
  }
  void InvalDone(const GlockName& n) {
    out_.clear();
    Status r = t_.InvalidateDone(n, now_, &out_);
    EXPECT_TRUE(r.ok()) << r.ToString();
    Check();
  }
  void RefreshDone(const GlockName& n, Status st = Status::Ok()) {
    out_.clear();
    Status r = t_.RefreshDone(n, st, now_, &out_);
    EXPECT_TRUE(r.ok()) << r.ToString();
    Check();
  }
  void PrepDone(const GlockName& n) {
    out_.clear();
    Status r = t_.PrepareDone(n, now_, &out_);
    EXPECT_TRUE(r.ok()) << r.ToString();
    Check();
  }
  void Tick() {
    out_.clear();
    t_.Tick(now_, &out_);
    Check();
  }
  void Check() {
    EXPECT_EQ(t_.CheckInvariants(), "");
    for (const Effect& e : out_) history_ += e.ToString() + "; ";
  }

  // The effects of the last input, in order, e.g. "Request 6/42 UN->SH; Grant 6/42 h1".
  std::string Effects() const {
    std::string s;
    for (const Effect& e : out_) s += (s.empty() ? "" : "; ") + e.ToString();
    return s;
  }
  bool Granted(HolderId id) const {
    for (const Effect& e : out_) {
      if (e.kind == Effect::kGrant && e.holder == id) return true;
    }
    return false;
  }
  const Effect* Failed(HolderId id) const {
    for (const Effect& e : out_) {
      if (e.kind == Effect::kFail && e.holder == id) return &e;
    }
    return nullptr;
  }
  State StateOf(const GlockName& n) const {
    auto i = t_.Info(n);
    return i ? i->state : S::kUnlocked;
  }
  // Brings a hook-less glock to `s`, cached with no holders.
  void Cache(const GlockName& n, State s) {
    HolderId h = Acq(n, s);
    Reply(n, s);
    ASSERT_TRUE(Granted(h)) << Effects();
    Rel(h);
    ASSERT_EQ(Effects(), "");
  }

  // Brings the inode glock to `s` through a holder, granted and released (refreshed on the way).
  void CacheInode(State s) {
    HolderId h = Acq(kInode, s);
    Reply(kInode, s);
    RefreshDone(kInode);
    ASSERT_TRUE(Granted(h)) << Effects();
    Rel(h);
    ASSERT_EQ(Effects(), "");
  }

  GlockTable t_;
  Time now_ = 1000 * kMs;
  std::vector<Effect> out_;
  std::string history_;  // every effect of the test so far
};

// --- Names, states, types -----------------------------------------------------------------

TEST(GlockNameTest, Gfs2Forms) {
  EXPECT_EQ(kInode.ToString(), "2/1b3a");
  EXPECT_EQ(kInode.DlmResourceName(), "       2            1b3a");
  EXPECT_EQ(kRgrp.DlmResourceName(), "       3           11221");
  EXPECT_EQ((GlockName{GlockType::kNondisk, kLiveLock}.DlmResourceName()),
            "       1               1");
  EXPECT_EQ((GlockName{GlockType::kJournal, 1}.DlmResourceName()), "       9               1");
  EXPECT_EQ((GlockName{GlockType::kInode, ~0ull}.DlmResourceName().size()), 24u);
  EXPECT_EQ(static_cast<int>(GlockType::kQuota), 8);
  EXPECT_EQ(kRenameLock, 3u);
  EXPECT_EQ(kFreezeLock, 2u);
}

TEST(GlockStateTest, CompatibilityAndCover) {
  const S all[] = {S::kUnlocked, S::kShared, S::kDeferred, S::kExclusive};
  for (S a : all) {
    EXPECT_TRUE(Compatible(a, S::kUnlocked));
    EXPECT_TRUE(Covers(S::kExclusive, a));
    EXPECT_TRUE(Covers(a, S::kUnlocked));
  }
  EXPECT_TRUE(Compatible(S::kShared, S::kShared));
  EXPECT_TRUE(Compatible(S::kDeferred, S::kDeferred));
  EXPECT_FALSE(Compatible(S::kShared, S::kDeferred));
  EXPECT_FALSE(Compatible(S::kExclusive, S::kExclusive));
  EXPECT_FALSE(Compatible(S::kExclusive, S::kShared));
  EXPECT_FALSE(Covers(S::kShared, S::kDeferred));
  EXPECT_FALSE(Covers(S::kDeferred, S::kShared));
  EXPECT_FALSE(Covers(S::kShared, S::kExclusive));
  EXPECT_EQ(FlagsString(kTry | kExact | kNoCache), "tEc");
}

TEST(GlockStateTest, PerTypeHooks) {
  TypeTraits inode = TraitsOf(GlockType::kInode);
  EXPECT_TRUE(inode.sync && inode.invalidate && inode.refresh && inode.min_hold && inode.prepare);
  TypeTraits rgrp = TraitsOf(GlockType::kRgrp);
  EXPECT_TRUE(rgrp.sync && rgrp.invalidate && rgrp.refresh);
  EXPECT_FALSE(rgrp.min_hold || rgrp.prepare);
  for (GlockType t : {GlockType::kNondisk, GlockType::kMeta, GlockType::kIopen, GlockType::kFlock,
                      GlockType::kQuota, GlockType::kJournal}) {
    TypeTraits x = TraitsOf(t);
    EXPECT_FALSE(x.sync || x.invalidate || x.refresh || x.min_hold || x.prepare);
  }
}

// --- Grant rules ----------------------------------------------------------------------------

TEST_F(GlockTest, FirstHolderAsksTheLockModule) {
  HolderId h = Acq(kFlock, S::kShared);
  EXPECT_EQ(Effects(), "Request 6/42 UN->SH");
  Reply(kFlock, S::kShared);
  EXPECT_EQ(Effects(), "Grant 6/42 h" + std::to_string(h));
  EXPECT_EQ(StateOf(kFlock), S::kShared);
  Result<HolderId> bad = t_.Acquire(kFlock, S::kUnlocked, 0, now_, &out_);
  EXPECT_EQ(bad.status().code(), Code::kInvalid);
}

TEST_F(GlockTest, CompatibleHoldersAreGrantedTogether) {
  HolderId a = Acq(kFlock, S::kShared);
  HolderId b = Acq(kFlock, S::kShared);
  EXPECT_EQ(Effects(), "");  // the first request covers both
  Reply(kFlock, S::kShared);
  EXPECT_EQ(Effects(), "Grant 6/42 h" + std::to_string(a) + "; Grant 6/42 h" + std::to_string(b));
  HolderId c = Acq(kFlock, S::kShared);
  EXPECT_TRUE(Granted(c));
}

TEST_F(GlockTest, ExclusiveHoldersTakeTurns) {
  HolderId a = Acq(kFlock, S::kExclusive);
  Reply(kFlock, S::kExclusive);
  ASSERT_TRUE(Granted(a));
  HolderId b = Acq(kFlock, S::kExclusive);
  EXPECT_EQ(Effects(), "");
  Rel(a);
  EXPECT_EQ(Effects(), "Grant 6/42 h" + std::to_string(b));  // no lock-module round trip
}

TEST_F(GlockTest, NodeScopeHoldersShareExclusive) {
  HolderId a = Acq(kRgrp, S::kExclusive, kNodeScope | kSkip);
  Reply(kRgrp, S::kExclusive);
  ASSERT_TRUE(Granted(a));
  HolderId b = Acq(kRgrp, S::kExclusive, kNodeScope);
  EXPECT_EQ(Effects(), "Refresh 3/11221");
  RefreshDone(kRgrp);
  EXPECT_TRUE(Granted(b));
  HolderId c = Acq(kRgrp, S::kExclusive);  // without the flag it waits
  EXPECT_EQ(Effects(), "");
  Rel(a);
  Rel(b);
  EXPECT_TRUE(Granted(c));
}

TEST_F(GlockTest, CachedExclusiveServesSharedAndDeferredLocally) {
  Cache(kFlock, S::kExclusive);
  HolderId a = Acq(kFlock, S::kShared);
  EXPECT_EQ(Effects(), "Grant 6/42 h" + std::to_string(a));
  Rel(a);
  HolderId b = Acq(kFlock, S::kDeferred);
  EXPECT_EQ(Effects(), "Grant 6/42 h" + std::to_string(b));
  EXPECT_EQ(StateOf(kFlock), S::kExclusive);
}

TEST_F(GlockTest, ExactInsistsOnTheState) {
  Cache(kFlock, S::kExclusive);
  HolderId a = Acq(kFlock, S::kShared, kExact);
  EXPECT_EQ(Effects(), "Request 6/42 EX->SH");
  Reply(kFlock, S::kShared);
  EXPECT_TRUE(Granted(a));
}

TEST_F(GlockTest, AnyAcceptsTheOtherSharedState) {
  Cache(kFlock, S::kDeferred);
  HolderId a = Acq(kFlock, S::kShared, kAny);
  EXPECT_EQ(Effects(), "Grant 6/42 h" + std::to_string(a));
  Rel(a);
  Acq(kFlock, S::kShared);  // without ANY, DF does not do for SH
  EXPECT_EQ(Effects(), "Request 6/42 DF->SH");
}

TEST_F(GlockTest, FifoLaterCompatibleHolderWaitsBehindIncompatibleOne) {
  HolderId a = Acq(kFlock, S::kShared);
  Reply(kFlock, S::kShared);
  ASSERT_TRUE(Granted(a));
  HolderId b = Acq(kFlock, S::kExclusive);
  HolderId c = Acq(kFlock, S::kShared);
  EXPECT_EQ(Effects(), "");  // compatible with a, but b came first
  Rel(a);
  EXPECT_EQ(Effects(), "Request 6/42 SH->EX");
  Reply(kFlock, S::kExclusive);
  EXPECT_EQ(Effects(), "Grant 6/42 h" + std::to_string(b));
  Rel(b);
  EXPECT_EQ(Effects(), "Grant 6/42 h" + std::to_string(c));
}

// --- Try locks ------------------------------------------------------------------------------

TEST_F(GlockTest, TryFailsAtOnceBehindAConflictingHolder) {
  HolderId a = Acq(kFlock, S::kShared);
  Reply(kFlock, S::kShared);
  ASSERT_TRUE(Granted(a));
  HolderId b = Acq(kFlock, S::kExclusive, kTry);
  const Effect* f = Failed(b);
  ASSERT_NE(f, nullptr) << Effects();
  EXPECT_EQ(f->status.code(), Code::kLockConflict);
  EXPECT_TRUE(f->status.IsRetryable());
  EXPECT_FALSE(t_.Holder(b).has_value());
}

TEST_F(GlockTest, TryFailsWhenTheLockModuleRefuses) {
  HolderId a = Acq(kFlock, S::kExclusive, kTry1Cb);
  EXPECT_EQ(Effects(), "Request 6/42 UN->EX f:T");
  Reply(kFlock, S::kUnlocked);  // the lock manager said "would block"
  ASSERT_NE(Failed(a), nullptr) << Effects();
  EXPECT_FALSE(t_.Info(kFlock).has_value());  // nothing cached: forgotten
}

TEST_F(GlockTest, TryFailsAtOnceWhenBusyBehindABlockingHolder) {
  HolderId a = Acq(kFlock, S::kExclusive);
  EXPECT_EQ(Effects(), "Request 6/42 UN->EX");
  HolderId b = Acq(kFlock, S::kShared, kTry);
  EXPECT_NE(Failed(b), nullptr) << Effects();
  Reply(kFlock, S::kExclusive);
  EXPECT_TRUE(Granted(a));
}

TEST_F(GlockTest, QueuedTryLocksFailWhenAHeadHolderNeedsTheLockModule) {
  HolderId a = Acq(kFlock, S::kShared);
  Reply(kFlock, S::kShared);
  HolderId b = Acq(kFlock, S::kExclusive);  // waits for a
  Rel(a);
  EXPECT_EQ(Effects(), "Request 6/42 SH->EX");
  // The cached SH would do for c, but nothing is granted before b's conversion completes, which
  // may take another node's release (gfs2 queues c): fails now.
  HolderId c = Acq(kFlock, S::kShared, kTry);
  EXPECT_NE(Failed(c), nullptr) << Effects();
  HolderId d = Acq(kFlock, S::kExclusive, kTry);  // futile while busy, b queued: fails now
  EXPECT_NE(Failed(d), nullptr) << Effects();
  Reply(kFlock, S::kExclusive);
  EXPECT_TRUE(Granted(b));
}

// The cycle seen across nodes (cluster_fs_concurrency, phase d): an operation holds glock B and
// tries glock A (out of order) while A's conversion for another operation waits for a node that
// waits for B. The try must fail, so that the operation drops B and takes A first.
TEST_F(GlockTest, TryNeverWaitsForAConversionInFlight) {
  Cache(kFlock, S::kShared);
  HolderId w = Acq(kFlock, S::kExclusive);
  EXPECT_EQ(Effects(), "Request 6/42 SH->EX");
  HolderId t = Acq(kFlock, S::kShared, kTry);
  EXPECT_NE(Failed(t), nullptr) << Effects();
  Reply(kFlock, S::kExclusive);
  EXPECT_TRUE(Granted(w));
  Rel(w);
  // Idle again: a try the cached state serves is granted at once.
  HolderId t2 = Acq(kFlock, S::kShared, kTry);
  EXPECT_TRUE(Granted(t2)) << Effects();
}

// --- NOCACHE, demotes, hold time ---------------------------------------------------------------

// kNewObject: a creator's request from UN may be granted provisionally (the lock module expects
// the grant); the request stays in flight until the real reply, so no transition starts and a
// demote waits for it, while holders the state fits are granted without a refresh.
TEST_F(GlockTest, ProvisionalGrantRunsHoldersUntilTheRealReply) {
  HolderId h1 = Acq(kInode, S::kExclusive, kSkip | kNewObject);
  EXPECT_EQ(Effects(), "Request 2/1b3a UN->EX f:N");
  out_.clear();
  LmReply early;
  early.state = S::kExclusive;
  early.provisional = true;
  ASSERT_TRUE(t_.LockModuleReply(kInode, early, now_, &out_).ok());
  Check();
  EXPECT_EQ(Effects(), "Grant 2/1b3a h" + std::to_string(h1));
  ASSERT_TRUE(t_.Info(kInode)->provisional);
  EXPECT_EQ(t_.ProvisionalMark(), 1u);
  EXPECT_FALSE(t_.ProvisionalConfirmed(1));
  EXPECT_TRUE(t_.ProvisionalConfirmed(0));
  EXPECT_NE(t_.Dump().find(" f:lNq "), std::string::npos) << t_.Dump();
  // A later holder (no kSkip) waits for the creator, then is granted without a refresh.
  HolderId h2 = Acq(kInode, S::kShared);
  EXPECT_EQ(Effects(), "");
  Rel(h1);
  EXPECT_EQ(Effects(), "Grant 2/1b3a h" + std::to_string(h2));
  // Giving the state up (kNoCache) waits for the real reply: no sync, no request meanwhile.
  Rel(h2);
  HolderId h3 = Acq(kInode, S::kExclusive, kNoCache);
  EXPECT_TRUE(Granted(h3));
  Rel(h3);
  EXPECT_EQ(Effects(), "");
  EXPECT_EQ(t_.Info(kInode)->phase, Phase::kRequest);
  Reply(kInode, S::kExclusive);
  EXPECT_FALSE(t_.Info(kInode)->provisional);
  EXPECT_TRUE(t_.ProvisionalConfirmed(1));
  EXPECT_EQ(Effects(), "Prepare 2/1b3a");  // the demote kNoCache asked for, now
}

TEST_F(GlockTest, ProvisionalReplyIgnoredUnlessACreatorAsksFromUnlocked) {
  LmReply early;
  early.state = S::kExclusive;
  early.provisional = true;
  // Not a creator: the early answer is ignored and the real one refreshes as usual.
  HolderId h1 = Acq(kInode, S::kExclusive);
  EXPECT_EQ(Effects(), "Request 2/1b3a UN->EX");
  out_.clear();
  ASSERT_TRUE(t_.LockModuleReply(kInode, early, now_, &out_).ok());
  Check();
  EXPECT_EQ(Effects(), "");
  EXPECT_FALSE(t_.Info(kInode)->provisional);
  Reply(kInode, S::kExclusive);
  EXPECT_EQ(Effects(), "Refresh 2/1b3a");
  RefreshDone(kInode);
  EXPECT_TRUE(Granted(h1));
  Rel(h1);
  // A creator whose glock is cached already converts nothing: no request at all.
  HolderId h2 = Acq(kInode, S::kExclusive, kSkip | kNewObject);
  EXPECT_TRUE(Granted(h2));
  Rel(h2);
  EXPECT_EQ(t_.ProvisionalMark(), 0u);
  // While recovery blocks replies, the early answer is ignored too.
  HolderId f = Acq(kFlock, S::kShared, kNewObject);
  t_.SetRecoveryBlocked(true, now_, &out_);
  out_.clear();
  early.state = S::kShared;
  ASSERT_TRUE(t_.LockModuleReply(kFlock, early, now_, &out_).ok());
  EXPECT_EQ(Effects(), "");
  t_.SetRecoveryBlocked(false, now_, &out_);
  Reply(kFlock, S::kShared);
  EXPECT_TRUE(Granted(f));
  Rel(f);
}

TEST_F(GlockTest, ProvisionalGrantNotConfirmedKeepsHoldersAndFailsWaiters) {
  HolderId h1 = Acq(kFlock, S::kExclusive, kNewObject);
  out_.clear();
  LmReply early;
  early.state = S::kExclusive;
  early.provisional = true;
  ASSERT_TRUE(t_.LockModuleReply(kFlock, early, now_, &out_).ok());
  EXPECT_TRUE(Granted(h1));
  HolderId h2 = Acq(kFlock, S::kExclusive);
  HolderId h3 = Acq(kFlock, S::kExclusive);
  // Withdrawing a waiter does not cancel the request: the creator runs under it.
  out_.clear();
  ASSERT_TRUE(t_.Cancel(h3, now_, &out_).ok());
  Check();
  EXPECT_NE(Failed(h3), nullptr);
  EXPECT_EQ(Effects().find("CancelRequest"), std::string::npos) << Effects();
  out_.clear();
  LmReply fenced;
  fenced.state = S::kUnlocked;
  fenced.error = Status::Fenced("test");
  ASSERT_TRUE(t_.LockModuleReply(kFlock, fenced, now_, &out_).ok());
  Check();
  ASSERT_NE(Failed(h2), nullptr);
  EXPECT_EQ(Failed(h2)->status.code(), Code::kFenced);
  EXPECT_TRUE(t_.ProvisionalConfirmed(1));
  EXPECT_EQ(StateOf(kFlock), S::kExclusive);  // h1 still holds it
  Rel(h1);
}

TEST_F(GlockTest, NoCacheDropsTheStateOnRelease) {
  HolderId a = Acq(kInode, S::kExclusive, kNoCache);
  Reply(kInode, S::kExclusive);
  EXPECT_EQ(Effects(), "Refresh 2/1b3a");
  RefreshDone(kInode);
  ASSERT_TRUE(Granted(a));
  Rel(a);
  EXPECT_EQ(Effects(), "Prepare 2/1b3a");  // the release's demote, like any other, prepares
  PrepDone(kInode);
  EXPECT_EQ(Effects(), "Sync 2/1b3a");
  SyncDone(kInode);
  EXPECT_EQ(Effects(), "Request 2/1b3a EX->UN");
  Reply(kInode, S::kUnlocked);
  EXPECT_EQ(Effects(), "Invalidate 2/1b3a");
  InvalDone(kInode);
  EXPECT_EQ(Effects(), "Thaw 2/1b3a");
  EXPECT_FALSE(t_.Info(kInode).has_value());
}

TEST_F(GlockTest, WithoutNoCacheTheStateStaysCached) {
  Cache(kFlock, S::kExclusive);
  auto i = t_.Info(kFlock);
  ASSERT_TRUE(i.has_value());
  EXPECT_EQ(i->state, S::kExclusive);
  EXPECT_TRUE(i->on_lru);
  EXPECT_EQ(t_.lru_size(), 1u);
}

TEST_F(GlockTest, DemoteWithoutHoldersRunsAtOnce) {
  HolderId a = Acq(kInode, S::kExclusive);
  Reply(kInode, S::kExclusive);
  RefreshDone(kInode);
  Rel(a);
  now_ += 1 * kMs;  // well within the hold time: it only protects holders
  Demote(kInode, S::kUnlocked);
  EXPECT_EQ(Effects(), "Prepare 2/1b3a");
  PrepDone(kInode);
  EXPECT_EQ(Effects(), "Sync 2/1b3a");
}

TEST_F(GlockTest, DemoteWaitsForHolders) {
  HolderId a = Acq(kRgrp, S::kExclusive);
  Reply(kRgrp, S::kExclusive);
  RefreshDone(kRgrp);
  ASSERT_TRUE(Granted(a));
  Demote(kRgrp, S::kUnlocked);  // rgrp: no hold time, but a holder
  EXPECT_EQ(Effects(), "");
  auto i = t_.Info(kRgrp);
  ASSERT_TRUE(i && i->demote && !i->demote_delayed);
  HolderId b = Acq(kRgrp, S::kShared);  // an active demote admits nobody new
  EXPECT_EQ(Effects(), "");
  Rel(a);
  EXPECT_EQ(Effects(), "Sync 3/11221");
  SyncDone(kRgrp);
  EXPECT_EQ(Effects(), "Request 3/11221 EX->UN");
  Reply(kRgrp, S::kUnlocked);
  EXPECT_EQ(Effects(), "Invalidate 3/11221");
  InvalDone(kRgrp);
  EXPECT_EQ(Effects(), "Request 3/11221 UN->SH");  // then b asks again
  Reply(kRgrp, S::kShared);
  EXPECT_EQ(Effects(), "Refresh 3/11221");
  RefreshDone(kRgrp);
  EXPECT_TRUE(Granted(b));
}

TEST_F(GlockTest, DemoteWaitsForTheMinimumHoldTime) {
  const Time t0 = now_;
  HolderId a = Acq(kInode, S::kExclusive);
  Reply(kInode, S::kExclusive);  // state change at t0
  RefreshDone(kInode);
  ASSERT_TRUE(Granted(a));
  now_ = t0 + 50 * kMs;
  Demote(kInode, S::kUnlocked);
  EXPECT_EQ(Effects(), "");
  EXPECT_TRUE(t_.Info(kInode)->demote_delayed);
  EXPECT_EQ(t_.NextDeadline(), t0 + 200 * kMs);
  now_ = t0 + 60 * kMs;
  Rel(a);
  EXPECT_EQ(Effects(), "");  // no holder, but the hold time is not over
  now_ = t0 + 70 * kMs;
  HolderId b = Acq(kInode, S::kExclusive);  // within the hold time local users go on
  EXPECT_TRUE(Granted(b));
  Rel(b);
  now_ = t0 + 199 * kMs;
  Tick();
  EXPECT_EQ(Effects(), "");
  now_ = t0 + 200 * kMs;
  Tick();
  EXPECT_EQ(Effects(), "Prepare 2/1b3a");  // a delayed demote prepares only once it is due
  EXPECT_FALSE(t_.NextDeadline().has_value());
  PrepDone(kInode);
  EXPECT_EQ(Effects(), "Sync 2/1b3a");
}

TEST_F(GlockTest, DemoteToSharedKeepsTheCache) {
  HolderId a = Acq(kInode, S::kExclusive);
  Reply(kInode, S::kExclusive);
  RefreshDone(kInode);
  Rel(a);
  Demote(kInode, S::kShared);
  EXPECT_EQ(Effects(), "Prepare 2/1b3a");  // EX->SH too: dirty pages above must go first
  PrepDone(kInode);
  EXPECT_EQ(Effects(), "Sync 2/1b3a");
  SyncDone(kInode);
  EXPECT_EQ(Effects(), "Request 2/1b3a EX->SH");
  Reply(kInode, S::kShared);
  EXPECT_EQ(Effects(), "Thaw 2/1b3a");  // no invalidate: SH keeps what EX had
  HolderId b = Acq(kInode, S::kShared);
  EXPECT_EQ(Effects(), "Grant 2/1b3a h" + std::to_string(b));  // and no refresh
}

TEST_F(GlockTest, DemoteRequestsMerge) {
  HolderId a = Acq(kFlock, S::kExclusive);
  Reply(kFlock, S::kExclusive);
  Demote(kFlock, S::kShared);
  Demote(kFlock, S::kDeferred);  // SH and DF together: only UN satisfies both
  EXPECT_EQ(t_.Info(kFlock)->demote, S::kUnlocked);
  Rel(a);
  EXPECT_EQ(Effects(), "Request 6/42 EX->UN");
  EXPECT_EQ(t_.DemoteRequest(kFlock, S::kExclusive, now_, &out_).code(), Code::kInvalid);
  EXPECT_TRUE(t_.DemoteRequest(kFlock2, S::kUnlocked, now_, &out_).ok());  // unknown: no-op
}

TEST_F(GlockTest, DemoteDuringAPromoteWaitsForTheReply) {
  HolderId a = Acq(kFlock, S::kExclusive);
  Demote(kFlock, S::kUnlocked);  // the callback overtook our reply
  EXPECT_EQ(Effects(), "");
  Reply(kFlock, S::kExclusive);
  EXPECT_EQ(Effects(), "Grant 6/42 h" + std::to_string(a));  // waiters first
  Rel(a);
  EXPECT_EQ(Effects(), "Request 6/42 EX->UN");
  Reply(kFlock, S::kUnlocked);
  EXPECT_FALSE(t_.Info(kFlock).has_value());
}

TEST_F(GlockTest, DemoteToUnArrivingDuringDemoteToSharedGoesOn) {
  Cache(kFlock, S::kExclusive);
  Demote(kFlock, S::kShared);
  EXPECT_EQ(Effects(), "Request 6/42 EX->SH");
  Demote(kFlock, S::kUnlocked);
  EXPECT_EQ(Effects(), "");
  Reply(kFlock, S::kShared);
  EXPECT_EQ(Effects(), "Request 6/42 SH->UN");
}

// --- LRU ------------------------------------------------------------------------------------

TEST_F(GlockTest, LruDemotesTheLeastRecentlyUsedFirst) {
  Cache(kFlock, S::kShared);
  now_ += kMs;
  Cache(kFlock2, S::kShared);
  now_ += kMs;
  Cache(kFlock3, S::kExclusive);
  EXPECT_EQ(t_.lru_size(), 3u);
  HolderId a = Acq(kFlock, S::kShared);  // used again: now the most recent
  Rel(a);
  out_.clear();
  EXPECT_EQ(t_.ShrinkLru(1, now_, &out_), 1u);
  EXPECT_EQ(Effects(), "Request 6/43 SH->UN");
  Reply(kFlock2, S::kUnlocked);
  EXPECT_FALSE(t_.Info(kFlock2).has_value());
  out_.clear();
  EXPECT_EQ(t_.ShrinkLru(5, now_, &out_), 2u);
  EXPECT_EQ(Effects(), "Request 6/44 EX->UN; Request 6/42 SH->UN");
  EXPECT_EQ(t_.lru_size(), 0u);
}

TEST_F(GlockTest, LruSkipsGlocksInUse) {
  HolderId a = Acq(kFlock, S::kShared);
  Reply(kFlock, S::kShared);
  ASSERT_TRUE(Granted(a));
  EXPECT_EQ(t_.lru_size(), 0u);
  out_.clear();
  EXPECT_EQ(t_.ShrinkLru(5, now_, &out_), 0u);
  EXPECT_EQ(Effects(), "");
}

// --- One transition in flight -----------------------------------------------------------------

TEST_F(GlockTest, OneTransitionInFlight) {
  HolderId a = Acq(kFlock, S::kShared);
  EXPECT_EQ(Effects(), "Request 6/42 UN->SH");
  HolderId b = Acq(kFlock, S::kExclusive);
  EXPECT_EQ(Effects(), "");
  Demote(kFlock, S::kUnlocked);
  EXPECT_EQ(Effects(), "");
  EXPECT_EQ(t_.Info(kFlock)->phase, Phase::kRequest);
  EXPECT_FALSE(t_.LockModuleReply(kFlock2, LmReply{}, now_, &out_).ok());  // nothing in flight
  Reply(kFlock, S::kShared);
  EXPECT_EQ(Effects(), "Grant 6/42 h" + std::to_string(a));
  Rel(a);
  // The demote is due (no hold time for flock): it goes first, then b's promote.
  EXPECT_EQ(Effects(), "Request 6/42 SH->UN");
  Reply(kFlock, S::kUnlocked);
  EXPECT_EQ(Effects(), "Request 6/42 UN->EX");
  Reply(kFlock, S::kExclusive);
  EXPECT_EQ(Effects(), "Grant 6/42 h" + std::to_string(b));
}

TEST_F(GlockTest, RefusedConversionUnlocksAndRetries) {
  Cache(kFlock, S::kShared);
  HolderId a = Acq(kFlock, S::kExclusive);
  EXPECT_EQ(Effects(), "Request 6/42 SH->EX");
  Reply(kFlock, S::kShared);  // conversion deadlock: refused
  EXPECT_EQ(Effects(), "Request 6/42 SH->UN");
  Reply(kFlock, S::kUnlocked);
  EXPECT_EQ(Effects(), "Request 6/42 UN->EX");
  Reply(kFlock, S::kExclusive);
  EXPECT_TRUE(Granted(a));
}

TEST_F(GlockTest, LockModuleErrorFailsWaiters) {
  HolderId a = Acq(kFlock, S::kShared);
  HolderId b = Acq(kFlock, S::kShared);
  out_.clear();
  LmReply r;
  r.state = S::kUnlocked;
  r.error = Status::IoError("lock manager gone");
  ASSERT_TRUE(t_.LockModuleReply(kFlock, r, now_, &out_).ok());
  ASSERT_NE(Failed(a), nullptr);
  ASSERT_NE(Failed(b), nullptr);
  EXPECT_EQ(Failed(b)->status.code(), Code::kIoError);
  EXPECT_EQ(t_.holder_count(), 0u);
}

// --- Hooks ----------------------------------------------------------------------------------

TEST_F(GlockTest, HookOrdering) {
  HolderId a = Acq(kInode, S::kExclusive);
  EXPECT_EQ(Effects(), "Request 2/1b3a UN->EX");
  Reply(kInode, S::kExclusive);
  EXPECT_EQ(Effects(), "Refresh 2/1b3a");  // refresh after acquiring, before the grant
  RefreshDone(kInode);
  EXPECT_EQ(Effects(), "Grant 2/1b3a h" + std::to_string(a));
  Rel(a);
  Demote(kInode, S::kUnlocked);
  EXPECT_EQ(Effects(), "Prepare 2/1b3a");  // prepare before anything is given up
  EXPECT_EQ(t_.Info(kInode)->phase, Phase::kIdle);
  PrepDone(kInode);
  EXPECT_EQ(Effects(), "Sync 2/1b3a");  // sync before the demote request
  EXPECT_EQ(t_.Info(kInode)->phase, Phase::kSync);
  SyncDone(kInode);
  EXPECT_EQ(Effects(), "Request 2/1b3a EX->UN");
  Reply(kInode, S::kUnlocked);
  EXPECT_EQ(Effects(), "Invalidate 2/1b3a");  // invalidate after giving EX up
  HolderId b = Acq(kInode, S::kShared);
  EXPECT_EQ(Effects(), "");  // waits: the transition is not over before the invalidate is
  InvalDone(kInode);
  EXPECT_EQ(Effects(), "Thaw 2/1b3a; Request 2/1b3a UN->SH");  // the demote is over: thaw
  Reply(kInode, S::kShared);
  EXPECT_EQ(Effects(), "Refresh 2/1b3a");
  RefreshDone(kInode);
  EXPECT_EQ(Effects(), "Grant 2/1b3a h" + std::to_string(b));
  Rel(b);
  Demote(kInode, S::kUnlocked);
  EXPECT_EQ(Effects(), "Prepare 2/1b3a");
  PrepDone(kInode);
  // Nothing to write back from SH, but an inode syncs on every demote: the hook drops what the
  // kernel caches of the inode's attributes once no new holder can be admitted.
  EXPECT_EQ(Effects(), "Sync 2/1b3a");
  EXPECT_EQ(t_.Info(kInode)->phase, Phase::kSync);
  SyncDone(kInode);
  EXPECT_EQ(Effects(), "Request 2/1b3a SH->UN");
  Reply(kInode, S::kUnlocked);
  EXPECT_EQ(Effects(), "Invalidate 2/1b3a");
  InvalDone(kInode);
  EXPECT_EQ(Effects(), "Thaw 2/1b3a");
}

TEST_F(GlockTest, SkipGrantsWithoutRefresh) {
  HolderId a = Acq(kInode, S::kExclusive, kSkip);
  Reply(kInode, S::kExclusive);
  EXPECT_EQ(Effects(), "Grant 2/1b3a h" + std::to_string(a));
  EXPECT_TRUE(t_.Info(kInode)->needs_refresh);
}

TEST_F(GlockTest, FailedRefreshFailsItsHolder) {
  HolderId a = Acq(kInode, S::kShared);
  HolderId b = Acq(kInode, S::kShared);
  Reply(kInode, S::kShared);
  EXPECT_EQ(Effects(), "Refresh 2/1b3a");
  RefreshDone(kInode, Status::Corrupt("bad dinode"));
  ASSERT_NE(Failed(a), nullptr) << Effects();
  EXPECT_EQ(Failed(a)->status.code(), Code::kCorrupt);
  EXPECT_EQ(Effects().find("Refresh 2/1b3a") != std::string::npos, true);  // b tries again
  RefreshDone(kInode);
  EXPECT_TRUE(Granted(b));
}

TEST_F(GlockTest, FailedSyncKeepsTheLockAndRetries) {
  HolderId a = Acq(kInode, S::kExclusive);
  Reply(kInode, S::kExclusive);
  RefreshDone(kInode);
  Rel(a);
  Demote(kInode, S::kUnlocked);
  EXPECT_EQ(Effects(), "Prepare 2/1b3a");
  PrepDone(kInode);
  EXPECT_EQ(Effects(), "Sync 2/1b3a");
  SyncDone(kInode, Status::IoError("write failed"));
  EXPECT_EQ(Effects(), "");  // never give the lock up over unwritten data
  EXPECT_EQ(StateOf(kInode), S::kExclusive);
  EXPECT_TRUE(t_.Info(kInode)->prepared);  // the retry continues the same demote
  EXPECT_EQ(t_.NextDeadline(), now_ + 100 * kMs);
  now_ += 100 * kMs;
  Tick();
  EXPECT_EQ(Effects(), "Sync 2/1b3a");  // no second prepare
  SyncDone(kInode);
  EXPECT_EQ(Effects(), "Request 2/1b3a EX->UN");
  Reply(kInode, S::kUnlocked);
  InvalDone(kInode);
  EXPECT_EQ(Effects(), "Thaw 2/1b3a");
}

TEST_F(GlockTest, NoHooksForOtherTypes) {
  Cache(kFlock, S::kExclusive);
  Demote(kFlock, S::kUnlocked);
  EXPECT_EQ(Effects(), "Request 6/42 EX->UN");
  Reply(kFlock, S::kUnlocked);
  EXPECT_EQ(Effects(), "");
}

TEST_F(GlockTest, HookCompletionsOutOfPhaseAreRefused) {
  EXPECT_FALSE(t_.SyncDone(kInode, Status::Ok(), now_, &out_).ok());
  EXPECT_FALSE(t_.InvalidateDone(kInode, now_, &out_).ok());
  EXPECT_FALSE(t_.RefreshDone(kInode, Status::Ok(), now_, &out_).ok());
  EXPECT_EQ(t_.PrepareDone(kInode, now_, &out_).code(), Code::kInvalid);
  HolderId a = Acq(kInode, S::kShared);
  Reply(kInode, S::kShared);
  RefreshDone(kInode);
  ASSERT_TRUE(Granted(a));
  EXPECT_EQ(t_.PrepareDone(kInode, now_, &out_).code(), Code::kInvalid);  // none in flight
  now_ += 300 * kMs;
  Demote(kInode, S::kUnlocked);
  EXPECT_EQ(Effects(), "Prepare 2/1b3a");
  PrepDone(kInode);
  EXPECT_EQ(t_.PrepareDone(kInode, now_, &out_).code(), Code::kInvalid);  // answered already
}

// --- Prepare (kInode: revoke the caches above before a demote) ----------------------------

TEST_F(GlockTest, PrepareAdmitsHoldersUntilDone) {
  HolderId a = Acq(kInode, S::kShared);
  Reply(kInode, S::kShared);
  RefreshDone(kInode);
  ASSERT_TRUE(Granted(a));
  now_ += 300 * kMs;  // past the hold time: the demote is due at once
  Demote(kInode, S::kUnlocked);
  EXPECT_EQ(Effects(), "Prepare 2/1b3a");
  EXPECT_TRUE(t_.Info(kInode)->preparing);
  EXPECT_NE(t_.Dump().find("f:Dvq"), std::string::npos) << t_.Dump();
  // The revoke's own reads need the glock: a compatible newcomer is still granted.
  HolderId b = Acq(kInode, S::kShared);
  EXPECT_EQ(Effects(), "Grant 2/1b3a h" + std::to_string(b));
  PrepDone(kInode);
  EXPECT_EQ(Effects(), "");  // a and b are still granted
  auto i = t_.Info(kInode);
  EXPECT_TRUE(i->prepared && !i->preparing);
  EXPECT_NE(t_.Dump().find("f:DVq"), std::string::npos) << t_.Dump();
  // From now on the demote is active: the next holder waits.
  HolderId c = Acq(kInode, S::kShared);
  EXPECT_EQ(Effects(), "");
  Rel(a);
  EXPECT_EQ(Effects(), "");
  Rel(b);
  EXPECT_EQ(Effects(), "Sync 2/1b3a");
  SyncDone(kInode);
  EXPECT_EQ(Effects(), "Request 2/1b3a SH->UN");
  Reply(kInode, S::kUnlocked);
  EXPECT_EQ(Effects(), "Invalidate 2/1b3a");
  EXPECT_TRUE(t_.Info(kInode)->prepared);  // until the transition is over
  InvalDone(kInode);
  EXPECT_EQ(Effects(), "Thaw 2/1b3a; Request 2/1b3a UN->SH");  // then c asks again
  Reply(kInode, S::kShared);
  RefreshDone(kInode);
  EXPECT_TRUE(Granted(c));
}

// Rule: no transition starts while preparing. A waiter that needs a promotion (here EX under a
// cached SH) does not start it during the prepare: a promotion in flight admits no holder, while
// the revoke waits for holders (READs of the folios it drops), and the promotion may wait for
// another node whose own revoke waits the same way. It waits until the demote is over and is
// then served first, from the new state, before the waiters that came after it.
TEST_F(GlockTest, PrepareMakesAPromotionWaitForTheDemote) {
  CacheInode(S::kShared);
  Demote(kInode, S::kUnlocked);
  EXPECT_EQ(Effects(), "Prepare 2/1b3a");
  HolderId a = Acq(kInode, S::kExclusive);
  EXPECT_EQ(Effects(), "");  // not "Request 2/1b3a SH->EX"
  PrepDone(kInode);
  EXPECT_EQ(Effects(), "Sync 2/1b3a");   // nobody holds the glock: the demote runs at once
  HolderId c = Acq(kInode, S::kShared);  // behind a
  EXPECT_EQ(Effects(), "");
  SyncDone(kInode);
  EXPECT_EQ(Effects(), "Request 2/1b3a SH->UN");
  Reply(kInode, S::kUnlocked);
  EXPECT_EQ(Effects(), "Invalidate 2/1b3a");
  InvalDone(kInode);
  EXPECT_EQ(Effects(), "Thaw 2/1b3a; Request 2/1b3a UN->EX");  // a first, promoted from UN
  Reply(kInode, S::kExclusive);
  EXPECT_EQ(Effects(), "Refresh 2/1b3a");
  RefreshDone(kInode);
  EXPECT_EQ(Effects(), "Grant 2/1b3a h" + std::to_string(a));
  Rel(a);
  EXPECT_EQ(Effects(), "Grant 2/1b3a h" + std::to_string(c));  // SH under the cached EX
}

// Rule: while preparing no transition starts (no request is emitted until PrepareDone), but the
// holders the revoke needs are still served: a waiter that fits the cached state is granted past
// the one that needs a promotion, and a try lock that cannot be granted fails at once instead of
// waiting for the demote. After the demote the waiter is promoted from UN.
TEST_F(GlockTest, NoTransitionStartsWhilePreparing) {
  CacheInode(S::kShared);
  now_ += 300 * kMs;
  Demote(kInode, S::kUnlocked);  // due at once
  EXPECT_EQ(Effects(), "Prepare 2/1b3a");
  const size_t mark = history_.size();
  HolderId w = Acq(kInode, S::kExclusive);
  EXPECT_EQ(Effects(), "");
  HolderId b = Acq(kInode, S::kShared);  // e.g. a READ the revoke waits for
  EXPECT_EQ(Effects(), "Grant 2/1b3a h" + std::to_string(b));
  HolderId t = Acq(kInode, S::kExclusive, kTry);
  ASSERT_NE(Failed(t), nullptr) << Effects();
  EXPECT_EQ(Failed(t)->status.code(), Code::kLockConflict);
  Rel(b);
  EXPECT_EQ(Effects(), "");  // nobody holds the glock, and still no SH->EX for w
  HolderId t2 = Acq(kInode, S::kExclusive, kTry);  // nothing granted, behind w
  ASSERT_NE(Failed(t2), nullptr) << Effects();
  EXPECT_EQ(Failed(t2)->status.code(), Code::kLockConflict);
  auto i = t_.Info(kInode);
  EXPECT_TRUE(i->preparing);
  EXPECT_EQ(i->phase, Phase::kIdle);
  EXPECT_EQ(i->state, S::kShared);
  EXPECT_EQ(i->waiting, 1u);  // only w
  EXPECT_EQ(history_.find("Request", mark), std::string::npos) << history_.substr(mark);
  PrepDone(kInode);
  EXPECT_EQ(Effects(), "Sync 2/1b3a");
  SyncDone(kInode);
  EXPECT_EQ(Effects(), "Request 2/1b3a SH->UN");
  Reply(kInode, S::kUnlocked);
  EXPECT_EQ(Effects(), "Invalidate 2/1b3a");
  InvalDone(kInode);
  EXPECT_EQ(Effects(), "Thaw 2/1b3a; Request 2/1b3a UN->EX");
  Reply(kInode, S::kExclusive);
  EXPECT_EQ(Effects(), "Refresh 2/1b3a");
  RefreshDone(kInode);
  EXPECT_EQ(Effects(), "Grant 2/1b3a h" + std::to_string(w));
}

// A prepare begins only on an idle glock: a demote that arrives while a promotion is in flight
// waits for its end, the promotion's waiters are granted first, and then the demote is
// prepared. Since no transition starts while preparing either, a promotion never ends while
// the glock prepares or is prepared.
TEST_F(GlockTest, PrepareWaitsForAPromotionInFlight) {
  CacheInode(S::kShared);
  now_ += 300 * kMs;  // past the hold time
  HolderId a = Acq(kInode, S::kExclusive);
  EXPECT_EQ(Effects(), "Request 2/1b3a SH->EX");
  Demote(kInode, S::kUnlocked);  // the callback overtook the reply
  EXPECT_EQ(Effects(), "");
  EXPECT_FALSE(t_.Info(kInode)->preparing);
  Reply(kInode, S::kExclusive);
  EXPECT_EQ(Effects(), "Grant 2/1b3a h" + std::to_string(a) + "; Prepare 2/1b3a");
  PrepDone(kInode);
  EXPECT_EQ(Effects(), "");  // a still holds EX
  Rel(a);
  EXPECT_EQ(Effects(), "Sync 2/1b3a");
  SyncDone(kInode);
  EXPECT_EQ(Effects(), "Request 2/1b3a EX->UN");
  Reply(kInode, S::kUnlocked);
  InvalDone(kInode);
  EXPECT_EQ(Effects(), "Thaw 2/1b3a");
  EXPECT_FALSE(t_.Info(kInode).has_value());
}

TEST_F(GlockTest, RefusedConversionOfAnInodeUnlocksThroughPrepare) {
  CacheInode(S::kShared);
  HolderId a = Acq(kInode, S::kExclusive);
  EXPECT_EQ(Effects(), "Request 2/1b3a SH->EX");
  Reply(kInode, S::kShared);               // conversion deadlock: refused
  EXPECT_EQ(Effects(), "Prepare 2/1b3a");  // not straight to SH->UN, and not SH->EX again
  EXPECT_EQ(t_.Info(kInode)->demote, S::kUnlocked);
  // a waits for UN; while preparing, a compatible newcomer is granted past it (the revoke's
  // own reads must not queue behind a), and nothing new is asked of the lock module.
  HolderId b = Acq(kInode, S::kShared);
  EXPECT_EQ(Effects(), "Grant 2/1b3a h" + std::to_string(b));
  PrepDone(kInode);
  EXPECT_EQ(Effects(), "");  // the demote is active, but b still holds SH
  HolderId c = Acq(kInode, S::kShared);
  EXPECT_EQ(Effects(), "");  // no grants while prepared
  Rel(b);
  EXPECT_EQ(Effects(), "Sync 2/1b3a");
  SyncDone(kInode);
  EXPECT_EQ(Effects(), "Request 2/1b3a SH->UN");
  Reply(kInode, S::kUnlocked);
  EXPECT_EQ(Effects(), "Invalidate 2/1b3a");
  InvalDone(kInode);
  EXPECT_EQ(Effects(), "Thaw 2/1b3a; Request 2/1b3a UN->EX");  // a first, promoted from UN
  Reply(kInode, S::kExclusive);
  EXPECT_EQ(Effects(), "Refresh 2/1b3a");
  RefreshDone(kInode);
  EXPECT_EQ(Effects(), "Grant 2/1b3a h" + std::to_string(a));
  Rel(a);
  EXPECT_TRUE(Granted(c));
}

// Rule: while preparing, a waiter that cannot be granted (here an EX waiter that needs a
// promotion, behind a granted SH holder) does not block the queue; a compatible holder behind it
// is granted. Once the prepare is done the demote runs as soon as the holders are gone, and the
// skipped waiter is served first afterwards.
TEST_F(GlockTest, PrepareGrantsPastAWaiterThatNeedsAPromotion) {
  HolderId a = Acq(kInode, S::kShared);
  Reply(kInode, S::kShared);
  RefreshDone(kInode);
  ASSERT_TRUE(Granted(a));
  HolderId w = Acq(kInode, S::kExclusive);  // waits for a (FIFO, then SH->EX)
  EXPECT_EQ(Effects(), "");
  now_ += 300 * kMs;
  Demote(kInode, S::kUnlocked);
  EXPECT_EQ(Effects(), "Prepare 2/1b3a");
  HolderId b = Acq(kInode, S::kShared);  // e.g. a READ the revoke waits for
  EXPECT_EQ(Effects(), "Grant 2/1b3a h" + std::to_string(b));
  auto i = t_.Info(kInode);
  EXPECT_EQ(i->granted, 2u);
  EXPECT_EQ(i->waiting, 1u);
  Rel(a);
  EXPECT_EQ(Effects(), "");  // b still holds SH: no transition while a holder is granted
  PrepDone(kInode);
  EXPECT_EQ(Effects(), "");  // the demote is active and waits for b
  HolderId c = Acq(kInode, S::kShared);
  EXPECT_EQ(Effects(), "");  // no grants while prepared
  Rel(b);
  EXPECT_EQ(Effects(), "Sync 2/1b3a");
  SyncDone(kInode);
  EXPECT_EQ(Effects(), "Request 2/1b3a SH->UN");
  Reply(kInode, S::kUnlocked);
  EXPECT_EQ(Effects(), "Invalidate 2/1b3a");
  InvalDone(kInode);
  EXPECT_EQ(Effects(), "Thaw 2/1b3a; Request 2/1b3a UN->EX");  // the skipped waiter first
  Reply(kInode, S::kExclusive);
  EXPECT_EQ(Effects(), "Refresh 2/1b3a");
  RefreshDone(kInode);
  EXPECT_EQ(Effects(), "Grant 2/1b3a h" + std::to_string(w));
  Rel(w);
  EXPECT_EQ(Effects(), "Grant 2/1b3a h" + std::to_string(c));  // SH under the cached EX
}

// While preparing, a cached EX serves a holder behind a waiter that needs a lower state (kExact
// SH): that waiter turned the move into a demote, and it does not block the queue either. The
// holders granted past it still exclude each other.
TEST_F(GlockTest, PrepareGrantsPastAWaiterBelowTheCachedStateOneAtATime) {
  CacheInode(S::kExclusive);
  HolderId w = Acq(kInode, S::kShared, kExact);
  EXPECT_EQ(Effects(), "Prepare 2/1b3a");
  HolderId a = Acq(kInode, S::kExclusive);  // e.g. a launder WRITE the revoke waits for
  EXPECT_EQ(Effects(), "Grant 2/1b3a h" + std::to_string(a));
  HolderId b = Acq(kInode, S::kExclusive);
  EXPECT_EQ(Effects(), "");  // EX excludes EX, past a skipped waiter or not
  PrepDone(kInode);
  EXPECT_EQ(Effects(), "");
  Rel(a);
  EXPECT_EQ(Effects(), "Sync 2/1b3a");
  SyncDone(kInode);
  EXPECT_EQ(Effects(), "Request 2/1b3a EX->SH");
  Reply(kInode, S::kShared);
  EXPECT_EQ(Effects(), "Thaw 2/1b3a; Grant 2/1b3a h" + std::to_string(w));
  EXPECT_FALSE(Granted(b));
  Rel(w);
  EXPECT_EQ(Effects(), "Request 2/1b3a SH->EX");
  Reply(kInode, S::kExclusive);
  EXPECT_TRUE(Granted(b));
}

// Rule: skipping a waiter while preparing is for holders that wait; a try lock that cannot be
// granted still fails at once, whether it would queue behind a granted holder or a waiter.
// Rule: skipping a waiter while preparing is for holders that wait; a try lock that cannot be
// granted fails at once, whether it would queue behind a granted holder or a waiter, or be the
// head waiter itself (its promotion would not start before the demote is over). A try lock that
// fits is granted.
TEST_F(GlockTest, PrepareFailsTryLocksThatCannotBeGranted) {
  HolderId a = Acq(kInode, S::kShared);
  Reply(kInode, S::kShared);
  RefreshDone(kInode);
  ASSERT_TRUE(Granted(a));
  now_ += 300 * kMs;
  Demote(kInode, S::kUnlocked);
  EXPECT_EQ(Effects(), "Prepare 2/1b3a");
  HolderId t = Acq(kInode, S::kExclusive, kTry);  // behind the granted SH
  ASSERT_NE(Failed(t), nullptr) << Effects();
  EXPECT_EQ(Failed(t)->status.code(), Code::kLockConflict);
  Rel(a);
  EXPECT_EQ(Effects(), "");
  HolderId t1 = Acq(kInode, S::kExclusive, kTry);  // the head: not "Request SH->EX f:t"
  ASSERT_NE(Failed(t1), nullptr) << Effects();
  EXPECT_EQ(Failed(t1)->status.code(), Code::kLockConflict);
  HolderId w = Acq(kInode, S::kExclusive);  // a blocking waiter stays queued
  EXPECT_EQ(Effects(), "");
  HolderId t2 = Acq(kInode, S::kExclusive, kTry1Cb);  // behind it, and it cannot be granted
  ASSERT_NE(Failed(t2), nullptr) << Effects();
  EXPECT_EQ(Failed(t2)->status.code(), Code::kLockConflict);
  EXPECT_EQ(t_.Info(kInode)->waiting, 1u);     // only w
  HolderId b = Acq(kInode, S::kShared, kTry);  // fits the cached SH: granted past w
  EXPECT_EQ(Effects(), "Grant 2/1b3a h" + std::to_string(b));
  Rel(b);
  EXPECT_EQ(Effects(), "");
  PrepDone(kInode);
  EXPECT_EQ(Effects(), "Sync 2/1b3a");
  SyncDone(kInode);
  EXPECT_EQ(Effects(), "Request 2/1b3a SH->UN");
  Reply(kInode, S::kUnlocked);
  InvalDone(kInode);
  EXPECT_EQ(Effects(), "Thaw 2/1b3a; Request 2/1b3a UN->EX");  // w, as a blocking request
  Reply(kInode, S::kExclusive);
  RefreshDone(kInode);
  EXPECT_TRUE(Granted(w));
}

// Rule: an inode glock syncs before every demote request from a held state, SH->UN included
// (the engine's hook drops the kernel's cached attributes there); an rgrp glock syncs only when
// leaving EX or DF.
TEST_F(GlockTest, InodeSyncsOnEveryDemoteRgrpOnlyWhenLeavingAWriterState) {
  CacheInode(S::kShared);
  Demote(kInode, S::kUnlocked);
  EXPECT_EQ(Effects(), "Prepare 2/1b3a");
  PrepDone(kInode);
  EXPECT_EQ(Effects(), "Sync 2/1b3a");  // before the request
  EXPECT_EQ(t_.Info(kInode)->phase, Phase::kSync);
  SyncDone(kInode);
  EXPECT_EQ(Effects(), "Request 2/1b3a SH->UN");
  Reply(kInode, S::kUnlocked);
  InvalDone(kInode);
  EXPECT_EQ(Effects(), "Thaw 2/1b3a");

  HolderId a = Acq(kRgrp, S::kShared);
  Reply(kRgrp, S::kShared);
  RefreshDone(kRgrp);
  ASSERT_TRUE(Granted(a));
  Rel(a);
  Demote(kRgrp, S::kUnlocked);
  EXPECT_EQ(Effects(), "Request 3/11221 SH->UN");  // no sync from SH
  Reply(kRgrp, S::kUnlocked);
  EXPECT_EQ(Effects(), "Invalidate 3/11221");
  InvalDone(kRgrp);
  EXPECT_FALSE(t_.Info(kRgrp).has_value());
  EXPECT_EQ(history_.find("Sync 3/11221"), std::string::npos) << history_;
}

TEST_F(GlockTest, WaiterBelowTheCachedStateIsPrepared) {
  CacheInode(S::kExclusive);
  HolderId a = Acq(kInode, S::kShared, kExact);  // EX->SH is a demote for the caches above
  EXPECT_EQ(Effects(), "Prepare 2/1b3a");
  EXPECT_EQ(t_.Info(kInode)->demote, S::kShared);
  PrepDone(kInode);
  EXPECT_EQ(Effects(), "Sync 2/1b3a");
  SyncDone(kInode);
  EXPECT_EQ(Effects(), "Request 2/1b3a EX->SH");
  Reply(kInode, S::kShared);
  EXPECT_EQ(Effects(), "Thaw 2/1b3a; Grant 2/1b3a h" + std::to_string(a));
}

// A demote is no longer satisfied while preparing or prepared (other than by its own
// transition): nothing else moves the glock meanwhile. Here a waiter whose promotion (DF->SH)
// would satisfy a remote demote to SH does not start it during the prepare; the demote itself
// moves the glock to SH, its end thaws, and the waiter is granted in the new state.
TEST_F(GlockTest, PromotionThatWouldSatisfyAPreparedDemoteWaitsForIt) {
  CacheInode(S::kDeferred);
  Demote(kInode, S::kShared);  // DF does not go with a remote SH
  EXPECT_EQ(Effects(), "Prepare 2/1b3a");
  HolderId a = Acq(kInode, S::kShared);
  EXPECT_EQ(Effects(), "");  // not "Sync 2/1b3a" for a DF->SH promotion
  EXPECT_EQ(t_.Info(kInode)->demote, S::kShared);
  PrepDone(kInode);
  EXPECT_EQ(Effects(), "Sync 2/1b3a");  // the demote's, leaving DF
  EXPECT_TRUE(t_.Info(kInode)->demote_in_progress);
  SyncDone(kInode);
  EXPECT_EQ(Effects(), "Request 2/1b3a DF->SH");
  Reply(kInode, S::kShared);
  EXPECT_EQ(Effects(), "Thaw 2/1b3a; Grant 2/1b3a h" + std::to_string(a));
  EXPECT_FALSE(t_.Info(kInode)->demote.has_value());
}

TEST_F(GlockTest, RefusedDemoteThawsAndPreparesAgain) {
  CacheInode(S::kShared);
  Demote(kInode, S::kDeferred);
  EXPECT_EQ(Effects(), "Prepare 2/1b3a");
  PrepDone(kInode);
  EXPECT_EQ(Effects(), "Sync 2/1b3a");  // every demote of an inode syncs, SH->DF too
  SyncDone(kInode);
  EXPECT_EQ(Effects(), "Request 2/1b3a SH->DF");
  Reply(kInode, S::kShared);  // refused: its demote is over, the unlock is a new one
  EXPECT_EQ(Effects(), "Thaw 2/1b3a; Prepare 2/1b3a");
  PrepDone(kInode);
  EXPECT_EQ(Effects(), "Sync 2/1b3a");
  SyncDone(kInode);
  EXPECT_EQ(Effects(), "Request 2/1b3a SH->UN");
}

TEST_F(GlockTest, LockModuleErrorDuringADemoteThawsAndRetries) {
  CacheInode(S::kShared);
  Demote(kInode, S::kUnlocked);
  PrepDone(kInode);
  EXPECT_EQ(Effects(), "Sync 2/1b3a");
  SyncDone(kInode);
  EXPECT_EQ(Effects(), "Request 2/1b3a SH->UN");
  out_.clear();
  LmReply r;
  r.state = S::kShared;
  r.error = Status::IoError("lock manager gone");
  ASSERT_TRUE(t_.LockModuleReply(kInode, r, now_, &out_).ok());
  EXPECT_EQ(Effects(), "Thaw 2/1b3a");
  now_ += 100 * kMs;
  Tick();
  EXPECT_EQ(Effects(), "Prepare 2/1b3a");  // the retry prepares again
}

TEST_F(GlockTest, LruShrinkAndNoCacheOfAnInodePrepare) {
  CacheInode(S::kShared);
  out_.clear();
  EXPECT_EQ(t_.ShrinkLru(5, now_, &out_), 1u);
  EXPECT_EQ(Effects(), "Prepare 2/1b3a");
  EXPECT_EQ(t_.lru_size(), 0u);
  PrepDone(kInode);
  EXPECT_EQ(Effects(), "Sync 2/1b3a");
  SyncDone(kInode);
  EXPECT_EQ(Effects(), "Request 2/1b3a SH->UN");
  Reply(kInode, S::kUnlocked);
  InvalDone(kInode);
  EXPECT_EQ(Effects(), "Thaw 2/1b3a");
  EXPECT_FALSE(t_.Info(kInode).has_value());
}

TEST_F(GlockTest, RgrpGlocksNeverPrepare) {
  HolderId a = Acq(kRgrp, S::kShared);
  Reply(kRgrp, S::kShared);
  RefreshDone(kRgrp);
  ASSERT_TRUE(Granted(a));
  HolderId b = Acq(kRgrp, S::kExclusive);
  EXPECT_EQ(Effects(), "");
  Rel(a);
  EXPECT_EQ(Effects(), "Request 3/11221 SH->EX");
  Reply(kRgrp, S::kShared);  // refused: unlocks at once, as before
  EXPECT_EQ(Effects(), "Request 3/11221 SH->UN");
  Reply(kRgrp, S::kUnlocked);
  InvalDone(kRgrp);
  Reply(kRgrp, S::kExclusive);
  RefreshDone(kRgrp);
  ASSERT_TRUE(Granted(b));
  Demote(kRgrp, S::kShared);
  Rel(b);
  EXPECT_EQ(Effects(), "Sync 3/11221");
  SyncDone(kRgrp);
  Reply(kRgrp, S::kShared);
  HolderId c = Acq(kRgrp, S::kShared, kNoCache);
  ASSERT_TRUE(Granted(c));
  Rel(c);
  EXPECT_EQ(Effects(), "Request 3/11221 SH->UN");
  Reply(kRgrp, S::kUnlocked);
  InvalDone(kRgrp);
  EXPECT_FALSE(t_.Info(kRgrp).has_value());
  EXPECT_EQ(history_.find("Prepare"), std::string::npos) << history_;
  EXPECT_EQ(history_.find("Thaw"), std::string::npos) << history_;
}

// --- Cancel, deadlines, recovery ------------------------------------------------------------

TEST_F(GlockTest, CancelWithdrawsAWaitingHolder) {
  HolderId a = Acq(kFlock, S::kExclusive, kAsync);
  EXPECT_EQ(Effects(), "Request 6/42 UN->EX");
  out_.clear();
  ASSERT_TRUE(t_.Cancel(a, now_, &out_, Code::kTimedOut).ok());
  ASSERT_NE(Failed(a), nullptr);
  EXPECT_EQ(Failed(a)->status.code(), Code::kTimedOut);
  EXPECT_NE(Effects().find("CancelRequest 6/42"), std::string::npos);
  Reply(kFlock, S::kUnlocked, /*canceled=*/true);
  EXPECT_EQ(Effects(), "");
  EXPECT_FALSE(t_.Info(kFlock).has_value());
  EXPECT_EQ(t_.Cancel(a, now_, &out_).code(), Code::kNotFound);
}

TEST_F(GlockTest, CancelTooLateLeavesTheStateCached) {
  HolderId a = Acq(kFlock, S::kExclusive);
  out_.clear();
  ASSERT_TRUE(t_.Cancel(a, now_, &out_).ok());
  Reply(kFlock, S::kExclusive);  // the grant won the race
  EXPECT_EQ(Effects(), "");
  EXPECT_EQ(StateOf(kFlock), S::kExclusive);
  EXPECT_TRUE(t_.Info(kFlock)->on_lru);
}

TEST_F(GlockTest, CancelAndReleaseCheckTheHolderState) {
  HolderId a = Acq(kFlock, S::kExclusive);
  EXPECT_EQ(t_.Release(a, now_, &out_).code(), Code::kInvalid);  // still waiting
  Reply(kFlock, S::kExclusive);
  EXPECT_EQ(t_.Cancel(a, now_, &out_).code(), Code::kInvalid);  // granted
  EXPECT_EQ(t_.Release(a + 100, now_, &out_).code(), Code::kNotFound);
}

TEST_F(GlockTest, RecoveryWithholdsRepliesExceptForNoExp) {
  out_.clear();
  t_.SetRecoveryBlocked(true, now_, &out_);
  HolderId a = Acq(kFlock, S::kShared);
  Reply(kFlock, S::kShared);
  EXPECT_EQ(Effects(), "");
  EXPECT_TRUE(t_.Info(kFlock)->frozen);
  HolderId b = Acq(kFlock, S::kShared, kNoExp);  // a recovery holder thaws the reply
  EXPECT_TRUE(Granted(a));
  EXPECT_TRUE(Granted(b));
  HolderId c = Acq(kFlock2, S::kShared);
  Reply(kFlock2, S::kShared);
  EXPECT_EQ(Effects(), "");
  out_.clear();
  t_.SetRecoveryBlocked(false, now_, &out_);
  EXPECT_TRUE(Granted(c));
}

TEST_F(GlockTest, DumpReadsLikeGfs2) {
  HolderId a = Acq(kInode, S::kExclusive, kNoCache);
  Reply(kInode, S::kExclusive);
  RefreshDone(kInode);
  ASSERT_TRUE(Granted(a));
  Acq(kInode, S::kShared, kTry);
  const std::string d = t_.Dump();
  EXPECT_NE(d.find("G:  s:EX n:2/1b3a f:q t:EX"), std::string::npos) << d;
  EXPECT_NE(d.find(" H: s:EX f:cH"), std::string::npos) << d;
}

// --- Runner ---------------------------------------------------------------------------------

// Hooks that record their calls (and complete at once).
class RecordingHooks : public GlockHooks {
 public:
  void Sync(const GlockName& name, DoneFn done) override {
    Note("sync " + name.ToString());
    done(Status::Ok());
  }
  void Invalidate(const GlockName& name, std::function<void()> done) override {
    Note("invalidate " + name.ToString());
    done();
  }
  void Refresh(const GlockName& name, DoneFn done) override {
    Note("refresh " + name.ToString());
    done(Status::Ok());
  }
  void Prepare(const GlockName& name, std::function<void()> done) override {
    Note("prepare " + name.ToString());
    if (!hold_prepare_) return done();
    std::lock_guard l(mu_);
    held_prepare_ = std::move(done);
  }
  void Thaw(const GlockName& name) override { Note("thaw " + name.ToString()); }
  std::string log() {
    std::lock_guard l(mu_);
    return log_;
  }
  // From now on Prepare keeps its completion until FinishPrepare (the revoke takes a while).
  void HoldPrepares() { hold_prepare_ = true; }
  void FinishPrepare() {
    std::function<void()> done;
    {
      std::lock_guard l(mu_);
      done = std::move(held_prepare_);
      held_prepare_ = nullptr;
    }
    ASSERT_TRUE(done != nullptr);
    done();
  }

 private:
  void Note(const std::string& s) {
    std::lock_guard l(mu_);
    log_ += s + ";";
  }
  std::mutex mu_;
  std::string log_;
  std::atomic<bool> hold_prepare_{false};
  std::function<void()> held_prepare_;
};

// A lock module that keeps requests until the test answers them.
class ManualLockModule : public LockModule {
 public:
  void Request(const GlockName& name, State from, State to, uint32_t flags,
               ReplyFn reply) override {
    (void)flags;
    std::lock_guard l(mu_);
    log_ += name.ToString() + " " + StateName(from) + "->" + StateName(to) + ";";
    replies_.push_back({to, std::move(reply)});
  }
  void Cancel(const GlockName& name) override {
    std::lock_guard l(mu_);
    log_ += "cancel " + name.ToString() + ";";
    canceled_ = true;
  }
  // Answers the oldest request (granting it, or "canceled" if a cancel came first).
  void AnswerOne() {
    std::pair<State, ReplyFn> p;
    LmReply r;
    {
      std::lock_guard l(mu_);
      p = std::move(replies_.front());
      replies_.erase(replies_.begin());
      r.state = canceled_ ? S::kUnlocked : p.first;
      r.canceled = canceled_;
      canceled_ = false;
    }
    p.second(r);
  }
  std::string log() {
    std::lock_guard l(mu_);
    return log_;
  }

 private:
  std::mutex mu_;
  std::vector<std::pair<State, ReplyFn>> replies_;
  bool canceled_ = false;
  std::string log_;
};

TEST(GlockRunnerTest, NoLockGrantsAtOnce) {
  NoLockModule lm;
  RecordingHooks hooks;
  GlockRunner r(&lm, &hooks);
  Result<HolderId> a = r.Acquire(kInode, S::kExclusive, kNoCache);
  ASSERT_TRUE(a.ok()) << a.status().ToString();
  EXPECT_TRUE(r.Poll(*a));
  EXPECT_NE(r.Dump().find("s:EX"), std::string::npos);
  ASSERT_TRUE(r.Release(*a).ok());
  EXPECT_EQ(hooks.log(),
            "refresh 2/1b3a;prepare 2/1b3a;sync 2/1b3a;invalidate 2/1b3a;thaw 2/1b3a;");
  EXPECT_EQ(r.Dump(), "");
  EXPECT_EQ(r.Release(*a).code(), Code::kNotFound);
  Result<HolderId> bad = r.Acquire(kInode, S::kUnlocked, 0);
  EXPECT_FALSE(bad.ok());
}

TEST(GlockRunnerTest, RemoteDemoteAndLru) {
  NoLockModule lm;
  RecordingHooks hooks;
  GlockRunner r(&lm, &hooks);
  Result<HolderId> a = r.Acquire(kRgrp, S::kExclusive, 0);
  ASSERT_TRUE(a.ok());
  r.RemoteDemote(kRgrp, S::kUnlocked);
  EXPECT_EQ(hooks.log(), "refresh 3/11221;");  // waits for the holder
  ASSERT_TRUE(r.Release(*a).ok());
  EXPECT_EQ(hooks.log(), "refresh 3/11221;sync 3/11221;invalidate 3/11221;");
  Result<HolderId> b = r.Acquire(kFlock, S::kShared, 0);
  ASSERT_TRUE(b.ok());
  ASSERT_TRUE(r.Release(*b).ok());
  EXPECT_EQ(r.ShrinkLru(10), 1u);
  EXPECT_EQ(r.Dump(), "");
}

// The revoke above an inode glock completes later (from another thread, as the kernel-cache
// bridge will): holders are granted until it does, and the demote runs after.
TEST(GlockRunnerTest, PrepareCompletesLater) {
  NoLockModule lm;
  RecordingHooks hooks;
  hooks.HoldPrepares();
  GlockRunner r(&lm, &hooks, Options{.min_hold = 0});
  Result<HolderId> a = r.Acquire(kInode, S::kShared, 0);
  ASSERT_TRUE(a.ok());
  r.RemoteDemote(kInode, S::kUnlocked);
  EXPECT_EQ(hooks.log(), "refresh 2/1b3a;prepare 2/1b3a;");
  Result<HolderId> b = r.Acquire(kInode, S::kShared, 0);  // would block if the demote were active
  ASSERT_TRUE(b.ok());
  ASSERT_TRUE(r.Release(*b).ok());
  std::thread t([&] { hooks.FinishPrepare(); });
  t.join();
  Result<HolderId> c = r.Acquire(kInode, S::kShared, kAsync);
  ASSERT_TRUE(c.ok());
  EXPECT_FALSE(r.Poll(*c));  // the demote is active now
  ASSERT_TRUE(r.Release(*a).ok());
  EXPECT_EQ(hooks.log(),
            "refresh 2/1b3a;prepare 2/1b3a;sync 2/1b3a;invalidate 2/1b3a;thaw 2/1b3a;"
            "refresh 2/1b3a;");
  EXPECT_TRUE(r.Wait(*c).ok());
  ASSERT_TRUE(r.Release(*c).ok());
}

TEST(GlockRunnerTest, AsyncWaitTimesOut) {
  ManualLockModule lm;
  NoHooks hooks;
  GlockRunner r(&lm, &hooks);
  Result<HolderId> a = r.Acquire(kFlock, S::kExclusive, kAsync);
  ASSERT_TRUE(a.ok());
  EXPECT_FALSE(r.Poll(*a));
  Status st = r.Wait(*a, GlockRunner::SteadyNow() + 20 * kMs);
  EXPECT_EQ(st.code(), Code::kTimedOut);
  EXPECT_EQ(lm.log(), "6/42 UN->EX;cancel 6/42;");
  lm.AnswerOne();  // "canceled"
  EXPECT_EQ(r.Dump(), "");
  // Answered later from another thread: Wait wakes up.
  Result<HolderId> b = r.Acquire(kFlock, S::kShared, kAsync);
  ASSERT_TRUE(b.ok());
  std::thread t([&] { lm.AnswerOne(); });
  EXPECT_TRUE(r.Wait(*b).ok());
  t.join();
  EXPECT_TRUE(r.Release(*b).ok());
}

// The deadline listener: called when a deadline earlier than the one NextDeadline last gave
// appears (whoever sleeps until that one must look again), not for later ones.
TEST(GlockRunnerTest, DeadlineListenerFiresForAnEarlierDeadline) {
  NoLockModule lm;
  NoHooks hooks;
  Time now = 1000 * kMs;
  GlockRunner r(&lm, &hooks, Options{.min_hold = 200 * kMs}, [&] { return now; });
  int calls = 0;
  r.SetDeadlineListener([&] { calls++; });
  Result<HolderId> a = r.Acquire(kInode, S::kExclusive, 0);  // state change at +0
  ASSERT_TRUE(a.ok());
  now += 50 * kMs;
  Result<HolderId> c = r.Acquire(kInode3, S::kExclusive, 0);  // state change at +50
  ASSERT_TRUE(c.ok());
  now += 50 * kMs;
  Result<HolderId> b = r.Acquire(kInode2, S::kExclusive, 0);  // state change at +100
  ASSERT_TRUE(b.ok());
  EXPECT_FALSE(r.NextDeadline().has_value());
  r.RemoteDemote(kInode2, S::kUnlocked);  // b holds: delayed until +300
  EXPECT_EQ(calls, 1);
  EXPECT_EQ(r.NextDeadline(), 1300 * kMs);
  r.RemoteDemote(kInode, S::kUnlocked);  // a holds: delayed until +200, earlier
  EXPECT_EQ(calls, 2);
  ASSERT_TRUE(r.Release(*a).ok());  // before the hold time is over: only Tick runs it
  ASSERT_TRUE(r.Release(*b).ok());
  EXPECT_EQ(calls, 2);  // nothing earlier than +200 (not told yet: the sleeper wakes for it)
  EXPECT_EQ(r.NextDeadline(), 1200 * kMs);
  now = 1200 * kMs;
  r.Tick();  // a's demote runs (no hooks: done at once)
  EXPECT_EQ(r.Info(kInode)->state, S::kUnlocked);
  EXPECT_EQ(r.NextDeadline(), 1300 * kMs);
  EXPECT_EQ(calls, 2);  // later deadlines are not told
  r.SetDeadlineListener(nullptr);
  r.RemoteDemote(kInode3, S::kUnlocked);  // c holds: until +250, earlier than +300 ...
  EXPECT_EQ(r.NextDeadline(), 1250 * kMs);
  EXPECT_EQ(calls, 2);  // ... but the listener is gone
  ASSERT_TRUE(r.Release(*c).ok());
}

// The I/O policies' cue (fuse/io_policy.h): the listener is called when a holder has to wait or
// a remote demote comes while some holder is marked retained, and never otherwise.
TEST(GlockRunnerTest, RetainedContentionListenerFiresOnlyWhileAHolderIsRetained) {
  NoLockModule lm;
  NoHooks hooks;
  GlockRunner r(&lm, &hooks, Options{.min_hold = 0});
  int calls = 0;
  r.SetRetainedContentionListener([&] { calls++; });
  Result<HolderId> a = r.Acquire(kFlock, S::kExclusive, 0);
  ASSERT_TRUE(a.ok());
  Result<HolderId> b = r.Acquire(kFlock, S::kShared, kAsync);  // waits; nothing retained
  ASSERT_TRUE(b.ok());
  EXPECT_FALSE(r.Poll(*b));
  EXPECT_EQ(calls, 0);
  r.SetRetained(*a, true);
  r.SetRetained(*a, true);                                     // twice: still one retained holder
  Result<HolderId> c = r.Acquire(kFlock, S::kShared, kAsync);  // waits behind a retained EX
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(calls, 1);
  Result<HolderId> d = r.Acquire(kRgrp, S::kExclusive, 0);  // granted at once: no contention
  ASSERT_TRUE(d.ok());
  EXPECT_EQ(calls, 1);
  r.RemoteDemote(kRgrp, S::kUnlocked);
  EXPECT_EQ(calls, 2);
  // a's release ends the only retained holder: contention no longer calls.
  ASSERT_TRUE(r.Release(*a).ok());
  EXPECT_TRUE(r.Wait(*b).ok());
  EXPECT_TRUE(r.Wait(*c).ok());
  Result<HolderId> e = r.Acquire(kFlock, S::kExclusive, kAsync);
  ASSERT_TRUE(e.ok());
  EXPECT_FALSE(r.Poll(*e));
  EXPECT_EQ(calls, 2);
  // Unmarked (not released): no longer counted either.
  r.SetRetained(*d, true);
  r.SetRetained(*d, false);
  r.RemoteDemote(kRgrp, S::kUnlocked);
  EXPECT_EQ(calls, 2);
  r.SetRetained(*b, true);
  r.SetRetainedContentionListener(nullptr);  // removed: not called
  r.RemoteDemote(kFlock, S::kUnlocked);
  EXPECT_EQ(calls, 2);
  ASSERT_TRUE(r.Release(*b).ok());
  ASSERT_TRUE(r.Release(*c).ok());
  EXPECT_TRUE(r.Wait(*e).ok());
  ASSERT_TRUE(r.Release(*e).ok());
  ASSERT_TRUE(r.Release(*d).ok());
}

TEST(GlockRunnerTest, TryFailureIsReturned) {
  NoLockModule lm;
  NoHooks hooks;
  GlockRunner r(&lm, &hooks);
  Result<HolderId> a = r.Acquire(kFlock, S::kShared, 0);
  ASSERT_TRUE(a.ok());
  Result<HolderId> b = r.Acquire(kFlock, S::kExclusive, kTry);
  EXPECT_EQ(b.status().code(), Code::kLockConflict);
  Result<HolderId> c = r.Acquire(kFlock, S::kExclusive, kTry | kAsync);
  ASSERT_TRUE(c.ok());
  EXPECT_TRUE(r.Poll(*c));
  EXPECT_EQ(r.Wait(*c).code(), Code::kLockConflict);
  ASSERT_TRUE(r.Release(*a).ok());
}

// Many threads on a few glocks through the runner, with remote demotes racing them: EX holders
// of one glock never overlap, and the seams are never handed an out-of-phase completion.
TEST(GlockRunnerTest, ThreadsExcludeEachOther) {
  std::atomic<int> refused{0};
  SetLogSink([&](LogLevel level, const std::string&) {
    if (level == LogLevel::kError) refused++;
  });
  NoLockModule lm;
  RecordingHooks hooks;
  GlockRunner r(&lm, &hooks, Options{.min_hold = 1 * kMs, .retry_delay = 1 * kMs});
  const GlockName names[] = {kInode, kRgrp, kFlock};
  std::atomic<int> inside[3] = {0, 0, 0};
  std::atomic<bool> overlap{false};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 400; ++i) {
        const int g = (t + i) % 3;
        const bool ex = (i % 3) != 0;
        Result<HolderId> h =
            r.Acquire(names[g], ex ? S::kExclusive : S::kShared, (i % 7 == 0) ? kNoCache : 0);
        ASSERT_TRUE(h.ok()) << h.status().ToString();
        if (ex && inside[g].fetch_add(1) != 0) overlap = true;
        if (ex) inside[g].fetch_sub(1);
        ASSERT_TRUE(r.Release(*h).ok());
      }
    });
  }
  threads.emplace_back([&] {
    for (int i = 0; i < 300; ++i) {
      r.RemoteDemote(names[i % 3], i % 2 ? S::kUnlocked : S::kShared);
      r.Tick();
      if (i % 50 == 0) r.ShrinkLru(2);
    }
  });
  for (auto& th : threads) th.join();
  r.ShrinkLru(100);
  for (int i = 0; i < 100 && !r.Dump().empty(); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
    r.Tick();
    r.ShrinkLru(100);
  }
  SetLogSink(nullptr);
  EXPECT_FALSE(overlap.load());
  EXPECT_EQ(refused.load(), 0);
  EXPECT_EQ(r.Dump(), "");
}

}  // namespace
}  // namespace ugfs2::glock
