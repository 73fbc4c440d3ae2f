// DaemonContext: the runtime state the FUSE handlers share (the session's userdata). Built by
// main after the core is mounted; lives until the session is destroyed.
// Thread safety: the pointers are set once before the session starts; the pointees are
// thread-safe.
#ifndef UGFS2_FUSE_DAEMON_CONTEXT_H_
#define UGFS2_FUSE_DAEMON_CONTEXT_H_

#include <atomic>
#include <condition_variable>
#include <mutex>
#include <shared_mutex>

#include "fs/file_system.h"
#include "inode_table.h"
#include "options.h"
#include "request_stats.h"

struct fuse_session;

namespace ugfs2::fusefs {

class CacheInvalidator;
class MountWatcher;
class RawProtocol;

struct DaemonContext {
  FileSystem* fs = nullptr;
  InodeTable* inodes = nullptr;
  RequestStats* stats = nullptr;
  const Options* opts = nullptr;
  bool dont_mask = false;  // set at INIT: the kernel leaves the umask to us (Cred::umask)
  fuse_session* session = nullptr;
  CacheInvalidator* invalidator = nullptr;  // kernel cache notifications; may be null
  RawProtocol* raw = nullptr;
  // Remounts that bypass the control socket: while the core is read-only because of a remount
  // (`remounted_ro`), a modifying request re-checks the kernel's state through the watcher first.
  MountWatcher* watcher = nullptr;
  std::atomic<bool> remounted_ro{
      false};  // protocol patches (allow mmap on O_DIRECT opens); may be null

  // Shutdown (see ShutdownCore in handlers.h): every handler counts itself in `in_flight` and
  // then checks `core_down`; ShutdownCore sets `core_down` and waits for `in_flight` to drain
  // before unmounting the core, so no handler touches an unmounted core.
  std::atomic<int> in_flight{0};
  std::atomic<bool> core_down{false};
  std::mutex drain_mu;  // pairs with drain_cv; leaf lock
  std::condition_variable drain_cv;
  // Serializes the core's unmount and remounts (held while the core unmounts or switches).
  // Lock order: MountWatcher::mu_ -> shutdown_mu -> core_mu.
  std::mutex shutdown_mu;
  bool core_unmounted = false;  // guarded by shutdown_mu
  Status unmount_status;        // guarded by shutdown_mu
  // Keeps the core mounted under control-socket calls that do not go through shutdown_mu (glock
  // dumps and demotes, which must work while a remount is stuck): held shared by them (after
  // checking core_down), exclusively by ShutdownCore around FileSystem::Unmount.
  std::shared_mutex core_mu;
};

}  // namespace ugfs2::fusefs

#endif  // UGFS2_FUSE_DAEMON_CONTEXT_H_
