// Glock dumps read back: the parser (round trips, tolerance of unknown keys and lines, errors
// naming the line), the wait-for graph (held, queued behind, behind a demote, across nodes) and
// its cycles (ABBA on one node and across two, recursive locking; chains and compatible holders
// are no deadlock), and the JSON and Graphviz renderings.
#include "glock/glock_dump.h"

#include <string>
#include <vector>

#include <gtest/gtest.h>

namespace ugfs2::glock {
namespace {

constexpr GlockName kA{GlockType::kInode, 0xa1};
constexpr GlockName kB{GlockType::kInode, 0xb2};

// The lead's example: every line kind, gfs2's meaningless fields and a lock request in flight.
constexpr const char* kExample =
    "N: id:1 name:node1 table:mycluster:vol1 policy:naive\n"
    "G:  s:SH n:2/805b f:lqb t:EX d:UN/0 a:0 v:0 r:3 m:200 p:0 phase:request lm:SH>EX/1530\n"
    " H: s:DF f:HR e:0 p:1234 w:1500 [ugfs2-mmap-str] READ off=0 len=1048576\n"
    " H: s:SH f:W e:0 p:1235 w:1200 [cat] READ off=4096 len=4096\n"
    " I: n:2/32859 t:8 f:0x00 d:0x00000000 s:4096\n"
    " R: n:17 f:00 b:1200/0 i:3 q:0 r:0 e:0\n"
    " S: srtt:120 srttvar:30 req:12 dcnt:4 qcnt:12 bounce:2 retry:1\n";

// One node, two processes: 100 holds A DF and waits SH on B; 200 holds B DF and waits SH on A.
constexpr const char* kAbbaOneNode =
    "N: id:0 name:solo table:local:vol policy:naive\n"
    "G:  s:DF n:2/a1 f:q t:DF d:EX/0 a:1 v:0 r:2 m:200 p:0 phase:idle\n"
    " H: s:DF f:H e:0 p:100 w:50 [procA] WRITE off=0 len=4096\n"
    " H: s:SH f:W e:0 p:200 w:40 [procB] READ off=0 len=4096\n"
    " S: srtt:0 srttvar:0 req:1 dcnt:0 qcnt:2 bounce:0 retry:0\n"
    "G:  s:DF n:2/b2 f:q t:DF d:EX/0 a:1 v:0 r:2 m:200 p:0 phase:idle\n"
    " H: s:DF f:H e:0 p:200 w:50 [procB] WRITE off=0 len=4096\n"
    " H: s:SH f:W e:0 p:100 w:40 [procA] READ off=8192 len=4096\n"
    " S: srtt:0 srttvar:0 req:1 dcnt:0 qcnt:2 bounce:0 retry:0\n";

// Two nodes: 1234 on node 1 holds A DF and asks the cluster for B SH; B is cached DF on node 2,
// held by 1240, which asks for A SH, cached DF on node 1.
constexpr const char* kAbbaNode1 =
    "N: id:1 name:node1 table:c:vol policy:naive\n"
    "G:  s:DF n:2/a1 f:qb t:DF d:SH/0 a:1 v:0 r:1 m:200 p:0 phase:idle\n"
    " H: s:DF f:H e:0 p:1234 w:1500 [mmap-str] WRITE off=0 len=4096\n"
    "G:  s:UN n:2/b2 f:lq t:SH d:EX/0 a:0 v:0 r:1 m:200 p:0 phase:request lm:UN>SH/1400\n"
    " H: s:SH f:W e:0 p:1234 w:1400 [mmap-str] READ off=0 len=4096\n";
constexpr const char* kAbbaNode2 =
    "N: id:2 name:node2 table:c:vol policy:naive\n"
    "G:  s:DF n:2/b2 f:qb t:DF d:SH/0 a:1 v:0 r:1 m:200 p:0 phase:idle\n"
    " H: s:DF f:H e:0 p:1240 w:1500 [mmap-str] WRITE off=0 len=4096\n"
    "G:  s:UN n:2/a1 f:lq t:SH d:EX/0 a:0 v:0 r:1 m:200 p:0 phase:request lm:UN>SH/1300\n"
    " H: s:SH f:W e:0 p:1240 w:1300 [mmap-str] READ off=0 len=4096\n";

// One process holds A DF and waits SH on A: gfs2's recursive locking.
constexpr const char* kRecursive =
    "N: id:3 name:node3 table:c:vol policy:naive\n"
    "G:  s:DF n:2/a1 f:q t:DF d:EX/0 phase:idle\n"
    " H: s:DF f:H e:0 p:77 w:10 [dd] WRITE off=0 len=4096\n"
    " H: s:SH f:W e:0 p:77 w:5 [dd] READ off=0 len=4096\n";

// A chain: 1 waits SH on A, held EX by 2; 2 waits for B, for which the cluster has not answered
// (no other node's dump shows B).
constexpr const char* kChain =
    "N: id:1 name:node1 table:c:vol policy:naive\n"
    "G:  s:EX n:2/a1 f:q t:EX d:EX/0 phase:idle\n"
    " H: s:EX f:H e:0 p:2 w:10 [two] WRITE\n"
    " H: s:SH f:W e:0 p:1 w:5 [one] READ\n"
    "G:  s:UN n:2/b2 f:lq t:SH d:EX/0 phase:request lm:UN>SH/900\n"
    " H: s:SH f:W e:0 p:2 w:900 [two] READ\n";

NodeDump Parse(const char* text, const std::string& source = "") {
  Result<NodeDump> d = ParseDump(text);
  EXPECT_TRUE(d.ok()) << d.status().ToString();
  if (!d.ok()) return {};
  d->source = source;
  return *d;
}

// Both pids appear in one cycle that names both glocks.
void ExpectTwoProcessCycle(const WaitGraph& g, const std::vector<Cycle>& cycles, int64_t p1,
                           int64_t p2) {
  ASSERT_EQ(cycles.size(), 1u) << ReportCycles(g, cycles);
  const Cycle& c = cycles[0];
  ASSERT_EQ(c.steps.size(), 2u);
  EXPECT_EQ(c.steps[0].pid, p1);
  EXPECT_EQ(c.steps[1].pid, p2);
  EXPECT_EQ(c.steps[0].waits_for, kB);
  EXPECT_EQ(c.steps[1].waits_for, kA);
  EXPECT_EQ(c.steps[0].wanted, State::kShared);
  // What each holds that the other waits for.
  ASSERT_EQ(c.steps[0].holds.size(), 1u);
  EXPECT_EQ(c.steps[0].holds[0], (HeldGlock{kA, State::kDeferred, false}));
  ASSERT_EQ(c.steps[1].holds.size(), 1u);
  EXPECT_EQ(c.steps[1].holds[0], (HeldGlock{kB, State::kDeferred, false}));
}

TEST(GlockDumpParseTest, ParsesEveryLineKind) {
  const NodeDump d = Parse(kExample);
  EXPECT_TRUE(d.has_header);
  EXPECT_EQ(d.id, 1);
  EXPECT_EQ(d.name, "node1");
  EXPECT_EQ(d.table, "mycluster:vol1");
  EXPECT_EQ(d.policy, "naive");
  ASSERT_EQ(d.glocks.size(), 1u);
  const DumpGlock& g = d.glocks[0];
  EXPECT_EQ(g.name, (GlockName{GlockType::kInode, 0x805b}));
  EXPECT_EQ(g.state, State::kShared);
  EXPECT_EQ(g.target, State::kExclusive);
  EXPECT_EQ(g.flags, "lqb");
  EXPECT_TRUE(g.DemotePending());
  EXPECT_EQ(g.demote, State::kUnlocked);
  EXPECT_EQ(g.phase, "request");
  ASSERT_TRUE(g.lm.has_value());
  EXPECT_EQ(*g.lm, (DumpLmRequest{State::kShared, State::kExclusive, 1530}));
  EXPECT_EQ(g.RequestedState(), State::kExclusive);
  EXPECT_EQ(g.line, 2);
  ASSERT_EQ(g.holders.size(), 2u);
  EXPECT_EQ(g.holders[0].state, State::kDeferred);
  EXPECT_TRUE(g.holders[0].granted);
  EXPECT_EQ(g.holders[0].flags, "HR");
  EXPECT_EQ(g.holders[0].pid, 1234);
  EXPECT_EQ(g.holders[0].ms, 1500);
  EXPECT_EQ(g.holders[0].comm, "ugfs2-mmap-str");
  EXPECT_EQ(g.holders[0].label, "READ off=0 len=1048576");
  EXPECT_FALSE(g.holders[1].granted);
  EXPECT_EQ(g.holders[1].comm, "cat");
  ASSERT_EQ(g.extra.size(), 2u);
  EXPECT_EQ(g.extra[0], "I: n:2/32859 t:8 f:0x00 d:0x00000000 s:4096");
  ASSERT_TRUE(g.stats.has_value());
  EXPECT_EQ(*g.stats, (DumpStats{120, 30, 12, 4, 12, 2, 1}));
}

TEST(GlockDumpParseTest, RoundTrips) {
  for (const char* text : {kExample, kAbbaOneNode, kAbbaNode1, kRecursive, kChain}) {
    const NodeDump d = Parse(text);
    const std::string formatted = FormatDump(d);
    NodeDump again = Parse(formatted.c_str());
    for (size_t i = 0; i < again.glocks.size() && i < d.glocks.size(); ++i) {
      again.glocks[i].line = d.glocks[i].line;
    }
    EXPECT_EQ(again, d) << formatted;
    EXPECT_EQ(FormatDump(again), formatted);
  }
}

TEST(GlockDumpParseTest, ToleratesUnknownKeysAndLines) {
  const NodeDump d = Parse(
      "some banner without a tag\n"
      "X: not known before any glock\n"
      "G:  s:EX n:3/11221 f: t:EX d:EX/0 future:1 a:0 v:0 r:0 m:200 p:0 phase:idle\r\n"
      " H: s:EX f:Hzq e:0 p:0 w:3 new:key [ugfs2 writeback] id:5\n"
      " Q: a future line kind\n"
      " S: srtt:1 srttvar:2 req:3 dcnt:4 qcnt:5 bounce:6 retry:7 later:8\n"
      "\n");
  EXPECT_FALSE(d.has_header);
  ASSERT_EQ(d.glocks.size(), 1u);
  const DumpGlock& g = d.glocks[0];
  EXPECT_EQ(g.name, (GlockName{GlockType::kRgrp, 0x11221}));
  EXPECT_EQ(g.phase, "idle");
  ASSERT_EQ(g.holders.size(), 1u);
  EXPECT_TRUE(g.holders[0].granted);
  EXPECT_EQ(g.holders[0].comm, "ugfs2 writeback");  // spaces tolerated between the brackets
  EXPECT_EQ(g.holders[0].label, "id:5");
  EXPECT_EQ(g.extra, std::vector<std::string>{"Q: a future line kind"});
  EXPECT_EQ(g.stats->retries, 7);
}

TEST(GlockDumpParseTest, TargetDefaultsToStateAndHolderNeedNoComm) {
  const NodeDump d = Parse("G:  s:SH n:5/1f\n H: s:SH f:H e:0 p:9\n");
  ASSERT_EQ(d.glocks.size(), 1u);
  EXPECT_EQ(d.glocks[0].target, State::kShared);
  EXPECT_FALSE(d.glocks[0].RequestedState().has_value());
  ASSERT_EQ(d.glocks[0].holders.size(), 1u);
  EXPECT_EQ(d.glocks[0].holders[0].pid, 9);
  EXPECT_EQ(d.glocks[0].holders[0].comm, "");
}

TEST(GlockDumpParseTest, MalformedLinesNameTheLine) {
  struct Case {
    const char* text;
    const char* message;
  };
  const Case cases[] = {
      {"N: id:1\n H: s:SH f:W e:0 p:1 [x] READ\n", "line 2: holder before any G: line"},
      {"G:  s:XX n:2/1\n", "line 1: bad glock state s:XX"},
      {"N: id:1\nG:  s:SH n:2/zz\n", "line 2: bad glock name n:2/zz"},
      {"G:  s:SH n:805b\n", "line 1: bad glock name n:805b"},
      {"G:  s:SH n:2/12345678901234567\n", "bad glock name"},
      {"G:  s:SH\n", "line 1: G: line without n:"},
      {"G:  n:2/1\n", "line 1: G: line without s:"},
      {"G:  s:SH n:2/1 lm:SH-EX/3\n", "line 1: bad lock request lm:SH-EX/3"},
      {"G:  s:SH n:2/1\n H: s:QQ f:W\n", "line 2: bad holder state s:QQ"},
      {"G:  s:SH n:2/1\n H: s:SH f:W p:abc\n", "line 2: bad holder p:abc"},
      {"G:  s:SH n:2/1\n H: s:SH f:W p:1 [unterminated\n", "line 2: unterminated [comm]"},
      {"N: id:x\n", "line 1: bad node id"},
      {"N: id:1\nG:  s:SH n:2/1\nN: id:2\n", "line 3: a second dump starts here"},
  };
  for (const Case& c : cases) {
    Result<NodeDump> d = ParseDump(c.text);
    ASSERT_FALSE(d.ok()) << c.text;
    EXPECT_EQ(d.status().code(), Code::kCorrupt) << c.text;
    EXPECT_NE(d.status().message().find(c.message), std::string::npos)
        << c.text << " -> " << d.status().message();
  }
}

TEST(GlockDumpParseTest, ParseDumpsSplitsAtHeaders) {
  const std::string all = std::string(kAbbaNode1) + "=== a header line ===\n" + kAbbaNode2;
  Result<std::vector<NodeDump>> dumps = ParseDumps(all);
  ASSERT_TRUE(dumps.ok()) << dumps.status().ToString();
  ASSERT_EQ(dumps->size(), 2u);
  EXPECT_EQ((*dumps)[0].id, 1);
  EXPECT_EQ((*dumps)[1].id, 2);
  EXPECT_EQ((*dumps)[1].glocks.size(), 2u);
  Result<std::vector<NodeDump>> none = ParseDumps("");
  ASSERT_TRUE(none.ok());
  EXPECT_TRUE(none->empty());
}

TEST(GlockDumpCycleTest, AbbaOnOneNode) {
  const std::vector<NodeDump> dumps = {Parse(kAbbaOneNode)};
  const WaitGraph g = BuildWaitGraph(dumps);
  EXPECT_EQ(g.waiting_holders, 2u);
  ASSERT_EQ(g.edges.size(), 2u);
  EXPECT_EQ(g.edges[0].kind, WaitKind::kHeld);
  const std::vector<Cycle> cycles = FindCycles(g);
  // Vertex 0 is pid 100 (first seen); it waits for B held by 200.
  ExpectTwoProcessCycle(g, cycles, 100, 200);
  EXPECT_EQ(cycles[0].steps[0].request, "READ off=8192 len=4096");
  const std::string report = ReportCycles(g, cycles);
  EXPECT_EQ(report,
            "DEADLOCK: cycle of 2 processes\n"
            "  node solo pid 100 [procA] waits for 2/b2 SH (READ off=8192 len=4096) held DF by "
            "node solo pid 200 [procB]\n"
            "  node solo pid 200 [procB] waits for 2/a1 SH (READ off=0 len=4096) held DF by "
            "node solo pid 100 [procA]\n");
}

TEST(GlockDumpCycleTest, AbbaAcrossTwoNodes) {
  const std::vector<NodeDump> dumps = {Parse(kAbbaNode1), Parse(kAbbaNode2)};
  const WaitGraph g = BuildWaitGraph(dumps);
  for (const WaitEdge& e : g.edges) EXPECT_EQ(e.kind, WaitKind::kRemote);
  const std::vector<Cycle> cycles = FindCycles(g);
  ExpectTwoProcessCycle(g, cycles, 1234, 1240);
  EXPECT_EQ(cycles[0].steps[0].node_id, 1);
  EXPECT_EQ(cycles[0].steps[1].node_id, 2);
  const std::string report = ReportCycles(g, cycles);
  EXPECT_NE(report.find("DEADLOCK: cycle of 2 processes\n"), std::string::npos) << report;
  EXPECT_NE(report.find("node 1 pid 1234 [mmap-str] waits for 2/b2 SH (READ off=0 len=4096) "
                        "held DF by node 2 pid 1240 [mmap-str]"),
            std::string::npos)
      << report;
}

TEST(GlockDumpCycleTest, AbbaAcrossNodesNeedsBothDumps) {
  const std::vector<NodeDump> dumps = {Parse(kAbbaNode1)};
  const WaitGraph g = BuildWaitGraph(dumps);
  EXPECT_TRUE(g.edges.empty());
  EXPECT_TRUE(FindCycles(g).empty());
}

TEST(GlockDumpCycleTest, RecursiveLockingIsASelfLoop) {
  const std::vector<NodeDump> dumps = {Parse(kRecursive)};
  const WaitGraph g = BuildWaitGraph(dumps);
  const std::vector<Cycle> cycles = FindCycles(g);
  ASSERT_EQ(cycles.size(), 1u);
  ASSERT_EQ(cycles[0].steps.size(), 1u);
  EXPECT_EQ(cycles[0].steps[0].pid, 77);
  EXPECT_EQ(cycles[0].steps[0].waits_for, kA);
  EXPECT_EQ(cycles[0].steps[0].holds, (std::vector<HeldGlock>{{kA, State::kDeferred, false}}));
  EXPECT_EQ(ReportCycles(g, cycles),
            "DEADLOCK: cycle of 1 process (recursive locking)\n"
            "  node 3 pid 77 [dd] waits for 2/a1 SH (READ off=0 len=4096) held DF by itself\n");
}

TEST(GlockDumpCycleTest, DaemonHoldersMakeNoSelfLoop) {
  const std::vector<NodeDump> dumps = {
      Parse("G:  s:EX n:2/a1 f:q t:EX\n"
            " H: s:EX f:H e:0 p:0 w:10 [ugfs2] writeback\n"
            " H: s:SH f:W e:0 p:0 w:5 [ugfs2] stat\n")};
  const WaitGraph g = BuildWaitGraph(dumps);
  EXPECT_TRUE(g.edges.empty());
  EXPECT_TRUE(FindCycles(g).empty());
  ASSERT_EQ(g.vertices.size(), 1u);
  EXPECT_EQ(VertexLabel(g.vertices[0]), "dump #1 daemon");
}

TEST(GlockDumpCycleTest, ChainIsNoDeadlock) {
  const std::vector<NodeDump> dumps = {Parse(kChain)};
  const WaitGraph g = BuildWaitGraph(dumps);
  ASSERT_EQ(g.edges.size(), 1u);  // 1 -> 2 only: nobody else caches B
  EXPECT_EQ(g.vertices[g.edges[0].from].pid, 1);
  EXPECT_EQ(g.vertices[g.edges[0].to].pid, 2);
  const std::vector<Cycle> cycles = FindCycles(g);
  EXPECT_TRUE(cycles.empty());
  EXPECT_EQ(ReportCycles(g, cycles), "no deadlock: 2 waiting holders, none in a cycle\n");
}

TEST(GlockDumpCycleTest, CompatibleHoldersMakeNoEdge) {
  const std::vector<NodeDump> dumps = {
      Parse("G:  s:SH n:2/a1 f:q t:SH phase:idle\n"
            " H: s:SH f:H e:0 p:1 w:10 [one] READ\n"
            " H: s:SH f:W e:0 p:2 w:5 [two] READ\n")};
  const WaitGraph g = BuildWaitGraph(dumps);
  EXPECT_TRUE(g.edges.empty());
  EXPECT_EQ(g.waiting_holders, 1u);
  EXPECT_EQ(ReportCycles(g, FindCycles(g)), "no deadlock: 1 waiting holder, none in a cycle\n");
}

TEST(GlockDumpCycleTest, DueDemoteBlocksCompatibleWaiters) {
  // A demote is due (D) and not being prepared: the SH waiter waits for the SH holder to leave.
  const std::vector<NodeDump> dumps = {
      Parse("G:  s:SH n:2/a1 f:Dqb t:SH d:UN/0 phase:idle\n"
            " H: s:SH f:H e:0 p:1 w:10 [one] READ\n"
            " H: s:SH f:W e:0 p:2 w:5 [two] READ\n")};
  const WaitGraph g = BuildWaitGraph(dumps);
  ASSERT_EQ(g.edges.size(), 1u);
  EXPECT_EQ(g.edges[0].kind, WaitKind::kBehindDemote);
  // While the demote is being prepared (v) holders are still granted: no edge.
  const std::vector<NodeDump> preparing = {
      Parse("G:  s:SH n:2/a1 f:Dvqb t:SH d:UN/0 phase:idle\n"
            " H: s:SH f:H e:0 p:1 w:10 [one] READ\n"
            " H: s:SH f:W e:0 p:2 w:5 [two] READ\n")};
  EXPECT_TRUE(BuildWaitGraph(preparing).edges.empty());
}

TEST(GlockDumpCycleTest, WaitersQueueBehindIncompatibleWaiters) {
  const std::vector<NodeDump> dumps = {
      Parse("G:  s:SH n:2/a1 f:lq t:EX phase:request lm:SH>EX/5\n"
            " H: s:SH f:H e:0 p:1 w:10 [one] READ\n"
            " H: s:EX f:W e:0 p:2 w:5 [two] WRITE\n"
            " H: s:SH f:W e:0 p:3 w:4 [three] READ\n")};
  const WaitGraph g = BuildWaitGraph(dumps);
  ASSERT_EQ(g.edges.size(), 2u);
  EXPECT_EQ(g.edges[0].kind, WaitKind::kHeld);  // 2 -> 1: EX against a granted SH
  EXPECT_EQ(g.vertices[g.edges[0].from].pid, 2);
  EXPECT_EQ(g.edges[1].kind, WaitKind::kQueuedBehind);  // 3 -> 2
  EXPECT_EQ(g.vertices[g.edges[1].from].pid, 3);
  EXPECT_EQ(g.vertices[g.edges[1].to].pid, 2);
  EXPECT_EQ(g.edges[1].held, State::kExclusive);
}

TEST(GlockDumpCycleTest, RemoteCachedStateWithoutHolderIsANodeVertex) {
  const std::vector<NodeDump> dumps = {Parse("N: id:1 name:n1 table:c:v policy:naive\n"
                                             "G:  s:UN n:2/a1 f:lq t:EX phase:request lm:UN>EX/50\n"
                                             " H: s:EX f:W e:0 p:5 w:50 [touch] SETATTR\n"),
                                       Parse("N: id:2 name:n2 table:c:v policy:naive\n"
                                             "G:  s:SH n:2/a1 f:Lb t:SH d:UN/0 phase:idle\n")};
  const WaitGraph g = BuildWaitGraph(dumps);
  ASSERT_EQ(g.edges.size(), 1u);
  const WaitVertex& v = g.vertices[g.edges[0].to];
  EXPECT_EQ(v.kind, WaitVertex::kNode);
  EXPECT_EQ(v.node_id, 2);
  EXPECT_EQ(VertexLabel(v), "node 2 (2/a1 cached SH, demote pending)");
  EXPECT_TRUE(FindCycles(g).empty());
}

TEST(GlockDumpCycleTest, ThreeProcessCycleAndAnUnrelatedOne) {
  // 1 -> 2 (A), 2 -> 3 (B), 3 -> 1 (C), and 4 waits on D held by 1: not in the cycle.
  const std::vector<NodeDump> dumps = {
      Parse("G:  s:EX n:2/a1 f:q t:EX\n"
            " H: s:EX f:H e:0 p:2 [b] W\n"
            " H: s:EX f:W e:0 p:1 [a] W\n"
            "G:  s:EX n:2/b2 f:q t:EX\n"
            " H: s:EX f:H e:0 p:3 [c] W\n"
            " H: s:SH f:W e:0 p:2 [b] R\n"
            "G:  s:EX n:2/c3 f:q t:EX\n"
            " H: s:EX f:H e:0 p:1 [a] W\n"
            " H: s:DF f:W e:0 p:3 [c] D\n"
            "G:  s:EX n:2/d4 f:q t:EX\n"
            " H: s:EX f:H e:0 p:1 [a] W\n"
            " H: s:EX f:W e:0 p:4 [d] W\n")};
  const WaitGraph g = BuildWaitGraph(dumps);
  const std::vector<Cycle> cycles = FindCycles(g);
  ASSERT_EQ(cycles.size(), 1u) << ReportCycles(g, cycles);
  ASSERT_EQ(cycles[0].steps.size(), 3u);
  std::vector<int64_t> pids;
  for (const CycleStep& s : cycles[0].steps) pids.push_back(s.pid);
  EXPECT_EQ(pids, (std::vector<int64_t>{2, 3, 1}));  // vertex 0 is pid 2 (first seen)
  EXPECT_EQ(ReportCycles(g, cycles).rfind("DEADLOCK: cycle of 3 processes\n", 0), 0u);
}

TEST(GlockDumpRenderTest, JsonQuoteEscapes) {
  EXPECT_EQ(JsonQuote("plain"), "\"plain\"");
  EXPECT_EQ(JsonQuote("a\"b\\c\nd\te\x01"), "\"a\\\"b\\\\c\\nd\\te\\u0001\"");
  EXPECT_EQ(JsonQuote("caf\xc3\xa9"), "\"caf\xc3\xa9\"");
  EXPECT_EQ(JsonQuote("bad\xff\xc3"), "\"bad\\ufffd\\ufffd\"");
  EXPECT_EQ(JsonQuote("\xed\xa0\x80"), "\"\\ufffd\\ufffd\\ufffd\"");  // a surrogate
}

TEST(GlockDumpRenderTest, Json) {
  std::vector<NodeDump> dumps = {Parse(kAbbaNode1, "/mnt/a"), Parse(kAbbaNode2, "/mnt/\"b\"")};
  const std::string json = ToJson(dumps);
  EXPECT_EQ(json.rfind("{\"nodes\":[{\"id\":1,\"name\":\"node1\",\"table\":\"c:vol\","
                       "\"policy\":\"naive\",\"source\":\"/mnt/a\"",
                       0),
            0u)
      << json;
  EXPECT_NE(json.find("\"source\":\"/mnt/\\\"b\\\"\""), std::string::npos);
  EXPECT_NE(json.find("{\"name\":\"2/b2\",\"type\":2,\"number\":\"b2\",\"state\":\"UN\""),
            std::string::npos)
      << json;
  EXPECT_NE(json.find("\"lm\":{\"from\":\"UN\",\"to\":\"SH\",\"ms\":1400}"), std::string::npos);
  EXPECT_NE(json.find("\"lm\":null"), std::string::npos);
  EXPECT_NE(json.find("\"waitfor\":{\"vertices\":["), std::string::npos);
  EXPECT_NE(json.find("\"kind\":\"remote\""), std::string::npos);
  EXPECT_NE(json.find("\"cycles\":[{\"steps\":[{\"vertex\":0"), std::string::npos) << json;
  EXPECT_EQ(json.back(), '\n');
  int depth = 0;  // balanced outside strings
  bool in_string = false;
  for (size_t i = 0; i < json.size(); ++i) {
    if (in_string) {
      if (json[i] == '\\')
        ++i;
      else if (json[i] == '"')
        in_string = false;
    } else if (json[i] == '"') {
      in_string = true;
    } else if (json[i] == '{' || json[i] == '[') {
      ++depth;
    } else if (json[i] == '}' || json[i] == ']') {
      --depth;
      EXPECT_GE(depth, 0);
    }
  }
  EXPECT_EQ(depth, 0);
  EXPECT_FALSE(in_string);
}

TEST(GlockDumpRenderTest, DotMarksCycles) {
  const std::vector<NodeDump> dumps = {Parse(kAbbaNode1), Parse(kAbbaNode2)};
  const WaitGraph g = BuildWaitGraph(dumps);
  const std::string dot = ToDot(dumps, g, FindCycles(g));
  EXPECT_EQ(dot.rfind("digraph", 0), 0u);
  EXPECT_NE(dot.find("[shape=box, label=\"node 1\\npid 1234 [mmap-str]\"]"), std::string::npos)
      << dot;
  EXPECT_NE(dot.find("[shape=ellipse, label=\"2/a1\\nnode 1: DF\\nnode 2: UN (UN>SH in flight)\"]"),
            std::string::npos)
      << dot;
  EXPECT_NE(dot.find("[label=\"wants SH\", color=red"), std::string::npos) << dot;
  EXPECT_NE(dot.find("[label=\"holds DF\", color=red"), std::string::npos) << dot;
  EXPECT_EQ(dot.substr(dot.size() - 2), "}\n");

  const std::vector<NodeDump> chain = {Parse(kChain)};
  const WaitGraph cg = BuildWaitGraph(chain);
  const std::string plain = ToDot(chain, cg, FindCycles(cg));
  EXPECT_NE(plain.find("digraph"), std::string::npos);
  EXPECT_EQ(plain.find("color=red"), std::string::npos) << plain;
}

}  // namespace
}  // namespace ugfs2::glock
