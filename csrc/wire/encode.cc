#include "wire/encode.h"

#include <algorithm>
#include <cstring>

#include "common/error.h"
#include "compress/cast.h"
#include "compress/quantize.h"
#include "compress/topk.h"

namespace dlion::wire {

Message encode(const float* x, std::size_t n, const Codec& codec, Fields f, std::uint64_t seed) {
  f.encoding = codec.encoding;
  f.bits = codec.bits != 0 ? codec.bits : required_bits(codec.encoding, 0);
  f.n = n;
  f.k = is_sparse(codec.encoding) ? std::min<std::uint64_t>(codec.k, n) : n;
  f.bucket = is_bucketed(codec.encoding) ? codec.bucket : 0;
  const Layout l = layout(f.encoding, f.n, f.k, f.bits, f.bucket);
  Message msg(kHeaderBytes + l.total);
  std::uint8_t* p = msg.data() + kHeaderBytes;
  const auto k = static_cast<std::size_t>(f.k);
  auto* idx = reinterpret_cast<std::uint32_t*>(p + (l.idx == kAbsent ? 0 : l.idx));
  auto* values = reinterpret_cast<float*>(p + (l.values == kAbsent ? 0 : l.values));
  auto* scales = reinterpret_cast<float*>(p + (l.scales == kAbsent ? 0 : l.scales));
  std::uint8_t* packed = p + (l.packed == kAbsent ? 0 : l.packed);
  switch (f.encoding) {
    case Encoding::kDenseF32:
      if (n > 0) std::memcpy(values, x, n * sizeof(float));
      break;
    case Encoding::kSparseF32:
      topk_fast(x, n, k, idx, values);
      break;
    case Encoding::kSparseQsgd8: {
      std::vector<float> picked(k);
      topk_fast(x, n, k, idx, picked.data());
      qsgd_encode(picked.data(), k, 8, f.bucket, seed, packed, scales);
      break;
    }
    case Encoding::kQsgd:
      qsgd_encode(x, n, f.bits, f.bucket, seed, packed, scales);
      break;
    case Encoding::kSign:
      sign_encode(x, n, packed, scales);
      break;
    case Encoding::kFp16:
      to_fp16(x, n, reinterpret_cast<std::uint16_t*>(p));
      break;
    case Encoding::kBf16:
      to_bf16(x, n, reinterpret_cast<std::uint16_t*>(p));
      break;
  }
  encode_header(f, msg.data(), msg.size());
  return msg;
}

Message encode_empty(Kind kind, std::uint32_t sender, std::uint32_t group, std::uint64_t step) {
  Fields f;
  f.kind = kind, f.sender = sender, f.group = group, f.step = step;
  f.encoding = Encoding::kDenseF32, f.bits = 32, f.n = 0, f.k = 0, f.weight = 0.0f;
  Message msg(kHeaderBytes);
  encode_header(f, msg.data(), msg.size());
  return msg;
}

}  // namespace dlion::wire
