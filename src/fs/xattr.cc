// Extended attributes in the GFS2 format (docs/format.md, "Extended attributes"), and POSIX
// ACLs on top of them.
//
// Storage: di_eattr points at one EA block, or (GFS2_DIF_EA_INDIRECT) at an indirect block whose
// pointers are EA blocks. An EA block is a metadata header followed by a chain of records that
// covers the block exactly: each record's rec_len reaches the next one, the last has flag LAST
// and ends at the block's end. A record holds its name and either the value (stuffed) or
// pointers to ED blocks that carry the value in block-payload-sized pieces. Every EA, ED and
// indirect block is metadata (journaled, counted in di_blocks, bitmap state USED).
//
// Changes rewrite the inode's whole attribute set: the old blocks are freed (unallocatable until
// the commit that frees them is durable, revoked if needed) and a fresh, densely packed layout is
// written. Sets are small in practice (a few records, values up to 64 KiB), so this keeps the
// code to one reader and one writer that fsck.gfs2 and the kernel both accept.
//
// POSIX ACLs are the system.posix_acl_access / posix_acl_default attributes, stored as the
// kernel's xattr representation (little-endian header version 2 + 8-byte entries), exactly as
// gfs2 stores them. The kernel enforces them (FUSE_CAP_POSIX_ACL); the core keeps the mode in
// sync with the access ACL (set and chmod) and does default-ACL inheritance at create.
#include <sys/stat.h>

#include <algorithm>
#include <cstring>

#include "common/endian.h"
#include "common/log.h"
#include "fs/engine.h"
#include "fs/op_scope.h"

namespace ugfs2::fs {
namespace {

using format::kEaSecurity;
using format::kEaSystem;
using format::kEaTrusted;
using format::kEaUnused;
using format::kEaUser;

constexpr uint8_t kEaFlagLast = 0x01;
constexpr size_t kMaxEaValue = 65536;  // GFS2_EA_MAX_DATA_LEN

uint32_t Align8(uint32_t v) { return (v + 7u) & ~7u; }

struct Namespace {
  std::string_view prefix;
  uint8_t type;
};
constexpr Namespace kNamespaces[] = {{"user.", kEaUser},
                                     {"system.", kEaSystem},
                                     {"security.", kEaSecurity},
                                     {"trusted.", kEaTrusted}};

// ---- POSIX ACL xattr representation (include/uapi/linux/posix_acl_xattr.h) -----------------

constexpr uint32_t kAclVersion = 2;
constexpr uint16_t kAclUserObj = 0x01, kAclUser = 0x02, kAclGroupObj = 0x04, kAclGroup = 0x08,
                   kAclMask = 0x10, kAclOther = 0x20;

struct AclEntry {
  uint16_t tag;
  uint16_t perm;
  uint32_t id;
};

uint16_t LoadLe16(const uint8_t* p) { return static_cast<uint16_t>(p[0] | p[1] << 8); }
uint32_t LoadLe32(const uint8_t* p) {
  return uint32_t{p[0]} | uint32_t{p[1]} << 8 | uint32_t{p[2]} << 16 | uint32_t{p[3]} << 24;
}
void StoreLe16(uint8_t* p, uint16_t v) {
  p[0] = static_cast<uint8_t>(v);
  p[1] = static_cast<uint8_t>(v >> 8);
}
void StoreLe32(uint8_t* p, uint32_t v) {
  for (int i = 0; i < 4; ++i) p[i] = static_cast<uint8_t>(v >> (8 * i));
}

// Parses and validates an ACL value (the checks of the kernel's posix_acl_valid).
Result<std::vector<AclEntry>> ParseAcl(std::span<const uint8_t> v) {
  if (v.size() < 4 || (v.size() - 4) % 8 != 0 || LoadLe32(v.data()) != kAclVersion) {
    return Status::Invalid("malformed POSIX ACL");
  }
  std::vector<AclEntry> out;
  int user_obj = 0, group_obj = 0, other = 0, mask = 0, named = 0;
  for (size_t off = 4; off < v.size(); off += 8) {
    AclEntry e{LoadLe16(v.data() + off), LoadLe16(v.data() + off + 2),
               LoadLe32(v.data() + off + 4)};
    if (e.perm & ~7u) return Status::Invalid("bad ACL permission bits");
    switch (e.tag) {
      case kAclUserObj:
        ++user_obj;
        break;
      case kAclGroupObj:
        ++group_obj;
        break;
      case kAclOther:
        ++other;
        break;
      case kAclMask:
        ++mask;
        break;
      case kAclUser:
      case kAclGroup:
        ++named;
        break;
      default:
        return Status::Invalid("bad ACL tag");
    }
    out.push_back(e);
  }
  if (user_obj != 1 || group_obj != 1 || other != 1 || mask > 1 || (named > 0 && mask != 1)) {
    return Status::Invalid("incomplete POSIX ACL");
  }
  return out;
}

std::vector<uint8_t> EncodeAcl(const std::vector<AclEntry>& acl) {
  std::vector<uint8_t> v(4 + 8 * acl.size());
  StoreLe32(v.data(), kAclVersion);
  for (size_t i = 0; i < acl.size(); ++i) {
    StoreLe16(v.data() + 4 + 8 * i, acl[i].tag);
    StoreLe16(v.data() + 6 + 8 * i, acl[i].perm);
    StoreLe32(v.data() + 8 + 8 * i, acl[i].id);
  }
  return v;
}

// True if the ACL says no more than the mode bits (only the three base entries).
bool AclEquivalentToMode(const std::vector<AclEntry>& acl) { return acl.size() == 3; }

// The permission bits an access ACL implies (posix_acl_equiv_mode / update_mode).
uint32_t ModeFromAcl(const std::vector<AclEntry>& acl) {
  uint32_t user = 0, group = 0, mask = 0, other = 0;
  bool has_mask = false;
  for (const AclEntry& e : acl) {
    if (e.tag == kAclUserObj) user = e.perm;
    if (e.tag == kAclGroupObj) group = e.perm;
    if (e.tag == kAclOther) other = e.perm;
    if (e.tag == kAclMask) {
      mask = e.perm;
      has_mask = true;
    }
  }
  return user << 6 | (has_mask ? mask : group) << 3 | other;
}

// Rewrites the entries the mode bits govern (posix_acl_chmod / the masking of posix_acl_create).
void ApplyModeToAcl(std::vector<AclEntry>* acl, uint32_t mode, bool mask_only) {
  bool has_mask = std::any_of(acl->begin(), acl->end(), [](auto& e) { return e.tag == kAclMask; });
  for (AclEntry& e : *acl) {
    uint16_t m = 0;
    bool set = true;
    switch (e.tag) {
      case kAclUserObj:
        m = (mode >> 6) & 7;
        break;
      case kAclOther:
        m = mode & 7;
        break;
      case kAclMask:
        m = (mode >> 3) & 7;
        break;
      case kAclGroupObj:
        set = !has_mask;
        m = (mode >> 3) & 7;
        break;
      default:
        set = false;
    }
    if (set) e.perm = mask_only ? static_cast<uint16_t>(e.perm & m) : m;
  }
}

constexpr std::string_view kAclAccess = "posix_acl_access";
constexpr std::string_view kAclDefault = "posix_acl_default";

}  // namespace

// ---- reading ------------------------------------------------------------------------------

Result<std::vector<Engine::XattrRec>> Engine::ReadXattrs(Inode& ip) {
  std::vector<XattrRec> out;
  if (ip.di.eattr == 0) return out;
  auto damaged = [&](uint64_t blk, const std::string& what) {
    LOG_ERROR("inode " << ip.no << ": extended attribute block " << blk << ": " << what);
    return Status::Corrupt("damaged extended attributes of inode " + std::to_string(ip.no));
  };
  std::vector<uint64_t> ea_blocks;
  if (ip.di.flags & format::kDifEaIndirect) {
    uint64_t ind = ip.di.eattr;
    if (!alloc_->PtrOk(ind)) return damaged(ind, "pointer out of range");
    ASSIGN_OR_RETURN(BufferRef b, cache_->Get(ind, ip.no));
    RETURN_IF_ERROR(CheckMetaLogged(b->bytes(), format::kMetaIn, ind));
    for (uint32_t i = 0; i < geo_.inptrs; ++i) {
      uint64_t p = LoadBe64(b->bytes() + format::kMetaHeaderSize + i * 8);
      if (p) ea_blocks.push_back(p);
    }
  } else {
    ea_blocks.push_back(ip.di.eattr);
  }
  const uint32_t bs = geo_.bsize, jb = geo_.jbsize;
  for (uint64_t blk : ea_blocks) {
    if (!alloc_->PtrOk(blk)) return damaged(blk, "pointer out of range");
    ASSIGN_OR_RETURN(BufferRef b, cache_->Get(blk, ip.no));
    RETURN_IF_ERROR(CheckMetaLogged(b->bytes(), format::kMetaEa, blk));
    const uint8_t* p = b->bytes();
    uint32_t off = format::kMetaHeaderSize;
    while (true) {
      if (off + format::kEaHeaderSize > bs) return damaged(blk, "record past the block end");
      const uint32_t rec_len = LoadBe32(p + off);
      const uint32_t data_len = LoadBe32(p + off + 4);
      const uint8_t name_len = p[off + 8], type = p[off + 9], flags = p[off + 10];
      const uint8_t nptrs = p[off + 11];
      if (rec_len < format::kEaHeaderSize || rec_len % 8 != 0 || off + rec_len > bs) {
        return damaged(blk, "bad record length");
      }
      if (type != kEaUnused) {
        if (type > kEaTrusted || name_len == 0) return damaged(blk, "bad record type or name");
        XattrRec r;
        r.type = type;
        const uint8_t* name = p + off + format::kEaHeaderSize;
        uint32_t need = nptrs == 0 ? format::kEaHeaderSize + name_len + data_len
                                   : format::kEaHeaderSize + Align8(name_len) + 8u * nptrs;
        if (need > rec_len || data_len > kMaxEaValue ||
            (nptrs != 0 && nptrs != (data_len + jb - 1) / jb)) {
          return damaged(blk, "record does not hold its name and value");
        }
        r.name.assign(reinterpret_cast<const char*>(name), name_len);
        if (nptrs == 0) {
          r.value.assign(name + name_len, name + name_len + data_len);
        } else {
          r.value.resize(data_len);
          const uint8_t* ptrs = name + Align8(name_len);
          for (uint32_t k = 0; k < nptrs; ++k) {
            uint64_t ed = LoadBe64(ptrs + 8 * k);
            if (!alloc_->PtrOk(ed)) return damaged(ed, "value pointer out of range");
            ASSIGN_OR_RETURN(BufferRef eb, cache_->Get(ed, ip.no));
            RETURN_IF_ERROR(CheckMetaLogged(eb->bytes(), format::kMetaEd, ed));
            uint32_t n = std::min(jb, data_len - k * jb);
            std::memcpy(r.value.data() + k * jb, eb->bytes() + format::kMetaHeaderSize, n);
          }
        }
        out.push_back(std::move(r));
      }
      if (flags & kEaFlagLast) {
        if (off + rec_len != bs) return damaged(blk, "last record does not end the block");
        break;
      }
      off += rec_len;
    }
  }
  return out;
}

// ---- writing ------------------------------------------------------------------------------

uint32_t Engine::XattrRecordSize(size_t name_len, size_t value_len) const {
  uint32_t stuffed = Align8(static_cast<uint32_t>(format::kEaHeaderSize + name_len + value_len));
  if (stuffed <= geo_.jbsize) return stuffed;
  uint32_t nptrs = static_cast<uint32_t>((value_len + geo_.jbsize - 1) / geo_.jbsize);
  return Align8(static_cast<uint32_t>(format::kEaHeaderSize + Align8(name_len) + 8u * nptrs));
}

Status Engine::WriteXattrs(Inode& ip, const std::vector<XattrRec>& recs) {
  const uint32_t bs = geo_.bsize, jb = geo_.jbsize;
  // Pack records into EA blocks in order; every record fits in one block by construction.
  std::vector<std::vector<size_t>> blocks(1);
  uint32_t used = 0;
  uint64_t need = 0;  // blocks of the new layout: EA blocks, value blocks, the indirect block
  for (size_t i = 0; i < recs.size(); ++i) {
    uint32_t sz = XattrRecordSize(recs[i].name.size(), recs[i].value.size());
    if (sz > jb) return Status(Code::kRange, "extended attribute too large for this block size");
    if (used + sz > jb) {
      blocks.emplace_back();
      used = 0;
    }
    blocks.back().push_back(i);
    used += sz;
    uint32_t stuffed = Align8(
        static_cast<uint32_t>(format::kEaHeaderSize + recs[i].name.size() + recs[i].value.size()));
    if (stuffed > jb) need += (recs[i].value.size() + jb - 1) / jb;
  }
  if (blocks.size() > geo_.inptrs) return Status::NoSpace("too many extended attributes");
  if (!recs.empty()) need += blocks.size() + (blocks.size() > 1 ? 1 : 0);
  // The old blocks stay unallocatable until this change commits, so the new layout must fit in
  // what is free now: check before anything is freed, so that ENOSPC loses no attribute.
  const uint64_t pending = alloc_->DeferredFrees();
  const uint64_t free = TotalFree();
  if (need > 0 && (free < pending || free - pending < need)) {
    return Status::NoSpace("no room for the extended attributes");
  }
  RETURN_IF_ERROR(FreeEattr(ip));  // also clears di_eattr and the indirect flag
  if (recs.empty()) {
    TouchC(ip);
    return Status::Ok();
  }
  const uint64_t goal = ip.di.goal_meta ? ip.di.goal_meta : ip.no;
  auto alloc = [&]() -> Result<BufferRef> {
    ASSIGN_OR_RETURN(auto run, alloc_->AllocBlocks(goal, 1, format::kUsed));
    ip.di.blocks++;
    BufferRef b = cache_->GetNew(run.first, ip.no);
    return b;
  };
  std::vector<uint64_t> ea_blknos;
  for (const auto& members : blocks) {
    ASSIGN_OR_RETURN(BufferRef b, alloc());
    uint8_t* p = b->bytes();
    format::WriteMeta(p, format::kMetaEa);
    uint32_t off = format::kMetaHeaderSize;
    for (size_t m = 0; m < members.size(); ++m) {
      const XattrRec& r = recs[members[m]];
      const bool last = m + 1 == members.size();
      uint32_t sz = XattrRecordSize(r.name.size(), r.value.size());
      uint32_t rec_len = last ? bs - off : sz;
      const uint32_t stuffed =
          Align8(static_cast<uint32_t>(format::kEaHeaderSize + r.name.size() + r.value.size()));
      const uint32_t nptrs =
          stuffed <= jb ? 0 : static_cast<uint32_t>((r.value.size() + jb - 1) / jb);
      StoreBe32(p + off, rec_len);
      StoreBe32(p + off + 4, static_cast<uint32_t>(r.value.size()));
      p[off + 8] = static_cast<uint8_t>(r.name.size());
      p[off + 9] = r.type;
      p[off + 10] = last ? kEaFlagLast : 0;
      p[off + 11] = static_cast<uint8_t>(nptrs);
      uint8_t* name = p + off + format::kEaHeaderSize;
      std::memcpy(name, r.name.data(), r.name.size());
      if (nptrs == 0) {
        if (!r.value.empty()) std::memcpy(name + r.name.size(), r.value.data(), r.value.size());
      } else {
        uint8_t* ptrs = name + Align8(static_cast<uint32_t>(r.name.size()));
        for (uint32_t k = 0; k < nptrs; ++k) {
          ASSIGN_OR_RETURN(BufferRef ed, alloc());
          format::WriteMeta(ed->bytes(), format::kMetaEd);
          size_t n = std::min<size_t>(jb, r.value.size() - size_t{k} * jb);
          std::memcpy(ed->bytes() + format::kMetaHeaderSize, r.value.data() + size_t{k} * jb, n);
          cache_->MarkDirty(ed);
          StoreBe64(ptrs + 8 * k, ed->blkno);
        }
      }
      off += rec_len;
    }
    cache_->MarkDirty(b);
    ea_blknos.push_back(b->blkno);
  }
  if (ea_blknos.size() == 1) {
    ip.di.eattr = ea_blknos[0];
  } else {
    ASSIGN_OR_RETURN(BufferRef ind, alloc());
    format::WriteMeta(ind->bytes(), format::kMetaIn);
    for (size_t i = 0; i < ea_blknos.size(); ++i) {
      StoreBe64(ind->bytes() + format::kMetaHeaderSize + 8 * i, ea_blknos[i]);
    }
    cache_->MarkDirty(ind);
    ip.di.eattr = ind->blkno;
    ip.di.flags |= format::kDifEaIndirect;
  }
  TouchC(ip);  // also writes the dinode
  return Status::Ok();
}

// ---- names --------------------------------------------------------------------------------

Result<std::pair<uint8_t, std::string>> Engine::SplitXattrName(std::string_view full) const {
  for (const Namespace& ns : kNamespaces) {
    if (!full.starts_with(ns.prefix)) continue;
    std::string_view rest = full.substr(ns.prefix.size());
    if (rest.empty()) return Status::Invalid("empty attribute name");
    if (rest.size() > format::kMaxNameLen) return Status(Code::kRange, "attribute name too long");
    if (ns.type == kEaTrusted && sb_.fs_format < format::kFsFormat) {
      return Status::NotSupported("trusted.* needs GFS2 format 1802");
    }
    if (ns.type == kEaSystem && rest != kAclAccess && rest != kAclDefault) {
      return Status::NotSupported("only POSIX ACLs live in system.*");
    }
    if (ns.type == kEaSystem && !opts_.acl) return Status::NotSupported("mounted with noacl");
    return std::pair<uint8_t, std::string>{ns.type, std::string(rest)};
  }
  return Status::NotSupported("unknown attribute namespace");
}

// ---- FileSystem operations -------------------------------------------------------------------

Status Engine::SetXattr(InodeNo ino, std::string_view name, std::span<const uint8_t> value,
                        int flags, const Cred& cred) {
  RETURN_IF_ERROR(CheckWritable());
  ASSIGN_OR_RETURN(auto key, SplitXattrName(name));
  if (value.size() > kMaxEaValue) return Status(Code::kRange, "attribute value too large");
  if (XattrRecordSize(key.second.size(), value.size()) > geo_.jbsize) {
    return Status(Code::kRange, "attribute too large for this block size");
  }
  RETURN_IF_ERROR(EnsureSpace(value.size() / geo_.jbsize + 4));
  RETURN_IF_ERROR(RunOp<Status>([&](OpScope& s) -> Status {
    RETURN_IF_ERROR(s.Exclusive(ino));
    ASSIGN_OR_RETURN(InodeRef ip, GetInode(ino));
    RETURN_IF_ERROR(LockRgrpsToRewriteEattr(s, *ip, value.size()));
    RETURN_IF_ERROR(s.BeginTrans());
    std::vector<uint8_t> stored(value.begin(), value.end());
    bool remove_instead = false;
    uint32_t new_mode = ip->di.mode;  // applied only once the attributes are written
    if (key.first == kEaSystem) {
      // POSIX ACLs: validated; an access ACL sets the mode and is not stored if the mode says
      // it all (as gfs2_set_acl with posix_acl_update_mode).
      if (key.second == kAclDefault && !ip->is_dir()) {
        return Status(Code::kAccess, "default ACLs exist only on directories");
      }
      ASSIGN_OR_RETURN(std::vector<AclEntry> acl, ParseAcl(value));
      if (key.second == kAclAccess) {
        new_mode = (new_mode & ~0777u) | ModeFromAcl(acl);
        if (AclEquivalentToMode(acl)) remove_instead = true;
        // Dropping sgid as setattr would: the kernel asks for it when the caller is not in the
        // owning group (FUSE_SETXATTR_ACL_KILL_SGID); without that flag in libfuse 3.14, apply
        // the rule here.
        if ((new_mode & S_ISGID) && cred.uid != 0 && cred.gid != ip->di.gid &&
            !cred.InGroup(ip->di.gid)) {
          new_mode &= ~S_ISGID;
        }
      }
    }
    ASSIGN_OR_RETURN(std::vector<XattrRec> recs, ReadXattrs(*ip));
    auto it = std::find_if(recs.begin(), recs.end(), [&](const XattrRec& r) {
      return r.type == key.first && r.name == key.second;
    });
    if (remove_instead) {
      if (it != recs.end()) {
        recs.erase(it);
        RETURN_IF_ERROR(WriteXattrs(*ip, recs));
      }
    } else {
      if (it != recs.end() && (flags & kXattrCreate)) return Status::Exists(std::string(name));
      if (it == recs.end() && (flags & kXattrReplace)) {
        return Status(Code::kNoData, "no such attribute");
      }
      if (it != recs.end()) {
        it->value = std::move(stored);
      } else {
        recs.push_back({key.first, key.second, std::move(stored)});
      }
      RETURN_IF_ERROR(WriteXattrs(*ip, recs));
    }
    if (new_mode != ip->di.mode) {  // an ENOSPC above leaves the mode as it was (generic/449)
      ip->di.mode = new_mode;
      WriteDinode(*ip);
    }
    return Status::Ok();
  }));
  return AfterModify();
}

Result<size_t> Engine::GetXattr(InodeNo ino, std::string_view name, std::span<uint8_t> buf) {
  return GetXattrUnder(ino, name, buf, 0);
}

Result<size_t> Engine::GetXattrUnder(InodeNo ino, std::string_view name, std::span<uint8_t> buf,
                                     uint64_t hold) {
  ASSIGN_OR_RETURN(auto key, SplitXattrName(name));
  OpScope s(this);
  // 0: a holder of its own; else the caller's (any granted mode covers reading, see GetAttrUnder).
  RETURN_IF_ERROR(hold == 0 ? s.Shared(ino) : s.Adopt({glock::GlockType::kInode, ino}, hold));
  ASSIGN_OR_RETURN(InodeRef ip, GetInode(ino));
  if (ip->di.eattr == 0) return Status(Code::kNoData, "no such attribute");
  ASSIGN_OR_RETURN(std::vector<XattrRec> recs, ReadXattrs(*ip));
  for (const XattrRec& r : recs) {
    if (r.type != key.first || r.name != key.second) continue;
    if (buf.empty()) return r.value.size();
    if (buf.size() < r.value.size()) return Status(Code::kRange, "buffer too small");
    if (!r.value.empty()) std::memcpy(buf.data(), r.value.data(), r.value.size());
    return r.value.size();
  }
  return Status(Code::kNoData, "no such attribute");
}

Result<size_t> Engine::ListXattr(InodeNo ino, std::span<char> buf, const Cred& cred) {
  OpScope s(this);
  RETURN_IF_ERROR(s.Shared(ino));
  ASSIGN_OR_RETURN(InodeRef ip, GetInode(ino));
  ASSIGN_OR_RETURN(std::vector<XattrRec> recs, ReadXattrs(*ip));
  std::string names;
  for (const XattrRec& r : recs) {
    // trusted.* is visible to privileged callers only (the kernel: CAP_SYS_ADMIN; here uid 0).
    if (r.type == kEaTrusted && cred.uid != 0) continue;
    for (const Namespace& ns : kNamespaces) {
      if (ns.type == r.type) names.append(ns.prefix);
    }
    names.append(r.name);
    names.push_back('\0');
  }
  if (buf.empty()) return names.size();
  if (buf.size() < names.size()) return Status(Code::kRange, "buffer too small");
  std::memcpy(buf.data(), names.data(), names.size());
  return names.size();
}

Status Engine::RemoveXattr(InodeNo ino, std::string_view name) {
  RETURN_IF_ERROR(CheckWritable());
  ASSIGN_OR_RETURN(auto key, SplitXattrName(name));
  RETURN_IF_ERROR(RunOp<Status>([&](OpScope& s) -> Status {
    RETURN_IF_ERROR(s.Exclusive(ino));
    ASSIGN_OR_RETURN(InodeRef ip, GetInode(ino));
    ASSIGN_OR_RETURN(std::vector<XattrRec> recs, ReadXattrs(*ip));
    auto it = std::find_if(recs.begin(), recs.end(), [&](const XattrRec& r) {
      return r.type == key.first && r.name == key.second;
    });
    if (it == recs.end()) return Status(Code::kNoData, "no such attribute");
    recs.erase(it);
    RETURN_IF_ERROR(LockRgrpsToRewriteEattr(s, *ip, 0));
    RETURN_IF_ERROR(s.BeginTrans());
    return WriteXattrs(*ip, recs);
  }));
  return AfterModify();
}

// ---- ACLs in create and chmod ---------------------------------------------------------------

Result<bool> Engine::InheritAcls(Inode& dir, uint32_t* mode, std::vector<XattrRec>* out) {
  if (!opts_.acl || dir.di.eattr == 0 || S_ISLNK(*mode)) return false;
  ASSIGN_OR_RETURN(std::vector<XattrRec> drecs, ReadXattrs(dir));
  for (const XattrRec& r : drecs) {
    if (r.type != kEaSystem || r.name != kAclDefault) continue;
    auto parsed = ParseAcl(r.value);
    if (!parsed.ok()) {
      LOG_WARN("directory " << dir.no << ": ignoring a malformed default ACL");
      return false;
    }
    std::vector<AclEntry> access = *parsed;
    // posix_acl_create: the new object's permission entries are masked by the requested mode.
    ApplyModeToAcl(&access, *mode, /*mask_only=*/true);
    *mode = (*mode & ~0777u) | ModeFromAcl(access);
    if (!AclEquivalentToMode(access))
      out->push_back({kEaSystem, std::string(kAclAccess), EncodeAcl(access)});
    if (S_ISDIR(*mode)) out->push_back({kEaSystem, std::string(kAclDefault), r.value});
    return true;
  }
  return false;
}

Status Engine::ChmodAcl(Inode& ip) {
  if (!opts_.acl || ip.di.eattr == 0) return Status::Ok();
  ASSIGN_OR_RETURN(std::vector<XattrRec> recs, ReadXattrs(ip));
  for (XattrRec& r : recs) {
    if (r.type != kEaSystem || r.name != kAclAccess) continue;
    ASSIGN_OR_RETURN(std::vector<AclEntry> acl, ParseAcl(r.value));
    ApplyModeToAcl(&acl, ip.di.mode, /*mask_only=*/false);
    r.value = EncodeAcl(acl);
    return WriteXattrs(ip, recs);
  }
  return Status::Ok();
}

}  // namespace ugfs2::fs
