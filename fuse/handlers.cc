#include "handlers.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "cache_invalidator.h"
#include "common/log.h"
#include "control.h"
#include "daemon_context.h"
#include "errno_map.h"
#include "glock/holder_owner.h"
#include "io_policy.h"
#include "kernel_cache_bridge.h"
#include "reply.h"
#include "revoker.h"

namespace ugfs2::fusefs {
namespace {

DaemonContext& Ctx(fuse_req_t req) { return *static_cast<DaemonContext*>(fuse_req_userdata(req)); }

bool IsModifying(Op op) {
  switch (op) {
    case Op::kSetattr:
    case Op::kMknod:
    case Op::kMkdir:
    case Op::kUnlink:
    case Op::kRmdir:
    case Op::kSymlink:
    case Op::kRename:
    case Op::kLink:
    case Op::kOpen:
    case Op::kCreate:
    case Op::kWrite:
    case Op::kFallocate:
    case Op::kCopyFileRange:
      return true;
    default:
      return false;
  }
}

// Runs a handler body; exceptions never cross into libfuse. `body` replies itself. `count`:
// count the request (false for a parked request served again later).
template <typename F>
void GuardedImpl(fuse_req_t req, Op op, bool count, F&& body) noexcept {
  DaemonContext& ctx = Ctx(req);
  if (count) ctx.stats->Count(op);
  ctx.in_flight.fetch_add(1);
  struct Leave {
    DaemonContext& c;
    ~Leave() {
      if (c.in_flight.fetch_sub(1) == 1 && c.core_down.load()) {
        std::lock_guard<std::mutex> l(c.drain_mu);
        c.drain_cv.notify_all();
      }
    }
  } leave{ctx};
  if (ctx.core_down.load()) {
    // After FUSE_DESTROY (or a signal) the core is gone; FORGETs need no reply.
    if (op == Op::kForget || op == Op::kForgetMulti) {
      fuse_reply_none(req);
    } else {
      fuse_reply_err(req, EIO);
    }
    return;
  }
  if (ctx.remounted_ro.load() && ctx.watcher != nullptr && IsModifying(op)) {
    // The kernel sends modifications only to a read-write mount: it was remounted rw and the
    // watcher thread has not caught up yet.
    ctx.watcher->Refresh();
  }
  // Glock holders this request queues name its process and the request (glock dumps).
  glock::OwnerScope owner({fuse_req_ctx(req)->pid, OpName(op)});
  try {
    body(ctx);
  } catch (const std::exception& e) {
    LOG_ERROR(OpName(op) << ": unexpected exception: " << e.what());
    fuse_reply_err(req, EIO);
  } catch (...) {
    LOG_ERROR(OpName(op) << ": unexpected exception");
    fuse_reply_err(req, EIO);
  }
}

template <typename F>
void Guarded(fuse_req_t req, Op op, F&& body) noexcept {
  GuardedImpl(req, op, true, std::forward<F>(body));
}

// Brackets a request that makes the kernel cache names in `dir` (KernelCacheBridge::
// ExpireNames waits for such requests before a directory's glock goes).
class NameScope {
 public:
  NameScope(DaemonContext& ctx, InodeNo dir) : bridge_(ctx.kernel_cache), dir_(dir) {
    if (bridge_ != nullptr) bridge_->NameRequestBegin(dir_);
  }
  ~NameScope() {
    if (bridge_ != nullptr) bridge_->NameRequestEnd(dir_);
  }
  NameScope(const NameScope&) = delete;
  NameScope& operator=(const NameScope&) = delete;

 private:
  KernelCacheBridge* const bridge_;
  const InodeNo dir_;
};

// Credentials of the caller. Supplementary groups are read (from /proc, costly) only when the
// core may need them: non-root callers of ops that set ownership or mode bits.
Cred MakeCred(fuse_req_t req, bool with_groups) {
  const fuse_ctx* c = fuse_req_ctx(req);
  Cred cred;
  cred.uid = c->uid;
  cred.gid = c->gid;
  cred.pid = c->pid;
  if (Ctx(req).dont_mask) cred.umask = c->umask;
  if (with_groups && c->uid != 0) {
    gid_t groups[64];
    int n = fuse_req_getgroups(req, 64, groups);
    if (n > 64) {
      std::vector<gid_t> big(static_cast<size_t>(n));
      n = fuse_req_getgroups(req, n, big.data());
      for (int i = 0; i < n && i < static_cast<int>(big.size()); ++i) cred.groups.push_back(big[i]);
    } else {
      for (int i = 0; i < n; ++i) cred.groups.push_back(groups[i]);
    }
  }
  return cred;
}

// The dinode address a request's node id names, checked against the generation the kernel was
// last given for it (InodeTable::Resolve); nullopt after replying ESTALE for a node id of a
// dinode freed and reused since.
std::optional<InodeNo> In(DaemonContext& ctx, fuse_req_t req, fuse_ino_t ino) {
  Result<InodeNo> r = ctx.inodes->Resolve(ino);
  if (!r.ok()) {
    ReplyError(ctx, req, r.status(), "node id");
    return std::nullopt;
  }
  return *r;
}

// Unchecked: requests that must reach the core whatever the generation (FORGET, RELEASE: an
// open or a lookup reference is given back exactly once).
InodeNo Unchecked(DaemonContext& ctx, fuse_ino_t ino) { return ctx.inodes->FromKernel(ino); }

// ESTALE for attributes of another generation than `ino` carries (the kernel's node id is for a
// dinode that was freed and whose address a new file took since).
bool StaleAttr(DaemonContext& ctx, fuse_req_t req, fuse_ino_t ino, const Attr& attr) {
  if (InodeTable::SameGeneration(ino, attr.generation)) return false;
  ReplyError(ctx, req,
             Status(Code::kStale, "node id " + std::to_string(ino) + ": generation is " +
                                      std::to_string(attr.generation) + " now"),
             "node id");
  return true;
}

bool IsDotOrDotDot(const std::string& n) { return n == "." || n == ".."; }

// The generation bits a node id carries (inode_table.h), for the core to check under the glock.
constexpr uint64_t kNodeIdGenerationMask = (uint64_t{1} << (64 - kNodeIdGenerationShift)) - 1;
uint64_t GenerationOf(fuse_ino_t ino) { return ino >> kNodeIdGenerationShift; }

void OpInit(void* userdata, fuse_conn_info* conn) {
  auto& ctx = *static_cast<DaemonContext*>(userdata);
  ctx.stats->Count(Op::kInit);
  auto want = [&](unsigned cap, bool on) {
    if (on && (conn->capable & cap)) conn->want |= cap;
    if (!on) conn->want &= ~cap;
  };
  want(FUSE_CAP_ASYNC_READ, true);
  want(FUSE_CAP_ATOMIC_O_TRUNC, true);
  want(FUSE_CAP_PARALLEL_DIROPS, true);
  want(FUSE_CAP_CACHE_SYMLINKS, true);
  want(FUSE_CAP_AUTO_INVAL_DATA, true);
  want(FUSE_CAP_ASYNC_DIO, true);
  want(FUSE_CAP_EXPORT_SUPPORT, true);
  // POSIX ACLs: the kernel enforces them from system.posix_acl_*; the core keeps the mode in
  // sync and inherits default ACLs, so it also applies the umask itself (DONT_MASK).
  want(FUSE_CAP_POSIX_ACL, ctx.opts->acl);
  want(FUSE_CAP_DONT_MASK, ctx.opts->acl);
  ctx.dont_mask = (conn->want & FUSE_CAP_DONT_MASK) !=
                  0;  // file handles: LOOKUP "." / ".." by nodeid (OpLookup)
  want(FUSE_CAP_WRITEBACK_CACHE, ctx.opts->writeback_cache);
  // The kernel clears suid/sgid itself (it sends SETATTR with the new mode) on write, truncate
  // and chown; the core also does it for chown.
  want(FUSE_CAP_HANDLE_KILLPRIV, false);
  want(FUSE_CAP_SPLICE_READ, false);
  want(FUSE_CAP_SPLICE_WRITE, false);
  want(FUSE_CAP_SPLICE_MOVE, false);
  conn->max_write = 1u << 20;
  conn->max_readahead = 1u << 20;
  conn->time_gran = 1;
  LOG_DEBUG("fuse init: proto " << conn->proto_major << "." << conn->proto_minor << " want 0x"
                                << std::hex << conn->want);
}

void OpLookup(fuse_req_t req, fuse_ino_t parent, const char* name) {
  Guarded(req, Op::kLookup, [&](DaemonContext& ctx) {
    // The VFS resolves "." and ".." itself; the kernel sends them only to decode a file handle
    // (open_by_handle_at, NFS export) whose inode it no longer caches: "." on the handle's
    // nodeid, of any file type, and ".." on a directory for its parent. A nodeid whose dinode
    // was freed answers ESTALE, and so does one whose dinode was reused since: the node id
    // carries the generation (checked by In, and against the attributes for ".").
    auto dir = In(ctx, req, parent);
    if (!dir) return;
    NameScope names(ctx, *dir);
    const bool self = std::strcmp(name, ".") == 0;
    auto r = self ? ctx.fs->GetAttr(*dir) : ctx.fs->Lookup(*dir, name);
    if (!r.ok() && !self && r.status().code() == Code::kNotFound) {
      return ReplyNegativeEntry(ctx, req);
    }
    if (!r.ok()) return ReplyError(ctx, req, r.status(), "lookup");
    if (self && StaleAttr(ctx, req, parent, *r)) return;
    ReplyEntry(ctx, req, *r);
  });
}

void OpForget(fuse_req_t req, fuse_ino_t ino, uint64_t nlookup) {
  Guarded(req, Op::kForget, [&](DaemonContext& ctx) {
    ctx.inodes->Forget(Unchecked(ctx, ino), nlookup);
    fuse_reply_none(req);
  });
}

void OpForgetMulti(fuse_req_t req, size_t count, fuse_forget_data* forgets) {
  Guarded(req, Op::kForgetMulti, [&](DaemonContext& ctx) {
    for (size_t i = 0; i < count; ++i)
      ctx.inodes->Forget(Unchecked(ctx, forgets[i].ino), forgets[i].nlookup);
    fuse_reply_none(req);
  });
}

void OpGetattr(fuse_req_t req, fuse_ino_t ino, fuse_file_info*) {
  Guarded(req, Op::kGetattr, [&](DaemonContext& ctx) {
    auto i = In(ctx, req, ino);
    if (!i) return;
    // Inside the process's write() or read() (the kernel asks for the size first): under the
    // glock the process keeps on the inode, if its I/O policy keeps one (io_policy.h).
    std::optional<Result<Attr>> kept;
    if (ctx.io_policy != nullptr) {
      ctx.io_policy->UnderKept(fuse_req_ctx(req)->pid, *i,
                               [&](uint64_t hold) { kept = ctx.fs->GetAttrUnder(*i, hold); });
    }
    auto r = kept ? std::move(*kept) : ctx.fs->GetAttr(*i);
    if (!r.ok()) return ReplyError(ctx, req, r.status(), "getattr");
    if (StaleAttr(ctx, req, ino, *r)) return;
    ReplyAttr(ctx, req, *r);
  });
}

void OpSetattr(fuse_req_t req, fuse_ino_t ino, struct stat* attr, int to_set, fuse_file_info*) {
  Guarded(req, Op::kSetattr, [&](DaemonContext& ctx) {
    auto i = In(ctx, req, ino);
    if (!i) return;
    SetAttrRequest set = MakeSetAttrRequest(*attr, to_set);
    // The node id's generation is checked again under the inode's glock (see OpLink). The root's
    // node id carries none.
    if (ino != FUSE_ROOT_ID) {
      set.generation = GenerationOf(ino);
      set.generation_mask = kNodeIdGenerationMask;
    }
    auto r = ctx.fs->SetAttr(*i, set, MakeCred(req, true));
    if (!r.ok()) return ReplyError(ctx, req, r.status(), "setattr");
    ReplyAttr(ctx, req, *r);
  });
}

void OpReadlink(fuse_req_t req, fuse_ino_t ino) {
  Guarded(req, Op::kReadlink, [&](DaemonContext& ctx) {
    auto i = In(ctx, req, ino);
    if (!i) return;
    auto r = ctx.fs->ReadLink(*i);
    if (!r.ok()) return ReplyError(ctx, req, r.status(), "readlink");
    fuse_reply_readlink(req, r->c_str());
  });
}

void OpMknod(fuse_req_t req, fuse_ino_t parent, const char* name, mode_t mode, dev_t rdev) {
  Guarded(req, Op::kMknod, [&](DaemonContext& ctx) {
    auto dir = In(ctx, req, parent);
    if (!dir) return;
    NameScope names(ctx, *dir);
    auto r = ctx.fs->Mknod(*dir, name, mode, rdev, MakeCred(req, true));
    if (!r.ok()) return ReplyError(ctx, req, r.status(), "mknod");
    ReplyEntry(ctx, req, *r);
  });
}

void OpMkdir(fuse_req_t req, fuse_ino_t parent, const char* name, mode_t mode) {
  Guarded(req, Op::kMkdir, [&](DaemonContext& ctx) {
    auto dir = In(ctx, req, parent);
    if (!dir) return;
    NameScope names(ctx, *dir);
    auto r = ctx.fs->Mkdir(*dir, name, (mode & 07777) | S_IFDIR, MakeCred(req, true));
    if (!r.ok()) return ReplyError(ctx, req, r.status(), "mkdir");
    ReplyEntry(ctx, req, *r);
  });
}

void OpUnlink(fuse_req_t req, fuse_ino_t parent, const char* name) {
  Guarded(req, Op::kUnlink, [&](DaemonContext& ctx) {
    auto dir = In(ctx, req, parent);
    if (!dir) return;
    Status st = ctx.fs->Unlink(*dir, name);
    if (!st.ok()) return ReplyError(ctx, req, st, "unlink");
    fuse_reply_err(req, 0);
  });
}

void OpRmdir(fuse_req_t req, fuse_ino_t parent, const char* name) {
  Guarded(req, Op::kRmdir, [&](DaemonContext& ctx) {
    auto dir = In(ctx, req, parent);
    if (!dir) return;
    Status st = ctx.fs->Rmdir(*dir, name);
    if (!st.ok()) return ReplyError(ctx, req, st, "rmdir");
    fuse_reply_err(req, 0);
  });
}

void OpSymlink(fuse_req_t req, const char* link, fuse_ino_t parent, const char* name) {
  Guarded(req, Op::kSymlink, [&](DaemonContext& ctx) {
    auto dir = In(ctx, req, parent);
    if (!dir) return;
    NameScope names(ctx, *dir);
    auto r = ctx.fs->Symlink(*dir, name, link, MakeCred(req, true));
    if (!r.ok()) return ReplyError(ctx, req, r.status(), "symlink");
    ReplyEntry(ctx, req, *r);
  });
}

void OpRename(fuse_req_t req, fuse_ino_t parent, const char* name, fuse_ino_t newparent,
              const char* newname, unsigned int flags) {
  Guarded(req, Op::kRename, [&](DaemonContext& ctx) {
    if (flags & ~(kRenameNoReplace | kRenameExchange)) return ReplyErrno(ctx, req, EINVAL);
    auto dir = In(ctx, req, parent);
    if (!dir) return;
    auto new_dir = In(ctx, req, newparent);
    if (!new_dir) return;
    NameScope names(ctx, *dir);
    NameScope new_names(ctx, *new_dir);
    Status st = ctx.fs->Rename(*dir, name, *new_dir, newname, flags);
    if (!st.ok()) return ReplyError(ctx, req, st, "rename");
    fuse_reply_err(req, 0);
  });
}

void OpLink(fuse_req_t req, fuse_ino_t ino, fuse_ino_t newparent, const char* newname) {
  Guarded(req, Op::kLink, [&](DaemonContext& ctx) {
    auto i = In(ctx, req, ino);
    if (!i) return;
    auto new_dir = In(ctx, req, newparent);
    if (!new_dir) return;
    NameScope names(ctx, *new_dir);
    // The node id's generation is checked again under the inode's glock: on a cluster the
    // dinode may have been freed and reused by another node since the kernel looked it up.
    auto r =
        ctx.fs->LinkGeneration(*i, GenerationOf(ino), kNodeIdGenerationMask, *new_dir, newname);
    if (!r.ok()) return ReplyError(ctx, req, r.status(), "link");
    ReplyEntry(ctx, req, *r);
  });
}

// Cluster mounts: an open for reading and writing may back a shared writable mapping, whose
// pages must be filled under EX (WritableOpens).
bool IsUpdateOpen(const DaemonContext& ctx, const fuse_file_info* fi) {
  return ctx.cluster && (fi->flags & O_ACCMODE) == O_RDWR;
}

// Open flags -> reply flags. With dio=fopen, O_DIRECT opens bypass the page cache per request
// (FOPEN_DIRECT_IO; MAP_SHARED on them works once the INIT reply carried DIRECT_IO_ALLOW_MMAP,
// see raw_protocol.h); with dio=kernel they are ordinary cached opens and the kernel's
// direct-I/O path flushes and invalidates the page cache around each request. Other opens keep
// the cache across opens (single node: nobody else changes the data; auto_inval_data still
// drops it when mtime/size change).
void SetOpenReplyFlags(const DaemonContext& ctx, fuse_file_info* fi) {
  // FLUSH does nothing here (writes go straight to the core), so spare the round trip on every
  // close(2). The kernel still flushes its own dirty pages first when writeback_cache is on.
  fi->noflush = 1;
  if ((fi->flags & O_DIRECT) && ctx.opts->dio_fopen) {
    fi->direct_io = 1;
  } else if (ctx.cluster && (fi->flags & O_ACCMODE) != O_RDONLY) {
    // Cluster mounts: a write-through WRITE through the page cache holds its folios locked
    // until it is answered, and answering may need this node's glock promoted, which may need
    // the revoke that waits for those folios (docs/coherence.md). Opens for writing bypass the
    // page cache (mappings still use it). O_APPEND also needs it: the kernel appends at the
    // size it has cached, which another node may have grown since, so the daemon appends at
    // the size under the glock (Append).
    fi->direct_io = 1;
  } else {
    fi->keep_cache = 1;
  }
}

void OpOpen(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
  Guarded(req, Op::kOpen, [&](DaemonContext& ctx) {
    bool trunc = (fi->flags & O_TRUNC) && (fi->flags & O_ACCMODE) != O_RDONLY;
    auto i = In(ctx, req, ino);
    if (!i) return;
    const bool update = IsUpdateOpen(ctx, fi);
    // The node id's generation is checked again under the inode's glock (see OpLink).
    Status st = ctx.fs->OpenGeneration(*i, GenerationOf(ino), kNodeIdGenerationMask, trunc, update,
                                       MakeCred(req, false));
    if (!st.ok()) return ReplyError(ctx, req, st, "open");
    if (update) ctx.writable.Add(*i);
    SetOpenReplyFlags(ctx, fi);
    // A read through this open must update atime (relatime: the file changed since its last
    // access; strictatime: always). Cached pages would serve it without a READ, so drop them
    // for this open instead of keeping them.
    if (fi->keep_cache && (fi->flags & O_ACCMODE) != O_WRONLY && ctx.fs->AtimeDue(*i)) {
      fi->keep_cache = 0;
    }
    if (fuse_reply_open(req, fi) != 0) {
      if (update) ctx.writable.Remove(*i);
      (void)ctx.fs->Release(*i);
    }
  });
}

void OpCreate(fuse_req_t req, fuse_ino_t parent, const char* name, mode_t mode,
              fuse_file_info* fi) {
  Guarded(req, Op::kCreate, [&](DaemonContext& ctx) {
    auto dir = In(ctx, req, parent);
    if (!dir) return;
    NameScope names(ctx, *dir);
    // One core operation (one glock scope): create, or open the file a racing creator made
    // (kExists with O_EXCL, kIsDir for a directory; O_TRUNC empties it). It counts as an open.
    auto r = ctx.fs->Create(*dir, name, mode, (fi->flags & O_EXCL) != 0, (fi->flags & O_TRUNC) != 0,
                            MakeCred(req, true));
    if (!r.ok()) return ReplyError(ctx, req, r.status(), "create");
    if (IsUpdateOpen(ctx, fi)) ctx.writable.Add(r->ino);
    SetOpenReplyFlags(ctx, fi);
    ReplyCreate(ctx, req, *r, fi);
  });
}

// A per-thread read buffer: no allocation per READ (requests are at most 1 MiB). Aligned, so
// that with -o direct the device reads straight into it (O_DIRECT needs aligned memory), without
// a bounce copy. Aligned to and a multiple of 2 MiB, and offered to transparent huge pages: the
// kernel pins the buffer's pages twice per READ (the device's O_DIRECT read into it, the reply's
// copy out of it), and pinning one huge page is one step where 256 small pages were 256.
std::span<uint8_t> ReadBuffer(size_t size) {
  constexpr size_t kHuge = 2 * 1024 * 1024;
  thread_local std::unique_ptr<uint8_t, decltype(&std::free)> buf(nullptr, &std::free);
  thread_local size_t cap = 0;
  if (cap < size) {
    size_t want = (size + kHuge - 1) / kHuge * kHuge;
    buf.reset(static_cast<uint8_t*>(std::aligned_alloc(kHuge, want)));
    cap = buf ? want : 0;
    // Advice only: without THP (or with it off) the buffer is simply made of small pages.
    if (buf) (void)madvise(buf.get(), want, MADV_HUGEPAGE);
  }
  return {buf.get(), cap};
}

// "READ off=N len=N" (and " direct"): the label of a data request's glock holders.
std::string IoLabel(const char* what, InodeNo i, off_t off, size_t size, bool direct) {
  return std::string(what) + " ino=" + std::to_string(i) + " off=" + std::to_string(off) +
         " len=" + std::to_string(size) + (direct ? " direct" : "");
}

// A parked READ or WRITE is a request its process waits in for the inode's glock: the I/O
// policy keeps that process's outer glocks meanwhile (io_policy.h), as gfs2 before the fix did
// for a task faulting on a mapping whose glock was being demoted. Unparked runs first in the
// rerun, whether or not the core is still up.
void NoteParked(DaemonContext& ctx, fuse_req_t req, InodeNo i) {
  if (ctx.io_policy != nullptr) ctx.io_policy->Parked(fuse_req_ctx(req)->pid, i);
}
void NoteUnparked(fuse_req_t req, InodeNo i) {
  DaemonContext& ctx = Ctx(req);
  if (ctx.io_policy != nullptr) ctx.io_policy->Unparked(fuse_req_ctx(req)->pid, i);
}

// Serves a READ (also a parked one, from the revoker's replay threads). The I/O policy decides
// how the inode's glock is held (io_policy.h): DF for O_DIRECT, the cluster's EX shared among
// page fills for files open read-write (WritableOpens), SH otherwise.
void ServeRead(DaemonContext& ctx, fuse_req_t req, InodeNo i, size_t size, off_t off,
               int open_flags) {
  IoScope scope(i);
  auto buf = ReadBuffer(size);
  if (buf.size() < size) return ReplyError(ctx, req, Status::NoSpace("read buffer"), "read");
  const bool direct = (open_flags & O_DIRECT) != 0;
  glock::OwnerScope owner({fuse_req_ctx(req)->pid, IoLabel("READ", i, off, size, direct)});
  const IoMode mode = direct                               ? IoMode::kDeferred
                      : ctx.cluster && ctx.writable.Has(i) ? IoMode::kUpdate
                                                           : IoMode::kShared;
  auto io = [&](uint64_t hold, IoMode m, size_t from, size_t len) {
    return ctx.fs->ReadIo(i, static_cast<uint64_t>(off) + from, buf.subspan(from, len), m, hold);
  };
  auto r = ctx.io_policy != nullptr
               ? ctx.io_policy->Run(fuse_req_ctx(req)->pid, i, mode, false, size, io)
               : io(0, mode, 0, size);
  if (!r.ok()) return ReplyError(ctx, req, r.status(), "read");
  ctx.stats->AddReadBytes(*r);
  fuse_reply_buf(req, reinterpret_cast<const char*>(buf.data()), *r);
}

// The open flags a READ is served under. A READ carries the flags of the file it is sent for, so
// a page fill (readahead, a fault) of a mapping of an O_DIRECT open says O_DIRECT too; only the
// kernel's direct-I/O path names a lock owner (current->files), so a READ without one is a page
// fill and is served as buffered (SH), as gfs2 serves a fault. Asking DF for it while the node
// holds SH would start a revoke that waits for the folio this very READ holds locked.
int ReadFlags(const fuse_file_info* fi) {
  if (fi == nullptr) return 0;
  int flags = fi->flags;
  if (fi->lock_owner == 0) flags &= ~O_DIRECT;
  return flags;
}

void OpRead(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, fuse_file_info* fi) {
  Guarded(req, Op::kRead, [&](DaemonContext& ctx) {
    auto resolved = In(ctx, req, ino);
    if (!resolved) return;
    InodeNo i = *resolved;
    const int flags = ReadFlags(fi);
    // While the inode's pages are being revoked a READ may have to wait (fuse/revoker.h).
    if (ctx.revoker != nullptr &&
        ctx.revoker->Admit(i, Revoker::Kind::kRead, static_cast<uint64_t>(off), size, [&] {
          return Revoker::Rerun([req, i, size, off, flags] {
            NoteUnparked(req, i);
            GuardedImpl(req, Op::kRead, false,
                        [&](DaemonContext& c) { ServeRead(c, req, i, size, off, flags); });
          });
        })) {
      NoteParked(ctx, req, i);
      return;
    }
    ServeRead(ctx, req, i, size, off, flags);
  });
}

// Clears suid/sgid before a write or fallocate by an unprivileged caller, as the kernel's
// file_remove_privs does (setattr_should_drop_suidgid): suid always; sgid if group-executable or
// if the caller is not in the file's group. Buffered writes get a SETATTR from the kernel first,
// but O_DIRECT writes on FOPEN_DIRECT_IO files and fallocate do not. "Unprivileged" is
// approximated as uid != 0 (the daemon cannot see CAP_FSETID). Writeback (writepage) requests
// carry no caller and never clear.
Status DropPrivsFor(DaemonContext& ctx, fuse_req_t req, InodeNo ino, const fuse_file_info* fi) {
  if ((fi != nullptr && fi->writepage) || fuse_req_ctx(req)->uid == 0) return Status::Ok();
  ASSIGN_OR_RETURN(Attr a, ctx.fs->GetAttr(ino));
  if (!S_ISREG(a.mode) || !(a.mode & (S_ISUID | S_ISGID))) return Status::Ok();
  uint32_t kill = a.mode & S_ISUID;
  if (a.mode & S_ISGID) {
    if (a.mode & S_IXGRP) {
      kill |= S_ISGID;
    } else {
      Cred cred = MakeCred(req, true);
      if (cred.gid != a.gid && !cred.InGroup(a.gid)) kill |= S_ISGID;
    }
  }
  if (kill == 0) return Status::Ok();
  SetAttrRequest set;
  set.mask = kSetMode;
  set.mode = a.mode & ~kill;
  RETURN_IF_ERROR(ctx.fs->SetAttr(ino, set, MakeCred(req, false)).status());
  // The kernel keeps the old mode cached (a fallocate reply carries no attributes): drop it.
  // Attribute-only invalidation never waits on pages, so it is safe inside this handler.
  if (ctx.invalidator != nullptr) (void)ctx.invalidator->InvalidateInodeNow(ino, -1, 0);
  return Status::Ok();
}

// Serves a WRITE (also a parked one). `direct`: an O_DIRECT write-through, `writepage`: a
// launder or writeback WRITE.
void ServeWrite(DaemonContext& ctx, fuse_req_t req, InodeNo i, std::span<const uint8_t> data,
                off_t off, const fuse_file_info* fi) {
  Result<size_t> r = [&]() -> Result<size_t> {
    IoScope scope(i);
    RETURN_IF_ERROR(DropPrivsFor(ctx, req, i, fi));
    if (fi->writepage) return ctx.fs->WriteBack(i, static_cast<uint64_t>(off), data);
    if (ctx.cluster && (fi->flags & O_APPEND)) {
      return ctx.fs->Append(i, data, false);  // see SetOpenReplyFlags
    }
    // The I/O policy decides how the glock is held (io_policy.h): DF for O_DIRECT (in place;
    // EX where it needs allocation), EX otherwise.
    const bool direct = (fi->flags & O_DIRECT) != 0;
    glock::OwnerScope owner(
        {fuse_req_ctx(req)->pid, IoLabel("WRITE", i, off, data.size(), direct)});
    const IoMode mode = direct ? IoMode::kDeferred : IoMode::kExclusive;
    auto io = [&](uint64_t hold, IoMode m, size_t from, size_t len) {
      return ctx.fs->WriteIo(i, static_cast<uint64_t>(off) + from, data.subspan(from, len), m,
                             hold);
    };
    if (ctx.io_policy != nullptr) {
      return ctx.io_policy->Run(fuse_req_ctx(req)->pid, i, mode, true, data.size(), io);
    }
    return io(0, mode, 0, data.size());
  }();
  if (!r.ok()) return ReplyError(ctx, req, r.status(), "write");
  // mtime/ctime of a direct write: its DF glock could not change them (gfs2 updates them with
  // file_update_time before the write); every holder of this request is released by now.
  if ((fi->flags & O_DIRECT) && !fi->writepage && *r > 0) ctx.fs->TouchAfterDirectWrite(i);
  // A direct write bypassed this node's page cache: drop the cached pages of the range before
  // the write returns, or a buffered reader (or a mapping) that filled them meanwhile keeps
  // the old data (generic/451). The kernel invalidates only before the write. Safe here: a
  // direct write holds no folio lock or writeback bit of its own (fuse/README.md case N4
  // concerns writeback and partial-page WRITEs, which never carry O_DIRECT), and no core lock
  // is held.
  const bool bypassed = (fi->flags & O_DIRECT) || (ctx.cluster && !(fi->flags & O_APPEND));
  if (bypassed && !fi->writepage && ctx.invalidator != nullptr && *r > 0) {
    Status inv = ctx.invalidator->InvalidateInodeNow(i, off, static_cast<int64_t>(*r));
    if (!inv.ok()) LOG_WARN("write: invalidating the cached range: " << inv.ToString());
  }
  ctx.stats->AddWriteBytes(*r);
  fuse_reply_write(req, *r);
}

void OpWrite(fuse_req_t req, fuse_ino_t ino, const char* data, size_t size, off_t off,
             fuse_file_info* fi) {
  Guarded(req, Op::kWrite, [&](DaemonContext& ctx) {
    auto resolved = In(ctx, req, ino);
    if (!resolved) return;
    InodeNo i = *resolved;
    const auto bytes = std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(data), size);
    // Launder and writeback WRITEs are always served (a revoke waits for them); a write-through
    // WRITE may have to wait while the inode's pages are revoked (fuse/revoker.h). A parked
    // one keeps a copy of its data: libfuse reuses the request buffer.
    const Revoker::Kind kind = fi->writepage ? Revoker::Kind::kWritePage : Revoker::Kind::kWrite;
    if (ctx.revoker != nullptr &&
        ctx.revoker->Admit(i, kind, static_cast<uint64_t>(off), size, [&] {
          auto copy = std::make_shared<std::vector<uint8_t>>(bytes.begin(), bytes.end());
          const fuse_file_info fcopy = *fi;
          return Revoker::Rerun([req, i, off, copy, fcopy] {
            NoteUnparked(req, i);
            GuardedImpl(req, Op::kWrite, false, [&](DaemonContext& c) {
              ServeWrite(c, req, i, std::span<const uint8_t>(*copy), off, &fcopy);
            });
          });
        })) {
      NoteParked(ctx, req, i);
      return;
    }
    ServeWrite(ctx, req, i, bytes, off, fi);
  });
}

void OpFlush(fuse_req_t req, fuse_ino_t, fuse_file_info*) {
  // close(2) does not imply durability; data is already in the core (write-through).
  Guarded(req, Op::kFlush, [&](DaemonContext&) { fuse_reply_err(req, 0); });
}

void OpRelease(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
  Guarded(req, Op::kRelease, [&](DaemonContext& ctx) {
    if (IsUpdateOpen(ctx, fi)) ctx.writable.Remove(Unchecked(ctx, ino));
    Status st = ctx.fs->Release(Unchecked(ctx, ino));
    if (!st.ok()) LOG_WARN("release " << ino << ": " << st.ToString());
    fuse_reply_err(req, 0);  // the kernel ignores release errors
  });
}

void OpFsync(fuse_req_t req, fuse_ino_t ino, int datasync, fuse_file_info*) {
  Guarded(req, Op::kFsync, [&](DaemonContext& ctx) {
    auto i = In(ctx, req, ino);
    if (!i) return;
    Status st = ctx.fs->Fsync(*i, datasync != 0);
    if (!st.ok()) return ReplyError(ctx, req, st, "fsync");
    fuse_reply_err(req, 0);
  });
}

void OpOpendir(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
  Guarded(req, Op::kOpendir, [&](DaemonContext& ctx) {
    auto i = In(ctx, req, ino);
    if (!i) return;
    Status st = ctx.fs->Open(*i, false, MakeCred(req, false));
    if (!st.ok()) return ReplyError(ctx, req, st, "opendir");
    if (fuse_reply_open(req, fi) != 0) (void)ctx.fs->Release(*i);
  });
}

void OpReaddir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, fuse_file_info*) {
  Guarded(req, Op::kReaddir, [&](DaemonContext& ctx) {
    auto dir = In(ctx, req, ino);
    if (!dir) return;
    std::vector<char> buf(size);
    size_t used = 0;
    Status st = ctx.fs->ReadDir(*dir, static_cast<uint64_t>(off), [&](const DirEntry& d) {
      struct stat s = {};
      s.st_ino = d.ino;
      s.st_mode = d.type << 12;
      size_t need = fuse_add_direntry(req, buf.data() + used, size - used, d.name.c_str(), &s,
                                      static_cast<off_t>(d.next_cookie));
      if (need > size - used) return false;
      used += need;
      return true;
    });
    if (!st.ok() && used == 0) return ReplyError(ctx, req, st, "readdir");
    fuse_reply_buf(req, buf.data(), used);
  });
}

void OpReaddirplus(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, fuse_file_info*) {
  Guarded(req, Op::kReaddirplus, [&](DaemonContext& ctx) {
    // Collect first, then stat: no core call runs inside the core's ReadDir callback.
    auto dir = In(ctx, req, ino);
    if (!dir) return;
    NameScope names(ctx, *dir);
    std::vector<DirEntry> entries;
    size_t estimate = 0;
    Status st = ctx.fs->ReadDir(*dir, static_cast<uint64_t>(off), [&](const DirEntry& d) {
      size_t need = fuse_add_direntry_plus(req, nullptr, 0, d.name.c_str(), nullptr, 0);
      if (estimate + need > size) return false;
      estimate += need;
      entries.push_back(d);
      return true;
    });
    if (!st.ok() && entries.empty()) return ReplyError(ctx, req, st, "readdirplus");
    std::vector<char> buf(size);
    std::vector<InodeNo> counted;
    size_t used = 0;
    for (const DirEntry& d : entries) {
      fuse_entry_param e = {};
      bool count = false;
      if (!IsDotOrDotDot(d.name)) {
        auto a = ctx.fs->GetAttr(d.ino);
        if (a.ok()) {
          FillEntry(ctx, *a, &e);
          count = true;
        } else {
          // A damaged or vanished inode: list the name only; its LOOKUP will report the error.
          LOG_DEBUG("readdirplus: getattr " << d.ino << ": " << a.status().ToString());
        }
      }
      if (!count) {  // "." and ".." (and failures) carry no lookup reference: nodeid 0
        e.attr.st_ino = d.ino;
        e.attr.st_mode = d.type << 12;
      }
      size_t need = fuse_add_direntry_plus(req, buf.data() + used, size - used, d.name.c_str(), &e,
                                           static_cast<off_t>(d.next_cookie));
      if (need > size - used) break;
      used += need;
      if (count) {
        ctx.inodes->AddLookup(d.ino, e.generation);
        counted.push_back(d.ino);
      }
    }
    if (fuse_reply_buf(req, buf.data(), used) != 0) {
      for (InodeNo i : counted) ctx.inodes->Forget(i, 1);
    }
  });
}

void OpReleasedir(fuse_req_t req, fuse_ino_t ino, fuse_file_info*) {
  Guarded(req, Op::kReleasedir, [&](DaemonContext& ctx) {
    Status st = ctx.fs->Release(Unchecked(ctx, ino));
    if (!st.ok()) LOG_WARN("releasedir " << ino << ": " << st.ToString());
    fuse_reply_err(req, 0);
  });
}

void OpFsyncdir(fuse_req_t req, fuse_ino_t ino, int datasync, fuse_file_info*) {
  Guarded(req, Op::kFsyncdir, [&](DaemonContext& ctx) {
    auto i = In(ctx, req, ino);
    if (!i) return;
    Status st = ctx.fs->Fsync(*i, datasync != 0);
    if (!st.ok()) return ReplyError(ctx, req, st, "fsyncdir");
    fuse_reply_err(req, 0);
  });
}

void OpStatfs(fuse_req_t req, fuse_ino_t) {
  Guarded(req, Op::kStatfs, [&](DaemonContext& ctx) {
    auto r = ctx.fs->StatFs();
    if (!r.ok()) return ReplyError(ctx, req, r.status(), "statfs");
    struct statvfs s = {};
    s.f_bsize = r->bsize;
    s.f_frsize = r->bsize;
    s.f_blocks = r->blocks;
    s.f_bfree = r->bfree;
    s.f_bavail = r->bavail;
    s.f_files = r->files;
    s.f_ffree = r->ffree;
    s.f_favail = r->ffree;
    s.f_namemax = r->namemax;
    fuse_reply_statfs(req, &s);
  });
}

// Extended attributes (the core stores them in GFS2 EA blocks). Sizes follow getxattr(2): an
// empty request buffer asks for the size.
void OpSetxattr(fuse_req_t req, fuse_ino_t ino, const char* name, const char* value, size_t size,
                int flags) {
  Guarded(req, Op::kSetxattr, [&](DaemonContext& ctx) {
    auto i = In(ctx, req, ino);
    if (!i) return;
    Status st = ctx.fs->SetXattr(
        *i, name, std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(value), size), flags,
        MakeCred(req, true));
    if (!st.ok()) return ReplyError(ctx, req, st, "setxattr");
    fuse_reply_err(req, 0);
  });
}

void OpGetxattr(fuse_req_t req, fuse_ino_t ino, const char* name, size_t size) {
  Guarded(req, Op::kGetxattr, [&](DaemonContext& ctx) {
    auto i = In(ctx, req, ino);
    if (!i) return;
    std::vector<uint8_t> buf(size);
    // A write() asks for security.capability first: as for GETATTR (OpGetattr).
    std::optional<Result<size_t>> kept;
    if (ctx.io_policy != nullptr) {
      ctx.io_policy->UnderKept(fuse_req_ctx(req)->pid, *i, [&](uint64_t hold) {
        kept = ctx.fs->GetXattrUnder(*i, name, buf, hold);
      });
    }
    auto r = kept ? std::move(*kept) : ctx.fs->GetXattr(*i, name, buf);
    if (!r.ok()) return ReplyError(ctx, req, r.status(), "getxattr");
    if (size == 0) {
      fuse_reply_xattr(req, *r);
    } else {
      fuse_reply_buf(req, reinterpret_cast<const char*>(buf.data()), *r);
    }
  });
}

void OpListxattr(fuse_req_t req, fuse_ino_t ino, size_t size) {
  Guarded(req, Op::kListxattr, [&](DaemonContext& ctx) {
    auto i = In(ctx, req, ino);
    if (!i) return;
    std::vector<char> buf(size);
    auto r = ctx.fs->ListXattr(*i, buf, MakeCred(req, false));
    if (!r.ok()) return ReplyError(ctx, req, r.status(), "listxattr");
    if (size == 0) {
      fuse_reply_xattr(req, *r);
    } else {
      fuse_reply_buf(req, buf.data(), *r);
    }
  });
}

void OpRemovexattr(fuse_req_t req, fuse_ino_t ino, const char* name) {
  Guarded(req, Op::kRemovexattr, [&](DaemonContext& ctx) {
    auto i = In(ctx, req, ino);
    if (!i) return;
    Status st = ctx.fs->RemoveXattr(*i, name);
    if (!st.ok()) return ReplyError(ctx, req, st, "removexattr");
    fuse_reply_err(req, 0);
  });
}

void OpAccess(fuse_req_t req, fuse_ino_t ino, int) {
  // default_permissions: the kernel checks mode bits; only existence is checked here.
  Guarded(req, Op::kAccess, [&](DaemonContext& ctx) {
    auto i = In(ctx, req, ino);
    if (!i) return;
    auto r = ctx.fs->GetAttr(*i);
    if (!r.ok()) return ReplyError(ctx, req, r.status(), "access");
    if (StaleAttr(ctx, req, ino, *r)) return;
    fuse_reply_err(req, 0);
  });
}

void OpFallocate(fuse_req_t req, fuse_ino_t ino, int mode, off_t off, off_t len, fuse_file_info*) {
  Guarded(req, Op::kFallocate, [&](DaemonContext& ctx) {
    if (off < 0 || len <= 0) return ReplyErrno(ctx, req, EINVAL);
    auto i = In(ctx, req, ino);
    if (!i) return;
    // gfs2_fallocate calls file_modified(): every mode, punch and zero-range included.
    if (Status k = DropPrivsFor(ctx, req, *i, nullptr); !k.ok()) {
      return ReplyError(ctx, req, k, "fallocate");
    }
    Status st = ctx.fs->Fallocate(*i, mode, static_cast<uint64_t>(off), static_cast<uint64_t>(len));
    if (!st.ok()) return ReplyError(ctx, req, st, "fallocate");
    fuse_reply_err(req, 0);
  });
}

void OpLseek(fuse_req_t req, fuse_ino_t ino, off_t off, int whence, fuse_file_info*) {
  Guarded(req, Op::kLseek, [&](DaemonContext& ctx) {
    // The kernel handles SEEK_SET/CUR/END itself and only asks for SEEK_DATA/SEEK_HOLE.
    if (whence != SEEK_DATA && whence != SEEK_HOLE) return ReplyErrno(ctx, req, EINVAL);
    // As the kernel's generic SEEK_DATA/SEEK_HOLE: a negative offset lies before every byte of
    // data and every hole, so there is none to find (ENXIO, not EINVAL).
    if (off < 0) return ReplyErrno(ctx, req, ENXIO);
    auto i = In(ctx, req, ino);
    if (!i) return;
    auto r = ctx.fs->Lseek(*i, static_cast<uint64_t>(off), whence);
    if (!r.ok()) return ReplyError(ctx, req, r.status(), "lseek");
    fuse_reply_lseek(req, static_cast<off_t>(*r));
  });
}

void OpCopyFileRange(fuse_req_t req, fuse_ino_t ino_in, off_t off_in, fuse_file_info*,
                     fuse_ino_t ino_out, off_t off_out, fuse_file_info*, size_t len, int flags) {
  Guarded(req, Op::kCopyFileRange, [&](DaemonContext& ctx) {
    if (flags != 0 || off_in < 0 || off_out < 0) return ReplyErrno(ctx, req, EINVAL);
    auto in = In(ctx, req, ino_in);
    if (!in) return;
    auto out = In(ctx, req, ino_out);
    if (!out) return;
    auto r = ctx.fs->CopyFileRange(*in, static_cast<uint64_t>(off_in), *out,
                                   static_cast<uint64_t>(off_out), len);
    if (!r.ok()) return ReplyError(ctx, req, r.status(), "copy_file_range");
    ctx.stats->AddReadBytes(*r);
    ctx.stats->AddWriteBytes(*r);
    fuse_reply_write(req, *r);
  });
}

void OpDestroy(void* userdata) {
  auto& ctx = *static_cast<DaemonContext*>(userdata);
  ctx.stats->Count(Op::kDestroy);
  (void)ShutdownCore(ctx);
}

}  // namespace

Status ShutdownCore(DaemonContext& ctx) {
  ctx.core_down.store(true);
  // No synchronous notification from here on (the kernel may be unmounting and waiting for
  // us); parked requests are answered (EIO now that the core is going).
  if (ctx.kernel_cache != nullptr) ctx.kernel_cache->BeginShutdown();
  if (ctx.revoker != nullptr) ctx.revoker->Shutdown();
  // Glocks an I/O policy keeps across requests go now: a naive deadlock ends here, so that the
  // handlers caught in it finish below.
  if (ctx.io_policy != nullptr) ctx.io_policy->Stop();
  // Handlers that passed the core_down check finish their core call; bounded, so that a stuck
  // request cannot keep the unmount (and umount(2) waiting on DESTROY) forever.
  {
    std::unique_lock<std::mutex> d(ctx.drain_mu);
    if (!ctx.drain_cv.wait_for(d, std::chrono::seconds(60),
                               [&] { return ctx.in_flight.load() == 0; })) {
      LOG_ERROR("unmount: " << ctx.in_flight.load()
                            << " requests still running after 60 s; unmounting anyway");
    }
  }
  // Not held while draining: a running handler may need it (a remount it triggers).
  std::lock_guard<std::mutex> l(ctx.shutdown_mu);
  if (ctx.core_unmounted) return ctx.unmount_status;
  // A journal recovery for a failed node uses the core: let it finish, start no more (the
  // other survivors recover it; our lockspace membership ends with this mount).
  if (ctx.stop_recovery) ctx.stop_recovery();
  {
    // Waits for a control-socket call into the core (a glock demote or dump) to finish; later
    // ones see core_down. The core may notify the kernel cache while it unmounts (KernelCache
    // calls only queue; main keeps the bridge alive until after this).
    std::unique_lock<std::shared_mutex> core(ctx.core_mu);
    ctx.unmount_status = ctx.fs->Unmount();
  }
  if (!ctx.unmount_status.ok()) LOG_ERROR("unmount: " << ctx.unmount_status.ToString());
  ctx.core_unmounted = true;
  return ctx.unmount_status;
}

fuse_lowlevel_ops MakeLowlevelOps() {
  fuse_lowlevel_ops ops = {};
  ops.init = OpInit;
  ops.destroy = OpDestroy;
  ops.lookup = OpLookup;
  ops.forget = OpForget;
  ops.forget_multi = OpForgetMulti;
  ops.getattr = OpGetattr;
  ops.setattr = OpSetattr;
  ops.readlink = OpReadlink;
  ops.mknod = OpMknod;
  ops.mkdir = OpMkdir;
  ops.unlink = OpUnlink;
  ops.rmdir = OpRmdir;
  ops.symlink = OpSymlink;
  ops.rename = OpRename;
  ops.link = OpLink;
  ops.open = OpOpen;
  ops.create = OpCreate;
  ops.read = OpRead;
  ops.write = OpWrite;
  ops.flush = OpFlush;
  ops.release = OpRelease;
  ops.fsync = OpFsync;
  ops.opendir = OpOpendir;
  ops.readdir = OpReaddir;
  ops.readdirplus = OpReaddirplus;
  ops.releasedir = OpReleasedir;
  ops.fsyncdir = OpFsyncdir;
  ops.statfs = OpStatfs;
  ops.setxattr = OpSetxattr;
  ops.getxattr = OpGetxattr;
  ops.listxattr = OpListxattr;
  ops.removexattr = OpRemovexattr;
  ops.access = OpAccess;
  ops.fallocate = OpFallocate;
  ops.lseek = OpLseek;
  ops.copy_file_range = OpCopyFileRange;
  return ops;
}

}  // namespace ugfs2::fusefs
