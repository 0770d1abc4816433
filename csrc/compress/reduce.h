// Element-wise kernels used by reductions: pure functions on raw views.
#pragma once

#include <cstddef>

namespace dlion {

// dst[i] += src[i] for i < n. dst and src must not overlap.
void add_inplace(float* dst, const float* src, std::size_t n);
void add_inplace(double* dst, const double* src, std::size_t n);

// dst[i] += w * src[i] for i < n (one rounding per product and per sum, in index order: the
// same bits wherever it runs). dst and src must not overlap.
void add_scaled(float* dst, const float* src, std::size_t n, float w);

// out[i] = base[i] + w * x[i] for i < n, or, with base == nullptr, out[i] = 0.0f + w * x[i] (the
// first term of a sum that starts at +0: the same bits as add_scaled into zeros). out may be x
// (element-wise in place); base must not overlap out.
void scaled_sum(float* out, const float* base, const float* x, std::size_t n, float w);

// out[i] = (0.0f + wa * a[i]) + wx * x[i] for i < n: the first two terms of a sum that starts at
// +0, in one pass (the same bits as add_scaled of a into zeros, then scaled_sum with x). out may
// be a or x (element-wise in place); a and x may be the same.
void scaled_sum2(float* out, const float* a, float wa, const float* x, float wx, std::size_t n);

// dst[i] *= factor for i < n.
void scale_inplace(float* dst, std::size_t n, double factor);
void scale_inplace(double* dst, std::size_t n, double factor);

}  // namespace dlion
