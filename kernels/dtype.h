// Storage element types of weights (safetensors F32/F16/BF16, and I8 for the int8 weights of a
// quantized checkpoint, whose scales are separate fp32 tensors) and conversions to fp32.
#pragma once

#include <cstdint>
#include <cstring>
#include <optional>
#include <string_view>

namespace mamba::kernels {

enum class DType : uint8_t { kF32, kF16, kBF16, kI8 };

inline constexpr size_t SizeOf(DType t) { return t == DType::kF32 ? 4 : t == DType::kI8 ? 1 : 2; }
const char* Name(DType t);  // "float32", "float16", "bfloat16", "int8"
// The float dtype Name() calls `name` ("float32", "float16" or "bfloat16"); nullopt otherwise.
std::optional<DType> FloatDTypeFromName(std::string_view name);

inline float Bf16ToF32(uint16_t h) {
  uint32_t u = static_cast<uint32_t>(h) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

// Round to nearest even, as torch does; NaN stays NaN.
inline uint16_t F32ToBf16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((u >> 16) | 0x40);
  u += 0x7fffu + ((u >> 16) & 1u);
  return static_cast<uint16_t>(u >> 16);
}

float F16ToF32(uint16_t h);
uint16_t F32ToF16(float f);  // round to nearest even; overflow -> inf

// dst[i] = float(src[i]) for n elements stored as `type` (int8: the integer itself, unscaled).
void ConvertToF32(const void* src, DType type, float* dst, int64_t n);
// dst[i] = bf16(src[i]).
void ConvertF32ToBf16(const float* src, uint16_t* dst, int64_t n);

}  // namespace mamba::kernels
