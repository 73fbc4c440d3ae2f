// RequestStats: per-operation FUSE request counters (and byte counts), lock-free.
//
// Every handler bumps its opcode's counter on entry. Format() renders one "name value" pair per
// line (all ops, zeros included, so a benchmark can diff two dumps); WriteFile() replaces a file
// atomically (temp file + rename). The daemon dumps on SIGUSR1 to /run/ugfs2/<pid>.stats and, with
// -o stats_file=PATH, at exit.
// Thread safety: Count/AddBytes from any thread; Format sees each counter atomically (not a
// snapshot across counters).
#ifndef UGFS2_FUSE_REQUEST_STATS_H_
#define UGFS2_FUSE_REQUEST_STATS_H_

#include <atomic>
#include <cstdint>
#include <string>
#include <string_view>

#include "common/status.h"

namespace ugfs2::fusefs {

enum class Op : int {
  kInit,
  kLookup,
  kForget,
  kForgetMulti,
  kGetattr,
  kSetattr,
  kReadlink,
  kMknod,
  kMkdir,
  kUnlink,
  kRmdir,
  kSymlink,
  kRename,
  kLink,
  kOpen,
  kRead,
  kWrite,
  kFlush,
  kRelease,
  kFsync,
  kOpendir,
  kReaddir,
  kReaddirplus,
  kReleasedir,
  kFsyncdir,
  kStatfs,
  kSetxattr,
  kGetxattr,
  kListxattr,
  kRemovexattr,
  kAccess,
  kCreate,
  kFallocate,
  kLseek,
  kCopyFileRange,
  kDestroy,
  kCount,  // number of ops; not an op
};

const char* OpName(Op op);

class RequestStats {
 public:
  void Count(Op op) { ops_[static_cast<int>(op)].fetch_add(1, std::memory_order_relaxed); }
  void AddReadBytes(uint64_t n) { read_bytes_.fetch_add(n, std::memory_order_relaxed); }
  void AddWriteBytes(uint64_t n) { write_bytes_.fetch_add(n, std::memory_order_relaxed); }
  void CountError() { errors_.fetch_add(1, std::memory_order_relaxed); }

  uint64_t Get(Op op) const { return ops_[static_cast<int>(op)].load(std::memory_order_relaxed); }
  uint64_t read_bytes() const { return read_bytes_.load(std::memory_order_relaxed); }
  uint64_t write_bytes() const { return write_bytes_.load(std::memory_order_relaxed); }
  uint64_t errors() const { return errors_.load(std::memory_order_relaxed); }

  // "lookup 12\n...read_bytes N\nwrite_bytes N\nerror_replies N\n" plus `extra` appended.
  std::string Format(std::string_view extra = {}) const;

 private:
  std::atomic<uint64_t> ops_[static_cast<int>(Op::kCount)] = {};
  std::atomic<uint64_t> read_bytes_{0};
  std::atomic<uint64_t> write_bytes_{0};
  std::atomic<uint64_t> errors_{0};
};

// Writes `text` to `path` atomically (PATH.tmp.PID then rename), creating the parent directory.
Status WriteFileAtomically(const std::string& path, std::string_view text);

}  // namespace ugfs2::fusefs

#endif  // UGFS2_FUSE_REQUEST_STATS_H_
