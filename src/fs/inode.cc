// In-core inodes, dinode I/O and metadata trees: mapping logical blocks, growing the tree,
// unstuffing, truncation and deallocation, and file data I/O.
#include <algorithm>
#include <cstring>
#include <unordered_set>

#include "common/endian.h"
#include "common/log.h"
#include "fs/engine.h"

namespace ugfs2::fs {
namespace {

constexpr size_t kInodeCacheSoftCap = 65536;

bool ValidFileType(uint32_t mode) {
  switch (mode & 0170000) {
    case 0100000:
    case 0040000:
    case 0120000:
    case 0020000:
    case 0060000:
    case 0010000:
    case 0140000:
      return true;
  }
  return false;
}

// Collects freed blocks into contiguous runs.
class FreeRuns {
 public:
  explicit FreeRuns(Engine* e, std::function<Status(uint64_t, uint32_t)> fn) : fn_(std::move(fn)) {}
  Status Add(uint64_t blk) {
    if (len_ > 0 && blk == start_ + len_ && len_ < 1u << 20) {
      len_++;
      return Status::Ok();
    }
    RETURN_IF_ERROR(Flush());
    start_ = blk;
    len_ = 1;
    return Status::Ok();
  }
  Status Flush() {
    if (len_ == 0) return Status::Ok();
    Status st = fn_(start_, len_);
    len_ = 0;
    return st;
  }

 private:
  std::function<Status(uint64_t, uint32_t)> fn_;
  uint64_t start_ = 0;
  uint32_t len_ = 0;
};

Status BadPointer(const Inode& ip, uint64_t ptr) {
  LOG_ERROR("inode " << ip.no << ": block pointer " << ptr
                     << " is outside the filesystem's data or inside a journal");
  return Status::Corrupt("bad block pointer " + std::to_string(ptr) + " in inode " +
                         std::to_string(ip.no));
}

}  // namespace

Status CheckMetaLogged(const uint8_t* p, uint32_t type, uint64_t blkno) {
  Status st = format::CheckMeta(p, type, blkno);
  if (!st.ok()) LOG_ERROR("metadata damaged: " << st.message());
  return st;
}

uint64_t Engine::MaxFileSize() const {
  return std::min<uint64_t>(geo_.data_cap[format::kMaxMetaHeight], (uint64_t{1} << 63) - 1);
}

Result<InodeRef> Engine::GetInode(InodeNo no) {
  InodeRef shell;  // an invalidated inode kept for its open count: re-read in place
  {
    std::lock_guard<std::mutex> l(inodes_mu_);
    auto it = inodes_.find(no);
    if (it != inodes_.end()) {
      if (!it->second->stale) return it->second;
      shell = it->second;
    }
  }
  if (no <= format::kSuperblockOffset / geo_.bsize || no >= dev_blocks_) {
    return Status(Code::kStale, "inode number " + std::to_string(no) + " out of range");
  }
  // DINODE in a trusted bitmap: the inode should have links.
  const Allocator::DinodeState state = alloc_->StateOfDinode(no);
  if (state == Allocator::DinodeState::kGone) {
    return Status(Code::kStale, "inode " + std::to_string(no) + " no longer exists");
  }
  if (state == Allocator::DinodeState::kOutside) {
    LOG_ERROR("inode number " << no << " is not inside any resource group");
    return Status::Corrupt("inode " + std::to_string(no) + " is outside every resource group");
  }
  const bool linked_state = state == Allocator::DinodeState::kLinked;
  ASSIGN_OR_RETURN(BufferRef buf, cache_->Get(no, no));
  auto ip = std::make_shared<Inode>();
  ip->no = no;
  ip->buf = buf;
  const uint8_t* p = buf->bytes();
  Status st = format::CheckMeta(p, format::kMetaDi, no);
  if (st.ok()) {
    ip->di = format::Dinode::Decode(p);
    const auto& di = ip->di;
    if (di.num.addr != no) {
      st = Status::Corrupt("dinode " + std::to_string(no) + " claims address " +
                           std::to_string(di.num.addr));
    } else if (!ValidFileType(di.mode)) {
      st = Status::Corrupt("dinode " + std::to_string(no) + " has invalid mode");
    } else if (di.height > format::kMaxMetaHeight) {
      st = Status::Corrupt("dinode " + std::to_string(no) + " has invalid height");
    } else if (di.height == 0 && di.size > geo_.max_stuffed && !(di.flags & format::kDifExhash)) {
      st = Status::Corrupt("stuffed dinode " + std::to_string(no) + " larger than its block");
    } else if ((di.flags & format::kDifExhash) &&
               (di.depth > format::kMaxDirDepth || di.size != (uint64_t{8} << di.depth) ||
                (di.height == 0 ? di.size > geo_.max_stuffed
                                : di.size > geo_.jdata_cap[di.height]))) {
      st = Status::Corrupt("directory " + std::to_string(no) + " has an inconsistent hash table");
    }
  }
  if (!st.ok()) {
    LOG_ERROR("damaged inode " << no << ": " << st.message());
    return st;
  }
  if (ip->di.nlink == 0 && linked_state) {
    // No unlink of ours left it so: a damaged di_nlink. Never deallocate it behind the user's
    // back (unmount frees cached inodes with no links); fsck.gfs2 recounts links.
    LOG_ERROR("inode " << no << " has nlink 0 but is allocated as a linked dinode: damaged");
    ip->damaged = true;
  }
  std::lock_guard<std::mutex> l(inodes_mu_);
  auto [it, inserted] = inodes_.emplace(no, ip);
  if (!inserted) {
    Inode& cur = *it->second;
    if (!cur.stale) return it->second;
    // Refill the shell (same object: its open count and the references to it stay valid).
    cur.buf = ip->buf;
    cur.di = ip->di;
    cur.damaged = ip->damaged;
    cur.stale = false;
    cache_->Pin(cur.buf);
    return it->second;
  }
  (void)shell;
  cache_->Pin(buf);
  if (inodes_.size() > kInodeCacheSoftCap) {
    for (auto i = inodes_.begin(); i != inodes_.end() && inodes_.size() > kInodeCacheSoftCap / 2;) {
      if (i->second.use_count() == 1 && i->second->opens == 0 && i->first != no) {
        if (i->second->buf) cache_->Unpin(i->second->buf);
        i = inodes_.erase(i);
      } else {
        ++i;
      }
    }
  }
  return ip;
}

void Engine::DropInode(InodeNo no) {
  std::lock_guard<std::mutex> l(inodes_mu_);
  auto it = inodes_.find(no);
  if (it == inodes_.end()) return;
  if (it->second->buf) cache_->Unpin(it->second->buf);
  inodes_.erase(it);
}

void Engine::WriteDinode(Inode& ip) {
  ip.di.Encode(ip.buf->bytes());
  cache_->MarkDirty(ip.buf);
}

Result<InodeRef> Engine::NewInode(uint64_t blk, uint64_t gen, uint32_t mode, uint32_t uid,
                                  uint32_t gid, uint32_t flags) {
  BufferRef buf = cache_->GetNew(blk, blk);
  auto ip = std::make_shared<Inode>();
  ip->no = blk;
  ip->buf = buf;
  auto& di = ip->di;
  di.num = {gen, blk};
  di.mode = mode;
  di.uid = uid;
  di.gid = gid;
  di.nlink = 1;
  di.blocks = 1;
  Timespec now = Now();
  di.atime = di.mtime = di.ctime = static_cast<uint64_t>(now.sec);
  di.atime_nsec = di.mtime_nsec = di.ctime_nsec = now.nsec;
  di.goal_meta = di.goal_data = blk;
  di.generation = gen;
  di.flags = flags;
  WriteDinode(*ip);
  std::lock_guard<std::mutex> l(inodes_mu_);
  inodes_[blk] = ip;
  cache_->Pin(buf);
  return ip;
}

// ---- metadata tree --------------------------------------------------------------------------

namespace {
struct Path {
  uint32_t idx[format::kMaxMetaHeight] = {};
};
// Returns false if lblk is beyond what the tree of this height can address.
bool MakePath(const format::Geometry& g, uint32_t height, uint64_t lblk, Path* p) {
  for (uint32_t lvl = height - 1; lvl >= 1; --lvl) {
    p->idx[lvl] = static_cast<uint32_t>(lblk % g.inptrs);
    lblk /= g.inptrs;
  }
  if (lblk >= g.diptrs) return false;
  p->idx[0] = static_cast<uint32_t>(lblk);
  return true;
}
}  // namespace

Result<uint64_t> Engine::MapBlock(Inode& ip, uint64_t lblk) {
  uint64_t len = 0;
  return MapExtent(ip, lblk, 1, &len);
}

Result<uint64_t> Engine::MapExtent(Inode& ip, uint64_t lblk, uint64_t max_len, uint64_t* len) {
  *len = 1;
  const uint32_t h = ip.di.height;
  if (h == 0) return uint64_t{0};
  Path path;
  if (!MakePath(geo_, h, lblk, &path)) {
    *len = max_len;
    return uint64_t{0};
  }
  BufferRef cur = ip.buf;
  uint32_t base = format::kDinodeSize;
  uint32_t nptrs = geo_.diptrs;
  for (uint32_t lvl = 0; lvl + 1 < h; ++lvl) {
    uint64_t ptr = LoadBe64(cur->bytes() + base + path.idx[lvl] * 8);
    if (ptr == 0) {
      // The whole subtree is a hole: count how much of it lies ahead.
      uint64_t span = 1;
      for (uint32_t l = lvl + 1; l < h; ++l) span = SatMul(span, geo_.inptrs);
      uint64_t within = 0;
      for (uint32_t l = lvl + 1; l < h; ++l) {
        uint64_t s = 1;
        for (uint32_t m = l + 1; m < h; ++m) s = SatMul(s, geo_.inptrs);
        within += path.idx[l] * s;
      }
      *len = std::min<uint64_t>(max_len, span - within);
      return uint64_t{0};
    }
    if (!alloc_->PtrOk(ptr)) return BadPointer(ip, ptr);
    ASSIGN_OR_RETURN(cur, cache_->Get(ptr, ip.no));
    RETURN_IF_ERROR(CheckMetaLogged(cur->bytes(), format::kMetaIn, ptr));
    base = format::kMetaHeaderSize;
    nptrs = geo_.inptrs;
  }
  const uint8_t* p = cur->bytes() + base;
  uint32_t i = path.idx[h - 1];
  uint64_t first = LoadBe64(p + i * 8);
  if (first != 0 && !alloc_->PtrOk(first)) return BadPointer(ip, first);
  uint64_t n = 1;
  while (n < max_len && i + n < nptrs) {
    uint64_t next = LoadBe64(p + (i + n) * 8);
    if (first == 0 ? next != 0 : (next != first + n || !alloc_->PtrOk(next))) break;
    n++;
  }
  *len = n;
  return first;
}

Status Engine::Unstuff(Inode& ip) {
  if (ip.di.height != 0) return Status::Ok();
  uint8_t* area = ip.buf->bytes() + format::kDinodeSize;
  const bool jdata = ip.is_dir();
  bool has_data = ip.di.size > 0;
  uint64_t blk = 0;
  if (has_data) {
    ASSIGN_OR_RETURN(auto run, alloc_->AllocBlocks(ip.di.goal_data, 1, format::kUsed));
    blk = run.first;
    uint32_t n = static_cast<uint32_t>(std::min<uint64_t>(ip.di.size, geo_.max_stuffed));
    if (jdata) {
      BufferRef b = cache_->GetNew(blk, ip.no);
      format::WriteMeta(b->bytes(), format::kMetaJd);
      std::memcpy(b->bytes() + format::kMetaHeaderSize, area, std::min(n, geo_.jbsize));
    } else {
      std::vector<uint8_t> block(geo_.bsize, 0);
      std::memcpy(block.data(), area, n);
      RETURN_IF_ERROR(dev_->WriteAt(blk * geo_.bsize, block.data(), geo_.bsize));
      data_writes_++;
    }
    ip.di.blocks++;
    ip.di.goal_data = ip.di.goal_meta = blk;
  }
  std::memset(area, 0, geo_.bsize - format::kDinodeSize);
  if (has_data) StoreBe64(area, blk);
  ip.di.height = 1;
  WriteDinode(ip);
  return Status::Ok();
}

Status Engine::GrowHeight(Inode& ip, uint32_t height) {
  if (height > format::kMaxMetaHeight) return Status(Code::kTooBig, "file too large");
  if (ip.di.height == 0) RETURN_IF_ERROR(Unstuff(ip));
  uint8_t* area = ip.buf->bytes() + format::kDinodeSize;
  const size_t area_len = size_t{geo_.diptrs} * 8;
  while (ip.di.height < height) {
    bool any = false;
    for (size_t i = 0; i < area_len && !any; i += 8) any = LoadBe64(area + i) != 0;
    if (any) {
      ASSIGN_OR_RETURN(auto run, alloc_->AllocBlocks(ip.di.goal_meta, 1, format::kUsed));
      BufferRef in = cache_->GetNew(run.first, ip.no);
      format::WriteMeta(in->bytes(), format::kMetaIn);
      std::memcpy(in->bytes() + format::kMetaHeaderSize, area, area_len);
      std::memset(area, 0, geo_.bsize - format::kDinodeSize);
      StoreBe64(area, run.first);
      ip.di.blocks++;
    }
    ip.di.height++;
  }
  WriteDinode(ip);
  return Status::Ok();
}

Status Engine::AllocRange(Inode& ip, uint64_t lblk, uint64_t count, bool jdata,
                          std::vector<NewExtent>* fresh) {
  // A failure part way (ENOSPC) keeps what was allocated: every changed pointer block is dirty
  // and the dinode (di_blocks, pointers) is written, so the tree and the bitmaps agree.
  Status st = AllocRangeSteps(ip, lblk, count, jdata, fresh);
  if (!st.ok()) WriteDinode(ip);
  return st;
}

Status Engine::AllocRangeSteps(Inode& ip, uint64_t lblk, uint64_t count, bool jdata,
                               std::vector<NewExtent>* fresh) {
  if (count == 0) return Status::Ok();
  const uint64_t unit = jdata ? geo_.jbsize : geo_.bsize;
  uint32_t need = geo_.HeightFor(SatMul(lblk + count, unit), jdata);
  if (need == 0) need = 1;
  if (ip.di.height < need) RETURN_IF_ERROR(GrowHeight(ip, need));
  const uint32_t h = ip.di.height;
  const uint64_t end = lblk + count;
  // Two passes: first every indirect block the range needs, then the data, so that the data of
  // one request is one contiguous extent (as gfs2 allocates metadata ahead of data).
  for (int pass = (h > 1 ? 0 : 1); pass < 2; ++pass) {
    uint64_t l = lblk;
    while (l < end) {
      Path path;
      if (!MakePath(geo_, h, l, &path)) return Status(Code::kTooBig, "file too large");
      BufferRef cur = ip.buf;
      uint32_t base = format::kDinodeSize;
      uint32_t nptrs = geo_.diptrs;
      for (uint32_t lvl = 0; lvl + 1 < h; ++lvl) {
        uint8_t* pp = cur->bytes() + base + path.idx[lvl] * 8;
        uint64_t ptr = LoadBe64(pp);
        if (ptr == 0) {
          ASSIGN_OR_RETURN(auto run, alloc_->AllocBlocks(ip.di.goal_meta, 1, format::kUsed));
          ptr = run.first;
          BufferRef in = cache_->GetNew(ptr, ip.no);
          format::WriteMeta(in->bytes(), format::kMetaIn);
          StoreBe64(pp, ptr);
          if (cur == ip.buf) {
            ip.di.blocks++;
          } else {
            cache_->MarkDirty(cur);
            ip.di.blocks++;
          }
          ip.di.goal_meta = ptr;
          cur = in;
        } else {
          if (!alloc_->PtrOk(ptr)) return BadPointer(ip, ptr);
          ASSIGN_OR_RETURN(cur, cache_->Get(ptr, ip.no));
          RETURN_IF_ERROR(CheckMetaLogged(cur->bytes(), format::kMetaIn, ptr));
        }
        base = format::kMetaHeaderSize;
        nptrs = geo_.inptrs;
      }
      uint8_t* p = cur->bytes() + base;
      uint32_t i = path.idx[h - 1];
      if (pass == 0) {  // indirect blocks only: skip to the next bottom-level pointer block
        l += std::min<uint64_t>(nptrs - i, end - l);
        continue;
      }
      bool modified = false;
      while (i < nptrs && l < end) {
        if (LoadBe64(p + i * 8) != 0) {
          i++;
          l++;
          continue;
        }
        // A run of holes in this pointer block.
        uint32_t holes = 1;
        while (i + holes < nptrs && l + holes < end && LoadBe64(p + (i + holes) * 8) == 0) holes++;
        uint64_t goal = ip.di.goal_data;
        auto got = alloc_->AllocBlocks(goal, holes, format::kUsed);
        if (!got.ok()) {
          if (modified && cur != ip.buf) cache_->MarkDirty(cur);
          return got.status();
        }
        auto run = *got;
        for (uint32_t k = 0; k < run.second; ++k) {
          StoreBe64(p + (i + k) * 8, run.first + k);
          if (jdata) {
            BufferRef jd = cache_->GetNew(run.first + k, ip.no);
            format::WriteMeta(jd->bytes(), format::kMetaJd);
          }
        }
        if (fresh) fresh->push_back({l, run.first, run.second});
        ip.di.blocks += run.second;
        ip.di.goal_data = ip.di.goal_meta = run.first + run.second - 1;
        i += run.second;
        l += run.second;
        modified = true;
      }
      if (modified && cur != ip.buf) cache_->MarkDirty(cur);
    }
  }
  WriteDinode(ip);
  return Status::Ok();
}

Status Engine::TruncateBlocks(Inode& ip, uint64_t first_free, uint64_t end_free) {
  const uint32_t h = ip.di.height;
  if (h == 0) return Status::Ok();
  FreeRuns runs(this, [this](uint64_t s, uint32_t n) { return alloc_->FreeBlocks(s, n); });
  uint64_t freed = 0;
  // Frees everything under `ptr` at level `lvl` (whose first logical block is `base`).
  std::function<Status(BufferRef, uint32_t, uint32_t, uint32_t, uint64_t, bool*)> walk;
  walk = [&](BufferRef buf, uint32_t off, uint32_t nptrs, uint32_t lvl, uint64_t base,
             bool* now_empty) -> Status {
    uint64_t span = 1;
    for (uint32_t l = lvl + 1; l < h; ++l) span = SatMul(span, geo_.inptrs);
    uint8_t* p = buf->bytes() + off;
    bool changed = false, empty = true;
    for (uint32_t i = 0; i < nptrs; ++i) {
      uint64_t ptr = LoadBe64(p + i * 8);
      if (ptr == 0) continue;
      uint64_t cbase = base + SatMul(i, span);
      uint64_t cend = cbase + span < cbase ? ~uint64_t{0} : cbase + span;
      if (cend <= first_free || cbase >= end_free) {
        empty = false;
        continue;
      }
      if (!alloc_->PtrOk(ptr)) return BadPointer(ip, ptr);
      if (lvl + 1 == h) {  // data pointer (fully inside the range: spans are 1 here)
        RETURN_IF_ERROR(runs.Add(ptr));
        freed++;
        StoreBe64(p + i * 8, 0);
        changed = true;
        continue;
      }
      ASSIGN_OR_RETURN(BufferRef child, cache_->Get(ptr, ip.no));
      RETURN_IF_ERROR(CheckMetaLogged(child->bytes(), format::kMetaIn, ptr));
      bool child_empty = false;
      RETURN_IF_ERROR(
          walk(child, format::kMetaHeaderSize, geo_.inptrs, lvl + 1, cbase, &child_empty));
      if (child_empty) {
        RETURN_IF_ERROR(runs.Add(ptr));
        freed++;
        StoreBe64(p + i * 8, 0);
        changed = true;
      } else {
        empty = false;
      }
    }
    if (changed && buf != ip.buf) cache_->MarkDirty(buf);
    *now_empty = empty;
    return Status::Ok();
  };
  bool empty = false;
  RETURN_IF_ERROR(walk(ip.buf, format::kDinodeSize, geo_.diptrs, 0, 0, &empty));
  RETURN_IF_ERROR(runs.Flush());
  ip.di.blocks -= std::min(freed, ip.di.blocks - 1);
  WriteDinode(ip);
  return Status::Ok();
}

Status Engine::FreeEattr(Inode& ip) {
  if (ip.di.eattr == 0) return Status::Ok();
  auto free_ea_block = [&](uint64_t blk) -> Status {
    if (!alloc_->PtrOk(blk)) return BadPointer(ip, blk);
    ASSIGN_OR_RETURN(BufferRef b, cache_->Get(blk, ip.no));
    RETURN_IF_ERROR(CheckMetaLogged(b->bytes(), format::kMetaEa, blk));
    const uint8_t* p = b->bytes();
    uint32_t off = format::kMetaHeaderSize;
    while (off + format::kEaHeaderSize <= geo_.bsize) {
      uint32_t rec_len = LoadBe32(p + off);
      uint8_t name_len = p[off + 8];
      uint8_t flags = p[off + 10];
      uint8_t nptrs = p[off + 11];
      if (rec_len < format::kEaHeaderSize || off + rec_len > geo_.bsize) {
        return Status::Corrupt("bad xattr record in block " + std::to_string(blk));
      }
      uint32_t poff = off + format::kEaHeaderSize + ((name_len + 7u) & ~7u);
      for (uint32_t k = 0; k < nptrs; ++k) {
        if (poff + (k + 1) * 8 > off + rec_len) return Status::Corrupt("bad xattr pointers");
        uint64_t ed = LoadBe64(p + poff + k * 8);
        if (ed != 0) {
          RETURN_IF_ERROR(alloc_->FreeBlocks(ed, 1));
          ip.di.blocks--;
        }
      }
      if (flags & 0x01) break;
      off += rec_len;
    }
    RETURN_IF_ERROR(alloc_->FreeBlocks(blk, 1));
    ip.di.blocks--;
    return Status::Ok();
  };
  if (ip.di.flags & format::kDifEaIndirect) {
    uint64_t ind = ip.di.eattr;
    if (!alloc_->PtrOk(ind)) return BadPointer(ip, ind);
    ASSIGN_OR_RETURN(BufferRef b, cache_->Get(ind, ip.no));
    RETURN_IF_ERROR(CheckMetaLogged(b->bytes(), format::kMetaIn, ind));
    std::vector<uint64_t> ptrs;
    for (uint32_t i = 0; i < geo_.inptrs; ++i) {
      uint64_t p = LoadBe64(b->bytes() + format::kMetaHeaderSize + i * 8);
      if (p) ptrs.push_back(p);
    }
    for (uint64_t p : ptrs) RETURN_IF_ERROR(free_ea_block(p));
    RETURN_IF_ERROR(alloc_->FreeBlocks(ind, 1));
    ip.di.blocks--;
  } else {
    RETURN_IF_ERROR(free_ea_block(ip.di.eattr));
  }
  ip.di.eattr = 0;
  ip.di.flags &= ~format::kDifEaIndirect;
  WriteDinode(ip);
  return Status::Ok();
}

Status Engine::Dealloc(Inode& ip) {
  if (ip.is_dir() && (ip.di.flags & format::kDifExhash)) {
    std::vector<uint64_t> leaves;
    std::unordered_set<uint64_t> seen;
    RETURN_IF_ERROR(ForEachLeaf(ip, [&](uint64_t blk) {
      if (!seen.insert(blk).second) {
        // Freeing it twice would fail half-way through: refuse before freeing anything.
        LOG_ERROR("directory " << ip.no << ": leaf " << blk << " is reached twice");
        return Status::Corrupt("directory " + std::to_string(ip.no) + " shares leaf blocks");
      }
      leaves.push_back(blk);
      return Status::Ok();
    }));
    for (uint64_t blk : leaves) {
      RETURN_IF_ERROR(alloc_->FreeBlocks(blk, 1));
      if (ip.di.blocks > 1) ip.di.blocks--;
    }
  }
  RETURN_IF_ERROR(TruncateBlocks(ip, 0));
  RETURN_IF_ERROR(FreeEattr(ip));
  if (ip.di.blocks != 1) {
    LOG_WARN("inode " << ip.no << " had " << ip.di.blocks << " blocks left at deallocation");
  }
  RETURN_IF_ERROR(alloc_->FreeDinode(ip.no));
  DropInode(ip.no);
  return Status::Ok();
}

Status Engine::ZeroDataRange(uint64_t pblk, uint32_t off, uint32_t len) {
  if (len == 0) return Status::Ok();
  RETURN_IF_ERROR(alloc_->CheckDataRun(0, pblk, 1));
  std::vector<uint8_t> zeros(len, 0);
  data_writes_++;
  return dev_->WriteAt(pblk * geo_.bsize + off, zeros.data(), len);
}

Status Engine::SetSize(Inode& ip, uint64_t size) {
  auto& di = ip.di;
  if (size > MaxFileSize()) return Status(Code::kTooBig, "file too large");
  if (size < di.size) {
    if (di.height == 0) {
      std::memset(ip.buf->bytes() + format::kDinodeSize + size, 0,
                  static_cast<size_t>(di.size - size));
    } else {
      const uint64_t bs = geo_.bsize;
      RETURN_IF_ERROR(TruncateBlocks(ip, (size + bs - 1) / bs));
      if (size % bs != 0) {
        ASSIGN_OR_RETURN(uint64_t pblk, MapBlock(ip, size / bs));
        if (pblk != 0) {
          RETURN_IF_ERROR(ZeroDataRange(pblk, static_cast<uint32_t>(size % bs),
                                        static_cast<uint32_t>(bs - size % bs)));
        }
      }
      if (size == 0) {
        std::memset(ip.buf->bytes() + format::kDinodeSize, 0, geo_.bsize - format::kDinodeSize);
        di.height = 0;
      }
    }
  } else if (size > di.size && di.height == 0 && size > geo_.max_stuffed) {
    RETURN_IF_ERROR(Unstuff(ip));
  }
  di.size = size;
  WriteDinode(ip);
  return Status::Ok();
}

Status Engine::ReadData(Inode& ip, uint64_t off, uint8_t* out, size_t len, size_t* done) {
  *done = 0;
  if (off >= ip.di.size) return Status::Ok();
  len = static_cast<size_t>(std::min<uint64_t>(len, ip.di.size - off));
  if (ip.di.height == 0) {
    if (off + len > geo_.max_stuffed) return Status::Corrupt("stuffed read beyond block");
    std::memcpy(out, ip.buf->bytes() + format::kDinodeSize + off, len);
    *done = len;
    return Status::Ok();
  }
  RETURN_IF_ERROR(WalkExtents(ip, off, len, [&](uint64_t pos, uint64_t at, uint64_t n) {
    if (at == 0) {
      std::memset(out + pos, 0, n);
      return Status::Ok();
    }
    data_reads_++;
    return dev_->ReadAt(at, out + pos, n);
  }));
  *done = len;
  return Status::Ok();
}

Status Engine::WriteData(Inode& ip, uint64_t off, const uint8_t* data, size_t len) {
  if (len == 0) return Status::Ok();
  const uint64_t end = off + len;
  if (end > MaxFileSize() || end < off) return Status(Code::kTooBig, "file too large");
  auto& di = ip.di;
  if (di.height == 0 && end <= geo_.max_stuffed) {
    std::memcpy(ip.buf->bytes() + format::kDinodeSize + off, data, len);
    if (end > di.size) di.size = end;
    WriteDinode(ip);
    return Status::Ok();
  }
  if (di.height == 0) RETURN_IF_ERROR(Unstuff(ip));
  const uint64_t bs = geo_.bsize;
  const uint64_t first = off / bs, last = (end - 1) / bs;
  std::vector<NewExtent> fresh;
  RETURN_IF_ERROR(AllocRange(ip, first, last - first + 1, false, &fresh));
  // Newly allocated blocks hold stale data: zero what this write does not cover.
  for (const auto& e : fresh) {
    uint64_t ebeg = e.lblk * bs, eend = (e.lblk + e.n) * bs;
    if (ebeg < off) {
      RETURN_IF_ERROR(ZeroDataRange(e.pblk, 0, static_cast<uint32_t>(std::min(off, eend) - ebeg)));
    }
    if (eend > end) {
      uint64_t zb = std::max(end, ebeg);
      uint64_t lb = zb / bs;
      RETURN_IF_ERROR(ZeroDataRange(e.pblk + (lb - e.lblk), static_cast<uint32_t>(zb % bs),
                                    static_cast<uint32_t>(bs - zb % bs)));
    }
  }
  RETURN_IF_ERROR(WalkExtents(ip, off, len, [&](uint64_t pos, uint64_t at, uint64_t n) {
    if (at == 0) return Status::Corrupt("block vanished during write");
    RETURN_IF_ERROR(alloc_->CheckDataRun(ip.no, at / bs, (at % bs + n + bs - 1) / bs));
    data_writes_++;
    return dev_->WriteAt(at, data + pos, n);
  }));
  if (end > di.size) di.size = end;
  WriteDinode(ip);
  return Status::Ok();
}

}  // namespace ugfs2::fs
