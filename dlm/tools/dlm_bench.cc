// ugfs2-dlm-bench: measurement roles for scripts/bench-dlm (one process per node and role).
//
//   baseline N                    raw libcpg self-delivery RTT, back-to-back (JSON)
//   member LS EXPECTED            join LS and stay until stdin closes
//   acquire LS EXPECTED N         uncached EX acquire (new resource) + unlock, N times (JSON)
//   pingpong LS EXPECTED N        EX ping-pong on one resource with the other pingpong process
//   ops LS EXPECTED SECONDS WIN   pipelined lock/unlock on many resources, WIN outstanding (JSON)
#include <poll.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <deque>
#include <functional>
#include <iostream>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <corosync/cpg.h>

#include "common/log.h"
#include "cpg_transport.h"
#include "lockspace.h"

using namespace ugfs2;
using namespace ugfs2::dlm;
using Clock = std::chrono::steady_clock;

namespace {

double Us(Clock::duration d) { return std::chrono::duration<double, std::micro>(d).count(); }

void Stats(std::vector<double> v, double* med, double* p99) {
  std::sort(v.begin(), v.end());
  *med = v[v.size() / 2];
  *p99 = v[std::min(v.size() - 1, v.size() * 99 / 100)];
}

// ---- raw CPG baseline -----------------------------------------------------------------------
struct RawCtx {
  uint32_t nodeid = 0;
  uint32_t pid = 0;
  uint64_t got = 0;
};
RawCtx g_raw;

void RawDeliver(cpg_handle_t, const cpg_name*, uint32_t nodeid, uint32_t pid, void* msg,
                size_t len) {
  if (nodeid == g_raw.nodeid && pid == g_raw.pid && len >= 8) std::memcpy(&g_raw.got, msg, 8);
}
void RawConfchg(cpg_handle_t, const cpg_name*, const cpg_address*, size_t, const cpg_address*,
                size_t, const cpg_address*, size_t) {}

int Baseline(int n) {
  cpg_callbacks_t cb{};
  cb.cpg_deliver_fn = RawDeliver;
  cb.cpg_confchg_fn = RawConfchg;
  cpg_handle_t h;
  if (cpg_initialize(&h, &cb) != CS_OK) return 1;
  cpg_local_get(h, &g_raw.nodeid);
  g_raw.pid = static_cast<uint32_t>(getpid());
  cpg_name name{};
  std::string g = "ugfs2:bench:raw";
  name.length = static_cast<uint32_t>(g.size());
  std::memcpy(name.value, g.data(), g.size());
  while (cpg_join(h, &name) == CS_ERR_TRY_AGAIN) usleep(1000);
  int fd;
  cpg_fd_get(h, &fd);
  std::vector<double> lat;
  char payload[24] = {};
  for (int i = 0; i < n + 100; ++i) {
    uint64_t seq = i + 1;
    std::memcpy(payload, &seq, 8);
    iovec iov{payload, sizeof(payload)};
    auto t0 = Clock::now();
    while (cpg_mcast_joined(h, CPG_TYPE_AGREED, &iov, 1) == CS_ERR_TRY_AGAIN) usleep(100);
    while (g_raw.got != seq) {
      pollfd p{fd, POLLIN, 0};
      poll(&p, 1, 1000);
      cpg_dispatch(h, CS_DISPATCH_ALL);
    }
    if (i >= 100) lat.push_back(Us(Clock::now() - t0));  // first 100: warm-up
  }
  cpg_finalize(h);
  double med, p99;
  Stats(lat, &med, &p99);
  std::printf("{\"baseline_median_us\":%.1f,\"baseline_p99_us\":%.1f,\"samples\":%zu}\n", med, p99,
              lat.size());
  return 0;
}

// ---- lockspace roles --------------------------------------------------------------------------
struct Host {
  std::unique_ptr<CpgTransport> transport;
  std::unique_ptr<Lockspace> ls;
};

bool JoinLs(Host* h, const std::string& name, size_t expected) {
  auto tr = CpgTransport::Create("ugfs2:ls:" + name);
  if (!tr.ok()) {
    std::fprintf(stderr, "bench: %s\n", tr.status().ToString().c_str());
    return false;
  }
  h->transport = std::move(tr).value();
  LockspaceOptions o;
  o.name = name;
  h->ls = std::make_unique<Lockspace>(h->transport.get(), o);
  if (!h->ls->Join().ok() || !h->ls->WaitMember(std::chrono::seconds(60)).ok()) return false;
  auto deadline = Clock::now() + std::chrono::seconds(60);
  while (Clock::now() < deadline) {
    size_t n = 0;
    for (const auto& m : h->ls->Info().members) n += m.alive && m.synced;
    if (n >= expected) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));  // polling a count, not syncing
  }
  std::fprintf(stderr, "bench: only some members joined %s\n", name.c_str());
  return false;
}

int Acquire(Host* h, int n) {
  std::vector<double> lat;
  const std::string prefix = "acq" + std::to_string(getpid()) + "-";
  for (int i = 0; i < n + 50; ++i) {
    Lksb lksb;
    std::string res = prefix + std::to_string(i);
    auto t0 = Clock::now();
    Status st = h->ls->LockSync(kEX, &lksb, 0, res, nullptr, std::chrono::seconds(10));
    auto t1 = Clock::now();
    if (!st.ok() || lksb.status != kStatusOk) {
      std::fprintf(stderr, "bench: acquire failed: %s\n", st.ToString().c_str());
      return 1;
    }
    if (i >= 50) lat.push_back(Us(t1 - t0));
    st = h->ls->UnlockSync(lksb.lkid, 0, &lksb, std::chrono::seconds(10));
    if (!st.ok()) return 1;
  }
  double med, p99;
  Stats(lat, &med, &p99);
  std::printf("{\"acquire_median_us\":%.1f,\"acquire_p99_us\":%.1f,\"samples\":%zu}\n", med, p99,
              lat.size());
  return 0;
}

int PingPong(Host* h, int n) {
  // Fully asynchronous, everything on the callback thread: EX granted -> count, hold until a
  // bast -> convert down to NL -> when that completes, ask for EX again.
  // Static: callbacks may still run while the process winds down.
  static std::mutex mu;
  static std::condition_variable cv;
  static Lksb lksb;
  static int grants = 0;
  static int mode = kIV;
  static bool want_down = false, done = false;
  static Clock::time_point start, last;
  static Lockspace* ls;
  static int target;
  ls = h->ls.get();
  target = n;
  static std::function<void()> ast;
  static std::function<void(int)> bast;
  static std::deque<int> pending;  // modes of conversions in flight, in order
  static auto convert = [](int m) {
    pending.push_back(m);
    Status st = ls->Lock(m, &lksb, kLkfConvert, "", ast, bast);
    if (!st.ok()) std::fprintf(stderr, "bench: convert: %s\n", st.ToString().c_str());
  };
  ast = [] {
    std::lock_guard<std::mutex> l(mu);
    if (pending.empty()) return;
    const int m = pending.front();
    pending.pop_front();
    if (lksb.status != kStatusOk) return;
    mode = m;
    if (mode == kEX) {
      last = Clock::now();
      if (grants++ == 0) start = last;
      if (grants >= target) {
        done = true;
        cv.notify_all();
        return;
      }
      if (want_down) {
        want_down = false;
        convert(kNL);
        convert(kEX);
      }
    } else if (pending.empty() && !done) {
      convert(kEX);
    }
  };
  bast = [](int) {
    std::lock_guard<std::mutex> l(mu);
    if (done) return;
    if (mode == kEX && pending.empty()) {
      // Demote and, pipelined behind it, ask again: the peer is granted and told we want it
      // back by the same stretch of the ordered stream.
      convert(kNL);
      convert(kEX);
    } else {
      want_down = true;
    }
  };
  {
    std::lock_guard<std::mutex> l(mu);
    pending.push_back(kNL);
    Status st = ls->Lock(kNL, &lksb, 0, "pingpong", ast, bast);
    if (!st.ok()) return 1;
  }
  std::unique_lock<std::mutex> l(mu);
  // Ends when we reached n grants, or the peer stopped (no progress for 3 s).
  int seen = -1;
  while (!done) {
    if (!cv.wait_for(l, std::chrono::seconds(3), [&] { return done; }) && grants == seen) break;
    seen = grants;
  }
  const double secs = std::chrono::duration<double>(last - start).count();
  // Grants alternate between the two nodes: each of our grants is one of two transfers.
  std::printf("{\"pingpong_per_s\":%.0f,\"grants\":%d}\n", secs > 0 ? 2 * (grants - 1) / secs : 0,
              grants);
  done = true;
  return 0;
}

int Ops(Host* h, double seconds, int window) {
  std::mutex mu;
  std::condition_variable cv;
  std::atomic<uint64_t> ops{0};
  std::atomic<bool> stop{false};
  std::atomic<int> outstanding{0};
  struct Slot {
    Lksb lksb;
    int k = 0;
  };
  std::vector<Slot> slots(window);
  const std::string prefix = "ops" + std::to_string(getpid()) + "-";
  std::function<void(int)> issue_lock = [&](int s) {
    if (stop) {
      if (--outstanding == 0) cv.notify_all();
      return;
    }
    Slot& sl = slots[s];
    std::string name = prefix + std::to_string(s) + "-" + std::to_string(sl.k++ % 64);
    Status st = h->ls->Lock(
        kEX, &sl.lksb, 0, name,
        [&, s] {
          ops++;
          Slot& x = slots[s];
          if (x.lksb.status == kStatusOk) {
            Status u = h->ls->Unlock(x.lksb.lkid, 0);
            if (!u.ok()) issue_lock(s);
          } else {
            issue_lock(s);  // unlock completion
          }
        },
        nullptr);
    if (!st.ok() && --outstanding == 0) cv.notify_all();
  };
  outstanding = window;
  auto t0 = Clock::now();
  for (int s = 0; s < window; ++s) issue_lock(s);
  std::this_thread::sleep_for(std::chrono::duration<double>(seconds));  // the measurement window
  const uint64_t done = ops.load();
  const double secs = std::chrono::duration<double>(Clock::now() - t0).count();
  stop = true;
  std::unique_lock<std::mutex> l(mu);
  cv.wait_for(l, std::chrono::seconds(10), [&] { return outstanding.load() == 0; });
  std::printf("{\"ops_per_s\":%.0f}\n", done / secs);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) return 2;
  std::string role = argv[1];
  SetLogLevel(LogLevel::kWarning);
  if (role == "baseline") return Baseline(argc > 2 ? std::atoi(argv[2]) : 2000);
  if (argc < 4) return 2;
  Host h;
  if (!JoinLs(&h, argv[2], std::strtoul(argv[3], nullptr, 10))) return 1;
  int rc = 0;
  if (role == "member") {
    std::string line;
    while (std::getline(std::cin, line)) {
    }
  } else if (role == "acquire") {
    rc = Acquire(&h, argc > 4 ? std::atoi(argv[4]) : 2000);
  } else if (role == "pingpong") {
    rc = PingPong(&h, argc > 4 ? std::atoi(argv[4]) : 3000);
  } else if (role == "ops") {
    rc = Ops(&h, argc > 4 ? std::atof(argv[4]) : 3.0, argc > 5 ? std::atoi(argv[5]) : 64);
  } else {
    rc = 2;
  }
  (void)h.ls->Leave();
  h.ls.reset();
  return rc;
}
