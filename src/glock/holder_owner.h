// HolderOwner: whom a glock holder works for, for glock dumps and the wait-for graph (gfs2
// records the same in gh_owner_pid and gh_ip): the process a request is served for, and the
// request. The thread serving a request declares it with OwnerScope; GlockRunner::Acquire records
// it with each holder that thread queues. It never changes a locking decision.
//
// Thread safety: the current owner is per thread (thread_local, like the kernel's `current`): an
// OwnerScope affects only holders its own thread acquires. Scopes nest; the innermost wins.
#ifndef UGFS2_SRC_GLOCK_HOLDER_OWNER_H_
#define UGFS2_SRC_GLOCK_HOLDER_OWNER_H_

#include <string>
#include <utility>

namespace ugfs2::glock {

struct HolderOwner {
  int pid = 0;        // the process served; 0: the daemon itself (or kernel writeback)
  std::string label;  // the request, e.g. "READ off=0 len=4096"
};

class OwnerScope {
 public:
  explicit OwnerScope(HolderOwner owner) : owner_(std::move(owner)), outer_(current_) {
    current_ = &owner_;
  }
  ~OwnerScope() { current_ = outer_; }
  OwnerScope(const OwnerScope&) = delete;
  OwnerScope& operator=(const OwnerScope&) = delete;
  // The innermost scope's owner on this thread, or null.
  static const HolderOwner* Current() { return current_; }

 private:
  HolderOwner owner_;
  const HolderOwner* outer_;
  static thread_local const HolderOwner* current_;
};

}  // namespace ugfs2::glock

#endif  // UGFS2_SRC_GLOCK_HOLDER_OWNER_H_
