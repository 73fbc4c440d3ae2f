// Glock dumps read back: parsing the text a daemon answers to the control request "glocks"
// (GlockTable::Dump plus the daemon's extras, gfs2's debugfs "glocks" format), the wait-for
// graph of the processes in one or more nodes' dumps, its cycles (deadlocks), and renderings of
// all of it as text, JSON and Graphviz. Pure: no I/O, no clocks; the caller (ugfs2-tool glocks)
// fetches or reads the dumps.
//
// The grammar: lines end with '\n' (a trailing '\r' is dropped); a line is a tag ("N:", "G:",
// " H:", " I:", " R:", " S:", leading blanks ignored) then space separated key:value tokens.
// Unknown keys, unknown tags and lines without a tag are ignored, so the format can grow; a
// known key with a malformed value, a bad state or glock name, or a holder before any G: line is
// a kCorrupt error naming the (1-based) line.
//   N: id:1 name:node1 table:mycluster:vol1 policy:naive         (first line; older daemons: none)
//   G:  s:SH n:2/805b f:lqb t:EX d:UN/0 ... phase:request lm:SH>EX/1530
//    H: s:DF f:HR e:0 p:1234 w:1500 [comm] label to the end of the line
//    I: ... / R: ... / any other indented tag: kept verbatim with the glock (DumpGlock::extra)
//    S: srtt:120 srttvar:30 req:12 dcnt:4 qcnt:12 bounce:2 retry:1
//
// The wait-for graph (BuildWaitGraph). Vertices are processes, one per (dump, pid); all pid 0
// holders of a dump (the daemon itself, kernel writeback) are one "daemon" vertex of that node.
// An edge P -> Q says P waits for Q, and names the glock:
//   kHeld          P waits on G for state S; Q holds G granted on the same node in a state
//                  incompatible with S (UN goes with everything, SH only with SH, DF only with
//                  DF, EX with nothing). P == Q is a self-loop: recursive locking.
//   kBehindDemote  P waits on G while a demote of G is due (flag D) and not being prepared (no
//                  flag v): the glock admits no new holder until its granted ones leave, so P
//                  waits for Q's granted holder even in a compatible state (gfs2's rule).
//   kQueuedBehind  P waits on G behind Q's earlier waiting holder in an incompatible state
//                  (holders are granted in order).
//   kRemote        P waits on G at a node whose request to the cluster lock manager for state TO
//                  is in flight (lm:FROM>TO/MS, or phase:request with target TO), and another
//                  node caches G in a state incompatible with TO: an edge to each of that node's
//                  granted holders of G, or, if it has none, to a kNode vertex standing for
//                  that node's cached state (which has no out-edges).
// No self-loop is made for the daemon vertex (its holders belong to different threads), and a
// process never waits for itself "queued behind". Equal edges are merged.
//
// Thread safety: values and pure functions.
#ifndef UGFS2_SRC_GLOCK_GLOCK_DUMP_H_
#define UGFS2_SRC_GLOCK_GLOCK_DUMP_H_

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"
#include "glock/glock.h"

namespace ugfs2::glock {

// One " H:" line.
struct DumpHolder {
  State state = State::kUnlocked;  // s: wanted (waiting) or held (granted)
  std::string flags;               // f: letters as dumped (H granted, W waiting, R retained, ...)
  bool granted = false;            // 'H' in flags; otherwise the holder waits
  int64_t error = 0;               // e:
  int64_t pid = 0;                 // p: the process it works for (0: the daemon, writeback)
  int64_t ms = 0;                  // w: since queued (waiting) or granted
  std::string comm;                // [comm]
  std::string label;               // the rest of the line: the request
  bool operator==(const DumpHolder&) const = default;
};

// lm:FROM>TO/MS: a lock-manager request in flight since MS milliseconds.
struct DumpLmRequest {
  State from = State::kUnlocked;
  State to = State::kUnlocked;
  int64_t ms = 0;
  bool operator==(const DumpLmRequest&) const = default;
};

// One " S:" line (unknown statistics are ignored).
struct DumpStats {
  int64_t srtt = 0;             // smoothed lock-request round trip (us)
  int64_t srttvar = 0;          // its mean deviation (us)
  int64_t requests = 0;         // req:
  int64_t demote_requests = 0;  // dcnt:
  int64_t queued = 0;           // qcnt:
  int64_t bounces = 0;          // bounce:
  int64_t retries = 0;          // retry:
  bool operator==(const DumpStats&) const = default;
};

// One "G:" line and the lines below it.
struct DumpGlock {
  GlockName name;                    // n:
  State state = State::kUnlocked;    // s: cached state
  State target = State::kUnlocked;   // t: (s: when absent)
  std::string flags;                 // f: letters as dumped
  State demote = State::kExclusive;  // d: state (EX when no demote, as gfs2 prints it)
  int64_t demote_ms = 0;             // d: milliseconds
  std::string phase = "idle";        // phase: idle|sync|request|invalidate|refresh
  std::optional<DumpLmRequest> lm;   // lm:
  std::vector<DumpHolder> holders;   // in queue order, granted first
  std::vector<std::string> extra;    // " I:", " R:" and other indented lines, trimmed
  std::optional<DumpStats> stats;    // " S:"
  int line = 0;                      // the G: line's number in the text parsed (1-based)

  bool HasFlag(char letter) const { return flags.find(letter) != std::string::npos; }
  // A demote was asked for (flags D, d or b).
  bool DemotePending() const { return HasFlag('D') || HasFlag('d') || HasFlag('b'); }
  // The state a lock-manager request in flight asks for, if one is.
  std::optional<State> RequestedState() const;
  bool operator==(const DumpGlock&) const = default;
};

// One node's dump.
struct NodeDump {
  bool has_header = false;  // an N: line was seen
  int64_t id = 0;           // N: id: (0 on a single-node mount or without N:)
  std::string name;         // N: name:
  std::string table;        // N: table: the lock table, "cluster:fsname"
  std::string policy;       // N: policy: the I/O policy
  std::string source;       // where the dump came from (a mountpoint, a file); set by the caller
  std::vector<DumpGlock> glocks;
  bool operator==(const NodeDump&) const = default;
};

// "UN", "SH", "DF", "EX" -> State.
std::optional<State> ParseStateName(std::string_view s);
// "TYPE/HEXNUMBER" (TYPE decimal 0..255, NUMBER 1..16 hex digits) -> GlockName.
std::optional<GlockName> ParseGlockName(std::string_view s);

// One node's dump. A second N: line (or an N: line after G: lines) is an error: see ParseDumps.
Result<NodeDump> ParseDump(std::string_view text);
// Several dumps one after the other (e.g. files concatenated): a new dump starts at each N:
// line. Text before the first N: line is a dump without header if it has G: lines.
Result<std::vector<NodeDump>> ParseDumps(std::string_view text);
// The dump in the grammar above (the keys ParseDump knows, gfs2's a: v: r: m: p: dropped):
// ParseDump(FormatDump(d)) == d, except for DumpGlock::line and NodeDump::source.
std::string FormatDump(const NodeDump& dump);

// "node 1" (id), "node NAME" (id 0), else the source, else "dump #INDEX" (1-based).
std::string NodeLabel(const NodeDump& dump, size_t index);

struct WaitVertex {
  enum Kind : uint8_t {
    kProcess,  // a process (pid 0: the node's daemon)
    kNode,     // a node caching `glock` in `cached` without a granted holder
  };
  Kind kind = kProcess;
  size_t dump = 0;  // index in the dumps given to BuildWaitGraph
  int64_t node_id = 0;
  std::string node_name;
  std::string node_label;           // NodeLabel of its dump
  int64_t pid = 0;                  // kProcess
  std::string comm;                 // kProcess: of its first holder in the dump
  GlockName glock;                  // kNode
  State cached = State::kUnlocked;  // kNode
  bool demote_pending = false;      // kNode
  bool operator==(const WaitVertex&) const = default;
};
// "node 1 pid 1234 [cat]", "node 1 daemon", "node 2 (2/805b cached DF, demote pending)".
std::string VertexLabel(const WaitVertex& v);

enum class WaitKind : uint8_t { kHeld, kBehindDemote, kQueuedBehind, kRemote };
const char* WaitKindName(WaitKind k);  // "held", "behind-demote", "queued-behind", "remote"

struct WaitEdge {
  size_t from = 0;  // vertex indices
  size_t to = 0;
  WaitKind kind = WaitKind::kHeld;
  GlockName glock;
  State wanted = State::kUnlocked;  // what `from`'s waiting holder wants
  std::string request;              // that holder's label
  // What `to` has: the state of its granted holder (its waiting holder's for kQueuedBehind,
  // the cached state for a kNode vertex).
  State held = State::kUnlocked;
  bool operator==(const WaitEdge&) const = default;
};

struct WaitGraph {
  std::vector<WaitVertex> vertices;
  std::vector<WaitEdge> edges;  // in a deterministic order (dumps, glocks, holders)
  size_t waiting_holders = 0;   // waiting holders in all the dumps
};

WaitGraph BuildWaitGraph(const std::vector<NodeDump>& dumps);

// What a process in a cycle holds that the previous one waits for.
struct HeldGlock {
  GlockName glock;
  State state = State::kUnlocked;
  bool queued = false;  // not held: waiting for `state`, ahead in the queue (kQueuedBehind)
  bool operator==(const HeldGlock&) const = default;
};

struct CycleStep {
  size_t vertex = 0;  // in WaitGraph::vertices
  size_t edge = 0;    // in WaitGraph::edges: the wait for the next step's vertex
  int64_t node_id = 0;
  std::string node_name;
  std::string node_label;
  int64_t pid = 0;
  std::string comm;
  GlockName waits_for;  // the glock, state and request of that wait
  State wanted = State::kUnlocked;
  std::string request;
  std::vector<HeldGlock> holds;  // what the previous step's vertex waits for here
  bool operator==(const CycleStep&) const = default;
};

// A cycle of processes, each waiting for the next one (the last for the first).
struct Cycle {
  std::vector<CycleStep> steps;
  bool operator==(const Cycle&) const = default;
};

// One elementary cycle per strongly connected component of more than one vertex (the shortest
// through its first vertex), then one per vertex with a self-loop; in vertex order.
std::vector<Cycle> FindCycles(const WaitGraph& graph);

// Human text, one block per cycle:
//   DEADLOCK: cycle of 2 processes
//     node 1 pid 1234 [x] waits for 2/805b SH (READ ...) held DF by node 2 pid 1240 [y]
//     node 2 pid 1240 [y] waits for 2/805c SH (READ ...) held DF by node 1 pid 1234 [x]
// or "no deadlock: N waiting holders, none in a cycle\n".
std::string ReportCycles(const WaitGraph& graph, const std::vector<Cycle>& cycles);

// {"nodes":[...],"waitfor":{"vertices":[...],"edges":[...]},"cycles":[...]} on one line, then
// '\n'. The first form builds the graph and finds the cycles itself.
std::string ToJson(const std::vector<NodeDump>& dumps);
std::string ToJson(const std::vector<NodeDump>& dumps, const WaitGraph& graph,
                   const std::vector<Cycle>& cycles);

// A Graphviz digraph: processes as boxes, glocks (with holders or waiters) as ellipses labelled
// with each node's cached state, edges glock -> process "holds S" and process -> glock "wants S";
// the edges of cycles red and bold.
std::string ToDot(const std::vector<NodeDump>& dumps, const WaitGraph& graph,
                  const std::vector<Cycle>& cycles);

// A JSON string literal of `s` (quotes included); invalid UTF-8 becomes U+FFFD.
std::string JsonQuote(std::string_view s);

}  // namespace ugfs2::glock

#endif  // UGFS2_SRC_GLOCK_GLOCK_DUMP_H_
