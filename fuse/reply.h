// Replies: the single point where a Status becomes an errno for the kernel, and where entry
// replies update the kernel lookup counts (InodeTable). Every request gets exactly one reply.
// Thread safety: stateless; safe from any worker thread.
#ifndef UGFS2_FUSE_REPLY_H_
#define UGFS2_FUSE_REPLY_H_

#include "common/status.h"
#include "daemon_context.h"
#include "fuse_includes.h"

namespace ugfs2::fusefs {

// Replies with ReplyErrnoFor(st). Damage and device errors are logged (one line).
void ReplyError(DaemonContext& ctx, fuse_req_t req, const Status& st, const char* op);
// Replies with a raw errno (for errors that do not come from the core).
void ReplyErrno(DaemonContext& ctx, fuse_req_t req, int err);

// Fills an entry for `attr` (ino mapped to the kernel's numbering, timeouts from the options).
void FillEntry(const DaemonContext& ctx, const Attr& attr, fuse_entry_param* e);
// Entry reply (+1 lookup; undone if the kernel did not take it).
void ReplyEntry(DaemonContext& ctx, fuse_req_t req, const Attr& attr);
// A LOOKUP that found nothing: a negative entry, cached by the kernel for entry_timeout.
void ReplyNegativeEntry(DaemonContext& ctx, fuse_req_t req);
// Create reply (entry + open file); undoes the lookup and the open if the kernel did not take it.
void ReplyCreate(DaemonContext& ctx, fuse_req_t req, const Attr& attr, const fuse_file_info* fi);
void ReplyAttr(DaemonContext& ctx, fuse_req_t req, const Attr& attr);

}  // namespace ugfs2::fusefs

#endif  // UGFS2_FUSE_REPLY_H_
