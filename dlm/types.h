// Lock manager vocabulary: modes, flags, the lock status block and result codes.
//
// The values mirror the Linux kernel DLM (include/uapi/linux/dlmconstants.h) so that code written
// against dlm_lock()/dlm_unlock() ports one-to-one. Everything here is a plain value type and
// thread-compatible.
#ifndef UGFS2_DLM_TYPES_H_
#define UGFS2_DLM_TYPES_H_

#include <array>
#include <cstdint>
#include <string>
#include <string_view>

namespace ugfs2::dlm {

// Lock modes. kIV means "no mode" (not granted / nothing requested).
enum Mode : int8_t { kIV = -1, kNL = 0, kCR = 1, kCW = 2, kPR = 3, kPW = 4, kEX = 5 };

const char* ModeName(int mode);  // "NL".."EX", "IV"
bool ParseMode(std::string_view s, Mode* out);

// The DLM compatibility matrix. Both arguments must be valid modes (kNL..kEX); kIV is compatible
// with everything.
bool ModesCompatible(int a, int b);

// dlm_lock()/dlm_unlock() flags. Same bit values as the kernel's DLM_LKF_*.
inline constexpr uint32_t kLkfNoQueue = 0x1;
inline constexpr uint32_t kLkfCancel = 0x2;
inline constexpr uint32_t kLkfConvert = 0x4;
inline constexpr uint32_t kLkfValBlk = 0x8;
inline constexpr uint32_t kLkfQueCvt = 0x10;
inline constexpr uint32_t kLkfIvValBlk = 0x20;
inline constexpr uint32_t kLkfConvDeadlk = 0x40;
inline constexpr uint32_t kLkfNoDlckWt = 0x100;
inline constexpr uint32_t kLkfExpedite = 0x400;
inline constexpr uint32_t kLkfNoQueueBast = 0x800;
inline constexpr uint32_t kLkfHeadQue = 0x1000;
inline constexpr uint32_t kLkfNoOrder = 0x2000;
inline constexpr uint32_t kLkfAltPr = 0x8000;
inline constexpr uint32_t kLkfAltCw = 0x10000;
inline constexpr uint32_t kLkfForceUnlock = 0x20000;
// Not a kernel DLM flag (gfs2's LM_FLAG_NOEXP): may be granted while a failed node's locks are
// still awaiting recovery; such a request ignores the dead node's locks.
inline constexpr uint32_t kLkfNoExp = 0x200000;
// Not a DLM flag, and never sent (ugfs2's own): the caller does not wait for this completion
// soon (a glock granted provisionally), so the request may travel in one message with later ones
// (Lockspace::Lock).
inline constexpr uint32_t kLkfBatch = 0x80000000;

inline constexpr uint32_t kLockFlagsMask = kLkfNoQueue | kLkfConvert | kLkfValBlk | kLkfQueCvt |
                                           kLkfConvDeadlk | kLkfNoDlckWt | kLkfExpedite |
                                           kLkfNoQueueBast | kLkfHeadQue | kLkfNoOrder | kLkfAltPr |
                                           kLkfAltCw | kLkfNoExp | kLkfIvValBlk | kLkfBatch;
inline constexpr uint32_t kUnlockFlagsMask =
    kLkfCancel | kLkfValBlk | kLkfIvValBlk | kLkfForceUnlock;

std::string FlagsString(uint32_t flags);  // "NOQUEUE|VALBLK"

// Lock status block flags (sb_flags).
inline constexpr uint32_t kSbfDemoted = 0x01;
inline constexpr uint32_t kSbfValNotValid = 0x02;
inline constexpr uint32_t kSbfAltMode = 0x04;

// Completion status values (sb_status), kernel conventions: 0 = granted, negative errno or the
// DLM-specific codes below.
inline constexpr int kStatusOk = 0;
inline constexpr int kStatusAgain = -11;        // -EAGAIN: NOQUEUE request could not be granted
inline constexpr int kStatusDeadlock = -35;     // -EDEADLK: conversion deadlock
inline constexpr int kStatusFenced = -5;        // -EIO: this node lost quorum; lock is gone
inline constexpr int kStatusInvalid = -22;      // -EINVAL: rejected when applied
inline constexpr int kStatusCancel = -0x10001;  // -DLM_ECANCEL
inline constexpr int kStatusUnlock = -0x10002;  // -DLM_EUNLOCK

const char* StatusName(int status);

inline constexpr size_t kLvbLen = 32;
inline constexpr size_t kResNameMax = 64;
using Lvb = std::array<uint8_t, kLvbLen>;

// The lock status block. Owned by the caller; it must stay valid from dlm_lock() until the
// completion callback of the final unlock (or of a failed request) has run. The lock manager
// writes it only from the lockspace's callback thread, immediately before calling the completion
// callback, so the callback (and anyone synchronised with it) may read it.
struct Lksb {
  int status = 0;
  uint32_t lkid = 0;
  uint32_t flags = 0;  // kSbf*
  Lvb lvb{};
};

// A process (node id + pid) as seen by the group transport.
struct MemberId {
  uint32_t nodeid = 0;
  uint32_t pid = 0;
  friend bool operator==(const MemberId&, const MemberId&) = default;
  friend auto operator<=>(const MemberId&, const MemberId&) = default;
};

}  // namespace ugfs2::dlm

#endif  // UGFS2_DLM_TYPES_H_
