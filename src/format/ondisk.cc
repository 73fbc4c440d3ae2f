#include "format/ondisk.h"

#include <cstring>

#include "common/crc.h"
#include "common/endian.h"

namespace ugfs2::format {

MetaHeader MetaHeader::Decode(const uint8_t* p) {
  return {LoadBe32(p), LoadBe32(p + 4), LoadBe32(p + 16), LoadBe32(p + 20)};
}

void MetaHeader::Encode(uint8_t* p) const {
  StoreBe32(p, magic);
  StoreBe32(p + 4, type);
  StoreBe64(p + 8, 0);
  StoreBe32(p + 16, format);
  StoreBe32(p + 20, jid);
}

Status CheckMeta(const uint8_t* p, uint32_t type, uint64_t blkno) {
  if (LoadBe32(p) != kMagic || LoadBe32(p + 4) != type) {
    return Status::Corrupt("block " + std::to_string(blkno) + ": expected " + MetaTypeName(type) +
                           " metadata, found magic " + std::to_string(LoadBe32(p)) + " type " +
                           std::to_string(LoadBe32(p + 4)));
  }
  return Status::Ok();
}

void WriteMeta(uint8_t* p, uint32_t type) { MetaHeader::For(type).Encode(p); }

uint32_t MetaTypeOf(const uint8_t* p) { return LoadBe32(p) == kMagic ? LoadBe32(p + 4) : 0; }

Inum Inum::Decode(const uint8_t* p) { return {LoadBe64(p), LoadBe64(p + 8)}; }
void Inum::Encode(uint8_t* p) const {
  StoreBe64(p, formal_ino);
  StoreBe64(p + 8, addr);
}

namespace {
std::string FixedString(const uint8_t* p, size_t n) {
  size_t len = 0;
  while (len < n && p[len] != 0) len++;
  return std::string(reinterpret_cast<const char*>(p), len);
}
void PutFixedString(uint8_t* p, size_t n, const std::string& s) {
  std::memset(p, 0, n);
  std::memcpy(p, s.data(), std::min(s.size(), n - 1));
}
}  // namespace

Result<Superblock> Superblock::Decode(const uint8_t* p) {
  if (LoadBe32(p) != kMagic) return Status::Invalid("no GFS2 superblock (bad magic)");
  if (LoadBe32(p + 4) != kMetaSb) return Status::Invalid("no GFS2 superblock (wrong type)");
  Superblock sb;
  sb.fs_format = LoadBe32(p + 24);
  sb.multihost_format = LoadBe32(p + 28);
  sb.bsize = LoadBe32(p + 36);
  sb.bsize_shift = LoadBe32(p + 40);
  sb.master_dir = Inum::Decode(p + 48);
  sb.root_dir = Inum::Decode(p + 80);
  sb.lockproto = FixedString(p + 96, 64);
  sb.locktable = FixedString(p + 160, 64);
  std::memcpy(sb.uuid, p + 256, 16);
  if (sb.fs_format != kFsFormat && sb.fs_format != kFsFormatMin) {
    return Status::Invalid("unsupported GFS2 fs format " + std::to_string(sb.fs_format) +
                           " (GFS1 or damaged?)");
  }
  if (sb.multihost_format != kMultihostFormat) {
    return Status::Invalid("unsupported multihost format " + std::to_string(sb.multihost_format));
  }
  if (sb.bsize < 512 || sb.bsize > 65536 || (sb.bsize & (sb.bsize - 1)) != 0 ||
      sb.bsize_shift > 16 || (1u << sb.bsize_shift) != sb.bsize) {
    return Status::Invalid("bad block size " + std::to_string(sb.bsize));
  }
  return sb;
}

void Superblock::Encode(uint8_t* p) const {
  std::memset(p, 0, kSbSize);
  MetaHeader::For(kMetaSb).Encode(p);
  StoreBe32(p + 24, fs_format);
  StoreBe32(p + 28, multihost_format);
  StoreBe32(p + 36, bsize);
  StoreBe32(p + 40, bsize_shift);
  master_dir.Encode(p + 48);
  root_dir.Encode(p + 80);
  PutFixedString(p + 96, 64, lockproto);
  PutFixedString(p + 160, 64, locktable);
  std::memcpy(p + 256, uuid, 16);
}

Rindex Rindex::Decode(const uint8_t* p) {
  return {LoadBe64(p), LoadBe32(p + 8), LoadBe64(p + 16), LoadBe32(p + 24), LoadBe32(p + 28)};
}
void Rindex::Encode(uint8_t* p) const {
  std::memset(p, 0, kRindexSize);
  StoreBe64(p, addr);
  StoreBe32(p + 8, length);
  StoreBe64(p + 16, data0);
  StoreBe32(p + 24, data);
  StoreBe32(p + 28, bitbytes);
}

Rgrp Rgrp::Decode(const uint8_t* p) {
  Rgrp r;
  r.flags = LoadBe32(p + 24);
  r.free = LoadBe32(p + 28);
  r.dinodes = LoadBe32(p + 32);
  r.skip = LoadBe32(p + 36);
  r.igeneration = LoadBe64(p + 40);
  r.data0 = LoadBe64(p + 48);
  r.data = LoadBe32(p + 56);
  r.bitbytes = LoadBe32(p + 60);
  r.crc = LoadBe32(p + 64);
  return r;
}

void Rgrp::Encode(uint8_t* p) const {
  std::memset(p, 0, kRgrpSize);
  MetaHeader::For(kMetaRg).Encode(p);
  StoreBe32(p + 24, flags);
  StoreBe32(p + 28, free);
  StoreBe32(p + 32, dinodes);
  StoreBe32(p + 36, skip);
  StoreBe64(p + 40, igeneration);
  StoreBe64(p + 48, data0);
  StoreBe32(p + 56, data);
  StoreBe32(p + 60, bitbytes);
  StoreBe32(p + 64, 0);
  StoreBe32(p + 64, Crc32(p, kRgrpSize));
}

RgrpLvb RgrpLvb::Decode(const uint8_t* p) {
  RgrpLvb v;
  v.magic = LoadBe32(p);
  v.flags = LoadBe32(p + 4);
  v.free = LoadBe32(p + 8);
  v.dinodes = LoadBe32(p + 12);
  v.igeneration = LoadBe64(p + 16);
  v.unlinked = LoadBe32(p + 24);
  return v;
}

void RgrpLvb::Encode(uint8_t* p) const {
  std::memset(p, 0, kSize);
  StoreBe32(p, magic);
  StoreBe32(p + 4, flags);
  StoreBe32(p + 8, free);
  StoreBe32(p + 12, dinodes);
  StoreBe64(p + 16, igeneration);
  StoreBe32(p + 24, unlinked);
}

RgrpLvb RgrpLvb::For(const Rgrp& hdr, uint32_t unlinked) {
  RgrpLvb v;
  v.magic = kMagic;
  v.flags = hdr.flags;
  v.free = hdr.free;
  v.dinodes = hdr.dinodes;
  v.igeneration = hdr.igeneration;
  v.unlinked = unlinked;
  return v;
}

bool RgrpLvb::Matches(const Rgrp& hdr) const {
  return flags == hdr.flags && free == hdr.free && dinodes == hdr.dinodes &&
         igeneration == hdr.igeneration;
}

bool Rgrp::CrcOk(const uint8_t* p) {
  uint32_t stored = LoadBe32(p + 64);
  if (stored == 0) return true;
  uint8_t tmp[kRgrpSize];
  std::memcpy(tmp, p, kRgrpSize);
  StoreBe32(tmp + 64, 0);
  return Crc32(tmp, kRgrpSize) == stored;
}

Dinode Dinode::Decode(const uint8_t* p) {
  Dinode d;
  d.num = Inum::Decode(p + 24);
  d.mode = LoadBe32(p + 40);
  d.uid = LoadBe32(p + 44);
  d.gid = LoadBe32(p + 48);
  d.nlink = LoadBe32(p + 52);
  d.size = LoadBe64(p + 56);
  d.blocks = LoadBe64(p + 64);
  d.atime = LoadBe64(p + 72);
  d.mtime = LoadBe64(p + 80);
  d.ctime = LoadBe64(p + 88);
  d.major = LoadBe32(p + 96);
  d.minor = LoadBe32(p + 100);
  d.goal_meta = LoadBe64(p + 104);
  d.goal_data = LoadBe64(p + 112);
  d.generation = LoadBe64(p + 120);
  d.flags = LoadBe32(p + 128);
  d.payload_format = LoadBe32(p + 132);
  d.height = LoadBe16(p + 138);
  d.depth = LoadBe16(p + 146);
  d.entries = LoadBe32(p + 148);
  d.eattr = LoadBe64(p + 168);
  d.atime_nsec = LoadBe32(p + 176);
  d.mtime_nsec = LoadBe32(p + 180);
  d.ctime_nsec = LoadBe32(p + 184);
  return d;
}

void Dinode::Encode(uint8_t* p) const {
  std::memset(p, 0, kDinodeSize);
  MetaHeader::For(kMetaDi).Encode(p);
  num.Encode(p + 24);
  StoreBe32(p + 40, mode);
  StoreBe32(p + 44, uid);
  StoreBe32(p + 48, gid);
  StoreBe32(p + 52, nlink);
  StoreBe64(p + 56, size);
  StoreBe64(p + 64, blocks);
  StoreBe64(p + 72, atime);
  StoreBe64(p + 80, mtime);
  StoreBe64(p + 88, ctime);
  StoreBe32(p + 96, major);
  StoreBe32(p + 100, minor);
  StoreBe64(p + 104, goal_meta);
  StoreBe64(p + 112, goal_data);
  StoreBe64(p + 120, generation);
  StoreBe32(p + 128, flags);
  StoreBe32(p + 132, payload_format);
  StoreBe16(p + 138, height);
  StoreBe16(p + 146, depth);
  StoreBe32(p + 148, entries);
  StoreBe64(p + 168, eattr);
  StoreBe32(p + 176, atime_nsec);
  StoreBe32(p + 180, mtime_nsec);
  StoreBe32(p + 184, ctime_nsec);
}

Leaf Leaf::Decode(const uint8_t* p) {
  Leaf l;
  l.depth = LoadBe16(p + 24);
  l.entries = LoadBe16(p + 26);
  l.dirent_format = LoadBe32(p + 28);
  l.next = LoadBe64(p + 32);
  l.inode = LoadBe64(p + 40);
  l.dist = LoadBe32(p + 48);
  l.nsec = LoadBe32(p + 52);
  l.sec = LoadBe64(p + 56);
  return l;
}

void Leaf::Encode(uint8_t* p) const {
  std::memset(p, 0, kLeafSize);
  MetaHeader::For(kMetaLf).Encode(p);
  StoreBe16(p + 24, depth);
  StoreBe16(p + 26, entries);
  StoreBe32(p + 28, dirent_format);
  StoreBe64(p + 32, next);
  StoreBe64(p + 40, inode);
  StoreBe32(p + 48, dist);
  StoreBe32(p + 52, nsec);
  StoreBe64(p + 56, sec);
}

Dirent Dirent::Decode(const uint8_t* p) {
  Dirent d;
  d.inum = Inum::Decode(p);
  d.hash = LoadBe32(p + 16);
  d.rec_len = LoadBe16(p + 20);
  d.name_len = LoadBe16(p + 22);
  d.type = LoadBe16(p + 24);
  d.rahead = LoadBe16(p + 26);
  return d;
}

void Dirent::Encode(uint8_t* p) const {
  std::memset(p, 0, kDirentSize);
  inum.Encode(p);
  StoreBe32(p + 16, hash);
  StoreBe16(p + 20, rec_len);
  StoreBe16(p + 22, name_len);
  StoreBe16(p + 24, type);
  StoreBe16(p + 26, rahead);
}

LogHeader LogHeader::Decode(const uint8_t* p) {
  LogHeader h;
  h.jid = LoadBe32(p + 20);
  h.sequence = LoadBe64(p + 24);
  h.flags = LoadBe32(p + 32);
  h.tail = LoadBe32(p + 36);
  h.blkno = LoadBe32(p + 40);
  h.hash = LoadBe32(p + 44);
  h.crc = LoadBe32(p + 48);
  h.nsec = LoadBe32(p + 52);
  h.sec = LoadBe64(p + 56);
  h.addr = LoadBe64(p + 64);
  h.jinode = LoadBe64(p + 72);
  h.statfs_addr = LoadBe64(p + 80);
  h.quota_addr = LoadBe64(p + 88);
  h.local_total = static_cast<int64_t>(LoadBe64(p + 96));
  h.local_free = static_cast<int64_t>(LoadBe64(p + 104));
  h.local_dinodes = static_cast<int64_t>(LoadBe64(p + 112));
  return h;
}

void LogHeader::EncodeBlock(uint8_t* b, uint32_t bsize) const {
  std::memset(b, 0, bsize);
  MetaHeader mh = MetaHeader::For(kMetaLh);
  mh.jid = jid;
  mh.Encode(b);
  StoreBe64(b + 24, sequence);
  StoreBe32(b + 32, flags);
  StoreBe32(b + 36, tail);
  StoreBe32(b + 40, blkno);
  // v1 hash over bytes 0..47 with hash and crc zero.
  StoreBe32(b + 44, Crc32(b, 48));
  StoreBe32(b + 52, nsec);
  StoreBe64(b + 56, sec);
  StoreBe64(b + 64, addr);
  StoreBe64(b + 72, jinode);
  StoreBe64(b + 80, statfs_addr);
  StoreBe64(b + 88, quota_addr);
  StoreBe64(b + 96, static_cast<uint64_t>(local_total));
  StoreBe64(b + 104, static_cast<uint64_t>(local_free));
  StoreBe64(b + 112, static_cast<uint64_t>(local_dinodes));
  // v2 crc32c over bytes 52..bsize-1, no final inversion.
  StoreBe32(b + 48, Crc32cUpdate(0xFFFFFFFFu, b + 52, bsize - 52));
}

bool LogHeader::Valid(const uint8_t* b, uint32_t bsize) {
  if (LoadBe32(b) != kMagic || LoadBe32(b + 4) != kMetaLh) return false;
  uint8_t tmp[48];
  std::memcpy(tmp, b, 48);
  StoreBe32(tmp + 44, 0);
  if (Crc32(tmp, 48) != LoadBe32(b + 44)) return false;
  uint32_t crc = LoadBe32(b + 48);
  if (crc != 0 && Crc32cUpdate(0xFFFFFFFFu, b + 52, bsize - 52) != crc) return false;
  return true;
}

LogDescriptor LogDescriptor::Decode(const uint8_t* p) {
  return {LoadBe32(p + 24), LoadBe32(p + 28), LoadBe32(p + 32), LoadBe32(p + 36)};
}

void LogDescriptor::Encode(uint8_t* p) const {
  std::memset(p, 0, kLogDescSize);
  MetaHeader::For(kMetaLd).Encode(p);
  StoreBe32(p + 24, type);
  StoreBe32(p + 28, length);
  StoreBe32(p + 32, data1);
  StoreBe32(p + 36, data2);
}

StatfsChange StatfsChange::Decode(const uint8_t* p) {
  return {static_cast<int64_t>(LoadBe64(p)), static_cast<int64_t>(LoadBe64(p + 8)),
          static_cast<int64_t>(LoadBe64(p + 16))};
}

void StatfsChange::Encode(uint8_t* p) const {
  StoreBe64(p, static_cast<uint64_t>(total));
  StoreBe64(p + 8, static_cast<uint64_t>(free));
  StoreBe64(p + 16, static_cast<uint64_t>(dinodes));
}

Geometry Geometry::For(uint32_t bsize) {
  Geometry g;
  g.bsize = bsize;
  g.bsize_shift = 0;
  while ((1u << g.bsize_shift) < bsize) g.bsize_shift++;
  g.diptrs = static_cast<uint32_t>((bsize - kDinodeSize) / 8);
  g.inptrs = static_cast<uint32_t>((bsize - kMetaHeaderSize) / 8);
  g.jbsize = static_cast<uint32_t>(bsize - kMetaHeaderSize);
  g.hash_ptrs = bsize / 16;
  g.max_stuffed = bsize - kDinodeSize;
  constexpr uint64_t kMax = ~uint64_t{0};
  auto mul = [](uint64_t a, uint64_t b) { return (a != 0 && b > kMax / a) ? kMax : a * b; };
  g.data_cap[0] = g.jdata_cap[0] = g.max_stuffed;
  g.data_cap[1] = mul(bsize, g.diptrs);
  g.jdata_cap[1] = mul(g.jbsize, g.diptrs);
  for (uint32_t h = 2; h <= kMaxMetaHeight; ++h) {
    g.data_cap[h] = mul(g.data_cap[h - 1], g.inptrs);
    g.jdata_cap[h] = mul(g.jdata_cap[h - 1], g.inptrs);
  }
  return g;
}

uint32_t Geometry::HeightFor(uint64_t size, bool jdata) const {
  const uint64_t* cap = jdata ? jdata_cap : data_cap;
  for (uint32_t h = 0; h <= kMaxMetaHeight; ++h) {
    if (size <= cap[h]) return h;
  }
  return kMaxMetaHeight;
}

const char* MetaTypeName(uint32_t type) {
  switch (type) {
    case kMetaSb:
      return "superblock";
    case kMetaRg:
      return "rgrp";
    case kMetaRb:
      return "rgrp bitmap";
    case kMetaDi:
      return "dinode";
    case kMetaIn:
      return "indirect";
    case kMetaLf:
      return "leaf";
    case kMetaJd:
      return "jdata";
    case kMetaLh:
      return "log header";
    case kMetaLd:
      return "log descriptor";
    case kMetaEa:
      return "xattr";
    case kMetaEd:
      return "xattr data";
    case kMetaLb:
      return "log buffer";
    case kMetaQc:
      return "quota change";
  }
  return "unknown";
}

}  // namespace ugfs2::format
