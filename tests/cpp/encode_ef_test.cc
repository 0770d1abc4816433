// Error feedback fused into encoding (wire::encode_compensated) against the unfused sequence
// it replaces: residual += grad; message = encode(residual); residual -= decode(message). Over
// several steps, for every codec (the top-k ones take the one-pass path, with sizes on both
// sides of topk_fast's sampled path and runs that go as CONTIGUOUS), the message bytes and the
// residual bits must be identical.
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <vector>

#include "check.h"
#include "compress/residual.h"
#include "wire/codec.h"
#include "wire/encode.h"

namespace {

namespace wire = dlion::wire;
using wire::Encoding;

constexpr int kSender = 3;
constexpr std::uint32_t kGroup = 7;

std::vector<float> grad(std::size_t n, int step, bool run) {
  std::vector<float> g(n);
  for (std::size_t i = 0; i < n; ++i)
    g[i] = std::sin(static_cast<float>(i) * 0.37f + static_cast<float>(step)) *
           (1.0f + static_cast<float>((i * 2654435761u) % 97) / 13.0f);
  if (run)  // one block of large values: top-k picks exactly this run (CONTIGUOUS)
    for (std::size_t i = n / 3; i < n / 3 + n / 50 && i < n; ++i) g[i] = 1000.0f + float(step);
  return g;
}

bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() &&
         (a.empty() || std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0);
}

void check_codec(const wire::Codec& codec, std::size_t n, bool run, const char* what) {
  std::vector<float> r_ref(n, 0.0f), r_fused(n, 0.0f);
  wire::Fields f;
  f.sender = kSender, f.group = kGroup, f.weight = 0.25f;
  wire::Message reuse;
  for (int step = 0; step < 4; ++step) {
    const std::vector<float> g = grad(n, step, run);
    f.step = static_cast<std::uint64_t>(step);
    const std::uint64_t seed = 0x1234u + static_cast<std::uint64_t>(step);
    dlion::ef_compensate(r_ref.data(), g.data(), n);
    const wire::Message m_ref = wire::encode(r_ref.data(), n, codec, f, seed);
    const wire::Decoded d = wire::validate(m_ref.data(), m_ref.size(), kSender, kGroup, n);
    wire::apply_add(d, r_ref.data(), n, -1.0f);
    reuse = wire::encode_compensated(r_fused.data(), g.data(), n, codec, f, seed, nullptr,
                                     std::move(reuse));
    CHECK(reuse.size() == m_ref.size() &&
              std::memcmp(reuse.data(), m_ref.data(), m_ref.size()) == 0,
          "%s n=%zu step %d: message differs (%zu vs %zu bytes)", what, n, step, reuse.size(),
          m_ref.size());
    CHECK(same_bits(r_ref, r_fused), "%s n=%zu step %d: residual differs", what, n, step);
    CHECK(reuse.size() <= wire::encoded_bound(n, codec), "%s n=%zu: bound %zu < %zu", what, n,
          wire::encoded_bound(n, codec), reuse.size());
  }
}

void test_codecs() {
  const std::size_t sizes[] = {0, 1, 5, 1000, 70001, 200000};
  for (std::size_t n : sizes) {
    for (bool run : {false, true}) {
      for (std::uint64_t k : {std::uint64_t{1}, n / 100 + 1, n / 50, n / 3, n}) {
        wire::Codec c;
        c.k = k;
        c.encoding = Encoding::kSparseF32;
        check_codec(c, n, run, "sparse_f32");
        c.encoding = Encoding::kSparseQsgd8;
        c.bucket = 64;
        check_codec(c, n, run, "sparse_qsgd8");
      }
    }
    wire::Codec q;
    q.encoding = Encoding::kQsgd, q.bits = 4, q.bucket = 100;
    check_codec(q, n, false, "qsgd4");
    wire::Codec s;
    s.encoding = Encoding::kSign;
    check_codec(s, n, false, "sign");
    wire::Codec h;
    h.encoding = Encoding::kFp16;
    check_codec(h, n, false, "fp16");
  }
}

void test_bound() {
  wire::Codec c;
  c.encoding = Encoding::kSparseF32, c.k = 10, c.select = wire::Select::kThreshold;
  CHECK(wire::encoded_bound(100, c) == wire::kHeaderBytes + 800, "threshold bound");
  c.encoding = Encoding::kQsgd, c.bits = 3;
  CHECK(wire::encoded_bound(100, c) == wire::kHeaderBytes, "a bad codec gives the header");
  c.encoding = Encoding::kDenseF32, c.bits = 0;
  CHECK(wire::encoded_bound(100, c) == wire::kHeaderBytes + 400, "dense bound");
}

}  // namespace

int main() {
  test_codecs();
  test_bound();
  std::printf("encode_ef_test: ok\n");
  return 0;
}
