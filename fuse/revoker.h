// Revoker: before this node gives an inode's glock up, drops every page the kernel caches of the
// inode (and with them every mapping of those pages), while the kernel keeps sending READs and
// WRITEs for it. The protocol (docs/coherence.md) is the two-phase revoke:
//
//   REVOKING  phase 1: one notify_inval_inode(ino, 0, 0). Requests are served; the pages of
//             every READ and write-through WRITE received meanwhile are recorded (set C): they
//             may have been inserted behind the kernel's forward-only scan.
//   FROZEN    phase 2: new READs and write-through WRITEs are parked (kept unanswered; they
//             occupy no worker thread). The recorded pages, minus those of parked READs, are
//             invalidated again, range by range. If a range's notify stalls (no launder WRITE
//             arrived for Options::stall while it waits), a parked request inside the range
//             holds the folio the kernel waits for: it is answered now (the glock is still
//             held, so with current data) and its pages are invalidated in the next round. The
//             loop ends after a round that answered nothing.
//   then      `done` runs (the glock layer may now demote; new holders wait from here on). The
//             inode stays FROZEN until Thaw, which hands the parked requests to the replay
//             threads: they are served like new requests, so they acquire the glock again and
//             see what the other node wrote.
// Launder and writeback WRITEs (writepage) are always served at once: the notify waits for them.
//
// Why it is correct (docs/coherence.md has the argument in full): a folio exists before the READ
// that fills it is sent, so a READ received before phase 1's scan reached it is waited for and
// removed by phase 1; one received later is in C and removed by phase 2; a parked READ fills its
// folio only after Thaw, under the re-acquired glock; a READ answered on a stall is redone. No
// error is ever answered to contention; requests are only delayed.
//
// Rules for callers (the deadlock cases of fuse/README.md):
//  * Admit is called by READ/WRITE handlers before they touch the core; it never blocks on the
//    kernel. A handler that gets `true` must return without replying.
//  * Revoke and Thaw never block: they queue. Every notify call is made by the revoker's own
//    notifier thread, which holds no lock; parked requests are answered by the replay threads.
//  * A Rerun must reply to its request exactly once (it runs the handler's body).
//
// Thread safety: all methods are thread-safe. Lock order: mu_ is a leaf (never held while
// calling the backend, a Rerun, or a `done` callback).
#ifndef UGFS2_FUSE_REVOKER_H_
#define UGFS2_FUSE_REVOKER_H_

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <thread>
#include <vector>

#include "cache_invalidator.h"
#include "inode_table.h"

namespace ugfs2::fusefs {

class Revoker {
 public:
  struct Options {
    // A notify that waits this long with no launder WRITE arriving is stalled on a parked
    // request (it exceeds the gap between two launder WRITEs of one pass).
    std::chrono::microseconds stall{2000};
    // A notify still blocked after this long is logged (with the inode and the parked requests).
    std::chrono::milliseconds warn_after{10000};
    unsigned replay_threads = 4;
  };
  enum class Kind : uint8_t {
    kRead,       // READ (buffered, fault, readahead, O_DIRECT)
    kWrite,      // write-through WRITE (!writepage)
    kWritePage,  // launder or writeback WRITE (writepage): always served
  };
  using Rerun = std::function<void()>;

  struct Stats {
    uint64_t revokes = 0;          // Revoke calls that ran the protocol
    uint64_t skipped = 0;          // Revoke calls for inodes the kernel does not know
    uint64_t notifies = 0;         // notify_inval_inode calls made
    uint64_t parked = 0;           // requests parked
    uint64_t stall_answers = 0;    // parked requests answered on a stall (then redone)
    uint64_t redo_pages = 0;       // pages invalidated again after a stall answer
    uint64_t max_revoke_us = 0;    // longest Revoke -> done
    uint64_t total_revoke_us = 0;  // sum over revokes
  };

  // `backend` and `inodes` must outlive this object.
  Revoker(NotifyBackend* backend, const InodeTable* inodes, Options options);
  ~Revoker();  // Shutdown()
  Revoker(const Revoker&) = delete;
  Revoker& operator=(const Revoker&) = delete;

  // Handler side: called for every READ/WRITE of `ino` before it is served. false: serve it now
  // (its pages were recorded if a revoke is in phase 1). true: parked; `make_rerun()` was called
  // and the function it returned will serve and answer the request later.
  template <typename MakeRerun>
  bool Admit(InodeNo ino, Kind kind, uint64_t off, uint64_t len, MakeRerun&& make_rerun) {
    if (active_.load() == 0) return false;  // seq_cst: see Revoke
    return AdmitSlow(ino, kind, off, len, [&]() -> Rerun { return make_rerun(); });
  }

  // Core side (through KernelCacheBridge, from the inode glock's prepare and thaw hooks).
  // Starts the revoke of `ino`; `done` runs once the kernel holds no page of it that was filled
  // before (from the revoker's thread, or at once when the kernel does not know the inode).
  void Revoke(InodeNo ino, std::function<void()> done);
  // The glock's demote is over: parked requests of `ino` are served again.
  void Thaw(InodeNo ino);
  // Finishes revokes in progress (their `done` runs), thaws everything, serves what was parked
  // and stops the threads. Later Revoke calls run `done` at once. Idempotent.
  void Shutdown();

  Stats stats() const;
  // Inodes being revoked or frozen, and requests parked now (for dumps).
  size_t active() const { return static_cast<size_t>(active_.load()); }
  size_t parked_now() const;

 private:
  enum class Phase : uint8_t { kRevoking, kFrozen };
  struct Parked {
    uint64_t seq = 0;
    Kind kind = Kind::kRead;
    uint64_t first = 0;  // pages [first, end)
    uint64_t end = 0;
    Rerun rerun;
  };
  struct InodeState {
    Phase phase = Phase::kRevoking;
    std::set<uint64_t> recorded;  // C: pages of requests served during phase 1 / stall answers
    std::vector<Parked> parked;
    uint64_t recv_seq = 0;  // READs and write-through WRITEs received
  };
  struct Job {
    InodeNo ino = 0;
    KernelIno kino = 0;
    std::function<void()> done;
    std::chrono::steady_clock::time_point start;
  };

  bool AdmitSlow(InodeNo ino, Kind kind, uint64_t off, uint64_t len,
                 const std::function<Rerun()>& make_rerun);
  void Coordinator();
  void RunRevoke(const Job& job);
  // Issues one notify through the notifier thread and waits for it. While it waits, a stall
  // (no launder progress for Options::stall) answers the parked requests of `ino` that overlap
  // pages [first, end) and were received after `seq_floor` (READs) or at any time (writes);
  // their pages are added to `*redo`. `frozen` false: nothing is parked (phase 1).
  void Notify(InodeNo ino, KernelIno kino, uint64_t first, uint64_t end, bool frozen,
              uint64_t seq_floor, std::set<uint64_t>* redo);
  void Notifier();
  void Replay();
  void Dispatch(std::vector<Rerun> reruns);

  NotifyBackend* const backend_;
  const InodeTable* const inodes_;
  const Options options_;

  std::atomic<int> active_{0};  // entries in states_ (read without mu_ on the fast path)

  mutable std::mutex mu_;  // guards everything below; leaf
  std::condition_variable cv_;
  std::map<InodeNo, InodeState> states_;
  std::deque<Job> jobs_;
  uint64_t launders_ = 0;  // writepage WRITEs admitted while any revoke is active
  // The notifier's one-slot mailbox.
  struct NotifyCall {
    KernelIno kino = 0;
    int64_t off = 0;
    int64_t len = 0;
  };
  std::optional<NotifyCall> call_;  // set by the coordinator, taken by the notifier
  bool call_done_ = false;
  std::condition_variable notifier_cv_;
  std::deque<Rerun> replay_;
  std::condition_variable replay_cv_;
  bool stop_ = false;          // Shutdown began: no new revokes
  bool helpers_stop_ = false;  // the coordinator is gone: notifier and replayers drain and exit
  Stats stats_;

  std::thread coordinator_;
  std::thread notifier_;
  std::vector<std::thread> replayers_;
};

}  // namespace ugfs2::fusefs

#endif  // UGFS2_FUSE_REVOKER_H_
