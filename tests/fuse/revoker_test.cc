// Revoker: the two-phase page revoke against a model of the kernel's page cache (folios that
// are present and maybe locked; a notify_inval_inode that scans a batch looked up once, waiting
// for each locked folio, as invalidate_inode_pages2_range does).
#include "revoker.h"

#include <chrono>
#include <condition_variable>
#include <functional>
#include <future>
#include <map>
#include <mutex>
#include <thread>

#include <gtest/gtest.h>

namespace ugfs2::fusefs {
namespace {

using std::chrono::seconds;

constexpr uint64_t kPage = 4096;

// The kernel side: pages of one inode; a folio is locked while its READ (or partial WRITE) is
// unanswered. InvalInode looks the present pages of the range up once (a folio inserted after
// that survives the call: the scan only moves forward) and removes them one by one, waiting
// for locked ones.
class FakeKernel final : public NotifyBackend {
 public:
  struct Folio {
    bool locked = false;
    int gen = 0;
  };
  int InvalInode(KernelIno, int64_t off, int64_t len) override {
    std::function<void(int)> before;
    int call = 0;
    {
      std::lock_guard<std::mutex> l(mu);
      call = ++calls;
      if (off >= 0) ranges.push_back({off, len});
      before = before_call;
    }
    if (before) before(call);
    if (off < 0) return 0;
    const uint64_t first = static_cast<uint64_t>(off) / kPage;
    const uint64_t end = len == 0 ? UINT64_MAX : first + static_cast<uint64_t>(len) / kPage;
    std::vector<uint64_t> batch;
    {
      std::lock_guard<std::mutex> l(mu);
      for (const auto& [p, f] : pages) {
        if (p >= first && p < end) batch.push_back(p);
      }
    }
    for (uint64_t p : batch) {
      std::unique_lock<std::mutex> l(mu);
      cv.wait(l, [&] { return pages.count(p) == 0 || !pages[p].locked; });
      pages.erase(p);
      l.unlock();
      std::function<void(uint64_t)> after;
      {
        std::lock_guard<std::mutex> g(mu);
        after = after_page;
      }
      if (after) after(p);
    }
    return 0;
  }
  int InvalEntry(KernelIno, std::string_view) override { return 0; }

  // A read fault on page `p`: the folio is inserted locked, then the READ goes to the daemon.
  // Returns whether it was parked.
  bool Fault(Revoker* r, InodeNo ino, uint64_t p) {
    {
      std::lock_guard<std::mutex> l(mu);
      if (pages.count(p) != 0) return false;  // cached: no READ
      pages[p] = Folio{true, 0};
    }
    auto fill = [this, p] {
      std::lock_guard<std::mutex> l(mu);
      pages[p] = Folio{false, backing_gen};
      cv.notify_all();
    };
    if (r->Admit(ino, Revoker::Kind::kRead, p * kPage, kPage,
                 [&] { return Revoker::Rerun(fill); })) {
      return true;
    }
    fill();
    return false;
  }
  // A partial-page write-through WRITE on page `p`: holds the folio lock until answered.
  bool PartialWrite(Revoker* r, InodeNo ino, uint64_t p) {
    {
      std::lock_guard<std::mutex> l(mu);
      pages[p].locked = true;
    }
    auto apply = [this, p] {
      std::lock_guard<std::mutex> l(mu);
      pages[p].locked = false;
      ++writes_applied;
      cv.notify_all();
    };
    if (r->Admit(ino, Revoker::Kind::kWrite, p * kPage + 100, 100,
                 [&] { return Revoker::Rerun(apply); })) {
      return true;
    }
    apply();
    return false;
  }

  std::mutex mu;
  std::condition_variable cv;
  std::map<uint64_t, Folio> pages;
  std::vector<std::pair<int64_t, int64_t>> ranges;
  int calls = 0;
  int backing_gen = 0;
  int writes_applied = 0;
  std::function<void(int)> before_call;      // at the start of call number N
  std::function<void(uint64_t)> after_page;  // after the scan removed page P
};

constexpr InodeNo kIno = 777;
constexpr InodeNo kRoot = 100;

struct Rig {
  FakeKernel kernel;
  InodeTable inodes{kRoot};
  Revoker revoker{&kernel, &inodes, Revoker::Options{}};
  Rig() { inodes.AddLookup(kIno, 1); }
  // Starts a revoke; the future is ready when `done` ran.
  std::future<void> Start() {
    auto p = std::make_shared<std::promise<void>>();
    std::future<void> f = p->get_future();
    revoker.Revoke(kIno, [p] { p->set_value(); });
    return f;
  }
};

TEST(RevokerTest, UnknownInodeIsDoneAtOnce) {
  Rig rig;
  bool done = false;
  rig.revoker.Revoke(4242, [&] { done = true; });
  EXPECT_TRUE(done);
  EXPECT_EQ(rig.revoker.stats().skipped, 1u);
  EXPECT_EQ(rig.kernel.calls, 0);
}

// A READ served during phase 1 for a page the scan has passed fills a folio behind it: phase 2
// must remove it, or the node keeps a page it may not keep once the glock goes.
TEST(RevokerTest, PageReadBehindThePhaseOneScanIsRemovedInPhaseTwo) {
  Rig rig;
  for (uint64_t p = 0; p < 3; ++p) rig.kernel.pages[p] = {false, 0};
  bool faulted = false;
  rig.kernel.after_page = [&](uint64_t p) {
    if (p == 0 && !faulted) {
      faulted = true;
      EXPECT_FALSE(rig.kernel.Fault(&rig.revoker, kIno, 5));  // REVOKING: served
    }
  };
  auto done = rig.Start();
  ASSERT_EQ(done.wait_for(seconds(10)), std::future_status::ready) << "revoke did not finish";
  std::lock_guard<std::mutex> l(rig.kernel.mu);
  EXPECT_TRUE(rig.kernel.pages.empty()) << "a page read during phase 1 survived the revoke";
  ASSERT_EQ(rig.kernel.ranges.size(), 2u);
  const std::pair<int64_t, int64_t> want{5 * kPage, kPage};
  EXPECT_EQ(rig.kernel.ranges[1], want);
  rig.revoker.Thaw(kIno);
}

// Without phase 2 (the negative control of the rule above) the page would survive: check that
// the fake kernel does model that, so the test above can fail.
TEST(RevokerTest, TheFakeKernelKeepsAFolioInsertedBehindItsScan) {
  FakeKernel k;
  for (uint64_t p = 0; p < 3; ++p) k.pages[p] = {false, 0};
  k.after_page = [&](uint64_t p) {
    if (p == 0) {
      std::lock_guard<std::mutex> l(k.mu);
      k.pages[5] = {false, 0};
    }
  };
  k.InvalInode(1, 0, 0);
  EXPECT_EQ(k.pages.count(5), 1u);
}

// A partial-page WRITE parked in phase 2 holds the folio the notify waits for: the stall rule
// answers it (the glock is still held) and invalidates its page again; no deadlock.
TEST(RevokerTest, StallOnAParkedPartialWriteAnswersItAndRedoesItsPage) {
  Rig rig;
  rig.kernel.pages[0] = {false, 0};
  bool faulted = false;
  rig.kernel.after_page = [&](uint64_t p) {
    if (p == 0 && !faulted) {
      faulted = true;
      rig.kernel.Fault(&rig.revoker, kIno, 5);  // recorded: phase 2 will visit page 5
    }
  };
  rig.kernel.before_call = [&](int call) {
    // Call 2 is phase 2's first range: a partial write on page 5 arrives, frozen: parked.
    if (call == 2) {
      EXPECT_TRUE(rig.kernel.PartialWrite(&rig.revoker, kIno, 5));
    }
  };
  auto done = rig.Start();
  ASSERT_EQ(done.wait_for(seconds(10)), std::future_status::ready)
      << "revoke deadlocked on a parked partial write";
  const Revoker::Stats st = rig.revoker.stats();
  EXPECT_EQ(st.stall_answers, 1u);
  EXPECT_EQ(st.redo_pages, 1u);
  std::lock_guard<std::mutex> l(rig.kernel.mu);
  EXPECT_EQ(rig.kernel.writes_applied, 1);
  EXPECT_TRUE(rig.kernel.pages.empty());
}

// After done, READs wait (parked) until the thaw, and are served then: with the data the other
// node wrote meanwhile.
TEST(RevokerTest, ReadsAfterDoneWaitForTheThawAndSeeNewData) {
  Rig rig;
  rig.kernel.pages[0] = {false, 0};
  auto done = rig.Start();
  ASSERT_EQ(done.wait_for(seconds(10)), std::future_status::ready);
  EXPECT_TRUE(rig.kernel.Fault(&rig.revoker, kIno, 0));
  {
    std::lock_guard<std::mutex> l(rig.kernel.mu);
    rig.kernel.backing_gen = 1;  // the other node's write
    EXPECT_TRUE(rig.kernel.pages[0].locked);
  }
  rig.revoker.Thaw(kIno);
  std::unique_lock<std::mutex> l(rig.kernel.mu);
  ASSERT_TRUE(rig.kernel.cv.wait_for(l, seconds(10), [&] { return !rig.kernel.pages[0].locked; }))
      << "the parked READ was not served after the thaw";
  EXPECT_EQ(rig.kernel.pages[0].gen, 1);
}

// Launder/writeback WRITEs are never parked, whatever the state.
TEST(RevokerTest, WritePageWritesAreAlwaysServed) {
  Rig rig;
  rig.kernel.pages[0] = {false, 0};
  auto done = rig.Start();
  ASSERT_EQ(done.wait_for(seconds(10)), std::future_status::ready);
  bool made = false;
  EXPECT_FALSE(rig.revoker.Admit(kIno, Revoker::Kind::kWritePage, 0, kPage, [&] {
    made = true;
    return Revoker::Rerun([] {});
  }));
  EXPECT_FALSE(made);
  rig.revoker.Thaw(kIno);
}

// Shutdown serves what is parked (the daemon answers it with EIO once the core is gone).
TEST(RevokerTest, ShutdownServesParkedRequests) {
  Rig rig;
  auto done = rig.Start();
  ASSERT_EQ(done.wait_for(seconds(10)), std::future_status::ready);
  EXPECT_TRUE(rig.kernel.Fault(&rig.revoker, kIno, 3));
  rig.revoker.Shutdown();
  std::lock_guard<std::mutex> l(rig.kernel.mu);
  EXPECT_FALSE(rig.kernel.pages[3].locked);
  bool after = false;
  rig.revoker.Revoke(kIno, [&] { after = true; });
  EXPECT_TRUE(after);
}

}  // namespace
}  // namespace ugfs2::fusefs
