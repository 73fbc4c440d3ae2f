// Syslog output for the daemonized ugfs2. Kept in its own file because <syslog.h> defines
// LOG_DEBUG/LOG_INFO macros that collide with common/log.h.
#ifndef UGFS2_FUSE_SYSLOG_SINK_H_
#define UGFS2_FUSE_SYSLOG_SINK_H_

#include <string>

namespace ugfs2::fusefs {

void OpenSyslog();
// severity: 0 debug, 1 info, 2 warning, 3 error (the order of ugfs2::LogLevel).
void SyslogLine(int severity, const std::string& line);

}  // namespace ugfs2::fusefs

#endif  // UGFS2_FUSE_SYSLOG_SINK_H_
