#include "wire/checksum.h"

#include <cstring>

#include "common/error.h"
#include "wire/format.h"

namespace dlion::wire {
namespace {

constexpr std::uint64_t kP1 = 0x9E3779B185EBCA87ULL;
constexpr std::uint64_t kP2 = 0xC2B2AE3D27D4EB4FULL;
constexpr std::uint64_t kP3 = 0x165667B19E3779F9ULL;
constexpr std::uint64_t kP4 = 0x85EBCA77C2B2AE63ULL;
constexpr std::uint64_t kP5 = 0x27D4EB2F165667C5ULL;
constexpr std::size_t kStripe = 32;

inline std::uint64_t rotl(std::uint64_t x, int r) { return (x << r) | (x >> (64 - r)); }

// Little-endian loads (the format asserts a little-endian host).
inline std::uint64_t load64(const unsigned char* p) {
  std::uint64_t v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
inline std::uint32_t load32(const unsigned char* p) {
  std::uint32_t v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

inline std::uint64_t mix(std::uint64_t acc, std::uint64_t input) {
  acc += input * kP2;
  return rotl(acc, 31) * kP1;
}

inline std::uint64_t merge(std::uint64_t h, std::uint64_t lane) {
  h ^= mix(0, lane);
  return h * kP1 + kP4;
}

// The 4-lane state of the long-input path.
struct Lanes {
  std::uint64_t v[4];
  explicit Lanes(std::uint64_t seed) : v{seed + kP1 + kP2, seed + kP2, seed, seed - kP1} {}

  // Consumes the whole stripes of p[0, len); returns the bytes consumed.
  std::size_t stripes(const unsigned char* p, std::size_t len) {
    const std::size_t whole = len - len % kStripe;
    std::uint64_t a = v[0], b = v[1], c = v[2], d = v[3];
    for (std::size_t i = 0; i < whole; i += kStripe) {
      a = mix(a, load64(p + i));
      b = mix(b, load64(p + i + 8));
      c = mix(c, load64(p + i + 16));
      d = mix(d, load64(p + i + 24));
    }
    v[0] = a, v[1] = b, v[2] = c, v[3] = d;
    return whole;
  }

  // stripes(), also copying the stripes to dst.
  std::size_t stripes_copy(const unsigned char* p, unsigned char* dst, std::size_t len) {
    const std::size_t whole = len - len % kStripe;
    std::uint64_t a = v[0], b = v[1], c = v[2], d = v[3];
    for (std::size_t i = 0; i < whole; i += kStripe) {
      const std::uint64_t w0 = load64(p + i), w1 = load64(p + i + 8);
      const std::uint64_t w2 = load64(p + i + 16), w3 = load64(p + i + 24);
      std::memcpy(dst + i, &w0, 8), std::memcpy(dst + i + 8, &w1, 8);
      std::memcpy(dst + i + 16, &w2, 8), std::memcpy(dst + i + 24, &w3, 8);
      a = mix(a, w0), b = mix(b, w1), c = mix(c, w2), d = mix(d, w3);
    }
    v[0] = a, v[1] = b, v[2] = c, v[3] = d;
    return whole;
  }

  // stripes(), also telling whether some lane of a word has every bit of s.mask set: a lane
  // of (w & mask) ^ mask is zero exactly then (the "has a zero lane" test, exact as a whole).
  std::size_t stripes_scan(const unsigned char* p, std::size_t len, const LaneScan& s,
                           bool* hit) {
    const std::size_t whole = len - len % kStripe;
    std::uint64_t a = v[0], b = v[1], c = v[2], d = v[3];
    std::uint64_t any = 0;
    auto zero_lane = [&s](std::uint64_t w) {
      const std::uint64_t x = (w & s.mask) ^ s.mask;
      return (x - s.low) & ~x & s.high;
    };
    for (std::size_t i = 0; i < whole; i += kStripe) {
      const std::uint64_t w0 = load64(p + i), w1 = load64(p + i + 8);
      const std::uint64_t w2 = load64(p + i + 16), w3 = load64(p + i + 24);
      any |= zero_lane(w0) | zero_lane(w1) | zero_lane(w2) | zero_lane(w3);
      a = mix(a, w0), b = mix(b, w1), c = mix(c, w2), d = mix(d, w3);
    }
    v[0] = a, v[1] = b, v[2] = c, v[3] = d;
    *hit = any != 0;
    return whole;
  }

  std::uint64_t fold() const {
    std::uint64_t h = rotl(v[0], 1) + rotl(v[1], 7) + rotl(v[2], 12) + rotl(v[3], 18);
    for (std::uint64_t lane : v) h = merge(h, lane);
    return h;
  }
};

// The tail (< 32 bytes) and the final avalanche.
std::uint64_t finish(std::uint64_t h, const unsigned char* p, std::size_t len) {
  for (; len >= 8; p += 8, len -= 8) h = rotl(h ^ mix(0, load64(p)), 27) * kP1 + kP4;
  if (len >= 4) {
    h = rotl(h ^ (std::uint64_t{load32(p)} * kP1), 23) * kP2 + kP3;
    p += 4, len -= 4;
  }
  for (; len > 0; ++p, --len) h = rotl(h ^ (std::uint64_t{*p} * kP5), 11) * kP1;
  h ^= h >> 33;
  h *= kP2;
  h ^= h >> 29;
  h *= kP3;
  h ^= h >> 32;
  return h;
}

}  // namespace

std::uint64_t hash64(const void* data, std::size_t len, std::uint64_t seed) {
  const auto* p = static_cast<const unsigned char*>(data);
  std::uint64_t h = seed + kP5;
  std::size_t used = 0;
  if (len >= kStripe) {
    Lanes lanes(seed);
    used = lanes.stripes(p, len);
    h = lanes.fold();
  }
  return finish(h + len, p + used, len - used);
}

std::uint64_t hash64_concat(const void* prefix, std::size_t prefix_len, const void* data,
                            std::size_t len, std::uint64_t seed) {
  DLION_CHECK(prefix_len % kStripe == 0, InvalidArgument, "hash64_concat: prefix_len = ",
              prefix_len, " is not a multiple of ", kStripe);
  if (prefix_len == 0) return hash64(data, len, seed);
  const auto* p = static_cast<const unsigned char*>(data);
  Lanes lanes(seed);
  lanes.stripes(static_cast<const unsigned char*>(prefix), prefix_len);
  const std::size_t used = lanes.stripes(p, len);
  return finish(lanes.fold() + (prefix_len + len), p + used, len - used);
}

std::uint64_t hash64_concat_copy(const void* prefix, std::size_t prefix_len, const void* src,
                                 void* dst, std::size_t len, std::uint64_t seed) {
  DLION_CHECK(prefix_len % kStripe == 0 && prefix_len > 0, InvalidArgument,
              "hash64_concat_copy: prefix_len = ", prefix_len,
              " is not a positive multiple of ", kStripe);
  const auto* p = static_cast<const unsigned char*>(src);
  auto* q = static_cast<unsigned char*>(dst);
  Lanes lanes(seed);
  lanes.stripes(static_cast<const unsigned char*>(prefix), prefix_len);
  const std::size_t used = lanes.stripes_copy(p, q, len);
  if (len > used) std::memcpy(q + used, p + used, len - used);
  return finish(lanes.fold() + (prefix_len + len), p + used, len - used);
}

std::uint64_t hash64_concat_scan(const void* prefix, std::size_t prefix_len, const void* data,
                                 std::size_t len, const LaneScan& scan, bool* hit,
                                 std::size_t* scanned, std::uint64_t seed) {
  DLION_CHECK(prefix_len % kStripe == 0 && prefix_len > 0, InvalidArgument,
              "hash64_concat_scan: prefix_len = ", prefix_len,
              " is not a positive multiple of ", kStripe);
  const auto* p = static_cast<const unsigned char*>(data);
  Lanes lanes(seed);
  lanes.stripes(static_cast<const unsigned char*>(prefix), prefix_len);
  const std::size_t used = lanes.stripes_scan(p, len, scan, hit);
  *scanned = used;
  return finish(lanes.fold() + (prefix_len + len), p + used, len - used);
}

namespace {

// The message's header with its checksum field zeroed: the hash's 64-byte prefix.
struct ZeroedHead {
  std::uint8_t bytes[kHeaderBytes];
  explicit ZeroedHead(const std::uint8_t* msg) {
    std::memcpy(bytes, msg, kHeaderBytes);
    std::memset(bytes + kChecksumOffset, 0, sizeof(std::uint64_t));
  }
};

}  // namespace

std::uint64_t message_checksum(const std::uint8_t* msg, std::size_t len) {
  const ZeroedHead head(msg);
  return hash64_concat(head.bytes, kHeaderBytes, msg + kHeaderBytes, len - kHeaderBytes);
}

std::uint64_t message_checksum_scan(const std::uint8_t* msg, std::size_t len,
                                    const LaneScan& scan, bool* hit, std::size_t* scanned) {
  const ZeroedHead head(msg);
  return hash64_concat_scan(head.bytes, kHeaderBytes, msg + kHeaderBytes, len - kHeaderBytes,
                            scan, hit, scanned);
}

}  // namespace dlion::wire
