#include "syslog_sink.h"

#include <syslog.h>

namespace ugfs2::fusefs {

void OpenSyslog() { openlog("ugfs2", LOG_PID, LOG_DAEMON); }

void SyslogLine(int severity, const std::string& line) {
  static const int kPrio[] = {LOG_DEBUG, LOG_INFO, LOG_WARNING, LOG_ERR};
  syslog(kPrio[severity < 0 ? 0 : (severity > 3 ? 3 : severity)], "%s", line.c_str());
}

}  // namespace ugfs2::fusefs
