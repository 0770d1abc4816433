// BlockSize: how many payload bytes the fused block of a small allreduce carries
// (small_allreduce.h). Every rank must post blocks of the same size whatever it submitted (so
// that a mismatched count can never make MPI itself fail), so the size is state that all ranks
// keep alike: it changes only through learn(), which every rank calls with the same
// negotiated descriptions, in the same order. The contract:
//   1. an allreduce of float32/float64 whose payload is at most cap() bytes (and never more
//      than max_bytes: kMaxBytes, or less where the engine's ring_threshold_bytes is less, so
//      that what the ring or the hierarchy carries stays theirs) takes the fused block (fits());
//   2. learn() grows cap() at once to the largest small payload (<= kMaxBytes) any rank
//      submitted, rounded up to kGrain, so the next operation of that size fits;
//   3. every kWindow operations cap() shrinks to the largest small payload of that window
//      (at least kMinBytes), so one odd operation does not make later ones send more.
// A pure function of the negotiated sequence (tested in engine_test).
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>

#include "engine/negotiate.h"
#include "engine/op.h"

namespace dlion {

class BlockSize {
 public:
  static constexpr std::size_t kMaxBytes = 64 * 1024;  // larger: negotiation, then the data
  static constexpr std::size_t kMinBytes = 1024;
  static constexpr std::size_t kGrain = 256;
  static constexpr int kWindow = 64;

  explicit BlockSize(std::size_t max_bytes) : max_(std::min(max_bytes, kMaxBytes)) {}

  std::size_t cap() const { return cap_; }

  // Payload bytes of `m` when it is an allreduce that a block could carry, else 0.
  std::size_t payload(const OpMeta& m) const {
    if (static_cast<OpKind>(m.kind) != OpKind::Allreduce) return 0;
    const auto t = static_cast<DType>(m.dtype);
    if (t != DType::Float32 && t != DType::Float64) return 0;
    if (m.count == 0 || m.count > max_ / dtype_size(t)) return 0;
    return static_cast<std::size_t>(m.count) * dtype_size(t);
  }

  bool fits(const OpMeta& m) const {
    const std::size_t b = payload(m);
    return b > 0 && b <= cap_;
  }

  // Every rank's description of one operation (the same on every rank).
  template <class Metas>
  void learn(const Metas& metas) {
    std::size_t need = 0;
    for (const OpMeta& m : metas) need = std::max(need, payload(m));
    need = round_up(need);
    window_max_ = std::max(window_max_, need);
    if (need > cap_) cap_ = need;
    if (++window_ops_ == kWindow) {
      cap_ = window_max_;
      window_max_ = kMinBytes;
      window_ops_ = 0;
    }
  }

 private:
  static std::size_t round_up(std::size_t n) {
    return std::max(kMinBytes, (n + kGrain - 1) / kGrain * kGrain);
  }

  std::size_t max_;
  std::size_t cap_ = kMinBytes;
  std::size_t window_max_ = kMinBytes;
  int window_ops_ = 0;
};

}  // namespace dlion
