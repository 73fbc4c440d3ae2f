#include "cpg_transport.h"

#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/timerfd.h>
#include <sys/uio.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>

#include <corosync/cmap.h>
#include <corosync/cpg.h>
#include <corosync/votequorum.h>

#include "common/log.h"

namespace ugfs2::dlm {

namespace {
constexpr size_t kMaxBatch = 60000;  // bytes packed into one CPG message by the loop
}  // namespace

// Wire framing of one CPG message: a sequence of [u32 length][bytes] frames.
struct CpgTransport::Impl {
  std::string group;
  cpg_handle_t cpg = 0;
  votequorum_handle_t vq = 0;
  int cpg_fd = -1, vq_fd = -1, ev_fd = -1, timer_fd = -1, ep_fd = -1;
  MemberId self;
  std::thread thread;

  // Commands from other threads, guarded by cmd_mu.
  std::mutex cmd_mu;
  bool want_join = false, want_leave = false, stop = false;
  TransportListener* listener = nullptr;  // set before the loop starts; cleared by Stop()

  // Send path, guarded by send_mu.
  std::mutex send_mu;
  std::deque<std::vector<uint8_t>> sendq;
  bool joined = false;  // cpg_join succeeded and not left
  bool dead = false;

  // Loop-thread only.
  bool vq_quorate = false;
  bool vq_known = false;
  uint64_t vq_ring = 0;
  uint64_t totem_ring = 0;
  bool totem_known = false;
  bool awaiting_ring = false;  // a node went down: wait for the new ring before reporting
  uint64_t ring_at_down = 0;   // totem ring when that happened (the new one must differ)
  int reported = -1;           // last quorum value reported
  bool report_due = false;
  int retry_ms = 0;

  // Counters (CpgTransportCounters): relaxed, bumped where sends and deliveries happen.
  std::atomic<uint64_t> msgs_sent{0}, bytes_sent{0}, mcasts{0}, send_queued{0};
  std::atomic<uint64_t> msgs_delivered{0}, bytes_delivered{0};
  // `m` was accepted by corosync in one cpg_mcast_joined call.
  void CountSent(const std::vector<const std::vector<uint8_t>*>& m) {
    uint64_t bytes = 0;
    for (const auto* msg : m) bytes += msg->size();
    msgs_sent.fetch_add(m.size(), std::memory_order_relaxed);
    bytes_sent.fetch_add(bytes, std::memory_order_relaxed);
    mcasts.fetch_add(1, std::memory_order_relaxed);
  }

  void Signal() {
    uint64_t one = 1;
    (void)!write(ev_fd, &one, sizeof(one));
  }
  void ArmTimer(int ms) {
    itimerspec its{};
    its.it_value.tv_sec = ms / 1000;
    its.it_value.tv_nsec = (ms % 1000) * 1000000L;
    timerfd_settime(timer_fd, 0, &its, nullptr);
  }
  static cs_error_t SendFrames(cpg_handle_t h, const std::vector<const std::vector<uint8_t>*>& m) {
    std::vector<iovec> iov;
    std::vector<uint32_t> lens(m.size());
    iov.reserve(m.size() * 2);
    for (size_t i = 0; i < m.size(); ++i) {
      lens[i] = static_cast<uint32_t>(m[i]->size());
      iov.push_back({&lens[i], sizeof(uint32_t)});
      iov.push_back({const_cast<uint8_t*>(m[i]->data()), m[i]->size()});
    }
    return cpg_mcast_joined(h, CPG_TYPE_AGREED, iov.data(), iov.size());
  }
  // REQUIRES: send_mu held. Sends queued messages in batches; false if TRY_AGAIN (retry later).
  bool FlushLocked() {
    while (!sendq.empty() && joined) {
      std::vector<const std::vector<uint8_t>*> batch;
      size_t bytes = 0;
      for (const auto& m : sendq) {
        if (!batch.empty() && bytes + m.size() + 4 > kMaxBatch) break;
        batch.push_back(&m);
        bytes += m.size() + 4;
      }
      cs_error_t err = SendFrames(cpg, batch);
      if (err == CS_ERR_TRY_AGAIN) return false;
      if (err != CS_OK) {
        LOG_ERROR("dlm cpg: mcast failed: " << err);
        return false;
      }
      CountSent(batch);
      for (size_t i = 0; i < batch.size(); ++i) sendq.pop_front();
    }
    return true;
  }

  void Fatal(const std::string& why) {
    {
      std::lock_guard<std::mutex> l(send_mu);
      if (dead) return;
      dead = true;
    }
    LOG_ERROR("dlm cpg: " << why);
    TransportListener* lst;
    {
      std::lock_guard<std::mutex> l(cmd_mu);
      lst = listener;
    }
    if (lst) lst->OnFatal(Status(Code::kNotConnected, why));
  }

  TransportListener* Listener() {
    std::lock_guard<std::mutex> l(cmd_mu);
    return listener;
  }

  void MaybeReportQuorum(bool force) {
    if (!vq_known) return;
    if (awaiting_ring) {
      if (!totem_known || totem_ring == ring_at_down || vq_ring != totem_ring) return;
      // votequorum announces the new ring before it announces the new quorum state: ask for the
      // current state rather than trusting the last notification.
      votequorum_info info{};
      if (votequorum_getinfo(vq, 0, &info) != CS_OK) return;
      vq_quorate = (info.flags & VOTEQUORUM_INFO_QUORATE) != 0;
      awaiting_ring = false;
      force = true;
    }
    const int q = vq_quorate ? 1 : 0;
    if (!force && q == reported) return;
    reported = q;
    if (auto* lst = Listener()) lst->OnQuorum(q == 1);
  }

  bool left_once = false;

  // Replaces the CPG connection (same process, so the same MemberId).
  bool Reconnect() {
    LOG_INFO("dlm cpg: reconnecting to rejoin " << group);
    cs_error_t err;
    {
      std::lock_guard<std::mutex> l(send_mu);
      epoll_ctl(ep_fd, EPOLL_CTL_DEL, cpg_fd, nullptr);
      cpg_finalize(cpg);
      err = cpg_model_initialize(&cpg, CPG_MODEL_V1, reinterpret_cast<cpg_model_data_t*>(model),
                                 this);
      if (err == CS_OK) {
        cpg_fd_get(cpg, &cpg_fd);
        epoll_event ev{};
        ev.events = EPOLLIN;
        ev.data.fd = cpg_fd;
        epoll_ctl(ep_fd, EPOLL_CTL_ADD, cpg_fd, &ev);
      }
    }
    if (err != CS_OK) {
      Fatal("cpg reconnect failed: " + std::to_string(err));
      return false;
    }
    return true;
  }
  cpg_model_v1_data_t* model = nullptr;

  void RunCommands() {
    bool join, leave;
    {
      std::lock_guard<std::mutex> l(cmd_mu);
      join = want_join;
      leave = want_leave;
    }
    if (leave) {
      cpg_name name{};
      name.length = static_cast<uint32_t>(group.size());
      std::memcpy(name.value, group.data(), group.size());
      cs_error_t err;
      {
        // The request channel has one writer at a time: sends from other threads use it too.
        std::lock_guard<std::mutex> l(send_mu);
        err = cpg_leave(cpg, &name);
      }
      LOG_DEBUG("dlm cpg: cpg_leave -> " << err);
      if (err == CS_ERR_TRY_AGAIN) {
        ArmTimer(2);
        return;
      }
      // OK, or NOT_EXIST (we were not a member any more): either way we are out.
      {
        std::lock_guard<std::mutex> l(send_mu);
        joined = false;
        sendq.clear();
      }
      left_once = true;
      std::lock_guard<std::mutex> l(cmd_mu);
      want_leave = false;
    }
    if (join) {
      cpg_name name{};
      name.length = static_cast<uint32_t>(group.size());
      std::memcpy(name.value, group.data(), group.size());
      cs_error_t err;
      {
        std::lock_guard<std::mutex> l(send_mu);
        err = cpg_join(cpg, &name);
      }
      LOG_DEBUG("dlm cpg: cpg_join -> " << err);
      if (err == CS_ERR_EXIST) {
        // corosync refuses a second join on a connection that has left a group (seen after a
        // partition): rejoin through a fresh connection.
        if (!Reconnect()) return;
        ArmTimer(2);
        return;
      }
      if (err == CS_ERR_TRY_AGAIN) {
        ArmTimer(2);
        return;
      }
      if (err != CS_OK) {
        Fatal("cpg_join failed: " + std::to_string(err));
        return;
      }
      {
        std::lock_guard<std::mutex> l(send_mu);
        joined = true;
      }
      std::lock_guard<std::mutex> l(cmd_mu);
      want_join = false;
    }
  }

  void Loop() {
    epoll_event evs[8];
    for (;;) {
      {
        std::lock_guard<std::mutex> l(cmd_mu);
        if (stop) return;
      }
      int n = epoll_wait(ep_fd, evs, 8, -1);
      if (n < 0) {
        if (errno == EINTR) continue;
        Fatal("epoll_wait failed");
        return;
      }
      for (int i = 0; i < n; ++i) {
        const int fd = evs[i].data.fd;
        if (fd == cpg_fd || fd == vq_fd) {
          if (evs[i].events & (EPOLLHUP | EPOLLERR)) {
            Fatal("lost connection to corosync");
            return;
          }
          cs_error_t err = fd == cpg_fd ? cpg_dispatch(cpg, CS_DISPATCH_ALL)
                                        : votequorum_dispatch(vq, CS_DISPATCH_ALL);
          if (err != CS_OK && err != CS_ERR_TRY_AGAIN) {
            Fatal("dispatch failed (corosync gone?): " + std::to_string(err));
            return;
          }
        } else if (fd == ev_fd || fd == timer_fd) {
          uint64_t v;
          (void)!read(fd, &v, sizeof(v));
          if (fd == timer_fd && awaiting_ring) {
            // No ring-id match after a node loss: fall back to asking votequorum directly.
            votequorum_info info{};
            if (votequorum_getinfo(vq, 0, &info) == CS_OK) {
              vq_quorate = (info.flags & VOTEQUORUM_INFO_QUORATE) != 0;
              awaiting_ring = false;
              MaybeReportQuorum(true);
            }
          }
          RunCommands();
          std::lock_guard<std::mutex> l(send_mu);
          if (!FlushLocked()) ArmTimer(1);
        }
      }
    }
  }
};

namespace {

CpgTransport::Impl* FromCpg(cpg_handle_t h) {
  void* ctx = nullptr;
  cpg_context_get(h, &ctx);
  return static_cast<CpgTransport::Impl*>(ctx);
}

void DeliverCb(cpg_handle_t h, const cpg_name*, uint32_t nodeid, uint32_t pid, void* msg,
               size_t len) noexcept {
  auto* impl = FromCpg(h);
  TransportListener* lst = impl ? impl->Listener() : nullptr;
  if (lst == nullptr) return;
  const auto* p = static_cast<const uint8_t*>(msg);
  size_t off = 0;
  while (off + 4 <= len) {
    uint32_t n;
    std::memcpy(&n, p + off, 4);
    off += 4;
    if (n > len - off) break;
    impl->msgs_delivered.fetch_add(1, std::memory_order_relaxed);
    impl->bytes_delivered.fetch_add(n, std::memory_order_relaxed);
    lst->OnDeliver(MemberId{nodeid, pid}, p + off, n);
    off += n;
  }
}

void ConfchgCb(cpg_handle_t h, const cpg_name*, const cpg_address* members, size_t nmembers,
               const cpg_address* left, size_t nleft, const cpg_address* joined,
               size_t njoined) noexcept {
  auto* impl = FromCpg(h);
  TransportListener* lst = impl ? impl->Listener() : nullptr;
  if (lst == nullptr) return;
  std::vector<MemberId> m, j;
  std::vector<std::pair<MemberId, LeaveReason>> l;
  bool node_down = false;
  for (size_t i = 0; i < nmembers; ++i) m.push_back({members[i].nodeid, members[i].pid});
  for (size_t i = 0; i < njoined; ++i) j.push_back({joined[i].nodeid, joined[i].pid});
  for (size_t i = 0; i < nleft; ++i) {
    const bool clean = left[i].reason == CPG_REASON_LEAVE;
    if (left[i].reason == CPG_REASON_NODEDOWN) node_down = true;
    l.push_back(
        {{left[i].nodeid, left[i].pid}, clean ? LeaveReason::kLeave : LeaveReason::kFailed});
  }
  LOG_INFO("dlm cpg: confchg members " << nmembers << " left " << nleft << " joined " << njoined);
  lst->OnConfChg(m, l, j);
  if (nleft > 0) {
    // The lockspace holds callbacks until quorum is re-confirmed for the new view.
    if (node_down) {
      if (!impl->awaiting_ring) impl->ring_at_down = impl->totem_ring;
      impl->awaiting_ring = true;
      impl->ArmTimer(3000);  // fallback: re-poll votequorum if no matching ring shows up
    }
    impl->MaybeReportQuorum(true);
  }
}

void TotemCb(cpg_handle_t h, cpg_ring_id ring, uint32_t, const uint32_t*) noexcept {
  auto* impl = FromCpg(h);
  if (impl == nullptr) return;
  LOG_DEBUG("dlm cpg: totem ring " << ring.nodeid << "." << ring.seq);
  impl->totem_ring = ring.seq;
  impl->totem_known = true;
  impl->MaybeReportQuorum(false);
}

CpgTransport::Impl* FromVq(votequorum_handle_t h) {
  void* ctx = nullptr;
  votequorum_context_get(h, &ctx);
  return static_cast<CpgTransport::Impl*>(ctx);
}

void VqQuorumCb(votequorum_handle_t h, uint64_t, uint32_t quorate, uint32_t,
                votequorum_node_t*) noexcept {
  auto* impl = FromVq(h);
  if (impl == nullptr) return;
  impl->vq_quorate = quorate != 0;
  LOG_DEBUG("dlm cpg: votequorum quorate " << quorate);
  impl->vq_known = true;
  impl->MaybeReportQuorum(false);
}

void VqNodelistCb(votequorum_handle_t h, uint64_t, votequorum_ring_id_t ring, uint32_t,
                  uint32_t*) noexcept {
  auto* impl = FromVq(h);
  if (impl == nullptr) return;
  impl->vq_ring = ring.seq;
  LOG_DEBUG("dlm cpg: votequorum ring " << ring.nodeid << "." << ring.seq);
  impl->MaybeReportQuorum(false);
}

}  // namespace

Result<std::string> CorosyncClusterName() {
  cmap_handle_t h = 0;
  cs_error_t err = cmap_initialize(&h);
  if (err != CS_OK) {
    return Status(Code::kNotConnected, "cannot connect to corosync (cmap error " +
                                           std::to_string(err) +
                                           "): is corosync running on this node?");
  }
  char* name = nullptr;
  err = cmap_get_string(h, "totem.cluster_name", &name);
  std::string out = err == CS_OK && name != nullptr ? name : "";
  std::free(name);
  cmap_finalize(h);
  if (err != CS_OK) {
    return Status(Code::kNotFound,
                  "corosync has no totem.cluster_name (cmap error " + std::to_string(err) + ")");
  }
  return out;
}

Result<std::unique_ptr<CpgTransport>> CpgTransport::Create(const std::string& group) {
  if (group.empty() || group.size() >= CPG_MAX_NAME_LENGTH) {
    return Status::Invalid("bad CPG group name");
  }
  std::unique_ptr<CpgTransport> t(new CpgTransport());
  t->impl_ = std::make_unique<Impl>();
  Impl* impl = t->impl_.get();
  impl->group = group;
  static cpg_model_v1_data_t model = [] {
    cpg_model_v1_data_t m{};
    m.model = CPG_MODEL_V1;
    m.cpg_deliver_fn = DeliverCb;
    m.cpg_confchg_fn = ConfchgCb;
    m.cpg_totem_confchg_fn = TotemCb;
    m.flags = CPG_MODEL_V1_DELIVER_INITIAL_TOTEM_CONF;
    return m;
  }();
  impl->model = &model;
  cs_error_t err = cpg_model_initialize(&impl->cpg, CPG_MODEL_V1,
                                        reinterpret_cast<cpg_model_data_t*>(&model), impl);
  if (err != CS_OK) {
    return Status(Code::kNotConnected,
                  "cpg_model_initialize failed (is corosync running?): " + std::to_string(err));
  }
  uint32_t nodeid = 0;
  if (cpg_local_get(impl->cpg, &nodeid) != CS_OK) {
    cpg_finalize(impl->cpg);
    return Status(Code::kNotConnected, "cpg_local_get failed");
  }
  static votequorum_callbacks_t vcb = {VqQuorumCb, nullptr, VqNodelistCb};
  err = votequorum_initialize(&impl->vq, &vcb);
  if (err != CS_OK) {
    cpg_finalize(impl->cpg);
    return Status(Code::kNotConnected, "votequorum_initialize failed: " + std::to_string(err));
  }
  votequorum_context_set(impl->vq, impl);
  impl->self = MemberId{nodeid, static_cast<uint32_t>(getpid())};
  t->self_ = impl->self;
  cpg_fd_get(impl->cpg, &impl->cpg_fd);
  votequorum_fd_get(impl->vq, &impl->vq_fd);
  impl->ev_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  impl->timer_fd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
  impl->ep_fd = epoll_create1(EPOLL_CLOEXEC);
  for (int fd : {impl->cpg_fd, impl->vq_fd, impl->ev_fd, impl->timer_fd}) {
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.fd = fd;
    epoll_ctl(impl->ep_fd, EPOLL_CTL_ADD, fd, &ev);
  }
  return t;
}

CpgTransport::~CpgTransport() {
  Stop();
  if (impl_) {
    cpg_finalize(impl_->cpg);
    votequorum_finalize(impl_->vq);
    for (int fd : {impl_->ev_fd, impl_->timer_fd, impl_->ep_fd}) {
      if (fd >= 0) close(fd);
    }
  }
}

Status CpgTransport::Start(TransportListener* listener) {
  {
    std::lock_guard<std::mutex> l(impl_->cmd_mu);
    if (impl_->listener != nullptr) return Status::Invalid("already started");
    impl_->listener = listener;
  }
  cs_error_t err = votequorum_trackstart(impl_->vq, 0, CS_TRACK_CHANGES);
  if (err != CS_OK) return Status(Code::kNotConnected, "votequorum_trackstart failed");
  votequorum_info info{};
  if (votequorum_getinfo(impl_->vq, 0, &info) == CS_OK) {
    impl_->vq_quorate = (info.flags & VOTEQUORUM_INFO_QUORATE) != 0;
  }
  impl_->thread = std::thread([this] {
    // First report: the current quorum state, so a joiner knows whether it may join.
    impl_->vq_known = true;
    impl_->MaybeReportQuorum(true);
    impl_->Loop();
  });
  return Status::Ok();
}

Status CpgTransport::Join() {
  {
    std::lock_guard<std::mutex> l(impl_->cmd_mu);
    impl_->want_join = true;  // after any pending leave (RunCommands leaves first)
  }
  impl_->Signal();
  return Status::Ok();
}

Status CpgTransport::Leave() {
  {
    std::lock_guard<std::mutex> l(impl_->cmd_mu);
    impl_->want_leave = true;
    impl_->want_join = false;
  }
  {
    std::lock_guard<std::mutex> l(impl_->send_mu);
    impl_->sendq.clear();
  }
  impl_->Signal();
  return Status::Ok();
}

void CpgTransport::Stop() {
  if (!impl_) return;
  {
    std::lock_guard<std::mutex> l(impl_->cmd_mu);
    impl_->stop = true;
    impl_->listener = nullptr;
  }
  impl_->Signal();
  if (impl_->thread.joinable()) impl_->thread.join();
}

Status CpgTransport::Multicast(std::vector<uint8_t> msg) {
  std::lock_guard<std::mutex> l(impl_->send_mu);
  if (impl_->dead) return Status(Code::kNotConnected, "corosync connection lost");
  if (!impl_->joined) return Status(Code::kNotConnected, "not joined");
  if (impl_->sendq.empty()) {
    const std::vector<const std::vector<uint8_t>*> one = {&msg};
    cs_error_t err = Impl::SendFrames(impl_->cpg, one);
    if (err == CS_OK) {
      impl_->CountSent(one);
      return Status::Ok();
    }
    if (err != CS_ERR_TRY_AGAIN) {
      return Status(Code::kNotConnected, "cpg_mcast_joined failed: " + std::to_string(err));
    }
  }
  impl_->sendq.push_back(std::move(msg));
  impl_->send_queued.fetch_add(1, std::memory_order_relaxed);
  impl_->Signal();
  return Status::Ok();
}

CpgTransportCounters CpgTransport::Counters() const {
  CpgTransportCounters c;
  if (!impl_) return c;
  const Impl& i = *impl_;
  c.msgs_sent = i.msgs_sent.load(std::memory_order_relaxed);
  c.bytes_sent = i.bytes_sent.load(std::memory_order_relaxed);
  c.mcasts = i.mcasts.load(std::memory_order_relaxed);
  c.send_queued = i.send_queued.load(std::memory_order_relaxed);
  c.msgs_delivered = i.msgs_delivered.load(std::memory_order_relaxed);
  c.bytes_delivered = i.bytes_delivered.load(std::memory_order_relaxed);
  return c;
}

}  // namespace ugfs2::dlm
