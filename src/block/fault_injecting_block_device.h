// FaultInjectingBlockDevice wraps another device and simulates what a power cut or a dying disk
// does to it (cf. leveldb's fault_injection_test Env):
//  - FailWritesAfter(n): the n-th next write and every later one fail with EIO.
//  - Crash(seed, tear): the device "loses power". Every write not yet covered by a Flush() is
//    dropped, kept, or (with tear) partially kept at 512-byte sector granularity, chosen at
//    random from `seed`; the result is applied to the wrapped device. Afterwards the device
//    rejects all I/O (the crashed instance of the filesystem must be thrown away); call Revive()
//    to use it again (e.g. to mount and replay).
// Thread-safe.
#ifndef UGFS2_SRC_BLOCK_FAULT_INJECTING_BLOCK_DEVICE_H_
#define UGFS2_SRC_BLOCK_FAULT_INJECTING_BLOCK_DEVICE_H_

#include <cstdint>
#include <memory>
#include <mutex>
#include <vector>

#include "block/block_device.h"

namespace ugfs2 {

class FaultInjectingBlockDevice final : public BlockDevice {
 public:
  explicit FaultInjectingBlockDevice(BlockDevice* base) : base_(base) {}

  Status ReadAt(uint64_t off, void* buf, size_t len) override;
  Status WriteAt(uint64_t off, const void* buf, size_t len) override;
  Status Flush() override;
  uint64_t Size() const override { return base_->Size(); }
  std::string Describe() const override { return "fault(" + base_->Describe() + ")"; }

  // The next `n` writes succeed, later ones fail with EIO (n = 0: the very next one fails).
  void FailWritesAfter(uint64_t n);
  // Stop failing writes.
  void ClearFailures();
  // Simulates a power cut (see above). Returns the number of unsynced writes that were lost or
  // torn.
  size_t Crash(uint64_t seed, bool tear);
  // Accept I/O again after Crash().
  void Revive();
  uint64_t writes_seen() const;
  uint64_t unsynced_writes() const;

 private:
  struct Pending {
    uint64_t off;
    std::vector<uint8_t> before;  // device content before this write
    std::vector<uint8_t> data;    // what was written
  };
  BlockDevice* base_;
  mutable std::mutex mu_;
  std::vector<Pending> pending_;  // writes since the last successful Flush, in order
  uint64_t writes_seen_ = 0;
  int64_t fail_after_ = -1;  // -1: never
  bool crashed_ = false;
};

}  // namespace ugfs2

#endif  // UGFS2_SRC_BLOCK_FAULT_INJECTING_BLOCK_DEVICE_H_
