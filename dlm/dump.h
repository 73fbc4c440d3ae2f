// Rendering of a node's view of a lockspace for ugfs2-tool (text in the spirit of
// `dlm_tool lockdebug`, or JSON). Pure functions.
#ifndef UGFS2_DLM_DUMP_H_
#define UGFS2_DLM_DUMP_H_

#include <cstdint>
#include <set>
#include <string>

#include "lock_table.h"
#include "types.h"

namespace ugfs2::dlm {

struct DumpContext {
  std::string lockspace;
  MemberId self;
  std::string state;
  bool quorate = false;
  bool synced = false;
  uint32_t incarnation = 0;
  int64_t now_ns = 0;
  size_t held_callbacks = 0;
  std::set<uint32_t> in_flight;  // our lkids with an operation not yet applied
};

std::string DumpText(const LockTable& table, const DumpContext& ctx);
std::string DumpJson(const LockTable& table, const DumpContext& ctx);

// JSON string literal (with quotes) for arbitrary bytes.
std::string JsonString(const std::string& s);
std::string HexBytes(const uint8_t* p, size_t n);

}  // namespace ugfs2::dlm

#endif  // UGFS2_DLM_DUMP_H_
