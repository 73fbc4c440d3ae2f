// Journal recovery of failed nodes (cluster mounts; docs/recovery.md): the survivors' side of
// gfs2's gfs2_recover_func. The lock manager keeps a failed node's locks granted until some
// survivor reports its journal recovered, so nothing that node may have changed can be read or
// written meanwhile; requests flagged kNoExp ignore those locks, which is how recovery itself gets
// the dead node's journal glock. It takes no other glock: a request of this node's own that
// waits for the dead node's locks may sit ahead of it in that glock's queue.
//
// Why a replay never rewrites a block another node changed since: a node retires its newest
// commit (Journal::Retire) whenever a glock leaves it (Engine::SyncAndRetire), so whatever its
// journal would replay is covered by glocks it still held when it died, which no other node has
// been granted since.
#include <chrono>
#include <thread>

#include "common/log.h"
#include "fs/engine.h"
#include "fs/op_scope.h"
#include "journal/journal.h"

namespace ugfs2::fs {

using glock::GlockName;
using glock::GlockType;

namespace {

// MountOptions::replay_delay_us: the device of a recovery's replay, each write delayed.
class SlowWrites final : public BlockDevice {
 public:
  SlowWrites(BlockDevice* dev, uint32_t delay_us) : dev_(dev), delay_(delay_us) {}
  Status ReadAt(uint64_t off, void* buf, size_t len) override {
    return dev_->ReadAt(off, buf, len);
  }
  Status WriteAt(uint64_t off, const void* buf, size_t len) override {
    std::this_thread::sleep_for(std::chrono::microseconds(delay_));
    return dev_->WriteAt(off, buf, len);
  }
  Status Flush() override { return dev_->Flush(); }
  uint64_t Size() const override { return dev_->Size(); }
  std::string Describe() const override { return dev_->Describe(); }

 private:
  BlockDevice* const dev_;
  const uint32_t delay_;
};

}  // namespace

Result<RecoveryReport> Engine::RecoverJournals(std::chrono::milliseconds timeout) {
  if (!cluster_ || !mounted_) return Status::Invalid("journal recovery needs a cluster mount");
  if (read_only_) return Status::Invalid("a read-only mount does not recover journals");
  if (log_->broken()) return Status::IoError("this node's log is broken: it may not write");
  std::lock_guard<std::mutex> serial(recovery_mu_);
  // One recovery at a time, cluster-wide: a survivor that finds a journal busy knows a live
  // node's mount holds it, never another survivor half way through replaying it. kNoExp: a
  // survivor that died while recovering holds it no more.
  ASSIGN_OR_RETURN(glock::HolderId rec,
                   glocks_->Acquire({GlockType::kNondisk, glock::kRecoveryLock},
                                    glock::State::kExclusive, glock::kNoExp | glock::kAsync));
  const glock::Time deadline =
      glock::GlockRunner::SteadyNow() +
      std::chrono::duration_cast<std::chrono::nanoseconds>(timeout).count();
  if (Status st = glocks_->Wait(rec, deadline); !st.ok()) {
    return st.WithContext("waiting for the recovery lock");
  }
  RecoveryReport report;
  Status result;
  for (const JournalDesc& jd : journals_) {
    if (jd.jid == jid_) continue;
    auto h = glocks_->Acquire({GlockType::kJournal, jd.jid}, glock::State::kExclusive,
                              glock::kTry | glock::kNoExp | glock::kNoCache);
    if (!h.ok()) {
      if (h.status().code() == Code::kLockConflict) {
        report.live++;
        continue;
      }
      result = h.status().WithContext("journal" + std::to_string(jd.jid) + " glock");
      break;
    }
    auto one = RecoverOneJournal(jd);
    Status rel = glocks_->Release(*h);
    if (!one.ok()) {
      result = one.status();
      break;
    }
    if (!rel.ok()) {
      result = rel;
      break;
    }
    report.journals.push_back(*one);
  }
  Status rel = glocks_->Release(rec);
  if (result.ok()) result = rel;
  if (!result.ok()) return result;
  for (const JournalRecovery& r : report.journals) {
    if (r.replayed) recoveries_++;
  }
  return report;
}

Result<JournalRecovery> Engine::RecoverOneJournal(const JournalDesc& jd) {
  const auto t0 = std::chrono::steady_clock::now();
  const std::string name = "journal" + std::to_string(jd.jid);
  JournalRecovery out;
  out.jid = jd.jid;
  SlowWrites slow(dev_.get(), opts_.replay_delay_us);
  BlockDevice* dev = opts_.replay_delay_us != 0 ? &slow : dev_.get();
  ASSIGN_OR_RETURN(journal::Journal jrn,
                   journal::Journal::Open(dev, geo_.bsize, jd.jid, jd.ino, jd.blocks,
                                          jd.statfs_change, jd.quota_change));
  RETURN_IF_ERROR(jrn.FindHead().WithContext(name));
  if (jrn.IsClean()) return out;
  LOG_WARN(name << " belongs to a failed node and is dirty: replaying");
  ASSIGN_OR_RETURN(journal::ReplayStats rs, jrn.Replay());
  out.replayed = true;
  out.blocks_replayed = rs.blocks_replayed;
  out.log_blocks = rs.region_blocks;
  out.statfs_free = rs.local.free;
  out.statfs_dinodes = rs.local.dinodes;
  // The replay wrote in place behind the metadata cache: nothing of it may be cached here (it
  // was all under the dead node's glocks), except what this node read without a glock at mount:
  // the dead node's statfs_change file. Forget it before and after using it.
  if (jd.statfs_change != 0) InvalidateInodeGlock(jd.statfs_change);
  if (jd.statfs_change != 0 &&
      (rs.local.total != 0 || rs.local.free != 0 || rs.local.dinodes != 0)) {
    // The delta becomes part of this node's own (folded into the master statfs with it, under
    // the master's glock, later): taking that glock here could wait behind a request of our own
    // that waits for the dead node's locks, i.e. for this very recovery. Zeroing the dead
    // node's statfs_change file (no glock: its journal glock covers it) and growing our delta
    // go in one commit of our journal.
    Status st = RunOp<Status>([&](OpScope& s) -> Status {
      ASSIGN_OR_RETURN(InodeRef sc, GetInode(jd.statfs_change));
      if (sc->di.height != 0 || sc->di.size < format::kStatfsChangeSize || !sc->is_reg()) {
        return Status::Corrupt("statfs_change" + std::to_string(jd.jid) + " damaged");
      }
      RETURN_IF_ERROR(s.BeginTrans());
      alloc_->WithStatfs([&](StatfsDelta& local, StatfsDelta&) {
        local.total += rs.local.total;
        local.free += rs.local.free;
        local.dinodes += rs.local.dinodes;
      });
      format::StatfsChange{}.Encode(sc->buf->bytes() + format::kDinodeSize);
      cache_->MarkDirty(sc->buf);
      s.Modified(sc);
      return Status::Ok();
    });
    if (st.ok()) st = FlushLog();
    InvalidateInodeGlock(jd.statfs_change);
    RETURN_IF_ERROR(st.WithContext(name + ": folding its statfs change"));
  }
  out.usec = static_cast<uint64_t>(
      std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::steady_clock::now() - t0)
          .count());
  LOG_INFO(name << " recovered: " << rs.blocks_replayed << " blocks replayed from "
                << rs.region_blocks << " log blocks, statfs delta free " << rs.local.free
                << " dinodes " << rs.local.dinodes << ", " << out.usec / 1000 << " ms");
  return out;
}

}  // namespace ugfs2::fs
