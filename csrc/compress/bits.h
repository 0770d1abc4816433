// Bit casts between float and its IEEE-754 pattern (memcpy: no aliasing UB; compiles to a move).
#pragma once

#include <cstdint>
#include <cstring>

#include "compress/simd.h"

namespace dlion {

DLION_ALWAYS_INLINE std::uint32_t bits_of(float f) {
  std::uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  return u;
}

DLION_ALWAYS_INLINE float float_of(std::uint32_t u) {
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}

}  // namespace dlion
