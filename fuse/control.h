// Control: one root-only Unix socket per mount, /run/ugfs2/ctl/MAJ:MIN.sock (MAJ:MIN = the
// mount's device number, what stat(2) of the mountpoint reports), through which another ugfs2
// process talks to the daemon serving the mount. Used by remount: mount(8) runs
// `ugfs2 DEV MNT -o remount,...` (through mount.fuse3), which tells the daemon to go read-write
// before the kernel's remount, or read-only after it (so the daemon never refuses a write the
// kernel allows, and the journal is clean once a read-only remount returns).
//
// Protocol: one request line, one reply line ("ok" or "error: MESSAGE"), then close.
// Requests: "ro", "rw", "atime MODE NODIRATIME" (MODE = noatime|relatime|strictatime,
// NODIRATIME = 0|1).
//
// Thread safety: ControlServer runs its handler on its own thread, one request at a time; the
// handler must not block on FUSE requests (it runs beside the session, not inside it).
// ControlRequest is a plain blocking client with a deadline.
#ifndef UGFS2_FUSE_CONTROL_H_
#define UGFS2_FUSE_CONTROL_H_

#include <sys/types.h>

#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <thread>

#include "common/status.h"

namespace ugfs2::fusefs {

// The control socket path of the mount whose device number is `dev`.
std::string ControlPath(dev_t dev);

// The device number of the newest mount at `mountpoint` according to /proc/self/mountinfo
// (readable while the daemon cannot yet answer a stat of its own mount).
Result<dev_t> MountDevice(const std::string& mountpoint);

class ControlServer {
 public:
  using Handler = std::function<std::string(std::string_view request)>;
  // Binds `path` (creating its directory, mode 0700) and starts serving.
  static Result<std::unique_ptr<ControlServer>> Start(const std::string& path, Handler handler);
  ~ControlServer();  // stops serving and removes the socket
  ControlServer(const ControlServer&) = delete;
  ControlServer& operator=(const ControlServer&) = delete;

 private:
  ControlServer(int fd, std::string path, Handler handler);
  void Run();
  int fd_;
  int stop_pipe_[2] = {-1, -1};
  std::string path_;
  Handler handler_;
  std::thread thread_;  // last: started once the rest is initialised
};

// Sends one request to the daemon at `path`; returns its reply line. Fails with kTimedOut after
// `timeout_ms`, kNotConnected if no daemon listens there.
Result<std::string> ControlRequest(const std::string& path, std::string_view request,
                                   int timeout_ms);

}  // namespace ugfs2::fusefs

#endif  // UGFS2_FUSE_CONTROL_H_
