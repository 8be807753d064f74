// SlotPool: hands out slot 0 first, takes back any held slot, and refuses (aborts on) a double
// take or a release of a free slot.
#include "engine/serving/slot_pool.h"

#include "gtest/gtest.h"

namespace mamba::engine {
namespace {

std::vector<int> Ids(const std::vector<SlotId>& v) {
  std::vector<int> out;
  for (SlotId s : v) out.push_back(s.value);
  return out;
}

TEST(SlotPool, TakesAndReleases) {
  SlotPool pool(4);
  EXPECT_EQ(pool.total(), 4);
  EXPECT_EQ(Ids(pool.Free()), (std::vector<int>{0, 1, 2, 3}));
  pool.Take(SlotId(0));
  pool.Take(SlotId(2));
  EXPECT_EQ(pool.num_used(), 2);
  EXPECT_EQ(Ids(pool.Free()), (std::vector<int>{1, 3}));
  EXPECT_FALSE(pool.IsFree(SlotId(2)));
  pool.Release(SlotId(2));
  EXPECT_TRUE(pool.IsFree(SlotId(2)));
  EXPECT_EQ(Ids(pool.Free()).front(), 2);  // the last released is handed out next
  EXPECT_EQ(pool.num_free(), 3);
}

TEST(SlotPool, BrokenInvariantsAbort) {
  SlotPool pool(2);
  pool.Take(SlotId(1));
  EXPECT_DEATH(pool.Take(SlotId(1)), "taking a slot that is not free");
  EXPECT_DEATH(pool.Release(SlotId(0)), "releasing a slot that is not held");
  EXPECT_DEATH(pool.Take(SlotId(7)), "taking a slot that is not free");
}

}  // namespace
}  // namespace mamba::engine
