// Branch-free per-element conversions (selects, no data-dependent branches), so that the loops
// vectorize with baseline SSE2. The fp16 pair follows F. Giesen's "float_to_half_fast3_rtne" and
// "half_to_float_fast5" (public domain). The AVX2 variant encodes fp16 with F16C instead
// (compress/avx2.h), which rounds the same way.
#include "compress/cast.h"

#include <cstring>

#include "compress/avx2.h"
#include "compress/bits.h"
#include "compress/simd.h"

namespace dlion {
namespace {

constexpr std::uint32_t kExpShift = 0x38000000u;  // (127 - 15) << 23: float vs half bias
constexpr std::int32_t kHalfMinNormal = 0x38800000;  // 2^-14 as float bits
constexpr std::int32_t kHalfOverflow = 0x47800000;   // 2^16: rounds to inf or is inf/NaN
constexpr std::int32_t kFloatInf = 0x7f800000;

DLION_ALWAYS_INLINE std::uint16_t half_of(std::uint32_t u) {
  const std::uint32_t sign = (u >> 16) & 0x8000u;
  const std::uint32_t ua = u & 0x7fffffffu;
  const auto a = static_cast<std::int32_t>(ua);  // signed compares vectorize on SSE2
  // Normal half: rebias, then round to nearest even on the 13 dropped bits (a carry may run
  // into the exponent, up to inf).
  const std::uint32_t normal = (ua - kExpShift + 0xfffu + ((ua >> 13) & 1u)) >> 13;
  // Subnormal half: adding 0.5 aligns the result's 10 bits at the bottom of the mantissa, and
  // the float addition rounds them to nearest even.
  const std::uint32_t subnormal = bits_of(float_of(ua) + 0.5f) - 0x3f000000u;
  const std::uint32_t special = a > kFloatInf ? (0x7e00u | ((ua >> 13) & 0x3ffu)) : 0x7c00u;
  std::uint32_t h = a < kHalfMinNormal ? subnormal : normal;
  h = a >= kHalfOverflow ? special : h;
  return static_cast<std::uint16_t>(h | sign);
}

DLION_ALWAYS_INLINE float float_of_half(std::uint16_t h) {
  const std::uint32_t hu = h;
  const std::uint32_t shifted = (hu & 0x7fffu) << 13;
  const std::uint32_t exp = shifted & 0x0f800000u;
  const std::uint32_t normal = shifted + kExpShift;
  const std::uint32_t special = normal + kExpShift;  // inf/NaN: exponent all ones
  // Zero/subnormal: build 2^-14 * (1 + m / 1024), then subtract 2^-14 (exact).
  const std::uint32_t subnormal =
      bits_of(float_of(normal + 0x00800000u) - float_of(static_cast<std::uint32_t>(kHalfMinNormal)));
  std::uint32_t o = exp == 0x0f800000u ? special : normal;
  o = exp == 0 ? subnormal : o;
  return float_of(o | ((hu & 0x8000u) << 16));
}

DLION_ALWAYS_INLINE std::uint16_t bf16_of(std::uint32_t u) {
  const auto a = static_cast<std::int32_t>(u & 0x7fffffffu);
  const std::uint32_t rounded = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
  const std::uint32_t nan = (u >> 16) | 0x0040u;
  return static_cast<std::uint16_t>(a > kFloatInf ? nan : rounded);
}

// The loops get __restrict views through these (lambda captures cannot carry it).
template <bool kAvx2>
DLION_ALWAYS_INLINE void to_fp16_impl(const float* __restrict x, std::size_t n,
                                      std::uint16_t* __restrict out) {
  if constexpr (kAvx2) {
    detail::avx2::to_fp16(x, n, out);
  } else {
    for (std::size_t i = 0; i < n; ++i) out[i] = half_of(bits_of(x[i]));
  }
}

DLION_ALWAYS_INLINE void from_fp16_impl(const std::uint16_t* __restrict h, std::size_t n,
                                        float* __restrict out) {
  for (std::size_t i = 0; i < n; ++i) out[i] = float_of_half(h[i]);
}

DLION_ALWAYS_INLINE void to_bf16_impl(const float* __restrict x, std::size_t n,
                                      std::uint16_t* __restrict out) {
  for (std::size_t i = 0; i < n; ++i) out[i] = bf16_of(bits_of(x[i]));
}

DLION_ALWAYS_INLINE void from_bf16_impl(const std::uint16_t* __restrict b, std::size_t n,
                                        float* __restrict out) {
  for (std::size_t i = 0; i < n; ++i) out[i] = float_of(static_cast<std::uint32_t>(b[i]) << 16);
}

}  // namespace

void to_fp16(const float* x, std::size_t n, std::uint16_t* out) {
  DLION_SIMD_DISPATCH(to_fp16_impl<kSimdAvx2>(x, n, out));
}

void from_fp16(const std::uint16_t* h, std::size_t n, float* out) {
  DLION_SIMD_DISPATCH(from_fp16_impl(h, n, out));
}

void to_bf16(const float* x, std::size_t n, std::uint16_t* out) {
  DLION_SIMD_DISPATCH(to_bf16_impl(x, n, out));
}

void from_bf16(const std::uint16_t* b, std::size_t n, float* out) {
  DLION_SIMD_DISPATCH(from_bf16_impl(b, n, out));
}

}  // namespace dlion
