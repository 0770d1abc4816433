#include "wire/encode.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "common/error.h"
#include "compress/cast.h"
#include "compress/quantize.h"
#include "compress/residual.h"
#include "compress/topk.h"

namespace dlion::wire {

namespace {

// Error feedback fused into a top-k encoding (encode_compensated): the residual that is
// compensated with grad while the entries are selected, then loses what the message carries.
struct Compensation {
  float* residual;
  const float* grad;
};

// The entries a sparse message carries, sorted: top-k or above a threshold (a range is one run
// of consecutive indices, written as such by encode_sparse). With comp (top-k only), x is
// comp->residual before its compensation, which the selection does on the way.
void select(const float* x, std::size_t n, std::size_t k, const Codec& codec,
            const float* reference, const Compensation* comp, std::uint32_t* idx,
            float* values) {
  if (codec.select == Select::kTopK) {
    if (comp != nullptr)
      topk_compensate(comp->residual, comp->grad, n, k, idx, values);
    else
      topk_fast(x, n, k, idx, values);
    return;
  }
  std::size_t j = 0;
  for (std::size_t i = 0; i < n && j < k; ++i) {
    if (std::fabs(x[i]) > codec.threshold * std::fabs(reference[i])) {
      idx[j] = static_cast<std::uint32_t>(i);
      values[j++] = x[i];
    }
  }
}

// Entries a sparse message of this codec carries for x[0, n).
std::size_t sparse_count(const float* x, std::size_t n, const Codec& codec,
                         const float* reference) {
  switch (codec.select) {
    case Select::kTopK:
      return static_cast<std::size_t>(std::min<std::uint64_t>(codec.k, n));
    case Select::kThreshold: {
      DLION_CHECK(reference != nullptr || n == 0, InvalidArgument,
                  "wire encode: threshold selection needs a reference tensor");
      DLION_CHECK(std::isfinite(codec.threshold) && codec.threshold >= 0.0f, InvalidArgument,
                  "wire encode: threshold must be finite and >= 0, got ", codec.threshold);
      std::size_t count = 0;
      for (std::size_t i = 0; i < n; ++i)
        count += std::fabs(x[i]) > codec.threshold * std::fabs(reference[i]);
      return count;
    }
    case Select::kRange:
      DLION_CHECK(codec.offset <= n, InvalidArgument, "wire encode: range offset ",
                  codec.offset, " beyond the ", n, " elements");
      return static_cast<std::size_t>(std::min<std::uint64_t>(codec.k, n - codec.offset));
  }
  return 0;
}

// Lays out the sparse message of f (its k already counted) in msg and fills its payload but the
// bucket word. Indices that form one run of consecutive ones (always for a range, when they
// happen to for top-k and threshold) go as CONTIGUOUS: the first one only (format.h, 5). The
// explicit layout's idx[0] lies where the CONTIGUOUS layout's `first` does, so compacting
// moves only the float32 values (the 8-bit levels are written after the choice).
// With comp, the carried entries are then taken out of the residual: set to +0 (float32 values:
// r - r) or reduced by their decoded 8-bit value (what the receiver adds), bit for bit what
// subtracting the decoded message gives.
void encode_sparse(const float* x, std::size_t n, const Codec& codec, const float* reference,
                   std::uint64_t seed, const Compensation* comp, Fields& f, Message& msg) {
  const auto k = static_cast<std::size_t>(f.k);
  const bool range = codec.select == Select::kRange;
  f.flags = range && k >= 1 ? kFlagContiguous : 0;
  Layout l = layout(f.encoding, f.n, f.k, f.bits, f.bucket, f.flags);
  msg.reset(kHeaderBytes + l.total);
  std::uint8_t* p = msg.data() + kHeaderBytes;
  const float* src = x + (range ? codec.offset : 0);  // the run's values (range)
  std::vector<float> picked;                           // the selected values (SPARSE_QSGD8)
  if (range) {
    const auto first = static_cast<std::uint32_t>(codec.offset);
    if (k >= 1) std::memcpy(p + l.first, &first, sizeof first);
    if (f.encoding == Encoding::kSparseF32 && k >= 1)
      std::memcpy(p + l.values, src, k * sizeof(float));
  } else {
    auto* idx = reinterpret_cast<std::uint32_t*>(p + l.idx);
    float* values = reinterpret_cast<float*>(p + l.values);
    if (f.encoding == Encoding::kSparseQsgd8) {
      picked.resize(k);
      values = picked.data();
    }
    select(x, n, k, codec, reference, comp, idx, values);
    if (comp != nullptr && f.encoding == Encoding::kSparseF32)
      for (std::size_t j = 0; j < k; ++j) comp->residual[idx[j]] = 0.0f;
    if (consecutive(idx, k)) {
      f.flags = kFlagContiguous;
      const Layout packed = layout(f.encoding, f.n, f.k, f.bits, f.bucket, f.flags);
      if (f.encoding == Encoding::kSparseF32)
        std::memmove(p + packed.values, p + l.values, k * sizeof(float));
      l = packed;
      msg.reset(kHeaderBytes + l.total);  // shrinks: the storage stays
    }
    src = picked.data();
  }
  if (f.encoding == Encoding::kSparseQsgd8) {
    auto* scales = reinterpret_cast<float*>(p + l.scales);
    qsgd_encode(src, k, 8, f.bucket, seed, p + l.packed, scales);
    if (comp != nullptr) {
      // picked is free now: it takes the decoded values. Explicit indices are intact (the
      // scales follow them); CONTIGUOUS ones are first + j.
      qsgd_decode(p + l.packed, scales, k, 8, f.bucket, picked.data());
      const auto* idx = reinterpret_cast<const std::uint32_t*>(p + l.idx);
      std::uint32_t first = 0;
      if (f.flags & kFlagContiguous) std::memcpy(&first, p + l.first, sizeof first);
      for (std::size_t j = 0; j < k; ++j) {
        const std::size_t i = (f.flags & kFlagContiguous) ? std::size_t{first} + j : idx[j];
        comp->residual[i] -= picked[j];
      }
    }
  }
}

// encode(), with comp for a fused top-k compensation (x == comp->residual).
Message encode_with(const float* x, std::size_t n, const Codec& codec, Fields f,
                    std::uint64_t seed, const float* reference, Message storage,
                    const Compensation* comp) {
  f.encoding = codec.encoding;
  f.bits = codec.bits != 0 ? codec.bits : required_bits(codec.encoding, 0);
  f.n = n;
  f.k = is_sparse(codec.encoding) ? sparse_count(x, n, codec, reference) : n;
  f.bucket = is_bucketed(codec.encoding) ? codec.bucket : 0;
  f.flags = 0;
  Message msg = std::move(storage);
  if (is_sparse(f.encoding)) {
    encode_sparse(x, n, codec, reference, seed, comp, f, msg);
    encode_header(f, msg.data(), msg.size());
    return msg;
  }
  const Layout l = layout(f.encoding, f.n, f.k, f.bits, f.bucket, f.flags);
  msg.reset(kHeaderBytes + l.total);
  std::uint8_t* p = msg.data() + kHeaderBytes;
  auto* scales = reinterpret_cast<float*>(p + (l.scales == kAbsent ? 0 : l.scales));
  std::uint8_t* packed = p + (l.packed == kAbsent ? 0 : l.packed);
  if (l.packed_bytes > 0) packed[l.packed_bytes - 1] = 0;  // reused storage: clean tail bits
  switch (f.encoding) {
    case Encoding::kDenseF32:
      encode_header_copy(f, msg.data(), msg.size(), x);  // copies x while checksumming
      return msg;
    case Encoding::kSparseF32:
    case Encoding::kSparseQsgd8:
      break;  // encode_sparse
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

}  // namespace

Message encode(const float* x, std::size_t n, const Codec& codec, Fields f, std::uint64_t seed,
               const float* reference, Message storage) {
  return encode_with(x, n, codec, f, seed, reference, std::move(storage), nullptr);
}

Message encode_compensated(float* residual, const float* grad, std::size_t n, const Codec& codec,
                           Fields f, std::uint64_t seed, const float* reference,
                           Message storage) {
  if (is_sparse(codec.encoding) && codec.select == Select::kTopK) {
    const Compensation comp{residual, grad};
    return encode_with(residual, n, codec, f, seed, reference, std::move(storage), &comp);
  }
  ef_compensate(residual, grad, n);
  Message msg = encode_with(residual, n, codec, f, seed, reference, std::move(storage), nullptr);
  const Decoded sent = validate(msg.data(), msg.size(), static_cast<int>(f.sender), f.group, n);
  apply_add(sent, residual, n, -1.0f);  // residual -= what the link carries
  return msg;
}

std::size_t encoded_bound(std::size_t n, const Codec& codec) {
  const Encoding e = codec.encoding;
  if (static_cast<int>(e) < 1 || static_cast<int>(e) > 7) return kHeaderBytes;
  const int bits = codec.bits != 0 ? codec.bits : required_bits(e, 0);
  const bool qsgd_bits = bits == 2 || bits == 4 || bits == 8;
  if ((e == Encoding::kQsgd ? !qsgd_bits : bits != required_bits(e, 0)) ||
      (is_bucketed(e) && codec.bucket == 0) ||
      n >= (std::uint64_t{1} << 32))
    return kHeaderBytes;
  std::uint64_t k = n;
  if (is_sparse(e) && codec.select != Select::kThreshold) k = std::min<std::uint64_t>(codec.k, n);
  return kHeaderBytes + layout(e, n, k, bits, codec.bucket, 0).total;
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
