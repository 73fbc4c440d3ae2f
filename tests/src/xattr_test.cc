// Extended attributes and POSIX ACLs in the GFS2 format, on real mkfs.gfs2 images at every block
// size: set/get/list/remove with the create/replace flags, stuffed and unstuffed values, enough
// attributes to need an indirect EA block, gfs2's limits, persistence across a remount, freeing
// with the inode, ACL mode sync and inheritance, a damaged EA block. Every case ends with an
// unmount and fsck-oracle CLEAN.
#include <sys/stat.h>

#include <set>

#include <gtest/gtest.h>

#include "block/block_device.h"
#include "common/endian.h"
#include "engine_test_util.h"
#include "fs/file_system.h"

namespace ugfs2 {
namespace {

using testing::FsckClean;
using testing::MakeImage;
using testing::MountImage;
using testing::Pattern;
using testing::RootCred;
using testing::TempDir;

std::vector<uint8_t> Get(FileSystem& fs, InodeNo ino, const std::string& name) {
  auto need = fs.GetXattr(ino, name, {});
  EXPECT_TRUE(need.ok()) << name << ": " << need.status().ToString();
  if (!need.ok()) return {};
  std::vector<uint8_t> buf(*need);
  if (buf.empty()) return buf;
  auto got = fs.GetXattr(ino, name, buf);
  EXPECT_TRUE(got.ok()) << got.status().ToString();
  return buf;
}

std::set<std::string> List(FileSystem& fs, InodeNo ino) {
  auto need = fs.ListXattr(ino, {}, RootCred());
  EXPECT_TRUE(need.ok()) << need.status().ToString();
  std::vector<char> buf(need.ok() ? *need : 0);
  std::set<std::string> names;
  if (buf.empty()) return names;
  EXPECT_TRUE(fs.ListXattr(ino, buf, RootCred()).ok());
  for (size_t i = 0; i < buf.size();) {
    std::string n(buf.data() + i);
    names.insert(n);
    i += n.size() + 1;
  }
  return names;
}

void ExpectClean(const std::string& img) {
  std::string report;
  EXPECT_TRUE(FsckClean(img, &report)) << report;
}

// A POSIX ACL in the kernel's xattr representation.
std::vector<uint8_t> Acl(std::initializer_list<std::array<uint32_t, 3>> entries) {
  std::vector<uint8_t> v(4 + 8 * entries.size(), 0);
  v[0] = 2;
  size_t off = 4;
  for (auto& e : entries) {
    v[off] = static_cast<uint8_t>(e[0]);
    v[off + 1] = static_cast<uint8_t>(e[0] >> 8);
    v[off + 2] = static_cast<uint8_t>(e[1]);
    for (int i = 0; i < 4; ++i) v[off + 4 + i] = static_cast<uint8_t>(e[2] >> (8 * i));
    off += 8;
  }
  return v;
}
constexpr uint32_t kUserObj = 1, kUser = 2, kGroupObj = 4, kMask = 0x10, kOther = 0x20;
constexpr uint32_t kNoId = 0xffffffff;

class XattrTest : public ::testing::TestWithParam<uint32_t> {};

TEST_P(XattrTest, SetGetListRemoveAcrossRemountAndFsck) {
  TempDir dir;
  const uint32_t bs = GetParam();
  std::string img = MakeImage(dir, "x.img", 256, bs);
  InodeNo f = 0, d = 0;
  std::vector<uint8_t> big = Pattern(65536, 1), mid = Pattern(bs * 3, 2);
  {
    auto fs = MountImage(img);
    auto a = fs->Mknod(fs->root(), "f", 0100644, 0, RootCred());
    ASSERT_TRUE(a.ok());
    f = a->ino;
    auto m = fs->Mkdir(fs->root(), "d", 0755, RootCred());
    ASSERT_TRUE(m.ok());
    d = m->ino;
    std::vector<uint8_t> small = {'h', 'i'};
    ASSERT_TRUE(fs->SetXattr(f, "user.small", small, 0, RootCred()).ok());
    ASSERT_TRUE(fs->SetXattr(f, "user.empty", {}, 0, RootCred()).ok());
    ASSERT_TRUE(fs->SetXattr(f, "trusted.t", small, 0, RootCred()).ok());
    ASSERT_TRUE(fs->SetXattr(f, "security.s", small, 0, RootCred()).ok());
    ASSERT_TRUE(fs->SetXattr(f, "user.mid", mid, 0, RootCred()).ok());
    Status st = fs->SetXattr(f, "user.big", big, 0, RootCred());
    if (bs >= 1024) {
      ASSERT_TRUE(st.ok()) << st.ToString();
    } else {
      // 65536 bytes need 135 value pointers, more than one 512-byte EA block holds: gfs2 says
      // ERANGE.
      ASSERT_EQ(st.code(), Code::kRange) << st.ToString();
    }
    // Many attributes on the directory: more than one EA block -> indirect EA block.
    for (int i = 0; i < 120; ++i) {
      std::string n = "user.attr-" + std::to_string(i);
      ASSERT_TRUE(fs->SetXattr(d, n, Pattern(40 + i, i), 0, RootCred()).ok()) << n;
    }
    // Flags and errors.
    EXPECT_EQ(fs->SetXattr(f, "user.small", small, kXattrCreate, RootCred()).code(), Code::kExists);
    EXPECT_EQ(fs->SetXattr(f, "user.none", small, kXattrReplace, RootCred()).code(), Code::kNoData);
    EXPECT_TRUE(
        fs->SetXattr(f, "user.small", std::vector<uint8_t>{'x'}, kXattrReplace, RootCred()).ok());
    EXPECT_EQ(fs->GetXattr(f, "user.none", {}).status().code(), Code::kNoData);
    std::vector<uint8_t> one(1);
    EXPECT_EQ(fs->GetXattr(f, "user.mid", one).status().code(), Code::kRange);
    EXPECT_EQ(fs->SetXattr(f, "user." + std::string(256, 'n'), small, 0, RootCred()).code(),
              Code::kRange);
    EXPECT_EQ(fs->SetXattr(f, "user.toolarge", Pattern(65537, 3), 0, RootCred()).code(),
              Code::kRange);
    EXPECT_EQ(fs->SetXattr(f, "bogus.x", small, 0, RootCred()).code(), Code::kNotSupported);
    EXPECT_EQ(fs->SetXattr(f, "system.other", small, 0, RootCred()).code(), Code::kNotSupported);
    EXPECT_EQ(fs->RemoveXattr(f, "user.none").code(), Code::kNoData);
    ASSERT_TRUE(fs->RemoveXattr(d, "user.attr-7").ok());
    ASSERT_TRUE(fs->Unmount().ok());
  }
  ExpectClean(img);
  {
    auto fs = MountImage(img);
    EXPECT_EQ(Get(*fs, f, "user.small"), std::vector<uint8_t>{'x'});
    EXPECT_TRUE(Get(*fs, f, "user.empty").empty());
    EXPECT_EQ(Get(*fs, f, "user.mid"), mid);
    if (bs >= 1024) {
      EXPECT_EQ(Get(*fs, f, "user.big"), big);
    }
    std::set<std::string> want = {"user.small", "user.empty", "trusted.t", "security.s",
                                  "user.mid"};
    if (bs >= 1024) want.insert("user.big");
    EXPECT_EQ(List(*fs, f), want);
    auto names = List(*fs, d);
    EXPECT_EQ(names.size(), 119u);
    EXPECT_EQ(names.count("user.attr-7"), 0u);
    for (int i = 0; i < 120; i += 17) {
      if (i == 7) continue;
      EXPECT_EQ(Get(*fs, d, "user.attr-" + std::to_string(i)), Pattern(40 + i, i)) << i;
    }
    // Remove everything from the directory, then delete the file with its attributes.
    for (int i = 0; i < 120; ++i) {
      if (i != 7) {
        ASSERT_TRUE(fs->RemoveXattr(d, "user.attr-" + std::to_string(i)).ok());
      }
    }
    EXPECT_TRUE(List(*fs, d).empty());
    ASSERT_TRUE(fs->Unlink(fs->root(), "f").ok());
    ASSERT_TRUE(fs->Unmount().ok());
  }
  ExpectClean(img);
}

TEST_P(XattrTest, AclSetsModeFollowsChmodAndIsInherited) {
  TempDir dir;
  std::string img = MakeImage(dir, "a.img", 128, GetParam());
  {
    auto fs = MountImage(img);
    auto f = fs->Mknod(fs->root(), "f", 0100644, 0, RootCred());
    ASSERT_TRUE(f.ok());
    // user::rw- user:1000:rwx group::r-- mask::rwx other::---
    auto acl = Acl({{kUserObj, 6, kNoId},
                    {kUser, 7, 1000},
                    {kGroupObj, 4, kNoId},
                    {kMask, 7, kNoId},
                    {kOther, 0, kNoId}});
    ASSERT_TRUE(fs->SetXattr(f->ino, "system.posix_acl_access", acl, 0, RootCred()).ok());
    auto a = fs->GetAttr(f->ino);
    ASSERT_TRUE(a.ok());
    EXPECT_EQ(a->mode & 0777, 0670u);  // group bits show the mask
    // chmod 640: the mask (not group::) follows, other stays ---.
    SetAttrRequest chmod;
    chmod.mask = kSetMode;
    chmod.mode = 0640;
    ASSERT_TRUE(fs->SetAttr(f->ino, chmod, RootCred()).ok());
    auto now = Get(*fs, f->ino, "system.posix_acl_access");
    auto want = Acl({{kUserObj, 6, kNoId},
                     {kUser, 7, 1000},
                     {kGroupObj, 4, kNoId},
                     {kMask, 4, kNoId},
                     {kOther, 0, kNoId}});
    EXPECT_EQ(now, want);
    // An ACL the mode says entirely is not stored.
    auto base = Acl({{kUserObj, 7, kNoId}, {kGroupObj, 5, kNoId}, {kOther, 1, kNoId}});
    ASSERT_TRUE(fs->SetXattr(f->ino, "system.posix_acl_access", base, 0, RootCred()).ok());
    EXPECT_EQ(fs->GetXattr(f->ino, "system.posix_acl_access", {}).status().code(), Code::kNoData);
    EXPECT_EQ(fs->GetAttr(f->ino)->mode & 0777, 0751u);
    // Malformed ACLs are refused.
    EXPECT_EQ(fs->SetXattr(f->ino, "system.posix_acl_access", std::vector<uint8_t>{2, 0, 0}, 0,
                           RootCred())
                  .code(),
              Code::kInvalid);
    EXPECT_EQ(fs->SetXattr(f->ino, "system.posix_acl_default", base, 0, RootCred()).code(),
              Code::kAccess);

    // Inheritance: a directory with a default ACL.
    auto d = fs->Mkdir(fs->root(), "d", 0755, RootCred());
    ASSERT_TRUE(d.ok());
    auto def = Acl({{kUserObj, 7, kNoId},
                    {kUser, 5, 1000},
                    {kGroupObj, 5, kNoId},
                    {kMask, 5, kNoId},
                    {kOther, 0, kNoId}});
    ASSERT_TRUE(fs->SetXattr(d->ino, "system.posix_acl_default", def, 0, RootCred()).ok());
    Cred masked = RootCred();
    masked.umask = 077;  // ignored under a default ACL
    auto child = fs->Mknod(d->ino, "child", 0100666, 0, masked);
    ASSERT_TRUE(child.ok());
    // posix_acl_create with mode 0666: user:: rwx&rw- = rw-, mask r-x&rw- = r--, other ---.
    EXPECT_EQ(child->mode & 0777, 0640u);
    auto cacl = Get(*fs, child->ino, "system.posix_acl_access");
    auto want_child = Acl({{kUserObj, 6, kNoId},
                           {kUser, 5, 1000},
                           {kGroupObj, 5, kNoId},
                           {kMask, 4, kNoId},
                           {kOther, 0, kNoId}});
    EXPECT_EQ(cacl, want_child);
    auto sub = fs->Mkdir(d->ino, "sub", 0777, masked);
    ASSERT_TRUE(sub.ok());
    EXPECT_EQ(Get(*fs, sub->ino, "system.posix_acl_default"), def);
    EXPECT_EQ(sub->mode & 0777, 0750u);
    // Without a default ACL the umask applies.
    auto plain = fs->Mknod(fs->root(), "plain", 0100666, 0, masked);
    ASSERT_TRUE(plain.ok());
    EXPECT_EQ(plain->mode & 0777, 0600u);
    ASSERT_TRUE(fs->Unmount().ok());
  }
  ExpectClean(img);
}

TEST(XattrDamage, DamagedEaBlockIsEioNotACrash) {
  TempDir dir;
  std::string img = MakeImage(dir, "dmg.img", 64, 4096);
  uint64_t eablk = 0;
  InodeNo f = 0;
  {
    auto fs = MountImage(img);
    auto a = fs->Mknod(fs->root(), "f", 0100644, 0, RootCred());
    ASSERT_TRUE(a.ok());
    f = a->ino;
    ASSERT_TRUE(fs->SetXattr(f, "user.a", Pattern(100, 5), 0, RootCred()).ok());
    ASSERT_TRUE(fs->Unmount().ok());
  }
  {
    auto dev = OpenFileBlockDevice(img, {});
    ASSERT_TRUE(dev.ok());
    std::vector<uint8_t> di(4096);
    ASSERT_TRUE((*dev)->ReadAt(f * 4096, di.data(), di.size()).ok());
    eablk = LoadBe64(di.data() + 168);  // di_eattr
    ASSERT_NE(eablk, 0u);
    std::vector<uint8_t> ea(4096);
    ASSERT_TRUE((*dev)->ReadAt(eablk * 4096, ea.data(), ea.size()).ok());
    StoreBe32(ea.data() + 24, 3);  // first record's rec_len: impossible
    ASSERT_TRUE((*dev)->WriteAt(eablk * 4096, ea.data(), ea.size()).ok());
    ASSERT_TRUE((*dev)->Flush().ok());
  }
  auto fs = MountImage(img);
  EXPECT_EQ(fs->GetXattr(f, "user.a", {}).status().code(), Code::kCorrupt);
  EXPECT_EQ(fs->ListXattr(f, {}, RootCred()).status().code(), Code::kCorrupt);
  EXPECT_EQ(fs->SetXattr(f, "user.b", Pattern(4, 1), 0, RootCred()).code(), Code::kCorrupt);
  EXPECT_TRUE(fs->GetAttr(f).ok());  // the inode itself is fine
  EXPECT_TRUE(fs->Unmount().ok());
}

TEST(XattrNoSpace, FullVolumeRefusesWithoutLosingAttributes) {
  TempDir dir;
  std::string img = MakeImage(dir, "full.img", 64, 4096);
  {
    auto fs = MountImage(img);
    auto f = fs->Mknod(fs->root(), "f", 0100644, 0, RootCred());
    ASSERT_TRUE(f.ok());
    auto keep = Pattern(3000, 9);
    ASSERT_TRUE(fs->SetXattr(f->ino, "user.keep", keep, 0, RootCred()).ok());
    auto filler = fs->Mknod(fs->root(), "filler", 0100644, 0, RootCred());
    ASSERT_TRUE(filler.ok());
    std::vector<uint8_t> chunk(1 << 20, 0xab);
    uint64_t off = 0;
    while (true) {
      auto w = fs->Write(filler->ino, off, chunk, false);
      if (!w.ok()) {
        ASSERT_EQ(w.status().code(), Code::kNoSpace) << w.status().ToString();
        break;
      }
      off += *w;
      ASSERT_LT(off, 128ull << 20) << "never ran out of space";
    }
    // Fill the last blocks one by one.
    std::vector<uint8_t> block(4096, 0xcd);
    while (fs->Write(filler->ino, off, block, false).ok()) off += 4096;
    Status st = fs->SetXattr(f->ino, "user.big", Pattern(65536, 4), 0, RootCred());
    EXPECT_EQ(st.code(), Code::kNoSpace) << st.ToString();
    EXPECT_EQ(Get(*fs, f->ino, "user.keep"), keep);
    ASSERT_TRUE(fs->Unlink(fs->root(), "filler").ok());
    ASSERT_TRUE(fs->SetXattr(f->ino, "user.big", Pattern(65536, 4), 0, RootCred()).ok());
    EXPECT_EQ(Get(*fs, f->ino, "user.keep"), keep);
    ASSERT_TRUE(fs->Unmount().ok());
  }
  ExpectClean(img);
}

INSTANTIATE_TEST_SUITE_P(BlockSizes, XattrTest, ::testing::Values(512u, 1024u, 2048u, 4096u),
                         [](const auto& p) { return std::to_string(p.param); });

}  // namespace
}  // namespace ugfs2
