// IoPolicy: how the daemon holds inode glocks in its data paths (READ and WRITE requests), the
// three policies of the deadlock lab (docs/deadlocks.md):
//
//  * merged (default): what Linux merged in 5.16-6.5. A request holds one glock, only while it
//    is served, and never waits for a second glock while holding one. A request that finds its
//    glock contended between windows (someone waits for it) drops it, lets the waiter in, takes
//    it again and resumes at the byte reached: windows of 1 MiB (every request the kernel sends
//    is one), one page after a round that made none. A direct write that cannot be done in
//    place (a hole, beyond EOF) is finished as an EX write (gfs2's buffered fallback).
//  * proposal-2021: the unmerged 2021 design. The glock a process's I/O takes is its "outer"
//    glock and is kept across that process's requests (the kernel's read()/write() held it
//    across the copy that faults); an "inner" acquisition (any other glock, or the same in a mode
//    the outer one does not cover) by a process that keeps outer glocks is a TRY. When it fails
//    the process unwinds: its outer glocks are dropped, the inner glock is taken waiting, and the
//    outer I/O takes its glock again when it next comes.
//  * naive: gfs2 before the fix. Outer glocks kept as above, inner acquisitions wait while the
//    outer ones stay held, and multi-inode operations wait in whatever order they ask
//    (FileSystem::SetNaiveLockOrder). It deadlocks on purpose (S1, S2, S6, S7 of
//    ugfs2-mmap-stress), for demonstration.
//
// "Kept across requests" ends when no request of the process has used the glock for the linger
// time (its syscall is taken to be over), except while the process waits for a glock in another
// request: a process blocked in one request keeps every outer glock, as a task blocked in a page
// fault kept its glock in gfs2. A request the revoker parked (fuse/revoker.h: it came while this
// node gave the inode's glock up, and is served once the demote is over) is such a wait too, the
// fault of a mapping whose glock is on its way to another node; but not for the process's own kept
// glock on that inode, which the demote waits for (keeping it would make the process wait for
// itself, a hang no glock cycle shows). When a wait ends, the process's kept glocks linger from
// then on: its syscall goes on. A new request does not reuse a kept glock someone else waits for:
// it drops it and queues again behind the waiter, as gfs2 grants no new holder while a demote is
// pending (under proposal-2021 a retry; under naive a wait that keeps the process's other glocks,
// or a process faulting pages of a glock being demoted would keep reusing it, past the demote).
// Writeback requests (no process) always run as under merged.
//
// Switching the policy (Set) drops every kept glock not in use by a request at that moment (the
// rest as soon as their request ends): switching a deadlocked naive mount to merged breaks the
// deadlock. Stop drops everything and makes every later request run as under merged.
//
// Thread safety: thread-safe. mu_ is never held while a glock is taken or released, or while
// I/O runs; under it only FileSystem::HoldContended is called, which takes the glock runner's
// leaf mutex. Lock order: mu_ -> GlockRunner::mu_.
#ifndef UGFS2_FUSE_IO_POLICY_H_
#define UGFS2_FUSE_IO_POLICY_H_

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "common/status.h"
#include "fs/file_system.h"

namespace ugfs2::fusefs {

enum class Policy : uint8_t { kMerged, kProposal2021, kNaive };
const char* PolicyName(Policy p);  // "merged", "proposal-2021", "naive"
std::optional<Policy> ParsePolicy(std::string_view name);

class IoPolicy {
 public:
  struct Stats {
    uint64_t retries = 0;    // glock dropped and taken again because of contention
    uint64_t unwinds = 0;    // proposal-2021: an inner TRY failed; outer glocks dropped
    uint64_t fallbacks = 0;  // direct writes finished under EX
    uint64_t kept = 0;       // outer glocks taken to be kept across requests
    uint64_t kept_now = 0;   // outer glocks kept at this moment
    uint64_t waits = 0;      // naive: inner acquisitions that waited while outer ones were kept
    uint64_t parked = 0;     // requests parked by the revoker (each keeps its process blocked)
    uint64_t lent = 0;       // read-only requests served under their process's kept glock
  };
  // The I/O of one request: under `hold` (0: the callee takes its own glock) and in `mode`,
  // `len` bytes starting `from` bytes into the request. Returns the bytes done (fewer: EOF).
  using IoFn = std::function<Result<size_t>(uint64_t hold, IoMode mode, size_t from, size_t len)>;

  // `fs` must outlive this object. `linger`: how long a process's outer glocks stay kept after
  // its last request.
  IoPolicy(FileSystem* fs, Policy policy, std::chrono::milliseconds linger);
  ~IoPolicy();  // Stop()
  IoPolicy(const IoPolicy&) = delete;
  IoPolicy& operator=(const IoPolicy&) = delete;

  Policy policy() const;
  void Set(Policy policy);
  void Stop();

  // Serves one data request of process `pid` (0: none, e.g. writeback) on `ino`, `len` bytes,
  // needing `mode`. `write`: the request writes (direct-write fallback applies).
  Result<size_t> Run(int pid, InodeNo ino, IoMode mode, bool write, size_t len, const IoFn& io);

  // Runs `read(hold)` for a read-only request (GETATTR, GETXATTR) of process `pid` on `ino`
  // under a glock the process keeps on `ino` (any mode), instead of the request taking a holder
  // of its own, which would wait for the process's own kept glock: a write() makes the kernel
  // ask for the file's attributes and its security.capability before the WRITE, while the
  // process keeps the EX of its previous write (naive: until the linger, 20 ms per write).
  // gfs2's getattr likewise does not wait for a glock its task holds. `read` must only read
  // the inode. false (`read` not called): the process keeps no glock on `ino` free to lend now
  // (none, doomed, or a request of the process runs under it); the caller takes its own.
  bool UnderKept(int pid, InodeNo ino, const std::function<void(uint64_t hold)>& read);

  Stats stats() const;
  // A request of process `pid` on `ino` was parked by the revoker / its rerun starts: while
  // parked it counts as a request waiting for a glock (see above). Unparked may come first when
  // a rerun races its handler's Parked; the pair still balances. pid <= 0: ignored.
  void Parked(int pid, InodeNo ino);
  void Unparked(int pid, InodeNo ino);

  // "io_*" counter lines for the control request "counters".
  std::vector<std::pair<std::string, uint64_t>> Counters() const;

 private:
  struct Kept {
    InodeNo ino = 0;
    IoMode mode = IoMode::kShared;
    uint64_t hold = 0;
    int users = 0;        // requests running under it now
    bool doomed = false;  // drop it once users reaches 0
    std::chrono::steady_clock::time_point last_used;
    bool lent = false;  // UnderKept reads under it (then users is 1): no request reuses it
  };
  struct Proc {
    std::vector<Kept> kept;
    int waiting = 0;  // requests of this process waiting for a glock now
    // Requests of this process parked by the revoker now, per inode (-1 for a moment: a rerun
    // that started before its handler's Parked); no zero entries.
    std::map<InodeNo, int> parked;
    // The process is blocked in a request other than one parked on `ino`: it keeps its glock on
    // `ino` (the demote a parked request waits for may be this very glock's).
    bool BlockedBeyond(InodeNo ino) const {
      if (waiting > 0) return true;
      for (const auto& [i, n] : parked) {
        if (i != ino) return true;
      }
      return false;
    }
  };

  Result<size_t> RunMerged(InodeNo ino, IoMode mode, bool write, size_t len, const IoFn& io);
  Result<size_t> RunKept(int pid, InodeNo ino, IoMode mode, bool write, size_t len, const IoFn& io,
                         Policy policy);
  // A request of `pid` stops using `hold` (mu_ held): a doomed hold that became unused goes
  // into `drop`.
  void UnuseLocked(int pid, uint64_t hold, std::vector<uint64_t>* drop);
  // Marks every kept glock of `p` doomed; collects the unused ones into `drop` (mu_ held).
  void DoomLocked(Proc* p, std::vector<uint64_t>* drop);
  // Moves the doomed unused kept glocks of `p` into `drop` (mu_ held).
  static void DropDoomedLocked(Proc* p, std::vector<uint64_t>* drop);
  void Drop(const std::vector<uint64_t>& holds);
  // A wait of `p` ended: its kept glocks linger from now (mu_ held).
  static void RestartLingerLocked(Proc* p);
  void Reaper();

  FileSystem* const fs_;
  const std::chrono::milliseconds linger_;
  mutable std::mutex mu_;  // guards everything below; leaf
  std::condition_variable cv_;
  // Set by the glock layer's retained-contention listener (without mu_: it runs under the glock
  // runner's mutex), cleared by the reaper, which it wakes.
  std::atomic<bool> kick_{false};
  Policy policy_;
  bool stopped_ = false;
  std::map<int, Proc> procs_;
  Stats stats_;
  std::thread reaper_;
};

}  // namespace ugfs2::fusefs

#endif  // UGFS2_FUSE_IO_POLICY_H_
