// Lock manager on real corosync: 3 nodes in network namespaces (scripts/cluster), one
// ugfs2-lockd per node driven over its stdin/stdout. Needs root; skipped otherwise.
// Every wait is bounded and fails with the lines seen so far; the cluster (and every process we
// started) is torn down even when a test fails.
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include <gtest/gtest.h>

namespace {

using Clock = std::chrono::steady_clock;
const std::string kCluster = std::string(UGFS2_SOURCE_DIR) + "/scripts/cluster";
std::string g_name;  // cluster name, unique per run

int Sh(const std::string& cmd, std::string* out = nullptr) {
  FILE* p = popen((cmd + " 2>&1").c_str(), "r");
  if (!p) return -1;
  char buf[4096];
  std::string o;
  while (fgets(buf, sizeof(buf), p)) o += buf;
  int rc = pclose(p);
  if (out) *out = o;
  return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}

std::string Cl(const std::string& args) { return kCluster + " --name " + g_name + " " + args; }

// A child process with line-oriented stdin/stdout.
class Proc {
 public:
  explicit Proc(std::vector<std::string> argv) {
    int in[2], out[2];
    if (pipe2(in, O_CLOEXEC) != 0 || pipe2(out, O_CLOEXEC) != 0) return;
    pid_ = fork();
    if (pid_ == 0) {
      setpgid(0, 0);
      dup2(in[0], 0);
      dup2(out[1], 1);
      std::vector<char*> a;
      for (auto& s : argv) a.push_back(s.data());
      a.push_back(nullptr);
      execv(a[0], a.data());
      _exit(127);
    }
    close(in[0]);
    close(out[1]);
    in_ = in[1];
    out_ = out[0];
  }
  ~Proc() { Kill(); }
  void Kill() {
    if (pid_ > 0) {
      kill(-pid_, SIGKILL);
      kill(pid_, SIGKILL);
      waitpid(pid_, nullptr, 0);
      pid_ = -1;
    }
    if (in_ >= 0) close(in_);
    if (out_ >= 0) close(out_);
    in_ = out_ = -1;
  }
  void Send(const std::string& line) {
    std::string l = line + "\n";
    ASSERT_EQ(write(in_, l.data(), l.size()), static_cast<ssize_t>(l.size()));
  }
  // Waits for a line starting with `prefix`; returns it, or "" on timeout (and records a test
  // failure listing what was seen).
  std::string Expect(const std::string& prefix, int timeout_ms = 30000) {
    auto deadline = Clock::now() + std::chrono::milliseconds(timeout_ms);
    for (;;) {
      size_t nl;
      while ((nl = buf_.find('\n')) != std::string::npos) {
        std::string line = buf_.substr(0, nl);
        buf_.erase(0, nl + 1);
        seen_.push_back(line);
        if (line.rfind(prefix, 0) == 0) return line;
      }
      int left = static_cast<int>(
          std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count());
      if (left <= 0) break;
      pollfd p{out_, POLLIN, 0};
      if (poll(&p, 1, left) <= 0) continue;
      char b[4096];
      ssize_t n = read(out_, b, sizeof(b));
      if (n <= 0) break;
      buf_.append(b, n);
    }
    std::string all;
    for (const auto& s : seen_) all += "  " + s + "\n";
    ADD_FAILURE() << "timed out waiting for '" << prefix << "'; lines seen:\n" << all;
    return "";
  }
  // True if a line with `prefix` is already buffered (non-blocking check).
  bool Seen(const std::string& prefix, int wait_ms = 0) {
    pollfd p{out_, POLLIN, 0};
    while (poll(&p, 1, wait_ms) > 0) {
      wait_ms = 0;
      char b[4096];
      ssize_t n = read(out_, b, sizeof(b));
      if (n <= 0) break;
      buf_.append(b, n);
    }
    size_t nl;
    while ((nl = buf_.find('\n')) != std::string::npos) {
      seen_.push_back(buf_.substr(0, nl));
      buf_.erase(0, nl + 1);
    }
    for (const auto& s : seen_) {
      if (s.rfind(prefix, 0) == 0) return true;
    }
    return false;
  }
  pid_t pid() const { return pid_; }

 private:
  pid_t pid_ = -1;
  int in_ = -1, out_ = -1;
  std::string buf_;
  std::vector<std::string> seen_;
};

class DlmClusterTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (geteuid() != 0 || Sh("command -v corosync") != 0) return;
    g_name = "dlmt" + std::to_string(getpid());
    // Reaper: tears the cluster down when this process goes away, however it dies (a SIGKILL
    // from a test timeout included): it blocks on a pipe whose only writer is us.
    int p[2];
    if (pipe(p) == 0) {
      pid_t r = fork();
      if (r == 0) {
        close(p[1]);
        char c;
        while (read(p[0], &c, 1) > 0) {
        }
        execl("/bin/sh", "sh", "-c", (Cl("down") + " >/dev/null 2>&1").c_str(), nullptr);
        _exit(0);
      }
      close(p[0]);
      fcntl(p[1], F_SETFD, FD_CLOEXEC);
      reaper_pid_ = r;
      reaper_fd_ = p[1];
    }
    std::string out;
    if (Sh(Cl("up -n 3 --no-mkfs --size 16M --timeout 60 --token 3000"), &out) != 0) {
      std::fprintf(stderr, "cluster up failed:\n%s\n", out.c_str());
      Sh(Cl("down"));
      g_name.clear();
    }
  }
  static void TearDownTestSuite() {
    if (!g_name.empty()) Sh(Cl("down"));
    g_name.clear();
    if (reaper_fd_ >= 0) {
      close(reaper_fd_);  // the reaper runs `down` once more (idempotent) and exits
      waitpid(reaper_pid_, nullptr, 0);
      reaper_fd_ = -1;
    }
  }
  static inline int reaper_fd_ = -1;
  static inline pid_t reaper_pid_ = -1;
  void SetUp() override {
    if (geteuid() != 0) GTEST_SKIP() << "needs root";
    if (g_name.empty()) GTEST_SKIP() << "no cluster (corosync missing or bring-up failed)";
    ls_ = "ls" + std::to_string(++counter_);
  }
  void TearDown() override {
    for (auto& p : lockd_) p.reset();
    // Leave the cluster whole for the next test.
    for (int i = 1; i <= 3; ++i) {
      Sh(Cl("heal " + std::to_string(i)));
    }
    std::string st;
    if (Sh(Cl("wait-quorum --timeout 30"), &st) != 0) {
      for (int i = 1; i <= 3; ++i) Sh(Cl("restart " + std::to_string(i)));
      Sh(Cl("wait-quorum --timeout 60"));
    }
  }
  Proc& Start(int node, bool manual_recovery = false) {
    std::vector<std::string> argv = {kCluster,    "--name", g_name, "exec", std::to_string(node),
                                     UGFS2_LOCKD, ls_};
    if (manual_recovery) argv.push_back("--manual-recovery");
    lockd_[node] = std::make_unique<Proc>(argv);
    Sh(Cl("register " + std::to_string(node) + " " + std::to_string(lockd_[node]->pid()) +
          " lockd"));
    return *lockd_[node];
  }
  Proc& L(int node) { return *lockd_[node]; }
  void StartAll(bool manual_recovery = false) {
    for (int i = 1; i <= 3; ++i) Start(i, manual_recovery);
    for (int i = 1; i <= 3; ++i) {
      L(i).Send("wait-member");
      ASSERT_NE(L(i).Expect("member", 60000), "") << "node " << i << " never joined";
    }
  }
  std::string Tool(int node, const std::string& args) {
    std::string out;
    Sh(Cl("exec " + std::to_string(node) + " " + UGFS2_TOOL + " " + args), &out);
    return out;
  }
  // Polls ugfs2-tool until its output contains `needle` (state, not time, is what we wait for).
  bool ToolShows(int node, const std::string& args, const std::string& needle,
                 int timeout_ms = 30000) {
    auto deadline = Clock::now() + std::chrono::milliseconds(timeout_ms);
    std::string out;
    while (Clock::now() < deadline) {
      out = Tool(node, args);
      if (out.find(needle) != std::string::npos) return true;
    }
    ADD_FAILURE() << "ugfs2-tool " << args << " on node " << node << " never showed '" << needle
                  << "'; last output:\n"
                  << out;
    return false;
  }

  std::string ls_;
  std::unique_ptr<Proc> lockd_[4];
  static inline int counter_ = 0;
};

TEST_F(DlmClusterTest, ContentionFromAllNodesIsSerialised) {
  StartAll();
  L(1).Send("lock a hot EX");
  ASSERT_NE(L(1).Expect("ast a status=OK mode=EX"), "");
  L(2).Send("lock a hot EX");
  L(3).Send("lock a hot EX");
  ASSERT_TRUE(ToolShows(1, "lockdump " + ls_, "Waiting"));
  ASSERT_NE(L(1).Expect("bast a mode=EX"), "");
  // Queue visible from any node, with owners.
  std::string dump = Tool(3, "lockdump " + ls_ + " --all-nodes");
  EXPECT_NE(dump.find("comm ugfs2-lockd"), std::string::npos) << dump;
  L(1).Send("unlock a");
  // Exactly one of 2 and 3 gets it next; it releases, then the other one gets it.
  int first = 0;
  for (auto deadline = Clock::now() + std::chrono::seconds(30); !first;) {
    if (L(2).Seen("ast a status=OK", 50)) first = 2;
    if (L(3).Seen("ast a status=OK")) first = first ? -1 : 3;
    ASSERT_LT(Clock::now(), deadline) << "nobody got the lock after node 1 released it";
  }
  ASSERT_GT(first, 0) << "both waiters granted EX at once";
  const int second = first == 2 ? 3 : 2;
  EXPECT_FALSE(L(second).Seen("ast a status=OK"));
  L(first).Send("unlock a");
  ASSERT_NE(L(second).Expect("ast a status=OK mode=EX"), "");
}

TEST_F(DlmClusterTest, BlockingCallbackAndLvbHandOver) {
  StartAll();
  L(1).Send("lock a meta EX VALBLK");
  ASSERT_NE(L(1).Expect("ast a status=OK"), "");
  L(1).Send("lvb a generation-42");
  L(2).Send("lock b meta PR VALBLK");
  ASSERT_NE(L(1).Expect("bast a mode=PR"), "");
  L(1).Send("convert a NL VALBLK");
  std::string g = L(2).Expect("ast b status=OK");
  EXPECT_NE(g.find("lvb=generation-42"), std::string::npos) << g;
  // A third node reading later sees the same value; the tool shows the LVB on every node.
  L(3).Send("lock c meta CR VALBLK");
  g = L(3).Expect("ast c status=OK");
  EXPECT_NE(g.find("lvb=generation-42"), std::string::npos) << g;
  std::string json = Tool(2, "lockdump " + ls_ + " --json");
  EXPECT_NE(json.find("\"lvbseq\":1"), std::string::npos) << json;
}

TEST_F(DlmClusterTest, NodeKilledWhileHoldingExWaitsForRecovery) {
  StartAll(/*manual_recovery=*/true);
  L(3).Send("lock j journal3 EX");
  ASSERT_NE(L(3).Expect("ast j status=OK"), "");
  L(1).Send("lock w journal3 EX");
  ASSERT_NE(L(3).Expect("bast j mode=EX"), "");
  ASSERT_EQ(Sh(Cl("crash 3")), 0);
  lockd_[3]->Kill();
  ASSERT_NE(L(1).Expect("recovery 3"), "");
  ASSERT_NE(L(2).Expect("recovery 3"), "");
  // The dead node's EX is still there and node 1 still waits: the tool tells why.
  ASSERT_TRUE(ToolShows(1, "lockdump " + ls_, "DEAD-OWNER(awaiting recovery)"));
  EXPECT_NE(Tool(1, "ls").find("wait recovery of 3"), std::string::npos);
  EXPECT_FALSE(L(1).Seen("ast w"));
  // Recovery's own lock may proceed (NOEXP).
  L(2).Send("lock r journal3 EX NOEXP");
  ASSERT_NE(L(2).Expect("ast r status=OK"), "");
  L(2).Send("unlock r");
  L(2).Send("recovery-done 3");
  ASSERT_NE(L(1).Expect("ast w status=OK mode=EX"), "");
  // Node 3 comes back and joins as a new member with the current table.
  ASSERT_EQ(Sh(Cl("restart 3")), 0);
  ASSERT_EQ(Sh(Cl("wait-quorum --timeout 60")), 0);
  Start(3, true);
  L(3).Send("wait-member");
  ASSERT_NE(L(3).Expect("member", 60000), "");
  L(3).Send("lock x journal3 PR NOQUEUE");
  ASSERT_NE(L(3).Expect("ast x status=EAGAIN"), "");
}

TEST_F(DlmClusterTest, PartitionedNodeLosesQuorumFencesAndRejoins) {
  StartAll();
  L(3).Send("lock a part EX");
  ASSERT_NE(L(3).Expect("ast a status=OK"), "");
  L(1).Send("lock b part EX");
  ASSERT_EQ(Sh(Cl("cut 3")), 0);
  ASSERT_NE(L(3).Expect("fenced 1", 60000), "") << "partitioned node did not fence itself";
  // The majority recovers node 3 (no hook registered: automatic) and grants node 1.
  ASSERT_NE(L(1).Expect("ast b status=OK mode=EX", 60000), "");
  L(3).Send("lock c other EX");
  ASSERT_NE(L(3).Expect("error lock"), "");  // refused while fenced
  ASSERT_EQ(Sh(Cl("heal 3")), 0);
  ASSERT_NE(L(3).Expect("fenced 0", 90000), "") << "node 3 never rejoined after heal";
  // The majority must have stayed quorate throughout (a flap there would drop node 1's EX too
  // and make the next check meaningless): say so plainly if it did not.
  ASSERT_FALSE(L(1).Seen("fenced 1")) << "node 1 (majority side) lost quorum during the test: "
                                         "corosync membership flapped under load";
  L(3).Send("lock d part PR NOQUEUE");
  ASSERT_NE(L(3).Expect("ast d status=EAGAIN"), "");  // node 1 still holds EX: fresh state
  L(1).Send("unlock b");
  L(3).Send("lock e part PR");
  ASSERT_NE(L(3).Expect("ast e status=OK"), "");
}

}  // namespace

namespace {

TEST_F(DlmClusterTest, CorosyncDeathIsFatalAndReported) {
  StartAll();
  L(3).Send("lock a cs EX");
  ASSERT_NE(L(3).Expect("ast a status=OK"), "");
  L(1).Send("lock b cs EX");
  // Kill only corosync (not the lock process) in node 3's namespace.
  const std::string ns = "ugfs2." + g_name + ".n3";
  ASSERT_EQ(Sh("n=0; for p in $(ip netns pids " + ns +
               "); do [ \"$(cat /proc/$p/comm 2>/dev/null)\" = corosync ] && kill -9 $p && "
               "n=1; done; [ $n = 1 ]"),
            0)
      << "could not kill corosync of node 3";
  // The lock process notices at once (POLLHUP on the CPG fd) and reports itself fenced.
  ASSERT_NE(L(3).Expect("fenced 1"), "");
  L(3).Send("state");
  EXPECT_NE(L(3).Expect("state dead"), "");
  // For the others node 3 failed: they recover it (automatically) and go on.
  ASSERT_NE(L(1).Expect("ast b status=OK mode=EX", 60000), "");
  lockd_[3]->Kill();
  ASSERT_EQ(Sh(Cl("restart 3")), 0);
  ASSERT_EQ(Sh(Cl("wait-quorum --timeout 60")), 0);
}

}  // namespace
