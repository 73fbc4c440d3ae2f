#include "control_client.h"

#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/sysmacros.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <optional>
#include <sstream>
#include <thread>

namespace ugfs2::fusefs {
namespace {

constexpr const char* kDir = "/run/ugfs2/ctl";
// Longest result sent as "ok TEXT"; longer ones (and any with a newline) go as "data LEN".
constexpr size_t kMaxInlineResult = 1024;

// Milliseconds left until `deadline` (<= 0: passed), clamped to what poll(2) takes.
int MillisLeft(ControlDeadline deadline) {
  auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
                  deadline - std::chrono::steady_clock::now())
                  .count();
  return static_cast<int>(std::clamp<long long>(left, 0, INT_MAX));
}

// Waits for `events` on `fd` until `deadline`: Ok when ready, kTimedOut when the deadline passed.
Status WaitFor(int fd, short events, ControlDeadline deadline) {
  while (true) {
    int left = MillisLeft(deadline);
    if (left <= 0) return Status(Code::kTimedOut, "no answer from the ugfs2 daemon");
    pollfd p = {fd, events, 0};
    int r = ::poll(&p, 1, left);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) return Status::FromErrno(errno, "poll");
    if (r > 0) return Status::Ok();
  }
}

// A Status code from its CodeName, for errors that crossed the socket.
std::optional<Code> CodeFromName(std::string_view name) {
  for (int c = static_cast<int>(Code::kOk) + 1; c <= static_cast<int>(Code::kOther); ++c) {
    if (name == CodeName(static_cast<Code>(c))) return static_cast<Code>(c);
  }
  return std::nullopt;
}

Status DecodeError(std::string_view text) {
  size_t colon = text.find(": ");
  std::string_view name = text.substr(0, colon);
  if (auto code = CodeFromName(name)) {
    return Status(*code, colon == std::string_view::npos ? "" : text.substr(colon + 2));
  }
  return Status::IoError(text);  // a daemon that sends no code
}

// The device number of the newest mountinfo entry whose mount point is `path`.
std::optional<dev_t> FindMount(const std::string& path) {
  std::ifstream in("/proc/self/mountinfo");
  if (!in) return std::nullopt;
  std::string line;
  long best_id = -1;
  dev_t best = 0;
  while (std::getline(in, line)) {
    std::istringstream f(line);
    long id = 0, parent = 0;
    std::string majmin, root, mnt;
    if (!(f >> id >> parent >> majmin >> root >> mnt)) continue;
    if (UnescapeMountInfo(mnt) != path) continue;
    unsigned ma = 0, mi = 0;
    if (std::sscanf(majmin.c_str(), "%u:%u", &ma, &mi) != 2) continue;
    if (id > best_id) {  // the newest mount on that path is the visible one
      best_id = id;
      best = makedev(ma, mi);
    }
  }
  if (best_id < 0) return std::nullopt;
  return best;
}

}  // namespace

std::string UnescapeMountInfo(std::string_view s) {
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

std::string ControlPath(dev_t dev) {
  return std::string(kDir) + "/" + std::to_string(major(dev)) + ":" + std::to_string(minor(dev)) +
         ".sock";
}

Result<dev_t> MountDevice(const std::string& mountpoint) {
  std::error_code ec;
  std::string lexical = std::filesystem::absolute(mountpoint, ec).lexically_normal().string();
  while (lexical.size() > 1 && lexical.back() == '/') lexical.pop_back();
  if (!ec) {
    if (auto dev = FindMount(lexical)) return *dev;
  }
  char real[PATH_MAX];
  if (::realpath(mountpoint.c_str(), real) == nullptr) {
    return Status::FromErrno(errno, "realpath " + mountpoint);
  }
  if (auto dev = FindMount(real)) return *dev;
  return Status::NotFound(std::string(real) + " is not a mount point");
}

Result<sockaddr_un> ControlAddress(const std::string& path) {
  sockaddr_un a = {};
  a.sun_family = AF_UNIX;
  if (path.size() >= sizeof(a.sun_path)) return Status::Invalid("control path too long: " + path);
  std::memcpy(a.sun_path, path.c_str(), path.size() + 1);
  return a;
}

std::string EncodeControlReply(const Result<std::string>& result) {
  if (!result.ok()) {
    std::string line = "error: " + result.status().ToString();
    std::replace(line.begin(), line.end(), '\n', ' ');
    return line + "\n";
  }
  const std::string& text = *result;
  if (text.empty()) return "ok\n";
  if (text.size() <= kMaxInlineResult && text.find('\n') == std::string::npos) {
    return "ok " + text + "\n";
  }
  return "data " + std::to_string(text.size()) + "\n" + text;
}

Result<std::string> ReadControlLine(int fd, ControlDeadline deadline, size_t max) {
  std::string line;
  while (true) {
    RETURN_IF_ERROR(WaitFor(fd, POLLIN, deadline));
    char c;
    ssize_t n = ::read(fd, &c, 1);
    if (n < 0 && (errno == EINTR || errno == EAGAIN)) continue;
    if (n < 0) return Status::FromErrno(errno, "read");
    if (n == 0) {
      if (line.empty()) return Status(Code::kNotConnected, "the connection closed");
      return line;
    }
    if (c == '\n') return line;
    if (line.size() >= max) return Status(Code::kRange, "control line longer than allowed");
    line += c;
  }
}

Result<std::string> ReadControlReply(int fd, ControlDeadline deadline) {
  auto header = ReadControlLine(fd, deadline);
  if (!header.ok()) {
    if (header.status().code() == Code::kNotConnected) {
      return Status(Code::kNotConnected, "the ugfs2 daemon closed the connection without a reply");
    }
    return header.status();
  }
  const std::string& h = *header;
  if (h == "ok") return std::string();
  if (h.starts_with("ok ")) return h.substr(3);
  if (h.starts_with("error: ")) return DecodeError(std::string_view(h).substr(7));
  if (h.starts_with("data ")) {
    char* end = nullptr;
    unsigned long long len = std::strtoull(h.c_str() + 5, &end, 10);
    if (end == h.c_str() + 5 || *end != '\0' || len > kControlMaxData) {
      return Status::IoError("bad reply header from the ugfs2 daemon: " + h);
    }
    std::string data(static_cast<size_t>(len), '\0');
    size_t got = 0;
    while (got < data.size()) {
      RETURN_IF_ERROR(WaitFor(fd, POLLIN, deadline));
      ssize_t n = ::read(fd, data.data() + got, data.size() - got);
      if (n < 0 && (errno == EINTR || errno == EAGAIN)) continue;
      if (n < 0) return Status::FromErrno(errno, "read");
      if (n == 0) {
        return Status::IoError("reply cut short: " + std::to_string(got) + " of " +
                               std::to_string(data.size()) + " bytes");
      }
      got += static_cast<size_t>(n);
    }
    return data;
  }
  return Status::IoError("unexpected reply from the ugfs2 daemon: " + h.substr(0, 200));
}

Status WriteControlBytes(int fd, std::string_view data, ControlDeadline deadline) {
  while (!data.empty()) {
    ssize_t n = ::send(fd, data.data(), data.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      RETURN_IF_ERROR(WaitFor(fd, POLLOUT, deadline));
      continue;
    }
    if (n < 0) return Status::FromErrno(errno, "send");
    data.remove_prefix(static_cast<size_t>(n));
  }
  return Status::Ok();
}

Result<std::string> ControlRequest(const std::string& path, std::string_view request,
                                   int timeout_ms) {
  if (request.size() > kControlMaxLine || request.find('\n') != std::string_view::npos) {
    return Status::Invalid("a control request is one line of at most 4 KiB");
  }
  const ControlDeadline deadline =
      std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  ASSIGN_OR_RETURN(sockaddr_un addr, ControlAddress(path));
  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0) return Status::FromErrno(errno, "socket");
  // Non-blocking: a daemon whose listen backlog is full (its control thread busy) makes connect
  // fail with EAGAIN instead of blocking past the deadline; retry until then.
  while (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    int e = errno;
    if (e == EINTR) continue;
    if (e == EAGAIN && MillisLeft(deadline) > 0) {
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
      continue;
    }
    ::close(fd);
    if (e == EAGAIN) return Status(Code::kTimedOut, "the ugfs2 daemon at " + path + " is busy");
    return Status(Code::kNotConnected,
                  "no ugfs2 daemon answers at " + path + ": " + std::strerror(e));
  }
  Status sent = WriteControlBytes(fd, std::string(request) + "\n", deadline);
  Result<std::string> reply =
      sent.ok() ? ReadControlReply(fd, deadline) : Result<std::string>(sent);
  ::close(fd);
  return reply;
}

}  // namespace ugfs2::fusefs
