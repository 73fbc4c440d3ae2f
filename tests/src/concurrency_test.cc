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

}  // namespace
}  // namespace ugfs2
