#include "compress/reduce.h"

namespace dlion {
namespace {

template <typename T>
void add_impl(T* __restrict dst, const T* __restrict src, std::size_t n) {
  for (std::size_t i = 0; i < n; ++i) dst[i] += src[i];
}

template <typename T>
void scale_impl(T* __restrict dst, std::size_t n, T factor) {
  for (std::size_t i = 0; i < n; ++i) dst[i] *= factor;
}

}  // namespace

void add_inplace(float* dst, const float* src, std::size_t n) { add_impl(dst, src, n); }
void add_inplace(double* dst, const double* src, std::size_t n) { add_impl(dst, src, n); }
void add_scaled(float* __restrict dst, const float* __restrict src, std::size_t n, float w) {
  for (std::size_t i = 0; i < n; ++i) dst[i] += w * src[i];
}
void scaled_sum(float* out, const float* base, const float* x, std::size_t n, float w) {
  // out may alias x, so no restrict: each element is read before it is written.
  if (base == nullptr) {
    for (std::size_t i = 0; i < n; ++i) out[i] = 0.0f + w * x[i];
  } else {
    for (std::size_t i = 0; i < n; ++i) out[i] = base[i] + w * x[i];
  }
}
void scaled_sum2(float* out, const float* a, float wa, const float* x, float wx, std::size_t n) {
  for (std::size_t i = 0; i < n; ++i) out[i] = (0.0f + wa * a[i]) + wx * x[i];
}
void scale_inplace(float* dst, std::size_t n, double factor) {
  scale_impl(dst, n, static_cast<float>(factor));
}
void scale_inplace(double* dst, std::size_t n, double factor) { scale_impl(dst, n, factor); }

}  // namespace dlion
