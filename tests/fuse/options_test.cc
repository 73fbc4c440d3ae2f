#include "options.h"

#include <vector>

#include <gtest/gtest.h>

namespace ugfs2::fusefs {
namespace {

Result<Options> Parse(std::vector<const char*> args) {
  args.insert(args.begin(), "ugfs2");
  return ParseCommandLine(static_cast<int>(args.size()), args.data());
}

TEST(OptionsTest, Defaults) {
  auto o = Parse({"/dev/sdb", "/mnt"});
  ASSERT_TRUE(o.ok()) << o.status().ToString();
  EXPECT_EQ(o->device, "/dev/sdb");
  EXPECT_EQ(o->mountpoint, "/mnt");
  EXPECT_FALSE(o->foreground);
  EXPECT_FALSE(o->debug);
  EXPECT_FALSE(o->read_only);
  EXPECT_FALSE(o->writeback_cache);
  EXPECT_EQ(o->lockproto, "");
  EXPECT_EQ(o->jid, -1);
  EXPECT_EQ(o->commit_s, 30u);
  EXPECT_DOUBLE_EQ(o->attr_timeout, 1.0);
  EXPECT_DOUBLE_EQ(o->entry_timeout, 1.0);
  EXPECT_EQ(o->fsname, "/dev/sdb");
  EXPECT_GE(o->max_threads, 32u);
}

TEST(OptionsTest, AllDaemonOptions) {
  auto o = Parse({"-f", "-o",
                  "lockproto=lock_nolock,jid=2,ro,debug,direct,commit=5,allow_other,"
                  "writeback_cache,attr_timeout=0.5,entry_timeout=0,stats_file=/tmp/s,fsname=vol,"
                  "max_threads=48",
                  "img", "mnt"});
  ASSERT_TRUE(o.ok()) << o.status().ToString();
  EXPECT_TRUE(o->foreground);
  EXPECT_EQ(o->lockproto, "lock_nolock");
  EXPECT_EQ(o->jid, 2);
  EXPECT_TRUE(o->read_only);
  EXPECT_TRUE(o->debug);
  EXPECT_TRUE(o->direct_device);
  EXPECT_EQ(o->commit_s, 5u);
  EXPECT_TRUE(o->allow_other);
  EXPECT_TRUE(o->writeback_cache);
  EXPECT_DOUBLE_EQ(o->attr_timeout, 0.5);
  EXPECT_DOUBLE_EQ(o->entry_timeout, 0.0);
  EXPECT_EQ(o->stats_file, "/tmp/s");
  EXPECT_EQ(o->fsname, "vol");
  EXPECT_EQ(o->max_threads, 48u);
}

TEST(OptionsTest, OptionsAfterPositionalsAsMountFuse3PassesThem) {
  auto o = Parse({"/dev/vdb", "/mnt/x", "-o", "rw,nosuid,nodev,lockproto=lock_nolock"});
  ASSERT_TRUE(o.ok()) << o.status().ToString();
  EXPECT_EQ(o->device, "/dev/vdb");
  EXPECT_EQ(o->lockproto, "lock_nolock");
  EXPECT_EQ(o->kernel_mount_opts, (std::vector<std::string>{"rw", "nosuid", "nodev"}));
}

TEST(OptionsTest, GenericFstabOptionsAccepted) {
  auto o = Parse({"-o",
                  "defaults,auto,noauto,user,nouser,_netdev,nofail,x-systemd.automount,"
                  "relatime,noatime,suid,dev,exec,noexec,atime,comment=foo,users",
                  "d", "m"});
  ASSERT_TRUE(o.ok()) << o.status().ToString();
  EXPECT_EQ(o->kernel_mount_opts,
            (std::vector<std::string>{"noatime", "suid", "dev", "exec", "noexec"}));
}

TEST(OptionsTest, AttachedDashO) {
  auto o = Parse({"-oro", "d", "m"});
  ASSERT_TRUE(o.ok());
  EXPECT_TRUE(o->read_only);
}

TEST(OptionsTest, DashDImpliesForegroundAndDebug) {
  auto o = Parse({"-d", "d", "m"});
  ASSERT_TRUE(o.ok());
  EXPECT_TRUE(o->foreground);
  EXPECT_TRUE(o->debug);
}

TEST(OptionsTest, HelpAndVersionNeedNoPositionals) {
  auto h = Parse({"--help"});
  ASSERT_TRUE(h.ok());
  EXPECT_TRUE(h->show_help);
  auto v = Parse({"--version"});
  ASSERT_TRUE(v.ok());
  EXPECT_TRUE(v->show_version);
  EXPECT_NE(UsageText("ugfs2").find("lockproto=lock_nolock"), std::string::npos);
}

TEST(OptionsTest, Errors) {
  EXPECT_FALSE(Parse({}).ok());
  EXPECT_FALSE(Parse({"onlyone"}).ok());
  EXPECT_FALSE(Parse({"a", "b", "c"}).ok());
  EXPECT_FALSE(Parse({"-o"}).ok());
  EXPECT_FALSE(Parse({"--bogus", "a", "b"}).ok());
  auto unknown = Parse({"-o", "frobnicate", "a", "b"});
  ASSERT_FALSE(unknown.ok());
  EXPECT_NE(unknown.status().message().find("frobnicate"), std::string::npos);
  EXPECT_EQ(unknown.status().code(), Code::kInvalid);
  EXPECT_FALSE(Parse({"-o", "lockproto=lock_foo", "a", "b"}).ok());
  EXPECT_FALSE(Parse({"-o", "jid=x", "a", "b"}).ok());
  EXPECT_FALSE(Parse({"-o", "jid=-1", "a", "b"}).ok());
  EXPECT_FALSE(Parse({"-o", "commit=0", "a", "b"}).ok());
  EXPECT_FALSE(Parse({"-o", "attr_timeout=-1", "a", "b"}).ok());
  EXPECT_FALSE(Parse({"-o", "attr_timeout=abc", "a", "b"}).ok());
  EXPECT_FALSE(Parse({"-o", "debug=1", "a", "b"}).ok());
  EXPECT_FALSE(Parse({"-o", "stats_file=", "a", "b"}).ok());
  EXPECT_FALSE(Parse({"-o", "max_threads=0", "a", "b"}).ok());
}

TEST(OptionsTest, AtimeAclDioFuseblkAndRemount) {
  auto d = Parse({"img", "mnt"});
  ASSERT_TRUE(d.ok());
  EXPECT_EQ(d->atime, AtimeMode::kRelatime);
  EXPECT_FALSE(d->nodiratime);
  EXPECT_TRUE(d->acl);
  EXPECT_TRUE(d->dio_fopen);
  EXPECT_TRUE(d->fuseblk);
  EXPECT_FALSE(d->remount);
  auto o = Parse({"-o", "strictatime,nodiratime,noacl,dio=kernel,nofuseblk,remount", "img", "mnt"});
  ASSERT_TRUE(o.ok()) << o.status().ToString();
  EXPECT_EQ(o->atime, AtimeMode::kStrictatime);
  EXPECT_TRUE(o->nodiratime);
  EXPECT_FALSE(o->acl);
  EXPECT_FALSE(o->dio_fopen);
  EXPECT_FALSE(o->fuseblk);
  EXPECT_TRUE(o->remount);
  // The last atime option wins; noatime is also a kernel flag; nodiratime is not (libfuse 3.14
  // refuses it), relatime/strictatime are the daemon's business only.
  auto n = Parse({"-o", "strictatime,noatime", "img", "mnt"});
  ASSERT_TRUE(n.ok());
  EXPECT_EQ(n->atime, AtimeMode::kNoatime);
  EXPECT_EQ(n->kernel_mount_opts, std::vector<std::string>{"noatime"});
  auto r = Parse({"-o", "nodiratime,relatime", "img", "mnt"});
  ASSERT_TRUE(r.ok());
  EXPECT_TRUE(r->kernel_mount_opts.empty());
  EXPECT_FALSE(Parse({"-o", "dio=sometimes", "img", "mnt"}).ok());
  EXPECT_FALSE(Parse({"-o", "acl=1", "img", "mnt"}).ok());
}

TEST(OptionsTest, RemountOptionListsFromProcMountsAreAccepted) {
  // What mount(8) passes for `mount -o remount,ro MNT`: the kernel's FUSE options included.
  auto o = Parse({"/dev/loop0", "/mnt", "-o",
                  "remount,ro,nosuid,nodev,relatime,user_id=0,group_id=0,default_permissions,"
                  "allow_other,blksize=4096,max_read=131072,rootmode=40000,fd=3,blkdev"});
  ASSERT_TRUE(o.ok()) << o.status().ToString();
  EXPECT_TRUE(o->remount);
  EXPECT_TRUE(o->read_only);
}

TEST(OptionsTest, QuotaIsRefusedClearly) {
  for (const char* q : {"usrquota", "grpquota", "quota", "quota=on", "quota=account"}) {
    auto o = Parse({"-o", q, "img", "mnt"});
    ASSERT_FALSE(o.ok()) << q;
    EXPECT_NE(o.status().message().find("quota"), std::string::npos) << o.status().message();
  }
  EXPECT_TRUE(Parse({"-o", "quota=off,noquota", "img", "mnt"}).ok());
}

}  // namespace
}  // namespace ugfs2::fusefs
