// Options: the daemon's command line, parsed once into a plain struct (no runtime state).
//
//   ugfs2 [-f] [-d] [-o OPT[,OPT...]]... DEVICE MOUNTPOINT
//   ugfs2 --help | --version
//
// Options may follow the positional arguments (mount.fuse3 calls `ugfs2 DEV MNT -o opts`).
// Generic mount(8)/fstab options are accepted; the ones the kernel understands (ro, nosuid, ...)
// are forwarded to the FUSE mount in `kernel_mount_opts`, the rest are ignored.
// Thread safety: values.
#ifndef UGFS2_FUSE_OPTIONS_H_
#define UGFS2_FUSE_OPTIONS_H_

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"
#include "fs/file_system.h"

namespace ugfs2::fusefs {

struct Options {
  // Command-line flags.
  bool foreground = false;  // -f (also implied by -d)
  bool show_help = false;
  bool show_version = false;

  std::string device;
  std::string mountpoint;

  // -o options for the core.
  std::string lockproto;                   // lockproto=lock_nolock|lock_dlm; empty = superblock's
  int jid = -1;                            // jid=N
  bool read_only = false;                  // ro
  AtimeMode atime = AtimeMode::kRelatime;  // noatime | relatime (default) | strictatime
  bool nodiratime = false;                 // nodiratime
  bool acl = true;                         // acl (default) | noacl: POSIX ACLs
  bool remount = false;        // remount: act as mount(8)'s remount helper, not as a daemon
  bool direct_device = false;  // direct: open the device with O_DIRECT
  uint32_t commit_s = 30;      // commit=SECONDS

  // -o options for the daemon and the FUSE session.
  bool debug = false;            // debug (or -d): verbose logs + libfuse request trace
  bool allow_other = false;      // allow_other
  bool writeback_cache = false;  // writeback_cache
  double attr_timeout = 1.0;     // attr_timeout=SECONDS
  double entry_timeout = 1.0;    // entry_timeout=SECONDS (cluster mounts: 0 unless given)
  bool entry_timeout_set = false;
  // revoke=p6 (default): before a glock goes, the kernel's pages of the inode are revoked
  // while its requests are still served (fuse/revoker.h); revoke=async: only posted
  // invalidations after the glock went; revoke=none: the kernel keeps its pages when a glock
  // goes (stale reads: the negative control of the coherence test). Tests only.
  bool revoke_async = false;
  bool revoke_none = false;
  std::string stats_file;     // stats_file=PATH: request counters written at exit
  std::string fsname;         // fsname=NAME (default: DEVICE)
  unsigned max_threads = 64;  // max_threads=N (FUSE worker threads)
  // dio=fopen (default): O_DIRECT opens are FOPEN_DIRECT_IO (parallel direct writes, shared
  // mmap allowed through the raw INIT bit); dio=kernel: O_DIRECT goes through the kernel's own
  // direct-I/O path on a page-cached file (the kernel serializes its writes per inode).
  bool dio_fopen = true;
  bool fuseblk = true;  // nofuseblk: plain fuse mount (umount does not wait)
  // fence_agent=COMMAND (cluster mounts): run by the survivor that recovers a failed node,
  // before replaying its journal: `/bin/sh -c 'COMMAND NODEID'` with stonith-style key=value
  // lines on stdin (action=off, nodename=, port=, nodeid=); exit 0 = the node is fenced, any
  // other = failed (recovery waits and asks again). Empty: no agent (self-fencing and the write
  // lease only; docs/recovery.md).
  std::string fence_agent;
  // io_policy=merged|proposal-2021|naive: how data requests hold inode glocks (fuse/io_policy.h,
  // docs/deadlocks.md); switchable live with `ugfs2-tool policy`. io_linger_ms=N: how long the
  // two non-merged policies keep a process's glocks after its last request (default 20).
  std::string io_policy = "merged";
  uint32_t io_linger_ms = 20;
  // replay_delay_us=N (tests only): a failed node's journal replay pauses N us before each
  // block it writes in place (so a test can crash the recovering node mid-replay).
  uint32_t replay_delay_us = 0;

  // Generic options forwarded verbatim to the kernel mount (nosuid, nodev, noexec, ...).
  std::vector<std::string> kernel_mount_opts;
};

// Parses argv (argv[0] is the program name). Errors are messages meant for a human.
// --help / --version set show_help / show_version and skip the positional checks.
Result<Options> ParseCommandLine(int argc, const char* const* argv);

// Applies one comma-separated -o string to `opts`.
Status ParseMountOptions(std::string_view list, Options* opts);

// The --help text.
std::string UsageText(std::string_view program);

}  // namespace ugfs2::fusefs

#endif  // UGFS2_FUSE_OPTIONS_H_
