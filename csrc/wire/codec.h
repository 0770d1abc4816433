// Encoding and validation of wire messages (the format is specified in format.h).
//
// Sender: lay the payload out at the offsets of layout(), then call encode_header(), which fills
// the header (and the bucket word of the bucketed encodings) and checksums the whole message.
// Receiver: validate() the received bytes (it checks every header field, the sizes, the
// checksum, the scales and every sparse index before anything is used), then apply_add() the
// returned Decoded view. A Decoded can only come from validate(), so nothing unvalidated is ever
// applied.
#pragma once

#include <cstddef>
#include <cstdint>
#include <limits>

#include "wire/format.h"

namespace dlion::wire {

inline constexpr std::size_t kAbsent = std::numeric_limits<std::size_t>::max();

// Byte offsets of a payload's sections (kAbsent when the encoding has none) and its size.
struct Layout {
  std::size_t bucket_word = kAbsent;  // u32 bucket size (QSGD, SPARSE_QSGD8)
  std::size_t idx = kAbsent;          // u32[k] (sparse, flags 0)
  std::size_t first = kAbsent;        // u32 first index (sparse, flags CONTIGUOUS)
  std::size_t values = kAbsent;       // f32[n] or f32[k] (DENSE/SPARSE_F32), u16[n] (FP16/BF16)
  std::size_t scales = kAbsent;       // f32[n_scales]
  std::size_t packed = kAbsent;       // u8[packed_bytes]: QSGD/sign bits, or SPARSE_QSGD8 levels
  std::size_t n_scales = 0;
  std::size_t packed_bytes = 0;
  std::size_t total = 0;
};

// The bits a message of this encoding must carry; for QSGD the requested 2, 4 or 8 (anything
// else, or an unknown encoding, throws InvalidArgument).
int required_bits(Encoding encoding, int qsgd_bits);
// True for the encodings that carry k (index, value) entries rather than n values.
bool is_sparse(Encoding encoding);
// True for the encodings whose payload starts with a bucket word.
bool is_bucketed(Encoding encoding);

// The payload layout of a message. Preconditions (InvalidArgument otherwise): n < 2^32, k <= n
// (k == n for dense encodings), bits == required_bits(encoding, bits), bucket >= 1 for the
// bucketed encodings (ignored otherwise), flags only of kKnownFlags, CONTIGUOUS only with a
// sparse encoding and k >= 1.
Layout layout(Encoding encoding, std::uint64_t n, std::uint64_t k, int bits, std::uint64_t bucket,
              std::uint8_t flags);
std::size_t payload_bytes(Encoding encoding, std::uint64_t n, std::uint64_t k, int bits,
                          std::uint64_t bucket, std::uint8_t flags);

// True when k >= 1 and idx[0, k) is idx[0], idx[0] + 1, ..., idx[0] + k - 1: the indices a
// CONTIGUOUS message carries as its first one alone (format.h, 5).
bool consecutive(const std::uint32_t* idx, std::size_t k);

// What a sender chooses; encode_header derives magic, version, payload_bytes, checksum.
struct Fields {
  Kind kind = Kind::kGradient;
  std::uint32_t sender = 0;
  std::uint64_t step = 0;
  std::uint32_t group = 0;
  Encoding encoding = Encoding::kDenseF32;
  int bits = 32;
  std::uint64_t n = 0;
  std::uint64_t k = 0;
  float weight = 1.0f;
  std::uint32_t bucket = 0;  // bucketed encodings only
  std::uint8_t flags = 0;    // kFlagContiguous: the payload has `first` in place of idx[k]
};

// msg[0, len) is the whole message, its payload already in place at msg + kHeaderBytes (except
// the bucket word, written here). Writes the header and the checksum. Throws InvalidArgument
// when the fields break layout()'s preconditions or len != kHeaderBytes + payload_bytes(...).
// The payload's content (index order, first + k <= n, scales) is not checked: validate() does.
void encode_header(const Fields& fields, std::uint8_t* msg, std::size_t len);

// encode_header of a message whose whole payload is src[0, len - kHeaderBytes) (DENSE_F32's
// values): copies it into place in the same pass that checksums it. Not for the bucketed
// encodings (InvalidArgument). src must not overlap msg.
void encode_header_copy(const Fields& fields, std::uint8_t* msg, std::size_t len,
                        const void* src);

template <typename T>
struct View {
  const T* data = nullptr;
  std::size_t size = 0;
};

// Typed views into a validated message (which must outlive them). Sections the encoding does not
// have are empty.
class Decoded {
 public:
  const Header& header() const { return header_; }
  Encoding encoding() const { return static_cast<Encoding>(header_.encoding); }
  std::size_t n() const { return static_cast<std::size_t>(header_.n); }
  std::size_t k() const { return static_cast<std::size_t>(header_.k); }
  int bits() const { return header_.bits; }
  float weight() const { return header_.weight; }
  std::uint32_t bucket() const { return bucket_; }  // 0 for unbucketed encodings
  // CONTIGUOUS: the entries are at first(), first() + 1, ..., first() + k() - 1 and idx() is
  // empty; else first() is 0 and idx() holds the k indices (sparse encodings).
  bool contiguous() const { return (header_.flags & kFlagContiguous) != 0; }
  std::uint32_t first() const { return first_; }
  View<std::uint32_t> idx() const { return idx_; }
  // The index of entry j < k() of a sparse message, in either form.
  std::size_t index(std::size_t j) const {
    return contiguous() ? std::size_t{first_} + j : std::size_t{idx_.data[j]};
  }
  View<float> values() const { return values_; }
  View<std::uint16_t> halves() const { return halves_; }
  View<float> scales() const { return scales_; }
  View<std::uint8_t> packed() const { return packed_; }

 private:
  Decoded() = default;
  friend Decoded validate(const std::uint8_t*, std::size_t, int, std::uint32_t, std::uint64_t);

  Header header_{};
  std::uint32_t bucket_ = 0;
  std::uint32_t first_ = 0;
  View<std::uint32_t> idx_;
  View<float> values_;
  View<std::uint16_t> halves_;
  View<float> scales_;
  View<std::uint8_t> packed_;
};

// Validates msg[0, len) received from rank expected_sender (the MPI source) for the tensor group
// the receiver registered as (registered_group, registered_n), checking in the order of
// format.h: length, magic, version, kind, sender, group, n, encoding, bits, flags, k, weight,
// payload_bytes (against len, then against the layout), bucket, checksum, scales, packed tail
// bits, values (finite) or quantized levels (no -(L + 1)), then every sparse index (< n,
// strictly increasing) or, CONTIGUOUS, first (first + k <= n). Any failure throws ProtocolError
// naming the sender, the field, the value found and the value expected. msg must be 8-byte
// aligned, expected_sender >= 0 and registered_n < 2^32 (InvalidArgument: the receiver's bug).
Decoded validate(const std::uint8_t* msg, std::size_t len, int expected_sender,
                 std::uint32_t registered_group, std::uint64_t registered_n);

// out[i] += weight * decoded[i] for the n = m.n() elements of out (sparse encodings: only at the
// carried indices, first .. first + k - 1 for CONTIGUOUS). Quantized encodings are decoded with
// the compress/ kernels in bounded chunks. n != m.n() throws InvalidArgument (and out is
// untouched).
void apply_add(const Decoded& m, float* out, std::size_t n, float weight);

}  // namespace dlion::wire
