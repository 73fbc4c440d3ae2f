// ugfs2-lockd: a small lock-holding process for tests and benchmarks. It joins one lockspace
// through corosync CPG, serves ugfs2-tool over libqb IPC, reads commands from stdin (one per
// line) and reports events on stdout (one per line, flushed):
//
//   commands                               events
//   lock TAG NAME MODE [FLAG...]           ast TAG status=OK mode=EX sbf=0 lvb=HEX lkid=N
//   convert TAG MODE [FLAG...]             bast TAG mode=PR
//   unlock TAG [FLAG...]   cancel TAG      recovery NODEID      (with --manual-recovery)
//   lvb TAG TEXT (sets the lksb LVB)       fenced 1|0
//   autodemote TAG on|off (bast -> NL)     member / state ... / ok / error ...
//   recovery-done NODEID   state   wait-member   quit
// FLAG: NOQUEUE VALBLK QUECVT IVVALBLK CONVDEADLK NODLCKWT EXPEDITE NOQUEUEBAST ALTPR ALTCW NOEXP
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <iostream>
#include <map>
#include <memory>
#include <mutex>
#include <sstream>
#include <string>
#include <vector>

#include "cpg_transport.h"
#include "dump.h"
#include "ipc_server.h"
#include "lockspace.h"
#include "qb_logging.h"

using namespace ugfs2;
using namespace ugfs2::dlm;

namespace {

std::mutex g_out_mu;
void Out(const std::string& s) {
  std::lock_guard<std::mutex> l(g_out_mu);
  std::fputs((s + "\n").c_str(), stdout);
  std::fflush(stdout);
}

struct Tagged {
  Lksb lksb;
  int mode = kIV;  // requested mode of the last op
  uint32_t flags = 0;
  bool autodemote = false;
};

uint32_t ParseFlags(const std::vector<std::string>& w, size_t from) {
  static const std::map<std::string, uint32_t> kFlags = {
      {"NOQUEUE", kLkfNoQueue},       {"VALBLK", kLkfValBlk},
      {"QUECVT", kLkfQueCvt},         {"IVVALBLK", kLkfIvValBlk},
      {"CONVDEADLK", kLkfConvDeadlk}, {"NODLCKWT", kLkfNoDlckWt},
      {"EXPEDITE", kLkfExpedite},     {"NOQUEUEBAST", kLkfNoQueueBast},
      {"ALTPR", kLkfAltPr},           {"ALTCW", kLkfAltCw},
      {"NOEXP", kLkfNoExp},           {"FORCEUNLOCK", kLkfForceUnlock}};
  uint32_t f = 0;
  for (size_t i = from; i < w.size(); ++i) {
    auto it = kFlags.find(w[i]);
    if (it != kFlags.end()) f |= it->second;
  }
  return f;
}

std::string LvbText(const Lvb& l) {
  std::string s(reinterpret_cast<const char*>(l.data()), l.size());
  s = s.substr(0, s.find('\0'));
  for (char& c : s) {
    if (c == ' ' || c < 0x21 || c > 0x7e) c = '_';
  }
  return s.empty() ? "-" : s;
}

}  // namespace

int main(int argc, char** argv) {
  std::string lsname;
  bool manual_recovery = false, verbose = false;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--manual-recovery") {
      manual_recovery = true;
    } else if (a == "-v") {
      verbose = true;
    } else if (lsname.empty()) {
      lsname = a;
    }
  }
  if (lsname.empty()) {
    std::fprintf(stderr, "usage: ugfs2-lockd [--manual-recovery] [-v] LOCKSPACE\n");
    return 2;
  }
  SetupQbLogging("ugfs2-lockd", true, false, verbose ? LogLevel::kDebug : LogLevel::kInfo);
  auto tr = CpgTransport::Create("ugfs2:ls:" + lsname);
  if (!tr.ok()) {
    Out("error " + tr.status().ToString());
    return 1;
  }
  std::unique_ptr<CpgTransport> transport = std::move(tr).value();
  std::mutex mu;  // guards tags
  std::map<std::string, std::unique_ptr<Tagged>> tags;
  std::unique_ptr<Lockspace> ls;
  LockspaceOptions o;
  o.name = lsname;
  if (manual_recovery) {
    o.recovery_hook = [](uint32_t node) { Out("recovery " + std::to_string(node)); };
  }
  o.fence_hook = [](bool f) { Out(std::string("fenced ") + (f ? "1" : "0")); };
  ls = std::make_unique<Lockspace>(transport.get(), o);
  Status st = StartDlmIpcServer();
  if (!st.ok()) Out("error ipc " + st.ToString());
  RegisterLockspace(ls.get());
  st = ls->Join();
  if (!st.ok()) {
    Out("error join " + st.ToString());
    return 1;
  }
  Lockspace* lsp = ls.get();

  auto make_ast = [&](const std::string& tag, Tagged* t) {
    return [&, tag, t] {
      int mode = t->mode;
      if (t->lksb.flags & kSbfAltMode) mode = (t->flags & kLkfAltPr) ? kPR : kCW;
      std::ostringstream os;
      os << "ast " << tag << " status=" << StatusName(t->lksb.status)
         << " mode=" << (t->lksb.status == kStatusOk ? ModeName(mode) : "-")
         << " sbf=" << t->lksb.flags << " lvb=" << LvbText(t->lksb.lvb) << " lkid=" << t->lksb.lkid;
      Out(os.str());
    };
  };
  auto make_bast = [&](const std::string& tag, Tagged* t) {
    return [&, tag, t](int mode) {
      Out("bast " + tag + " mode=" + ModeName(mode));
      if (t->autodemote) {
        t->mode = kNL;
        t->flags = kLkfConvert | (t->flags & kLkfValBlk);
        Status s = lsp->Lock(kNL, &t->lksb, t->flags, "", nullptr, nullptr);
        if (!s.ok()) Out("error autodemote " + tag + " " + s.ToString());
      }
    };
  };

  std::string line;
  while (std::getline(std::cin, line)) {
    std::istringstream in(line);
    std::vector<std::string> w;
    std::string x;
    while (in >> x) w.push_back(x);
    if (w.empty()) continue;
    const std::string& cmd = w[0];
    Status s;
    if (cmd == "quit") {
      break;
    } else if (cmd == "wait-member") {
      s = ls->WaitMember(std::chrono::seconds(60));
      if (s.ok()) Out("member");
    } else if (cmd == "state") {
      auto info = ls->Info();
      std::ostringstream os;
      os << "state " << LsStateName(info.state) << " quorate=" << (info.quorate ? 1 : 0)
         << " members=";
      for (const auto& m : info.members) {
        if (m.alive) os << m.id.nodeid << ",";
      }
      os << " pending_recovery=" << info.recovery_pending.size();
      Out(os.str());
      continue;
    } else if (cmd == "recovery-done" && w.size() == 2) {
      s = ls->RecoveryDone(static_cast<uint32_t>(std::stoul(w[1])));
    } else if (cmd == "lock" && w.size() >= 4) {
      Mode m;
      if (!ParseMode(w[3], &m)) {
        Out("error bad mode");
        continue;
      }
      Tagged* t;
      {
        std::lock_guard<std::mutex> l(mu);
        auto& p = tags[w[1]];
        p = std::make_unique<Tagged>();
        t = p.get();
      }
      t->mode = m;
      t->flags = ParseFlags(w, 4);
      s = ls->Lock(m, &t->lksb, t->flags, w[2], make_ast(w[1], t), make_bast(w[1], t));
    } else if ((cmd == "convert" && w.size() >= 3) || cmd == "unlock" || cmd == "cancel" ||
               cmd == "lvb" || cmd == "autodemote") {
      Tagged* t = nullptr;
      {
        std::lock_guard<std::mutex> l(mu);
        auto it = w.size() >= 2 ? tags.find(w[1]) : tags.end();
        if (it != tags.end()) t = it->second.get();
      }
      if (t == nullptr) {
        Out("error unknown tag");
        continue;
      }
      if (cmd == "convert") {
        Mode m;
        if (!ParseMode(w[2], &m)) {
          Out("error bad mode");
          continue;
        }
        t->mode = m;
        t->flags = ParseFlags(w, 3) | kLkfConvert;
        s = ls->Lock(m, &t->lksb, t->flags, "", nullptr, nullptr);
      } else if (cmd == "unlock") {
        s = ls->Unlock(t->lksb.lkid, ParseFlags(w, 2));
      } else if (cmd == "cancel") {
        s = ls->Unlock(t->lksb.lkid, kLkfCancel);
      } else if (cmd == "lvb" && w.size() >= 3) {
        t->lksb.lvb.fill(0);
        std::memcpy(t->lksb.lvb.data(), w[2].data(), std::min(w[2].size(), kLvbLen));
      } else if (cmd == "autodemote") {
        t->autodemote = w.size() < 3 || w[2] == "on";
      }
    } else {
      Out("error unknown command");
      continue;
    }
    Out(s.ok() ? "ok " + cmd : "error " + cmd + " " + s.ToString());
  }
  UnregisterLockspace(ls.get());
  (void)ls->Leave();
  ls.reset();
  return 0;
}
