// The checksum's fused passes against the plain ones: hash64_concat_copy gives hash64_concat's
// value and an exact copy; hash64_concat_scan gives its value and finds an all-ones lane
// exactly where a scalar loop over the stripes does (float32 and 16-bit lanes); and a dense
// float32 message from wire::encode (copied while checksummed) equals one laid out by hand.
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <vector>

#include "check.h"
#include "wire/checksum.h"
#include "wire/codec.h"
#include "wire/encode.h"

namespace {

namespace wire = dlion::wire;

std::uint64_t next(std::uint64_t& s) {
  s += 0x9e3779b97f4a7c15ull;
  std::uint64_t z = s;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

std::vector<unsigned char> bytes(std::size_t n, std::uint64_t seed) {
  std::vector<unsigned char> b(n);
  for (auto& c : b) c = static_cast<unsigned char>(next(seed));
  return b;
}

void test_copy() {
  const std::vector<unsigned char> prefix = bytes(64, 1);
  for (std::size_t len : {0, 1, 7, 31, 32, 33, 63, 64, 100, 1000, 65537}) {
    const std::vector<unsigned char> src = bytes(len, len + 2);
    std::vector<unsigned char> dst(len + 1, 0xab);
    const std::uint64_t want = wire::hash64_concat(prefix.data(), 64, src.data(), len);
    const std::uint64_t got =
        wire::hash64_concat_copy(prefix.data(), 64, src.data(), dst.data(), len);
    CHECK(got == want, "copy hash differs at len %zu", len);
    CHECK(len == 0 || std::memcmp(dst.data(), src.data(), len) == 0, "copy differs, len %zu",
          len);
    CHECK(dst[len] == 0xab, "copy wrote past len %zu", len);
  }
}

// Whether a lane of `width` bits of data[0, upto) has every bit of mask set.
bool scalar_hit(const std::vector<unsigned char>& d, std::size_t upto, unsigned width,
                std::uint32_t mask) {
  for (std::size_t i = 0; i + width / 8 <= upto; i += width / 8) {
    std::uint32_t v = 0;
    std::memcpy(&v, d.data() + i, width / 8);
    if ((v & mask) == mask) return true;
  }
  return false;
}

void test_scan() {
  const std::vector<unsigned char> prefix = bytes(64, 3);
  struct Kind {
    wire::LaneScan scan;
    unsigned width;
    std::uint32_t mask;
  };
  const Kind kinds[] = {{wire::kScanF32, 32, 0x7f800000u},
                        {wire::kScanF16, 16, 0x7c00u},
                        {wire::kScanBf16, 16, 0x7f80u}};
  std::uint64_t seed = 9;
  for (const Kind& k : kinds) {
    for (int trial = 0; trial < 400; ++trial) {
      const std::size_t len = (next(seed) % 300) & ~std::size_t{3};
      std::vector<unsigned char> d(len);
      // Lanes mostly clear of the mask, some with all but one of its bits, a few with all.
      for (std::size_t i = 0; i + k.width / 8 <= len; i += k.width / 8) {
        std::uint32_t v = static_cast<std::uint32_t>(next(seed)) & ~k.mask;
        const std::uint64_t r = next(seed) % 100;
        if (r < 10) v |= k.mask & ~(k.mask & (0u - k.mask));  // one bit short
        if (r < static_cast<std::uint64_t>(2 + trial % 3)) v |= k.mask;
        std::memcpy(d.data() + i, &v, k.width / 8);
      }
      bool hit = false;
      std::size_t scanned = 99;
      const std::uint64_t got =
          wire::hash64_concat_scan(prefix.data(), 64, d.data(), len, k.scan, &hit, &scanned);
      CHECK(got == wire::hash64_concat(prefix.data(), 64, d.data(), len), "scan hash differs");
      CHECK(scanned == len - len % 32, "scanned %zu of %zu", scanned, len);
      CHECK(hit == scalar_hit(d, scanned, k.width, k.mask), "hit %d wrong (width %u, len %zu)",
            int{hit}, k.width, len);
    }
  }
}

void test_dense_encode() {
  for (std::size_t n : {0, 1, 9, 1000, 4097}) {
    std::vector<float> x(n);
    for (std::size_t i = 0; i < n; ++i) x[i] = static_cast<float>(i) * 0.5f - 3.0f;
    wire::Fields f;
    f.sender = 1, f.group = 2, f.step = 3, f.weight = 0.5f;
    const wire::Message m = wire::encode(x.data(), n, wire::Codec{}, f, 0);
    wire::Message ref(wire::kHeaderBytes + 4 * n);
    if (n > 0) std::memcpy(ref.data() + wire::kHeaderBytes, x.data(), 4 * n);
    f.encoding = wire::Encoding::kDenseF32, f.bits = 32, f.n = n, f.k = n;
    wire::encode_header(f, ref.data(), ref.size());
    CHECK(m.size() == ref.size() && std::memcmp(m.data(), ref.data(), m.size()) == 0,
          "dense message differs at n %zu", n);
  }
}

}  // namespace

int main() {
  test_copy();
  test_scan();
  test_dense_encode();
  std::printf("checksum_test: ok\n");
  return 0;
}
