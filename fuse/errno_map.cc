#include "errno_map.h"

#include <cerrno>

namespace ugfs2::fusefs {

int ReplyErrnoFor(const Status& st) {
  int e = st.ToErrno();
  if (e <= 0 || e >= 512) return EIO;
  return e;
}

void AttrToStat(const Attr& a, struct stat* st) {
  *st = {};
  st->st_ino = a.ino;
  st->st_mode = a.mode;
  st->st_nlink = a.nlink;
  st->st_uid = a.uid;
  st->st_gid = a.gid;
  st->st_rdev = a.rdev;
  st->st_size = static_cast<off_t>(a.size);
  st->st_blocks = static_cast<blkcnt_t>(a.blocks512);
  st->st_blksize = a.blksize;
  st->st_atim.tv_sec = a.atime.sec;
  st->st_atim.tv_nsec = a.atime.nsec;
  st->st_mtim.tv_sec = a.mtime.sec;
  st->st_mtim.tv_nsec = a.mtime.nsec;
  st->st_ctim.tv_sec = a.ctime.sec;
  st->st_ctim.tv_nsec = a.ctime.nsec;
}

SetAttrRequest MakeSetAttrRequest(const struct stat& in, int to_set) {
  SetAttrRequest r;
  if (to_set & kFuseSetMode) {
    r.mask |= kSetMode;
    r.mode = in.st_mode;
  }
  if (to_set & kFuseSetUid) {
    r.mask |= kSetUid;
    r.uid = in.st_uid;
  }
  if (to_set & kFuseSetGid) {
    r.mask |= kSetGid;
    r.gid = in.st_gid;
  }
  if (to_set & kFuseSetSize) {
    r.mask |= kSetSize;
    r.size = static_cast<uint64_t>(in.st_size);
  }
  // UTIME_NOW arrives as ATIME|ATIME_NOW: "now" wins over the (meaningless) value.
  if (to_set & kFuseSetAtimeNow) {
    r.mask |= kSetAtimeNow;
  } else if (to_set & kFuseSetAtime) {
    r.mask |= kSetAtime;
    r.atime = {in.st_atim.tv_sec, static_cast<uint32_t>(in.st_atim.tv_nsec)};
  }
  if (to_set & kFuseSetMtimeNow) {
    r.mask |= kSetMtimeNow;
  } else if (to_set & kFuseSetMtime) {
    r.mask |= kSetMtime;
    r.mtime = {in.st_mtim.tv_sec, static_cast<uint32_t>(in.st_mtim.tv_nsec)};
  }
  if (to_set & kFuseSetCtime) {
    r.mask |= kSetCtime;
    r.ctime = {in.st_ctim.tv_sec, static_cast<uint32_t>(in.st_ctim.tv_nsec)};
  }
  return r;
}

}  // namespace ugfs2::fusefs
