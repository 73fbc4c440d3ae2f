#include "engine_test_util.h"

#include <stdlib.h>
#include <sys/wait.h>

#include <array>
#include <cstdio>
#include <filesystem>
#include <random>

#include <gtest/gtest.h>

namespace ugfs2::testing {

TempDir::TempDir() {
  char tmpl[] = "/tmp/ugfs2-test-XXXXXX";
  char* p = mkdtemp(tmpl);
  if (p == nullptr) std::abort();
  path_ = p;
}

TempDir::~TempDir() {
  std::error_code ec;
  std::filesystem::remove_all(path_, ec);
}

int RunCommand(const std::string& cmd, std::string* out) {
  std::string full = cmd + " 2>&1";
  FILE* f = popen(full.c_str(), "r");
  if (f == nullptr) return -1;
  std::array<char, 4096> buf;
  std::string text;
  size_t n;
  while ((n = fread(buf.data(), 1, buf.size(), f)) > 0) text.append(buf.data(), n);
  int st = pclose(f);
  if (out) *out = text;
  return WIFEXITED(st) ? WEXITSTATUS(st) : 128;
}

std::string MakeImage(const TempDir& dir, const std::string& name, uint64_t size_mb, uint32_t bsize,
                      int journals, const std::string& extra) {
  std::string img = dir.path() + "/" + name;
  std::string out;
  std::string cmd = "truncate -s " + std::to_string(size_mb) + "M " + img +
                    " && mkfs.gfs2 -O -p lock_nolock -j " + std::to_string(journals) + " -b " +
                    std::to_string(bsize) + " " + extra + " " + img;
  int rc = RunCommand(cmd, &out);
  EXPECT_EQ(rc, 0) << cmd << "\n" << out;
  return img;
}

bool FsckClean(const std::string& image, std::string* report) {
  const char* env = getenv("UGFS2_FSCK_ORACLE");
  std::string oracle = env ? env : std::string(UGFS2_SOURCE_DIR) + "/scripts/fsck-oracle";
  std::string out;
  int rc = RunCommand(oracle + " " + image, &out);
  if (report) *report = out;
  return rc == 0 && out.find("CLEAN") != std::string::npos &&
         out.find("NOT CLEAN") == std::string::npos;
}

std::unique_ptr<FileSystem> MountImage(const std::string& image, MountOptions opts) {
  auto dev = OpenFileBlockDevice(image, {});
  EXPECT_TRUE(dev.ok()) << dev.status().ToString();
  if (!dev.ok()) return nullptr;
  auto fs = FileSystem::Mount(std::move(*dev), opts);
  EXPECT_TRUE(fs.ok()) << fs.status().ToString();
  if (!fs.ok()) return nullptr;
  return std::move(*fs);
}

Cred RootCred() { return Cred{}; }

std::vector<uint8_t> Pattern(size_t n, uint32_t seed) {
  std::vector<uint8_t> v(n);
  std::mt19937 rng(seed);
  for (auto& b : v) b = static_cast<uint8_t>(rng());
  return v;
}

}  // namespace ugfs2::testing
