// Grant rules of the replicated lock table, exercised directly (no transport).
#include "lock_table.h"

#include <gtest/gtest.h>

namespace ugfs2::dlm {
namespace {

class LockTableTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::vector<MemberInfo> ms;
    for (uint32_t n = 1; n <= 3; ++n) {
      MemberInfo m;
      m.id = {n, 100 + n};
      m.synced = true;
      ms.push_back(m);
    }
    table_.Found(ms, 0);
  }
  MemberId M(uint32_t n) { return {n, 100 + n}; }
  // Returns the effects of one op.
  std::vector<Effect> Op(uint32_t node, LockOp::Type type, uint32_t lkid, int mode,
                         uint32_t flags = 0, const std::string& name = "res") {
    LockOp op;
    op.type = type;
    op.lkid = lkid;
    op.mode = static_cast<int8_t>(mode);
    op.flags = flags;
    op.name = name;
    std::vector<Effect> out;
    table_.ApplyOp(M(node), op, 0, &out);
    EXPECT_EQ(table_.CheckInvariants(), "");
    return out;
  }
  std::vector<Effect> Req(uint32_t node, uint32_t lkid, int mode, uint32_t flags = 0,
                          const std::string& name = "res") {
    return Op(node, LockOp::kRequest, lkid, mode, flags, name);
  }
  std::vector<Effect> Cvt(uint32_t node, uint32_t lkid, int mode, uint32_t flags = 0) {
    return Op(node, LockOp::kConvert, lkid, mode, flags | kLkfConvert);
  }
  std::vector<Effect> Unl(uint32_t node, uint32_t lkid, uint32_t flags = 0) {
    return Op(node, LockOp::kUnlock, lkid, kIV, flags);
  }
  std::vector<Effect> Cancel(uint32_t node, uint32_t lkid) {
    return Op(node, LockOp::kCancel, lkid, kIV);
  }
  static const Effect* Find(const std::vector<Effect>& es, Effect::Kind k, uint32_t owner,
                            uint32_t lkid) {
    for (const auto& e : es) {
      if (e.kind == k && e.owner == owner && e.lkid == lkid) return &e;
    }
    return nullptr;
  }
  static bool Granted(const std::vector<Effect>& es, uint32_t owner, uint32_t lkid) {
    const Effect* e = Find(es, Effect::kComplete, owner, lkid);
    return e && e->status == kStatusOk;
  }
  int Gr(uint32_t owner, uint32_t lkid) {
    const LockEntry* lk = table_.FindLock(owner, lkid);
    return lk ? lk->grmode : -2;
  }
  LockTable table_;
};

TEST(ModesTest, CompatibilityMatrix) {
  // Row = held, column = requested: NL CR CW PR PW EX.
  const char* rows[6] = {"111111", "111110", "111000", "110100", "110000", "100000"};
  for (int a = kNL; a <= kEX; ++a) {
    for (int b = kNL; b <= kEX; ++b) {
      EXPECT_EQ(ModesCompatible(a, b), rows[a][b] == '1') << ModeName(a) << " " << ModeName(b);
      EXPECT_EQ(ModesCompatible(a, b), ModesCompatible(b, a));
    }
  }
}

TEST(ModesTest, LvbDirectionAndQueCvt) {
  EXPECT_TRUE(LvbReadOnGrant(kIV, kEX));
  EXPECT_TRUE(LvbReadOnGrant(kCR, kCR));
  EXPECT_TRUE(LvbReadOnGrant(kCW, kPR));
  EXPECT_TRUE(LvbReadOnGrant(kPW, kEX));
  EXPECT_FALSE(LvbReadOnGrant(kPR, kNL));
  EXPECT_FALSE(LvbReadOnGrant(kPR, kCW));
  EXPECT_TRUE(LvbWriteOnConvert(kEX, kEX));
  EXPECT_TRUE(LvbWriteOnConvert(kEX, kNL));
  EXPECT_TRUE(LvbWriteOnConvert(kPW, kPR));
  EXPECT_FALSE(LvbWriteOnConvert(kPW, kEX));
  EXPECT_FALSE(LvbWriteOnConvert(kPR, kNL));
  EXPECT_TRUE(QueCvtAllowed(kNL, kEX));
  EXPECT_TRUE(QueCvtAllowed(kPR, kCW));
  EXPECT_FALSE(QueCvtAllowed(kEX, kNL));
  EXPECT_FALSE(QueCvtAllowed(kPR, kCR));
}

TEST_F(LockTableTest, GrantsCompatibleAndQueuesConflicting) {
  EXPECT_TRUE(Granted(Req(1, 1, kPR), 1, 1));
  EXPECT_TRUE(Granted(Req(2, 1, kPR), 2, 1));
  auto es = Req(3, 1, kEX);
  EXPECT_EQ(Find(es, Effect::kComplete, 3, 1), nullptr);
  // Both PR holders are told EX is wanted.
  ASSERT_NE(Find(es, Effect::kBlock, 1, 1), nullptr);
  EXPECT_EQ(Find(es, Effect::kBlock, 1, 1)->mode, kEX);
  ASSERT_NE(Find(es, Effect::kBlock, 2, 1), nullptr);
  // A later compatible PR must queue behind the waiting EX (FIFO).
  es = Req(1, 2, kPR);
  EXPECT_EQ(Find(es, Effect::kComplete, 1, 2), nullptr);
  EXPECT_EQ(Unl(1, 1).size(), 1u);
  es = Unl(2, 1);
  EXPECT_TRUE(Granted(es, 3, 1));
  EXPECT_FALSE(Granted(es, 1, 2));
  es = Unl(3, 1);
  EXPECT_TRUE(Granted(es, 1, 2));
}

TEST_F(LockTableTest, BastOnlyOncePerLevel) {
  Req(1, 1, kEX);
  auto es = Req(2, 1, kPR);
  EXPECT_NE(Find(es, Effect::kBlock, 1, 1), nullptr);
  es = Req(3, 1, kPR);
  EXPECT_EQ(Find(es, Effect::kBlock, 1, 1), nullptr);  // already basted at PR
  es = Req(3, 2, kEX);
  EXPECT_NE(Find(es, Effect::kBlock, 1, 1), nullptr);  // stronger mode: bast again
}

TEST_F(LockTableTest, ConversionsBeforeNewRequests) {
  Req(1, 1, kPR);
  Req(2, 1, kPR);
  Req(3, 1, kEX);            // waits
  auto es = Cvt(1, 1, kEX);  // converts queue ahead of the waiting request
  EXPECT_EQ(Find(es, Effect::kComplete, 1, 1), nullptr);
  es = Unl(2, 1);
  EXPECT_TRUE(Granted(es, 1, 1));
  EXPECT_FALSE(Granted(es, 3, 1));
  EXPECT_EQ(Gr(1, 1), kEX);
}

TEST_F(LockTableTest, DownConversionGrantsWaiters) {
  Req(1, 1, kEX);
  Req(2, 1, kPR);
  auto es = Cvt(1, 1, kPR);
  EXPECT_TRUE(Granted(es, 1, 1));
  EXPECT_TRUE(Granted(es, 2, 1));
}

TEST_F(LockTableTest, NoQueueFailsAtOnceAndNoQueueBastPokes) {
  Req(1, 1, kEX);
  auto es = Req(2, 1, kPR, kLkfNoQueue);
  ASSERT_NE(Find(es, Effect::kComplete, 2, 1), nullptr);
  EXPECT_EQ(Find(es, Effect::kComplete, 2, 1)->status, kStatusAgain);
  EXPECT_TRUE(Find(es, Effect::kComplete, 2, 1)->gone);
  EXPECT_EQ(Find(es, Effect::kBlock, 1, 1), nullptr);
  es = Req(2, 2, kPR, kLkfNoQueue | kLkfNoQueueBast);
  EXPECT_EQ(Find(es, Effect::kComplete, 2, 2)->status, kStatusAgain);
  EXPECT_NE(Find(es, Effect::kBlock, 1, 1), nullptr);
  // A failed NOQUEUE conversion keeps the old mode.
  Req(3, 1, kNL);
  es = Cvt(3, 1, kPR, kLkfNoQueue);
  EXPECT_EQ(Find(es, Effect::kComplete, 3, 1)->status, kStatusAgain);
  EXPECT_EQ(Gr(3, 1), kNL);
}

TEST_F(LockTableTest, CancelWaitingAndConverting) {
  Req(1, 1, kEX);
  Req(2, 1, kEX);
  auto es = Cancel(2, 1);
  EXPECT_EQ(Find(es, Effect::kComplete, 2, 1)->status, kStatusCancel);
  EXPECT_TRUE(Find(es, Effect::kComplete, 2, 1)->gone);
  Req(3, 1, kNL);
  Cvt(3, 1, kEX);
  es = Cancel(3, 1);
  EXPECT_EQ(Find(es, Effect::kComplete, 3, 1)->status, kStatusCancel);
  EXPECT_EQ(Gr(3, 1), kNL);
  // Nothing to cancel: no callback at all.
  EXPECT_TRUE(Cancel(1, 1).empty());
}

TEST_F(LockTableTest, ConversionDeadlockRefused) {
  Req(1, 1, kPR);
  Req(2, 1, kPR);
  EXPECT_TRUE(Cvt(1, 1, kEX).empty() || true);  // queued behind 2's PR
  auto es = Cvt(2, 1, kEX);
  const Effect* e = Find(es, Effect::kComplete, 2, 1);
  ASSERT_NE(e, nullptr);
  EXPECT_EQ(e->status, kStatusDeadlock);
  EXPECT_EQ(Gr(2, 1), kPR);
  es = Unl(2, 1);
  EXPECT_TRUE(Granted(es, 1, 1));
}

TEST_F(LockTableTest, ConversionDeadlockDemotesWithConvDeadlk) {
  Req(1, 1, kPR);
  Req(2, 1, kPR);
  Cvt(1, 1, kEX);
  auto es = Cvt(2, 1, kEX, kLkfConvDeadlk);
  // 2 is demoted to NL, which lets 1 have EX; 2 waits for EX.
  EXPECT_TRUE(Granted(es, 1, 1));
  EXPECT_EQ(Find(es, Effect::kComplete, 2, 1), nullptr);
  es = Unl(1, 1);
  const Effect* e = Find(es, Effect::kComplete, 2, 1);
  ASSERT_NE(e, nullptr);
  EXPECT_EQ(e->status, kStatusOk);
  EXPECT_TRUE(e->sb_flags & kSbfDemoted);
  EXPECT_EQ(Gr(2, 1), kEX);
}

TEST_F(LockTableTest, NoDlckWtQueuesDeadlockedConversion) {
  Req(1, 1, kPR);
  Req(2, 1, kPR);
  Cvt(1, 1, kEX);
  auto es = Cvt(2, 1, kEX, kLkfNoDlckWt);
  EXPECT_EQ(Find(es, Effect::kComplete, 2, 1), nullptr);
  const LockEntry* lk = table_.FindLock(2, 1);
  ASSERT_NE(lk, nullptr);
  EXPECT_EQ(lk->queue, Queue::kConverting);
  es = Cancel(2, 1);
  EXPECT_EQ(Find(es, Effect::kComplete, 2, 1)->status, kStatusCancel);
  EXPECT_EQ(Gr(2, 1), kPR);
  EXPECT_TRUE(Granted(Unl(2, 1), 1, 1));
}

TEST_F(LockTableTest, QueCvtWaitsBehindConverters) {
  Req(1, 1, kPR);
  Req(2, 1, kNL);
  Req(3, 1, kCR);
  Cvt(1, 1, kEX);  // blocked by 3's CR
  // Without QUECVT, NL->CR is compatible and granted in place despite the converter.
  EXPECT_TRUE(Granted(Cvt(2, 1, kCR), 2, 1));
  Cvt(2, 1, kNL);
  auto es = Cvt(2, 1, kCR, kLkfQueCvt);
  EXPECT_EQ(Find(es, Effect::kComplete, 2, 1), nullptr);
}

TEST_F(LockTableTest, AltModes) {
  Req(1, 1, kPR);
  auto es = Req(2, 1, kCW, kLkfAltPr);
  const Effect* e = Find(es, Effect::kComplete, 2, 1);
  ASSERT_NE(e, nullptr);
  EXPECT_EQ(e->status, kStatusOk);
  EXPECT_EQ(e->mode, kPR);
  EXPECT_TRUE(e->sb_flags & kSbfAltMode);
  Req(3, 1, kCW);  // waits
  Unl(1, 1);
  Unl(2, 1);
  es = Req(1, 2, kPR, kLkfAltCw | kLkfNoQueue);
  e = Find(es, Effect::kComplete, 1, 2);
  ASSERT_NE(e, nullptr);
  EXPECT_EQ(e->mode, kCW);
  EXPECT_TRUE(e->sb_flags & kSbfAltMode);
}

TEST_F(LockTableTest, ExpediteSkipsQueues) {
  Req(1, 1, kEX);
  Req(2, 1, kEX);
  EXPECT_TRUE(Granted(Req(3, 1, kNL, kLkfExpedite), 3, 1));
  EXPECT_FALSE(Granted(Req(3, 2, kNL), 3, 2));
}

TEST_F(LockTableTest, LvbReadWriteAndInvalidate) {
  LockOp op;
  op.type = LockOp::kRequest;
  op.lkid = 1;
  op.mode = kEX;
  op.flags = kLkfValBlk;
  op.name = "r";
  std::vector<Effect> es;
  table_.ApplyOp(M(1), op, 0, &es);
  ASSERT_TRUE(es[0].lvb_read);
  EXPECT_EQ(es[0].lvb, Lvb{});
  // Down-convert EX->NL writes.
  op.type = LockOp::kConvert;
  op.mode = kNL;
  op.flags = kLkfValBlk | kLkfConvert;
  op.has_lvb = true;
  op.lvb.fill(7);
  es.clear();
  table_.ApplyOp(M(1), op, 0, &es);
  EXPECT_FALSE(es[0].lvb_read);
  // Reader sees it.
  LockOp rd;
  rd.type = LockOp::kRequest;
  rd.lkid = 1;
  rd.mode = kPR;
  rd.flags = kLkfValBlk;
  rd.name = "r";
  es.clear();
  table_.ApplyOp(M(2), rd, 0, &es);
  ASSERT_TRUE(es[0].lvb_read);
  EXPECT_EQ(es[0].lvb[0], 7);
  EXPECT_FALSE(es[0].sb_flags & kSbfValNotValid);
  EXPECT_EQ(table_.resources().at("r").lvbseq, 1u);
  // PR->NL neither reads nor writes.
  es = Cvt(2, 1, kNL, kLkfValBlk);
  EXPECT_FALSE(es[0].lvb_read);
  // A node holding PW dies: the LVB becomes invalid.
  LockOp pw = rd;
  pw.lkid = 2;
  pw.mode = kPW;
  es.clear();
  table_.ApplyOp(M(3), pw, 0, &es);
  es.clear();
  table_.ApplyConfChg({M(1), M(2)}, {{M(3), LeaveReason::kFailed}}, {}, &es);
  table_.ApplyRecoveryDone(3, &es);
  es = Cvt(1, 1, kPR, kLkfValBlk);
  ASSERT_TRUE(es[0].lvb_read);
  EXPECT_TRUE(es[0].sb_flags & kSbfValNotValid);
  // IVVALBLK on unlock from PW/EX invalidates instead of writing.
}

TEST_F(LockTableTest, DeadNodeLocksHeldUntilRecoveryExceptNoExp) {
  Req(3, 1, kEX, 0, "a");
  Req(3, 2, kPR, 0, "b");
  Req(3, 3, kEX, 0, "c");
  Req(1, 1, kEX, 0, "c");  // waits on c
  std::vector<Effect> es;
  table_.ApplyConfChg({M(1), M(2)}, {{M(3), LeaveReason::kFailed}}, {}, &es);
  EXPECT_TRUE(es.empty());
  EXPECT_TRUE(table_.RecoveryPendingFor(3));
  EXPECT_FALSE(Granted(Req(1, 2, kEX, 0, "a"), 1, 2));         // conflicts with the dead EX
  EXPECT_TRUE(Granted(Req(2, 1, kPR, 0, "b"), 2, 1));          // compatible: fine
  EXPECT_TRUE(Granted(Req(2, 2, kEX, kLkfNoExp, "a"), 2, 2));  // recovery's own lock
  es.clear();
  table_.ApplyRecoveryDone(3, &es);
  EXPECT_TRUE(Granted(es, 1, 1));
  EXPECT_FALSE(table_.RecoveryPendingFor(3));
  EXPECT_EQ(table_.FindLock(3, 1), nullptr);
}

TEST_F(LockTableTest, CleanLeaveReleasesAtOnce) {
  Req(3, 1, kEX);
  Req(1, 1, kEX);
  std::vector<Effect> es;
  table_.ApplyConfChg({M(1), M(2)}, {{M(3), LeaveReason::kLeave}}, {}, &es);
  EXPECT_TRUE(Granted(es, 1, 1));
  EXPECT_FALSE(table_.RecoveryPendingFor(3));
}

TEST_F(LockTableTest, SnapshotRoundTrip) {
  Req(1, 1, kEX, kLkfValBlk, "x");
  Req(2, 1, kPR, 0, "x");
  Req(3, 1, kCR, 0, std::string("\0bin\xff", 5));
  ByteWriter w;
  table_.EncodeSnapshot(&w);
  LockTable copy;
  ByteReader r(w.buf().data(), w.buf().size());
  ASSERT_TRUE(copy.DecodeSnapshot(&r));
  EXPECT_TRUE(r.done());
  EXPECT_EQ(copy.Digest(), table_.Digest());
  EXPECT_EQ(copy.CheckInvariants(), "");
}

TEST_F(LockTableTest, Gfs2StyleNames) {
  char name[25];
  std::snprintf(name, sizeof(name), "%8x%16llx", 2u, 0x1a2bULL);
  EXPECT_TRUE(Granted(Req(1, 1, kEX, 0, name), 1, 1));
  std::string max(64, 'n');
  EXPECT_TRUE(Granted(Req(1, 2, kEX, 0, max), 1, 2));
  auto es = Req(1, 3, kEX, 0, std::string(65, 'n'));
  EXPECT_EQ(es[0].status, kStatusInvalid);
}

}  // namespace
}  // namespace ugfs2::dlm
