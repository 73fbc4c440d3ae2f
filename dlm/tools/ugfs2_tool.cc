// ugfs2-tool: inspect the lock manager of this node (in the spirit of dlm_tool).
//
//   ugfs2-tool ls [--json]
//   ugfs2-tool lockdump LOCKSPACE [--all-nodes] [--json]
//
// Talks over libqb IPC (service $UGFS2_DLM_IPC or "ugfs2-dlm") to the process hosting the
// lockspaces on this node; root only.
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include <qb/qbipcc.h>

#include "ipc_server.h"

using namespace ugfs2::dlm;

int main(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  bool json = false, all = false;
  std::vector<std::string> pos;
  for (const auto& a : args) {
    if (a == "--json") {
      json = true;
    } else if (a == "--all-nodes") {
      all = true;
    } else if (a == "-h" || a == "--help") {
      pos.clear();
      break;
    } else {
      pos.push_back(a);
    }
  }
  std::string cmd;
  if (!pos.empty() && pos[0] == "ls" && pos.size() == 1) {
    cmd = "ls";
  } else if (pos.size() == 2 && pos[0] == "lockdump") {
    cmd = "lockdump " + pos[1];
    if (all) cmd += " all";
  } else {
    std::fprintf(stderr,
                 "usage: ugfs2-tool ls [--json]\n"
                 "       ugfs2-tool lockdump LOCKSPACE [--all-nodes] [--json]\n");
    return 2;
  }
  if (json) cmd += " json";
  const std::string name = IpcServiceName();
  qb_ipcc_connection_t* c = qb_ipcc_connect(name.c_str(), kIpcMaxMsg);
  if (c == nullptr) {
    std::fprintf(stderr,
                 "ugfs2-tool: cannot connect to %s: %s (is a lockspace host running on this "
                 "node? are you root?)\n",
                 name.c_str(), std::strerror(errno));
    return 1;
  }
  qb_ipc_request_header hdr{};
  hdr.id = kIpcCommand;
  hdr.size = static_cast<int32_t>(sizeof(hdr) + cmd.size());
  iovec iov[2] = {{&hdr, sizeof(hdr)}, {cmd.data(), cmd.size()}};
  std::vector<char> buf(kIpcMaxMsg);
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
