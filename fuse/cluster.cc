#include "cluster.h"

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <sstream>

#include "common/log.h"
#include "cpg_transport.h"
#include "glock_lock_module.h"
#include "ipc_server.h"
#include "lockspace.h"

namespace ugfs2::fusefs {

ClusterMember::ClusterMember() = default;

ClusterMember::~ClusterMember() { (void)Leave(std::chrono::seconds(10)); }

Status ClusterMember::Join(const std::string& locktable, std::chrono::milliseconds timeout,
                           ClusterOptions options) {
  options_ = std::move(options);
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
    if (fenced) {
      fenced_ = true;  // for good: the lock module stays fenced too (gfs2 withdraws)
      std::shared_ptr<WriteGate> gate;
      {
        std::lock_guard<std::mutex> l(mu_);
        gate = gate_;
      }
      if (gate) gate->Close("its lockspace " + fsname_ + " fenced it (lost quorum or evicted)");
      if (dlm::DlmLockModule* lm = lm_raw_.load()) lm->Fence("the lockspace fenced this node");
      LOG_ERROR("lockspace " << fsname_
                             << ": this node was fenced; no more writes to the shared disk "
                                "(unmount, then mount again)");
    } else {
      LOG_INFO("lockspace " << fsname_ << ": member again (this mount stays fenced)");
    }
  };
  o.recovery_hook = [this](uint32_t nodeid) {
    // On the lockspace's callback thread: the recovery takes glocks, whose replies arrive on
    // this very thread, so it runs on the recovery thread.
    std::lock_guard<std::mutex> l(mu_);
    NodeRecovery& r = recoveries_[nodeid];
    const int failures = r.failures + 1;
    r = NodeRecovery{};
    r.failures = failures;
    r.failed_at = std::chrono::steady_clock::now();
    r.retry_at = r.failed_at;
    if (std::find(pending_.begin(), pending_.end(), nodeid) == pending_.end()) {
      pending_.push_back(nodeid);
    }
    LOG_WARN("lockspace " << fsname_ << ": node " << nodeid
                          << " failed; its journal will be recovered");
    cv_.notify_all();
  };
  recovery_thread_ = std::thread([this] { RecoveryThread(); });
  // Without an explicit delay the survivors wait until a failed node's write lease has run out
  // (plus a margin for the two sides' scheduling), so that a node that was cut off or frozen
  // has stopped writing before its journal is replayed (docs/recovery.md).
  if (options_.recovery_delay.count() == 0 && o.heartbeat_interval.count() > 0) {
    options_.recovery_delay = o.lease + std::chrono::milliseconds(1000);
  }
  lease_wait_ = o.evict_timeout;
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
  lm_raw_ = lm_.get();
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
  {
    std::lock_guard<std::mutex> l(mu_);
    stop_ = true;
    recoverer_ = nullptr;
  }
  cv_.notify_all();
  if (recovery_thread_.joinable()) recovery_thread_.join();
  {
    // The gate's lease asks the lockspace, which goes now: nothing may write after Leave.
    std::lock_guard<std::mutex> l(mu_);
    if (gate_) gate_->Close("it left the cluster");
  }
  if (ipc_registered_) {
    dlm::UnregisterLockspace(ls_.get());
    ipc_registered_ = false;
  }
  lm_raw_ = nullptr;  // (the fence hook runs on the callback thread; Shutdown waits for it)
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

void ClusterMember::SetRecoverer(Recoverer fn) {
  std::unique_lock<std::mutex> l(mu_);
  recoverer_ = std::move(fn);
  if (!recoverer_) cv_.wait(l, [this] { return !running_; });
  cv_.notify_all();
}

void ClusterMember::SetWriteGate(std::shared_ptr<WriteGate> gate) {
  {
    std::lock_guard<std::mutex> l(mu_);
    gate_ = gate;
  }
  // The lockspace outlives every write: the core is unmounted before Leave.
  dlm::Lockspace* ls = ls_.get();
  if (gate && ls != nullptr) gate->SetLease([ls] { return ls->LeaseValid(); }, lease_wait_);
  if (gate && fenced_.load()) gate->Close("its lockspace " + fsname_ + " fenced it");
}

void ClusterMember::RecoveryThread() {
  using Clock = std::chrono::steady_clock;
  std::unique_lock<std::mutex> l(mu_);
  while (!stop_) {
    // The earliest due recovery: with a fence agent at once (the agent's success says the node
    // can write no more, so its lease need not run out), otherwise after the recovery delay;
    // never before its retry time.
    uint32_t nodeid = 0;
    Clock::time_point due = Clock::time_point::max();
    for (uint32_t n : pending_) {
      const NodeRecovery& r = recoveries_[n];
      const Clock::time_point t = options_.fence_agent.empty()
                                      ? std::max(r.retry_at, r.failed_at + options_.recovery_delay)
                                      : r.retry_at;
      if (t < due) {
        due = t;
        nodeid = n;
      }
    }
    if (pending_.empty() || !recoverer_ || fenced_.load()) {
      cv_.wait(l);
      continue;
    }
    if (Clock::now() < due) {
      cv_.wait_until(l, due);
      continue;
    }
    NodeRecovery& rec = recoveries_[nodeid];
    rec.attempts++;
    Recoverer fn = recoverer_;
    running_ = true;
    Status st;
    if (!options_.fence_agent.empty() && !rec.agent_done) {
      rec.state = "fencing";
      l.unlock();
      std::string outcome;
      st = RunFenceAgent(nodeid, &outcome);
      l.lock();
      recoveries_[nodeid].fence = outcome;
      recoveries_[nodeid].agent_done = st.ok();
    }
    Result<RecoveryReport> report = Status::Ok();
    if (st.ok() && !stop_) {
      recoveries_[nodeid].state = "replaying";
      l.unlock();
      report = fn();
      l.lock();
      st = report.status();
    }
    running_ = false;
    cv_.notify_all();
    NodeRecovery& r = recoveries_[nodeid];
    if (stop_) break;
    if (!st.ok()) {
      r.state = "failed";
      r.detail = st.ToString();
      r.retry_at = Clock::now() + std::chrono::seconds(1);
      LOG_ERROR("recovery of node " << nodeid << " (attempt " << r.attempts
                                    << "): " << st.ToString() << "; trying again");
      continue;
    }
    std::ostringstream d;
    int replayed = 0;
    for (const JournalRecovery& j : report->journals) {
      if (!j.replayed) continue;
      d << (replayed++ ? ", " : "") << "journal" << j.jid << " replayed " << j.blocks_replayed
        << " blocks from " << j.log_blocks << " log blocks in " << j.usec / 1000 << " ms";
    }
    if (replayed == 0) d << "no dirty journal left to replay";
    r.detail = d.str();
    r.state = "done";
    r.done_at = Clock::now();
    last_journals_ = report->journals;
    last_live_ = report->live;
    std::erase(pending_, nodeid);
    const auto took =
        std::chrono::duration_cast<std::chrono::milliseconds>(r.done_at - r.failed_at).count();
    l.unlock();
    Status done = ls_->RecoveryDone(nodeid);
    LOG_INFO("node " << nodeid << " recovered " << took << " ms after its failure: " << d.str());
    if (!done.ok()) LOG_ERROR("telling the lockspace: " << done.ToString());
    l.lock();
  }
}

Status ClusterMember::RunFenceAgent(uint32_t nodeid, std::string* outcome) {
  const auto t0 = std::chrono::steady_clock::now();
  const std::string cmd = options_.fence_agent + " " + std::to_string(nodeid);
  int in[2];
  if (pipe2(in, O_CLOEXEC) != 0) return Status::IoError("fence agent: pipe failed");
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_adddup2(&fa, in[0], 0);
  const char* argv[] = {"/bin/sh", "-c", cmd.c_str(), nullptr};
  pid_t pid = 0;
  const int rc =
      posix_spawn(&pid, "/bin/sh", &fa, nullptr, const_cast<char* const*>(argv), environ);
  posix_spawn_file_actions_destroy(&fa);
  close(in[0]);
  if (rc != 0) {
    close(in[1]);
    *outcome = std::string("could not start: ") + std::strerror(rc);
    return Status::IoError("fence agent '" + cmd + "': " + *outcome);
  }
  const std::string n = std::to_string(nodeid);
  const std::string input = "action=off\nnodename=" + n + "\nport=" + n + "\nnodeid=" + n + "\n";
  signal(SIGPIPE, SIG_IGN);  // an agent that does not read its stdin
  (void)!write(in[1], input.data(), input.size());
  close(in[1]);
  int wstatus = 0;
  for (;;) {
    const pid_t w = waitpid(pid, &wstatus, WNOHANG);
    if (w == pid) break;
    if (w < 0 && errno != EINTR) {
      *outcome = "lost track of it";
      return Status::IoError("fence agent '" + cmd + "': " + *outcome);
    }
    if (std::chrono::steady_clock::now() - t0 > options_.fence_timeout) {
      kill(pid, SIGKILL);
      (void)waitpid(pid, &wstatus, 0);
      *outcome = "timed out";
      return Status(Code::kTimedOut, "fence agent '" + cmd + "' timed out");
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  const auto ms =
      std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - t0)
          .count();
  if (WIFEXITED(wstatus) && WEXITSTATUS(wstatus) == 0) {
    *outcome = "ok in " + std::to_string(ms) + " ms";
    LOG_INFO("fence agent fenced node " << nodeid << " (" << *outcome << ")");
    return Status::Ok();
  }
  *outcome = WIFEXITED(wstatus) ? "exit " + std::to_string(WEXITSTATUS(wstatus))
                                : "killed by signal " + std::to_string(WTERMSIG(wstatus));
  return Status::IoError("fence agent '" + cmd + "' failed (" + *outcome + ")");
}

std::string ClusterMember::RecoveryStatus() const {
  using Clock = std::chrono::steady_clock;
  std::ostringstream o;
  const dlm::LockspaceInfo info = ls_ ? ls_->Info() : dlm::LockspaceInfo{};
  o << "lockspace " << fsname_ << " node " << info.self.nodeid << " state "
    << dlm::LsStateName(info.state) << " quorate " << (info.quorate ? "yes" : "no") << " fenced "
    << (fenced_.load() ? "yes" : "no");
  std::shared_ptr<WriteGate> gate;
  {
    std::lock_guard<std::mutex> l(mu_);
    gate = gate_;
  }
  if (gate)
    o << " writes " << (gate->closed() ? "refused" : "allowed") << " refused_writes "
      << gate->refused();
  o << "\nmembers";
  for (const auto& m : info.members) o << " " << m.id.nodeid;
  o << "\nrecovery_pending";
  for (const auto& [inc, node] : info.recovery_pending) o << " " << node;
  o << "\n";
  std::lock_guard<std::mutex> l(mu_);
  const auto now = Clock::now();
  auto secs = [&](Clock::time_point a, Clock::time_point b) {
    return std::to_string(std::chrono::duration_cast<std::chrono::milliseconds>(b - a).count()) +
           " ms";
  };
  for (const auto& [node, r] : recoveries_) {
    o << "node " << node << ": " << r.state << " (failure " << r.failures << "), failed "
      << secs(r.failed_at, now) << " ago";
    if (r.state == "done") o << ", recovered after " << secs(r.failed_at, r.done_at);
    o << ", attempts " << r.attempts;
    if (!r.fence.empty()) o << ", fence agent " << r.fence;
    if (!r.detail.empty()) o << ": " << r.detail;
    o << "\n";
  }
  for (const JournalRecovery& j : last_journals_) {
    o << "journal" << j.jid << ": " << (j.replayed ? "replayed" : "clean") << "\n";
  }
  if (!last_journals_.empty() || last_live_ != 0) {
    o << "journals held by live nodes: " << last_live_ << "\n";
  }
  return o.str();
}

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
                       {"lm_callbacks", m.callbacks},
                       {"lm_provisional", m.provisional}});
  }
  return v;
}

uint32_t ClusterMember::NodeId() const { return ls_ ? ls_->Info().self.nodeid : 0; }

std::string ClusterMember::Describe() const {
  std::string s = "cluster " + cluster_ + ", lockspace " + fsname_;
  if (ls_) s += ", node " + std::to_string(ls_->Info().self.nodeid);
  return s;
}

}  // namespace ugfs2::fusefs
