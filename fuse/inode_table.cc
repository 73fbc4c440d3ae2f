#include "inode_table.h"

#include <string>

namespace ugfs2::fusefs {

uint64_t InodeTable::AddLookup(InodeNo ino, uint64_t generation) {
  Shard& s = ShardFor(ino);
  std::lock_guard<std::mutex> l(s.mu);
  Entry& e = s.map[ino];
  e.generation = generation;
  return ++e.nlookup;
}

uint64_t InodeTable::Forget(InodeNo ino, uint64_t n) {
  Shard& s = ShardFor(ino);
  std::lock_guard<std::mutex> l(s.mu);
  auto it = s.map.find(ino);
  if (it == s.map.end()) {
    if (n > 0) ++s.underflows;
    return 0;
  }
  if (it->second.nlookup <= n) {
    if (it->second.nlookup < n) ++s.underflows;
    s.map.erase(it);
    return 0;
  }
  it->second.nlookup -= n;
  return it->second.nlookup;
}

uint64_t InodeTable::LookupCount(InodeNo ino) const {
  const Shard& s = ShardFor(ino);
  std::lock_guard<std::mutex> l(s.mu);
  auto it = s.map.find(ino);
  return it == s.map.end() ? 0 : it->second.nlookup;
}

uint64_t InodeTable::Generation(InodeNo ino) const {
  const Shard& s = ShardFor(ino);
  std::lock_guard<std::mutex> l(s.mu);
  auto it = s.map.find(ino);
  return it == s.map.end() ? 0 : it->second.generation;
}

Result<InodeNo> InodeTable::Resolve(KernelIno kino) const {
  if (kino == kKernelRootIno) return root_;
  InodeNo ino = FromKernel(kino);
  const Shard& s = ShardFor(ino);
  std::lock_guard<std::mutex> l(s.mu);
  auto it = s.map.find(ino);
  if (it != s.map.end() && !SameGeneration(kino, it->second.generation)) {
    return Status(Code::kStale, "node id " + std::to_string(kino) + ": dinode " +
                                    std::to_string(ino) + " has generation " +
                                    std::to_string(it->second.generation) + " now");
  }
  return ino;
}

std::optional<KernelIno> InodeTable::KnownKernelIno(InodeNo ino) const {
  if (ino == root_) return kKernelRootIno;
  const Shard& s = ShardFor(ino);
  std::lock_guard<std::mutex> l(s.mu);
  auto it = s.map.find(ino);
  if (it == s.map.end()) return std::nullopt;
  return ToKernel(ino, it->second.generation);
}

size_t InodeTable::Size() const {
  size_t n = 0;
  for (const Shard& s : shards_) {
    std::lock_guard<std::mutex> l(s.mu);
    n += s.map.size();
  }
  return n;
}

uint64_t InodeTable::underflows() const {
  uint64_t n = 0;
  for (const Shard& s : shards_) {
    std::lock_guard<std::mutex> l(s.mu);
    n += s.underflows;
  }
  return n;
}

}  // namespace ugfs2::fusefs
