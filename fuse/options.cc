#include "options.h"

#include <array>
#include <charconv>
#include <cmath>
#include <cstdlib>

namespace ugfs2::fusefs {
namespace {

// Generic options that mount(8), fstab and mount.fuse3 may pass. Kernel ones are forwarded to the
// FUSE mount; the rest only mean something to mount(8) itself.
// (libfuse passes these to mount(2); atime flags other than noatime are the daemon's business:
// the kernel never updates atime on FUSE, and libfuse 3.14 refuses nodiratime & co.)
constexpr std::array<std::string_view, 12> kKernelFlags = {"rw",    "suid",    "nosuid",  "dev",
                                                           "nodev", "exec",    "noexec",  "sync",
                                                           "async", "dirsync", "noatime", "ro"};
constexpr std::array<std::string_view, 12> kIgnoredFlags = {
    "defaults", "auto",  "noauto",  "user",   "nouser",   "users",
    "owner",    "group", "_netdev", "nofail", "lazytime", "nolazytime"};
// Also ignored: what mount(8) copies from /proc/mounts into a remount's option list (the FUSE
// kernel options), and security labels.
constexpr std::array<std::string_view, 12> kIgnoredPrefixes = {
    "x-",       "comment=",  "context=",  "fscontext=", "defcontext=", "rootcontext=",
    "user_id=", "group_id=", "rootmode=", "blksize=",   "max_read=",   "fd="};

bool Contains(std::string_view item, auto const& table) {
  for (std::string_view t : table) {
    if (t == item) return true;
  }
  return false;
}

Status BadValue(std::string_view key, std::string_view value) {
  return Status::Invalid("bad value '" + std::string(value) + "' for mount option '" +
                         std::string(key) + "'");
}

Result<uint64_t> ParseUnsigned(std::string_view key, std::string_view value, uint64_t max) {
  uint64_t v = 0;
  auto [ptr, ec] = std::from_chars(value.data(), value.data() + value.size(), v);
  if (value.empty() || ec != std::errc() || ptr != value.data() + value.size() || v > max) {
    return BadValue(key, value);
  }
  return v;
}

Result<double> ParseSeconds(std::string_view key, std::string_view value) {
  std::string s(value);
  char* end = nullptr;
  double v = std::strtod(s.c_str(), &end);
  if (s.empty() || end != s.c_str() + s.size() || !std::isfinite(v) || v < 0 || v > 86400 * 365) {
    return BadValue(key, value);
  }
  return v;
}

Status ApplyOne(std::string_view item, Options* o) {
  if (item.empty()) return Status::Ok();
  std::string_view key = item;
  std::string_view value;
  bool has_value = false;
  if (auto eq = item.find('='); eq != std::string_view::npos) {
    key = item.substr(0, eq);
    value = item.substr(eq + 1);
    has_value = true;
  }
  auto flag = [&](bool* target) -> Status {
    if (has_value) return BadValue(key, value);
    *target = true;
    return Status::Ok();
  };
  if (key == "lockproto") {
    if (value != "lock_nolock" && value != "lock_dlm") return BadValue(key, value);
    o->lockproto = std::string(value);
    return Status::Ok();
  }
  if (key == "jid") {
    ASSIGN_OR_RETURN(uint64_t v, ParseUnsigned(key, value, 1 << 20));
    o->jid = static_cast<int>(v);
    return Status::Ok();
  }
  if (key == "replay_delay_us") {
    ASSIGN_OR_RETURN(uint64_t v, ParseUnsigned(key, value, 1000000));
    o->replay_delay_us = static_cast<uint32_t>(v);
    return Status::Ok();
  }
  if (key == "io_policy") {
    if (value != "merged" && value != "proposal-2021" && value != "naive") {
      return Status::Invalid("io_policy: expected merged, proposal-2021 or naive, got '" +
                             std::string(value) + "'");
    }
    o->io_policy = std::string(value);
    return Status::Ok();
  }
  if (key == "io_linger_ms") {
    ASSIGN_OR_RETURN(uint64_t v, ParseUnsigned(key, value, 60000));
    if (v == 0) return BadValue(key, value);
    o->io_linger_ms = static_cast<uint32_t>(v);
    return Status::Ok();
  }
  if (key == "fence_agent") {
    if (value.empty()) return BadValue(key, value);
    o->fence_agent = std::string(value);
    return Status::Ok();
  }
  if (key == "commit") {
    ASSIGN_OR_RETURN(uint64_t v, ParseUnsigned(key, value, 86400));
    if (v == 0) return BadValue(key, value);
    o->commit_s = static_cast<uint32_t>(v);
    return Status::Ok();
  }
  if (key == "max_threads") {
    ASSIGN_OR_RETURN(uint64_t v, ParseUnsigned(key, value, 4096));
    if (v == 0) return BadValue(key, value);
    o->max_threads = static_cast<unsigned>(v);
    return Status::Ok();
  }
  if (key == "attr_timeout") {
    ASSIGN_OR_RETURN(o->attr_timeout, ParseSeconds(key, value));
    return Status::Ok();
  }
  if (key == "entry_timeout") {
    ASSIGN_OR_RETURN(o->entry_timeout, ParseSeconds(key, value));
    o->entry_timeout_set = true;
    return Status::Ok();
  }
  if (key == "stats_file") {
    if (value.empty()) return BadValue(key, value);
    o->stats_file = std::string(value);
    return Status::Ok();
  }
  if (key == "fsname") {
    if (value.empty()) return BadValue(key, value);
    o->fsname = std::string(value);
    return Status::Ok();
  }
  if (key == "subtype") return Status::Ok();  // always "ugfs2"
  if (key == "debug") return flag(&o->debug);
  if (key == "direct") return flag(&o->direct_device);
  if (key == "allow_other") return flag(&o->allow_other);
  if (key == "writeback_cache") return flag(&o->writeback_cache);
  if (key == "fuseblk") return flag(&o->fuseblk);
  if (key == "revoke") {
    if (value != "p6" && value != "async" && value != "none") return BadValue(key, value);
    o->revoke_async = value != "p6";
    o->revoke_none = value == "none";
    return Status::Ok();
  }
  if (key == "dio") {
    if (value != "fopen" && value != "kernel") return BadValue(key, value);
    o->dio_fopen = value == "fopen";
    return Status::Ok();
  }
  if (key == "nofuseblk") {
    bool on = false;
    RETURN_IF_ERROR(flag(&on));
    o->fuseblk = false;
    return Status::Ok();
  }
  if (key == "default_permissions") return Status::Ok();  // always on
  if (key == "remount") return flag(&o->remount);
  if (item == "blkdev") return Status::Ok();  // mount.fuseblk.* adds it; ugfs2 decides itself
  // gfs2's quota options: ugfs2 keeps no quota accounting, so only "off" is accepted.
  if ((key == "quota" && value == "off") || item == "noquota") return Status::Ok();
  if (key == "quota" || key == "usrquota" || key == "grpquota" || key == "prjquota" ||
      key == "uquota" || key == "gquota") {
    return Status::NotSupported("mount option '" + std::string(item) +
                                "': ugfs2 does not keep quota accounting (quota=off only)");
  }
  if (key == "acl" || key == "noacl") {
    bool on = false;
    RETURN_IF_ERROR(flag(&on));
    o->acl = key == "acl";
    return Status::Ok();
  }
  if (!has_value) {
    // atime policy (relatime is gfs2's default); noatime is also a kernel flag below.
    if (key == "relatime" || key == "atime" || key == "nostrictatime") {
      o->atime = AtimeMode::kRelatime;
      return Status::Ok();
    }
    if (key == "strictatime" || key == "norelatime") {
      o->atime = AtimeMode::kStrictatime;
      return Status::Ok();
    }
    if (key == "noatime") o->atime = AtimeMode::kNoatime;
    if (key == "nodiratime" || key == "diratime") {
      o->nodiratime = key == "nodiratime";
      return Status::Ok();
    }
  }
  if (!has_value && Contains(key, kKernelFlags)) {
    if (key == "ro") o->read_only = true;
    if (key == "rw") o->read_only = false;
    o->kernel_mount_opts.emplace_back(key);
    return Status::Ok();
  }
  if (!has_value && Contains(key, kIgnoredFlags)) return Status::Ok();
  for (std::string_view p : kIgnoredPrefixes) {
    if (item.starts_with(p)) return Status::Ok();
  }
  return Status::Invalid("unknown mount option '" + std::string(item) + "' (see --help)");
}

}  // namespace

Status ParseMountOptions(std::string_view list, Options* opts) {
  while (true) {
    size_t comma = list.find(',');
    RETURN_IF_ERROR(ApplyOne(list.substr(0, comma), opts));
    if (comma == std::string_view::npos) return Status::Ok();
    list.remove_prefix(comma + 1);
  }
}

Result<Options> ParseCommandLine(int argc, const char* const* argv) {
  Options o;
  std::vector<std::string_view> positional;
  for (int i = 1; i < argc; ++i) {
    std::string_view a = argv[i];
    if (a == "-h" || a == "--help") {
      o.show_help = true;
    } else if (a == "-V" || a == "--version") {
      o.show_version = true;
    } else if (a == "-f") {
      o.foreground = true;
    } else if (a == "-d") {
      o.foreground = true;
      o.debug = true;
    } else if (a == "-o") {
      if (i + 1 >= argc) return Status::Invalid("option -o needs an argument");
      RETURN_IF_ERROR(ParseMountOptions(argv[++i], &o));
    } else if (a.starts_with("-o")) {
      RETURN_IF_ERROR(ParseMountOptions(a.substr(2), &o));
    } else if (a == "-s" || a == "-n" || a == "-v") {
      // Flags mount(8) passes to helpers (single-thread, no mtab, verbose): ignored.
    } else if (a.size() > 1 && a[0] == '-') {
      return Status::Invalid("unknown option '" + std::string(a) + "' (see --help)");
    } else {
      positional.push_back(a);
    }
  }
  if (o.show_help || o.show_version) return o;
  if (positional.size() != 2) {
    return Status::Invalid("expected DEVICE and MOUNTPOINT (see --help)");
  }
  o.device = std::string(positional[0]);
  o.mountpoint = std::string(positional[1]);
  if (o.fsname.empty()) o.fsname = o.device;
  return o;
}

std::string UsageText(std::string_view program) {
  std::string p(program);
  return "usage: " + p + " [-f] [-d] [-o OPTIONS] DEVICE MOUNTPOINT\n" + p +
         " --help | --version\n"
         "\n"
         "Mounts the GFS2 volume on DEVICE (a block device or image file) at MOUNTPOINT.\n"
         "\n"
         "  -f                   stay in the foreground (log to stderr, not syslog)\n"
         "  -d                   -f plus -o debug\n"
         "  -o OPT[,OPT...]      mount options:\n"
         "     lockproto=lock_nolock  mount a lock_dlm volume single-node (without it, a\n"
         "                            lock_dlm volume mounts through the node's corosync\n"
         "                            and the volume's lockspace, with the other nodes)\n"
         "     jid=N                  journal to use (default: the first free one)\n"
         "     fence_agent=COMMAND    cluster: run `COMMAND NODEID` to fence a failed node\n"
         "                            before replaying its journal (exit 0 = fenced)\n"
         "     io_policy=POLICY       how data requests hold glocks: merged (default),\n"
         "                            proposal-2021 or naive (deadlocks on purpose; see\n"
         "                            docs/deadlocks.md); `ugfs2-tool policy` switches it live\n"
         "     io_linger_ms=N         proposal-2021/naive: keep a process's glocks N ms after\n"
         "                            its last request (default 20)\n"
         "     ro                     read-only (remount,ro / remount,rw switch a live mount)\n"
         "     acl|noacl              POSIX ACLs (default acl)\n"
         "     relatime|strictatime|noatime  atime updates on read (default relatime, as\n"
         "                            gfs2); nodiratime: never for directories\n"
         "     direct                 open DEVICE with O_DIRECT (bypass the host page cache)\n"
         "     commit=SECONDS         periodic log flush interval (default 30)\n"
         "     allow_other            let other users access the mount\n"
         "     writeback_cache        kernel writeback cache for buffered writes (default off)\n"
         "     attr_timeout=SECONDS   kernel attribute cache timeout (default 1)\n"
         "     entry_timeout=SECONDS  kernel name cache timeout (default 1; lock_dlm: 0)\n"
         "     revoke=p6|async|none   cluster cache revoke: two-phase before a lock goes\n"
         "                            (default); async after it, or none (tests only)\n"
         "     stats_file=PATH        write the request counters to PATH at exit\n"
         "     fsname=NAME            name shown in /proc/mounts (default DEVICE; with\n"
         "                            fuseblk the block device carrying the mount)\n"
         "     dio=fopen|kernel       how O_DIRECT opens are served: fopen (default) bypasses\n"
         "                            the page cache per request; kernel uses the kernel's\n"
         "                            direct-I/O path on a cached file\n"
         "     nofuseblk              plain fuse mount: umount returns before the final flush\n"
         "                            (default as root: a fuseblk mount, over a loop device\n"
         "                            for an image file, so umount waits for the daemon)\n"
         "     max_threads=N          FUSE worker threads (default 64)\n"
         "     debug                  verbose logging and libfuse request trace\n"
         "  Generic mount options (rw, nosuid, nodev, noexec, noatime, defaults, _netdev,\n"
         "  nofail, x-*, ...) are accepted; kernel ones are passed to the FUSE mount.\n"
         "\n"
         "Request counters: `kill -USR1 PID` writes them to /run/ugfs2/PID.stats.\n"
         "Extended attributes (user, trusted, security) and POSIX ACLs are stored in the\n"
         "GFS2 format.\n"
         "Unmount with `fusermount3 -u MOUNTPOINT` or `umount MOUNTPOINT`.\n";
}

}  // namespace ugfs2::fusefs
