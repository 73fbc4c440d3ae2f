// Transport: a process-group messaging service with totally ordered (agreed) delivery and
// virtual synchrony, the contract corosync CPG provides. One Transport object is one process's
// membership in one group (one lockspace).
//
// Contract the lock manager relies on:
//  * Every message multicast by a member is delivered to all members of the configuration in
//    which it was sent, in one total order that is the same at every member, including the
//    sender itself; messages of one sender stay in FIFO order.
//  * Configuration changes are delivered at the same position of that stream at every member that
//    survives them. A member's own join is the first event it sees.
//  * Quorum: OnQuorum(true) is reported only when the transport knows the current membership has
//    quorum; after a configuration change that removes members it first reports OnQuorum(false)
//    or re-confirms with OnQuorum(true) for the new configuration.
//
// Thread safety: Multicast() may be called from any thread and never blocks on the network.
// Listener callbacks come from one transport thread (or, for the in-process transport, from the
// test's driving thread), never concurrently with each other.
#ifndef UGFS2_DLM_TRANSPORT_H_
#define UGFS2_DLM_TRANSPORT_H_

#include <cstdint>
#include <utility>
#include <vector>

#include "common/status.h"
#include "lock_table.h"
#include "types.h"

namespace ugfs2::dlm {

class TransportListener {
 public:
  virtual ~TransportListener() = default;
  virtual void OnDeliver(const MemberId& from, const uint8_t* data, size_t len) = 0;
  virtual void OnConfChg(const std::vector<MemberId>& members,
                         const std::vector<std::pair<MemberId, LeaveReason>>& left,
                         const std::vector<MemberId>& joined) = 0;
  virtual void OnQuorum(bool quorate) = 0;
  // The transport is dead (e.g. corosync exited). No further callbacks follow.
  virtual void OnFatal(const Status& why) = 0;
};

class Transport {
 public:
  virtual ~Transport() = default;
  // Registers `listener` (which must outlive the transport's use of it) and starts quorum
  // reporting. Group events flow only while joined.
  virtual Status Start(TransportListener* listener) = 0;
  // Joins / leaves the group. Asynchronous, may be called from a listener callback; the join
  // shows up as a confchg listing us as joined. After Leave, quorum reports continue.
  virtual Status Join() = 0;
  virtual Status Leave() = 0;
  // Detaches the listener for good: after it returns no more callbacks are made. Not from a
  // listener callback.
  virtual void Stop() = 0;
  virtual Status Multicast(std::vector<uint8_t> msg) = 0;
  virtual MemberId self() const = 0;
};

}  // namespace ugfs2::dlm

#endif  // UGFS2_DLM_TRANSPORT_H_
