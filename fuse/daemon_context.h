// DaemonContext: the runtime state the FUSE handlers share (the session's userdata). Built by
// main after the core is mounted; lives until the session is destroyed.
// Thread safety: the pointers are set once before the session starts; the pointees are
// thread-safe.
#ifndef UGFS2_FUSE_DAEMON_CONTEXT_H_
#define UGFS2_FUSE_DAEMON_CONTEXT_H_

#include "fs/file_system.h"
#include "inode_table.h"
#include "options.h"
#include "request_stats.h"

struct fuse_session;

namespace ugfs2::fusefs {

struct DaemonContext {
  FileSystem* fs = nullptr;
  InodeTable* inodes = nullptr;
  RequestStats* stats = nullptr;
  const Options* opts = nullptr;
  fuse_session* session = nullptr;
};

}  // namespace ugfs2::fusefs

#endif  // UGFS2_FUSE_DAEMON_CONTEXT_H_
