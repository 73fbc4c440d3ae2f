// Many threads against one engine: creates, writes, reads, renames, unlinks and fsyncs in shared
// and private directories, with the periodic flusher running. Meant for the TSan build as much as
// for the normal one. Ends with unmount and fsck-oracle CLEAN, and every surviving file readable
// with the contents its writer left.
#include <sys/stat.h>

#include <atomic>
#include <map>
#include <mutex>
#include <random>
#include <thread>

#include <gtest/gtest.h>

#include "engine_test_util.h"
#include "fs/file_system.h"

namespace ugfs2 {
namespace {

using testing::FsckClean;
using testing::MakeImage;
using testing::MountImage;
using testing::Pattern;
using testing::RootCred;
using testing::TempDir;

TEST(ConcurrencyTest, ThreadsOnSharedAndPrivateDirectories) {
  TempDir dir;
  std::string img = MakeImage(dir, "v.img", 256, 4096);
  MountOptions opts;
  opts.commit_interval_s = 1;
  auto fs = MountImage(img, opts);
  ASSERT_TRUE(fs);
  auto shared = fs->Mkdir(fs->root(), "shared", 0755, RootCred());
  ASSERT_TRUE(shared.ok());
  constexpr int kThreads = 8;
  constexpr int kOps = 400;
  std::mutex mu;
  std::map<std::string, uint8_t> expect;  // "t<i>/name" -> fill byte, for private files
  std::atomic<int> errors{0};
  auto worker = [&](int t) {
    std::mt19937 rng(t * 7919 + 1);
    auto priv = fs->Mkdir(fs->root(), "t" + std::to_string(t), 0755, RootCred());
    if (!priv.ok()) {
      errors++;
      return;
    }
    for (int i = 0; i < kOps; ++i) {
      int op = static_cast<int>(rng() % 10);
      std::string name = "f" + std::to_string(rng() % 30);
      InodeNo d = (op % 2) ? shared->ino : priv->ino;
      if (op < 4) {
        auto a = fs->Lookup(d, name);
        if (!a.ok()) a = fs->Mknod(d, name, 0100644, 0, RootCred());
        if (!a.ok()) continue;  // a racing thread may have removed or created it
        uint8_t fill = static_cast<uint8_t>(rng());
        std::vector<uint8_t> data(1 + rng() % 20000, fill);
        if (!fs->Write(a->ino, 0, data, false).ok()) continue;
        SetAttrRequest req;
        req.mask = kSetSize;
        req.size = data.size();
        (void)fs->SetAttr(a->ino, req, RootCred());
        if (d == priv->ino) {
          std::lock_guard<std::mutex> l(mu);
          expect["t" + std::to_string(t) + "/" + name] = fill;
        }
      } else if (op < 6) {
        auto a = fs->Lookup(d, name);
        if (!a.ok()) continue;
        std::vector<uint8_t> buf(a->size);
        (void)fs->Read(a->ino, 0, buf);
        std::vector<DirEntry> ents;
        (void)fs->ReadDir(d, 0, [&](const DirEntry& e) {
          ents.push_back(e);
          return true;
        });
      } else if (op < 7) {
        std::string to = "f" + std::to_string(rng() % 30);
        if (fs->Rename(d, name, d, to, 0).ok() && d == priv->ino) {
          std::lock_guard<std::mutex> l(mu);
          std::string p = "t" + std::to_string(t) + "/";
          auto it = expect.find(p + name);
          if (it != expect.end() && name != to) {
            expect[p + to] = it->second;
            expect.erase(p + name);
          }
        }
      } else if (op < 9) {
        if (fs->Unlink(d, name).ok() && d == priv->ino) {
          std::lock_guard<std::mutex> l(mu);
          expect.erase("t" + std::to_string(t) + "/" + name);
        }
      } else {
        if (!fs->Fsync(priv->ino, false).ok()) errors++;
      }
    }
  };
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) threads.emplace_back(worker, t);
  for (auto& th : threads) th.join();
  EXPECT_EQ(errors.load(), 0);
  for (const auto& [path, fill] : expect) {
    auto slash = path.find('/');
    auto d = fs->Lookup(fs->root(), path.substr(0, slash));
    ASSERT_TRUE(d.ok());
    auto a = fs->Lookup(d->ino, path.substr(slash + 1));
    ASSERT_TRUE(a.ok()) << path;
    std::vector<uint8_t> buf(a->size);
    ASSERT_TRUE(fs->Read(a->ino, 0, buf).ok());
    for (uint8_t b : buf) ASSERT_EQ(b, fill) << path;
  }
  ASSERT_TRUE(fs->Unmount().ok());
  fs.reset();
  std::string report;
  EXPECT_TRUE(FsckClean(img, &report)) << report;
}

// Operations on many inodes at once with every glock demoted again and again underneath (what
// remote requests do): creates, writes, reads, renames within and between directories (the
// rename glock, out-of-order child glocks and back-off), mkdir/rmdir, unlinks and fsyncs. No
// operation may fail for locking reasons, every file keeps its content, fsck is CLEAN.
TEST(ConcurrencyTest, ForcedDemotesUnderCrossDirectoryRenames) {
  TempDir dir;
  std::string img = MakeImage(dir, "v.img", 256, 4096);
  MountOptions opts;
  opts.commit_interval_s = 1;
  auto fs = MountImage(img, opts);
  ASSERT_TRUE(fs);
  constexpr int kDirs = 4;
  std::vector<InodeNo> dirs;
  for (int d = 0; d < kDirs; ++d) {
    auto a = fs->Mkdir(fs->root(), "d" + std::to_string(d), 0755, RootCred());
    ASSERT_TRUE(a.ok());
    dirs.push_back(a->ino);
  }
  struct Item {
    int dir = 0;
    uint32_t seed = 0;
    size_t len = 0;
  };
  constexpr int kThreads = 6;
  constexpr int kOps = 300;
  std::atomic<bool> stop{false};
  std::atomic<int> errors{0};
  std::atomic<uint64_t> demotes{0};
  std::mutex mu;  // guards first_error and survivors
  std::string first_error;
  std::map<std::string, Item> survivors;
  auto fail = [&](const std::string& what, const Status& st) {
    errors++;
    std::lock_guard<std::mutex> l(mu);
    if (first_error.empty()) first_error = what + ": " + st.ToString();
  };
  std::thread demoter([&] {
    while (!stop.load()) demotes += fs->DemoteAllGlocks();
  });
  auto worker = [&](int t) {
    std::mt19937 rng(t * 104729 + 3);
    // Each thread owns the files named p<t>_*, which it moves between the shared directories.
    std::map<std::string, Item> mine;
    for (int i = 0; i < kOps; ++i) {
      const int op = static_cast<int>(rng() % 8);
      const std::string name = "p" + std::to_string(t) + "_" + std::to_string(rng() % 8);
      auto it = mine.find(name);
      if (op < 3) {  // create or overwrite
        Item item{it != mine.end() ? it->second.dir : static_cast<int>(rng() % kDirs),
                  static_cast<uint32_t>(rng()), 1 + rng() % 30000};
        auto a = it != mine.end() ? fs->Lookup(dirs[item.dir], name)
                                  : fs->Mknod(dirs[item.dir], name, 0100644, 0, RootCred());
        if (!a.ok()) {
          fail("create/lookup " + name, a.status());
          continue;
        }
        SetAttrRequest req;
        req.mask = kSetSize;
        req.size = 0;
        if (auto r = fs->SetAttr(a->ino, req, RootCred()); !r.ok()) fail("truncate", r.status());
        if (auto w = fs->Write(a->ino, 0, Pattern(item.len, item.seed), false); !w.ok()) {
          fail("write " + name, w.status());
          continue;
        }
        mine[name] = item;
      } else if (op < 5 && it != mine.end()) {  // move to another directory (or rename in place)
        const int to = static_cast<int>(rng() % kDirs);
        const std::string to_name = "p" + std::to_string(t) + "_" + std::to_string(rng() % 8);
        if (to_name != name && mine.count(to_name)) continue;  // would replace: keep it simple
        if (Status st = fs->Rename(dirs[it->second.dir], name, dirs[to], to_name, 0); !st.ok()) {
          fail("rename " + name, st);
          continue;
        }
        Item item = it->second;
        item.dir = to;
        mine.erase(it);
        mine[to_name] = item;
      } else if (op < 6 && it != mine.end()) {  // verify
        auto a = fs->Lookup(dirs[it->second.dir], name);
        if (!a.ok()) {
          fail("lookup " + name, a.status());
          continue;
        }
        std::vector<uint8_t> buf(a->size);
        auto r = fs->Read(a->ino, 0, buf);
        if (!r.ok() || buf != Pattern(it->second.len, it->second.seed)) {
          fail("content of " + name, r.ok() ? Status::Corrupt("mismatch") : r.status());
        }
      } else if (op < 7) {  // a directory of its own, created and removed
        const std::string dn = "q" + std::to_string(t);
        InodeNo d = dirs[rng() % kDirs];
        if (auto m = fs->Mkdir(d, dn, 0755, RootCred()); m.ok()) {
          if (Status st = fs->Rmdir(d, dn); !st.ok()) fail("rmdir", st);
        } else {
          fail("mkdir", m.status());
        }
      } else if (it != mine.end()) {
        if (Status st = fs->Unlink(dirs[it->second.dir], name); !st.ok()) {
          fail("unlink " + name, st);
          continue;
        }
        mine.erase(it);
      } else if (Status st = fs->Fsync(dirs[0], false); !st.ok()) {
        fail("fsync", st);
      }
    }
    std::lock_guard<std::mutex> l(mu);
    survivors.insert(mine.begin(), mine.end());
  };
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) threads.emplace_back(worker, t);
  for (auto& th : threads) th.join();
  stop = true;
  demoter.join();
  EXPECT_EQ(errors.load(), 0) << first_error;
  EXPECT_GT(demotes.load(), 100u) << "the demoter hardly ran";
  for (const auto& [name, item] : survivors) {
    auto a = fs->Lookup(dirs[item.dir], name);
    ASSERT_TRUE(a.ok()) << name;
    std::vector<uint8_t> buf(a->size);
    ASSERT_TRUE(fs->Read(a->ino, 0, buf).ok());
    EXPECT_EQ(buf, Pattern(item.len, item.seed)) << name;
  }
  ASSERT_TRUE(fs->Unmount().ok());
  fs.reset();
  std::string report;
  EXPECT_TRUE(FsckClean(img, &report)) << report;
}

}  // namespace
}  // namespace ugfs2
