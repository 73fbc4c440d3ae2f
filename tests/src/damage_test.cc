// Damaged-image fuzz test: a populated real mkfs.gfs2 image (nested directories, an exhash
// directory with JD hash-table blocks, stuffed/unstuffed/height>=3 sparse files, symlinks, hard
// links, device nodes, a hand-written EA block) is damaged at 1-4 random metadata blocks per
// iteration, then mounted, walked, modified and unmounted. Nothing may crash, hang, abort or
// allocate without bound; a refused mount must say why. Runs under ASan+UBSan too.
//
// Reproducing: every iteration prints its seed; UGFS2_DAMAGE_SEED=<seed> reruns just that one
// (the base image is rebuilt identically). UGFS2_DAMAGE_ITERS=<n> changes the iteration count,
// UGFS2_DAMAGE_BASE=<seed> the first seed (default: from the clock), UGFS2_DAMAGE_VERBOSE=1 shows
// the engine's log lines.
#include <sys/stat.h>
#include <sys/sysmacros.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <fstream>
#include <map>
#include <mutex>
#include <random>
#include <set>
#include <shared_mutex>
#include <sstream>
#include <thread>

#include <gtest/gtest.h>

#include "common/crc.h"
#include "common/endian.h"
#include "common/log.h"
#include "engine_test_util.h"
#include "format/ondisk.h"
#include "fs/file_system.h"
#include "journal/journal.h"

// Under UBSan, any undefined behaviour fails the test (the default only prints a line).
extern "C" const char* __ubsan_default_options() { return "halt_on_error=1:print_stacktrace=1"; }

namespace ugfs2 {
namespace {

using testing::MakeImage;
using testing::MountImage;
using testing::RootCred;
using testing::TempDir;

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
constexpr uint64_t kDefaultIters = 60;  // sanitizers are ~10x slower
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
constexpr uint64_t kDefaultIters = 60;
#else
constexpr uint64_t kDefaultIters = 300;
#endif
#else
constexpr uint64_t kDefaultIters = 300;
#endif

constexpr uint32_t kBsize = 1024;
constexpr uint64_t kImageMb = 40;

// A device over shared storage, so an image can be remounted after the daemon wrote it. Records
// the blocks written (`written`), so the storage can be restored cheaply between iterations
// (copying the whole image every time costs more than the iteration itself).
class SharedMemDevice final : public BlockDevice {
 public:
  explicit SharedMemDevice(std::shared_ptr<std::vector<uint8_t>> d,
                           std::set<uint64_t>* written = nullptr)
      : d_(std::move(d)), written_(written) {}
  Status ReadAt(uint64_t off, void* buf, size_t len) override {
    std::shared_lock l(mu_);
    if (off > d_->size() || len > d_->size() - off) return Status::IoError("read past end");
    std::memcpy(buf, d_->data() + off, len);
    return Status::Ok();
  }
  Status WriteAt(uint64_t off, const void* buf, size_t len) override {
    std::unique_lock l(mu_);
    if (off > d_->size() || len > d_->size() - off) return Status::IoError("write past end");
    std::memcpy(d_->data() + off, buf, len);
    if (written_ && len > 0) {
      for (uint64_t b = off / kBsize; b <= (off + len - 1) / kBsize; ++b) written_->insert(b);
    }
    return Status::Ok();
  }
  Status Flush() override { return Status::Ok(); }
  uint64_t Size() const override { return d_->size(); }
  std::string Describe() const override { return "damaged-image"; }

 private:
  std::shared_mutex mu_;
  std::shared_ptr<std::vector<uint8_t>> d_;
  std::set<uint64_t>* written_;
};

std::vector<uint8_t> Pattern(size_t n, uint32_t seed) {
  std::vector<uint8_t> v(n);
  std::mt19937 rng(seed);
  for (auto& b : v) b = static_cast<uint8_t>(rng());
  return v;
}

uint64_t EnvU64(const char* name, uint64_t def) {
  const char* v = getenv(name);
  return v && *v ? std::strtoull(v, nullptr, 0) : def;
}

// Finds `name` in a linear (stuffed) directory dinode block; 0 if absent.
uint64_t LinearLookup(const uint8_t* blk, std::string_view name) {
  uint32_t off = format::kDinodeSize;
  while (off + format::kDirentSize <= kBsize) {
    format::Dirent de = format::Dirent::Decode(blk + off);
    if (de.rec_len < format::kDirentSize) return 0;
    if (de.name_len == name.size() &&
        std::memcmp(blk + off + format::kDirentSize, name.data(), name.size()) == 0) {
      return de.inum.addr;
    }
    off += de.rec_len;
  }
  return 0;
}

struct BaseImage {
  std::vector<uint8_t> clean;  // cleanly unmounted
  std::vector<uint8_t> dirty;  // crashed after a workload (journal needs replay)
  uint64_t nblocks = 0;
  // Metadata blocks by type (outside the journal), and journal blocks (of journal0).
  std::map<uint32_t, std::vector<uint64_t>> meta;
  std::vector<uint64_t> journal;
  std::vector<uint64_t> dirty_log;  // journal blocks of `dirty` holding log content (LH/LD/LB)
  uint64_t sb_blk = 0;
  bool ok = false;
};

BaseImage* g_base = nullptr;

void Populate(FileSystem& fs) {
  const Cred c = RootCred();
  const InodeNo root = fs.root();
  auto mk = [&](InodeNo d, const std::string& n) {
    auto a = fs.Mkdir(d, n, 0755, c);
    EXPECT_TRUE(a.ok()) << n << ": " << a.status().ToString();
    return a.ok() ? a->ino : 0;
  };
  auto file = [&](InodeNo d, const std::string& n, uint64_t off, size_t len, uint32_t seed) {
    auto a = fs.Mknod(d, n, 0100644, 0, c);
    EXPECT_TRUE(a.ok()) << n << ": " << a.status().ToString();
    if (!a.ok()) return InodeNo{0};
    if (len) {
      auto w = fs.Write(a->ino, off, Pattern(len, seed), false);
      EXPECT_TRUE(w.ok()) << w.status().ToString();
    }
    return a->ino;
  };
  InodeNo d1 = mk(root, "d1");
  InodeNo d2 = mk(d1, "d2");
  InodeNo d3 = mk(d2, "d3");
  mk(d3, "empty");
  file(d1, "a.txt", 0, 100, 1);
  file(d2, "b.bin", 0, 5000, 2);
  file(d3, "c.bin", 0, 70000, 3);
  file(root, "stuffed.txt", 0, 300, 4);
  InodeNo med = file(root, "medium.bin", 0, 40000, 5);
  // Height >= 3 at 1 KiB blocks: 99 pointers in the dinode, 125 per indirect block.
  InodeNo sp = file(root, "sparse.bin", 0, 3000, 6);
  (void)fs.Write(sp, 300 * 1024, Pattern(2048, 7), false);
  (void)fs.Write(sp, 20ull << 20, Pattern(4096, 8), false);
  InodeNo big = mk(root, "big");
  for (int i = 0; i < 1400; ++i) {
    char n[32];
    snprintf(n, sizeof(n), "entry-%05d", i);
    auto a = fs.Mknod(big, n, 0100644, 0, c);
    EXPECT_TRUE(a.ok()) << a.status().ToString();
    if (a.ok() && i % 97 == 0) (void)fs.Write(a->ino, 0, Pattern(1500, i), false);
  }
  for (int i = 0; i < 5; ++i) mk(big, "sub" + std::to_string(i));
  EXPECT_TRUE(fs.Symlink(root, "link-short", "stuffed.txt", c).ok());
  EXPECT_TRUE(fs.Symlink(d1, "link-long", std::string(600, 'x'), c).ok());
  EXPECT_TRUE(fs.Link(med, d2, "hard-medium").ok());
  EXPECT_TRUE(fs.Link(med, big, "hard-medium2").ok());
  EXPECT_TRUE(fs.Mknod(root, "chr", S_IFCHR | 0600, makedev(1, 3), c).ok());
  EXPECT_TRUE(fs.Mknod(root, "blk", S_IFBLK | 0600, makedev(7, 0), c).ok());
  EXPECT_TRUE(fs.Mknod(d1, "fifo", S_IFIFO | 0600, 0, c).ok());
  EXPECT_TRUE(fs.Mknod(d1, "sock", S_IFSOCK | 0600, 0, c).ok());
  file(root, "ea.txt", 0, kBsize, 9);  // its data block becomes an EA block (AddEaBlock)
}

// Turns ea.txt's single data block into an EA block: di_eattr = that block, the file becomes
// empty and stuffed. The block stays USED and counted in di_blocks, as the kernel would have it.
void AddEaBlock(std::vector<uint8_t>& img, uint64_t ino) {
  uint8_t* d = img.data() + ino * kBsize;
  format::Dinode di = format::Dinode::Decode(d);
  ASSERT_EQ(di.height, 1);
  uint64_t blk = LoadBe64(d + format::kDinodeSize);
  ASSERT_NE(blk, 0u);
  di.eattr = blk;
  di.height = 0;
  di.size = 0;
  std::memset(d + format::kDinodeSize, 0, kBsize - format::kDinodeSize);
  di.Encode(d);
  uint8_t* e = img.data() + blk * kBsize;
  std::memset(e, 0, kBsize);
  format::WriteMeta(e, format::kMetaEa);
  uint8_t* r = e + format::kMetaHeaderSize;
  StoreBe32(r, kBsize - format::kMetaHeaderSize);  // ea_rec_len
  StoreBe32(r + 4, 5);                             // ea_data_len
  r[8] = 4;                                        // ea_name_len
  r[9] = 1;                                        // user
  r[10] = 0x01;                                    // LAST
  r[11] = 0;                                       // stuffed value
  std::memcpy(r + 16, "test", 4);
  std::memcpy(r + 16 + 8, "hello", 5);  // name padded to 8
}

void BuildBase() {
  static BaseImage base;
  g_base = &base;
  TempDir dir;
  std::string img = MakeImage(dir, "base.img", kImageMb, kBsize);
  InodeNo ea_ino = 0;
  {
    auto fs = MountImage(img);
    ASSERT_TRUE(fs);
    Populate(*fs);
    auto a = fs->Lookup(fs->root(), "ea.txt");
    ASSERT_TRUE(a.ok());
    ea_ino = a->ino;
    ASSERT_TRUE(fs->Unmount().ok());
  }
  {
    std::ifstream in(img, std::ios::binary);
    base.clean.assign(std::istreambuf_iterator<char>(in), {});
  }
  ASSERT_EQ(base.clean.size(), kImageMb << 20);
  AddEaBlock(base.clean, ea_ino);
  {
    std::ofstream out(img, std::ios::binary | std::ios::trunc);
    out.write(reinterpret_cast<const char*>(base.clean.data()),
              static_cast<std::streamsize>(base.clean.size()));
  }
  std::string report;
  EXPECT_TRUE(testing::FsckClean(img, &report)) << "base image is not clean:\n" << report;
  base.nblocks = base.clean.size() / kBsize;
  base.sb_blk = format::kSuperblockOffset / kBsize;

  // journal0: master -> jindex -> journal0 (all linear directories on a fresh volume).
  auto sb = format::Superblock::Decode(base.clean.data() + format::kSuperblockOffset);
  ASSERT_TRUE(sb.ok());
  uint64_t jindex = LinearLookup(base.clean.data() + sb->master_dir.addr * kBsize, "jindex");
  ASSERT_NE(jindex, 0u);
  uint64_t j0 = LinearLookup(base.clean.data() + jindex * kBsize, "journal0");
  ASSERT_NE(j0, 0u);
  {
    SharedMemDevice dev(std::make_shared<std::vector<uint8_t>>(base.clean));
    auto jb = journal::MapJournalBlocks(dev, format::Geometry::For(kBsize), j0);
    ASSERT_TRUE(jb.ok()) << jb.status().ToString();
    base.journal = *jb;
  }
  std::set<uint64_t> jset(base.journal.begin(), base.journal.end());
  for (uint64_t b = 0; b < base.nblocks; ++b) {
    uint32_t t = format::MetaTypeOf(base.clean.data() + b * kBsize);
    if (t == 0 || jset.count(b)) continue;
    base.meta[t].push_back(b);
  }

  // The dirty image: a workload whose last commit is never written back nor unmounted.
  {
    auto storage = std::make_shared<std::vector<uint8_t>>(base.clean);
    MountOptions opts;
    opts.commit_interval_s = 3600;
    auto fs = FileSystem::Mount(std::make_unique<SharedMemDevice>(storage), opts);
    ASSERT_TRUE(fs.ok()) << fs.status().ToString();
    FileSystem& f = **fs;
    const Cred c = RootCred();
    auto d = f.Mkdir(f.root(), "crashdir", 0755, c);
    ASSERT_TRUE(d.ok());
    for (int i = 0; i < 40; ++i) {
      auto a = f.Mknod(d->ino, "f" + std::to_string(i), 0100644, 0, c);
      ASSERT_TRUE(a.ok());
      (void)f.Write(a->ino, 0, Pattern(2000, i), false);
    }
    auto big = f.Lookup(f.root(), "big");
    ASSERT_TRUE(big.ok());
    for (int i = 0; i < 30; ++i) (void)f.Unlink(big->ino, "entry-000" + std::to_string(10 + i));
    ASSERT_TRUE(f.Fsync(d->ino, false).ok());
    // Destroy without Unmount: what a crash looks like (blocks were written in place, but the
    // journal head is not an UNMOUNT header, so the next mount replays).
    fs->reset();
    base.dirty = *storage;
  }
  // The active region [tail, head] of the dirty journal: what replay reads.
  {
    uint64_t best_seq = 0;
    size_t head = 0, tail = 0;
    bool found = false;
    for (size_t i = 0; i < base.journal.size(); ++i) {
      const uint8_t* p = base.dirty.data() + base.journal[i] * kBsize;
      if (format::MetaTypeOf(p) != format::kMetaLh || !format::LogHeader::Valid(p, kBsize))
        continue;
      format::LogHeader lh = format::LogHeader::Decode(p);
      if (!found || lh.sequence > best_seq) {
        found = true;
        best_seq = lh.sequence;
        head = i;
        tail = lh.tail;
      }
    }
    ASSERT_TRUE(found);
    for (size_t i = tail; i != head; i = (i + 1) % base.journal.size()) {
      base.dirty_log.push_back(base.journal[i]);
    }
    base.dirty_log.push_back(base.journal[head]);
  }
  printf("[damage] base image: %llu blocks, %zu journal blocks, %zu dirty-log blocks;",
         static_cast<unsigned long long>(base.nblocks), base.journal.size(), base.dirty_log.size());
  for (auto& [t, v] : base.meta) printf(" %s=%zu", format::MetaTypeName(t), v.size());
  printf("\n");
  fflush(stdout);
  ASSERT_FALSE(base.meta[format::kMetaJd].empty()) << "big directory has no JD blocks";
  ASSERT_FALSE(base.meta[format::kMetaEa].empty());
  base.ok = true;
}

// ---- damage ---------------------------------------------------------------------------------

class Damager {
 public:
  Damager(std::mt19937_64& rng, std::vector<uint8_t>& img, const BaseImage& base)
      : rng_(rng), img_(img), base_(base) {}

  uint64_t R(uint64_t n) { return n ? rng_() % n : 0; }
  bool Chance(int pct) { return R(100) < static_cast<uint64_t>(pct); }
  uint8_t* Blk(uint64_t b) {
    touched_.insert(b);
    return img_.data() + b * kBsize;
  }
  const std::set<uint64_t>& touched() const { return touched_; }

  // An "interesting" block pointer value.
  uint64_t BadPtr(uint64_t self) {
    const auto& lf = base_.meta.count(format::kMetaLf) ? base_.meta.at(format::kMetaLf)
                                                       : std::vector<uint64_t>{};
    switch (R(10)) {
      case 0:
        return self;
      case 1:
        return base_.nblocks + R(1000);
      case 2:
        return ~uint64_t{0} - R(3);
      case 3:
        return R(100);  // superblock area, before the first rgrp
      case 4:
        return base_.journal.empty() ? 1 : base_.journal[R(base_.journal.size())];
      case 5:
        return lf.empty() ? self : lf[R(lf.size())];  // someone else's leaf
      case 6:
        return AnyMeta();
      case 7:
        return base_.nblocks - 1;
      case 8:
        return uint64_t{1} << R(64);
      default:
        return R(base_.nblocks);
    }
  }
  uint64_t AnyMeta() {
    auto it = base_.meta.begin();
    std::advance(it, R(base_.meta.size()));
    return it->second[R(it->second.size())];
  }
  uint64_t Pick(uint32_t type) {
    auto it = base_.meta.find(type);
    if (it == base_.meta.end() || it->second.empty()) return AnyMeta();
    return it->second[R(it->second.size())];
  }

  void FlipBytes(uint64_t b, uint32_t from) {
    int n = 1 + static_cast<int>(R(8));
    for (int i = 0; i < n; ++i) {
      uint32_t off = from + static_cast<uint32_t>(R(kBsize - from));
      Blk(b)[off] ^= static_cast<uint8_t>(1 + R(255));
    }
    Note("flip " + std::to_string(n) + " bytes");
  }
  void SetField(uint8_t* p, int width, uint64_t v) {
    if (width == 8) StoreBe64(p, v);
    if (width == 4) StoreBe32(p, static_cast<uint32_t>(v));
    if (width == 2) StoreBe16(p, static_cast<uint16_t>(v));
  }
  uint64_t OddValue(int width) {
    uint64_t max = width == 8 ? ~uint64_t{0} : (uint64_t{1} << (width * 8)) - 1;
    switch (R(7)) {
      case 0:
        return 0;
      case 1:
        return max;
      case 2:
        return max - 1;
      case 3:
        return 1 + R(16);
      case 4:
        return uint64_t{1} << R(width * 8);
      case 5:
        return max / 2 + 1;
      default:
        return rng_() & max;
    }
  }

  void DamageDinode(uint64_t b) {
    uint8_t* p = Blk(b);
    format::Dinode di = format::Dinode::Decode(p);
    switch (R(16)) {
      case 0:
        di.height = static_cast<uint16_t>(R(3) ? R(12) : OddValue(2));
        Note("height");
        break;
      case 1:
        di.depth = static_cast<uint16_t>(R(3) ? R(20) : OddValue(2));
        Note("depth");
        break;
      case 2:
        di.size = R(2) ? OddValue(8) : (R(2) ? di.size * 2 + R(9) : uint64_t{8} << R(20));
        Note("size");
        break;
      case 3:
        di.flags ^= static_cast<uint32_t>(1u << R(32));
        Note("flags");
        break;
      case 4:
        di.entries = static_cast<uint32_t>(OddValue(4));
        Note("entries");
        break;
      case 5:
        di.nlink = static_cast<uint32_t>(OddValue(4));
        Note("nlink");
        break;
      case 6:
        di.blocks = OddValue(8);
        Note("blocks");
        break;
      case 7:
        di.eattr = BadPtr(b);
        Note("eattr");
        break;
      case 8:
        di.mode = static_cast<uint32_t>(R(2) ? OddValue(4) : (di.mode ^ (1u << (12 + R(4)))));
        Note("mode");
        break;
      case 9:
        di.num.addr = BadPtr(b);
        Note("num.addr");
        break;
      case 10:
        di.flags ^= format::kDifExhash;
        Note("toggle exhash");
        break;
      case 11: {  // a pointer in the dinode's pointer area / stuffed data
        uint32_t idx = static_cast<uint32_t>(R(R(2) ? 4 : (kBsize - format::kDinodeSize) / 8));
        StoreBe64(p + format::kDinodeSize + idx * 8, BadPtr(b));
        Note("ptr[" + std::to_string(idx) + "]");
        return;
      }
      case 12:
        DamageDirents(b, format::kDinodeSize);
        return;
      case 13:
        di.flags |= format::kDifEaIndirect;
        di.eattr = R(2) ? di.eattr : Pick(format::kMetaIn);
        Note("ea indirect");
        break;
      case 14:
        di.height = static_cast<uint16_t>(di.height + 1);
        Note("height+1");
        break;
      default:
        FlipBytes(b, 24);
        return;
    }
    di.Encode(p);
  }

  void DamageDirents(uint64_t b, uint32_t start) {
    uint8_t* p = Blk(b);
    // Collect dirent offsets of the (still valid) chain.
    std::vector<uint32_t> offs;
    for (uint32_t off = start; off + format::kDirentSize <= kBsize && offs.size() < 200;) {
      offs.push_back(off);
      uint16_t rl = LoadBe16(p + off + 20);
      if (rl < format::kDirentSize) break;
      off += rl;
    }
    uint32_t off = offs[R(offs.size())];
    switch (R(8)) {
      case 0:
        StoreBe16(p + off + 20, 0);
        Note("rec_len 0");
        break;
      case 1:
        StoreBe16(p + off + 20, static_cast<uint16_t>(OddValue(2)));
        Note("rec_len odd");
        break;
      case 2:
        StoreBe16(p + off + 20, static_cast<uint16_t>(LoadBe16(p + off + 20) + 8 * (1 + R(4))));
        Note("rec_len+");
        break;
      case 3:
        StoreBe16(p + off + 22, static_cast<uint16_t>(R(2) ? OddValue(2) : 255 + R(100)));
        Note("name_len");
        break;
      case 4:
        StoreBe64(p + off + 8, BadPtr(b));
        Note("dirent inum.addr");
        break;
      case 5:
        StoreBe64(p + off, OddValue(8));
        Note("dirent formal_ino");
        break;
      case 6:
        StoreBe32(p + off + 16, static_cast<uint32_t>(rng_()));
        Note("dirent hash");
        break;
      default:
        std::memset(p + off, 0, 16);
        Note("dirent inum zeroed");
        break;
    }
  }

  void DamageLeaf(uint64_t b) {
    uint8_t* p = Blk(b);
    switch (R(7)) {
      case 0:
        StoreBe16(p + 24, static_cast<uint16_t>(R(3) ? R(20) : OddValue(2)));
        Note("lf_depth");
        break;
      case 1:
        StoreBe64(p + 32, R(2) ? b : BadPtr(b));
        Note("lf_next");
        break;
      case 2:
        StoreBe16(p + 26, static_cast<uint16_t>(OddValue(2)));
        Note("lf_entries");
        break;
      case 3:
      case 4:
        DamageDirents(b, format::kLeafSize);
        break;
      case 5: {  // a two-leaf loop
        uint64_t other = Pick(format::kMetaLf);
        StoreBe64(p + 32, other);
        StoreBe64(Blk(other) + 32, b);
        Note("lf_next loop with " + std::to_string(other));
        break;
      }
      default:
        FlipBytes(b, 24);
        break;
    }
  }

  void DamagePtrBlock(uint64_t b) {  // IN or JD (hash table)
    uint8_t* p = Blk(b);
    uint32_t n = (kBsize - format::kMetaHeaderSize) / 8;
    uint32_t idx = static_cast<uint32_t>(R(R(2) ? 4 : n));
    if (R(4) == 0) {
      FlipBytes(b, 24);
    } else {
      StoreBe64(p + format::kMetaHeaderSize + idx * 8, R(5) == 0 ? 0 : BadPtr(b));
      Note("ptr[" + std::to_string(idx) + "]");
    }
  }

  void DamageRgrp(uint64_t b) {
    uint8_t* p = Blk(b);
    format::Rgrp rg = format::Rgrp::Decode(p);
    bool fix_crc = R(2);
    switch (R(6)) {
      case 0:
        rg.free = static_cast<uint32_t>(R(2) ? rg.free + 1 + R(10) : OddValue(4));
        Note("rg_free");
        break;
      case 1:
        rg.dinodes = static_cast<uint32_t>(R(2) ? rg.dinodes - 1 : OddValue(4));
        Note("rg_dinodes");
        break;
      case 2:
        rg.data0 = BadPtr(b);
        Note("rg_data0");
        break;
      case 3:
        rg.data = static_cast<uint32_t>(OddValue(4));
        Note("rg_data");
        break;
      case 4:
        rg.bitbytes = static_cast<uint32_t>(OddValue(4));
        Note("rg_bitbytes");
        break;
      default:
        FlipBytes(b, 128);
        return;  // the bitmap part
    }
    if (fix_crc) {
      rg.Encode(p);
      Note("crc recomputed");
    } else {
      uint32_t crc = LoadBe32(p + 64);
      rg.Encode(p);
      StoreBe32(p + 64, crc);
    }
  }

  void DamageBitmap(uint64_t b) {
    uint8_t* p = Blk(b);
    int n = 1 + static_cast<int>(R(6));
    for (int i = 0; i < n; ++i) {
      uint32_t off = format::kMetaHeaderSize + static_cast<uint32_t>(R(kBsize - 24));
      p[off] ^= static_cast<uint8_t>(1 + R(255));
    }
    Note("bitmap flips");
  }

  void DamageSuper() {
    uint8_t* p = Blk(base_.sb_blk);
    switch (R(7)) {
      case 0:
        StoreBe64(p + 56, BadPtr(0));
        Note("sb master addr");
        break;
      case 1:
        StoreBe64(p + 88, BadPtr(0));
        Note("sb root addr");
        break;
      case 2:
        StoreBe32(p + 36, static_cast<uint32_t>(R(2) ? 512u << R(8) : OddValue(4)));
        Note("sb bsize");
        break;
      case 3:
        StoreBe32(p + 40, static_cast<uint32_t>(R(20)));
        Note("sb bsize_shift");
        break;
      case 4:
        std::memcpy(p + 96, "lock_xyz", 8);
        Note("sb lockproto");
        break;
      case 5:
        StoreBe32(p + 24, static_cast<uint32_t>(1700 + R(200)));
        Note("sb fs_format");
        break;
      default:
        FlipBytes(base_.sb_blk, 0);
        break;
    }
  }

  void DamageEa(uint64_t b) {
    uint8_t* p = Blk(b) + format::kMetaHeaderSize;
    switch (R(5)) {
      case 0:
        StoreBe32(p, static_cast<uint32_t>(OddValue(4)));
        Note("ea_rec_len");
        break;
      case 1:
        p[11] = static_cast<uint8_t>(1 + R(255));
        Note("ea_num_ptrs");
        break;
      case 2:
        p[10] = 0;
        Note("ea not last");
        break;
      case 3:
        p[8] = static_cast<uint8_t>(R(256));
        Note("ea_name_len");
        break;
      default:
        FlipBytes(b, 24);
        break;
    }
  }

  void DamageJournal(bool dirty) {
    const auto& v = dirty && !base_.dirty_log.empty() ? base_.dirty_log : base_.journal;
    uint64_t b = v[R(v.size())];
    uint8_t* p = Blk(b);
    switch (R(5)) {
      case 0:
        std::memset(p + 24, 0xA5, kBsize - 24);
        Note("journal garbage");
        break;
      case 1: {  // descriptor length / type
        StoreBe32(p + 24, static_cast<uint32_t>(R(2) ? 300 + R(3) : OddValue(4)));
        StoreBe32(p + 28, static_cast<uint32_t>(OddValue(4)));
        Note("log descriptor fields");
        break;
      }
      case 2: {  // block numbers listed in a descriptor
        for (uint32_t off = format::kLogDescSize; off + 8 <= kBsize; off += 8 * (1 + R(4))) {
          StoreBe64(p + off, BadPtr(b));
        }
        Note("log pointers");
        break;
      }
      default:
        FlipBytes(b, 0);
        break;
    }
    last_ = b;
  }

  std::string Apply(bool dirty) {
    int n = 1 + static_cast<int>(R(4));
    for (int i = 0; i < n; ++i) {
      uint64_t b = 0;
      uint32_t what = static_cast<uint32_t>(R(100));
      if (dirty && what < 60) {
        DamageJournal(true);
        b = last_;
      } else if (what < 35) {
        b = Pick(format::kMetaDi);
        DamageDinode(b);
      } else if (what < 50) {
        b = Pick(format::kMetaLf);
        DamageLeaf(b);
      } else if (what < 57) {
        b = Pick(format::kMetaJd);
        DamagePtrBlock(b);
      } else if (what < 64) {
        b = Pick(format::kMetaIn);
        DamagePtrBlock(b);
      } else if (what < 72) {
        b = Pick(format::kMetaRg);
        DamageRgrp(b);
      } else if (what < 78) {
        b = Pick(R(2) ? format::kMetaRb : format::kMetaRg);
        DamageBitmap(b);
      } else if (what < 82) {
        b = Pick(format::kMetaEa);
        DamageEa(b);
      } else if (what < 85) {
        b = base_.sb_blk;
        DamageSuper();
      } else if (what < 90) {
        DamageJournal(false);
        b = last_;
      } else {
        b = AnyMeta();
        FlipBytes(b, 0);
      }
      desc_ += " @" + std::to_string(b) + ":" + note_;
      note_.clear();
    }
    return desc_;
  }

 private:
  void Note(const std::string& s) { note_ += (note_.empty() ? "" : ",") + s; }

  std::mt19937_64& rng_;
  std::vector<uint8_t>& img_;
  const BaseImage& base_;
  std::string note_, desc_;
  uint64_t last_ = 0;
  std::set<uint64_t> touched_;
};

// ---- exercising a damaged volume ------------------------------------------------------------

struct Walked {
  std::vector<std::pair<InodeNo, std::string>> files;  // (parent, name) of regular files
  std::vector<std::pair<InodeNo, std::string>> dirs;   // (parent, name) of directories
  std::vector<InodeNo> dir_inos;
  uint64_t errors = 0;
};

void CheckStatus(const Status& st, const char* what) {
  if (!st.ok()) {
    EXPECT_FALSE(st.message().empty()) << what << " failed without a message";
  }
}

Walked Walk(FileSystem& fs) {
  Walked w;
  std::set<InodeNo> seen;
  std::deque<std::pair<InodeNo, int>> q{{fs.root(), 0}};
  seen.insert(fs.root());
  w.dir_inos.push_back(fs.root());
  std::vector<uint8_t> buf(16384);
  size_t visits = 0;
  while (!q.empty() && visits < 3000) {
    auto [dir, depth] = q.front();
    q.pop_front();
    std::vector<DirEntry> ents;
    uint64_t cookie = 0;
    for (int chunk = 0; chunk < 100; ++chunk) {  // paged, like the kernel does
      size_t got = 0;
      bool more = false;
      Status st = fs.ReadDir(dir, cookie, [&](const DirEntry& e) {
        if (got == 400 || ents.size() > 5000) {
          more = got == 400;
          return false;
        }
        ents.push_back(e);
        if (e.next_cookie > cookie) cookie = e.next_cookie;
        got++;
        return true;
      });
      CheckStatus(st, "ReadDir");
      if (!st.ok()) w.errors++;
      if (!more || !st.ok()) break;
    }
    for (const auto& e : ents) {
      if (e.name == "." || e.name == "..") {
        (void)fs.Lookup(dir, e.name);
        continue;
      }
      visits++;
      auto a = fs.Lookup(dir, e.name);
      if (!a.ok()) {
        CheckStatus(a.status(), "Lookup");
        w.errors++;
        continue;
      }
      auto g = fs.GetAttr(a->ino);
      if (!g.ok()) continue;
      const uint32_t type = g->mode & S_IFMT;
      if (type == S_IFDIR) {
        w.dirs.push_back({dir, e.name});
        if (seen.insert(a->ino).second && depth < 32) {
          q.push_back({a->ino, depth + 1});
          w.dir_inos.push_back(a->ino);
        }
      } else if (type == S_IFREG) {
        if (w.files.size() < 64 || e.name.rfind("entry-", 0) != 0) w.files.push_back({dir, e.name});
        if (!seen.insert(a->ino).second) continue;
        const uint64_t size = g->size;
        for (uint64_t off : {uint64_t{0}, size / 2, size > 4096 ? size - 4096 : 0, size + 10}) {
          auto r = fs.Read(a->ino, off, buf);
          if (!r.ok()) {
            CheckStatus(r.status(), "Read");
            w.errors++;
          } else {
            EXPECT_LE(*r, buf.size());
          }
        }
        (void)fs.Lseek(a->ino, 0, 3);
        (void)fs.Lseek(a->ino, 0, 4);
      } else if (type == S_IFLNK) {
        auto l = fs.ReadLink(a->ino);
        if (!l.ok()) {
          CheckStatus(l.status(), "ReadLink");
        } else {
          EXPECT_LE(l->size(), kBsize);
        }
      }
    }
  }
  return w;
}

void Modify(FileSystem& fs, Walked& w, std::mt19937_64& rng) {
  const Cred c = RootCred();
  auto R = [&](uint64_t n) { return n ? rng() % n : 0; };
  auto pick_dir = [&]() { return w.dir_inos[R(w.dir_inos.size())]; };
  std::vector<uint8_t> data = Pattern(3000 + R(5000), static_cast<uint32_t>(rng()));
  for (int step = 0; step < 24; ++step) {
    Status st;
    switch (R(14)) {
      case 0: {
        auto a = fs.Mkdir(pick_dir(), "nd" + std::to_string(step), 0755, c);
        st = a.status();
        if (a.ok()) w.dir_inos.push_back(a->ino);
        break;
      }
      case 1:
      case 2: {
        auto a = fs.Mknod(pick_dir(), "nf" + std::to_string(step), 0100644, 0, c);
        st = a.status();
        if (a.ok()) {
          auto wr = fs.Write(a->ino, R(3) ? 0 : R(1 << 22), data, false);
          CheckStatus(wr.status(), "Write");
        }
        break;
      }
      case 3:
      case 4: {  // write into an existing file
        if (w.files.empty()) break;
        auto [d, n] = w.files[R(w.files.size())];
        auto a = fs.Lookup(d, n);
        if (!a.ok()) break;
        auto wr = fs.Write(a->ino, R(2) ? R(a->size + 1) : R(1 << 24), data, false);
        st = wr.status();
        break;
      }
      case 5: {  // truncate
        if (w.files.empty()) break;
        auto [d, n] = w.files[R(w.files.size())];
        auto a = fs.Lookup(d, n);
        if (!a.ok()) break;
        SetAttrRequest req;
        req.mask = kSetSize;
        req.size = R(2) ? R(a->size + 1) : R(1 << 23);
        st = fs.SetAttr(a->ino, req, c).status();
        break;
      }
      case 6: {
        if (w.files.empty()) break;
        auto [d, n] = w.files[R(w.files.size())];
        st = fs.Unlink(d, n);
        break;
      }
      case 7: {
        if (w.dirs.empty()) break;
        auto [d, n] = w.dirs[R(w.dirs.size())];
        st = fs.Rmdir(d, n);
        break;
      }
      case 8: {  // rename a file or a directory somewhere else
        bool dir = R(2) && !w.dirs.empty();
        auto& v = dir ? w.dirs : w.files;
        if (v.empty()) break;
        auto [d, n] = v[R(v.size())];
        st = fs.Rename(d, n, pick_dir(), "rn" + std::to_string(step), 0);
        break;
      }
      case 9: {
        if (w.files.empty()) break;
        auto [d, n] = w.files[R(w.files.size())];
        auto a = fs.Lookup(d, n);
        if (!a.ok()) break;
        st = fs.Link(a->ino, pick_dir(), "ln" + std::to_string(step)).status();
        break;
      }
      case 10:
        st = fs.Symlink(pick_dir(), "sl" + std::to_string(step), "target", c).status();
        break;
      case 11: {  // open(O_TRUNC) + release, fallocate, punch
        if (w.files.empty()) break;
        auto [d, n] = w.files[R(w.files.size())];
        auto a = fs.Lookup(d, n);
        if (!a.ok()) break;
        if (fs.Open(a->ino, R(3) == 0, c).ok()) {
          CheckStatus(fs.Fallocate(a->ino, R(2) ? 0 : kFallocPunchHole | kFallocKeepSize,
                                   R(a->size + 1), 1 + R(20000)),
                      "Fallocate");
          st = fs.Release(a->ino);
        }
        break;
      }
      case 12: {  // fill a directory until it splits/doubles
        InodeNo d = pick_dir();
        for (int i = 0; i < 40; ++i) {
          st = fs.Mknod(d, "fill" + std::to_string(step) + "-" + std::to_string(i), 0100644, 0, c)
                   .status();
          if (!st.ok()) break;
        }
        break;
      }
      default: {
        st = fs.StatFs().status();
        if (st.ok()) st = fs.SyncFs();
        break;
      }
    }
    CheckStatus(st, "modification");
  }
}

std::atomic<uint64_t> g_current_seed{0};
std::atomic<int64_t> g_iter_start_ms{0};

int64_t NowMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

// Runs one damaged image. Returns a one-line summary.
std::string RunOne(uint64_t seed) {
  std::mt19937_64 rng(seed);
  const bool dirty = rng() % 8 == 0;
  // Working copies of both base images, restored block by block after each iteration.
  static std::shared_ptr<std::vector<uint8_t>> work[2];
  const std::vector<uint8_t>& pristine = dirty ? g_base->dirty : g_base->clean;
  auto& storage = work[dirty];
  if (!storage) storage = std::make_shared<std::vector<uint8_t>>(pristine);
  std::set<uint64_t> written;
  Damager dmg(rng, *storage, *g_base);
  struct Restore {
    const std::vector<uint8_t>& from;
    std::vector<uint8_t>& to;
    const std::set<uint64_t>& a;
    const std::set<uint64_t>& b;
    ~Restore() {
      for (const auto* set : {&a, &b}) {
        for (uint64_t blk : *set) {
          std::memcpy(to.data() + blk * kBsize, from.data() + blk * kBsize, kBsize);
        }
      }
    }
  } restore{pristine, *storage, written, dmg.touched()};
  std::string desc = dmg.Apply(dirty);
  printf("[damage] seed %llu%s:%s\n", static_cast<unsigned long long>(seed),
         dirty ? " (dirty journal)" : "", desc.c_str());
  fflush(stdout);
  std::string outcome;
  for (int round = 0; round < 2; ++round) {
    MountOptions opts;
    opts.commit_interval_s = 3600;
    opts.meta_cache_bytes = 8ull << 20;
    auto fs = FileSystem::Mount(std::make_unique<SharedMemDevice>(storage, &written), opts);
    if (!fs.ok()) {
      EXPECT_FALSE(fs.status().message().empty()) << "mount refused without a message";
      outcome += round ? " remount-refused" : " refused";
      if (getenv("UGFS2_DAMAGE_VERBOSE")) printf("  mount: %s\n", fs.status().ToString().c_str());
      break;
    }
    Walked w = Walk(**fs);
    if (round == 0) Modify(**fs, w, rng);
    Status st = (*fs)->Unmount();
    outcome += std::string(round ? " remount" : " mounted") + "(errors " +
               std::to_string(w.errors) + (st.ok() ? ", unmount ok)" : ", unmount failed)");
    CheckStatus(st, "Unmount");
  }
  return outcome;
}

class DamageTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (!getenv("UGFS2_DAMAGE_VERBOSE")) {
      SetLogSink([](LogLevel, const std::string&) {});
    }
    BuildBase();
  }
};

TEST_F(DamageTest, RandomMetadataDamageNeverCrashes) {
  ASSERT_TRUE(g_base && g_base->ok);
  // Hang watchdog: one iteration must not take minutes.
  std::atomic<bool> stop{false};
  std::thread watchdog([&] {
    while (!stop) {
      std::this_thread::sleep_for(std::chrono::milliseconds(200));
      int64_t s = g_iter_start_ms.load();
      if (s != 0 && NowMs() - s > 120000) {
        fprintf(stderr, "[damage] seed %llu: iteration hung for 120 s\n",
                static_cast<unsigned long long>(g_current_seed.load()));
        std::abort();
      }
    }
  });
  std::vector<uint64_t> seeds;
  if (const char* one = getenv("UGFS2_DAMAGE_SEED"); one && *one) {
    seeds.push_back(std::strtoull(one, nullptr, 0));
  } else {
    uint64_t base = EnvU64("UGFS2_DAMAGE_BASE", static_cast<uint64_t>(time(nullptr)) * 1000);
    uint64_t iters = EnvU64("UGFS2_DAMAGE_ITERS", kDefaultIters);
    printf("[damage] base seed %llu, %llu iterations (UGFS2_DAMAGE_SEED=<seed> reruns one)\n",
           static_cast<unsigned long long>(base), static_cast<unsigned long long>(iters));
    for (uint64_t i = 0; i < iters; ++i) seeds.push_back(base + i);
  }
  std::map<std::string, int> summary;
  const int64_t t0 = NowMs();
  for (uint64_t seed : seeds) {
    g_current_seed = seed;
    g_iter_start_ms = NowMs();
    SCOPED_TRACE("UGFS2_DAMAGE_SEED=" + std::to_string(seed));
    std::string out = RunOne(seed);
    summary[out.substr(0, out.find('('))]++;
    if (getenv("UGFS2_DAMAGE_VERBOSE")) printf("  ->%s\n", out.c_str());
    if (HasFailure()) break;
  }
  g_iter_start_ms = 0;
  stop = true;
  watchdog.join();
  printf("[damage] %zu iterations in %.1f s:", seeds.size(), (NowMs() - t0) / 1000.0);
  for (auto& [k, n] : summary) printf(" [%s]=%d", k.c_str(), n);
  printf("\n");
}

// Garbage written over the active region of a dirty journal: mount must refuse with a message
// (or replay what is valid), never crash.
TEST_F(DamageTest, GarbageInDirtyJournalGivesClearMountError) {
  ASSERT_TRUE(g_base && g_base->ok);
  ASSERT_FALSE(g_base->dirty_log.empty());
  // Sanity: the undamaged dirty image replays and mounts.
  {
    auto storage = std::make_shared<std::vector<uint8_t>>(g_base->dirty);
    auto fs = FileSystem::Mount(std::make_unique<SharedMemDevice>(storage), {});
    ASSERT_TRUE(fs.ok()) << fs.status().ToString();
    EXPECT_TRUE((*fs)->Lookup((*fs)->root(), "crashdir").ok());
    EXPECT_TRUE((*fs)->Unmount().ok());
  }
  int refused = 0;
  auto storage = std::make_shared<std::vector<uint8_t>>(g_base->dirty);
  for (size_t i = 0; i < g_base->dirty_log.size(); ++i) {
    uint64_t b = g_base->dirty_log[i];
    uint32_t t = format::MetaTypeOf(g_base->dirty.data() + b * kBsize);
    if (t == format::kMetaLh) continue;  // a damaged header just ends the log earlier
    std::set<uint64_t> written{b};
    struct Restore {
      std::vector<uint8_t>& to;
      const std::set<uint64_t>& blocks;
      ~Restore() {
        for (uint64_t blk : blocks) {
          std::memcpy(to.data() + blk * kBsize, g_base->dirty.data() + blk * kBsize, kBsize);
        }
      }
    } restore{*storage, written};
    // Keep the magic and type, fill the rest with garbage.
    std::memset(storage->data() + b * kBsize + 24, static_cast<int>(0x5A + i), kBsize - 24);
    auto fs = FileSystem::Mount(std::make_unique<SharedMemDevice>(storage, &written), {});
    if (!fs.ok()) {
      EXPECT_FALSE(fs.status().message().empty());
      if (t == format::kMetaLd) {
        // A damaged descriptor is refused before anything is replayed, naming the journal.
        // (Garbage in a logged metadata copy cannot be told from content: the GFS2 log has no
        // per-block checksum; it is replayed and the damaged object is refused later.)
        refused++;
        EXPECT_NE(fs.status().message().find("journal"), std::string::npos)
            << fs.status().ToString();
      }
    } else {
      (void)Walk(**fs);
      (void)(*fs)->Unmount();
    }
  }
  EXPECT_GT(refused, 0) << "no garbage log descriptor was refused";
}

}  // namespace
}  // namespace ugfs2
