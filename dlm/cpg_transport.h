// CpgTransport: the Transport over corosync CPG (agreed ordering) and votequorum.
//
// One event-loop thread per transport epolls on the CPG fd, the votequorum fd, an eventfd
// (commands and queued sends from other threads) and a timerfd (CS_ERR_TRY_AGAIN retries, quorum
// settling). All CPG/votequorum callbacks, hence all listener callbacks, run on that thread.
// Multicast() sends directly from the caller's thread when nothing is queued (lowest latency);
// otherwise messages are queued and the loop flushes them, packing several into one CPG message.
// It never sleeps on the loop thread. Losing the corosync connection (POLLHUP, dispatch error) is
// reported once through OnFatal and stops the loop.
//
// libcpg: the loop thread is the only one that dispatches; every call that writes the CPG
// request channel (mcast, join, leave, reconnect) is serialised by one send mutex, so sends
// from API threads and the loop's own calls never interleave on the connection.
//
// Quorum: OnQuorum(q) is reported only once the votequorum view matches the CPG totem ring (ring
// ids equal), like dlm_controld's ring-id check, and is re-reported after every membership change
// that removed members.
//
// Counters (Counters()): what this node handed to corosync and what corosync delivered to it,
// relaxed atomics bumped where the send or delivery already happens (no lock of their own).
//
// Thread safety: all public methods from any thread (Stop() not from a listener callback).
#ifndef UGFS2_DLM_CPG_TRANSPORT_H_
#define UGFS2_DLM_CPG_TRANSPORT_H_

#include <atomic>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "common/status.h"
#include "transport.h"

namespace ugfs2::dlm {

// Since the transport was created. A "message" is one Multicast() (one lockspace message); the
// loop may pack several into one CPG message (`mcasts` counts those).
struct CpgTransportCounters {
  uint64_t msgs_sent = 0;        // messages corosync accepted from this node (cpg_mcast_joined OK)
  uint64_t bytes_sent = 0;       // their bytes (payload, without the 4-byte frame headers)
  uint64_t mcasts = 0;           // successful cpg_mcast_joined calls (one or more messages each)
  uint64_t send_queued = 0;      // messages that waited in the send queue (TRY_AGAIN, or a queue)
  uint64_t msgs_delivered = 0;   // messages delivered to this node (every member's, ours too)
  uint64_t bytes_delivered = 0;  // their bytes
};

class CpgTransport final : public Transport {
 public:
  // Connects to the local corosync; `group` is the CPG group name (e.g. "ugfs2:ls:NAME").
  static Result<std::unique_ptr<CpgTransport>> Create(const std::string& group);
  ~CpgTransport() override;

  Status Start(TransportListener* listener) override;
  Status Join() override;
  Status Leave() override;
  void Stop() override;
  Status Multicast(std::vector<uint8_t> msg) override;
  MemberId self() const override { return self_; }
  CpgTransportCounters Counters() const;

  // Implementation details (public for the C trampolines).
  struct Impl;

 private:
  CpgTransport() = default;
  std::unique_ptr<Impl> impl_;
  MemberId self_;
};

// The local corosync's cluster name (cmap totem.cluster_name). kNotConnected when corosync does
// not answer.
Result<std::string> CorosyncClusterName();

}  // namespace ugfs2::dlm

#endif  // UGFS2_DLM_CPG_TRANSPORT_H_
