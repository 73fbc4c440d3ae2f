#include "cache_invalidator.h"

#include <cerrno>
#include <cstdint>
#include <optional>

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
  // The node id of the generation the kernel was last given (a stale node id of an older
  // generation of the same address gets nothing: its dinode is gone).
  std::optional<KernelIno> kino = inodes_->KnownKernelIno(item.ino);
  if (!kino) {
    std::lock_guard<std::mutex> l(mu_);
    ++skipped_;
    return Status::Ok();
  }
  int rc = item.entry ? backend_->InvalEntry(*kino, item.name)
                      : backend_->InvalInode(*kino, item.off, item.len);
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

CacheInvalidator::Key CacheInvalidator::KeyOf(const Item& item) {
  return Key(item.entry, item.ino, item.off, item.len, item.name);
}

bool CacheInvalidator::CoveredLocked(const Item& item) const {
  if (queued_.count(KeyOf(item)) != 0) return true;
  if (item.entry) return false;
  // A whole-file data invalidation of the inode drops everything an inode item can.
  if (queued_.count(Key(false, item.ino, 0, 0, std::string())) != 0) return true;
  if (item.off >= 0) return false;
  // Attributes only: any data invalidation (off >= 0) of the inode drops them too.
  auto it = queued_.lower_bound(Key(false, item.ino, 0, INT64_MIN, std::string()));
  return it != queued_.end() && !std::get<0>(*it) && std::get<1>(*it) == item.ino;
}

void CacheInvalidator::Post(Item item) {
  {
    std::lock_guard<std::mutex> l(mu_);
    if (CoveredLocked(item)) {
      // The covering item is queued, so it is issued after this call: nothing is lost, and a
      // Drain after this call waits for it.
      ++coalesced_;
      return;
    }
    ++posted_;
    queued_.insert(KeyOf(item));
    queue_.push_back(std::move(item));
  }
  cv_.notify_all();
}

void CacheInvalidator::PostInvalidateInode(InodeNo ino, int64_t off, int64_t len) {
  Post(Item{false, ino, off, len, {}});
}

void CacheInvalidator::PostInvalidateEntry(InodeNo parent, std::string_view name) {
  Post(Item{true, parent, 0, 0, std::string(name)});
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

uint64_t CacheInvalidator::coalesced() const {
  std::lock_guard<std::mutex> l(mu_);
  return coalesced_;
}

void CacheInvalidator::Run() {
  std::unique_lock<std::mutex> l(mu_);
  while (true) {
    cv_.wait(l, [&] { return stop_ || !queue_.empty(); });
    if (queue_.empty()) return;  // stop_ and drained
    Item item = std::move(queue_.front());
    queue_.pop_front();
    // From here on a new post of the same notification is queued again: this one may already
    // be reading the kernel's state it is meant to drop.
    queued_.erase(KeyOf(item));
    l.unlock();
    (void)Issue(item);  // failures are not actionable here; the next access refreshes anyway
    l.lock();
    ++done_;
    cv_.notify_all();
  }
}

}  // namespace ugfs2::fusefs
