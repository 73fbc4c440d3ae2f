#include "block/fault_injecting_block_device.h"

#include <random>

namespace ugfs2 {

Status FaultInjectingBlockDevice::ReadAt(uint64_t off, void* buf, size_t len) {
  {
    std::lock_guard<std::mutex> l(mu_);
    if (crashed_) return Status::IoError("device crashed (fault injection)");
  }
  return base_->ReadAt(off, buf, len);
}

Status FaultInjectingBlockDevice::WriteAt(uint64_t off, const void* buf, size_t len) {
  std::lock_guard<std::mutex> l(mu_);
  if (crashed_) return Status::IoError("device crashed (fault injection)");
  writes_seen_++;
  if (fail_after_ >= 0) {
    if (fail_after_ == 0) return Status::IoError("injected write failure");
    fail_after_--;
  }
  Pending p;
  p.off = off;
  p.before.resize(len);
  RETURN_IF_ERROR(base_->ReadAt(off, p.before.data(), len));
  const auto* b = static_cast<const uint8_t*>(buf);
  p.data.assign(b, b + len);
  RETURN_IF_ERROR(base_->WriteAt(off, buf, len));
  pending_.push_back(std::move(p));
  stats_.writes++;
  return Status::Ok();
}

Status FaultInjectingBlockDevice::Flush() {
  std::lock_guard<std::mutex> l(mu_);
  if (crashed_) return Status::IoError("device crashed (fault injection)");
  if (fail_after_ == 0) return Status::IoError("injected flush failure");
  RETURN_IF_ERROR(base_->Flush());
  pending_.clear();
  stats_.flushes++;
  return Status::Ok();
}

void FaultInjectingBlockDevice::FailWritesAfter(uint64_t n) {
  std::lock_guard<std::mutex> l(mu_);
  fail_after_ = static_cast<int64_t>(n);
}

void FaultInjectingBlockDevice::ClearFailures() {
  std::lock_guard<std::mutex> l(mu_);
  fail_after_ = -1;
}

size_t FaultInjectingBlockDevice::Crash(uint64_t seed, bool tear) {
  std::lock_guard<std::mutex> l(mu_);
  std::mt19937_64 rng(seed);
  // Restore the last durable state, then replay a random subset of the unsynced writes in order.
  for (auto it = pending_.rbegin(); it != pending_.rend(); ++it) {
    (void)base_->WriteAt(it->off, it->before.data(), it->before.size());
  }
  size_t lost = 0;
  for (const auto& p : pending_) {
    uint64_t r = rng() % 4;
    if (r == 0) {  // dropped
      lost++;
      continue;
    }
    if (tear && r == 1 && p.data.size() > 512) {  // torn: only a prefix of sectors landed
      size_t sectors = p.data.size() / 512;
      size_t keep = static_cast<size_t>(rng() % sectors);
      (void)base_->WriteAt(p.off, p.data.data(), keep * 512);
      lost++;
      continue;
    }
    (void)base_->WriteAt(p.off, p.data.data(), p.data.size());
  }
  pending_.clear();
  crashed_ = true;
  return lost;
}

void FaultInjectingBlockDevice::Revive() {
  std::lock_guard<std::mutex> l(mu_);
  crashed_ = false;
  fail_after_ = -1;
}

uint64_t FaultInjectingBlockDevice::writes_seen() const {
  std::lock_guard<std::mutex> l(mu_);
  return writes_seen_;
}

uint64_t FaultInjectingBlockDevice::unsynced_writes() const {
  std::lock_guard<std::mutex> l(mu_);
  return pending_.size();
}

}  // namespace ugfs2
