// BlockDevice: the only way the core touches storage. Byte-addressed reads and writes (callers
// use whole filesystem blocks except for the superblock probe), plus Flush (durability barrier,
// fdatasync). Implementations: FileBlockDevice (image file or block device, optional O_DIRECT),
// MemoryBlockDevice (tests, demo), FaultInjectingBlockDevice (crash tests; wraps another device).
// Thread-safety: every implementation is safe for concurrent calls; writes to overlapping ranges
// from different threads are the caller's problem (the core never does that).
#ifndef UGFS2_SRC_BLOCK_BLOCK_DEVICE_H_
#define UGFS2_SRC_BLOCK_BLOCK_DEVICE_H_

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "common/status.h"

namespace ugfs2 {

struct DeviceStats {
  std::atomic<uint64_t> reads{0};
  std::atomic<uint64_t> writes{0};
  std::atomic<uint64_t> flushes{0};
  std::atomic<uint64_t> bytes_read{0};
  std::atomic<uint64_t> bytes_written{0};
};

class BlockDevice {
 public:
  virtual ~BlockDevice() = default;
  // Reads exactly len bytes at byte offset off. Reading past Size() is an error.
  virtual Status ReadAt(uint64_t off, void* buf, size_t len) = 0;
  // Writes exactly len bytes at byte offset off. Not durable until Flush() returns OK.
  virtual Status WriteAt(uint64_t off, const void* buf, size_t len) = 0;
  // Makes every completed write durable.
  virtual Status Flush() = 0;
  // Size in bytes.
  virtual uint64_t Size() const = 0;
  virtual std::string Describe() const = 0;
  DeviceStats& stats() { return stats_; }

 protected:
  DeviceStats stats_;
};

struct FileDeviceOptions {
  bool read_only = false;
  bool direct = false;  // O_DIRECT: bypass the host page cache (shared disks across machines)
};

// Opens a regular image file or a block device.
Result<std::unique_ptr<BlockDevice>> OpenFileBlockDevice(const std::string& path,
                                                         const FileDeviceOptions& opts);

// A zero-filled in-memory device of `size` bytes.
std::unique_ptr<BlockDevice> NewMemoryBlockDevice(uint64_t size);
// An in-memory device that takes over `contents`.
std::unique_ptr<BlockDevice> NewMemoryBlockDevice(std::vector<uint8_t> contents);
// An in-memory device holding a copy of `src`'s current contents.
Result<std::unique_ptr<BlockDevice>> CopyToMemory(BlockDevice& src);

}  // namespace ugfs2

#endif  // UGFS2_SRC_BLOCK_BLOCK_DEVICE_H_
