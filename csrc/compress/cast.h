// float32 <-> 16-bit floats on raw uint16 buffers. Portable bit arithmetic that the compiler
// vectorizes; results do not depend on the CPU or its rounding mode for the integer paths.
//
// fp16 (IEEE 754 binary16): round to nearest, ties to even; finite values at or above 65520 in
// magnitude become +-inf; results below 2^-14 are subnormal halves (rounded the same way);
// +-0, +-inf keep their sign; NaN becomes a quiet NaN with the sign and the top 9 payload bits
// kept (0x7e00 | sign | payload >> 13, as F16C's vcvtps2ph does). from_fp16 is exact.
// (The subnormal path adds a float32 constant, so it assumes the default floating-point
// environment: round to nearest, no flush-to-zero.)
//
// bf16 (the upper 16 bits of a float32): round to nearest, ties to even, on the dropped 16 bits;
// finite values may round up to +-inf; NaN stays NaN (quiet bit 0x0040 set, sign and top payload
// bits kept). from_bf16 is exact.
#pragma once

#include <cstddef>
#include <cstdint>

namespace dlion {

void to_fp16(const float* x, std::size_t n, std::uint16_t* out);
void from_fp16(const std::uint16_t* h, std::size_t n, float* out);
void to_bf16(const float* x, std::size_t n, std::uint16_t* out);
void from_bf16(const std::uint16_t* b, std::size_t n, float* out);

}  // namespace dlion
