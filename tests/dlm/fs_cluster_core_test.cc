// Several nodes mount one lock_dlm volume at once, in one process: each node is a FileSystem on
// its own open of the image file (an OFD claim of its own), with a DlmLockModule on its own
// Lockspace over the in-process threaded transport. What one node changes, another sees through
// the glocks (its caches are dropped by the demotes); mounts claim journals through journal
// glocks; fsck-oracle finds the volume clean after the nodes unmount.
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <functional>
#include <future>
#include <memory>
#include <mutex>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "../src/engine_test_util.h"
#include "block/block_device.h"
#include "format/ondisk.h"
#include "fs/file_system.h"
#include "glock_lock_module.h"
#include "lockspace.h"
#include "threaded_transport.h"

namespace ugfs2 {
namespace {

using dlm::DlmLockModule;
using dlm::Lockspace;
using dlm::LockspaceOptions;
using dlm::Sequencer;
using dlm::ThreadedTransport;
using testing::FsckClean;
using testing::MakeImage;
using testing::Pattern;
using testing::RootCred;
using testing::TempDir;

constexpr uint32_t kBs = 4096;

// Passes everything on to the DLM module, but while closed keeps back the real replies to
// kNewObject requests (their provisional replies go through): a lock manager slow to decide.
class HoldingLockModule final : public glock::LockModule {
 public:
  explicit HoldingLockModule(glock::LockModule* inner) : inner_(inner) {}
  void Request(const glock::GlockName& name, glock::State from, glock::State to, uint32_t flags,
               ReplyFn reply) override {
    if (!(flags & glock::kNewObject)) return inner_->Request(name, from, to, flags, reply);
    inner_->Request(name, from, to, flags, [this, reply](const glock::LmReply& r) {
      {
        std::lock_guard<std::mutex> l(mu_);
        if (closed_ && !r.provisional) {
          held_.push_back([reply, r] { reply(r); });
          cv_.notify_all();
          return;
        }
      }
      reply(r);
    });
  }
  void Cancel(const glock::GlockName& name) override { inner_->Cancel(name); }
  void Expedite() override { inner_->Expedite(); }
  void SetBlockingCallback(BlockingCallback cb) override { inner_->SetBlockingCallback(cb); }
  bool ReadLvb(const glock::GlockName& name, Lvb* out) override {
    return inner_->ReadLvb(name, out);
  }
  void WriteLvb(const glock::GlockName& name, const Lvb& value) override {
    inner_->WriteLvb(name, value);
  }
  void Close() {
    std::lock_guard<std::mutex> l(mu_);
    closed_ = true;
  }
  // Waits (at most `timeout`) until `n` real replies are kept back; false if not.
  bool WaitHeld(size_t n, std::chrono::milliseconds timeout) {
    std::unique_lock<std::mutex> l(mu_);
    return cv_.wait_for(l, timeout, [&] { return held_.size() >= n; });
  }
  // Delivers what was kept back (on this thread) and passes everything on from now on.
  void Open() {
    std::deque<std::function<void()>> held;
    {
      std::lock_guard<std::mutex> l(mu_);
      closed_ = false;
      held.swap(held_);
    }
    for (auto& fn : held) fn();
  }

 private:
  glock::LockModule* const inner_;
  std::mutex mu_;  // leaf: never held while a reply runs
  std::condition_variable cv_;
  bool closed_ = false;
  std::deque<std::function<void()>> held_;
};

struct Node {
  std::unique_ptr<ThreadedTransport> transport;
  std::unique_ptr<Lockspace> ls;
  std::unique_ptr<DlmLockModule> lm;
  std::unique_ptr<HoldingLockModule> holding;  // between the engine and lm, if asked for
  std::unique_ptr<FileSystem> fs;
};

class ClusterCoreTest : public ::testing::Test {
 protected:
  void MakeVolume(int journals) {
    img_ = MakeImage(dir_, "c.img", 256, kBs, journals, "-p lock_dlm -t ugfs2test:vol -r 32");
  }
  // Joins node `id` to the lockspace and mounts it; the mount's status.
  Status Mount(Node* n, uint32_t id, int jid = -1, bool holding = false) {
    n->transport = std::make_unique<ThreadedTransport>(&seq_, id);
    LockspaceOptions o;
    o.name = "vol";
    n->ls = std::make_unique<Lockspace>(n->transport.get(), o);
    RETURN_IF_ERROR(n->ls->Join());
    RETURN_IF_ERROR(n->ls->WaitMember(std::chrono::seconds(20)));
    n->lm = std::make_unique<DlmLockModule>(n->ls.get());
    FileDeviceOptions d;
    d.claim = DeviceClaim::kCluster;
    ASSIGN_OR_RETURN(auto dev, OpenFileBlockDevice(img_, d));
    MountOptions m;
    m.lock_module = n->lm.get();
    if (holding) {
      n->holding = std::make_unique<HoldingLockModule>(n->lm.get());
      m.lock_module = n->holding.get();
    }
    m.jid = jid;
    m.commit_interval_s = 1;
    ASSIGN_OR_RETURN(n->fs, FileSystem::Mount(std::move(dev), m));
    return Status::Ok();
  }
  void Unmount(Node* n) {
    if (n->fs) {
      EXPECT_TRUE(n->fs->Unmount().ok());
    }
    if (n->lm) {
      EXPECT_TRUE(n->lm->Shutdown(std::chrono::seconds(20)).ok());
    }
    n->fs.reset();
    n->lm.reset();
    if (n->ls) {
      EXPECT_TRUE(n->ls->Leave().ok());
    }
    n->ls.reset();
    if (n->transport) n->transport->Stop();
    n->transport.reset();
  }
  // After the cluster: one node alone frees what the nodes left unlinked; then fsck.
  void ExpectCleanAfterSingleNodeMount() {
    auto dev = OpenFileBlockDevice(img_, {});
    ASSERT_TRUE(dev.ok());
    MountOptions m;
    m.lockproto = "lock_nolock";
    auto fs = FileSystem::Mount(std::move(*dev), m);
    ASSERT_TRUE(fs.ok()) << fs.status().ToString();
    EXPECT_TRUE((*fs)->Unmount().ok());
    std::string report;
    EXPECT_TRUE(FsckClean(img_, &report)) << report;
  }
  static Attr MustLookupPath(FileSystem& fs, const std::vector<std::string>& path) {
    InodeNo cur = fs.root();
    Attr a{};
    for (const auto& p : path) {
      auto r = fs.Lookup(cur, p);
      EXPECT_TRUE(r.ok()) << p << ": " << r.status().ToString();
      if (!r.ok()) return a;
      a = *r;
      cur = a.ino;
    }
    return a;
  }

  TempDir dir_;
  std::string img_;
  Sequencer seq_;
};

// A create runs under its new inode's glocks granted provisionally, without waiting for the lock
// manager; a log flush then waits for the real grants before it writes anything (the journal or
// the blocks in place), and goes on once they are in.
TEST_F(ClusterCoreTest, FlushWaitsForTheRealGrantsOfANewInode) {
  MakeVolume(2);
  Node a;
  ASSERT_TRUE(Mount(&a, 1, -1, /*holding=*/true).ok());
  a.holding->Close();
  auto create = std::async(std::launch::async, [&] {
    return a.fs->Create(a.fs->root(), "new", 0100644, true, false, RootCred());
  });
  ASSERT_EQ(create.wait_for(std::chrono::seconds(20)), std::future_status::ready)
      << "a create waited for the lock manager's grant";
  Result<Attr> f = create.get();
  ASSERT_TRUE(f.ok()) << f.status().ToString();
  // The inode and iopen glocks' real replies, kept back.
  ASSERT_TRUE(a.holding->WaitHeld(2, std::chrono::seconds(20))) << a.lm->Dump();
  EXPECT_EQ(a.lm->Stats().provisional, 2u);
  auto flush = std::async(std::launch::async, [&] { return a.fs->SyncFs(); });
  EXPECT_EQ(flush.wait_for(std::chrono::milliseconds(300)), std::future_status::timeout)
      << "a log flush did not wait for the real grants";
  a.holding->Open();
  ASSERT_EQ(flush.wait_for(std::chrono::seconds(20)), std::future_status::ready)
      << "the log flush did not go on after the real grants";
  EXPECT_TRUE(flush.get().ok());
  ASSERT_TRUE(a.fs->Release(f->ino).ok());
  // What it wrote is there for another node.
  Node b;
  ASSERT_TRUE(Mount(&b, 2).ok());
  EXPECT_EQ(MustLookupPath(*b.fs, {"new"}).ino, f->ino);
  Unmount(&b);
  Unmount(&a);
  ExpectCleanAfterSingleNodeMount();
}

// The rgrp glocks carry gfs2's rgrp LVB: after a node gave an rgrp up, the LVB describes the
// header it wrote back, and the next node checks the header it reads against it. A header that
// disagrees (here: a changed rg_igeneration, which nothing else checks) marks the rgrp damaged.
TEST_F(ClusterCoreTest, RgrpLvbCarriesTheHeaderAndCatchesALostWrite) {
  MakeVolume(2);
  Node a, b;
  ASSERT_TRUE(Mount(&a, 1).ok());
  ASSERT_TRUE(Mount(&b, 2).ok());
  auto dir = a.fs->Mkdir(a.fs->root(), "d", 0755, RootCred());
  ASSERT_TRUE(dir.ok()) << dir.status().ToString();
  for (int i = 0; i < 20; ++i) {
    ASSERT_TRUE(a.fs->Mknod(dir->ino, "a" + std::to_string(i), 0100644, 0, RootCred()).ok());
  }
  // B creates there too: A gives the directory and its rgrp up (the LVB goes with the rgrp).
  // B finds the directory by name: an inode number handed over behind the glocks may not be
  // published yet (docs/locking.md §1.5).
  const InodeNo bdir = MustLookupPath(*b.fs, {"d"}).ino;
  ASSERT_EQ(bdir, dir->ino);
  for (int i = 0; i < 5; ++i) {
    auto m = b.fs->Mknod(bdir, "b" + std::to_string(i), 0100644, 0, RootCred());
    ASSERT_TRUE(m.ok()) << m.status().ToString();
  }
  // Every rgrp glock B holds EX with an LVB written: B gives it up (writing the header back).
  auto dev = OpenFileBlockDevice(img_, {});
  ASSERT_TRUE(dev.ok()) << dev.status().ToString();
  auto read_header = [&](uint64_t addr) {
    std::vector<uint8_t> blk(kBs);
    EXPECT_TRUE((*dev)->ReadAt(addr * kBs, blk.data(), blk.size()).ok());
    return blk;
  };
  std::vector<uint64_t> checked;
  std::istringstream dump(b.lm->Dump());
  std::string line;
  while (std::getline(dump, line)) {
    if (line.rfind("  3/", 0) != 0 || line.find(" gr:EX") == std::string::npos) continue;
    const uint64_t addr = std::stoull(line.substr(4, line.find(' ', 4) - 4), nullptr, 16);
    glock::LockModule::Lvb v;
    if (!b.lm->ReadLvb({glock::GlockType::kRgrp, addr}, &v)) continue;
    const format::RgrpLvb lvb = format::RgrpLvb::Decode(v.data());
    if (lvb.magic != format::kMagic) continue;
    checked.push_back(addr);
  }
  ASSERT_FALSE(checked.empty()) << "no rgrp LVB written\n" << b.lm->Dump();
  // Node n gives rgrp `addr` up (as a remote request would make it) and is out of EX within 20 s.
  auto give_up = [&](Node& n, uint64_t addr) {
    const glock::GlockName g{glock::GlockType::kRgrp, addr};
    if (n.lm->GrantedMode(g) == dlm::kEX) {
      EXPECT_TRUE(n.fs->DemoteGlock(g.ToString()).ok());
    }
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
    while (n.lm->GrantedMode(g) == dlm::kEX && std::chrono::steady_clock::now() < deadline) {
      std::this_thread::yield();
    }
    return n.lm->GrantedMode(g) != dlm::kEX;
  };
  for (uint64_t addr : checked) {
    ASSERT_TRUE(give_up(b, addr)) << "rgrp " << addr << " not demoted\n" << b.fs->DumpGlocks();
  }
  // A creates in d again: it takes d's rgrp, whose refresh checks the header B wrote back
  // against B's LVB. That rgrp must be one B gave up, readable on A now, and not damaged.
  ASSERT_TRUE(a.fs->Mknod(dir->ino, "after", 0100644, 0, RootCred()).ok());
  uint64_t r = 0;
  for (uint64_t addr : checked) {
    glock::LockModule::Lvb v;
    if (r == 0 && a.lm->ReadLvb({glock::GlockType::kRgrp, addr}, &v)) r = addr;
  }
  ASSERT_NE(r, 0u) << "A took none of the rgrps B gave up\n" << a.lm->Dump();
  auto rgrp_line = [&](Node& n, uint64_t addr) {
    const std::string glocks = n.fs->DumpGlocks();
    const std::string want = " R: n:" + std::to_string(addr) + " ";
    const size_t at = glocks.find(want);
    return at == std::string::npos ? std::string() : glocks.substr(at, glocks.find('\n', at) - at);
  };
  {
    glock::LockModule::Lvb v;
    ASSERT_TRUE(a.lm->ReadLvb({glock::GlockType::kRgrp, r}, &v));
    EXPECT_EQ(format::RgrpLvb::Decode(v.data()).magic, format::kMagic);
    const std::string on_a = rgrp_line(a, r);
    ASSERT_FALSE(on_a.empty()) << a.fs->DumpGlocks();
    EXPECT_EQ(on_a.find(" damaged"), std::string::npos) << on_a;
  }
  // A lost write: A gives rgrp r up (its LVB now describes the header A wrote back), then the
  // header on disk changes behind the glocks.
  ASSERT_TRUE(give_up(a, r)) << a.fs->DumpGlocks();
  std::vector<uint8_t> blk = read_header(r);
  format::Rgrp hdr = format::Rgrp::Decode(blk.data());
  hdr.igeneration += 1;
  hdr.Encode(blk.data());  // bytes past the 128-byte header (bitmap) are kept
  ASSERT_TRUE((*dev)->WriteAt(r * kBs, blk.data(), blk.size()).ok());
  ASSERT_TRUE((*dev)->Flush().ok());
  // B allocates again near d: it reads rgrp r anew and finds it disagrees with its LVB.
  for (int i = 0; i < 5; ++i) {
    (void)b.fs->Mknod(bdir, "c" + std::to_string(i), 0100644, 0, RootCred());
  }
  const std::string on_b = rgrp_line(b, r);
  EXPECT_NE(on_b.find(" damaged"), std::string::npos)
      << "rgrp " << r << " not flagged: '" << on_b << "'\n"
      << b.fs->DumpGlocks();
  Unmount(&b);
  Unmount(&a);
}

TEST_F(ClusterCoreTest, TwoNodesSeeEachOthersChanges) {
  MakeVolume(3);
  Node a, b;
  ASSERT_TRUE(Mount(&a, 1).ok());
  ASSERT_TRUE(Mount(&b, 2).ok());
  EXPECT_NE(a.fs->Describe(), b.fs->Describe());  // different journals

  // A makes a directory and a file; B finds and reads them.
  auto dir = a.fs->Mkdir(a.fs->root(), "d", 0755, RootCred());
  ASSERT_TRUE(dir.ok()) << dir.status().ToString();
  auto f = a.fs->Mknod(dir->ino, "f", 0100644, 0, RootCred());
  ASSERT_TRUE(f.ok()) << f.status().ToString();
  const auto p1 = Pattern(64 << 10, 1);
  ASSERT_TRUE(a.fs->Write(f->ino, 0, p1, false).ok());
  Attr bf = MustLookupPath(*b.fs, {"d", "f"});
  ASSERT_EQ(bf.ino, f->ino);
  EXPECT_EQ(bf.size, p1.size());
  std::vector<uint8_t> buf(p1.size());
  ASSERT_EQ(*b.fs->Read(bf.ino, 0, buf), p1.size());
  EXPECT_EQ(buf, p1);

  // B extends it; A sees the new size and bytes (its cached dinode was dropped by the demote).
  const auto p2 = Pattern(64 << 10, 2);
  ASSERT_TRUE(b.fs->Write(bf.ino, p1.size(), p2, false).ok());
  auto attr = a.fs->GetAttr(f->ino);
  ASSERT_TRUE(attr.ok());
  EXPECT_EQ(attr->size, p1.size() + p2.size());
  ASSERT_EQ(*a.fs->Read(f->ino, p1.size(), buf), p2.size());
  EXPECT_EQ(buf, p2);

  // A renames it, B sees the new name only; B unlinks it, A no longer finds it.
  ASSERT_TRUE(a.fs->Rename(dir->ino, "f", a.fs->root(), "g", 0).ok());
  EXPECT_EQ(b.fs->Lookup(dir->ino, "f").status().code(), Code::kNotFound);
  EXPECT_TRUE(b.fs->Lookup(b.fs->root(), "g").ok());
  ASSERT_TRUE(b.fs->Unlink(b.fs->root(), "g").ok());
  EXPECT_EQ(a.fs->Lookup(a.fs->root(), "g").status().code(), Code::kNotFound);

  // chmod on B, stat on A.
  SetAttrRequest req;
  req.mask = kSetMode;
  req.mode = 0700;
  ASSERT_TRUE(b.fs->SetAttr(dir->ino, req, RootCred()).ok());
  EXPECT_EQ(a.fs->GetAttr(dir->ino)->mode & 07777, 0700u);

  Unmount(&b);
  Unmount(&a);
  // The unlinked file was freed by B (no node had it open): clean without a single-node mount.
  std::string report;
  EXPECT_TRUE(FsckClean(img_, &report)) << report;
}

// iopen glocks: a file unlinked on one node while open on another stays readable there and is
// freed by that node's last close; one unlinked while open nowhere is freed at once.
TEST_F(ClusterCoreTest, UnlinkedWhileOpenElsewhereIsFreedByTheLastCloser) {
  MakeVolume(2);
  Node a, b;
  ASSERT_TRUE(Mount(&a, 1).ok());
  ASSERT_TRUE(Mount(&b, 2).ok());
  auto f = a.fs->Mknod(a.fs->root(), "f", 0100644, 0, RootCred());
  ASSERT_TRUE(f.ok());
  const auto data = Pattern(1 << 20, 9);
  ASSERT_TRUE(a.fs->Write(f->ino, 0, data, false).ok());

  Attr bf = MustLookupPath(*b.fs, {"f"});
  ASSERT_TRUE(b.fs->Open(bf.ino, false, RootCred()).ok());
  ASSERT_TRUE(a.fs->Unlink(a.fs->root(), "f").ok());  // open on B: only marked unlinked
  EXPECT_EQ(b.fs->Lookup(b.fs->root(), "f").status().code(), Code::kNotFound);
  std::vector<uint8_t> buf(data.size());
  ASSERT_EQ(*b.fs->Read(bf.ino, 0, buf), data.size());  // still readable where it is open
  EXPECT_EQ(buf, data);
  ASSERT_TRUE(b.fs->Release(bf.ino).ok());  // B's last close frees it
  EXPECT_EQ(b.fs->GetAttr(bf.ino).status().code(), Code::kStale);

  // Open nowhere: freed by the unlink itself.
  auto g = b.fs->Mknod(b.fs->root(), "g", 0100644, 0, RootCred());
  ASSERT_TRUE(g.ok());
  ASSERT_TRUE(b.fs->Write(g->ino, 0, data, false).ok());
  ASSERT_TRUE(a.fs->Unlink(a.fs->root(), "g").ok());
  EXPECT_EQ(a.fs->GetAttr(g->ino).status().code(), Code::kStale);

  Unmount(&b);
  Unmount(&a);
  std::string report;
  EXPECT_TRUE(FsckClean(img_, &report)) << report;
}

TEST_F(ClusterCoreTest, ConcurrentCreatesAndWritesOnThreeNodes) {
  MakeVolume(3);
  Node n[3];
  for (uint32_t i = 0; i < 3; ++i) ASSERT_TRUE(Mount(&n[i], i + 1).ok()) << i;
  auto shared = n[0].fs->Mkdir(n[0].fs->root(), "shared", 0755, RootCred());
  ASSERT_TRUE(shared.ok());
  constexpr int kFiles = 60;
  std::atomic<int> errors{0};
  std::vector<std::thread> workers;
  for (int i = 0; i < 3; ++i) {
    workers.emplace_back([&, i] {
      FileSystem& fs = *n[i].fs;
      auto own = fs.Mkdir(fs.root(), "own" + std::to_string(i), 0755, RootCred());
      if (!own.ok()) {
        errors++;
        return;
      }
      for (int k = 0; k < kFiles; ++k) {
        // A private directory and the shared one (whose glock goes from node to node).
        const InodeNo parent = k % 2 == 0 ? own->ino : shared->ino;
        const std::string name = "n" + std::to_string(i) + "-" + std::to_string(k);
        auto f = fs.Mknod(parent, name, 0100644, 0, RootCred());
        if (!f.ok()) {
          ADD_FAILURE() << name << ": " << f.status().ToString();
          errors++;
          continue;
        }
        const auto data = Pattern(8192 + 4096 * (k % 5), i * 1000 + k);
        if (!fs.Write(f->ino, 0, data, false).ok()) errors++;
      }
    });
  }
  for (auto& w : workers) w.join();
  ASSERT_EQ(errors.load(), 0);
  // Every node sees every file with its contents.
  for (int viewer = 0; viewer < 3; ++viewer) {
    FileSystem& fs = *n[viewer].fs;
    std::set<std::string> names;
    ASSERT_TRUE(fs.ReadDir(shared->ino, 0, [&](const DirEntry& e) {
                    if (e.name != "." && e.name != "..") names.insert(e.name);
                    return true;
                  }).ok());
    EXPECT_EQ(names.size(), 3u * kFiles / 2) << "viewer " << viewer;
    for (int i = 0; i < 3; ++i) {
      for (int k = 0; k < kFiles; ++k) {
        const std::string name = "n" + std::to_string(i) + "-" + std::to_string(k);
        Attr a = k % 2 == 0 ? MustLookupPath(fs, {"own" + std::to_string(i), name})
                            : MustLookupPath(fs, {"shared", name});
        const auto want = Pattern(8192 + 4096 * (k % 5), i * 1000 + k);
        std::vector<uint8_t> got(want.size());
        auto r = fs.Read(a.ino, 0, got);
        ASSERT_TRUE(r.ok()) << name;
        EXPECT_EQ(got, want) << name << " read on node " << viewer;
      }
    }
  }
  for (int i = 2; i >= 0; --i) Unmount(&n[i]);
  // Nothing was unlinked: the volume the three nodes left is clean as it is (statfs included:
  // each node folded its delta into the master under the master's glock).
  std::string report;
  EXPECT_TRUE(FsckClean(img_, &report)) << report;
  ExpectCleanAfterSingleNodeMount();
}

// Each node puts new directories in its own share of the rgrps (every second one here), so two
// nodes creating trees rarely lock the same rgrps. The volume has 32 MiB rgrps (8192 blocks), so
// block / 8192 tells the rgrp of a directory's dinode.
TEST_F(ClusterCoreTest, NodesPutNewDirectoriesInTheirOwnRgrps) {
  MakeVolume(2);
  Node a, b;
  ASSERT_TRUE(Mount(&a, 1).ok());
  ASSERT_TRUE(Mount(&b, 2).ok());
  std::set<uint64_t> rgrps_a, rgrps_b;
  for (int i = 0; i < 4; ++i) {
    auto da = a.fs->Mkdir(a.fs->root(), "a" + std::to_string(i), 0755, RootCred());
    auto db = b.fs->Mkdir(b.fs->root(), "b" + std::to_string(i), 0755, RootCred());
    ASSERT_TRUE(da.ok() && db.ok());
    rgrps_a.insert(da->ino / 8192);
    rgrps_b.insert(db->ino / 8192);
  }
  for (uint64_t r : rgrps_a) EXPECT_EQ(rgrps_b.count(r), 0u) << "both nodes use rgrp " << r;
  EXPECT_GE(rgrps_a.size(), 2u);  // still spread over the node's share
  Unmount(&b);
  Unmount(&a);
  std::string report;
  EXPECT_TRUE(FsckClean(img_, &report)) << report;
}

TEST_F(ClusterCoreTest, JournalsAreClaimedOnePerNode) {
  MakeVolume(2);
  Node a, b, c, d;
  ASSERT_TRUE(Mount(&a, 1, /*jid=*/1).ok());
  // A named journal in use is refused; the next free one is taken without a name.
  Status busy = Mount(&b, 2, /*jid=*/1);
  EXPECT_EQ(busy.code(), Code::kBusy) << busy.ToString();
  Unmount(&b);
  ASSERT_TRUE(Mount(&c, 3).ok());
  // A third node finds no journal left.
  Status full = Mount(&d, 4);
  EXPECT_EQ(full.code(), Code::kBusy) << full.ToString();
  EXPECT_NE(full.message().find("gfs2_jadd"), std::string::npos) << full.ToString();
  Unmount(&d);
  Unmount(&c);
  Unmount(&a);
  ExpectCleanAfterSingleNodeMount();
}

}  // namespace
}  // namespace ugfs2
