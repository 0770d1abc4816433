// Sparsification kernels: top-k by magnitude, random-k, and the gather / scatter-add pair that
// compresses a dense float32 vector to (index, value) pairs and back. Pure functions on raw
// views; single-threaded; the caller owns every buffer.
//
// Top-k contract (topk_exact and topk_fast give the same result):
//   * picks the k entries of largest |x[i]|, with this tie rule: among equal magnitudes the
//     lower index wins (so +0.0 and -0.0 tie, and the earliest of a run of equal values goes
//     first);
//   * idx[0..k) is sorted ascending; val[i] = x[idx[i]], the signed original value;
//   * k > n, or n >= 2^32 (indices are 32-bit), throws InvalidArgument;
//   * k == 0 (hence n == 0) writes nothing and does not read x; k == n selects every index;
//   * NaN or +-Inf anywhere in x[0..n) throws InvalidArgument naming the first such index (the
//     check rides on a pass the kernel makes anyway, so it costs nothing extra).
#pragma once

#include <cstddef>
#include <cstdint>

namespace dlion {

// Exact top-k by radix select on the magnitude bit pattern: one histogram pass over x, one pass
// that emits the entries above the k-th largest magnitude's bucket and collects that bucket,
// then radix select among the collected candidates. Cost: two streaming reads of x.
void topk_exact(const float* x, std::size_t n, std::size_t k, std::uint32_t* idx, float* val);

// Top-k with the same contract and the same (exact) result, usually faster: estimates a
// threshold below the k-th largest magnitude from a fixed-seed sample of x, collects the
// entries at or above it in one streaming read, then selects exactly among them. Falls back to
// topk_exact when the estimate is off (fewer than k candidates, or too many to hold), and for
// small n or k > n/4, so the result never depends on the sample, only the speed does.
void topk_fast(const float* x, std::size_t n, std::size_t k, std::uint32_t* idx, float* val);

// Error feedback's compensate and select in one pass: residual[i] += grad[i] for i < n (as
// ef_compensate), then (idx, val) = the top-k of the updated residual, with topk_fast's contract
// and result. The sampled threshold is read from residual + grad before the pass, so the one
// streaming pass both writes the residual and collects the candidates (falling back to
// topk_exact on the updated residual when the estimate is off). On NaN/Inf the residual has
// been updated when InvalidArgument is thrown. residual and grad must not overlap.
void topk_compensate(float* residual, const float* grad, std::size_t n, std::size_t k,
                     std::uint32_t* idx, float* val);

// k distinct indices drawn uniformly from [0, n), written ascending to idx[0..k). The same
// (n, k, seed) gives the same indices on every platform (own splitmix64 generator, Floyd's
// sampling). k > n or n >= 2^32 throws InvalidArgument.
void randomk(std::size_t n, std::size_t k, std::uint64_t seed, std::uint32_t* idx);

// val[i] = x[idx[i]] for i < k. The caller guarantees every idx[i] is inside x.
void gather(const float* x, const std::uint32_t* idx, std::size_t k, float* val);

// out[idx[i]] += val[i] for i < k, in order (repeated indices accumulate). Every idx[i] is
// checked against n first: an index >= n throws InvalidArgument naming its position, and then
// out is left untouched.
void scatter_add(const std::uint32_t* idx, const float* val, std::size_t k, float* out,
                 std::size_t n);

}  // namespace dlion
