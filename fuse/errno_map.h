// Pure conversions between core values and what the kernel gets: Status -> reply errno, Attr ->
// struct stat, FUSE setattr bits -> SetAttrRequest mask. No FUSE types, so they are unit-tested
// without a mount.
// Thread safety: pure functions.
#ifndef UGFS2_FUSE_ERRNO_MAP_H_
#define UGFS2_FUSE_ERRNO_MAP_H_

#include <sys/stat.h>

#include <cstdint>

#include "common/status.h"
#include "fs/file_system.h"

namespace ugfs2::fusefs {

// The errno to reply for a non-OK status: Status::ToErrno(), except that values the kernel rejects
// (<= 0, or >= 512 which are the kernel's restart codes: the kernel rejects such a reply and the
// request would hang forever, see fuse/README.md "Errors") become EIO.
int ReplyErrnoFor(const Status& st);

// Fills `st` from `attr`; st_ino is the dinode address (what readdir reports as d_ino too).
void AttrToStat(const Attr& attr, struct stat* st);

// FUSE_SET_ATTR_* bits (values from fuse_lowlevel.h, repeated here without the header).
inline constexpr int kFuseSetMode = 1 << 0;
inline constexpr int kFuseSetUid = 1 << 1;
inline constexpr int kFuseSetGid = 1 << 2;
inline constexpr int kFuseSetSize = 1 << 3;
inline constexpr int kFuseSetAtime = 1 << 4;
inline constexpr int kFuseSetMtime = 1 << 5;
inline constexpr int kFuseSetAtimeNow = 1 << 7;
inline constexpr int kFuseSetMtimeNow = 1 << 8;
inline constexpr int kFuseSetCtime = 1 << 10;

// Translates a FUSE setattr request (to_set bits + the kernel's struct stat) for the core.
SetAttrRequest MakeSetAttrRequest(const struct stat& in, int to_set);

}  // namespace ugfs2::fusefs

#endif  // UGFS2_FUSE_ERRNO_MAP_H_
