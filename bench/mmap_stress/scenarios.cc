// The scenarios. Every worker verifies every byte it reads against the pattern (common.h).
// Sources are never written, and every target block has one writer, which always copies the
// same source bytes there; so every check is exact: a target block holds either its initial
// pattern (not yet written) or the copied one, never anything else.
#include "scenarios.h"

#include <fcntl.h>
#include <sched.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <string>
#include <system_error>
#include <vector>

namespace ugfs2::mmap_stress {
namespace {

using ull = unsigned long long;

ull U(uint64_t v) { return static_cast<ull>(v); }

size_t NoWords(uint64_t /*size*/) { return 0; }

// Creates name (truncated) with `size` bytes of f's generation-0 pattern, fsync'd.
void WritePatternFile(Worker& w, const std::string& name, FileId f, uint64_t size) {
  const int fd = w.Open(name, O_RDWR | O_CREAT | O_TRUNC, 0644);
  const uint64_t chunk = 1 << 20;
  AlignedBuffer buf(chunk);
  for (uint64_t off = 0; off < size; off += chunk) {
    const uint64_t n = std::min(chunk, size - off);
    FillPattern(buf.data(), n, Expect{f, 0, off});
    w.Doing("setup: write %s [%llu,+%llu)", name.c_str(), U(off), U(n));
    w.PwriteFull(fd, buf.data(), n, off);
    w.Step();
  }
  w.Fsync(fd);
  w.Close(fd);
}

uint64_t FileSize(Worker& w, int fd) {
  struct stat st;
  if (fstat(fd, &st) != 0) w.SysFail("fstat", errno);
  w.Ops();
  return static_cast<uint64_t>(st.st_size);
}

// Reads all of name, once with O_DIRECT and once through the page cache, into buf.
template <typename CheckFn>
void ReadBothWays(Worker& w, const std::string& name, uint64_t size, CheckFn check) {
  AlignedBuffer buf(size);
  for (const bool direct : {true, false}) {
    const int fd = w.Open(name, O_RDONLY | (direct ? O_DIRECT : 0));
    if (FileSize(w, fd) != size) {
      w.Fail(kExitVerify, StrFormat("check: %s has size %llu, expected %llu", name.c_str(),
                                    U(FileSize(w, fd)), U(size)));
    }
    w.Doing("check: %s read of %s [0,+%llu) through %s", direct ? "O_DIRECT" : "buffered",
            name.c_str(), U(size), w.ctx().dir.c_str());
    w.PreadFull(fd, buf.data(), size, 0);
    w.Step();
    check(buf.data());
    w.Close(fd);
  }
}

// ---- S1 and S6: O_DIRECT (S1) or buffered (S6) I/O between one file and a mapping of the
// other. Worker 0 maps B and does its I/O on A, worker 1 maps A and does its I/O on B. A file
// of size bytes is four quarters: Q0 and Q1 are sources, never written; Q2 is filled only by the
// other worker's pread into its mapping, Q3 only by the other worker's pwrite. Even iterations
// read the I/O file's Q0 [r, +len) into the mapping's Q2 at r; odd ones write the mapping's Q1
// [q + r, +len) to the I/O file's Q3 at 3q + r and read that back into a private buffer. So byte
// 2q + r of A is B's byte r or still A's own, byte 3q + r is B's byte q + r or A's own; likewise
// for B. Every block has a single writer and a single path. (With both workers targeting the
// same blocks, one filling them through its mapping and the other O_DIRECT-writing the same
// bytes, the page cache loses writes for a moment: a page dirtied when pinned for the direct
// read, still holding the old content, is written back over the other's direct write. Seen on
// ext4 as on ugfs2: a finding about the kernel, not about the filesystem.)

void SetupCross(Worker& w) {
  WritePatternFile(w, "A", kFileA, w.size());
  WritePatternFile(w, "B", kFileB, w.size());
}

// The invariant of file f (the other file: g) of `size` bytes read into p.
void VerifyCrossFile(Worker& w, const uint8_t* p, FileId f, FileId g, uint64_t size) {
  const uint64_t q = size / 4;
  w.Verify(p, 2 * q, Expect{f, 0, 0}, FileName(f), 0);
  w.VerifyEither(p + 2 * q, q, Expect{f, 0, 2 * q}, Expect{g, 0, 0}, FileName(f), 2 * q);
  w.VerifyEither(p + 3 * q, q, Expect{f, 0, 3 * q}, Expect{g, 0, q}, FileName(f), 3 * q);
}

void RunCross(Worker& w, bool direct) {
  const uint64_t size = w.size();
  const uint64_t q = size / 4;
  const bool first = w.index() == 0;
  const FileId mapped = first ? kFileB : kFileA;
  const FileId io = first ? kFileA : kFileB;
  const char* mode = direct ? "O_DIRECT" : "buffered";
  const int map_fd = w.Open(FileName(mapped), O_RDWR);
  uint8_t* map = w.Map(map_fd, size, PROT_READ | PROT_WRITE);
  const int io_fd = w.Open(FileName(io), O_RDWR | (direct ? O_DIRECT : 0));
  AlignedBuffer buf(q);
  const uint64_t lo = std::min(kMinIo, q);
  w.Ready();
  for (uint64_t i = 0; !w.Stopped(); ++i) {
    const uint64_t len = w.RandomLength(lo, q);
    const uint64_t r = w.RandomOffset(q - len);
    if (i % 2 == 0) {
      w.Doing("%s pread %s[%llu,+%llu) into mmap(%s)+%llu", mode, FileName(io), U(r), U(len),
              FileName(mapped), U(2 * q + r));
      w.PreadIntoMapping(io_fd, map + 2 * q + r, len, r, Expect{io, 0, r},
                         Expect{mapped, 0, 2 * q + r}, FileName(mapped), 2 * q + r);
      w.Step();
    } else {
      w.Doing("%s pwrite from mmap(%s)+%llu to %s[%llu,+%llu)", mode, FileName(mapped), U(q + r),
              FileName(io), U(3 * q + r), U(len));
      w.PwriteFull(io_fd, map + q + r, len, 3 * q + r);
      w.Step();
      w.Doing(
          "%s pread %s[%llu,+%llu) into a private buffer (after writing it from "
          "mmap(%s)+%llu)",
          mode, FileName(io), U(3 * q + r), U(len), FileName(mapped), U(q + r));
      w.PreadFull(io_fd, buf.data(), len, 3 * q + r);
      w.Verify(buf.data(), len, Expect{mapped, 0, q + r}, FileName(io), 3 * q + r);
      w.Step();
    }
    w.Iteration();
  }
  w.Doing("final verification of mmap(%s)", FileName(mapped));
  VerifyCrossFile(w, map, mapped, io, size);
  AlignedBuffer all(size);
  w.Doing("final verification: %s pread of %s", mode, FileName(io));
  w.PreadFull(io_fd, all.data(), size, 0);
  VerifyCrossFile(w, all.data(), io, mapped, size);
  w.Finish();
}

void RunS1(Worker& w) { RunCross(w, true); }
void RunS6(Worker& w) { RunCross(w, false); }

void CheckCross(Worker& w) {
  for (const FileId f : {kFileA, kFileB}) {
    const FileId g = f == kFileA ? kFileB : kFileA;
    ReadBothWays(w, FileName(f), w.size(),
                 [&](const uint8_t* p) { VerifyCrossFile(w, p, f, g, w.size()); });
  }
}

// ---- S2: one file F of four regions. Worker k's source is R(k) (never written), its target
// R(k+2); (a) O_DIRECT and (b) buffered pread of R(k) into the mapping of R(k+2), (c) O_DIRECT
// pwrite from the mapping of R(k) to R(k+2), (d) O_DIRECT pwrite of the mapping of R(k+2) onto
// itself (generic/729), each verified.

void SetupS2(Worker& w) { WritePatternFile(w, "F", kFileF, w.size()); }

void VerifyS2File(Worker& w, const uint8_t* p, uint64_t size) {
  const uint64_t q = size / 4;
  w.Verify(p, 2 * q, Expect{kFileF, 0, 0}, "F", 0);
  for (uint64_t k = 0; k < 2; ++k) {
    w.VerifyEither(p + (k + 2) * q, q, Expect{kFileF, 0, (k + 2) * q}, Expect{kFileF, 0, k * q},
                   "F", (k + 2) * q);
  }
}

void RunS2(Worker& w) {
  const uint64_t size = w.size();
  const uint64_t q = size / 4;
  const uint64_t k = static_cast<uint64_t>(w.index());
  const uint64_t src = k * q;
  const uint64_t dst = (k + 2) * q;
  const int buf_fd = w.Open("F", O_RDWR);
  const int dio_fd = w.Open("F", O_RDWR | O_DIRECT);
  // The mapping is of the O_DIRECT open, as generic/729's mmap-rw-fault and fsx -Z map theirs:
  // its faults then reach the file system as READs that carry O_DIRECT yet fill pages.
  uint8_t* map = w.Map(dio_fd, size, PROT_READ | PROT_WRITE);
  AlignedBuffer buf(q);
  const uint64_t lo = std::min(kMinIo, q);
  w.Ready();
  while (!w.Stopped()) {
    const uint64_t len = w.RandomLength(lo, q);
    const uint64_t r = w.RandomOffset(q - len);
    const Expect want{kFileF, 0, src + r};
    w.Doing("(a) O_DIRECT pread F[%llu,+%llu) into mmap(F)+%llu", U(src + r), U(len), U(dst + r));
    w.PreadIntoMapping(dio_fd, map + dst + r, len, src + r, want, Expect{kFileF, 0, dst + r}, "F",
                       dst + r);
    w.Step();
    w.Doing("(b) buffered pread F[%llu,+%llu) into mmap(F)+%llu", U(src + r), U(len), U(dst + r));
    w.PreadIntoMapping(buf_fd, map + dst + r, len, src + r, want, Expect{kFileF, 0, dst + r}, "F",
                       dst + r);
    w.Step();
    w.Doing("(c) O_DIRECT pwrite from mmap(F)+%llu to F[%llu,+%llu)", U(src + r), U(dst + r),
            U(len));
    w.PwriteFull(dio_fd, map + src + r, len, dst + r);
    w.Step();
    w.Doing(
        "(c) O_DIRECT pread F[%llu,+%llu) into a private buffer after writing it from "
        "mmap(F)+%llu",
        U(dst + r), U(len), U(src + r));
    w.PreadFull(dio_fd, buf.data(), len, dst + r);
    w.Verify(buf.data(), len, want, "F", dst + r);
    w.Step();
    w.Doing("(d) O_DIRECT pwrite from mmap(F)+%llu to F[%llu,+%llu) (the same range)", U(dst + r),
            U(dst + r), U(len));
    w.PwriteFull(dio_fd, map + dst + r, len, dst + r);
    w.Step();
    w.Doing(
        "(d) O_DIRECT pread F[%llu,+%llu) into a private buffer after writing it from "
        "itself",
        U(dst + r), U(len));
    w.PreadFull(dio_fd, buf.data(), len, dst + r);
    w.Verify(buf.data(), len, want, "F", dst + r);
    w.Step();
    w.Iteration();
  }
  w.Doing("final verification of mmap(F)");
  VerifyS2File(w, map, size);
  AlignedBuffer all(size);
  w.Doing("final verification: O_DIRECT pread of F");
  w.PreadFull(dio_fd, all.data(), size, 0);
  VerifyS2File(w, all.data(), size);
  w.Finish();
}

void CheckS2(Worker& w) {
  ReadBothWays(w, "F", w.size(), [&](const uint8_t* p) { VerifyS2File(w, p, w.size()); });
}

// ---- S3 (generic/708): a mapping of S with only its first page touched, O_DIRECT written as a
// whole to the worker's target T<k>: the same target overwritten on even iterations, a fresh one
// (unlinked and created again) on odd ones; then T<k> read back with O_DIRECT.

void SetupS3(Worker& w) {
  WritePatternFile(w, "S", kFileS, w.size());
  for (const char* t : {"T0", "T1"}) w.Close(w.Open(t, O_RDWR | O_CREAT | O_TRUNC, 0644));
}

void RunS3(Worker& w) {
  const uint64_t size = w.size();
  const std::string target = StrFormat("T%d", w.index());
  const std::string target_path = w.Path(target);
  const int src_fd = w.Open("S", O_RDONLY);
  int t_fd = w.Open(target, O_RDWR | O_DIRECT);
  const uint64_t chunk = std::min(kMinIo, size);
  AlignedBuffer buf(chunk);
  w.Ready();
  for (uint64_t i = 0; !w.Stopped(); ++i) {
    if (i % 2 == 1) {
      w.Doing("unlink %s and create it again", target_path.c_str());
      w.Close(t_fd);
      if (unlink(target_path.c_str()) != 0) w.SysFail("unlink", errno);
      w.Ops();
      t_fd = w.Open(target, O_RDWR | O_CREAT | O_EXCL | O_DIRECT, 0644);
      w.Step();
    }
    w.Doing("posix_fadvise(DONTNEED) of S, mmap it, touch its first page");
    const int err = posix_fadvise(src_fd, 0, 0, POSIX_FADV_DONTNEED);
    w.Ops();
    if (err != 0) w.SysFail("posix_fadvise", err);
    uint8_t* map = w.Map(src_fd, size, PROT_READ);
    const uint8_t first = *static_cast<volatile uint8_t*>(map);
    if (first != PatternByte(kFileS, 0, 0)) {
      w.Verify(map, 1, Expect{kFileS, 0, 0}, "S", 0);
    }
    w.Step();
    w.Doing("O_DIRECT pwrite of all of mmap(S) (%llu bytes, only page 0 touched) to %s (%s)",
            U(size), target.c_str(), i % 2 == 1 ? "fresh" : "overwritten");
    w.PwriteFull(t_fd, map, size, 0);
    w.Step();
    w.Unmap(map, size);
    for (uint64_t off = 0; off < size; off += chunk) {
      const uint64_t n = std::min(chunk, size - off);
      w.Doing("O_DIRECT pread %s[%llu,+%llu) after writing it from mmap(S)", target.c_str(), U(off),
              U(n));
      w.PreadFull(t_fd, buf.data(), n, off);
      w.Verify(buf.data(), n, Expect{kFileS, 0, off}, target.c_str(), off);
      w.Step();
    }
    const uint64_t got = FileSize(w, t_fd);
    if (got != size) {
      w.Fail(kExitVerify, StrFormat("%s has size %llu after writing %llu bytes at offset 0",
                                    target.c_str(), U(got), U(size)));
    }
    w.Iteration();
  }
  w.Doing("final verification of S through a fresh mapping");
  uint8_t* map = w.Map(src_fd, size, PROT_READ);
  w.Verify(map, size, Expect{kFileS, 0, 0}, "S", 0);
  w.Finish();
}

void CheckS3(Worker& w) {
  ReadBothWays(w, "S", w.size(), [&](const uint8_t* p) {
    w.Verify(p, w.size(), Expect{kFileS, 0, 0}, "S", 0);
  });
  for (const char* t : {"T0", "T1"}) {
    const int fd = w.Open(t, O_RDONLY);
    const uint64_t got = FileSize(w, fd);
    w.Close(fd);
    if (got == 0) continue;  // the worker never got to write it
    ReadBothWays(w, t, w.size(), [&](const uint8_t* p) {
      w.Verify(p, w.size(), Expect{kFileS, 0, 0}, t, 0);
    });
  }
}

// ---- S4: ping-pong through one shared mapping of P (two 4 KiB pages). Page i belongs to
// worker i: its word 0 is the round n of its last write, bytes 8..4095 are P's generation-n
// pattern (written first; word 0 last). Worker 0 writes n, msyncs and waits for page 1 to show
// n; worker 1 waits for page 0 to show n, then writes n into page 1. A page seen with the awaited
// n must be whole (no byte of another round); a page may only ever show n or n - 1.

constexpr uint64_t kS4Pages = 2;

std::atomic_ref<uint64_t> Word0(uint8_t* page) {
  return std::atomic_ref<uint64_t>(*reinterpret_cast<uint64_t*>(page));
}

void StampS4(uint8_t* page, uint64_t index, uint64_t n) {
  FillPattern(page + 8, kBlock - 8, Expect{kFileP, n, index * kBlock + 8});
  Word0(page).store(n, std::memory_order_release);
}

void VerifyS4Page(Worker& w, const uint8_t* page, uint64_t index, uint64_t n) {
  w.Verify(page + 8, kBlock - 8, Expect{kFileP, n, index * kBlock + 8}, "P", index * kBlock + 8);
}

void SetupS4(Worker& w) {
  AlignedBuffer buf(kS4Pages * kBlock);
  for (uint64_t i = 0; i < kS4Pages; ++i) StampS4(buf.data() + i * kBlock, i, 0);
  const int fd = w.Open("P", O_RDWR | O_CREAT | O_TRUNC, 0644);
  w.Doing("setup: write P");
  w.PwriteFull(fd, buf.data(), buf.size(), 0);
  w.Fsync(fd);
  w.Close(fd);
}

// Polls page `index` until it shows n (then verifies it whole): true, or false on stop.
bool AwaitRound(Worker& w, uint8_t* page, uint64_t index, uint64_t n) {
  const double start = NowSeconds();
  w.Doing("waiting for page %llu of P to show round %llu", U(index), U(n));
  for (uint64_t polls = 1;; ++polls) {
    const uint64_t v = Word0(page).load(std::memory_order_acquire);
    if (v == n) {
      VerifyS4Page(w, page, index, n);
      w.Ops();
      return true;
    }
    if (v + 1 != n) {
      w.Fail(kExitVerify, StrFormat("page %llu of P shows round %llu while waiting for round "
                                    "%llu (only %llu or %llu are possible)",
                                    U(index), U(v), U(n), U(n - 1), U(n)));
    }
    if (w.Stopped()) return false;
    if (polls < 1000) {
      sched_yield();
    } else {
      SleepSeconds(0.001);
    }
    if (polls % 1000 == 0) {
      w.Doing("waiting for page %llu of P to show round %llu (it shows %llu) for %.1f s", U(index),
              U(n), U(v), NowSeconds() - start);
    }
  }
}

void RunS4(Worker& w) {
  const uint64_t me = static_cast<uint64_t>(w.index());
  const uint64_t peer = 1 - me;
  const int fd = w.Open("P", O_RDWR);
  uint8_t* map = w.Map(fd, kS4Pages * kBlock, PROT_READ | PROT_WRITE);
  uint8_t* mine = map + me * kBlock;
  uint8_t* theirs = map + peer * kBlock;
  uint64_t written = 0;
  w.Ready();
  for (uint64_t n = 1; !w.Stopped(); ++n) {
    if (me == 1) {
      if (!AwaitRound(w, theirs, peer, n)) break;
      w.Step();
    }
    w.Doing("write round %llu into page %llu of P and msync(MS_SYNC)", U(n), U(me));
    StampS4(mine, me, n);
    w.Ops();
    w.Msync(mine, kBlock);
    written = n;
    w.Step();
    if (me == 0) {
      if (!AwaitRound(w, theirs, peer, n)) break;
      w.Step();
      w.Iteration();  // one round trip
    }
  }
  w.Doing("final verification of page %llu of P (round %llu)", U(me), U(written));
  const uint64_t v = Word0(mine).load(std::memory_order_acquire);
  if (v != written) {
    w.Fail(kExitVerify, StrFormat("page %llu of P shows round %llu, its last write was round %llu",
                                  U(me), U(v), U(written)));
  }
  VerifyS4Page(w, mine, me, written);
  AlignedBuffer buf(kBlock);
  w.Doing("final verification: pread of page %llu of P (round %llu)", U(me), U(written));
  w.PreadFull(fd, buf.data(), kBlock, me * kBlock);
  uint64_t got;
  std::memcpy(&got, buf.data(), 8);
  if (got != written) {
    w.Fail(kExitVerify, StrFormat("pread of page %llu of P shows round %llu, its mapping %llu",
                                  U(me), U(got), U(written)));
  }
  VerifyS4Page(w, buf.data(), me, written);
  w.Finish();
}

void CheckS4(Worker& w) {
  ReadBothWays(w, "P", kS4Pages * kBlock, [&](const uint8_t* page) {
    uint64_t n0, n1;  // a private copy: no atomics needed
    std::memcpy(&n0, page, 8);
    std::memcpy(&n1, page + kBlock, 8);
    VerifyS4Page(w, page, 0, n0);
    VerifyS4Page(w, page + kBlock, 1, n1);
    if (n1 != n0 && n1 + 1 != n0) {
      w.Fail(kExitVerify,
             StrFormat("P: page 0 shows round %llu and page 1 round %llu", U(n0), U(n1)));
    }
  });
}

// ---- S5: G is pages of 4 KiB; page p at generation g holds g in word 0, p in word 1 and G's
// generation-g pattern in bytes 16..4095. The writer (worker 0) rewrites runs of 1..16 pages with
// their next generations, alternately buffered and O_DIRECT, publishing per page in the shared
// region the generation it has started writing (words [0, npages)) and then completed (words
// [npages, 2 npages)). The reader (worker 1) copies random pages out of a read-only shared
// mapping (page faults, the mapping zapped with MADV_DONTNEED every 16 pages): it loads
// completed[p] = c before the copy and started[p] = s after it. A whole page must show a
// generation in [c, s] and never less than it showed before; a torn page is allowed only if a
// write of the page was in flight (s > c), and then not counted as an error.

constexpr uint64_t kS5Run = 16;
constexpr uint64_t kS5ChecksPerIteration = 16;

size_t S5Words(uint64_t size) { return 2 * (size / kBlock); }

std::atomic_ref<uint64_t> Started(Worker& w, uint64_t p) {
  return std::atomic_ref<uint64_t>(w.words()[p]);
}
std::atomic_ref<uint64_t> Completed(Worker& w, uint64_t p) {
  return std::atomic_ref<uint64_t>(w.words()[w.nwords() / 2 + p]);
}

void StampS5(uint8_t* page, uint64_t p, uint64_t g) {
  std::memcpy(page, &g, 8);
  std::memcpy(page + 8, &p, 8);
  FillPattern(page + 16, kBlock - 16, Expect{kFileG, g, p * kBlock + 16});
}

// Whether page (a copy of G's page p) is whole; its generation in *gen.
bool S5Whole(const uint8_t* page, uint64_t p, uint64_t* gen) {
  uint64_t idx;
  std::memcpy(gen, page, 8);
  std::memcpy(&idx, page + 8, 8);
  return idx == p && *gen < (uint64_t{1} << 48) &&
         FirstMismatch(page + 16, kBlock - 16, Expect{kFileG, *gen, p * kBlock + 16}) ==
             kBlock - 16;
}

std::string S5PageReport(Worker& w, const uint8_t* page, uint64_t p) {
  uint64_t g, idx;
  std::memcpy(&g, page, 8);
  std::memcpy(&idx, page + 8, 8);
  std::string out =
      StrFormat("page %llu: header says generation %llu, page %llu\n    header   %s\n  ", U(p),
                U(g), U(idx), HexLine(p * kBlock, page, 16).c_str());
  const Expect e{kFileG, g, p * kBlock + 16};
  const size_t i = FirstMismatch(page + 16, kBlock - 16, e);
  if (i < kBlock - 16) out += w.MismatchReport(page + 16, kBlock - 16, i, e, "G", p * kBlock + 16);
  return out;
}

void SetupS5(Worker& w) {
  const uint64_t npages = w.size() / kBlock;
  AlignedBuffer buf(w.size());
  for (uint64_t p = 0; p < npages; ++p) {
    StampS5(buf.data() + p * kBlock, p, 1);
    Started(w, p).store(1);
    Completed(w, p).store(1);
  }
  const int fd = w.Open("G", O_RDWR | O_CREAT | O_TRUNC, 0644);
  w.Doing("setup: write G");
  w.PwriteFull(fd, buf.data(), buf.size(), 0);
  w.Fsync(fd);
  w.Close(fd);
}

void RunS5Writer(Worker& w) {
  const uint64_t npages = w.size() / kBlock;
  const int bfd = w.Open("G", O_RDWR);
  const int dfd = w.Open("G", O_RDWR | O_DIRECT);
  std::vector<uint64_t> gens(npages, 1);
  AlignedBuffer buf(std::max(kS5Run * kBlock, w.size()));
  w.Ready();
  for (uint64_t i = 0; !w.Stopped(); ++i) {
    const uint64_t len = 1 + w.rng().Below(std::min(kS5Run, npages));
    const uint64_t p0 = w.rng().Below(npages - len + 1);
    for (uint64_t j = 0; j < len; ++j) {
      StampS5(buf.data() + j * kBlock, p0 + j, gens[p0 + j] + 1);
      Started(w, p0 + j).store(gens[p0 + j] + 1);
    }
    const bool direct = i % 2 == 1;
    w.Doing("%s pwrite of G pages [%llu,+%llu) (page %llu to generation %llu)",
            direct ? "O_DIRECT" : "buffered", U(p0), U(len), U(p0), U(gens[p0] + 1));
    w.PwriteFull(direct ? dfd : bfd, buf.data(), len * kBlock, p0 * kBlock);
    for (uint64_t j = 0; j < len; ++j) Completed(w, p0 + j).store(++gens[p0 + j]);
    w.Step();
    w.Iteration();
  }
  for (const bool direct : {true, false}) {
    w.Doing("final verification: %s pread of G", direct ? "O_DIRECT" : "buffered");
    w.PreadFull(direct ? dfd : bfd, buf.data(), w.size(), 0);
    for (uint64_t p = 0; p < npages; ++p) {
      const uint8_t* page = buf.data() + p * kBlock;
      uint64_t g;
      if (!S5Whole(page, p, &g) || g != gens[p]) {
        w.Fail(kExitVerify, StrFormat("%s: G page %llu is not generation %llu, the writer's "
                                      "last: ",
                                      w.ctx().role.c_str(), U(p), U(gens[p])) +
                                S5PageReport(w, page, p));
      }
    }
  }
  w.Finish();
}

void RunS5Reader(Worker& w) {
  const uint64_t npages = w.size() / kBlock;
  const int fd = w.Open("G", O_RDONLY);
  uint8_t* map = w.Map(fd, w.size(), PROT_READ);
  std::vector<uint64_t> seen(npages, 0);
  AlignedBuffer page(kBlock);
  // One page: returns false if it was torn while a write of it was in flight.
  auto check = [&](uint64_t p) {
    const uint64_t c = Completed(w, p).load();
    std::memcpy(page.data(), map + p * kBlock, kBlock);  // the page fault
    std::atomic_thread_fence(std::memory_order_seq_cst);
    const uint64_t s = Started(w, p).load();
    w.Ops();
    uint64_t g;
    if (!S5Whole(page.data(), p, &g)) {
      if (s != c) {
        w.TornInFlight();
        return false;
      }
      w.Fail(kExitVerify,
             StrFormat("torn page read through the mapping, no write of it in flight (writer "
                       "had completed generation %llu): ",
                       U(c)) +
                 S5PageReport(w, page.data(), p));
    }
    if (g < c || g > s || g < seen[p]) {
      w.Fail(kExitVerify,
             StrFormat("G page %llu read through the mapping shows generation %llu; the writer "
                       "had completed %llu before the read and started %llu after it; this "
                       "reader saw %llu before (%s)",
                       U(p), U(g), U(c), U(s), U(seen[p]),
                       g < c   ? "stale: older than a completed write"
                       : g > s ? "a generation never written"
                               : "went backwards"));
    }
    seen[p] = g;
    return true;
  };
  w.Ready();
  while (!w.Stopped()) {
    for (uint64_t k = 0; k < kS5ChecksPerIteration; ++k) {
      const uint64_t p = w.rng().Below(npages);
      w.Doing("reading G page %llu through the mapping", U(p));
      check(p);
      w.Step();
    }
    w.Doing("madvise(MADV_DONTNEED) of the mapping of G");
    if (madvise(map, w.size(), MADV_DONTNEED) != 0) w.SysFail("madvise", errno);
    w.Ops();
    w.Iteration();
  }
  for (uint64_t p = 0; p < npages; ++p) {
    w.Doing("final verification: G page %llu through the mapping", U(p));
    // A page torn by a write still in flight is read again once that write is done.
    while (!check(p)) SleepSeconds(0.001);
  }
  w.Finish();
}

void RunS5(Worker& w) {
  if (w.index() == 0) {
    RunS5Writer(w);
  } else {
    RunS5Reader(w);
  }
}

void CheckS5(Worker& w) {
  const uint64_t npages = w.size() / kBlock;
  ReadBothWays(w, "G", w.size(), [&](const uint8_t* buf) {
    for (uint64_t p = 0; p < npages; ++p) {
      uint64_t g;
      const uint64_t want = Completed(w, p).load();
      if (!S5Whole(buf + p * kBlock, p, &g) || g != want) {
        w.Fail(kExitVerify, StrFormat("G page %llu is not generation %llu (the writer's last "
                                      "completed): ",
                                      U(p), U(want)) +
                                S5PageReport(w, buf + p * kBlock, p));
      }
    }
  });
}

// ---- S7: rename ABBA. Worker 0 renames dA/x to dB/x and back; worker 1 holds x open and links
// it into dA as l<k> (through /proc/self/fd) and unlinks that again, checking the link count
// after each step. x holds a 64-byte stamp (x's pattern) from its creation.

constexpr uint64_t kStamp = 64;

void SetupS7(Worker& w) {
  for (const char* d : {"dA", "dB"}) {
    w.Doing("setup: mkdir %s", w.Path(d).c_str());
    if (mkdir(w.Path(d).c_str(), 0755) != 0) w.SysFail("mkdir", errno);
  }
  uint8_t stamp[kStamp];
  FillPattern(stamp, kStamp, Expect{kFileX, 0, 0});
  const int fd = w.Open("dA/x", O_RDWR | O_CREAT | O_EXCL, 0644);
  w.Doing("setup: write dA/x");
  w.PwriteFull(fd, stamp, kStamp, 0);
  w.Fsync(fd);
  w.Close(fd);
}

int OpenDir(Worker& w, const char* name) { return w.Open(name, O_RDONLY | O_DIRECTORY); }

uint64_t Nlink(Worker& w, int fd) {
  struct stat st;
  if (fstat(fd, &st) != 0) w.SysFail("fstat", errno);
  w.Ops();
  return static_cast<uint64_t>(st.st_nlink);
}

void ExpectNlink(Worker& w, int fd, uint64_t want) {
  const uint64_t got = Nlink(w, fd);
  if (got != want) {
    w.Fail(kExitVerify,
           StrFormat("x has %llu links, expected %llu, after: %s", U(got), U(want), w.current()));
  }
}

void VerifyStamp(Worker& w, int fd) {
  uint8_t stamp[kStamp];
  w.PreadFull(fd, stamp, kStamp, 0);
  w.Verify(stamp, kStamp, Expect{kFileX, 0, 0}, "x", 0);
}

void RunS7(Worker& w) {
  const int da = OpenDir(w, "dA");
  const int db = OpenDir(w, "dB");
  if (w.index() == 0) {
    w.Ready();
    while (!w.Stopped()) {
      w.Doing("renameat dA/x -> dB/x");
      if (renameat(da, "x", db, "x") != 0) w.SysFail("renameat", errno);
      w.Ops();
      w.Step();
      w.Doing("renameat dB/x -> dA/x");
      if (renameat(db, "x", da, "x") != 0) w.SysFail("renameat", errno);
      w.Ops();
      w.Step();
      w.Iteration();
    }
    w.Finish();
  }
  const int fd = w.Open("dA/x", O_RDONLY);
  const std::string proc = StrFormat("/proc/self/fd/%d", fd);
  w.Doing("fstat x after opening it");
  ExpectNlink(w, fd, 1);
  w.Ready();
  for (uint64_t k = 0; !w.Stopped(); ++k) {
    const std::string name = StrFormat("l%llu", U(k));
    w.Doing("linkat %s -> dA/%s (AT_SYMLINK_FOLLOW)", proc.c_str(), name.c_str());
    if (linkat(AT_FDCWD, proc.c_str(), da, name.c_str(), AT_SYMLINK_FOLLOW) != 0) {
      w.SysFail("linkat", errno);
    }
    w.Ops();
    ExpectNlink(w, fd, 2);
    w.Step();
    w.Doing("unlinkat dA/%s", name.c_str());
    if (unlinkat(da, name.c_str(), 0) != 0) w.SysFail("unlinkat", errno);
    w.Ops();
    ExpectNlink(w, fd, 1);
    w.Step();
    w.Iteration();
  }
  w.Doing("final verification of x through the open fd");
  ExpectNlink(w, fd, 1);
  VerifyStamp(w, fd);
  w.Finish();
}

void CheckS7(Worker& w) {
  int found = 0;
  for (const char* d : {"dA", "dB"}) {
    w.Doing("check: list %s", w.Path(d).c_str());
    std::error_code ec;
    for (const auto& e : std::filesystem::directory_iterator(w.Path(d), ec)) {
      const std::string name = e.path().filename().string();
      if (name != "x") {
        w.Fail(kExitVerify, StrFormat("%s/%s exists after the run (only x may)", d, name.c_str()));
      }
      ++found;
      const std::string rel = StrFormat("%s/x", d);
      const int fd = w.Open(rel, O_RDONLY);
      w.Doing("check: %s", rel.c_str());
      ExpectNlink(w, fd, 1);
      VerifyStamp(w, fd);
      w.Close(fd);
    }
    if (ec) w.SysFail("readdir", ec.value());
  }
  if (found != 1) {
    w.Fail(kExitVerify,
           StrFormat("x exists %d times in dA and dB after the run, expected once", found));
  }
}

}  // namespace

const std::vector<ScenarioDef>& AllScenarios() {
  static const std::vector<ScenarioDef> kScenarios = {
      {"S1", "cross-file O_DIRECT pread/pwrite into/from a mapping of the other file", NoWords,
       SetupCross, RunS1, CheckCross, false},
      {"S2", "same file: O_DIRECT and buffered I/O between regions of one mapping", NoWords,
       SetupS2, RunS2, CheckS2, false},
      {"S3", "O_DIRECT pwrite of a barely faulted-in mapping (generic/708)", NoWords, SetupS3,
       RunS3, CheckS3, false},
      {"S4", "mmap write ping-pong through one shared file", NoWords, SetupS4, RunS4, CheckS4,
       false},
      {"S5", "page faults while another process rewrites the pages", S5Words, SetupS5, RunS5,
       CheckS5, true},
      {"S6", "as S1 with buffered pread/pwrite", NoWords, SetupCross, RunS6, CheckCross, false},
      {"S7", "cross-directory rename against link/unlink of the open file", NoWords, SetupS7, RunS7,
       CheckS7, false},
  };
  return kScenarios;
}

const ScenarioDef* FindScenario(const std::string& name) {
  for (const ScenarioDef& s : AllScenarios()) {
    if (name.size() == 2 && (name[0] == 'S' || name[0] == 's') && name[1] == s.name[1]) return &s;
  }
  return nullptr;
}

void MakeSubdir(Worker& w) {
  const std::string& d = w.ctx().subdir;
  std::error_code ec;
  w.Doing("setup: remove a stale %s", d.c_str());
  if (std::filesystem::exists(d, ec)) std::filesystem::remove_all(d, ec);
  if (ec) w.SysFail("remove_all", ec.value());
  w.Doing("setup: mkdir %s", d.c_str());
  if (mkdir(d.c_str(), 0755) != 0) w.SysFail("mkdir", errno);
  w.Step();
}

void RemoveSubdir(Worker& w) {
  std::error_code ec;
  w.Doing("cleanup: remove %s", w.ctx().subdir.c_str());
  std::filesystem::remove_all(w.ctx().subdir, ec);
  if (ec) w.SysFail("remove_all", ec.value());
  w.Step();
}

}  // namespace ugfs2::mmap_stress
