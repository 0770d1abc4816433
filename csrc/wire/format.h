// The dlion wire format, version 2: one message per per-link peer transfer (a gradient, a set of
// parameters or a probe for one tensor group). This comment is the contract; codec.h encodes and
// validates it, and both sides of a link must agree on it byte for byte.
//
// 1. Framing. A message is a fixed 64-byte header followed by `payload_bytes` bytes of payload,
//    nothing else: len(message) == 64 + payload_bytes exactly. Everything is little-endian.
//    Receive buffers are 8-byte aligned (so are the payload's sections, see 4).
//
// 2. Header.
//
//      offset size type   field          rule (validate() checks each, in this order)
//      ------ ---- ------ -------------- -------------------------------------------------------
//       0     4   u8[4]  magic          "DLN1" (0x44 0x4C 0x4E 0x31)
//       4     2   u16    version        2 (kWireVersion)
//       6     2   u16    kind           Kind: GRADIENT = 1, PARAMETERS = 2, PROBE = 3, ACK = 4,
//                                        HEARTBEAT = 5
//       8     4   u32    sender         the sender's rank; == the MPI source of the message
//      12     4   u32    group          tensor-group id; == the group the receiver registered
//      16     8   u64    step           the sender's training step (free; not checked)
//      24     2   u16    encoding       Encoding, see 3
//      26     1   u8     bits           bits per carried value; fixed per encoding, see 3
//      27     1   u8     flags          bit 0 CONTIGUOUS (kFlagContiguous, see 5): only with a
//                                       sparse encoding; the other bits are 0
//      28     4   f32    weight         aggregation weight; finite and >= 0
//      32     8   u64    n              elements of the dense tensor; == registered n, < 2^32
//      40     8   u64    k              entries carried; == n for dense encodings, <= n else;
//                                       >= 1 when flags has CONTIGUOUS
//      48     8   u64    payload_bytes  == payload_bytes(encoding, n, k, bits, bucket, flags)
//                                       (see 4) and == len(message) - 64
//      56     8   u64    checksum       XXH64 (seed 0) of the whole message with bytes 56..63
//                                       read as zero (checksum.h)
//
// 3. Encodings (value of `encoding`, required `bits`, what the payload carries):
//      1 DENSE_F32     32      n float32 values
//      2 SPARSE_F32    32      k (u32 index, f32 value) pairs, as two arrays (CONTIGUOUS: the
//                              first index of k consecutive ones, and the k values)
//      3 SPARSE_QSGD8   8      k u32 indices (CONTIGUOUS: the first of k consecutive ones), and
//                              the k values QSGD-quantized to int8 levels with one f32 scale
//                              per bucket of the k values
//      4 QSGD          2/4/8   n values QSGD-quantized (compress/quantize.h), one f32 scale per
//                              bucket
//      5 SIGN           1      n sign bits and one f32 scale (compress/quantize.h)
//      6 FP16          16      n IEEE binary16 values
//      7 BF16          16      n bfloat16 values
//    Anything else (including 0) is rejected.
//
// 4. Payload layouts. Sections are contiguous, in this order, with no padding; each starts at a
//    multiple of its element size because every earlier section is a multiple of 4 bytes.
//    nb(m) = ceil(m / bucket) is the number of buckets of m values.
//      DENSE_F32     f32 values[n]
//      SPARSE_F32    u32 idx[k], f32 values[k]                        (flags 0)
//                    u32 first, f32 values[k]                         (flags CONTIGUOUS)
//      SPARSE_QSGD8  u32 bucket, u32 idx[k], f32 scales[nb(k)], i8 levels[k]   (flags 0)
//                    u32 bucket, u32 first, f32 scales[nb(k)], i8 levels[k]    (CONTIGUOUS)
//      QSGD          u32 bucket, f32 scales[nb(n)], u8 packed[ceil(n * bits / 8)]
//      SIGN          f32 scale, u8 signs[ceil(n / 8)]
//      FP16, BF16    u16 values[n]
//    The bucketed encodings carry their bucket size as the first payload word (the header has
//    no room for it): any value >= 1 (one at or above the number of values means one bucket).
//    The quantized bit layouts are those of compress/quantize.h; the unused high bits of the
//    last packed byte are 0.
//
// 5. Sparse indices are 32-bit, every one < n, and strictly increasing (so distinct): the top-k
//    and random-k kernels emit them sorted, and the receiver relies on it (a message with an
//    index out of range, repeated or out of order is rejected even with a correct checksum).
//    CONTIGUOUS (flags bit 0) replaces the idx[k] section by the one word `first`: entry j is at
//    index first + j, for j < k, and first + k <= n (else rejected, even with a correct
//    checksum). So a run of consecutive indices costs 4 bytes instead of 4 * k: a range
//    selection (Ako's partition) carries its values only. The encoder (encode.h, and the
//    wire_encode binding) sets CONTIGUOUS whenever k >= 1 and the selected indices are
//    idx[0], idx[0] + 1, ..., idx[0] + k - 1, whatever selected them; a receiver accepts such
//    indices as an idx[k] section too (flags 0). k == 0 never has CONTIGUOUS.
//
// 6. Values. Scales (QSGD, SPARSE_QSGD8, SIGN) are finite and >= 0. Carried values are finite:
//    no float32 (DENSE_F32, SPARSE_F32), binary16 (FP16) or bfloat16 (BF16) value has an
//    all-ones exponent (no infinity, no NaN), so a peer's overflow or NaN is never added into a
//    receiver's gradient; a sender must not send non-finite values (the compress/ encoders
//    refuse them; fp16/bf16 casts of finite values beyond the 16-bit range overflow to infinity
//    and are then refused here). Quantized levels (QSGD, SPARSE_QSGD8) lie in [-L, L],
//    L = 2^(bits-1) - 1: the one two's-complement field beyond, -(L + 1) (-128, -8, -2 for 8, 4,
//    2 bits), is never emitted by the encoder and is rejected, because it would decode to more
//    than the bucket's scale in magnitude (to -infinity near the largest float32 scale). So every
//    accepted message decodes to finite values; what the receiver then computes with its own
//    weight (weight * value, the sum into its tensor) is ordinary float32 arithmetic.
//
// 7. A message that breaks any rule above raises ProtocolError naming the sender (the MPI
//    source), the field, the value found and the value expected; it is never applied.
#pragma once

#include <cstddef>
#include <cstdint>

namespace dlion::wire {

static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__,
              "the wire format is little-endian and the codec copies fields as they are");

inline constexpr std::size_t kHeaderBytes = 64;
inline constexpr std::uint16_t kWireVersion = 2;
inline constexpr std::uint8_t kMagic[4] = {'D', 'L', 'N', '1'};
// Header flags (section 5). Version 1 had none (flags 0): a version-1 receiver refuses a
// version-2 message at its version field, naming both versions.
inline constexpr std::uint8_t kFlagContiguous = 1;
inline constexpr std::uint8_t kKnownFlags = kFlagContiguous;

// ACK: the receiver's acknowledgement of one message (header only, n = 0, DENSE_F32, weight
// 0); its group and step are those of the message acknowledged. The sender times links by them.
// HEARTBEAT: "this rank's engine is alive" (header only, like ACK); step = how many collective
// operations the sender has started, group = 1 on its last heartbeat (it shuts down), else 0.
enum class Kind : std::uint16_t {
  kGradient = 1,
  kParameters = 2,
  kProbe = 3,
  kAck = 4,
  kHeartbeat = 5
};

enum class Encoding : std::uint16_t {
  kDenseF32 = 1,
  kSparseF32 = 2,
  kSparseQsgd8 = 3,
  kQsgd = 4,
  kSign = 5,
  kFp16 = 6,
  kBf16 = 7,
};

// The header exactly as it lies in memory (little-endian host, natural alignment, no padding).
struct Header {
  std::uint8_t magic[4];
  std::uint16_t version;
  std::uint16_t kind;
  std::uint32_t sender;
  std::uint32_t group;
  std::uint64_t step;
  std::uint16_t encoding;
  std::uint8_t bits;
  std::uint8_t flags;
  float weight;
  std::uint64_t n;
  std::uint64_t k;
  std::uint64_t payload_bytes;
  std::uint64_t checksum;
};

static_assert(sizeof(Header) == kHeaderBytes, "header is 64 bytes");
static_assert(offsetof(Header, magic) == 0);
static_assert(offsetof(Header, version) == 4);
static_assert(offsetof(Header, kind) == 6);
static_assert(offsetof(Header, sender) == 8);
static_assert(offsetof(Header, group) == 12);
static_assert(offsetof(Header, step) == 16);
static_assert(offsetof(Header, encoding) == 24);
static_assert(offsetof(Header, bits) == 26);
static_assert(offsetof(Header, flags) == 27);
static_assert(offsetof(Header, weight) == 28);
static_assert(offsetof(Header, n) == 32);
static_assert(offsetof(Header, k) == 40);
static_assert(offsetof(Header, payload_bytes) == 48);
static_assert(offsetof(Header, checksum) == 56);
inline constexpr std::size_t kChecksumOffset = 56;

}  // namespace dlion::wire
