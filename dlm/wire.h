// Little-endian byte encoding used on the wire (CPG messages, lock-table snapshots, IPC).
// Values only; thread-compatible.
#ifndef UGFS2_DLM_WIRE_H_
#define UGFS2_DLM_WIRE_H_

#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>
#include <vector>

namespace ugfs2::dlm {

class ByteWriter {
 public:
  void U8(uint8_t v) { buf_.push_back(v); }
  void U16(uint16_t v) { Raw(&v, 2); }
  void U32(uint32_t v) { Raw(&v, 4); }
  void U64(uint64_t v) { Raw(&v, 8); }
  void I64(int64_t v) { Raw(&v, 8); }
  void Bytes(const void* p, size_t n) { Raw(p, n); }
  void Str(std::string_view s) {
    U32(static_cast<uint32_t>(s.size()));
    Raw(s.data(), s.size());
  }
  std::vector<uint8_t>& buf() { return buf_; }
  std::vector<uint8_t> Take() { return std::move(buf_); }

 private:
  void Raw(const void* p, size_t n) {
    const auto* b = static_cast<const uint8_t*>(p);
    buf_.insert(buf_.end(), b, b + n);  // host is little-endian (x86-64/aarch64)
  }
  std::vector<uint8_t> buf_;
};

// Reads never run past the end; once a read fails, ok() is false and all further reads return 0.
class ByteReader {
 public:
  ByteReader(const uint8_t* p, size_t n) : p_(p), n_(n) {}
  uint8_t U8() {
    uint8_t v = 0;
    Raw(&v, 1);
    return v;
  }
  uint16_t U16() {
    uint16_t v = 0;
    Raw(&v, 2);
    return v;
  }
  uint32_t U32() {
    uint32_t v = 0;
    Raw(&v, 4);
    return v;
  }
  uint64_t U64() {
    uint64_t v = 0;
    Raw(&v, 8);
    return v;
  }
  int64_t I64() {
    int64_t v = 0;
    Raw(&v, 8);
    return v;
  }
  void Bytes(void* p, size_t n) { Raw(p, n); }
  std::string Str(size_t max = 1 << 20) {
    uint32_t len = U32();
    if (!ok_ || len > max || len > n_ - off_) {
      ok_ = false;
      return {};
    }
    std::string s(reinterpret_cast<const char*>(p_ + off_), len);
    off_ += len;
    return s;
  }
  bool ok() const { return ok_; }
  bool done() const { return off_ == n_; }
  size_t remaining() const { return n_ - off_; }

 private:
  void Raw(void* out, size_t n) {
    if (!ok_ || n > n_ - off_) {
      ok_ = false;
      std::memset(out, 0, n);
      return;
    }
    std::memcpy(out, p_ + off_, n);
    off_ += n;
  }
  const uint8_t* p_;
  size_t n_;
  size_t off_ = 0;
  bool ok_ = true;
};

}  // namespace ugfs2::dlm

#endif  // UGFS2_DLM_WIRE_H_
