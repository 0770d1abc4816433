#include "compress/simd.h"

#include <atomic>

#if DLION_HAVE_AVX2_DISPATCH
#include <cpuid.h>
#endif

namespace dlion::detail {
namespace {

// AVX2 (whose check includes the OS saving the ymm registers) and F16C (CPUID leaf 1, ECX;
// every AVX2 CPU has it, but a hypervisor may hide it; clang's __builtin_cpu_supports does not
// know the name).
bool cpu_avx2() {
#if DLION_HAVE_AVX2_DISPATCH
  __builtin_cpu_init();
  unsigned a = 0, b = 0, c = 0, d = 0;
  const bool f16c = __get_cpuid(1, &a, &b, &c, &d) != 0 && (c & bit_F16C) != 0;
  return __builtin_cpu_supports("avx2") != 0 && f16c;
#else
  return false;
#endif
}

std::atomic<bool> g_force_baseline{false};

}  // namespace

bool simd_avx2() {
  static const bool avx2 = cpu_avx2();
  return avx2 && !g_force_baseline.load(std::memory_order_relaxed);
}

void simd_force_baseline(bool force) { g_force_baseline.store(force); }

}  // namespace dlion::detail
