#include "common/status.h"

#include <cstring>

namespace ugfs2 {
namespace {

struct CodeInfo {
  Code code;
  const char* name;
  int err;
};

constexpr CodeInfo kCodes[] = {
    {Code::kOk, "OK", 0},
    {Code::kNotFound, "NotFound", ENOENT},
    {Code::kExists, "Exists", EEXIST},
    {Code::kNoSpace, "NoSpace", ENOSPC},
    {Code::kNotEmpty, "NotEmpty", ENOTEMPTY},
    {Code::kNotDir, "NotDir", ENOTDIR},
    {Code::kIsDir, "IsDir", EISDIR},
    {Code::kInvalid, "Invalid", EINVAL},
    {Code::kNameTooLong, "NameTooLong", ENAMETOOLONG},
    {Code::kAccess, "Access", EACCES},
    {Code::kPermission, "Permission", EPERM},
    {Code::kTooManyLinks, "TooManyLinks", EMLINK},
    {Code::kTooBig, "TooBig", EFBIG},
    {Code::kRange, "Range", ERANGE},
    {Code::kNoData, "NoData", ENODATA},
    {Code::kNotSupported, "NotSupported", EOPNOTSUPP},
    {Code::kBusy, "Busy", EBUSY},
    {Code::kCrossDevice, "CrossDevice", EXDEV},
    {Code::kReadOnly, "ReadOnly", EROFS},
    {Code::kIoError, "IoError", EIO},
    {Code::kCorrupt, "Corrupt", EIO},
    {Code::kStale, "Stale", ESTALE},
    {Code::kTryAgain, "TryAgain", EAGAIN},
    {Code::kLockConflict, "LockConflict", EAGAIN},
    {Code::kDeadlock, "Deadlock", EDEADLK},
    {Code::kFenced, "Fenced", EIO},
    {Code::kTimedOut, "TimedOut", ETIMEDOUT},
    {Code::kNotConnected, "NotConnected", ENOTCONN},
    {Code::kCanceled, "Canceled", ECANCELED},
    {Code::kOther, "Errno", EIO},
};

const CodeInfo& Info(Code code) {
  for (const auto& c : kCodes) {
    if (c.code == code) return c;
  }
  return kCodes[sizeof(kCodes) / sizeof(kCodes[0]) - 1];
}

}  // namespace

Status::Status(Code code, std::string_view msg, int err) {
  if (code == Code::kOk) return;
  rep_ = std::make_shared<const Rep>(Rep{code, err, std::string(msg)});
}

Status Status::FromErrno(int err, std::string_view context) {
  std::string msg(context);
  msg += ": ";
  msg += std::strerror(err);
  for (const auto& c : kCodes) {
    if (c.err == err && c.code != Code::kOk && c.code != Code::kCorrupt &&
        c.code != Code::kFenced && c.code != Code::kLockConflict && c.code != Code::kOther) {
      return Status(c.code, msg);
    }
  }
  return Status(Code::kOther, msg, err);
}

const std::string& Status::message() const {
  static const std::string kEmpty;
  return rep_ ? rep_->msg : kEmpty;
}

int Status::ToErrno() const {
  if (!rep_) return 0;
  if (rep_->code == Code::kOther && rep_->err != 0) return rep_->err;
  return Info(rep_->code).err;
}

std::string Status::ToString() const {
  if (!rep_) return "OK";
  std::string s = Info(rep_->code).name;
  if (!rep_->msg.empty()) {
    s += ": ";
    s += rep_->msg;
  }
  return s;
}

Status Status::WithContext(std::string_view context) const {
  if (!rep_) return *this;
  std::string msg(context);
  msg += ": ";
  msg += rep_->msg;
  return Status(rep_->code, msg, rep_->err);
}

const char* CodeName(Code code) { return Info(code).name; }

}  // namespace ugfs2
