// The random source of the stochastic codecs: xoshiro128+ (Blackman & Vigna) in 8 independent
// lanes, laid out so that the compiler vectorizes a step of all lanes. Seeded by splitmix64.
// Only the top 24 bits of an output are used (the low bits of xoshiro128+ are weak).
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>

#include "compress/simd.h"

namespace dlion::detail {

inline constexpr std::size_t kRngLanes = 8;

inline std::uint64_t splitmix64(std::uint64_t& state) {
  std::uint64_t z = (state += 0x9E3779B97F4A7C15ULL);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  return z ^ (z >> 31);
}

class Xoshiro128x8 {
 public:
  explicit Xoshiro128x8(std::uint64_t seed) {
    std::uint64_t sm = seed;
    for (std::size_t j = 0; j < kRngLanes; ++j) {
      const std::uint64_t a = splitmix64(sm);
      const std::uint64_t b = splitmix64(sm);
      s0_[j] = static_cast<std::uint32_t>(a);
      s1_[j] = static_cast<std::uint32_t>(a >> 32);
      s2_[j] = static_cast<std::uint32_t>(b);
      s3_[j] = static_cast<std::uint32_t>(b >> 32);
      if ((s0_[j] | s1_[j] | s2_[j] | s3_[j]) == 0) s0_[j] = 1;  // the one forbidden state
    }
  }

  // r[b * kRngLanes + j] = the next output of lane j, for b < blocks.
  DLION_ALWAYS_INLINE void fill(std::uint32_t* __restrict r, std::size_t blocks) {
    Lanes s0 = s0_, s1 = s1_, s2 = s2_, s3 = s3_;  // in registers for the whole loop
    for (std::size_t b = 0; b < blocks; ++b) {
      const Lanes out = s0 + s3;
      std::memcpy(r + b * kRngLanes, &out, sizeof out);
      const Lanes t = s1 << 9;
      s2 ^= s0;
      s3 ^= s1;
      s1 ^= s2;
      s0 ^= s3;
      s2 ^= t;
      s3 = (s3 << 11) | (s3 >> 21);
    }
    s0_ = s0;
    s1_ = s1;
    s2_ = s2;
    s3_ = s3;
  }

  // The state as words [s][lane], for kernels that step the lanes in their own registers
  // (compress/avx2.h) and put the state back afterwards; the stream is the same as fill's.
  void save(std::uint32_t (&w)[4][kRngLanes]) const {
    std::memcpy(w[0], &s0_, sizeof s0_);
    std::memcpy(w[1], &s1_, sizeof s1_);
    std::memcpy(w[2], &s2_, sizeof s2_);
    std::memcpy(w[3], &s3_, sizeof s3_);
  }
  void load(const std::uint32_t (&w)[4][kRngLanes]) {
    std::memcpy(&s0_, w[0], sizeof s0_);
    std::memcpy(&s1_, w[1], sizeof s1_);
    std::memcpy(&s2_, w[2], sizeof s2_);
    std::memcpy(&s3_, w[3], sizeof s3_);
  }

 private:
  // GCC/Clang vector extension: 8 x uint32, lowered to whatever SIMD the target has.
  typedef std::uint32_t Lanes __attribute__((vector_size(kRngLanes * sizeof(std::uint32_t))));
  Lanes s0_, s1_, s2_, s3_;
};

}  // namespace dlion::detail
