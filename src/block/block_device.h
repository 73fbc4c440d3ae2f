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
  // Gives up the device claim (see DeviceClaim) once nothing more will be written, so that the
  // next mount need not wait for this object (or its process) to go away.
  virtual void ReleaseClaim() {}
  // A cluster member's claim of journal `jid` on this host (DeviceClaim::kCluster): two daemons
  // of one host never write the same journal, whatever their lock managers say. kBusy if
  // another holds it. A no-op for other claims.
  virtual Status ClaimJournal(uint32_t jid) {
    (void)jid;
    return Status::Ok();
  }
  DeviceStats& stats() { return stats_; }

 protected:
  DeviceStats stats_;
};

// How a daemon claims the device against other ugfs2 daemons on this host (kernel opens too).
enum class DeviceClaim {
  kNone,       // no claim (tests, tools that only read a copy)
  kShared,     // read-only mounts: any number of readers, no writer
  kExclusive,  // the one writer: no other claim of either kind
  // A node of a cluster mount (lock_dlm): shared with the other nodes on this host (network
  // namespaces of the local cluster), exclusive against single-node and read-only claims; each
  // member also claims its journal (BlockDevice::ClaimJournal).
  kCluster,
};

struct FileDeviceOptions {
  bool read_only = false;
  bool direct = false;  // O_DIRECT: bypass the host page cache (shared disks across machines)
  DeviceClaim claim = DeviceClaim::kNone;
};

// Opens a regular image file or a block device. With a claim, an open file description lock
// (F_OFD_SETLK, F_WRLCK or F_RDLCK over the whole file) is taken on the opened file before the
// call returns and held until the device is destroyed, so it dies with the process; a block
// device is also probed with O_EXCL, which fails while the kernel (a mounted filesystem, a
// fuseblk mount of another daemon, mkfs) holds it exclusively. A conflicting claim fails with
// kBusy and a message naming the holder's pid and command line when it can be found.
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
