#include "journal_test_util.h"

#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <set>

#include "common/endian.h"
#include "format/ondisk.h"

namespace ugfs2::journal::testutil {

namespace fs = std::filesystem;

TempDir::TempDir() {
  const char* base = getenv("TMPDIR");
  std::string tmpl = std::string(base && *base ? base : "/tmp") + "/ugfs2-journal-XXXXXX";
  std::vector<char> buf(tmpl.begin(), tmpl.end());
  buf.push_back('\0');
  if (mkdtemp(buf.data()) != nullptr) path_ = buf.data();
}

TempDir::~TempDir() {
  if (path_.empty() || getenv("UGFS2_KEEP_TMP") != nullptr) return;
  std::error_code ec;
  fs::remove_all(path_, ec);
}

CmdResult RunCommand(const std::string& cmd) {
  CmdResult r;
  std::string full = "PATH=\"$PATH:/usr/sbin:/sbin\"; export PATH; (" + cmd + ") </dev/null 2>&1";
  FILE* f = popen(full.c_str(), "r");
  if (f == nullptr) return r;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof(buf), f)) > 0) r.out.append(buf, n);
  int st = pclose(f);
  r.rc = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + (WIFSIGNALED(st) ? WTERMSIG(st) : 0);
  return r;
}

bool HaveMkfs() { return RunCommand("command -v mkfs.gfs2").rc == 0; }
bool HaveFsck() { return RunCommand("command -v fsck.gfs2").rc == 0; }

namespace {
std::string Quote(const std::string& s) {
  std::string q = "'";
  for (char c : s) {
    if (c == '\'') {
      q += "'\\''";
    } else {
      q += c;
    }
  }
  return q + "'";
}
}  // namespace

Result<std::string> MakeImage(const std::string& dir, const std::string& name, uint32_t bsize,
                              int journals, uint64_t size) {
  std::string path = dir + "/" + name;
  CmdResult r = RunCommand("truncate -s " + std::to_string(size) + " " + Quote(path) +
                           " && mkfs.gfs2 -O -p lock_nolock -j " + std::to_string(journals) +
                           " -b " + std::to_string(bsize) + " " + Quote(path));
  if (r.rc != 0) return Status::IoError("mkfs.gfs2 failed: " + r.out);
  return path;
}

Status CopyFile(const std::string& from, const std::string& to) {
  CmdResult r = RunCommand("cp --sparse=always " + Quote(from) + " " + Quote(to));
  if (r.rc != 0) return Status::IoError("cp failed: " + r.out);
  return Status::Ok();
}

std::string FsckOraclePath() {
  const char* env = getenv("UGFS2_FSCK_ORACLE");
  if (env != nullptr && *env != '\0') return env;
#ifdef UGFS2_SOURCE_DIR
  return std::string(UGFS2_SOURCE_DIR) + "/scripts/fsck-oracle";
#else
  return "fsck-oracle";
#endif
}

CmdResult FsckOracle(const std::string& image) {
  return RunCommand(Quote(FsckOraclePath()) + " " + Quote(image));
}

CmdResult Fsck(const std::string& image, const std::string& flag) {
  return RunCommand("fsck.gfs2 " + flag + " " + Quote(image));
}

std::vector<uint8_t> ReadBlock(BlockDevice& dev, uint32_t bsize, uint64_t blkno) {
  std::vector<uint8_t> b(bsize);
  if (!dev.ReadAt(blkno * bsize, b.data(), bsize).ok()) b.clear();
  return b;
}

void WriteBlock(BlockDevice& dev, uint32_t bsize, uint64_t blkno, const std::vector<uint8_t>& b) {
  (void)dev.WriteAt(blkno * bsize, b.data(), bsize);
}

namespace {

// Collects the dirents of one dirent block region.
void ScanDirents(const uint8_t* b, size_t begin, size_t end,
                 std::vector<std::pair<std::string, uint64_t>>& out) {
  size_t o = begin;
  while (o + format::kDirentSize <= end) {
    format::Dirent d = format::Dirent::Decode(b + o);
    if (d.rec_len < format::kDirentSize || o + d.rec_len > end) break;
    if (d.inum.addr != 0 && format::kDirentSize + d.name_len <= d.rec_len) {
      out.emplace_back(
          std::string(reinterpret_cast<const char*>(b + o + format::kDirentSize), d.name_len),
          d.inum.addr);
    }
    o += d.rec_len;
  }
}

Result<uint64_t> Lookup(BlockDevice& dev, uint32_t bsize, uint64_t dir, const std::string& name) {
  std::vector<uint8_t> di = ReadBlock(dev, bsize, dir);
  if (di.empty()) return Status::IoError("read failed");
  RETURN_IF_ERROR(format::CheckMeta(di.data(), format::kMetaDi, dir));
  format::Dinode d = format::Dinode::Decode(di.data());
  std::vector<std::pair<std::string, uint64_t>> ents;
  if ((d.flags & format::kDifExhash) == 0) {
    ScanDirents(di.data(), format::kDinodeSize, bsize, ents);
  } else {
    if (d.height != 0 || d.size > bsize - format::kDinodeSize) {
      return Status::NotSupported("test lookup: unstuffed hash table");
    }
    std::set<uint64_t> leaves;
    for (uint64_t o = 0; o + 8 <= d.size; o += 8) {
      leaves.insert(LoadBe64(di.data() + format::kDinodeSize + o));
    }
    for (uint64_t leaf : leaves) {
      for (uint64_t l = leaf; l != 0;) {
        std::vector<uint8_t> lb = ReadBlock(dev, bsize, l);
        if (lb.empty()) return Status::IoError("read failed");
        RETURN_IF_ERROR(format::CheckMeta(lb.data(), format::kMetaLf, l));
        ScanDirents(lb.data(), format::kLeafSize, bsize, ents);
        l = format::Leaf::Decode(lb.data()).next;
      }
    }
  }
  for (const auto& [n, a] : ents) {
    if (n == name) return a;
  }
  return Status::NotFound(name);
}

}  // namespace

Result<SystemFiles> FindSystemFiles(BlockDevice& dev) {
  std::vector<uint8_t> sbb(format::kSbSize);
  RETURN_IF_ERROR(dev.ReadAt(format::kSuperblockOffset, sbb.data(), sbb.size()));
  ASSIGN_OR_RETURN(format::Superblock sb, format::Superblock::Decode(sbb.data()));
  SystemFiles sf;
  sf.bsize = sb.bsize;
  sf.root = sb.root_dir.addr;
  sf.master = sb.master_dir.addr;
  ASSIGN_OR_RETURN(uint64_t jindex, Lookup(dev, sb.bsize, sf.master, "jindex"));
  ASSIGN_OR_RETURN(uint64_t per_node, Lookup(dev, sb.bsize, sf.master, "per_node"));
  for (int i = 0;; ++i) {
    auto j = Lookup(dev, sb.bsize, jindex, "journal" + std::to_string(i));
    if (!j.ok()) break;
    sf.journals.push_back(*j);
    ASSIGN_OR_RETURN(uint64_t s,
                     Lookup(dev, sb.bsize, per_node, "statfs_change" + std::to_string(i)));
    ASSIGN_OR_RETURN(uint64_t q,
                     Lookup(dev, sb.bsize, per_node, "quota_change" + std::to_string(i)));
    sf.statfs_change.push_back(s);
    sf.quota_change.push_back(q);
  }
  if (sf.journals.empty()) return Status::NotFound("no journal0");
  return sf;
}

Result<Journal> OpenJournal(BlockDevice& dev, const SystemFiles& sf, uint32_t jid) {
  if (jid >= sf.journals.size()) return Status::NotFound("no such journal");
  ASSIGN_OR_RETURN(std::vector<uint64_t> blocks,
                   MapJournalBlocks(dev, format::Geometry::For(sf.bsize), sf.journals[jid]));
  return Journal::Open(&dev, sf.bsize, jid, sf.journals[jid], std::move(blocks),
                       sf.statfs_change[jid], sf.quota_change[jid]);
}

}  // namespace ugfs2::journal::testutil
