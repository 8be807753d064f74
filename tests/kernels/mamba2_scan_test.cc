// Mamba-2's multi-head scan against its float64 reference on random inputs: heads sharing a
// group's B and C, head_dim tails, dt limits, chunks over shuffled slots; and a chunk split in
// two calls equal to one pass, bitwise.
#include "kernels/cpu/mamba2_scan.h"

#include <sstream>
#include <vector>

#include "gtest/gtest.h"
#include "tests/kernels/kernel_test_util.h"

namespace mamba::kernels::cpu {
namespace {

using testing::Close;
using testing::MakeChunks;
using testing::Random;
using testing::ToDouble;

struct Shape {
  int64_t heads, head_dim, d_state, groups;
  double dt_min, dt_max;
  std::vector<int64_t> lengths;
};

// Inputs laid out as in the engine: x | B | C rows of the conv output, dt and z in in_proj's.
struct Inputs {
  int64_t T, e, gn, xbc, zdt;
  std::vector<float> xbc_rows, zdt_rows, dt_bias, a, d;
  Inputs(const Shape& s, int64_t tokens, uint64_t seed)
      : T(tokens),
        e(s.heads * s.head_dim),
        gn(s.groups * s.d_state),
        xbc(e + 2 * gn),
        zdt(e + s.heads),
        xbc_rows(Random(static_cast<size_t>(T * xbc), seed, -2, 2)),
        zdt_rows(Random(static_cast<size_t>(T * zdt), seed + 1, -4, 4)),
        dt_bias(Random(static_cast<size_t>(s.heads), seed + 2, -3, 1)),
        a(Random(static_cast<size_t>(s.heads), seed + 3, -8, -0.5f)),
        d(Random(static_cast<size_t>(s.heads), seed + 4)) {}

  template <typename T_>
  Mamba2ScanArgsT<T_> Args(const Shape& s, const T_* xr, const T_* zr, const T_* db, const T_* av,
                           const T_* dv, T_* state, T_* out, std::span<const SeqChunk> chunks) {
    return {xr,         xbc,       zr + e,   zdt,      db,       av,    xr + e, xr + e + gn,
            xbc,        dv,        zr,       zdt,      state,    out,   e,      s.heads,
            s.head_dim, s.d_state, s.groups, s.dt_min, s.dt_max, chunks};
  }
};

class Mamba2ScanTest : public ::testing::TestWithParam<Shape> {};

TEST_P(Mamba2ScanTest, MatchesReferenceAndUpdatesState) {
  const Shape& s = GetParam();
  const int slots = 7;
  auto chunks = MakeChunks(s.lengths, slots, 3);
  const int64_t T = chunks.back().begin + chunks.back().length;
  Inputs in(s, T, 40);
  auto state = Random(static_cast<size_t>(slots * s.heads * s.d_state * s.head_dim), 50);
  std::vector<float> out(static_cast<size_t>(T * in.e));
  auto xd = ToDouble(in.xbc_rows), zd = ToDouble(in.zdt_rows), bd = ToDouble(in.dt_bias),
       ad = ToDouble(in.a), dd = ToDouble(in.d), sd = ToDouble(state);
  std::vector<double> want(out.size());
  Mamba2Scan(in.Args<float>(s, in.xbc_rows.data(), in.zdt_rows.data(), in.dt_bias.data(),
                            in.a.data(), in.d.data(), state.data(), out.data(), chunks));
  Mamba2ScanReference<double>(in.Args<double>(s, xd.data(), zd.data(), bd.data(), ad.data(),
                                              dd.data(), sd.data(), want.data(), chunks));
  EXPECT_TRUE(Close(out, want, 5e-5, 5e-5, "mamba2 scan out"));
  EXPECT_TRUE(Close(state, sd, 5e-5, 5e-5, "mamba2 scan state"));
}

TEST_P(Mamba2ScanTest, TwoPiecesEqualOnePassBitwise) {
  const Shape& s = GetParam();
  const int64_t L = 19;
  Inputs in(s, L, 60);
  const auto state_size = static_cast<size_t>(s.heads * s.d_state * s.head_dim);
  std::vector<float> s1(state_size, 0.0f), s2 = s1, o1(static_cast<size_t>(L * in.e)), o2 = o1;
  auto run = [&](std::vector<float>& st, std::vector<float>& o, int64_t begin, int64_t len) {
    const SeqChunk c{begin, len, 0};
    Mamba2Scan(in.Args<float>(s, in.xbc_rows.data(), in.zdt_rows.data(), in.dt_bias.data(),
                              in.a.data(), in.d.data(), st.data(), o.data(), {&c, 1}));
  };
  run(s1, o1, 0, L);
  run(s2, o2, 0, 6);
  for (int64_t t = 6; t < L; ++t) run(s2, o2, t, 1);  // then token by token, as decode
  EXPECT_EQ(o1, o2);
  EXPECT_EQ(s1, s2);
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, Mamba2ScanTest,
    ::testing::Values(Shape{4, 16, 16, 1, 0.0, 0.0, {5, 1, 9}},
                      Shape{8, 64, 128, 2, 0.0, 0.0, {1, 1, 1, 33}},  // the real head shape
                      Shape{6, 24, 8, 3, 0.01, 0.5, {3, 11}},         // tails, dt limits
                      Shape{2, 80, 32, 1, 0.0, 0.0, {7}},             // a 4+1 block split
                      Shape{128, 64, 128, 8, 0.0, 0.0, {2}}),         // Codestral's heads
    [](const ::testing::TestParamInfo<Shape>& i) {
      std::ostringstream name;  // (GCC 12 -Wrestrict misfires on string concatenation)
      name << "h" << i.param.heads << "p" << i.param.head_dim << "n" << i.param.d_state << "g"
           << i.param.groups;
      return name.str();
    });

}  // namespace
}  // namespace mamba::kernels::cpu
