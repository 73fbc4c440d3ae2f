#include "worker.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>

namespace ugfs2::mmap_stress {
namespace {

// The slot that the SIGBUS/SIGSEGV handler reports into. The only mutable global of the tool:
// a signal handler can reach nothing else. Set once per child process, before the handler is
// installed; a lock-free atomic, so the handler's load is async-signal-safe.
std::atomic<Slot*> g_fault_slot{nullptr};

void FaultHandler(int sig, siginfo_t* info, void* /*ucontext*/) {
  Slot* s = g_fault_slot.load();
  if (s != nullptr) {
    s->fault_code.store(info->si_code);
    s->fault_addr.store(reinterpret_cast<uintptr_t>(info->si_addr));
    s->fault_signo.store(sig);
  }
  _exit(kExitFault);
}

void InstallFaultHandler(Slot* slot) {
  g_fault_slot.store(slot);
  // An alternate stack, so that a fault on the stack itself is reported too. The child exits
  // with it: never freed.
  stack_t ss{};
  ss.ss_size = 64 * 1024;
  ss.ss_sp = std::malloc(ss.ss_size);
  if (ss.ss_sp != nullptr) sigaltstack(&ss, nullptr);
  struct sigaction sa {};
  sa.sa_sigaction = FaultHandler;
  sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGBUS, &sa, nullptr);
  sigaction(SIGSEGV, &sa, nullptr);
}

void CopyText(char* dst, size_t cap, const std::string& s) {
  const size_t n = std::min(cap - 1, s.size());
  std::memcpy(dst, s.data(), n);
  dst[n] = '\0';
}

}  // namespace

Worker::Worker(const WorkerContext& ctx)
    : ctx_(ctx),
      hdr_(ctx.shared->header()),
      slot_(&ctx.shared->header()->slots[ctx.slot]),
      rng_(SplitMix64(ctx.seed)) {
  prefix_ = StrFormat("%s %s (pid %d, dir %s)", ctx_.scenario.c_str(), ctx_.role.c_str(),
                      static_cast<int>(getpid()), ctx_.dir.c_str());
  InstallFaultHandler(slot_);
}

std::string Worker::Path(const std::string& name) const {
  if (!name.empty() && name[0] == '/') return name;
  return ctx_.subdir + "/" + name;
}

void Worker::Doing(const char* fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  std::vsnprintf(slot_->current, sizeof(slot_->current), fmt, ap);
  va_end(ap);
}

void Worker::Step() {
  slot_->progress.fetch_add(1, std::memory_order_release);
  if (ctx_.stall && went_ && ++steps_after_go_ >= 5) {
    char last[sizeof(slot_->current)];
    std::memcpy(last, slot_->current, sizeof(last));
    last[sizeof(last) - 1] = '\0';
    Doing("stalled on purpose (--inject-stall), after: %s", last);
    for (;;) pause();  // until the parent's SIGKILL
  }
}

void Worker::Ready() {
  Doing("ready, waiting for the other workers");
  slot_->ready.store(1, std::memory_order_release);
  Step();
  // A bounded poll of the parent's start flag (it is set within 100 ms of the last worker
  // being ready); stop set instead means the cell is abandoned.
  while (hdr_->go.load(std::memory_order_acquire) == 0) {
    if (Stopped()) Finish();
    SleepSeconds(0.001);
  }
  went_ = true;
}

void Worker::Finish() {
  Doing("finished");
  Step();
  _exit(kExitOk);
}

void Worker::Fail(int code, const std::string& what) {
  CopyText(slot_->message, sizeof(slot_->message), prefix_ + ": " + what);
  _exit(code);
}

void Worker::SysFail(const char* call, int err) {
  std::string msg =
      StrFormat("%s failed: %s (errno %d, %s) while: %s", call, std::strerror(err), err,
                strerrorname_np(err) != nullptr ? strerrorname_np(err) : "?", slot_->current);
  if (err == EINVAL && std::strstr(slot_->current, "O_DIRECT") != nullptr) {
    msg += " (does this filesystem support O_DIRECT? tmpfs does not)";
  }
  Fail(kExitSyscall, msg);
}

int Worker::Open(const std::string& name, int flags, mode_t mode) {
  const std::string path = Path(name);
  Doing("open %s%s", path.c_str(), (flags & O_DIRECT) != 0 ? " O_DIRECT" : "");
  const int fd = open(path.c_str(), flags | O_CLOEXEC, mode);
  Ops();
  if (fd < 0) SysFail("open", errno);
  return fd;
}

void Worker::Close(int fd) {
  if (close(fd) != 0) SysFail("close", errno);
  Ops();
}

uint8_t* Worker::Map(int fd, size_t len, int prot) {
  void* p = mmap(nullptr, len, prot, MAP_SHARED, fd, 0);
  Ops();
  if (p == MAP_FAILED) SysFail("mmap", errno);
  return static_cast<uint8_t*>(p);
}

void Worker::Unmap(void* p, size_t len) {
  if (munmap(p, len) != 0) SysFail("munmap", errno);
  Ops();
}

void Worker::PreadFull(int fd, void* buf, size_t len, uint64_t off) {
  size_t done = 0;
  while (done < len) {
    const ssize_t r =
        pread(fd, static_cast<uint8_t*>(buf) + done, len - done, static_cast<off_t>(off + done));
    Ops();
    if (r < 0) {
      if (errno == EINTR) continue;
      SysFail("pread", errno);
    }
    if (r == 0) {
      Fail(kExitSyscall,
           StrFormat("pread: unexpected end of file at offset %llu (%zu of %zu "
                     "bytes read) while: %s",
                     static_cast<unsigned long long>(off + done), done, len, slot_->current));
    }
    done += static_cast<size_t>(r);
  }
}

void Worker::PwriteFull(int fd, const void* buf, size_t len, uint64_t off) {
  size_t done = 0;
  while (done < len) {
    const ssize_t r = pwrite(fd, static_cast<const uint8_t*>(buf) + done, len - done,
                             static_cast<off_t>(off + done));
    Ops();
    if (r < 0) {
      if (errno == EINTR) continue;
      SysFail("pwrite", errno);
    }
    if (r == 0) {
      Fail(kExitSyscall, StrFormat("pwrite wrote nothing at offset %llu while: %s",
                                   static_cast<unsigned long long>(off + done), slot_->current));
    }
    done += static_cast<size_t>(r);
  }
}

void Worker::Msync(void* p, size_t len) {
  if (msync(p, len, MS_SYNC) != 0) SysFail("msync", errno);
  Ops();
}

void Worker::Fsync(int fd) {
  if (fsync(fd) != 0) SysFail("fsync", errno);
  Ops();
}

std::string Worker::MismatchReport(const uint8_t* p, size_t len, size_t i, Expect e,
                                   const char* where_file, uint64_t where_off) const {
  const size_t ndiff = CountMismatches(p, len, e);
  const size_t start = i / 16 * 16;
  const size_t n = std::min<size_t>(16, len - start);
  uint8_t expected[16];
  FillPattern(expected, n, Expect{e.file, e.gen, e.off + start});
  bool zeros = true;
  for (size_t k = 0; k < len && zeros; ++k) zeros = p[k] == 0;
  // What the wrong block holds instead, if it is a pattern the tool knows: the initial content
  // of one of the files at that offset (a lost write shows as the old content).
  std::string holds;
  const size_t blk = i / kBlock * kBlock;
  const size_t blen = std::min<size_t>(kBlock, len - blk);
  for (uint32_t f = kFileA; f <= kFileX && holds.empty(); ++f) {
    const Expect guess{static_cast<FileId>(f), 0, where_off + blk};
    if (FirstMismatch(p + blk, blen, guess) == blen) {
      holds = StrFormat("; the block at offset %llu holds %s's initial content at that offset",
                        static_cast<unsigned long long>(where_off + blk),
                        FileName(static_cast<FileId>(f)));
    }
  }
  std::string out = StrFormat(
      "file %s offset %llu: found a wrong byte (byte %zu of the %zu checked, %zu differ%s); "
      "expected the pattern of %s generation %llu offset %llu%s\n"
      "    expected %s\n"
      "    found    %s",
      where_file, static_cast<unsigned long long>(where_off + i), i, len, ndiff,
      zeros ? ", all of them zero" : "", FileName(e.file), static_cast<unsigned long long>(e.gen),
      static_cast<unsigned long long>(e.off + i), holds.c_str(),
      HexLine(where_off + start, expected, n).c_str(),
      HexLine(where_off + start, p + start, n).c_str());
  return out;
}

void Worker::Verify(const uint8_t* p, size_t len, Expect e, const char* where_file,
                    uint64_t where_off) {
  const size_t i = FirstMismatch(p, len, e);
  if (i == len) return;
  // p may be a mapping that changes under us: report on a copy, so that the report is what was
  // there (a copy that matches means the bytes changed while being checked).
  AlignedBuffer snap(len);
  std::memcpy(snap.data(), p, len);
  const size_t j = FirstMismatch(snap.data(), len, e);
  if (j == len) {
    Fail(kExitVerify,
         StrFormat("verification error after: %s\n  file %s offset %llu: a wrong byte at the "
                   "first compare, but a copy taken right after matches (the bytes changed "
                   "while being checked)",
                   slot_->current, where_file, static_cast<unsigned long long>(where_off + i)));
  }
  Fail(kExitVerify, StrFormat("verification error after: %s\n  ", slot_->current) +
                        MismatchReport(snap.data(), len, j, e, where_file, where_off));
}

void Worker::PreadIntoMapping(int fd, uint8_t* dst, size_t len, uint64_t off, Expect want,
                              Expect before, const char* where_file, uint64_t where_off) {
  // Bounded: a revoke per attempt, each attempt a step the watchdog sees.
  constexpr int kMaxAttempts = 1000;
  for (int attempt = 1;; ++attempt) {
    PreadFull(fd, dst, len, off);
    if (FirstMismatch(dst, len, want) == len) return;
    if (!ctx_.spread || attempt == kMaxAttempts) break;
    if (FirstBlockNeither(dst, len, want, before) != len) break;
    DroppedPin();
    Step();
  }
  Verify(dst, len, want, where_file, where_off);
}

size_t Worker::FirstBlockNeither(const uint8_t* p, size_t len, Expect a, Expect b) {
  for (size_t blk = 0; blk < len; blk += kBlock) {
    const size_t n = std::min<size_t>(kBlock, len - blk);
    if (FirstMismatch(p + blk, n, Expect{a.file, a.gen, a.off + blk}) != n &&
        FirstMismatch(p + blk, n, Expect{b.file, b.gen, b.off + blk}) != n) {
      return blk;
    }
  }
  return len;
}

void Worker::VerifyEither(const uint8_t* p, size_t len, Expect a, Expect b, const char* where_file,
                          uint64_t where_off) {
  const size_t blk = FirstBlockNeither(p, len, a, b);
  if (blk != len) {
    const size_t n = std::min<size_t>(kBlock, len - blk);
    const Expect ea{a.file, a.gen, a.off + blk};
    const Expect eb{b.file, b.gen, b.off + blk};
    const size_t ia = FirstMismatch(p + blk, n, ea);
    Fail(kExitVerify,
         StrFormat("verification error after: %s\n  block at %s offset %llu is neither %s "
                   "offset %llu nor %s offset %llu; compared with the first:\n  ",
                   slot_->current, where_file, static_cast<unsigned long long>(where_off + blk),
                   FileName(a.file), static_cast<unsigned long long>(ea.off), FileName(b.file),
                   static_cast<unsigned long long>(eb.off)) +
             MismatchReport(p + blk, n, ia, ea, where_file, where_off + blk));
  }
}

uint64_t Worker::RandomLength(uint64_t lo, uint64_t hi) {
  return lo + kBlock * rng_.Below((hi - lo) / kBlock + 1);
}

uint64_t Worker::RandomOffset(uint64_t max) { return kBlock * rng_.Below(max / kBlock + 1); }

}  // namespace ugfs2::mmap_stress
