// The GFS2 on-disk format (linux/gfs2_ondisk.h), big-endian. Each structure is a plain C++ value
// with Decode (from a byte buffer) and Encode (into a byte buffer, only the structure's bytes).
// Offsets and sizes are those of the kernel header; see docs/format.md. No I/O here.
// Thread-safe (pure functions).
#ifndef UGFS2_SRC_FORMAT_ONDISK_H_
#define UGFS2_SRC_FORMAT_ONDISK_H_

#include <cstdint>
#include <string>
#include <string_view>

#include "common/status.h"

namespace ugfs2::format {

constexpr uint32_t kMagic = 0x01161970;
constexpr uint64_t kSuperblockOffset = 65536;  // GFS2_SB_ADDR (128) * 512
constexpr uint32_t kBasicBlock = 512;

enum MetaType : uint32_t {
  kMetaSb = 1,
  kMetaRg = 2,
  kMetaRb = 3,
  kMetaDi = 4,
  kMetaIn = 5,
  kMetaLf = 6,
  kMetaJd = 7,
  kMetaLh = 8,
  kMetaLd = 9,
  kMetaEa = 10,
  kMetaEd = 11,
  kMetaLb = 12,
  kMetaQc = 14,
};
// mh_format for each metadata type.
constexpr uint32_t FormatOf(uint32_t type) {
  switch (type) {
    case kMetaSb:
      return 100;
    case kMetaRg:
      return 200;
    case kMetaRb:
      return 300;
    case kMetaDi:
      return 400;
    case kMetaIn:
      return 500;
    case kMetaLf:
      return 600;
    case kMetaJd:
      return 700;
    case kMetaLh:
      return 800;
    case kMetaLd:
      return 900;
    case kMetaLb:
      return 1000;
    case kMetaQc:
      return 1400;
    case kMetaEa:
      return 1600;
    case kMetaEd:
      return 1700;
  }
  return 0;
}
constexpr uint32_t kFormatRi = 1100;
constexpr uint32_t kFormatDe = 1200;
constexpr uint32_t kFormatQu = 1500;
constexpr uint32_t kFsFormat = 1802;
constexpr uint32_t kFsFormatMin = 1801;
constexpr uint32_t kMultihostFormat = 1900;

constexpr size_t kMetaHeaderSize = 24;
constexpr size_t kSbSize = 272;
constexpr size_t kRgrpSize = 128;
constexpr size_t kDinodeSize = 232;
constexpr size_t kLeafSize = 104;
constexpr size_t kDirentSize = 40;
constexpr size_t kLogHeaderSize = 120;
constexpr size_t kLogDescSize = 72;
constexpr size_t kRindexSize = 96;
constexpr size_t kStatfsChangeSize = 24;
constexpr size_t kQuotaChangeSize = 16;
constexpr size_t kEaHeaderSize = 16;
// gfs2_ea_header.ea_type: the namespace of an extended attribute record.
constexpr uint8_t kEaUnused = 0, kEaUser = 1, kEaSystem = 2, kEaSecurity = 3, kEaTrusted = 4;
constexpr uint32_t kMaxMetaHeight = 10;
constexpr uint32_t kMaxDirDepth = 17;
constexpr size_t kMaxNameLen = 255;

// Block allocation states in rgrp bitmaps.
enum BlockState : uint8_t { kFree = 0, kUsed = 1, kUnlinked = 2, kDinode = 3 };

// di_flags
constexpr uint32_t kDifJdata = 0x1;
constexpr uint32_t kDifExhash = 0x2;
constexpr uint32_t kDifEaIndirect = 0x8;
constexpr uint32_t kDifDirectio = 0x10;
constexpr uint32_t kDifImmutable = 0x20;
constexpr uint32_t kDifAppendonly = 0x40;
constexpr uint32_t kDifNoatime = 0x80;
constexpr uint32_t kDifSync = 0x100;
constexpr uint32_t kDifSystem = 0x200;
constexpr uint32_t kDifTopdir = 0x400;
constexpr uint32_t kDifTruncInProg = 0x20000000;
constexpr uint32_t kDifInheritDirectio = 0x40000000;
constexpr uint32_t kDifInheritJdata = 0x80000000;

// Log header flags.
constexpr uint32_t kLogHeadUnmount = 0x1;
constexpr uint32_t kLogHeadFlushNormal = 0x2;
constexpr uint32_t kLogHeadFlushSync = 0x4;
constexpr uint32_t kLogHeadFlushShutdown = 0x8;
constexpr uint32_t kLogHeadRecovery = 0x20;
constexpr uint32_t kLogHeadUserspace = 0x80000000;
constexpr uint32_t kLfcShutdown = 0x100;
constexpr uint32_t kLfcLogFlush = 0x400;  // informational reason bit

// Log descriptor types.
constexpr uint32_t kLdMetadata = 300;
constexpr uint32_t kLdRevoke = 301;
constexpr uint32_t kLdJdata = 302;

struct MetaHeader {
  uint32_t magic = kMagic;
  uint32_t type = 0;
  uint32_t format = 0;
  uint32_t jid = 0;

  static MetaHeader Decode(const uint8_t* p);
  void Encode(uint8_t* p) const;
  static MetaHeader For(uint32_t type) { return {kMagic, type, FormatOf(type), 0}; }
};

// Checks that a block starts with a metadata header of `type`.
Status CheckMeta(const uint8_t* p, uint32_t type, uint64_t blkno);
// Writes a metadata header of `type` at p.
void WriteMeta(uint8_t* p, uint32_t type);
// Reads the type of the metadata header at p, or 0 if the magic is wrong.
uint32_t MetaTypeOf(const uint8_t* p);

struct Inum {
  uint64_t formal_ino = 0;
  uint64_t addr = 0;
  static Inum Decode(const uint8_t* p);
  void Encode(uint8_t* p) const;
  bool operator==(const Inum&) const = default;
};

struct Superblock {
  uint32_t fs_format = kFsFormat;
  uint32_t multihost_format = kMultihostFormat;
  uint32_t bsize = 4096;
  uint32_t bsize_shift = 12;
  Inum master_dir;
  Inum root_dir;
  std::string lockproto;  // <= 63 chars
  std::string locktable;  // <= 63 chars
  uint8_t uuid[16] = {};

  static Result<Superblock> Decode(const uint8_t* p);  // validates magic/type/bsize
  void Encode(uint8_t* p) const;
};

struct Rindex {
  uint64_t addr = 0;
  uint32_t length = 0;
  uint64_t data0 = 0;
  uint32_t data = 0;
  uint32_t bitbytes = 0;
  static Rindex Decode(const uint8_t* p);
  void Encode(uint8_t* p) const;
};

struct Rgrp {
  uint32_t flags = 0;
  uint32_t free = 0;
  uint32_t dinodes = 0;
  uint32_t skip = 0;
  uint64_t igeneration = 0;
  uint64_t data0 = 0;
  uint32_t data = 0;
  uint32_t bitbytes = 0;
  uint32_t crc = 0;
  static Rgrp Decode(const uint8_t* p);
  // Encodes the 128-byte header including its meta header and a freshly computed rg_crc.
  void Encode(uint8_t* p) const;
  // True if the stored rg_crc is 0 (unset) or matches the header contents.
  static bool CrcOk(const uint8_t* p);
};

// gfs2_rgrp_lvb: the 32-byte lock value block of an rgrp glock, big-endian (magic, flags, free,
// dinodes, igeneration, unlinked, pad). The node that last held the rgrp EX left it describing
// the header it wrote; a magic of 0 means no node has written it yet.
struct RgrpLvb {
  static constexpr size_t kSize = 32;
  uint32_t magic = 0;
  uint32_t flags = 0;
  uint32_t free = 0;
  uint32_t dinodes = 0;
  uint64_t igeneration = 0;
  uint32_t unlinked = 0;  // dinodes in the unlinked state (GFS2_BLKST_UNLINKED)
  static RgrpLvb Decode(const uint8_t* p);
  void Encode(uint8_t* p) const;
  static RgrpLvb For(const Rgrp& hdr, uint32_t unlinked);
  // gfs2's rgrp_lvb_valid: flags, free, dinodes and igeneration equal the header's.
  bool Matches(const Rgrp& hdr) const;
};

struct Dinode {
  Inum num;
  uint32_t mode = 0;
  uint32_t uid = 0;
  uint32_t gid = 0;
  uint32_t nlink = 0;
  uint64_t size = 0;
  uint64_t blocks = 0;
  uint64_t atime = 0;
  uint64_t mtime = 0;
  uint64_t ctime = 0;
  uint32_t major = 0;
  uint32_t minor = 0;
  uint64_t goal_meta = 0;
  uint64_t goal_data = 0;
  uint64_t generation = 0;
  uint32_t flags = 0;
  uint32_t payload_format = 0;
  uint16_t height = 0;
  uint16_t depth = 0;
  uint32_t entries = 0;
  uint64_t eattr = 0;
  uint32_t atime_nsec = 0;
  uint32_t mtime_nsec = 0;
  uint32_t ctime_nsec = 0;

  static Dinode Decode(const uint8_t* p);
  // Encodes the 232-byte dinode header including its meta header (the tail is left alone).
  void Encode(uint8_t* p) const;
};

struct Leaf {
  uint16_t depth = 0;
  uint16_t entries = 0;
  uint32_t dirent_format = kFormatDe;
  uint64_t next = 0;
  uint64_t inode = 0;
  uint32_t dist = 1;
  uint32_t nsec = 0;
  uint64_t sec = 0;
  static Leaf Decode(const uint8_t* p);
  void Encode(uint8_t* p) const;  // 104 bytes incl. meta header
};

struct Dirent {
  Inum inum;
  uint32_t hash = 0;
  uint16_t rec_len = 0;
  uint16_t name_len = 0;
  uint16_t type = 0;
  uint16_t rahead = 0;
  static Dirent Decode(const uint8_t* p);
  void Encode(uint8_t* p) const;  // 40-byte header only
};
constexpr uint32_t DirentSize(uint32_t name_len) { return (40 + name_len + 7) & ~7u; }

struct LogHeader {
  uint64_t sequence = 0;
  uint32_t flags = 0;
  uint32_t tail = 0;
  uint32_t blkno = 0;
  uint32_t hash = 0;
  uint32_t crc = 0;
  uint32_t nsec = 0;
  uint64_t sec = 0;
  uint64_t addr = 0;
  uint64_t jinode = 0;
  uint64_t statfs_addr = 0;
  uint64_t quota_addr = 0;
  int64_t local_total = 0;
  int64_t local_free = 0;
  int64_t local_dinodes = 0;
  uint32_t jid = 0;  // mh_jid

  static LogHeader Decode(const uint8_t* p);
  // Fills a whole block: zeroes it, encodes the header and computes lh_hash and lh_crc.
  void EncodeBlock(uint8_t* block, uint32_t bsize) const;
  // Validates magic/type and lh_hash (and lh_crc when non-zero) of a block.
  static bool Valid(const uint8_t* block, uint32_t bsize);
};

struct LogDescriptor {
  uint32_t type = 0;
  uint32_t length = 0;
  uint32_t data1 = 0;
  uint32_t data2 = 0;
  static LogDescriptor Decode(const uint8_t* p);
  void Encode(uint8_t* p) const;  // 72 bytes incl. meta header
};

struct StatfsChange {
  int64_t total = 0;
  int64_t free = 0;
  int64_t dinodes = 0;
  static StatfsChange Decode(const uint8_t* p);
  void Encode(uint8_t* p) const;
};

// Geometry derived from the block size.
struct Geometry {
  uint32_t bsize = 4096;
  uint32_t bsize_shift = 12;
  uint32_t diptrs = 0;     // pointers in a dinode
  uint32_t inptrs = 0;     // pointers in an indirect block
  uint32_t jbsize = 0;     // payload of a JD block
  uint32_t hash_ptrs = 0;  // initial exhash table pointers
  uint64_t max_stuffed = 0;
  // cap[h] for regular data and for jdata/directory payload
  uint64_t data_cap[kMaxMetaHeight + 1] = {};
  uint64_t jdata_cap[kMaxMetaHeight + 1] = {};

  static Geometry For(uint32_t bsize);
  // Smallest height whose capacity covers `size` bytes (regular files).
  uint32_t HeightFor(uint64_t size, bool jdata) const;
};

const char* MetaTypeName(uint32_t type);

}  // namespace ugfs2::format

#endif  // UGFS2_SRC_FORMAT_ONDISK_H_
