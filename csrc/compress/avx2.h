// AVX2 + F16C twins of the codec kernels whose portable bodies the compiler does not turn into
// memory-speed code: the fp16 cast (one vcvtps2ph per 8 floats), the sign encoder (movemask,
// and the mean |x| in the same 8 double accumulators as the portable loop) and QSGD (bucket
// maxima with four accumulators; levels with the xoshiro lanes stepped in registers, 32 levels
// packed per store). Each gives the same bits as its portable twin in cast.cc / quantize.cc,
// consumes the random stream the same way, and is called only from the AVX2 variant of
// DLION_SIMD_DISPATCH (`if constexpr (kSimdAvx2)`); quantize_test checks that both variants
// write the same bytes.
//
// Tails shorter than a vector go through a zero-padded copy of 8 elements, so that no load or
// store leaves the caller's buffers.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>

#include "compress/simd.h"
#include "compress/xoshiro.h"

#if DLION_HAVE_AVX2_DISPATCH
#include <immintrin.h>

// Helpers are inlined into the kernels; the kernels themselves are ordinary (inline) functions,
// since an always-inline AVX2 function cannot be inlined into a caller compiled without AVX2
// (the template bodies that call them), and one call per kernel or bucket costs nothing.
#define DLION_AVX2_INLINE DLION_TARGET_AVX2 DLION_ALWAYS_INLINE
#define DLION_AVX2_KERNEL DLION_TARGET_AVX2 inline

namespace dlion::detail::avx2 {

// out[i] = the binary16 of x[i], rounded to nearest even (imm8 0: not MXCSR's mode).
DLION_AVX2_KERNEL void to_fp16(const float* __restrict x, std::size_t n,
                               std::uint16_t* __restrict out) {
  std::size_t i = 0;
  for (; i + 16 <= n; i += 16) {
    const __m128i a = _mm256_cvtps_ph(_mm256_loadu_ps(x + i), 0);
    const __m128i b = _mm256_cvtps_ph(_mm256_loadu_ps(x + i + 8), 0);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(out + i), a);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(out + i + 8), b);
  }
  for (; i < n; i += 8) {
    const std::size_t m = n - i < 8 ? n - i : 8;
    alignas(32) float in[8] = {};
    alignas(16) std::uint16_t h[8];
    std::memcpy(in, x + i, m * sizeof(float));
    _mm_store_si128(reinterpret_cast<__m128i*>(h), _mm256_cvtps_ph(_mm256_load_ps(in), 0));
    std::memcpy(out + i, h, m * sizeof(std::uint16_t));
  }
}

// One byte of sign bits (bit j: x[j] >= 0) of 8 floats; adds |x[j]| (as double) to lane j of
// the accumulators lo (lanes 0-3) and hi (lanes 4-7).
DLION_AVX2_INLINE unsigned sign_step(__m256 v, __m256d& lo, __m256d& hi) {
  const __m256 abs = _mm256_and_ps(v, _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff)));
  lo = _mm256_add_pd(lo, _mm256_cvtps_pd(_mm256_castps256_ps128(abs)));
  hi = _mm256_add_pd(hi, _mm256_cvtps_pd(_mm256_extractf128_ps(abs, 1)));
  return static_cast<unsigned>(
      _mm256_movemask_ps(_mm256_cmp_ps(v, _mm256_setzero_ps(), _CMP_GE_OQ)));
}

// Writes the sign bits of x and returns sum |x| accumulated as the portable loop does: lane j
// sums elements j, j + 8, j + 16, ... in order, then the lanes are added in order 0..7.
DLION_AVX2_KERNEL double sign_encode(const float* __restrict x, std::size_t n,
                                     std::uint8_t* __restrict bits) {
  __m256d lo = _mm256_setzero_pd(), hi = _mm256_setzero_pd();
  std::size_t b = 0;
  for (; 8 * b + 32 <= n; b += 4) {
    const float* xb = x + 8 * b;
    std::uint32_t word = sign_step(_mm256_loadu_ps(xb), lo, hi);
    word |= sign_step(_mm256_loadu_ps(xb + 8), lo, hi) << 8;
    word |= sign_step(_mm256_loadu_ps(xb + 16), lo, hi) << 16;
    word |= sign_step(_mm256_loadu_ps(xb + 24), lo, hi) << 24;
    std::memcpy(bits + b, &word, sizeof word);  // little-endian: byte b first
  }
  for (; 8 * b < n; ++b) {
    const std::size_t m = n - 8 * b < 8 ? n - 8 * b : 8;
    alignas(32) float in[8] = {};  // +0 adds nothing to a sum >= +0
    std::memcpy(in, x + 8 * b, m * sizeof(float));
    const unsigned byte = sign_step(_mm256_load_ps(in), lo, hi) & ((1u << m) - 1u);
    bits[b] = static_cast<std::uint8_t>(byte);
  }
  alignas(32) double acc[8];
  _mm256_store_pd(acc, lo);
  _mm256_store_pd(acc + 4, hi);
  double sum = 0.0;
  for (double a : acc) sum += a;
  return sum;
}

// max |x| of m elements as the bits of a non-negative float (quantize.cc's max_abs_bits), with
// four accumulators; NaN and inf come out >= 0x7f800000.
DLION_AVX2_KERNEL std::uint32_t max_abs_bits(const float* __restrict x, std::size_t m) {
  const __m256i abs = _mm256_set1_epi32(0x7fffffff);
  __m256i a0 = _mm256_setzero_si256(), a1 = a0, a2 = a0, a3 = a0;
  const auto* xi = reinterpret_cast<const __m256i*>(x);
  std::size_t i = 0;
  for (; i + 32 <= m; i += 32, xi += 4) {
    a0 = _mm256_max_epu32(a0, _mm256_and_si256(_mm256_loadu_si256(xi), abs));
    a1 = _mm256_max_epu32(a1, _mm256_and_si256(_mm256_loadu_si256(xi + 1), abs));
    a2 = _mm256_max_epu32(a2, _mm256_and_si256(_mm256_loadu_si256(xi + 2), abs));
    a3 = _mm256_max_epu32(a3, _mm256_and_si256(_mm256_loadu_si256(xi + 3), abs));
  }
  alignas(32) std::uint32_t lanes[8];
  _mm256_store_si256(reinterpret_cast<__m256i*>(lanes),
                     _mm256_max_epu32(_mm256_max_epu32(a0, a1), _mm256_max_epu32(a2, a3)));
  std::uint32_t top = 0;
  for (std::uint32_t l : lanes) top = l > top ? l : top;
  for (; i < m; ++i) {
    std::uint32_t u;
    std::memcpy(&u, x + i, sizeof u);
    u &= 0x7fffffffu;
    top = u > top ? u : top;
  }
  return top;
}

// The 8 outputs of the next xoshiro128+ step of all lanes (Xoshiro128x8::fill, in registers).
struct Lanes8 {
  __m256i s0, s1, s2, s3;

  DLION_AVX2_INLINE __m256i next() {
    const __m256i out = _mm256_add_epi32(s0, s3);
    const __m256i t = _mm256_slli_epi32(s1, 9);
    s2 = _mm256_xor_si256(s2, s0);
    s3 = _mm256_xor_si256(s3, s1);
    s1 = _mm256_xor_si256(s1, s2);
    s0 = _mm256_xor_si256(s0, s3);
    s2 = _mm256_xor_si256(s2, t);
    s3 = _mm256_or_si256(_mm256_slli_epi32(s3, 11), _mm256_srli_epi32(s3, 21));
    return out;
  }
};

// What level_of in quantize.cc needs of a bucket, broadcast.
struct LevelParams {
  __m256 inv, top, pre;
};

// The 8 int32 levels of 8 elements (level_of's arithmetic, step for step): v * 2^24 clamped at
// L * 2^24, truncated, plus the top 24 random bits, shifted down by 24.
template <bool kTiny>
DLION_AVX2_INLINE __m256i levels8(__m256 xv, __m256i r, const LevelParams& p) {
  const __m256 ax = _mm256_and_ps(xv, _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff)));
  __m256 v = _mm256_mul_ps(kTiny ? _mm256_mul_ps(ax, p.pre) : ax, p.inv);
  v = _mm256_min_ps(v, p.top);  // v < top ? v : top
  const __m256i fixed = _mm256_cvttps_epi32(v);
  const __m256i qa = _mm256_srli_epi32(_mm256_add_epi32(fixed, _mm256_srli_epi32(r, 8)), 24);
  // sign_epi32 negates where x's bits are negative (-0 too: its level is 0 anyway).
  return _mm256_sign_epi32(qa, _mm256_castps_si256(xv));
}

// q[i] for i < m: the stochastic levels of m elements of one bucket (quantize_run), taking one
// step of the generator per 8 elements (a partial last group takes a whole step).
template <bool kTiny>
DLION_AVX2_KERNEL void quantize_levels(const float* __restrict x, std::size_t m, float inv,
                                       float top, float pre, Xoshiro128x8& rng,
                                       std::int8_t* __restrict q) {
  alignas(32) std::uint32_t st[4][kRngLanes];
  rng.save(st);
  Lanes8 g{_mm256_load_si256(reinterpret_cast<const __m256i*>(st[0])),
           _mm256_load_si256(reinterpret_cast<const __m256i*>(st[1])),
           _mm256_load_si256(reinterpret_cast<const __m256i*>(st[2])),
           _mm256_load_si256(reinterpret_cast<const __m256i*>(st[3]))};
  const LevelParams p{_mm256_set1_ps(inv), _mm256_set1_ps(top), _mm256_set1_ps(pre)};
  const __m256i order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
  std::size_t i = 0;
  for (; i + 32 <= m; i += 32) {
    const __m256i q0 = levels8<kTiny>(_mm256_loadu_ps(x + i), g.next(), p);
    const __m256i q1 = levels8<kTiny>(_mm256_loadu_ps(x + i + 8), g.next(), p);
    const __m256i q2 = levels8<kTiny>(_mm256_loadu_ps(x + i + 16), g.next(), p);
    const __m256i q3 = levels8<kTiny>(_mm256_loadu_ps(x + i + 24), g.next(), p);
    // |level| <= 127: the saturating packs are exact; they interleave 128-bit halves, which
    // the dword permutation puts back in element order.
    const __m256i b = _mm256_packs_epi16(_mm256_packs_epi32(q0, q1), _mm256_packs_epi32(q2, q3));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(q + i), _mm256_permutevar8x32_epi32(b, order));
  }
  for (; i < m; i += 8) {
    const std::size_t len = m - i < 8 ? m - i : 8;
    alignas(32) float in[8] = {};
    std::memcpy(in, x + i, len * sizeof(float));
    const __m256i q0 = levels8<kTiny>(_mm256_load_ps(in), g.next(), p);
    __m128i w = _mm_packs_epi32(_mm256_castsi256_si128(q0), _mm256_extracti128_si256(q0, 1));
    w = _mm_packs_epi16(w, w);
    alignas(16) std::int8_t lv[16];
    _mm_store_si128(reinterpret_cast<__m128i*>(lv), w);
    std::memcpy(q + i, lv, len);
  }
  _mm256_store_si256(reinterpret_cast<__m256i*>(st[0]), g.s0);
  _mm256_store_si256(reinterpret_cast<__m256i*>(st[1]), g.s1);
  _mm256_store_si256(reinterpret_cast<__m256i*>(st[2]), g.s2);
  _mm256_store_si256(reinterpret_cast<__m256i*>(st[3]), g.s3);
  rng.load(st);
}

}  // namespace dlion::detail::avx2

#undef DLION_AVX2_INLINE
#undef DLION_AVX2_KERNEL

#else  // no AVX2 variant: declared only, so that `if constexpr (kSimdAvx2)` bodies parse

namespace dlion::detail::avx2 {
void to_fp16(const float* x, std::size_t n, std::uint16_t* out);
double sign_encode(const float* x, std::size_t n, std::uint8_t* bits);
std::uint32_t max_abs_bits(const float* x, std::size_t m);
template <bool kTiny>
void quantize_levels(const float* x, std::size_t m, float inv, float top, float pre,
                     Xoshiro128x8& rng, std::int8_t* q);
}  // namespace dlion::detail::avx2

#endif
