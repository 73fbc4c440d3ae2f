// MountSource: the block device that the kernel's FUSE mount names, so that unmount waits.
//
// Only a `fuseblk` mount makes the kernel send FUSE_DESTROY and wait for its reply before
// umount(2) returns; a plain `fuse` mount returns while the daemon is still flushing, so a mount
// right after an unmount would race the old daemon. ugfs2 therefore mounts as fuseblk whenever
// it runs as root: a block device is named as it is; an image file gets a loop device over it,
// created here with LO_FLAGS_AUTOCLEAR so that it disappears with the mount. The daemon itself
// never does I/O through the loop device (it reads and writes the image directly); the loop
// device only carries the mount. Without root (fusermount3 refuses blkdev), the mount is plain
// fuse and unmount does not wait (a warning says so).
//
// Thread safety: values and free functions; call from the main thread during mount.
#ifndef UGFS2_FUSE_MOUNT_SOURCE_H_
#define UGFS2_FUSE_MOUNT_SOURCE_H_

#include <string>

#include "common/status.h"

namespace ugfs2::fusefs {

struct MountSource {
  std::string blkdev;  // the device for the fuseblk mount; empty: plain fuse mount
  int loop_fd = -1;    // an open loop device this daemon created (closed after the mount)
  MountSource() = default;
  MountSource(const MountSource&) = delete;
  MountSource& operator=(const MountSource&) = delete;
  MountSource(MountSource&& o) noexcept : blkdev(std::move(o.blkdev)), loop_fd(o.loop_fd) {
    o.loop_fd = -1;
  }
  ~MountSource();
  // Closes the loop device fd: from now on the mount alone keeps it (autoclear at unmount).
  void DropLoopReference();
};

// Picks the mount source for `device` (an image file or a block device). `want_blkdev`: false
// forces a plain fuse mount.
Result<MountSource> PrepareMountSource(const std::string& device, bool read_only, bool want_blkdev);

}  // namespace ugfs2::fusefs

#endif  // UGFS2_FUSE_MOUNT_SOURCE_H_
