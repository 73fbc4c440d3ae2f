#include "cache_invalidator.h"

#include <cerrno>

namespace ugfs2::fusefs {
namespace {
thread_local InodeNo t_io_ino = 0;
}  // namespace

IoScope::IoScope(InodeNo ino) { t_io_ino = ino; }
IoScope::~IoScope() { t_io_ino = 0; }
InodeNo IoScope::Current() { return t_io_ino; }

CacheInvalidator::CacheInvalidator(NotifyBackend* backend, const InodeTable* inodes)
    : backend_(backend), inodes_(inodes), worker_([this] { Run(); }) {}

CacheInvalidator::~CacheInvalidator() {
  {
    std::lock_guard<std::mutex> l(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  worker_.join();
}

Status CacheInvalidator::Issue(const Item& item) {
  InodeNo target = item.ino;
  if (!inodes_->Known(target) && target != inodes_->root()) {
    std::lock_guard<std::mutex> l(mu_);
    ++skipped_;
    return Status::Ok();
  }
  KernelIno kino = inodes_->ToKernel(target);
  int rc = item.entry ? backend_->InvalEntry(kino, item.name)
                      : backend_->InvalInode(kino, item.off, item.len);
  {
    std::lock_guard<std::mutex> l(mu_);
    ++issued_;
  }
  if (rc == 0 || rc == -ENOENT) return Status::Ok();
  return Status::FromErrno(-rc, item.entry ? "notify_inval_entry" : "notify_inval_inode");
}

Status CacheInvalidator::InvalidateInodeNow(InodeNo ino, int64_t off, int64_t len) {
  if (off >= 0 && IoScope::Current() == ino) {
    return Status(Code::kDeadlock,
                  "data invalidation inside a READ/WRITE handler of the same inode would "
                  "deadlock on the kernel page lock; use PostInvalidateInode");
  }
  return Issue(Item{false, ino, off, len, {}});
}

Status CacheInvalidator::InvalidateEntryNow(InodeNo parent, std::string_view name) {
  return Issue(Item{true, parent, 0, 0, std::string(name)});
}

void CacheInvalidator::PostInvalidateInode(InodeNo ino, int64_t off, int64_t len) {
  {
    std::lock_guard<std::mutex> l(mu_);
    queue_.push_back(Item{false, ino, off, len, {}});
    ++posted_;
  }
  cv_.notify_all();
}

void CacheInvalidator::PostInvalidateEntry(InodeNo parent, std::string_view name) {
  {
    std::lock_guard<std::mutex> l(mu_);
    queue_.push_back(Item{true, parent, 0, 0, std::string(name)});
    ++posted_;
  }
  cv_.notify_all();
}

void CacheInvalidator::Drain() {
  std::unique_lock<std::mutex> l(mu_);
  uint64_t target = posted_;
  cv_.wait(l, [&] { return done_ >= target; });
}

uint64_t CacheInvalidator::issued() const {
  std::lock_guard<std::mutex> l(mu_);
  return issued_;
}

uint64_t CacheInvalidator::skipped() const {
  std::lock_guard<std::mutex> l(mu_);
  return skipped_;
}

void CacheInvalidator::Run() {
  std::unique_lock<std::mutex> l(mu_);
  while (true) {
    cv_.wait(l, [&] { return stop_ || !queue_.empty(); });
    if (queue_.empty()) return;  // stop_ and drained
    Item item = std::move(queue_.front());
    queue_.pop_front();
    l.unlock();
    (void)Issue(item);  // failures are not actionable here; the next access refreshes anyway
    l.lock();
    ++done_;
    cv_.notify_all();
  }
}

}  // namespace ugfs2::fusefs
