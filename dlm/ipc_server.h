// DlmIpcServer: the libqb IPC endpoint through which ugfs2-tool inspects the lockspaces hosted
// by this process (the ugfs2 daemon, or ugfs2-lockd in tests). Root-only (uid 0 clients).
//
// Protocol: one request, one response. The request is a qb_ipc_request_header (id kIpcCommand)
// followed by a NUL-free command line; the response is a qb_ipc_response_header (error = 0 or a
// negative errno) followed by text:
//   "ls [json]"                              lockspaces and members
//   "lockdump NAME [json] [all]"             this node's (or with "all", every member's) view
// The server runs its own thread with a libqb main loop; one server per process, living until
// the process exits. Register/Unregister may be called from any thread.
#ifndef UGFS2_DLM_IPC_SERVER_H_
#define UGFS2_DLM_IPC_SERVER_H_

#include <string>

#include "common/status.h"
#include "lockspace.h"

namespace ugfs2::dlm {

inline constexpr const char* kDefaultIpcName = "ugfs2-dlm";
inline constexpr int32_t kIpcCommand = 1;
inline constexpr size_t kIpcMaxMsg = 8 << 20;

// Service name: $UGFS2_DLM_IPC if set, else kDefaultIpcName.
std::string IpcServiceName();

// Starts the server (idempotent).
Status StartDlmIpcServer();
void RegisterLockspace(Lockspace* ls);
void UnregisterLockspace(Lockspace* ls);

// Executes one command against the registered lockspaces (also used by tests).
std::string RunIpcCommand(const std::string& line, int* err);

}  // namespace ugfs2::dlm

#endif  // UGFS2_DLM_IPC_SERVER_H_
