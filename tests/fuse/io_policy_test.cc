// The I/O policies (fuse/io_policy.h) on a real image, single node (lock_nolock): two
// "processes" (pids 101 and 102) each keep a DF glock on one file and then want the other file
// in SH, Jan Kara's ABBA shape as the daemon sees it. naive deadlocks (and switching to merged
// breaks the deadlock), proposal-2021 unwinds, merged keeps nothing across requests. The long
// linger makes the interleaving deterministic: kept glocks stay kept for the whole test.
#include "io_policy.h"

#include <atomic>
#include <chrono>
#include <functional>
#include <future>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "engine_test_util.h"
#include "fs/file_system.h"
#include "glock/holder_owner.h"

namespace ugfs2::fusefs {
namespace {

using testing::MakeImage;
using testing::MountImage;
using testing::Pattern;
using testing::RootCred;
using testing::TempDir;

constexpr auto kLongLinger = std::chrono::milliseconds(60000);
constexpr auto kBound = std::chrono::seconds(20);

class IoPolicyTest : public ::testing::Test {
 protected:
  void SetUp() override {
    image_ = MakeImage(dir_, "io.img", 256, 4096);
    fs_ = MountImage(image_);
    ASSERT_NE(fs_, nullptr);
    for (const char* name : {"A", "B"}) {
      auto a = fs_->Create(fs_->root(), name, 0100644, true, false, RootCred());
      ASSERT_TRUE(a.ok()) << a.status().ToString();
      const auto data = Pattern(64 * 1024, name[0]);
      ASSERT_TRUE(fs_->Write(a->ino, 0, data, false).ok());
      ino_.push_back(a->ino);
    }
  }
  void TearDown() override {
    if (fs_) {
      EXPECT_TRUE(fs_->Unmount().ok());
    }
  }
  // One 4 KiB request of `pid` on file `f` in `mode` through `policy`.
  Result<size_t> Io(IoPolicy& policy, int pid, int f, IoMode mode) {
    std::vector<uint8_t> buf(4096);
    glock::OwnerScope owner({pid, "READ " + std::to_string(f)});
    return policy.Run(pid, ino_[f], mode, false, buf.size(),
                      [&](uint64_t hold, IoMode m, size_t from, size_t len) {
                        return fs_->ReadIo(ino_[f], from, std::span(buf).subspan(from, len), m,
                                           hold);
                      });
  }
  // How many holders the dump shows waiting ("f:...W").
  int Waiting() {
    const std::string d = fs_->DumpGlocks();
    int n = 0;
    for (size_t p = d.find(" H: "); p != std::string::npos; p = d.find(" H: ", p + 1)) {
      const size_t f = d.find(" f:", p);
      const size_t e = d.find(' ', f + 3);
      if (d.substr(f + 3, e - f - 3).find('W') != std::string::npos) n++;
    }
    return n;
  }
  bool WaitFor(const std::function<bool()>& cond) {
    const auto until = std::chrono::steady_clock::now() + kBound;
    while (std::chrono::steady_clock::now() < until) {
      if (cond()) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(5));  // bounded poll
    }
    return cond();
  }

  TempDir dir_;
  std::string image_;
  std::unique_ptr<FileSystem> fs_;
  std::vector<InodeNo> ino_;
};

TEST_F(IoPolicyTest, NaiveDeadlocksAndSwitchingToMergedBreaksIt) {
  IoPolicy policy(fs_.get(), Policy::kNaive, kLongLinger);
  ASSERT_TRUE(Io(policy, 101, 0, IoMode::kDeferred).ok());  // 101 keeps DF on A
  ASSERT_TRUE(Io(policy, 102, 1, IoMode::kDeferred).ok());  // 102 keeps DF on B
  EXPECT_EQ(policy.stats().kept_now, 2u);
  auto f1 = std::async(std::launch::async, [&] { return Io(policy, 101, 1, IoMode::kShared); });
  auto f2 = std::async(std::launch::async, [&] { return Io(policy, 102, 0, IoMode::kShared); });
  ASSERT_TRUE(WaitFor([&] { return Waiting() == 2; })) << fs_->DumpGlocks();
  // A deadlock: neither gets anywhere while the other keeps its glock.
  EXPECT_EQ(f1.wait_for(std::chrono::milliseconds(300)), std::future_status::timeout);
  EXPECT_EQ(f2.wait_for(std::chrono::milliseconds(0)), std::future_status::timeout);
  const std::string dump = fs_->DumpGlocks();
  EXPECT_NE(dump.find("f:HR e:0 p:101"), std::string::npos) << dump;
  EXPECT_NE(dump.find("f:HR e:0 p:102"), std::string::npos) << dump;
  EXPECT_NE(dump.find("W e:0 p:101"), std::string::npos) << dump;  // waiting (flags end in W)
  EXPECT_GE(policy.stats().waits, 2u);
  policy.Set(Policy::kMerged);  // drops the kept glocks: both requests complete
  ASSERT_EQ(f1.wait_for(kBound), std::future_status::ready) << fs_->DumpGlocks();
  ASSERT_EQ(f2.wait_for(kBound), std::future_status::ready) << fs_->DumpGlocks();
  EXPECT_TRUE(f1.get().ok());
  EXPECT_TRUE(f2.get().ok());
  EXPECT_TRUE(WaitFor([&] { return policy.stats().kept_now == 0; }));
}

// A request the revoker parked is a wait for a glock (a fault on a mapping whose glock is
// being demoted): under naive its process keeps its outer glocks past the linger until the
// rerun starts, as a task blocked in a fault kept its glock. Without that, a cross-node cycle
// dissolved whenever the fault came during the other node's demote (cluster_deadlock b2). The
// process's own kept glock on the parked request's inode is not kept for it: that demote is
// what the parked request waits for.
TEST_F(IoPolicyTest, NaiveKeepsTheGlocksOfAProcessWithAParkedRequest) {
  constexpr auto kShortLinger = std::chrono::milliseconds(10);
  IoPolicy policy(fs_.get(), Policy::kNaive, kShortLinger);
  // Control: an idle process's kept glock ends after the linger; another process gets A.
  ASSERT_TRUE(Io(policy, 101, 0, IoMode::kDeferred).ok());
  ASSERT_TRUE(WaitFor([&] { return policy.stats().kept_now == 0; })) << fs_->DumpGlocks();
  ASSERT_TRUE(Io(policy, 102, 0, IoMode::kShared).ok());
  ASSERT_TRUE(WaitFor([&] { return policy.stats().kept_now == 0; })) << fs_->DumpGlocks();

  ASSERT_TRUE(Io(policy, 101, 0, IoMode::kDeferred).ok());  // 101 keeps DF on A
  policy.Parked(101, ino_[1]);                              // ... and waits parked on B
  auto other = std::async(std::launch::async, [&] { return Io(policy, 102, 0, IoMode::kShared); });
  ASSERT_TRUE(WaitFor([&] { return Waiting() == 1; })) << fs_->DumpGlocks();
  // Thirty lingers later A is still 101's.
  EXPECT_EQ(other.wait_for(30 * kShortLinger), std::future_status::timeout) << fs_->DumpGlocks();
  EXPECT_EQ(policy.stats().kept_now, 1u);
  EXPECT_EQ(policy.stats().parked, 1u);
  policy.Unparked(101, ino_[1]);  // the rerun starts: 101 no longer waits, A lingers out
  ASSERT_EQ(other.wait_for(kBound), std::future_status::ready) << fs_->DumpGlocks();
  EXPECT_TRUE(other.get().ok());
  ASSERT_TRUE(WaitFor([&] { return policy.stats().kept_now == 0; })) << fs_->DumpGlocks();

  // Parked on A itself: A's demote is what it waits for, so A is not kept for it.
  ASSERT_TRUE(Io(policy, 101, 0, IoMode::kDeferred).ok());
  policy.Parked(101, ino_[0]);
  auto own = std::async(std::launch::async, [&] { return Io(policy, 102, 0, IoMode::kShared); });
  ASSERT_EQ(own.wait_for(kBound), std::future_status::ready) << fs_->DumpGlocks();
  EXPECT_TRUE(own.get().ok());
  policy.Unparked(101, ino_[0]);

  // A rerun that starts before its handler noted the park balances all the same.
  ASSERT_TRUE(Io(policy, 101, 0, IoMode::kDeferred).ok());
  policy.Unparked(101, ino_[1]);
  policy.Parked(101, ino_[1]);
  EXPECT_TRUE(WaitFor([&] { return policy.stats().kept_now == 0; })) << fs_->DumpGlocks();
}

// Under naive too, a new request does not reuse a kept glock somebody waits for: it queues
// behind the waiter, as gfs2 grants no new holder while a demote is pending. (Reusing it let a
// process faulting pages of a glock being demoted keep it, page after page.)
TEST_F(IoPolicyTest, NaiveQueuesBehindAWaiterInsteadOfReusingItsKeptGlock) {
  constexpr auto kShortLinger = std::chrono::milliseconds(10);
  IoPolicy policy(fs_.get(), Policy::kNaive, kShortLinger);
  ASSERT_TRUE(Io(policy, 101, 0, IoMode::kDeferred).ok());  // 101 keeps DF on A
  auto other = std::async(std::launch::async, [&] { return Io(policy, 102, 0, IoMode::kShared); });
  ASSERT_TRUE(WaitFor([&] { return Waiting() == 1; })) << fs_->DumpGlocks();
  // 101's next request on A goes after 102's: 102 is done by the time it returns.
  ASSERT_TRUE(Io(policy, 101, 0, IoMode::kDeferred).ok());
  EXPECT_EQ(other.wait_for(std::chrono::milliseconds(0)), std::future_status::ready)
      << fs_->DumpGlocks();
  ASSERT_EQ(other.wait_for(kBound), std::future_status::ready) << fs_->DumpGlocks();
  EXPECT_TRUE(other.get().ok());
}

TEST_F(IoPolicyTest, Proposal2021UnwindsInsteadOfDeadlocking) {
  IoPolicy policy(fs_.get(), Policy::kProposal2021, kLongLinger);
  ASSERT_TRUE(Io(policy, 101, 0, IoMode::kDeferred).ok());
  ASSERT_TRUE(Io(policy, 102, 1, IoMode::kDeferred).ok());
  auto f1 = std::async(std::launch::async, [&] { return Io(policy, 101, 1, IoMode::kShared); });
  auto f2 = std::async(std::launch::async, [&] { return Io(policy, 102, 0, IoMode::kShared); });
  ASSERT_EQ(f1.wait_for(kBound), std::future_status::ready) << fs_->DumpGlocks();
  ASSERT_EQ(f2.wait_for(kBound), std::future_status::ready) << fs_->DumpGlocks();
  EXPECT_TRUE(f1.get().ok());
  EXPECT_TRUE(f2.get().ok());
  EXPECT_GE(policy.stats().unwinds, 1u);
  EXPECT_GE(policy.stats().retries, 1u);
  EXPECT_NE(fs_->DumpGlocks().find(" retry:"), std::string::npos);
}

// merged: a request longer than a window (the core's callers; the kernel sends at most 1 MiB,
// one window) lets a waiter in between windows and resumes at the byte reached.
TEST_F(IoPolicyTest, MergedLetsAWaiterInBetweenWindowsAndResumes) {
  IoPolicy policy(fs_.get(), Policy::kMerged, kLongLinger);
  constexpr size_t kLen = 3 << 20;
  std::vector<std::pair<size_t, size_t>> rounds;
  std::future<Status> other;
  glock::OwnerScope owner({101, "long READ"});
  auto r = policy.Run(
      101, ino_[0], IoMode::kDeferred, false, kLen,
      [&](uint64_t, IoMode, size_t from, size_t len) -> Result<size_t> {
        rounds.emplace_back(from, len);
        if (rounds.size() == 1) {
          // Another holder wants SH while this round holds DF (a holder, not a READ: a READ's
          // atime update would then want EX, behind the next window).
          other = std::async(std::launch::async, [&]() -> Status {
            auto h = fs_->HoldInode(ino_[0], IoMode::kShared, false);
            if (!h.ok()) return h.status();
            return fs_->DropHold(*h);
          });
          if (!WaitFor([&] { return Waiting() == 1; })) {
            return Status::IoError("no waiter: " + fs_->DumpGlocks());
          }
        } else if (rounds.size() == 2 && other.wait_for(kBound) != std::future_status::ready) {
          return Status::IoError("the waiter was not let in between windows: " + fs_->DumpGlocks());
        }
        return len;
      });
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(*r, kLen);
  ASSERT_GE(rounds.size(), 2u);
  EXPECT_EQ(rounds[0], (std::pair<size_t, size_t>{0, 1 << 20}));
  size_t at = 0;
  for (const auto& [from, len] : rounds) {
    EXPECT_EQ(from, at);
    at += len;
  }
  EXPECT_EQ(at, kLen);
  EXPECT_GE(policy.stats().retries, 1u);
  ASSERT_TRUE(other.valid());
  EXPECT_TRUE(other.get().ok());
}

TEST_F(IoPolicyTest, MergedKeepsNothingAcrossRequests) {
  IoPolicy policy(fs_.get(), Policy::kMerged, kLongLinger);
  ASSERT_TRUE(Io(policy, 101, 0, IoMode::kDeferred).ok());
  ASSERT_TRUE(Io(policy, 102, 1, IoMode::kDeferred).ok());
  EXPECT_EQ(policy.stats().kept_now, 0u);
  ASSERT_TRUE(Io(policy, 101, 1, IoMode::kShared).ok());
  ASSERT_TRUE(Io(policy, 102, 0, IoMode::kShared).ok());
  EXPECT_EQ(policy.stats().kept, 0u);
  EXPECT_EQ(fs_->DumpGlocks().find("HR e:"), std::string::npos) << fs_->DumpGlocks();
}

// A write() sends a GETATTR and a GETXATTR (security.capability) before its WRITE while the
// process still keeps the EX of its previous write: served under that EX, they do not wait for
// the process's own glock (under naive that wait lasted until the linger: 20 ms per write()).
TEST_F(IoPolicyTest, AGetattrOfTheProcessIsServedUnderItsKeptGlock) {
  const auto data = Pattern(4096, 9);
  const std::vector<uint8_t> cap = {1, 2, 3};
  ASSERT_TRUE(fs_->SetXattr(ino_[0], "security.capability", cap, 0, RootCred()).ok());
  std::vector<uint8_t> got(16);
  for (Policy p : {Policy::kNaive, Policy::kProposal2021}) {
    SCOPED_TRACE(PolicyName(p));
    IoPolicy policy(fs_.get(), p, kLongLinger);
    auto attr_under = [&](int pid, InodeNo ino) {
      std::optional<Result<Attr>> a;
      const bool lent =
          policy.UnderKept(pid, ino, [&](uint64_t hold) { a = fs_->GetAttrUnder(ino, hold); });
      EXPECT_EQ(lent, a.has_value());
      return a;
    };
    auto write = [&](const std::function<void()>& during) {
      return policy.Run(101, ino_[0], IoMode::kExclusive, true, data.size(),
                        [&](uint64_t hold, IoMode m, size_t from, size_t len) {
                          if (during) during();
                          return fs_->WriteIo(ino_[0], 8192 + from,
                                              std::span(data).subspan(from, len), m, hold);
                        });
    };
    ASSERT_TRUE(write(nullptr).ok());
    ASSERT_EQ(policy.stats().kept_now, 1u);
    auto a = std::async(std::launch::async, [&] { return attr_under(101, ino_[0]); });
    ASSERT_EQ(a.wait_for(kBound), std::future_status::ready) << fs_->DumpGlocks();
    auto attr = a.get();
    ASSERT_TRUE(attr.has_value());
    ASSERT_TRUE(attr->ok()) << attr->status().ToString();
    EXPECT_EQ((*attr)->size, 64u * 1024);
    auto x = std::async(std::launch::async, [&] {
      std::optional<Result<size_t>> r;
      policy.UnderKept(101, ino_[0], [&](uint64_t hold) {
        r = fs_->GetXattrUnder(ino_[0], "security.capability", got, hold);
      });
      return r;
    });
    ASSERT_EQ(x.wait_for(kBound), std::future_status::ready) << fs_->DumpGlocks();
    auto xr = x.get();
    ASSERT_TRUE(xr.has_value());
    ASSERT_TRUE(xr->ok()) << xr->status().ToString();
    EXPECT_EQ(std::vector<uint8_t>(got.begin(), got.begin() + **xr), cap);
    EXPECT_EQ(policy.stats().lent, 2u);
    // Lent, not used up: still kept, and the process's next request runs under it again.
    EXPECT_EQ(policy.stats().kept_now, 1u);
    ASSERT_TRUE(write(nullptr).ok());
    EXPECT_EQ(policy.stats().kept, 1u);
    // Not lent: to another process, nor while a request of the process runs under it.
    EXPECT_FALSE(attr_under(102, ino_[0]).has_value());
    EXPECT_FALSE(attr_under(101, ino_[1]).has_value());
    bool lent_during = true;
    ASSERT_TRUE(write([&] { lent_during = attr_under(101, ino_[0]).has_value(); }).ok());
    EXPECT_FALSE(lent_during);
    if (p == Policy::kNaive) {
      // The control: a GETATTR / GETXATTR under a holder of its own waits for the kept EX.
      auto plain = std::async(std::launch::async, [&] { return fs_->GetAttr(ino_[0]); });
      auto plain_x = std::async(std::launch::async, [&] {
        std::vector<uint8_t> b(16);
        return fs_->GetXattr(ino_[0], "security.capability", b);
      });
      EXPECT_EQ(plain.wait_for(std::chrono::milliseconds(300)), std::future_status::timeout);
      EXPECT_EQ(plain_x.wait_for(std::chrono::milliseconds(10)), std::future_status::timeout);
      policy.Set(Policy::kMerged);  // drops the kept EX
      ASSERT_EQ(plain.wait_for(kBound), std::future_status::ready) << fs_->DumpGlocks();
      ASSERT_EQ(plain_x.wait_for(kBound), std::future_status::ready) << fs_->DumpGlocks();
      EXPECT_TRUE(plain.get().ok());
      EXPECT_TRUE(plain_x.get().ok());
    }
    policy.Stop();
    EXPECT_FALSE(attr_under(101, ino_[0]).has_value());
  }
  IoPolicy merged(fs_.get(), Policy::kMerged, kLongLinger);
  ASSERT_TRUE(Io(merged, 101, 0, IoMode::kShared).ok());
  // merged keeps nothing to lend
  EXPECT_FALSE(merged.UnderKept(101, ino_[0], [](uint64_t) { ADD_FAILURE() << "lent"; }));
}

TEST_F(IoPolicyTest, DirectWriteNeedingAllocationFallsBackToExclusive) {
  for (Policy p : {Policy::kMerged, Policy::kProposal2021, Policy::kNaive}) {
    SCOPED_TRACE(PolicyName(p));
    IoPolicy policy(fs_.get(), p, kLongLinger);
    const auto data = Pattern(8192, 7);
    auto before = fs_->GetAttr(ino_[0]);
    ASSERT_TRUE(before.ok());
    // In place: inside the file, every block allocated.
    auto w = policy.Run(101, ino_[0], IoMode::kDeferred, true, 4096,
                        [&](uint64_t hold, IoMode m, size_t from, size_t len) {
                          return fs_->WriteIo(ino_[0], 4096 + from,
                                              std::span(data).subspan(from, len), m, hold);
                        });
    ASSERT_TRUE(w.ok()) << w.status().ToString();
    // Beyond EOF: needs allocation and a new size, i.e. EX.
    const uint64_t at = before->size;
    w = policy.Run(101, ino_[0], IoMode::kDeferred, true, data.size(),
                   [&](uint64_t hold, IoMode m, size_t from, size_t len) {
                     return fs_->WriteIo(ino_[0], at + from, std::span(data).subspan(from, len), m,
                                         hold);
                   });
    ASSERT_TRUE(w.ok()) << w.status().ToString();
    EXPECT_EQ(*w, data.size());
    auto after = fs_->GetAttr(ino_[0]);
    ASSERT_TRUE(after.ok());
    EXPECT_EQ(after->size, at + data.size());
    std::vector<uint8_t> back(data.size());
    auto r = fs_->Read(ino_[0], at, back);
    ASSERT_TRUE(r.ok());
    EXPECT_EQ(back, data);
    if (p != Policy::kMerged) {
      EXPECT_EQ(policy.stats().fallbacks, 1u);
    }
    policy.Stop();
  }
}

}  // namespace
}  // namespace ugfs2::fusefs
