#include "engine/stop_matcher.h"

#include "gtest/gtest.h"

namespace mamba::engine {
namespace {

// Feeds pieces; returns everything sent (pushes and the final flush when unmatched).
std::string Feed(StopMatcher& m, std::vector<std::string> pieces) {
  std::string out;
  for (const auto& p : pieces) out += m.Push(p);
  if (!m.matched()) out += m.Flush();
  return out;
}

TEST(StopMatcher, NoStopsPassesEverything) {
  StopMatcher m;
  EXPECT_EQ(m.Push("abc"), "abc");
  EXPECT_EQ(m.Flush(), "");
}

TEST(StopMatcher, MatchAcrossPiecesCutsBeforeIt) {
  StopMatcher m({"END"});
  EXPECT_EQ(m.Push("hello E"), "hello ");  // "E" might start "END": held back
  EXPECT_EQ(m.Push("N"), "");
  EXPECT_EQ(m.Push("D and more"), "");
  EXPECT_TRUE(m.matched());
  EXPECT_EQ(m.matched_stop(), "END");
  EXPECT_EQ(m.Push("ignored"), "");
}

TEST(StopMatcher, FalseStartIsReleased) {
  StopMatcher m({"END"});
  EXPECT_EQ(Feed(m, {"E", "N", "X", "!"}), "ENX!");
  EXPECT_FALSE(m.matched());
}

TEST(StopMatcher, EarliestOfSeveralWins) {
  StopMatcher m({"world", "lo w"});
  EXPECT_EQ(Feed(m, {"hello world"}), "hel");
  EXPECT_EQ(m.matched_stop(), "lo w");
}

TEST(StopMatcher, MultiByteStop) {
  StopMatcher m({"été"});
  EXPECT_EQ(Feed(m, {"un ", "é", "t", "é chaud"}), "un ");
  EXPECT_TRUE(m.matched());
}

TEST(StopMatcher, StopAtVeryStart) {
  StopMatcher m({"\n\n"});
  EXPECT_EQ(Feed(m, {"\n", "\nrest"}), "");
  EXPECT_TRUE(m.matched());
}

}  // namespace
}  // namespace mamba::engine
