// Which resource groups an operation needs, found before its transaction: the rgrps of every
// block it may free (walks of what TruncateBlocks, FreeEattr and Dealloc will visit, reading
// but changing nothing) and how many new blocks it may allocate (what ReserveBlocks reserves).
// gfs2 does the same before gfs2_trans_begin (gfs2_rlist_add for frees, gfs2_inplace_reserve
// with the *_calc_reserv estimates for allocations), since a glock may not be waited for
// inside a transaction.
#include <algorithm>
#include <functional>

#include "common/endian.h"
#include "fs/engine.h"
#include "fs/op_scope.h"

namespace ugfs2::fs {

namespace {

void AddRgrp(std::vector<uint64_t>* out, uint64_t rg) {
  if (rg != 0 && (out->empty() || out->back() != rg)) out->push_back(rg);
}

void SortUnique(std::vector<uint64_t>* v) {
  std::sort(v->begin(), v->end());
  v->erase(std::unique(v->begin(), v->end()), v->end());
}

}  // namespace

Status Engine::RgrpsOfRange(Inode& ip, uint64_t first, uint64_t end, std::vector<uint64_t>* out) {
  const uint32_t h = ip.di.height;
  if (h == 0 || ip.buf == nullptr) return Status::Ok();
  std::function<Status(const uint8_t*, uint32_t, uint32_t, uint64_t)> walk;
  walk = [&](const uint8_t* p, uint32_t nptrs, uint32_t lvl, uint64_t base) -> Status {
    uint64_t span = 1;
    for (uint32_t l = lvl + 1; l < h; ++l) span = SatMul(span, geo_.inptrs);
    for (uint32_t i = 0; i < nptrs; ++i) {
      const uint64_t ptr = LoadBe64(p + i * 8);
      if (ptr == 0) continue;
      const uint64_t cbase = base + SatMul(i, span);
      const uint64_t cend = cbase + span < cbase ? ~uint64_t{0} : cbase + span;
      if (cend <= first || cbase >= end) continue;
      if (!alloc_->PtrOk(ptr)) return Status::Ok();  // TruncateBlocks refuses it (damaged)
      AddRgrp(out, alloc_->RgrpOf(ptr));             // the block itself may be freed
      if (lvl + 1 == h) continue;
      ASSIGN_OR_RETURN(BufferRef child, cache_->Get(ptr, ip.no));
      RETURN_IF_ERROR(CheckMetaLogged(child->bytes(), format::kMetaIn, ptr));
      RETURN_IF_ERROR(walk(child->bytes() + format::kMetaHeaderSize, geo_.inptrs, lvl + 1, cbase));
    }
    return Status::Ok();
  };
  RETURN_IF_ERROR(walk(ip.buf->bytes() + format::kDinodeSize, geo_.diptrs, 0, 0));
  SortUnique(out);
  return Status::Ok();
}

Status Engine::RgrpsOfEattr(Inode& ip, std::vector<uint64_t>* out, uint64_t* blocks) {
  uint64_t count = 0;
  if (blocks != nullptr) *blocks = 0;
  if (ip.di.eattr == 0) return Status::Ok();
  auto ea_block = [&](uint64_t blk) -> Status {
    if (!alloc_->PtrOk(blk)) return Status::Ok();  // FreeEattr refuses it (damaged)
    AddRgrp(out, alloc_->RgrpOf(blk));
    count++;
    ASSIGN_OR_RETURN(BufferRef b, cache_->Get(blk, ip.no));
    RETURN_IF_ERROR(CheckMetaLogged(b->bytes(), format::kMetaEa, blk));
    const uint8_t* p = b->bytes();
    uint32_t off = format::kMetaHeaderSize;
    while (off + format::kEaHeaderSize <= geo_.bsize) {
      const uint32_t rec_len = LoadBe32(p + off);
      const uint8_t name_len = p[off + 8];
      const uint8_t flags = p[off + 10];
      const uint8_t nptrs = p[off + 11];
      if (rec_len < format::kEaHeaderSize || off + rec_len > geo_.bsize) break;
      const uint32_t poff = off + format::kEaHeaderSize + ((name_len + 7u) & ~7u);
      for (uint32_t k = 0; k < nptrs && poff + (k + 1) * 8 <= off + rec_len; ++k) {
        const uint64_t ed = LoadBe64(p + poff + k * 8);
        if (ed != 0 && alloc_->PtrOk(ed)) {
          AddRgrp(out, alloc_->RgrpOf(ed));
          count++;
        }
      }
      if (flags & 0x01) break;
      off += rec_len;
    }
    return Status::Ok();
  };
  if (ip.di.flags & format::kDifEaIndirect) {
    const uint64_t ind = ip.di.eattr;
    if (!alloc_->PtrOk(ind)) return Status::Ok();
    AddRgrp(out, alloc_->RgrpOf(ind));
    count++;
    ASSIGN_OR_RETURN(BufferRef b, cache_->Get(ind, ip.no));
    RETURN_IF_ERROR(CheckMetaLogged(b->bytes(), format::kMetaIn, ind));
    std::vector<uint64_t> ptrs;
    for (uint32_t i = 0; i < geo_.inptrs; ++i) {
      const uint64_t p = LoadBe64(b->bytes() + format::kMetaHeaderSize + i * 8);
      if (p) ptrs.push_back(p);
    }
    for (uint64_t p : ptrs) RETURN_IF_ERROR(ea_block(p));
  } else {
    RETURN_IF_ERROR(ea_block(ip.di.eattr));
  }
  SortUnique(out);
  if (blocks != nullptr) *blocks = count;
  return Status::Ok();
}

Status Engine::LockRgrpsToRewriteEattr(OpScope& s, Inode& ip, uint64_t new_bytes) {
  // WriteXattrs frees the old blocks and writes the whole set packed again: at most as many
  // blocks as now, plus the new value's, plus an indirect block.
  std::vector<uint64_t> rgrps;
  uint64_t old_blocks = 0;
  RETURN_IF_ERROR(RgrpsOfEattr(ip, &rgrps, &old_blocks));
  RETURN_IF_ERROR(s.LockRgrps(rgrps));
  return s.ReserveBlocks(ip.di.eattr ? ip.di.eattr : ip.no,
                         old_blocks + 2 * (new_bytes / geo_.jbsize + 2) + 1);
}

Status Engine::RgrpsOfInode(Inode& ip, std::vector<uint64_t>* out) {
  AddRgrp(out, alloc_->RgrpOf(ip.no));  // Dealloc frees it, SetUnlinked re-marks it
  if (ip.is_dir() && (ip.di.flags & format::kDifExhash)) {
    RETURN_IF_ERROR(ForEachLeaf(ip, [&](uint64_t blk) {
      if (alloc_->PtrOk(blk)) AddRgrp(out, alloc_->RgrpOf(blk));
      return Status::Ok();
    }));
  }
  RETURN_IF_ERROR(RgrpsOfRange(ip, 0, ~uint64_t{0}, out));
  RETURN_IF_ERROR(RgrpsOfEattr(ip, out));
  SortUnique(out);
  return Status::Ok();
}

Status Engine::LockRgrpsToDrop(OpScope& s, Inode& ip) {
  // DropLink frees (or marks unlinked) an inode whose last link goes.
  if (!(ip.is_dir() || ip.di.nlink <= 1)) return Status::Ok();
  std::vector<uint64_t> rgrps;
  RETURN_IF_ERROR(RgrpsOfInode(ip, &rgrps));
  return s.LockRgrps(rgrps);
}

Status Engine::LockRgrpsToTruncate(OpScope& s, Inode& ip, uint64_t size) {
  std::vector<uint64_t> rgrps;
  if (size < ip.di.size) {
    const uint64_t bs = geo_.bsize;
    RETURN_IF_ERROR(RgrpsOfRange(ip, (size + bs - 1) / bs, ~uint64_t{0}, &rgrps));
    RETURN_IF_ERROR(s.LockRgrps(rgrps));
  } else if (ip.di.height == 0 && size > geo_.max_stuffed) {
    RETURN_IF_ERROR(s.ReserveBlocks(ip.no, TreeReserve(1)));  // Unstuff
  }
  return Status::Ok();
}

uint64_t Engine::TreeReserve(uint64_t data_blocks) const {
  // The data blocks, the indirect blocks over them at every level of the tallest tree, and a
  // growth of the tree by every level (gfs2_write_calc_reserv's bound, rounded up).
  uint64_t total = data_blocks;
  uint64_t level = data_blocks;
  for (uint32_t l = 0; l < format::kMaxMetaHeight; ++l) {
    level = level / geo_.inptrs + 1;
    total += level + 1;
  }
  return total;
}

uint64_t Engine::DirAddReserve(const Inode& dir) const {
  // Converting a stuffed directory (hash table + leaf), or splitting a leaf and doubling the
  // hash table (which is the directory's data: rewritten at twice its size), with the tree
  // over it.
  if (!(dir.di.flags & format::kDifExhash)) return TreeReserve(2) + 1;
  const uint64_t table_blocks = dir.di.size / geo_.bsize + 1;
  return TreeReserve(2 * table_blocks) + 2;
}

Result<uint64_t> Engine::WriteReserve(Inode& ip, uint64_t off, uint64_t len) {
  if (len == 0) return uint64_t{0};
  const uint64_t bs = geo_.bsize;
  if (ip.di.height == 0) {
    // Stuffed: unstuffing allocates the first block, the write the rest.
    if (off + len <= geo_.max_stuffed) return uint64_t{0};
    return TreeReserve((off + len + bs - 1) / bs + 1);
  }
  uint64_t holes = 0;
  const uint64_t first = off / bs, last = (off + len - 1) / bs;
  for (uint64_t l = first; l <= last;) {
    uint64_t run = 0;
    ASSIGN_OR_RETURN(uint64_t pblk, MapExtent(ip, l, last - l + 1, &run));
    run = std::max<uint64_t>(run, 1);
    if (pblk == 0) holes += std::min(run, last - l + 1);
    l += run;
  }
  return holes == 0 ? 0 : TreeReserve(holes);
}

}  // namespace ugfs2::fs
