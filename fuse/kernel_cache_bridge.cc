#include "kernel_cache_bridge.h"

#include <algorithm>
#include <limits>
#include <thread>

namespace ugfs2::fusefs {

void KernelCacheBridge::Attach(CacheInvalidator* invalidator, Revoker* revoker) {
  std::lock_guard<std::mutex> l(mu_);
  target_ = invalidator;
  revoker_ = revoker;
}

void KernelCacheBridge::Detach() {
  std::lock_guard<std::mutex> l(mu_);  // waits for a forwarding call in progress
  target_ = nullptr;
  revoker_ = nullptr;
}

void KernelCacheBridge::Revoke(InodeNo ino, std::function<void()> done) {
  Revoker* r = nullptr;
  {
    std::lock_guard<std::mutex> l(mu_);
    r = closing_.load() ? nullptr : revoker_;
  }
  // Revoker::Revoke only queues. It is called outside mu_ (done may run at once, and pump the
  // glock layer, whose hooks call back in here). The revoker outlives the attachment: main
  // shuts it down after Detach.
  if (r == nullptr) return done();
  r->Revoke(ino, std::move(done));
}

void KernelCacheBridge::Thaw(InodeNo ino) {
  Revoker* r = nullptr;
  {
    std::lock_guard<std::mutex> l(mu_);
    r = revoker_;
  }
  if (r != nullptr) r->Thaw(ino);
}

void KernelCacheBridge::DropAttrsNow(InodeNo ino) {
  CacheInvalidator* t = nullptr;
  {
    std::lock_guard<std::mutex> l(mu_);
    t = target_;
    if (t == nullptr) dropped_.fetch_add(1, std::memory_order_relaxed);
  }
  if (t == nullptr) return;
  attr_calls_.fetch_add(1, std::memory_order_relaxed);
  if (closing_.load()) return t->PostInvalidateInode(ino, -1, 0);
  // Attributes only: takes no page or inode lock in the kernel, so it cannot wait for a request
  // (fuse/README.md, N6), whatever thread runs this hook.
  Status st = t->InvalidateInodeNow(ino, -1, 0);
  if (!st.ok()) t->PostInvalidateInode(ino, -1, 0);
}

void KernelCacheBridge::NameRequestBegin(InodeNo dir) {
  names_[SlotOf(dir)].in_flight.fetch_add(1);
}

void KernelCacheBridge::NameRequestEnd(InodeNo dir) {
  NameSlot& s = names_[SlotOf(dir)];
  s.last_ns.store(std::chrono::duration_cast<std::chrono::nanoseconds>(
                      std::chrono::steady_clock::now().time_since_epoch())
                      .count());
  s.in_flight.fetch_sub(1);
}

void KernelCacheBridge::ExpireNames(InodeNo dir) {
  using Clock = std::chrono::steady_clock;
  if (!expire_names_ || closing_.load()) return;
  NameSlot& s = names_[SlotOf(dir)];
  const Clock::time_point bound = Clock::now() + kNameExpiryBound;
  bool waited = false;
  for (;;) {
    const Clock::time_point last{std::chrono::nanoseconds(s.last_ns.load())};
    const Clock::time_point now = Clock::now();
    // A request still in flight was either granted before the demote began (it answers within
    // microseconds) or waits for the glock (it will see the new state): wait for the first kind,
    // bounded so the second kind cannot hold the demote.
    const bool busy = s.in_flight.load() > 0;
    if ((!busy && now >= last + kNameExpiry) || now >= bound) break;
    waited = true;
    // A bounded wait of the protocol's timing argument (docs/coherence.md), not test
    // synchronisation: the kernel's name cache expires with its clock tick.
    std::this_thread::sleep_for(
        busy ? std::chrono::milliseconds(1)
             : std::min<Clock::duration>(last + kNameExpiry - now, bound - now));
  }
  if (waited) name_waits_.fetch_add(1, std::memory_order_relaxed);
}

void KernelCacheBridge::InvalidateData(InodeNo ino, uint64_t off, uint64_t len) {
  constexpr uint64_t kMax = std::numeric_limits<int64_t>::max();
  std::lock_guard<std::mutex> l(mu_);
  if (target_ == nullptr) {
    dropped_.fetch_add(1, std::memory_order_relaxed);
    return;
  }
  data_calls_.fetch_add(1, std::memory_order_relaxed);
  if (keep_pages_) return target_->PostInvalidateInode(ino, -1, 0);
  if (revoker_ != nullptr && off == 0 && len == 0) {
    // After a glock's demote: the revoke dropped the pages before the glock went; pages cached
    // now were filled under the glock taken again. Only the attributes, once more.
    target_->PostInvalidateInode(ino, -1, 0);
    return;
  }
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
