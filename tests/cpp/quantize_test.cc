// Codec kernels (quantize.h, cast.h, residual.h) against plain C++ references, on both SIMD
// variants (they must agree bit for bit), with edge cases: n = 0, ragged buckets, all-zero and
// subnormal buckets, +-0, non-finite input, bad arguments.
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "check.h"
#include "common/error.h"
#include "compress/cast.h"
#include "compress/quantize.h"
#include "compress/residual.h"
#include "compress/simd.h"

namespace {

std::uint32_t bits_of(float f) {
  std::uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}

float float_of(std::uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

// Value of a half (exact, via ldexp).
double half_value(std::uint16_t h) {
  const int e = (h >> 10) & 0x1f;
  const int m = h & 0x3ff;
  const double s = (h & 0x8000) ? -1.0 : 1.0;
  if (e == 0) return s * std::ldexp(m, -24);
  if (e == 31) return m ? std::nan("") : s * INFINITY;
  return s * std::ldexp(1024 + m, e - 25);
}

// Round-to-nearest-even of |f| among the sorted non-negative values val[0..count) (val[count-1]
// stands for the overflow value: inf); ties go to the even index.
std::uint32_t nearest_even(const std::vector<double>& val, double a) {
  std::size_t lo = 0, hi = val.size() - 1;
  if (a >= val[hi]) return static_cast<std::uint32_t>(hi);
  while (hi - lo > 1) {
    const std::size_t mid = (lo + hi) / 2;
    (val[mid] <= a ? lo : hi) = mid;
  }
  const double dl = a - val[lo], dh = val[hi] - a;
  if (dl < dh) return static_cast<std::uint32_t>(lo);
  if (dh < dl) return static_cast<std::uint32_t>(hi);
  return static_cast<std::uint32_t>(lo % 2 == 0 ? lo : hi);
}

std::vector<float> cast_inputs(std::mt19937_64& rng) {
  std::vector<float> xs = {0.0f, -0.0f, INFINITY, -INFINITY, 65504.0f, 65519.99f, 65520.0f,
                           -65520.0f, 1e30f, 5.96e-8f, 2.98e-8f, 2.99e-8f, 1e-45f,
                           std::numeric_limits<float>::max(), -std::numeric_limits<float>::max()};
  for (std::uint32_t h = 0; h < 0x7c00; ++h) {  // every half, the ties between them, +-1 ulp
    const float v = static_cast<float>(half_value(static_cast<std::uint16_t>(h)));
    const float mid = static_cast<float>((half_value(static_cast<std::uint16_t>(h)) +
                                          half_value(static_cast<std::uint16_t>(h + 1))) / 2);
    for (float f : {v, mid, std::nextafter(mid, 0.0f), std::nextafter(mid, INFINITY)}) {
      xs.push_back(f);
      xs.push_back(-f);
    }
  }
  std::uniform_int_distribution<std::uint32_t> any;
  for (int i = 0; i < 200000; ++i) {
    const std::uint32_t u = any(rng);
    if ((u & 0x7f800000u) != 0x7f800000u) xs.push_back(float_of(u));
  }
  return xs;
}

void test_fp16(std::mt19937_64& rng) {
  std::vector<std::uint16_t> all(65536);
  for (std::uint32_t h = 0; h < 65536; ++h) all[h] = static_cast<std::uint16_t>(h);
  std::vector<float> back(65536);
  dlion::from_fp16(all.data(), all.size(), back.data());
  for (std::uint32_t h = 0; h < 65536; ++h) {
    const double ref = half_value(static_cast<std::uint16_t>(h));
    if (std::isnan(ref)) {
      CHECK(std::isnan(back[h]) && (bits_of(back[h]) >> 31) == (h >> 15), "from_fp16 %x", h);
      CHECK((bits_of(back[h]) & 0x7fffffu) == ((h & 0x3ffu) << 13), "NaN payload %x", h);
    } else {
      CHECK(static_cast<double>(back[h]) == ref && std::signbit(back[h]) == ((h >> 15) != 0),
            "from_fp16 %x", h);
    }
  }
  std::vector<double> val;  // non-negative finite halves, then 65536 standing for inf
  for (std::uint32_t h = 0; h < 0x7c00; ++h) val.push_back(half_value(static_cast<std::uint16_t>(h)));
  val.push_back(65536.0);
  const std::vector<float> xs = cast_inputs(rng);
  std::vector<std::uint16_t> got(xs.size());
  dlion::to_fp16(xs.data(), xs.size(), got.data());
  for (std::size_t i = 0; i < xs.size(); ++i) {
    const std::uint32_t mag = nearest_even(val, std::fabs(static_cast<double>(xs[i])));
    const std::uint32_t ref = mag | (std::signbit(xs[i]) ? 0x8000u : 0u);
    CHECK(got[i] == ref, "to_fp16(%a) = %x, expected %x", static_cast<double>(xs[i]), got[i], ref);
  }
  const float nans[] = {float_of(0x7fc00000u), float_of(0xffc00001u), float_of(0x7f800001u)};
  std::uint16_t hn[3];
  dlion::to_fp16(nans, 3, hn);
  CHECK(hn[0] == 0x7e00 && hn[1] == 0xfe00 && hn[2] == 0x7e00, "NaN %x %x %x", hn[0], hn[1], hn[2]);
}

void test_bf16(std::mt19937_64& rng) {
  const std::vector<float> xs = cast_inputs(rng);
  std::vector<std::uint16_t> got(xs.size());
  dlion::to_bf16(xs.data(), xs.size(), got.data());
  for (std::size_t i = 0; i < xs.size(); ++i) {
    const std::uint32_t u = bits_of(xs[i]);
    const std::uint32_t lo = u >> 16, hi = lo + 1;
    const double a = std::fabs(static_cast<double>(xs[i]));
    const double dl = a - std::fabs(static_cast<double>(float_of(lo << 16)));
    double up = std::fabs(static_cast<double>(float_of(hi << 16)));
    if ((hi & 0x7fffu) == 0x7f80u) up = std::ldexp(1.0, 128);  // rounding up reaches inf
    const double dup = up - a;
    const std::uint32_t ref = dl < dup ? lo : dup < dl ? hi : (lo % 2 == 0 ? lo : hi);
    CHECK(got[i] == ref, "to_bf16(%a) = %x, expected %x", static_cast<double>(xs[i]), got[i], ref);
    float back;
    dlion::from_bf16(&got[i], 1, &back);
    CHECK(bits_of(back) == (static_cast<std::uint32_t>(got[i]) << 16), "from_bf16 %x", got[i]);
  }
  const float nans[] = {float_of(0x7f800001u), float_of(0xffc00000u)};
  std::uint16_t b[2];
  dlion::to_bf16(nans, 2, b);
  CHECK(b[0] == 0x7fc0 && b[1] == 0xffc0, "bf16 NaN %x %x", b[0], b[1]);
}

// The level of element i by plain bit extraction (two's complement field).
int field(const std::vector<std::uint8_t>& p, std::size_t i, int bits) {
  int v = 0;
  for (int k = 0; k < bits; ++k) {
    const std::size_t bit = i * static_cast<std::size_t>(bits) + static_cast<std::size_t>(k);
    v |= ((p[bit / 8] >> (bit % 8)) & 1) << k;
  }
  return v >= (1 << (bits - 1)) ? v - (1 << bits) : v;
}

std::vector<float> qsgd_input(std::size_t n, std::mt19937_64& rng) {
  std::normal_distribution<float> normal;
  std::vector<float> x(n);
  for (auto& v : x) v = normal(rng);
  for (std::size_t i = 0; i < n; i += 5) x[i] = 0.0f;
  for (std::size_t i = 3; i < n; i += 11) x[i] = -0.0f;
  for (std::size_t i = n / 3; i < n / 3 + 20 && i < n; ++i) x[i] *= 1e-40f;  // subnormal
  for (std::size_t i = n / 2; i < n / 2 + 600 && i < n; ++i) x[i] = 0.0f;      // zero bucket
  return x;
}

void check_qsgd(const std::vector<float>& x, int bits, std::size_t bucket, std::uint64_t seed) {
  const std::size_t n = x.size();
  const int L = (1 << (bits - 1)) - 1;
  std::vector<std::uint8_t> p(dlion::qsgd_packed_bytes(n, bits) + 1, 0xab);
  std::vector<float> s(dlion::qsgd_buckets(n, bucket) + 1, -1.0f), y(n + 1, -7.0f);
  CHECK(p.size() - 1 == (n * static_cast<std::size_t>(bits) + 7) / 8, "bytes n=%zu", n);
  dlion::qsgd_encode(x.data(), n, bits, bucket, seed, p.data(), s.data());
  dlion::qsgd_decode(p.data(), s.data(), n, bits, bucket, y.data());
  CHECK(p.back() == 0xab && s.back() == -1.0f && y.back() == -7.0f, "wrote past the end");
  if (n * static_cast<std::size_t>(bits) % 8 != 0)
    CHECK((p[p.size() - 2] >> (n * static_cast<std::size_t>(bits) % 8)) == 0, "padding bits");
  for (std::size_t i = 0; i < n; ++i) {
    const std::size_t b = i / bucket;
    float scale = 0.0f;
    for (std::size_t j = b * bucket; j < n && j < (b + 1) * bucket; ++j)
      scale = std::max(scale, std::fabs(x[j]));
    CHECK(s[b] == scale, "scale bucket %zu", b);
    const int q = field(p, i, bits);
    const double v = scale == 0.0f ? 0.0 : std::fabs(static_cast<double>(x[i])) / scale * L;
    const int aq = std::abs(q);
    CHECK(aq <= L && std::fabs(aq - v) < 1.0 + 1e-5 && (q == 0 || (q < 0) == (x[i] < 0)),
          "level bits=%d i=%zu q=%d v=%f", bits, i, q, v);
    const float ref = aq == L ? (q < 0 ? -scale : scale) : static_cast<float>(q) * (scale / static_cast<float>(L));
    CHECK(bits_of(y[i]) == bits_of(ref) || (y[i] == 0.0f && ref == 0.0f), "decode i=%zu", i);
    CHECK(std::fabs(static_cast<double>(y[i]) - x[i]) <= static_cast<double>(scale) / L * (1 + 1e-5),
          "bound i=%zu", i);
    if (x[i] == 0.0f || std::fabs(x[i]) == scale) CHECK(y[i] == x[i], "exact level i=%zu", i);
  }
}

std::vector<std::uint8_t> encode_bytes(const std::vector<float>& x, int bits, std::size_t bucket,
                                       std::uint64_t seed) {
  std::vector<std::uint8_t> p(dlion::qsgd_packed_bytes(x.size(), bits));
  std::vector<float> s(dlion::qsgd_buckets(x.size(), bucket));
  dlion::qsgd_encode(x.data(), x.size(), bits, bucket, seed, p.data(), s.data());
  p.insert(p.end(), reinterpret_cast<std::uint8_t*>(s.data()),
           reinterpret_cast<std::uint8_t*>(s.data() + s.size()));
  return p;
}

void test_qsgd(std::mt19937_64& rng) {
  for (int bits : {2, 4, 8})
    for (std::size_t n : {0, 1, 7, 8, 9, 63, 511, 512, 513, 1000, 4099})
      for (std::size_t bucket : {1, 3, 8, 100, 512, 1000}) check_qsgd(qsgd_input(n, rng), bits, bucket, n);
  const std::vector<float> x = qsgd_input(5000, rng);
  for (int bits : {2, 4, 8}) {
    CHECK(encode_bytes(x, bits, 512, 9) == encode_bytes(x, bits, 512, 9), "deterministic");
    CHECK(encode_bytes(x, bits, 512, 9) != encode_bytes(x, bits, 512, 10), "seed matters");
  }
  // Unbiased: the mean over many seeds approaches x.
  std::vector<float> xs(64), y(64);
  for (std::size_t i = 0; i < xs.size(); ++i) xs[i] = static_cast<float>(i) / 63.0f - 0.3f;
  for (int bits : {2, 8}) {
    std::vector<double> sum(64, 0.0);
    const int reps = 4000;
    std::vector<std::uint8_t> p(dlion::qsgd_packed_bytes(64, bits));
    float s;
    for (int r = 0; r < reps; ++r) {
      dlion::qsgd_encode(xs.data(), 64, bits, 64, static_cast<std::uint64_t>(r), p.data(), &s);
      dlion::qsgd_decode(p.data(), &s, 64, bits, 64, y.data());
      for (std::size_t i = 0; i < 64; ++i) sum[i] += y[i];
    }
    const double step = 0.7 / ((1 << (bits - 1)) - 1);
    for (std::size_t i = 0; i < 64; ++i)
      CHECK(std::fabs(sum[i] / reps - xs[i]) < 5 * 0.5 * step / std::sqrt(reps), "bias bits=%d i=%zu", bits, i);
  }
}

// +-scale lands exactly on +-L for any scale, in particular where the float factor
// L * 2^24 / scale times scale rounds below L * 2^24 (about 1 scale in 8; the kernels then move
// the factor up one ulp): without that, 8 bits would round +-scale to +-126 once in 2^16.
void test_scale_lands_on_top(std::mt19937_64& rng) {
  std::uniform_int_distribution<std::uint32_t> any(0x00800000u, 0x7effffffu);  // normal floats
  const std::size_t n = 4096;
  std::vector<float> x(n);
  std::vector<std::uint8_t> p(n);
  float s = 0.0f;
  for (int bits : {2, 4, 8}) {
    const int L = (1 << (bits - 1)) - 1;
    const float top = static_cast<float>(L) * 0x1p24f;
    int below = 0;
    for (std::uint64_t seed = 0; below < 400; ++seed) {
      const float scale = float_of(any(rng));
      if (scale * (top / scale) >= top) continue;  // only the scales whose factor rounds low
      ++below;
      for (std::size_t i = 0; i < n; ++i) x[i] = i % 3 == 1 ? -scale : scale;
      dlion::qsgd_encode(x.data(), n, bits, n, seed, p.data(), &s);
      for (std::size_t i = 0; i < n; ++i)
        CHECK(field(p, i, bits) == (i % 3 == 1 ? -L : L), "x[%zu] = %a bits=%d", i,
              static_cast<double>(x[i]), bits);
    }
  }
}

void test_errors() {
  std::vector<float> x(2000, 1.0f);
  std::vector<std::uint8_t> p(2000);
  std::vector<float> s(10);
  CHECK(error_of([&] { dlion::qsgd_encode(x.data(), 10, 3, 4, 0, p.data(), s.data()); }).find("bits") != std::string::npos, "bits");
  CHECK(!error_of([&] { dlion::qsgd_packed_bytes(10, 16); }).empty(), "bits 16");
  CHECK(!error_of([&] { dlion::qsgd_encode(x.data(), 10, 8, 0, 0, p.data(), s.data()); }).empty(), "bucket 0");
  CHECK(!error_of([&] { dlion::qsgd_decode(p.data(), s.data(), 10, 8, 0, x.data()); }).empty(), "bucket 0");
  x[1777] = NAN;
  const std::string e1 = error_of([&] { dlion::qsgd_encode(x.data(), 2000, 4, 512, 0, p.data(), s.data()); });
  CHECK(e1.find("x[1777]") != std::string::npos && e1.find("NaN") != std::string::npos, "%s", e1.c_str());
  x[1777] = 1.0f;
  x[5] = -INFINITY;
  const std::string e2 = error_of([&] { float sc; dlion::sign_encode(x.data(), 2000, p.data(), &sc); });
  CHECK(e2.find("x[5]") != std::string::npos && e2.find("infinite") != std::string::npos, "%s", e2.c_str());
}

void test_sign(std::mt19937_64& rng) {
  for (std::size_t n : {0, 1, 7, 8, 9, 1001}) {
    std::vector<float> x = qsgd_input(n, rng);
    std::vector<std::uint8_t> b((n + 7) / 8 + 1, 0xcd);
    std::vector<float> y(n);
    float scale = -1.0f;
    dlion::sign_encode(x.data(), n, b.data(), &scale);
    double sum = 0;
    for (float v : x) sum += std::fabs(static_cast<double>(v));
    CHECK(scale == (n ? static_cast<float>(sum / static_cast<double>(n)) : 0.0f), "scale n=%zu", n);
    CHECK(b.back() == 0xcd, "past the end");
    if (n % 8) CHECK((b[n / 8] >> (n % 8)) == 0, "padding");
    dlion::sign_decode(b.data(), scale, n, y.data());
    for (std::size_t i = 0; i < n; ++i) {
      CHECK(((b[i / 8] >> (i % 8)) & 1) == (x[i] >= 0.0f ? 1 : 0), "bit %zu", i);
      CHECK(y[i] == (x[i] >= 0.0f ? scale : -scale), "decode %zu", i);
    }
  }
}

void test_residual(std::mt19937_64& rng) {
  const std::size_t n = 3000;
  std::normal_distribution<float> normal;
  std::vector<float> residual(n, 0.0f), g(n), sent(n);
  std::vector<double> total_in(n, 0.0), total_sent(n, 0.0);
  std::vector<std::uint8_t> p(dlion::qsgd_packed_bytes(n, 4));
  std::vector<float> s(dlion::qsgd_buckets(n, 512));
  std::vector<std::uint32_t> idx;
  for (int step = 0; step < 20; ++step) {
    for (std::size_t i = 0; i < n; ++i) total_in[i] += g[i] = normal(rng);
    dlion::ef_compensate(residual.data(), g.data(), n);
    if (step % 2 == 0) {
      dlion::qsgd_encode(residual.data(), n, 4, 512, static_cast<std::uint64_t>(step), p.data(), s.data());
      dlion::qsgd_decode(p.data(), s.data(), n, 4, 512, sent.data());
      for (std::size_t i = 0; i < n; ++i) total_sent[i] += sent[i];
      dlion::ef_after_dense(residual.data(), sent.data(), n);
    } else {
      idx.clear();
      for (std::uint32_t i = 0; i < n; ++i)
        if (rng() % 10 == 0) idx.push_back(i);
      for (auto i : idx) total_sent[i] += residual[i];
      dlion::ef_after_sparse(residual.data(), idx.data(), idx.size(), n);
    }
  }
  for (std::size_t i = 0; i < n; ++i)
    CHECK(std::fabs(total_sent[i] + residual[i] - total_in[i]) < 1e-4, "conservation %zu", i);
  const std::vector<float> before = residual;
  const std::uint32_t bad[] = {1, 2, static_cast<std::uint32_t>(n)};
  const std::string e = error_of([&] { dlion::ef_after_sparse(residual.data(), bad, 3, n); });
  CHECK(e.find("idx[2]") != std::string::npos, "%s", e.c_str());
  CHECK(residual == before, "nothing written on error");
}

void run_all(std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  test_fp16(rng);
  test_bf16(rng);
  test_qsgd(rng);
  test_scale_lands_on_top(rng);
  test_errors();
  test_sign(rng);
  test_residual(rng);
}

// Both SIMD variants give the same bytes (QSGD, fp16, sign bits and scale).
void test_variants_agree() {
  std::mt19937_64 rng(5);
  const std::vector<float> x = qsgd_input(70001, rng);
  std::vector<std::uint16_t> h(x.size());
  std::vector<std::uint8_t> out[2];
  for (int forced = 0; forced < 2; ++forced) {
    dlion::detail::simd_force_baseline(forced == 1);
    for (int bits : {2, 4, 8}) {
      const auto p = encode_bytes(x, bits, 300, 3);
      out[forced].insert(out[forced].end(), p.begin(), p.end());
    }
    for (std::size_t n : {x.size(), std::size_t{37}, std::size_t{5}}) {  // ragged tails too
      dlion::to_fp16(x.data(), n, h.data());
      out[forced].insert(out[forced].end(), reinterpret_cast<std::uint8_t*>(h.data()),
                         reinterpret_cast<std::uint8_t*>(h.data() + n));
      std::vector<std::uint8_t> b(dlion::sign_packed_bytes(n));
      float scale = 0.0f;
      dlion::sign_encode(x.data(), n, b.data(), &scale);
      out[forced].insert(out[forced].end(), b.begin(), b.end());
      out[forced].insert(out[forced].end(), reinterpret_cast<std::uint8_t*>(&scale),
                         reinterpret_cast<std::uint8_t*>(&scale + 1));
    }
    std::vector<float> tiny(x.begin(), x.begin() + 3000);  // scales below 2^-96
    for (float& v : tiny) v *= 1e-31f;
    for (int bits : {2, 4, 8}) {
      const auto p = encode_bytes(tiny, bits, 512, 4);
      out[forced].insert(out[forced].end(), p.begin(), p.end());
      for (std::size_t n : {std::size_t{1}, std::size_t{45}, std::size_t{1003}}) {
        // buckets that are not a multiple of the 8 lanes
        const auto q = encode_bytes(std::vector<float>(x.begin(), x.begin() + n), bits, 13, 11);
        out[forced].insert(out[forced].end(), q.begin(), q.end());
      }
    }
  }
  dlion::detail::simd_force_baseline(false);
  CHECK(out[0] == out[1], "AVX2 and baseline variants differ");
}

}  // namespace

int main() {
  std::printf("quantize_test: avx2=%d\n", dlion::detail::simd_avx2() ? 1 : 0);
  run_all(42);
  dlion::detail::simd_force_baseline(true);
  run_all(43);
  dlion::detail::simd_force_baseline(false);
  test_variants_agree();
  std::printf("quantize_test: ok\n");
  return 0;
}
