// Journal tests: log header codec and checksums against mkfs.gfs2 output, head search, the
// mount/unmount header protocol checked with fsck.gfs2, commits replayed both by our Replay and
// by `fsck.gfs2 -y` (proof that our log is real GFS2), hand-built logs (revokes, jdata escape,
// torn and bad headers, garbage), wrap-around, and crashes during commit and during replay.
#include "journal/journal.h"

#include <cstring>
#include <map>
#include <random>
#include <span>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "block/block_device.h"
#include "block/fault_injecting_block_device.h"
#include "common/endian.h"
#include "format/ondisk.h"
#include "journal_test_util.h"

namespace ugfs2::journal {
namespace {

using format::LogDescriptor;
using format::LogHeader;
using testutil::SystemFiles;
using testutil::TempDir;
using Block = std::vector<uint8_t>;

#define ASSERT_OK(expr)                                     \
  do {                                                      \
    ::ugfs2::Status _s = (expr);                            \
    ASSERT_TRUE(_s.ok()) << #expr << ": " << _s.ToString(); \
  } while (0)

#define ASSERT_OK_AND_ASSIGN(lhs, rexpr)                                    \
  auto UGFS2_CONCAT(_r_, __LINE__) = (rexpr);                               \
  ASSERT_TRUE(UGFS2_CONCAT(_r_, __LINE__).ok())                             \
      << #rexpr << ": " << UGFS2_CONCAT(_r_, __LINE__).status().ToString(); \
  lhs = std::move(UGFS2_CONCAT(_r_, __LINE__)).value()

// ---------------------------------------------------------------------------------------------
// Fixtures

// A mkfs.gfs2-made image in a temp dir, opened as a file device.
struct Image {
  TempDir dir;
  std::string path;
  std::unique_ptr<BlockDevice> dev;
  SystemFiles sf;
};

void MakeImage(uint32_t bsize, Image* img, uint64_t size = 32ull << 20) {
  ASSERT_TRUE(testutil::HaveMkfs()) << "mkfs.gfs2 is required (gfs2-utils)";
  ASSERT_FALSE(img->dir.path().empty());
  ASSERT_OK_AND_ASSIGN(img->path, testutil::MakeImage(img->dir.path(), "img", bsize, 2, size));
  ASSERT_OK_AND_ASSIGN(img->dev, OpenFileBlockDevice(img->path, FileDeviceOptions{}));
  ASSERT_OK_AND_ASSIGN(img->sf, testutil::FindSystemFiles(*img->dev));
  ASSERT_EQ(img->sf.bsize, bsize);
  ASSERT_EQ(img->sf.journals.size(), 2u);
}

std::string Oracle(const std::string& path, bool* clean) {
  testutil::CmdResult r = testutil::FsckOracle(path);
  *clean = r.rc == 0;
  return r.out;
}

// An image of `blkno` that is valid-looking metadata (an IN block with a pattern).
Block MetaImage(uint32_t bsize, uint64_t blkno, uint32_t salt) {
  Block b(bsize, 0);
  format::WriteMeta(b.data(), format::kMetaIn);
  for (uint32_t o = format::kMetaHeaderSize; o + 8 <= bsize; o += 8) {
    StoreBe64(b.data() + o, blkno * 1000003u + salt * 7919u + o);
  }
  return b;
}

// Free blocks near the end of the device (mkfs leaves the last resource group's tail free).
uint64_t ScratchBlock(const BlockDevice& dev, uint32_t bsize, uint64_t i) {
  return dev.Size() / bsize - 2 - i;
}

// Writes hand-built log blocks directly into a journal, to build logs the Journal class would
// never write (several commits in one region, jdata, garbage).
class LogBuilder {
 public:
  LogBuilder(BlockDevice& dev, const Journal& j, uint32_t pos)
      : dev_(dev), blocks_(j.blocks()), bsize_(j.bsize()), jid_(j.jid()), pos_(pos % j.size()) {}
  uint32_t pos() const { return pos_; }
  void Raw(const Block& b) {
    ASSERT_OK(dev_.WriteAt(blocks_[pos_] * bsize_, b.data(), bsize_));
    pos_ = static_cast<uint32_t>((pos_ + 1) % blocks_.size());
  }
  void Meta(const std::vector<std::pair<uint64_t, Block>>& entries) {
    Block d(bsize_, 0);
    LogDescriptor ld{format::kLdMetadata, static_cast<uint32_t>(entries.size() + 1),
                     static_cast<uint32_t>(entries.size()), 0};
    ld.Encode(d.data());
    for (size_t i = 0; i < entries.size(); ++i) {
      StoreBe64(d.data() + 72 + 8 * i, entries[i].first);
    }
    Raw(d);
    for (const auto& e : entries) Raw(e.second);
  }
  void Jdata(const std::vector<std::pair<uint64_t, Block>>& entries) {
    Block d(bsize_, 0);
    LogDescriptor ld{format::kLdJdata, static_cast<uint32_t>(entries.size() + 1),
                     static_cast<uint32_t>(entries.size()), 0};
    ld.Encode(d.data());
    std::vector<Block> logged;
    for (size_t i = 0; i < entries.size(); ++i) {
      Block b = entries[i].second;
      bool escaped = LoadBe32(b.data()) == format::kMagic;
      if (escaped) StoreBe32(b.data(), 0);
      StoreBe64(d.data() + 72 + 16 * i, entries[i].first);
      StoreBe64(d.data() + 72 + 16 * i + 8, escaped ? 1 : 0);
      logged.push_back(std::move(b));
    }
    Raw(d);
    for (const auto& b : logged) Raw(b);
  }
  void Revoke(const std::vector<uint64_t>& blknos) {
    const size_t k = (bsize_ - 72) / 8, k2 = (bsize_ - 24) / 8;
    size_t lbs = blknos.size() > k ? (blknos.size() - k + k2 - 1) / k2 : 0;
    Block d(bsize_, 0);
    LogDescriptor ld{format::kLdRevoke, static_cast<uint32_t>(1 + lbs),
                     static_cast<uint32_t>(blknos.size()), 0};
    ld.Encode(d.data());
    size_t i = 0;
    for (; i < blknos.size() && i < k; ++i) StoreBe64(d.data() + 72 + 8 * i, blknos[i]);
    Raw(d);
    while (i < blknos.size()) {
      Block b(bsize_, 0);
      format::WriteMeta(b.data(), format::kMetaLb);
      for (size_t e = 0; e < k2 && i < blknos.size(); ++e, ++i) {
        StoreBe64(b.data() + 24 + 8 * e, blknos[i]);
      }
      Raw(b);
    }
  }
  // A log header at the current position.
  LogHeader Header(uint64_t seq, uint32_t flags, uint32_t tail) {
    LogHeader h;
    h.sequence = seq;
    h.flags = flags;
    h.tail = tail;
    h.blkno = pos_;
    h.addr = blocks_[pos_];
    h.jid = jid_;
    Block b(bsize_);
    h.EncodeBlock(b.data(), bsize_);
    Raw(b);
    return h;
  }

 private:
  BlockDevice& dev_;
  const std::vector<uint64_t>& blocks_;
  uint32_t bsize_;
  uint32_t jid_;
  uint32_t pos_;
};

// ---------------------------------------------------------------------------------------------
// Codec

TEST(LogHeaderCodecTest, RoundTripAndChecksums) {
  for (uint32_t bsize : {512u, 1024u, 4096u}) {
    LogHeader h;
    h.sequence = 0x123456789abcull;
    h.flags = format::kLogHeadFlushNormal;
    h.tail = 17;
    h.blkno = 42;
    h.nsec = 999;
    h.sec = 1700000000;
    h.addr = 123456;
    h.jinode = 777;
    h.statfs_addr = 888;
    h.quota_addr = 999;
    h.local_total = -5;
    h.local_free = 12;
    h.local_dinodes = -3;
    h.jid = 3;
    Block b(bsize, 0xAA);
    h.EncodeBlock(b.data(), bsize);
    ASSERT_TRUE(LogHeader::Valid(b.data(), bsize));
    LogHeader d = LogHeader::Decode(b.data());
    EXPECT_EQ(d.sequence, h.sequence);
    EXPECT_EQ(d.flags, h.flags);
    EXPECT_EQ(d.tail, h.tail);
    EXPECT_EQ(d.blkno, h.blkno);
    EXPECT_EQ(d.nsec, h.nsec);
    EXPECT_EQ(d.sec, h.sec);
    EXPECT_EQ(d.addr, h.addr);
    EXPECT_EQ(d.jinode, h.jinode);
    EXPECT_EQ(d.statfs_addr, h.statfs_addr);
    EXPECT_EQ(d.quota_addr, h.quota_addr);
    EXPECT_EQ(d.local_total, h.local_total);
    EXPECT_EQ(d.local_free, h.local_free);
    EXPECT_EQ(d.local_dinodes, h.local_dinodes);
    EXPECT_EQ(d.jid, h.jid);
    EXPECT_NE(d.hash, 0u);
    EXPECT_NE(d.crc, 0u);
    for (uint32_t o = 120; o < bsize; ++o) ASSERT_EQ(b[o], 0) << o;  // rest of block zeroed

    Block t = b;
    t[30] ^= 1;  // a v1 field: lh_hash catches it
    EXPECT_FALSE(LogHeader::Valid(t.data(), bsize));
    t = b;
    t[100] ^= 1;  // a v2 field: lh_crc catches it
    EXPECT_FALSE(LogHeader::Valid(t.data(), bsize));
    t = b;
    t[bsize - 1] = 1;  // the zero tail is covered by lh_crc too
    EXPECT_FALSE(LogHeader::Valid(t.data(), bsize));
    t = b;
    StoreBe32(t.data() + 48, 0);  // lh_crc absent (v1 header): only lh_hash is checked
    EXPECT_TRUE(LogHeader::Valid(t.data(), bsize));
    t = b;
    StoreBe32(t.data() + 4, format::kMetaLd);
    EXPECT_FALSE(LogHeader::Valid(t.data(), bsize));
  }
}

TEST(LogHeaderCodecTest, DescriptorRoundTrip) {
  Block b(512, 0xFF);
  LogDescriptor ld{format::kLdRevoke, 3, 77, 0};
  ld.Encode(b.data());
  EXPECT_EQ(format::MetaTypeOf(b.data()), format::kMetaLd);
  EXPECT_EQ(LoadBe32(b.data() + 16), 900u);
  LogDescriptor d = LogDescriptor::Decode(b.data());
  EXPECT_EQ(d.type, ld.type);
  EXPECT_EQ(d.length, ld.length);
  EXPECT_EQ(d.data1, ld.data1);
  EXPECT_EQ(d.data2, 0u);
  for (int o = 40; o < 72; ++o) EXPECT_EQ(b[o], 0);
}

// ---------------------------------------------------------------------------------------------
// Against mkfs.gfs2 images, per block size.

class MkfsJournalTest : public ::testing::TestWithParam<uint32_t> {
 protected:
  uint32_t bsize() const { return GetParam(); }
};

INSTANTIATE_TEST_SUITE_P(BlockSizes, MkfsJournalTest, ::testing::Values(4096u, 1024u, 512u),
                         [](const auto& p) { return "b" + std::to_string(p.param); });

TEST_P(MkfsJournalTest, MkfsHeadersChecksumsAndHead) {
  Image img;
  MakeImage(bsize(), &img, 256ull << 20);
  if (HasFatalFailure()) return;
  const auto geo = format::Geometry::For(bsize());
  for (uint32_t jid = 0; jid < 2; ++jid) {
    SCOPED_TRACE("journal" + std::to_string(jid));
    Block di = testutil::ReadBlock(*img.dev, bsize(), img.sf.journals[jid]);
    format::Dinode d = format::Dinode::Decode(di.data());
    ASSERT_OK_AND_ASSIGN(std::vector<uint64_t> blocks,
                         MapJournalBlocks(*img.dev, geo, img.sf.journals[jid]));
    ASSERT_EQ(blocks.size(), d.size / bsize());
    ASSERT_GE(d.height, 1);

    uint64_t best_seq = 0;
    uint32_t best = 0;
    for (uint32_t i = 0; i < blocks.size(); ++i) {
      Block b = testutil::ReadBlock(*img.dev, bsize(), blocks[i]);
      ASSERT_TRUE(LogHeader::Valid(b.data(), bsize())) << "block " << i;
      LogHeader h = LogHeader::Decode(b.data());
      ASSERT_EQ(h.blkno, i);
      ASSERT_EQ(h.flags, format::kLogHeadUnmount | format::kLogHeadUserspace);
      ASSERT_EQ(h.tail, 0u);
      // Re-encoding reproduces mkfs's block bit for bit: same lh_hash and lh_crc values.
      Block re(bsize());
      h.EncodeBlock(re.data(), bsize());
      ASSERT_EQ(LoadBe32(re.data() + 44), LoadBe32(b.data() + 44)) << "lh_hash, block " << i;
      ASSERT_EQ(LoadBe32(re.data() + 48), LoadBe32(b.data() + 48)) << "lh_crc, block " << i;
      ASSERT_EQ(re, b) << "block " << i;
      if (i == 0 || h.sequence > best_seq) {
        best_seq = h.sequence;
        best = i;
      }
    }
    ASSERT_OK_AND_ASSIGN(Journal j, testutil::OpenJournal(*img.dev, img.sf, jid));
    EXPECT_FALSE(j.head_known());
    ASSERT_OK(j.FindHead());
    EXPECT_EQ(j.head().blkno, best);
    EXPECT_EQ(j.head().sequence, best_seq);
    EXPECT_TRUE(j.IsClean());
    ASSERT_OK_AND_ASSIGN(ReplayStats st, j.Replay());  // clean: no-op
    EXPECT_FALSE(st.was_dirty);
    EXPECT_EQ(j.head().sequence, best_seq);
  }
}

TEST_P(MkfsJournalTest, MountUnmountProtocolWithFsck) {
  Image img;
  MakeImage(bsize(), &img);
  if (HasFatalFailure()) return;
  bool clean = false;
  std::string out = Oracle(img.path, &clean);
  ASSERT_TRUE(clean) << out;

  ASSERT_OK_AND_ASSIGN(Journal j, testutil::OpenJournal(*img.dev, img.sf, 0));
  ASSERT_OK(j.FindHead());
  const LogHeader h0 = j.head();
  ASSERT_OK(j.MarkMounted());
  EXPECT_EQ(j.head().sequence, h0.sequence + 1);
  EXPECT_EQ(j.head().blkno, (h0.blkno + 1) % j.size());
  EXPECT_EQ(j.head().tail, j.head().blkno);
  EXPECT_EQ(j.head().flags, format::kLogHeadFlushNormal);
  EXPECT_FALSE(j.IsClean());
  out = Oracle(img.path, &clean);
  EXPECT_FALSE(clean) << out;
  EXPECT_NE(out.find("Journal recovery complete"), std::string::npos) << out;
  EXPECT_NE(out.find("dirty"), std::string::npos) << out;

  // A second opener sees the in-use journal as dirty and refuses to mark it mounted.
  {
    ASSERT_OK_AND_ASSIGN(Journal j2, testutil::OpenJournal(*img.dev, img.sf, 0));
    ASSERT_OK(j2.FindHead());
    EXPECT_EQ(j2.head().sequence, h0.sequence + 1);
    EXPECT_FALSE(j2.IsClean());
    Status s = j2.MarkMounted();
    EXPECT_EQ(s.code(), Code::kInvalid) << s.ToString();
  }

  ASSERT_OK(j.WriteUnmountHeader());
  EXPECT_EQ(j.head().flags, format::kLogHeadUnmount | format::kLfcShutdown);
  EXPECT_EQ(j.head().sequence, h0.sequence + 2);
  out = Oracle(img.path, &clean);
  EXPECT_TRUE(clean) << out;

  // The headers carry the journal's identity.
  Block b = testutil::ReadBlock(*img.dev, bsize(), j.blocks()[j.head().blkno]);
  LogHeader h = LogHeader::Decode(b.data());
  EXPECT_EQ(h.jinode, img.sf.journals[0]);
  EXPECT_EQ(h.statfs_addr, img.sf.statfs_change[0]);
  EXPECT_EQ(h.quota_addr, img.sf.quota_change[0]);
  EXPECT_EQ(h.addr, j.blocks()[j.head().blkno]);
  EXPECT_EQ(h.jid, 0u);
}

// Commit a change of the root dinode's mode without writing it in place; both fsck.gfs2 -y (on a
// copy) and our Replay must replay it, and both results must be fsck-clean.
TEST_P(MkfsJournalTest, CommitReplayedByFsckAndByUs) {
  Image img;
  MakeImage(bsize(), &img);
  if (HasFatalFailure()) return;
  ASSERT_TRUE(testutil::HaveFsck()) << "fsck.gfs2 is required";
  const uint64_t root = img.sf.root;
  const Block before = testutil::ReadBlock(*img.dev, bsize(), root);
  Block after = before;
  format::Dinode d = format::Dinode::Decode(after.data());
  ASSERT_EQ(d.mode & 0777, 0755u);
  d.mode = (d.mode & ~0777u) | 0700;
  d.Encode(after.data());

  {
    ASSERT_OK_AND_ASSIGN(Journal j, testutil::OpenJournal(*img.dev, img.sf, 0));
    ASSERT_OK(j.FindHead());
    ASSERT_OK(j.MarkMounted());
    LogBlock lb{root, after.data()};
    ASSERT_OK(j.Commit(std::span<const LogBlock>(&lb, 1), {}, StatfsDelta{0, 0, 0}));
    EXPECT_EQ(j.head().tail, (j.head().blkno + j.size() - 2) % j.size());
  }
  ASSERT_EQ(testutil::ReadBlock(*img.dev, bsize(), root), before);  // not written in place
  bool clean = true;
  std::string out = Oracle(img.path, &clean);
  EXPECT_FALSE(clean) << out;

  // The real fsck replays our log.
  const std::string copy = img.dir.path() + "/copy";
  ASSERT_OK(testutil::CopyFile(img.path, copy));
  testutil::CmdResult fr = testutil::Fsck(copy, "-y");
  EXPECT_EQ(fr.rc, 1) << fr.out;
  EXPECT_NE(fr.out.find("Replayed 1 of 1"), std::string::npos) << fr.out;
  out = Oracle(copy, &clean);
  EXPECT_TRUE(clean) << out;
  {
    ASSERT_OK_AND_ASSIGN(auto cdev, OpenFileBlockDevice(copy, FileDeviceOptions{true, false}));
    EXPECT_EQ(testutil::ReadBlock(*cdev, bsize(), root), after);
  }

  // And so do we.
  {
    ASSERT_OK_AND_ASSIGN(Journal j, testutil::OpenJournal(*img.dev, img.sf, 0));
    ASSERT_OK(j.FindHead());
    ASSERT_FALSE(j.IsClean());
    ASSERT_OK_AND_ASSIGN(ReplayStats st, j.Replay());
    EXPECT_TRUE(st.was_dirty);
    EXPECT_EQ(st.metadata_copies, 1u);
    EXPECT_EQ(st.blocks_replayed, 1u);
    EXPECT_EQ(st.descriptors, 1u);
    EXPECT_TRUE(j.IsClean());
    EXPECT_EQ(j.head().flags & format::kLogHeadUnmount, format::kLogHeadUnmount);
  }
  EXPECT_EQ(testutil::ReadBlock(*img.dev, bsize(), root), after);
  out = Oracle(img.path, &clean);
  EXPECT_TRUE(clean) << out;
}

// A large commit spanning the end of the journal: several METADATA descriptors, a REVOKE chunk
// with LB continuation blocks. Both fsck.gfs2 -y and our Replay must replay all of it.
TEST_P(MkfsJournalTest, LargeWrappingCommitWithManyRevokes) {
  Image img;
  MakeImage(bsize(), &img);
  if (HasFatalFailure()) return;
  ASSERT_OK_AND_ASSIGN(Journal j, testutil::OpenJournal(*img.dev, img.sf, 0));
  ASSERT_OK(j.FindHead());
  const uint32_t n = j.size();
  const uint32_t k = j.MetaPerDescriptor(), k2 = j.RevokesPerLb();
  // Move the head close to the end of the journal the way a long series of mounts would: a
  // clean header at every block after the head (one sequence number each, a single wrap).
  {
    LogBuilder lb(*img.dev, j, j.head().blkno + 1);
    uint64_t seq = j.head().sequence;
    while (lb.pos() != n - 6) lb.Header(++seq, format::kLogHeadUnmount, lb.pos());
  }
  ASSERT_OK(j.FindHead());
  ASSERT_EQ(j.head().blkno, n - 7);
  ASSERT_OK(j.MarkMounted());

  // Metadata: the root dinode with a new mode, then many unchanged copies of other system
  // dinodes (several copies of a block are fine: the last one wins).
  const uint32_t nmeta = 3 * k + 5;
  std::vector<uint64_t> others = {img.sf.master, img.sf.journals[1], img.sf.statfs_change[0],
                                  img.sf.statfs_change[1], img.sf.quota_change[1]};
  std::vector<Block> images;
  std::vector<LogBlock> meta;
  Block root = testutil::ReadBlock(*img.dev, bsize(), img.sf.root);
  format::Dinode d = format::Dinode::Decode(root.data());
  d.mode = (d.mode & ~0777u) | 0711;
  d.Encode(root.data());
  images.push_back(root);
  meta.push_back({img.sf.root, nullptr});
  for (uint32_t i = 1; i < nmeta; ++i) {
    uint64_t b = others[i % others.size()];
    images.push_back(testutil::ReadBlock(*img.dev, bsize(), b));
    meta.push_back({b, nullptr});
  }
  for (size_t i = 0; i < meta.size(); ++i) meta[i].data = images[i].data();
  // Revokes of blocks that are not logged here (harmless, but they exercise LB blocks).
  std::vector<uint64_t> revokes;
  const uint32_t nrev = 2 * k2 + k + 10;
  for (uint32_t i = 0; i < nrev; ++i) revokes.push_back(ScratchBlock(*img.dev, bsize(), i));

  const uint64_t need = j.BlocksNeeded(nmeta, nrev);
  EXPECT_EQ(need, nmeta + 4 + 1 + 3 + 1);  // 4 METADATA LDs, 1 REVOKE LD + 3 LBs, header
  const uint32_t first = (j.head().blkno + 1) % n;
  ASSERT_OK(j.Commit(meta, revokes, StatfsDelta{}));
  EXPECT_EQ(j.head().tail, first);
  EXPECT_EQ(j.head().blkno, (first + need - 1) % n);
  EXPECT_LT(j.head().blkno, first);  // wrapped

  // Layout: REVOKE chunk first, then METADATA chunks.
  Block b = testutil::ReadBlock(*img.dev, bsize(), j.blocks()[first]);
  LogDescriptor ld = LogDescriptor::Decode(b.data());
  EXPECT_EQ(ld.type, format::kLdRevoke);
  EXPECT_EQ(ld.length, 4u);
  EXPECT_EQ(ld.data1, nrev);
  b = testutil::ReadBlock(*img.dev, bsize(), j.blocks()[(first + 1) % n]);
  EXPECT_EQ(format::MetaTypeOf(b.data()), format::kMetaLb);
  b = testutil::ReadBlock(*img.dev, bsize(), j.blocks()[(first + 4) % n]);
  ld = LogDescriptor::Decode(b.data());
  EXPECT_EQ(ld.type, format::kLdMetadata);
  EXPECT_EQ(ld.length, k + 1);
  EXPECT_EQ(ld.data1, k);

  const std::string copy = img.dir.path() + "/copy";
  ASSERT_OK(testutil::CopyFile(img.path, copy));
  testutil::CmdResult fr = testutil::Fsck(copy, "-y");
  EXPECT_EQ(fr.rc, 1) << fr.out;
  const std::string replayed = "Replayed " + std::to_string(nmeta) + " of " + std::to_string(nmeta);
  EXPECT_NE(fr.out.find(replayed), std::string::npos) << fr.out;
  bool clean = false;
  std::string out = Oracle(copy, &clean);
  EXPECT_TRUE(clean) << out;
  {
    ASSERT_OK_AND_ASSIGN(auto cdev, OpenFileBlockDevice(copy, FileDeviceOptions{true, false}));
    EXPECT_EQ(testutil::ReadBlock(*cdev, bsize(), img.sf.root), images[0]);
  }

  ASSERT_OK_AND_ASSIGN(Journal jr, testutil::OpenJournal(*img.dev, img.sf, 0));
  ASSERT_OK(jr.FindHead());
  ASSERT_OK_AND_ASSIGN(ReplayStats st, jr.Replay());
  EXPECT_EQ(st.metadata_copies, nmeta);
  EXPECT_EQ(st.revokes, nrev);
  EXPECT_EQ(st.blocks_replayed, 1 + others.size());
  EXPECT_EQ(st.descriptors, 5u);
  EXPECT_EQ(st.region_blocks, need - 1);
  EXPECT_EQ(testutil::ReadBlock(*img.dev, bsize(), img.sf.root), images[0]);
  out = Oracle(img.path, &clean);
  EXPECT_TRUE(clean) << out;
}

// Hand-built region with several commits: a revoke suppresses earlier copies only.
TEST_P(MkfsJournalTest, RevokesHonouredLikeFsck) {
  Image img;
  MakeImage(bsize(), &img);
  if (HasFatalFailure()) return;
  ASSERT_OK_AND_ASSIGN(Journal j, testutil::OpenJournal(*img.dev, img.sf, 0));
  ASSERT_OK(j.FindHead());
  const uint64_t root = img.sf.root;
  Block orig = testutil::ReadBlock(*img.dev, bsize(), root);
  auto with_mode = [&](uint32_t mode) {
    Block b = orig;
    format::Dinode d = format::Dinode::Decode(b.data());
    d.mode = (d.mode & ~0777u) | mode;
    d.Encode(b.data());
    return b;
  };
  const Block a = with_mode(0700), c = with_mode(0750);
  const uint64_t s = j.head().sequence;
  const uint32_t tail = (j.head().blkno + 1) % j.size();
  // Region: [META root=A][LH][REVOKE root + many others][LH] ... checked, then extended with
  // [META root=C][LH]: the later copy survives the revoke.
  LogBuilder lb(*img.dev, j, tail);
  lb.Meta({{root, a}});
  lb.Header(s + 1, format::kLogHeadFlushNormal, tail);
  std::vector<uint64_t> revs;
  for (uint32_t i = 0; i < j.MetaPerDescriptor() + 3; ++i) {
    revs.push_back(ScratchBlock(*img.dev, bsize(), i));
  }
  revs.push_back(root);  // in the LB continuation block
  lb.Revoke(revs);
  lb.Header(s + 2, format::kLogHeadFlushNormal, tail);

  const std::string copy = img.dir.path() + "/copy";
  ASSERT_OK(testutil::CopyFile(img.path, copy));
  testutil::CmdResult fr = testutil::Fsck(copy, "-y");
  EXPECT_NE(fr.out.find("Replayed 0 of 1"), std::string::npos) << fr.out;
  {
    ASSERT_OK_AND_ASSIGN(auto cdev, OpenFileBlockDevice(copy, FileDeviceOptions{true, false}));
    EXPECT_EQ(testutil::ReadBlock(*cdev, bsize(), root), orig);
  }
  {
    ASSERT_OK_AND_ASSIGN(auto mem, CopyToMemory(*img.dev));
    ASSERT_OK_AND_ASSIGN(Journal jm, testutil::OpenJournal(*mem, img.sf, 0));
    ASSERT_OK(jm.FindHead());
    ASSERT_OK_AND_ASSIGN(ReplayStats st, jm.Replay());
    EXPECT_EQ(st.metadata_copies, 1u);
    EXPECT_EQ(st.revoked_copies, 1u);
    EXPECT_EQ(st.blocks_replayed, 0u);
    EXPECT_EQ(st.revokes, revs.size());
    EXPECT_EQ(testutil::ReadBlock(*mem, bsize(), root), orig);
  }

  lb.Meta({{root, c}});
  lb.Header(s + 3, format::kLogHeadFlushNormal, tail);
  ASSERT_OK(testutil::CopyFile(img.path, copy));
  fr = testutil::Fsck(copy, "-y");
  EXPECT_NE(fr.out.find("Replayed 1 of 2"), std::string::npos) << fr.out;
  {
    ASSERT_OK_AND_ASSIGN(auto cdev, OpenFileBlockDevice(copy, FileDeviceOptions{true, false}));
    EXPECT_EQ(testutil::ReadBlock(*cdev, bsize(), root), c);
  }
  ASSERT_OK(j.FindHead());
  ASSERT_OK_AND_ASSIGN(ReplayStats st, j.Replay());
  EXPECT_EQ(st.metadata_copies, 2u);
  EXPECT_EQ(st.revoked_copies, 1u);
  EXPECT_EQ(st.blocks_replayed, 1u);
  EXPECT_EQ(testutil::ReadBlock(*img.dev, bsize(), root), c);
  bool clean = false;
  std::string out = Oracle(img.path, &clean);
  EXPECT_TRUE(clean) << out;
}

// ---------------------------------------------------------------------------------------------
// In-memory tests on a copy of a small mkfs image.

class MemJournalTest : public ::testing::TestWithParam<uint32_t> {
 protected:
  void SetUp() override {
    MakeImage(GetParam(), &img_);
    if (HasFatalFailure()) return;
    auto m = CopyToMemory(*img_.dev);
    ASSERT_TRUE(m.ok());
    mem_ = std::move(m).value();
  }
  uint32_t bsize() const { return GetParam(); }
  Result<Journal> Open(BlockDevice& dev) { return testutil::OpenJournal(dev, img_.sf, 0); }
  Block Read(BlockDevice& dev, uint64_t b) { return testutil::ReadBlock(dev, bsize(), b); }

  Image img_;
  std::unique_ptr<BlockDevice> mem_;
};

INSTANTIATE_TEST_SUITE_P(BlockSizes, MemJournalTest, ::testing::Values(4096u, 1024u, 512u),
                         [](const auto& p) { return "b" + std::to_string(p.param); });

TEST_P(MemJournalTest, JdataEscapeRestoresMagic) {
  ASSERT_OK_AND_ASSIGN(Journal j, Open(*mem_));
  ASSERT_OK(j.FindHead());
  const uint64_t x = ScratchBlock(*mem_, bsize(), 0), y = ScratchBlock(*mem_, bsize(), 1);
  Block dx(bsize(), 0x5A), dy(bsize(), 0x33);
  StoreBe32(dx.data(), format::kMagic);  // data that looks like metadata: escaped in the log
  const uint32_t tail = (j.head().blkno + 1) % j.size();
  LogBuilder lb(*mem_, j, tail);
  lb.Jdata({{x, dx}, {y, dy}});
  lb.Header(j.head().sequence + 1, format::kLogHeadFlushNormal, tail);
  Block logged = Read(*mem_, j.blocks()[(tail + 1) % j.size()]);
  EXPECT_EQ(LoadBe32(logged.data()), 0u);
  ASSERT_OK(j.FindHead());
  ASSERT_OK_AND_ASSIGN(ReplayStats st, j.Replay());
  EXPECT_EQ(st.jdata_copies, 2u);
  EXPECT_EQ(st.blocks_replayed, 2u);
  EXPECT_EQ(Read(*mem_, x), dx);
  EXPECT_EQ(Read(*mem_, y), dy);
}

TEST_P(MemJournalTest, LastCopyWinsAndLocalStatfsReported) {
  ASSERT_OK_AND_ASSIGN(Journal j, Open(*mem_));
  ASSERT_OK(j.FindHead());
  const uint64_t x = ScratchBlock(*mem_, bsize(), 0);
  const Block a = MetaImage(bsize(), x, 1), b = MetaImage(bsize(), x, 2);
  const uint32_t tail = (j.head().blkno + 1) % j.size();
  LogBuilder lb(*mem_, j, tail);
  lb.Meta({{x, a}});
  lb.Header(j.head().sequence + 1, format::kLogHeadFlushNormal, tail);
  lb.Meta({{x, b}, {x, a}, {x, b}});
  lb.Header(j.head().sequence + 2, format::kLogHeadFlushNormal, tail);
  ASSERT_OK(j.FindHead());
  ASSERT_OK_AND_ASSIGN(ReplayStats st, j.Replay());
  EXPECT_EQ(st.metadata_copies, 4u);
  EXPECT_EQ(st.blocks_replayed, 1u);
  EXPECT_EQ(Read(*mem_, x), b);

  // Commit carries the local statfs deltas; Replay reports the head's.
  ASSERT_OK(j.MarkMounted());
  const Block c = MetaImage(bsize(), x, 3);
  LogBlock l{x, c.data()};
  ASSERT_OK(j.Commit(std::span<const LogBlock>(&l, 1), {}, StatfsDelta{5, -7, 2}));
  ASSERT_OK_AND_ASSIGN(Journal j2, Open(*mem_));
  ASSERT_OK(j2.FindHead());
  EXPECT_EQ(j2.head().local_free, -7);
  ASSERT_OK_AND_ASSIGN(ReplayStats st2, j2.Replay());
  EXPECT_EQ(st2.local, (StatfsDelta{5, -7, 2}));
  EXPECT_EQ(Read(*mem_, x), c);
  EXPECT_TRUE(j2.IsClean());
  EXPECT_EQ(j2.head().local_total, 0);
}

TEST_P(MemJournalTest, TornAndBadHeadersIgnored) {
  ASSERT_OK_AND_ASSIGN(Journal j, Open(*mem_));
  ASSERT_OK(j.FindHead());
  ASSERT_OK(j.MarkMounted());
  const uint64_t x = ScratchBlock(*mem_, bsize(), 0);
  const Block a = MetaImage(bsize(), x, 1), b = MetaImage(bsize(), x, 2);
  LogBlock la{x, a.data()}, lbk{x, b.data()};
  ASSERT_OK(j.Commit(std::span<const LogBlock>(&la, 1), {}, {}));
  const LogHeader c1 = j.head();
  ASSERT_OK(j.Commit(std::span<const LogBlock>(&lbk, 1), {}, {}));
  const LogHeader c2 = j.head();
  ASSERT_EQ(c2.sequence, c1.sequence + 1);

  // Torn header of the last commit: only its first 256 bytes (or first half) landed.
  Block h = Read(*mem_, j.blocks()[c2.blkno]);
  Block torn = h;
  std::memset(torn.data() + std::min<uint32_t>(256, bsize() / 2), 0x00,
              bsize() - std::min<uint32_t>(256, bsize() / 2));
  StoreBe64(torn.data() + 112, 1);  // make sure the torn part differs from the zero tail
  testutil::WriteBlock(*mem_, bsize(), j.blocks()[c2.blkno], torn);
  ASSERT_OK(j.FindHead());
  EXPECT_EQ(j.head().sequence, c1.sequence);
  EXPECT_EQ(j.head().blkno, c1.blkno);
  ASSERT_OK_AND_ASSIGN(ReplayStats st, j.Replay());
  EXPECT_EQ(Read(*mem_, x), a);  // the torn commit is not replayed
  EXPECT_EQ(st.head_sequence, c1.sequence);
  EXPECT_TRUE(j.IsClean());
  EXPECT_EQ(j.head().sequence, c1.sequence + 1);

  // A higher-sequence header with a bad lh_crc, a bad lh_hash, or at the wrong position.
  const uint32_t n = j.size();
  for (int variant = 0; variant < 3; ++variant) {
    SCOPED_TRACE(variant);
    ASSERT_OK(j.FindHead());
    const LogHeader head = j.head();
    const uint32_t pos = (head.blkno + 1 + variant) % n;
    LogHeader bad;
    bad.sequence = head.sequence + 100;
    bad.flags = format::kLogHeadFlushNormal;
    bad.blkno = variant == 2 ? (pos + 5) % n : pos;
    bad.tail = bad.blkno;
    Block bb(bsize());
    bad.EncodeBlock(bb.data(), bsize());
    if (variant == 0) bb[70] ^= 0x10;
    if (variant == 1) bb[26] ^= 0x10;
    testutil::WriteBlock(*mem_, bsize(), j.blocks()[pos], bb);
    ASSERT_OK(j.FindHead());
    EXPECT_EQ(j.head().sequence, head.sequence);
    EXPECT_EQ(j.head().blkno, head.blkno);
  }
}

TEST_P(MemJournalTest, GarbageInActiveRegionIsCorruptionNotACrash) {
  ASSERT_OK_AND_ASSIGN(Journal j, Open(*mem_));
  ASSERT_OK(j.FindHead());
  const uint32_t n = j.size();
  const uint64_t x = ScratchBlock(*mem_, bsize(), 0);
  const Block xorig = Read(*mem_, x);
  const uint64_t dev_blocks = mem_->Size() / bsize();
  uint64_t seq = j.head().sequence;
  std::mt19937_64 rng(42);
  // Each case writes a region at `tail` whose first chunk is fine (logs x) and whose later part
  // is damaged; Replay must fail with kCorrupt before writing anything in place.
  enum Case {
    kRandomBlock,
    kHugeData1,
    kLengthBeyondRegion,
    kMissingLb,
    kImageNotMeta,
    kBlknoBeyondDev,
    kBlknoInJournal,
    kUnknownType,
    kTailBeyondJournal,
    kBadInnerHeader,
    kZeroLength,
    kNumCases
  };
  for (int c = 0; c < kNumCases; ++c) {
    SCOPED_TRACE("case " + std::to_string(c));
    ASSERT_OK(j.FindHead());
    const uint32_t tail = (j.head().blkno + 1) % n;
    LogBuilder lb(*mem_, j, tail);
    lb.Meta({{x, MetaImage(bsize(), x, 9)}});
    Block d(bsize(), 0);
    LogDescriptor ld{format::kLdMetadata, 2, 1, 0};
    switch (c) {
      case kRandomBlock:
        for (auto& v : d) v = static_cast<uint8_t>(rng());
        lb.Raw(d);
        break;
      case kHugeData1:
        ld.data1 = 0xFFFFFFF0u;
        ld.length = 2;
        ld.Encode(d.data());
        lb.Raw(d);
        lb.Raw(MetaImage(bsize(), x, 1));
        break;
      case kLengthBeyondRegion:
        ld.length = 0x7FFFFFFF;
        ld.Encode(d.data());
        lb.Raw(d);
        lb.Raw(MetaImage(bsize(), x, 1));
        break;
      case kMissingLb:
        ld = {format::kLdRevoke, 2, j.MetaPerDescriptor() + 1, 0};
        ld.Encode(d.data());
        lb.Raw(d);
        lb.Raw(Block(bsize(), 0));  // not an LB block
        break;
      case kImageNotMeta:
        ld.Encode(d.data());
        StoreBe64(d.data() + 72, x);
        lb.Raw(d);
        lb.Raw(Block(bsize(), 0x11));
        break;
      case kBlknoBeyondDev:
        ld.Encode(d.data());
        StoreBe64(d.data() + 72, dev_blocks + 5);
        lb.Raw(d);
        lb.Raw(MetaImage(bsize(), x, 1));
        break;
      case kBlknoInJournal:
        ld.Encode(d.data());
        StoreBe64(d.data() + 72, j.blocks()[(tail + 3) % n]);
        lb.Raw(d);
        lb.Raw(MetaImage(bsize(), x, 1));
        break;
      case kUnknownType:
        ld.type = 999;
        ld.Encode(d.data());
        lb.Raw(d);
        lb.Raw(MetaImage(bsize(), x, 1));
        break;
      case kTailBeyondJournal:
        break;
      case kBadInnerHeader: {
        LogHeader ih;
        ih.sequence = seq + 1;
        ih.blkno = lb.pos();
        ih.EncodeBlock(d.data(), bsize());
        d[90] ^= 1;
        lb.Raw(d);
        break;
      }
      case kZeroLength:
        ld.length = 0;
        ld.Encode(d.data());
        lb.Raw(d);
        break;
    }
    seq = std::max(seq, j.head().sequence) + 1;
    LogHeader h = lb.Header(seq, format::kLogHeadFlushNormal, tail);
    if (c == kTailBeyondJournal) {
      h.tail = n + 3;
      Block hb(bsize());
      h.EncodeBlock(hb.data(), bsize());
      testutil::WriteBlock(*mem_, bsize(), j.blocks()[h.blkno], hb);
    }
    const uint64_t writes = mem_->stats().writes.load();
    ASSERT_OK(j.FindHead());
    ASSERT_EQ(j.head().sequence, seq);
    auto r = j.Replay();
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.status().code(), Code::kCorrupt) << r.status().ToString();
    EXPECT_EQ(mem_->stats().writes.load(), writes) << r.status().ToString();
    EXPECT_EQ(Read(*mem_, x), xorig);
    // Retire the broken region so the next case starts from a clean head.
    LogBuilder fix(*mem_, j, (j.head().blkno + 1) % n);
    seq++;
    fix.Header(seq, format::kLogHeadUnmount, fix.pos());
  }
}

// Random garbage in the active region of a small synthetic journal (two physical runs): Replay
// returns OK or kCorrupt, never crashes (run this under ASan/UBSan).
TEST(SyntheticJournalTest, FuzzedRegionNeverCrashes) {
  for (uint32_t bsize : {512u, 1024u, 4096u}) {
    SCOPED_TRACE(bsize);
    auto dev = NewMemoryBlockDevice(512ull * bsize);
    std::vector<uint64_t> blocks;
    for (uint64_t b = 100; b < 132; ++b) blocks.push_back(b);
    for (uint64_t b = 300; b < 332; ++b) blocks.push_back(b);
    ASSERT_OK_AND_ASSIGN(Journal j, Journal::Open(dev.get(), bsize, 1, 50, blocks, 51, 52));
    {
      LogBuilder lb(*dev, j, 0);
      lb.Header(1, format::kLogHeadUnmount, 0);
    }
    std::mt19937_64 rng(7 + bsize);
    ASSERT_OK(j.FindHead());
    const uint32_t n = j.size();
    uint64_t seq = j.head().sequence;
    int ok = 0, corrupt = 0;
    for (int iter = 0; iter < 400; ++iter) {
      ASSERT_OK(j.FindHead());
      const uint32_t tail = (j.head().blkno + 1) % n;
      LogBuilder lb(*dev, j, tail);
      const int len = 1 + static_cast<int>(rng() % 8);
      for (int i = 0; i < len; ++i) {
        Block b(bsize);
        for (auto& v : b) v = static_cast<uint8_t>(rng());
        uint64_t kind = rng() % 5;
        if (kind >= 2) {  // a plausible descriptor with random fields
          LogDescriptor ld{static_cast<uint32_t>(300 + rng() % 3),
                           static_cast<uint32_t>(rng() % 4 == 0 ? rng() : 1 + rng() % 4),
                           static_cast<uint32_t>(rng() % 4 == 0 ? rng() : rng() % 4), 0};
          ld.Encode(b.data());
          for (uint32_t o = 72; o + 8 <= bsize; o += 8) {
            StoreBe64(b.data() + o, rng() % 3 == 0 ? rng() : 400 + rng() % 8);
          }
        }
        if (kind == 1) format::WriteMeta(b.data(), format::kMetaLb);
        if (kind == 0 && rng() % 2) format::WriteMeta(b.data(), format::kMetaIn);
        lb.Raw(b);
      }
      seq = std::max(seq, j.head().sequence) + 1;
      lb.Header(seq, format::kLogHeadFlushNormal, tail);
      ASSERT_OK(j.FindHead());
      ASSERT_EQ(j.head().sequence, seq);
      auto r = j.Replay();
      if (r.ok()) {
        ok++;
        EXPECT_TRUE(j.IsClean());
      } else {
        corrupt++;
        ASSERT_EQ(r.status().code(), Code::kCorrupt) << r.status().ToString();
        LogBuilder fix(*dev, j, (j.head().blkno + 1) % n);
        seq++;
        fix.Header(seq, format::kLogHeadUnmount, fix.pos());
      }
    }
    EXPECT_GT(corrupt, 0);
    EXPECT_GT(ok, 0);
  }
}

TEST_P(MemJournalTest, NoValidHeaderIsCorrupt) {
  ASSERT_OK_AND_ASSIGN(Journal j, Open(*mem_));
  Block zero(bsize(), 0);
  for (uint64_t b : j.blocks()) testutil::WriteBlock(*mem_, bsize(), b, zero);
  Status s = j.FindHead();
  EXPECT_EQ(s.code(), Code::kCorrupt);
  EXPECT_NE(s.message().find("no valid log header"), std::string::npos) << s.ToString();
  EXPECT_FALSE(j.head_known());
  EXPECT_EQ(j.MarkMounted().code(), Code::kInvalid);
  EXPECT_FALSE(j.Replay().ok());
}

TEST_P(MemJournalTest, MapJournalBlocksRejectsNonJournals) {
  const auto geo = format::Geometry::For(bsize());
  EXPECT_EQ(MapJournalBlocks(*mem_, geo, ScratchBlock(*mem_, bsize(), 0)).status().code(),
            Code::kCorrupt);
  EXPECT_EQ(MapJournalBlocks(*mem_, geo, mem_->Size()).status().code(), Code::kCorrupt);
  // The root directory is a dinode but no journal (stuffed).
  EXPECT_EQ(MapJournalBlocks(*mem_, geo, img_.sf.root).status().code(), Code::kCorrupt);
  // A hole in the journal's tree.
  Block di = Read(*mem_, img_.sf.journals[1]);
  StoreBe64(di.data() + format::kDinodeSize, 0);
  testutil::WriteBlock(*mem_, bsize(), img_.sf.journals[1], di);
  auto r = MapJournalBlocks(*mem_, geo, img_.sf.journals[1]);
  EXPECT_EQ(r.status().code(), Code::kCorrupt);
  EXPECT_NE(r.status().message().find("hole"), std::string::npos) << r.status().ToString();
}

TEST_P(MemJournalTest, CommitLimits) {
  ASSERT_OK_AND_ASSIGN(Journal j, Open(*mem_));
  ASSERT_OK(j.FindHead());
  const uint32_t n = j.size(), k = j.MetaPerDescriptor(), k2 = j.RevokesPerLb();
  EXPECT_EQ(k, (bsize() - 72) / 8);
  EXPECT_EQ(k2, (bsize() - 24) / 8);
  EXPECT_EQ(j.BlocksNeeded(0, 0), 1u);
  EXPECT_EQ(j.BlocksNeeded(1, 0), 3u);
  EXPECT_EQ(j.BlocksNeeded(k, 0), k + 2u);
  EXPECT_EQ(j.BlocksNeeded(k + 1, 0), k + 4u);
  EXPECT_EQ(j.BlocksNeeded(0, k), 2u);
  EXPECT_EQ(j.BlocksNeeded(0, k + 1), 3u);
  EXPECT_EQ(j.BlocksNeeded(0, k + k2 + 1), 4u);
  // Every split of MaxBlocksPerCommit() fits.
  const uint64_t m = j.MaxBlocksPerCommit();
  EXPECT_GT(m, n / 2);
  for (uint64_t r = 0; r <= m; r += 1 + m / 97) EXPECT_LE(j.BlocksNeeded(m - r, r), n - 2u) << r;
  EXPECT_LE(j.BlocksNeeded(0, m), n - 2u);
  // Too big -> kNoSpace, nothing written.
  const uint64_t x = ScratchBlock(*mem_, bsize(), 0);
  Block img = MetaImage(bsize(), x, 1);
  std::vector<LogBlock> meta(n, LogBlock{x, img.data()});
  const uint64_t writes = mem_->stats().writes.load();
  EXPECT_EQ(j.Commit(meta, {}, {}).code(), Code::kNoSpace);
  EXPECT_EQ(mem_->stats().writes.load(), writes);
  // Not metadata -> kInvalid.
  Block data(bsize(), 0x42);
  LogBlock bad{x, data.data()};
  EXPECT_EQ(j.Commit(std::span<const LogBlock>(&bad, 1), {}, {}).code(), Code::kInvalid);
  // Log blocks are never logged.
  Block lh(bsize());
  LogHeader{}.EncodeBlock(lh.data(), bsize());
  LogBlock lhb{x, lh.data()};
  EXPECT_EQ(j.Commit(std::span<const LogBlock>(&lhb, 1), {}, {}).code(), Code::kInvalid);
  // Exactly the hard limit fits, and replays.
  meta.resize(0);
  uint64_t nm = 0;
  while (j.BlocksNeeded(nm + 1, 0) <= n - 2u) nm++;
  std::vector<Block> imgs;
  for (uint64_t i = 0; i < nm; ++i) imgs.push_back(MetaImage(bsize(), x - (i % 16), i));
  for (uint64_t i = 0; i < nm; ++i) meta.push_back({x - (i % 16), imgs[i].data()});
  ASSERT_OK(j.Commit(meta, {}, {}));
  ASSERT_OK_AND_ASSIGN(Journal j2, Open(*mem_));
  ASSERT_OK(j2.FindHead());
  ASSERT_OK_AND_ASSIGN(ReplayStats st, j2.Replay());
  EXPECT_EQ(st.metadata_copies, nm);
  EXPECT_EQ(st.blocks_replayed, std::min<uint64_t>(nm, 16));
  for (uint64_t i = nm >= 16 ? nm - 16 : 0; i < nm; ++i)
    EXPECT_EQ(Read(*mem_, x - (i % 16)), imgs[i]);
}

// A replay interrupted by a crash at every possible write, then replayed again, gives the same
// volume as an uninterrupted replay.
TEST_P(MemJournalTest, ReplayIdempotentAcrossCrashes) {
  FaultInjectingBlockDevice fault(mem_.get());
  constexpr int kBlocks = 12;
  std::vector<uint64_t> targets;
  std::vector<Block> images, originals;
  for (int i = 0; i < kBlocks; ++i) {
    targets.push_back(ScratchBlock(*mem_, bsize(), i));
    images.push_back(MetaImage(bsize(), targets.back(), 77));
    originals.push_back(Read(*mem_, targets.back()));
  }
  uint64_t clean_pos_block = 0;  // where Replay writes its clean header
  Block clean_pos_before;
  {
    ASSERT_OK_AND_ASSIGN(Journal j, Open(fault));
    ASSERT_OK(j.FindHead());
    ASSERT_OK(j.MarkMounted());
    std::vector<LogBlock> meta;
    for (int i = 0; i < kBlocks; ++i) meta.push_back({targets[i], images[i].data()});
    std::vector<uint64_t> revs = {targets[0] - 1000};
    ASSERT_OK(j.Commit(meta, revs, {}));
    clean_pos_block = j.blocks()[(j.head().blkno + 1) % j.size()];
    clean_pos_before = Read(*mem_, clean_pos_block);
  }
  // Replay writes only the targets and the clean header: restoring those restarts the scenario.
  auto restore = [&] {
    testutil::WriteBlock(*mem_, bsize(), clean_pos_block, clean_pos_before);
    for (int i = 0; i < kBlocks; ++i)
      testutil::WriteBlock(*mem_, bsize(), targets[i], originals[i]);
  };
  int crashes = 0;
  for (uint64_t fail_after = 0; fail_after <= kBlocks + 2; ++fail_after) {
    for (uint64_t seed = 0; seed < 2; ++seed) {
      SCOPED_TRACE("fail_after " + std::to_string(fail_after) + " seed " + std::to_string(seed));
      restore();
      fault.Revive();
      ASSERT_OK_AND_ASSIGN(Journal j, Open(fault));
      ASSERT_OK(j.FindHead());
      ASSERT_FALSE(j.IsClean());
      fault.FailWritesAfter(fail_after);
      auto r = j.Replay();
      if (!r.ok()) crashes++;
      fault.Crash(seed * 31 + fail_after, /*tear=*/true);
      fault.Revive();
      ASSERT_OK_AND_ASSIGN(Journal j2, Open(fault));
      ASSERT_OK(j2.FindHead());
      if (!j2.IsClean()) {
        ASSERT_OK_AND_ASSIGN(ReplayStats st, j2.Replay());
        EXPECT_EQ(st.blocks_replayed, static_cast<uint32_t>(kBlocks));
      }
      EXPECT_TRUE(j2.IsClean());
      for (int i = 0; i < kBlocks; ++i) ASSERT_EQ(Read(*mem_, targets[i]), images[i]) << i;
      // A third look finds it clean and does nothing.
      ASSERT_OK_AND_ASSIGN(Journal j3, Open(fault));
      ASSERT_OK(j3.FindHead());
      EXPECT_TRUE(j3.IsClean());
    }
  }
  EXPECT_GT(crashes, 0);
}

// Engine-like workload over several laps of the journal (commit, then write in place), with
// crashes injected at random points of a commit: after replay the volume holds exactly the last
// committed state (all of a commit or none of it).
TEST_P(MemJournalTest, CommitsAcrossLapsAreAtomicUnderCrashes) {
  FaultInjectingBlockDevice fault(mem_.get());
  std::mt19937_64 rng(1234 + bsize());
  constexpr int kPool = 24;
  std::vector<uint64_t> pool;
  std::map<uint64_t, Block> durable;  // committed state of the pool
  for (int i = 0; i < kPool; ++i) {
    pool.push_back(ScratchBlock(*mem_, bsize(), i));
    durable[pool.back()] = Read(*mem_, pool.back());
  }
  auto open = [&]() -> Journal {
    auto j = Open(fault);
    EXPECT_TRUE(j.ok());
    return std::move(j).value();
  };
  Journal j = open();
  ASSERT_OK(j.FindHead());
  ASSERT_OK(j.MarkMounted());
  const uint32_t n = j.size();
  uint64_t laps_blocks = 0;
  int crashes = 0, commits = 0;
  uint32_t salt = 0;
  while (laps_blocks < 3ull * n) {
    // Build a commit: mostly small, sometimes close to the maximum (forces tail advances).
    uint64_t nm = rng() % 5 == 0 ? j.MaxBlocksPerCommit() / 2 + rng() % (j.MaxBlocksPerCommit() / 2)
                                 : 1 + rng() % 40;
    uint64_t nr = rng() % 3 == 0 ? rng() % (2 * j.RevokesPerLb()) : 0;
    if (nm + nr > j.MaxBlocksPerCommit()) nr = 0;
    std::vector<Block> imgs;
    std::vector<LogBlock> meta;
    std::map<uint64_t, Block> next = durable;
    imgs.reserve(nm);
    for (uint64_t i = 0; i < nm; ++i) {
      uint64_t b = pool[rng() % kPool];
      imgs.push_back(MetaImage(bsize(), b, ++salt));
      next[b] = imgs.back();
      meta.push_back({b, imgs.back().data()});
    }
    std::vector<uint64_t> revs;
    for (uint64_t i = 0; i < nr; ++i) revs.push_back(ScratchBlock(*mem_, bsize(), 100 + i));
    laps_blocks += j.BlocksNeeded(nm, nr);

    const bool crash = rng() % 4 == 0;
    if (crash) fault.FailWritesAfter(rng() % (j.BlocksNeeded(nm, nr) / 8 + 3));
    Status s = j.Commit(meta, revs, {});
    commits++;
    if (!crash) {
      ASSERT_OK(s);
      durable = next;
      // The engine writes in place after the commit (not flushed: the next commit flushes).
      for (auto& [b, img] : durable) testutil::WriteBlock(fault, bsize(), b, img);
      continue;
    }
    // Crash: the commit may or may not have made it.
    crashes++;
    fault.Crash(rng(), /*tear=*/true);
    fault.Revive();
    j = open();
    ASSERT_OK(j.FindHead());
    ASSERT_OK_AND_ASSIGN(ReplayStats st, j.Replay());
    (void)st;
    bool all_old = true, all_new = true;
    for (uint64_t b : pool) {
      Block cur = Read(*mem_, b);
      if (cur != durable[b]) all_old = false;
      if (cur != next[b]) all_new = false;
    }
    ASSERT_TRUE(all_old || all_new) << "commit " << commits << " torn: status " << s.ToString();
    if (s.ok()) {
      ASSERT_TRUE(all_new) << "a commit that returned OK was lost";
    }
    if (all_new) durable = next;
    ASSERT_OK(j.MarkMounted());
  }
  EXPECT_GT(crashes, 0);
  EXPECT_GT(commits, 10);
}

}  // namespace
}  // namespace ugfs2::journal
