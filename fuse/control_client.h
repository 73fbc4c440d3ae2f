// ControlClient: the wire protocol of the per-mount control socket and its client side (the
// server is ControlServer in control.h). No libfuse and no daemon state: the daemon (remount
// helper, server) and ugfs2-tool both link it (library ugfs2_control).
//
// The socket of a mount is /run/ugfs2/ctl/MAJ:MIN.sock, MAJ:MIN = the mount's device number
// (st_dev of the mountpoint, field 3 of /proc/self/mountinfo); root only.
//
// Protocol: one connection per request. The client sends one request line (at most 4 KiB,
// '\n'-terminated). The daemon answers with exactly one of
//   "ok\n"                        success without a result
//   "ok TEXT\n"                   success with a short one-line result TEXT
//   "error: CODE: MESSAGE\n"      failure; CODE is a Status code name (CodeName), and is absent
//                                 ("error: MESSAGE") from daemons older than this protocol
//   "data LEN\n" + LEN bytes      success with a result of any size and content (glock dumps)
// and closes the connection. EncodeControlReply picks the form; ReadControlReply undoes it, so a
// caller only sees Result<std::string>.
// Requests (ControlServer's handler in fuse/main.cc): "ro", "rw", "atime MODE NODIRATIME",
// "glocks", "demote NAME", "demote all" (result: the number of glocks asked), "counters" (one
// "NAME VALUE" line per counter: lock manager messages, cache revokes).
//
// Thread safety: free functions without shared state.
#ifndef UGFS2_FUSE_CONTROL_CLIENT_H_
#define UGFS2_FUSE_CONTROL_CLIENT_H_

#include <sys/types.h>
#include <sys/un.h>

#include <chrono>
#include <cstddef>
#include <string>
#include <string_view>

#include "common/status.h"

namespace ugfs2::fusefs {

using ControlDeadline = std::chrono::steady_clock::time_point;

// Largest request line, and largest "data" result a client accepts.
inline constexpr size_t kControlMaxLine = 4096;
inline constexpr size_t kControlMaxData = 256u << 20;

// The control socket path of the mount whose device number is `dev`.
std::string ControlPath(dev_t dev);

// The device number of the newest mount at `mountpoint` according to /proc/self/mountinfo.
// The path is first compared as given (made absolute and normalised lexically, without touching
// the filesystem, so a daemon that no longer answers cannot hang the caller), then resolved with
// realpath(3) if that finds nothing. kNotFound if it is not a mount point.
Result<dev_t> MountDevice(const std::string& mountpoint);

// Undoes mountinfo's escapes (space, tab, newline and backslash as \ooo).
std::string UnescapeMountInfo(std::string_view s);

// Sends one request to the daemon listening at `path` and returns its result ("" for a bare
// "ok"), or the daemon's error with its code. kTimedOut after `timeout_ms`, kNotConnected if
// no daemon listens there.
Result<std::string> ControlRequest(const std::string& path, std::string_view request,
                                   int timeout_ms);

// Wire helpers (shared with ControlServer).
// The address of the Unix socket `path` (kInvalid if it does not fit sun_path).
Result<sockaddr_un> ControlAddress(const std::string& path);
// The reply bytes for `result`.
std::string EncodeControlReply(const Result<std::string>& result);
// Reads one line (without its '\n'; EOF also ends it) of at most `max` bytes before `deadline`.
Result<std::string> ReadControlLine(int fd, ControlDeadline deadline, size_t max = kControlMaxLine);
// Reads and decodes one reply.
Result<std::string> ReadControlReply(int fd, ControlDeadline deadline);
// Writes all of `data` before `deadline` (never raises SIGPIPE).
Status WriteControlBytes(int fd, std::string_view data, ControlDeadline deadline);

}  // namespace ugfs2::fusefs

#endif  // UGFS2_FUSE_CONTROL_CLIENT_H_
