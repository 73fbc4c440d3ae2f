#include "cache_invalidator.h"

#include <cerrno>
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
    std::lock_guard<std::mutex> l(mu);
    calls.push_back("inode " + std::to_string(ino) + " " + std::to_string(off) + " " +
                    std::to_string(len));
    threads.push_back(std::this_thread::get_id());
    return result;
  }
  int InvalEntry(KernelIno parent, std::string_view name) override {
    std::lock_guard<std::mutex> l(mu);
    calls.push_back("entry " + std::to_string(parent) + " " + std::string(name));
    threads.push_back(std::this_thread::get_id());
    return result;
  }
  std::mutex mu;
  std::vector<std::string> calls;
  std::vector<std::thread::id> threads;
  int result = 0;
};

TEST(CacheInvalidatorTest, SkipsInodesTheKernelDoesNotKnow) {
  FakeBackend b;
  InodeTable t(100);
  CacheInvalidator inv(&b, &t);
  EXPECT_TRUE(inv.InvalidateInodeNow(555, 0, 0).ok());
  EXPECT_TRUE(b.calls.empty());
  EXPECT_EQ(inv.skipped(), 1u);
  t.AddLookup(555, 1);
  EXPECT_TRUE(inv.InvalidateInodeNow(555, 0, 0).ok());
  ASSERT_EQ(b.calls.size(), 1u);
  EXPECT_EQ(b.calls[0], "inode 555 0 0");
}

TEST(CacheInvalidatorTest, RootIsAlwaysKnownAndMapped) {
  FakeBackend b;
  InodeTable t(100);
  CacheInvalidator inv(&b, &t);
  EXPECT_TRUE(inv.InvalidateEntryNow(100, "name").ok());
  ASSERT_EQ(b.calls.size(), 1u);
  EXPECT_EQ(b.calls[0], "entry 1 name");
}

TEST(CacheInvalidatorTest, RefusesDataInvalidationInsideOwnIoHandler) {
  FakeBackend b;
  InodeTable t(100);
  t.AddLookup(7, 1);
  t.AddLookup(8, 1);
  CacheInvalidator inv(&b, &t);
  {
    IoScope scope(7);
    EXPECT_EQ(IoScope::Current(), 7u);
    Status st = inv.InvalidateInodeNow(7, 0, 4096);
    EXPECT_EQ(st.code(), Code::kDeadlock);
    EXPECT_TRUE(inv.InvalidateInodeNow(7, -1, 0).ok());  // attributes only: never blocks
    EXPECT_TRUE(inv.InvalidateInodeNow(8, 0, 0).ok());   // another inode
    inv.PostInvalidateInode(7, 0, 0);                    // deferred: fine
    inv.Drain();
  }
  EXPECT_EQ(IoScope::Current(), 0u);
  EXPECT_TRUE(inv.InvalidateInodeNow(7, 0, 0).ok());
  EXPECT_EQ(b.calls.size(), 4u);
}

TEST(CacheInvalidatorTest, PostedWorkRunsOnItsOwnThreadInOrder) {
  FakeBackend b;
  InodeTable t(100);
  t.AddLookup(9, 1);
  CacheInvalidator inv(&b, &t);
  inv.PostInvalidateInode(9, 0, 0);
  inv.PostInvalidateEntry(9, "a");
  inv.PostInvalidateEntry(9, "b");
  inv.Drain();
  ASSERT_EQ(b.calls.size(), 3u);
  EXPECT_EQ(b.calls[0], "inode 9 0 0");
  EXPECT_EQ(b.calls[1], "entry 9 a");
  EXPECT_EQ(b.calls[2], "entry 9 b");
  for (auto id : b.threads) EXPECT_NE(id, std::this_thread::get_id());
}

TEST(CacheInvalidatorTest, KernelEnoentIsSuccessOtherErrorsAreReported) {
  FakeBackend b;
  InodeTable t(100);
  t.AddLookup(9, 1);
  CacheInvalidator inv(&b, &t);
  b.result = -ENOENT;
  EXPECT_TRUE(inv.InvalidateInodeNow(9, 0, 0).ok());
  b.result = -EINVAL;
  EXPECT_FALSE(inv.InvalidateInodeNow(9, 0, 0).ok());
}

TEST(CacheInvalidatorTest, ConcurrentPostersAndDrain) {
  FakeBackend b;
  InodeTable t(100);
  for (InodeNo i = 200; i < 216; ++i) t.AddLookup(i, 1);
  CacheInvalidator inv(&b, &t);
  std::vector<std::thread> threads;
  for (int k = 0; k < 4; ++k) {
    threads.emplace_back([&, k] {
      for (int i = 0; i < 250; ++i) inv.PostInvalidateInode(200 + (i + k) % 16, -1, 0);
      inv.Drain();
    });
  }
  for (auto& th : threads) th.join();
  inv.Drain();
  EXPECT_EQ(b.calls.size(), 1000u);
}

}  // namespace
}  // namespace ugfs2::fusefs
