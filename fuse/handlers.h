// Handlers: one thin function per FUSE lowlevel operation: unpack -> FileSystem call -> reply.
// They contain no filesystem logic. Each is noexcept at the C boundary: an escaping exception is
// logged and answered with EIO. MakeLowlevelOps() fills the one ops table.
// Thread safety: handlers run concurrently on libfuse worker threads.
#ifndef UGFS2_FUSE_HANDLERS_H_
#define UGFS2_FUSE_HANDLERS_H_

#include "fuse_includes.h"

namespace ugfs2::fusefs {

// The complete lowlevel ops table of the daemon.
fuse_lowlevel_ops MakeLowlevelOps();

}  // namespace ugfs2::fusefs

#endif  // UGFS2_FUSE_HANDLERS_H_
