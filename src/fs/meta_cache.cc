#include "fs/meta_cache.h"

namespace ugfs2::fs {

Result<BufferRef> MetaCache::Get(uint64_t blkno) {
  {
    std::lock_guard<std::mutex> l(mu_);
    auto it = map_.find(blkno);
    if (it != map_.end()) {
      TouchLocked(it->second.get());
      return it->second;
    }
  }
  auto b = std::make_shared<Buffer>(blkno, bsize_);
  RETURN_IF_ERROR(dev_->ReadAt(blkno * bsize_, b->bytes(), bsize_));
  std::lock_guard<std::mutex> l(mu_);
  reads_++;
  auto [it, inserted] = map_.emplace(blkno, b);
  if (!inserted) {  // raced with another reader: use theirs
    TouchLocked(it->second.get());
    return it->second;
  }
  TouchLocked(b.get());
  EvictLocked();
  return b;
}

BufferRef MetaCache::GetNew(uint64_t blkno) {
  std::lock_guard<std::mutex> l(mu_);
  auto it = map_.find(blkno);
  BufferRef b;
  if (it != map_.end()) {
    b = it->second;
    std::fill(b->data.begin(), b->data.end(), 0);
  } else {
    b = std::make_shared<Buffer>(blkno, bsize_);
    map_.emplace(blkno, b);
  }
  if (b->in_lru) {
    lru_.erase(b->lru);
    b->in_lru = false;
  }
  SetDirtyLocked(b.get());
  return b;
}

void MetaCache::MarkDirty(const BufferRef& b) {
  std::lock_guard<std::mutex> l(mu_);
  // The buffer may have been evicted (or replaced by a fresh read) since the caller got it: the
  // modified copy is the authoritative one.
  auto it = map_.find(b->blkno);
  if (it == map_.end()) {
    map_.emplace(b->blkno, b);
  } else if (it->second != b) {
    Buffer* old = it->second.get();
    if (old->in_lru) lru_.erase(old->lru);
    old->in_lru = false;
    SetCleanLocked(old);
    it->second = b;
  }
  if (b->in_lru) {
    lru_.erase(b->lru);
    b->in_lru = false;
  }
  SetDirtyLocked(b.get());
}

void MetaCache::Pin(const BufferRef& b) {
  std::lock_guard<std::mutex> l(mu_);
  b->pins++;
  if (b->in_lru) {
    lru_.erase(b->lru);
    b->in_lru = false;
  }
}

void MetaCache::Unpin(const BufferRef& b) {
  std::lock_guard<std::mutex> l(mu_);
  if (b->pins > 0) b->pins--;
  TouchLocked(b.get());
}

bool MetaCache::Forget(uint64_t blkno) {
  std::lock_guard<std::mutex> l(mu_);
  auto it = map_.find(blkno);
  if (it == map_.end()) return false;
  Buffer* b = it->second.get();
  bool was_dirty = b->dirty;
  SetCleanLocked(b);
  if (b->in_lru) lru_.erase(b->lru);
  b->in_lru = false;
  map_.erase(it);
  return was_dirty;
}

std::vector<DirtySnapshot> MetaCache::SnapshotDirty() {
  std::lock_guard<std::mutex> l(mu_);
  std::vector<DirtySnapshot> out;
  out.reserve(dirty_.size());
  for (Buffer* b : dirty_) {
    auto it = map_.find(b->blkno);
    if (it != map_.end() && it->second.get() == b) {
      out.push_back(DirtySnapshot{it->second, b->mods, b->data});
    }
  }
  return out;
}

size_t MetaCache::DirtyCount() const {
  std::lock_guard<std::mutex> l(mu_);
  return dirty_.size();
}

void MetaCache::MarkWritten(const DirtySnapshot& s) {
  std::lock_guard<std::mutex> l(mu_);
  Buffer* b = s.buf.get();
  if (b->dirty && b->mods == s.mods) {
    SetCleanLocked(b);
    auto it = map_.find(b->blkno);
    if (it != map_.end() && it->second.get() == b) TouchLocked(b);
  }
}

void MetaCache::DropClean() {
  std::lock_guard<std::mutex> l(mu_);
  for (auto it = map_.begin(); it != map_.end();) {
    Buffer* b = it->second.get();
    if (!b->dirty && b->pins == 0) {
      if (b->in_lru) lru_.erase(b->lru);
      b->in_lru = false;
      it = map_.erase(it);
    } else {
      ++it;
    }
  }
}

size_t MetaCache::size() const {
  std::lock_guard<std::mutex> l(mu_);
  return map_.size();
}

void MetaCache::SetDirtyLocked(Buffer* b) {
  b->dirty = true;
  b->mods++;
  dirty_.insert(b);
}

void MetaCache::SetCleanLocked(Buffer* b) {
  b->dirty = false;
  dirty_.erase(b);
}

void MetaCache::TouchLocked(Buffer* b) {
  if (b->in_lru) lru_.erase(b->lru);
  b->in_lru = false;
  if (b->dirty || b->pins > 0) return;
  lru_.push_front(b->blkno);
  b->lru = lru_.begin();
  b->in_lru = true;
}

void MetaCache::EvictLocked() {
  while (map_.size() > budget_blocks_ && !lru_.empty()) {
    uint64_t blk = lru_.back();
    lru_.pop_back();
    auto it = map_.find(blk);
    if (it != map_.end()) {
      it->second->in_lru = false;
      map_.erase(it);
    }
  }
}

}  // namespace ugfs2::fs
