// Test helpers for the journal tests: temp dirs, mkfs.gfs2-made images, fsck.gfs2 and the fsck
// oracle, a minimal lookup of the system files (stuffed and stuffed-table exhash directories
// only, which is all a fresh mkfs image has), and opening journal<jid>.
#ifndef UGFS2_TESTS_SRC_JOURNAL_TEST_UTIL_H_
#define UGFS2_TESTS_SRC_JOURNAL_TEST_UTIL_H_

#include <cstdint>
#include <string>
#include <vector>

#include "block/block_device.h"
#include "common/status.h"
#include "journal/journal.h"

namespace ugfs2::journal::testutil {

// A fresh directory under $TMPDIR (or /tmp), removed with its contents on destruction.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

// Runs a shell command; returns its exit code and merged stdout+stderr.
struct CmdResult {
  int rc = -1;
  std::string out;
};
CmdResult RunCommand(const std::string& cmd);

bool HaveMkfs();
bool HaveFsck();

// truncate -s <size> dir/name && mkfs.gfs2 -O -p lock_nolock -j <journals> -b <bsize>.
Result<std::string> MakeImage(const std::string& dir, const std::string& name, uint32_t bsize,
                              int journals = 2, uint64_t size = 256ull << 20);
// Copies a file (cp --sparse=always).
Status CopyFile(const std::string& from, const std::string& to);
// Path of scripts/fsck-oracle ($UGFS2_FSCK_ORACLE, else relative to the repository).
std::string FsckOraclePath();
// Runs the fsck oracle: rc 0 == CLEAN.
CmdResult FsckOracle(const std::string& image);
// fsck.gfs2 <flag> image (e.g. "-y", "-n").
CmdResult Fsck(const std::string& image, const std::string& flag);

struct SystemFiles {
  uint32_t bsize = 0;
  uint64_t root = 0;
  uint64_t master = 0;
  std::vector<uint64_t> journals;       // dinode of journal<i>
  std::vector<uint64_t> statfs_change;  // per_node/statfs_change<i>
  std::vector<uint64_t> quota_change;   // per_node/quota_change<i>
};
Result<SystemFiles> FindSystemFiles(BlockDevice& dev);
// Maps and opens journal<jid> (FindHead not called).
Result<Journal> OpenJournal(BlockDevice& dev, const SystemFiles& sf, uint32_t jid);

std::vector<uint8_t> ReadBlock(BlockDevice& dev, uint32_t bsize, uint64_t blkno);
void WriteBlock(BlockDevice& dev, uint32_t bsize, uint64_t blkno, const std::vector<uint8_t>& b);

}  // namespace ugfs2::journal::testutil

#endif  // UGFS2_TESTS_SRC_JOURNAL_TEST_UTIL_H_
