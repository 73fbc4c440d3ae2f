#include "ipc_server.h"

#include <sys/types.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <sstream>
#include <thread>
#include <vector>

#include <qb/qbipcs.h>
#include <qb/qbloop.h>

#include "common/log.h"
#include "dump.h"

namespace ugfs2::dlm {
namespace {

std::mutex g_mu;
std::vector<Lockspace*> g_lockspaces;  // guarded by g_mu
qb_loop_t* g_loop = nullptr;
bool g_started = false;

std::vector<std::string> Split(const std::string& s) {
  std::istringstream in(s);
  std::vector<std::string> out;
  std::string w;
  while (in >> w) out.push_back(w);
  return out;
}

std::string LsText(bool json) {
  std::lock_guard<std::mutex> l(g_mu);
  std::ostringstream o;
  if (json) o << "{\"lockspaces\":[";
  bool first = true;
  for (Lockspace* ls : g_lockspaces) {
    LockspaceInfo info = ls->Info();
    if (json) {
      o << (first ? "" : ",") << "{\"name\":" << JsonString(info.name)
        << ",\"nodeid\":" << info.self.nodeid << ",\"pid\":" << info.self.pid << ",\"state\":\""
        << LsStateName(info.state)
        << "\",\"quorate\":" << (info.quorate && info.quorum_confirmed ? "true" : "false")
        << ",\"fenced\":" << (ls->fenced() ? "true" : "false") << ",\"members\":[";
      bool f = true;
      for (const auto& m : info.members) {
        if (!m.alive) continue;
        o << (f ? "" : ",") << m.id.nodeid;
        f = false;
      }
      o << "],\"recovery_pending\":[";
      f = true;
      for (const auto& [inc, node] : info.recovery_pending) {
        o << (f ? "" : ",") << node;
        f = false;
      }
      o << "],\"seq\":" << info.seq << ",\"resources\":" << info.resources
        << ",\"locks\":" << info.locks << ",\"held_callbacks\":" << info.held_callbacks << "}";
    } else {
      o << "name          " << info.name << "\n";
      o << "node          " << info.self.nodeid << " pid " << info.self.pid << "\n";
      o << "state         " << LsStateName(info.state)
        << (info.quorate && info.quorum_confirmed ? " quorate" : " NOT-QUORATE")
        << (ls->fenced() ? " FENCED" : "") << "\n";
      o << "members      ";
      for (const auto& m : info.members) {
        if (m.alive) o << " " << m.id.nodeid << (m.synced ? "" : "(joining)");
      }
      o << "\n";
      if (!info.recovery_pending.empty()) {
        o << "new status    wait recovery of";
        for (const auto& [inc, node] : info.recovery_pending) o << " " << node;
        o << "\n";
      }
      o << "locks         " << info.locks << " on " << info.resources << " resources, seq "
        << info.seq << "\n\n";
    }
    first = false;
  }
  if (json) o << "]}";
  return o.str();
}

Lockspace* Find(const std::string& name) {
  std::lock_guard<std::mutex> l(g_mu);
  for (Lockspace* ls : g_lockspaces) {
    if (ls->name() == name) return ls;
  }
  return nullptr;
}

int32_t Accept(qb_ipcs_connection_t*, uid_t uid, gid_t) {
  if (uid != 0) {
    LOG_WARN("dlm ipc: refusing non-root client uid " << uid);
    return -EACCES;
  }
  return 0;
}

void Created(qb_ipcs_connection_t*) {}
int32_t Closed(qb_ipcs_connection_t*) { return 0; }
void Destroyed(qb_ipcs_connection_t*) {}

int32_t Process(qb_ipcs_connection_t* c, void* data, size_t size) {
  const auto* hdr = static_cast<const qb_ipc_request_header*>(data);
  std::string line;
  if (size > sizeof(*hdr)) {
    line.assign(static_cast<const char*>(data) + sizeof(*hdr), size - sizeof(*hdr));
  }
  int err = 0;
  std::string text = RunIpcCommand(line, &err);
  if (text.size() > kIpcMaxMsg - 4096) {
    text.resize(kIpcMaxMsg - 4096);
    text += "\n... truncated\n";
  }
  qb_ipc_response_header rh{};
  rh.id = hdr->id;
  rh.size = static_cast<int32_t>(sizeof(rh) + text.size());
  rh.error = err;
  iovec iov[2] = {{&rh, sizeof(rh)}, {const_cast<char*>(text.data()), text.size()}};
  qb_ipcs_response_sendv(c, iov, 2);
  return 0;
}

int32_t JobAdd(enum qb_loop_priority p, void* data, qb_loop_job_dispatch_fn fn) {
  return qb_loop_job_add(g_loop, p, data, fn);
}
int32_t DispatchAdd(enum qb_loop_priority p, int32_t fd, int32_t evts, void* data,
                    qb_ipcs_dispatch_fn_t fn) {
  return qb_loop_poll_add(g_loop, p, fd, evts, data, fn);
}
int32_t DispatchMod(enum qb_loop_priority p, int32_t fd, int32_t evts, void* data,
                    qb_ipcs_dispatch_fn_t fn) {
  return qb_loop_poll_mod(g_loop, p, fd, evts, data, fn);
}
int32_t DispatchDel(int32_t fd) { return qb_loop_poll_del(g_loop, fd); }

}  // namespace

std::string IpcServiceName() {
  const char* env = std::getenv("UGFS2_DLM_IPC");
  return env && *env ? env : kDefaultIpcName;
}

std::string RunIpcCommand(const std::string& line, int* err) {
  *err = 0;
  auto words = Split(line);
  if (words.empty()) {
    *err = -EINVAL;
    return "empty command\n";
  }
  bool json = false, all = false;
  for (const auto& w : words) {
    if (w == "json") json = true;
    if (w == "all") all = true;
  }
  if (words[0] == "ls") return LsText(json);
  if (words[0] == "lockdump" && words.size() >= 2) {
    Lockspace* ls = Find(words[1]);
    if (ls == nullptr) {
      *err = -ENOENT;
      return "no lockspace " + words[1] + " in this process\n";
    }
    if (!all) return ls->Dump(json) + (json ? "" : "\n");
    auto r = ls->DumpAllNodes(json, std::chrono::milliseconds(5000));
    if (!r.ok()) {
      *err = -r.status().ToErrno();
      return r.status().ToString() + "\n";
    }
    std::string out = json ? "{\"nodes\":[" : "";
    for (size_t i = 0; i < r->size(); ++i) {
      if (json) {
        out += (i ? "," : "") + (*r)[i];
      } else {
        out += (*r)[i] + "\n";
      }
    }
    if (json) out += "]}";
    return out;
  }
  *err = -EINVAL;
  return "unknown command: " + line + "\n";
}

Status StartDlmIpcServer() {
  std::lock_guard<std::mutex> l(g_mu);
  if (g_started) return Status::Ok();
  g_loop = qb_loop_create();
  if (g_loop == nullptr) return Status::IoError("qb_loop_create failed");
  static qb_ipcs_service_handlers handlers = {Accept, Created, Process, Closed, Destroyed};
  static qb_ipcs_poll_handlers poll = {JobAdd, DispatchAdd, DispatchMod, DispatchDel};
  const std::string name = IpcServiceName();
  qb_ipcs_service_t* s = qb_ipcs_create(name.c_str(), 0, QB_IPC_NATIVE, &handlers);
  if (s == nullptr) return Status::IoError("qb_ipcs_create failed");
  qb_ipcs_enforce_buffer_size(s, kIpcMaxMsg);
  qb_ipcs_poll_handlers_set(s, &poll);
  int rc = qb_ipcs_run(s);
  if (rc != 0) return Status::FromErrno(-rc, "qb_ipcs_run " + name);
  std::thread([] { qb_loop_run(g_loop); }).detach();
  g_started = true;
  LOG_INFO("dlm ipc: serving on " << name);
  return Status::Ok();
}

void RegisterLockspace(Lockspace* ls) {
  std::lock_guard<std::mutex> l(g_mu);
  g_lockspaces.push_back(ls);
}

void UnregisterLockspace(Lockspace* ls) {
  std::lock_guard<std::mutex> l(g_mu);
  std::erase(g_lockspaces, ls);
}

}  // namespace ugfs2::dlm
