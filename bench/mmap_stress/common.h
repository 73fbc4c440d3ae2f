// Pieces shared by the parent and the worker processes of ugfs2-mmap-stress: the data pattern,
// the shared progress region, aligned buffers, string formatting and the clock.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

namespace ugfs2::mmap_stress {

// O_DIRECT alignment of every offset and length, and the "page" of S4 and S5.
inline constexpr uint64_t kBlock = 4096;
// Smallest I/O of S1, S2 and S6 (if the half or region is that large): big enough that the
// kernel splits it into several FUSE requests.
inline constexpr uint64_t kMinIo = 256 * 1024;
// Every scenario runs two workers; one more slot is the helper process (setup, check, cleanup).
inline constexpr int kMaxWorkers = 2;
inline constexpr int kHelperSlot = kMaxWorkers;
inline constexpr int kSlots = kMaxWorkers + 1;

// Exit codes of the child processes (the parent maps them to errors).
inline constexpr int kExitOk = 0;
inline constexpr int kExitVerify = 10;   // a byte read was not what it must be
inline constexpr int kExitSyscall = 11;  // a syscall failed (EIO, EFAULT, ENOTCONN, ...)
inline constexpr int kExitFault = 12;    // SIGBUS or SIGSEGV in the process
inline constexpr int kExitInternal = 13;

// The files' contents. Byte o of file f at generation g is byte (o % 8), least significant
// first, of the 64-bit word
//     PatternWord(f, g, o / 8) = SplitMix64(SplitMix64(f << 48 | g) + o / 8)
// (SplitMix64 is Steele, Lea and Flood's finalizer; g < 2^48). Every 8-byte word of every file
// is different, so data read from a wrong offset, a wrong file or a wrong generation differs.
// Generations: S1, S2, S3, S6 and S7 use generation 0 only; S4's page of round n is
// generation n; S5's page stamped with generation g is generation g (its first 16 bytes are
// the header described in scenarios.cc).
enum FileId : uint32_t {
  kFileA = 1,  // S1, S6
  kFileB = 2,  // S1, S6
  kFileF = 3,  // S2
  kFileS = 4,  // S3 (source)
  kFileP = 5,  // S4
  kFileG = 6,  // S5
  kFileX = 7,  // S7 (the stamp of x)
};
const char* FileName(FileId f);

inline uint64_t SplitMix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

inline uint64_t PatternKey(FileId f, uint64_t gen) { return SplitMix64((uint64_t{f} << 48) | gen); }
inline uint64_t PatternWord(uint64_t key, uint64_t index) { return SplitMix64(key + index); }
inline uint8_t PatternByte(FileId f, uint64_t gen, uint64_t off) {
  return static_cast<uint8_t>(PatternWord(PatternKey(f, gen), off / 8) >> (8 * (off % 8)));
}

// What a range of bytes must hold: the pattern of (file, gen) starting at file offset off.
struct Expect {
  FileId file;
  uint64_t gen;
  uint64_t off;
};

void FillPattern(uint8_t* dst, size_t len, Expect e);
// The index of the first byte of p[0, len) that differs from the pattern, or len.
size_t FirstMismatch(const uint8_t* p, size_t len, Expect e);
size_t CountMismatches(const uint8_t* p, size_t len, Expect e);

// A small deterministic generator (SplitMix64 sequence).
class Rng {
 public:
  explicit Rng(uint64_t seed) : state_(seed) {}
  uint64_t Next() { return SplitMix64(state_++); }
  // Uniform in [0, n) for n > 0.
  uint64_t Below(uint64_t n) { return Next() % n; }

 private:
  uint64_t state_;
};

// A block-aligned heap buffer (O_DIRECT needs aligned user memory).
class AlignedBuffer {
 public:
  explicit AlignedBuffer(size_t len);
  uint8_t* data() { return data_.get(); }
  const uint8_t* data() const { return data_.get(); }
  size_t size() const { return len_; }

 private:
  struct Free {
    void operator()(uint8_t* p) const;
  };
  std::unique_ptr<uint8_t, Free> data_;
  size_t len_;
};

// Per-process progress and reports, in the MAP_SHARED|MAP_ANONYMOUS region every child inherits.
// The counters are lock-free atomics (so the parent may read them while the child runs, and a
// signal handler may write them). current and message are plain text written by their process
// only: the parent reads current only once the process is dead or has made no progress for a
// while (a stuck process writes nothing), and message only after the process has exited.
struct Slot {
  std::atomic<uint64_t> progress{0};        // steps completed (the watchdog's input)
  std::atomic<uint64_t> iterations{0};      // scenario iterations completed
  std::atomic<uint64_t> ops{0};             // I/O operations done (see the usage text)
  std::atomic<uint64_t> torn_in_flight{0};  // S5: torn pages seen while a write was in flight
  std::atomic<uint64_t> dropped_pins{0};    // direct reads into a mapping whose pages a revoke
                                            // dropped while they were pinned (repeated)
  std::atomic<uint32_t> ready{0};           // set up, waiting for go
  std::atomic<int32_t> fault_signo{0};      // SIGBUS/SIGSEGV caught (by the handler)
  std::atomic<int32_t> fault_code{0};
  std::atomic<uint64_t> fault_addr{0};
  char current[320];   // what the process is doing now
  char message[4096];  // its first error, written before it exits
};
static_assert(std::atomic<uint64_t>::is_always_lock_free);
static_assert(std::atomic<uint32_t>::is_always_lock_free);

struct SharedHeader {
  std::atomic<uint32_t> go{0};    // the parent's start signal (every worker ready)
  std::atomic<uint32_t> stop{0};  // the cell's duration is over (or a worker failed)
  Slot slots[kSlots];
};

// The shared region: the header, then `words` 64-bit words for a scenario (S5's per-page
// generations), accessed with std::atomic_ref.
class SharedRegion {
 public:
  explicit SharedRegion(size_t words);
  ~SharedRegion();
  SharedRegion(const SharedRegion&) = delete;
  SharedRegion& operator=(const SharedRegion&) = delete;

  SharedHeader* header() const { return header_; }
  uint64_t* words() const { return words_; }
  size_t nwords() const { return nwords_; }
  // Zeroes a slot for the next phase.
  void ResetSlot(int slot);

 private:
  void* base_ = nullptr;
  size_t len_ = 0;
  SharedHeader* header_ = nullptr;
  uint64_t* words_ = nullptr;
  size_t nwords_ = 0;
};

double NowSeconds();  // CLOCK_MONOTONIC
void SleepSeconds(double s);

std::string StrFormat(const char* fmt, ...) __attribute__((format(printf, 1, 2)));
// "0123: 00 11 22 ..." for 16 bytes (fewer at the end of a range).
std::string HexLine(uint64_t label_off, const uint8_t* p, size_t n);
// The shell quoting of s, unless it only has characters a shell takes literally.
std::string ShellQuote(const std::string& s);
// s with every "{key}" replaced by value.
std::string Substitute(std::string s, const std::string& key, const std::string& value);

}  // namespace ugfs2::mmap_stress
