// Top-k by magnitude via radix select on the magnitude bit pattern. For a finite float the bits
// with the sign cleared (the "key") order exactly as |x| does, and every NaN or Inf has a key of
// at least kNonFinite. A key splits into three digits (bits 20-30, 9-19, 0-8); each digit level
// narrows the set that can hold the k-th largest key until the key is known exactly. Streaming
// passes test 16 elements at a time with plain integer SIMD and only look closer at a block
// that holds a hit.
#include "compress/topk.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>
#include <functional>
#include <numeric>
#include <vector>

#include "common/error.h"

namespace dlion {
namespace {

// A candidate entry: its value (the key is key_of(val)) and its index in x.
struct Cand {
  float val;
  std::uint32_t idx;
};

inline std::uint32_t key_of(float v) {
  std::uint32_t bits;
  std::memcpy(&bits, &v, sizeof bits);
  return bits & 0x7fffffffu;
}

constexpr std::uint32_t kNonFinite = 0x7f800000u;  // key of +Inf; NaN keys are above
constexpr std::size_t kBlock = 16;                 // elements tested at once before a slow look

struct Level {
  unsigned shift;
  unsigned width;
};
constexpr std::array<Level, 3> kLevels{{{20, 11}, {9, 11}, {0, 9}}};
constexpr std::size_t kTopBuckets = std::size_t{1} << 11;

[[noreturn]] void throw_nonfinite(const float* x, std::size_t n, std::size_t at) {
  for (; at < n; ++at)
    if (key_of(x[at]) >= kNonFinite) break;
  throw InvalidArgument(detail::concat(
      "top-k: x[", at, "] is ", x[at],
      "; top-k needs finite input (NaN and Inf have no magnitude order), so clean or clip the "
      "tensor first (e.g. np.nan_to_num)"));
}

void check_finite(const float* x, std::size_t n) {
  std::uint32_t max_key = 0;
  for (std::size_t i = 0; i < n; ++i) max_key = std::max(max_key, key_of(x[i]));
  if (max_key >= kNonFinite) throw_nonfinite(x, n, 0);
}

// Four uint32 lanes (GCC/Clang vector extension: SSE2 on x86-64, NEON on ARM, plain code on
// anything else), so the block test below vectorises without target flags.
using U32x4 = std::uint32_t __attribute__((vector_size(16)));

// True when some key of x[0..kBlock) is >= lo. Keys and lo are below 2^31, so key >= lo exactly
// when lo - 1 - key has its top bit set: subtract and or, no compare needed.
inline bool block_has(const float* x, std::uint32_t lo) {
  if (lo == 0) return true;
  const U32x4 mask = {0x7fffffffu, 0x7fffffffu, 0x7fffffffu, 0x7fffffffu};
  const U32x4 below = {lo - 1, lo - 1, lo - 1, lo - 1};
  U32x4 any = {0, 0, 0, 0};
  for (std::size_t j = 0; j < kBlock; j += 4) {
    U32x4 bits;
    std::memcpy(&bits, x + j, sizeof bits);
    any |= below - (bits & mask);
  }
  return ((any[0] | any[1] | any[2] | any[3]) >> 31) != 0;
}

// Calls on_range(begin, end) for every block of x that holds a key >= lo, in order, and for the
// tail shorter than a block; stops early when on_range returns false (then returns false).
template <typename OnRange>
bool for_hit_blocks(const float* x, std::size_t n, std::uint32_t lo, OnRange on_range) {
  std::size_t i = 0;
  for (; i + kBlock <= n; i += kBlock)
    if (block_has(x + i, lo) && !on_range(i, i + kBlock)) return false;
  return i == n || on_range(i, n);
}

// Histogram of the top digit (bits 20-30) of every key; four interleaved copies keep repeated
// buckets from serialising on one counter.
std::vector<std::size_t> top_histogram(const float* x, std::size_t n) {
  std::vector<std::uint32_t> h(4 * kTopBuckets, 0);
  std::size_t i = 0;
  for (; i + 4 <= n; i += 4) {
    ++h[0 * kTopBuckets + (key_of(x[i]) >> 20)];
    ++h[1 * kTopBuckets + (key_of(x[i + 1]) >> 20)];
    ++h[2 * kTopBuckets + (key_of(x[i + 2]) >> 20)];
    ++h[3 * kTopBuckets + (key_of(x[i + 3]) >> 20)];
  }
  for (; i < n; ++i) ++h[key_of(x[i]) >> 20];
  std::vector<std::size_t> total(kTopBuckets);
  for (std::size_t b = 0; b < kTopBuckets; ++b)
    total[b] = std::size_t{h[b]} + h[kTopBuckets + b] + h[2 * kTopBuckets + b] +
               h[3 * kTopBuckets + b];
  return total;
}

// Scanning buckets from the top, the bucket where the count reaches need (1 <= need <= total);
// need becomes the rank inside that bucket.
template <typename Hist>
std::uint32_t find_bucket(const Hist& h, std::size_t size, std::size_t& need) {
  std::size_t d = size - 1;
  while (h[d] < need) need -= h[d--];
  return static_cast<std::uint32_t>(d);
}

// The key of rank r (1 = largest) among the candidates, all of whose keys start with `prefix`
// above digit `level`; ties: how many candidates equal to that key the top r hold.
struct Threshold {
  std::uint32_t key;
  std::size_t ties;
};

Threshold kth_key(const std::vector<Cand>& c, std::size_t r, std::size_t level,
                  std::uint32_t prefix) {
  std::array<std::size_t, kTopBuckets> h{};
  for (; level < kLevels.size(); ++level) {
    const Level L = kLevels[level];
    const std::uint32_t mask = (1u << L.width) - 1;
    h.fill(0);
    for (const Cand& e : c) {
      const std::uint32_t key = key_of(e.val);
      if ((key >> (L.shift + L.width)) == prefix) ++h[(key >> L.shift) & mask];
    }
    const std::uint32_t d = find_bucket(h, std::size_t{mask} + 1, r);
    prefix = (prefix << L.width) | d;
  }
  return {prefix, r};
}

// Writes, in candidate (= index) order, the candidates above t.key and the first t.ties equal
// to it.
void emit(const std::vector<Cand>& c, Threshold t, std::uint32_t* idx, float* val) {
  std::size_t s = 0;
  for (const Cand& e : c) {
    const std::uint32_t key = key_of(e.val);
    if (key > t.key || (key == t.key && t.ties > 0)) {
      if (key == t.key) --t.ties;
      idx[s] = e.idx;
      val[s++] = e.val;
    }
  }
}

// (idx, val)[0..g) and (sel_idx, sel_val)[0..r) are ascending in index and disjoint: merge them
// into (idx, val)[0..g+r), from the back.
void merge_back(std::uint32_t* idx, float* val, std::size_t g, const std::uint32_t* sel_idx,
                const float* sel_val, std::size_t r) {
  std::size_t o = g + r;
  while (r > 0) {
    --o;
    if (g > 0 && idx[g - 1] > sel_idx[r - 1]) {
      --g;
      idx[o] = idx[g];
      val[o] = val[g];
    } else {
      --r;
      idx[o] = sel_idx[r];
      val[o] = sel_val[r];
    }
  }
}

void check_sizes(std::size_t n, std::size_t k, const char* what) {
  DLION_CHECK(n <= 0xffffffffu, InvalidArgument, what, ": n = ", n,
              " elements; indices are 32-bit, so split the tensor into pieces under 2^32");
  DLION_CHECK(k <= n, InvalidArgument, what, ": k = ", k, " is larger than the ", n,
              " elements of the input; pass k <= x.size");
}

void take_all(const float* x, std::size_t n, std::uint32_t* idx, float* val) {
  check_finite(x, n);
  std::iota(idx, idx + n, std::uint32_t{0});
  std::copy(x, x + n, val);
}

// Pass 2 of topk_exact: entries whose top digit is above b go to (idx, val) (ascending; fewer
// than k), those in bucket b to cand (sized to the bucket's count + 1). Branch-free inside a
// block with a hit: every element is written, only hits advance the counts. Returns how many
// went to idx; cand is cut to its count.
std::size_t split_at_bucket(const float* x, std::size_t n, std::uint32_t b, std::uint32_t* idx,
                            float* val, std::vector<Cand>& cand) {
  std::size_t g = 0;
  std::size_t c = 0;
  for_hit_blocks(x, n, b << 20, [&](std::size_t begin, std::size_t end) {
    for (std::size_t i = begin; i < end; ++i) {
      const std::uint32_t digit = key_of(x[i]) >> 20;
      idx[g] = static_cast<std::uint32_t>(i);
      val[g] = x[i];
      g += digit > b;
      cand[c] = {x[i], static_cast<std::uint32_t>(i)};
      c += digit == b;
    }
    return true;
  });
  cand.resize(c);
  return g;
}

// splitmix64 (Steele, Lea, Flood 2014): small, fast, and the same output everywhere.
std::uint64_t splitmix64(std::uint64_t& state) {
  std::uint64_t z = (state += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

// Uniform in [0, range), range >= 1, without bias (Lemire 2019, 32-bit form).
std::uint32_t bounded(std::uint64_t& state, std::uint32_t range) {
  std::uint64_t m = (splitmix64(state) >> 32) * range;
  if (static_cast<std::uint32_t>(m) < range) {
    const std::uint32_t floor = static_cast<std::uint32_t>(0u - range) % range;
    while (static_cast<std::uint32_t>(m) < floor) m = (splitmix64(state) >> 32) * range;
  }
  return static_cast<std::uint32_t>(m >> 32);
}

// topk_fast: below this size, or for k > n/4, the exact kernel is as quick.
constexpr std::size_t kFastMinN = std::size_t{1} << 16;
constexpr std::size_t kSample = std::size_t{1} << 15;
constexpr std::uint64_t kSampleSeed = 0x746f706b5f666173ull;

struct Estimate {
  std::uint32_t lo;   // collect keys >= lo
  std::size_t limit;  // give up past this many candidates
};

// One key per stride of n / kSample at a seeded offset; lo is the sample key whose rank is
// the expected sample count of the top k plus four standard deviations (and a little), so
// fewer than k keys >= lo is very unlikely, while the candidates stay close to k.
// value(i) is element i of the tensor.
template <typename Value>
Estimate estimate_threshold(Value value, std::size_t n, std::size_t k) {
  const std::size_t stride = n / kSample;
  std::vector<std::uint32_t> sample(kSample);
  std::uint64_t state = kSampleSeed;
  for (std::size_t j = 0; j < kSample; ++j)
    sample[j] = key_of(value(j * stride + bounded(state, static_cast<std::uint32_t>(stride))));
  const double mu = static_cast<double>(k) * static_cast<double>(kSample) / static_cast<double>(n);
  const auto rank = std::min(kSample, static_cast<std::size_t>(mu + 4 * std::sqrt(mu) + 8));
  std::nth_element(sample.begin(), sample.begin() + static_cast<std::ptrdiff_t>(rank - 1),
                   sample.end(), std::greater<>());
  const double expected = static_cast<double>(rank) * static_cast<double>(stride);
  return {sample[rank - 1], 2 * static_cast<std::size_t>(expected) + 4 * kBlock + k};
}

// Sets cand to every (x[i], i) with key >= lo, in index order; false (and cand incomplete)
// once more than limit would be needed. Branch-free inside a block with a hit.
bool collect_at_least(const float* x, std::size_t n, std::uint32_t lo, std::size_t limit,
                      std::vector<Cand>& cand) {
  cand.resize(limit + kBlock);
  std::size_t c = 0;
  const bool complete = for_hit_blocks(x, n, lo, [&](std::size_t begin, std::size_t end) {
    if (c > limit) return false;
    for (std::size_t i = begin; i < end; ++i) {
      cand[c] = {x[i], static_cast<std::uint32_t>(i)};
      c += key_of(x[i]) >= lo;
    }
    return true;
  });
  cand.resize(c);
  return complete;
}

// collect_at_least over residual + grad, written back to residual block by block as it goes:
// the whole residual is updated even when collecting stops past limit (then false).
bool compensate_collect(float* __restrict residual, const float* __restrict grad, std::size_t n,
                        std::uint32_t lo, std::size_t limit, std::vector<Cand>& cand) {
  cand.resize(limit + kBlock);
  Cand* out = cand.data();
  std::size_t c = 0;
  bool complete = true;
  std::size_t i = 0;
  for (; i + kBlock <= n; i += kBlock) {
    float* __restrict r = residual + i;
    const float* __restrict g = grad + i;
    for (std::size_t j = 0; j < kBlock; ++j) r[j] += g[j];
    if (!complete || !block_has(r, lo)) continue;
    if (c > limit) {
      complete = false;
      continue;
    }
    for (std::size_t j = 0; j < kBlock; ++j) {
      out[c] = {r[j], static_cast<std::uint32_t>(i + j)};
      c += key_of(r[j]) >= lo;
    }
  }
  for (std::size_t j = i; j < n; ++j) residual[j] += grad[j];
  if (complete && c > limit) complete = false;
  for (std::size_t j = i; j < n && complete; ++j) {
    out[c] = {residual[j], static_cast<std::uint32_t>(j)};
    c += key_of(residual[j]) >= lo;
  }
  cand.resize(c);
  return complete;
}

void compensate(float* __restrict residual, const float* __restrict grad, std::size_t n) {
  for (std::size_t i = 0; i < n; ++i) residual[i] += grad[i];
}

}  // namespace

void topk_exact(const float* x, std::size_t n, std::size_t k, std::uint32_t* idx, float* val) {
  check_sizes(n, k, "topk_exact");
  if (k == 0) return;
  if (k == n) return take_all(x, n, idx, val);
  const std::vector<std::size_t> hist = top_histogram(x, n);
  if (std::accumulate(hist.begin() + (kNonFinite >> 20), hist.end(), std::size_t{0}) > 0)
    throw_nonfinite(x, n, 0);
  std::size_t need = k;
  const std::uint32_t b = find_bucket(hist, hist.size(), need);
  std::vector<Cand> cand(hist[b] + 1);
  const std::size_t g = split_at_bucket(x, n, b, idx, val, cand);
  std::vector<std::uint32_t> sel_idx(need);
  std::vector<float> sel_val(need);
  emit(cand, kth_key(cand, need, 1, b), sel_idx.data(), sel_val.data());
  merge_back(idx, val, g, sel_idx.data(), sel_val.data(), need);
}

void topk_fast(const float* x, std::size_t n, std::size_t k, std::uint32_t* idx, float* val) {
  check_sizes(n, k, "topk_fast");
  if (k == 0) return;
  if (n < kFastMinN || k > n / 4) return topk_exact(x, n, k, idx, val);
  const Estimate est = estimate_threshold([x](std::size_t i) { return x[i]; }, n, k);
  if (est.lo >= kNonFinite) throw_nonfinite(x, n, 0);
  std::vector<Cand> cand;
  if (!collect_at_least(x, n, est.lo, est.limit, cand) || cand.size() < k)
    return topk_exact(x, n, k, idx, val);
  // Every NaN/Inf has a key >= est.lo, so the first one in x is the first one in cand.
  for (const Cand& e : cand)
    if (key_of(e.val) >= kNonFinite) throw_nonfinite(x, n, e.idx);
  emit(cand, kth_key(cand, k, 0, 0), idx, val);
}

void topk_compensate(float* residual, const float* grad, std::size_t n, std::size_t k,
                     std::uint32_t* idx, float* val) {
  check_sizes(n, k, "topk_compensate");
  if (n < kFastMinN || k == 0 || k > n / 4) {
    compensate(residual, grad, n);
    return topk_exact(residual, n, k, idx, val);
  }
  const Estimate est = estimate_threshold(
      [residual, grad](std::size_t i) { return residual[i] + grad[i]; }, n, k);
  std::vector<Cand> cand;
  if (est.lo >= kNonFinite) {
    compensate(residual, grad, n);
    throw_nonfinite(residual, n, 0);
  }
  if (!compensate_collect(residual, grad, n, est.lo, est.limit, cand) || cand.size() < k)
    return topk_exact(residual, n, k, idx, val);
  for (const Cand& e : cand)
    if (key_of(e.val) >= kNonFinite) throw_nonfinite(residual, n, e.idx);
  emit(cand, kth_key(cand, k, 0, 0), idx, val);
}

// Floyd's algorithm: one draw per chosen index, marked in a bitmap read back in order.
void randomk(std::size_t n, std::size_t k, std::uint64_t seed, std::uint32_t* idx) {
  check_sizes(n, k, "randomk");
  if (k == 0) return;
  std::vector<std::uint64_t> chosen((n + 63) / 64, 0);
  auto mark = [&](std::size_t i) {
    std::uint64_t& word = chosen[i / 64];
    const std::uint64_t bit = std::uint64_t{1} << (i % 64);
    const bool was = (word & bit) != 0;
    word |= bit;
    return was;
  };
  std::uint64_t state = seed;
  for (std::size_t j = n - k; j < n; ++j)
    if (mark(bounded(state, static_cast<std::uint32_t>(j + 1)))) mark(j);
  std::size_t out = 0;
  for (std::size_t w = 0; w < chosen.size(); ++w) {
    for (std::uint64_t bits = chosen[w]; bits != 0; bits &= bits - 1) {
      const auto bit = static_cast<unsigned>(__builtin_ctzll(bits));
      idx[out++] = static_cast<std::uint32_t>(w * 64 + bit);
    }
  }
}

void gather(const float* x, const std::uint32_t* idx, std::size_t k, float* val) {
  for (std::size_t i = 0; i < k; ++i) val[i] = x[idx[i]];
}

void scatter_add(const std::uint32_t* idx, const float* val, std::size_t k, float* out,
                 std::size_t n) {
  for (std::size_t i = 0; i < k; ++i)
    DLION_CHECK(idx[i] < n, InvalidArgument, "scatter_add: idx[", i, "] = ", idx[i],
                " is out of range for an output of ", n,
                " elements; nothing was written. Pass indices < out.size");
  for (std::size_t i = 0; i < k; ++i) out[idx[i]] += val[i];
}

}  // namespace dlion
