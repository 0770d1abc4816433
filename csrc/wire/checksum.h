// The wire checksum: XXH64 (Yann Collet's xxHash64 algorithm, implemented here from its
// specification; results equal the reference implementation's). Non-cryptographic: it detects
// corruption and framing bugs, not tampering. One scalar pass, 4 lanes of 8-byte words.
#pragma once

#include <cstddef>
#include <cstdint>

namespace dlion::wire {

// XXH64 of data[0, len).
std::uint64_t hash64(const void* data, std::size_t len, std::uint64_t seed = 0);

// XXH64 of the concatenation prefix || data, without copying; prefix_len must be a multiple of
// 32 bytes (the stripe size), else InvalidArgument.
std::uint64_t hash64_concat(const void* prefix, std::size_t prefix_len, const void* data,
                            std::size_t len, std::uint64_t seed = 0);

// hash64_concat(prefix, prefix_len, src, len, seed), copying src[0, len) to dst[0, len) in the
// same pass (the sender's dense payload: one read of the tensor instead of two). src and dst
// must not overlap.
std::uint64_t hash64_concat_copy(const void* prefix, std::size_t prefix_len, const void* src,
                                 void* dst, std::size_t len, std::uint64_t seed = 0);

// Lanes of 16 or 32 bits in an 8-byte word, and the bits a lane must not have all set: for
// float32 (`lanes_f32`), binary16 and bfloat16 the all-ones exponent of an infinity or NaN.
struct LaneScan {
  std::uint64_t mask;  // the bits, repeated in every lane
  std::uint64_t low;   // the lowest bit of every lane
  std::uint64_t high;  // the highest bit of every lane
};
inline constexpr LaneScan kScanF32{0x7f8000007f800000ull, 0x0000000100000001ull,
                                   0x8000000080000000ull};
inline constexpr LaneScan kScanF16{0x7c007c007c007c00ull, 0x0001000100010001ull,
                                   0x8000800080008000ull};
inline constexpr LaneScan kScanBf16{0x7f807f807f807f80ull, 0x0001000100010001ull,
                                    0x8000800080008000ull};

// hash64_concat(prefix, prefix_len, data, len, seed); *hit is set to whether some lane of the
// 8-byte words of data[0, *scanned) has every bit of scan.mask set, where *scanned is the part
// the hash reads in whole 32-byte stripes (len rounded down to a multiple of 32): the receiver's
// finite check rides on the checksum's pass, and only the short rest is looked at again.
std::uint64_t hash64_concat_scan(const void* prefix, std::size_t prefix_len, const void* data,
                                 std::size_t len, const LaneScan& scan, bool* hit,
                                 std::size_t* scanned, std::uint64_t seed = 0);

// The checksum field's value for msg[0, len) (len >= 64, format.h section 2): XXH64 of the
// message with bytes 56..63 read as zero. The _scan form also scans the payload's lanes as
// hash64_concat_scan does (*scanned counts payload bytes).
std::uint64_t message_checksum(const std::uint8_t* msg, std::size_t len);
std::uint64_t message_checksum_scan(const std::uint8_t* msg, std::size_t len,
                                    const LaneScan& scan, bool* hit, std::size_t* scanned);

}  // namespace dlion::wire
