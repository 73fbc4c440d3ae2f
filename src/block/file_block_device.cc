#include <dirent.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>

#include "block/block_device.h"

namespace ugfs2 {
namespace {

constexpr size_t kDirectAlign = 4096;
// Cluster claims: the shared range below, one byte per journal above (OFD locks may lie past
// the end of the file).
constexpr uint64_t kJournalClaimBase = uint64_t{1} << 60;

class FileBlockDevice final : public BlockDevice {
 public:
  FileBlockDevice(int fd, std::string path, uint64_t size, bool direct)
      : fd_(fd), path_(std::move(path)), size_(size), direct_(direct) {}
  ~FileBlockDevice() override { ::close(fd_); }
  FileBlockDevice(const FileBlockDevice&) = delete;
  FileBlockDevice& operator=(const FileBlockDevice&) = delete;

  Status ReadAt(uint64_t off, void* buf, size_t len) override {
    if (off + len > size_) return Status::IoError("read past end of device " + path_);
    stats_.reads++;
    stats_.bytes_read += len;
    if (direct_ && !Aligned(off, buf, len)) return Bounced(off, buf, len, false);
    return Loop(off, buf, len, false);
  }

  Status WriteAt(uint64_t off, const void* buf, size_t len) override {
    if (off + len > size_) return Status::IoError("write past end of device " + path_);
    stats_.writes++;
    stats_.bytes_written += len;
    if (direct_ && !Aligned(off, buf, len)) {
      return Bounced(off, const_cast<void*>(buf), len, true);
    }
    return Loop(off, const_cast<void*>(buf), len, true);
  }

  Status Flush() override {
    stats_.flushes++;
    if (::fdatasync(fd_) != 0) return Status::FromErrno(errno, "fdatasync " + path_);
    return Status::Ok();
  }

  uint64_t Size() const override { return size_; }
  std::string Describe() const override { return path_; }
  void ReleaseClaim() override {
    struct flock lk = {};
    lk.l_type = F_UNLCK;
    lk.l_whence = SEEK_SET;
    (void)::fcntl(fd_, F_OFD_SETLK, &lk);
  }
  Status ClaimJournal(uint32_t jid) override {
    if (claim_ != DeviceClaim::kCluster) return Status::Ok();
    struct flock lk = {};
    lk.l_type = F_WRLCK;
    lk.l_whence = SEEK_SET;
    lk.l_start = static_cast<off_t>(kJournalClaimBase + jid);
    lk.l_len = 1;
    if (::fcntl(fd_, F_OFD_SETLK, &lk) == 0) return Status::Ok();
    const int e = errno;
    if (e != EAGAIN && e != EACCES) return Status::FromErrno(e, "lock journal claim " + path_);
    return Status::Busy("journal " + std::to_string(jid) + " of " + path_ +
                        " is already used by another ugfs2 daemon on this host");
  }
  void set_claim(DeviceClaim c) { claim_ = c; }

 private:
  DeviceClaim claim_ = DeviceClaim::kNone;

  static bool Aligned(uint64_t off, const void* buf, size_t len) {
    return off % 512 == 0 && len % 512 == 0 && reinterpret_cast<uintptr_t>(buf) % 512 == 0;
  }

  Status Loop(uint64_t off, void* buf, size_t len, bool write) {
    auto* p = static_cast<uint8_t*>(buf);
    while (len > 0) {
      ssize_t n = write ? ::pwrite(fd_, p, len, static_cast<off_t>(off))
                        : ::pread(fd_, p, len, static_cast<off_t>(off));
      if (n < 0) {
        if (errno == EINTR) continue;
        return Status::FromErrno(errno, std::string(write ? "pwrite " : "pread ") + path_);
      }
      if (n == 0) return Status::IoError("short I/O on " + path_);
      p += n;
      off += static_cast<uint64_t>(n);
      len -= static_cast<size_t>(n);
    }
    return Status::Ok();
  }

  // O_DIRECT with an unaligned request: read-modify-write through an aligned bounce buffer.
  Status Bounced(uint64_t off, void* buf, size_t len, bool write) {
    const uint64_t align = (off % 512 == 0 && len % 512 == 0) ? 512 : kDirectAlign;
    uint64_t start = off / align * align;
    uint64_t end = (off + len + align - 1) / align * align;
    if (end > size_) end = size_;
    size_t blen = static_cast<size_t>(end - start);
    // One aligned bounce buffer per thread, kept between calls: allocating (and faulting in) a
    // fresh megabyte per request costs more than the I/O.
    thread_local std::unique_ptr<void, decltype(&std::free)> bounce(nullptr, &std::free);
    thread_local size_t bounce_len = 0;
    if (bounce_len < blen) {
      size_t want = (blen + kDirectAlign - 1) / kDirectAlign * kDirectAlign;
      void* fresh = std::aligned_alloc(kDirectAlign, want);
      if (fresh == nullptr) return Status::NoSpace("bounce buffer");
      bounce.reset(fresh);
      bounce_len = want;
    }
    void* raw = bounce.get();
    // Only a partially covered sector needs the old contents (read-modify-write); a write whose
    // offset and length are aligned just needs an aligned copy of the caller's buffer.
    bool whole = write && start == off && end == off + len;
    Status st = whole ? Status::Ok() : Loop(start, raw, blen, false);
    if (st.ok()) {
      auto* b = static_cast<uint8_t*>(raw) + (off - start);
      if (write) {
        std::memcpy(b, buf, len);
        st = Loop(start, raw, blen, true);
      } else {
        std::memcpy(buf, b, len);
      }
    }
    return st;
  }

  int fd_;
  std::string path_;
  uint64_t size_;
  bool direct_;
};

// The process holding an OFD lock on the file behind `st`: "pid N (cmdline)", or "" if none is
// found. /proc/locks shows OFD locks with pid -1, so every process's open files are matched by
// device and inode and their fdinfo checked for an OFD lock. Only runs when a claim failed.
std::string FindLockHolder(const struct stat& target) {
  DIR* proc = ::opendir("/proc");
  if (proc == nullptr) return "";
  std::string found;
  while (dirent* d = ::readdir(proc)) {
    char* end = nullptr;
    long pid = std::strtol(d->d_name, &end, 10);
    if (*end != '\0' || pid <= 0 || pid == ::getpid()) continue;
    std::string base = std::string("/proc/") + d->d_name;
    DIR* fds = ::opendir((base + "/fd").c_str());
    if (fds == nullptr) continue;
    while (dirent* f = ::readdir(fds)) {
      if (f->d_name[0] == '.') continue;
      struct stat fst;
      if (::stat((base + "/fd/" + f->d_name).c_str(), &fst) != 0) continue;
      if (fst.st_dev != target.st_dev || fst.st_ino != target.st_ino ||
          fst.st_rdev != target.st_rdev) {
        continue;
      }
      std::ifstream info(base + "/fdinfo/" + f->d_name);
      std::stringstream text;
      text << info.rdbuf();
      if (text.str().find("OFDLCK") == std::string::npos) continue;
      std::ifstream cmd(base + "/cmdline");
      std::string line;
      std::getline(cmd, line);
      for (char& c : line) {
        if (c == '\0') c = ' ';
      }
      while (!line.empty() && line.back() == ' ') line.pop_back();
      found = "pid " + std::to_string(pid) + " (" + line + ")";
      break;
    }
    ::closedir(fds);
    if (!found.empty()) break;
  }
  ::closedir(proc);
  return found;
}

Status Claim(int fd, const std::string& path, const struct stat& st, DeviceClaim claim) {
  if (claim == DeviceClaim::kNone) return Status::Ok();
  if (S_ISBLK(st.st_mode)) {
    // The kernel's exclusive openers (a mounted filesystem, a fuseblk mount) refuse O_EXCL.
    int probe = ::open(path.c_str(), O_RDONLY | O_EXCL | O_CLOEXEC);
    if (probe < 0) {
      if (errno == EBUSY) {
        return Status::Busy(path +
                            " is in use by the kernel (mounted, or claimed by another "
                            "program)");
      }
      return Status::FromErrno(errno, "open O_EXCL " + path);
    }
    ::close(probe);
  }
  struct flock lk = {};
  lk.l_type = claim == DeviceClaim::kExclusive ? F_WRLCK : F_RDLCK;
  lk.l_whence = SEEK_SET;
  lk.l_start = 0;
  lk.l_len = 0;  // to the end, whatever the size
  // Cluster members share [0, kJournalClaimBase) and claim one byte each above it (per journal),
  // so they exclude single-node and read-only claims (whole file) but not each other.
  if (claim == DeviceClaim::kCluster) lk.l_len = static_cast<off_t>(kJournalClaimBase);
  if (::fcntl(fd, F_OFD_SETLK, &lk) == 0) return Status::Ok();
  int e = errno;
  if (e != EAGAIN && e != EACCES) return Status::FromErrno(e, "lock " + path);
  std::string holder = FindLockHolder(st);
  return Status::Busy(path + " is already mounted by " +
                      (holder.empty() ? std::string("another ugfs2 daemon") : holder) +
                      (claim == DeviceClaim::kExclusive
                           ? "; one volume has one writer per host (unmount it first)"
                       : claim == DeviceClaim::kCluster
                           ? " outside the cluster (single-node or read-only): unmount it first"
                           : "; a read-only mount cannot share it with a writer"));
}

}  // namespace

Result<std::unique_ptr<BlockDevice>> OpenFileBlockDevice(const std::string& path,
                                                         const FileDeviceOptions& opts) {
  int flags = (opts.read_only ? O_RDONLY : O_RDWR) | O_CLOEXEC;
  if (opts.direct) flags |= O_DIRECT;
  int fd = ::open(path.c_str(), flags);
  if (fd < 0) return Status::FromErrno(errno, "open " + path);
  struct stat st;
  if (::fstat(fd, &st) != 0) {
    int e = errno;
    ::close(fd);
    return Status::FromErrno(e, "stat " + path);
  }
  uint64_t size = 0;
  if (S_ISBLK(st.st_mode)) {
    if (::ioctl(fd, BLKGETSIZE64, &size) != 0) {
      int e = errno;
      ::close(fd);
      return Status::FromErrno(e, "BLKGETSIZE64 " + path);
    }
  } else if (S_ISREG(st.st_mode)) {
    size = static_cast<uint64_t>(st.st_size);
  } else {
    ::close(fd);
    return Status::Invalid(path + " is neither a regular file nor a block device");
  }
  if (Status c = Claim(fd, path, st, opts.claim); !c.ok()) {
    ::close(fd);
    return c;
  }
  auto dev = std::make_unique<FileBlockDevice>(fd, path, size, opts.direct);
  dev->set_claim(opts.claim);
  return std::unique_ptr<BlockDevice>(std::move(dev));
}

}  // namespace ugfs2
