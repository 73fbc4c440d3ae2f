#include "block/write_gate.h"

#include <thread>
#include <utility>

namespace ugfs2 {

void WriteGate::Close(const std::string& reason) {
  {
    std::lock_guard<std::mutex> l(mu_);
    if (!closed_.load()) reason_ = reason;
  }
  closed_ = true;
}

std::string WriteGate::reason() const {
  std::lock_guard<std::mutex> l(mu_);
  return reason_;
}

void WriteGate::SetLease(std::function<bool()> valid, std::chrono::milliseconds lease_wait) {
  lease_ = std::move(valid);
  lease_wait_ = lease_wait;
}

Status WriteGate::Check() {
  if (!closed_.load() && (!lease_ || lease_())) return Status::Ok();
  if (!closed_.load()) {
    // A late heartbeat: wait for the renewal (or the fence), bounded.
    lease_waits_++;
    const auto deadline = std::chrono::steady_clock::now() + lease_wait_;
    while (!closed_.load() && !lease_() && std::chrono::steady_clock::now() < deadline) {
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
    if (!closed_.load() && lease_()) return Status::Ok();
  }
  refused_++;
  const std::string why = closed_.load() ? reason() : "its membership lease ran out";
  return Status(Code::kFenced, "this node may not write the shared disk: " + why);
}

namespace {

class GatedBlockDevice final : public BlockDevice {
 public:
  GatedBlockDevice(std::unique_ptr<BlockDevice> dev, std::shared_ptr<WriteGate> gate)
      : dev_(std::move(dev)), gate_(std::move(gate)) {}
  // The counters are this wrapper's own (stats() is not virtual): what the core asked for.
  Status ReadAt(uint64_t off, void* buf, size_t len) override {
    RETURN_IF_ERROR(dev_->ReadAt(off, buf, len));
    stats_.reads++;
    stats_.bytes_read += len;
    return Status::Ok();
  }
  Status WriteAt(uint64_t off, const void* buf, size_t len) override {
    RETURN_IF_ERROR(gate_->Check());
    RETURN_IF_ERROR(dev_->WriteAt(off, buf, len));
    stats_.writes++;
    stats_.bytes_written += len;
    return Status::Ok();
  }
  Status Flush() override {
    RETURN_IF_ERROR(gate_->Check());
    RETURN_IF_ERROR(dev_->Flush());
    stats_.flushes++;
    return Status::Ok();
  }
  uint64_t Size() const override { return dev_->Size(); }
  std::string Describe() const override { return dev_->Describe(); }
  void ReleaseClaim() override { dev_->ReleaseClaim(); }
  Status ClaimJournal(uint32_t jid) override { return dev_->ClaimJournal(jid); }

 private:
  std::unique_ptr<BlockDevice> dev_;
  std::shared_ptr<WriteGate> gate_;
};

}  // namespace

std::unique_ptr<BlockDevice> GateWrites(std::unique_ptr<BlockDevice> dev,
                                        std::shared_ptr<WriteGate> gate) {
  return std::make_unique<GatedBlockDevice>(std::move(dev), std::move(gate));
}

}  // namespace ugfs2
