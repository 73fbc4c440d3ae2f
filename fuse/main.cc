// ugfs2: the FUSE daemon. Mounts the core first (so every mount failure is reported on stderr with
// a non-zero exit before anything detaches), then the FUSE session, then detaches unless -f.
// The device is claimed (one writer per host, see DeviceClaim) before the core reads it. As root
// the FUSE mount is a fuseblk mount (see mount_source.h), so umount(2) sends FUSE_DESTROY and
// waits: DESTROY unmounts the core (flush, clean journal header, release the claim) before its
// reply. A successful mount prints nothing; logs go to syslog (warnings also to stderr until the
// daemon detaches), or to stderr with -f.
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <memory>
#include <shared_mutex>
#include <string>
#include <thread>
#include <vector>

#include "block/block_device.h"
#include "cache_invalidator.h"
#include "cluster.h"
#include "common/log.h"
#include "control.h"
#include "daemon_context.h"
#include "format/ondisk.h"
#include "fs/file_system.h"
#include "fuse_includes.h"
#include "fuse_notify_backend.h"
#include "handlers.h"
#include "inode_table.h"
#include "io_policy.h"
#include "kernel_cache_bridge.h"
#include "mount_source.h"
#include "options.h"
#include "raw_protocol.h"
#include "request_stats.h"
#include "revoker.h"
#include "syslog_sink.h"

#ifndef UGFS2_VERSION
#define UGFS2_VERSION "unknown"
#endif

namespace ugfs2::fusefs {
namespace {

void LogToStderr(LogLevel level, const std::string& line) {
  static const char* kNames[] = {"debug", "info", "warning", "error"};
  std::fprintf(stderr, "ugfs2[%d] %s: %s\n", getpid(), kNames[static_cast<int>(level)],
               line.c_str());
}

void LogToSyslog(LogLevel level, const std::string& line) {
  SyslogLine(static_cast<int>(level), line);
}

// Until a detaching daemon is up: everything to syslog, warnings and errors also to stderr, so a
// successful mount is silent while a damaged volume's warnings stay visible.
void LogStartup(LogLevel level, const std::string& line) {
  LogToSyslog(level, line);
  if (level >= LogLevel::kWarning) LogToStderr(level, line);
}

int Fail(const std::string& msg) {
  std::fprintf(stderr, "ugfs2: %s\n", msg.c_str());
  return 1;
}

// Escapes ',' and '\' for a libfuse -o value.
std::string EscapeOpt(const std::string& v) {
  std::string out;
  for (char c : v) {
    if (c == ',' || c == '\\') out += '\\';
    out += c;
  }
  return out;
}

// Detaches from the terminal: the parent waits until the child reports success (one byte on a
// pipe) or exits (EOF), and exits with the child's status. Must run before any thread starts.
// Returns the write end of the pipe in the child.
int StartDaemon() {
  int p[2];
  if (pipe(p) != 0) {
    std::perror("ugfs2: pipe");
    std::exit(1);
  }
  pid_t pid = fork();
  if (pid < 0) {
    std::perror("ugfs2: fork");
    std::exit(1);
  }
  if (pid > 0) {
    close(p[1]);
    char c = 1;
    ssize_t n;
    do {
      n = read(p[0], &c, 1);
    } while (n < 0 && errno == EINTR);
    if (n == 1 && c == 0) std::_Exit(0);
    int status = 0;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    std::_Exit(WIFEXITED(status) && WEXITSTATUS(status) != 0 ? WEXITSTATUS(status) : 1);
  }
  close(p[0]);
  setsid();
  return p[1];
}

// Called in the daemon child once the mount is up: detach stdio, tell the parent.
void FinishDaemon(int notify_fd) {
  SetLogSink(LogToSyslog);
  if (chdir("/") != 0) LOG_WARN("chdir /: " << std::strerror(errno));
  int null = open("/dev/null", O_RDWR);
  if (null >= 0) {
    dup2(null, 0);
    dup2(null, 1);
    dup2(null, 2);
    if (null > 2) close(null);
  }
  char c = 0;
  (void)!write(notify_fd, &c, 1);
  close(notify_fd);
}

// SIGUSR1 -> dump counters to /run/ugfs2/<pid>.stats. SIGUSR1 is blocked in every thread and
// consumed here with sigwait, so no async-signal-safety concerns.
class StatsDumper {
 public:
  StatsDumper(const RequestStats* stats, FileSystem* fs, const InodeTable* inodes,
              const KernelCacheBridge* kernel_cache, const CacheInvalidator* invalidator,
              const Revoker* revoker)
      : stats_(stats),
        fs_(fs),
        inodes_(inodes),
        kernel_cache_(kernel_cache),
        invalidator_(invalidator),
        revoker_(revoker) {
    thread_ = std::thread([this] { Run(); });
  }
  ~StatsDumper() {
    stop_ = true;
    pthread_kill(thread_.native_handle(), SIGUSR1);
    thread_.join();
    // A dump outlives its reader's need once the daemon is gone: leave nothing behind in /run.
    unlink(("/run/ugfs2/" + std::to_string(getpid()) + ".stats").c_str());
  }
  std::string Text() const {
    FsCounters c = fs_->Counters();
    std::string extra =
        "core_log_flushes " + std::to_string(c.log_flushes) + "\ncore_fsyncs " +
        std::to_string(c.fsyncs) + "\ncore_meta_reads " + std::to_string(c.meta_reads) +
        "\ncore_meta_writes " + std::to_string(c.meta_writes) + "\ncore_meta_write_requests " +
        std::to_string(c.meta_write_requests) + "\ncore_data_reads " +
        std::to_string(c.data_reads) + "\ncore_data_writes " + std::to_string(c.data_writes) +
        "\ncore_cached_meta_blocks " + std::to_string(c.cached_meta_blocks) + "\nkernel_inodes " +
        std::to_string(inodes_->Size()) + "\nforget_underflows " +
        std::to_string(inodes_->underflows()) + "\n";
    // What the core asked the kernel to drop (glock demotes), and the notifications sent.
    extra += "kernel_cache_data " + std::to_string(kernel_cache_->data_calls()) +
             "\nkernel_cache_attr " + std::to_string(kernel_cache_->attr_calls()) +
             "\nkernel_cache_entry " + std::to_string(kernel_cache_->entry_calls()) +
             "\nkernel_cache_dropped " + std::to_string(kernel_cache_->dropped()) +
             "\nnotify_issued " + std::to_string(invalidator_->issued()) + "\nnotify_skipped " +
             std::to_string(invalidator_->skipped()) + "\nnotify_coalesced " +
             std::to_string(invalidator_->coalesced()) + "\nname_expiry_waits " +
             std::to_string(kernel_cache_->name_waits()) + "\n";
    if (revoker_ != nullptr) {
      // The two-phase revokes (fuse/revoker.h) and what they cost.
      const Revoker::Stats r = revoker_->stats();
      extra += "revokes " + std::to_string(r.revokes) + "\nrevokes_skipped " +
               std::to_string(r.skipped) + "\nrevoke_notifies " + std::to_string(r.notifies) +
               "\nrevoke_parked " + std::to_string(r.parked) + "\nrevoke_stall_answers " +
               std::to_string(r.stall_answers) + "\nrevoke_redo_pages " +
               std::to_string(r.redo_pages) + "\nrevoke_max_us " + std::to_string(r.max_revoke_us) +
               "\nrevoke_total_us " + std::to_string(r.total_revoke_us) + "\n";
    }
    return stats_->Format(extra);
  }

 private:
  void Run() {
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGUSR1);
    while (true) {
      int sig = 0;
      if (sigwait(&set, &sig) != 0) continue;
      if (stop_) return;
      std::string path = "/run/ugfs2/" + std::to_string(getpid()) + ".stats";
      Status st = WriteFileAtomically(path, Text());
      if (!st.ok()) LOG_WARN("stats dump: " << st.ToString());
    }
  }
  const RequestStats* stats_;
  FileSystem* fs_;
  const InodeTable* inodes_;
  const KernelCacheBridge* kernel_cache_;
  const CacheInvalidator* invalidator_;
  const Revoker* revoker_;  // null: revoke=async
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

// `ugfs2 DEV MNT -o remount,...`, as mount(8) runs it through mount.fuse3 for
// `mount -o remount,ro|rw MNT`: remounts the kernel side and switches the daemon serving MNT
// through its control socket (control.h) — read-write before the kernel allows writes,
// read-only after the kernel stops them, so that the journal is clean when this returns.
int Remount(const Options& opts) {
  struct stat st;
  if (stat(opts.mountpoint.c_str(), &st) != 0) {
    return Fail("remount: " + opts.mountpoint + ": " + std::strerror(errno));
  }
  const std::string ctl = ControlPath(st.st_dev);
  auto tell = [&](const std::string& request) -> Status {
    auto reply = ControlRequest(ctl, request, 60000);
    return reply.ok() ? Status::Ok() : reply.status();
  };
  static const char* kModes[] = {"noatime", "relatime", "strictatime"};
  Status atime_st = tell(std::string("atime ") + kModes[static_cast<int>(opts.atime)] +
                         (opts.nodiratime ? " 1" : " 0"));
  if (!atime_st.ok()) {
    return Fail("remount " + opts.mountpoint + ": " + atime_st.message() +
                " (is it a ugfs2 mount?)");
  }
  unsigned long flags = MS_REMOUNT | (opts.read_only ? MS_RDONLY : 0);
  for (const std::string& k : opts.kernel_mount_opts) {
    if (k == "nosuid") flags |= MS_NOSUID;
    if (k == "nodev") flags |= MS_NODEV;
    if (k == "noexec") flags |= MS_NOEXEC;
    if (k == "sync") flags |= MS_SYNCHRONOUS;
    if (k == "dirsync") flags |= MS_DIRSYNC;
    if (k == "noatime") flags |= MS_NOATIME;
  }
  if (!opts.read_only) {
    if (Status t = tell("rw"); !t.ok())
      return Fail("remount,rw " + opts.mountpoint + ": " + t.message());
  }
  if (mount(nullptr, opts.mountpoint.c_str(), nullptr, flags, nullptr) != 0) {
    int e = errno;
    if (!opts.read_only) (void)tell("ro");  // the kernel side stays read-only
    return Fail("remount " + opts.mountpoint + ": " + std::strerror(e));
  }
  if (opts.read_only) {
    if (Status t = tell("ro"); !t.ok())
      return Fail("remount,ro " + opts.mountpoint + ": " + t.message());
  }
  return 0;
}

// Switches the core for a remount (from the control socket or the mount watcher).
Status SetCoreReadOnly(DaemonContext& ctx, bool read_only) {
  std::lock_guard<std::mutex> l(ctx.shutdown_mu);  // no unmount meanwhile
  if (ctx.core_down.load() || ctx.core_unmounted) return Status::Busy("unmounting");
  Status st = ctx.fs->SetReadOnly(read_only);
  if (st.ok()) ctx.remounted_ro.store(read_only);
  return st;
}

// A second mount of a volume this host already serves: bind the serving mount (read-only at the
// new mount point if asked), or refuse with the holder named in `busy`.
int MountAgain(const Options& opts, const Status& busy, int notify_fd) {
  auto serving = FindServingMount(opts.device);
  if (!serving.ok()) return Fail("cannot mount: " + busy.message());
  if (serving->read_only && !opts.read_only) {
    return Fail("cannot mount " + opts.device + " read-write: it is mounted read-only at " +
                serving->mountpoint + " (" + busy.message() + ")");
  }
  if (mount(serving->mountpoint.c_str(), opts.mountpoint.c_str(), nullptr, MS_BIND, nullptr) != 0) {
    return Fail("cannot mount " + opts.device + " again at " + opts.mountpoint + ": " +
                std::strerror(errno));
  }
  // A bind of a shared mount joins its peer group; a kernel filesystem's second mount starts a
  // peer group of its own (shared if its parent is shared): do the same (generic/409-411).
  (void)mount(nullptr, opts.mountpoint.c_str(), nullptr, MS_PRIVATE, nullptr);
  if (auto parent_shared = ParentMountShared(opts.mountpoint);
      parent_shared.ok() && *parent_shared) {
    (void)mount(nullptr, opts.mountpoint.c_str(), nullptr, MS_SHARED, nullptr);
  }
  if (opts.read_only && !serving->read_only &&
      mount(nullptr, opts.mountpoint.c_str(), nullptr, MS_REMOUNT | MS_BIND | MS_RDONLY, nullptr) !=
          0) {
    int e = errno;
    umount2(opts.mountpoint.c_str(), MNT_DETACH);
    return Fail("cannot make " + opts.mountpoint + " read-only: " + std::strerror(e));
  }
  LOG_INFO(opts.device << " is served at " << serving->mountpoint << "; mounted again at "
                       << opts.mountpoint);
  if (notify_fd >= 0) {  // the detaching parent waits for this byte
    char c = 0;
    (void)!write(notify_fd, &c, 1);
    close(notify_fd);
  }
  return 0;
}

// Glock dumps and demotes (ugfs2-tool glocks|demote). They do not take shutdown_mu, so they
// still answer while a remount is stuck (on a glock, say); core_mu keeps the core mounted.
// Whether this mount goes through the cluster: a lock_dlm volume (read from its superblock)
// without -o lockproto=lock_nolock. *locktable gets the superblock's lock table. An unreadable
// superblock is left to the core's mount to report.
bool IsClusterMount(const Options& opts, std::string* locktable) {
  if (opts.lockproto == "lock_nolock") return false;
  FileDeviceOptions peek;
  peek.read_only = true;
  auto dev = OpenFileBlockDevice(opts.device, peek);
  if (!dev.ok()) return false;
  std::vector<uint8_t> buf(4096);
  if (!(*dev)->ReadAt(format::kSuperblockOffset, buf.data(), buf.size()).ok()) return false;
  auto sb = format::Superblock::Decode(buf.data());
  if (!sb.ok() || sb->lockproto != "lock_dlm") return false;
  *locktable = sb->locktable;
  return true;
}

Result<std::string> GlockControl(DaemonContext& ctx, std::string_view req) {
  std::shared_lock<std::shared_mutex> l(ctx.core_mu);
  if (ctx.core_down.load()) return Status::Busy("unmounting");
  if (req == "glocks") {
    const char* policy = ctx.io_policy != nullptr ? PolicyName(ctx.io_policy->policy()) : "merged";
    return ctx.node_header + " policy:" + policy + "\n" + ctx.fs->DumpGlocks();
  }
  std::string_view name = req.substr(req.find(' ') + 1);
  while (name.starts_with(' ')) name.remove_prefix(1);
  while (name.ends_with(' ')) name.remove_suffix(1);
  if (name.empty()) return Status::Invalid("usage: demote NAME|all");
  // The number of glocks asked: a demote of everything on a node holding none is no error.
  if (name == "all") return std::to_string(ctx.fs->DemoteAllGlocks());
  RETURN_IF_ERROR(ctx.fs->DemoteGlock(name));
  return std::string();
}

// "counters": what this node sent to the lock manager, and what its cache revokes did.
Result<std::string> CountersText(const DaemonContext& ctx) {
  std::vector<std::pair<std::string, uint64_t>> v;
  if (ctx.lock_counters) v = ctx.lock_counters();
  if (ctx.revoker != nullptr) {
    const Revoker::Stats r = ctx.revoker->stats();
    v.insert(v.end(), {{"revokes", r.revokes},
                       {"revokes_skipped", r.skipped},
                       {"revoke_notifies", r.notifies},
                       {"revoke_parked", r.parked},
                       {"revoke_stall_answers", r.stall_answers},
                       {"revoke_redo_pages", r.redo_pages},
                       {"revoke_max_us", r.max_revoke_us}});
  }
  if (ctx.io_policy != nullptr) {
    auto io = ctx.io_policy->Counters();
    v.insert(v.end(), io.begin(), io.end());
  }
  if (v.empty()) return Status::NotFound("no counters (a single-node mount with revoke=async)");
  std::string out;
  for (const auto& [name, value] : v) out += name + " " + std::to_string(value) + "\n";
  return out;
}

// The daemon side of the control socket (requests: control_client.h).
Result<std::string> HandleControl(DaemonContext& ctx, std::string_view req) {
  if (req == "counters") return CountersText(ctx);
  if (req == "recovery") {
    if (!ctx.recovery_status) return Status::NotFound("not a cluster mount: no recovery state");
    return ctx.recovery_status();
  }
  if (req == "glocks" || req == "demote" || req.starts_with("demote ")) {
    return GlockControl(ctx, req);
  }
  if (req == "policy" || req.starts_with("policy ")) {
    if (ctx.io_policy == nullptr) return Status::Busy("unmounting");
    if (req.size() > 7) {
      auto p = ParsePolicy(req.substr(7));
      if (!p) return Status::Invalid("unknown I/O policy (merged, proposal-2021, naive)");
      ctx.io_policy->Set(*p);
    }
    return std::string(PolicyName(ctx.io_policy->policy())) + "\n";
  }
  if (req == "ro" || req == "rw") {
    RETURN_IF_ERROR(SetCoreReadOnly(ctx, req == "ro"));
  } else if (req.starts_with("atime ")) {
    std::string_view rest = req.substr(6);
    AtimeMode mode;
    if (rest.starts_with("noatime ")) {
      mode = AtimeMode::kNoatime;
    } else if (rest.starts_with("relatime ")) {
      mode = AtimeMode::kRelatime;
    } else if (rest.starts_with("strictatime ")) {
      mode = AtimeMode::kStrictatime;
    } else {
      return Status::Invalid("bad atime mode");
    }
    ctx.fs->SetAtimePolicy(mode, rest.ends_with(" 1"));
  } else {
    return Status::Invalid("unknown request");
  }
  return std::string();
}

int Run(int argc, char** argv) {
  auto parsed = ParseCommandLine(argc, argv);
  if (!parsed.ok()) return Fail(parsed.status().message());
  Options& opts = *parsed;
  if (opts.show_help) {
    std::fputs(UsageText("ugfs2").c_str(), stdout);
    return 0;
  }
  if (opts.remount) return Remount(opts);
  if (opts.show_version) {
    std::printf("ugfs2 %s (libfuse %s, FUSE_USE_VERSION %d)\n", UGFS2_VERSION, fuse_pkgversion(),
                FUSE_USE_VERSION);
    return 0;
  }
  if (opts.foreground) {
    SetLogSink(LogToStderr);
  } else {
    OpenSyslog();
    SetLogSink(LogStartup);
  }
  SetLogLevel(opts.debug ? LogLevel::kDebug : LogLevel::kInfo);

  struct stat mst;
  if (stat(opts.mountpoint.c_str(), &mst) != 0) {
    return Fail("mountpoint " + opts.mountpoint + ": " + std::strerror(errno));
  }
  if (!S_ISDIR(mst.st_mode)) return Fail("mountpoint " + opts.mountpoint + ": not a directory");
  // Absolute from here on: the detached daemon changes to "/" before it opens its control
  // socket, and libfuse unmounts by this path at exit.
  if (char* real = realpath(opts.mountpoint.c_str(), nullptr)) {
    opts.mountpoint = real;
    std::free(real);
  }

  int notify_fd = opts.foreground ? -1 : StartDaemon();

  // Block SIGUSR1 before any thread exists; the StatsDumper consumes it.
  sigset_t usr1;
  sigemptyset(&usr1);
  sigaddset(&usr1, SIGUSR1);
  pthread_sigmask(SIG_BLOCK, &usr1, nullptr);

  // A lock_dlm volume mounted through the cluster shares the device with the other nodes of
  // this host (the local cluster's namespaces): its claim says so (DeviceClaim::kCluster).
  std::string locktable;
  const bool cluster_mount = IsClusterMount(opts, &locktable);
  // The kernel keeps a name for entry_timeout without asking; on a cluster mount another node
  // may change it meanwhile, so names live only within a clock tick (the revoke waits that out).
  if (cluster_mount && !opts.entry_timeout_set) opts.entry_timeout = 0;
  FileDeviceOptions dev_opts;
  dev_opts.read_only = opts.read_only;
  // Several nodes: no host page cache may serve what another node's writes bypass, so a
  // cluster mount always opens the device O_DIRECT (where the file system under an image file
  // refuses O_DIRECT, e.g. tmpfs, every node of the local cluster shares this host's page cache,
  // which is coherent: it falls back, and says so).
  dev_opts.direct = opts.direct_device || cluster_mount;
  dev_opts.claim = cluster_mount    ? DeviceClaim::kCluster
                   : opts.read_only ? DeviceClaim::kShared
                                    : DeviceClaim::kExclusive;
  auto dev = OpenFileBlockDevice(opts.device, dev_opts);
  if (cluster_mount && !opts.direct_device && !dev.ok() && dev.status().code() == Code::kInvalid) {
    LOG_WARN(opts.device << " refuses O_DIRECT (" << dev.status().message()
                         << "); using the host page cache: safe only while every node of the "
                            "cluster runs on this host");
    dev_opts.direct = false;
    dev = OpenFileBlockDevice(opts.device, dev_opts);
  }
  // A daemon still unmounting the volume (its mount already gone from the table, its final flush
  // or the kernel's release of the device not yet done) holds it for a moment: wait for that,
  // bounded, instead of refusing a mount that follows an unmount.
  for (int i = 0; i < 200 && !dev.ok() && dev.status().code() == Code::kBusy &&
                  !FindServingMount(opts.device).ok();
       ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
    dev = OpenFileBlockDevice(opts.device, dev_opts);
  }
  if (!dev.ok() && dev.status().code() == Code::kBusy && !cluster_mount) {
    // Mounted already: as the kernel does for a block device mounted twice, the new mount point
    // shows the same filesystem (a bind mount of the serving daemon's mount), and no second
    // daemon ever opens the volume. Refused when that cannot be done.
    return MountAgain(opts, dev.status(), notify_fd);
  }
  if (!dev.ok()) return Fail("cannot open " + opts.device + ": " + dev.status().message());

  // What the core tells the kernel to drop (glock demotes). Declared before the core so that it
  // outlives it (the core may call it until it is destroyed); forwards only while attached to
  // the invalidator below, i.e. while the FUSE session exists.
  KernelCacheBridge kernel_cache;

  // Cluster mounts: corosync, quorum and the lockspace first (a clear error for each).
  ClusterMember cluster;
  MountOptions mount_opts;
  if (cluster_mount) {
    ClusterOptions copts;
    copts.fence_agent = opts.fence_agent;
    Status joined = cluster.Join(locktable, std::chrono::seconds(60), copts);
    if (!joined.ok()) {
      std::string hint;
      if (joined.code() == Code::kNotConnected) {
        hint =
            " (a lock_dlm volume mounts through the cluster; to mount it on this node only, "
            "make sure no other node has it mounted and pass -o lockproto=lock_nolock)";
      }
      return Fail("cannot mount " + opts.device + ": " + joined.message() + hint);
    }
    mount_opts.lock_module = cluster.lock_module();
    // Every write to the shared disk passes the gate: closed for good once the lockspace
    // fences this node, and held while the membership lease is out (docs/recovery.md).
    auto gate = std::make_shared<WriteGate>();
    cluster.SetWriteGate(gate);
    *dev = GateWrites(std::move(*dev), gate);
  }
  mount_opts.lockproto = opts.lockproto;
  mount_opts.jid = opts.jid;
  mount_opts.read_only = opts.read_only;
  mount_opts.commit_interval_s = opts.commit_s;
  mount_opts.atime = opts.atime;
  mount_opts.nodiratime = opts.nodiratime;
  mount_opts.acl = opts.acl;
  mount_opts.replay_delay_us = opts.replay_delay_us;
  auto mounted = FileSystem::Mount(std::move(*dev), mount_opts);
  if (!mounted.ok()) {
    const std::string& m = mounted.status().message();
    return Fail(m.starts_with("cannot mount") ? m : "cannot mount " + opts.device + ": " + m);
  }
  std::unique_ptr<FileSystem> fs = std::move(*mounted);
  LOG_DEBUG("mounted " << fs->Describe());
  // Node ids carry the generation above bit 48 (inode_table.h): larger addresses do not fit.
  if (auto sfs = fs->StatFs(); sfs.ok() && sfs->blocks > kMaxNodeIdAddress) {
    (void)fs->Unmount();
    return Fail("cannot mount " + opts.device + ": more than 2^48 blocks");
  }

  InodeTable inodes(fs->root());
  RequestStats stats;
  DaemonContext ctx;
  ctx.fs = fs.get();
  ctx.inodes = &inodes;
  ctx.stats = &stats;
  ctx.opts = &opts;
  // Read by the control server's thread, which stops (control.reset()) before cluster.Leave.
  if (cluster_mount) {
    ctx.lock_counters = [&cluster] { return cluster.Counters(); };
    ctx.recovery_status = [&cluster] { return cluster.RecoveryStatus(); };
    ctx.stop_recovery = [&cluster] { cluster.SetRecoverer(nullptr); };
    FileSystem* core = fs.get();
    cluster.SetRecoverer([core] { return core->RecoverJournals(std::chrono::seconds(120)); });
  }

  auto unmount_core = [&] { return ShutdownCore(ctx); };

  auto source = PrepareMountSource(opts.device, opts.read_only, opts.fuseblk);
  if (!source.ok()) {
    (void)unmount_core();
    return Fail("cannot prepare the mount of " + opts.device + ": " + source.status().message());
  }
  std::string mopts = "subtype=ugfs2,default_permissions";
  if (!source->blkdev.empty()) {
    // fuseblk: the kernel mounts the block device by name (it is what /proc/mounts shows).
    mopts += ",blkdev,fsname=" + EscapeOpt(source->blkdev);
  } else {
    mopts += ",fsname=" + EscapeOpt(opts.fsname);
    if (opts.fuseblk) {
      LOG_WARN("not running as root: plain fuse mount, umount returns before the final flush");
    }
  }
  if (opts.allow_other) mopts += ",allow_other";
  if (opts.read_only) mopts += ",ro";
  for (const std::string& k : opts.kernel_mount_opts) {
    if (k != "ro" && k != "rw") mopts += "," + k;
  }
  std::vector<std::string> arg_strings = {"ugfs2", "-o", mopts};
  if (opts.debug) arg_strings.emplace_back("-d");
  std::vector<char*> arg_ptrs;
  for (std::string& s : arg_strings) arg_ptrs.push_back(s.data());
  fuse_args args = FUSE_ARGS_INIT(static_cast<int>(arg_ptrs.size()), arg_ptrs.data());

  fuse_lowlevel_ops ops = MakeLowlevelOps();
  fuse_session* se = fuse_session_new(&args, &ops, sizeof(ops), &ctx);
  if (se == nullptr) {
    (void)unmount_core();
    return Fail("cannot create the FUSE session (bad mount options?)");
  }
  ctx.session = se;
  FuseNotifyBackend notify_backend(se);
  CacheInvalidator invalidator(&notify_backend, &inodes);
  ctx.invalidator = &invalidator;
  // The two-phase page revoke before an inode glock goes (fuse/revoker.h); revoke=async keeps
  // only the invalidations posted after it went (a negative control for the coherence tests).
  // Cluster mounts only: on one node nobody else changes what the kernel caches, and a
  // single-node mount keeps buffered write-through (a WRITE through the page cache holds its
  // folios, which a revoke of a forced demote would wait for while the WRITE waits for EX).
  std::unique_ptr<Revoker> revoker;
  if (cluster_mount && !opts.revoke_async) {
    revoker = std::make_unique<Revoker>(&notify_backend, &inodes, Revoker::Options{});
  }
  ctx.revoker = revoker.get();
  // How data requests hold inode glocks (docs/deadlocks.md). Stopped in ShutdownCore, before
  // the core unmounts: it drops every glock a policy keeps.
  IoPolicy io_policy(fs.get(), ParsePolicy(opts.io_policy).value_or(Policy::kMerged),
                     std::chrono::milliseconds(opts.io_linger_ms));
  ctx.io_policy = &io_policy;
  {
    char host[256] = {};
    if (gethostname(host, sizeof(host) - 1) != 0 || host[0] == '\0') std::strcpy(host, "?");
    std::string name = host;
    for (char& c : name) {
      if (c == ' ' || c == ':') c = '_';
    }
    // Single-node mounts name no lock table: `glocks --all-nodes` then merges nothing in.
    std::string table = cluster_mount ? " table:" + locktable : std::string();
    for (char& c : table) {
      if (c == ' ' && &c != &table[0]) c = '_';
    }
    ctx.node_header =
        "N: id:" + std::to_string(cluster_mount ? cluster.NodeId() : 0) + " name:" + name + table;
  }
  ctx.kernel_cache = &kernel_cache;
  ctx.cluster = cluster_mount;
  kernel_cache.SetExpireNames(cluster_mount && opts.entry_timeout == 0);
  kernel_cache.SetKeepPages(opts.revoke_none);
  // Set before the session serves its first request. The core may call it during Unmount
  // (ShutdownCore, from DESTROY or at the end of Run) too: calls are queued while the session
  // exists, dropped after stop_notifications.
  kernel_cache.Attach(&invalidator, revoker.get());
  fs->SetKernelCache(&kernel_cache);
  // Before fuse_session_destroy: nothing may reach the session once it is gone.
  auto stop_notifications = [&] {
    kernel_cache.BeginShutdown();
    kernel_cache.Detach();
    if (revoker) revoker->Shutdown();
    invalidator.Drain();
  };
  // libfuse only installs its handlers over SIG_DFL; a shell starting us in the background
  // without job control leaves SIGINT ignored, and SIGINT must still unmount cleanly.
  signal(SIGINT, SIG_DFL);
  signal(SIGTERM, SIG_DFL);
  if (fuse_set_signal_handlers(se) != 0) {
    stop_notifications();
    fuse_session_destroy(se);
    (void)unmount_core();
    return Fail("cannot install signal handlers");
  }
  if (fuse_session_mount(se, opts.mountpoint.c_str()) != 0) {
    fuse_remove_signal_handlers(se);
    stop_notifications();
    fuse_session_destroy(se);
    (void)unmount_core();
    return Fail("cannot mount FUSE at " + opts.mountpoint + " (is /dev/fuse available?)");
  }
  source->DropLoopReference();  // the mount holds the loop device now
  // Raw protocol patches (raw_protocol.h) through custom I/O on the session's own fd; INIT has
  // not been read yet, so the INIT reply is the first one patched.
  RawProtocol raw({.allow_mmap = opts.dio_fopen, .parallel_direct_writes = opts.dio_fopen});
  ctx.raw = &raw;
  fuse_custom_io io = {};
  io.read = [](int fd, void* buf, size_t len, void* ud) {
    return RawProtocol::ReadHook(fd, buf, len, static_cast<DaemonContext*>(ud)->raw);
  };
  io.writev = [](int fd, iovec* iov, int count, void* ud) {
    return RawProtocol::WritevHook(fd, iov, count, static_cast<DaemonContext*>(ud)->raw);
  };
  if (int rc = fuse_session_custom_io(se, &io, fuse_session_fd(se)); rc != 0) {
    LOG_WARN("custom FUSE I/O unavailable (" << std::strerror(-rc)
                                             << "): MAP_SHARED on O_DIRECT opens fails (ENODEV)");
    ctx.raw = nullptr;
  }
  if (notify_fd >= 0) FinishDaemon(notify_fd);

  std::unique_ptr<ControlServer> control;
  std::unique_ptr<MountWatcher> watcher;
  if (auto mdev = MountDevice(opts.mountpoint); mdev.ok()) {
    auto started = ControlServer::Start(
        ControlPath(*mdev), [&ctx](std::string_view req) { return HandleControl(ctx, req); });
    if (started.ok()) {
      control = std::move(*started);
    } else {
      LOG_WARN("control socket: " << started.status().ToString() << " (remount unavailable)");
    }
    if (!opts.read_only) {
      auto w = MountWatcher::Start(*mdev, false, [&ctx](bool ro) {
        if (Status st = SetCoreReadOnly(ctx, ro); !st.ok()) {
          LOG_ERROR("remount " << (ro ? "read-only" : "read-write") << ": " << st.ToString());
        }
      });
      if (w.ok()) {
        watcher = std::move(*w);
        ctx.watcher = watcher.get();
      } else {
        LOG_WARN("mount watcher: " << w.status().ToString());
      }
    }
  } else {
    LOG_WARN("control socket: " << mdev.status().ToString() << " (remount unavailable)");
  }

  int loop_rc;
  {
    StatsDumper dumper(&stats, fs.get(), &inodes, &kernel_cache, &invalidator, revoker.get());
    fuse_loop_config* cfg = fuse_loop_cfg_create();
    fuse_loop_cfg_set_max_threads(cfg, opts.max_threads);
    // Keep idle workers (up to max_threads) instead of recycling them after every burst.
    fuse_loop_cfg_set_idle_threads(cfg, opts.max_threads);
    loop_rc = fuse_session_loop_mt(se, cfg);
    fuse_loop_cfg_destroy(cfg);
    fuse_session_unmount(se);
    if (!opts.stats_file.empty()) {
      Status st = WriteFileAtomically(opts.stats_file, dumper.Text());
      if (!st.ok()) LOG_WARN("stats_file: " << st.ToString());
    }
  }
  ctx.watcher = nullptr;  // no handler runs any more
  watcher.reset();
  control.reset();
  fuse_remove_signal_handlers(se);
  // The kernel side is unmounted: nothing caches above the core any more. fuse_session_destroy
  // may still run DESTROY (ShutdownCore) for a mount that never got it.
  stop_notifications();
  fuse_session_destroy(se);
  fuse_opt_free_args(&args);
  Status st = unmount_core();
  if (cluster_mount) {
    Status left = cluster.Leave(std::chrono::seconds(30));
    if (!left.ok()) LOG_ERROR("leaving the cluster: " << left.ToString());
  }
  if (!st.ok()) return 1;
  LOG_DEBUG("unmounted " << opts.device);
  return loop_rc < 0 ? 1 : 0;
}

}  // namespace
}  // namespace ugfs2::fusefs

int main(int argc, char** argv) {
  try {
    return ugfs2::fusefs::Run(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "ugfs2: fatal: %s\n", e.what());
    return 1;
  }
}
