#include "control.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <fstream>
#include <map>
#include <sstream>

#include "common/log.h"

namespace ugfs2::fusefs {
namespace {

constexpr const char* kDir = "/run/ugfs2/ctl";
// A client gets this long to send its request line, and to take the reply.
constexpr auto kClientDeadline = std::chrono::seconds(5);
constexpr auto kReplyDeadline = std::chrono::seconds(30);

// (st_dev, st_ino) of a file, or of the file behind a loop device (its backing file).
bool SameVolume(const struct stat& want, const std::string& source) {
  struct stat st;
  if (::stat(source.c_str(), &st) != 0) return false;
  if (S_ISBLK(want.st_mode)) return S_ISBLK(st.st_mode) && st.st_rdev == want.st_rdev;
  if (S_ISREG(st.st_mode)) return st.st_dev == want.st_dev && st.st_ino == want.st_ino;
  if (!S_ISBLK(st.st_mode)) return false;
  std::ifstream bf("/sys/dev/block/" + std::to_string(major(st.st_rdev)) + ":" +
                   std::to_string(minor(st.st_rdev)) + "/loop/backing_file");
  std::string backing;
  if (!bf || !std::getline(bf, backing)) return false;
  struct stat b;
  return ::stat(backing.c_str(), &b) == 0 && b.st_dev == want.st_dev && b.st_ino == want.st_ino;
}

}  // namespace

Result<ServingMount> FindServingMount(const std::string& device) {
  struct stat want;
  if (::stat(device.c_str(), &want) != 0) return Status::FromErrno(errno, "stat " + device);
  std::ifstream in("/proc/self/mountinfo");
  if (!in) return Status::IoError("cannot read /proc/self/mountinfo");
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream f(line);
    std::string id, parent, majmin, root, mnt;
    if (!(f >> id >> parent >> majmin >> root >> mnt) || root != "/") continue;
    size_t sep = line.find(" - ");
    if (sep == std::string::npos) continue;
    std::istringstream tail(line.substr(sep + 3));
    std::string type, source, super_opts;
    if (!(tail >> type >> source >> super_opts)) continue;
    if (type != "fuseblk.ugfs2" && type != "fuse.ugfs2") continue;
    if (!SameVolume(want, UnescapeMountInfo(source))) continue;
    return ServingMount{UnescapeMountInfo(mnt),
                        super_opts == "ro" || super_opts.starts_with("ro,")};
  }
  return Status::NotFound(device + " is not mounted here");
}

Result<bool> ParentMountShared(const std::string& mountpoint) {
  std::ifstream in("/proc/self/mountinfo");
  if (!in) return Status::IoError("cannot read /proc/self/mountinfo");
  std::map<long, bool> shared;  // mount id -> has a shared peer group
  long best_id = -1, parent_of_best = -1;
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream f(line);
    long id = 0, parent = 0;
    std::string majmin, root, mnt, opts, field;
    if (!(f >> id >> parent >> majmin >> root >> mnt >> opts)) continue;
    bool is_shared = false;
    while (f >> field && field != "-") is_shared |= field.starts_with("shared:");
    shared[id] = is_shared;
    if (UnescapeMountInfo(mnt) == mountpoint && id > best_id) {
      best_id = id;
      parent_of_best = parent;
    }
  }
  if (best_id < 0) return Status::NotFound(mountpoint + " is not a mount point");
  auto it = shared.find(parent_of_best);
  return it != shared.end() && it->second;
}

Result<bool> SuperblockReadOnly(dev_t dev) {
  std::ifstream in("/proc/self/mountinfo");
  if (!in) return Status::IoError("cannot read /proc/self/mountinfo");
  std::string line;
  const std::string want = std::to_string(major(dev)) + ":" + std::to_string(minor(dev));
  while (std::getline(in, line)) {
    std::istringstream f(line);
    std::string id, parent, majmin;
    if (!(f >> id >> parent >> majmin) || majmin != want) continue;
    size_t sep = line.find(" - ");
    if (sep == std::string::npos) continue;
    std::istringstream tail(line.substr(sep + 3));
    std::string type, source, super_opts;
    if (!(tail >> type >> source >> super_opts)) continue;
    return super_opts == "ro" || super_opts.starts_with("ro,");
  }
  return Status::NotFound("no mount of device " + want);
}

MountWatcher::MountWatcher(int fd, dev_t dev, bool read_only, OnChange on_change)
    : fd_(fd), dev_(dev), read_only_(read_only), on_change_(std::move(on_change)) {
  if (::pipe2(stop_pipe_, O_CLOEXEC) != 0) stop_pipe_[0] = stop_pipe_[1] = -1;
  thread_ = std::thread([this] { Run(); });
}

MountWatcher::~MountWatcher() {
  if (stop_pipe_[1] >= 0) {
    char c = 0;
    (void)!::write(stop_pipe_[1], &c, 1);
  }
  thread_.join();
  ::close(fd_);
  for (int p : stop_pipe_) {
    if (p >= 0) ::close(p);
  }
}

Result<std::unique_ptr<MountWatcher>> MountWatcher::Start(dev_t dev, bool read_only,
                                                          OnChange on_change) {
  int fd = ::open("/proc/self/mountinfo", O_RDONLY | O_CLOEXEC);
  if (fd < 0) return Status::FromErrno(errno, "open /proc/self/mountinfo");
  return std::unique_ptr<MountWatcher>(new MountWatcher(fd, dev, read_only, std::move(on_change)));
}

void MountWatcher::Refresh() {
  std::lock_guard<std::mutex> l(mu_);
  auto ro = SuperblockReadOnly(dev_);
  if (!ro.ok() || *ro == read_only_) return;
  read_only_ = *ro;
  on_change_(read_only_);
}

void MountWatcher::Run() {
  while (true) {
    // POLLPRI: the mount table changed since this fd's last poll (each poll re-arms).
    pollfd p[2] = {{fd_, POLLPRI, 0}, {stop_pipe_[0], POLLIN, 0}};
    int r = ::poll(p, stop_pipe_[0] >= 0 ? 2 : 1, -1);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0 || (p[1].revents & POLLIN)) return;
    Refresh();
  }
}

ControlServer::ControlServer(int fd, std::string path, Handler handler)
    : fd_(fd), path_(std::move(path)), handler_(std::move(handler)) {
  if (::pipe2(stop_pipe_, O_CLOEXEC) != 0) stop_pipe_[0] = stop_pipe_[1] = -1;
  thread_ = std::thread([this] { Run(); });
}

ControlServer::~ControlServer() {
  if (stop_pipe_[1] >= 0) {
    char c = 0;
    (void)!::write(stop_pipe_[1], &c, 1);
  }
  thread_.join();
  ::unlink(path_.c_str());
  ::close(fd_);
  for (int p : stop_pipe_) {
    if (p >= 0) ::close(p);
  }
}

Result<std::unique_ptr<ControlServer>> ControlServer::Start(const std::string& path,
                                                            Handler handler) {
  if (path.starts_with(std::string(kDir) + "/")) {
    ::mkdir("/run/ugfs2", 0755);
    if (::mkdir(kDir, 0700) != 0 && errno != EEXIST) {
      return Status::FromErrno(errno, std::string("mkdir ") + kDir);
    }
  }
  ASSIGN_OR_RETURN(sockaddr_un addr, ControlAddress(path));
  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return Status::FromErrno(errno, "socket");
  // A socket left by a daemon that was killed: nobody can own this mount's device number now.
  ::unlink(path.c_str());
  if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 || ::listen(fd, 4) != 0) {
    int e = errno;
    ::close(fd);
    return Status::FromErrno(e, "bind " + path);
  }
  ::chmod(path.c_str(), 0600);
  return std::unique_ptr<ControlServer>(new ControlServer(fd, path, std::move(handler)));
}

void ControlServer::Run() {
  while (true) {
    pollfd p[2] = {{fd_, POLLIN, 0}, {stop_pipe_[0], POLLIN, 0}};
    int r = ::poll(p, stop_pipe_[0] >= 0 ? 2 : 1, -1);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0 || (p[1].revents & POLLIN)) return;
    if (!(p[0].revents & POLLIN)) continue;
    int c = ::accept4(fd_, nullptr, nullptr, SOCK_CLOEXEC);
    if (c < 0) continue;
    // A client that connects and says nothing, or does not read a long reply, cannot stall the
    // server for long.
    auto line = ReadControlLine(c, std::chrono::steady_clock::now() + kClientDeadline);
    if (line.ok()) {
      Status st = WriteControlBytes(c, EncodeControlReply(handler_(*line)),
                                    std::chrono::steady_clock::now() + kReplyDeadline);
      if (!st.ok()) LOG_DEBUG("control reply: " << st.ToString());
    }
    ::close(c);
  }
}

}  // namespace ugfs2::fusefs
