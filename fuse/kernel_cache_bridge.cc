#include "kernel_cache_bridge.h"

#include <limits>

namespace ugfs2::fusefs {

void KernelCacheBridge::Attach(CacheInvalidator* invalidator) {
  std::lock_guard<std::mutex> l(mu_);
  target_ = invalidator;
}

void KernelCacheBridge::Detach() {
  std::lock_guard<std::mutex> l(mu_);  // waits for a forwarding call in progress
  target_ = nullptr;
}

void KernelCacheBridge::InvalidateData(InodeNo ino, uint64_t off, uint64_t len) {
  constexpr uint64_t kMax = std::numeric_limits<int64_t>::max();
  std::lock_guard<std::mutex> l(mu_);
  if (target_ == nullptr) {
    dropped_.fetch_add(1, std::memory_order_relaxed);
    return;
  }
  data_calls_.fetch_add(1, std::memory_order_relaxed);
  if (off > kMax) {
    // No page can be cached beyond the largest file offset: only the attributes remain.
    target_->PostInvalidateInode(ino, -1, 0);
    return;
  }
  // A range whose end (off + len) does not fit the kernel's loff_t is "to the end of the file"
  // (len 0).
  if (len > kMax - off) len = 0;
  target_->PostInvalidateInode(ino, static_cast<int64_t>(off), static_cast<int64_t>(len));
}

void KernelCacheBridge::InvalidateAttr(InodeNo ino) {
  std::lock_guard<std::mutex> l(mu_);
  if (target_ == nullptr) {
    dropped_.fetch_add(1, std::memory_order_relaxed);
    return;
  }
  attr_calls_.fetch_add(1, std::memory_order_relaxed);
  target_->PostInvalidateInode(ino, -1, 0);  // off < 0: attributes only, never waits on pages
}

void KernelCacheBridge::InvalidateEntry(InodeNo parent, std::string_view name) {
  std::lock_guard<std::mutex> l(mu_);
  if (target_ == nullptr) {
    dropped_.fetch_add(1, std::memory_order_relaxed);
    return;
  }
  entry_calls_.fetch_add(1, std::memory_order_relaxed);
  target_->PostInvalidateEntry(parent, name);
}

}  // namespace ugfs2::fusefs
