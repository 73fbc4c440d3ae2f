// ugfs2-coherence-check: checks that the kernel caches of two (or more) mounts of one cluster
// volume stay coherent. One process, threads; the mounts are the FUSE mounts of different nodes'
// daemons, all visible on the host (tests/integration/cluster_coherence.sh).
//
//   ugfs2-coherence-check --writer-dir DIR_ON_A --reader-dir DIR_ON_B [--reader-dir DIR_ON_C ...]
//                         --scenario S|all [--seconds N] [--pages P] [--threads N] [--seed X]
//                         [--expect-stale] [--json] [--hang-timeout SECONDS]
//
// The property (issue text): after write()/truncate()/fallocate()/rename()/unlink()/chmod()/
// link() returns on node A, a read()/stat()/lookup()/readdir() that starts later on node B sees
// its effect; an mmap on node B sees node A's completed writes on its next access; MAP_SHARED
// stores on B become visible to A after msync(). No SIGBUS/EIO/EFAULT because of contention.
//
// Generation stamps. A writer thread produces generations k = 1, 2, 3 ... (generation 0 is the
// set-up state) with a pause of 0-5 ms (seeded RNG; the seed is printed) between them. It
// publishes `started` = k before the syscall(s) of generation k and, right after they returned,
// W_k = CLOCK_MONOTONIC and `completed` = k. A reader access that starts at t0 reads
// R = `completed` first, so R = max{k : W_k < t0} (the required generation); it decodes from what
// the access returned the generation g it saw, and reads S = `started` when the access returned.
// A coherent file system gives R <= g <= S. g < R is STALE (the access missed a generation whose
// syscall had returned before the access started); g > S, or a value no generation produces, is
// GARBAGE (counted as an error). Readers are paced: a burst of 1-8 accesses as soon as a
// generation completes (a futex wake: where a cache that is still being invalidated shows), and
// otherwise one every 0.2-2 ms (random: accesses in flight at any moment, e.g. while a glock
// goes away), so an idle reader costs little CPU. --threads N (default 2) threads run each
// reader kind on each reader dir. The lag of a stale access is the time from the completion of
// the generation it had to see (W_R, or for a page the return of R's write of it) to the end
// of the access.
//
// Scenarios (the file or directory lives in a fresh subdirectory <scenario>.<pid>.<n> of the
// writer dir, created through mount A; readers reach it through their own mounts):
//  pread     a file of P pages (default 64). Each page carries a stamp {magic, generation, page
//            index} at offsets 0 and 2048. The writer pwrite()s generation k through A: the whole
//            file in one pwrite, every page in a pwrite of its own, or one random page (RNG; the
//            short write's W_k follows the glock grant closely). The required generation is per
//            page: R_p = the newest generation whose pwrite of page p had returned when the access
//            started. Readers: buffered pread of a page (half the time the page the last
//            returned write ended with, else a random one); g = min of the two stamps (a page
//            with two different stamps is counted as torn, not an error); R_p <= g <= S.
//  odirect   as pread, the readers use O_DIRECT (aligned buffers); the writer chooses among
//            buffered (whole file, one page) and O_DIRECT (whole file, per page, one page).
//  mmap      as pread, the readers mmap(MAP_SHARED, PROT_READ) the file on B once and load
//            pages' stamps (volatile loads); SIGBUS/SIGSEGV are caught (sigsetjmp/siglongjmp, a
//            per-thread jump buffer) and counted.
//  mmapwrite roles swapped (property 2): the writer maps the file MAP_SHARED PROT_READ|WRITE
//            through the FIRST reader dir (B), stores k into the stamps of every page or of one
//            random page, msync(MS_SYNC)s what it stored and publishes after msync returns.
//            Readers: buffered pread through the writer dir (A) and every other reader dir.
//  truncate  the writer extends a file to (k+1)*4096 bytes through A: ftruncate() or fallocate(
//            mode 0, k*4096, 4096) (RNG). Readers: fstat() of an fd open on B, stat() of the path
//            on B; g = size/4096 - 1 (not a multiple of 4096: garbage).
//  chmod     the writer sets the file's mode to 0600 | (k mod 64) (the group and other bits;
//            chmod() or fchmod(), RNG). Readers: fstat(), stat() on B. The decoding is a set:
//            an observed value v is fine if some k in [R, S] has k mod 64 == v; otherwise it is
//            stale (the newest k < R with that value is taken as g) or, with bits outside 0677,
//            garbage. When S - R >= 63 the value cannot be judged (counted as undecided).
//  rename    one file renamed through generations: rename(g<k-1>, g<k>) through A. Readers on B:
//            lookup: stat(g<R-1>) must fail with ENOENT (found: stale), stat(g<R>) must succeed
//            unless the rename of generation R+1 has started by the time it returned (not
//            found: stale, a negative entry), plus an unchecked probe of g<R+1> that leaves a
//            negative entry behind for later accesses; readdir: opendir/readdir/closedir must
//            list at least one g<j> and every listed j in [R, S] (none listed, or j < R: stale;
//            j > S: garbage; two names: torn).
//  link      link() and unlink() on one inode "base": generations come in cycles of 32: in the
//            first 16 generation k does link(base, l<k>), in the next 16 generation k unlinks
//            the newest remaining link (last in, first out). So nlink(k) is a triangle wave
//            1,2,..,17,16,..,1 and every name is created and removed exactly once (base keeps
//            nlink >= 1: no inode is freed). Readers on B: fstat() and stat() of base: nlink must
//            be nlink(k) for some k in [R, S] (a set decoding as for chmod, period 32); lookup:
//            the name generation R linked must exist (unless its unlink has started by the end
//            of the access), the name generation R unlinked must not (ENOENT), plus an
//            unchecked probe of the name of generation R+1 (a negative entry before its link, a
//            positive one before its unlink); readdir: every listed l<x> must not have been
//            unlinked by a generation <= R, and every l<x> linked by a generation <= R and not
//            unlinked by one <= S must be listed (a listing takes several READDIRs, so it may
//            mix states: its count need not be any one generation's nlink).
//  all       every scenario, one after another.
//
// Output: per scenario a table (one row per reader thread and one for the writer: accesses,
// stale, errors, sigbus, torn, undecided, max lag), the first few stale/error examples, and at
// the end a summary table (scenario, accesses, stale, errors, sigbus, generations written,
// verdict). With --json one JSON object per scenario goes to stdout (the tables then go to
// stderr). Exit status: 0 when every scenario had stale == 0, errors == 0 and sigbus == 0; with
// --expect-stale (the negative control) 0 only when every scenario had stale > 0 (and no errors
// and no SIGBUS): the checker caught the staleness. 1: the property did not hold (or the
// negative control caught nothing). 2: usage or set-up error. 3: an access did not return
// within --hang-timeout seconds (default 30) after the run ended (the stuck threads are
// printed; the process may not be able to exit while a FUSE request of it is stuck).
#include <dirent.h>
#include <fcntl.h>
#include <linux/futex.h>
#include <setjmp.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <climits>
#include <condition_variable>
#include <cstdarg>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <random>
#include <set>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

namespace {

constexpr size_t kPage = 4096;
constexpr size_t kHalf = 2048;                   // the second stamp of a page
constexpr uint64_t kMagic = 0x63635f3273666775;  // "ugfs2_cc" little-endian
constexpr int kMaxBurst = 8;                     // accesses per reader per generation, at most
constexpr int kMinIdleUs = 200;                  // a reader without a new generation waits
constexpr int kMaxIdleUs = 2000;                 //   this long (random) before its next burst
constexpr int kMaxGapUs = 5000;                  // writer pause between generations, at most
constexpr uint64_t kLinkHalf = 16;               // link scenario: links per cycle
constexpr uint64_t kLinkPeriod = 2 * kLinkHalf;
constexpr size_t kExamples = 4;  // examples kept per worker

constexpr const char* kScenarios[] = {"pread",    "odirect", "mmap",   "mmapwrite",
                                      "truncate", "chmod",   "rename", "link"};

constexpr const char* kUsage =
    "usage: ugfs2-coherence-check --writer-dir DIR --reader-dir DIR [--reader-dir DIR ...]\n"
    "                             --scenario S [--seconds N] [--pages P] [--threads N]\n"
    "                             [--seed X]\n"
    "                             [--expect-stale] [--json] [--hang-timeout SECONDS]\n"
    "\n"
    "  --writer-dir DIR    a directory on mount A (node A); the writer works there\n"
    "  --reader-dir DIR    the same directory on another mount (node B, C, ...); readers there\n"
    "  --scenario S        pread, odirect, mmap, mmapwrite, truncate, chmod, rename, link, all\n"
    "  --seconds N         run time per scenario (default 3)\n"
    "  --pages P           pages of the data file (pread/odirect/mmap/mmapwrite; default 64)\n"
    "  --threads N         threads per reader kind and reader dir (default 2)\n"
    "  --seed X            RNG seed (default: random; always printed)\n"
    "  --expect-stale      negative control: succeed only if every scenario saw stale accesses\n"
    "  --json              one JSON object per scenario on stdout (tables go to stderr)\n"
    "  --hang-timeout S    an access still running S seconds after the run ended is a hang\n"
    "                      (exit 3; default 30)\n"
    "Exit: 0 coherent (or, with --expect-stale, staleness caught), 1 not, 2 usage/set-up, 3 hang.\n"
    "The file's header comment (tests/tools/coherence_check.cc) describes the decodings.\n";

int64_t NowNs() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<int64_t>(ts.tv_sec) * 1000000000 + ts.tv_nsec;
}

std::string ErrnoName(int e) {
  const char* n = strerrorname_np(e);
  return n != nullptr ? n : "errno" + std::to_string(e);
}

std::string Fmt(const char* fmt, ...) __attribute__((format(printf, 1, 2)));
std::string Fmt(const char* fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  va_list again;
  va_copy(again, ap);
  const int n = vsnprintf(nullptr, 0, fmt, ap);
  va_end(ap);
  std::string s(n > 0 ? static_cast<size_t>(n) : 0, '\0');
  if (n > 0) vsnprintf(s.data(), s.size() + 1, fmt, again);
  va_end(again);
  return s;
}

[[noreturn]] void SetupFail(const std::string& what) { throw std::runtime_error(what); }
[[noreturn]] void SetupFailErrno(const std::string& what) {
  throw std::runtime_error(what + ": " + std::strerror(errno) + " (" + ErrnoName(errno) + ")");
}

// ---- futex: readers sleep until the next generation completes -------------------------------

static_assert(sizeof(std::atomic<uint32_t>) == sizeof(uint32_t) &&
              std::atomic<uint32_t>::is_always_lock_free);

void FutexWait(std::atomic<uint32_t>* word, uint32_t seen, int64_t timeout_ns) {
  timespec ts{static_cast<time_t>(timeout_ns / 1000000000),
              static_cast<long>(timeout_ns % 1000000000)};
  syscall(SYS_futex, reinterpret_cast<uint32_t*>(word), FUTEX_WAIT_PRIVATE, seen, &ts, nullptr, 0);
}

void FutexWakeAll(std::atomic<uint32_t>* word) {
  syscall(SYS_futex, reinterpret_cast<uint32_t*>(word), FUTEX_WAKE_PRIVATE, INT_MAX, nullptr,
          nullptr, 0);
}

// ---- SIGBUS / SIGSEGV in mapped accesses ------------------------------------------------------

thread_local sigjmp_buf* t_fault_jmp = nullptr;

extern "C" void OnFault(int sig, siginfo_t*, void*) {
  sigjmp_buf* jb = t_fault_jmp;
  if (jb != nullptr) {
    t_fault_jmp = nullptr;
    siglongjmp(*jb, sig);
  }
  signal(sig, SIG_DFL);  // a fault outside a guarded access: die of it
  raise(sig);
}

void InstallFaultHandlers() {
  struct sigaction sa = {};
  sa.sa_sigaction = OnFault;
  sa.sa_flags = SA_SIGINFO;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGBUS, &sa, nullptr);
  sigaction(SIGSEGV, &sa, nullptr);
}

struct Stamp {
  uint64_t magic;
  uint64_t gen;
  uint64_t page;
};

// Loads the two stamps of page `page` of a mapping. Returns 0, or the signal that interrupted it.
int LoadMappedStamps(const unsigned char* base, size_t page, Stamp* out) {
  sigjmp_buf jb;
  int sig = sigsetjmp(jb, 1);
  if (sig != 0) return sig;
  t_fault_jmp = &jb;
  for (size_t h = 0; h < 2; h++) {
    const volatile uint64_t* s =
        reinterpret_cast<const volatile uint64_t*>(base + page * kPage + h * kHalf);
    out[h].magic = s[0];
    out[h].gen = s[1];
    out[h].page = s[2];
  }
  t_fault_jmp = nullptr;
  return 0;
}

// Stores generation `gen` into both stamps of every page of a mapping. Returns 0 or the signal.
int StoreMappedGeneration(unsigned char* base, size_t pages, uint64_t gen) {
  sigjmp_buf jb;
  int sig = sigsetjmp(jb, 1);
  if (sig != 0) return sig;
  t_fault_jmp = &jb;
  for (size_t p = 0; p < pages; p++) {
    for (size_t h = 0; h < 2; h++) {
      volatile uint64_t* s = reinterpret_cast<volatile uint64_t*>(base + p * kPage + h * kHalf);
      s[1] = gen;
    }
  }
  t_fault_jmp = nullptr;
  return 0;
}

// ---- options ----------------------------------------------------------------------------------

struct Options {
  std::string writer_dir;
  std::vector<std::string> reader_dirs;
  std::vector<std::string> scenarios;
  double seconds = 3;
  size_t pages = 64;
  size_t threads = 2;
  uint64_t seed = 0;
  bool seed_set = false;
  bool expect_stale = false;
  bool json = false;
  double hang_timeout = 30;
};

// ---- shared state of one scenario run ---------------------------------------------------------

class Generations {
 public:
  Generations() : done_ns_(std::make_unique<std::atomic<int64_t>[]>(kRing)) {}
  void Start(uint64_t k) { started_.store(k); }
  void Complete(uint64_t k) {
    done_ns_[k & (kRing - 1)].store(NowNs());
    completed_.store(k);
  }
  uint64_t Completed() const { return completed_.load(); }
  uint64_t Started() const { return started_.load(); }
  // W_k, or -1 when k has not completed or its slot was reused.
  int64_t DoneAt(uint64_t k) const {
    uint64_t c = completed_.load();
    if (k == 0 || k > c || c - k >= kRing) return -1;
    return done_ns_[k & (kRing - 1)].load();
  }

 private:
  static constexpr size_t kRing = 1 << 16;
  std::atomic<uint64_t> started_{0};
  std::atomic<uint64_t> completed_{0};
  std::unique_ptr<std::atomic<int64_t>[]> done_ns_;
};

struct Counters {
  uint64_t accesses = 0;
  uint64_t stale = 0;
  uint64_t sigbus = 0;
  uint64_t torn = 0;
  uint64_t undecided = 0;
  uint64_t generations = 0;  // the writer's
  int64_t max_lag_ns = -1;
  std::map<std::string, uint64_t> errors;  // "pread EIO" -> count; garbage too
  std::map<std::string, uint64_t> modes;   // the writer's: how each generation was written
  std::vector<std::string> examples;
  uint64_t ErrorCount() const {
    uint64_t n = 0;
    for (const auto& [k, v] : errors) n += v;
    return n;
  }
};

struct Worker {
  std::string role;   // "pread", "writer", ...
  std::string where;  // "A", "B1", ...
  uint64_t seed = 0;
  std::function<void(Worker&)> body;
  Counters c;
  std::atomic<const char*> op{"starting"};  // what the thread is doing (for a hang report)
  std::atomic<int64_t> op_since{0};
  std::atomic<bool> finished{false};
  std::thread thread;

  void Enter(const char* what) {
    op_since.store(NowNs(), std::memory_order_relaxed);
    op.store(what, std::memory_order_relaxed);
  }
  void Example(const std::string& text) {
    if (c.examples.size() < kExamples) c.examples.push_back(text);
  }
  void Error(const std::string& what, int e) {
    c.errors[what + " " + ErrnoName(e)]++;
    Example(Fmt("error: %s: %s", what.c_str(), std::strerror(e)));
  }
  void Garbage(const std::string& what) {
    c.errors["garbage"]++;
    Example("garbage: " + what);
  }
};

struct Run {
  const Options& opt;
  std::string sub;             // the scenario's subdirectory name
  std::string a;               // writer dir / sub
  std::vector<std::string> b;  // reader dirs / sub
  Generations gen;
  std::atomic<bool> stop{false};
  std::atomic<uint32_t> epoch{0};  // bumped on every completed generation and on stop
  std::mutex mu;
  std::condition_variable cv;
  size_t finished = 0;

  // Data scenarios: per page, the newest generation whose write of that page has returned (the
  // page's required generation), and the page the last returned write ended with.
  // When it returned (CLOCK_MONOTONIC ns), for the lag of a stale access.
  std::unique_ptr<std::atomic<uint64_t>[]> page_done;
  std::unique_ptr<std::atomic<int64_t>[]> page_done_ns;
  std::atomic<size_t> last_page{0};

  explicit Run(const Options& o)
      : opt(o),
        page_done(std::make_unique<std::atomic<uint64_t>[]>(o.pages)),
        page_done_ns(std::make_unique<std::atomic<int64_t>[]>(o.pages)) {}

  // A write of pages [first, end) with generation k has returned.
  void PagesDone(size_t first, size_t end, uint64_t k) {
    const int64_t now = NowNs();
    for (size_t p = first; p < end; p++) {
      page_done_ns[p].store(now);
      page_done[p].store(k);
    }
    last_page.store(end - 1);
  }
  void Completed(uint64_t k) {
    gen.Complete(k);
    epoch.fetch_add(1);
    FutexWakeAll(&epoch);
  }
  void Stop() {
    stop.store(true);
    epoch.fetch_add(1);
    FutexWakeAll(&epoch);
  }
};

// A stale access: saw generation `g` although `req` had completed (at done_ns; -1: W_req) before
// it started.
void Stale(Worker& w, const Run& run, uint64_t req, uint64_t g, const std::string& what,
           int64_t done_ns = -1) {
  w.c.stale++;
  int64_t done = done_ns > 0 ? done_ns : run.gen.DoneAt(req);
  int64_t lag = done > 0 ? NowNs() - done : -1;
  if (lag > w.c.max_lag_ns) w.c.max_lag_ns = lag;
  w.Example(
      Fmt("stale: %s: saw generation %llu, but generation %llu had completed before the "
          "access started (%.3f ms before it returned)",
          what.c_str(), static_cast<unsigned long long>(g), static_cast<unsigned long long>(req),
          lag >= 0 ? static_cast<double>(lag) / 1e6 : -1.0));
}

// Judges one access that decoded generation g (R read before it, S after it).
void Judge(Worker& w, const Run& run, uint64_t req, uint64_t g, uint64_t st,
           const std::string& what, int64_t req_done_ns = -1) {
  if (g > st) {
    w.Garbage(Fmt("%s: generation %llu, but only %llu had started", what.c_str(),
                  static_cast<unsigned long long>(g), static_cast<unsigned long long>(st)));
  } else if (g < req) {
    Stale(w, run, req, g, what, req_done_ns);
  }
}

// Judges a value that only tells a set of generations: matches(k) says whether generation k's
// state shows it; the values repeat every `period` generations.
void JudgeSet(Worker& w, const Run& run, uint64_t req, uint64_t st, uint64_t period,
              const std::function<bool(uint64_t)>& matches, const std::string& what) {
  if (st >= req && st - req + 1 >= period) {
    w.c.undecided++;
    return;
  }
  for (uint64_t k = req; k <= st; k++) {
    if (matches(k)) return;
  }
  for (uint64_t k = req; k-- > 0 && req - k <= period;) {
    if (matches(k)) return Stale(w, run, req, k, what);
  }
  w.Garbage(Fmt("%s: a value no generation in [%llu, %llu] shows", what.c_str(),
                static_cast<unsigned long long>(req > period ? req - period : 0),
                static_cast<unsigned long long>(st)));
}

// Paces a reader: bursts of 1..kMaxBurst accesses, one as soon as a generation completes and
// otherwise one every kMinIdleUs..kMaxIdleUs (random), so accesses start right after each W_k
// and also at any other moment (a glock going away while an access is in flight).
class Pacer {
 public:
  Pacer(Run& run, uint64_t seed)
      : run_(run), rng_(seed), burst_(1, kMaxBurst), idle_us_(kMinIdleUs, kMaxIdleUs) {}
  bool Next() {
    if (run_.stop.load()) return false;
    if (left_ > 0) {
      left_--;
      return true;
    }
    const uint32_t e = run_.epoch.load();
    if (e == seen_) FutexWait(&run_.epoch, e, int64_t{idle_us_(rng_)} * 1000);
    seen_ = run_.epoch.load();
    left_ = burst_(rng_) - 1;
    return !run_.stop.load();
  }
  std::mt19937_64& rng() { return rng_; }

 private:
  Run& run_;
  std::mt19937_64 rng_;
  std::uniform_int_distribution<int> burst_;
  std::uniform_int_distribution<int> idle_us_;
  uint32_t seen_ = UINT32_MAX;
  int left_ = 0;
};

// The writer's loop: generation k = 1, 2, ... by step(k) (false: failed, stop), a pause of
// 0..kMaxGapUs between them.
void WriterLoop(Worker& w, Run& run, const std::function<bool(uint64_t)>& step) {
  std::mt19937_64 rng(w.seed);
  std::uniform_int_distribution<int> gap(0, kMaxGapUs);
  for (uint64_t k = 1; !run.stop.load(); k++) {
    run.gen.Start(k);
    if (!step(k)) {
      run.Stop();  // the state is unknown now; a failure fails the run anyway
      break;
    }
    run.Completed(k);
    w.c.generations = k;
    w.Enter("pause");
    int us = gap(rng);
    if (us > 0) {
      timespec ts{0, static_cast<long>(us) * 1000};
      nanosleep(&ts, nullptr);
    }
  }
  w.Enter("done");
}

// ---- file helpers -----------------------------------------------------------------------------

struct AlignedBuf {
  explicit AlignedBuf(size_t n) : size(n) {
    void* p = nullptr;
    if (posix_memalign(&p, kPage, n) != 0) throw std::bad_alloc();
    data = static_cast<unsigned char*>(p);
    std::memset(data, 0, n);
  }
  ~AlignedBuf() { std::free(data); }
  AlignedBuf(const AlignedBuf&) = delete;
  AlignedBuf& operator=(const AlignedBuf&) = delete;
  unsigned char* data = nullptr;
  size_t size;
};

void PutStamp(unsigned char* page_start, uint64_t gen, uint64_t page) {
  for (size_t h = 0; h < 2; h++) {
    Stamp s{kMagic, gen, page};
    std::memcpy(page_start + h * kHalf, &s, sizeof s);
  }
}

void FillPages(unsigned char* buf, size_t pages, uint64_t gen) {
  for (size_t p = 0; p < pages; p++) PutStamp(buf + p * kPage, gen, p);
}

// Full pwrite; returns 0 or an errno (EIO for a short write).
int PwriteAll(int fd, const unsigned char* buf, size_t n, off_t off) {
  size_t done = 0;
  while (done < n) {
    ssize_t r = pwrite(fd, buf + done, n - done, off + static_cast<off_t>(done));
    if (r < 0) {
      if (errno == EINTR) continue;
      return errno;
    }
    if (r == 0) return EIO;
    done += static_cast<size_t>(r);
  }
  return 0;
}

// Decodes the stamps of page `page`: false (garbage, with why) or the generation (the smaller
// of the two) and whether they differ.
bool DecodeStamps(const Stamp* s, size_t page, uint64_t* gen, bool* torn, std::string* why) {
  for (size_t h = 0; h < 2; h++) {
    if (s[h].magic != kMagic || s[h].page != page) {
      *why = Fmt("page %zu, stamp at %zu: magic %016llx page %llu", page, h * kHalf,
                 static_cast<unsigned long long>(s[h].magic),
                 static_cast<unsigned long long>(s[h].page));
      return false;
    }
  }
  *gen = std::min(s[0].gen, s[1].gen);
  *torn = s[0].gen != s[1].gen;
  return true;
}

void WaitVisible(const std::string& path, off_t size) {
  const int64_t deadline = NowNs() + 5000000000;
  struct stat st;
  for (;;) {
    int r = stat(path.c_str(), &st);
    if (r == 0 && (size < 0 || st.st_size == size)) return;
    if (NowNs() > deadline) {
      if (r != 0) {
        SetupFailErrno(path +
                       ": not visible 5 s after it was created through the writer dir "
                       "(are the dirs the same directory on different mounts?)");
      }
      SetupFail(Fmt("%s: size %lld 5 s after the writer made it %lld", path.c_str(),
                    static_cast<long long>(st.st_size), static_cast<long long>(size)));
    }
    timespec ts{0, 10000000};
    nanosleep(&ts, nullptr);
  }
}

int OpenOrFail(const std::string& path, int flags, mode_t mode = 0) {
  int fd = open(path.c_str(), flags, mode);
  if (fd < 0) SetupFailErrno("open " + path);
  return fd;
}

// Creates the data file (P pages of generation 0) through A and waits until every reader mount
// sees it.
void SetupDataFile(Run& run) {
  const size_t pages = run.opt.pages;
  AlignedBuf buf(pages * kPage);
  FillPages(buf.data, pages, 0);
  int fd = OpenOrFail(run.a + "/data", O_RDWR | O_CREAT | O_EXCL, 0644);
  if (int e = PwriteAll(fd, buf.data, buf.size, 0); e != 0) {
    errno = e;
    SetupFailErrno("writing " + run.a + "/data");
  }
  if (fsync(fd) != 0) SetupFailErrno("fsync " + run.a + "/data");
  close(fd);
  for (const auto& d : run.b) WaitVisible(d + "/data", static_cast<off_t>(buf.size));
}

// ---- readers ----------------------------------------------------------------------------------

// Buffered or O_DIRECT pread of random pages of DIR/data.
void PreadReader(Worker& w, Run& run, const std::string& dir, bool direct) {
  const size_t pages = run.opt.pages;
  const std::string path = dir + "/data";
  const char* what = direct ? "O_DIRECT pread" : "pread";
  w.Enter("open");
  int fd = open(path.c_str(), O_RDONLY | (direct ? O_DIRECT : 0));
  if (fd < 0) return w.Error("open " + path, errno);
  AlignedBuf buf(kPage);
  Pacer pace(run, w.seed);
  std::uniform_int_distribution<size_t> pick(0, pages - 1);
  while (pace.Next()) {
    const size_t p = pace.rng()() % 2 == 0 ? run.last_page.load() : pick(pace.rng());
    const uint64_t req = run.page_done[p].load();
    w.Enter(what);
    ssize_t r = pread(fd, buf.data, kPage, static_cast<off_t>(p * kPage));
    const int e = errno;
    const uint64_t st = run.gen.Started();
    w.Enter("idle");
    w.c.accesses++;
    if (r < 0) {
      w.Error(what, e);
      continue;
    }
    if (static_cast<size_t>(r) != kPage) {
      w.Garbage(Fmt("%s of page %zu returned %zd bytes", what, p, r));
      continue;
    }
    Stamp s[2];
    std::memcpy(&s[0], buf.data, sizeof(Stamp));
    std::memcpy(&s[1], buf.data + kHalf, sizeof(Stamp));
    uint64_t g = 0;
    bool torn = false;
    std::string why;
    if (!DecodeStamps(s, p, &g, &torn, &why)) {
      w.Garbage(std::string(what) + ": " + why);
      continue;
    }
    if (torn) w.c.torn++;
    Judge(w, run, req, g, st, Fmt("%s of page %zu", what, p), run.page_done_ns[p].load());
  }
  close(fd);
}

// Volatile loads of random pages' stamps from a MAP_SHARED PROT_READ mapping of DIR/data.
void MmapReader(Worker& w, Run& run, const std::string& dir) {
  const size_t pages = run.opt.pages;
  const std::string path = dir + "/data";
  w.Enter("open");
  int fd = open(path.c_str(), O_RDONLY);
  if (fd < 0) return w.Error("open " + path, errno);
  void* m = mmap(nullptr, pages * kPage, PROT_READ, MAP_SHARED, fd, 0);
  if (m == MAP_FAILED) {
    w.Error("mmap " + path, errno);
    close(fd);
    return;
  }
  const auto* base = static_cast<const unsigned char*>(m);
  Pacer pace(run, w.seed);
  std::uniform_int_distribution<size_t> pick(0, pages - 1);
  while (pace.Next()) {
    const size_t p = pace.rng()() % 2 == 0 ? run.last_page.load() : pick(pace.rng());
    const uint64_t req = run.page_done[p].load();
    w.Enter("mmap load");
    Stamp s[2];
    int sig = LoadMappedStamps(base, p, s);
    const uint64_t st = run.gen.Started();
    w.Enter("idle");
    w.c.accesses++;
    if (sig != 0) {
      w.c.sigbus++;
      w.Example(Fmt("signal: %s on a load from page %zu of the mapping", strsignal(sig), p));
      continue;
    }
    uint64_t g = 0;
    bool torn = false;
    std::string why;
    if (!DecodeStamps(s, p, &g, &torn, &why)) {
      w.Garbage("mmap load: " + why);
      continue;
    }
    if (torn) w.c.torn++;
    Judge(w, run, req, g, st, Fmt("mmap load of page %zu", p), run.page_done_ns[p].load());
  }
  munmap(m, pages * kPage);
  close(fd);
}

// fstat() of an fd on PATH or stat() of PATH; `judge` checks the result.
void StatReader(Worker& w, Run& run, const std::string& path, bool use_fd,
                const std::function<void(const struct stat&, uint64_t, uint64_t)>& judge) {
  int fd = -1;
  if (use_fd) {
    w.Enter("open");
    fd = open(path.c_str(), O_RDONLY);
    if (fd < 0) return w.Error("open " + path, errno);
  }
  const char* what = use_fd ? "fstat" : "stat";
  Pacer pace(run, w.seed);
  while (pace.Next()) {
    struct stat sb;
    const uint64_t req = run.gen.Completed();
    w.Enter(what);
    int r = use_fd ? fstat(fd, &sb) : stat(path.c_str(), &sb);
    const int e = errno;
    const uint64_t st = run.gen.Started();
    w.Enter("idle");
    w.c.accesses++;
    if (r != 0) {
      w.Error(what, e);
      continue;
    }
    judge(sb, req, st);
  }
  if (fd >= 0) close(fd);
}

// stat(PATH): 0, or the errno.
int StatErr(const std::string& path) {
  struct stat sb;
  return stat(path.c_str(), &sb) == 0 ? 0 : errno;
}

// Lists DIR: the names, or an errno.
int ListDir(const std::string& dir, std::vector<std::string>* names) {
  names->clear();
  DIR* d = opendir(dir.c_str());
  if (d == nullptr) return errno;
  errno = 0;
  while (dirent* de = readdir(d)) {
    names->push_back(de->d_name);
    errno = 0;
  }
  const int e = errno;
  closedir(d);
  return e;
}

// NAME = PREFIX<number>: the number.
bool ParseGenName(const std::string& name, char prefix, uint64_t* out) {
  if (name.size() < 2 || name[0] != prefix) return false;
  uint64_t v = 0;
  for (size_t i = 1; i < name.size(); i++) {
    if (name[i] < '0' || name[i] > '9') return false;
    v = v * 10 + static_cast<uint64_t>(name[i] - '0');
  }
  *out = v;
  return true;
}

// ---- the link scenario's generations ----------------------------------------------------------

uint64_t LinkPhase(uint64_t k) { return (k - 1) % kLinkPeriod + 1; }  // 1..32, k >= 1
bool LinkIsLink(uint64_t k) { return k >= 1 && LinkPhase(k) <= kLinkHalf; }
uint64_t LinkNlink(uint64_t k) {
  if (k == 0) return 1;
  uint64_t p = LinkPhase(k);
  return 1 + (p <= kLinkHalf ? p : kLinkPeriod - p);
}
// The link generation whose name unlink generation k removes.
uint64_t LinkMirror(uint64_t k) { return k + 1 - 2 * (LinkPhase(k) - kLinkHalf); }
// The generation that unlinks the name link generation x created.
uint64_t LinkRemovedAt(uint64_t x) { return x + 2 * (kLinkHalf - LinkPhase(x)) + 1; }

// ---- scenarios --------------------------------------------------------------------------------

// The scenario's threads: one writer (AddWriter) and the readers (Add: --threads copies each).
struct Plan {
  explicit Plan(size_t copies) : reader_copies(copies) {}
  size_t reader_copies;
  std::vector<std::unique_ptr<Worker>> workers;
  void AddWriter(const std::string& role, const std::string& where,
                 std::function<void(Worker&)> body) {
    AddOne(role, where, std::move(body));
  }
  void Add(const std::string& role, const std::string& where,
           const std::function<void(Worker&)>& body) {
    for (size_t i = 0; i < reader_copies; i++) AddOne(role, where, body);
  }

 private:
  void AddOne(const std::string& role, const std::string& where,
              std::function<void(Worker&)> body) {
    auto w = std::make_unique<Worker>();
    w->role = role;
    w->where = where;
    w->body = std::move(body);
    workers.push_back(std::move(w));
  }
};

std::string Label(size_t reader_index) { return "B" + std::to_string(reader_index + 1); }

// pread, odirect, mmap: the writer pwrite()s the data file through A.
void PlanDataWriter(Run& run, Plan* plan, bool odirect) {
  plan->AddWriter("writer", "A", [&run, odirect](Worker& w) {
    const size_t pages = run.opt.pages;
    const std::string path = run.a + "/data";
    w.Enter("open");
    int fd = open(path.c_str(), O_RDWR);
    if (fd < 0) return w.Error("open " + path, errno);
    int dfd = -1;
    if (odirect) {
      dfd = open(path.c_str(), O_RDWR | O_DIRECT);
      if (dfd < 0) {
        w.Error("open O_DIRECT " + path, errno);
        close(fd);
        return;
      }
    }
    AlignedBuf buf(pages * kPage);
    std::mt19937_64 rng(w.seed ^ 0x5eed);
    // How a generation is written: the whole file in one pwrite, page by page, or one random
    // page (a short write: its W_k follows the glock grant closely); buffered or O_DIRECT.
    enum Mode { kWhole, kPerPage, kOnePage, kDirectWhole, kDirectPerPage, kDirectOnePage };
    static constexpr const char* kModeNames[] = {
        "pwrite whole file",          "pwrite per page",          "pwrite one page",
        "O_DIRECT pwrite whole file", "O_DIRECT pwrite per page", "O_DIRECT pwrite one page"};
    const std::vector<Mode> modes =
        odirect ? std::vector<Mode>{kWhole,         kOnePage,       kDirectWhole,
                                    kDirectPerPage, kDirectOnePage, kDirectOnePage}
                : std::vector<Mode>{kWhole, kPerPage, kOnePage, kOnePage};
    WriterLoop(w, run, [&](uint64_t k) {
      FillPages(buf.data, pages, k);
      const Mode mode = modes[std::uniform_int_distribution<size_t>(0, modes.size() - 1)(rng)];
      const char* name = kModeNames[mode];
      w.c.modes[name]++;
      const int f = mode >= kDirectWhole ? dfd : fd;
      w.Enter(name);
      size_t first = 0, end = pages;
      if (mode == kOnePage || mode == kDirectOnePage) {
        first = std::uniform_int_distribution<size_t>(0, pages - 1)(rng);
        end = first + 1;
      }
      int e = 0;
      if (mode == kPerPage || mode == kDirectPerPage) {
        for (size_t p = first; p < end && e == 0; p++) {
          e = PwriteAll(f, buf.data + p * kPage, kPage, static_cast<off_t>(p * kPage));
          if (e == 0) run.PagesDone(p, p + 1, k);
        }
      } else {
        e = PwriteAll(f, buf.data + first * kPage, (end - first) * kPage,
                      static_cast<off_t>(first * kPage));
        if (e == 0) run.PagesDone(first, end, k);
      }
      if (e != 0) w.Error(name, e);
      return e == 0;
    });
    if (dfd >= 0) close(dfd);
    close(fd);
  });
}

void PlanScenario(const std::string& name, Run& run, Plan* plan) {
  const size_t nb = run.b.size();
  if (name == "pread" || name == "odirect" || name == "mmap") {
    SetupDataFile(run);
    PlanDataWriter(run, plan, name == "odirect");
    for (size_t i = 0; i < nb; i++) {
      const std::string dir = run.b[i];
      if (name == "mmap") {
        plan->Add("mmap", Label(i), [&run, dir](Worker& w) { MmapReader(w, run, dir); });
      } else {
        const bool direct = name == "odirect";
        plan->Add(direct ? "O_DIRECT pread" : "pread", Label(i),
                  [&run, dir, direct](Worker& w) { PreadReader(w, run, dir, direct); });
      }
    }
    return;
  }
  if (name == "mmapwrite") {
    SetupDataFile(run);
    plan->AddWriter("mmap writer", Label(0), [&run](Worker& w) {
      const size_t pages = run.opt.pages;
      const std::string path = run.b[0] + "/data";
      w.Enter("open");
      int fd = open(path.c_str(), O_RDWR);
      if (fd < 0) return w.Error("open " + path, errno);
      void* m = mmap(nullptr, pages * kPage, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
      if (m == MAP_FAILED) {
        w.Error("mmap " + path, errno);
        close(fd);
        return;
      }
      auto* base = static_cast<unsigned char*>(m);
      std::mt19937_64 rng(w.seed ^ 0x3a9);
      WriterLoop(w, run, [&](uint64_t k) {
        // every page, or one random page (stores, then msync of just that page)
        size_t first = 0, end = pages;
        if (std::uniform_int_distribution<int>(0, 1)(rng) == 1) {
          first = std::uniform_int_distribution<size_t>(0, pages - 1)(rng);
          end = first + 1;
        }
        w.Enter("mmap stores");
        if (int sig = StoreMappedGeneration(base + first * kPage, end - first, k); sig != 0) {
          w.c.sigbus++;
          w.Example(Fmt("signal: %s on a store of generation %llu into the mapping", strsignal(sig),
                        static_cast<unsigned long long>(k)));
          return false;
        }
        w.Enter("msync");
        if (msync(base + first * kPage, (end - first) * kPage, MS_SYNC) != 0) {
          w.Error("msync", errno);
          return false;
        }
        run.PagesDone(first, end, k);
        w.c.modes[end - first == 1 ? "stores to one page + msync"
                                   : "stores to every page + msync"]++;
        return true;
      });
      munmap(m, pages * kPage);
      close(fd);
    });
    plan->Add("pread", "A", [&run](Worker& w) { PreadReader(w, run, run.a, false); });
    for (size_t i = 1; i < nb; i++) {
      const std::string dir = run.b[i];
      plan->Add("pread", Label(i), [&run, dir](Worker& w) { PreadReader(w, run, dir, false); });
    }
    return;
  }
  if (name == "truncate") {
    const std::string path = run.a + "/size";
    int fd = OpenOrFail(path, O_RDWR | O_CREAT | O_EXCL, 0644);
    if (ftruncate(fd, kPage) != 0) SetupFailErrno("ftruncate " + path);
    if (fsync(fd) != 0) SetupFailErrno("fsync " + path);
    close(fd);
    for (const auto& d : run.b) WaitVisible(d + "/size", kPage);
    plan->AddWriter("writer", "A", [&run](Worker& w) {
      const std::string p = run.a + "/size";
      w.Enter("open");
      int f = open(p.c_str(), O_RDWR);
      if (f < 0) return w.Error("open " + p, errno);
      std::mt19937_64 rng(w.seed ^ 0x7e5);
      WriterLoop(w, run, [&](uint64_t k) {
        const bool falloc = std::uniform_int_distribution<int>(0, 1)(rng) == 1;
        const char* what = falloc ? "fallocate(0) extend" : "ftruncate extend";
        w.c.modes[what]++;
        w.Enter(what);
        int r = falloc ? fallocate(f, 0, static_cast<off_t>(k * kPage), kPage)
                       : ftruncate(f, static_cast<off_t>((k + 1) * kPage));
        if (r != 0) w.Error(what, errno);
        return r == 0;
      });
      close(f);
    });
    for (size_t i = 0; i < nb; i++) {
      for (bool use_fd : {true, false}) {
        const std::string p = run.b[i] + "/size";
        plan->Add(use_fd ? "fstat size" : "stat size", Label(i), [&run, p, use_fd](Worker& w) {
          StatReader(w, run, p, use_fd, [&](const struct stat& sb, uint64_t req, uint64_t st) {
            const auto size = static_cast<uint64_t>(sb.st_size);
            if (size % kPage != 0 || size < kPage) {
              return w.Garbage(Fmt("size %llu", static_cast<unsigned long long>(size)));
            }
            Judge(w, run, req, size / kPage - 1, st,
                  Fmt("%s: size %llu", use_fd ? "fstat" : "stat",
                      static_cast<unsigned long long>(size)));
          });
        });
      }
    }
    return;
  }
  if (name == "chmod") {
    const std::string path = run.a + "/mode";
    int fd = OpenOrFail(path, O_RDWR | O_CREAT | O_EXCL, 0600);
    if (fchmod(fd, 0600) != 0) SetupFailErrno("fchmod " + path);
    if (fsync(fd) != 0) SetupFailErrno("fsync " + path);
    close(fd);
    for (const auto& d : run.b) WaitVisible(d + "/mode", 0);
    plan->AddWriter("writer", "A", [&run](Worker& w) {
      const std::string p = run.a + "/mode";
      w.Enter("open");
      int f = open(p.c_str(), O_RDONLY);
      if (f < 0) return w.Error("open " + p, errno);
      std::mt19937_64 rng(w.seed ^ 0xc7);
      WriterLoop(w, run, [&](uint64_t k) {
        const mode_t mode = static_cast<mode_t>(0600 | (k & 077));
        const bool use_fd = std::uniform_int_distribution<int>(0, 1)(rng) == 1;
        const char* what = use_fd ? "fchmod" : "chmod";
        w.c.modes[what]++;
        w.Enter(what);
        int r = use_fd ? fchmod(f, mode) : chmod(p.c_str(), mode);
        if (r != 0) w.Error(what, errno);
        return r == 0;
      });
      close(f);
    });
    for (size_t i = 0; i < nb; i++) {
      for (bool use_fd : {true, false}) {
        const std::string p = run.b[i] + "/mode";
        plan->Add(use_fd ? "fstat mode" : "stat mode", Label(i), [&run, p, use_fd](Worker& w) {
          StatReader(w, run, p, use_fd, [&](const struct stat& sb, uint64_t req, uint64_t st) {
            const unsigned m = sb.st_mode & 07777;
            if ((m & ~077u) != 0600) return w.Garbage(Fmt("mode %04o", m));
            JudgeSet(
                w, run, req, st, 64, [m](uint64_t k) { return (k & 077) == (m & 077); },
                Fmt("%s: mode %04o", use_fd ? "fstat" : "stat", m));
          });
        });
      }
    }
    return;
  }
  if (name == "rename") {
    const std::string g0 = run.a + "/g0";
    close(OpenOrFail(g0, O_RDWR | O_CREAT | O_EXCL, 0644));
    for (const auto& d : run.b) WaitVisible(d + "/g0", 0);
    plan->AddWriter("writer", "A", [&run](Worker& w) {
      WriterLoop(w, run, [&](uint64_t k) {
        w.Enter("rename");
        w.c.modes["rename"]++;
        const std::string from =
            Fmt("%s/g%llu", run.a.c_str(), static_cast<unsigned long long>(k - 1));
        const std::string to = Fmt("%s/g%llu", run.a.c_str(), static_cast<unsigned long long>(k));
        if (rename(from.c_str(), to.c_str()) != 0) {
          w.Error("rename", errno);
          return false;
        }
        return true;
      });
    });
    for (size_t i = 0; i < nb; i++) {
      const std::string dir = run.b[i];
      plan->Add("lookup", Label(i), [&run, dir](Worker& w) {
        Pacer pace(run, w.seed);
        auto name_of = [&](uint64_t k) {
          return Fmt("%s/g%llu", dir.c_str(), static_cast<unsigned long long>(k));
        };
        while (pace.Next()) {
          uint64_t req = run.gen.Completed();
          if (req >= 1) {  // the old name must be gone
            w.Enter("stat old name");
            const int e = StatErr(name_of(req - 1));
            w.Enter("idle");
            w.c.accesses++;
            if (e == 0) {
              Stale(w, run, req, req - 1,
                    Fmt("stat g%llu succeeded", static_cast<unsigned long long>(req - 1)));
            } else if (e != ENOENT) {
              w.Error("stat", e);
            }
          }
          req = run.gen.Completed();
          w.Enter("stat current name");
          const int e = StatErr(name_of(req));
          const uint64_t st = run.gen.Started();
          w.Enter("idle");
          w.c.accesses++;
          if (e == ENOENT) {
            if (st == req) {
              Stale(w, run, req, req - 1,
                    Fmt("stat g%llu: ENOENT, no later rename had started",
                        static_cast<unsigned long long>(req)));
            }
          } else if (e != 0) {
            w.Error("stat", e);
          }
          w.Enter("probe next name");
          const int pe = StatErr(name_of(req + 1));  // leaves a negative entry, mostly
          w.Enter("idle");
          if (pe != 0 && pe != ENOENT) w.Error("stat (probe)", pe);
        }
      });
      plan->Add("readdir", Label(i), [&run, dir](Worker& w) {
        Pacer pace(run, w.seed);
        std::vector<std::string> names;
        while (pace.Next()) {
          const uint64_t req = run.gen.Completed();
          w.Enter("readdir");
          const int e = ListDir(dir, &names);
          const uint64_t st = run.gen.Started();
          w.Enter("idle");
          w.c.accesses++;
          if (e != 0) {
            w.Error("readdir", e);
            continue;
          }
          std::vector<uint64_t> gens;
          for (const auto& n : names) {
            uint64_t g = 0;
            if (ParseGenName(n, 'g', &g)) gens.push_back(g);
          }
          if (gens.empty()) {
            Stale(w, run, req, req == 0 ? 0 : req - 1, "readdir lists no g<N> name");
            continue;
          }
          if (gens.size() > 1) w.c.torn++;
          const uint64_t lo = *std::min_element(gens.begin(), gens.end());
          const uint64_t hi = *std::max_element(gens.begin(), gens.end());
          if (hi > st) {
            Judge(w, run, req, hi, st,
                  Fmt("readdir lists g%llu", static_cast<unsigned long long>(hi)));
          } else {
            Judge(w, run, req, lo, st,
                  Fmt("readdir lists g%llu", static_cast<unsigned long long>(lo)));
          }
        }
      });
    }
    return;
  }
  if (name == "link") {
    const std::string base = run.a + "/base";
    close(OpenOrFail(base, O_RDWR | O_CREAT | O_EXCL, 0644));
    for (const auto& d : run.b) WaitVisible(d + "/base", 0);
    plan->AddWriter("writer", "A", [&run](Worker& w) {
      const std::string b = run.a + "/base";
      WriterLoop(w, run, [&](uint64_t k) {
        if (LinkIsLink(k)) {
          w.Enter("link");
          w.c.modes["link"]++;
          const std::string to = Fmt("%s/l%llu", run.a.c_str(), static_cast<unsigned long long>(k));
          if (link(b.c_str(), to.c_str()) != 0) {
            w.Error("link", errno);
            return false;
          }
        } else {
          w.Enter("unlink");
          w.c.modes["unlink"]++;
          const std::string victim =
              Fmt("%s/l%llu", run.a.c_str(), static_cast<unsigned long long>(LinkMirror(k)));
          if (unlink(victim.c_str()) != 0) {
            w.Error("unlink", errno);
            return false;
          }
        }
        return true;
      });
    });
    for (size_t i = 0; i < nb; i++) {
      const std::string dir = run.b[i];
      for (bool use_fd : {true, false}) {
        plan->Add(use_fd ? "fstat nlink" : "stat nlink", Label(i), [&run, dir, use_fd](Worker& w) {
          StatReader(
              w, run, dir + "/base", use_fd, [&](const struct stat& sb, uint64_t req, uint64_t st) {
                const auto n = static_cast<uint64_t>(sb.st_nlink);
                if (n < 1 || n > kLinkHalf + 1) {
                  return w.Garbage(Fmt("nlink %llu", static_cast<unsigned long long>(n)));
                }
                JudgeSet(
                    w, run, req, st, kLinkPeriod, [n](uint64_t k) { return LinkNlink(k) == n; },
                    Fmt("%s: nlink %llu", use_fd ? "fstat" : "stat",
                        static_cast<unsigned long long>(n)));
              });
        });
      }
      plan->Add("lookup", Label(i), [&run, dir](Worker& w) {
        Pacer pace(run, w.seed);
        auto name_of = [&](uint64_t x) {
          return Fmt("%s/l%llu", dir.c_str(), static_cast<unsigned long long>(x));
        };
        while (pace.Next()) {
          const uint64_t req = run.gen.Completed();
          if (req >= 1) {
            const bool linked = LinkIsLink(req);
            const uint64_t x = linked ? req : LinkMirror(req);
            w.Enter(linked ? "stat linked name" : "stat unlinked name");
            const int e = StatErr(name_of(x));
            const uint64_t st = run.gen.Started();
            w.Enter("idle");
            w.c.accesses++;
            if (e != 0 && e != ENOENT) {
              w.Error("stat", e);
            } else if (linked && e == ENOENT && LinkRemovedAt(x) > st) {
              Stale(w, run, req, req - 1,
                    Fmt("stat l%llu: ENOENT after its link returned",
                        static_cast<unsigned long long>(x)));
            } else if (!linked && e == 0) {
              Stale(w, run, req, req - 1,
                    Fmt("stat l%llu succeeded after its unlink returned",
                        static_cast<unsigned long long>(x)));
            }
          }
          const uint64_t next =
              req + 1;  // a negative entry before a link, positive before an unlink
          w.Enter("probe next name");
          const int pe = StatErr(name_of(LinkIsLink(next) ? next : LinkMirror(next)));
          w.Enter("idle");
          if (pe != 0 && pe != ENOENT) w.Error("stat (probe)", pe);
        }
      });
      plan->Add("readdir", Label(i), [&run, dir](Worker& w) {
        Pacer pace(run, w.seed);
        std::vector<std::string> names;
        while (pace.Next()) {
          const uint64_t req = run.gen.Completed();
          w.Enter("readdir");
          const int e = ListDir(dir, &names);
          const uint64_t st = run.gen.Started();
          w.Enter("idle");
          w.c.accesses++;
          if (e != 0) {
            w.Error("readdir", e);
            continue;
          }
          // A listing is not atomic: it takes at least two READDIRs (the second, at the last
          // cookie, ends it), and POSIX leaves open whether a name added or removed meanwhile is
          // listed. So a listing may mix states (fewer or more names than any one generation
          // had); what it must do is list no name that was gone before it started, and every
          // name that existed from before it started until after it ended.
          std::set<uint64_t> listed;
          bool judged = false;
          for (const auto& n : names) {
            uint64_t x = 0;
            if (!ParseGenName(n, 'l', &x)) continue;
            listed.insert(x);
            if (judged) continue;
            if (x == 0 || !LinkIsLink(x) || x > st) {
              w.Garbage("readdir lists " + n);
              judged = true;
            } else if (LinkRemovedAt(x) <= req) {
              Stale(w, run, req, LinkRemovedAt(x) - 1,
                    "readdir lists " + n + ", unlinked before the listing started");
              judged = true;
            }
          }
          if (judged) continue;
          // Names linked by a generation that had completed (x <= req) and not unlinked by one
          // that had started by the end (LinkRemovedAt(x) > st): only the current cycle and the
          // one before can hold such names.
          for (uint64_t x = req > 2 * kLinkPeriod ? req - 2 * kLinkPeriod : 1; x <= req; x++) {
            if (!LinkIsLink(x) || LinkRemovedAt(x) <= st || listed.count(x) != 0) continue;
            Stale(w, run, req, x - 1,
                  Fmt("readdir misses l%llu, linked before the listing started and not unlinked "
                      "by its end (%zu l names listed)",
                      static_cast<unsigned long long>(x), listed.size()));
            break;
          }
        }
      });
    }
    return;
  }
  SetupFail("unknown scenario " + name);
}

// ---- running and reporting --------------------------------------------------------------------

struct Result {
  std::string scenario;
  double seconds = 0;
  uint64_t accesses = 0, stale = 0, errors = 0, sigbus = 0, torn = 0, undecided = 0;
  uint64_t generations = 0;
  int64_t max_lag_ns = -1;
  bool ok = false;
  std::string verdict;
  std::string json;
};

std::string JsonStr(const std::string& s) {
  std::string o = "\"";
  for (char ch : s) {
    if (ch == '"' || ch == '\\') {
      o += '\\';
      o += ch;
    } else if (static_cast<unsigned char>(ch) < 0x20) {
      o += Fmt("\\u%04x", ch);
    } else {
      o += ch;
    }
  }
  return o + "\"";
}

std::string LagMs(int64_t ns) { return ns < 0 ? "-" : Fmt("%.3f", static_cast<double>(ns) / 1e6); }

Result RunScenario(const Options& opt, const std::string& name, int index, FILE* out) {
  Run run(opt);
  run.sub = Fmt("%s.%d.%d", name.c_str(), static_cast<int>(getpid()), index);
  run.a = opt.writer_dir + "/" + run.sub;
  for (const auto& d : opt.reader_dirs) run.b.push_back(d + "/" + run.sub);
  if (mkdir(run.a.c_str(), 0755) != 0) SetupFailErrno("mkdir " + run.a);
  for (const auto& d : run.b) WaitVisible(d, -1);

  Plan plan(opt.threads);
  PlanScenario(name, run, &plan);
  const uint64_t scenario_seed =
      opt.seed + 0x9e3779b97f4a7c15ULL * static_cast<uint64_t>(index + 1);
  for (size_t i = 0; i < plan.workers.size(); i++) {
    plan.workers[i]->seed = scenario_seed ^ (0xbf58476d1ce4e5b9ULL * (i + 1));
  }

  const int64_t t0 = NowNs();
  for (auto& wp : plan.workers) {
    Worker* w = wp.get();
    w->Enter("starting");
    w->thread = std::thread([&run, w] {
      w->body(*w);
      w->Enter("done");
      w->finished.store(true);
      std::lock_guard<std::mutex> l(run.mu);
      run.finished++;
      run.cv.notify_all();
    });
  }
  {
    std::unique_lock<std::mutex> l(run.mu);
    run.cv.wait_for(l, std::chrono::duration<double>(opt.seconds),
                    [&] { return run.finished == plan.workers.size(); });
  }
  run.Stop();
  {
    std::unique_lock<std::mutex> l(run.mu);
    if (!run.cv.wait_for(l, std::chrono::duration<double>(opt.hang_timeout),
                         [&] { return run.finished == plan.workers.size(); })) {
      std::fprintf(stderr,
                   "HANG: scenario %s: accesses still running %.0f s after the run ended:\n",
                   name.c_str(), opt.hang_timeout);
      for (auto& w : plan.workers) {
        if (w->finished.load()) continue;
        std::fprintf(stderr, "HANG:   %s@%s in %s for %.1f s\n", w->role.c_str(), w->where.c_str(),
                     w->op.load(), static_cast<double>(NowNs() - w->op_since.load()) / 1e9);
      }
      std::fflush(stdout);
      std::fflush(stderr);
      _exit(3);
    }
  }
  for (auto& w : plan.workers) w->thread.join();
  const double secs = static_cast<double>(NowNs() - t0) / 1e9;

  Result res;
  res.scenario = name;
  res.seconds = secs;
  std::string jreaders;
  for (auto& w : plan.workers) {
    const Counters& c = w->c;
    res.accesses += c.accesses;
    res.stale += c.stale;
    res.errors += c.ErrorCount();
    res.sigbus += c.sigbus;
    res.torn += c.torn;
    res.undecided += c.undecided;
    res.generations += c.generations;
    res.max_lag_ns = std::max(res.max_lag_ns, c.max_lag_ns);
    std::string jerr;
    for (const auto& [k, v] : c.errors) {
      jerr += Fmt("%s%s:%llu", jerr.empty() ? "" : ",", JsonStr(k).c_str(),
                  static_cast<unsigned long long>(v));
    }
    jreaders +=
        Fmt("%s{\"role\":%s,\"where\":%s,\"accesses\":%llu,\"stale\":%llu,\"errors\":{%s},"
            "\"sigbus\":%llu,\"torn\":%llu,\"undecided\":%llu,\"generations\":%llu,"
            "\"max_lag_ms\":%s}",
            jreaders.empty() ? "" : ",", JsonStr(w->role).c_str(), JsonStr(w->where).c_str(),
            static_cast<unsigned long long>(c.accesses), static_cast<unsigned long long>(c.stale),
            jerr.c_str(), static_cast<unsigned long long>(c.sigbus),
            static_cast<unsigned long long>(c.torn), static_cast<unsigned long long>(c.undecided),
            static_cast<unsigned long long>(c.generations),
            c.max_lag_ns < 0 ? "null" : LagMs(c.max_lag_ns).c_str());
  }
  if (opt.expect_stale) {
    res.ok = res.stale > 0 && res.errors == 0 && res.sigbus == 0;
    res.verdict = res.ok ? "CAUGHT" : (res.stale == 0 ? "NOT-CAUGHT" : "FAIL");
  } else {
    res.ok = res.stale == 0 && res.errors == 0 && res.sigbus == 0;
    res.verdict = res.ok ? "OK" : (res.stale > 0 ? "STALE" : "FAIL");
  }

  // The table.
  std::string modes;
  for (auto& w : plan.workers) {
    for (const auto& [k, v] : w->c.modes) {
      modes += Fmt("%s%llu %s", modes.empty() ? "" : ", ", static_cast<unsigned long long>(v),
                   k.c_str());
    }
  }
  std::fprintf(out, "== scenario %s: %.1f s, %llu generations (%s), dir %s\n", name.c_str(), secs,
               static_cast<unsigned long long>(res.generations), modes.c_str(), run.sub.c_str());
  std::fprintf(out, "  %-16s %-5s %6s %10s %8s %7s %7s %6s %9s %11s\n", "thread", "where", "gens",
               "accesses", "stale", "errors", "sigbus", "torn", "undecided", "max-lag-ms");
  for (auto& w : plan.workers) {
    const Counters& c = w->c;
    std::fprintf(
        out, "  %-16s %-5s %6s %10llu %8llu %7llu %7llu %6llu %9llu %11s\n", w->role.c_str(),
        w->where.c_str(), c.generations > 0 ? std::to_string(c.generations).c_str() : "-",
        static_cast<unsigned long long>(c.accesses), static_cast<unsigned long long>(c.stale),
        static_cast<unsigned long long>(c.ErrorCount()), static_cast<unsigned long long>(c.sigbus),
        static_cast<unsigned long long>(c.torn), static_cast<unsigned long long>(c.undecided),
        LagMs(c.max_lag_ns).c_str());
  }
  std::fprintf(
      out, "  %-16s %-5s %6llu %10llu %8llu %7llu %7llu %6llu %9llu %11s   %s\n", "TOTAL", "",
      static_cast<unsigned long long>(res.generations),
      static_cast<unsigned long long>(res.accesses), static_cast<unsigned long long>(res.stale),
      static_cast<unsigned long long>(res.errors), static_cast<unsigned long long>(res.sigbus),
      static_cast<unsigned long long>(res.torn), static_cast<unsigned long long>(res.undecided),
      LagMs(res.max_lag_ns).c_str(), res.verdict.c_str());
  for (auto& w : plan.workers) {
    for (const auto& [k, v] : w->c.errors) {
      std::fprintf(out, "  errors %s@%s: %s x%llu\n", w->role.c_str(), w->where.c_str(), k.c_str(),
                   static_cast<unsigned long long>(v));
    }
    for (const auto& e : w->c.examples) {
      std::fprintf(out, "  e.g. %s@%s: %s\n", w->role.c_str(), w->where.c_str(), e.c_str());
    }
  }
  if (opt.expect_stale) {
    if (res.verdict == "CAUGHT") {
      std::fprintf(out,
                   "  negative control: the checker caught the staleness (%llu stale accesses)\n",
                   static_cast<unsigned long long>(res.stale));
    } else if (res.verdict == "NOT-CAUGHT") {
      std::fprintf(out, "  negative control FAILED: no stale access seen\n");
    } else {
      std::fprintf(out,
                   "  negative control FAILED: errors or signals besides the stale accesses\n");
    }
  }
  std::fflush(out);
  res.json =
      Fmt("{\"scenario\":%s,\"seconds\":%.3f,\"seed\":%llu,\"expect_stale\":%s,"
          "\"generations\":%llu,\"accesses\":%llu,\"stale\":%llu,\"errors\":%llu,"
          "\"sigbus\":%llu,\"torn\":%llu,\"undecided\":%llu,\"max_lag_ms\":%s,"
          "\"verdict\":%s,\"ok\":%s,\"dir\":%s,\"threads\":[",
          JsonStr(name).c_str(), secs, static_cast<unsigned long long>(opt.seed),
          opt.expect_stale ? "true" : "false", static_cast<unsigned long long>(res.generations),
          static_cast<unsigned long long>(res.accesses), static_cast<unsigned long long>(res.stale),
          static_cast<unsigned long long>(res.errors), static_cast<unsigned long long>(res.sigbus),
          static_cast<unsigned long long>(res.torn), static_cast<unsigned long long>(res.undecided),
          res.max_lag_ns < 0 ? "null" : LagMs(res.max_lag_ns).c_str(), JsonStr(res.verdict).c_str(),
          res.ok ? "true" : "false", JsonStr(run.sub).c_str()) +
      jreaders + "]}";
  return res;
}

bool ParseDouble(const char* s, double* out) {
  char* end = nullptr;
  errno = 0;
  double v = std::strtod(s, &end);
  if (errno != 0 || end == s || *end != '\0' || !(v > 0)) return false;
  *out = v;
  return true;
}

bool ParseU64(const char* s, uint64_t* out) {
  char* end = nullptr;
  errno = 0;
  unsigned long long v = std::strtoull(s, &end, 0);
  if (errno != 0 || end == s || *end != '\0' || s[0] == '-') return false;
  *out = v;
  return true;
}

int Usage(const std::string& why) {
  if (!why.empty()) std::fprintf(stderr, "ugfs2-coherence-check: %s\n", why.c_str());
  std::fputs(kUsage, stderr);
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  Options opt;
  std::string scenario;
  for (int i = 1; i < argc; i++) {
    const std::string a = argv[i];
    auto value = [&]() -> const char* { return i + 1 < argc ? argv[++i] : nullptr; };
    if (a == "--help" || a == "-h") {
      std::fputs(kUsage, stdout);
      return 0;
    } else if (a == "--writer-dir") {
      const char* v = value();
      if (v == nullptr) return Usage("--writer-dir needs a value");
      opt.writer_dir = v;
    } else if (a == "--reader-dir") {
      const char* v = value();
      if (v == nullptr) return Usage("--reader-dir needs a value");
      opt.reader_dirs.push_back(v);
    } else if (a == "--scenario") {
      const char* v = value();
      if (v == nullptr) return Usage("--scenario needs a value");
      scenario = v;
    } else if (a == "--seconds") {
      const char* v = value();
      if (v == nullptr || !ParseDouble(v, &opt.seconds)) return Usage("bad --seconds");
    } else if (a == "--hang-timeout") {
      const char* v = value();
      if (v == nullptr || !ParseDouble(v, &opt.hang_timeout)) return Usage("bad --hang-timeout");
    } else if (a == "--pages") {
      const char* v = value();
      uint64_t p = 0;
      if (v == nullptr || !ParseU64(v, &p) || p < 1 || p > 256) {
        return Usage("bad --pages (1..256)");
      }
      opt.pages = static_cast<size_t>(p);
    } else if (a == "--threads") {
      const char* v = value();
      uint64_t t = 0;
      if (v == nullptr || !ParseU64(v, &t) || t < 1 || t > 16) {
        return Usage("bad --threads (1..16)");
      }
      opt.threads = static_cast<size_t>(t);
    } else if (a == "--seed") {
      const char* v = value();
      if (v == nullptr || !ParseU64(v, &opt.seed)) return Usage("bad --seed");
      opt.seed_set = true;
    } else if (a == "--expect-stale") {
      opt.expect_stale = true;
    } else if (a == "--json") {
      opt.json = true;
    } else {
      return Usage("unknown argument " + a);
    }
  }
  if (opt.writer_dir.empty()) return Usage("--writer-dir is required");
  if (opt.reader_dirs.empty()) return Usage("at least one --reader-dir is required");
  if (scenario.empty()) return Usage("--scenario is required");
  if (scenario == "all") {
    opt.scenarios.assign(std::begin(kScenarios), std::end(kScenarios));
  } else if (std::find_if(std::begin(kScenarios), std::end(kScenarios),
                          [&](const char* s) { return scenario == s; }) != std::end(kScenarios)) {
    opt.scenarios.push_back(scenario);
  } else {
    return Usage("unknown scenario " + scenario);
  }
  if (!opt.seed_set) {
    std::random_device rd;
    opt.seed = (static_cast<uint64_t>(rd()) << 32) ^ rd() ^ static_cast<uint64_t>(NowNs());
  }
  FILE* out = opt.json ? stderr : stdout;

  struct stat ws;
  if (stat(opt.writer_dir.c_str(), &ws) != 0 || !S_ISDIR(ws.st_mode)) {
    std::fprintf(stderr, "ugfs2-coherence-check: --writer-dir %s: not a directory\n",
                 opt.writer_dir.c_str());
    return 2;
  }
  std::fprintf(out,
               "ugfs2-coherence-check: seed %llu, %.1f s per scenario, %zu pages, %zu threads per "
               "reader kind and dir\n",
               static_cast<unsigned long long>(opt.seed), opt.seconds, opt.pages, opt.threads);
  std::fprintf(out, "  A  = %s (writer)\n", opt.writer_dir.c_str());
  for (size_t i = 0; i < opt.reader_dirs.size(); i++) {
    struct stat rs;
    if (stat(opt.reader_dirs[i].c_str(), &rs) != 0 || !S_ISDIR(rs.st_mode)) {
      std::fprintf(stderr, "ugfs2-coherence-check: --reader-dir %s: not a directory\n",
                   opt.reader_dirs[i].c_str());
      return 2;
    }
    std::fprintf(
        out, "  %-2s = %s%s\n", Label(i).c_str(), opt.reader_dirs[i].c_str(),
        rs.st_dev == ws.st_dev ? "  (warning: the same mount as A: nothing to check)" : "");
  }
  std::fflush(out);

  InstallFaultHandlers();
  std::vector<Result> results;
  for (size_t i = 0; i < opt.scenarios.size(); i++) {
    try {
      results.push_back(RunScenario(opt, opt.scenarios[i], static_cast<int>(i), out));
    } catch (const std::exception& e) {
      std::fprintf(stderr, "ugfs2-coherence-check: scenario %s: set-up failed: %s\n",
                   opt.scenarios[i].c_str(), e.what());
      return 2;
    }
    if (opt.json) {
      std::printf("%s\n", results.back().json.c_str());
      std::fflush(stdout);
    }
  }

  bool all_ok = true;
  std::fprintf(out, "== summary%s\n",
               opt.expect_stale ? " (negative control: --expect-stale)" : "");
  std::fprintf(out, "  %-10s %10s %8s %7s %7s %11s %11s  %s\n", "scenario", "accesses", "stale",
               "errors", "sigbus", "generations", "max-lag-ms", "verdict");
  for (const auto& r : results) {
    all_ok = all_ok && r.ok;
    std::fprintf(
        out, "  %-10s %10llu %8llu %7llu %7llu %11llu %11s  %s\n", r.scenario.c_str(),
        static_cast<unsigned long long>(r.accesses), static_cast<unsigned long long>(r.stale),
        static_cast<unsigned long long>(r.errors), static_cast<unsigned long long>(r.sigbus),
        static_cast<unsigned long long>(r.generations), LagMs(r.max_lag_ns).c_str(),
        r.verdict.c_str());
  }
  std::fflush(out);
  return all_ok ? 0 : 1;
}
