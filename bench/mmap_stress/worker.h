// The side of a child process (a worker, or the helper that sets up, checks and cleans up a
// cell's files): progress reporting into its slot of the shared region, syscall wrappers that
// turn every failure into a report and an exit code, and the verification of what it read.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <string>

#include "common.h"

namespace ugfs2::mmap_stress {

struct WorkerContext {
  std::string scenario;  // "S1"
  int index = -1;        // the worker's index in its scenario, -1 for the helper
  std::string role;      // "worker 0", "setup", "check", "cleanup"
  std::string dir;       // the --dir this process works through
  std::string subdir;    // dir + "/mmap-stress.<pid>.<scenario>"
  uint64_t size = 0;     // --size
  uint64_t seed = 0;
  bool stall = false;   // --inject-stall: stop making progress a few steps after go
  bool spread = false;  // placement spread: another node's accesses revoke this node's pages
  SharedRegion* shared = nullptr;
  int slot = 0;
};

class Worker {
 public:
  // Installs the SIGBUS/SIGSEGV handler of this process.
  explicit Worker(const WorkerContext& ctx);
  Worker(const Worker&) = delete;
  Worker& operator=(const Worker&) = delete;

  const WorkerContext& ctx() const { return ctx_; }
  int index() const { return ctx_.index; }
  uint64_t size() const { return ctx_.size; }
  std::string Path(const std::string& name) const;
  uint64_t* words() const { return ctx_.shared->words(); }
  size_t nwords() const { return ctx_.shared->nwords(); }

  // What the process does now (the context of any failure, and what a hang report shows).
  void Doing(const char* fmt, ...) __attribute__((format(printf, 2, 3)));
  // One step done (the watchdog sees progress).
  void Step();
  void Ops(uint64_t n = 1) { slot_->ops.fetch_add(n, std::memory_order_relaxed); }
  void Iteration() { slot_->iterations.fetch_add(1, std::memory_order_relaxed); }
  void TornInFlight() { slot_->torn_in_flight.fetch_add(1, std::memory_order_relaxed); }
  void DroppedPin() { slot_->dropped_pins.fetch_add(1, std::memory_order_relaxed); }
  bool Stopped() const { return hdr_->stop.load(std::memory_order_acquire) != 0; }
  // Set up: tells the parent, then waits for every worker to be (or for stop: exits).
  void Ready();
  [[noreturn]] void Finish();
  [[noreturn]] void Fail(int code, const std::string& what);
  [[noreturn]] void SysFail(const char* call, int err);

  // Syscalls; a relative name is in the scenario's subdirectory. Every failure is fatal.
  int Open(const std::string& name, int flags, mode_t mode = 0);
  void Close(int fd);
  uint8_t* Map(int fd, size_t len, int prot);
  void Unmap(void* p, size_t len);
  // Whole transfers: a short count is continued (each syscall is an op), end of file is an error.
  void PreadFull(int fd, void* buf, size_t len, uint64_t off);
  void PwriteFull(int fd, const void* buf, size_t len, uint64_t off);
  void Msync(void* p, size_t len);
  void Fsync(int fd);

  // p[0, len) are the bytes at offset where_off of file where_file; they must be e's pattern.
  void Verify(const uint8_t* p, size_t len, Expect e, const char* where_file, uint64_t where_off);
  // Each kBlock block of p[0, len) must be a's or b's pattern (a range written by two workers
  // with the same data, or not yet written).
  void VerifyEither(const uint8_t* p, size_t len, Expect a, Expect b, const char* where_file,
                    uint64_t where_off);
  // The offset of the first kBlock block of p[0, len) that is neither a's nor b's pattern
  // (len: none).
  static size_t FirstBlockNeither(const uint8_t* p, size_t len, Expect a, Expect b);
  // A pread (direct, or through a FOPEN_DIRECT_IO open) of fd at `off` into `dst`, a shared
  // mapping of file where_file at where_off, whose bytes must then be `want`'s pattern. With
  // placement spread, a block may instead hold exactly `before` (what the mapping held before):
  // the kernel pinned the mapping's pages for the read, and a revoke of the mapped file (another
  // node took its glock) dropped them from the page cache meanwhile, so the read landed in pages
  // no longer in the file. gfs2 has the same hazard (its invalidate truncates pinned pages). Such
  // a read is counted (dropped_pins) and repeated; any other content is a failure.
  void PreadIntoMapping(int fd, uint8_t* dst, size_t len, uint64_t off, Expect want, Expect before,
                        const char* where_file, uint64_t where_off);
  // The report of a mismatch at byte i of p (for Fail).
  std::string MismatchReport(const uint8_t* p, size_t len, size_t i, Expect e,
                             const char* where_file, uint64_t where_off) const;

  // A multiple of kBlock in [lo, hi] (both multiples of kBlock).
  uint64_t RandomLength(uint64_t lo, uint64_t hi);
  // A multiple of kBlock in [0, max].
  uint64_t RandomOffset(uint64_t max);
  Rng& rng() { return rng_; }
  const std::string& prefix() const { return prefix_; }
  const char* current() const { return slot_->current; }

 private:
  WorkerContext ctx_;
  SharedHeader* hdr_;
  Slot* slot_;
  Rng rng_;
  std::string prefix_;  // "S1 worker 0 (pid 123, dir /mnt)"
  uint64_t steps_after_go_ = 0;
  bool went_ = false;
};

}  // namespace ugfs2::mmap_stress
