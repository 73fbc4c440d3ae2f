#include "common.h"

#include <sys/mman.h>
#include <time.h>

#include <cerrno>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <new>

namespace ugfs2::mmap_stress {

const char* FileName(FileId f) {
  switch (f) {
    case kFileA:
      return "A";
    case kFileB:
      return "B";
    case kFileF:
      return "F";
    case kFileS:
      return "S";
    case kFileP:
      return "P";
    case kFileG:
      return "G";
    case kFileX:
      return "x";
  }
  return "?";
}

void FillPattern(uint8_t* dst, size_t len, Expect e) {
  const uint64_t key = PatternKey(e.file, e.gen);
  size_t i = 0;
  // Head up to the first 8-byte boundary of the file offset, then whole words, then the tail.
  for (; i < len && (e.off + i) % 8 != 0; ++i) dst[i] = PatternByte(e.file, e.gen, e.off + i);
  for (; i + 8 <= len; i += 8) {
    const uint64_t w = PatternWord(key, (e.off + i) / 8);
    std::memcpy(dst + i, &w, 8);  // little-endian host (x86-64, arm64)
  }
  for (; i < len; ++i) dst[i] = PatternByte(e.file, e.gen, e.off + i);
}

size_t FirstMismatch(const uint8_t* p, size_t len, Expect e) {
  const uint64_t key = PatternKey(e.file, e.gen);
  size_t i = 0;
  for (; i < len && (e.off + i) % 8 != 0; ++i) {
    if (p[i] != PatternByte(e.file, e.gen, e.off + i)) return i;
  }
  for (; i + 8 <= len; i += 8) {
    uint64_t w;
    std::memcpy(&w, p + i, 8);
    if (w != PatternWord(key, (e.off + i) / 8)) break;  // find the byte below
  }
  for (; i < len; ++i) {
    if (p[i] != PatternByte(e.file, e.gen, e.off + i)) return i;
  }
  return len;
}

size_t CountMismatches(const uint8_t* p, size_t len, Expect e) {
  size_t n = 0;
  for (size_t i = 0; i < len; ++i) n += p[i] != PatternByte(e.file, e.gen, e.off + i);
  return n;
}

void AlignedBuffer::Free::operator()(uint8_t* p) const { std::free(p); }

AlignedBuffer::AlignedBuffer(size_t len) : len_(len) {
  const size_t rounded = (len + kBlock - 1) / kBlock * kBlock;
  void* p = std::aligned_alloc(kBlock, rounded == 0 ? kBlock : rounded);
  if (p == nullptr) {
    std::fprintf(stderr, "ugfs2-mmap-stress: out of memory (%zu bytes)\n", len);
    std::abort();
  }
  std::memset(p, 0, rounded == 0 ? kBlock : rounded);
  data_.reset(static_cast<uint8_t*>(p));
}

SharedRegion::SharedRegion(size_t words) : nwords_(words) {
  const size_t header = (sizeof(SharedHeader) + 63) / 64 * 64;
  len_ = header + words * sizeof(uint64_t);
  base_ = mmap(nullptr, len_, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (base_ == MAP_FAILED) {
    std::fprintf(stderr, "ugfs2-mmap-stress: mmap of the shared region (%zu bytes): %s\n", len_,
                 std::strerror(errno));
    std::abort();
  }
  header_ = new (base_) SharedHeader();
  words_ = reinterpret_cast<uint64_t*>(static_cast<char*>(base_) + header);
}

SharedRegion::~SharedRegion() {
  if (base_ != nullptr) munmap(base_, len_);
}

void SharedRegion::ResetSlot(int slot) {
  Slot* s = &header_->slots[slot];
  s->~Slot();
  new (s) Slot();
  std::memset(s->current, 0, sizeof(s->current));
  std::memset(s->message, 0, sizeof(s->message));
}

double NowSeconds() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) * 1e-9;
}

void SleepSeconds(double s) {
  timespec ts;
  ts.tv_sec = static_cast<time_t>(s);
  ts.tv_nsec = static_cast<long>((s - static_cast<double>(ts.tv_sec)) * 1e9);
  while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
  }
}

std::string StrFormat(const char* fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  va_list ap2;
  va_copy(ap2, ap);
  const int n = std::vsnprintf(nullptr, 0, fmt, ap);
  va_end(ap);
  std::string out(n > 0 ? static_cast<size_t>(n) : 0, '\0');
  if (n > 0) std::vsnprintf(out.data(), out.size() + 1, fmt, ap2);
  va_end(ap2);
  return out;
}

std::string HexLine(uint64_t label_off, const uint8_t* p, size_t n) {
  std::string out = StrFormat("%10llu:", static_cast<unsigned long long>(label_off));
  for (size_t i = 0; i < n; ++i) out += StrFormat(" %02x", p[i]);
  return out;
}

std::string ShellQuote(const std::string& s) {
  bool plain = !s.empty();
  for (const char c : s) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                    std::strchr("_./,:+=@%-", c) != nullptr;
    if (!ok) plain = false;
  }
  if (plain) return s;
  std::string out = "'";
  for (const char c : s) {
    if (c == '\'') {
      out += "'\\''";
    } else {
      out += c;
    }
  }
  return out + "'";
}

std::string Substitute(std::string s, const std::string& key, const std::string& value) {
  const std::string pat = "{" + key + "}";
  for (size_t pos = s.find(pat); pos != std::string::npos; pos = s.find(pat, pos + value.size())) {
    s.replace(pos, pat.size(), value);
  }
  return s;
}

}  // namespace ugfs2::mmap_stress
