// The one place that pins the libfuse API version. Only fuse/ includes this.
#ifndef UGFS2_FUSE_FUSE_INCLUDES_H_
#define UGFS2_FUSE_FUSE_INCLUDES_H_

#define FUSE_USE_VERSION 314
#include <fuse_lowlevel.h>

#endif  // UGFS2_FUSE_FUSE_INCLUDES_H_
