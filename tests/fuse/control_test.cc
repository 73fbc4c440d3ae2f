// The control-socket protocol (control_client.h): reply framing ("ok", "ok TEXT", "error: CODE:
// MESSAGE", "data LEN" + bytes) round-trips results of any size and errors with their code, and
// a ControlServer answers ControlRequest over a real Unix socket, long dumps included.
#include "control.h"

#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <string>
#include <thread>

#include <gtest/gtest.h>

#include "control_client.h"

namespace ugfs2::fusefs {
namespace {

ControlDeadline Soon() { return std::chrono::steady_clock::now() + std::chrono::seconds(10); }

// A dump-like text: many '\n'-terminated lines, `bytes` long.
std::string Dump(size_t bytes) {
  std::string s;
  for (int i = 0; s.size() < bytes; ++i) {
    s += "G:  s:EX n:2/" + std::to_string(1000 + i) + " f:lq t:EX d:UN/0 a:0 v:0 r:3 m:200\n";
  }
  s.resize(bytes);
  return s;
}

// Writes `encoded` into one end of a socket pair (from a thread: it may exceed the socket
// buffer) and decodes it from the other.
Result<std::string> RoundTrip(const std::string& encoded) {
  int sv[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) {
    return Status::FromErrno(errno, "socketpair");
  }
  std::thread writer([&] {
    (void)WriteControlBytes(sv[0], encoded, Soon());
    ::close(sv[0]);
  });
  Result<std::string> r = ReadControlReply(sv[1], Soon());
  writer.join();
  ::close(sv[1]);
  return r;
}

TEST(ControlProtocolTest, ReplyForms) {
  EXPECT_EQ(EncodeControlReply(std::string()), "ok\n");
  EXPECT_EQ(EncodeControlReply(std::string("37")), "ok 37\n");
  EXPECT_EQ(EncodeControlReply(std::string("a\nb\n")), "data 4\na\nb\n");
  EXPECT_EQ(EncodeControlReply(std::string(2000, 'x')).substr(0, 10), "data 2000\n");
  EXPECT_EQ(EncodeControlReply(Status::NotSupported("glocks: 2/1b")),
            "error: NotSupported: glocks: 2/1b\n");
  // One line, whatever the message holds.
  EXPECT_EQ(EncodeControlReply(Status::Busy("a\nb")), "error: Busy: a b\n");
}

TEST(ControlProtocolTest, ResultsRoundTrip) {
  for (const std::string& text :
       {std::string(), std::string("ok"), std::string("37"), std::string("one line"),
        std::string("two\nlines\n"), std::string("\n"), std::string(1500, 'y'), Dump(300 << 10),
        Dump(3 << 20)}) {
    auto r = RoundTrip(EncodeControlReply(text));
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    EXPECT_EQ(*r, text) << "size " << text.size();
  }
}

TEST(ControlProtocolTest, ErrorsKeepTheirCode) {
  for (const Status& st : {Status::NotFound("no glock 2/1b"), Status::Invalid("bad name x"),
                           Status::NotSupported("glocks: 2/1b"), Status::Busy("unmounting"),
                           Status(Code::kStale, "")}) {
    auto r = RoundTrip(EncodeControlReply(st));
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.status().code(), st.code()) << r.status().ToString();
    EXPECT_EQ(r.status().message(), st.message());
  }
  // A daemon from before the codes: the message, as an I/O error.
  auto legacy = RoundTrip("error: unknown request\n");
  ASSERT_FALSE(legacy.ok());
  EXPECT_EQ(legacy.status().code(), Code::kIoError);
  EXPECT_EQ(legacy.status().message(), "unknown request");
}

TEST(ControlProtocolTest, TruncatedAndMalformedReplies) {
  EXPECT_EQ(RoundTrip("").status().code(), Code::kNotConnected);  // closed without a reply
  EXPECT_EQ(RoundTrip("data 10\nabc").status().code(), Code::kIoError);
  EXPECT_EQ(RoundTrip("data x\n").status().code(), Code::kIoError);
  EXPECT_EQ(RoundTrip("data 999999999999\n").status().code(), Code::kIoError);  // too big
  EXPECT_EQ(RoundTrip("hello\n").status().code(), Code::kIoError);
}

TEST(ControlProtocolTest, ReplyTimesOut) {
  int sv[2];
  ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
  auto r =
      ReadControlReply(sv[1], std::chrono::steady_clock::now() + std::chrono::milliseconds(50));
  EXPECT_EQ(r.status().code(), Code::kTimedOut);
  ::close(sv[0]);
  ::close(sv[1]);
}

class ControlServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/ugfs2-control-test-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    path_ = dir_ + "/ctl.sock";
  }
  void TearDown() override {
    ::unlink(path_.c_str());
    ::rmdir(dir_.c_str());
  }
  std::string dir_;
  std::string path_;
};

TEST_F(ControlServerTest, AnswersRequestsOfEverySize) {
  const std::string dump = Dump(700 << 10);  // glock dumps run to hundreds of KiB
  auto server = ControlServer::Start(path_, [&](std::string_view req) -> Result<std::string> {
    if (req == "glocks") return dump;
    if (req == "demote all") return std::string("12");
    if (req == "demote 2/1b") return std::string();
    if (req.starts_with("demote "))
      return Status::NotFound("no glock " + std::string(req.substr(7)));
    return Status::Invalid("unknown request");
  });
  ASSERT_TRUE(server.ok()) << server.status().ToString();
  struct stat st;
  ASSERT_EQ(::stat(path_.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);  // root only

  auto d = ControlRequest(path_, "glocks", 10000);
  ASSERT_TRUE(d.ok()) << d.status().ToString();
  EXPECT_EQ(*d, dump);
  auto all = ControlRequest(path_, "demote all", 10000);
  ASSERT_TRUE(all.ok());
  EXPECT_EQ(*all, "12");
  auto one = ControlRequest(path_, "demote 2/1b", 10000);
  ASSERT_TRUE(one.ok());
  EXPECT_EQ(*one, "");
  auto missing = ControlRequest(path_, "demote 2/ff", 10000);
  EXPECT_EQ(missing.status().code(), Code::kNotFound);
  EXPECT_EQ(missing.status().message(), "no glock 2/ff");
  EXPECT_EQ(ControlRequest(path_, "bogus", 10000).status().code(), Code::kInvalid);
  // Many requests in a row (ugfs2-tool demote --count N).
  for (int i = 0; i < 200; ++i) ASSERT_TRUE(ControlRequest(path_, "demote 2/1b", 10000).ok());
  // Requests are one line of at most 4 KiB: refused before anything is sent.
  EXPECT_EQ(ControlRequest(path_, std::string(5000, 'a'), 10000).status().code(), Code::kInvalid);
  EXPECT_EQ(ControlRequest(path_, "a\nb", 10000).status().code(), Code::kInvalid);
  server->reset();
  EXPECT_NE(::access(path_.c_str(), F_OK), 0);  // the socket is removed
  EXPECT_EQ(ControlRequest(path_, "glocks", 1000).status().code(), Code::kNotConnected);
}

TEST(MountDeviceTest, LexicalPathsAndNonMountPoints) {
  char tmpl[] = "/tmp/ugfs2-mountdev-test-XXXXXX";
  ASSERT_NE(::mkdtemp(tmpl), nullptr);
  EXPECT_EQ(MountDevice(tmpl).status().code(), Code::kNotFound);
  ::rmdir(tmpl);
  auto proc = MountDevice("/proc");
  if (!proc.ok()) GTEST_SKIP() << "/proc is not a mount point here";
  auto again = MountDevice("/proc//.");
  ASSERT_TRUE(again.ok()) << again.status().ToString();
  EXPECT_EQ(*again, *proc);
  auto slash = MountDevice("/proc/");
  ASSERT_TRUE(slash.ok());
  EXPECT_EQ(*slash, *proc);
  EXPECT_EQ(ControlPath(makedev(0, 52)), "/run/ugfs2/ctl/0:52.sock");
}

}  // namespace
}  // namespace ugfs2::fusefs
