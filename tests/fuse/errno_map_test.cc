#include "errno_map.h"

#include <cerrno>

#include <gtest/gtest.h>

namespace ugfs2::fusefs {
namespace {

TEST(ErrnoMapTest, EveryCodeMapsToAValidReplyErrno) {
  for (int c = static_cast<int>(Code::kNotFound); c <= static_cast<int>(Code::kOther); ++c) {
    Status st(static_cast<Code>(c), "x");
    int e = ReplyErrnoFor(st);
    EXPECT_GT(e, 0) << CodeName(st.code());
    EXPECT_LT(e, 512) << CodeName(st.code());
  }
}

TEST(ErrnoMapTest, CommonCodes) {
  EXPECT_EQ(ReplyErrnoFor(Status::NotFound("x")), ENOENT);
  EXPECT_EQ(ReplyErrnoFor(Status::Exists("x")), EEXIST);
  EXPECT_EQ(ReplyErrnoFor(Status::NoSpace("x")), ENOSPC);
  EXPECT_EQ(ReplyErrnoFor(Status::NotEmpty("x")), ENOTEMPTY);
  EXPECT_EQ(ReplyErrnoFor(Status::Corrupt("x")), EIO);
  EXPECT_EQ(ReplyErrnoFor(Status::IoError("x")), EIO);
  EXPECT_EQ(ReplyErrnoFor(Status::Fenced("x")), EIO);
  EXPECT_EQ(ReplyErrnoFor(Status::NotSupported("x")), EOPNOTSUPP);
  EXPECT_EQ(ReplyErrnoFor(Status(Code::kTooBig, "x")), EFBIG);
  EXPECT_EQ(ReplyErrnoFor(Status(Code::kCrossDevice, "x")), EXDEV);
}

TEST(ErrnoMapTest, RestartCodesAndGarbageBecomeEio) {
  EXPECT_EQ(ReplyErrnoFor(Status(Code::kOther, "restart", 512)), EIO);
  EXPECT_EQ(ReplyErrnoFor(Status(Code::kOther, "restart", 516)), EIO);
  EXPECT_EQ(ReplyErrnoFor(Status(Code::kOther, "neg", -5)), EIO);
  EXPECT_EQ(ReplyErrnoFor(Status::FromErrno(EROFS, "x")), EROFS);
}

TEST(ErrnoMapTest, AttrToStat) {
  Attr a;
  a.ino = 132;
  a.mode = S_IFREG | 04755;
  a.nlink = 2;
  a.uid = 1000;
  a.gid = 100;
  a.size = 12345;
  a.blocks512 = 32;
  a.blksize = 4096;
  a.atime = {1700000000, 123456789};
  a.mtime = {1700000001, 1};
  a.ctime = {1700000002, 999999999};
  struct stat st;
  AttrToStat(a, &st);
  EXPECT_EQ(st.st_ino, 132u);
  EXPECT_EQ(st.st_mode, static_cast<mode_t>(S_IFREG | 04755));
  EXPECT_EQ(st.st_nlink, 2u);
  EXPECT_EQ(st.st_uid, 1000u);
  EXPECT_EQ(st.st_gid, 100u);
  EXPECT_EQ(st.st_size, 12345);
  EXPECT_EQ(st.st_blocks, 32);
  EXPECT_EQ(st.st_blksize, 4096);
  EXPECT_EQ(st.st_atim.tv_nsec, 123456789);
  EXPECT_EQ(st.st_mtim.tv_sec, 1700000001);
  EXPECT_EQ(st.st_ctim.tv_nsec, 999999999);
}

TEST(ErrnoMapTest, SetAttrTranslation) {
  struct stat in = {};
  in.st_mode = S_IFREG | 0640;
  in.st_uid = 5;
  in.st_gid = 6;
  in.st_size = 777;
  in.st_atim = {10, 20};
  in.st_mtim = {30, 40};
  SetAttrRequest r = MakeSetAttrRequest(
      in, kFuseSetMode | kFuseSetUid | kFuseSetGid | kFuseSetSize | kFuseSetAtime | kFuseSetMtime);
  EXPECT_EQ(r.mask,
            static_cast<uint32_t>(kSetMode | kSetUid | kSetGid | kSetSize | kSetAtime | kSetMtime));
  EXPECT_EQ(r.mode, static_cast<uint32_t>(S_IFREG | 0640));
  EXPECT_EQ(r.uid, 5u);
  EXPECT_EQ(r.gid, 6u);
  EXPECT_EQ(r.size, 777u);
  EXPECT_EQ(r.atime.sec, 10);
  EXPECT_EQ(r.atime.nsec, 20u);
  EXPECT_EQ(r.mtime.sec, 30);
  EXPECT_EQ(r.mtime.nsec, 40u);

  // UTIME_NOW: the kernel sends ATIME|ATIME_NOW; "now" wins.
  SetAttrRequest now =
      MakeSetAttrRequest(in, kFuseSetAtime | kFuseSetAtimeNow | kFuseSetMtime | kFuseSetMtimeNow);
  EXPECT_EQ(now.mask, static_cast<uint32_t>(kSetAtimeNow | kSetMtimeNow));

  SetAttrRequest none = MakeSetAttrRequest(in, 0);
  EXPECT_EQ(none.mask, 0u);
}

}  // namespace
}  // namespace ugfs2::fusefs
