// DaemonContext: the runtime state the FUSE handlers share (the session's userdata). Built by
// main after the core is mounted; lives until the session is destroyed.
// Thread safety: the pointers are set once before the session starts; the pointees are
// thread-safe.
#ifndef UGFS2_FUSE_DAEMON_CONTEXT_H_
#define UGFS2_FUSE_DAEMON_CONTEXT_H_

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <shared_mutex>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "fs/file_system.h"
#include "inode_table.h"
#include "options.h"
#include "request_stats.h"

struct fuse_session;

namespace ugfs2::fusefs {

class CacheInvalidator;
class IoPolicy;
class KernelCacheBridge;
class MountWatcher;
class RawProtocol;
class Revoker;

// Files this node has open for reading and writing (cluster mounts): their pages are filled
// under EX (FileSystem::ReadForUpdate), since a shared writable mapping dirties them unseen.
// Thread safety: thread-safe; mu_ is a leaf lock.
class WritableOpens {
 public:
  void Add(InodeNo ino) {
    std::lock_guard<std::mutex> l(mu_);
    ++count_[ino];
  }
  void Remove(InodeNo ino) {
    std::lock_guard<std::mutex> l(mu_);
    auto it = count_.find(ino);
    if (it != count_.end() && --it->second == 0) count_.erase(it);
  }
  bool Has(InodeNo ino) const {
    std::lock_guard<std::mutex> l(mu_);
    return count_.count(ino) != 0;
  }

 private:
  mutable std::mutex mu_;
  std::unordered_map<InodeNo, int> count_;
};

struct DaemonContext {
  FileSystem* fs = nullptr;
  InodeTable* inodes = nullptr;
  RequestStats* stats = nullptr;
  const Options* opts = nullptr;
  bool dont_mask = false;  // set at INIT: the kernel leaves the umask to us (Cred::umask)
  fuse_session* session = nullptr;
  CacheInvalidator* invalidator = nullptr;    // kernel cache notifications; may be null
  KernelCacheBridge* kernel_cache = nullptr;  // the core's KernelCache; may be null
  Revoker* revoker = nullptr;                 // the two-phase page revoke; null: revoke=async
  IoPolicy* io_policy = nullptr;              // how data requests hold glocks; null: merged
  bool cluster = false;                       // a lock_dlm mount through the cluster
  WritableOpens writable;                     // used on cluster mounts only
  // The lock manager's counters (cluster mounts; ClusterMember::Counters), for the control
  // request "counters". Empty on a single-node mount.
  std::function<std::vector<std::pair<std::string, uint64_t>>()> lock_counters;
  // Cluster mounts: what `ugfs2-tool recovery` prints (ClusterMember::RecoveryStatus), and
  // what ShutdownCore calls before the core unmounts (stops journal recoveries of failed
  // nodes: ClusterMember::SetRecoverer(nullptr)). Empty on a single-node mount.
  std::function<std::string()> recovery_status;
  // The glock dump's first line without the policy ("N: id:I name:H table:T"; docs/deadlocks.md).
  std::string node_header;
  std::function<void()> stop_recovery;
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
