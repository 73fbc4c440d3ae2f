// WriteGate: whether this node may still write the shared disk (cluster mounts; see
// docs/recovery.md). A gated device (GateWrites) asks it before every WriteAt and Flush.
//
//  * Close(reason): this node was fenced (lost quorum, its lockspace was evicted, it noticed
//    it was dead). For good: every later write fails with kFenced (EIO up the stack), and the
//    log breaks, so the mount refuses every further change; only an unmount and a fresh mount
//    (a new lockspace member, its journal recovered by the survivors) write again.
//  * SetLease(valid): the membership lease. While valid() answers false a write waits for it
//    (at most `lease_wait`) instead of failing, since a node whose heartbeat is merely late is
//    renewed soon; if the gate closes meanwhile, or the wait runs out, the write fails kFenced.
//    The survivors start replaying a failed node's journal only after its lease has surely run
//    out, so a node that was frozen cannot write past that point, except for a write that had
//    already passed this check when it froze (the residual window; docs/recovery.md).
//
// Thread safety: every method may be called from any thread; Check is lock-free except while
// the lease is invalid (it then polls, bounded, without holding anything).
#ifndef UGFS2_SRC_BLOCK_WRITE_GATE_H_
#define UGFS2_SRC_BLOCK_WRITE_GATE_H_

#include <atomic>
#include <chrono>
#include <functional>
#include <memory>
#include <mutex>
#include <string>

#include "block/block_device.h"
#include "common/status.h"

namespace ugfs2 {

class WriteGate {
 public:
  WriteGate() = default;
  WriteGate(const WriteGate&) = delete;
  WriteGate& operator=(const WriteGate&) = delete;

  void Close(const std::string& reason);
  bool closed() const { return closed_.load(); }
  std::string reason() const;
  // Set once, before the first write. `lease_wait`: how long a write waits for a renewal.
  void SetLease(std::function<bool()> valid, std::chrono::milliseconds lease_wait);
  // OK, or kFenced with the reason.
  Status Check();
  uint64_t refused() const { return refused_.load(); }
  uint64_t lease_waits() const { return lease_waits_.load(); }

 private:
  std::atomic<bool> closed_{false};
  mutable std::mutex mu_;  // leaf; guards reason_
  std::string reason_;
  std::function<bool()> lease_;  // set before the first write, then read-only
  std::chrono::milliseconds lease_wait_{0};
  std::atomic<uint64_t> refused_{0}, lease_waits_{0};
};

// Wraps `dev`: WriteAt and Flush ask `gate` first; reads pass.
std::unique_ptr<BlockDevice> GateWrites(std::unique_ptr<BlockDevice> dev,
                                        std::shared_ptr<WriteGate> gate);

}  // namespace ugfs2

#endif  // UGFS2_SRC_BLOCK_WRITE_GATE_H_
