// Encoding a dense float32 tensor into one wire message with a link's codec: the sender's half
// of codec.h (which lays out and validates). Used by the peer engine for every per-link message.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "wire/codec.h"
#include "wire/message.h"

namespace dlion::wire {

// Which entries a sparse encoding carries.
enum class Select : std::uint8_t {
  kTopK = 0,       // the k entries of largest magnitude (compress/topk.h, exact result)
  kThreshold = 1,  // every i with |x[i]| > threshold * |reference[i]| (Gaia's significance)
  kRange = 2,      // x[offset, offset + k) (clipped to n): one partition (Ako)
};

// What one link carries per message. kQsgd and kSparseQsgd8 quantize with `bucket` values per
// scale; kQsgd uses `bits` (2, 4 or 8). Other fields are ignored by encodings that lack them.
struct Codec {
  Encoding encoding = Encoding::kDenseF32;
  std::uint64_t k = 0;
  int bits = 0;  // 0: the encoding's own (kQsgd needs 2, 4 or 8)
  std::uint32_t bucket = 512;
  Select select = Select::kTopK;  // sparse encodings only
  float threshold = 0.0f;         // kThreshold
  std::uint64_t offset = 0;       // kRange
};

// The message carrying x[0, n) under `codec`, with header fields from `fields` (its encoding,
// bits, n, k and bucket are overwritten from codec and n; k is clipped to n, and for
// Select::kThreshold is the number of entries selected). `seed` drives the stochastic rounding
// of the quantized encodings. `reference` (n elements) is read by Select::kThreshold only.
// Throws InvalidArgument for a bad codec (bits, bucket, a threshold without reference) and for
// NaN/Inf in x under top-k selection (the kernel's check).
// `storage` is reused for the result when it is large enough.
Message encode(const float* x, std::size_t n, const Codec& codec, Fields fields,
               std::uint64_t seed, const float* reference = nullptr, Message storage = {});

// Error feedback's step for one link: residual[i] += x[i], then the message carrying the
// updated residual (as encode() of it), and residual -= what the message carries (its decoded
// values), so the residual keeps exactly what the link did not carry. Top-k selections
// (SPARSE_F32, SPARSE_QSGD8) compensate and select in one pass (topk_compensate) and then touch
// only the k carried entries; other codecs compensate, encode, and subtract the decoded message
// (which is validated first). residual and x hold n elements and must not overlap. Errors as
// encode(); on one, the residual may already be compensated.
Message encode_compensated(float* residual, const float* x, std::size_t n, const Codec& codec,
                           Fields fields, std::uint64_t seed, const float* reference = nullptr,
                           Message storage = {});

// An upper bound of the bytes encode(x, n, codec, ...) returns (exact for dense encodings and
// top-k; threshold selection is bounded by k = n), so storage can be taken from a pool before
// encoding. A codec that encode() would refuse gives kHeaderBytes.
std::size_t encoded_bound(std::size_t n, const Codec& codec);

// A header-only message (n = 0, dense) of `kind`, e.g. an acknowledgement or a latency probe.
Message encode_empty(Kind kind, std::uint32_t sender, std::uint32_t group, std::uint64_t step);

}  // namespace dlion::wire
