#include <cstring>
#include <mutex>
#include <shared_mutex>
#include <vector>

#include "block/block_device.h"

namespace ugfs2 {
namespace {

class MemoryBlockDevice final : public BlockDevice {
 public:
  explicit MemoryBlockDevice(uint64_t size) : data_(size, 0) {}
  explicit MemoryBlockDevice(std::vector<uint8_t> contents) : data_(std::move(contents)) {}

  Status ReadAt(uint64_t off, void* buf, size_t len) override {
    std::shared_lock l(mu_);
    if (off + len > data_.size()) return Status::IoError("read past end of memory device");
    stats_.reads++;
    stats_.bytes_read += len;
    std::memcpy(buf, data_.data() + off, len);
    return Status::Ok();
  }
  Status WriteAt(uint64_t off, const void* buf, size_t len) override {
    std::unique_lock l(mu_);
    if (off + len > data_.size()) return Status::IoError("write past end of memory device");
    stats_.writes++;
    stats_.bytes_written += len;
    std::memcpy(data_.data() + off, buf, len);
    return Status::Ok();
  }
  Status Flush() override {
    stats_.flushes++;
    return Status::Ok();
  }
  uint64_t Size() const override { return data_.size(); }
  std::string Describe() const override { return "memory"; }

 private:
  std::shared_mutex mu_;
  std::vector<uint8_t> data_;
};

}  // namespace

std::unique_ptr<BlockDevice> NewMemoryBlockDevice(uint64_t size) {
  return std::make_unique<MemoryBlockDevice>(size);
}

std::unique_ptr<BlockDevice> NewMemoryBlockDevice(std::vector<uint8_t> contents) {
  return std::make_unique<MemoryBlockDevice>(std::move(contents));
}

Result<std::unique_ptr<BlockDevice>> CopyToMemory(BlockDevice& src) {
  auto dev = NewMemoryBlockDevice(src.Size());
  std::vector<uint8_t> buf(1 << 20);
  for (uint64_t off = 0; off < src.Size(); off += buf.size()) {
    size_t n = static_cast<size_t>(std::min<uint64_t>(buf.size(), src.Size() - off));
    RETURN_IF_ERROR(src.ReadAt(off, buf.data(), n));
    RETURN_IF_ERROR(dev->WriteAt(off, buf.data(), n));
  }
  return dev;
}

}  // namespace ugfs2
