#include "request_stats.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>

namespace ugfs2::fusefs {
namespace {

constexpr const char* kOpNames[] = {
    "init",     "lookup", "forget",    "forget_multi", "getattr",         "setattr",
    "readlink", "mknod",  "mkdir",     "unlink",       "rmdir",           "symlink",
    "rename",   "link",   "open",      "read",         "write",           "flush",
    "release",  "fsync",  "opendir",   "readdir",      "readdirplus",     "releasedir",
    "fsyncdir", "statfs", "setxattr",  "getxattr",     "listxattr",       "removexattr",
    "access",   "create", "fallocate", "lseek",        "copy_file_range", "destroy",
};
static_assert(sizeof(kOpNames) / sizeof(kOpNames[0]) == static_cast<size_t>(Op::kCount));

Status MkdirP(const std::string& dir) {
  if (dir.empty()) return Status::Ok();
  for (size_t pos = 1; pos <= dir.size(); ++pos) {
    if (pos == dir.size() || dir[pos] == '/') {
      std::string prefix = dir.substr(0, pos);
      if (mkdir(prefix.c_str(), 0755) != 0 && errno != EEXIST) {
        return Status::FromErrno(errno, "mkdir " + prefix);
      }
    }
  }
  return Status::Ok();
}

}  // namespace

const char* OpName(Op op) {
  int i = static_cast<int>(op);
  return (i >= 0 && i < static_cast<int>(Op::kCount)) ? kOpNames[i] : "?";
}

std::string RequestStats::Format(std::string_view extra) const {
  std::string out;
  char line[96];
  for (int i = 0; i < static_cast<int>(Op::kCount); ++i) {
    std::snprintf(line, sizeof(line), "%s %llu\n", kOpNames[i],
                  static_cast<unsigned long long>(ops_[i].load(std::memory_order_relaxed)));
    out += line;
  }
  std::snprintf(line, sizeof(line), "read_bytes %llu\nwrite_bytes %llu\nerror_replies %llu\n",
                static_cast<unsigned long long>(read_bytes()),
                static_cast<unsigned long long>(write_bytes()),
                static_cast<unsigned long long>(errors()));
  out += line;
  out += extra;
  return out;
}

Status WriteFileAtomically(const std::string& path, std::string_view text) {
  if (auto slash = path.rfind('/'); slash != std::string::npos && slash > 0) {
    RETURN_IF_ERROR(MkdirP(path.substr(0, slash)));
  }
  std::string tmp = path + ".tmp." + std::to_string(getpid());
  int fd = open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return Status::FromErrno(errno, "open " + tmp);
  size_t done = 0;
  while (done < text.size()) {
    ssize_t n = write(fd, text.data() + done, text.size() - done);
    if (n < 0) {
      if (errno == EINTR) continue;
      Status st = Status::FromErrno(errno, "write " + tmp);
      close(fd);
      unlink(tmp.c_str());
      return st;
    }
    done += static_cast<size_t>(n);
  }
  close(fd);
  if (rename(tmp.c_str(), path.c_str()) != 0) {
    Status st = Status::FromErrno(errno, "rename " + tmp);
    unlink(tmp.c_str());
    return st;
  }
  return Status::Ok();
}

}  // namespace ugfs2::fusefs
