// Randomized model check of the lock manager on the deterministic in-process cluster.
//
// Each schedule runs 3-5 nodes, random lock/convert/unlock/cancel operations with random flags,
// random interleavings and delays (the hub's scheduler), node crashes and restarts, and
// partitions. After every single scheduler step it checks:
//  * every live replica's table invariants (no two incompatible granted locks, unless a NOEXP
//    grant overlaps a dead node's lock awaiting recovery);
//  * the users' view: locks that live, unfenced users believe they hold are pairwise compatible;
//  * LVB rules: a grant that reads the LVB in a mode that excludes writers sees the last value
//    written (or VALNOTVALID after a writer died), never garbage.
// At quiescence it checks blocking callbacks reached the holders a waiter is blocked by, and
// that all replicas are identical. At the end every lock is unlocked/cancelled and every request
// must have been answered.
//
// One schedule in three also runs heartbeats on the manual clock: time passes in heartbeat
// periods (the hub is drained before each one, so only frozen nodes fall silent), a node may be
// frozen (FreezableTransport: it delivers nothing) and resumed later. A node frozen for longer
// than evict_timeout is evicted and recovered by the others, and fences itself and rejoins when
// it resumes. Checked after every step: when a survivor applies the EVICT, the frozen node's
// lease has already expired.
//
// Reproduce: UGFS2_DLM_SEED=<seed> (printed on failure) UGFS2_DLM_SCHEDULES=1.
#include <chrono>
#include <cstdlib>
#include <random>
#include <set>
#include <sstream>

#include <gtest/gtest.h>

#include "common/log.h"
#include "sim_cluster.h"

namespace ugfs2::dlm {
namespace {

struct MLock {
  uint32_t node = 0;
  uint32_t gen = 0;  // process generation on that node
  std::string res;
  Lksb lksb;
  int held = kIV;     // what the user may rely on
  int granted = kIV;  // last granted mode reported
  int pending_mode = kIV;
  uint32_t pending_flags = 0;
  bool pending = false;  // request/convert in flight
  bool unlocking = false;
  bool exists = false;  // may exist in the table
  bool basted_since_grant = false;
  bool invalid_possible_at_issue = false;
  int64_t clears_invalid_epoch = -1;  // a write in flight: clears invalid_possible when done
  int completions = 0;
  int ops = 0;
};

struct ResRef {
  uint64_t latest = 0;  // value last written (0 = never)
  bool uncertain = false;
  bool invalid_possible = false;
  bool possibly_freed = true;
  int64_t invalid_epoch = 0;
};

uint64_t LvbValue(const Lvb& l) {
  uint64_t v;
  std::memcpy(&v, l.data(), 8);
  return v;
}

class Model {
 public:
  Model(uint64_t seed, std::ostringstream* log)
      : rng_(seed), log_(*log), heartbeats_(seed % 3 == 0) {  // (rng_ untouched: old seeds stay)
    n_ = 3 + static_cast<int>(rng_() % 3);
    manual_recovery_ = rng_() % 2;
    c_ = std::make_unique<SimCluster>(n_, seed, true, manual_recovery_);
    if (heartbeats_) c_->EnableHeartbeats(kHbInterval, kHbLease, kHbEvict);
    for (uint32_t i = 1; i <= static_cast<uint32_t>(n_); ++i) {
      alive_[i] = true;
      gen_[i] = 1;
    }
    c_->StartAll();
  }

  std::string Run(int actions) {
    if (!Drive()) return err_;
    for (int a = 0; a < actions && err_.empty(); ++a) {
      const int r = static_cast<int>(rng_() % 100);
      if (r < 55) {
        RandomOp();
      } else if (heartbeats_ && r >= 75 && r < 85) {
        HeartbeatAction();
      } else if (r < 85) {
        Steps(1 + rng_() % 30);
      } else if (r < 90) {
        MaybeCrash();
      } else if (r < 95) {
        MaybeRestart();
      } else if (r < 97) {
        MaybePartition();
      } else {
        if (!Drive()) return err_;
        CheckQuiescent();
      }
      if (manual_recovery_) AnswerRecovery();
    }
    if (!err_.empty()) return err_;
    // Wind down: resume, heal, restart, drain, recover, then release everything.
    if (frozen_ != 0) Thaw();
    if (!err_.empty()) return err_;
    if (partitioned_) Heal();
    for (auto& [id, a] : alive_) {
      if (!a) Restart(id);
    }
    for (int round = 0; round < 4 && err_.empty(); ++round) {
      if (!Drive()) return err_;
      if (manual_recovery_) AnswerRecovery(true);
    }
    CheckQuiescent();
    for (auto& l : locks_) {
      if (!Usable(l)) continue;
      if (l.pending && !l.unlocking) {
        Status st = c_->ls(l.node).Unlock(l.lksb.lkid, kLkfCancel);
        Check(st.ok() || st.code() == Code::kNotFound, "cancel failed: " + st.ToString());
      }
    }
    if (!Drive()) return err_;
    for (auto& l : locks_) {
      if (!Usable(l) || l.pending || l.unlocking || !l.exists) continue;
      Issue(
          l, [&] { return c_->ls(l.node).Unlock(l.lksb.lkid, 0); }, kIV, 0, true);
    }
    if (!Drive()) return err_;
    for (auto& l : locks_) {
      if (!Usable(l)) continue;
      if (l.pending || l.unlocking || l.exists) {
        Fail("request never answered: node " + std::to_string(l.node) + " lkid " +
             std::to_string(l.lksb.lkid) + " res " + l.res);
        break;
      }
    }
    uint64_t d = 0;
    for (auto& [id, a] : alive_) {
      Lockspace& ls = c_->ls(id);
      if (ls.state() != LsState::kMember) {
        Fail("node " + std::to_string(id) + " not a member at end: " + LsStateName(ls.state()));
        break;
      }
      if (d == 0) d = ls.TEST_Digest();
      if (ls.TEST_Digest() != d) Fail("replicas differ at end");
      if (ls.Info().locks != 0) Fail("locks left at end:\n" + ls.Dump(false));
    }
    return err_;
  }

 private:
  bool Usable(const MLock& l) const { return alive_.at(l.node) && gen_.at(l.node) == l.gen; }

 public:
  uint64_t evictions() const { return evictions_seen_; }

 private:
  static constexpr std::chrono::milliseconds kHbInterval{100};
  static constexpr std::chrono::milliseconds kHbLease{400};
  static constexpr std::chrono::milliseconds kHbEvict{800};

  void HeartbeatAction() {
    const int k = static_cast<int>(rng_() % 10);
    if (k < 7) {
      // A few heartbeat periods. Draining the hub first keeps live nodes heard from.
      const int periods = 1 + static_cast<int>(rng_() % 12);
      for (int i = 0; i < periods && err_.empty(); ++i) {
        if (!Drive()) return;
        c_->Advance(kHbInterval);
        log_ << "step " << c_->hub().steps() << " time " << c_->now() / 1000000 << " ms\n";
        c_->TickAll();
        CheckStep();
      }
    } else if (k < 9) {
      Freeze();
    } else if (frozen_ != 0) {
      Thaw();
    }
  }
  void Freeze() {
    if (suspect_ != 0 || partitioned_) return;  // one freeze per schedule keeps EVICTs attributable
    for (auto& [id, a] : alive_) {
      if (!a) return;
    }
    const uint32_t id = 1 + rng_() % n_;
    if (c_->ls(id).state() != LsState::kMember) return;
    log_ << "freeze " << id << "\n";
    if (std::getenv("UGFS2_DLM_VERBOSE")) std::fprintf(stderr, "=== freeze %u\n", id);
    // Its users stop relying on their locks: their lease runs out before anyone can evict them.
    NodeGone(id);
    fenced_view_.insert(id);
    frozen_ = suspect_ = id;
    suspect_gen_ = gen_[id];
    suspect_times_evicted_ = c_->ls(id).Info().times_evicted;
    suspect_evictions_ = EvictionsOfOthers();
    c_->freezable(id).Freeze();
  }
  void Thaw() {
    const uint32_t id = frozen_;
    log_ << "thaw " << id << "\n";
    if (std::getenv("UGFS2_DLM_VERBOSE")) std::fprintf(stderr, "=== thaw %u\n", id);
    while (c_->freezable(id).ResumeOne()) {
      CheckStep();
    }
    frozen_ = 0;
    fenced_view_.erase(id);
    // It may still be evicted later (an EVICT decided while it was frozen and not ordered yet):
    // CheckEviction() keeps watching, and its users rely on their locks only while its lease is
    // valid again.
    CheckStep();
  }
  uint64_t EvictionsOfOthers() {
    uint64_t n = 0;
    for (auto& [id, a] : alive_) {
      if (a && id != suspect_) n += c_->ls(id).Counters().evictions;
    }
    return n;
  }
  // The suspect's locks from its freeze on die with its eviction: their PW/EX LVBs may turn
  // invalid then.
  void SuspectLocksGone() {
    for (auto& l : locks_) {
      if (l.node != suspect_ || l.gen < suspect_gen_ || l.gen == 0) continue;
      if (l.granted != kIV || l.pending) {
        ref_[l.res].uncertain = true;
        ref_[l.res].invalid_possible = true;
        ref_[l.res].invalid_epoch++;
      }
      if (l.gen != gen_[suspect_]) l.held = kIV;
    }
  }
  // Called after every step once a node has been frozen.
  void CheckEviction() {
    if (!alive_[suspect_]) return;
    Lockspace& ls = c_->ls(suspect_);
    const uint64_t self = ls.Info().times_evicted;
    const bool self_evicted = self != suspect_times_evicted_;
    const uint64_t e = EvictionsOfOthers();
    if (e > suspect_evictions_) {
      // The first survivor applied the EVICT: the suspect's lease is over (unless it has
      // already fenced itself and rejoined as a new member).
      suspect_evictions_ = e;
      ++evictions_seen_;
      log_ << "evicted " << suspect_ << "\n";
      if (!self_evicted && ls.LeaseValid()) {
        Fail("node " + std::to_string(suspect_) + " evicted while its lease was still valid");
      }
      SuspectLocksGone();
    }
    if (self_evicted) {
      // It fenced itself and rejoins as a new member; its old locks are gone for good.
      log_ << "self-evicted " << suspect_ << "\n";
      suspect_times_evicted_ = self;
      SuspectLocksGone();
      gen_[suspect_]++;
      fenced_view_.erase(suspect_);
    }
  }

  std::string DumpAll() {
    std::string out;
    for (auto& [id, a] : alive_) {
      if (!a) continue;
      auto info = c_->ls(id).Info();
      out += "== node " + std::to_string(id) + " digest " +
             std::to_string(c_->ls(id).TEST_Digest()) + "\n" + c_->ls(id).Dump(false);
      for (const auto& m : info.members) {
        out += "  member " + std::to_string(m.id.nodeid) + "/" + std::to_string(m.id.pid) +
               " inc " + std::to_string(m.incarnation) + " synced " + std::to_string(m.synced) +
               " alive " + std::to_string(m.alive) + " join_seq " + std::to_string(m.join_seq) +
               "\n";
      }
    }
    return out;
  }
  void Fail(const std::string& e) {
    if (err_.empty()) err_ = e;
  }
  void Check(bool ok, const std::string& e) {
    if (!ok) Fail(e);
  }

  // Runs the hub to idle, checking after every step.
  bool Drive() {
    for (int i = 0; i < 2000000; ++i) {
      if (!c_->hub().Step()) return err_.empty();
      CheckStep();
      if (!err_.empty()) return false;
    }
    Fail("livelock: hub never went idle");
    return false;
  }
  void Steps(size_t n) {
    for (size_t i = 0; i < n && err_.empty(); ++i) {
      if (!c_->hub().Step()) return;
      CheckStep();
    }
  }

  void CheckStep() {
    if (suspect_ != 0) CheckEviction();
    for (auto& [id, a] : alive_) {
      if (!a) continue;
      std::string inv = c_->ls(id).TEST_CheckInvariants();
      if (!inv.empty()) return Fail("node " + std::to_string(id) + " table: " + inv);
    }
    // Users' view.
    std::map<std::string, std::vector<const MLock*>> by_res;
    for (const auto& l : locks_) {
      if (!Usable(l) || l.held == kIV || fenced_view_.count(l.node)) continue;
      // With heartbeats a user writes under its lock only while its node's lease is valid.
      if (heartbeats_ && !c_->ls(l.node).LeaseValid()) continue;
      by_res[l.res].push_back(&l);
    }
    for (auto& [res, v] : by_res) {
      for (size_t i = 0; i < v.size(); ++i) {
        for (size_t j = i + 1; j < v.size(); ++j) {
          if (!ModesCompatible(v[i]->held, v[j]->held)) {
            return Fail("users hold incompatible modes on " + res + ": node " +
                        std::to_string(v[i]->node) + " " + ModeName(v[i]->held) + " and node " +
                        std::to_string(v[j]->node) + " " + ModeName(v[j]->held));
          }
        }
      }
    }
  }

  void CheckQuiescent() {
    if (!err_.empty()) return;
    uint64_t d = 0;
    for (auto& [id, a] : alive_) {
      if (!a || id == frozen_ || c_->ls(id).state() != LsState::kMember) continue;
      if (d == 0) d = c_->ls(id).TEST_Digest();
      if (c_->ls(id).TEST_Digest() != d) return Fail("replicas differ at quiescence\n" + DumpAll());
    }
    // Every holder that blocks a waiter has been told.
    for (const auto& w : locks_) {
      if (!Usable(w) || !w.pending || w.unlocking || w.node == frozen_ ||
          c_->ls(w.node).state() != LsState::kMember)
        continue;
      for (const auto& g : locks_) {
        if (&g == &w || !Usable(g) || g.res != w.res || g.pending || g.held == kIV) continue;
        if (g.node == frozen_ || c_->ls(g.node).state() != LsState::kMember) continue;
        if (!ModesCompatible(g.held, w.pending_mode) && !g.basted_since_grant) {
          return Fail("holder node " + std::to_string(g.node) + " " + ModeName(g.held) + " on " +
                      g.res + " never got a bast for waiter wanting " + ModeName(w.pending_mode));
        }
      }
    }
  }

  template <typename F>
  void Issue(MLock& l, F call, int mode, uint32_t flags, bool unlock) {
    const int before = l.held;
    Status st = call();
    if (!st.ok()) {
      if (st.code() != Code::kFenced && st.code() != Code::kNotConnected) {
        Fail("op rejected: " + st.ToString() + " node " + std::to_string(l.node) + " lkid " +
             std::to_string(l.lksb.lkid) + " gen " + std::to_string(l.gen));
      }
      return;
    }
    l.ops++;
    log_ << "step " << c_->hub().steps() << " node " << l.node << " lkid " << l.lksb.lkid << " "
         << l.res << (unlock ? " unlock" : " lock ") << (unlock ? "" : ModeName(mode)) << " "
         << FlagsString(flags) << " held " << ModeName(before) << "\n";
    if (unlock) {
      l.unlocking = true;
      l.pending = true;
      if ((flags & kLkfValBlk) && (before == kPW || before == kEX)) NoteWrite(l, flags);
      l.held = kIV;
      return;
    }
    l.pending = true;
    l.invalid_possible_at_issue = ref_[l.res].invalid_possible;
    l.pending_mode = mode;
    l.pending_flags = flags;
    if (before != kIV) {
      const bool middle = (before == kPR && mode == kCW) || (before == kCW && mode == kPR);
      // Down-conversion: stop relying on the old mode at once. A PR<->CW conversion takes
      // effect cluster-wide before our completion arrives, so rely on neither meanwhile.
      if (mode < before && !middle) l.held = mode;
      if (middle) l.held = kNL;
      if ((flags & kLkfValBlk) && LvbWriteOnConvert(before, mode)) NoteWrite(l, flags);
    }
  }

  void NoteWrite(MLock& l, uint32_t flags) {
    ResRef& r = ref_[l.res];
    if (flags & kLkfIvValBlk) {
      r.invalid_possible = true;
      r.invalid_epoch++;
      r.uncertain = true;
      return;
    }
    r.latest = LvbValue(l.lksb.lvb);
    r.uncertain = false;
    r.possibly_freed = false;
    // The write lands somewhere before its completion; until then readers may still see an
    // invalid LVB.
    l.clears_invalid_epoch = r.invalid_epoch;
  }

  void OnComplete(size_t idx) {
    MLock& l = locks_[idx];
    if (!Usable(l)) return;
    l.completions++;
    const int st = l.lksb.status;
    if (l.clears_invalid_epoch >= 0) {
      if (ref_[l.res].invalid_epoch == l.clears_invalid_epoch) ref_[l.res].invalid_possible = false;
      l.clears_invalid_epoch = -1;
    }
    log_ << "step " << c_->hub().steps() << " node " << l.node << " lkid " << l.lksb.lkid << " "
         << l.res << " completion " << StatusName(st) << " sbf " << l.lksb.flags << "\n";
    if (l.unlocking) {
      if (st == kStatusUnlock) {
        l.exists = false;
        l.held = kIV;
        l.granted = kIV;
        l.pending = l.unlocking = false;
        UpdateFreed(l.res);
        return;
      }
      // A cancel completion of an op that FORCEUNLOCK... not used; fall through.
    }
    l.pending = false;
    if (st == kStatusOk) {
      int mode = l.pending_mode;
      if (l.lksb.flags & kSbfAltMode) mode = (l.pending_flags & kLkfAltPr) ? kPR : kCW;
      if (l.lksb.flags & kSbfDemoted) return Fail("DEMOTED without CONVDEADLK");
      const int old = l.granted;
      l.granted = mode;
      l.held = mode;
      l.exists = true;
      l.basted_since_grant = false;
      if (l.pending_flags & kLkfValBlk) CheckLvbRead(l, old, mode);
      return;
    }
    if (st == kStatusAgain || st == kStatusCancel || st == kStatusDeadlock) {
      if (l.granted == kIV) {
        l.exists = false;
        UpdateFreed(l.res);
      } else {
        l.held = l.granted;  // conversion failed: old mode still held
      }
      return;
    }
    if (st == kStatusFenced) {
      l.exists = false;
      l.held = l.granted = kIV;
      return;
    }
    Fail(std::string("unexpected completion status ") + StatusName(st));
  }

  void CheckLvbRead(const MLock& l, int old, int mode) {
    if (!LvbReadOnGrant(old, mode)) return;
    ResRef& r = ref_[l.res];
    const bool excludes_writers = !ModesCompatible(mode, kPW);
    if (l.lksb.flags & kSbfValNotValid) {
      if (!r.invalid_possible && !l.invalid_possible_at_issue)
        Fail("VALNOTVALID on " + l.res + " without a dead writer");
      return;
    }
    if (!excludes_writers || r.uncertain) return;
    const uint64_t v = LvbValue(l.lksb.lvb);
    if (v == r.latest) return;
    if (v == 0 && r.possibly_freed) return;
    Fail("LVB on " + l.res + " read " + std::to_string(v) + ", expected " +
         std::to_string(r.latest));
  }

  void UpdateFreed(const std::string& res) {
    for (const auto& o : locks_) {
      if (o.res == res && Usable(o) && (o.exists || o.pending)) return;
    }
    ref_[res].possibly_freed = true;
  }

  void RandomOp() {
    std::vector<uint32_t> cands;
    for (auto& [id, a] : alive_) {
      if (a && c_->ls(id).state() == LsState::kMember && !fenced_view_.count(id))
        cands.push_back(id);
    }
    if (cands.empty()) return;
    const uint32_t node = cands[rng_() % cands.size()];
    Lockspace& ls = c_->ls(node);
    // Existing locks of this node.
    std::vector<size_t> mine;
    for (size_t i = 0; i < locks_.size(); ++i) {
      if (locks_[i].node == node && Usable(locks_[i]) && (locks_[i].exists || locks_[i].pending))
        mine.push_back(i);
    }
    const int kind = static_cast<int>(rng_() % 10);
    if (kind < 4 || mine.empty()) {
      if (locks_.size() > 400) return;
      locks_.emplace_back();
      const size_t idx = locks_.size() - 1;
      MLock& l = locks_.back();
      l.node = node;
      l.gen = gen_[node];
      l.res = "r" + std::to_string(rng_() % 3);
      const int mode = static_cast<int>(rng_() % 6);
      uint32_t flags = 0;
      if (rng_() % 2) flags |= kLkfValBlk;
      if (rng_() % 6 == 0) flags |= kLkfNoQueue;
      if ((flags & kLkfNoQueue) && rng_() % 2) flags |= kLkfNoQueueBast;
      if (mode == kPR && rng_() % 4 == 0) flags |= kLkfAltCw;
      if (mode == kCW && rng_() % 4 == 0) flags |= kLkfAltPr;
      if (rng_() % 10 == 0) flags |= kLkfNoExp;
      if (mode == kNL && !(flags & kLkfNoQueue) && rng_() % 5 == 0) flags |= kLkfExpedite;
      MLock* lp = &l;
      Issue(
          l,
          [&] {
            return ls.Lock(
                mode, &lp->lksb, flags, l.res, [this, idx] { OnComplete(idx); },
                [this, idx](int) { locks_[idx].basted_since_grant = true; });
          },
          mode, flags, false);
      return;
    }
    MLock& l = locks_[mine[rng_() % mine.size()]];
    if (l.pending) {
      if (!l.unlocking && rng_() % 2) {
        Status st = ls.Unlock(l.lksb.lkid, kLkfCancel);
        Check(st.ok() || st.code() == Code::kFenced || st.code() == Code::kNotFound,
              "cancel: " + st.ToString());
      }
      return;
    }
    if (!l.exists) return;
    if (kind < 7) {
      const int mode = static_cast<int>(rng_() % 6);
      uint32_t flags = kLkfConvert;
      if (rng_() % 2) flags |= kLkfValBlk;
      if (rng_() % 6 == 0) flags |= kLkfNoQueue;
      if (QueCvtAllowed(l.granted, mode) && rng_() % 3 == 0) flags |= kLkfQueCvt;
      if (rng_() % 8 == 0) flags |= kLkfNoDlckWt;
      if (mode == kPR && rng_() % 4 == 0) flags |= kLkfAltCw;
      if ((flags & kLkfValBlk) && (l.granted == kPW || l.granted == kEX) && rng_() % 10 == 0)
        flags |= kLkfIvValBlk;
      const uint64_t v = ++next_value_;
      std::memcpy(l.lksb.lvb.data(), &v, 8);
      Issue(
          l, [&] { return ls.Lock(mode, &l.lksb, flags, "", nullptr, nullptr); }, mode, flags,
          false);
      return;
    }
    uint32_t flags = rng_() % 2 ? kLkfValBlk : 0;
    const uint64_t v = ++next_value_;
    std::memcpy(l.lksb.lvb.data(), &v, 8);
    Issue(
        l, [&] { return ls.Unlock(l.lksb.lkid, flags); }, kIV, flags, true);
  }

  void NodeGone(uint32_t id) {
    // The node's users stop relying on anything (crash or self-fencing).
    for (auto& l : locks_) {
      if (l.node != id || l.gen != gen_[id]) continue;
      if (l.granted != kIV || l.pending) {
        ref_[l.res].uncertain = true;
        ref_[l.res].invalid_possible = true;
        ref_[l.res].invalid_epoch++;
      }
      l.held = kIV;
    }
  }

  void MaybeCrash() {
    if (frozen_ != 0) return;
    int alive = 0;
    for (auto& [id, a] : alive_) alive += a;
    if (partitioned_ || (alive - 1) * 2 <= n_) return;
    std::vector<uint32_t> c;
    for (auto& [id, a] : alive_) {
      if (a) c.push_back(id);
    }
    const uint32_t id = c[rng_() % c.size()];
    log_ << "crash " << id << "\n";
    NodeGone(id);
    alive_[id] = false;
    c_->Crash(id);
  }
  void Restart(uint32_t id) {
    alive_[id] = true;
    gen_[id]++;
    c_->Start(id);
  }
  void MaybeRestart() {
    for (auto& [id, a] : alive_) {
      if (!a) return Restart(id);
    }
  }
  void MaybePartition() {
    if (frozen_ != 0) return;
    if (partitioned_) return Heal();
    int alive = 0;
    for (auto& [id, a] : alive_) alive += a;
    if (alive < n_) return;
    const uint32_t id = 1 + rng_() % n_;
    std::vector<uint32_t> rest;
    for (uint32_t i = 1; i <= static_cast<uint32_t>(n_); ++i) {
      if (i != id) rest.push_back(i);
    }
    // Self-fencing assumption: the minority stops using its locks before the majority
    // finishes recovering it.
    log_ << "partition " << id << "\n";
    if (std::getenv("UGFS2_DLM_VERBOSE")) std::fprintf(stderr, "=== partition %u\n", id);
    NodeGone(id);
    fenced_view_.insert(id);
    partitioned_ = true;
    c_->hub().Partition({rest, {id}});
  }
  void Heal() {
    if (std::getenv("UGFS2_DLM_VERBOSE")) std::fprintf(stderr, "=== heal\n");
    partitioned_ = false;
    c_->hub().Heal();
    // The minority member's old locks are gone for good (it rejoins as a new member).
    for (uint32_t id : fenced_view_) {
      for (auto& l : locks_) {
        if (l.node == id && l.gen == gen_[id]) l.gen = 0;
      }
      gen_[id]++;
    }
    fenced_view_.clear();
  }
  void AnswerRecovery(bool all = false) {
    for (auto& [id, a] : alive_) {
      if (!a) continue;
      auto& calls = c_->node(id).recovery_calls;
      while (!calls.empty() && (all || rng_() % 3 == 0)) {
        const uint32_t dead = calls.front();
        calls.erase(calls.begin());
        (void)c_->ls(id).RecoveryDone(dead);
      }
    }
  }

  std::mt19937_64 rng_;
  std::ostringstream& log_;
  bool heartbeats_;
  uint32_t frozen_ = 0;   // the frozen node, if any (no crash/partition meanwhile)
  uint32_t suspect_ = 0;  // the node frozen in this schedule (once), watched for its eviction
  uint32_t suspect_gen_ = 0;
  uint64_t suspect_times_evicted_ = 0;
  uint64_t suspect_evictions_ = 0;  // EVICTs applied by the others, as of the last check
  uint64_t evictions_seen_ = 0;
  int n_;
  bool manual_recovery_;
  bool partitioned_ = false;
  std::unique_ptr<SimCluster> c_;
  std::map<uint32_t, bool> alive_;
  std::map<uint32_t, uint32_t> gen_;
  std::set<uint32_t> fenced_view_;
  std::deque<MLock> locks_;
  std::map<std::string, ResRef> ref_;
  uint64_t next_value_ = 0;
  std::string err_;
};

uint64_t EnvU64(const char* name, uint64_t def) {
  const char* v = std::getenv(name);
  return v ? std::strtoull(v, nullptr, 0) : def;
}

TEST(ModelCheckTest, RandomSchedules) {
  const uint64_t base = EnvU64("UGFS2_DLM_SEED", 20261125);
  const uint64_t count = EnvU64("UGFS2_DLM_SCHEDULES", 4000);
  if (std::getenv("UGFS2_DLM_VERBOSE")) {
    SetLogLevel(LogLevel::kDebug);
  } else {
    SetLogSink([](LogLevel, const std::string&) {});  // fencing etc. is expected noise here
  }
  std::printf("model check: base seed %llu, %llu schedules (UGFS2_DLM_SEED/UGFS2_DLM_SCHEDULES)\n",
              static_cast<unsigned long long>(base), static_cast<unsigned long long>(count));
  uint64_t evicting_schedules = 0;
  for (uint64_t i = 0; i < count; ++i) {
    const uint64_t seed = base + i;
    std::ostringstream log;
    Model m(seed, &log);
    std::string err = m.Run(100);
    if (m.evictions() > 0) ++evicting_schedules;
    if (!err.empty()) {
      std::string l = log.str();
      if (l.size() > 20000) l = l.substr(l.size() - 20000);
      std::printf("%s\n", l.c_str());
    }
    if (!err.empty()) SetLogSink(nullptr);
    ASSERT_EQ(err, "") << "schedule failed; reproduce with UGFS2_DLM_SEED=" << seed
                       << " UGFS2_DLM_SCHEDULES=1";
  }
  std::printf("model check: %llu schedules evicted a frozen node\n",
              static_cast<unsigned long long>(evicting_schedules));
  if (count >= 300) {
    EXPECT_GT(evicting_schedules, 0u) << "no schedule exercised an eviction";
  }
}

}  // namespace
}  // namespace ugfs2::dlm
