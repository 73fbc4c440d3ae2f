#include "fs/allocator.h"

#include <algorithm>
#include <cstring>
#include <utility>

#include "common/endian.h"
#include "common/log.h"

namespace ugfs2::fs {

using format::kDinode;
using format::kFree;
using format::kUnlinked;
using format::kUsed;

Status Allocator::Load(const std::vector<uint8_t>& raw, uint64_t dev_size) {
  std::lock_guard<std::mutex> l(mu_);
  const uint64_t size = raw.size();
  // Resource groups are at least 1 MiB in practice (mkfs.gfs2 makes >= 32 MiB): a bigger rindex
  // is damage, and must not drive the allocation below.
  if (size % format::kRindexSize != 0 || size == 0 ||
      size / format::kRindexSize > dev_size / (1 << 20) + 64) {
    return Status::Corrupt("rindex size " + std::to_string(size) +
                           " is not a plausible multiple of 96: volume damaged");
  }
  uint64_t n = size / format::kRindexSize;
  for (auto& rg : rgrps_) DropRgrpLocked(rg);
  rgrps_.clear();
  rgrps_.reserve(n);
  const uint32_t bs = geo_.bsize;
  for (uint64_t i = 0; i < n; ++i) {
    Rgrp rg;
    rg.ri = format::Rindex::Decode(raw.data() + i * format::kRindexSize);
    const auto& ri = rg.ri;
    uint64_t bitcap =
        (bs - format::kRgrpSize) +
        (ri.length > 0 ? uint64_t{ri.length - 1} * (bs - format::kMetaHeaderSize) : 0);
    if (ri.addr <= format::kSuperblockOffset / bs || ri.length == 0 ||
        ri.data0 != ri.addr + ri.length || ri.data0 + ri.data > dev_blocks_ ||
        ri.bitbytes != ri.data / 4 || ri.bitbytes > bitcap || ri.data == 0) {
      return Status::Corrupt("rindex entry " + std::to_string(i) + " (rgrp at " +
                             std::to_string(ri.addr) + ") is damaged: run fsck.gfs2");
    }
    if (!rgrps_.empty() && ri.addr < rgrps_.back().end()) {
      return Status::Corrupt("rindex entries overlap at rgrp " + std::to_string(ri.addr));
    }
    RETURN_IF_ERROR(ReadRgrpLocked(rg));
    rgrps_.push_back(std::move(rg));
  }
  return Status::Ok();
}

Rgrp* Allocator::RgrpFor(uint64_t blk) {
  return const_cast<Rgrp*>(std::as_const(*this).RgrpFor(blk));
}

const Rgrp* Allocator::RgrpFor(uint64_t blk) const {
  auto it = std::upper_bound(rgrps_.begin(), rgrps_.end(), blk,
                             [](uint64_t b, const Rgrp& rg) { return b < rg.ri.addr; });
  if (it == rgrps_.begin()) return nullptr;
  --it;
  if (blk < it->ri.data0 || blk >= it->end()) return nullptr;
  return &*it;
}

namespace {
// Locates the bitmap byte for data offset `o`.
inline uint8_t* BitmapByte(const Rgrp& rg, uint64_t o, uint32_t bsize) {
  uint64_t byte = o / 4;
  uint64_t first = bsize - format::kRgrpSize;
  if (byte < first) return rg.bufs[0]->bytes() + format::kRgrpSize + byte;
  byte -= first;
  uint64_t per = bsize - format::kMetaHeaderSize;
  return rg.bufs[1 + byte / per]->bytes() + format::kMetaHeaderSize + byte % per;
}
inline size_t BitmapBufIndex(uint64_t o, uint32_t bsize) {
  uint64_t byte = o / 4;
  uint64_t first = bsize - format::kRgrpSize;
  if (byte < first) return 0;
  return 1 + (byte - first) / (bsize - format::kMetaHeaderSize);
}
}  // namespace

Status Allocator::ReadRgrpLocked(Rgrp& rg) {
  const auto& ri = rg.ri;
  DropRgrpLocked(rg);
  for (uint32_t b = 0; b < ri.length; ++b) {
    ASSIGN_OR_RETURN(BufferRef buf, cache_->Get(ri.addr + b, ri.addr));
    cache_->Pin(buf);
    rg.bufs.push_back(buf);
  }
  rg.stale = false;
  rg.damaged = false;
  const uint8_t* h = rg.bufs[0]->bytes();
  Status st = format::CheckMeta(h, format::kMetaRg, ri.addr);
  if (st.ok() && !format::Rgrp::CrcOk(h)) st = Status::Corrupt("bad rg_crc");
  if (st.ok()) {
    rg.hdr = format::Rgrp::Decode(h);
    if (rg.hdr.data0 != ri.data0 || rg.hdr.data != ri.data || rg.hdr.bitbytes != ri.bitbytes) {
      st = Status::Corrupt("header disagrees with rindex");
    }
  }
  for (uint32_t b = 1; st.ok() && b < ri.length; ++b) {
    st = format::CheckMeta(rg.bufs[b]->bytes(), format::kMetaRb, ri.addr + b);
  }
  if (st.ok()) {
    // The counters must agree with the bitmap.
    uint32_t free = 0, dinodes = 0, unlinked = 0;
    for (uint64_t blk = ri.data0; blk < rg.end(); ++blk) {
      uint8_t s = GetBlockState(rg, blk);
      if (s == kFree) free++;
      if (s == kDinode || s == kUnlinked) dinodes++;  // an unlinked dinode is still one
      if (s == kUnlinked) unlinked++;
    }
    rg.unlinked = unlinked;
    if (free != rg.hdr.free || dinodes != rg.hdr.dinodes) {
      st = Status::Corrupt("counters (free " + std::to_string(rg.hdr.free) + ", dinodes " +
                           std::to_string(rg.hdr.dinodes) + ") disagree with bitmap (" +
                           std::to_string(free) + ", " + std::to_string(dinodes) + ")");
    }
  }
  if (st.ok() && lvb_read_) {
    // The last node to hold the rgrp EX left its header in the lock value block (gfs2's
    // rgrp_lvb_valid check): a header that disagrees was not written back before the lock went.
    uint8_t v[format::RgrpLvb::kSize];
    if (lvb_read_(ri.addr, v)) {
      const format::RgrpLvb lvb = format::RgrpLvb::Decode(v);
      if (lvb.magic == format::kMagic && !lvb.Matches(rg.hdr)) {
        auto fields = [](uint32_t flags, uint32_t free, uint32_t dinodes, uint64_t igen) {
          return "flags " + std::to_string(flags) + ", free " + std::to_string(free) +
                 ", dinodes " + std::to_string(dinodes) + ", igeneration " + std::to_string(igen);
        };
        st = Status::Corrupt("header (" +
                             fields(rg.hdr.flags, rg.hdr.free, rg.hdr.dinodes, rg.hdr.igeneration) +
                             ") disagrees with its lock value block (" +
                             fields(lvb.flags, lvb.free, lvb.dinodes, lvb.igeneration) +
                             "): a change made on another node did not reach the disk");
      }
    }
  }
  if (!st.ok()) {
    LOG_ERROR("resource group at block " << ri.addr << " is damaged (" << st.message()
                                         << "); not allocating from it. Run fsck.gfs2.");
    rg.damaged = true;
    rg.hdr = format::Rgrp{};
  }
  return Status::Ok();
}

void Allocator::DropRgrpLocked(Rgrp& rg) {
  for (auto& b : rg.bufs) cache_->Unpin(b);
  rg.bufs.clear();
  size_t kept = 0;
  cache_->DropOwned(rg.ri.addr, &kept);
  if (kept != 0) {
    LOG_ERROR("glock 3/" << std::hex << rg.ri.addr << std::dec << ": " << kept
                         << " dirty or pinned rgrp buffers survived the sync; kept");
  }
}

Rgrp* Allocator::RgrpAt(uint64_t addr) {
  auto it = std::lower_bound(rgrps_.begin(), rgrps_.end(), addr,
                             [](const Rgrp& rg, uint64_t a) { return rg.ri.addr < a; });
  return it != rgrps_.end() && it->ri.addr == addr ? &*it : nullptr;
}

uint64_t Allocator::RgrpOf(uint64_t blk) const {
  const Rgrp* rg = RgrpFor(blk);
  return rg == nullptr ? 0 : rg->ri.addr;
}

void Allocator::SetEnforced(bool on) {
  std::lock_guard<std::mutex> l(mu_);
  enforced_ = on;
}

bool Allocator::UsableLocked(Rgrp& rg) {
  if (enforced_ && rg.holders == 0) return false;
  if (rg.stale) {
    // Held (its refresh hook re-read it) or alone at mount/unmount: re-read it now.
    if (enforced_) LOG_WARN("rgrp " << rg.ri.addr << " held but not refreshed; re-reading");
    Status st = ReadRgrpLocked(rg);
    if (!st.ok()) {
      LOG_ERROR("re-reading rgrp " << rg.ri.addr << ": " << st.ToString());
      return false;
    }
  }
  return !rg.damaged;
}

Result<uint8_t> Allocator::PeekStateLocked(Rgrp& rg, uint64_t blk) {
  if (!rg.stale) return GetBlockState(rg, blk);
  // This node does not hold the rgrp's glock (its buffers were dropped): read the one bitmap
  // block from the device, uncached. Whoever changed the bit did it together with the dinode,
  // under the inode's glock, which the caller holds now: the device has that change.
  const uint64_t o = blk - rg.ri.data0;
  const size_t idx = BitmapBufIndex(o, geo_.bsize);
  ASSIGN_OR_RETURN(BufferRef b, cache_->ReadFresh(rg.ri.addr + idx));
  uint64_t byte = o / 4;
  const uint64_t first = geo_.bsize - format::kRgrpSize;
  const uint8_t* p = idx == 0 ? b->bytes() + format::kRgrpSize + byte
                              : b->bytes() + format::kMetaHeaderSize +
                                    (byte - first) % (geo_.bsize - format::kMetaHeaderSize);
  return static_cast<uint8_t>((*p >> ((o % 4) * 2)) & 3);
}

std::vector<std::pair<uint64_t, uint64_t>> Allocator::ReserveRgrps(uint64_t goal, uint64_t blocks) {
  std::lock_guard<std::mutex> l(mu_);
  std::vector<std::pair<uint64_t, uint64_t>> out;
  if (rgrps_.empty() || blocks == 0) return out;
  const size_t start = StartIndexLocked(goal);
  uint64_t left = blocks;
  for (size_t k = 0; k < rgrps_.size() && left > 0; ++k) {
    Rgrp& rg = rgrps_[(start + k) % rgrps_.size()];
    if (rg.damaged) continue;
    // Freed blocks whose commit is not durable yet count as free in the header but cannot be
    // handed out (see NoteFreed).
    const uint64_t taken = rg.reserved + rg.pending;
    const uint64_t avail = rg.hdr.free > taken ? rg.hdr.free - taken : 0;
    if (avail == 0) continue;
    const uint64_t take = std::min(avail, left);
    rg.reserved += take;
    left -= take;
    out.emplace_back(rg.ri.addr, take);
  }
  return out;
}

void Allocator::Unreserve(uint64_t rgrp, uint64_t blocks) {
  std::lock_guard<std::mutex> l(mu_);
  if (Rgrp* rg = RgrpAt(rgrp)) rg->reserved -= std::min(rg->reserved, blocks);
}

void Allocator::Hold(uint64_t rgrp) {
  std::lock_guard<std::mutex> l(mu_);
  Rgrp* rg = RgrpAt(rgrp);
  if (rg == nullptr) return;
  rg->holders++;
  if (rg->stale) (void)UsableLocked(*rg);  // not refreshed (a kSkip grant): read it now
}

void Allocator::Unhold(uint64_t rgrp) {
  std::lock_guard<std::mutex> l(mu_);
  Rgrp* rg = RgrpAt(rgrp);
  if (rg != nullptr && rg->holders > 0) rg->holders--;
}

bool Allocator::RgrpDirty(uint64_t rgrp) const { return cache_->HasDirtyOwned(rgrp); }

void Allocator::InvalidateRgrp(uint64_t rgrp) {
  std::lock_guard<std::mutex> l(mu_);
  Rgrp* rg = RgrpAt(rgrp);
  if (rg == nullptr) return;
  if (rg->holders != 0) LOG_ERROR("rgrp " << rgrp << " invalidated with holders");
  DropRgrpLocked(*rg);
  rg->stale = true;  // hdr keeps its last counts: statfs and the reservation policy read them
}

void Allocator::InvalidateAll() {
  std::lock_guard<std::mutex> l(mu_);
  for (auto& rg : rgrps_) {
    if (rg.holders != 0) continue;
    DropRgrpLocked(rg);
    rg.stale = true;
  }
}

std::string Allocator::DumpRgrp(uint64_t rgrp) const {
  std::lock_guard<std::mutex> l(mu_);
  const Rgrp* rg = nullptr;
  for (const auto& r : rgrps_) {
    if (r.ri.addr == rgrp) rg = &r;
  }
  if (rg == nullptr) return {};
  std::string s = " R: n:" + std::to_string(rg->ri.addr) + " b:" + std::to_string(rg->hdr.free) +
                  " i:" + std::to_string(rg->hdr.dinodes) + " u:" + std::to_string(rg->unlinked) +
                  " r:" + std::to_string(rg->reserved) + " p:" + std::to_string(rg->pending);
  if (rg->stale) s += " stale";
  if (rg->damaged) s += " damaged";
  return s + "\n";
}

Status Allocator::RefreshRgrp(uint64_t rgrp) {
  std::lock_guard<std::mutex> l(mu_);
  Rgrp* rg = RgrpAt(rgrp);
  if (rg == nullptr || !rg->stale) return Status::Ok();
  return ReadRgrpLocked(*rg);  // damage is flagged on the rgrp, not failed here
}

uint8_t Allocator::GetBlockState(const Rgrp& rg, uint64_t blk) const {
  uint64_t o = blk - rg.ri.data0;
  return (*BitmapByte(rg, o, geo_.bsize) >> ((o % 4) * 2)) & 3;
}

void Allocator::SetBlockState(Rgrp& rg, uint64_t blk, uint8_t state) {
  uint64_t o = blk - rg.ri.data0;
  uint8_t* p = BitmapByte(rg, o, geo_.bsize);
  unsigned shift = (o % 4) * 2;
  const uint8_t old = (*p >> shift) & 3;
  if (old == kUnlinked && state != kUnlinked && rg.unlinked > 0) rg.unlinked--;
  if (old != kUnlinked && state == kUnlinked) rg.unlinked++;
  *p = static_cast<uint8_t>((*p & ~(3u << shift)) | (uint32_t{state} << shift));
  cache_->MarkDirty(rg.bufs[BitmapBufIndex(o, geo_.bsize)]);
}

void Allocator::WriteRgrpHeader(Rgrp& rg) {
  rg.hdr.skip = 0;
  // rg_skip: distance to the next rgrp header (0 for the last).
  for (size_t i = 0; i + 1 < rgrps_.size(); ++i) {
    if (&rgrps_[i] == &rg) {
      rg.hdr.skip = static_cast<uint32_t>(rgrps_[i + 1].ri.addr - rg.ri.addr);
      break;
    }
  }
  // Preserve what we do not own in the header block (bytes past 128 are bitmap).
  rg.hdr.Encode(rg.bufs[0]->bytes());
  cache_->MarkDirty(rg.bufs[0]);
  StoreLvbLocked(rg);
}

void Allocator::StoreLvbLocked(const Rgrp& rg) {
  if (!lvb_write_) return;
  uint8_t v[format::RgrpLvb::kSize];
  format::RgrpLvb::For(rg.hdr, rg.unlinked).Encode(v);
  lvb_write_(rg.ri.addr, v);
}

void Allocator::SetLvbHooks(LvbRead read, LvbWrite write) {
  std::lock_guard<std::mutex> l(mu_);
  lvb_read_ = std::move(read);
  lvb_write_ = std::move(write);
}

bool Allocator::PtrOk(uint64_t blk) const {
  if (blk == 0 || blk >= dev_blocks_) return false;
  if (!rgrps_.empty() && RgrpFor(blk) == nullptr) return false;
  auto it = std::upper_bound(
      journal_runs_.begin(), journal_runs_.end(), blk,
      [](uint64_t b, const std::pair<uint64_t, uint64_t>& r) { return b < r.first; });
  if (it != journal_runs_.begin() && blk < std::prev(it)->second) return false;
  return true;
}

Status Allocator::CheckDataRun(uint64_t ino, uint64_t pblk, uint64_t n) {
  std::lock_guard<std::mutex> l(mu_);
  for (uint64_t b = pblk; b < pblk + n; ++b) {
    Rgrp* rg = PtrOk(b) ? RgrpFor(b) : nullptr;
    uint8_t s = kFree;
    if (rg != nullptr && rg->damaged) {
      s = kUsed;
    } else if (rg != nullptr) {
      ASSIGN_OR_RETURN(s, PeekStateLocked(*rg, b));
    }
    if (s != kUsed) {
      LOG_ERROR("inode " << ino << " maps data to block " << b << " (bitmap state " << int{s}
                         << "): metadata damaged, not writing");
      return Status::Corrupt("inode " + std::to_string(ino) +
                             " maps data to a block it does "
                             "not own");
    }
  }
  return Status::Ok();
}

bool Allocator::IsPendingFree(uint64_t blk) const {
  std::lock_guard<std::mutex> l(pending_mu_);
  return pending_free_.count(blk) != 0 || committing_free_.count(blk) != 0;
}

uint64_t Allocator::TotalFree() const {
  std::lock_guard<std::mutex> l(mu_);
  uint64_t f = 0;
  for (const auto& rg : rgrps_) f += rg.hdr.free;
  return f;
}

Result<std::pair<uint64_t, uint32_t>> Allocator::AllocBlocks(uint64_t goal, uint32_t want,
                                                             uint8_t state) {
  std::lock_guard<std::mutex> l(mu_);
  return FindFreeLocked(goal, want, state, /*take=*/true);
}

Result<uint64_t> Allocator::PeekFreeBlock(uint64_t goal) {
  std::lock_guard<std::mutex> l(mu_);
  ASSIGN_OR_RETURN(auto run, FindFreeLocked(goal, 1, kFree, /*take=*/false));
  return run.first;
}

Result<bool> Allocator::AllocDinodeAt(uint64_t blk, uint64_t* generation) {
  std::lock_guard<std::mutex> l(mu_);
  Rgrp* rg = RgrpFor(blk);
  if (rg == nullptr || rg->damaged) return Status::Corrupt("dinode outside usable rgrp");
  if (!UsableLocked(*rg)) return NotHeld(blk);
  if (GetBlockState(*rg, blk) != kFree || IsPendingFree(blk)) return false;  // taken meanwhile
  SetBlockState(*rg, blk, kDinode);
  rg->hdr.free--;
  rg->hdr.dinodes++;
  local_.free--;
  local_.dinodes++;
  uint64_t gen = rg->hdr.igeneration++;
  if (gen == 0) gen = rg->hdr.igeneration++;
  WriteRgrpHeader(*rg);
  *generation = gen;
  return true;
}

size_t Allocator::StartIndexLocked(uint64_t goal) const {
  if (const Rgrp* g = RgrpFor(goal)) return static_cast<size_t>(g - rgrps_.data());
  if (goal != 0) {
    // Goal between rgrps: use the next one.
    for (size_t i = 0; i < rgrps_.size(); ++i) {
      if (rgrps_[i].ri.addr > goal) return i;
    }
  }
  return 0;
}

Status Allocator::NotHeld(uint64_t blk) {
  LOG_ERROR("block " << blk << ": its resource group's glock is not held by this node");
  return Status(Code::kDeadlock, "rgrp glock of block " + std::to_string(blk) + " not held");
}

Result<std::pair<uint64_t, uint32_t>> Allocator::FindFreeLocked(uint64_t goal, uint32_t want,
                                                                uint8_t state, bool take) {
  if (rgrps_.empty()) return Status::NoSpace("no resource groups");
  want = std::max<uint32_t>(want, 1);
  const size_t start = StartIndexLocked(goal);
  bool have_pending;
  {
    std::lock_guard<std::mutex> l(pending_mu_);
    have_pending = !pending_free_.empty() || !committing_free_.empty();
  }
  for (size_t k = 0; k < rgrps_.size(); ++k) {
    Rgrp& rg = rgrps_[(start + k) % rgrps_.size()];
    if (rg.damaged || rg.hdr.free == 0 || !UsableLocked(rg)) continue;
    const uint64_t n = rg.ri.data;
    uint64_t from = rg.hint % n;
    if (k == 0 && goal >= rg.ri.data0 && goal < rg.end()) from = goal - rg.ri.data0;
    // Scan [from, n) then [0, from) for a usable free block.
    for (int pass = 0; pass < 2; ++pass) {
      uint64_t lo = pass == 0 ? from : 0;
      uint64_t hi = pass == 0 ? n : from;
      uint64_t o = lo;
      while (o < hi) {
        // Skip whole bitmap bytes with no free block quickly.
        if (o % 4 == 0 && o + 4 <= hi) {
          uint8_t b = *BitmapByte(rg, o, geo_.bsize);
          if (((b | (b >> 1)) & 0x55) == 0x55) {
            o += 4;
            continue;
          }
        }
        uint64_t blk = rg.ri.data0 + o;
        if (GetBlockState(rg, blk) != kFree || (have_pending && IsPendingFree(blk))) {
          o++;
          continue;
        }
        if (!take) return std::make_pair(blk, uint32_t{1});
        // Found one: extend the run.
        uint32_t len = 1;
        while (len < want && o + len < n && GetBlockState(rg, blk + len) == kFree &&
               !(have_pending && IsPendingFree(blk + len))) {
          len++;
        }
        for (uint32_t i = 0; i < len; ++i) SetBlockState(rg, blk + i, state);
        rg.hdr.free -= len;
        local_.free -= len;
        if (state == kDinode) {
          rg.hdr.dinodes += len;
          local_.dinodes += len;
        }
        rg.hint = static_cast<uint32_t>((o + len) % n);
        WriteRgrpHeader(rg);
        return std::make_pair(blk, len);
      }
    }
  }
  return Status::NoSpace("no free blocks left on the volume");
}

Status Allocator::FreeBlocks(uint64_t start, uint32_t count) {
  std::lock_guard<std::mutex> l(mu_);
  for (uint64_t blk = start; blk < start + count; ++blk) {
    Rgrp* rg = RgrpFor(blk);
    if (rg == nullptr || rg->damaged) {
      LOG_ERROR("freeing block " << blk << " outside any usable resource group");
      return Status::Corrupt("block " + std::to_string(blk) + " is not in a usable rgrp");
    }
    if (!UsableLocked(*rg)) return NotHeld(blk);
    uint8_t s = GetBlockState(*rg, blk);
    if (s != kUsed) {
      LOG_ERROR("freeing block " << blk << " whose bitmap state is " << int{s}
                                 << " (expected used): metadata damaged");
      return Status::Corrupt("double free of block " + std::to_string(blk));
    }
    SetBlockState(*rg, blk, kFree);
    rg->hdr.free++;
    local_.free++;
    rg->pending++;
    NoteFreed(blk);
    if (blk + 1 == start + count || RgrpFor(blk + 1) != rg) WriteRgrpHeader(*rg);
  }
  return Status::Ok();
}

Status Allocator::FreeDinode(uint64_t blk) {
  std::lock_guard<std::mutex> l(mu_);
  Rgrp* rg = RgrpFor(blk);
  if (rg == nullptr || rg->damaged) return Status::Corrupt("dinode outside usable rgrp");
  if (!UsableLocked(*rg)) return NotHeld(blk);
  uint8_t s = GetBlockState(*rg, blk);
  if (s != kDinode && s != kUnlinked) {
    return Status::Corrupt("freeing dinode " + std::to_string(blk) + " in state " +
                           std::to_string(s));
  }
  SetBlockState(*rg, blk, kFree);
  rg->hdr.free++;
  rg->hdr.dinodes--;
  local_.free++;
  local_.dinodes--;
  WriteRgrpHeader(*rg);
  rg->pending++;
  NoteFreed(blk);
  return Status::Ok();
}

void Allocator::NoteFreed(uint64_t blk) {
  // A freed block is not reusable before the commit that frees it is durable; if its old image
  // may still be replayed from the log, the next commit revokes it.
  bool dirty = cache_->Forget(blk);
  std::lock_guard<std::mutex> l(pending_mu_);
  if (dirty || last_commit_blocks_.count(blk)) revokes_.push_back(blk);
  pending_free_.insert(blk);
}

Status Allocator::SetUnlinked(uint64_t blk) {
  std::lock_guard<std::mutex> l(mu_);
  Rgrp* rg = RgrpFor(blk);
  if (rg == nullptr || rg->damaged) return Status::Corrupt("dinode outside usable rgrp");
  if (!UsableLocked(*rg)) return NotHeld(blk);
  SetBlockState(*rg, blk, kUnlinked);
  StoreLvbLocked(*rg);  // the header does not change; the LVB's unlinked count does
  return Status::Ok();
}

uint64_t Allocator::PickDirGoal(uint64_t parent_goal) {
  std::lock_guard<std::mutex> l(mu_);
  if (rgrps_.empty()) return parent_goal;
  uint64_t total = 0;
  for (const auto& rg : rgrps_) total += rg.damaged ? 0 : rg.hdr.free;
  uint64_t avg = total / rgrps_.size();
  // Several nodes: this node's share of the rgrps first (every share_count_-th, from
  // share_index_), so that nodes rarely allocate from, hence lock, the same rgrps; then any.
  for (int pass = share_count_ > 1 ? 0 : 1; pass < 2; ++pass) {
    for (size_t k = 0; k < rgrps_.size(); ++k) {
      size_t i = (alloc_rr_ + k) % rgrps_.size();
      if (pass == 0 && i % share_count_ != share_index_ % share_count_) continue;
      const Rgrp& rg = rgrps_[i];
      if (!rg.damaged && rg.hdr.free > 0 && rg.hdr.free >= avg) {
        alloc_rr_ = i + 1;
        return rg.ri.data0;
      }
    }
  }
  return parent_goal;
}

void Allocator::SetShare(uint32_t index, uint32_t count) {
  std::lock_guard<std::mutex> l(mu_);
  share_index_ = index;
  share_count_ = count;
  alloc_rr_ = count > 1 && !rgrps_.empty() ? index % rgrps_.size() : 0;
}

void Allocator::SetJournalRuns(std::vector<std::pair<uint64_t, uint64_t>> runs) {
  std::sort(runs.begin(), runs.end());
  journal_runs_ = std::move(runs);
}

std::vector<uint64_t> Allocator::UnlinkedDinodes() {
  std::lock_guard<std::mutex> l(mu_);
  std::vector<uint64_t> out;
  for (auto& rg : rgrps_) {
    if (rg.damaged || !UsableLocked(rg)) continue;
    for (uint64_t blk = rg.ri.data0; blk < rg.end(); ++blk) {
      if (GetBlockState(rg, blk) == kUnlinked) out.push_back(blk);
    }
  }
  return out;
}

Allocator::DinodeState Allocator::StateOfDinode(uint64_t blk) {
  std::lock_guard<std::mutex> l(mu_);
  Rgrp* rg = RgrpFor(blk);
  if (rg == nullptr) return rgrps_.empty() ? DinodeState::kUntrusted : DinodeState::kOutside;
  if (rg->damaged) return DinodeState::kUntrusted;
  auto state = PeekStateLocked(*rg, blk);
  if (!state.ok()) return DinodeState::kUntrusted;
  switch (*state) {
    case kDinode:
      return DinodeState::kLinked;
    case kUnlinked:
      return DinodeState::kUnlinked;
    default:
      return DinodeState::kGone;
  }
}

size_t Allocator::DeferredFrees() const {
  std::lock_guard<std::mutex> l(pending_mu_);
  return pending_free_.size() + committing_free_.size();
}

Allocator::Totals Allocator::Sum() const {
  std::lock_guard<std::mutex> l(mu_);
  Totals t;
  for (const auto& rg : rgrps_) {
    t.total += rg.ri.data;
    if (rg.damaged) {
      t.damaged = true;
      continue;
    }
    t.free += rg.hdr.free;
    t.dinodes += rg.hdr.dinodes;
  }
  return t;
}

void Allocator::WithStatfs(
    const std::function<void(StatfsDelta& local, StatfsDelta& on_disk)>& fn) {
  std::lock_guard<std::mutex> l(mu_);
  fn(local_, local_on_disk_);
}

std::vector<uint64_t> Allocator::BeginCommit() {
  std::lock_guard<std::mutex> l(pending_mu_);
  std::vector<uint64_t> revokes = std::move(revokes_);
  revokes_.clear();
  committing_free_ = std::move(pending_free_);
  pending_free_.clear();
  return revokes;
}

void Allocator::EndCommit(bool ok, const std::vector<uint64_t>& blocks) {
  std::lock_guard<std::mutex> g(mu_);
  std::lock_guard<std::mutex> l(pending_mu_);
  if (ok) {
    for (uint64_t blk : committing_free_) {
      if (Rgrp* rg = RgrpFor(blk); rg != nullptr && rg->pending > 0) rg->pending--;
    }
    committing_free_.clear();
    last_commit_blocks_.clear();
    last_commit_blocks_.insert(blocks.begin(), blocks.end());
  } else {
    // Freed blocks stay unusable: the commit that freed them may not be durable.
    pending_free_.insert(committing_free_.begin(), committing_free_.end());
    committing_free_.clear();
  }
}

}  // namespace ugfs2::fs
