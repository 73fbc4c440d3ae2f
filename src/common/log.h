// Minimal leveled logging for the core. The core never talks to syslog or libqb directly: the
// daemon installs a sink (SetLogSink) that routes lines wherever it wants; the default sink writes
// to stderr. Thread-safe.
#ifndef UGFS2_SRC_COMMON_LOG_H_
#define UGFS2_SRC_COMMON_LOG_H_

#include <functional>
#include <sstream>
#include <string>

namespace ugfs2 {

enum class LogLevel { kDebug = 0, kInfo, kWarning, kError };

using LogSink = std::function<void(LogLevel, const std::string&)>;

void SetLogSink(LogSink sink);
void SetLogLevel(LogLevel level);
bool LogEnabled(LogLevel level);
void LogLine(LogLevel level, const std::string& line);

}  // namespace ugfs2

#define UGFS2_LOG(level, expr)                               \
  do {                                                       \
    if (::ugfs2::LogEnabled(::ugfs2::LogLevel::level)) {     \
      std::ostringstream _os;                                \
      _os << expr;                                           \
      ::ugfs2::LogLine(::ugfs2::LogLevel::level, _os.str()); \
    }                                                        \
  } while (0)

#define LOG_DEBUG(expr) UGFS2_LOG(kDebug, expr)
#define LOG_INFO(expr) UGFS2_LOG(kInfo, expr)
#define LOG_WARN(expr) UGFS2_LOG(kWarning, expr)
#define LOG_ERROR(expr) UGFS2_LOG(kError, expr)

#endif  // UGFS2_SRC_COMMON_LOG_H_
