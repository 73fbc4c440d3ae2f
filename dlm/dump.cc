#include "dump.h"

#include <cstdio>
#include <sstream>

namespace ugfs2::dlm {
namespace {

bool Printable(const std::string& s) {
  for (unsigned char c : s) {
    if (c < 0x20 || c > 0x7e) return false;
  }
  return true;
}

std::string WaitStr(int64_t ns) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%.3fs", static_cast<double>(ns) / 1e9);
  return buf;
}

const char* QueueName(Queue q) {
  switch (q) {
    case Queue::kGranted:
      return "granted";
    case Queue::kConverting:
      return "convert";
    case Queue::kWaiting:
      return "wait";
    case Queue::kNone:
      return "none";
  }
  return "?";
}

}  // namespace

std::string JsonString(const std::string& s) {
  std::string out = "\"";
  for (unsigned char c : s) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += static_cast<char>(c);
    } else if (c < 0x20 || c > 0x7e) {
      char buf[8];
      std::snprintf(buf, sizeof(buf), "\\u%04x", c);
      out += buf;
    } else {
      out += static_cast<char>(c);
    }
  }
  return out + "\"";
}

std::string HexBytes(const uint8_t* p, size_t n) {
  std::string out;
  char buf[4];
  for (size_t i = 0; i < n; ++i) {
    std::snprintf(buf, sizeof(buf), "%02x", p[i]);
    out += buf;
  }
  return out;
}

std::string DumpText(const LockTable& t, const DumpContext& ctx) {
  std::ostringstream o;
  o << "lockspace " << ctx.lockspace << " node " << ctx.self.nodeid << " pid " << ctx.self.pid
    << " state " << ctx.state << " quorate " << (ctx.quorate ? "yes" : "no") << " incarnation "
    << ctx.incarnation << " seq " << t.seq() << "\n";
  o << "members";
  for (const auto& m : t.members()) {
    if (m.alive) o << " " << m.id.nodeid << (m.synced ? "" : "(syncing)");
  }
  o << "\n";
  for (const auto& [inc, node] : t.recovery_pending()) {
    o << "recovery pending: node " << node << " (incarnation " << inc
      << ") failed; its locks are held until its journal is recovered\n";
  }
  if (ctx.held_callbacks) o << "callbacks held (no quorum): " << ctx.held_callbacks << "\n";
  for (const auto& [name, r] : t.resources()) {
    o << "\nResource len " << name.size() << (r.toss_seq ? " (inactive)" : "") << " ";
    if (Printable(name)) {
      o << "\"" << name << "\"\n";
    } else {
      o << "hex " << HexBytes(reinterpret_cast<const uint8_t*>(name.data()), name.size()) << "\n";
    }
    o << "LVB len " << kLvbLen << " seq " << r.lvbseq << (r.lvb_invalid ? " INVALID" : "") << "\n "
      << HexBytes(r.lvb.data(), r.lvb.size()) << "\n";
    auto line = [&](const LockEntry* lk) {
      char buf[160];
      const bool dead = t.recovery_pending().count(lk->owner) != 0;
      std::snprintf(buf, sizeof(buf), "%08x %s %-4s node %u pid %u comm %s", lk->lkid,
                    lk->queue == Queue::kWaiting ? "--" : ModeName(lk->grmode),
                    lk->queue == Queue::kGranted
                        ? ""
                        : (std::string("(") + ModeName(lk->rqmode) + ")").c_str(),
                    lk->nodeid, lk->pid, lk->procname.c_str());
      o << buf;
      if (lk->exflags) o << " flags " << FlagsString(lk->exflags);
      if (lk->queue != Queue::kGranted) {
        o << " waiting " << WaitStr(ctx.now_ns - lk->queued_ns);
      } else {
        o << " held " << WaitStr(ctx.now_ns - lk->queued_ns);
      }
      if (dead) o << " DEAD-OWNER(awaiting recovery)";
      if (lk->owner == ctx.incarnation && ctx.in_flight.count(lk->lkid)) o << " op-in-flight";
      o << "\n";
    };
    if (!r.granted.empty()) o << "Granted\n";
    for (const LockEntry* lk : r.granted) line(lk);
    if (!r.convert.empty()) o << "Convert\n";
    for (const LockEntry* lk : r.convert) line(lk);
    if (!r.wait.empty()) o << "Waiting\n";
    for (const LockEntry* lk : r.wait) line(lk);
  }
  return o.str();
}

std::string DumpJson(const LockTable& t, const DumpContext& ctx) {
  std::ostringstream o;
  o << "{\"lockspace\":" << JsonString(ctx.lockspace) << ",\"nodeid\":" << ctx.self.nodeid
    << ",\"pid\":" << ctx.self.pid << ",\"state\":\"" << ctx.state
    << "\",\"quorate\":" << (ctx.quorate ? "true" : "false")
    << ",\"incarnation\":" << ctx.incarnation << ",\"seq\":" << t.seq()
    << ",\"held_callbacks\":" << ctx.held_callbacks << ",\"members\":[";
  bool first = true;
  for (const auto& m : t.members()) {
    o << (first ? "" : ",") << "{\"nodeid\":" << m.id.nodeid << ",\"pid\":" << m.id.pid
      << ",\"incarnation\":" << m.incarnation << ",\"synced\":" << (m.synced ? "true" : "false")
      << ",\"alive\":" << (m.alive ? "true" : "false") << "}";
    first = false;
  }
  o << "],\"recovery_pending\":[";
  first = true;
  for (const auto& [inc, node] : t.recovery_pending()) {
    o << (first ? "" : ",") << "{\"nodeid\":" << node << ",\"incarnation\":" << inc << "}";
    first = false;
  }
  o << "],\"resources\":[";
  bool rfirst = true;
  for (const auto& [name, r] : t.resources()) {
    o << (rfirst ? "" : ",") << "{\"name\":" << JsonString(name) << ",\"name_hex\":\""
      << HexBytes(reinterpret_cast<const uint8_t*>(name.data()), name.size()) << "\",\"lvb\":\""
      << HexBytes(r.lvb.data(), r.lvb.size()) << "\",\"lvbseq\":" << r.lvbseq
      << ",\"lvb_valid\":" << (r.lvb_invalid ? "false" : "true");
    rfirst = false;
    auto q = [&](const char* qname, const std::vector<LockEntry*>& v) {
      o << ",\"" << qname << "\":[";
      bool f = true;
      for (const LockEntry* lk : v) {
        char id[16];
        std::snprintf(id, sizeof(id), "%08x", lk->lkid);
        o << (f ? "" : ",") << "{\"lkid\":\"" << id << "\",\"nodeid\":" << lk->nodeid
          << ",\"pid\":" << lk->pid << ",\"procname\":" << JsonString(lk->procname)
          << ",\"grmode\":\"" << ModeName(lk->grmode) << "\",\"rqmode\":\"" << ModeName(lk->rqmode)
          << "\",\"queue\":\"" << QueueName(lk->queue) << "\",\"flags\":\""
          << FlagsString(lk->exflags)
          << "\",\"on_queue_us\":" << (ctx.now_ns - lk->queued_ns) / 1000
          << ",\"owner_dead\":" << (t.recovery_pending().count(lk->owner) ? "true" : "false")
          << ",\"in_flight\":"
          << ((lk->owner == ctx.incarnation && ctx.in_flight.count(lk->lkid)) ? "true" : "false")
          << "}";
        f = false;
      }
      o << "]";
    };
    q("granted", r.granted);
    q("convert", r.convert);
    q("wait", r.wait);
    o << "}";
  }
  o << "]}";
  return o.str();
}

}  // namespace ugfs2::dlm
