// On-disk format unit tests: checksums and the dirent hash against known values, geometry, and
// decode/encode round trips that reproduce mkfs.gfs2's own bytes (golden images made at test time),
// plus the engine on the in-memory device (metadata trees across heights, exhash growth).
#include <cstring>
#include <set>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "block/block_device.h"
#include "common/crc.h"
#include "common/endian.h"
#include "engine_test_util.h"
#include "format/ondisk.h"
#include "fs/file_system.h"

namespace ugfs2 {
namespace {

using testing::MakeImage;
using testing::RootCred;
using testing::TempDir;

TEST(FormatTest, Crc32AndDirentHashMatchKnownValues) {
  EXPECT_EQ(Crc32("123456789", 9), 0xCBF43926u);
  struct {
    const char* name;
    uint32_t hash;
  } vectors[] = {{".", 0x0ED4E242},
                 {"..", 0x9608161C},
                 {"jindex", 0x5EFC1D83},
                 {"per_node", 0x486EEE32},
                 {"journal0", 0xFC7745EB},
                 {"inum_range0", 0xE1FD87D0},
                 {"statfs_change0", 0x0BBCE579}};
  for (const auto& v : vectors) {
    EXPECT_EQ(Gfs2DirentHash(v.name, std::strlen(v.name)), v.hash) << v.name;
  }
  EXPECT_EQ(format::DirentSize(1), 48u);
  EXPECT_EQ(format::DirentSize(30), 72u);
}

TEST(FormatTest, GeometryFor4096) {
  auto g = format::Geometry::For(4096);
  EXPECT_EQ(g.diptrs, 483u);
  EXPECT_EQ(g.inptrs, 509u);
  EXPECT_EQ(g.jbsize, 4072u);
  EXPECT_EQ(g.hash_ptrs, 256u);
  EXPECT_EQ(g.data_cap[0], 3864u);
  EXPECT_EQ(g.data_cap[1], 1978368u);
  EXPECT_EQ(g.data_cap[2], 1006989312u);
  EXPECT_EQ(g.jdata_cap[1], 1966776u);
  EXPECT_EQ(g.HeightFor(3864, false), 0u);
  EXPECT_EQ(g.HeightFor(3865, false), 1u);
  EXPECT_EQ(g.HeightFor(2ull << 30, false), 3u);
}

class GoldenImageTest : public ::testing::TestWithParam<uint32_t> {};

// Decoding and re-encoding mkfs.gfs2's superblock, rgrp headers (incl. rg_crc), rindex entries,
// dinodes and dirents gives back exactly mkfs.gfs2's bytes.
TEST_P(GoldenImageTest, RoundTripsReproduceMkfsBytes) {
  TempDir dir;
  const uint32_t bs = GetParam();
  std::string img = MakeImage(dir, "g.img", 128, bs, 2, "-p lock_dlm -t golden:fs");
  auto file = OpenFileBlockDevice(img, {});
  ASSERT_TRUE(file.ok());
  auto dev = CopyToMemory(**file);
  ASSERT_TRUE(dev.ok());
  std::vector<uint8_t> b(bs);
  auto read = [&](uint64_t blk) { ASSERT_TRUE((*dev)->ReadAt(blk * bs, b.data(), bs).ok()); };
  // Superblock.
  std::vector<uint8_t> sbraw(format::kSbSize), out(format::kSbSize);
  ASSERT_TRUE((*dev)->ReadAt(format::kSuperblockOffset, sbraw.data(), sbraw.size()).ok());
  auto sb = format::Superblock::Decode(sbraw.data());
  ASSERT_TRUE(sb.ok()) << sb.status().ToString();
  EXPECT_EQ(sb->bsize, bs);
  EXPECT_EQ(sb->lockproto, "lock_dlm");
  EXPECT_EQ(sb->locktable, "golden:fs");
  sb->Encode(out.data());
  EXPECT_EQ(out, sbraw);
  // Root dinode and master dinode.
  for (uint64_t addr : {sb->root_dir.addr, sb->master_dir.addr}) {
    read(addr);
    ASSERT_EQ(format::MetaTypeOf(b.data()), uint32_t{format::kMetaDi});
    auto di = format::Dinode::Decode(b.data());
    EXPECT_EQ(di.num.addr, addr);
    std::vector<uint8_t> enc(b.begin(), b.end());
    di.Encode(enc.data());
    EXPECT_EQ(std::vector<uint8_t>(enc.begin(), enc.begin() + format::kDinodeSize),
              std::vector<uint8_t>(b.begin(), b.begin() + format::kDinodeSize));
    // Its dirents, with their hashes, where mkfs.gfs2 left the directory stuffed (with 512-byte
    // blocks the master directory is already an exhash directory).
    if (di.flags & format::kDifExhash) continue;
    uint32_t off = format::kDinodeSize;
    int n = 0;
    while (off < bs) {
      auto de = format::Dirent::Decode(b.data() + off);
      ASSERT_GE(de.rec_len, format::kDirentSize);
      uint8_t denc[format::kDirentSize];
      de.Encode(denc);
      EXPECT_EQ(std::memcmp(denc, b.data() + off, format::kDirentSize), 0);
      EXPECT_EQ(de.hash, Gfs2DirentHash(b.data() + off + format::kDirentSize, de.name_len));
      off += de.rec_len;
      n++;
    }
    EXPECT_EQ(off, bs);
    EXPECT_EQ(static_cast<uint32_t>(n), di.entries);
  }
  // The golden volume mounts (read-only, single-node override of lock_dlm).
  auto fs = FileSystem::Mount(std::move(*dev), [] {
    MountOptions o;
    o.lockproto = "lock_nolock";
    o.read_only = true;
    return o;
  }());
  ASSERT_TRUE(fs.ok()) << fs.status().ToString();
  auto master = (*fs)->GetAttr(sb->master_dir.addr);
  ASSERT_TRUE(master.ok());
}

INSTANTIATE_TEST_SUITE_P(BlockSizes, GoldenImageTest, ::testing::Values(512, 1024, 4096));

TEST(FormatTest, RgrpHeadersReencodeWithMkfsCrc) {
  TempDir dir;
  std::string img = MakeImage(dir, "r.img", 600, 4096, 3);
  auto file = OpenFileBlockDevice(img, {});
  ASSERT_TRUE(file.ok());
  std::vector<uint8_t> sbraw(format::kSbSize);
  ASSERT_TRUE((*file)->ReadAt(format::kSuperblockOffset, sbraw.data(), sbraw.size()).ok());
  auto sb = format::Superblock::Decode(sbraw.data());
  ASSERT_TRUE(sb.ok());
  // Walk rgrps by rg_skip from the first one (right after the superblock block).
  std::vector<uint8_t> b(4096);
  uint64_t addr = format::kSuperblockOffset / 4096 + 1;
  int count = 0;
  for (;;) {
    ASSERT_TRUE((*file)->ReadAt(addr * 4096, b.data(), b.size()).ok());
    ASSERT_EQ(format::MetaTypeOf(b.data()), uint32_t{format::kMetaRg}) << "block " << addr;
    EXPECT_TRUE(format::Rgrp::CrcOk(b.data()));
    auto rg = format::Rgrp::Decode(b.data());
    std::vector<uint8_t> enc(format::kRgrpSize);
    rg.Encode(enc.data());
    EXPECT_EQ(std::memcmp(enc.data(), b.data(), format::kRgrpSize), 0) << "rgrp " << addr;
    count++;
    if (rg.skip == 0) break;
    addr += rg.skip;
  }
  EXPECT_GE(count, 4);
}

// The engine on the in-memory device: files whose metadata trees reach heights 1-4 (512-byte
// blocks) and a directory whose hash table grows through doubling and leaf splits.
// gfs2_rgrp_lvb: 32 bytes, big-endian, in gfs2_ondisk.h's order; Matches is gfs2's
// rgrp_lvb_valid (flags, free, dinodes, igeneration; not the unlinked count).
TEST(FormatTest, RgrpLvbLayout) {
  format::Rgrp hdr;
  hdr.flags = 0x11223344;
  hdr.free = 0x01020304;
  hdr.dinodes = 0x0a0b0c0d;
  hdr.igeneration = 0x0102030405060708ull;
  const format::RgrpLvb lvb = format::RgrpLvb::For(hdr, 7);
  uint8_t b[format::RgrpLvb::kSize];
  std::memset(b, 0xee, sizeof(b));
  lvb.Encode(b);
  const uint8_t want[format::RgrpLvb::kSize] = {0x01, 0x16, 0x19, 0x70, 0x11, 0x22, 0x33, 0x44,
                                                0x01, 0x02, 0x03, 0x04, 0x0a, 0x0b, 0x0c, 0x0d,
                                                0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08,
                                                0x00, 0x00, 0x00, 0x07, 0x00, 0x00, 0x00, 0x00};
  EXPECT_EQ(std::memcmp(b, want, sizeof(b)), 0);
  const format::RgrpLvb back = format::RgrpLvb::Decode(b);
  EXPECT_EQ(back.magic, format::kMagic);
  EXPECT_EQ(back.unlinked, 7u);
  EXPECT_TRUE(back.Matches(hdr));
  format::Rgrp other = hdr;
  other.igeneration++;
  EXPECT_FALSE(back.Matches(other));
  other = hdr;
  other.free--;
  EXPECT_FALSE(back.Matches(other));
}

TEST(FormatTest, InMemoryTreesAndExhashGrowth) {
  TempDir dir;
  std::string img = MakeImage(dir, "m.img", 64, 512);
  auto file = OpenFileBlockDevice(img, {});
  ASSERT_TRUE(file.ok());
  auto mem = CopyToMemory(**file);
  ASSERT_TRUE(mem.ok());
  auto fs = FileSystem::Mount(std::move(*mem), {});
  ASSERT_TRUE(fs.ok()) << fs.status().ToString();
  FileSystem& f = **fs;
  const auto g = format::Geometry::For(512);
  std::vector<uint8_t> data(512, 0xA5);
  for (uint32_t h = 1; h <= 4; ++h) {
    auto a = f.Mknod(f.root(), "h" + std::to_string(h), 0100644, 0, RootCred());
    ASSERT_TRUE(a.ok());
    uint64_t off = g.data_cap[h - 1] + 1000;  // just past what height h-1 can address
    ASSERT_TRUE(f.Write(a->ino, off, data, false).ok());
    std::vector<uint8_t> back(512);
    ASSERT_TRUE(f.Read(a->ino, off, back).ok());
    EXPECT_EQ(back, data);
    std::vector<uint8_t> hole(512, 1);
    ASSERT_TRUE(f.Read(a->ino, 0, hole).ok());
    EXPECT_EQ(hole, std::vector<uint8_t>(512, 0));
  }
  auto d = f.Mkdir(f.root(), "grow", 0755, RootCred());
  ASSERT_TRUE(d.ok());
  std::set<std::string> names = {".", ".."};
  for (int i = 0; i < 1500; ++i) {
    std::string n = "entry-" + std::to_string(i);
    ASSERT_TRUE(f.Mknod(d->ino, n, 0100644, 0, RootCred()).ok()) << n;
    names.insert(n);
  }
  auto attr = f.GetAttr(d->ino);
  ASSERT_TRUE(attr.ok());
  EXPECT_GT(attr->size, 8u * 32);  // the table doubled past its initial 32 pointers (512-byte)
  std::set<std::string> listed;
  ASSERT_TRUE(f.ReadDir(d->ino, 0, [&](const DirEntry& e) {
                 listed.insert(e.name);
                 return true;
               }).ok());
  EXPECT_EQ(listed, names);
  ASSERT_TRUE(f.Unmount().ok());
}

}  // namespace
}  // namespace ugfs2
