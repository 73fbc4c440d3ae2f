// The engine's glock hooks on a real image: a forced demote (exactly what a remote node's request
// does) syncs what the glock covers to the device, drops exactly the cached metadata it covers,
// tells the kernel-cache bridge, and the next holder re-reads from the device. The device is
// changed underneath between accesses to prove it.
#include <fcntl.h>
#include <unistd.h>

#include <cstdio>
#include <mutex>
#include <sstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "common/endian.h"
#include "engine_test_util.h"
#include "format/ondisk.h"
#include "fs/file_system.h"

namespace ugfs2 {
namespace {

using testing::FsckClean;
using testing::MakeImage;
using testing::MountImage;
using testing::Pattern;
using testing::RootCred;
using testing::TempDir;

constexpr uint32_t kBs = 4096;
constexpr uint32_t kDinodeSize = 232;     // sizeof(struct gfs2_dinode)
constexpr uint32_t kMetaHeaderSize = 24;  // sizeof(struct gfs2_meta_header)
constexpr uint32_t kDiUid = 44;           // di_uid
constexpr uint32_t kDiSize = 56;          // di_size

class RecordingKernelCache final : public KernelCache {
 public:
  void InvalidateData(InodeNo ino, uint64_t off, uint64_t len) override {
    std::lock_guard<std::mutex> l(mu_);
    data_.push_back(ino);
    (void)off;
    (void)len;
  }
  void InvalidateAttr(InodeNo ino) override {
    std::lock_guard<std::mutex> l(mu_);
    attr_.push_back(ino);
  }
  void InvalidateEntry(InodeNo parent, std::string_view name) override {
    (void)parent;
    (void)name;
  }
  size_t DataCount(InodeNo ino) {
    std::lock_guard<std::mutex> l(mu_);
    size_t n = 0;
    for (InodeNo i : data_) n += i == ino;
    return n;
  }

 private:
  std::mutex mu_;
  std::vector<InodeNo> data_, attr_;
};

// Raw access to the image underneath the mount (buffered file I/O is coherent with the engine's
// file device on the same host).
class RawImage {
 public:
  explicit RawImage(const std::string& path) : fd_(open(path.c_str(), O_RDWR)) {}
  ~RawImage() {
    if (fd_ >= 0) close(fd_);
  }
  uint64_t Be64(uint64_t blk, uint32_t off) {
    uint8_t b[8];
    EXPECT_EQ(pread(fd_, b, 8, static_cast<off_t>(blk * kBs + off)), 8);
    return LoadBe64(b);
  }
  uint32_t Be32(uint64_t blk, uint32_t off) {
    uint8_t b[4];
    EXPECT_EQ(pread(fd_, b, 4, static_cast<off_t>(blk * kBs + off)), 4);
    return LoadBe32(b);
  }
  void PutBe64(uint64_t blk, uint32_t off, uint64_t v) {
    uint8_t b[8];
    StoreBe64(b, v);
    EXPECT_EQ(pwrite(fd_, b, 8, static_cast<off_t>(blk * kBs + off)), 8);
  }
  void PutBe32(uint64_t blk, uint32_t off, uint32_t v) {
    uint8_t b[4];
    StoreBe32(b, v);
    EXPECT_EQ(pwrite(fd_, b, 4, static_cast<off_t>(blk * kBs + off)), 4);
  }

 private:
  int fd_;
};

// The rgrp glocks the node knows ("3/hex" names in the dump), as header addresses.
std::vector<uint64_t> RgrpGlocks(FileSystem& fs) {
  std::vector<uint64_t> out;
  std::istringstream in(fs.DumpGlocks());
  std::string line;
  while (std::getline(in, line)) {
    const size_t at = line.find(" n:3/");
    if (line.rfind("G:", 0) != 0 || at == std::string::npos) continue;
    out.push_back(std::stoull(line.substr(at + 5), nullptr, 16));
  }
  return out;
}

std::string GlockOf(InodeNo ino) {
  char b[32];
  std::snprintf(b, sizeof(b), "2/%llx", static_cast<unsigned long long>(ino));
  return b;
}

class GlockHooksTest : public ::testing::Test {
 protected:
  void SetUp() override {
    img_ = MakeImage(dir_, "v.img", 64, kBs);
    fs_ = MountImage(img_);
    ASSERT_TRUE(fs_);
    fs_->SetKernelCache(&kc_);
  }
  void TearDown() override {
    if (fs_) {
      EXPECT_TRUE(fs_->Unmount().ok());
      fs_.reset();
      std::string report;
      EXPECT_TRUE(FsckClean(img_, &report)) << report;
    }
  }
  Attr MakeFile(const std::string& name, const std::vector<uint8_t>& data) {
    auto a = fs_->Mknod(fs_->root(), name, 0100644, 0, RootCred());
    EXPECT_TRUE(a.ok()) << a.status().ToString();
    auto w = fs_->Write(a->ino, 0, data, false);
    EXPECT_TRUE(w.ok()) << w.status().ToString();
    return *a;
  }

  TempDir dir_;
  std::string img_;
  RecordingKernelCache kc_;
  std::unique_ptr<FileSystem> fs_;
};

TEST_F(GlockHooksTest, DemoteRereadsTheDinodeFromTheDevice) {
  Attr a = MakeFile("f", Pattern(100, 1));
  ASSERT_TRUE(fs_->SyncFs().ok());
  RawImage raw(img_);
  ASSERT_EQ(raw.Be32(a.ino, kDiUid), 0u);
  raw.PutBe32(a.ino, kDiUid, 4242);
  EXPECT_EQ(fs_->GetAttr(a.ino)->uid, 0u) << "the glock is cached: the dinode too";
  ASSERT_TRUE(fs_->DemoteGlock(GlockOf(a.ino)).ok());
  EXPECT_EQ(fs_->GetAttr(a.ino)->uid, 4242u) << "after the demote the dinode must be re-read";
  EXPECT_GE(kc_.DataCount(a.ino), 1u) << "the kernel-cache bridge was not told";
  raw.PutBe32(a.ino, kDiUid, 0);
  ASSERT_TRUE(fs_->DemoteGlock(GlockOf(a.ino)).ok());
  EXPECT_EQ(fs_->GetAttr(a.ino)->uid, 0u);
}

TEST_F(GlockHooksTest, DemoteRereadsIndirectBlocksAndLeavesOtherInodesCached) {
  // A: height 2 (more pointers than fit in the dinode); B: one data block.
  const std::vector<uint8_t> pa = Pattern(3 << 20, 2), pb = Pattern(kBs, 3);
  Attr a = MakeFile("a", pa);
  Attr b = MakeFile("b", pb);
  ASSERT_TRUE(fs_->SyncFs().ok());
  RawImage raw(img_);
  const uint64_t ind = raw.Be64(a.ino, kDinodeSize);
  const uint64_t a0 = raw.Be64(ind, kMetaHeaderSize);
  const uint64_t b0 = raw.Be64(b.ino, kDinodeSize);
  ASSERT_NE(ind, 0u);
  ASSERT_NE(a0, 0u);
  ASSERT_NE(b0, 0u);
  std::vector<uint8_t> buf(kBs);
  // A's first indirect pointer now names B's block on disk; B's dinode uid changes too.
  raw.PutBe64(ind, kMetaHeaderSize, b0);
  raw.PutBe32(b.ino, kDiUid, 77);
  ASSERT_EQ(*fs_->Read(a.ino, 0, buf), kBs);
  EXPECT_TRUE(std::equal(buf.begin(), buf.end(), pa.begin())) << "cached indirect block in use";
  ASSERT_TRUE(fs_->DemoteGlock(GlockOf(a.ino)).ok());
  ASSERT_EQ(*fs_->Read(a.ino, 0, buf), kBs);
  EXPECT_TRUE(std::equal(buf.begin(), buf.end(), pb.begin()))
      << "after the demote the indirect block must be re-read";
  EXPECT_EQ(fs_->GetAttr(b.ino)->uid, 0u) << "B's glock was not demoted: its dinode stays cached";
  // Put everything back for fsck.
  raw.PutBe64(ind, kMetaHeaderSize, a0);
  raw.PutBe32(b.ino, kDiUid, 0);
  ASSERT_TRUE(fs_->DemoteGlock(GlockOf(a.ino)).ok());
  ASSERT_TRUE(fs_->DemoteGlock(GlockOf(b.ino)).ok());
  ASSERT_EQ(*fs_->Read(a.ino, 0, buf), kBs);
  EXPECT_TRUE(std::equal(buf.begin(), buf.end(), pa.begin()));
  EXPECT_EQ(fs_->GetAttr(b.ino)->uid, 0u);
}

TEST_F(GlockHooksTest, DemoteSyncsTheInodeToItsPlaceOnDisk) {
  Attr a = MakeFile("f", Pattern(100, 4));
  ASSERT_TRUE(fs_->SyncFs().ok());
  RawImage raw(img_);
  ASSERT_EQ(raw.Be64(a.ino, kDiSize), 100u);
  ASSERT_TRUE(fs_->Write(a.ino, 100, Pattern(900, 5), false).ok());
  EXPECT_EQ(raw.Be64(a.ino, kDiSize), 100u) << "not flushed yet (no fsync, small batch)";
  const uint64_t flushes = fs_->Counters().log_flushes;
  ASSERT_TRUE(fs_->DemoteGlock(GlockOf(a.ino)).ok());
  EXPECT_GT(fs_->Counters().log_flushes, flushes) << "the sync hook did not flush the log";
  EXPECT_EQ(raw.Be64(a.ino, kDiSize), 1000u) << "the dinode is not in place after the demote";
  std::vector<uint8_t> buf(1000);
  ASSERT_EQ(*fs_->Read(a.ino, 0, buf), 1000u);
}

TEST_F(GlockHooksTest, DemoteControlNamesAndDump) {
  Attr a = MakeFile("f", Pattern(10, 6));
  const std::string dump = fs_->DumpGlocks();
  EXPECT_NE(dump.find("n:" + GlockOf(a.ino)), std::string::npos) << dump;
  EXPECT_EQ(fs_->DemoteGlock("2/zz").code(), Code::kInvalid);
  EXPECT_EQ(fs_->DemoteGlock("nonsense").code(), Code::kInvalid);
  EXPECT_EQ(fs_->DemoteGlock("2/fffffffff").code(), Code::kNotFound);
  EXPECT_GE(fs_->DemoteAllGlocks(), 2u);  // at least the root and f
  // Everything still works after everything was dropped.
  auto l = fs_->Lookup(fs_->root(), "f");
  ASSERT_TRUE(l.ok());
  EXPECT_EQ(l->size, 10u);
}

TEST_F(GlockHooksTest, OpenUnlinkedFileSurvivesDemotesAndIsFreedAtRelease) {
  Attr a = MakeFile("f", Pattern(20000, 7));
  ASSERT_TRUE(fs_->Open(a.ino, false, RootCred()).ok());
  ASSERT_TRUE(fs_->Unlink(fs_->root(), "f").ok());
  EXPECT_GE(fs_->DemoteAllGlocks(), 1u);
  std::vector<uint8_t> buf(20000);
  ASSERT_EQ(*fs_->Read(a.ino, 0, buf), 20000u);
  EXPECT_EQ(buf, Pattern(20000, 7));
  EXPECT_GE(fs_->DemoteAllGlocks(), 1u);
  ASSERT_TRUE(fs_->Release(a.ino).ok());
  EXPECT_EQ(fs_->GetAttr(a.ino).status().code(), Code::kStale);
}

// A resource group's header and bitmaps belong to its glock: after a demote, the next allocation
// re-reads them. Another "node" fills the rgrp underneath (every free block marked used, counts
// updated); a file created next must get its blocks elsewhere. With a cached bitmap it would get
// blocks the other node owns.
TEST_F(GlockHooksTest, RgrpDemoteRereadsHeaderAndBitmaps) {
  ASSERT_TRUE(fs_->Unmount().ok());
  img_ = MakeImage(dir_, "r.img", 128, kBs, 1, "-r 32");
  fs_ = MountImage(img_);
  ASSERT_TRUE(fs_);
  Attr f1 = MakeFile("f1", Pattern(kBs, 1));
  ASSERT_TRUE(fs_->SyncFs().ok());
  RawImage raw(img_);
  const uint64_t d1 = raw.Be64(f1.ino, kDinodeSize);  // height 1: the first data pointer
  ASSERT_NE(d1, 0u);
  uint64_t rg = 0;
  for (uint64_t r : RgrpGlocks(*fs_)) {
    if (r <= d1 && r > rg) rg = r;
  }
  ASSERT_NE(rg, 0u) << fs_->DumpGlocks();
  EXPECT_GE(fs_->DemoteAllGlocks(), 1u);

  // Fill the rgrp underneath: its header and bitmap blocks, then restore them at the end.
  const int fd = open(img_.c_str(), O_RDWR);
  ASSERT_GE(fd, 0);
  std::vector<uint8_t> hdr_blk(kBs);
  ASSERT_EQ(pread(fd, hdr_blk.data(), kBs, static_cast<off_t>(rg * kBs)), kBs);
  format::Rgrp hdr = format::Rgrp::Decode(hdr_blk.data());
  const uint64_t length = hdr.data0 - rg;
  std::vector<uint8_t> saved(length * kBs);
  ASSERT_EQ(pread(fd, saved.data(), saved.size(), static_cast<off_t>(rg * kBs)),
            static_cast<ssize_t>(saved.size()));
  std::vector<uint8_t> full = saved;
  for (uint64_t b = 0; b < length; ++b) {
    const uint32_t start = b == 0 ? 128 : kMetaHeaderSize;
    for (uint32_t i = start; i < kBs; ++i) {
      uint8_t& byte = full[b * kBs + i];
      for (int k = 0; k < 4; ++k) {
        if (((byte >> (2 * k)) & 3) == 0) byte |= static_cast<uint8_t>(1 << (2 * k));
      }
    }
  }
  hdr.free = 0;
  hdr.Encode(full.data());
  ASSERT_EQ(pwrite(fd, full.data(), full.size(), static_cast<off_t>(rg * kBs)),
            static_cast<ssize_t>(full.size()));

  Attr f2 = MakeFile("f2", Pattern(kBs, 2));
  ASSERT_TRUE(fs_->SyncFs().ok());
  const uint64_t d2 = raw.Be64(f2.ino, kDinodeSize);
  EXPECT_FALSE(f2.ino >= hdr.data0 && f2.ino < hdr.data0 + hdr.data) << "dinode " << f2.ino;
  EXPECT_FALSE(d2 >= hdr.data0 && d2 < hdr.data0 + hdr.data) << "data block " << d2;

  // Give the rgrp back as it was (nothing of ugfs2 changed it: it had no free block).
  EXPECT_GE(fs_->DemoteAllGlocks(), 1u);
  ASSERT_EQ(pwrite(fd, saved.data(), saved.size(), static_cast<off_t>(rg * kBs)),
            static_cast<ssize_t>(saved.size()));
  close(fd);
  std::vector<uint8_t> buf(kBs);
  ASSERT_EQ(*fs_->Read(f2.ino, 0, buf), kBs);
  EXPECT_EQ(buf, Pattern(kBs, 2));
}

// Blocks freed in the current log batch are counted free in their rgrp's header but cannot be
// reused before their commit: a reservation must not count them, or an allocation right after a
// big delete finds its reserved rgrps empty (ENOSPC on a mostly empty volume).
TEST_F(GlockHooksTest, FreedBlocksAwaitingTheirCommitDoNotStarveReservations) {
  ASSERT_TRUE(fs_->Unmount().ok());
  img_ = MakeImage(dir_, "p.img", 256, kBs, 1, "-r 32");
  fs_ = MountImage(img_);
  ASSERT_TRUE(fs_);
  const std::vector<uint8_t> chunk = Pattern(1 << 20, 5);
  auto write_file = [&](const std::string& name) {
    auto a = fs_->Mknod(fs_->root(), name, 0100644, 0, RootCred());
    ASSERT_TRUE(a.ok()) << a.status().ToString();
    for (uint64_t off = 0; off < (96ull << 20); off += chunk.size()) {
      auto w = fs_->Write(a->ino, off, chunk, false);
      ASSERT_TRUE(w.ok()) << name << " at " << off << ": " << w.status().ToString();
    }
  };
  write_file("a");
  ASSERT_TRUE(fs_->Unlink(fs_->root(), "a").ok());
  write_file("b");  // no flush in between: a's blocks are still waiting for their commit
  auto d = fs_->Mkdir(fs_->root(), "d", 0755, RootCred());
  EXPECT_TRUE(d.ok()) << d.status().ToString();
}

// The rgrp's sync: a demote writes its changed bitmap in place (no fsync asked for).
TEST_F(GlockHooksTest, RgrpDemoteWritesItsBitmapInPlace) {
  Attr f = MakeFile("f", Pattern(3 * kBs, 3));
  RawImage raw(img_);
  uint64_t rg = 0;
  const std::vector<uint64_t> rgrps = RgrpGlocks(*fs_);
  ASSERT_FALSE(rgrps.empty());
  char name[32];
  for (uint64_t r : rgrps) {
    std::snprintf(name, sizeof(name), "3/%llx", static_cast<unsigned long long>(r));
    ASSERT_TRUE(fs_->DemoteGlock(name).ok()) << name;
    rg = std::max(rg, r);
  }
  const uint64_t d = raw.Be64(f.ino, kDinodeSize);
  ASSERT_NE(d, 0u);
  // Find d's rgrp and read its bitmap bits on the device.
  uint64_t home = 0;
  for (uint64_t r : rgrps) {
    if (r <= d && r > home) home = r;
  }
  ASSERT_NE(home, 0u);
  const int fd = open(img_.c_str(), O_RDONLY);
  ASSERT_GE(fd, 0);
  std::vector<uint8_t> hdr_blk(kBs);
  ASSERT_EQ(pread(fd, hdr_blk.data(), kBs, static_cast<off_t>(home * kBs)), kBs);
  const format::Rgrp hdr = format::Rgrp::Decode(hdr_blk.data());
  for (uint64_t blk = d; blk < d + 3; ++blk) {
    const uint64_t o = blk - hdr.data0;
    uint64_t byte = o / 4;
    uint64_t at;
    if (byte < kBs - 128) {
      at = home * kBs + 128 + byte;
    } else {
      byte -= kBs - 128;
      at = (home + 1 + byte / (kBs - kMetaHeaderSize)) * kBs + kMetaHeaderSize +
           byte % (kBs - kMetaHeaderSize);
    }
    uint8_t v = 0;
    ASSERT_EQ(pread(fd, &v, 1, static_cast<off_t>(at)), 1);
    EXPECT_EQ((v >> ((o % 4) * 2)) & 3, 1) << "block " << blk << " not marked used on disk";
  }
  close(fd);
}

}  // namespace
}  // namespace ugfs2
