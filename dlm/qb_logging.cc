#include "qb_logging.h"

#include <syslog.h>

#include <qb/qblog.h>

namespace ugfs2::dlm {

void SetupQbLogging(const char* ident, bool to_stderr, bool to_syslog, LogLevel level) {
  qb_log_init(ident, LOG_DAEMON, LOG_INFO);
  qb_log_ctl(QB_LOG_SYSLOG, QB_LOG_CONF_ENABLED, to_syslog ? QB_TRUE : QB_FALSE);
  qb_log_ctl(QB_LOG_STDERR, QB_LOG_CONF_ENABLED, to_stderr ? QB_TRUE : QB_FALSE);
  const int max = level == LogLevel::kDebug     ? LOG_DEBUG
                  : level == LogLevel::kInfo    ? LOG_INFO
                  : level == LogLevel::kWarning ? LOG_WARNING
                                                : LOG_ERR;
  qb_log_filter_ctl(QB_LOG_STDERR, QB_LOG_FILTER_ADD, QB_LOG_FILTER_FILE, "*", max);
  qb_log_filter_ctl(QB_LOG_SYSLOG, QB_LOG_FILTER_ADD, QB_LOG_FILTER_FILE, "*", max);
  qb_log_format_set(QB_LOG_STDERR, "%t %N [%p] %b");
  SetLogLevel(level);
  SetLogSink([](LogLevel l, const std::string& line) {
    int prio = LOG_INFO;
    switch (l) {
      case LogLevel::kDebug:
        prio = LOG_DEBUG;
        break;
      case LogLevel::kInfo:
        prio = LOG_INFO;
        break;
      case LogLevel::kWarning:
        prio = LOG_WARNING;
        break;
      case LogLevel::kError:
        prio = LOG_ERR;
        break;
    }
    qb_log(prio, "%s", line.c_str());
  });
}

}  // namespace ugfs2::dlm
