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

// dst[i] *= factor for i < n.
void scale_inplace(float* dst, std::size_t n, double factor);
void scale_inplace(double* dst, std::size_t n, double factor);

}  // namespace dlion
