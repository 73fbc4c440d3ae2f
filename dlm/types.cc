#include "types.h"

namespace ugfs2::dlm {
namespace {

// Rows/columns indexed by mode + 1 (kIV .. kEX).
constexpr bool kCompat[7][7] = {
    {true, true, true, true, true, true, true},      // IV
    {true, true, true, true, true, true, true},      // NL
    {true, true, true, true, true, true, false},     // CR
    {true, true, true, true, false, false, false},   // CW
    {true, true, true, false, true, false, false},   // PR
    {true, true, true, false, false, false, false},  // PW
    {true, true, false, false, false, false, false}  // EX
};

}  // namespace

const char* ModeName(int mode) {
  switch (mode) {
    case kNL:
      return "NL";
    case kCR:
      return "CR";
    case kCW:
      return "CW";
    case kPR:
      return "PR";
    case kPW:
      return "PW";
    case kEX:
      return "EX";
    case kIV:
      return "IV";
  }
  return "??";
}

bool ParseMode(std::string_view s, Mode* out) {
  for (int m = kNL; m <= kEX; ++m) {
    if (s == ModeName(m)) {
      *out = static_cast<Mode>(m);
      return true;
    }
  }
  return false;
}

bool ModesCompatible(int a, int b) {
  if (a < kIV || a > kEX || b < kIV || b > kEX) return false;
  return kCompat[a + 1][b + 1];
}

std::string FlagsString(uint32_t flags) {
  static constexpr struct {
    uint32_t bit;
    const char* name;
  } kNames[] = {{kLkfNoQueue, "NOQUEUE"},
                {kLkfCancel, "CANCEL"},
                {kLkfConvert, "CONVERT"},
                {kLkfValBlk, "VALBLK"},
                {kLkfQueCvt, "QUECVT"},
                {kLkfIvValBlk, "IVVALBLK"},
                {kLkfConvDeadlk, "CONVDEADLK"},
                {kLkfNoDlckWt, "NODLCKWT"},
                {kLkfExpedite, "EXPEDITE"},
                {kLkfNoQueueBast, "NOQUEUEBAST"},
                {kLkfHeadQue, "HEADQUE"},
                {kLkfNoOrder, "NOORDER"},
                {kLkfAltPr, "ALTPR"},
                {kLkfAltCw, "ALTCW"},
                {kLkfForceUnlock, "FORCEUNLOCK"},
                {kLkfNoExp, "NOEXP"}};
  std::string out;
  for (const auto& n : kNames) {
    if (flags & n.bit) {
      if (!out.empty()) out += '|';
      out += n.name;
    }
  }
  return out;
}

const char* StatusName(int status) {
  switch (status) {
    case kStatusOk:
      return "OK";
    case kStatusAgain:
      return "EAGAIN";
    case kStatusDeadlock:
      return "EDEADLK";
    case kStatusFenced:
      return "EFENCED";
    case kStatusInvalid:
      return "EINVAL";
    case kStatusCancel:
      return "ECANCEL";
    case kStatusUnlock:
      return "EUNLOCK";
  }
  return "E?";
}

}  // namespace ugfs2::dlm
