// Lossy float32 gradient codecs: QSGD-style stochastic quantization (8, 4, 2 bits) and
// sign with one scale. Single-threaded kernels on raw views; they allocate nothing.
//
// QSGD. x is split into buckets of `bucket` consecutive elements (the last may be shorter).
// Each bucket has scale = max |x| over the bucket (float32; 0 for an all-zero bucket). With
// L = 2^(bits-1) - 1 (8 bits: 127, 4 bits: 7, 2 bits: 1), element x maps to a signed level
// q in [-L, L]: v = |x| / scale * L is rounded down to floor(v) or up to floor(v) + 1, up with
// probability v - floor(v), and q takes the sign of x. decode gives q * scale / L, so that
// E[decode(encode(x))] = x (unbiased up to float32 rounding of v and a 2^-24 granularity of
// the rounding probability) and |decode(encode(x)) - x| <= scale / L. Values on a level are
// kept exactly: 0 and +-scale always, every level when its float32 arithmetic is exact.
// Precisely: with f = |x| * (L * 2^24 / scale) in float32 (the factor rounded up by one ulp
// where scale times it rounds below L * 2^24), clamped at L * 2^24, and V = floor(f),
// |q| = (V + r) >> 24 for a random 24-bit r: up with probability (V mod 2^24) / 2^24.
//
// QSGD bit layout of `packed` (qsgd_packed_bytes(n, bits) = ceil(n * bits / 8) bytes): every
// level is a `bits`-wide two's-complement field, fields are tightly packed in element order
// across bucket boundaries, little-endian within a byte: element i lives in byte i * bits / 8,
// bits [(i * bits) % 8, (i * bits) % 8 + bits). So 8 bits: byte i is int8 q_i; 4 bits: element
// 2j is the low nibble (bits 0-3) of byte j and element 2j+1 the high nibble (bits 4-7);
// 2 bits: element 4j+k is bits [2k, 2k+2) of byte j. Unused high bits of the last byte are 0.
// `scales` holds qsgd_buckets(n, bucket) = ceil(n / bucket) floats, one per bucket.
//
// Randomness: a xoshiro128+ generator (8 interleaved lanes, seeded with splitmix64 from
// `seed`), started afresh on every call: the output is a pure function of (x, bits, bucket,
// seed). Use a different seed per step and rank.
//
// Sign. bit i % 8 of byte i / 8 is 1 when x_i >= 0 (an IEEE comparison, so +0 and -0 both give
// 1 and decode to +scale) and 0 when x_i < 0; unused high bits of the last byte are 0.
// scale = mean |x| (accumulated in double; 0 for n = 0), so decode gives +-scale, which keeps
// the L1 norm of x. sign_packed_bytes(n) = ceil(n / 8).
//
// Non-finite input: the encoders throw InvalidArgument naming the index of the first NaN or
// infinity; the outputs are then unspecified. bits not in {2, 4, 8} or bucket == 0 throw
// InvalidArgument. Buffers must not overlap.
#pragma once

#include <cstddef>
#include <cstdint>

namespace dlion {

inline constexpr std::size_t kDefaultQsgdBucket = 512;

// Bytes of the packed levels of n elements: ceil(n * bits / 8). Throws for bits not in {2,4,8}.
std::size_t qsgd_packed_bytes(std::size_t n, int bits);
// Number of buckets (= scales) for n elements: ceil(n / bucket). Throws for bucket == 0.
std::size_t qsgd_buckets(std::size_t n, std::size_t bucket);

// Writes qsgd_packed_bytes(n, bits) bytes to packed and qsgd_buckets(n, bucket) floats to
// scales.
void qsgd_encode(const float* x, std::size_t n, int bits, std::size_t bucket, std::uint64_t seed,
                 std::uint8_t* packed, float* scales);
// Writes n floats to out.
void qsgd_decode(const std::uint8_t* packed, const float* scales, std::size_t n, int bits,
                 std::size_t bucket, float* out);

// Bytes of the sign bits of n elements: ceil(n / 8).
std::size_t sign_packed_bytes(std::size_t n);
// Writes sign_packed_bytes(n) bytes to bits and mean |x| to *scale.
void sign_encode(const float* x, std::size_t n, std::uint8_t* bits, float* scale);
// Writes n floats (+-scale) to out.
void sign_decode(const std::uint8_t* bits, float scale, std::size_t n, float* out);

}  // namespace dlion
