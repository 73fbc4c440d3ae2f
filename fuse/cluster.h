// ClusterMember: what a lock_dlm mount needs from the cluster before the core mounts: the node's
// corosync (its cluster name must match the volume's lock table), quorum, membership of the
// volume's lockspace (named after the lock table's filesystem part, as gfs2's) and the lock
// module the core's glocks run over (dlm/glock_lock_module.h).
//
// Join checks, in order, with a message a human can act on: the lock table is "CLUSTER:FSNAME";
// corosync answers; its cluster_name is CLUSTER; the node becomes quorate and a member of the
// lockspace within the timeout. Leave (after the core's Unmount) unlocks everything, leaves the
// lockspace and disconnects; the FileSystem must be destroyed only after it (no callback may
// reach it any more).
//
// Counters(): what this node sent to the lock manager (`ugfs2-tool counters MNT`; names in
// docs/cluster.md).
//
// Thread safety: Join and Leave from one thread; fenced() and Counters() from any (Counters()
// only between Join and Leave).
#ifndef UGFS2_FUSE_CLUSTER_H_
#define UGFS2_FUSE_CLUSTER_H_

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "common/status.h"
#include "glock/glock_runner.h"

namespace ugfs2::dlm {
class CpgTransport;
class Lockspace;
class DlmLockModule;
}  // namespace ugfs2::dlm

namespace ugfs2::fusefs {

class ClusterMember {
 public:
  ClusterMember();
  ~ClusterMember();
  ClusterMember(const ClusterMember&) = delete;
  ClusterMember& operator=(const ClusterMember&) = delete;

  Status Join(const std::string& locktable, std::chrono::milliseconds timeout);
  Status Leave(std::chrono::milliseconds timeout);
  glock::LockModule* lock_module();
  bool fenced() const { return fenced_.load(); }
  std::string Describe() const;  // "cluster C, lockspace L, node N"
  // (name, value): dlm_* the CPG transport's, ls_* the lockspace's, lm_* the lock module's.
  std::vector<std::pair<std::string, uint64_t>> Counters() const;

 private:
  std::unique_ptr<dlm::CpgTransport> transport_;
  std::unique_ptr<dlm::Lockspace> ls_;
  std::unique_ptr<dlm::DlmLockModule> lm_;
  std::string cluster_, fsname_;
  std::atomic<bool> fenced_{false};
  bool ipc_registered_ = false;  // the lockspace is inspectable through ugfs2-tool (ipc_server.h)
};

}  // namespace ugfs2::fusefs

#endif  // UGFS2_FUSE_CLUSTER_H_
