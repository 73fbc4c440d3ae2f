// Status and Result<T>: the one error type of ugfs2.
//
// A Status is either OK or an error Code plus a message. Every Code maps to exactly one POSIX
// errno (ToErrno), so the FUSE layer can reply with it directly. Two codes are special for the
// cluster: kTryAgain (retryable: the caller may retry the whole operation, e.g. after lock
// contention) and kFenced (this node lost the right to write the shared disk and must stop).
//
// Result<T> holds a T or a non-OK Status. Both types are [[nodiscard]].
// Thread safety: values; const methods are safe from many threads.
#ifndef UGFS2_SRC_COMMON_STATUS_H_
#define UGFS2_SRC_COMMON_STATUS_H_

#include <cerrno>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>

namespace ugfs2 {

enum class Code : int {
  kOk = 0,
  kNotFound,      // ENOENT
  kExists,        // EEXIST
  kNoSpace,       // ENOSPC
  kNotEmpty,      // ENOTEMPTY
  kNotDir,        // ENOTDIR
  kIsDir,         // EISDIR
  kInvalid,       // EINVAL
  kNameTooLong,   // ENAMETOOLONG
  kAccess,        // EACCES
  kPermission,    // EPERM
  kTooManyLinks,  // EMLINK
  kTooBig,        // EFBIG
  kRange,         // ERANGE
  kNoData,        // ENODATA
  kNotSupported,  // EOPNOTSUPP
  kBusy,          // EBUSY
  kCrossDevice,   // EXDEV
  kReadOnly,      // EROFS
  kIoError,       // EIO: device failed
  kCorrupt,       // EIO: on-disk content is damaged
  kStale,         // ESTALE: object removed by another node
  kTryAgain,      // EAGAIN: retryable (lock contention, transient)
  kLockConflict,  // EAGAIN: a try-lock failed
  kDeadlock,      // EDEADLK
  kFenced,        // EIO: this node has been fenced; must stop writing
  kTimedOut,      // ETIMEDOUT
  kNotConnected,  // ENOTCONN
  kCanceled,      // ECANCELED
  kOther,         // errno carried explicitly
};

class [[nodiscard]] Status {
 public:
  Status() = default;  // OK
  Status(Code code, std::string_view msg, int err = 0);

  static Status Ok() { return Status(); }
  static Status NotFound(std::string_view m) { return {Code::kNotFound, m}; }
  static Status Exists(std::string_view m) { return {Code::kExists, m}; }
  static Status NoSpace(std::string_view m) { return {Code::kNoSpace, m}; }
  static Status NotEmpty(std::string_view m) { return {Code::kNotEmpty, m}; }
  static Status NotDir(std::string_view m) { return {Code::kNotDir, m}; }
  static Status IsDir(std::string_view m) { return {Code::kIsDir, m}; }
  static Status Invalid(std::string_view m) { return {Code::kInvalid, m}; }
  static Status NameTooLong(std::string_view m) { return {Code::kNameTooLong, m}; }
  static Status Access(std::string_view m) { return {Code::kAccess, m}; }
  static Status Permission(std::string_view m) { return {Code::kPermission, m}; }
  static Status NotSupported(std::string_view m) { return {Code::kNotSupported, m}; }
  static Status IoError(std::string_view m) { return {Code::kIoError, m}; }
  static Status Corrupt(std::string_view m) { return {Code::kCorrupt, m}; }
  static Status TryAgain(std::string_view m) { return {Code::kTryAgain, m}; }
  static Status Fenced(std::string_view m) { return {Code::kFenced, m}; }
  static Status Busy(std::string_view m) { return {Code::kBusy, m}; }
  // errno -> Status: the single translation point from the OS.
  static Status FromErrno(int err, std::string_view context);

  bool ok() const { return rep_ == nullptr; }
  Code code() const { return rep_ ? rep_->code : Code::kOk; }
  const std::string& message() const;
  // The POSIX errno for this status (0 when OK).
  int ToErrno() const;
  // True for errors where retrying the whole operation can succeed.
  bool IsRetryable() const { return code() == Code::kTryAgain || code() == Code::kLockConflict; }
  bool IsFenced() const { return code() == Code::kFenced; }
  bool IsNotFound() const { return code() == Code::kNotFound; }
  bool IsCorrupt() const { return code() == Code::kCorrupt; }
  std::string ToString() const;

  // Returns a copy of this status with "context: " prepended to the message.
  Status WithContext(std::string_view context) const;

 private:
  struct Rep {
    Code code;
    int err;
    std::string msg;
  };
  std::shared_ptr<const Rep> rep_;  // null == OK; shared so copies are cheap
};

const char* CodeName(Code code);

// Result<T>: a T or an error Status.
template <typename T>
class [[nodiscard]] Result {
 public:
  Result(T value) : value_(std::move(value)) {}         // NOLINT: implicit by design
  Result(Status status) : status_(std::move(status)) {  // NOLINT
    if (status_.ok()) status_ = Status(Code::kInvalid, "Result constructed from OK status");
  }

  bool ok() const { return value_.has_value(); }
  const Status& status() const { return status_; }
  T& value() & { return *value_; }
  const T& value() const& { return *value_; }
  T&& value() && { return std::move(*value_); }
  T* operator->() { return &*value_; }
  const T* operator->() const { return &*value_; }
  T& operator*() & { return *value_; }
  const T& operator*() const& { return *value_; }

 private:
  std::optional<T> value_;
  Status status_;
};

}  // namespace ugfs2

#define UGFS2_CONCAT_INNER(a, b) a##b
#define UGFS2_CONCAT(a, b) UGFS2_CONCAT_INNER(a, b)

// Returns from the current function if `expr` (a Status) is not OK.
// (The temporary is named after the line, so a lambda inside `expr` may use the macro too.)
#define RETURN_IF_ERROR(expr) RETURN_IF_ERROR_IMPL(UGFS2_CONCAT(_st_, __LINE__), expr)
#define RETURN_IF_ERROR_IMPL(tmp, expr) \
  do {                                  \
    ::ugfs2::Status tmp = (expr);       \
    if (!tmp.ok()) return tmp;          \
  } while (0)

// ASSIGN_OR_RETURN(auto x, MakeX()); declares x from a Result or returns its Status.
#define ASSIGN_OR_RETURN(lhs, rexpr) \
  ASSIGN_OR_RETURN_IMPL(UGFS2_CONCAT(_res_, __LINE__), lhs, rexpr)
#define ASSIGN_OR_RETURN_IMPL(tmp, lhs, rexpr) \
  auto tmp = (rexpr);                          \
  if (!tmp.ok()) return tmp.status();          \
  lhs = std::move(tmp).value()

#endif  // UGFS2_SRC_COMMON_STATUS_H_
