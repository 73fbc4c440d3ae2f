#include "cluster.h"

#include "common/log.h"
#include "cpg_transport.h"
#include "glock_lock_module.h"
#include "ipc_server.h"
#include "lockspace.h"

namespace ugfs2::fusefs {

ClusterMember::ClusterMember() = default;

ClusterMember::~ClusterMember() { (void)Leave(std::chrono::seconds(10)); }

Status ClusterMember::Join(const std::string& locktable, std::chrono::milliseconds timeout) {
  const size_t colon = locktable.find(':');
  if (colon == std::string::npos || colon == 0 || colon + 1 == locktable.size() ||
      locktable.find(':', colon + 1) != std::string::npos) {
    return Status::Invalid("lock table '" + locktable +
                           "' is not CLUSTER:FSNAME (fix it with tunegfs2 -o locktable=...)");
  }
  cluster_ = locktable.substr(0, colon);
  fsname_ = locktable.substr(colon + 1);
  ASSIGN_OR_RETURN(std::string name, dlm::CorosyncClusterName());
  if (name != cluster_) {
    return Status::Invalid("this node's corosync runs cluster '" + name +
                           "' but the volume belongs to cluster '" + cluster_ + "' (lock table " +
                           locktable + ")");
  }
  auto tr = dlm::CpgTransport::Create("ugfs2:ls:" + fsname_);
  if (!tr.ok()) return tr.status().WithContext("joining corosync process group");
  transport_ = std::move(*tr);
  dlm::LockspaceOptions o;
  o.name = fsname_;
  o.fence_hook = [this](bool fenced) {
    fenced_ = fenced;
    if (fenced) {
      LOG_ERROR("lockspace " << fsname_ << ": this node lost quorum and fenced itself");
    } else {
      LOG_INFO("lockspace " << fsname_ << ": serving again");
    }
  };
  ls_ = std::make_unique<dlm::Lockspace>(transport_.get(), o);
  RETURN_IF_ERROR(ls_->Join().WithContext("joining lockspace " + fsname_));
  Status st = ls_->WaitMember(timeout);
  if (!st.ok()) {
    const dlm::LockspaceInfo info = ls_->Info();
    if (!info.quorate) {
      return Status(Code::kTimedOut, "this node is not quorate in cluster '" + cluster_ +
                                         "' (waited " + std::to_string(timeout.count() / 1000) +
                                         " s): start corosync on enough nodes");
    }
    return st.WithContext("joining lockspace " + fsname_);
  }
  lm_ = std::make_unique<dlm::DlmLockModule>(ls_.get());
  // `ugfs2-tool ls` and `ugfs2-tool lockdump FSNAME [--all-nodes]` on this node talk to this
  // process (libqb IPC; one server per process, per network namespace).
  if (Status ipc = dlm::StartDlmIpcServer(); ipc.ok()) {
    dlm::RegisterLockspace(ls_.get());
    ipc_registered_ = true;
  } else {
    LOG_WARN("lock manager inspection (ugfs2-tool ls/lockdump) unavailable: " << ipc.ToString());
  }
  LOG_INFO("joined " << Describe());
  return Status::Ok();
}

Status ClusterMember::Leave(std::chrono::milliseconds timeout) {
  Status result;
  if (ipc_registered_) {
    dlm::UnregisterLockspace(ls_.get());
    ipc_registered_ = false;
  }
  if (lm_) result = lm_->Shutdown(timeout);
  if (ls_) {
    Status st = ls_->Leave();
    if (result.ok()) result = st;
  }
  if (transport_) transport_->Stop();
  lm_.reset();
  ls_.reset();
  transport_.reset();
  return result;
}

glock::LockModule* ClusterMember::lock_module() { return lm_.get(); }

std::vector<std::pair<std::string, uint64_t>> ClusterMember::Counters() const {
  std::vector<std::pair<std::string, uint64_t>> v;
  if (transport_) {
    const dlm::CpgTransportCounters t = transport_->Counters();
    v.insert(v.end(), {{"dlm_msgs_sent", t.msgs_sent},
                       {"dlm_bytes_sent", t.bytes_sent},
                       {"dlm_mcasts", t.mcasts},
                       {"dlm_send_queued", t.send_queued},
                       {"dlm_msgs_delivered", t.msgs_delivered},
                       {"dlm_bytes_delivered", t.bytes_delivered}});
  }
  if (ls_) {
    const dlm::LockspaceCounters l = ls_->Counters();
    v.insert(v.end(), {{"ls_msgs_sent", l.msgs_sent},
                       {"ls_op_msgs_sent", l.op_msgs_sent},
                       {"ls_msgs_delivered", l.msgs_delivered}});
  }
  if (lm_) {
    const dlm::DlmLockModuleCounters m = lm_->Counters();
    v.insert(v.end(), {{"lm_requests", m.requests},
                       {"lm_converts", m.converts},
                       {"lm_unlocks", m.unlocks},
                       {"lm_cancels", m.cancels},
                       {"lm_completions", m.completions},
                       {"lm_callbacks", m.callbacks}});
  }
  return v;
}

std::string ClusterMember::Describe() const {
  std::string s = "cluster " + cluster_ + ", lockspace " + fsname_;
  if (ls_) s += ", node " + std::to_string(ls_->Info().self.nodeid);
  return s;
}

}  // namespace ugfs2::fusefs
