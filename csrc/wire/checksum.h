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

}  // namespace dlion::wire
