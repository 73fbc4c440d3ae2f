#include "reply.h"

#include "common/log.h"
#include "errno_map.h"

namespace ugfs2::fusefs {

void ReplyError(DaemonContext& ctx, fuse_req_t req, const Status& st, const char* op) {
  int err = ReplyErrnoFor(st);
  if (st.code() == Code::kCorrupt || st.code() == Code::kIoError || err == EIO) {
    LOG_WARN(op << ": " << st.ToString());
  } else {
    LOG_DEBUG(op << ": " << st.ToString());
  }
  ctx.stats->CountError();
  fuse_reply_err(req, err);
}

void ReplyErrno(DaemonContext& ctx, fuse_req_t req, int err) {
  if (err != 0) ctx.stats->CountError();
  fuse_reply_err(req, (err < 0 || err >= 512) ? EIO : err);
}

void FillEntry(const DaemonContext& ctx, const Attr& attr, fuse_entry_param* e) {
  *e = {};
  e->ino = ctx.inodes->ToKernel(attr.ino, attr.generation);
  // The kernel's root inode has generation 0 (it warns about, and ignores, any other).
  e->generation = e->ino == kKernelRootIno ? 0 : attr.generation;
  AttrToStat(attr, &e->attr);
  e->attr_timeout = ctx.opts->attr_timeout;
  e->entry_timeout = ctx.opts->entry_timeout;
}

void ReplyNegativeEntry(DaemonContext& ctx, fuse_req_t req) {
  // ino 0 with an entry timeout: the kernel caches the miss as a negative dentry for that long
  // (and asks again after it, or at once with entry_timeout=0), as it does for a local fs.
  fuse_entry_param e{};
  e.ino = 0;
  e.entry_timeout = ctx.opts->entry_timeout;
  fuse_reply_entry(req, &e);
}

void ReplyEntry(DaemonContext& ctx, fuse_req_t req, const Attr& attr) {
  fuse_entry_param e;
  FillEntry(ctx, attr, &e);
  // Count before replying: the kernel may FORGET as soon as it has the reply.
  ctx.inodes->AddLookup(attr.ino, attr.generation);
  if (fuse_reply_entry(req, &e) != 0) ctx.inodes->Forget(attr.ino, 1);
}

void ReplyCreate(DaemonContext& ctx, fuse_req_t req, const Attr& attr, const fuse_file_info* fi) {
  fuse_entry_param e;
  FillEntry(ctx, attr, &e);
  ctx.inodes->AddLookup(attr.ino, attr.generation);
  if (fuse_reply_create(req, &e, fi) != 0) {
    ctx.inodes->Forget(attr.ino, 1);
    (void)ctx.fs->Release(attr.ino);  // the kernel will never RELEASE this open
  }
}

void ReplyAttr(DaemonContext& ctx, fuse_req_t req, const Attr& attr) {
  struct stat st;
  AttrToStat(attr, &st);
  fuse_reply_attr(req, &st, ctx.opts->attr_timeout);
}

}  // namespace ugfs2::fusefs
