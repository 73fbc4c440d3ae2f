// Crash tests on the fault-injecting device: a random metadata + data workload, a power cut at a
// random point (unsynced writes dropped or torn), then replay at mount. Checks after every cut:
//  - the volume mounts (journal replay) and fsck-oracle calls it CLEAN after unmount;
//  - every file that was fsync'd and not touched afterwards is present with the right contents;
//  - no block of one file is visible in another (each 8-byte word of file data carries its
//    file's id, so a leaked block shows up as a foreign id).
// Seeded and reproducible: UGFS2_CRASH_SEED=<seed> reruns one schedule, UGFS2_CRASH_BASE=<seed>
// fixes the first seed of every test, UGFS2_CRASH_ITERS / UGFS2_CRASH_CUTS set the counts.
#include <sys/stat.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <map>
#include <mutex>
#include <random>
#include <set>
#include <unordered_map>

#include <gtest/gtest.h>

#include "block/fault_injecting_block_device.h"
#include "common/endian.h"
#include "engine_test_util.h"
#include "fs/file_system.h"

namespace ugfs2 {
namespace {

using testing::FsckClean;
using testing::MakeImage;
using testing::RootCred;
using testing::TempDir;

// The image's contents in memory: the crash tests cut and rebuild this copy.
std::unique_ptr<BlockDevice> LoadImage(const std::string& image) {
  auto file = OpenFileBlockDevice(image, {});
  if (!file.ok()) {
    ADD_FAILURE() << file.status().ToString();
    return nullptr;
  }
  auto mem = CopyToMemory(**file);
  if (!mem.ok()) {
    ADD_FAILURE() << mem.status().ToString();
    return nullptr;
  }
  return std::move(*mem);
}

// The first seed of a test's schedules: UGFS2_CRASH_BASE if set (CI pins it, so a run is
// reproducible), otherwise random (development runs explore new schedules).
uint64_t BaseSeed() {
  if (const char* b = getenv("UGFS2_CRASH_BASE")) return std::strtoull(b, nullptr, 10);
  return std::random_device{}();
}

struct FileModel {
  uint32_t id = 0;
  std::vector<uint8_t> data;
};

// Name -> file, flat namespace over a few directories ("dN/fM").
using Model = std::map<std::string, std::shared_ptr<FileModel>>;  // links share the model

void Fill(std::vector<uint8_t>& data, uint64_t off, uint64_t len, uint32_t id) {
  if (data.size() < off + len) data.resize(off + len, 0);
  for (uint64_t w = off / 8; w * 8 < off + len; ++w) {
    uint8_t word[8];
    StoreBe64(word, (uint64_t{id} << 32) | static_cast<uint32_t>(w + 1));
    for (int k = 0; k < 8; ++k) {
      uint64_t pos = w * 8 + k;
      if (pos >= off && pos < off + len) data[pos] = word[k];
    }
  }
}

class Workload {
 public:
  // `position` (optional) reports how far the device's write history has got; with it the
  // workload records every fsync point and every name it touches, for checking many cut points
  // of one run.
  Workload(FileSystem* fs, uint64_t seed, std::function<size_t()> position = {})
      : fs_(fs), rng_(seed), position_(std::move(position)) {}

  void Run(int ops) {
    for (int i = 0; i < ops; ++i) Step();
  }
  const Model& synced() const { return synced_; }
  const std::set<std::string>& touched() const { return touched_; }
  // (position when SyncFs returned, the model then)
  const std::vector<std::pair<size_t, Model>>& sync_history() const { return sync_history_; }
  // (position when the touching operation started, name)
  const std::vector<std::pair<size_t, std::string>>& touch_history() const {
    return touch_history_;
  }

 private:
  InodeNo Dir(const std::string& d) {
    auto a = fs_->Lookup(fs_->root(), d);
    if (a.ok()) return a->ino;
    auto m = fs_->Mkdir(fs_->root(), d, 0755, RootCred());
    return m.ok() ? m->ino : 0;
  }
  std::pair<InodeNo, std::string> Split(const std::string& path) {
    auto slash = path.find('/');
    return {Dir(path.substr(0, slash)), path.substr(slash + 1)};
  }
  std::string RandomPath() {
    return "d" + std::to_string(rng_() % 3) + "/f" + std::to_string(rng_() % 40);
  }
  std::string Existing() {
    if (model_.empty()) return {};
    auto it = model_.begin();
    std::advance(it, rng_() % model_.size());
    return it->first;
  }
  // Marks p and every other name of the same inode as changed since the last fsync.
  void Touch(const std::string& p) {
    touched_.insert(p);
    if (position_) touch_history_.emplace_back(op_start_, p);
    auto it = model_.find(p);
    if (it == model_.end()) return;
    for (const auto& [q, f] : model_) {
      if (f == it->second) {
        touched_.insert(q);
        if (position_) touch_history_.emplace_back(op_start_, q);
      }
    }
  }

  void Step() {
    if (position_) op_start_ = position_();
    int op = static_cast<int>(rng_() % 100);
    if (op < 20) {  // create + write
      std::string p = RandomPath();
      if (model_.count(p)) return;
      auto [dir, name] = Split(p);
      auto a = fs_->Mknod(dir, name, 0100644, 0, RootCred());
      if (!a.ok()) return;
      auto f = std::make_shared<FileModel>();
      f->id = next_id_++;
      model_[p] = f;
      uint64_t len = (rng_() % 3 == 0 ? rng_() % 3000 : rng_() % 300000) & ~uint64_t{7};
      std::vector<uint8_t> data;
      Fill(data, 0, len, f->id);
      if (len && !fs_->Write(a->ino, 0, data, false).ok()) return;
      f->data = data;
      Touch(p);
    } else if (op < 40) {  // overwrite / extend
      std::string p = Existing();
      if (p.empty()) return;
      auto [dir, name] = Split(p);
      auto a = fs_->Lookup(dir, name);
      if (!a.ok()) return;
      FileModel& f = *model_[p];
      uint64_t off = rng_() % (f.data.size() + 100000) & ~uint64_t{7};  // whole words
      uint64_t len = 8 + (rng_() % 70000 & ~uint64_t{7});
      std::vector<uint8_t> tmp;
      Fill(tmp, off, len, f.id);
      std::vector<uint8_t> piece(tmp.begin() + static_cast<long>(off), tmp.end());
      Touch(p);
      if (!fs_->Write(a->ino, off, piece, false).ok()) return;
      Fill(f.data, off, len, f.id);
    } else if (op < 50) {  // truncate
      std::string p = Existing();
      if (p.empty()) return;
      auto [dir, name] = Split(p);
      auto a = fs_->Lookup(dir, name);
      if (!a.ok()) return;
      FileModel& f = *model_[p];
      SetAttrRequest req;
      req.mask = kSetSize;
      req.size = rng_() % (f.data.size() + 50000) & ~uint64_t{7};
      Touch(p);
      if (!fs_->SetAttr(a->ino, req, RootCred()).ok()) return;
      f.data.resize(req.size, 0);
    } else if (op < 62) {  // unlink
      std::string p = Existing();
      if (p.empty()) return;
      auto [dir, name] = Split(p);
      Touch(p);
      if (!fs_->Unlink(dir, name).ok()) return;
      model_.erase(p);
    } else if (op < 74) {  // rename (maybe replacing)
      std::string p = Existing();
      if (p.empty()) return;
      std::string q = RandomPath();
      if (p == q) return;
      auto [d1, n1] = Split(p);
      auto [d2, n2] = Split(q);
      Touch(p);
      Touch(q);
      if (!fs_->Rename(d1, n1, d2, n2, 0).ok()) return;
      model_[q] = model_[p];
      model_.erase(p);
    } else if (op < 80) {  // hard link
      std::string p = Existing();
      if (p.empty()) return;
      std::string q = RandomPath();
      if (model_.count(q)) return;
      auto [d1, n1] = Split(p);
      auto [d2, n2] = Split(q);
      auto a = fs_->Lookup(d1, n1);
      if (!a.ok()) return;
      Touch(q);
      if (!fs_->Link(a->ino, d2, n2).ok()) return;
      model_[q] = model_[p];
    } else if (op < 86) {  // directory churn with many entries
      std::string d = "big" + std::to_string(rng_() % 2);
      auto m = fs_->Mkdir(fs_->root(), d, 0755, RootCred());
      InodeNo ino = m.ok() ? m->ino : Dir(d);
      int n = static_cast<int>(rng_() % 150);
      for (int k = 0; k < n; ++k) {
        (void)fs_->Mknod(ino, "e" + std::to_string(rng_() % 400) + "_longer_entry_name", 0100600, 0,
                         RootCred());
      }
      if (rng_() % 4 == 0) {
        for (int k = 0; k < 400; ++k)
          (void)fs_->Unlink(ino, "e" + std::to_string(k) + "_longer_entry_name");
        (void)fs_->Rmdir(fs_->root(), d);
      }
    } else {  // fsync: everything so far is durable
      if (fs_->SyncFs().ok()) {
        synced_.clear();
        for (const auto& [p, f] : model_) synced_[p] = std::make_shared<FileModel>(*f);
        touched_.clear();
        if (position_) sync_history_.emplace_back(position_(), synced_);
      }
    }
  }

  FileSystem* fs_;
  std::mt19937_64 rng_;
  Model model_, synced_;
  std::set<std::string> touched_;
  uint32_t next_id_ = 1;
  std::function<size_t()> position_;
  size_t op_start_ = 0;
  std::vector<std::pair<size_t, Model>> sync_history_;
  std::vector<std::pair<size_t, std::string>> touch_history_;
};

// Writes a device's contents to a file (fsck-oracle needs a path).
void DumpDevice(BlockDevice& dev, const std::string& path) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  std::vector<uint8_t> buf(1 << 20);
  for (uint64_t off = 0; off < dev.Size(); off += buf.size()) {
    size_t n = static_cast<size_t>(std::min<uint64_t>(buf.size(), dev.Size() - off));
    ASSERT_TRUE(dev.ReadAt(off, buf.data(), n).ok());
    out.write(reinterpret_cast<const char*>(buf.data()), static_cast<std::streamsize>(n));
  }
}

void CheckAfterCrash(FileSystem& fs, const Model& synced, const std::set<std::string>& touched,
                     uint64_t seed) {
  // Durability of fsync'd, untouched files.
  for (const auto& [path, f] : synced) {
    if (touched.count(path)) continue;
    auto slash = path.find('/');
    auto d = fs.Lookup(fs.root(), path.substr(0, slash));
    ASSERT_TRUE(d.ok()) << "seed " << seed << ": synced dir of " << path << " lost";
    auto a = fs.Lookup(d->ino, path.substr(slash + 1));
    ASSERT_TRUE(a.ok()) << "seed " << seed << ": synced file " << path << " lost";
    ASSERT_EQ(a->size, f->data.size()) << "seed " << seed << ": " << path;
    std::vector<uint8_t> got(f->data.size());
    auto r = fs.Read(a->ino, 0, got);
    ASSERT_TRUE(r.ok());
    ASSERT_EQ(got, f->data) << "seed " << seed << ": content of synced file " << path;
  }
  // No foreign data anywhere.
  for (int d = 0; d < 3; ++d) {
    auto dir = fs.Lookup(fs.root(), "d" + std::to_string(d));
    if (!dir.ok()) continue;
    std::vector<DirEntry> ents;
    ASSERT_TRUE(fs.ReadDir(dir->ino, 0, [&](const DirEntry& e) {
                    ents.push_back(e);
                    return true;
                  }).ok());
    for (const auto& e : ents) {
      if (e.name == "." || e.name == "..") continue;
      auto a = fs.GetAttr(e.ino);
      ASSERT_TRUE(a.ok()) << "seed " << seed << ": dangling entry " << e.name;
      std::vector<uint8_t> got(a->size);
      ASSERT_TRUE(fs.Read(e.ino, 0, got).ok());
      uint32_t id = 0;
      for (size_t w = 0; w + 8 <= got.size(); w += 8) {
        uint64_t word = LoadBe64(got.data() + w);
        if (word == 0) continue;
        uint32_t wid = static_cast<uint32_t>(word >> 32);
        if (id == 0) id = wid;
        ASSERT_EQ(wid, id) << "seed " << seed << ": file d" << d << "/" << e.name
                           << " shows another file's data at offset " << w;
        ASSERT_EQ(static_cast<uint32_t>(word), w / 8 + 1)
            << "seed " << seed << ": misplaced data in d" << d << "/" << e.name << " at " << w;
      }
    }
  }
}

void RunSchedule(const std::string& image, uint64_t seed, const TempDir& dir) {
  SCOPED_TRACE("crash seed " + std::to_string(seed) +
               " (rerun with UGFS2_CRASH_SEED=" + std::to_string(seed) + ")");
  std::mt19937_64 rng(seed);
  std::unique_ptr<BlockDevice> base = LoadImage(image);
  ASSERT_TRUE(base);
  auto* fault = new FaultInjectingBlockDevice(base.get());
  MountOptions opts;
  opts.commit_interval_s = 3600;  // flushes come from the workload and the batch limit only
  auto fs = FileSystem::Mount(std::unique_ptr<BlockDevice>(fault), opts);
  ASSERT_TRUE(fs.ok()) << fs.status().ToString();
  Workload w(fs->get(), seed);
  w.Run(static_cast<int>(20 + rng() % 300));
  fault->Crash(rng(), rng() % 2 == 0);
  fs->reset();  // the crashed instance writes nothing more

  // Remount on the same contents: replay.
  auto again = std::make_unique<FaultInjectingBlockDevice>(base.get());
  auto fs2 = FileSystem::Mount(std::move(again), {});
  ASSERT_TRUE(fs2.ok()) << "remount after crash: " << fs2.status().ToString();
  CheckAfterCrash(**fs2, w.synced(), w.touched(), seed);
  ASSERT_TRUE((*fs2)->Unmount().ok());
  fs2->reset();
  std::string out = dir.path() + "/crashed.img";
  DumpDevice(*base, out);
  std::string report;
  ASSERT_TRUE(FsckClean(out, &report)) << report;
}

TEST(CrashTest, RandomCutsReplayToConsistentVolume) {
  TempDir dir;
  std::string image = MakeImage(dir, "base.img", 48, 1024);
  const char* one = getenv("UGFS2_CRASH_SEED");
  if (one) {
    RunSchedule(image, std::strtoull(one, nullptr, 10), dir);
    return;
  }
  const char* it = getenv("UGFS2_CRASH_ITERS");
  int iters = it ? std::atoi(it) : 40;
  uint64_t base_seed = BaseSeed();
  std::printf("crash test base seed %llu, %d schedules\n",
              static_cast<unsigned long long>(base_seed), iters);
  for (int i = 0; i < iters && !HasFatalFailure(); ++i) RunSchedule(image, base_seed + i, dir);
}

}  // namespace
}  // namespace ugfs2

namespace ugfs2 {
namespace {

// path -> description (type, size, links, content hash or link target)
void WalkTree(FileSystem& fs, InodeNo dir, const std::string& prefix,
              std::map<std::string, std::string>* out) {
  std::vector<DirEntry> ents;
  ASSERT_TRUE(fs.ReadDir(dir, 0, [&](const DirEntry& e) {
                  ents.push_back(e);
                  return true;
                }).ok());
  for (const auto& e : ents) {
    if (e.name == "." || e.name == "..") continue;
    auto a = fs.GetAttr(e.ino);
    ASSERT_TRUE(a.ok()) << prefix << e.name;
    std::string path = prefix + e.name;
    std::string desc =
        std::to_string(a->mode) + " " + std::to_string(a->size) + " " + std::to_string(a->nlink);
    if (S_ISREG(a->mode)) {
      std::vector<uint8_t> data(a->size);
      ASSERT_TRUE(fs.Read(e.ino, 0, data).ok());
      uint64_t h = 1469598103934665603ull;
      for (uint8_t b : data) h = (h ^ b) * 1099511628211ull;
      desc += " " + std::to_string(h);
    } else if (S_ISLNK(a->mode)) {
      desc += " " + *fs.ReadLink(e.ino);
    }
    (*out)[path] = desc;
    if (S_ISDIR(a->mode)) WalkTree(fs, e.ino, path + "/", out);
  }
}

// The real fsck.gfs2 -y, replaying a journal our engine left dirty, must produce the same
// namespace and contents as our own replay: proof that our log is real GFS2.
TEST(CrashTest, FsckReplayMatchesOurReplay) {
  TempDir dir;
  std::string image = MakeImage(dir, "base.img", 48, 4096);
  uint64_t seed = BaseSeed();
  if (const char* s = getenv("UGFS2_CRASH_SEED")) seed = std::strtoull(s, nullptr, 10);
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::unique_ptr<BlockDevice> base = LoadImage(image);
  ASSERT_TRUE(base);
  auto* fault = new FaultInjectingBlockDevice(base.get());
  MountOptions opts;
  opts.commit_interval_s = 3600;
  auto fs = FileSystem::Mount(std::unique_ptr<BlockDevice>(fault), opts);
  ASSERT_TRUE(fs.ok());
  Workload w(fs->get(), seed);
  w.Run(200);
  ASSERT_TRUE((*fs)->SyncFs().ok());
  // The last commit is durable; its in-place writes are not: lose all of them.
  fault->Crash(seed, false);
  fs->reset();
  std::string a = dir.path() + "/a.img", b = dir.path() + "/b.img";
  DumpDevice(*base, a);
  DumpDevice(*base, b);
  std::string out;
  EXPECT_NE(testing::RunCommand("fsck.gfs2 -n " + a, &out), -1);
  EXPECT_NE(out.find("Journal recovery complete"), std::string::npos)
      << "expected a dirty journal to replay:\n"
      << out;
  int rc = testing::RunCommand("fsck.gfs2 -y " + b, &out);
  EXPECT_TRUE(rc == 0 || rc == 1) << out;
  std::map<std::string, std::string> ta, tb;
  {
    auto fa = testing::MountImage(a);  // our replay
    ASSERT_TRUE(fa);
    WalkTree(*fa, fa->root(), "/", &ta);
    ASSERT_TRUE(fa->Unmount().ok());
  }
  {
    auto fb = testing::MountImage(b);
    ASSERT_TRUE(fb);
    WalkTree(*fb, fb->root(), "/", &tb);
    ASSERT_TRUE(fb->Unmount().ok());
  }
  EXPECT_GT(ta.size(), 3u);
  EXPECT_EQ(ta, tb);
  std::string report;
  EXPECT_TRUE(FsckClean(a, &report)) << report;
  EXPECT_TRUE(FsckClean(b, &report)) << report;
}

}  // namespace
}  // namespace ugfs2

namespace ugfs2 {
namespace {

// Records every write and flush of one run so that the device can be rebuilt as it would be
// after a power cut at any point of that run.
class RecordingDevice final : public BlockDevice {
 public:
  explicit RecordingDevice(BlockDevice* base) : base_(base) {}
  struct Event {
    bool flush = false;
    uint64_t off = 0;
    std::vector<uint8_t> data;
  };
  Status ReadAt(uint64_t off, void* buf, size_t len) override {
    return base_->ReadAt(off, buf, len);
  }
  Status WriteAt(uint64_t off, const void* buf, size_t len) override {
    std::lock_guard<std::mutex> l(mu_);
    const auto* p = static_cast<const uint8_t*>(buf);
    events_.push_back({false, off, std::vector<uint8_t>(p, p + len)});
    return base_->WriteAt(off, buf, len);
  }
  Status Flush() override {
    std::lock_guard<std::mutex> l(mu_);
    events_.push_back({true, 0, {}});
    return base_->Flush();
  }
  uint64_t Size() const override { return base_->Size(); }
  std::string Describe() const override { return "recording"; }
  size_t position() {
    std::lock_guard<std::mutex> l(mu_);
    return events_.size();
  }
  const std::vector<Event>& events() const { return events_; }

 private:
  BlockDevice* base_;
  std::mutex mu_;
  std::vector<Event> events_;
};

// A copy-on-write view of an image: reads fall through to `base` unless a 4 KiB chunk was written.
// Makes a power-cut state cheap to build and mount without copying the whole image.
class OverlayDevice final : public BlockDevice {
 public:
  explicit OverlayDevice(const std::vector<uint8_t>* base) : base_(base) {}
  Status ReadAt(uint64_t off, void* buf, size_t len) override {
    if (off + len > base_->size()) return Status::IoError("read past end");
    auto* out = static_cast<uint8_t*>(buf);
    while (len > 0) {
      uint64_t chunk = off / kChunk, in = off % kChunk;
      size_t n = static_cast<size_t>(std::min<uint64_t>(len, kChunk - in));
      auto it = over_.find(chunk);
      const uint8_t* src = it != over_.end() ? it->second.data() + in : base_->data() + off;
      std::memcpy(out, src, n);
      out += n;
      off += n;
      len -= n;
    }
    return Status::Ok();
  }
  Status WriteAt(uint64_t off, const void* buf, size_t len) override {
    if (off + len > base_->size()) return Status::IoError("write past end");
    const auto* in = static_cast<const uint8_t*>(buf);
    while (len > 0) {
      uint64_t chunk = off / kChunk, pos = off % kChunk;
      size_t n = static_cast<size_t>(std::min<uint64_t>(len, kChunk - pos));
      auto it = over_.find(chunk);
      if (it == over_.end()) {
        size_t clen =
            static_cast<size_t>(std::min<uint64_t>(kChunk, base_->size() - chunk * kChunk));
        it = over_
                 .emplace(chunk, std::vector<uint8_t>(
                                     base_->begin() + static_cast<long>(chunk * kChunk),
                                     base_->begin() + static_cast<long>(chunk * kChunk + clen)))
                 .first;
      }
      std::memcpy(it->second.data() + pos, in, n);
      in += n;
      off += n;
      len -= n;
    }
    return Status::Ok();
  }
  Status Flush() override { return Status::Ok(); }
  uint64_t Size() const override { return base_->size(); }
  std::string Describe() const override { return "overlay"; }

 private:
  static constexpr uint64_t kChunk = 4096;
  const std::vector<uint8_t>* base_;
  std::unordered_map<uint64_t, std::vector<uint8_t>> over_;
};

// One workload run, then `cuts` power cuts at random points of it: each rebuilds the device from
// the initial image plus the durable writes plus a random subset (some torn) of the writes not
// yet covered by a flush, replays, and checks. fsck-oracle runs on every `fsck_every`-th cut.
void RunManyCuts(const std::string& image, uint64_t seed, int cuts, int fsck_every,
                 const TempDir& dir) {
  SCOPED_TRACE("multi-cut seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  std::unique_ptr<BlockDevice> initial = LoadImage(image);
  ASSERT_TRUE(initial);
  auto work = CopyToMemory(*initial);
  ASSERT_TRUE(work.ok());
  auto* rec = new RecordingDevice(work->get());
  MountOptions opts;
  opts.commit_interval_s = 3600;
  auto fs = FileSystem::Mount(std::unique_ptr<BlockDevice>(rec), opts);
  ASSERT_TRUE(fs.ok()) << fs.status().ToString();
  const size_t start = rec->position();
  Workload w(fs->get(), seed, [rec] { return rec->position(); });
  w.Run(250);
  const auto& ev = rec->events();
  const size_t end = ev.size();
  const uint64_t size = initial->Size();
  std::vector<uint8_t> base_image(size);  // becomes the durable image below
  ASSERT_TRUE(initial->ReadAt(0, base_image.data(), size).ok());
  // Cut points in increasing order, so the durable image can be advanced incrementally.
  std::vector<size_t> points(static_cast<size_t>(cuts));
  for (auto& k : points) k = start + static_cast<size_t>(rng() % (end - start + 1));
  std::sort(points.begin(), points.end());
  std::vector<uint8_t> durable = std::move(base_image);
  size_t durable_upto = 0;  // events [0, durable_upto) are applied to `durable`
  for (int c = 0; c < cuts && !::testing::Test::HasFatalFailure(); ++c) {
    const size_t k = points[static_cast<size_t>(c)];
    SCOPED_TRACE("cut after event " + std::to_string(k) + " of " + std::to_string(end));
    size_t last_flush = 0;  // writes before this index are durable
    for (size_t i = k; i > 0; --i) {
      if (ev[i - 1].flush) {
        last_flush = i - 1;
        break;
      }
    }
    for (; durable_upto < last_flush; ++durable_upto) {
      const auto& e = ev[durable_upto];
      if (!e.flush) std::memcpy(durable.data() + e.off, e.data.data(), e.data.size());
    }
    auto dev = std::make_unique<OverlayDevice>(&durable);
    auto apply = [&](const RecordingDevice::Event& e, size_t len) {
      if (len == 0) return;
      ASSERT_TRUE(dev->WriteAt(e.off, e.data.data(), len).ok());
    };
    for (size_t i = last_flush; i < k; ++i) {
      if (ev[i].flush) continue;
      switch (rng() % 4) {
        case 0:
          break;  // lost
        case 1:
          apply(ev[i], ev[i].data.size() / 512 > 1 ? 512 * (rng() % (ev[i].data.size() / 512)) : 0);
          break;  // torn
        default:
          apply(ev[i], ev[i].data.size());
      }
    }
    // What must have survived: the model of the latest fsync that completed before the cut.
    Model synced;
    size_t sync_pos = 0;
    for (const auto& [pos, m] : w.sync_history()) {
      if (pos <= k) {
        synced = m;
        sync_pos = pos;
      }
    }
    std::set<std::string> touched;
    for (const auto& [pos, name] : w.touch_history()) {
      if (pos >= sync_pos && pos <= k) touched.insert(name);
    }
    BlockDevice* raw = dev.get();
    auto fs2 = FileSystem::Mount(std::move(dev), {});
    ASSERT_TRUE(fs2.ok()) << "remount after cut: " << fs2.status().ToString();
    CheckAfterCrash(**fs2, synced, touched, seed);
    ASSERT_TRUE((*fs2)->Unmount().ok());
    if (c % fsck_every == 0) {
      std::string out = dir.path() + "/cut.img";
      DumpDevice(*raw, out);
      fs2->reset();
      std::string report;
      ASSERT_TRUE(FsckClean(out, &report)) << report;
    }
  }
  (void)(*fs)->Unmount();
}

TEST(CrashTest, ThousandsOfCutPoints) {
  TempDir dir;
  std::string image = MakeImage(dir, "base.img", 32, 1024);
  uint64_t seed = BaseSeed();
  if (const char* s = getenv("UGFS2_CRASH_SEED")) seed = std::strtoull(s, nullptr, 10);
  int runs = 4, cuts = 250;
  if (const char* s = getenv("UGFS2_CRASH_CUTS")) cuts = std::atoi(s);
  std::printf("multi-cut base seed %llu: %d runs x %d cuts\n",
              static_cast<unsigned long long>(seed), runs, cuts);
  for (int r = 0; r < runs && !HasFatalFailure(); ++r) RunManyCuts(image, seed + r, cuts, 15, dir);
}

}  // namespace
}  // namespace ugfs2
