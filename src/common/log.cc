#include "common/log.h"

#include <atomic>
#include <cstdio>
#include <mutex>

namespace ugfs2 {
namespace {

std::mutex g_mu;
LogSink g_sink;  // guarded by g_mu
std::atomic<int> g_level{static_cast<int>(LogLevel::kInfo)};

const char* LevelName(LogLevel l) {
  switch (l) {
    case LogLevel::kDebug:
      return "debug";
    case LogLevel::kInfo:
      return "info";
    case LogLevel::kWarning:
      return "warning";
    case LogLevel::kError:
      return "error";
  }
  return "?";
}

}  // namespace

void SetLogSink(LogSink sink) {
  std::lock_guard<std::mutex> l(g_mu);
  g_sink = std::move(sink);
}

void SetLogLevel(LogLevel level) { g_level = static_cast<int>(level); }

bool LogEnabled(LogLevel level) { return static_cast<int>(level) >= g_level.load(); }

void LogLine(LogLevel level, const std::string& line) {
  std::lock_guard<std::mutex> l(g_mu);
  if (g_sink) {
    g_sink(level, line);
    return;
  }
  std::fprintf(stderr, "ugfs2 %s: %s\n", LevelName(level), line.c_str());
}

}  // namespace ugfs2
