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
// Node failure (docs/recovery.md): the lockspace calls its recovery hook on every survivor when a
// member fails; a recovery thread of this class then runs the fence agent if one is configured
// (and waits for it; a failure is retried, nothing is replayed before it succeeds) or else
// waits `recovery_delay` (the failed node's write lease runs out meanwhile), runs the
// filesystem's journal recovery (SetRecoverer) and only then tells the lockspace RecoveryDone,
// which releases the failed node's locks. When the lockspace
// fences this node, the write gate (SetWriteGate) closes for good. RecoveryStatus() is what
// `ugfs2-tool recovery MNT` prints.
//
// Thread safety: Join and Leave from one thread; fenced(), Counters(), SetRecoverer,
// SetWriteGate and RecoveryStatus from any (Counters() only between Join and Leave). Lock order:
// `mu_` is a leaf (the recoverer and the agent run without it).
#ifndef UGFS2_FUSE_CLUSTER_H_
#define UGFS2_FUSE_CLUSTER_H_

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "block/write_gate.h"
#include "common/status.h"
#include "fs/file_system.h"
#include "glock/glock_runner.h"

namespace ugfs2::dlm {
class CpgTransport;
class Lockspace;
class DlmLockModule;
}  // namespace ugfs2::dlm

namespace ugfs2::fusefs {

struct ClusterOptions {
  // See Options::fence_agent. Empty: no agent.
  std::string fence_agent;
  // How long the agent may take before it counts as failed.
  std::chrono::milliseconds fence_timeout{60000};
  // Without a fence agent, survivors wait this long after a failure before replaying. 0: the
  // lockspace's write lease (plus a margin) when it has one. A fence agent's success replaces
  // the wait.
  std::chrono::milliseconds recovery_delay{0};
};

class ClusterMember {
 public:
  using Recoverer = std::function<Result<RecoveryReport>()>;

  ClusterMember();
  ~ClusterMember();
  ClusterMember(const ClusterMember&) = delete;
  ClusterMember& operator=(const ClusterMember&) = delete;

  Status Join(const std::string& locktable, std::chrono::milliseconds timeout,
              ClusterOptions options = {});
  // The filesystem's journal recovery, once mounted; nullptr (before the unmount) stops
  // recoveries from starting and waits for a running one. Failures noticed before it is set
  // are recovered once it is.
  void SetRecoverer(Recoverer fn);
  // Closed (for good) when the lockspace fences this node; its lease is the lockspace's.
  void SetWriteGate(std::shared_ptr<WriteGate> gate);
  std::string RecoveryStatus() const;
  Status Leave(std::chrono::milliseconds timeout);
  glock::LockModule* lock_module();
  bool fenced() const { return fenced_.load(); }
  std::string Describe() const;  // "cluster C, lockspace L, node N"
  uint32_t NodeId() const;       // this node's id in the lockspace (0 before Join)
  // (name, value): dlm_* the CPG transport's, ls_* the lockspace's, lm_* the lock module's.
  std::vector<std::pair<std::string, uint64_t>> Counters() const;

 private:
  struct NodeRecovery {
    std::string state = "waiting";  // waiting, fencing, replaying, done, failed (retrying)
    std::chrono::steady_clock::time_point failed_at, retry_at, done_at;
    int attempts = 0;
    int failures = 0;         // how often this node failed since we joined
    bool agent_done = false;  // the fence agent fenced it (this failure)
    std::string fence;        // the agent's outcome
    std::string detail;       // the last error, or what the recovery did
  };
  void RecoveryThread();
  Status RunFenceAgent(uint32_t nodeid, std::string* outcome);

  ClusterOptions options_;
  mutable std::mutex mu_;  // leaf; pairs with cv_
  std::condition_variable cv_;
  bool stop_ = false;
  bool running_ = false;  // the recoverer is running (SetRecoverer(nullptr) waits for it)
  Recoverer recoverer_;
  std::deque<uint32_t> pending_;  // failed nodes whose recovery is not done
  std::map<uint32_t, NodeRecovery> recoveries_;
  std::vector<JournalRecovery> last_journals_;  // what the last successful recovery found
  uint32_t last_live_ = 0;
  std::shared_ptr<WriteGate> gate_;
  std::chrono::milliseconds lease_wait_{0};  // how long a write waits for a late lease renewal
  std::thread recovery_thread_;

  std::unique_ptr<dlm::CpgTransport> transport_;
  std::unique_ptr<dlm::Lockspace> ls_;
  std::unique_ptr<dlm::DlmLockModule> lm_;
  std::atomic<dlm::DlmLockModule*> lm_raw_{nullptr};  // lm_, for the fence hook
  std::string cluster_, fsname_;
  std::atomic<bool> fenced_{false};
  bool ipc_registered_ = false;  // the lockspace is inspectable through ugfs2-tool (ipc_server.h)
};

}  // namespace ugfs2::fusefs

#endif  // UGFS2_FUSE_CLUSTER_H_
