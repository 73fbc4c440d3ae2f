// Handlers: one thin function per FUSE lowlevel operation: unpack -> FileSystem call -> reply.
// They contain no filesystem logic. Each is noexcept at the C boundary: an escaping exception is
// logged and answered with EIO. MakeLowlevelOps() fills the one ops table.
// Thread safety: handlers run concurrently on libfuse worker threads.
#ifndef UGFS2_FUSE_HANDLERS_H_
#define UGFS2_FUSE_HANDLERS_H_

#include "common/status.h"
#include "daemon_context.h"
#include "fuse_includes.h"

namespace ugfs2::fusefs {

// The complete lowlevel ops table of the daemon.
fuse_lowlevel_ops MakeLowlevelOps();

// Unmounts the core exactly once: stops new handlers, waits (bounded) for running ones, then
// FileSystem::Unmount (flush, clean journal header, release the device claim). FUSE_DESTROY
// calls it before its reply, so on a fuseblk mount umount(2) returns only after this; main calls
// it again after the session (a no-op then) for mounts that never got DESTROY.
Status ShutdownCore(DaemonContext& ctx);

}  // namespace ugfs2::fusefs

#endif  // UGFS2_FUSE_HANDLERS_H_
