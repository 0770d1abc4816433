// Error feedback (GRACE-style) for lossy gradient exchange: what a codec drops in one step is
// carried in a per-tensor residual and sent in later steps, so nothing is lost over time:
//
//   ef_compensate(residual, grad, n);         // residual += grad: what should be sent now
//   send(decode(encode(residual)))            // the codec sees the compensated gradient
//   ef_after_dense(residual, sent, n);        // residual -= what was actually sent
//   // or, for a sparse codec that sent residual[idx] exactly:
//   ef_after_sparse(residual, idx, k, n);     // residual[idx] = 0
//
// Over any sequence of steps, sum(everything sent) + residual == sum(all gradients), up to
// float32 rounding of the additions.
#pragma once

#include <cstddef>
#include <cstdint>

namespace dlion {

// residual[i] += grad[i] for i < n.
void ef_compensate(float* residual, const float* grad, std::size_t n);
// residual[i] -= sent_decoded[i] for i < n (sent_decoded = decode(encode(compensated))).
void ef_after_dense(float* residual, const float* sent_decoded, std::size_t n);
// residual[idx[j]] = 0 for j < k. Every idx[j] must be < n (checked before anything is
// written; InvalidArgument names the first bad position); repeats are allowed.
void ef_after_sparse(float* residual, const std::uint32_t* idx, std::size_t k, std::size_t n);

}  // namespace dlion
