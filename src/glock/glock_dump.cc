#include "glock/glock_dump.h"

#include <algorithm>
#include <charconv>
#include <cstdio>
#include <map>
#include <set>
#include <tuple>
#include <utility>

namespace ugfs2::glock {
namespace {

constexpr std::string_view kBlanks = " \t";

std::string_view TrimLeft(std::string_view s) {
  const size_t p = s.find_first_not_of(kBlanks);
  return p == std::string_view::npos ? std::string_view() : s.substr(p);
}

std::string_view Trim(std::string_view s) {
  s = TrimLeft(s);
  const size_t p = s.find_last_not_of(kBlanks);
  return p == std::string_view::npos ? std::string_view() : s.substr(0, p + 1);
}

std::optional<int64_t> ParseInt(std::string_view s) {
  int64_t v = 0;
  const auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (s.empty() || ec != std::errc() || end != s.data() + s.size()) return std::nullopt;
  return v;
}

// The tag of a line ("G", "H", ...: 1 to 3 letters before a ':' after optional blanks) and what
// follows it; nullopt for a line without a tag.
std::optional<std::pair<std::string_view, std::string_view>> SplitTag(std::string_view line) {
  const std::string_view body = TrimLeft(line);
  const size_t colon = body.find(':');
  if (colon == std::string_view::npos || colon == 0 || colon > 3) return std::nullopt;
  const std::string_view tag = body.substr(0, colon);
  for (char c : tag) {
    if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z'))) return std::nullopt;
  }
  return std::make_pair(tag, body.substr(colon + 1));
}

struct Token {
  std::string_view key;
  std::string_view value;
};

// The key:value tokens of `s` up to its end or (with stop_at_bracket) a token starting with '['.
// *rest gets what follows the tokens. Tokens without ':' are skipped.
std::vector<Token> Tokens(std::string_view s, bool stop_at_bracket = false,
                          std::string_view* rest = nullptr) {
  std::vector<Token> out;
  size_t pos = 0;
  while (true) {
    pos = s.find_first_not_of(kBlanks, pos);
    if (pos == std::string_view::npos) {
      pos = s.size();
      break;
    }
    if (stop_at_bracket && s[pos] == '[') break;
    size_t end = s.find_first_of(kBlanks, pos);
    if (end == std::string_view::npos) end = s.size();
    const std::string_view tok = s.substr(pos, end - pos);
    const size_t colon = tok.find(':');
    if (colon != std::string_view::npos && colon > 0) {
      out.push_back({tok.substr(0, colon), tok.substr(colon + 1)});
    }
    pos = end;
  }
  if (rest != nullptr) *rest = s.substr(pos);
  return out;
}

Status LineError(int line, std::string_view what, std::string_view text) {
  std::string shown(text.substr(0, 120));
  if (text.size() > 120) shown += "...";
  return Status::Corrupt("line " + std::to_string(line) + ": " + std::string(what) + ": '" + shown +
                         "'");
}

// Parses one or more dumps line by line.
class Parser {
 public:
  explicit Parser(bool many) : many_(many) {}

  Status Line(int number, std::string_view line) {
    if (line.ends_with('\r')) line.remove_suffix(1);
    auto tagged = SplitTag(line);
    if (!tagged) return Status::Ok();  // not in the grammar: ignored
    const auto [tag, rest] = *tagged;
    if (tag == "N") return NodeLine(number, line, rest);
    if (tag == "G") return GlockLine(number, line, rest);
    if (tag == "H") return HolderLine(number, line, rest);
    if (tag == "S") return StatsLine(number, line, rest);
    if (glock_ != nullptr) glock_->extra.emplace_back(Trim(line));
    return Status::Ok();
  }

  std::vector<NodeDump> Finish() {
    if (Started()) dumps_.push_back(std::move(cur_));
    return std::move(dumps_);
  }

 private:
  bool Started() const { return cur_.has_header || !cur_.glocks.empty(); }

  Status NodeLine(int number, std::string_view line, std::string_view rest) {
    if (Started()) {
      if (!many_) return LineError(number, "a second dump starts here (N: not first)", line);
      dumps_.push_back(std::move(cur_));
      cur_ = NodeDump();
    }
    glock_ = nullptr;
    cur_.has_header = true;
    for (const Token& t : Tokens(rest)) {
      if (t.key == "id") {
        auto v = ParseInt(t.value);
        if (!v) return LineError(number, "bad node id", line);
        cur_.id = *v;
      } else if (t.key == "name") {
        cur_.name = t.value;
      } else if (t.key == "table") {
        cur_.table = t.value;
      } else if (t.key == "policy") {
        cur_.policy = t.value;
      }
    }
    return Status::Ok();
  }

  Status GlockLine(int number, std::string_view line, std::string_view rest) {
    DumpGlock g;
    g.line = number;
    bool have_state = false, have_name = false, have_target = false;
    for (const Token& t : Tokens(rest)) {
      if (t.key == "s") {
        auto s = ParseStateName(t.value);
        if (!s) return LineError(number, "bad glock state s:" + std::string(t.value), line);
        g.state = *s;
        have_state = true;
      } else if (t.key == "n") {
        auto n = ParseGlockName(t.value);
        if (!n) return LineError(number, "bad glock name n:" + std::string(t.value), line);
        g.name = *n;
        have_name = true;
      } else if (t.key == "f") {
        g.flags = t.value;
      } else if (t.key == "t") {
        auto s = ParseStateName(t.value);
        if (!s) return LineError(number, "bad target state t:" + std::string(t.value), line);
        g.target = *s;
        have_target = true;
      } else if (t.key == "d") {
        const size_t slash = t.value.find('/');
        auto s = ParseStateName(t.value.substr(0, slash));
        std::optional<int64_t> ms = 0;
        if (slash != std::string_view::npos) ms = ParseInt(t.value.substr(slash + 1));
        if (!s || !ms) return LineError(number, "bad demote d:" + std::string(t.value), line);
        g.demote = *s;
        g.demote_ms = *ms;
      } else if (t.key == "phase") {
        g.phase = t.value;
      } else if (t.key == "lm") {
        const size_t gt = t.value.find('>');
        const size_t slash = t.value.find('/');
        std::optional<State> from, to;
        std::optional<int64_t> ms = 0;
        if (gt != std::string_view::npos && (slash == std::string_view::npos || slash > gt)) {
          from = ParseStateName(t.value.substr(0, gt));
          to = ParseStateName(t.value.substr(
              gt + 1, slash == std::string_view::npos ? std::string_view::npos : slash - gt - 1));
          if (slash != std::string_view::npos) ms = ParseInt(t.value.substr(slash + 1));
        }
        if (!from || !to || !ms) {
          return LineError(number, "bad lock request lm:" + std::string(t.value), line);
        }
        g.lm = DumpLmRequest{.from = *from, .to = *to, .ms = *ms};
      }
    }
    if (!have_state) return LineError(number, "G: line without s:", line);
    if (!have_name) return LineError(number, "G: line without n:", line);
    if (!have_target) g.target = g.state;
    cur_.glocks.push_back(std::move(g));
    glock_ = &cur_.glocks.back();
    return Status::Ok();
  }

  Status HolderLine(int number, std::string_view line, std::string_view rest) {
    if (glock_ == nullptr) return LineError(number, "holder before any G: line", line);
    DumpHolder h;
    bool have_state = false;
    std::string_view tail;
    for (const Token& t : Tokens(rest, /*stop_at_bracket=*/true, &tail)) {
      if (t.key == "s") {
        auto s = ParseStateName(t.value);
        if (!s) return LineError(number, "bad holder state s:" + std::string(t.value), line);
        h.state = *s;
        have_state = true;
      } else if (t.key == "f") {
        h.flags = t.value;
      } else if (t.key == "e" || t.key == "p" || t.key == "w") {
        const std::optional<int64_t> v = ParseInt(t.value);
        if (!v) {
          return LineError(number, "bad holder " + std::string(t.key) + ":" + std::string(t.value),
                           line);
        }
        (t.key == "e" ? h.error : t.key == "p" ? h.pid : h.ms) = *v;
      }
    }
    if (!have_state) return LineError(number, "H: line without s:", line);
    h.granted = h.flags.find('H') != std::string::npos;
    if (tail.starts_with('[')) {
      const size_t close = tail.find(']');
      if (close == std::string_view::npos) return LineError(number, "unterminated [comm]", line);
      h.comm = tail.substr(1, close - 1);
      h.label = Trim(tail.substr(close + 1));
    }
    glock_->holders.push_back(std::move(h));
    return Status::Ok();
  }

  Status StatsLine(int number, std::string_view line, std::string_view rest) {
    if (glock_ == nullptr) return Status::Ok();  // statistics of nothing: ignored
    DumpStats st;
    const std::pair<std::string_view, int64_t DumpStats::*> kKeys[] = {
        {"srtt", &DumpStats::srtt},     {"srttvar", &DumpStats::srttvar},
        {"req", &DumpStats::requests},  {"dcnt", &DumpStats::demote_requests},
        {"qcnt", &DumpStats::queued},   {"bounce", &DumpStats::bounces},
        {"retry", &DumpStats::retries},
    };
    for (const Token& t : Tokens(rest)) {
      for (const auto& [key, field] : kKeys) {
        if (t.key != key) continue;
        auto v = ParseInt(t.value);
        if (!v) {
          return LineError(
              number, "bad statistic " + std::string(t.key) + ":" + std::string(t.value), line);
        }
        st.*field = *v;
      }
    }
    glock_->stats = st;
    return Status::Ok();
  }

  const bool many_;
  std::vector<NodeDump> dumps_;
  NodeDump cur_;
  DumpGlock* glock_ = nullptr;  // the last G: of cur_, for the lines below it
};

Result<std::vector<NodeDump>> ParseAll(std::string_view text, bool many) {
  Parser p(many);
  int number = 0;
  size_t pos = 0;
  while (pos < text.size()) {
    size_t end = text.find('\n', pos);
    if (end == std::string_view::npos) end = text.size();
    RETURN_IF_ERROR(p.Line(++number, text.substr(pos, end - pos)));
    pos = end + 1;
  }
  return p.Finish();
}

// --- Text helpers ---

std::string Plural(size_t n, const char* one, const char* many) {
  return std::to_string(n) + " " + (n == 1 ? one : many);
}

std::string RequestSuffix(const std::string& request) {
  return request.empty() ? std::string() : " (" + request + ")";
}

// --- JSON ---

void AppendJsonString(std::string* o, std::string_view s) { *o += JsonQuote(s); }

void AppendField(std::string* o, bool* first, std::string_view key) {
  if (!*first) *o += ',';
  *first = false;
  AppendJsonString(o, key);
  *o += ':';
}

// A JSON object written field by field.
class JsonObject {
 public:
  explicit JsonObject(std::string* o) : o_(o) { *o_ += '{'; }
  ~JsonObject() { *o_ += '}'; }
  JsonObject(const JsonObject&) = delete;
  JsonObject& operator=(const JsonObject&) = delete;

  void Str(std::string_view key, std::string_view v) {
    AppendField(o_, &first_, key);
    AppendJsonString(o_, v);
  }
  void Int(std::string_view key, int64_t v) {
    AppendField(o_, &first_, key);
    *o_ += std::to_string(v);
  }
  void Bool(std::string_view key, bool v) {
    AppendField(o_, &first_, key);
    *o_ += v ? "true" : "false";
  }
  void Null(std::string_view key) {
    AppendField(o_, &first_, key);
    *o_ += "null";
  }
  // Writes the key and returns the string, for the caller to append the value.
  std::string* Key(std::string_view key) {
    AppendField(o_, &first_, key);
    return o_;
  }

 private:
  std::string* o_;
  bool first_ = true;
};

std::string HexNumber(uint64_t n) {
  char buf[24];
  std::snprintf(buf, sizeof(buf), "%llx", static_cast<unsigned long long>(n));
  return buf;
}

void AppendGlockJson(std::string* o, const DumpGlock& g) {
  JsonObject j(o);
  j.Str("name", g.name.ToString());
  j.Int("type", static_cast<int>(g.name.type));
  j.Str("number", HexNumber(g.name.number));
  j.Str("state", StateName(g.state));
  j.Str("target", StateName(g.target));
  j.Str("flags", g.flags);
  {
    std::string* d = j.Key("demote");
    JsonObject dj(d);
    dj.Str("state", StateName(g.demote));
    dj.Int("ms", g.demote_ms);
    dj.Bool("pending", g.DemotePending());
  }
  j.Str("phase", g.phase);
  if (g.lm) {
    JsonObject lj(j.Key("lm"));
    lj.Str("from", StateName(g.lm->from));
    lj.Str("to", StateName(g.lm->to));
    lj.Int("ms", g.lm->ms);
  } else {
    j.Null("lm");
  }
  std::string* hs = j.Key("holders");
  *hs += '[';
  for (size_t i = 0; i < g.holders.size(); ++i) {
    const DumpHolder& h = g.holders[i];
    if (i > 0) *hs += ',';
    JsonObject hj(hs);
    hj.Str("state", StateName(h.state));
    hj.Str("flags", h.flags);
    hj.Bool("granted", h.granted);
    hj.Int("error", h.error);
    hj.Int("pid", h.pid);
    hj.Int("ms", h.ms);
    hj.Str("comm", h.comm);
    hj.Str("label", h.label);
  }
  *hs += ']';
  std::string* ex = j.Key("extra");
  *ex += '[';
  for (size_t i = 0; i < g.extra.size(); ++i) {
    if (i > 0) *ex += ',';
    AppendJsonString(ex, g.extra[i]);
  }
  *ex += ']';
  if (g.stats) {
    JsonObject sj(j.Key("stats"));
    sj.Int("srtt", g.stats->srtt);
    sj.Int("srttvar", g.stats->srttvar);
    sj.Int("req", g.stats->requests);
    sj.Int("dcnt", g.stats->demote_requests);
    sj.Int("qcnt", g.stats->queued);
    sj.Int("bounce", g.stats->bounces);
    sj.Int("retry", g.stats->retries);
  } else {
    j.Null("stats");
  }
}

// --- Graphviz ---

std::string DotEscape(std::string_view s) {
  std::string out;
  for (char c : s) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += c;
    } else if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) {
      out += '?';
    } else {
      out += c;
    }
  }
  return out;
}

// --- Cycles ---

class Tarjan {
 public:
  Tarjan(size_t n, const std::vector<std::vector<size_t>>& succ) : succ_(succ), info_(n) {}

  // Component number of every vertex.
  std::vector<size_t> Run() {
    for (size_t v = 0; v < info_.size(); ++v) {
      if (!info_[v].visited) Visit(v);
    }
    std::vector<size_t> comp(info_.size());
    for (size_t v = 0; v < info_.size(); ++v) comp[v] = info_[v].comp;
    return comp;
  }

 private:
  struct Info {
    bool visited = false;
    bool on_stack = false;
    size_t index = 0;
    size_t low = 0;
    size_t comp = 0;
  };

  void Visit(size_t v) {
    Info& iv = info_[v];
    iv.visited = true;
    iv.index = iv.low = next_index_++;
    stack_.push_back(v);
    iv.on_stack = true;
    for (size_t w : succ_[v]) {
      if (!info_[w].visited) {
        Visit(w);
        info_[v].low = std::min(info_[v].low, info_[w].low);
      } else if (info_[w].on_stack) {
        info_[v].low = std::min(info_[v].low, info_[w].index);
      }
    }
    if (info_[v].low == info_[v].index) {
      size_t w;
      do {
        w = stack_.back();
        stack_.pop_back();
        info_[w].on_stack = false;
        info_[w].comp = next_comp_;
      } while (w != v);
      ++next_comp_;
    }
  }

  const std::vector<std::vector<size_t>>& succ_;
  std::vector<Info> info_;
  std::vector<size_t> stack_;
  size_t next_index_ = 0;
  size_t next_comp_ = 0;
};

// The cycle through `path` (vertices v0..vk-1) with closing edges `edges` (vi -> vi+1).
Cycle MakeCycle(const WaitGraph& g, const std::vector<size_t>& path,
                const std::vector<size_t>& edges) {
  Cycle c;
  const size_t k = path.size();
  for (size_t i = 0; i < k; ++i) {
    const WaitVertex& v = g.vertices[path[i]];
    const WaitEdge& e = g.edges[edges[i]];
    CycleStep s;
    s.vertex = path[i];
    s.edge = edges[i];
    s.node_id = v.node_id;
    s.node_name = v.node_name;
    s.node_label = v.node_label;
    s.pid = v.pid;
    s.comm = v.comm;
    s.waits_for = e.glock;
    s.wanted = e.wanted;
    s.request = e.request;
    const size_t prev = path[(i + k - 1) % k];
    for (const WaitEdge& in : g.edges) {
      if (in.from != prev || in.to != path[i]) continue;
      HeldGlock h{
          .glock = in.glock, .state = in.held, .queued = in.kind == WaitKind::kQueuedBehind};
      if (std::find(s.holds.begin(), s.holds.end(), h) == s.holds.end()) s.holds.push_back(h);
    }
    c.steps.push_back(std::move(s));
  }
  return c;
}

// What `to` has that the waiter waits for, e.g. "held DF by node 2 pid 7 [cat]".
std::string BlockerText(const WaitGraph& g, const WaitEdge& e) {
  const std::string who = e.from == e.to ? "itself" : VertexLabel(g.vertices[e.to]);
  const std::string st = StateName(e.held);
  switch (e.kind) {
    case WaitKind::kHeld:
      return "held " + st + " by " + who;
    case WaitKind::kBehindDemote:
      return "held " + st + " by " + who + ", behind a pending demote";
    case WaitKind::kQueuedBehind:
      return "queued behind " + who + " wanting " + st;
    case WaitKind::kRemote:
      if (g.vertices[e.to].kind == WaitVertex::kNode) return "cached by " + who;
      return "held " + st + " by " + who + " (cluster request in flight)";
  }
  return "?";
}

// A process vertex of dump `d` with its node's fields filled in.
WaitVertex NodeVertex(const std::vector<NodeDump>& dumps, const std::vector<std::string>& labels,
                      size_t d) {
  WaitVertex v;
  v.dump = d;
  v.node_id = dumps[d].id;
  v.node_name = dumps[d].name;
  v.node_label = labels[d];
  return v;
}

}  // namespace

std::optional<State> DumpGlock::RequestedState() const {
  if (lm) return lm->to;
  if (phase == "request") return target;
  return std::nullopt;
}

std::optional<State> ParseStateName(std::string_view s) {
  if (s == "UN") return State::kUnlocked;
  if (s == "SH") return State::kShared;
  if (s == "DF") return State::kDeferred;
  if (s == "EX") return State::kExclusive;
  return std::nullopt;
}

std::optional<GlockName> ParseGlockName(std::string_view s) {
  const size_t slash = s.find('/');
  if (slash == std::string_view::npos) return std::nullopt;
  const std::string_view type = s.substr(0, slash), number = s.substr(slash + 1);
  unsigned t = 0;
  uint64_t n = 0;
  auto r1 = std::from_chars(type.data(), type.data() + type.size(), t, 10);
  if (type.empty() || r1.ec != std::errc() || r1.ptr != type.data() + type.size() || t > 255) {
    return std::nullopt;
  }
  if (number.empty() || number.size() > 16) return std::nullopt;
  auto r2 = std::from_chars(number.data(), number.data() + number.size(), n, 16);
  if (r2.ec != std::errc() || r2.ptr != number.data() + number.size()) return std::nullopt;
  return GlockName{.type = static_cast<GlockType>(t), .number = n};
}

Result<NodeDump> ParseDump(std::string_view text) {
  ASSIGN_OR_RETURN(std::vector<NodeDump> dumps, ParseAll(text, /*many=*/false));
  if (dumps.empty()) return NodeDump();
  return std::move(dumps.front());
}

Result<std::vector<NodeDump>> ParseDumps(std::string_view text) {
  return ParseAll(text, /*many=*/true);
}

std::string FormatDump(const NodeDump& d) {
  std::string o;
  if (d.has_header) {
    o += "N: id:" + std::to_string(d.id) + " name:" + d.name + " table:" + d.table +
         " policy:" + d.policy + "\n";
  }
  for (const DumpGlock& g : d.glocks) {
    o += std::string("G:  s:") + StateName(g.state) + " n:" + g.name.ToString() + " f:" + g.flags +
         " t:" + StateName(g.target) + " d:" + StateName(g.demote) + "/" +
         std::to_string(g.demote_ms) + " phase:" + g.phase;
    if (g.lm) {
      o += std::string(" lm:") + StateName(g.lm->from) + ">" + StateName(g.lm->to) + "/" +
           std::to_string(g.lm->ms);
    }
    o += "\n";
    for (const DumpHolder& h : g.holders) {
      o += std::string(" H: s:") + StateName(h.state) + " f:" + h.flags +
           " e:" + std::to_string(h.error) + " p:" + std::to_string(h.pid) +
           " w:" + std::to_string(h.ms) + " [" + h.comm + "]";
      if (!h.label.empty()) o += " " + h.label;
      o += "\n";
    }
    for (const std::string& x : g.extra) o += " " + x + "\n";
    if (g.stats) {
      const DumpStats& s = *g.stats;
      o += " S: srtt:" + std::to_string(s.srtt) + " srttvar:" + std::to_string(s.srttvar) +
           " req:" + std::to_string(s.requests) + " dcnt:" + std::to_string(s.demote_requests) +
           " qcnt:" + std::to_string(s.queued) + " bounce:" + std::to_string(s.bounces) +
           " retry:" + std::to_string(s.retries) + "\n";
    }
  }
  return o;
}

std::string NodeLabel(const NodeDump& d, size_t index) {
  if (d.id != 0) return "node " + std::to_string(d.id);
  if (!d.name.empty()) return "node " + d.name;
  if (!d.source.empty()) return d.source;
  return "dump #" + std::to_string(index + 1);
}

std::string VertexLabel(const WaitVertex& v) {
  if (v.kind == WaitVertex::kNode) {
    return v.node_label + " (" + v.glock.ToString() + " cached " + StateName(v.cached) + ", " +
           (v.demote_pending ? "demote pending" : "no demote pending") + ")";
  }
  if (v.pid == 0) return v.node_label + " daemon";
  std::string s = v.node_label + " pid " + std::to_string(v.pid);
  if (!v.comm.empty()) s += " [" + v.comm + "]";
  return s;
}

const char* WaitKindName(WaitKind k) {
  switch (k) {
    case WaitKind::kHeld:
      return "held";
    case WaitKind::kBehindDemote:
      return "behind-demote";
    case WaitKind::kQueuedBehind:
      return "queued-behind";
    case WaitKind::kRemote:
      return "remote";
  }
  return "?";
}

WaitGraph BuildWaitGraph(const std::vector<NodeDump>& dumps) {
  WaitGraph g;
  std::map<std::pair<size_t, int64_t>, size_t> procs;       // (dump, pid) -> vertex
  std::map<std::pair<size_t, GlockName>, size_t> node_vtx;  // (dump, glock) -> kNode vertex
  std::set<std::tuple<size_t, size_t, WaitKind, GlockName, State, State>> seen;
  std::vector<std::string> labels;
  std::vector<std::map<GlockName, const DumpGlock*>> by_name(dumps.size());
  for (size_t d = 0; d < dumps.size(); ++d) {
    labels.push_back(NodeLabel(dumps[d], d));
    for (const DumpGlock& gl : dumps[d].glocks) by_name[d].emplace(gl.name, &gl);
  }
  const auto vertex = [&](size_t d, const DumpHolder& h) {
    auto [it, added] = procs.emplace(std::make_pair(d, h.pid), g.vertices.size());
    if (added) {
      WaitVertex v = NodeVertex(dumps, labels, d);
      v.pid = h.pid;
      v.comm = h.comm;
      g.vertices.push_back(std::move(v));
    }
    return it->second;
  };
  // Every process first, in the order of the dumps, so vertex numbers follow them.
  for (size_t d = 0; d < dumps.size(); ++d) {
    for (const DumpGlock& gl : dumps[d].glocks) {
      for (const DumpHolder& h : gl.holders) vertex(d, h);
    }
  }
  const auto add = [&](size_t from, size_t to, WaitKind kind, const GlockName& name,
                       const DumpHolder& waiter, State held) {
    if (!seen.emplace(from, to, kind, name, waiter.state, held).second) return;
    g.edges.push_back(WaitEdge{.from = from,
                               .to = to,
                               .kind = kind,
                               .glock = name,
                               .wanted = waiter.state,
                               .request = waiter.label,
                               .held = held});
  };
  for (size_t d = 0; d < dumps.size(); ++d) {
    for (const DumpGlock& gl : dumps[d].glocks) {
      const bool demote_blocks = gl.HasFlag('D') && !gl.HasFlag('v');
      const std::optional<State> requested = gl.RequestedState();
      for (size_t i = 0; i < gl.holders.size(); ++i) {
        const DumpHolder& w = gl.holders[i];
        if (w.granted) continue;
        ++g.waiting_holders;
        const size_t p = vertex(d, w);
        for (const DumpHolder& h : gl.holders) {
          if (!h.granted) continue;
          const size_t q = vertex(d, h);
          WaitKind kind;
          if (!Compatible(w.state, h.state)) {
            kind = WaitKind::kHeld;
          } else if (demote_blocks) {
            kind = WaitKind::kBehindDemote;
          } else {
            continue;
          }
          if (p == q && w.pid == 0) continue;  // the daemon's threads, not recursion
          add(p, q, kind, gl.name, w, h.state);
        }
        for (size_t j = 0; j < i; ++j) {
          const DumpHolder& o = gl.holders[j];
          if (o.granted || Compatible(w.state, o.state)) continue;
          const size_t q = vertex(d, o);
          if (p != q) add(p, q, WaitKind::kQueuedBehind, gl.name, w, o.state);
        }
        if (!requested) continue;
        for (size_t m = 0; m < dumps.size(); ++m) {
          if (m == d) continue;
          auto it = by_name[m].find(gl.name);
          if (it == by_name[m].end()) continue;
          const DumpGlock& other = *it->second;
          if (Compatible(other.state, *requested)) continue;
          bool any_granted = false;
          for (const DumpHolder& h : other.holders) {
            if (!h.granted) continue;
            any_granted = true;
            add(p, vertex(m, h), WaitKind::kRemote, gl.name, w, h.state);
          }
          if (any_granted) continue;
          auto [nv, added] = node_vtx.emplace(std::make_pair(m, gl.name), g.vertices.size());
          if (added) {
            WaitVertex v = NodeVertex(dumps, labels, m);
            v.kind = WaitVertex::kNode;
            v.glock = gl.name;
            v.cached = other.state;
            v.demote_pending = other.DemotePending();
            g.vertices.push_back(std::move(v));
          }
          add(p, nv->second, WaitKind::kRemote, gl.name, w, other.state);
        }
      }
    }
  }
  return g;
}

std::vector<Cycle> FindCycles(const WaitGraph& g) {
  const size_t n = g.vertices.size();
  std::vector<std::vector<size_t>> succ(n), out_edges(n);
  for (size_t e = 0; e < g.edges.size(); ++e) {
    out_edges[g.edges[e].from].push_back(e);
    succ[g.edges[e].from].push_back(g.edges[e].to);
  }
  const std::vector<size_t> comp = Tarjan(n, succ).Run();
  std::vector<size_t> comp_size(n, 0);
  for (size_t v = 0; v < n; ++v) ++comp_size[comp[v]];
  std::vector<Cycle> cycles;
  std::vector<bool> done(n, false);  // components already reported
  for (size_t start = 0; start < n; ++start) {
    const size_t c = comp[start];
    if (comp_size[c] < 2 || done[c]) continue;
    done[c] = true;
    // Breadth first from `start` within its component, back to `start`: a shortest cycle.
    std::vector<size_t> parent_edge(n, SIZE_MAX);
    std::vector<bool> seen(n, false);
    std::vector<size_t> queue = {start};
    seen[start] = true;
    size_t closing = SIZE_MAX;
    for (size_t qi = 0; qi < queue.size() && closing == SIZE_MAX; ++qi) {
      const size_t u = queue[qi];
      for (size_t e : out_edges[u]) {
        const size_t w = g.edges[e].to;
        if (w == u || comp[w] != c) continue;
        if (w == start) {
          closing = e;
          break;
        }
        if (seen[w]) continue;
        seen[w] = true;
        parent_edge[w] = e;
        queue.push_back(w);
      }
    }
    if (closing == SIZE_MAX) continue;  // cannot happen in a component of two or more
    std::vector<size_t> path, edges;    // built backwards from the closing edge
    edges.push_back(closing);
    for (size_t v = g.edges[closing].from; v != start; v = g.edges[parent_edge[v]].from) {
      path.push_back(v);
      edges.push_back(parent_edge[v]);
    }
    path.push_back(start);
    std::reverse(path.begin(), path.end());
    std::reverse(edges.begin(), edges.end());
    // edges[0] is now start's out-edge, ..., the closing edge last: aligned with path.
    cycles.push_back(MakeCycle(g, path, edges));
  }
  for (size_t v = 0; v < n; ++v) {
    for (size_t e : out_edges[v]) {
      if (g.edges[e].to != v) continue;
      cycles.push_back(MakeCycle(g, {v}, {e}));
      break;
    }
  }
  return cycles;
}

std::string ReportCycles(const WaitGraph& g, const std::vector<Cycle>& cycles) {
  if (cycles.empty()) {
    return "no deadlock: " + Plural(g.waiting_holders, "waiting holder", "waiting holders") +
           ", none in a cycle\n";
  }
  std::string o;
  for (const Cycle& c : cycles) {
    o += "DEADLOCK: cycle of " + Plural(c.steps.size(), "process", "processes");
    if (c.steps.size() == 1) o += " (recursive locking)";
    o += "\n";
    for (const CycleStep& s : c.steps) {
      const WaitEdge& e = g.edges[s.edge];
      o += "  " + VertexLabel(g.vertices[s.vertex]) + " waits for " + s.waits_for.ToString() + " " +
           StateName(s.wanted) + RequestSuffix(s.request) + " " + BlockerText(g, e) + "\n";
    }
  }
  return o;
}

std::string ToJson(const std::vector<NodeDump>& dumps) {
  const WaitGraph g = BuildWaitGraph(dumps);
  return ToJson(dumps, g, FindCycles(g));
}

std::string ToJson(const std::vector<NodeDump>& dumps, const WaitGraph& g,
                   const std::vector<Cycle>& cycles) {
  std::string o;
  {
    JsonObject top(&o);
    std::string* nodes = top.Key("nodes");
    *nodes += '[';
    for (size_t i = 0; i < dumps.size(); ++i) {
      const NodeDump& d = dumps[i];
      if (i > 0) *nodes += ',';
      JsonObject nj(nodes);
      nj.Int("id", d.id);
      nj.Str("name", d.name);
      nj.Str("table", d.table);
      nj.Str("policy", d.policy);
      nj.Str("source", d.source);
      nj.Bool("header", d.has_header);
      std::string* gs = nj.Key("glocks");
      *gs += '[';
      for (size_t k = 0; k < d.glocks.size(); ++k) {
        if (k > 0) *gs += ',';
        AppendGlockJson(gs, d.glocks[k]);
      }
      *gs += ']';
    }
    *nodes += ']';
    {
      JsonObject wf(top.Key("waitfor"));
      std::string* vs = wf.Key("vertices");
      *vs += '[';
      for (size_t i = 0; i < g.vertices.size(); ++i) {
        const WaitVertex& v = g.vertices[i];
        if (i > 0) *vs += ',';
        JsonObject vj(vs);
        vj.Int("index", static_cast<int64_t>(i));
        vj.Str("kind", v.kind == WaitVertex::kProcess ? "process" : "node");
        vj.Str("label", VertexLabel(v));
        vj.Int("dump", static_cast<int64_t>(v.dump));
        vj.Int("node", v.node_id);
        vj.Str("node_name", v.node_name);
        if (v.kind == WaitVertex::kProcess) {
          vj.Int("pid", v.pid);
          vj.Str("comm", v.comm);
        } else {
          vj.Str("glock", v.glock.ToString());
          vj.Str("cached", StateName(v.cached));
          vj.Bool("demote_pending", v.demote_pending);
        }
      }
      *vs += ']';
      std::string* es = wf.Key("edges");
      *es += '[';
      for (size_t i = 0; i < g.edges.size(); ++i) {
        const WaitEdge& e = g.edges[i];
        if (i > 0) *es += ',';
        JsonObject ej(es);
        ej.Int("from", static_cast<int64_t>(e.from));
        ej.Int("to", static_cast<int64_t>(e.to));
        ej.Str("kind", WaitKindName(e.kind));
        ej.Str("glock", e.glock.ToString());
        ej.Str("wanted", StateName(e.wanted));
        ej.Str("held", StateName(e.held));
        ej.Str("request", e.request);
      }
      *es += ']';
      wf.Int("waiting_holders", static_cast<int64_t>(g.waiting_holders));
    }
    std::string* cs = top.Key("cycles");
    *cs += '[';
    for (size_t i = 0; i < cycles.size(); ++i) {
      if (i > 0) *cs += ',';
      JsonObject cj(cs);
      std::string* ss = cj.Key("steps");
      *ss += '[';
      for (size_t k = 0; k < cycles[i].steps.size(); ++k) {
        const CycleStep& s = cycles[i].steps[k];
        if (k > 0) *ss += ',';
        JsonObject sj(ss);
        sj.Int("vertex", static_cast<int64_t>(s.vertex));
        sj.Int("edge", static_cast<int64_t>(s.edge));
        sj.Int("node", s.node_id);
        sj.Str("node_name", s.node_name);
        sj.Int("pid", s.pid);
        sj.Str("comm", s.comm);
        sj.Str("waits_for", s.waits_for.ToString());
        sj.Str("wanted", StateName(s.wanted));
        sj.Str("request", s.request);
        sj.Str("how", s.edge < g.edges.size() ? WaitKindName(g.edges[s.edge].kind) : "");
        std::string* hs = sj.Key("holds");
        *hs += '[';
        for (size_t h = 0; h < s.holds.size(); ++h) {
          if (h > 0) *hs += ',';
          JsonObject hj(hs);
          hj.Str("glock", s.holds[h].glock.ToString());
          hj.Str("state", StateName(s.holds[h].state));
          hj.Bool("queued", s.holds[h].queued);
        }
        *hs += ']';
      }
      *ss += ']';
    }
    *cs += ']';
  }
  o += '\n';
  return o;
}

std::string ToDot(const std::vector<NodeDump>& dumps, const WaitGraph& g,
                  const std::vector<Cycle>& cycles) {
  // Which process -> glock ("wants") and glock -> vertex ("holds") edges lie on a cycle.
  std::set<std::pair<size_t, GlockName>> red_wants, red_holds;
  for (const Cycle& c : cycles) {
    for (const CycleStep& s : c.steps) {
      red_wants.emplace(s.vertex, s.waits_for);
      for (const HeldGlock& h : s.holds) {
        (h.queued ? red_wants : red_holds).emplace(s.vertex, h.glock);
      }
    }
  }
  std::map<std::pair<size_t, int64_t>, size_t> procs;
  for (size_t v = 0; v < g.vertices.size(); ++v) {
    if (g.vertices[v].kind == WaitVertex::kProcess) {
      procs.emplace(std::make_pair(g.vertices[v].dump, g.vertices[v].pid), v);
    }
  }
  // Glocks with holders, in name order, with each node's cached state.
  std::map<GlockName, std::string> glock_labels;
  for (size_t d = 0; d < dumps.size(); ++d) {
    for (const DumpGlock& gl : dumps[d].glocks) {
      if (!gl.holders.empty()) glock_labels.emplace(gl.name, gl.name.ToString());
    }
  }
  for (size_t d = 0; d < dumps.size(); ++d) {
    for (const DumpGlock& gl : dumps[d].glocks) {
      auto it = glock_labels.find(gl.name);
      if (it == glock_labels.end()) continue;
      it->second += "\n" + NodeLabel(dumps[d], d) + ": " + StateName(gl.state);
      if (gl.lm) {
        it->second +=
            std::string(" (") + StateName(gl.lm->from) + ">" + StateName(gl.lm->to) + " in flight)";
      }
    }
  }
  std::map<GlockName, size_t> glock_ids;
  for (const auto& [name, label] : glock_labels) glock_ids.emplace(name, glock_ids.size());

  // A label: escaped, with its newlines as Graphviz's \n.
  const auto multiline = [](const std::string& text) {
    std::string out;
    size_t pos = 0;
    while (true) {
      const size_t nl = text.find('\n', pos);
      out += DotEscape(text.substr(pos, nl == std::string::npos ? std::string::npos : nl - pos));
      if (nl == std::string::npos) break;
      out += "\\n";
      pos = nl + 1;
    }
    return out;
  };

  std::string o = "digraph glocks {\n";
  o += "  // ugfs2 glock wait-for graph. Legend: boxes are processes (\"node N\\npid P [comm]\";\n"
       "  // \"daemon\" is pid 0: the ugfs2 daemon itself, kernel writeback); dashed boxes are\n"
       "  // nodes caching a glock without a holder; ellipses are glocks with each node's cached\n"
       "  // state. glock -> process \"holds S\": a granted holder; process -> glock \"wants S\": "
       "a\n"
       "  // waiting one. Red bold edges lie on a cycle: a deadlock.\n";
  o += "  rankdir=LR;\n";
  for (size_t v = 0; v < g.vertices.size(); ++v) {
    const WaitVertex& wv = g.vertices[v];
    if (wv.kind == WaitVertex::kProcess) {
      std::string text = wv.node_label + "\n" +
                         (wv.pid == 0 ? std::string("daemon") : "pid " + std::to_string(wv.pid));
      if (!wv.comm.empty()) text += " [" + wv.comm + "]";
      o += "  v" + std::to_string(v) + " [shape=box, label=\"" + multiline(text) + "\"];\n";
    } else {
      std::string text = wv.node_label + "\nno holder" +
                         (wv.demote_pending ? ", demote pending" : ", no demote pending");
      o += "  v" + std::to_string(v) + " [shape=box, style=dashed, label=\"" + multiline(text) +
           "\"];\n";
    }
  }
  for (const auto& [name, text] : glock_labels) {
    o += "  g" + std::to_string(glock_ids.at(name)) + " [shape=ellipse, label=\"" +
         multiline(text) + "\"];\n";
  }
  const auto attrs = [](const std::string& text, bool red) {
    std::string a = " [label=\"" + text + "\"";
    if (red) a += ", color=red, fontcolor=red, style=bold";
    return a + "];\n";
  };
  std::set<std::string> edges_seen;
  const auto edge = [&](const std::string& line) {
    if (edges_seen.insert(line).second) o += line;
  };
  for (size_t d = 0; d < dumps.size(); ++d) {
    for (const DumpGlock& gl : dumps[d].glocks) {
      auto gid = glock_ids.find(gl.name);
      if (gid == glock_ids.end()) continue;
      const std::string gv = "g" + std::to_string(gid->second);
      for (const DumpHolder& h : gl.holders) {
        auto pv = procs.find({d, h.pid});
        if (pv == procs.end()) continue;
        const std::string p = "v" + std::to_string(pv->second);
        const std::string st = StateName(h.state);
        if (h.granted) {
          edge("  " + gv + " -> " + p +
               attrs("holds " + st, red_holds.contains({pv->second, gl.name})));
        } else {
          edge("  " + p + " -> " + gv +
               attrs("wants " + st, red_wants.contains({pv->second, gl.name})));
        }
      }
    }
  }
  for (size_t v = 0; v < g.vertices.size(); ++v) {
    const WaitVertex& wv = g.vertices[v];
    if (wv.kind != WaitVertex::kNode) continue;
    auto gid = glock_ids.find(wv.glock);
    if (gid == glock_ids.end()) continue;
    edge("  g" + std::to_string(gid->second) + " -> v" + std::to_string(v) +
         attrs(std::string("cached ") + StateName(wv.cached), false));
  }
  o += "}\n";
  return o;
}

std::string JsonQuote(std::string_view s) {
  std::string o = "\"";
  size_t i = 0;
  while (i < s.size()) {
    const unsigned char c = static_cast<unsigned char>(s[i]);
    if (c < 0x80) {
      switch (c) {
        case '"':
          o += "\\\"";
          break;
        case '\\':
          o += "\\\\";
          break;
        case '\n':
          o += "\\n";
          break;
        case '\r':
          o += "\\r";
          break;
        case '\t':
          o += "\\t";
          break;
        default:
          if (c < 0x20 || c == 0x7f) {
            char buf[8];
            std::snprintf(buf, sizeof(buf), "\\u%04x", c);
            o += buf;
          } else {
            o += static_cast<char>(c);
          }
      }
      ++i;
      continue;
    }
    // A UTF-8 sequence: copied if well formed (no overlong forms, surrogates or > U+10FFFF).
    size_t len = 0;
    unsigned char lo = 0x80, hi = 0xbf;  // range of the second byte
    if (c >= 0xc2 && c <= 0xdf) {
      len = 2;
    } else if (c >= 0xe0 && c <= 0xef) {
      len = 3;
      if (c == 0xe0) lo = 0xa0;
      if (c == 0xed) hi = 0x9f;
    } else if (c >= 0xf0 && c <= 0xf4) {
      len = 4;
      if (c == 0xf0) lo = 0x90;
      if (c == 0xf4) hi = 0x8f;
    }
    bool ok = len > 0 && i + len <= s.size();
    for (size_t k = 1; ok && k < len; ++k) {
      const unsigned char b = static_cast<unsigned char>(s[i + k]);
      ok = k == 1 ? (b >= lo && b <= hi) : (b >= 0x80 && b <= 0xbf);
    }
    if (ok) {
      o.append(s.substr(i, len));
      i += len;
    } else {
      o += "\\ufffd";
      ++i;
    }
  }
  return o + "\"";
}

}  // namespace ugfs2::glock
