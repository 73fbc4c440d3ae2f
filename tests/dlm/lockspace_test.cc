// Lockspace semantics across several in-process nodes (loopback transport).
#include "lockspace.h"

#include <gtest/gtest.h>

#include "sim_cluster.h"

namespace ugfs2::dlm {
namespace {

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

TEST(LockspaceTest, BlockingCallbackAcrossNodes) {
  SimCluster c(3, 1);
  c.StartAll();
  ASSERT_TRUE(c.Run());
  for (uint32_t id : c.Ids()) ASSERT_EQ(c.ls(id).state(), LsState::kMember);
  Rec a, b;
  ASSERT_TRUE(Lock(c.ls(1), &a, kEX, "res").ok());
  c.Run();
  EXPECT_EQ(a.completions, 1);
  EXPECT_EQ(a.lksb.status, kStatusOk);
  ASSERT_TRUE(Lock(c.ls(2), &b, kPR, "res").ok());
  c.Run();
  EXPECT_EQ(b.completions, 0);
  ASSERT_EQ(a.basts.size(), 1u);
  EXPECT_EQ(a.basts[0], kPR);
  // gfs2-style: demote to NL, keeping the lock.
  ASSERT_TRUE(Lock(c.ls(1), &a, kNL, "", kLkfConvert).ok());
  c.Run();
  EXPECT_EQ(a.completions, 2);
  EXPECT_EQ(b.completions, 1);
  EXPECT_EQ(b.lksb.status, kStatusOk);
  EXPECT_EQ(c.ls(1).TEST_Digest(), c.ls(3).TEST_Digest());
}

TEST(LockspaceTest, ArgumentChecksAndBusy) {
  SimCluster c(1, 2);
  c.StartAll();
  c.Run();
  Rec a;
  EXPECT_EQ(Lock(c.ls(1), &a, 9, "x").code(), Code::kInvalid);
  EXPECT_EQ(Lock(c.ls(1), &a, kEX, "").code(), Code::kInvalid);
  EXPECT_EQ(Lock(c.ls(1), &a, kEX, std::string(65, 'x')).code(), Code::kInvalid);
  EXPECT_EQ(Lock(c.ls(1), &a, kPR, "x", kLkfExpedite).code(), Code::kInvalid);
  EXPECT_EQ(Lock(c.ls(1), &a, kPR, "x", kLkfQueCvt).code(), Code::kInvalid);
  ASSERT_TRUE(Lock(c.ls(1), &a, kEX, "x").ok());
  EXPECT_EQ(Lock(c.ls(1), &a, kPR, "", kLkfConvert).code(), Code::kBusy);
  EXPECT_EQ(c.ls(1).Unlock(a.lksb.lkid, 0).code(), Code::kBusy);
  c.Run();
  EXPECT_EQ(c.ls(1).Unlock(9999, 0).code(), Code::kNotFound);
  EXPECT_TRUE(c.ls(1).Unlock(a.lksb.lkid, kLkfCancel).ok());  // nothing to cancel: no callback
  c.Run();
  EXPECT_EQ(a.completions, 1);
  ASSERT_TRUE(c.ls(1).Unlock(a.lksb.lkid, 0).ok());
  c.Run();
  EXPECT_EQ(a.lksb.status, kStatusUnlock);
}

TEST(LockspaceTest, LvbHandOver) {
  SimCluster c(2, 3);
  c.StartAll();
  c.Run();
  Rec a, b;
  ASSERT_TRUE(Lock(c.ls(1), &a, kEX, "lvb", kLkfValBlk).ok());
  c.Run();
  a.lksb.lvb.fill(0x5a);
  ASSERT_TRUE(c.ls(1).Unlock(a.lksb.lkid, kLkfValBlk).ok());
  ASSERT_TRUE(Lock(c.ls(2), &b, kPR, "lvb", kLkfValBlk).ok());
  c.Run();
  // b may have been granted before or after a's unlock, but a was EX, so b waited for it.
  EXPECT_EQ(b.lksb.status, kStatusOk);
  EXPECT_EQ(b.lksb.lvb[31], 0x5a);
  EXPECT_FALSE(b.lksb.flags & kSbfValNotValid);
}

TEST(LockspaceTest, LateJoinerReceivesState) {
  SimCluster c(3, 4);
  c.Start(1);
  c.Start(2);
  c.Run();
  Rec a, b;
  ASSERT_TRUE(Lock(c.ls(1), &a, kEX, "r1").ok());
  ASSERT_TRUE(Lock(c.ls(2), &b, kPR, "r2").ok());
  c.Start(3);  // joins while those are in flight
  c.Run();
  ASSERT_EQ(c.ls(3).state(), LsState::kMember);
  EXPECT_EQ(c.ls(3).TEST_Digest(), c.ls(1).TEST_Digest());
  Rec d;
  ASSERT_TRUE(Lock(c.ls(3), &d, kEX, "r1").ok());
  c.Run();
  EXPECT_EQ(d.completions, 0);
  EXPECT_EQ(a.basts.size(), 1u);
  ASSERT_TRUE(c.ls(1).Unlock(a.lksb.lkid, 0).ok());
  c.Run();
  EXPECT_EQ(d.completions, 1);
  EXPECT_EQ(c.ls(3).TEST_Digest(), c.ls(2).TEST_Digest());
}

TEST(LockspaceTest, CrashWhileHoldingExWaitsForRecoveryHook) {
  SimCluster c(3, 5, /*quorum=*/true, /*manual_recovery=*/true);
  c.StartAll();
  c.Run();
  Rec a, b, n;
  ASSERT_TRUE(Lock(c.ls(3), &a, kEX, "inode").ok());
  c.Run();
  ASSERT_EQ(a.completions, 1);
  ASSERT_TRUE(Lock(c.ls(1), &b, kEX, "inode").ok());
  c.Run();
  c.Crash(3);
  c.Run();
  EXPECT_EQ(b.completions, 0) << "dead node's EX must hold until recovery";
  ASSERT_EQ(c.node(1).recovery_calls, std::vector<uint32_t>{3});
  ASSERT_EQ(c.node(2).recovery_calls, std::vector<uint32_t>{3});
  // Recovery's own lock (NOEXP) is granted despite the dead holder.
  ASSERT_TRUE(Lock(c.ls(2), &n, kEX, "inode", kLkfNoExp).ok());
  c.Run();
  EXPECT_EQ(n.completions, 1);
  ASSERT_TRUE(c.ls(2).Unlock(n.lksb.lkid, 0).ok());
  ASSERT_TRUE(c.ls(2).RecoveryDone(3).ok());
  c.Run();
  EXPECT_EQ(b.completions, 1);
  EXPECT_EQ(b.lksb.status, kStatusOk);
  EXPECT_EQ(c.ls(1).Info().recovery_pending.size(), 0u);
  // Node 3 comes back as a new member and sees the current table.
  c.Start(3);
  c.Run();
  EXPECT_EQ(c.ls(3).state(), LsState::kMember);
  EXPECT_EQ(c.ls(3).TEST_Digest(), c.ls(1).TEST_Digest());
}

TEST(LockspaceTest, PartitionedMinorityIsFencedAndRejoins) {
  SimCluster c(3, 6);
  c.StartAll();
  c.Run();
  Rec a, b, w;
  ASSERT_TRUE(Lock(c.ls(3), &a, kEX, "x").ok());
  c.Run();
  ASSERT_TRUE(Lock(c.ls(3), &w, kEX, "y").ok());
  ASSERT_TRUE(Lock(c.ls(1), &b, kEX, "x").ok());
  c.hub().Partition({{1, 2}, {3}});
  c.Run();
  EXPECT_TRUE(c.ls(3).fenced());
  ASSERT_FALSE(c.node(3).fence_calls.empty());
  EXPECT_TRUE(c.node(3).fence_calls[0]);
  EXPECT_FALSE(c.ls(1).fenced());
  // Majority recovered node 3 automatically (no hook) and granted b.
  EXPECT_EQ(b.completions, 1);
  EXPECT_EQ(b.lksb.status, kStatusOk);
  Rec z;
  EXPECT_EQ(Lock(c.ls(3), &z, kEX, "z").code(), Code::kFenced);
  c.hub().Heal();
  c.Run();
  EXPECT_EQ(c.ls(3).state(), LsState::kMember);
  EXPECT_EQ(c.node(3).fence_calls.back(), false);
  EXPECT_EQ(c.ls(3).TEST_Digest(), c.ls(1).TEST_Digest());
  ASSERT_TRUE(Lock(c.ls(3), &z, kEX, "x").ok());
  c.Run();
  EXPECT_EQ(z.completions, 0);  // b still holds x
  ASSERT_TRUE(c.ls(1).Unlock(b.lksb.lkid, 0).ok());
  c.Run();
  EXPECT_EQ(z.completions, 1);
}

TEST(LockspaceTest, NoQuorumNoGrant) {
  SimCluster c(3, 7);
  c.StartAll();
  c.Run();
  c.Crash(2);
  c.Crash(3);
  c.Run();
  EXPECT_TRUE(c.ls(1).fenced());
}

TEST(LockspaceTest, DumpShowsQueuesAndOwners) {
  SimCluster c(2, 8);
  c.StartAll();
  c.Run();
  Rec a, b;
  ASSERT_TRUE(Lock(c.ls(1), &a, kEX, "dumpme", kLkfValBlk).ok());
  c.Run();
  ASSERT_TRUE(Lock(c.ls(2), &b, kPR, "dumpme").ok());
  c.Run();
  std::string text = c.ls(2).Dump(false);
  EXPECT_NE(text.find("Resource len 6 \"dumpme\""), std::string::npos) << text;
  EXPECT_NE(text.find("Granted"), std::string::npos);
  EXPECT_NE(text.find("Waiting"), std::string::npos);
  EXPECT_NE(text.find("comm sim1"), std::string::npos);
  std::string json = c.ls(1).Dump(true);
  EXPECT_NE(json.find("\"wait\":[{\"lkid\""), std::string::npos) << json;
}

}  // namespace
}  // namespace ugfs2::dlm

namespace ugfs2::dlm {
namespace {

// kLkfBatch: a new request made while one of this node's op messages is on its way waits and goes
// with the operations after it, in one message; alone it goes at once. Every batched request is
// granted, in order, and the replicas agree.
TEST(LockspaceTest, BatchedRequestsTravelTogether) {
  SimCluster c(2, 3);
  c.StartAll();
  ASSERT_TRUE(c.Run());
  Rec lone;
  const uint64_t ops0 = c.ls(1).Counters().op_msgs_sent;
  ASSERT_TRUE(Lock(c.ls(1), &lone, kEX, "lone", kLkfBatch).ok());
  EXPECT_EQ(c.ls(1).Counters().op_msgs_sent, ops0 + 1);  // nothing in flight: sent at once
  std::vector<Rec> recs(10);
  for (size_t i = 0; i < recs.size(); ++i) {
    ASSERT_TRUE(Lock(c.ls(1), &recs[i], kEX, "r" + std::to_string(i), kLkfBatch).ok());
  }
  EXPECT_EQ(c.ls(1).Counters().op_msgs_sent, ops0 + 1);  // waiting for "lone" to come back
  ASSERT_TRUE(c.Run());
  EXPECT_EQ(c.ls(1).Counters().op_msgs_sent, ops0 + 2);  // then all ten in one message
  EXPECT_EQ(lone.completions, 1);
  for (const Rec& r : recs) {
    EXPECT_EQ(r.completions, 1);
    EXPECT_EQ(r.lksb.status, kStatusOk);
  }
  // An ordinary operation takes the waiting ones along (one message, in order).
  Rec a, b;
  ASSERT_TRUE(Lock(c.ls(1), &a, kPR, "again").ok());
  ASSERT_TRUE(Lock(c.ls(1), &b, kPR, "batched", kLkfBatch).ok());
  ASSERT_TRUE(c.ls(1).Unlock(lone.lksb.lkid, 0).ok());
  EXPECT_EQ(c.ls(1).Counters().op_msgs_sent, ops0 + 4);
  ASSERT_TRUE(c.Run());
  EXPECT_EQ(b.lksb.status, kStatusOk);
  EXPECT_EQ(lone.lksb.status, kStatusUnlock);
  EXPECT_EQ(c.ls(1).TEST_Digest(), c.ls(2).TEST_Digest());
  EXPECT_EQ(c.ls(1).TEST_CheckInvariants(), "");
  // The lock manager never sees the flag.
  EXPECT_EQ(c.ls(2).Dump(false).find("BATCH"), std::string::npos);
}

TEST(LockspaceTest, ConversionPipelinedBehindDownConversion) {
  SimCluster c(2, 9);
  c.StartAll();
  c.Run();
  Rec a, b;
  ASSERT_TRUE(Lock(c.ls(1), &a, kEX, "pp").ok());
  c.Run();
  ASSERT_TRUE(Lock(c.ls(2), &b, kEX, "pp").ok());
  c.Run();
  ASSERT_EQ(a.basts.size(), 1u);
  // Demote and immediately ask again: allowed behind a down-conversion only.
  ASSERT_TRUE(Lock(c.ls(1), &a, kNL, "", kLkfConvert).ok());
  ASSERT_TRUE(Lock(c.ls(1), &a, kEX, "", kLkfConvert).ok());
  EXPECT_EQ(Lock(c.ls(1), &a, kPR, "", kLkfConvert).code(), Code::kBusy);
  c.Run();
  EXPECT_EQ(b.completions, 1);    // granted by the demotion
  EXPECT_EQ(b.basts.size(), 1u);  // and told at once that node 1 wants it back
  EXPECT_EQ(a.completions, 2);    // EX grant + NL demotion; the EX request waits
  ASSERT_TRUE(Lock(c.ls(2), &b, kNL, "", kLkfConvert).ok());
  c.Run();
  EXPECT_EQ(a.completions, 3);
  EXPECT_EQ(a.lksb.status, kStatusOk);
  // An up-conversion in flight does not allow pipelining.
  ASSERT_TRUE(Lock(c.ls(2), &b, kEX, "", kLkfConvert).ok());
  EXPECT_EQ(Lock(c.ls(2), &b, kNL, "", kLkfConvert).code(), Code::kBusy);
}

}  // namespace
}  // namespace ugfs2::dlm
