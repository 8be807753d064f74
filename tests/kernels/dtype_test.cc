#include "kernels/dtype.h"

#include <cmath>

#include "gtest/gtest.h"

namespace mamba::kernels {
namespace {

// The tools' --dtype names: Name() of each float dtype, and nothing else.
TEST(DType, FloatDTypeFromNameInvertsName) {
  for (DType t : {DType::kF32, DType::kF16, DType::kBF16})
    EXPECT_EQ(FloatDTypeFromName(Name(t)), t);
  for (const char* bad : {"int8", "fp32", "Float32", "", "bf16"}) {
    EXPECT_EQ(FloatDTypeFromName(bad), std::nullopt) << bad;
  }
}

TEST(DType, F16RoundTripsEveryValue) {
  for (uint32_t h = 0; h < 65536; ++h) {
    const float f = F16ToF32(static_cast<uint16_t>(h));
    if (std::isnan(f)) {
      EXPECT_TRUE(std::isnan(F16ToF32(F32ToF16(f))));
      continue;
    }
    EXPECT_EQ(F32ToF16(f), h) << h;
  }
  EXPECT_EQ(F16ToF32(0x3c00), 1.0f);
  EXPECT_EQ(F16ToF32(0x0001), std::ldexp(1.0f, -24));         // smallest subnormal
  EXPECT_EQ(F32ToF16(1e6f), 0x7c00);                          // overflow -> inf
  EXPECT_EQ(F32ToF16(1.0f + std::ldexp(1.0f, -11)), 0x3c00);  // tie rounds to even
}

TEST(DType, Bf16RoundsToNearestEven) {
  EXPECT_EQ(F32ToBf16(1.0f), 0x3f80);
  EXPECT_EQ(Bf16ToF32(0x3f80), 1.0f);
  EXPECT_EQ(F32ToBf16(1.0f + std::ldexp(1.0f, -8)), 0x3f80);  // tie -> even
  EXPECT_EQ(F32ToBf16(1.0f + std::ldexp(3.0f, -8)), 0x3f82);  // tie -> even (up)
  EXPECT_TRUE(std::isnan(Bf16ToF32(F32ToBf16(std::nanf("")))));
  std::vector<float> out(3);
  const uint16_t in[3] = {0x3f80, 0xc000, 0x0000};
  ConvertToF32(in, DType::kBF16, out.data(), 3);
  EXPECT_EQ(out, (std::vector<float>{1.0f, -2.0f, 0.0f}));
}

}  // namespace
}  // namespace mamba::kernels
