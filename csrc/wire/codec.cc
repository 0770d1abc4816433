#include "wire/codec.h"

#include <cmath>
#include <cstring>
#include <iomanip>
#include <sstream>
#include <string>

#include "common/error.h"
#include "compress/bits.h"
#include "compress/quantize.h"
#include "wire/checksum.h"

namespace dlion::wire {
namespace {

constexpr std::uint64_t kMaxN = std::uint64_t{1} << 32;  // indices are 32-bit

bool known(std::uint16_t encoding) { return encoding >= 1 && encoding <= 7; }

std::size_t ceil_div(std::uint64_t a, std::uint64_t b) {
  return static_cast<std::size_t>(a / b + (a % b != 0));
}

// The lanes whose all-ones exponent the checksum pass looks for: the encodings whose payload
// is their values alone (DENSE_F32, FP16, BF16); nullptr for the others.
const LaneScan* finite_scan(std::uint16_t encoding) {
  switch (static_cast<Encoding>(encoding)) {
    case Encoding::kDenseF32:
      return &kScanF32;
    case Encoding::kFp16:
      return &kScanF16;
    case Encoding::kBf16:
      return &kScanBf16;
    default:
      return nullptr;
  }
}

std::string hex(std::uint64_t v) {
  std::ostringstream s;
  s << "0x" << std::hex << std::setw(16) << std::setfill('0') << v;
  return s.str();
}

std::string magic_text(const std::uint8_t* m) {
  std::ostringstream s;
  s << std::hex << std::setfill('0');
  for (int i = 0; i < 4; ++i) s << (i ? " " : "") << "0x" << std::setw(2) << int{m[i]};
  return s.str();
}

// Builds and throws the ProtocolError of one rejected field.
struct Rejector {
  int sender;
  template <typename Found, typename Expected>
  [[noreturn]] void operator()(const char* field, const Found& found,
                               const Expected& expected) const {
    throw ProtocolError(detail::concat("wire message from rank ", sender,
                                       " rejected (not applied): ", field, " is ", found,
                                       ", expected ", expected));
  }
};

void check_header(const Header& h, const Rejector& reject, std::uint32_t group, std::uint64_t n,
                  int sender) {
  if (std::memcmp(h.magic, kMagic, 4) != 0)
    reject("magic", magic_text(h.magic), "0x44 0x4c 0x4e 0x31 (\"DLN1\")");
  if (h.version != kWireVersion) reject("version", h.version, kWireVersion);
  if (h.kind < 1 || h.kind > 5)
    reject("kind", h.kind, "1 (GRADIENT), 2 (PARAMETERS), 3 (PROBE), 4 (ACK) or 5 (HEARTBEAT)");
  if (h.sender != static_cast<std::uint32_t>(sender))
    reject("sender", h.sender, detail::concat(sender, " (the MPI source)"));
  if (h.group != group) reject("group", h.group, detail::concat(group, " (registered)"));
  if (h.n != n) reject("n", h.n, detail::concat(n, " (registered for group ", group, ")"));
  if (!known(h.encoding)) reject("encoding", h.encoding, "1..7 (see wire/format.h)");
  const auto enc = static_cast<Encoding>(h.encoding);
  if (enc == Encoding::kQsgd) {
    if (h.bits != 2 && h.bits != 4 && h.bits != 8) reject("bits", int{h.bits}, "2, 4 or 8");
  } else if (h.bits != required_bits(enc, 0)) {
    reject("bits", int{h.bits}, required_bits(enc, 0));
  }
  const bool contiguous = (h.flags & kFlagContiguous) != 0;
  if ((h.flags & ~kKnownFlags) != 0)
    reject("flags", int{h.flags}, "0 or 1 (bit 0 is CONTIGUOUS; no other bit is defined)");
  if (contiguous && !is_sparse(enc))
    reject("flags", int{h.flags},
           detail::concat("0 for encoding ", h.encoding,
                          " (CONTIGUOUS is for the sparse encodings 2 and 3 only)"));
  if (is_sparse(enc) && h.k > h.n) reject("k", h.k, detail::concat("<= n = ", h.n));
  if (!is_sparse(enc) && h.k != h.n) reject("k", h.k, detail::concat("n = ", h.n));
  if (contiguous && h.k == 0) reject("k", h.k, ">= 1 with flags CONTIGUOUS");
  if (!std::isfinite(h.weight) || h.weight < 0.0f)
    reject("weight", h.weight, "a finite value >= 0");
}

std::uint32_t check_sizes(const Header& h, const std::uint8_t* payload, std::size_t len,
                          const Rejector& reject) {
  if (h.payload_bytes != len - kHeaderBytes)
    reject("payload_bytes", h.payload_bytes,
           detail::concat(len - kHeaderBytes, " (message length ", len, " - 64)"));
  const auto enc = static_cast<Encoding>(h.encoding);
  std::uint32_t bucket = 0;
  if (is_bucketed(enc)) {
    if (h.payload_bytes < 4)
      reject("payload_bytes", h.payload_bytes, ">= 4 (the bucket word)");
    std::memcpy(&bucket, payload, sizeof bucket);
    if (bucket == 0) reject("bucket", bucket, ">= 1");
  }
  const std::size_t want = payload_bytes(enc, h.n, h.k, h.bits, bucket, h.flags);
  if (h.payload_bytes != want)
    reject("payload_bytes", h.payload_bytes,
           detail::concat(want, " for encoding ", h.encoding, ", n = ", h.n, ", k = ", h.k,
                          ", bits = ", int{h.bits}, ", flags = ", int{h.flags}));
  return bucket;
}

void check_scales(View<float> scales, const Rejector& reject) {
  for (std::size_t i = 0; i < scales.size; ++i) {
    const float s = scales.data[i];
    if (!std::isfinite(s) || s < 0.0f)
      reject(detail::concat("scales[", i, "]").c_str(), s, "a finite value >= 0");
  }
}

// The unused high bits of the last packed byte of n fields of `bits` bits are 0.
void check_tail_bits(View<std::uint8_t> packed, std::size_t n, int bits, const Rejector& reject) {
  const std::size_t used = (n * static_cast<std::size_t>(bits)) % 8;
  if (used == 0 || packed.size == 0) return;
  const std::uint8_t last = packed.data[packed.size - 1];
  if ((last >> used) != 0)
    reject("unused high bits of the last packed byte", int{last >> used}, 0);
}

// Levels are in [-L, L] (L = 2^(bits-1) - 1): the one two's-complement pattern beyond, -(L + 1)
// (8 bits: -128, 4 bits: -8, 2 bits: -2), is never emitted by qsgd_encode and would decode to
// more than the bucket's scale in magnitude (and to -inf near the largest float scale).
// Branch-free per byte, so the loop vectorizes; the position is looked for only on failure.
bool byte_has_min_level(std::uint8_t b, int bits) {
  if (bits == 8) return b == 0x80;
  if (bits == 4) return (b & 0x0f) == 0x08 || (b & 0xf0) == 0x80;
  return ((b & 0xaa) & ~((b & 0x55) << 1)) != 0;  // a 2-bit field 0b10: high bit, low bit clear
}

void check_levels(View<std::uint8_t> packed, int bits, const Rejector& reject) {
  bool bad = false;
  for (std::size_t i = 0; i < packed.size; ++i) bad |= byte_has_min_level(packed.data[i], bits);
  if (!bad) return;
  std::size_t i = 0;
  while (!byte_has_min_level(packed.data[i], bits)) ++i;
  const int min_level = -(1 << (bits - 1));
  reject(detail::concat("packed levels byte [", i, "]").c_str(),
         detail::concat("0x", std::hex, int{packed.data[i]}, std::dec, " (a level ", min_level,
                        ")"),
         detail::concat("levels in [", min_level + 1, ", ", -(min_level + 1), "]"));
}

// Carried values are finite: on the IEEE bits, the exponent field is not all ones.
std::uint32_t raw_bits(float v) { return bits_of(v); }
std::uint32_t raw_bits(std::uint16_t v) { return v; }

// values[from, size) (the checksum's pass found values[0, from) finite).
template <typename T>
void check_finite(View<T> values, std::uint32_t exponent_mask, const char* what,
                  const Rejector& reject, std::size_t from = 0) {
  bool bad = false;
  for (std::size_t i = from; i < values.size; ++i)
    bad |= (raw_bits(values.data[i]) & exponent_mask) == exponent_mask;
  if (!bad) return;
  std::size_t i = from;
  while ((raw_bits(values.data[i]) & exponent_mask) != exponent_mask) ++i;
  reject(detail::concat(what, "[", i, "]").c_str(),
         detail::concat("0x", std::hex, raw_bits(values.data[i]), " (infinite or NaN)"),
         "a finite value");
}

// known_finite: the leading bytes of a DENSE_F32/FP16/BF16 payload that the checksum's scan
// found finite.
void check_payload_values(const Decoded& d, const Rejector& reject, std::size_t known_finite) {
  switch (d.encoding()) {
    case Encoding::kDenseF32:
    case Encoding::kSparseF32:
      check_finite(d.values(), 0x7f800000u, "values", reject, known_finite / sizeof(float));
      break;
    case Encoding::kFp16:
      check_finite(d.halves(), 0x7c00u, "fp16 values", reject, known_finite / 2);
      break;
    case Encoding::kBf16:
      check_finite(d.halves(), 0x7f80u, "bf16 values", reject, known_finite / 2);
      break;
    case Encoding::kQsgd:
    case Encoding::kSparseQsgd8:
      check_levels(d.packed(), d.bits(), reject);
      break;
    case Encoding::kSign:
      break;  // sign bits: any pattern is valid
  }
}

void check_indices(View<std::uint32_t> idx, std::uint64_t n, const Rejector& reject) {
  for (std::size_t i = 0; i < idx.size; ++i) {
    const std::uint32_t v = idx.data[i];
    if (v >= n) reject(detail::concat("idx[", i, "]").c_str(), v, detail::concat("< n = ", n));
    if (i > 0 && v <= idx.data[i - 1])
      reject(detail::concat("idx[", i, "]").c_str(), v,
             detail::concat("> idx[", i - 1, "] = ", idx.data[i - 1],
                            " (indices must be strictly increasing)"));
  }
}

// CONTIGUOUS: entries first .. first + k - 1 all lie in [0, n) (k >= 1 was checked).
void check_first(std::uint32_t first, std::uint64_t k, std::uint64_t n, const Rejector& reject) {
  if (std::uint64_t{first} + k > n)
    reject("first", first,
           detail::concat("<= n - k = ", n - k, " (entries first .. first + k - 1 are < n = ", n,
                          ")"));
}

template <typename T>
View<T> view_at(const std::uint8_t* payload, std::size_t offset, std::size_t count) {
  if (offset == kAbsent) return {};
  return {reinterpret_cast<const T*>(payload + offset), count};
}

}  // namespace

int required_bits(Encoding encoding, int qsgd_bits) {
  switch (encoding) {
    case Encoding::kDenseF32:
    case Encoding::kSparseF32:
      return 32;
    case Encoding::kSparseQsgd8:
      return 8;
    case Encoding::kSign:
      return 1;
    case Encoding::kFp16:
    case Encoding::kBf16:
      return 16;
    case Encoding::kQsgd:
      if (qsgd_bits == 0) return 0;  // "any of 2, 4, 8": the caller checks
      DLION_CHECK(qsgd_bits == 2 || qsgd_bits == 4 || qsgd_bits == 8, InvalidArgument,
                  "wire: QSGD bits = ", qsgd_bits, "; use 2, 4 or 8");
      return qsgd_bits;
  }
  throw InvalidArgument(
      detail::concat("wire: unknown encoding ", static_cast<int>(encoding), "; use 1..7"));
}

bool is_sparse(Encoding e) { return e == Encoding::kSparseF32 || e == Encoding::kSparseQsgd8; }
bool is_bucketed(Encoding e) { return e == Encoding::kQsgd || e == Encoding::kSparseQsgd8; }

Layout layout(Encoding encoding, std::uint64_t n, std::uint64_t k, int bits, std::uint64_t bucket,
              std::uint8_t flags) {
  const int want = required_bits(encoding, bits);
  DLION_CHECK(bits == want && bits != 0, InvalidArgument, "wire: encoding ",
              static_cast<int>(encoding), " carries ", want, "-bit values, not bits = ", bits);
  DLION_CHECK(n < kMaxN, InvalidArgument, "wire: n = ", n,
              " elements; indices are 32-bit, so split the group under 2^32 elements");
  DLION_CHECK(is_sparse(encoding) ? k <= n : k == n, InvalidArgument, "wire: k = ", k,
              " with n = ", n, "; k must be <= n (sparse) or == n (dense encodings)");
  DLION_CHECK(!is_bucketed(encoding) || bucket >= 1, InvalidArgument, "wire: bucket = ", bucket,
              "; use >= 1");
  DLION_CHECK((flags & ~kKnownFlags) == 0, InvalidArgument, "wire: flags = ", int{flags},
              "; the only flag is kFlagContiguous (1)");
  const bool contiguous = (flags & kFlagContiguous) != 0;
  DLION_CHECK(!contiguous || (is_sparse(encoding) && k >= 1), InvalidArgument,
              "wire: flags CONTIGUOUS with encoding ", static_cast<int>(encoding), " and k = ", k,
              "; it needs a sparse encoding and k >= 1");
  const auto nn = static_cast<std::size_t>(n), kk = static_cast<std::size_t>(k);
  const std::size_t idx_bytes = contiguous ? 4 : 4 * kk;  // u32 first, or u32 idx[k]
  Layout l;
  switch (encoding) {
    case Encoding::kDenseF32:
      l.values = 0, l.total = 4 * nn;
      break;
    case Encoding::kSparseF32:
      (contiguous ? l.first : l.idx) = 0;
      l.values = idx_bytes, l.total = idx_bytes + 4 * kk;
      break;
    case Encoding::kSparseQsgd8:
      l.bucket_word = 0, (contiguous ? l.first : l.idx) = 4;
      l.scales = 4 + idx_bytes, l.n_scales = ceil_div(k, bucket);
      l.packed = l.scales + 4 * l.n_scales, l.packed_bytes = kk, l.total = l.packed + kk;
      break;
    case Encoding::kQsgd:
      l.bucket_word = 0, l.scales = 4, l.n_scales = ceil_div(n, bucket);
      l.packed = 4 + 4 * l.n_scales, l.packed_bytes = qsgd_packed_bytes(nn, bits);
      l.total = l.packed + l.packed_bytes;
      break;
    case Encoding::kSign:
      l.scales = 0, l.n_scales = 1, l.packed = 4, l.packed_bytes = sign_packed_bytes(nn);
      l.total = 4 + l.packed_bytes;
      break;
    case Encoding::kFp16:
    case Encoding::kBf16:
      l.values = 0, l.total = 2 * nn;
      break;
  }
  return l;
}

std::size_t payload_bytes(Encoding encoding, std::uint64_t n, std::uint64_t k, int bits,
                          std::uint64_t bucket, std::uint8_t flags) {
  return layout(encoding, n, k, bits, bucket, flags).total;
}

bool consecutive(const std::uint32_t* idx, std::size_t k) {
  if (k == 0) return false;
  const std::size_t first = idx[0];
  bool run = true;
  for (std::size_t i = 0; i < k; ++i) run &= std::size_t{idx[i]} == first + i;  // vectorizes
  return run;
}

namespace {

// The header of f with a zero checksum.
Header header_of(const Fields& f, std::size_t payload) {
  Header h{};
  std::memcpy(h.magic, kMagic, 4);
  h.version = kWireVersion;
  h.kind = static_cast<std::uint16_t>(f.kind);
  h.sender = f.sender, h.group = f.group, h.step = f.step;
  h.encoding = static_cast<std::uint16_t>(f.encoding);
  h.bits = static_cast<std::uint8_t>(f.bits);
  h.flags = f.flags;
  h.weight = f.weight, h.n = f.n, h.k = f.k, h.payload_bytes = payload;
  return h;
}

}  // namespace

void encode_header(const Fields& f, std::uint8_t* msg, std::size_t len) {
  const Layout l = layout(f.encoding, f.n, f.k, f.bits, f.bucket, f.flags);
  DLION_CHECK(len >= kHeaderBytes && len - kHeaderBytes == l.total, InvalidArgument,
              "wire: message of ", len, " bytes; this one needs 64 + ", l.total);
  Header h = header_of(f, l.total);
  std::memcpy(msg, &h, kHeaderBytes);
  if (l.bucket_word != kAbsent)
    std::memcpy(msg + kHeaderBytes + l.bucket_word, &f.bucket, sizeof f.bucket);
  h.checksum = message_checksum(msg, len);
  std::memcpy(msg + kChecksumOffset, &h.checksum, sizeof h.checksum);
}

void encode_header_copy(const Fields& f, std::uint8_t* msg, std::size_t len, const void* src) {
  DLION_CHECK(!is_bucketed(f.encoding), InvalidArgument,
              "wire: encode_header_copy of a bucketed encoding (its payload starts with the "
              "bucket word); use encode_header");
  const Layout l = layout(f.encoding, f.n, f.k, f.bits, f.bucket, f.flags);
  DLION_CHECK(len >= kHeaderBytes && len - kHeaderBytes == l.total, InvalidArgument,
              "wire: message of ", len, " bytes; this one needs 64 + ", l.total);
  Header h = header_of(f, l.total);
  std::memcpy(msg, &h, kHeaderBytes);
  h.checksum = hash64_concat_copy(msg, kHeaderBytes, src, msg + kHeaderBytes, l.total);
  std::memcpy(msg + kChecksumOffset, &h.checksum, sizeof h.checksum);
}

Decoded validate(const std::uint8_t* msg, std::size_t len, int expected_sender,
                 std::uint32_t registered_group, std::uint64_t registered_n) {
  DLION_CHECK(reinterpret_cast<std::uintptr_t>(msg) % 8 == 0, InvalidArgument,
              "wire: the receive buffer is not 8-byte aligned");
  DLION_CHECK(expected_sender >= 0, InvalidArgument, "wire: expected_sender = ",
              expected_sender, "; pass the MPI source rank");
  DLION_CHECK(registered_n < kMaxN, InvalidArgument, "wire: registered n = ", registered_n,
              "; groups are split under 2^32 elements");
  const Rejector reject{expected_sender};
  if (len < kHeaderBytes) reject("length", len, ">= 64 (the header)");
  Decoded d;
  std::memcpy(&d.header_, msg, kHeaderBytes);
  const Header& h = d.header_;
  check_header(h, reject, registered_group, registered_n, expected_sender);
  const std::uint8_t* payload = msg + kHeaderBytes;
  d.bucket_ = check_sizes(h, payload, len, reject);
  // The finite check of a dense payload rides on the checksum's pass (hash64_concat_scan).
  const LaneScan* scan = finite_scan(h.encoding);
  bool hit = true;
  std::size_t known_finite = 0;
  const std::uint64_t sum = scan != nullptr
                                ? message_checksum_scan(msg, len, *scan, &hit, &known_finite)
                                : message_checksum(msg, len);
  if (hit) known_finite = 0;
  if (h.checksum != sum) reject("checksum", hex(h.checksum), hex(sum));

  const auto enc = static_cast<Encoding>(h.encoding);
  const Layout l = layout(enc, h.n, h.k, h.bits, d.bucket_, h.flags);
  const auto n = static_cast<std::size_t>(h.n), k = static_cast<std::size_t>(h.k);
  d.idx_ = view_at<std::uint32_t>(payload, l.idx, k);
  if (l.first != kAbsent) std::memcpy(&d.first_, payload + l.first, sizeof d.first_);
  if (enc == Encoding::kFp16 || enc == Encoding::kBf16)
    d.halves_ = view_at<std::uint16_t>(payload, l.values, n);
  else
    d.values_ = view_at<float>(payload, l.values, is_sparse(enc) ? k : n);
  d.scales_ = view_at<float>(payload, l.scales, l.n_scales);
  d.packed_ = view_at<std::uint8_t>(payload, l.packed, l.packed_bytes);
  check_scales(d.scales_, reject);
  if (enc == Encoding::kQsgd || enc == Encoding::kSign) check_tail_bits(d.packed_, n, h.bits, reject);
  check_payload_values(d, reject, known_finite);
  check_indices(d.idx_, h.n, reject);
  if (d.contiguous()) check_first(d.first_, h.k, h.n, reject);
  return d;
}

}  // namespace dlion::wire
