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
#include <climits>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <sstream>

namespace ugfs2::fusefs {
namespace {

constexpr const char* kDir = "/run/ugfs2/ctl";

Result<sockaddr_un> Address(const std::string& path) {
  sockaddr_un a = {};
  a.sun_family = AF_UNIX;
  if (path.size() >= sizeof(a.sun_path)) return Status::Invalid("control path too long: " + path);
  std::memcpy(a.sun_path, path.c_str(), path.size() + 1);
  return a;
}

// mountinfo escapes space, tab, newline and backslash as \ooo.
std::string Unescape(std::string_view s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '\\' && i + 3 < s.size()) {
      int v = 0;
      bool ok = true;
      for (size_t k = 1; k <= 3; ++k) {
        char c = s[i + k];
        if (c < '0' || c > '7') ok = false;
        v = v * 8 + (c - '0');
      }
      if (ok) {
        out += static_cast<char>(v);
        i += 3;
        continue;
      }
    }
    out += s[i];
  }
  return out;
}

// Reads one line (up to '\n', EOF or `max` bytes) before `deadline`.
Result<std::string> ReadLine(int fd, std::chrono::steady_clock::time_point deadline,
                             size_t max = 4096) {
  std::string line;
  while (line.size() < max) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
                    deadline - std::chrono::steady_clock::now())
                    .count();
    if (left <= 0) return Status(Code::kTimedOut, "no answer from the ugfs2 daemon");
    pollfd p = {fd, POLLIN, 0};
    int r = ::poll(&p, 1, static_cast<int>(std::min<long long>(left, INT_MAX)));
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) return Status::FromErrno(errno, "poll");
    if (r == 0) continue;
    char c;
    ssize_t n = ::read(fd, &c, 1);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return Status::FromErrno(errno, "read");
    if (n == 0 || c == '\n') break;
    line += c;
  }
  return line;
}

void WriteAll(int fd, std::string_view s) {
  while (!s.empty()) {
    ssize_t n = ::send(fd, s.data(), s.size(), MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return;
    s.remove_prefix(static_cast<size_t>(n));
  }
}

}  // namespace

std::string ControlPath(dev_t dev) {
  return std::string(kDir) + "/" + std::to_string(major(dev)) + ":" + std::to_string(minor(dev)) +
         ".sock";
}

Result<dev_t> MountDevice(const std::string& mountpoint) {
  char real[PATH_MAX];
  if (::realpath(mountpoint.c_str(), real) == nullptr) {
    return Status::FromErrno(errno, "realpath " + mountpoint);
  }
  std::ifstream in("/proc/self/mountinfo");
  if (!in) return Status::IoError("cannot read /proc/self/mountinfo");
  std::string line;
  long best_id = -1;
  dev_t best = 0;
  while (std::getline(in, line)) {
    std::istringstream f(line);
    long id = 0, parent = 0;
    std::string majmin, root, mnt;
    if (!(f >> id >> parent >> majmin >> root >> mnt)) continue;
    if (Unescape(mnt) != real) continue;
    unsigned ma = 0, mi = 0;
    if (std::sscanf(majmin.c_str(), "%u:%u", &ma, &mi) != 2) continue;
    if (id > best_id) {  // the newest mount on that path is the visible one
      best_id = id;
      best = makedev(ma, mi);
    }
  }
  if (best_id < 0) return Status::NotFound(std::string(real) + " is not a mount point");
  return best;
}

namespace {

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
    if (!SameVolume(want, Unescape(source))) continue;
    return ServingMount{Unescape(mnt), super_opts == "ro" || super_opts.starts_with("ro,")};
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
    if (Unescape(mnt) == mountpoint && id > best_id) {
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
  ::mkdir("/run/ugfs2", 0755);
  if (::mkdir(kDir, 0700) != 0 && errno != EEXIST) {
    return Status::FromErrno(errno, std::string("mkdir ") + kDir);
  }
  ASSIGN_OR_RETURN(sockaddr_un addr, Address(path));
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
    // A client that connects and says nothing cannot stall the server for long.
    auto line = ReadLine(c, std::chrono::steady_clock::now() + std::chrono::seconds(5));
    if (line.ok()) WriteAll(c, handler_(*line) + "\n");
    ::close(c);
  }
}

Result<std::string> ControlRequest(const std::string& path, std::string_view request,
                                   int timeout_ms) {
  ASSIGN_OR_RETURN(sockaddr_un addr, Address(path));
  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return Status::FromErrno(errno, "socket");
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    int e = errno;
    ::close(fd);
    return Status(Code::kNotConnected,
                  "no ugfs2 daemon answers at " + path + ": " + std::strerror(e));
  }
  WriteAll(fd, std::string(request) + "\n");
  auto reply =
      ReadLine(fd, std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms));
  ::close(fd);
  return reply;
}

}  // namespace ugfs2::fusefs
