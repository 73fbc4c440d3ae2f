// Engine tests on real mkfs.gfs2 images: every case ends with an unmount and fsck-oracle CLEAN.
#include <sys/stat.h>

#include <algorithm>
#include <chrono>
#include <map>
#include <random>
#include <set>
#include <span>
#include <thread>
#include <utility>
#include <vector>

#include <gtest/gtest.h>

#include "engine_test_util.h"
#include "fs/file_system.h"

namespace ugfs2 {
namespace {

using testing::FsckClean;
using testing::MakeImage;
using testing::MountImage;
using testing::RootCred;
using testing::TempDir;

std::vector<uint8_t> Pattern(size_t n, uint32_t seed) {
  std::vector<uint8_t> v(n);
  std::mt19937 rng(seed);
  for (auto& b : v) b = static_cast<uint8_t>(rng());
  return v;
}

InodeNo MustCreate(FileSystem& fs, InodeNo dir, const std::string& name, uint32_t mode = 0100644) {
  auto a = fs.Mknod(dir, name, mode, 0, RootCred());
  EXPECT_TRUE(a.ok()) << name << ": " << a.status().ToString();
  return a.ok() ? a->ino : 0;
}

void WriteAll(FileSystem& fs, InodeNo ino, uint64_t off, const std::vector<uint8_t>& data) {
  auto w = fs.Write(ino, off, data, false);
  ASSERT_TRUE(w.ok()) << w.status().ToString();
  ASSERT_EQ(*w, data.size());
}

std::vector<uint8_t> ReadAll(FileSystem& fs, InodeNo ino, uint64_t off, size_t n) {
  std::vector<uint8_t> buf(n);
  auto r = fs.Read(ino, off, buf);
  EXPECT_TRUE(r.ok()) << r.status().ToString();
  if (r.ok()) buf.resize(*r);
  return buf;
}

std::set<std::string> ListDir(FileSystem& fs, InodeNo dir, size_t chunk = 0) {
  std::set<std::string> names;
  uint64_t cookie = 0;
  for (;;) {
    size_t got = 0;
    bool more = false;
    Status st = fs.ReadDir(dir, cookie, [&](const DirEntry& e) {
      if (chunk && got == chunk) {
        more = true;
        return false;
      }
      EXPECT_TRUE(names.insert(e.name).second) << "duplicate entry " << e.name;
      EXPECT_GT(e.next_cookie, cookie);
      cookie = e.next_cookie;
      got++;
      return true;
    });
    EXPECT_TRUE(st.ok()) << st.ToString();
    if (!more) break;
  }
  return names;
}

void UnmountAndCheck(std::unique_ptr<FileSystem> fs, const std::string& img) {
  ASSERT_TRUE(fs->Unmount().ok());
  fs.reset();
  std::string report;
  EXPECT_TRUE(FsckClean(img, &report)) << report;
}

class EngineBsizeTest : public ::testing::TestWithParam<uint32_t> {};

TEST_P(EngineBsizeTest, MountUnmountLeavesCleanVolume) {
  TempDir dir;
  std::string img = MakeImage(dir, "v.img", 128, GetParam());
  auto fs = MountImage(img);
  ASSERT_TRUE(fs);
  auto st = fs->StatFs();
  ASSERT_TRUE(st.ok());
  EXPECT_GT(st->bfree, 0u);
  UnmountAndCheck(std::move(fs), img);
}

TEST_P(EngineBsizeTest, FilesDirsLinksSurviveRemount) {
  TempDir dir;
  const uint32_t bs = GetParam();
  std::string img = MakeImage(dir, "v.img", 256, bs);
  std::map<std::string, std::vector<uint8_t>> content;
  {
    auto fs = MountImage(img);
    ASSERT_TRUE(fs);
    InodeNo root = fs->root();
    auto d = fs->Mkdir(root, "sub", 0755, RootCred());
    ASSERT_TRUE(d.ok()) << d.status().ToString();
    std::vector<size_t> sizes = {0, 1, 100, bs - 232, bs - 231, bs, 3 * bs + 7, 1 << 20, 5 << 20};
    for (size_t i = 0; i < sizes.size(); ++i) {
      std::string name = "f" + std::to_string(i);
      InodeNo ino = MustCreate(*fs, d->ino, name);
      auto data = Pattern(sizes[i], static_cast<uint32_t>(i));
      if (!data.empty()) WriteAll(*fs, ino, 0, data);
      content[name] = data;
    }
    ASSERT_TRUE(fs->Symlink(root, "link", "sub/f1", RootCred()).ok());
    auto f1 = fs->Lookup(d->ino, "f1");
    ASSERT_TRUE(f1.ok());
    ASSERT_TRUE(fs->Link(f1->ino, root, "hard").ok());
    ASSERT_TRUE(fs->Mknod(root, "fifo", S_IFIFO | 0644, 0, RootCred()).ok());
    ASSERT_TRUE(fs->Mknod(root, "chr", S_IFCHR | 0644, (1 << 8) | 3, RootCred()).ok());
    UnmountAndCheck(std::move(fs), img);
  }
  auto fs = MountImage(img);
  ASSERT_TRUE(fs);
  InodeNo root = fs->root();
  auto d = fs->Lookup(root, "sub");
  ASSERT_TRUE(d.ok());
  EXPECT_EQ(d->nlink, 2u);
  for (const auto& [name, data] : content) {
    auto a = fs->Lookup(d->ino, name);
    ASSERT_TRUE(a.ok()) << name;
    EXPECT_EQ(a->size, data.size());
    EXPECT_EQ(ReadAll(*fs, a->ino, 0, data.size() + 10), data) << name;
  }
  auto l = fs->Lookup(root, "link");
  ASSERT_TRUE(l.ok());
  EXPECT_EQ(*fs->ReadLink(l->ino), "sub/f1");
  auto h = fs->Lookup(root, "hard");
  ASSERT_TRUE(h.ok());
  EXPECT_EQ(h->nlink, 2u);
  auto root_attr = fs->GetAttr(root);
  EXPECT_EQ(root_attr->nlink, 3u);
  EXPECT_EQ(ListDir(*fs, root),
            (std::set<std::string>{".", "..", "sub", "link", "hard", "fifo", "chr"}));
  UnmountAndCheck(std::move(fs), img);
}

INSTANTIATE_TEST_SUITE_P(BlockSizes, EngineBsizeTest, ::testing::Values(512, 1024, 2048, 4096));

TEST(EngineTest, BigDirectoryGrowsAndShrinks) {
  TempDir dir;
  std::string img = MakeImage(dir, "v.img", 256, 1024);
  auto fs = MountImage(img);
  ASSERT_TRUE(fs);
  auto d = fs->Mkdir(fs->root(), "big", 0755, RootCred());
  ASSERT_TRUE(d.ok());
  const int n = 6000;
  std::set<std::string> expect = {".", ".."};
  for (int i = 0; i < n; ++i) {
    std::string name = "file_" + std::to_string(i) + "_with_a_longish_name";
    MustCreate(*fs, d->ino, name);
    expect.insert(name);
  }
  EXPECT_EQ(ListDir(*fs, d->ino), expect);
  EXPECT_EQ(ListDir(*fs, d->ino, 7), expect);  // resumes from cookies
  for (int i = 0; i < n; i += 2) {
    std::string name = "file_" + std::to_string(i) + "_with_a_longish_name";
    ASSERT_TRUE(fs->Unlink(d->ino, name).ok()) << name;
    expect.erase(name);
  }
  EXPECT_EQ(ListDir(*fs, d->ino), expect);
  UnmountAndCheck(std::move(fs), img);
  fs = MountImage(img);
  ASSERT_TRUE(fs);
  d = fs->Lookup(fs->root(), "big");
  ASSERT_TRUE(d.ok());
  EXPECT_EQ(ListDir(*fs, d->ino), expect);
  for (const auto& name : expect) {
    if (name == "." || name == "..") continue;
    ASSERT_TRUE(fs->Unlink(d->ino, name).ok());
  }
  ASSERT_TRUE(fs->Rmdir(fs->root(), "big").ok());
  UnmountAndCheck(std::move(fs), img);
}

TEST(EngineTest, SparseFileAtScatteredOffsets) {
  TempDir dir;
  std::string img = MakeImage(dir, "v.img", 256, 1024);
  auto fs = MountImage(img);
  ASSERT_TRUE(fs);
  InodeNo ino = MustCreate(*fs, fs->root(), "sparse");
  std::mt19937_64 rng(7);
  std::map<uint64_t, std::vector<uint8_t>> writes;
  for (int i = 0; i < 200; ++i) {
    uint64_t off = (rng() % (2ull << 30)) & ~uint64_t{4095};
    writes[off] = Pattern(4096, i);
  }
  writes[(2ull << 30) - 4096] = Pattern(4096, 999);
  for (const auto& [off, data] : writes) WriteAll(*fs, ino, off, data);
  auto a = fs->GetAttr(ino);
  EXPECT_EQ(a->size, 2ull << 30);
  EXPECT_LT(a->blocks512 * 512, 64ull << 20);
  UnmountAndCheck(std::move(fs), img);
  fs = MountImage(img);
  ASSERT_TRUE(fs);
  for (const auto& [off, data] : writes) EXPECT_EQ(ReadAll(*fs, ino, off, 4096), data);
  // A hole reads as zeros; SEEK_DATA/SEEK_HOLE find the data.
  auto first = writes.begin()->first;
  if (first >= 8192) {
    EXPECT_EQ(ReadAll(*fs, ino, 0, 4096), std::vector<uint8_t>(4096, 0));
    auto sd = fs->Lseek(ino, 0, 3);
    ASSERT_TRUE(sd.ok());
    EXPECT_EQ(*sd, first);
    auto sh = fs->Lseek(ino, first, 4);
    ASSERT_TRUE(sh.ok());
    EXPECT_GT(*sh, first);
  }
  // Truncate down then up: the tail reads as zeros.
  SetAttrRequest req;
  req.mask = kSetSize;
  req.size = 1 << 20;
  ASSERT_TRUE(fs->SetAttr(ino, req, RootCred()).ok());
  req.size = 3 << 20;
  ASSERT_TRUE(fs->SetAttr(ino, req, RootCred()).ok());
  EXPECT_EQ(ReadAll(*fs, ino, 1 << 20, 4096), std::vector<uint8_t>(4096, 0));
  UnmountAndCheck(std::move(fs), img);
}

TEST(EngineTest, UnlinkedOpenFileStaysReadableUntilRelease) {
  TempDir dir;
  std::string img = MakeImage(dir, "v.img", 128, 4096);
  auto fs = MountImage(img);
  ASSERT_TRUE(fs);
  auto before = fs->StatFs();
  InodeNo ino = MustCreate(*fs, fs->root(), "victim");
  auto data = Pattern(3 << 20, 3);
  WriteAll(*fs, ino, 0, data);
  ASSERT_TRUE(fs->Open(ino, false, RootCred()).ok());
  ASSERT_TRUE(fs->Unlink(fs->root(), "victim").ok());
  EXPECT_EQ(ReadAll(*fs, ino, 0, data.size()), data);
  EXPECT_FALSE(fs->Lookup(fs->root(), "victim").ok());
  ASSERT_TRUE(fs->Release(ino).ok());
  ASSERT_TRUE(fs->SyncFs().ok());
  auto after = fs->StatFs();
  EXPECT_EQ(before->bfree, after->bfree);
  UnmountAndCheck(std::move(fs), img);
}

TEST(EngineTest, UnlinkedOpenFileFreedAtUnmount) {
  TempDir dir;
  std::string img = MakeImage(dir, "v.img", 128, 4096);
  auto fs = MountImage(img);
  ASSERT_TRUE(fs);
  InodeNo ino = MustCreate(*fs, fs->root(), "victim");
  WriteAll(*fs, ino, 0, Pattern(100000, 1));
  ASSERT_TRUE(fs->Open(ino, false, RootCred()).ok());
  ASSERT_TRUE(fs->Unlink(fs->root(), "victim").ok());
  ASSERT_TRUE(fs->SyncFs().ok());
  UnmountAndCheck(std::move(fs), img);
}

// A burst of creates with no fsync: once enough metadata is dirty the flusher thread commits
// on its own (no operation waits for it), and the in-place writes after the commit send the
// new dinodes, which sit side by side, as shared device requests. Everything survives a remount.
TEST(EngineTest, BurstOfCreatesCommitsInBackgroundWithCoalescedWrites) {
  TempDir dir;
  std::string img = MakeImage(dir, "v.img", 256, 4096);
  constexpr int kFiles = 600;  // an eighth of this journal's commit budget is ~250 blocks
  {
    auto fs = MountImage(img);
    ASSERT_TRUE(fs);
    const FsCounters start = fs->Counters();
    for (int i = 0; i < kFiles; ++i) MustCreate(*fs, fs->root(), "c" + std::to_string(i));
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
    while (fs->Counters().log_flushes == start.log_flushes &&
           std::chrono::steady_clock::now() < deadline) {
      std::this_thread::sleep_for(std::chrono::milliseconds(5));  // polling a counter, bounded
    }
    const FsCounters after = fs->Counters();
    ASSERT_GT(after.log_flushes, start.log_flushes)
        << "no commit within 20 s of " << kFiles << " creates without fsync";
    const uint64_t blocks = after.meta_writes - start.meta_writes;
    const uint64_t requests = after.meta_write_requests - start.meta_write_requests;
    ASSERT_GT(blocks, 0u);
    EXPECT_LT(requests * 4, blocks) << blocks << " blocks written in place in " << requests
                                    << " requests: neighbours were not coalesced";
    UnmountAndCheck(std::move(fs), img);
  }
  auto fs = MountImage(img);
  ASSERT_TRUE(fs);
  const std::set<std::string> names = ListDir(*fs, fs->root());
  EXPECT_EQ(
      std::count_if(names.begin(), names.end(), [](const std::string& n) { return n[0] == 'c'; }),
      kFiles);
  for (int i = 0; i < kFiles; i += 97) {
    EXPECT_TRUE(fs->Lookup(fs->root(), "c" + std::to_string(i)).ok()) << i;
  }
  UnmountAndCheck(std::move(fs), img);
}

// A direct write (DF) cannot change the dinode: its mtime/ctime are updated after the write,
// under EX, by TouchAfterDirectWrite (gfs2's file_update_time before a direct write), at most
// once per kDirectWriteTimeGranularityMs, and skipped while another holder keeps the glock.
TEST(EngineTest, DirectWriteUpdatesTimesAfterItsGlockIsReleased) {
  TempDir dir;
  std::string img = MakeImage(dir, "v.img", 256, 4096);
  auto fs = MountImage(img);
  ASSERT_TRUE(fs);
  InodeNo ino = MustCreate(*fs, fs->root(), "f");
  std::vector<uint8_t> data(64 * 1024, 0x5a);
  ASSERT_TRUE(fs->Write(ino, 0, data, false).ok());
  auto age = [&] {  // mtime and ctime a day old
    SetAttrRequest req;
    req.mask = kSetMtime | kSetCtime;
    req.mtime = {1700000000, 0};
    req.ctime = {1700000000, 0};
    ASSERT_TRUE(fs->SetAttr(ino, req, RootCred()).ok());
  };
  auto times = [&] {
    auto a = fs->GetAttr(ino);
    EXPECT_TRUE(a.ok()) << a.status().ToString();
    return a.ok() ? std::pair<int64_t, int64_t>{a->mtime.sec, a->ctime.sec}
                  : std::pair<int64_t, int64_t>{0, 0};
  };
  const std::span<const uint8_t> page(data.data(), 4096);
  age();
  // The write itself (in place: the blocks exist) changes no times; the touch after it does.
  auto w = fs->WriteIo(ino, 8192, page, IoMode::kDeferred, 0);
  ASSERT_TRUE(w.ok()) << w.status().ToString();
  EXPECT_EQ(times(), (std::pair<int64_t, int64_t>{1700000000, 1700000000}));
  const int64_t before = std::chrono::duration_cast<std::chrono::seconds>(
                             std::chrono::system_clock::now().time_since_epoch())
                             .count();
  fs->TouchAfterDirectWrite(ino);
  auto [m1, c1] = times();
  EXPECT_GE(m1, before);
  EXPECT_GE(c1, before);
  auto a1 = fs->GetAttr(ino);
  ASSERT_TRUE(a1.ok());
  // Another direct write right away: within the granularity, nothing to do.
  ASSERT_TRUE(fs->WriteIo(ino, 0, page, IoMode::kDeferred, 0).ok());
  fs->TouchAfterDirectWrite(ino);
  auto a2 = fs->GetAttr(ino);
  ASSERT_TRUE(a2.ok());
  EXPECT_EQ(a2->mtime.sec, a1->mtime.sec);
  EXPECT_EQ(a2->mtime.nsec, a1->mtime.nsec);
  // Another holder keeps DF: the touch does not wait for it. Once the holder has left, the
  // background retry makes the update although no write follows (the last write of a burst
  // must not leave stale times).
  age();
  auto hold = fs->HoldInode(ino, IoMode::kDeferred, false);
  ASSERT_TRUE(hold.ok()) << hold.status().ToString();
  ASSERT_TRUE(fs->WriteIo(ino, 0, page, IoMode::kDeferred, *hold).ok());
  fs->TouchAfterDirectWrite(ino);  // returns at once (a waiting EX would hang here)
  ASSERT_TRUE(fs->DropHold(*hold).ok());
  const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (times().first < before && std::chrono::steady_clock::now() < until) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));  // bounded poll
  }
  EXPECT_GE(times().first, before) << "no background retry of the mtime update within 10 s";
  EXPECT_GE(times().second, before);
  UnmountAndCheck(std::move(fs), img);
}

// A pending update whose glock is still held when the mount goes is made by the unmount.
TEST(EngineTest, PendingDirectWriteTimesAreMadeAtUnmount) {
  TempDir dir;
  std::string img = MakeImage(dir, "v.img", 256, 4096);
  InodeNo ino = 0;
  const int64_t before = std::chrono::duration_cast<std::chrono::seconds>(
                             std::chrono::system_clock::now().time_since_epoch())
                             .count();
  {
    auto fs = MountImage(img);
    ASSERT_TRUE(fs);
    ino = MustCreate(*fs, fs->root(), "f");
    std::vector<uint8_t> data(64 * 1024, 0x5a);
    ASSERT_TRUE(fs->Write(ino, 0, data, false).ok());
    SetAttrRequest req;
    req.mask = kSetMtime | kSetCtime;
    req.mtime = {1700000000, 0};
    req.ctime = {1700000000, 0};
    ASSERT_TRUE(fs->SetAttr(ino, req, RootCred()).ok());
    auto hold = fs->HoldInode(ino, IoMode::kDeferred, false);
    ASSERT_TRUE(hold.ok()) << hold.status().ToString();
    ASSERT_TRUE(
        fs->WriteIo(ino, 0, std::span<const uint8_t>(data.data(), 4096), IoMode::kDeferred, *hold)
            .ok());
    fs->TouchAfterDirectWrite(ino);
    ASSERT_TRUE(fs->DropHold(*hold).ok());
    // Almost always before the first background retry (100 ms after the touch).
    ASSERT_TRUE(fs->Unmount().ok());
  }
  auto fs = MountImage(img);
  ASSERT_TRUE(fs);
  auto a = fs->GetAttr(ino);
  ASSERT_TRUE(a.ok()) << a.status().ToString();
  EXPECT_GE(a->mtime.sec, before);
  EXPECT_GE(a->ctime.sec, before);
  UnmountAndCheck(std::move(fs), img);
}

TEST(EngineTest, NoSpaceThenReclaim) {
  TempDir dir;
  std::string img = MakeImage(dir, "v.img", 64, 4096);
  auto fs = MountImage(img);
  ASSERT_TRUE(fs);
  auto before = fs->StatFs();
  std::vector<uint8_t> chunk = Pattern(1 << 20, 5);
  int files = 0;
  bool hit = false;
  for (int f = 0; f < 200 && !hit; ++f) {
    auto a = fs->Mknod(fs->root(), "fill" + std::to_string(f), 0100644, 0, RootCred());
    if (!a.ok()) {
      EXPECT_EQ(a.status().ToErrno(), ENOSPC);
      hit = true;
      break;
    }
    files++;
    for (int k = 0; k < 8; ++k) {
      auto w = fs->Write(a->ino, uint64_t(k) << 20, chunk, false);
      if (!w.ok()) {
        EXPECT_EQ(w.status().ToErrno(), ENOSPC) << w.status().ToString();
        hit = true;
        break;
      }
    }
  }
  EXPECT_TRUE(hit);
  for (int f = 0; f < files; ++f)
    ASSERT_TRUE(fs->Unlink(fs->root(), "fill" + std::to_string(f)).ok());
  // Space is usable again right away.
  auto a = fs->Mknod(fs->root(), "again", 0100644, 0, RootCred());
  ASSERT_TRUE(a.ok());
  WriteAll(*fs, a->ino, 0, chunk);
  ASSERT_TRUE(fs->Unlink(fs->root(), "again").ok());
  ASSERT_TRUE(fs->SyncFs().ok());
  EXPECT_EQ(fs->StatFs()->bfree, before->bfree);
  UnmountAndCheck(std::move(fs), img);
}

// fallocate of more than is free (fstests generic/103's "consume the free space" step): ENOSPC,
// and what was allocated stays consistent (block count, pointers, bitmaps) and reads as zeros.
TEST(EngineTest, FallocateBeyondFreeSpaceStaysConsistent) {
  TempDir dir;
  std::string img = MakeImage(dir, "falloc.img", 128, 4096);
  // noatime: a read must not rewrite the dinode and so hide a stale one.
  MountOptions opts;
  opts.atime = AtimeMode::kNoatime;
  auto fs = MountImage(img, opts);
  ASSERT_TRUE(fs);
  auto a = fs->Mknod(fs->root(), "spc", 0100644, 0, RootCred());
  ASSERT_TRUE(a.ok());
  auto st = fs->StatFs();
  ASSERT_TRUE(st.ok());
  // All the free blocks as data: the indirect blocks it also needs cannot fit.
  Status f = fs->Fallocate(a->ino, 0, 0, st->bfree * st->bsize);
  EXPECT_EQ(f.code(), Code::kNoSpace) << f.ToString();
  auto attr = fs->GetAttr(a->ino);
  ASSERT_TRUE(attr.ok());
  EXPECT_GT(attr->blocks512, 0u);
  auto probe = ReadAll(*fs, a->ino, 0, 1 << 20);
  for (uint8_t b : probe) ASSERT_EQ(b, 0);
  UnmountAndCheck(std::move(fs), img);
}

TEST(EngineTest, RenameRules) {
  TempDir dir;
  std::string img = MakeImage(dir, "v.img", 128, 4096);
  auto fs = MountImage(img);
  ASSERT_TRUE(fs);
  InodeNo root = fs->root();
  auto a = fs->Mkdir(root, "a", 0755, RootCred());
  auto b = fs->Mkdir(a->ino, "b", 0755, RootCred());
  auto c = fs->Mkdir(root, "c", 0755, RootCred());
  MustCreate(*fs, root, "x");
  MustCreate(*fs, root, "y");
  EXPECT_EQ(fs->Rename(root, "a", b->ino, "a2", 0).ToErrno(), EINVAL);
  EXPECT_EQ(fs->Rename(root, "x", root, "y", kRenameNoReplace).ToErrno(), EEXIST);
  EXPECT_EQ(fs->Rename(root, "x", root, "c", 0).ToErrno(), EISDIR);
  EXPECT_EQ(fs->Rename(root, "c", root, "x", 0).ToErrno(), ENOTDIR);
  ASSERT_TRUE(fs->Rename(root, "x", root, "y", kRenameExchange).ok());
  ASSERT_TRUE(fs->Rename(root, "x", root, "y", 0).ok());  // replaces y
  EXPECT_FALSE(fs->Lookup(root, "x").ok());
  ASSERT_TRUE(fs->Rename(a->ino, "b", c->ino, "b", 0).ok());  // dir across parents
  EXPECT_EQ(fs->GetAttr(a->ino)->nlink, 2u);
  EXPECT_EQ(fs->GetAttr(c->ino)->nlink, 3u);
  ASSERT_TRUE(fs->Rename(root, "a", c->ino, "b", 0).ok());  // replaces empty dir b
  EXPECT_EQ(fs->GetAttr(c->ino)->nlink, 3u);
  EXPECT_EQ(fs->GetAttr(root)->nlink, 3u);
  ASSERT_TRUE(fs->Rename(root, "y", c->ino, "b", kRenameExchange).ok());  // file <-> dir
  EXPECT_EQ(fs->GetAttr(root)->nlink, 4u);
  EXPECT_EQ(fs->GetAttr(c->ino)->nlink, 2u);
  UnmountAndCheck(std::move(fs), img);
}

TEST(EngineTest, FallocateAndPunch) {
  TempDir dir;
  std::string img = MakeImage(dir, "v.img", 128, 4096);
  auto fs = MountImage(img);
  ASSERT_TRUE(fs);
  InodeNo ino = MustCreate(*fs, fs->root(), "f");
  ASSERT_TRUE(fs->Fallocate(ino, 0, 0, 1 << 20).ok());
  EXPECT_EQ(fs->GetAttr(ino)->size, 1u << 20);
  EXPECT_EQ(ReadAll(*fs, ino, 0, 8192), std::vector<uint8_t>(8192, 0));
  auto data = Pattern(1 << 20, 9);
  WriteAll(*fs, ino, 0, data);
  ASSERT_TRUE(fs->Fallocate(ino, kFallocPunchHole | kFallocKeepSize, 4096 + 100, 65536).ok());
  auto got = ReadAll(*fs, ino, 0, data.size());
  for (size_t i = 4096 + 100; i < 4096 + 100 + 65536; ++i) data[i] = 0;
  EXPECT_EQ(got, data);
  ASSERT_TRUE(fs->Fallocate(ino, kFallocKeepSize, 1 << 20, 1 << 20).ok());
  EXPECT_EQ(fs->GetAttr(ino)->size, 1u << 20);
  UnmountAndCheck(std::move(fs), img);
}

TEST(EngineTest, RefusesForeignAndDamagedVolumes) {
  TempDir dir;
  std::string zero = dir.path() + "/zero.img";
  ASSERT_EQ(testing::RunCommand("truncate -s 64M " + zero), 0);
  auto dev = OpenFileBlockDevice(zero, {});
  ASSERT_TRUE(dev.ok());
  auto fs = FileSystem::Mount(std::move(*dev), {});
  ASSERT_FALSE(fs.ok());
  EXPECT_NE(fs.status().message().find("not a usable GFS2 volume"), std::string::npos)
      << fs.status().ToString();
  std::string img = MakeImage(dir, "dlm.img", 64, 4096, 1, "-p lock_dlm -t clus:fs");
  dev = OpenFileBlockDevice(img, {});
  fs = FileSystem::Mount(std::move(*dev), {});
  ASSERT_FALSE(fs.ok());
  EXPECT_NE(fs.status().message().find("lockproto=lock_nolock"), std::string::npos);
  MountOptions opts;
  opts.lockproto = "lock_nolock";
  auto ok = MountImage(img, opts);
  ASSERT_TRUE(ok);
  UnmountAndCheck(std::move(ok), img);
}

}  // namespace
}  // namespace ugfs2

namespace ugfs2 {
namespace {

TEST(EngineTest, CreateIsOneOperation) {
  testing::TempDir dir;
  std::string img = testing::MakeImage(dir, "v.img", 64, 4096);
  auto fs = testing::MountImage(img);
  ASSERT_TRUE(fs);
  const Cred cred = testing::RootCred();
  auto a = fs->Create(fs->root(), "f", 0640, false, false, cred);
  ASSERT_TRUE(a.ok()) << a.status().ToString();
  EXPECT_EQ(a->mode, 0100640u);
  ASSERT_TRUE(fs->Write(a->ino, 0, testing::Pattern(5000, 1), false).ok());
  // Opened by Create: an unlink keeps it readable until the Release.
  ASSERT_TRUE(fs->Unlink(fs->root(), "f").ok());
  std::vector<uint8_t> buf(5000);
  ASSERT_EQ(*fs->Read(a->ino, 0, buf), 5000u);
  ASSERT_TRUE(fs->Release(a->ino).ok());
  EXPECT_EQ(fs->GetAttr(a->ino).status().code(), Code::kStale);
  // Existing names: opened (and truncated if asked); O_EXCL and directories refused.
  auto b = fs->Create(fs->root(), "g", 0644, false, false, cred);
  ASSERT_TRUE(b.ok());
  ASSERT_TRUE(fs->Write(b->ino, 0, testing::Pattern(100, 2), false).ok());
  auto again = fs->Create(fs->root(), "g", 0600, false, false, cred);
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->ino, b->ino);
  EXPECT_EQ(again->size, 100u);
  auto trunc = fs->Create(fs->root(), "g", 0600, false, true, cred);
  ASSERT_TRUE(trunc.ok());
  EXPECT_EQ(trunc->size, 0u);
  EXPECT_EQ(fs->Create(fs->root(), "g", 0600, true, false, cred).status().code(), Code::kExists);
  ASSERT_TRUE(fs->Mkdir(fs->root(), "d", 0755, cred).ok());
  EXPECT_EQ(fs->Create(fs->root(), "d", 0600, false, false, cred).status().code(), Code::kIsDir);
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(fs->Release(b->ino).ok());
  ASSERT_TRUE(fs->Unmount().ok());
  fs.reset();
  std::string report;
  EXPECT_TRUE(testing::FsckClean(img, &report)) << report;
}

}  // namespace
}  // namespace ugfs2
