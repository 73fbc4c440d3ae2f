#include "journal/journal.h"

#include <time.h>

#include <algorithm>
#include <cstring>
#include <functional>
#include <unordered_map>
#include <utility>

#include "common/endian.h"
#include "common/log.h"

namespace ugfs2::journal {

using format::LogDescriptor;
using format::LogHeader;

namespace {

constexpr uint32_t kIoChunkBytes = 256 * 1024;  // read/write batch size

std::string Num(uint64_t v) { return std::to_string(v); }

uint64_t CeilDiv(uint64_t a, uint64_t b) { return (a + b - 1) / b; }

// Walks one level of a metadata tree. `ptrs` holds `nptrs` be64 pointers, each covering `span`
// journal blocks starting at `first`.
Status MapLevel(BlockDevice& dev, const format::Geometry& geo, const uint8_t* ptrs, uint32_t nptrs,
                uint64_t span, uint32_t height, uint64_t first, uint64_t nblocks,
                uint64_t dev_blocks, std::vector<uint64_t>& out) {
  for (uint32_t j = 0; j < nptrs; ++j) {
    uint64_t start = first + j * span;
    if (start >= nblocks) break;
    uint64_t ptr = LoadBe64(ptrs + 8ull * j);
    if (ptr == 0) {
      return Status::Corrupt("journal dinode: hole at journal block " + Num(start));
    }
    if (ptr >= dev_blocks) {
      return Status::Corrupt("journal dinode: pointer " + Num(ptr) + " beyond the device (" +
                             Num(dev_blocks) + " blocks)");
    }
    if (height == 1) {
      out.push_back(ptr);
      continue;
    }
    std::vector<uint8_t> in(geo.bsize);
    RETURN_IF_ERROR(dev.ReadAt(ptr * geo.bsize, in.data(), geo.bsize));
    RETURN_IF_ERROR(format::CheckMeta(in.data(), format::kMetaIn, ptr)
                        .WithContext("journal dinode metadata tree"));
    RETURN_IF_ERROR(MapLevel(dev, geo, in.data() + format::kMetaHeaderSize, geo.inptrs,
                             span / geo.inptrs, height - 1, start, nblocks, dev_blocks, out));
  }
  return Status::Ok();
}

}  // namespace

Result<std::vector<uint64_t>> MapJournalBlocks(BlockDevice& dev, const format::Geometry& geo,
                                               uint64_t dinode_addr) {
  const uint32_t bsize = geo.bsize;
  const uint64_t dev_blocks = dev.Size() / bsize;
  if (dinode_addr >= dev_blocks) {
    return Status::Corrupt("journal dinode " + Num(dinode_addr) + " beyond the device");
  }
  std::vector<uint8_t> di(bsize);
  RETURN_IF_ERROR(dev.ReadAt(dinode_addr * bsize, di.data(), bsize));
  RETURN_IF_ERROR(format::CheckMeta(di.data(), format::kMetaDi, dinode_addr));
  format::Dinode d = format::Dinode::Decode(di.data());
  const std::string where = "journal dinode " + Num(dinode_addr);
  if (d.num.addr != dinode_addr) {
    return Status::Corrupt(where + ": di_num.no_addr is " + Num(d.num.addr));
  }
  if (d.size == 0 || d.size % bsize != 0) {
    return Status::Corrupt(where + ": size " + Num(d.size) + " is not a multiple of " + Num(bsize));
  }
  uint64_t nblocks = d.size / bsize;
  if (nblocks < Journal::kMinBlocks || nblocks > UINT32_MAX || nblocks > dev_blocks) {
    return Status::Corrupt(where + ": unusable journal size " + Num(nblocks) + " blocks");
  }
  if (d.height == 0 || d.height > format::kMaxMetaHeight || geo.data_cap[d.height] < d.size) {
    return Status::Corrupt(where + ": bad height " + Num(d.height) + " for size " + Num(d.size));
  }
  uint64_t span = 1;
  for (uint32_t h = 1; h < d.height; ++h) span *= geo.inptrs;
  std::vector<uint64_t> out;
  out.reserve(nblocks);
  RETURN_IF_ERROR(MapLevel(dev, geo, di.data() + format::kDinodeSize, geo.diptrs, span, d.height, 0,
                           nblocks, dev_blocks, out));
  if (out.size() != nblocks) {
    return Status::Corrupt(where + ": tree maps " + Num(out.size()) + " of " + Num(nblocks) +
                           " blocks");
  }
  return out;
}

Result<Journal> Journal::Open(BlockDevice* dev, uint32_t bsize, uint32_t jid, uint64_t jinode_addr,
                              std::vector<uint64_t> blocks, uint64_t statfs_addr,
                              uint64_t quota_addr) {
  if (dev == nullptr) return Status::Invalid("journal: no device");
  if (bsize < 512 || bsize > 65536 || (bsize & (bsize - 1)) != 0) {
    return Status::Invalid("journal: bad block size " + Num(bsize));
  }
  if (blocks.size() < kMinBlocks || blocks.size() > UINT32_MAX) {
    return Status::Invalid("journal" + Num(jid) + ": bad journal size " + Num(blocks.size()) +
                           " blocks");
  }
  const uint64_t dev_blocks = dev->Size() / bsize;
  for (size_t i = 0; i < blocks.size(); ++i) {
    if (blocks[i] >= dev_blocks) {
      return Status::Invalid("journal" + Num(jid) + ": block " + Num(i) + " maps to " +
                             Num(blocks[i]) + ", beyond the device");
    }
  }
  Journal j;
  j.dev_ = dev;
  j.bsize_ = bsize;
  j.jid_ = jid;
  j.jinode_addr_ = jinode_addr;
  j.statfs_addr_ = statfs_addr;
  j.quota_addr_ = quota_addr;
  j.blocks_ = std::move(blocks);
  for (uint64_t b : j.blocks_) {
    if (!j.runs_.empty() && j.runs_.back().second == b) {
      j.runs_.back().second++;
    } else {
      j.runs_.emplace_back(b, b + 1);
    }
  }
  std::sort(j.runs_.begin(), j.runs_.end());
  return j;
}

bool Journal::InJournal(uint64_t b) const {
  auto it = std::upper_bound(runs_.begin(), runs_.end(), std::make_pair(b, UINT64_MAX));
  return it != runs_.begin() && b < std::prev(it)->second;
}

std::string Journal::Where() const { return "journal" + Num(jid_); }

Status Journal::ForEachRun(uint32_t first, uint32_t count,
                           const std::function<Status(uint64_t, uint64_t, uint64_t)>& io) const {
  // Coalesces journal blocks that are physically contiguous into one device request.
  uint32_t i = 0;
  while (i < count) {
    uint32_t idx = Next(first, i);
    uint32_t run = 1;
    while (i + run < count && idx + run < size() && blocks_[idx + run] == blocks_[idx] + run) {
      run++;
    }
    RETURN_IF_ERROR(io(blocks_[idx] * bsize_, uint64_t{i} * bsize_, uint64_t{run} * bsize_));
    i += run;
  }
  return Status::Ok();
}

Status Journal::ReadBlocks(uint32_t first, uint32_t count, uint8_t* buf) {
  return ForEachRun(first, count, [&](uint64_t dev_off, uint64_t buf_off, uint64_t len) {
    return dev_->ReadAt(dev_off, buf + buf_off, len);
  });
}

Status Journal::WriteBlocks(uint32_t first, uint32_t count, const uint8_t* buf) {
  return ForEachRun(first, count, [&](uint64_t dev_off, uint64_t buf_off, uint64_t len) {
    return dev_->WriteAt(dev_off, buf + buf_off, len);
  });
}

Status Journal::FindHead() {
  head_known_ = false;
  const uint32_t n = size();
  const uint32_t chunk = std::max<uint32_t>(1, kIoChunkBytes / bsize_);
  std::vector<uint8_t> buf(uint64_t{chunk} * bsize_);
  bool found = false;
  LogHeader best;
  uint32_t valid = 0;
  uint32_t drops = 0;  // sequence decreases between consecutive valid headers (block order)
  uint64_t prev_seq = 0;
  bool have_prev = false;
  for (uint32_t first = 0; first < n; first += chunk) {
    uint32_t count = std::min(chunk, n - first);
    RETURN_IF_ERROR(ReadBlocks(first, count, buf.data()).WithContext(Where() + ": find head"));
    for (uint32_t k = 0; k < count; ++k) {
      const uint8_t* b = buf.data() + uint64_t{k} * bsize_;
      if (format::MetaTypeOf(b) != format::kMetaLh || !LogHeader::Valid(b, bsize_)) continue;
      LogHeader h = LogHeader::Decode(b);
      if (h.blkno != first + k) continue;  // a stale copy at the wrong place
      valid++;
      if (have_prev && h.sequence < prev_seq) drops++;
      prev_seq = h.sequence;
      have_prev = true;
      if (!found || h.sequence > best.sequence) {
        best = h;
        found = true;
      }
    }
  }
  if (!found) {
    return Status::Corrupt(Where() + ": no valid log header in any of its " + Num(n) +
                           " blocks (not a GFS2 journal, or destroyed)");
  }
  if (drops > 1) {
    LOG_WARN(Where() << ": " << drops << " sequence drops among " << valid
                     << " valid headers (expected at most one wrap); using the highest sequence "
                     << best.sequence << " at block " << best.blkno);
  }
  head_ = best;
  head_known_ = true;
  return Status::Ok();
}

LogHeader Journal::MakeHeader(uint32_t idx, uint64_t seq, uint32_t flags, uint32_t tail,
                              const StatfsDelta& local) const {
  LogHeader h;
  h.sequence = seq;
  h.flags = flags;
  h.tail = tail;
  h.blkno = idx;
  struct timespec ts {};
  clock_gettime(CLOCK_REALTIME, &ts);
  h.sec = static_cast<uint64_t>(ts.tv_sec);
  h.nsec = static_cast<uint32_t>(ts.tv_nsec);
  h.addr = blocks_[idx];
  h.jinode = jinode_addr_;
  h.statfs_addr = statfs_addr_;
  h.quota_addr = quota_addr_;
  h.local_total = local.total;
  h.local_free = local.free;
  h.local_dinodes = local.dinodes;
  h.jid = jid_;
  return h;
}

Status Journal::WriteHeader(const LogHeader& h) {
  std::vector<uint8_t> b(bsize_);
  h.EncodeBlock(b.data(), bsize_);
  head_known_ = false;  // until the header is known to be durable
  RETURN_IF_ERROR(dev_->Flush().WithContext(Where() + ": flush before log header"));
  RETURN_IF_ERROR(WriteBlocks(h.blkno, 1, b.data()).WithContext(Where() + ": log header"));
  RETURN_IF_ERROR(dev_->Flush().WithContext(Where() + ": flush after log header"));
  head_ = LogHeader::Decode(b.data());
  head_known_ = true;
  return Status::Ok();
}

Status Journal::MarkMounted(const StatfsDelta& local) {
  if (!head_known_) return Status::Invalid(Where() + ": MarkMounted before FindHead");
  if (!IsClean()) {
    return Status::Invalid(Where() + ": journal is dirty (head seq " + Num(head_.sequence) +
                           " at block " + Num(head_.blkno) + "); replay it before mounting");
  }
  uint32_t idx = Next(head_.blkno);
  return WriteHeader(MakeHeader(idx, head_.sequence + 1, format::kLogHeadFlushNormal, idx, local));
}

Status Journal::Retire() {
  if (!head_known_) return Status::Invalid(Where() + ": Retire before FindHead");
  if (!Replayable()) return Status::Ok();
  const uint32_t idx = Next(head_.blkno);
  const StatfsDelta local{head_.local_total, head_.local_free, head_.local_dinodes};
  return WriteHeader(MakeHeader(idx, head_.sequence + 1, format::kLogHeadFlushNormal, idx, local));
}

Status Journal::WriteUnmountHeader(const StatfsDelta& local) {
  if (!head_known_) return Status::Invalid(Where() + ": WriteUnmountHeader before FindHead");
  uint32_t idx = Next(head_.blkno);
  return WriteHeader(MakeHeader(idx, head_.sequence + 1,
                                format::kLogHeadUnmount | format::kLfcShutdown, idx, local));
}

uint64_t Journal::BlocksNeeded(uint64_t nmeta, uint64_t nrevoke) const {
  const uint64_t k = MetaPerDescriptor();
  uint64_t blocks = nmeta + CeilDiv(nmeta, k);
  if (nrevoke > 0) {
    blocks += 1;
    if (nrevoke > k) blocks += CeilDiv(nrevoke - k, RevokesPerLb());
  }
  return blocks + 1;  // the log header
}

uint64_t Journal::MaxBlocksPerCommit() const {
  // BlocksNeeded(m, r) <= m + r + (m + r) / K + 4 for any split, K = MetaPerDescriptor() (the
  // smaller of the two per-block capacities); keep that within the hard limit size() - 2.
  const uint64_t limit = size() - 2;
  if (limit <= 4) return 0;
  const uint64_t k = MetaPerDescriptor();
  return (limit - 4) * k / (k + 1);
}

namespace {

// Accumulates consecutive journal blocks and writes them in batches.
class BlockEmitter {
 public:
  using WriteFn = Status (*)(void* ctx, uint32_t first, uint32_t count, const uint8_t* buf);
  BlockEmitter(uint32_t bsize, uint32_t n, uint32_t first, void* ctx, WriteFn fn)
      : bsize_(bsize),
        n_(n),
        next_(first),
        ctx_(ctx),
        fn_(fn),
        chunk_(std::max<uint32_t>(1, kIoChunkBytes / bsize)),
        buf_(uint64_t{chunk_} * bsize) {}
  // A zeroed block to fill in.
  uint8_t* Add() {
    if (count_ == chunk_) pending_ = Drain();
    uint8_t* b = buf_.data() + uint64_t{count_} * bsize_;
    std::memset(b, 0, bsize_);
    count_++;
    return b;
  }
  Status Finish() {
    RETURN_IF_ERROR(pending_);
    return Drain();
  }

 private:
  // Writes the buffered blocks (skipped once a write has failed) and empties the buffer.
  Status Drain() {
    Status st = pending_;
    if (st.ok() && count_ > 0) st = fn_(ctx_, next_, count_, buf_.data());
    next_ = static_cast<uint32_t>((uint64_t{next_} + count_) % n_);
    count_ = 0;
    return st;
  }
  uint32_t bsize_, n_, next_;
  void* ctx_;
  WriteFn fn_;
  uint32_t chunk_;
  std::vector<uint8_t> buf_;
  uint32_t count_ = 0;
  Status pending_;
};

}  // namespace

Status Journal::Commit(std::span<const LogBlock> meta, std::span<const uint64_t> revokes,
                       const StatfsDelta& local) {
  if (!head_known_) return Status::Invalid(Where() + ": Commit before FindHead");
  const uint32_t n = size();
  const uint64_t dev_blocks = dev_->Size() / bsize_;
  for (const LogBlock& lb : meta) {
    if (lb.data == nullptr || lb.blkno >= dev_blocks || InJournal(lb.blkno)) {
      return Status::Invalid(Where() + ": commit of bad block " + Num(lb.blkno));
    }
    const uint32_t type = format::MetaTypeOf(lb.data);
    if (type == 0) {
      return Status::Invalid(Where() + ": commit of block " + Num(lb.blkno) +
                             " whose image lacks the GFS2 metadata magic");
    }
    // Log blocks are never logged: an LH image could pass for a header of this journal.
    if (type == format::kMetaLh || type == format::kMetaLd || type == format::kMetaLb) {
      return Status::Invalid(Where() + ": commit of a " + format::MetaTypeName(type) +
                             " image for block " + Num(lb.blkno));
    }
  }
  for (uint64_t r : revokes) {
    if (r >= dev_blocks) return Status::Invalid(Where() + ": revoke of bad block " + Num(r));
  }
  const uint64_t need = BlocksNeeded(meta.size(), revokes.size());
  if (need > n - 2) {
    return Status::NoSpace(Where() + ": commit of " + Num(meta.size()) + " blocks and " +
                           Num(revokes.size()) + " revokes needs " + Num(need) +
                           " journal blocks; at most " + Num(n - 2) + " fit");
  }
  // The new commit must not overwrite the current head's active region [tail, head]: a crash
  // before the new header would leave a head whose region is garbage. If it would, first retire
  // the old commit (its in-place writes are done, by the caller's contract) with an empty-log
  // header.
  const uint32_t active = (head_.blkno + n - head_.tail) % n + 1;
  if (need + active > n) {
    uint32_t idx = Next(head_.blkno);
    RETURN_IF_ERROR(
        WriteHeader(MakeHeader(idx, head_.sequence + 1, format::kLogHeadFlushNormal, idx, local)));
  }

  const uint32_t first = Next(head_.blkno);
  head_known_ = false;  // until the new header is durable
  BlockEmitter em(bsize_, n, first, this, [](void* ctx, uint32_t f, uint32_t c, const uint8_t* b) {
    return static_cast<Journal*>(ctx)->WriteBlocks(f, c, b);
  });
  // REVOKE chunk: descriptor + LB continuation blocks.
  if (!revokes.empty()) {
    const uint64_t k = MetaPerDescriptor();
    const uint64_t k2 = RevokesPerLb();
    uint64_t lbs = revokes.size() > k ? CeilDiv(revokes.size() - k, k2) : 0;
    uint8_t* d = em.Add();
    LogDescriptor ld;
    ld.type = format::kLdRevoke;
    ld.length = static_cast<uint32_t>(1 + lbs);
    ld.data1 = static_cast<uint32_t>(revokes.size());
    ld.Encode(d);
    size_t i = 0;
    for (uint64_t e = 0; e < k && i < revokes.size(); ++e, ++i) {
      StoreBe64(d + format::kLogDescSize + 8 * e, revokes[i]);
    }
    while (i < revokes.size()) {
      uint8_t* b = em.Add();
      format::WriteMeta(b, format::kMetaLb);
      for (uint64_t e = 0; e < k2 && i < revokes.size(); ++e, ++i) {
        StoreBe64(b + format::kMetaHeaderSize + 8 * e, revokes[i]);
      }
    }
  }
  // METADATA chunks: descriptor with up to K block numbers, then the images.
  const size_t k = MetaPerDescriptor();
  for (size_t start = 0; start < meta.size(); start += k) {
    size_t cnt = std::min(k, meta.size() - start);
    uint8_t* d = em.Add();
    LogDescriptor ld;
    ld.type = format::kLdMetadata;
    ld.length = static_cast<uint32_t>(cnt + 1);
    ld.data1 = static_cast<uint32_t>(cnt);
    ld.Encode(d);
    for (size_t e = 0; e < cnt; ++e) {
      StoreBe64(d + format::kLogDescSize + 8 * e, meta[start + e].blkno);
    }
    for (size_t e = 0; e < cnt; ++e) std::memcpy(em.Add(), meta[start + e].data, bsize_);
  }
  RETURN_IF_ERROR(em.Finish().WithContext(Where() + ": writing commit"));
  const uint32_t hdr = Next(first, need - 1);
  return WriteHeader(
      MakeHeader(hdr, head_.sequence + 1, format::kLogHeadFlushNormal, first, local));
}

Result<ReplayStats> Journal::Replay() {
  if (!head_known_) return Status::Invalid(Where() + ": Replay before FindHead");
  ReplayStats st;
  st.head_sequence = head_.sequence;
  st.head_blkno = head_.blkno;
  st.tail = head_.tail;
  st.local = {head_.local_total, head_.local_free, head_.local_dinodes};
  if (IsClean()) return st;
  st.was_dirty = true;

  const uint32_t n = size();
  const std::string where = Where() + " (head seq " + Num(head_.sequence) + " at block " +
                            Num(head_.blkno) + ", tail " + Num(head_.tail) + ")";
  if (head_.tail >= n) {
    return Status::Corrupt(where + ": lh_tail beyond the journal's " + Num(n) + " blocks");
  }
  const uint32_t len = (head_.blkno + n - head_.tail) % n;
  st.region_blocks = len;
  const uint64_t dev_blocks = dev_->Size() / bsize_;

  // Pass 0: walk and verify every descriptor; record revokes (last position wins) and copies.
  struct Copy {
    uint64_t blkno;
    uint32_t dist;  // distance from the tail
    bool jdata;
    bool escaped;
  };
  std::vector<Copy> copies;
  std::unordered_map<uint64_t, uint32_t> revoked_at;
  std::vector<uint8_t> blk(bsize_);
  const uint32_t k_meta = MetaPerDescriptor();
  const uint32_t k_jdata = (bsize_ - format::kLogDescSize) / 16;
  const uint32_t k_lb = RevokesPerLb();
  for (uint32_t d = 0; d < len;) {
    const uint32_t pos = Next(head_.tail, d);
    auto corrupt = [&](const std::string& what) {
      return Status::Corrupt(where + ": journal block " + Num(pos) + " (block " +
                             Num(blocks_[pos]) + ") in the active region: " + what);
    };
    RETURN_IF_ERROR(ReadBlocks(pos, 1, blk.data()).WithContext(where));
    const uint32_t type = format::MetaTypeOf(blk.data());
    if (type == format::kMetaLh) {
      if (!LogHeader::Valid(blk.data(), bsize_) || LogHeader::Decode(blk.data()).blkno != pos) {
        return corrupt("invalid log header");
      }
      d++;
      continue;
    }
    if (type != format::kMetaLd) {
      return corrupt("neither a log header nor a log descriptor (metadata type " + Num(type) + ")");
    }
    const LogDescriptor ld = LogDescriptor::Decode(blk.data());
    if (ld.length == 0 || ld.length > len - d) {
      return corrupt("descriptor length " + Num(ld.length) + " does not fit the " + Num(len - d) +
                     " remaining blocks");
    }
    st.descriptors++;
    switch (ld.type) {
      case format::kLdMetadata:
      case format::kLdJdata: {
        const bool jdata = ld.type == format::kLdJdata;
        const uint32_t per = jdata ? k_jdata : k_meta;
        if (ld.data1 > per || ld.length != ld.data1 + 1) {
          return corrupt("descriptor with " + Num(ld.data1) + " entries and length " +
                         Num(ld.length) + " (at most " + Num(per) + " entries)");
        }
        for (uint32_t e = 0; e < ld.data1; ++e) {
          const uint8_t* p = blk.data() + format::kLogDescSize + uint64_t{e} * (jdata ? 16 : 8);
          const uint64_t b = LoadBe64(p);
          if (b >= dev_blocks || InJournal(b)) {
            return corrupt("logged block number " + Num(b) +
                           (b >= dev_blocks ? " beyond the device" : " inside the journal"));
          }
          copies.push_back({b, d + 1 + e, jdata, jdata && LoadBe64(p + 8) != 0});
          (jdata ? st.jdata_copies : st.metadata_copies)++;
        }
        break;
      }
      case format::kLdRevoke: {
        const uint64_t cap = k_meta + uint64_t{ld.length - 1} * k_lb;
        if (ld.data1 > cap) {
          return corrupt("revoke descriptor with " + Num(ld.data1) + " entries in " +
                         Num(ld.length) + " blocks");
        }
        std::vector<uint8_t> lbs(uint64_t{ld.length - 1} * bsize_);
        if (ld.length > 1) {
          RETURN_IF_ERROR(ReadBlocks(Next(pos), ld.length - 1, lbs.data()).WithContext(where));
        }
        for (uint32_t i = 1; i < ld.length; ++i) {
          if (format::MetaTypeOf(lbs.data() + uint64_t{i - 1} * bsize_) != format::kMetaLb) {
            return corrupt("revoke continuation block " + Num(i) + " is not a log buffer");
          }
        }
        for (uint32_t e = 0; e < ld.data1; ++e) {
          const uint8_t* p = e < k_meta
                                 ? blk.data() + format::kLogDescSize + 8ull * e
                                 : lbs.data() + uint64_t{(e - k_meta) / k_lb} * bsize_ +
                                       format::kMetaHeaderSize + 8ull * ((e - k_meta) % k_lb);
          revoked_at[LoadBe64(p)] = d;
          st.revokes++;
        }
        break;
      }
      default:
        return corrupt("unknown log descriptor type " + Num(ld.type));
    }
    d += ld.length;
  }

  // Winners: the last copy of each block, unless a revoke logged after it covers it (then every
  // earlier copy is covered as well).
  std::unordered_map<uint64_t, size_t> last;
  for (size_t i = 0; i < copies.size(); ++i) {
    auto r = revoked_at.find(copies[i].blkno);
    if (r != revoked_at.end() && copies[i].dist < r->second) {
      st.revoked_copies++;
      continue;
    }
    last[copies[i].blkno] = i;
  }
  std::vector<size_t> winners;
  winners.reserve(last.size());
  for (const auto& [b, i] : last) winners.push_back(i);
  std::sort(winners.begin(), winners.end());

  // Verify the metadata images before writing anything in place.
  for (size_t i : winners) {
    if (copies[i].jdata) continue;
    const uint32_t pos = Next(head_.tail, copies[i].dist);
    RETURN_IF_ERROR(ReadBlocks(pos, 1, blk.data()).WithContext(where));
    if (LoadBe32(blk.data()) != format::kMagic) {
      return Status::Corrupt(where + ": logged image of block " + Num(copies[i].blkno) +
                             " at journal block " + Num(pos) + " is not metadata");
    }
  }
  // Pass 1: write the winners in place.
  for (size_t i : winners) {
    const uint32_t pos = Next(head_.tail, copies[i].dist);
    RETURN_IF_ERROR(ReadBlocks(pos, 1, blk.data()).WithContext(where));
    if (copies[i].escaped) StoreBe32(blk.data(), format::kMagic);
    RETURN_IF_ERROR(dev_->WriteAt(copies[i].blkno * bsize_, blk.data(), bsize_)
                        .WithContext(where + ": replaying block " + Num(copies[i].blkno)));
    st.blocks_replayed++;
  }
  // Flush the replayed blocks (WriteHeader flushes first), then retire the log.
  const uint32_t idx = Next(head_.blkno);
  RETURN_IF_ERROR(WriteHeader(MakeHeader(idx, head_.sequence + 1,
                                         format::kLogHeadUnmount | format::kLogHeadRecovery, idx,
                                         StatfsDelta{})));
  LOG_INFO(where << ": replayed " << st.blocks_replayed << " blocks (" << st.metadata_copies
                 << " metadata and " << st.jdata_copies << " jdata copies, " << st.revokes
                 << " revokes, " << st.revoked_copies << " copies revoked)");
  return st;
}

}  // namespace ugfs2::journal
