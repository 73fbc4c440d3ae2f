#include "mount_source.h"

#include <fcntl.h>
#include <linux/loop.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace ugfs2::fusefs {

MountSource::~MountSource() { DropLoopReference(); }

void MountSource::DropLoopReference() {
  if (loop_fd >= 0) ::close(loop_fd);
  loop_fd = -1;
}

namespace {

// Attaches `image` to a free loop device. LOOP_CTL_GET_FREE can hand the same device to two
// racing callers; the loser's LOOP_CONFIGURE fails with EBUSY and it asks again.
Result<MountSource> AttachLoop(const std::string& image, bool read_only) {
  int backing = ::open(image.c_str(), (read_only ? O_RDONLY : O_RDWR) | O_CLOEXEC);
  if (backing < 0) return Status::FromErrno(errno, "open " + image);
  int ctl = ::open("/dev/loop-control", O_RDWR | O_CLOEXEC);
  if (ctl < 0) {
    int e = errno;
    ::close(backing);
    return Status::FromErrno(e, "open /dev/loop-control");
  }
  Status last = Status::Busy("no free loop device");
  for (int attempt = 0; attempt < 32; ++attempt) {
    int idx = ::ioctl(ctl, LOOP_CTL_GET_FREE);
    if (idx < 0) {
      last = Status::FromErrno(errno, "LOOP_CTL_GET_FREE");
      break;
    }
    std::string path = "/dev/loop" + std::to_string(idx);
    int fd = ::open(path.c_str(), (read_only ? O_RDONLY : O_RDWR) | O_CLOEXEC);
    if (fd < 0) {
      last = Status::FromErrno(errno, "open " + path);
      if (errno == ENOENT || errno == ENXIO) continue;  // removed meanwhile
      break;
    }
    loop_config cfg = {};
    cfg.fd = static_cast<uint32_t>(backing);
    cfg.info.lo_flags = LO_FLAGS_AUTOCLEAR | (read_only ? LO_FLAGS_READ_ONLY : 0);
    std::string tag = "ugfs2:" + image;
    std::strncpy(reinterpret_cast<char*>(cfg.info.lo_file_name), tag.c_str(), LO_NAME_SIZE - 1);
    if (::ioctl(fd, LOOP_CONFIGURE, &cfg) == 0) {
      ::close(ctl);
      ::close(backing);  // the loop device holds its own reference to the file
      MountSource src;
      src.blkdev = path;
      src.loop_fd = fd;
      return src;
    }
    last = Status::FromErrno(errno, "LOOP_CONFIGURE " + path);
    ::close(fd);
    if (errno != EBUSY) break;
  }
  ::close(ctl);
  ::close(backing);
  return last;
}

}  // namespace

Result<MountSource> PrepareMountSource(const std::string& device, bool read_only,
                                       bool want_blkdev) {
  MountSource src;
  if (!want_blkdev || ::geteuid() != 0) return src;
  struct stat st;
  if (::stat(device.c_str(), &st) != 0) return Status::FromErrno(errno, "stat " + device);
  if (S_ISBLK(st.st_mode)) {
    src.blkdev = device;
    return src;
  }
  return AttachLoop(device, read_only);
}

}  // namespace ugfs2::fusefs
