#include "compress/simd.h"

#include <atomic>

namespace dlion::detail {
namespace {

bool cpu_avx2() {
#if DLION_HAVE_AVX2_DISPATCH
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx2") != 0;
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
