// FuseNotifyBackend: NotifyBackend over a live libfuse session (fuse_lowlevel_notify_inval_*).
// Thread safety: libfuse notify calls are thread-safe; they block as described in fuse/README.md
// ("Notifications that can deadlock").
#ifndef UGFS2_FUSE_FUSE_NOTIFY_BACKEND_H_
#define UGFS2_FUSE_FUSE_NOTIFY_BACKEND_H_

#include <string>

#include "cache_invalidator.h"
#include "fuse_includes.h"

namespace ugfs2::fusefs {

class FuseNotifyBackend final : public NotifyBackend {
 public:
  explicit FuseNotifyBackend(fuse_session* se) : se_(se) {}
  int InvalInode(KernelIno ino, int64_t off, int64_t len) override {
    return fuse_lowlevel_notify_inval_inode(se_, ino, off, len);
  }
  int InvalEntry(KernelIno parent, std::string_view name) override {
    std::string n(name);
    return fuse_lowlevel_notify_inval_entry(se_, parent, n.c_str(), n.size());
  }

 private:
  fuse_session* const se_;
};

}  // namespace ugfs2::fusefs

#endif  // UGFS2_FUSE_FUSE_NOTIFY_BACKEND_H_
