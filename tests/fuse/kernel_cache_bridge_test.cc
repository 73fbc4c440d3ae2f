// KernelCacheBridge over a CacheInvalidator with a fake NotifyBackend: calls become the right
// notifications (node ids with the generation, root = 1, len 0 = to EOF, attribute-only for
// InvalidateAttr), issued on the invalidator's thread; every call returns at once even while
// the kernel side blocks; unknown inodes are skipped; nothing is forwarded before Attach or
// after Detach.
#include "kernel_cache_bridge.h"

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <limits>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

namespace ugfs2::fusefs {
namespace {

class FakeBackend final : public NotifyBackend {
 public:
  int InvalInode(KernelIno ino, int64_t off, int64_t len) override {
    Record("inode " + std::to_string(ino) + " " + std::to_string(off) + " " + std::to_string(len));
    return 0;
  }
  int InvalEntry(KernelIno parent, std::string_view name) override {
    Record("entry " + std::to_string(parent) + " " + std::string(name));
    return 0;
  }
  // While blocked, every notification waits (as one waiting for a kernel page lock would).
  void Block() {
    std::lock_guard<std::mutex> l(mu);
    blocked = true;
  }
  void Unblock() {
    {
      std::lock_guard<std::mutex> l(mu);
      blocked = false;
    }
    cv.notify_all();
  }
  // Waits until a notification is waiting in Block() state.
  void WaitUntilWaiting() {
    std::unique_lock<std::mutex> l(mu);
    cv.wait(l, [&] { return waiting > 0; });
  }
  std::vector<std::string> Calls() {
    std::lock_guard<std::mutex> l(mu);
    return calls;
  }

  std::mutex mu;  // leaf lock
  std::condition_variable cv;
  std::vector<std::string> calls;
  std::vector<std::thread::id> threads;
  bool blocked = false;
  int waiting = 0;

 private:
  void Record(std::string call) {
    std::unique_lock<std::mutex> l(mu);
    ++waiting;
    cv.notify_all();
    cv.wait(l, [&] { return !blocked; });
    --waiting;
    calls.push_back(std::move(call));
    threads.push_back(std::this_thread::get_id());
  }
};

constexpr InodeNo kRoot = 100;

KernelIno NodeId(InodeNo ino, uint64_t generation) {
  return (generation & 0xffff) << kNodeIdGenerationShift | ino;
}

TEST(KernelCacheBridgeTest, CallsBecomeNotificationsWithGenerationNodeIds) {
  FakeBackend b;
  InodeTable t(kRoot);
  t.AddLookup(555, 0x10007);
  CacheInvalidator inv(&b, &t);
  KernelCacheBridge bridge;
  bridge.Attach(&inv);
  KernelCache& kc = bridge;  // the core sees only the interface
  // One at a time (Drain): queued ones may be coalesced (cache_invalidator_test.cc).
  kc.InvalidateData(555, 8192, 4096);
  inv.Drain();
  kc.InvalidateData(555, 4096, 0);  // to EOF
  inv.Drain();
  kc.InvalidateAttr(555);
  inv.Drain();
  kc.InvalidateEntry(555, "child");
  kc.InvalidateEntry(kRoot, "top");  // the root is FUSE_ROOT_ID, always known
  kc.InvalidateAttr(kRoot);
  inv.Drain();
  const std::string n = std::to_string(NodeId(555, 7));
  std::vector<std::string> want = {"inode " + n + " 8192 4096",
                                   "inode " + n + " 4096 0",
                                   "inode " + n + " -1 0",
                                   "entry " + n + " child",
                                   "entry 1 top",
                                   "inode 1 -1 0"};
  EXPECT_EQ(b.Calls(), want);
  for (auto id : b.threads) EXPECT_NE(id, std::this_thread::get_id());
  EXPECT_EQ(bridge.data_calls(), 2u);
  EXPECT_EQ(bridge.attr_calls(), 2u);
  EXPECT_EQ(bridge.entry_calls(), 2u);
  EXPECT_EQ(bridge.dropped(), 0u);
}

TEST(KernelCacheBridgeTest, OffsetsBeyondTheLargestFileOffset) {
  FakeBackend b;
  InodeTable t(kRoot);
  t.AddLookup(9, 1);
  CacheInvalidator inv(&b, &t);
  KernelCacheBridge bridge;
  bridge.Attach(&inv);
  constexpr uint64_t kMax = std::numeric_limits<int64_t>::max();
  bridge.InvalidateData(9, 4096, std::numeric_limits<uint64_t>::max());  // past the end: to EOF
  inv.Drain();
  bridge.InvalidateData(9, kMax + 1, 10);  // nothing can be cached there: attributes only
  inv.Drain();
  bridge.InvalidateData(9, kMax - 1, 1);  // off + len fits: kept
  inv.Drain();
  bridge.InvalidateData(9, kMax, 1);  // off + len would overflow the kernel's loff_t: to EOF
  inv.Drain();
  const std::string n = std::to_string(NodeId(9, 1));
  std::vector<std::string> want = {"inode " + n + " 4096 0", "inode " + n + " -1 0",
                                   "inode " + n + " " + std::to_string(kMax - 1) + " 1",
                                   "inode " + n + " " + std::to_string(kMax) + " 0"};
  EXPECT_EQ(b.Calls(), want);
}

TEST(KernelCacheBridgeTest, UnknownInodesAreSkipped) {
  FakeBackend b;
  InodeTable t(kRoot);
  CacheInvalidator inv(&b, &t);
  KernelCacheBridge bridge;
  bridge.Attach(&inv);
  bridge.InvalidateData(777, 0, 0);
  inv.Drain();
  bridge.InvalidateAttr(777);
  bridge.InvalidateEntry(778, "x");
  inv.Drain();
  EXPECT_TRUE(b.Calls().empty());
  EXPECT_EQ(inv.skipped(), 3u);
  // Known again, under a new generation: the notification names the new node id.
  t.AddLookup(777, 3);
  t.AddLookup(777, 4);  // the address was reused while the kernel held the old file
  bridge.InvalidateAttr(777);
  inv.Drain();
  ASSERT_EQ(b.Calls().size(), 1u);
  EXPECT_EQ(b.Calls()[0], "inode " + std::to_string(NodeId(777, 4)) + " -1 0");
}

// The core calls with glocks held, possibly inside a READ/WRITE of the same inode: the call
// must return even while the kernel side cannot make progress.
TEST(KernelCacheBridgeTest, ReturnsAtOnceWhileTheKernelSideBlocks) {
  FakeBackend b;
  InodeTable t(kRoot);
  t.AddLookup(42, 1);
  CacheInvalidator inv(&b, &t);
  KernelCacheBridge bridge;
  bridge.Attach(&inv);
  b.Block();
  bridge.InvalidateData(42, 0, 0);
  b.WaitUntilWaiting();  // the invalidator's thread is stuck in the first notification
  {
    IoScope scope(42);  // as if serving a WRITE of inode 42
    for (int i = 0; i < 100; ++i) bridge.InvalidateData(42, 4096 * i, 4096);
    bridge.InvalidateAttr(42);  // coalesced: the queued data invalidations drop attributes too
    bridge.InvalidateEntry(42, "n");
  }
  EXPECT_TRUE(b.Calls().empty());  // nothing completed, yet every call returned
  b.Unblock();
  inv.Drain();
  EXPECT_EQ(b.Calls().size(), 102u);
  EXPECT_EQ(inv.coalesced(), 1u);
}

TEST(KernelCacheBridgeTest, NothingForwardedBeforeAttachOrAfterDetach) {
  FakeBackend b;
  InodeTable t(kRoot);
  t.AddLookup(5, 1);
  CacheInvalidator inv(&b, &t);
  KernelCacheBridge bridge;
  bridge.InvalidateData(5, 0, 0);  // not attached yet: the session does not exist
  bridge.Attach(&inv);
  bridge.InvalidateAttr(5);
  bridge.Detach();
  bridge.Detach();  // idempotent
  inv.Drain();
  bridge.InvalidateEntry(5, "late");  // the session is gone
  bridge.InvalidateData(5, 0, 0);
  inv.Drain();
  ASSERT_EQ(b.Calls().size(), 1u);
  EXPECT_EQ(b.Calls()[0], "inode " + std::to_string(NodeId(5, 1)) + " -1 0");
  EXPECT_EQ(bridge.dropped(), 3u);
  EXPECT_EQ(bridge.attr_calls(), 1u);
}

// Callers on many threads while the bridge detaches: every call is either forwarded (and
// issued before Drain returns) or dropped, and nothing is forwarded once Detach returned.
TEST(KernelCacheBridgeTest, ConcurrentCallersAndDetach) {
  FakeBackend b;
  InodeTable t(kRoot);
  for (InodeNo i = 200; i < 216; ++i) t.AddLookup(i, 1);
  CacheInvalidator inv(&b, &t);
  KernelCacheBridge bridge;
  bridge.Attach(&inv);
  std::atomic<bool> go{false};
  std::vector<std::thread> threads;
  constexpr int kThreads = 4, kCalls = 2000;
  for (int k = 0; k < kThreads; ++k) {
    threads.emplace_back([&, k] {
      while (!go) std::this_thread::yield();
      for (int i = 0; i < kCalls; ++i) {
        InodeNo ino = 200 + (i + k) % 16;
        switch (i % 3) {
          case 0:
            bridge.InvalidateData(ino, 0, 0);
            break;
          case 1:
            bridge.InvalidateAttr(ino);
            break;
          default:
            bridge.InvalidateEntry(ino, "e");
        }
      }
    });
  }
  go = true;
  while (bridge.data_calls() + bridge.attr_calls() + bridge.entry_calls() < 100) {
    std::this_thread::yield();  // detach in the middle of the calls
  }
  bridge.Detach();
  inv.Drain();
  const size_t issued_at_detach = b.Calls().size();
  for (auto& th : threads) th.join();
  inv.Drain();
  const uint64_t forwarded = bridge.data_calls() + bridge.attr_calls() + bridge.entry_calls();
  EXPECT_EQ(forwarded + bridge.dropped(), uint64_t{kThreads} * kCalls);
  EXPECT_EQ(b.Calls().size(), issued_at_detach);             // none after Detach
  EXPECT_EQ(b.Calls().size() + inv.coalesced(), forwarded);  // each issued or coalesced
}

}  // namespace
}  // namespace ugfs2::fusefs
