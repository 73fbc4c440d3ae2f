#include "fs/meta_cache.h"

namespace ugfs2::fs {

Result<BufferRef> MetaCache::ReadFresh(uint64_t blkno) {
  {
    std::lock_guard<std::mutex> l(mu_);
    auto it = map_.find(blkno);
    if (it != map_.end() && it->second->dirty) return it->second;  // our own newer image
  }
  auto b = std::make_shared<Buffer>(blkno, bsize_);
  RETURN_IF_ERROR(dev_->ReadAt(blkno * bsize_, b->bytes(), bsize_));
  std::lock_guard<std::mutex> l(mu_);
  reads_++;
  return b;
}

Result<BufferRef> MetaCache::Get(uint64_t blkno, uint64_t owner) {
  {
    std::lock_guard<std::mutex> l(mu_);
    auto it = map_.find(blkno);
    if (it != map_.end()) {
      if (it->second->owner == kNoOwner) SetOwnerLocked(it->second.get(), owner);
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
    if (it->second->owner == kNoOwner) SetOwnerLocked(it->second.get(), owner);
    TouchLocked(it->second.get());
    return it->second;
  }
  SetOwnerLocked(b.get(), owner);
  TouchLocked(b.get());
  EvictLocked();
  return b;
}

BufferRef MetaCache::GetNew(uint64_t blkno, uint64_t owner) {
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
  SetOwnerLocked(b.get(), owner);
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
    if (b->owner != kNoOwner) owned_[b->owner].insert(b->blkno);
  } else if (it->second != b) {
    Buffer* old = it->second.get();
    if (old->in_lru) lru_.erase(old->lru);
    old->in_lru = false;
    SetCleanLocked(old);
    UnindexLocked(old);
    it->second = b;
    if (b->owner != kNoOwner) owned_[b->owner].insert(b->blkno);
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
  bool was_dirty = it->second->dirty;
  EraseLocked(it);
  return was_dirty;
}

size_t MetaCache::DropOwned(uint64_t owner, size_t* kept) {
  std::lock_guard<std::mutex> l(mu_);
  size_t dropped = 0, left = 0;
  auto o = owned_.find(owner);
  if (o != owned_.end()) {
    std::vector<uint64_t> blknos(o->second.begin(), o->second.end());
    for (uint64_t blk : blknos) {
      auto it = map_.find(blk);
      if (it == map_.end()) continue;
      if (it->second->dirty || it->second->pins > 0) {
        left++;
        continue;
      }
      EraseLocked(it);
      dropped++;
    }
  }
  if (kept != nullptr) *kept = left;
  return dropped;
}

bool MetaCache::HasDirtyOwned(uint64_t owner) const {
  std::lock_guard<std::mutex> l(mu_);
  auto o = owned_.find(owner);
  if (o == owned_.end()) return false;
  for (uint64_t blk : o->second) {
    auto it = map_.find(blk);
    if (it != map_.end() && it->second->dirty) return true;
  }
  return false;
}

void MetaCache::SetOwnerLocked(Buffer* b, uint64_t owner) {
  if (b->owner == owner) return;
  UnindexLocked(b);
  b->owner = owner;
  if (owner != kNoOwner) owned_[owner].insert(b->blkno);
}

void MetaCache::UnindexLocked(Buffer* b) {
  if (b->owner == kNoOwner) return;
  auto o = owned_.find(b->owner);
  if (o != owned_.end()) {
    o->second.erase(b->blkno);
    if (o->second.empty()) owned_.erase(o);
  }
}

void MetaCache::EraseLocked(std::unordered_map<uint64_t, BufferRef>::iterator it) {
  Buffer* b = it->second.get();
  SetCleanLocked(b);
  if (b->in_lru) lru_.erase(b->lru);
  b->in_lru = false;
  UnindexLocked(b);
  map_.erase(it);
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
      auto next = std::next(it);
      EraseLocked(it);
      it = next;
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
      UnindexLocked(it->second.get());
      map_.erase(it);
    }
  }
}

}  // namespace ugfs2::fs
