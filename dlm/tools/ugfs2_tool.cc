// ugfs2-tool: inspect the lock manager of this node (in the spirit of dlm_tool), and the glocks
// of a mounted ugfs2 filesystem.
//
//   ugfs2-tool ls [--json]
//   ugfs2-tool lockdump LOCKSPACE [--all-nodes] [--json]
//   ugfs2-tool glocks MOUNTPOINT [--all-nodes] [--json|--dot|--cycles]
//   ugfs2-tool glocks --merge FILE... [--json|--dot|--cycles]
//   ugfs2-tool demote MOUNTPOINT NAME|all [--count N] [--interval-ms M]
//   ugfs2-tool counters MOUNTPOINT [--json]
//   ugfs2-tool recovery MOUNTPOINT
//   ugfs2-tool policy MOUNTPOINT [merged|proposal-2021|naive]
//
// ls/lockdump talk over libqb IPC (service $UGFS2_DLM_IPC or "ugfs2-dlm") to the process hosting
// the lockspaces on this node. glocks/demote/counters talk to the ugfs2 daemon serving MOUNTPOINT
// over its control socket (/run/ugfs2/ctl/MAJ:MIN.sock, fuse/control_client.h); MOUNTPOINT is found
// in /proc/self/mountinfo without touching the mount, so a daemon that hangs cannot hang the tool
// before its request times out. Root only.
//
// glocks --all-nodes asks every ugfs2 mount of the same lock table visible on this machine (one
// daemon per node, e.g. the nodes of a test cluster on one host) for its dump, each with a short
// timeout, and glocks --merge reads dumps saved earlier (one per node of a real cluster); both
// then look for deadlocks in the wait-for graph across the nodes (src/glock/glock_dump.h).
#include <sys/sysmacros.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iostream>
#include <iterator>
#include <map>
#include <sstream>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <qb/qbipcc.h>

#include "control_client.h"
#include "glock/glock_dump.h"
#include "ipc_server.h"

namespace {

using ugfs2::Code;
using ugfs2::Result;
using ugfs2::Status;

constexpr int kControlTimeoutMs = 60000;
// glocks --all-nodes: so that one hung daemon cannot hang the tool.
constexpr int kPeerTimeoutMs = 5000;
// glocks --cycles, --all-nodes, --merge: a deadlock was found.
constexpr int kExitDeadlock = 3;

constexpr const char* kUsage =
    "usage: ugfs2-tool ls [--json]\n"
    "       ugfs2-tool lockdump LOCKSPACE [--all-nodes] [--json]\n"
    "       ugfs2-tool glocks MOUNTPOINT [--all-nodes] [--json|--dot|--cycles]\n"
    "       ugfs2-tool glocks --merge FILE... [--json|--dot|--cycles]\n"
    "       ugfs2-tool demote MOUNTPOINT NAME|all [--count N] [--interval-ms M]\n"
    "       ugfs2-tool counters MOUNTPOINT [--json]\n"
    "       ugfs2-tool recovery MOUNTPOINT\n"
    "       ugfs2-tool policy MOUNTPOINT [merged|proposal-2021|naive]\n"
    "\n"
    "  ls, lockdump  the lock manager's lockspaces and locks on this node\n"
    "  glocks        the glocks of the ugfs2 mount at MOUNTPOINT (gfs2's glocks format).\n"
    "                --all-nodes: also those of every ugfs2 mount on this machine with the same\n"
    "                lock table (other nodes' daemons; 5 s each), each under a line\n"
    "                '=== node ID NAME (MOUNT) ===', then a deadlock report: the cycles of the\n"
    "                wait-for graph of the processes across the nodes. --merge: the same for\n"
    "                dumps saved earlier ('ugfs2-tool glocks MNT > nodeN.txt' on each node;\n"
    "                '-' reads standard input). --json: dumps, wait-for graph and cycles as one\n"
    "                JSON object; --dot: the graph for Graphviz (cycles in red); --cycles: only\n"
    "                the report. Exit 3 if the report (--cycles, --all-nodes, --merge) found a\n"
    "                deadlock.\n"
    "  demote        demote the glock NAME (TYPE/HEXNUMBER as in the dump, e.g. 2/1b3a), or all\n"
    "                of them, to UN as a remote node's request would; N times (default 1), M ms\n"
    "                apart (default 0). Prints 'demote NAME: S sent, A accepted, R refused' (and\n"
    "                ', G glocks asked' for all); exit 0 only if every request was accepted.\n"
    "  counters      what the daemon of the cluster mount at MOUNTPOINT sent to the lock manager\n"
    "                since it mounted: one 'NAME VALUE' line per counter (dlm_msgs_sent,\n"
    "                dlm_bytes_sent, lm_requests, lm_converts, lm_unlocks, lm_callbacks, ...;\n"
    "                docs/cluster.md), or one JSON object with --json.\n"
    "  recovery      node failure state of the cluster mount at MOUNTPOINT: whether this node\n"
    "                is fenced (and refuses writes), the members, the failed nodes whose locks\n"
    "                await recovery, and per failed node and journal what recovery did\n"
    "                (docs/recovery.md).\n"
    "  policy        the I/O policy of the mount at MOUNTPOINT (how data requests hold glocks,\n"
    "                docs/deadlocks.md); with a name, switch to it first. Switching drops every\n"
    "                glock the old policy kept across requests (it breaks a naive deadlock).\n";

int Usage() {
  std::fputs(kUsage, stderr);
  return 2;
}

// Parses a non-negative decimal for an option; false if it is not one.
bool ParseCount(const std::string& text, long long* out) {
  if (text.empty()) return false;
  char* end = nullptr;
  errno = 0;
  long long v = std::strtoll(text.c_str(), &end, 10);
  if (errno != 0 || *end != '\0' || v < 0) return false;
  *out = v;
  return true;
}

Result<std::string> ControlSocketOf(const std::string& mountpoint) {
  ASSIGN_OR_RETURN(dev_t dev, ugfs2::fusefs::MountDevice(mountpoint));
  return ugfs2::fusefs::ControlPath(dev);
}

// A control request whose answer is printed as it comes ("glocks", "recovery").
int Glocks(const std::string& mountpoint, const char* request = "glocks") {
  auto path = ControlSocketOf(mountpoint);
  if (!path.ok()) {
    std::fprintf(stderr, "ugfs2-tool: %s\n", path.status().ToString().c_str());
    return 1;
  }
  auto dump = ugfs2::fusefs::ControlRequest(*path, request, kControlTimeoutMs);
  if (!dump.ok()) {
    std::fprintf(stderr, "ugfs2-tool: %s %s: %s\n", request, mountpoint.c_str(),
                 dump.status().ToString().c_str());
    return 1;
  }
  std::fwrite(dump->data(), 1, dump->size(), stdout);
  if (!dump->empty() && dump->back() != '\n') std::fputc('\n', stdout);
  return std::fflush(stdout) == 0 ? 0 : 1;
}

// --- glocks across nodes ---

enum class GlocksOutput { kText, kJson, kDot, kCycles };

// A node's dump and the text it came from.
struct CollectedDump {
  ugfs2::glock::NodeDump dump;
  std::string text;
};

// The ugfs2 mounts in /proc/self/mountinfo (filesystem type fuse.ugfs2 or fuseblk.ugfs2, as
// the daemon mounts with subtype=ugfs2): mount point and device, one per device, in order.
std::vector<std::pair<std::string, dev_t>> Ugfs2Mounts() {
  std::vector<std::pair<std::string, dev_t>> out;
  std::ifstream in("/proc/self/mountinfo");
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream f(line);
    std::vector<std::string> fields;
    for (std::string w; f >> w;) fields.push_back(w);
    // ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTIONS [OPTIONAL...] - FSTYPE SOURCE SUPEROPTIONS
    size_t dash = 6;
    while (dash < fields.size() && fields[dash] != "-") ++dash;
    if (fields.size() < 5 || dash + 1 >= fields.size()) continue;
    const std::string& fstype = fields[dash + 1];
    if (fstype != "fuse.ugfs2" && fstype != "fuseblk.ugfs2") continue;
    unsigned ma = 0, mi = 0;
    if (std::sscanf(fields[2].c_str(), "%u:%u", &ma, &mi) != 2) continue;
    const dev_t dev = makedev(ma, mi);
    bool seen = false;
    for (const auto& [mnt, d] : out) seen = seen || d == dev;
    if (!seen) out.emplace_back(ugfs2::fusefs::UnescapeMountInfo(fields[4]), dev);
  }
  return out;
}

std::string DumpHeader(const CollectedDump& c) {
  const ugfs2::glock::NodeDump& d = c.dump;
  std::string h = "=== node " + (d.has_header ? std::to_string(d.id) : std::string("?"));
  if (!d.name.empty()) h += " " + d.name;
  return h + " (" + d.source + ") ===\n";
}

// Drops a second dump of a node already seen (same id, not 0), keeping the first.
void DropDuplicateNodes(std::vector<CollectedDump>* dumps) {
  std::map<int64_t, std::string> seen;  // node id -> source
  std::vector<CollectedDump> kept;
  for (CollectedDump& c : *dumps) {
    if (c.dump.id != 0) {
      auto [it, added] = seen.emplace(c.dump.id, c.dump.source);
      if (!added) {
        std::fprintf(stderr, "ugfs2-tool: node %lld: %s: the same node as %s, skipped\n",
                     static_cast<long long>(c.dump.id), c.dump.source.c_str(), it->second.c_str());
        continue;
      }
    }
    kept.push_back(std::move(c));
  }
  *dumps = std::move(kept);
}

// Prints the collected dumps as `output` asks. Exit status: 0, or kExitDeadlock when a report
// (text, kCycles) found a cycle.
int PrintGlocks(const std::vector<CollectedDump>& collected, GlocksOutput output) {
  std::vector<ugfs2::glock::NodeDump> dumps;
  for (const CollectedDump& c : collected) dumps.push_back(c.dump);
  const ugfs2::glock::WaitGraph graph = ugfs2::glock::BuildWaitGraph(dumps);
  const std::vector<ugfs2::glock::Cycle> cycles = ugfs2::glock::FindCycles(graph);
  std::string out;
  switch (output) {
    case GlocksOutput::kJson:
      out = ugfs2::glock::ToJson(dumps, graph, cycles);
      break;
    case GlocksOutput::kDot:
      out = ugfs2::glock::ToDot(dumps, graph, cycles);
      break;
    case GlocksOutput::kText:
      for (const CollectedDump& c : collected) {
        out += DumpHeader(c) + c.text;
        if (!c.text.empty() && c.text.back() != '\n') out += '\n';
      }
      [[fallthrough]];
    case GlocksOutput::kCycles:
      out += ugfs2::glock::ReportCycles(graph, cycles);
      break;
  }
  std::fwrite(out.data(), 1, out.size(), stdout);
  if (std::fflush(stdout) != 0) return 1;
  const bool report = output == GlocksOutput::kText || output == GlocksOutput::kCycles;
  return report && !cycles.empty() ? kExitDeadlock : 0;
}

// glocks MOUNTPOINT with --all-nodes, --json, --dot or --cycles.
int GlocksOfNodes(const std::string& mountpoint, bool all_nodes, GlocksOutput output) {
  auto dev = ugfs2::fusefs::MountDevice(mountpoint);
  if (!dev.ok()) {
    std::fprintf(stderr, "ugfs2-tool: %s\n", dev.status().ToString().c_str());
    return 1;
  }
  const int timeout_ms = all_nodes ? kPeerTimeoutMs : kControlTimeoutMs;
  auto text = ugfs2::fusefs::ControlRequest(ugfs2::fusefs::ControlPath(*dev), "glocks", timeout_ms);
  if (!text.ok()) {
    std::fprintf(stderr, "ugfs2-tool: glocks %s: %s\n", mountpoint.c_str(),
                 text.status().ToString().c_str());
    return 1;
  }
  auto dump = ugfs2::glock::ParseDump(*text);
  if (!dump.ok()) {
    std::fprintf(stderr, "ugfs2-tool: glocks %s: the daemon's dump: %s\n", mountpoint.c_str(),
                 dump.status().ToString().c_str());
    return 1;
  }
  dump->source = mountpoint;
  std::vector<CollectedDump> collected;
  collected.push_back({std::move(*dump), std::move(*text)});
  const std::string table = collected[0].dump.table;
  if (all_nodes && !table.empty()) {
    for (const auto& [mnt, peer_dev] : Ugfs2Mounts()) {
      if (peer_dev == *dev) continue;
      auto peer = ugfs2::fusefs::ControlRequest(ugfs2::fusefs::ControlPath(peer_dev), "glocks",
                                                kPeerTimeoutMs);
      if (!peer.ok()) {
        std::fprintf(stderr, "node ?: %s: no answer (%s)\n", mnt.c_str(),
                     peer.status().ToString().c_str());
        continue;
      }
      auto pd = ugfs2::glock::ParseDump(*peer);
      if (!pd.ok()) {
        std::fprintf(stderr, "node ?: %s: bad dump (%s)\n", mnt.c_str(),
                     pd.status().ToString().c_str());
        continue;
      }
      if (pd->table != table) continue;  // another filesystem (or a daemon without N:)
      pd->source = mnt;
      collected.push_back({std::move(*pd), std::move(*peer)});
    }
    DropDuplicateNodes(&collected);
  }
  return PrintGlocks(collected, output);
}

// glocks --merge FILE...: dumps saved earlier; a file may hold several (concatenated).
int GlocksMerge(const std::vector<std::string>& files, GlocksOutput output) {
  std::vector<CollectedDump> collected;
  for (const std::string& file : files) {
    std::string text;
    if (file == "-") {
      text.assign(std::istreambuf_iterator<char>(std::cin), std::istreambuf_iterator<char>());
    } else {
      std::ifstream in(file, std::ios::binary);
      if (!in) {
        std::fprintf(stderr, "ugfs2-tool: %s: %s\n", file.c_str(), std::strerror(errno));
        return 1;
      }
      text.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
      if (in.bad()) {
        std::fprintf(stderr, "ugfs2-tool: %s: read error\n", file.c_str());
        return 1;
      }
    }
    auto dumps = ugfs2::glock::ParseDumps(text);
    if (!dumps.ok()) {
      std::fprintf(stderr, "ugfs2-tool: %s: %s\n", file.c_str(), dumps.status().ToString().c_str());
      return 1;
    }
    if (dumps->empty()) {
      std::fprintf(stderr, "ugfs2-tool: %s: no glock dump in it\n", file.c_str());
      continue;
    }
    // One dump: shown as saved; several: each as FormatDump writes it.
    const bool one = dumps->size() == 1;
    for (ugfs2::glock::NodeDump& d : *dumps) {
      d.source = file;
      std::string shown = one ? text : ugfs2::glock::FormatDump(d);
      collected.push_back({std::move(d), std::move(shown)});
    }
  }
  DropDuplicateNodes(&collected);
  return PrintGlocks(collected, output);
}

// "NAME VALUE" lines as the daemon sends them, or one JSON object {"NAME": VALUE, ...}.
int Counters(const std::string& mountpoint, bool json) {
  auto path = ControlSocketOf(mountpoint);
  if (!path.ok()) {
    std::fprintf(stderr, "ugfs2-tool: %s\n", path.status().ToString().c_str());
    return 1;
  }
  auto text = ugfs2::fusefs::ControlRequest(*path, "counters", kControlTimeoutMs);
  if (!text.ok()) {
    std::fprintf(stderr, "ugfs2-tool: counters %s: %s\n", mountpoint.c_str(),
                 text.status().ToString().c_str());
    return 1;
  }
  std::vector<std::pair<std::string, std::string>> values;
  size_t pos = 0;
  while (pos < text->size()) {
    size_t end = text->find('\n', pos);
    if (end == std::string::npos) end = text->size();
    const std::string line = text->substr(pos, end - pos);
    pos = end + 1;
    if (line.empty()) continue;
    const size_t sp = line.find(' ');
    long long v = 0;
    if (sp == std::string::npos || sp == 0 || !ParseCount(line.substr(sp + 1), &v)) {
      std::fprintf(stderr, "ugfs2-tool: counters %s: bad line from the daemon: '%s'\n",
                   mountpoint.c_str(), line.c_str());
      return 1;
    }
    values.emplace_back(line.substr(0, sp), line.substr(sp + 1));
  }
  if (json) {
    std::printf("{");
    for (size_t i = 0; i < values.size(); ++i) {
      std::printf("%s\"%s\": %s", i == 0 ? "" : ", ", values[i].first.c_str(),
                  values[i].second.c_str());
    }
    std::printf("}\n");
  } else {
    for (const auto& [name, value] : values) std::printf("%s %s\n", name.c_str(), value.c_str());
  }
  return std::fflush(stdout) == 0 ? 0 : 1;
}

int Demote(const std::string& mountpoint, const std::string& name, long long count,
           long long interval_ms) {
  auto path = ControlSocketOf(mountpoint);
  if (!path.ok()) {
    std::fprintf(stderr, "ugfs2-tool: %s\n", path.status().ToString().c_str());
    return 1;
  }
  const bool all = name == "all";
  const std::string request = "demote " + name;
  long long sent = 0, accepted = 0, asked = 0;
  struct Refusal {
    long long times = 0;
    std::string first;
  };
  std::map<Code, Refusal> refused;  // by code: the first message and how often
  bool lost = false;                // the daemon stopped answering: stop early
  for (long long i = 0; i < count && !lost; ++i) {
    if (i > 0 && interval_ms > 0) {
      std::this_thread::sleep_for(std::chrono::milliseconds(interval_ms));
    }
    ++sent;
    auto reply = ugfs2::fusefs::ControlRequest(*path, request, kControlTimeoutMs);
    if (reply.ok()) {
      ++accepted;
      if (all) asked += std::strtoll(reply->c_str(), nullptr, 10);
      continue;
    }
    const Status& st = reply.status();
    Refusal& r = refused[st.code()];
    if (r.times++ == 0) r.first = st.ToString();
    lost = st.code() == Code::kNotConnected || st.code() == Code::kTimedOut;
  }
  long long refusals = 0;
  for (const auto& [code, r] : refused) {
    refusals += r.times;
    std::fprintf(stderr, "ugfs2-tool: %s: refused %lld time%s: %s\n", request.c_str(), r.times,
                 r.times == 1 ? "" : "s", r.first.c_str());
  }
  std::printf("demote %s: %lld sent, %lld accepted, %lld refused", name.c_str(), sent, accepted,
              refusals);
  if (all) std::printf(", %lld glocks asked", asked);
  std::printf("\n");
  std::fflush(stdout);
  return accepted == count ? 0 : 1;
}

// The lock manager commands (libqb IPC).
int LockManager(const std::string& command, bool json) {
  std::string cmd = command;
  if (json) cmd += " json";
  const std::string name = ugfs2::dlm::IpcServiceName();
  qb_ipcc_connection_t* c = qb_ipcc_connect(name.c_str(), ugfs2::dlm::kIpcMaxMsg);
  if (c == nullptr) {
    std::fprintf(stderr,
                 "ugfs2-tool: cannot connect to %s: %s (is a lockspace host running on this "
                 "node? are you root?)\n",
                 name.c_str(), std::strerror(errno));
    return 1;
  }
  qb_ipc_request_header hdr{};
  hdr.id = ugfs2::dlm::kIpcCommand;
  hdr.size = static_cast<int32_t>(sizeof(hdr) + cmd.size());
  iovec iov[2] = {{&hdr, sizeof(hdr)}, {cmd.data(), cmd.size()}};
  std::vector<char> buf(ugfs2::dlm::kIpcMaxMsg);
  ssize_t n = qb_ipcc_sendv_recv(c, iov, 2, buf.data(), buf.size(), 30000);
  qb_ipcc_disconnect(c);
  if (n < static_cast<ssize_t>(sizeof(qb_ipc_response_header))) {
    std::fprintf(stderr, "ugfs2-tool: IPC failed: %s\n", std::strerror(static_cast<int>(-n)));
    return 1;
  }
  const auto* rh = reinterpret_cast<const qb_ipc_response_header*>(buf.data());
  std::fwrite(buf.data() + sizeof(*rh), 1, n - sizeof(*rh), rh->error ? stderr : stdout);
  if (json) std::fputc('\n', stdout);
  return rh->error ? 1 : 0;
}

int Main(const std::vector<std::string>& args) {
  bool json = false, all_nodes = false, merge = false, dot = false, cycles = false;
  long long count = 1, interval_ms = 0;
  bool count_given = false, interval_given = false;
  std::vector<std::string> pos;
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    // --count N, --count=N; likewise --interval-ms.
    auto value_of = [&](const std::string& opt, long long* out, bool* given) -> int {
      std::string v;
      if (a == opt) {
        if (i + 1 >= args.size()) return -1;
        v = args[++i];
      } else if (a.starts_with(opt + "=")) {
        v = a.substr(opt.size() + 1);
      } else {
        return 0;
      }
      if (!ParseCount(v, out)) return -1;
      *given = true;
      return 1;
    };
    int r = value_of("--count", &count, &count_given);
    if (r == 0) r = value_of("--interval-ms", &interval_ms, &interval_given);
    if (r < 0) return Usage();
    if (r > 0) continue;
    if (a == "--json") {
      json = true;
    } else if (a == "--all-nodes") {
      all_nodes = true;
    } else if (a == "--merge") {
      merge = true;
    } else if (a == "--dot") {
      dot = true;
    } else if (a == "--cycles") {
      cycles = true;
    } else if (a == "-h" || a == "--help") {
      std::fputs(kUsage, stdout);
      return 0;
    } else {
      pos.push_back(a);
    }
  }
  const std::string cmd = pos.empty() ? "" : pos[0];
  const bool demote_opts = count_given || interval_given;
  if (cmd == "glocks" && !demote_opts) {
    if (json + dot + cycles > 1) return Usage();  // one output form
    const GlocksOutput output = json     ? GlocksOutput::kJson
                                : dot    ? GlocksOutput::kDot
                                : cycles ? GlocksOutput::kCycles
                                         : GlocksOutput::kText;
    if (merge) {
      if (pos.size() < 2 || all_nodes) return Usage();
      return GlocksMerge(std::vector<std::string>(pos.begin() + 1, pos.end()), output);
    }
    if (pos.size() != 2) return Usage();
    if (!all_nodes && output == GlocksOutput::kText) return Glocks(pos[1]);  // as it comes
    return GlocksOfNodes(pos[1], all_nodes, output);
  }
  if (merge || dot || cycles) return Usage();
  if (cmd == "recovery" && pos.size() == 2 && !demote_opts && !json && !all_nodes) {
    return Glocks(pos[1], "recovery");
  }
  if (cmd == "policy" && (pos.size() == 2 || pos.size() == 3) && !demote_opts && !json &&
      !all_nodes) {
    // Prints the I/O policy in force (after switching it, with a NAME).
    return Glocks(pos[1], pos.size() == 3 ? ("policy " + pos[2]).c_str() : "policy");
  }
  if (cmd == "counters" && pos.size() == 2 && !demote_opts && !all_nodes) {
    return Counters(pos[1], json);
  }
  if (cmd == "demote" && pos.size() == 3 && !json && !all_nodes) {
    if (count < 1 || pos[2].empty()) return Usage();
    return Demote(pos[1], pos[2], count, interval_ms);
  }
  if (demote_opts) return Usage();
  if (cmd == "ls" && pos.size() == 1) return LockManager("ls", json);
  if (cmd == "lockdump" && pos.size() == 2) {
    return LockManager("lockdump " + pos[1] + (all_nodes ? " all" : ""), json);
  }
  return Usage();
}

}  // namespace

int main(int argc, char** argv) { return Main(std::vector<std::string>(argv + 1, argv + argc)); }
