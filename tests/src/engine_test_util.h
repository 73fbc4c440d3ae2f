// Helpers for engine tests: real mkfs.gfs2 images in a temp dir, fsck-oracle, mounting.
#ifndef UGFS2_TESTS_SRC_ENGINE_TEST_UTIL_H_
#define UGFS2_TESTS_SRC_ENGINE_TEST_UTIL_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "block/block_device.h"
#include "fs/file_system.h"

namespace ugfs2::testing {

// A temporary directory removed (recursively) on destruction.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

// Runs a shell command; returns its exit status. Output goes to *out if given.
int RunCommand(const std::string& cmd, std::string* out = nullptr);

// Makes a GFS2 image with the real mkfs.gfs2. Returns the image path.
std::string MakeImage(const TempDir& dir, const std::string& name, uint64_t size_mb, uint32_t bsize,
                      int journals = 1, const std::string& extra = "");

// Runs scripts/fsck-oracle; returns true iff it says CLEAN. *report gets its output.
bool FsckClean(const std::string& image, std::string* report);

// Mounts an image file (lock_nolock).
std::unique_ptr<FileSystem> MountImage(const std::string& image, MountOptions opts = {});

Cred RootCred();

// n pseudo-random bytes from `seed` (the same seed gives the same bytes).
std::vector<uint8_t> Pattern(size_t n, uint32_t seed);

}  // namespace ugfs2::testing

#endif  // UGFS2_TESTS_SRC_ENGINE_TEST_UTIL_H_
