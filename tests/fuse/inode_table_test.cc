#include "inode_table.h"

#include <atomic>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

namespace ugfs2::fusefs {
namespace {

TEST(InodeTableTest, RootMapsToFuseRootId) {
  InodeTable t(4711);
  EXPECT_EQ(t.ToKernel(4711, 0), kKernelRootIno);
  EXPECT_EQ(t.ToKernel(4711, 0x1234), kKernelRootIno);  // whatever the root's generation
  EXPECT_EQ(t.FromKernel(kKernelRootIno), 4711u);
  EXPECT_EQ(t.ToKernel(123456, 0), 123456u);  // generation 0: the node id is the address
  EXPECT_EQ(t.FromKernel(123456), 123456u);
  EXPECT_EQ(t.root(), 4711u);
  ASSERT_TRUE(t.Resolve(kKernelRootIno).ok());
  EXPECT_EQ(*t.Resolve(kKernelRootIno), 4711u);
  EXPECT_EQ(t.KnownKernelIno(4711), kKernelRootIno);  // always referenced
}

TEST(InodeTableTest, NodeIdsCarryTheGenerationAboveBit48) {
  InodeTable t(10);
  constexpr InodeNo kAddr = 0x1b3a;
  EXPECT_EQ(t.ToKernel(kAddr, 7), (KernelIno{7} << 48) | kAddr);
  // Only the low 16 bits of the generation fit.
  EXPECT_EQ(t.ToKernel(kAddr, 0x3'0007), t.ToKernel(kAddr, 7));
  EXPECT_EQ(t.ToKernel(kAddr, 0xffff), (KernelIno{0xffff} << 48) | kAddr);
  // FromKernel gives back the address, whatever the generation.
  EXPECT_EQ(t.FromKernel(t.ToKernel(kAddr, 7)), kAddr);
  EXPECT_EQ(t.FromKernel(t.ToKernel(kAddr, 0xffff)), kAddr);
  EXPECT_EQ(t.FromKernel(t.ToKernel(kMaxNodeIdAddress, 0xbeef)), kMaxNodeIdAddress);
  // Different generations of one address are different node ids (no aliasing in the kernel).
  EXPECT_NE(t.ToKernel(kAddr, 7), t.ToKernel(kAddr, 8));
  EXPECT_TRUE(InodeTable::SameGeneration(t.ToKernel(kAddr, 7), 7));
  EXPECT_TRUE(InodeTable::SameGeneration(t.ToKernel(kAddr, 7), 0x1'0007));
  EXPECT_FALSE(InodeTable::SameGeneration(t.ToKernel(kAddr, 7), 8));
  EXPECT_TRUE(InodeTable::SameGeneration(kKernelRootIno, 99));  // the root is never stale
}

TEST(InodeTableTest, ResolveRefusesNodeIdsOfAnOlderGeneration) {
  InodeTable t(10);
  constexpr InodeNo kAddr = 5000;
  const KernelIno old_id = t.ToKernel(kAddr, 3);
  const KernelIno new_id = t.ToKernel(kAddr, 4);
  // Not referenced by the kernel: nothing to compare with, the caller checks attributes.
  ASSERT_TRUE(t.Resolve(old_id).ok());
  EXPECT_EQ(*t.Resolve(old_id), kAddr);
  t.AddLookup(kAddr, 3);
  ASSERT_TRUE(t.Resolve(old_id).ok());
  EXPECT_EQ(t.Resolve(new_id).status().code(), Code::kStale);
  EXPECT_EQ(t.KnownKernelIno(kAddr), old_id);
  // The dinode is freed and its address reused by a new file, which the kernel looks up while
  // it still holds the old one: the old node id is stale from now on.
  t.AddLookup(kAddr, 4);
  EXPECT_EQ(t.Resolve(old_id).status().code(), Code::kStale);
  ASSERT_TRUE(t.Resolve(new_id).ok());
  EXPECT_EQ(*t.Resolve(new_id), kAddr);
  EXPECT_EQ(t.KnownKernelIno(kAddr), new_id);
  // Both node ids share the address's count: forgetting the old one keeps the new one known.
  EXPECT_EQ(t.LookupCount(kAddr), 2u);
  EXPECT_EQ(t.Forget(t.FromKernel(old_id), 1), 1u);
  EXPECT_TRUE(t.Known(kAddr));
  EXPECT_EQ(t.KnownKernelIno(kAddr), new_id);
  EXPECT_EQ(t.Forget(t.FromKernel(new_id), 1), 0u);
  EXPECT_EQ(t.KnownKernelIno(kAddr), std::nullopt);
  EXPECT_EQ(t.underflows(), 0u);
}

TEST(InodeTableTest, LookupCountsAndForget) {
  InodeTable t(10);
  EXPECT_EQ(t.LookupCount(500), 0u);
  EXPECT_FALSE(t.Known(500));
  EXPECT_EQ(t.AddLookup(500, 7), 1u);
  EXPECT_EQ(t.AddLookup(500, 7), 2u);
  EXPECT_EQ(t.AddLookup(500, 7), 3u);
  EXPECT_EQ(t.Generation(500), 7u);
  EXPECT_EQ(t.Size(), 1u);
  EXPECT_EQ(t.Forget(500, 2), 1u);
  EXPECT_TRUE(t.Known(500));
  EXPECT_EQ(t.Forget(500, 1), 0u);
  EXPECT_FALSE(t.Known(500));
  EXPECT_EQ(t.Size(), 0u);
  EXPECT_EQ(t.underflows(), 0u);
}

TEST(InodeTableTest, ForgetMoreThanKnownClampsAndIsCounted) {
  InodeTable t(10);
  t.AddLookup(42, 1);
  EXPECT_EQ(t.Forget(42, 5), 0u);
  EXPECT_EQ(t.underflows(), 1u);
  EXPECT_EQ(t.Forget(43, 1), 0u);
  EXPECT_EQ(t.underflows(), 2u);
  EXPECT_EQ(t.Forget(44, 0), 0u);  // forgetting nothing is harmless
  EXPECT_EQ(t.underflows(), 2u);
}

TEST(InodeTableTest, GenerationFollowsReuse) {
  InodeTable t(10);
  t.AddLookup(42, 1);
  t.Forget(42, 1);
  t.AddLookup(42, 2);  // block reused by a new dinode
  EXPECT_EQ(t.Generation(42), 2u);
}

// Many threads look up and forget overlapping inodes; every +1 is matched by a -1, so the table
// must end empty with no underflow. Run under TSan (preset tsan) to check the locking.
TEST(InodeTableTest, ConcurrentLookupForgetBalances) {
  InodeTable t(1);
  constexpr int kThreads = 8;
  constexpr int kIters = 20000;
  std::atomic<bool> go{false};
  std::vector<std::thread> threads;
  for (int i = 0; i < kThreads; ++i) {
    threads.emplace_back([&, i] {
      while (!go) std::this_thread::yield();
      for (int k = 0; k < kIters; ++k) {
        InodeNo ino = 100 + static_cast<InodeNo>((k * 7 + i) % 64);
        t.AddLookup(ino, 1);
        if (k % 3 == 0) (void)t.LookupCount(ino);
        t.Forget(ino, 1);
      }
    });
  }
  // A reader that walks all shards concurrently.
  threads.emplace_back([&] {
    while (!go) std::this_thread::yield();
    for (int k = 0; k < 2000; ++k) (void)t.Size();
  });
  go = true;
  for (auto& th : threads) th.join();
  EXPECT_EQ(t.Size(), 0u);
  EXPECT_EQ(t.underflows(), 0u);
}

// Batch forgets (forget_multi) interleaved with lookups of the same inode from other threads.
TEST(InodeTableTest, ConcurrentBatchForget) {
  InodeTable t(1);
  constexpr int kPerThread = 5000;
  std::vector<std::thread> threads;
  for (int i = 0; i < 4; ++i) {
    threads.emplace_back([&] {
      for (int k = 0; k < kPerThread; ++k) t.AddLookup(77, 3);
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(t.LookupCount(77), 4u * kPerThread);
  threads.clear();
  for (int i = 0; i < 4; ++i) {
    threads.emplace_back([&] {
      for (int k = 0; k < kPerThread / 5; ++k) t.Forget(77, 5);
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(t.LookupCount(77), 0u);
  EXPECT_FALSE(t.Known(77));
  EXPECT_EQ(t.underflows(), 0u);
}

}  // namespace
}  // namespace ugfs2::fusefs
