#include "request_stats.h"

#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <sstream>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

namespace ugfs2::fusefs {
namespace {

TEST(RequestStatsTest, CountsAndFormatsEveryOp) {
  RequestStats s;
  s.Count(Op::kRead);
  s.Count(Op::kRead);
  s.Count(Op::kLookup);
  s.AddReadBytes(4096);
  s.AddWriteBytes(10);
  std::string text = s.Format("extra 1\n");
  EXPECT_NE(text.find("read 2\n"), std::string::npos);
  EXPECT_NE(text.find("lookup 1\n"), std::string::npos);
  EXPECT_NE(text.find("write 0\n"), std::string::npos);
  EXPECT_NE(text.find("copy_file_range 0\n"), std::string::npos);
  EXPECT_NE(text.find("read_bytes 4096\n"), std::string::npos);
  EXPECT_NE(text.find("write_bytes 10\n"), std::string::npos);
  EXPECT_NE(text.find("extra 1\n"), std::string::npos);
  for (int i = 0; i < static_cast<int>(Op::kCount); ++i) {
    EXPECT_NE(text.find(std::string(OpName(static_cast<Op>(i))) + " "), std::string::npos);
  }
}

TEST(RequestStatsTest, ConcurrentCounting) {
  RequestStats s;
  std::vector<std::thread> t;
  for (int i = 0; i < 4; ++i) {
    t.emplace_back([&] {
      for (int k = 0; k < 10000; ++k) s.Count(Op::kWrite);
    });
  }
  for (auto& th : t) th.join();
  EXPECT_EQ(s.Get(Op::kWrite), 40000u);
}

TEST(RequestStatsTest, WriteFileAtomicallyCreatesParents) {
  char tmpl[] = "/tmp/ugfs2_stats_test_XXXXXX";
  ASSERT_NE(mkdtemp(tmpl), nullptr);
  std::string path = std::string(tmpl) + "/a/b/x.stats";
  ASSERT_TRUE(WriteFileAtomically(path, "read 0\n").ok());
  ASSERT_TRUE(WriteFileAtomically(path, "read 1\n").ok());
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  EXPECT_EQ(ss.str(), "read 1\n");
  std::string cmd = std::string("rm -rf ") + tmpl;
  EXPECT_EQ(std::system(cmd.c_str()), 0);
}

}  // namespace
}  // namespace ugfs2::fusefs
