// OpScope: everything one filesystem operation holds, taken in one place and given back in one
// place: its glocks and its transaction. Internal header (src/fs only).
//
// The order (docs/locking.md §5): glocks in ascending name order, i.e. the non-disk rename glock
// first, then inode glocks by dinode address, then rgrp glocks by header address. An operation
// learns most of what it needs as it goes (the child a name points to, the inode a rename
// replaces), so Lock() waits only for a glock that sorts after every glock the scope already
// holds; anything else is tried (kTry) and, if it is busy, Lock() answers kLockConflict. The
// body then returns that status at once (having modified nothing: every Lock precedes
// BeginTrans) and Engine::RunOp releases everything, takes every glock the body asked for in
// order, and runs the body again. A body must therefore be safe to run more than once up to its
// BeginTrans.
//
// Transaction: BeginTrans (after the last Lock) takes the engine's log_mu_ shared, so a log
// flush never snapshots half an operation; EndTrans stamps the mod sequence on the inodes the
// operation changed (what their glocks' sync hooks must flush). No glock is requested inside a
// transaction: requesting one may run a sync hook, which flushes the log, which waits for every
// transaction to end.
//
// Thread safety: an OpScope belongs to the thread running the operation. Not copyable.
#ifndef UGFS2_SRC_FS_OP_SCOPE_H_
#define UGFS2_SRC_FS_OP_SCOPE_H_

#include <map>
#include <mutex>
#include <shared_mutex>
#include <vector>

#include "fs/engine.h"
#include "glock/glock.h"

namespace ugfs2::fs {

class OpScope {
 public:
  explicit OpScope(Engine* engine) : e_(engine) {}
  ~OpScope() { ReleaseAll(); }
  OpScope(const OpScope&) = delete;
  OpScope& operator=(const OpScope&) = delete;

  // Takes `name` in `state` (kShared or kExclusive) for the rest of the operation; nothing if it
  // is already held in a state that covers it. kLockConflict: out of order and busy (return it).
  // `flags`: extra holder flags (kSkip for an inode this operation creates).
  Status Lock(const glock::GlockName& name, glock::State state, uint32_t flags = 0);
  Status LockInode(InodeNo no, glock::State state) {
    return Lock({glock::GlockType::kInode, no}, state);
  }
  Status Shared(InodeNo no) { return LockInode(no, glock::State::kShared); }
  Status Exclusive(InodeNo no) { return LockInode(no, glock::State::kExclusive); }
  bool Holds(const glock::GlockName& name, glock::State state) const;
  // Counts the caller's holder `id` of `name` (FileSystem::HoldInode) as held by this scope in
  // its state, without ever releasing it.
  Status Adopt(const glock::GlockName& name, glock::HolderId id);
  // Tries `name` once (kTry), in order or not; false if it is busy. Not retried by Restart (a
  // body that reruns tries again): nothing ever waits for it.
  Result<bool> TryLock(const glock::GlockName& name, glock::State state, uint32_t flags = 0);
  // Hands the holder of `name` over to the caller (the scope no longer releases it); 0 if the
  // scope does not hold it. Allowed inside the transaction (it acquires nothing).
  glock::HolderId Detach(const glock::GlockName& name);
  // Resource groups (before BeginTrans; their glocks sort after every inode glock). LockRgrps:
  // the rgrps (header addresses) of blocks this operation may free or re-mark. ReserveBlocks:
  // rgrps near `goal` with room for `blocks` new blocks, reserved until the scope ends.
  Status LockRgrps(const std::vector<uint64_t>& rgrps);
  Status ReserveBlocks(uint64_t goal, uint64_t blocks);

  // Enters the transaction: after every Lock, before the first change. Refuses (kReadOnly,
  // kIoError) when the filesystem takes no more changes.
  Status BeginTrans();
  bool in_trans() const { return trans_.owns_lock(); }
  // `ip` was changed and is not covered by an EX glock of this scope (a new inode).
  void Modified(const InodeRef& ip) { modified_.push_back(ip); }
  // Leaves the transaction (if in one): the operation's changes get the next mod sequence,
  // recorded on every inode it holds EX and every Modified() one.
  void EndTrans();
  // Ends the transaction, then releases every glock, newest first.
  void ReleaseAll();
  // After kLockConflict: releases everything, then takes every glock asked for so far in order.
  Status Restart();
  int restarts() const { return restarts_; }

 private:
  struct Held {
    glock::GlockName name;
    glock::State state;
    uint32_t flags;  // as asked, without kTry
    glock::HolderId id;
    bool optional = false;  // from TryLock: dropped, not re-taken, by Restart
    bool adopted = false;   // the caller's (Adopt): never released here
  };
  struct Want {
    glock::GlockName name;
    glock::State state;
    uint32_t flags;
  };
  Status Acquire(const glock::GlockName& name, glock::State state, uint32_t flags);

  Engine* const e_;
  std::vector<Held> held_;  // in acquisition order
  // What a Lock could not get (kLockConflict): with held_, what Restart takes in order.
  std::vector<Want> refused_;
  std::shared_lock<std::shared_mutex> trans_;  // on the LogManager's transaction lock
  std::vector<InodeRef> modified_;
  std::vector<std::pair<uint64_t, uint64_t>> reserved_;  // (rgrp, blocks) from ReserveBlocks
  int restarts_ = 0;
};

inline const Status& StatusOf(const Status& s) { return s; }
template <typename T>
const Status& StatusOf(const Result<T>& r) {
  return r.status();
}

template <typename R, typename F>
R Engine::RunOp(F&& body) {
  OpScope scope(this);
  for (;;) {
    R r = body(scope);
    // A conflict after BeginTrans is never retried (something may have changed), except the one
    // a create reports after ending its transaction unchanged.
    if (StatusOf(r).code() != Code::kLockConflict || scope.in_trans()) return r;
    if (Status st = scope.Restart(); !st.ok()) return st;
  }
}

}  // namespace ugfs2::fs

#endif  // UGFS2_SRC_FS_OP_SCOPE_H_
