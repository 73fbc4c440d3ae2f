#include "cache_invalidator.h"

#include <cerrno>
#include <condition_variable>
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

// The node id of address `ino` looked up with generation `gen` (inode_table.h).
std::string NodeId(InodeNo ino, uint64_t gen) {
  return std::to_string((gen & 0xffff) << kNodeIdGenerationShift | ino);
}

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
  EXPECT_EQ(b.calls[0], "inode " + NodeId(555, 1) + " 0 0");
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
  EXPECT_EQ(b.calls[0], "inode " + NodeId(9, 1) + " 0 0");
  EXPECT_EQ(b.calls[1], "entry " + NodeId(9, 1) + " a");
  EXPECT_EQ(b.calls[2], "entry " + NodeId(9, 1) + " b");
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
  // Posts of a notification still queued are coalesced; every post is one or the other, and
  // each of the 16 inodes got at least one.
  EXPECT_EQ(b.calls.size() + inv.coalesced(), 1000u);
  EXPECT_GE(b.calls.size(), 16u);
  EXPECT_EQ(inv.issued(), b.calls.size());
}

// A backend whose notifications wait until released (a kernel page lock held elsewhere).
class GateBackend final : public NotifyBackend {
 public:
  int InvalInode(KernelIno ino, int64_t off, int64_t len) override {
    return Record("inode " + std::to_string(ino) + " " + std::to_string(off) + " " +
                  std::to_string(len));
  }
  int InvalEntry(KernelIno parent, std::string_view name) override {
    return Record("entry " + std::to_string(parent) + " " + std::string(name));
  }
  void Open() {
    {
      std::lock_guard<std::mutex> l(mu_);
      open_ = true;
    }
    cv_.notify_all();
  }
  void WaitBlocked() {
    std::unique_lock<std::mutex> l(mu_);
    cv_.wait(l, [&] { return blocked_ > 0; });
  }
  std::vector<std::string> Calls() {
    std::lock_guard<std::mutex> l(mu_);
    return calls_;
  }

 private:
  int Record(std::string call) {
    std::unique_lock<std::mutex> l(mu_);
    ++blocked_;
    cv_.notify_all();
    cv_.wait(l, [&] { return open_; });
    --blocked_;
    calls_.push_back(std::move(call));
    return 0;
  }
  std::mutex mu_;  // leaf lock
  std::condition_variable cv_;
  bool open_ = false;
  int blocked_ = 0;
  std::vector<std::string> calls_;
};

TEST(CacheInvalidatorTest, PostsCoveredByAQueuedItemAreCoalesced) {
  GateBackend b;
  InodeTable t(100);
  for (InodeNo i : {8, 9, 10, 11, 12}) t.AddLookup(i, 0);  // generation 0: node id = address
  CacheInvalidator inv(&b, &t);
  inv.PostInvalidateInode(8, 0, 0);
  b.WaitBlocked();                   // the worker issues this one: it is no longer queued
  inv.PostInvalidateInode(8, 0, 0);  // queued again: the one being issued may be too early
  inv.PostInvalidateInode(9, 0, 0);
  inv.PostInvalidateInode(9, 0, 0);        // identical: coalesced
  inv.PostInvalidateInode(9, 4096, 4096);  // inside the whole-file one: coalesced
  inv.PostInvalidateInode(9, -1, 0);       // attributes: coalesced
  inv.PostInvalidateInode(10, 8192, 4096);
  inv.PostInvalidateInode(10, 0, 4096);  // another range: queued
  inv.PostInvalidateInode(10, -1, 0);    // attributes, dropped by either: coalesced
  inv.PostInvalidateInode(11, -1, 0);
  inv.PostInvalidateInode(11, -1, 0);  // identical: coalesced
  inv.PostInvalidateInode(12, -1, 0);
  inv.PostInvalidateInode(12, 0, 4096);  // data after attributes: queued (covers more)
  inv.PostInvalidateEntry(9, "a");
  inv.PostInvalidateEntry(9, "a");  // coalesced
  inv.PostInvalidateEntry(9, "b");
  inv.PostInvalidateEntry(10, "a");
  EXPECT_EQ(inv.coalesced(), 6u);
  b.Open();
  inv.Drain();
  std::vector<std::string> want = {"inode 8 0 0",        "inode 8 0 0",     "inode 9 0 0",
                                   "inode 10 8192 4096", "inode 10 0 4096", "inode 11 -1 0",
                                   "inode 12 -1 0",      "inode 12 0 4096", "entry 9 a",
                                   "entry 9 b",          "entry 10 a"};
  EXPECT_EQ(b.Calls(), want);
  EXPECT_EQ(inv.issued(), want.size());
  // Nothing is queued any more: the same posts go through again.
  inv.PostInvalidateInode(9, -1, 0);
  inv.Drain();
  EXPECT_EQ(b.Calls().back(), "inode 9 -1 0");
}

}  // namespace
}  // namespace ugfs2::fusefs
