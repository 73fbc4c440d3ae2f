// Routes ugfs2 log lines (common/log.h) to libqb's qb_log: stderr and/or syslog with levels, as
// corosync does. For processes that host the lock manager.
#ifndef UGFS2_DLM_QB_LOGGING_H_
#define UGFS2_DLM_QB_LOGGING_H_

#include "common/log.h"

namespace ugfs2::dlm {

// `ident` is the syslog identity. Thread-safe after this call.
void SetupQbLogging(const char* ident, bool to_stderr, bool to_syslog, LogLevel level);

}  // namespace ugfs2::dlm

#endif  // UGFS2_DLM_QB_LOGGING_H_
