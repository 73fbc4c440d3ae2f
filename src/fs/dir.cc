// Directories: stuffed (linear) directories in the dinode block, and exhash directories (a hash
// table of leaf pointers, stuffed in the dinode or in JD blocks, with leaf split, table doubling
// and leaf chains at the maximum depth). The rules follow gfs2's dir.c; see
// docs/format.md section 5.
#include <algorithm>
#include <cstring>
#include <unordered_set>

#include "common/crc.h"
#include "common/endian.h"
#include "common/log.h"
#include "fs/engine.h"
#include "fs/op_scope.h"

namespace ugfs2::fs {
namespace {

bool IsSentinel(const format::Dirent& de) { return de.inum.addr == 0 || de.inum.formal_ino == 0; }

// Walks the dirents of a block from `start`. fn(offset, dirent, prev_offset, first) returns
// false to stop. Validates the record chain.
Status WalkBlock(const uint8_t* b, uint32_t bsize, uint32_t start, uint64_t blkno,
                 const std::function<bool(uint32_t, const format::Dirent&, uint32_t, bool)>& fn) {
  uint32_t off = start, prev = 0;
  bool first = true;
  while (off < bsize) {
    if (off + format::kDirentSize > bsize) break;
    format::Dirent de = format::Dirent::Decode(b + off);
    bool sentinel = first && IsSentinel(de);
    if (de.rec_len < format::kDirentSize || de.rec_len % 8 != 0 || off + de.rec_len > bsize ||
        de.name_len > format::kMaxNameLen ||
        (!sentinel && (de.name_len == 0 || de.rec_len < format::DirentSize(de.name_len)))) {
      LOG_ERROR("directory block " << blkno << ": bad dirent at offset " << off);
      return Status::Corrupt("bad dirent in directory block " + std::to_string(blkno));
    }
    if (!first && IsSentinel(de)) {
      LOG_ERROR("directory block " << blkno << ": sentinel not first at offset " << off);
      return Status::Corrupt("misplaced sentinel in directory block " + std::to_string(blkno));
    }
    if (!fn(off, de, prev, first)) return Status::Ok();
    prev = off;
    off += de.rec_len;
    first = false;
  }
  if (off != bsize) return Status::Corrupt("dirent chain does not end at block end");
  return Status::Ok();
}

std::string_view NameAt(const uint8_t* b, uint32_t off, const format::Dirent& de) {
  return {reinterpret_cast<const char*>(b + off + format::kDirentSize), de.name_len};
}

// Tries to place a new dirent in a block. Returns true if it fit.
bool InsertInBlock(uint8_t* b, uint32_t bsize, uint32_t start, std::string_view name,
                   const format::Inum& inum, uint32_t hash, uint16_t type, Status* st) {
  const uint32_t need = format::DirentSize(static_cast<uint32_t>(name.size()));
  uint32_t found = 0, actual = 0;
  bool ok = false;
  *st = WalkBlock(b, bsize, start, 0,
                  [&](uint32_t off, const format::Dirent& de, uint32_t, bool first) {
                    uint32_t a = (first && IsSentinel(de)) ? 0 : format::DirentSize(de.name_len);
                    if (de.rec_len - a >= need) {
                      found = off;
                      actual = a;
                      ok = true;
                      return false;
                    }
                    return true;
                  });
  if (!st->ok() || !ok) return false;
  format::Dirent cur = format::Dirent::Decode(b + found);
  uint32_t pos = found;
  uint16_t rec_len = cur.rec_len;
  if (actual != 0) {
    cur.rec_len = static_cast<uint16_t>(actual);
    StoreBe16(b + found + 20, cur.rec_len);
    pos = found + actual;
    rec_len = static_cast<uint16_t>(rec_len - actual);
  }
  format::Dirent nd;
  nd.inum = inum;
  nd.hash = hash;
  nd.rec_len = rec_len;
  nd.name_len = static_cast<uint16_t>(name.size());
  nd.type = type;
  nd.Encode(b + pos);
  std::memcpy(b + pos + format::kDirentSize, name.data(), name.size());
  return true;
}

struct ListEntry {
  uint32_t hash;
  std::string name;
  InodeNo ino;
  uint16_t type;
};

uint64_t CookieOf(uint32_t hash, uint32_t seq) { return (uint64_t{hash} << 24) | (seq + 1); }

Status BadLeaf(uint64_t dir, uint64_t blk, const char* what) {
  LOG_ERROR("directory " << dir << ": " << what << " (block " << blk << ")");
  return Status::Corrupt(std::string(what) + " in directory " + std::to_string(dir));
}

// One step along an lf_next chain: refuses a block seen before on this chain (a loop).
Status CheckChain(std::unordered_set<uint64_t>* seen, uint64_t dir, uint64_t blk) {
  if (seen->insert(blk).second) return Status::Ok();
  LOG_ERROR("directory " << dir << ": leaf chain loops back to block " << blk);
  return Status::Corrupt("leaf chain loop in directory " + std::to_string(dir));
}

}  // namespace

Result<uint64_t> Engine::DirTableGet(Inode& dir, uint32_t index) {
  uint64_t off = uint64_t{index} * 8;
  if (off + 8 > dir.di.size) return Status::Corrupt("hash index beyond table");
  uint64_t ptr;
  if (dir.di.height == 0) {
    ptr = LoadBe64(dir.buf->bytes() + format::kDinodeSize + off);
  } else {
    ASSIGN_OR_RETURN(uint64_t pblk, MapBlock(dir, off / geo_.jbsize));
    if (pblk == 0) return Status::Corrupt("hole in hash table of " + std::to_string(dir.no));
    ASSIGN_OR_RETURN(BufferRef b, cache_->Get(pblk, dir.no));
    RETURN_IF_ERROR(CheckMetaLogged(b->bytes(), format::kMetaJd, pblk));
    ptr = LoadBe64(b->bytes() + format::kMetaHeaderSize + off % geo_.jbsize);
  }
  if (!alloc_->PtrOk(ptr)) {
    LOG_ERROR("directory " << dir.no << ": bad leaf pointer " << ptr << " at index " << index);
    return Status::Corrupt("bad leaf pointer in directory " + std::to_string(dir.no));
  }
  return ptr;
}

Status Engine::DirTableRead(Inode& dir, std::vector<uint64_t>* table) {
  uint64_t n = dir.di.size / 8;
  table->resize(n);
  if (dir.di.height == 0) {
    for (uint64_t i = 0; i < n; ++i) {
      (*table)[i] = LoadBe64(dir.buf->bytes() + format::kDinodeSize + i * 8);
    }
    return Status::Ok();
  }
  const uint32_t per = geo_.jbsize / 8;
  for (uint64_t i = 0; i < n; i += per) {
    ASSIGN_OR_RETURN(uint64_t pblk, MapBlock(dir, i / per));
    if (pblk == 0) return Status::Corrupt("hole in hash table of " + std::to_string(dir.no));
    ASSIGN_OR_RETURN(BufferRef b, cache_->Get(pblk, dir.no));
    RETURN_IF_ERROR(CheckMetaLogged(b->bytes(), format::kMetaJd, pblk));
    for (uint64_t k = 0; k < per && i + k < n; ++k) {
      (*table)[i + k] = LoadBe64(b->bytes() + format::kMetaHeaderSize + k * 8);
    }
  }
  return Status::Ok();
}

Status Engine::DirTableWrite(Inode& dir, const std::vector<uint64_t>& table) {
  const uint64_t bytes = table.size() * 8;
  uint8_t* area = dir.buf->bytes() + format::kDinodeSize;
  if (dir.di.height == 0 && bytes <= geo_.max_stuffed) {
    for (size_t i = 0; i < table.size(); ++i) StoreBe64(area + i * 8, table[i]);
    WriteDinode(dir);
    return Status::Ok();
  }
  if (dir.di.height == 0) {
    // The stuffed table moves into JD blocks: the pointer area becomes an empty tree.
    std::memset(area, 0, geo_.bsize - format::kDinodeSize);
    dir.di.height = 1;
  }
  const uint32_t per = geo_.jbsize / 8;
  uint64_t nblocks = (table.size() + per - 1) / per;
  RETURN_IF_ERROR(AllocRange(dir, 0, nblocks, true, nullptr));
  for (uint64_t blk = 0; blk < nblocks; ++blk) {
    ASSIGN_OR_RETURN(uint64_t pblk, MapBlock(dir, blk));
    ASSIGN_OR_RETURN(BufferRef b, cache_->Get(pblk, dir.no));
    uint8_t* p = b->bytes() + format::kMetaHeaderSize;
    std::memset(p, 0, geo_.jbsize);
    for (uint64_t k = 0; k < per && blk * per + k < table.size(); ++k) {
      StoreBe64(p + k * 8, table[blk * per + k]);
    }
    cache_->MarkDirty(b);
  }
  WriteDinode(dir);
  return Status::Ok();
}

Result<BufferRef> Engine::NewLeaf(Inode& dir, uint16_t depth, uint64_t goal) {
  ASSIGN_OR_RETURN(auto run, alloc_->AllocBlocks(goal, 1, format::kUsed));
  BufferRef b = cache_->GetNew(run.first, dir.no);
  format::Leaf lf;
  lf.depth = depth;
  lf.inode = dir.no;
  Timespec now = Now();
  lf.sec = static_cast<uint64_t>(now.sec);
  lf.nsec = now.nsec;
  lf.Encode(b->bytes());
  format::Dirent sentinel;
  sentinel.rec_len = static_cast<uint16_t>(geo_.bsize - format::kLeafSize);
  sentinel.Encode(b->bytes() + format::kLeafSize);
  dir.di.blocks++;
  return b;
}

Status Engine::WalkLeafChains(
    Inode& dir, uint64_t first_index,
    const std::function<Result<bool>(const std::vector<BufferRef>&)>& fn) {
  std::vector<uint64_t> table;
  RETURN_IF_ERROR(DirTableRead(dir, &table));
  uint64_t i = first_index;
  std::vector<BufferRef> chain;
  while (i < table.size()) {
    uint64_t blk = table[i];
    if (!alloc_->PtrOk(blk)) return BadLeaf(dir.no, blk, "bad leaf pointer");
    ASSIGN_OR_RETURN(BufferRef b, cache_->Get(blk, dir.no));
    RETURN_IF_ERROR(CheckMetaLogged(b->bytes(), format::kMetaLf, blk));
    format::Leaf lf = format::Leaf::Decode(b->bytes());
    if (lf.depth > dir.di.depth) return BadLeaf(dir.no, blk, "leaf deeper than its table");
    uint64_t span = uint64_t{1} << (dir.di.depth - lf.depth);
    chain.clear();
    RETURN_IF_ERROR(WalkChain(dir, blk, [&](const BufferRef& cb) -> Result<bool> {
      chain.push_back(cb);
      return true;
    }));
    ASSIGN_OR_RETURN(bool more, fn(chain));
    if (!more) return Status::Ok();
    i = (i / span + 1) * span;  // the next leaf's first slot
  }
  return Status::Ok();
}

Status Engine::WalkChain(Inode& dir, uint64_t head,
                         const std::function<Result<bool>(const BufferRef&)>& fn) {
  std::unordered_set<uint64_t> seen;
  for (uint64_t cur = head; cur != 0;) {
    if (!alloc_->PtrOk(cur)) return BadLeaf(dir.no, cur, "bad leaf chain pointer");
    RETURN_IF_ERROR(CheckChain(&seen, dir.no, cur));
    ASSIGN_OR_RETURN(BufferRef b, cache_->Get(cur, dir.no));
    RETURN_IF_ERROR(CheckMetaLogged(b->bytes(), format::kMetaLf, cur));
    ASSIGN_OR_RETURN(bool more, fn(b));
    if (!more) return Status::Ok();
    cur = format::Leaf::Decode(b->bytes()).next;
  }
  return Status::Ok();
}

Status Engine::ForEachLeaf(Inode& dir, const std::function<Status(uint64_t)>& fn) {
  return WalkLeafChains(dir, 0, [&](const std::vector<BufferRef>& chain) -> Result<bool> {
    for (const auto& b : chain) RETURN_IF_ERROR(fn(b->blkno));
    return true;
  });
}

Result<DirentLoc> Engine::DirFind(Inode& dir, std::string_view name, uint32_t hash) {
  auto scan = [&](BufferRef b, uint32_t start, uint64_t leaf_blk, DirentLoc* out) -> Result<bool> {
    bool found = false;
    RETURN_IF_ERROR(
        WalkBlock(b->bytes(), geo_.bsize, start, b->blkno,
                  [&](uint32_t off, const format::Dirent& de, uint32_t prev, bool first) {
                    if (first && IsSentinel(de)) return true;
                    if (de.hash == hash && NameAt(b->bytes(), off, de) == name) {
                      out->buf = b;
                      out->offset = off;
                      out->prev_offset = prev;
                      out->first = first;
                      out->block_start = start;
                      out->de = de;
                      out->leaf_blk = leaf_blk;
                      found = true;
                      return false;
                    }
                    return true;
                  }));
    return found;
  };
  DirentLoc loc;
  if (!(dir.di.flags & format::kDifExhash)) {
    ASSIGN_OR_RETURN(bool found, scan(dir.buf, format::kDinodeSize, 0, &loc));
    if (found) return loc;
    return Status::NotFound(std::string(name));
  }
  uint32_t idx = dir.di.depth == 0 ? 0 : hash >> (32 - dir.di.depth);
  ASSIGN_OR_RETURN(uint64_t head, DirTableGet(dir, idx));
  bool found = false;
  RETURN_IF_ERROR(WalkChain(dir, head, [&](const BufferRef& b) -> Result<bool> {
    ASSIGN_OR_RETURN(found, scan(b, format::kLeafSize, b->blkno, &loc));
    return !found;
  }));
  if (found) return loc;
  return Status::NotFound(std::string(name));
}

Status Engine::DirInit(Inode& dir, const format::Inum& self, const format::Inum& parent) {
  uint8_t* b = dir.buf->bytes();
  std::memset(b + format::kDinodeSize, 0, geo_.bsize - format::kDinodeSize);
  format::Dirent dot;
  dot.inum = self;
  dot.hash = Gfs2DirentHash(".", 1);
  dot.rec_len = static_cast<uint16_t>(format::DirentSize(1));
  dot.name_len = 1;
  dot.type = 4;  // DT_DIR
  dot.Encode(b + format::kDinodeSize);
  b[format::kDinodeSize + format::kDirentSize] = '.';
  uint32_t off2 = format::kDinodeSize + dot.rec_len;
  format::Dirent dotdot;
  dotdot.inum = parent;
  dotdot.hash = Gfs2DirentHash("..", 2);
  dotdot.rec_len = static_cast<uint16_t>(geo_.bsize - off2);
  dotdot.name_len = 2;
  dotdot.type = 4;
  dotdot.Encode(b + off2);
  b[off2 + format::kDirentSize] = '.';
  b[off2 + format::kDirentSize + 1] = '.';
  dir.di.entries = 2;
  dir.di.size = geo_.bsize - format::kDinodeSize;
  dir.di.payload_format = format::kFormatDe;
  dir.di.flags |= format::kDifJdata;
  WriteDinode(dir);
  return Status::Ok();
}

Status Engine::DirConvertToExhash(Inode& dir) {
  ASSIGN_OR_RETURN(BufferRef leaf, NewLeaf(dir, 0, dir.no));
  uint8_t* lb = leaf->bytes();
  format::Leaf lf = format::Leaf::Decode(lb);
  lf.entries = static_cast<uint16_t>(dir.di.entries);
  lf.Encode(lb);
  const uint32_t len = geo_.bsize - format::kDinodeSize;
  std::memcpy(lb + format::kLeafSize, dir.buf->bytes() + format::kDinodeSize, len);
  // The last dirent absorbs the 128 extra bytes of the leaf.
  uint32_t last = 0;
  RETURN_IF_ERROR(WalkBlock(lb, geo_.bsize - (format::kDinodeSize - format::kLeafSize),
                            format::kLeafSize, leaf->blkno,
                            [&](uint32_t off, const format::Dirent&, uint32_t, bool) {
                              last = off;
                              return true;
                            }));
  uint16_t rl = LoadBe16(lb + last + 20);
  StoreBe16(lb + last + 20, static_cast<uint16_t>(rl + format::kDinodeSize - format::kLeafSize));
  cache_->MarkDirty(leaf);
  uint8_t* area = dir.buf->bytes() + format::kDinodeSize;
  std::memset(area, 0, len);
  for (uint32_t i = 0; i < geo_.hash_ptrs; ++i) StoreBe64(area + i * 8, leaf->blkno);
  dir.di.size = uint64_t{geo_.hash_ptrs} * 8;
  uint16_t depth = 0;
  while ((1u << depth) < geo_.hash_ptrs) depth++;
  dir.di.depth = depth;
  dir.di.flags |= format::kDifExhash;
  dir.di.payload_format = 0;
  WriteDinode(dir);
  return Status::Ok();
}

Status Engine::DirDouble(Inode& dir) {
  std::vector<uint64_t> table;
  RETURN_IF_ERROR(DirTableRead(dir, &table));
  std::vector<uint64_t> doubled(table.size() * 2);
  for (size_t i = 0; i < table.size(); ++i) doubled[2 * i] = doubled[2 * i + 1] = table[i];
  dir.di.depth++;
  dir.di.size *= 2;
  return DirTableWrite(dir, doubled);
}

Status Engine::DirSplitLeaf(Inode& dir, uint32_t index, uint64_t leaf_blk) {
  ASSIGN_OR_RETURN(BufferRef ob, cache_->Get(leaf_blk, dir.no));
  format::Leaf olf = format::Leaf::Decode(ob->bytes());
  const uint32_t len = 1u << (dir.di.depth - olf.depth);
  const uint32_t half = len / 2;
  const uint32_t start = index & ~(len - 1);
  std::vector<uint64_t> table;
  RETURN_IF_ERROR(DirTableRead(dir, &table));
  for (uint64_t i = start; i < uint64_t{start} + len; ++i) {
    if (i >= table.size() || table[i] != leaf_blk) {
      // lf_depth disagrees with the table: splitting would orphan another leaf.
      return BadLeaf(dir.no, leaf_blk, "leaf depth disagrees with the hash table");
    }
  }
  ASSIGN_OR_RETURN(BufferRef nb, NewLeaf(dir, static_cast<uint16_t>(olf.depth + 1), leaf_blk));
  // Point the lower half of the old leaf's slots at the new leaf.
  for (uint32_t i = start; i < start + half; ++i) table[i] = nb->blkno;
  RETURN_IF_ERROR(DirTableWrite(dir, table));
  const uint64_t divider = uint64_t{start + half} << (32 - dir.di.depth);
  // Move entries below the divider.
  struct Move {
    uint32_t off, prev;
    bool first;
  };
  std::vector<Move> moves;
  RETURN_IF_ERROR(WalkBlock(ob->bytes(), geo_.bsize, format::kLeafSize, leaf_blk,
                            [&](uint32_t off, const format::Dirent& de, uint32_t prev, bool first) {
                              if (first && IsSentinel(de)) return true;
                              if (de.hash < divider) moves.push_back({off, prev, first});
                              return true;
                            }));
  format::Leaf nlf = format::Leaf::Decode(nb->bytes());
  for (const auto& m : moves) {
    format::Dirent de = format::Dirent::Decode(ob->bytes() + m.off);
    std::string_view name = NameAt(ob->bytes(), m.off, de);
    Status st;
    if (!InsertInBlock(nb->bytes(), geo_.bsize, format::kLeafSize, name, de.inum, de.hash, de.type,
                       &st)) {
      return st.ok() ? Status::Corrupt("leaf split overflow") : st;
    }
    nlf.entries++;
  }
  // Delete moved entries from the old leaf, last first so earlier offsets stay valid.
  for (auto it = moves.rbegin(); it != moves.rend(); ++it) {
    uint8_t* b = ob->bytes();
    if (it->first) {
      std::memset(b + it->off, 0, 16);  // becomes the sentinel
    } else {
      // The predecessor may itself have been merged already: find the live predecessor.
      uint32_t prev = 0;
      RETURN_IF_ERROR(WalkBlock(b, geo_.bsize, format::kLeafSize, leaf_blk,
                                [&](uint32_t off, const format::Dirent& de, uint32_t p, bool) {
                                  if (off == it->off) {
                                    prev = p;
                                    return false;
                                  }
                                  return true;
                                }));
      uint16_t prl = LoadBe16(b + prev + 20);
      uint16_t crl = LoadBe16(b + it->off + 20);
      StoreBe16(b + prev + 20, static_cast<uint16_t>(prl + crl));
    }
    olf.entries--;
  }
  olf.depth++;
  olf.Encode(ob->bytes());
  nlf.Encode(nb->bytes());
  cache_->MarkDirty(ob);
  cache_->MarkDirty(nb);
  WriteDinode(dir);
  return Status::Ok();
}

Status Engine::DirAdd(Inode& dir, std::string_view name, const format::Inum& inum, uint16_t type) {
  const uint32_t hash = Gfs2DirentHash(name.data(), name.size());
  Status st;
  if (!(dir.di.flags & format::kDifExhash)) {
    if (InsertInBlock(dir.buf->bytes(), geo_.bsize, format::kDinodeSize, name, inum, hash, type,
                      &st)) {
      dir.di.entries++;
      WriteDinode(dir);
      return Status::Ok();
    }
    RETURN_IF_ERROR(st);
    RETURN_IF_ERROR(DirConvertToExhash(dir));
  }
  for (int attempt = 0; attempt < 64; ++attempt) {
    uint32_t idx = dir.di.depth == 0 ? 0 : hash >> (32 - dir.di.depth);
    ASSIGN_OR_RETURN(uint64_t head, DirTableGet(dir, idx));
    uint64_t last = head;
    bool inserted = false;
    RETURN_IF_ERROR(WalkChain(dir, head, [&](const BufferRef& b) -> Result<bool> {
      if (InsertInBlock(b->bytes(), geo_.bsize, format::kLeafSize, name, inum, hash, type, &st)) {
        format::Leaf lf = format::Leaf::Decode(b->bytes());
        lf.entries++;
        Timespec now = Now();
        lf.sec = static_cast<uint64_t>(now.sec);
        lf.nsec = now.nsec;
        lf.Encode(b->bytes());
        cache_->MarkDirty(b);
        inserted = true;
        return false;
      }
      RETURN_IF_ERROR(st);
      last = b->blkno;
      return true;
    }));
    if (inserted) {
      dir.di.entries++;
      WriteDinode(dir);
      return Status::Ok();
    }
    ASSIGN_OR_RETURN(BufferRef hb, cache_->Get(head, dir.no));
    format::Leaf hlf = format::Leaf::Decode(hb->bytes());
    if (hlf.depth < dir.di.depth) {
      RETURN_IF_ERROR(DirSplitLeaf(dir, idx, head));
    } else if (dir.di.depth < format::kMaxDirDepth) {
      RETURN_IF_ERROR(DirDouble(dir));
    } else {
      ASSIGN_OR_RETURN(BufferRef nb, NewLeaf(dir, hlf.depth, last));
      ASSIGN_OR_RETURN(BufferRef lb, cache_->Get(last, dir.no));
      format::Leaf llf = format::Leaf::Decode(lb->bytes());
      llf.next = nb->blkno;
      llf.Encode(lb->bytes());
      cache_->MarkDirty(lb);
      cache_->MarkDirty(nb);
      WriteDinode(dir);
    }
  }
  return Status::Corrupt("directory insert did not converge");
}

Status Engine::DirRemove(Inode& dir, std::string_view name) {
  const uint32_t hash = Gfs2DirentHash(name.data(), name.size());
  ASSIGN_OR_RETURN(DirentLoc loc, DirFind(dir, name, hash));
  uint8_t* b = loc.buf->bytes();
  if (loc.first) {
    std::memset(b + loc.offset, 0, 16);  // de_inum = 0: a sentinel keeping its rec_len
  } else {
    uint16_t prl = LoadBe16(b + loc.prev_offset + 20);
    StoreBe16(b + loc.prev_offset + 20, static_cast<uint16_t>(prl + loc.de.rec_len));
  }
  if (loc.leaf_blk != 0) {
    format::Leaf lf = format::Leaf::Decode(b);
    if (lf.entries > 0) lf.entries--;
    Timespec now = Now();
    lf.sec = static_cast<uint64_t>(now.sec);
    lf.nsec = now.nsec;
    lf.Encode(b);
    cache_->MarkDirty(loc.buf);
  }
  if (dir.di.entries > 0) dir.di.entries--;
  WriteDinode(dir);
  return Status::Ok();
}

Status Engine::DirRetarget(Inode& dir, std::string_view name, const format::Inum& inum,
                           uint16_t type) {
  const uint32_t hash = Gfs2DirentHash(name.data(), name.size());
  ASSIGN_OR_RETURN(DirentLoc loc, DirFind(dir, name, hash));
  uint8_t* b = loc.buf->bytes();
  inum.Encode(b + loc.offset);
  StoreBe16(b + loc.offset + 24, type);
  if (loc.leaf_blk != 0) {
    cache_->MarkDirty(loc.buf);
  } else {
    WriteDinode(dir);
  }
  return Status::Ok();
}

Status Engine::DirList(Inode& dir, uint64_t cookie,
                       const std::function<bool(const DirEntry&)>& emit) {
  std::vector<ListEntry> ents;
  auto collect = [&](BufferRef b, uint32_t start) -> Status {
    return WalkBlock(b->bytes(), geo_.bsize, start, b->blkno,
                     [&](uint32_t off, const format::Dirent& de, uint32_t, bool first) {
                       if (first && IsSentinel(de)) return true;
                       ents.push_back({de.hash, std::string(NameAt(b->bytes(), off, de)),
                                       de.inum.addr, de.type});
                       return true;
                     });
  };
  // Emits the collected entries in (hash, name) order after `cookie`. Returns false to stop.
  auto flush = [&]() -> bool {
    std::sort(ents.begin(), ents.end(), [](const ListEntry& a, const ListEntry& b) {
      return a.hash != b.hash ? a.hash < b.hash : a.name < b.name;
    });
    uint32_t seq = 0;
    for (size_t i = 0; i < ents.size(); ++i) {
      seq = (i > 0 && ents[i].hash == ents[i - 1].hash) ? seq + 1 : 0;
      uint64_t c = CookieOf(ents[i].hash, seq);
      if (c <= cookie) continue;
      DirEntry e{std::move(ents[i].name), ents[i].ino, ents[i].type, c};
      if (!emit(e)) return false;
    }
    ents.clear();
    return true;
  };
  if (!(dir.di.flags & format::kDifExhash)) {
    RETURN_IF_ERROR(collect(dir.buf, format::kDinodeSize));
    flush();
    return Status::Ok();
  }
  const uint32_t start_hash = static_cast<uint32_t>(cookie >> 24);
  uint64_t first = dir.di.depth == 0 ? 0 : start_hash >> (32 - dir.di.depth);
  return WalkLeafChains(dir, first, [&](const std::vector<BufferRef>& chain) -> Result<bool> {
    for (const auto& b : chain) RETURN_IF_ERROR(collect(b, format::kLeafSize));
    return flush();
  });
}

Result<InodeRef> Engine::LookupChild(Inode& dir, std::string_view name, DirentLoc* loc) {
  return FindChild(nullptr, dir, name, glock::State::kShared, loc);
}

Result<InodeRef> Engine::FindChild(OpScope* s, Inode& dir, std::string_view name,
                                   glock::State state, DirentLoc* loc) {
  if (!dir.is_dir()) return Status::NotDir("not a directory");
  if (name.size() > format::kMaxNameLen) return Status::NameTooLong(std::string(name));
  const uint32_t hash = Gfs2DirentHash(name.data(), name.size());
  ASSIGN_OR_RETURN(DirentLoc l, DirFind(dir, name, hash));
  if (s != nullptr) RETURN_IF_ERROR(s->LockInode(l.de.inum.addr, state));
  ASSIGN_OR_RETURN(InodeRef ip, GetInode(l.de.inum.addr));
  if (ip->di.num.formal_ino != l.de.inum.formal_ino) {
    LOG_ERROR("directory " << dir.no << " entry '" << name << "' points to a stale inode");
    return Status::Corrupt("stale directory entry");
  }
  if (loc) *loc = l;
  return ip;
}

}  // namespace ugfs2::fs
