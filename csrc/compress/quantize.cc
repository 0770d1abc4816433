#include "compress/quantize.h"

#include <cmath>
#include <cstring>

#include "common/error.h"
#include "compress/avx2.h"
#include "compress/bits.h"
#include "compress/simd.h"
#include "compress/xoshiro.h"

namespace dlion {
namespace {

using detail::kRngLanes;
using detail::Xoshiro128x8;

// Levels are produced and consumed in chunks of this many elements (a multiple of the lanes).
constexpr std::size_t kChunk = 512;
constexpr std::uint32_t kAbsMask = 0x7fffffffu;
constexpr std::uint32_t kExpMask = 0x7f800000u;
// Buckets whose scale is below kTinyScale are quantized as x * kPre against scale * kPre, so
// that L / scale cannot overflow (both factors are powers of two: exact).
constexpr float kTinyScale = 0x1p-96f;
constexpr float kPre = 0x1p64f;

int levels_of(int bits) {
  DLION_CHECK(bits == 2 || bits == 4 || bits == 8, InvalidArgument, "qsgd: bits must be 2, 4 or 8, not ",
              bits);
  return (1 << (bits - 1)) - 1;
}

[[noreturn]] void throw_nonfinite(const char* fn, const float* x, std::size_t n,
                                  std::size_t offset) {
  std::size_t i = 0;
  while (i < n && (bits_of(x[i]) & kExpMask) != kExpMask) ++i;
  const char* what = i < n && std::isnan(x[i]) ? "NaN" : "infinite";
  throw InvalidArgument(detail::concat(fn, ": x[", offset + i, "] is ", what,
                                       "; the input must be finite (check the gradients for "
                                       "overflow or a division by zero)"));
}

// max |x| of a bucket as the bits of a non-negative float: for those, integer order is float
// order, and NaN/inf come out >= kExpMask.
DLION_ALWAYS_INLINE std::uint32_t max_abs_bits(const float* __restrict x, std::size_t m) {
  std::uint32_t top = 0;
  for (std::size_t i = 0; i < m; ++i) {
    const std::uint32_t a = bits_of(x[i]) & kAbsMask;
    top = a > top ? a : top;
  }
  return top;
}

// The rounding works on v in fixed point: V = floor(v * 2^24) as an int32 (v <= L <= 127, so
// V <= 127 * 2^24 < 2^31), and the level is (V + r24) >> 24 with r24 the top 24 bits of a
// random word: it rounds up exactly when r24 >= 2^24 - (V mod 2^24), i.e. with probability
// (V mod 2^24) / 2^24. One add and one shift, where a float threshold compare takes five ops.
constexpr float kFix = 0x1p24f;

struct Levels {
  float inv;    // L * 2^24 / scale (or / (scale * kPre) for tiny scales), rounded up if needed
  float top;    // L * 2^24 as a float
};

// The factor from |x| to v * 2^24: the float quotient top / s, moved up one ulp when s times it
// rounds below top, so that |x| == scale always gives v = L (after the clamp at top): +-scale
// lands exactly on +-L without a per-element compare.
Levels levels_for(float scale, int L) {
  const float top = static_cast<float>(L) * kFix;
  const float s = scale < kTinyScale ? scale * kPre : scale;
  float inv = top / s;
  if (s * inv < top) inv = std::nextafter(inv, 2.0f * inv);
  return Levels{inv, top};
}

// The level of one element, from its bits and 32 random bits (top 24 used).
template <bool kTiny>
DLION_ALWAYS_INLINE std::int8_t level_of(std::uint32_t xb, std::uint32_t r, const Levels& lv) {
  const float ax = float_of(xb & kAbsMask);
  float v = (kTiny ? ax * kPre : ax) * lv.inv;
  v = v < lv.top ? v : lv.top;
  const auto fixed = static_cast<std::int32_t>(v);  // v >= 0: truncation is floor
  const std::int32_t qa = (fixed + static_cast<std::int32_t>(r >> 8)) >> 24;
  const std::int32_t neg = static_cast<std::int32_t>(xb) >> 31;  // 0 or -1
  return static_cast<std::int8_t>((qa ^ neg) - neg);
}

// q[i] = the stochastic level of x[i] for i < m, rounding with r[i].
template <bool kTiny>
DLION_ALWAYS_INLINE void quantize_span(const float* __restrict x, std::size_t m,
                                       const std::uint32_t* __restrict r, const Levels lv,
                                       std::int8_t* __restrict q) {
  for (std::size_t i = 0; i < m; ++i) q[i] = level_of<kTiny>(bits_of(x[i]), r[i], lv);
}

// q[i] for i < m: the levels of m elements of one bucket, kChunk at a time.
template <bool kTiny>
DLION_ALWAYS_INLINE void quantize_run(const float* x, std::size_t m, const Levels& lv,
                                      Xoshiro128x8& rng, std::int8_t* q) {
  alignas(64) std::uint32_t r[kChunk];
  for (std::size_t c = 0; c < m; c += kChunk) {
    const std::size_t len = kChunk < m - c ? kChunk : m - c;
    rng.fill(r, (len + kRngLanes - 1) / kRngLanes);
    quantize_span<kTiny>(x + c, len, r, lv, q + c);
  }
}

// The AVX2 variant (kAvx2) computes the same levels from the same random stream with intrinsics.
template <bool kAvx2>
DLION_ALWAYS_INLINE void quantize_levels(const float* x, std::size_t m, float scale, int L,
                                         Xoshiro128x8& rng, std::int8_t* q) {
  if (scale == 0.0f) {
    std::memset(q, 0, m);
    return;
  }
  const bool tiny = scale < kTinyScale;
  const Levels lv = levels_for(scale, L);
  if constexpr (kAvx2) {
    if (tiny)
      detail::avx2::quantize_levels<true>(x, m, lv.inv, lv.top, kPre, rng, q);
    else
      detail::avx2::quantize_levels<false>(x, m, lv.inv, lv.top, kPre, rng, q);
  } else if (tiny) {
    quantize_run<true>(x, m, lv, rng, q);
  } else {
    quantize_run<false>(x, m, lv, rng, q);
  }
}

// Element e of a bits-wide packing: byte e / per, shift (e % per) * bits.
DLION_ALWAYS_INLINE void put_field(std::uint8_t* p, std::size_t e, std::int8_t q, int bits) {
  const std::size_t per = 8 / static_cast<std::size_t>(bits);
  const unsigned shift = static_cast<unsigned>((e % per) * static_cast<std::size_t>(bits));
  const unsigned field = (static_cast<unsigned>(q) & ((1u << bits) - 1u)) << shift;
  if (shift == 0)
    p[e / per] = static_cast<std::uint8_t>(field);  // the first field starts a fresh byte
  else
    p[e / per] = static_cast<std::uint8_t>(p[e / per] | field);
}

DLION_ALWAYS_INLINE std::int8_t get_field(const std::uint8_t* p, std::size_t e, int bits) {
  const std::size_t per = 8 / static_cast<std::size_t>(bits);
  const unsigned shift = static_cast<unsigned>((e % per) * static_cast<std::size_t>(bits));
  const unsigned up = static_cast<unsigned>(8 - bits);
  const unsigned field = (static_cast<unsigned>(p[e / per]) >> shift) << up;
  return static_cast<std::int8_t>(static_cast<std::int8_t>(field & 0xffu) >> up);
}

// Packs levels q[0..count) as elements e0, e0+1, ... (bits 4 or 2); writes in element order.
DLION_ALWAYS_INLINE void pack_fields(const std::int8_t* __restrict q, std::size_t count, int bits,
                 std::uint8_t* __restrict p, std::size_t e0) {
  const std::size_t per = 8 / static_cast<std::size_t>(bits);
  std::size_t i = 0;
  for (; i < count && (e0 + i) % per != 0; ++i) put_field(p, e0 + i, q[i], bits);
  const std::size_t full = (count - i) / per;
  std::uint8_t* dst = p + (e0 + i) / per;
  const std::int8_t* src = q + i;
  if (bits == 4) {
    for (std::size_t k = 0; k < full; ++k)
      dst[k] = static_cast<std::uint8_t>((src[2 * k] & 0xf) | ((src[2 * k + 1] & 0xf) << 4));
  } else {
    for (std::size_t k = 0; k < full; ++k)
      dst[k] = static_cast<std::uint8_t>((src[4 * k] & 3) | ((src[4 * k + 1] & 3) << 2) |
                                         ((src[4 * k + 2] & 3) << 4) |
                                         ((src[4 * k + 3] & 3) << 6));
  }
  for (i += full * per; i < count; ++i) put_field(p, e0 + i, q[i], bits);
}

// Unpacks elements e0 .. e0+count of a bits-wide packing (4 or 2) into levels q.
DLION_ALWAYS_INLINE void unpack_fields(const std::uint8_t* __restrict p, std::size_t e0, std::size_t count, int bits,
                   std::int8_t* __restrict q) {
  const std::size_t per = 8 / static_cast<std::size_t>(bits);
  std::size_t i = 0;
  for (; i < count && (e0 + i) % per != 0; ++i) q[i] = get_field(p, e0 + i, bits);
  const std::size_t full = (count - i) / per;
  const std::uint8_t* src = p + (e0 + i) / per;
  std::int8_t* dst = q + i;
  if (bits == 4) {
    for (std::size_t k = 0; k < full; ++k) {
      const std::int8_t b = static_cast<std::int8_t>(src[k]);
      dst[2 * k] = static_cast<std::int8_t>(static_cast<std::int8_t>(src[k] << 4) >> 4);
      dst[2 * k + 1] = static_cast<std::int8_t>(b >> 4);
    }
  } else {
    for (std::size_t k = 0; k < full; ++k)
      for (unsigned j = 0; j < 4; ++j)
        dst[4 * k + j] = static_cast<std::int8_t>(
            static_cast<std::int8_t>((src[k] << (6 - 2 * j)) & 0xff) >> 6);
  }
  for (i += full * per; i < count; ++i) q[i] = get_field(p, e0 + i, bits);
}

// out[i] = q[i] * scale / L, with +-L giving exactly +-scale.
DLION_ALWAYS_INLINE void dequantize(const std::int8_t* __restrict q, std::size_t m, float scale, int L,
                float* __restrict out) {
  const float step = scale / static_cast<float>(L);
  for (std::size_t i = 0; i < m; ++i) {
    const std::int32_t qi = q[i];
    float v = static_cast<float>(qi) * step;
    v = qi == L ? scale : v;
    v = qi == -L ? -scale : v;
    out[i] = v;
  }
}

template <bool kAvx2>
DLION_ALWAYS_INLINE void encode_impl(const float* x, std::size_t n, int bits, int L,
                                     std::size_t bucket, std::uint64_t seed,
                                     std::uint8_t* packed, float* scales) {
  Xoshiro128x8 rng(seed);
  alignas(32) std::int8_t qbuf[kChunk];
  for (std::size_t b = 0; b * bucket < n; ++b) {
    const std::size_t e0 = b * bucket;
    const std::size_t m = bucket < n - e0 ? bucket : n - e0;
    const std::uint32_t top =
        kAvx2 ? detail::avx2::max_abs_bits(x + e0, m) : max_abs_bits(x + e0, m);
    if (top >= kExpMask) throw_nonfinite("qsgd_encode", x + e0, m, e0);
    const float scale = float_of(top);
    scales[b] = scale;
    if (bits == 8) {
      quantize_levels<kAvx2>(x + e0, m, scale, L, rng,
                              reinterpret_cast<std::int8_t*>(packed + e0));
      continue;
    }
    for (std::size_t c = 0; c < m; c += kChunk) {
      const std::size_t len = kChunk < m - c ? kChunk : m - c;
      quantize_levels<kAvx2>(x + e0 + c, len, scale, L, rng, qbuf);
      pack_fields(qbuf, len, bits, packed, e0 + c);
    }
  }
}

DLION_ALWAYS_INLINE void decode_impl(const std::uint8_t* packed, const float* scales,
                                     std::size_t n, int bits, int L, std::size_t bucket,
                                     float* out) {
  alignas(32) std::int8_t qbuf[kChunk];
  for (std::size_t b = 0; b * bucket < n; ++b) {
    const std::size_t e0 = b * bucket;
    const std::size_t m = bucket < n - e0 ? bucket : n - e0;
    if (bits == 8) {
      dequantize(reinterpret_cast<const std::int8_t*>(packed + e0), m, scales[b], L, out + e0);
      continue;
    }
    for (std::size_t c = 0; c < m; c += kChunk) {
      const std::size_t len = kChunk < m - c ? kChunk : m - c;
      unpack_fields(packed, e0 + c, len, bits, qbuf);
      dequantize(qbuf, len, scales[b], L, out + e0 + c);
    }
  }
}

template <bool kAvx2>
DLION_ALWAYS_INLINE double sign_encode_impl(const float* __restrict x, std::size_t n,
                                            std::uint8_t* __restrict bits) {
  if constexpr (kAvx2) return detail::avx2::sign_encode(x, n, bits);
  double acc[8] = {};
  const std::size_t full = n / 8;
  for (std::size_t b = 0; b < full; ++b) {
    const float* xb = x + 8 * b;
    unsigned byte = 0;
    for (unsigned j = 0; j < 8; ++j) {
      acc[j] += std::fabs(static_cast<double>(xb[j]));
      byte |= (xb[j] >= 0.0f ? 1u : 0u) << j;
    }
    bits[b] = static_cast<std::uint8_t>(byte);
  }
  if (n % 8 != 0) {
    unsigned byte = 0;
    for (unsigned j = 0; j < n % 8; ++j) {
      acc[j] += std::fabs(static_cast<double>(x[8 * full + j]));
      byte |= (x[8 * full + j] >= 0.0f ? 1u : 0u) << j;
    }
    bits[full] = static_cast<std::uint8_t>(byte);
  }
  double sum = 0.0;
  for (double a : acc) sum += a;
  return sum;
}

DLION_ALWAYS_INLINE void sign_decode_impl(const std::uint8_t* __restrict bits, float scale,
                                          std::size_t n, float* __restrict out) {
  const std::size_t full = n / 8;
  for (std::size_t b = 0; b < full; ++b) {
    const unsigned byte = bits[b];
    for (unsigned j = 0; j < 8; ++j) out[8 * b + j] = (byte >> j) & 1u ? scale : -scale;
  }
  for (std::size_t j = 0; j < n % 8; ++j)
    out[8 * full + j] = (bits[full] >> j) & 1u ? scale : -scale;
}

}  // namespace

std::size_t qsgd_packed_bytes(std::size_t n, int bits) {
  levels_of(bits);  // validates bits
  const auto b = static_cast<std::size_t>(bits);
  return n / 8 * b + ((n % 8) * b + 7) / 8;
}

std::size_t qsgd_buckets(std::size_t n, std::size_t bucket) {
  DLION_CHECK(bucket > 0, InvalidArgument, "qsgd: bucket must be at least 1 element");
  return n / bucket + (n % bucket != 0 ? 1 : 0);
}

void qsgd_encode(const float* x, std::size_t n, int bits, std::size_t bucket, std::uint64_t seed,
                 std::uint8_t* packed, float* scales) {
  const int L = levels_of(bits);
  qsgd_buckets(n, bucket);  // validates bucket
  DLION_SIMD_DISPATCH(encode_impl<kSimdAvx2>(x, n, bits, L, bucket, seed, packed, scales));
}

void qsgd_decode(const std::uint8_t* packed, const float* scales, std::size_t n, int bits,
                 std::size_t bucket, float* out) {
  const int L = levels_of(bits);
  qsgd_buckets(n, bucket);  // validates bucket
  DLION_SIMD_DISPATCH(decode_impl(packed, scales, n, bits, L, bucket, out));
}

std::size_t sign_packed_bytes(std::size_t n) { return n / 8 + (n % 8 != 0 ? 1 : 0); }

void sign_encode(const float* x, std::size_t n, std::uint8_t* bits, float* scale) {
  double sum = 0.0;
  DLION_SIMD_DISPATCH(sum = sign_encode_impl<kSimdAvx2>(x, n, bits));
  if (!std::isfinite(sum)) throw_nonfinite("sign_encode", x, n, 0);
  *scale = n == 0 ? 0.0f : static_cast<float>(sum / static_cast<double>(n));
}

void sign_decode(const std::uint8_t* bits, float scale, std::size_t n, float* out) {
  DLION_SIMD_DISPATCH(sign_decode_impl(bits, scale, n, out));
}

}  // namespace dlion
