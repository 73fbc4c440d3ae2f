// Control: one root-only Unix socket per mount, /run/ugfs2/ctl/MAJ:MIN.sock (MAJ:MIN = the
// mount's device number, what stat(2) of the mountpoint reports), through which another process
// talks to the daemon serving the mount. Used by remount: mount(8) runs
// `ugfs2 DEV MNT -o remount,...` (through mount.fuse3), which tells the daemon to go read-write
// before the kernel's remount, or read-only after it (so the daemon never refuses a write the
// kernel allows, and the journal is clean once a read-only remount returns); and by
// `ugfs2-tool glocks|demote|counters MNT` (glock dumps, demotes, and the counters of what this
// node sent to the lock manager and of its cache revokes: one "NAME VALUE\n" line each).
//
// Protocol (framing, requests): control_client.h, which also has the client (ControlRequest).
// This file: the server, and the mount-table helpers only the daemon needs.
//
// Thread safety: ControlServer runs its handler on its own thread, one request at a time; the
// handler must not block on FUSE requests (it runs beside the session, not inside it).
#ifndef UGFS2_FUSE_CONTROL_H_
#define UGFS2_FUSE_CONTROL_H_

#include <sys/types.h>

#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>

#include "common/status.h"
#include "control_client.h"

namespace ugfs2::fusefs {

// A ugfs2 mount (fuseblk.ugfs2 or fuse.ugfs2) of the volume `device` (an image file or a block
// device) visible in this mount namespace: its mount point, and whether its superblock is
// read-only. A fuseblk mount of an image names the loop device over it; that loop device's
// backing file is compared. kNotFound if there is none.
struct ServingMount {
  std::string mountpoint;
  bool read_only = false;
};
Result<ServingMount> FindServingMount(const std::string& device);

// Whether the parent of the newest mount at `mountpoint` has shared propagation (a "shared:N"
// optional field in mountinfo).
Result<bool> ParentMountShared(const std::string& mountpoint);

// Whether the superblock of the mount with device `dev` is read-only now (mountinfo's super
// options), or an error if no such mount is listed.
Result<bool> SuperblockReadOnly(dev_t dev);

// MountWatcher: follows the kernel's read-only state of one mount, for remounts that bypass the
// control socket (mount(8) calls no helper for a fuseblk.ugfs2 mount, or remount(2) directly).
// A thread waits for mount-table changes (poll POLLPRI on /proc/self/mountinfo) and calls
// `on_change(read_only)` when the superblock's ro flag flips. A read-write remount is also
// noticed synchronously: Refresh() re-reads the state at once (the FUSE handlers call it when the
// core refused a write that the kernel let through, so no write is lost to the thread's lag).
class MountWatcher {
 public:
  using OnChange = std::function<void(bool read_only)>;
  static Result<std::unique_ptr<MountWatcher>> Start(dev_t dev, bool read_only, OnChange on_change);
  ~MountWatcher();
  MountWatcher(const MountWatcher&) = delete;
  MountWatcher& operator=(const MountWatcher&) = delete;
  // Re-reads the state now and reports a flip through on_change (on the caller's thread).
  void Refresh();

 private:
  MountWatcher(int fd, dev_t dev, bool read_only, OnChange on_change);
  void Run();
  int fd_;
  int stop_pipe_[2] = {-1, -1};
  const dev_t dev_;
  std::mutex mu_;  // serializes Refresh and on_change; leaf lock apart from what on_change takes
  bool read_only_;
  OnChange on_change_;
  std::thread thread_;
};

class ControlServer {
 public:
  // Answers one request line: a result (sent as "ok", "ok TEXT" or "data LEN", see
  // control_client.h) or an error (sent as "error: CODE: MESSAGE").
  using Handler = std::function<Result<std::string>(std::string_view request)>;
  // Binds `path` (creating /run/ugfs2/ctl, mode 0700, for a path in it) and starts serving.
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

}  // namespace ugfs2::fusefs

#endif  // UGFS2_FUSE_CONTROL_H_
