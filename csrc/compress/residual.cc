#include "compress/residual.h"

#include "common/error.h"

namespace dlion {

void ef_compensate(float* residual, const float* grad, std::size_t n) {
  for (std::size_t i = 0; i < n; ++i) residual[i] += grad[i];
}

void ef_after_dense(float* residual, const float* sent_decoded, std::size_t n) {
  for (std::size_t i = 0; i < n; ++i) residual[i] -= sent_decoded[i];
}

void ef_after_sparse(float* residual, const std::uint32_t* idx, std::size_t k, std::size_t n) {
  std::uint32_t top = 0;
  for (std::size_t j = 0; j < k; ++j) top = idx[j] > top ? idx[j] : top;
  if (k > 0 && top >= n) {
    std::size_t j = 0;
    while (idx[j] < n) ++j;
    throw InvalidArgument(detail::concat("ef_after_sparse: idx[", j, "] = ", idx[j],
                                         " is out of range for a residual of ", n, " elements"));
  }
  for (std::size_t j = 0; j < k; ++j) residual[idx[j]] = 0.0f;
}

}  // namespace dlion
