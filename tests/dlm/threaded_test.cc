// The lockspace with real threads: the in-process total-order transport of threaded_transport.h
// (one delivery thread per node), the production ThreadCallbackQueue, and LockSync/UnlockSync from
// many application threads. Checks mutual exclusion under EX, LVB hand-over and sync timeouts.
#include <atomic>
#include <cstring>
#include <memory>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "lockspace.h"
#include "threaded_transport.h"

namespace ugfs2::dlm {
namespace {

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
