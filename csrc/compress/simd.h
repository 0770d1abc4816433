// Runtime choice of the instruction set for the element-wise codec kernels. A kernel body is
// written once as portable, vectorizable C++ (always inlined), and DLION_SIMD_DISPATCH runs it
// either in a function compiled for AVX2 + F16C (x86-64 with GCC/Clang, when the CPU has both)
// or in the baseline build (SSE2 on x86-64). Both variants execute the same IEEE operations (no
// FMA contraction), so results are bit-identical on every machine. Where the compiler does not
// vectorize the portable body well, the body may branch on the constant kSimdAvx2 that the
// dispatch defines (true in the AVX2 variant) into an intrinsics twin (compress/avx2.h); the
// tests check that both variants give the same bytes.
//
// simd_force_baseline(true) forces the baseline variant; csrc reads no environment: dlion.init
// applies the `simd` option (DLION_SIMD) through the binding dlion_core.set_simd.
#pragma once

#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
#define DLION_HAVE_AVX2_DISPATCH 1
#define DLION_TARGET_AVX2 __attribute__((target("avx2,f16c")))
#else
#define DLION_HAVE_AVX2_DISPATCH 0
#define DLION_TARGET_AVX2
#endif

#if defined(__GNUC__)
#define DLION_ALWAYS_INLINE inline __attribute__((always_inline))
#else
#define DLION_ALWAYS_INLINE inline
#endif

namespace dlion::detail {

// Whether the kernels use their AVX2 (+ F16C) variant now.
bool simd_avx2();
// Force the baseline variant (true) or go back to the automatic choice (false); thread-safe,
// takes effect for kernels that start afterwards.
void simd_force_baseline(bool force);

}  // namespace dlion::detail

// Runs the statement(s) in a lambda compiled for AVX2 when simd_avx2(), else as is. Whatever
// they call must be DLION_ALWAYS_INLINE to be compiled for AVX2. The statements see
// `constexpr bool kSimdAvx2`, true in the AVX2 variant (to pick a template's intrinsics branch).
#if DLION_HAVE_AVX2_DISPATCH
#define DLION_SIMD_DISPATCH(...)                            \
  do {                                                      \
    if (::dlion::detail::simd_avx2()) {                     \
      [&]() DLION_TARGET_AVX2 {                             \
        [[maybe_unused]] constexpr bool kSimdAvx2 = true;   \
        __VA_ARGS__;                                        \
      }();                                                  \
    } else {                                                \
      [&]() {                                               \
        [[maybe_unused]] constexpr bool kSimdAvx2 = false;  \
        __VA_ARGS__;                                        \
      }();                                                  \
    }                                                       \
  } while (0)
#else
#define DLION_SIMD_DISPATCH(...)                         \
  do {                                                   \
    [[maybe_unused]] constexpr bool kSimdAvx2 = false;   \
    __VA_ARGS__;                                         \
  } while (0)
#endif
