#include "runner.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <sstream>

namespace ugfs2::mmap_stress {
namespace {

// Every external command gets this long; the hang command's 30 s is the brief's.
constexpr double kCommandTimeout = 30;
// How long the parent waits for SIGKILLed workers (a worker stuck in an uninterruptible FUSE
// wait only dies once the mount is aborted).
constexpr double kReapTimeout = 2;
constexpr double kPollPeriod = 0.1;
constexpr size_t kMaxCommandOutput = 1 << 20;

struct CommandResult {
  int status = 0;  // waitpid status
  bool exited = false;
  bool timed_out = false;
  std::string output;  // stdout and stderr
};

bool CommandOk(const CommandResult& r) {
  return r.exited && !r.timed_out && WIFEXITED(r.status) && WEXITSTATUS(r.status) == 0;
}

std::string DescribeWaitStatus(int status) {
  if (WIFEXITED(status)) return StrFormat("exit %d", WEXITSTATUS(status));
  if (WIFSIGNALED(status)) {
    const char* name = sigabbrev_np(WTERMSIG(status));
    return StrFormat("killed by SIG%s", name != nullptr ? name : "?");
  }
  return StrFormat("wait status %d", status);
}

std::string DescribeCommand(const CommandResult& r, double timeout) {
  if (r.timed_out) return StrFormat("killed after its %.0f s timeout", timeout);
  if (!r.exited) return "could not be run";
  return DescribeWaitStatus(r.status);
}

// Runs cmd with /bin/sh in its own process group, stdin /dev/null, stdout and stderr captured;
// after `timeout` seconds the group is SIGKILLed. Never blocks longer than timeout plus
// kReapTimeout (a command stuck in the kernel is left behind).
CommandResult RunCommand(const std::string& cmd, double timeout) {
  CommandResult res;
  int fds[2];
  if (pipe2(fds, O_CLOEXEC) != 0) {
    res.output = StrFormat("pipe: %s", std::strerror(errno));
    return res;
  }
  std::fflush(nullptr);
  const pid_t pid = fork();
  if (pid < 0) {
    res.output = StrFormat("fork: %s", std::strerror(errno));
    close(fds[0]);
    close(fds[1]);
    return res;
  }
  if (pid == 0) {
    setpgid(0, 0);
    const int null = open("/dev/null", O_RDONLY);
    if (null >= 0) dup2(null, 0);
    dup2(fds[1], 1);
    dup2(fds[1], 2);
    execl("/bin/sh", "sh", "-c", cmd.c_str(), static_cast<char*>(nullptr));
    _exit(127);
  }
  setpgid(pid, pid);
  close(fds[1]);
  const double deadline = NowSeconds() + timeout;
  bool eof = false;
  while (!res.exited || !eof) {
    const double left = deadline - NowSeconds();
    if (left <= 0) {
      res.timed_out = true;
      break;
    }
    if (!eof) {
      pollfd pfd{fds[0], POLLIN, 0};
      const int n = poll(&pfd, 1, static_cast<int>(std::min(left, 0.1) * 1000) + 1);
      if (n > 0) {
        char buf[4096];
        const ssize_t r = read(fds[0], buf, sizeof(buf));
        if (r > 0) {
          if (res.output.size() < kMaxCommandOutput) res.output.append(buf, static_cast<size_t>(r));
        } else if (r == 0 || errno != EINTR) {
          eof = true;
        }
      }
    } else {
      SleepSeconds(0.01);
    }
    if (!res.exited && waitpid(pid, &res.status, WNOHANG) == pid) res.exited = true;
  }
  close(fds[0]);
  if (res.timed_out) {
    kill(-pid, SIGKILL);
    kill(pid, SIGKILL);
    const double reap_deadline = NowSeconds() + kReapTimeout;
    while (!res.exited && NowSeconds() < reap_deadline) {
      if (waitpid(pid, &res.status, WNOHANG) == pid) {
        res.exited = true;
      } else {
        SleepSeconds(0.01);
      }
    }
  }
  return res;
}

// A child process of a cell and what the watchdog knows of it.
struct Proc {
  pid_t pid = -1;
  int slot = 0;
  std::string role;
  std::string dir;
  bool exited = false;
  int status = 0;
  uint64_t seen = 0;  // progress at the last change
  double last_change = 0;

  bool Failed() const { return exited && !(WIFEXITED(status) && WEXITSTATUS(status) == 0); }
};

struct WatchResult {
  bool hang = false;
  bool went = false;
  double t_go = 0;
  double t_stop = 0;
  uint64_t iterations = 0;  // at stop
};

pid_t Spawn(const WorkerContext& ctx, const std::function<void(Worker&)>& body) {
  std::fflush(nullptr);
  const pid_t pid = fork();
  if (pid < 0) {
    // Nothing sensible is left to do: the cell's other processes die with their parent's
    // exit only if they are stopped, so stop them first.
    std::fprintf(stderr, "ugfs2-mmap-stress: fork: %s\n", std::strerror(errno));
    ctx.shared->header()->stop.store(1);
    std::exit(1);
  }
  if (pid == 0) {
    Worker w(ctx);
    body(w);
    w.Finish();
  }
  return pid;
}

// Polls the children every kPollPeriod until they all exited, or one that has not has made no
// progress for cfg.watchdog seconds (a hang). With duration >= 0 it is a run phase: once every
// worker is ready it sets go, after duration seconds (or as soon as a worker failed) stop.
WatchResult Watch(const Config& cfg, std::vector<Proc>& procs, SharedHeader* hdr, double duration) {
  WatchResult res;
  const bool run = duration >= 0;
  for (Proc& p : procs) {
    p.last_change = NowSeconds();
    p.seen = hdr->slots[p.slot].progress.load();
  }
  bool stopped = false;
  auto stop = [&](double now) {
    if (stopped) return;
    stopped = true;
    hdr->stop.store(1);
    res.t_stop = now;
    for (const Proc& p : procs) res.iterations += hdr->slots[p.slot].iterations.load();
  };
  for (;;) {
    const double now = NowSeconds();
    bool all_exited = true;
    bool failure = false;
    for (Proc& p : procs) {
      if (!p.exited) {
        const pid_t r = waitpid(p.pid, &p.status, WNOHANG);
        if (r == p.pid) {
          p.exited = true;
        } else if (r < 0 && errno == ECHILD) {
          p.exited = true;
          p.status = W_EXITCODE(kExitInternal, 0);
        }
      }
      all_exited = all_exited && p.exited;
      failure = failure || p.Failed();
    }
    if (run) {
      if (!res.went && !failure) {
        bool ready = true;
        for (const Proc& p : procs) ready = ready && hdr->slots[p.slot].ready.load() != 0;
        if (ready) {
          res.went = true;
          res.t_go = now;
          hdr->go.store(1);
        }
      }
      if (failure && !res.went) hdr->stop.store(1);
      if (res.went && (failure || now - res.t_go >= duration)) stop(now);
    }
    if (all_exited) break;
    for (Proc& p : procs) {
      if (p.exited) continue;
      const uint64_t pr = hdr->slots[p.slot].progress.load();
      if (pr != p.seen) {
        p.seen = pr;
        p.last_change = now;
      } else if (now - p.last_change >= cfg.watchdog) {
        res.hang = true;
      }
    }
    if (res.hang) break;
    SleepSeconds(kPollPeriod);
  }
  if (run && res.went) stop(NowSeconds());
  return res;
}

std::string DescribeFailure(const Proc& p, const Slot& s, const std::string& scenario) {
  const int code = WIFEXITED(p.status) ? WEXITSTATUS(p.status) : -1;
  if (code == kExitVerify || code == kExitSyscall) {
    if (s.message[0] != '\0') return std::string(s.message, strnlen(s.message, sizeof(s.message)));
  }
  std::string who =
      StrFormat("%s %s (pid %d, dir %s)", scenario.c_str(), p.role.c_str(), p.pid, p.dir.c_str());
  const std::string doing(s.current, strnlen(s.current, sizeof(s.current)));
  std::string out;
  if (code == kExitFault) {
    const int sig = s.fault_signo.load();
    const char* name = sigabbrev_np(sig);
    out = StrFormat("%s: SIG%s at address 0x%llx (si_code %d) while: %s", who.c_str(),
                    name != nullptr ? name : "?",
                    static_cast<unsigned long long>(s.fault_addr.load()), s.fault_code.load(),
                    doing.c_str());
  } else {
    out = StrFormat("%s: %s while: %s", who.c_str(), DescribeWaitStatus(p.status).c_str(),
                    doing.c_str());
  }
  if (s.message[0] != '\0') {
    out += "\n  " + std::string(s.message, strnlen(s.message, sizeof(s.message)));
  }
  return out;
}

// Collects the failures of exited children into res.
void CollectFailures(const std::vector<Proc>& procs, SharedHeader* hdr, const ScenarioDef& sc,
                     CellResult& res) {
  for (const Proc& p : procs) {
    if (!p.Failed()) continue;
    ++res.errors;
    if (!res.error_report.empty()) res.error_report += "\n";
    res.error_report += DescribeFailure(p, hdr->slots[p.slot], sc.name);
  }
  if (res.errors > 0 && res.outcome == CellResult::Outcome::kOk) {
    res.outcome = CellResult::Outcome::kFail;
  }
}

// Reports a hang (stderr now, and into res), runs --hang-cmd, SIGKILLs the cell's processes and
// waits for them at most kReapTimeout.
void HandleHang(const Config& cfg, const ScenarioDef& sc, Placement pl, const std::string& policy,
                const char* phase, std::vector<Proc>& procs, SharedHeader* hdr, CellResult& res) {
  const double now = NowSeconds();
  std::string pids;
  double stuck_for = 0;
  for (const Proc& p : procs) {
    if (p.exited || now - p.last_change < cfg.watchdog) continue;
    pids += StrFormat(" %d", p.pid);
    stuck_for = std::max(stuck_for, now - p.last_change);
  }
  std::string report = StrFormat(
      "HANG: scenario %s placement %s policy %s: worker pids%s stuck for %.0f s (%s)\n", sc.name,
      PlacementName(pl), policy.c_str(), pids.c_str(), std::floor(stuck_for), phase);
  for (const Proc& p : procs) {
    const Slot& s = hdr->slots[p.slot];
    if (p.exited) {
      report += StrFormat("  %s (pid %d, dir %s): exited (%s)\n", p.role.c_str(), p.pid,
                          p.dir.c_str(), DescribeWaitStatus(p.status).c_str());
      continue;
    }
    report += StrFormat(
        "  %s (pid %d, dir %s): no progress for %.1f s, %llu steps done; "
        "doing: %s\n",
        p.role.c_str(), p.pid, p.dir.c_str(), now - p.last_change,
        static_cast<unsigned long long>(s.progress.load()),
        std::string(s.current, strnlen(s.current, sizeof(s.current))).c_str());
  }
  std::fputs(report.c_str(), stderr);
  std::fflush(stderr);
  if (!cfg.hang_cmd.empty()) {
    const std::string cmd = Substitute(cfg.hang_cmd, "dir", ShellQuote(cfg.dirs[0]));
    const CommandResult r = RunCommand(cmd, kCommandTimeout);
    std::string part = StrFormat("hang-cmd `%s` (%s):\n", cmd.c_str(),
                                 DescribeCommand(r, kCommandTimeout).c_str());
    part += r.output;
    if (!r.output.empty() && r.output.back() != '\n') part += "\n";
    std::fputs(part.c_str(), stderr);
    report += part;
  }
  for (const Proc& p : procs) {
    if (!p.exited) kill(p.pid, SIGKILL);
  }
  const double deadline = NowSeconds() + kReapTimeout;
  for (;;) {
    bool left = false;
    for (Proc& p : procs) {
      if (!p.exited && waitpid(p.pid, &p.status, WNOHANG) == p.pid) p.exited = true;
      left = left || !p.exited;
    }
    if (!left || NowSeconds() >= deadline) break;
    SleepSeconds(0.01);
  }
  std::string unreaped;
  for (const Proc& p : procs) {
    if (!p.exited) unreaped += StrFormat(" %d", p.pid);
  }
  if (!unreaped.empty()) {
    const std::string part = StrFormat(
        "not dead %.0f s after SIGKILL (stuck in the kernel, e.g. waiting for a FUSE reply; "
        "abort the mount, e.g. echo 1 > /sys/fs/fuse/connections/N/abort):%s\n",
        kReapTimeout, unreaped.c_str());
    std::fputs(part.c_str(), stderr);
    report += part;
  }
  std::fflush(stderr);
  res.outcome = CellResult::Outcome::kHang;
  res.hangs = 1;
  res.hang_report += report;
}

// Sums the io_retries counter over the distinct dirs; false (and *fatal) if a command fails.
bool ReadRetries(const Config& cfg, int64_t* sum, std::string* fatal) {
  *sum = 0;
  for (const std::string& d : DistinctDirs(cfg)) {
    const std::string cmd = Substitute(cfg.retries_cmd, "dir", ShellQuote(d));
    const CommandResult r = RunCommand(cmd, kCommandTimeout);
    if (!CommandOk(r)) {
      *fatal = StrFormat("--retries-cmd `%s` failed (%s): %s", cmd.c_str(),
                         DescribeCommand(r, kCommandTimeout).c_str(), r.output.c_str());
      return false;
    }
    std::istringstream in(r.output);
    std::string line;
    bool found = false;
    while (std::getline(in, line)) {
      std::istringstream words(line);
      std::string name;
      long long value;
      if (words >> name >> value && name == "io_retries") {
        *sum += value;
        found = true;
        break;
      }
    }
    if (!found) {
      *fatal = StrFormat("--retries-cmd `%s` printed no 'io_retries N' line; it printed: %s",
                         cmd.c_str(), r.output.c_str());
      return false;
    }
  }
  return true;
}

}  // namespace

const char* PlacementName(Placement p) { return p == Placement::kOne ? "one" : "spread"; }

std::vector<std::string> DistinctDirs(const Config& cfg) {
  std::vector<std::string> out;
  for (const std::string& d : cfg.dirs) {
    if (std::find(out.begin(), out.end(), d) == out.end()) out.push_back(d);
  }
  return out;
}

int WorkerDir(const Config& cfg, const ScenarioDef& sc, Placement pl, int i) {
  if (pl == Placement::kOne) return 0;
  const int n = static_cast<int>(cfg.dirs.size());
  return (sc.swap_dirs && i < 2 ? 1 - i : i) % n;
}

std::vector<int> CellDirs(const Config& cfg, const ScenarioDef& sc, Placement pl) {
  std::vector<int> out;
  for (int i = 0; i < kMaxWorkers; ++i) {
    const int d = WorkerDir(cfg, sc, pl, i);
    if (std::find(out.begin(), out.end(), d) == out.end()) out.push_back(d);
  }
  std::sort(out.begin(), out.end());
  return out;
}

CellResult RunCell(const Config& cfg, const ScenarioDef& sc, Placement pl,
                   const std::string& policy, uint64_t run_number) {
  CellResult res;
  res.dirs = CellDirs(cfg, sc, pl);
  const std::string rel = StrFormat("mmap-stress.%d.%s", static_cast<int>(getpid()), sc.name);

  if (!cfg.policy_cmd.empty()) {
    for (const std::string& d : DistinctDirs(cfg)) {
      const std::string cmd = Substitute(Substitute(cfg.policy_cmd, "policy", ShellQuote(policy)),
                                         "dir", ShellQuote(d));
      const CommandResult r = RunCommand(cmd, kCommandTimeout);
      if (!CommandOk(r)) {
        res.fatal = StrFormat("--policy-cmd `%s` for policy %s failed (%s): %s", cmd.c_str(),
                              policy.c_str(), DescribeCommand(r, kCommandTimeout).c_str(),
                              r.output.c_str());
        return res;
      }
    }
  }

  SharedRegion shm(sc.shared_words(cfg.size));
  SharedHeader* hdr = shm.header();
  auto context = [&](int slot, int index, const std::string& role, int dir) {
    WorkerContext c;
    c.scenario = sc.name;
    c.index = index;
    c.role = role;
    c.dir = cfg.dirs[static_cast<size_t>(dir)];
    c.subdir = c.dir + "/" + rel;
    c.size = cfg.size;
    c.seed = SplitMix64(cfg.seed ^ SplitMix64(run_number * 8 + static_cast<uint64_t>(slot)));
    c.shared = &shm;
    c.slot = slot;
    return c;
  };
  // One helper process; false if it hung (res tells).
  auto helper = [&](const char* role, int dir, const std::function<void(Worker&)>& body) {
    shm.ResetSlot(kHelperSlot);
    const WorkerContext c = context(kHelperSlot, -1, role, dir);
    std::vector<Proc> procs(1);
    procs[0].pid = Spawn(c, body);
    procs[0].slot = kHelperSlot;
    procs[0].role = role;
    procs[0].dir = c.dir;
    const WatchResult w = Watch(cfg, procs, hdr, -1);
    if (w.hang) {
      HandleHang(cfg, sc, pl, policy, role, procs, hdr, res);
      return false;
    }
    CollectFailures(procs, hdr, sc, res);
    return true;
  };
  auto cleanup = [&]() { helper("cleanup", 0, [](Worker& w) { RemoveSubdir(w); }); };

  if (!helper("setup", 0, [&](Worker& w) {
        MakeSubdir(w);
        sc.setup(w);
      })) {
    return res;
  }
  if (res.errors > 0) {
    cleanup();
    return res;
  }

  int64_t before = 0;
  if (!cfg.retries_cmd.empty() && !ReadRetries(cfg, &before, &res.fatal)) {
    cleanup();
    return res;
  }

  std::vector<Proc> procs(kMaxWorkers);
  for (int i = 0; i < kMaxWorkers; ++i) {
    shm.ResetSlot(i);
    const int dir = WorkerDir(cfg, sc, pl, i);
    WorkerContext c = context(i, i, StrFormat("worker %d", i), dir);
    c.stall = cfg.inject_stall == sc.name && i == 1;
    c.spread = pl == Placement::kSpread;
    procs[i].pid = Spawn(c, [&](Worker& w) { sc.run(w); });
    procs[i].slot = i;
    procs[i].role = c.role;
    procs[i].dir = c.dir;
  }
  const WatchResult w = Watch(cfg, procs, hdr, cfg.duration);
  res.iterations = w.iterations;
  res.elapsed = w.went ? w.t_stop - w.t_go : 0;
  for (const Proc& p : procs) {
    res.ops += hdr->slots[p.slot].ops.load();
    res.torn_in_flight += hdr->slots[p.slot].torn_in_flight.load();
    res.dropped_pins += hdr->slots[p.slot].dropped_pins.load();
  }
  if (w.hang) {
    HandleHang(cfg, sc, pl, policy, "run", procs, hdr, res);
    return res;
  }
  CollectFailures(procs, hdr, sc, res);

  if (!cfg.retries_cmd.empty()) {
    int64_t after = 0;
    if (!ReadRetries(cfg, &after, &res.fatal)) {
      cleanup();
      return res;
    }
    res.retries = after - before;
  }

  if (res.errors == 0) {
    for (const int d : res.dirs) {
      if (!helper(d == 0 ? "check" : StrFormat("check via dir %d", d + 1).c_str(), d,
                  [&](Worker& hw) { sc.check(hw); })) {
        return res;
      }
    }
  }
  cleanup();
  return res;
}

}  // namespace ugfs2::mmap_stress
