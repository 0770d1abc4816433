// apply_add: adds a validated message, decoded and weighted, into a dense float32 tensor.
// Quantized payloads are decoded with the compress/ kernels into a bounded scratch buffer, one
// chunk of elements at a time (chunks start on a bucket and a byte boundary).
#include <algorithm>
#include <cstring>
#include <vector>

#include "common/error.h"
#include "compress/cast.h"
#include "compress/quantize.h"
#include "compress/reduce.h"
#include "wire/codec.h"

namespace dlion::wire {
namespace {

constexpr std::size_t kChunk = 16384;  // elements decoded per step (64 KiB of scratch)

// Calls decode(start, count, scratch) for consecutive chunks of [0, n) whose starts are
// multiples of `align`, then adds w * scratch into out + start.
template <typename Decode>
void chunked_add(std::size_t n, std::size_t align, float w, float* out, Decode decode) {
  const std::size_t chunk = std::max<std::size_t>(1, kChunk / align) * align;
  std::vector<float> scratch(std::min(n, chunk));
  for (std::size_t start = 0; start < n; start += chunk) {
    const std::size_t count = std::min(chunk, n - start);
    decode(start, count, scratch.data());
    add_scaled(out + start, scratch.data(), count, w);
  }
}

void add_sparse(const std::uint32_t* idx, const float* val, std::size_t k, float w, float* out) {
  for (std::size_t i = 0; i < k; ++i) out[idx[i]] += w * val[i];
}

void add_qsgd(const Decoded& m, float w, float* out) {
  const std::size_t bucket = m.bucket();
  const int bits = m.bits();
  // A chunk start must be a multiple of the bucket and of 8 elements (a whole packed byte).
  const std::size_t align = bucket % 8 == 0 ? bucket : bucket * 8;
  const std::uint8_t* packed = m.packed().data;
  const float* scales = m.scales().data;
  chunked_add(m.n(), std::min(align, std::max<std::size_t>(m.n(), 1)), w, out,
              [&](std::size_t start, std::size_t count, float* dst) {
                qsgd_decode(packed + start * static_cast<std::size_t>(bits) / 8,
                            scales + start / bucket, count, bits, bucket, dst);
              });
}

void add_sparse_qsgd8(const Decoded& m, float w, float* out) {
  if (m.contiguous()) {
    // One run of k entries: decode it in place of out[first, first + k), chunk by chunk (a
    // chunk starts on a bucket; 8-bit levels are whole bytes).
    const std::uint8_t* levels = m.packed().data;
    const float* scales = m.scales().data;
    const std::size_t bucket = m.bucket();
    chunked_add(m.k(), std::min(bucket, m.k()), w, out + m.first(),
                [&](std::size_t start, std::size_t count, float* dst) {
                  qsgd_decode(levels + start, scales + start / bucket, count, 8, bucket, dst);
                });
    return;
  }
  std::vector<float> values(m.k());
  qsgd_decode(m.packed().data, m.scales().data, m.k(), 8, m.bucket(), values.data());
  add_sparse(m.idx().data, values.data(), m.k(), w, out);
}

}  // namespace

void apply_add(const Decoded& m, float* out, std::size_t n, float weight) {
  DLION_CHECK(n == m.n(), InvalidArgument, "wire apply_add: out has ", n,
              " elements but the message carries a tensor of ", m.n());
  const float w = weight;
  switch (m.encoding()) {
    case Encoding::kDenseF32:
      add_scaled(out, m.values().data, n, w);
      break;
    case Encoding::kSparseF32:
      if (m.contiguous())
        add_scaled(out + m.first(), m.values().data, m.k(), w);
      else
        add_sparse(m.idx().data, m.values().data, m.k(), w, out);
      break;
    case Encoding::kSparseQsgd8:
      add_sparse_qsgd8(m, w, out);
      break;
    case Encoding::kQsgd:
      add_qsgd(m, w, out);
      break;
    case Encoding::kSign: {
      const std::uint8_t* signs = m.packed().data;
      const float scale = m.scales().data[0];
      chunked_add(n, 8, w, out, [&](std::size_t start, std::size_t count, float* dst) {
        sign_decode(signs + start / 8, scale, count, dst);
      });
      break;
    }
    case Encoding::kFp16:
    case Encoding::kBf16: {
      const std::uint16_t* h = m.halves().data;
      const bool fp16 = m.encoding() == Encoding::kFp16;
      chunked_add(n, 1, w, out, [&](std::size_t start, std::size_t count, float* dst) {
        if (fp16)
          from_fp16(h + start, count, dst);
        else
          from_bf16(h + start, count, dst);
      });
      break;
    }
  }
}

}  // namespace dlion::wire
