// Sparsification kernels against plain references: top-k (exact and fast, on ties, signed zeros
// and heavy tails, across the fast path's size threshold), random-k, gather and scatter_add,
// and their argument errors.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <limits>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "check.h"
#include "common/error.h"
#include "compress/topk.h"

namespace {

using Kernel = void (*)(const float*, std::size_t, std::size_t, std::uint32_t*, float*);

// Indices by |x| descending, lower index first among ties.
std::vector<std::uint32_t> ref_order(const std::vector<float>& x) {
  std::vector<std::uint32_t> order(x.size());
  std::iota(order.begin(), order.end(), 0u);
  std::stable_sort(order.begin(), order.end(), [&](std::uint32_t a, std::uint32_t b) {
    return std::fabs(x[a]) > std::fabs(x[b]);
  });
  return order;
}

// The reference top k: the first k of the order, ascending.
std::vector<std::uint32_t> ref_topk(const std::vector<std::uint32_t>& order, std::size_t k) {
  std::vector<std::uint32_t> top(order.begin(), order.begin() + static_cast<std::ptrdiff_t>(k));
  std::sort(top.begin(), top.end());
  return top;
}

bool same_bits(float a, float b) { return std::memcmp(&a, &b, sizeof a) == 0; }

std::vector<float> make(const std::string& kind, std::size_t n, std::mt19937_64& rng) {
  std::normal_distribution<float> normal;
  std::uniform_int_distribution<int> small(-3, 3);
  std::vector<float> x(n);
  for (std::size_t i = 0; i < n; ++i) {
    if (kind == "normal") x[i] = normal(rng);
    if (kind == "ties") x[i] = static_cast<float>(small(rng));
    if (kind == "zeros") x[i] = (rng() & 1) ? 0.0f : -0.0f;
    if (kind == "heavy") x[i] = normal(rng) / std::max(1e-3f, std::fabs(normal(rng)));
    if (kind == "ascending") x[i] = static_cast<float>(i) * 0.5f;
    if (kind == "constant") x[i] = -2.5f;
  }
  return x;
}

void check_topk(Kernel kernel, const char* name, const std::vector<float>& x,
                const std::vector<std::uint32_t>& ref, std::size_t k, const std::string& kind) {
  std::vector<std::uint32_t> idx(k + 1, 0xdeadbeefu);
  std::vector<float> val(k + 1, 7.0f);
  kernel(x.data(), x.size(), k, idx.data(), val.data());
  for (std::size_t i = 0; i < k; ++i) {
    CHECK(idx[i] == ref[i], "%s %s n=%zu k=%zu i=%zu: idx %u, want %u", name, kind.c_str(),
          x.size(), k, i, idx[i], ref[i]);
    CHECK(same_bits(val[i], x[ref[i]]), "%s %s n=%zu k=%zu i=%zu: value", name, kind.c_str(),
          x.size(), k, i);
  }
  CHECK(idx[k] == 0xdeadbeefu && val[k] == 7.0f, "%s wrote past k=%zu", name, k);
}

void test_topk_matches_reference(std::mt19937_64& rng) {
  const char* kinds[] = {"normal", "ties", "zeros", "heavy", "ascending", "constant"};
  for (std::size_t n : {0, 1, 2, 15, 16, 17, 100, 1000, 70000, 200003}) {
    for (const char* kind : kinds) {
      const auto x = make(kind, n, rng);
      const auto order = ref_order(x);
      for (std::size_t k : {std::size_t{0}, std::size_t{1}, n / 100, n / 10, n / 4, n / 4 + 1,
                            n / 2, n - (n > 0), n}) {
        if (k > n) continue;
        const auto ref = ref_topk(order, k);
        check_topk(dlion::topk_exact, "exact", x, ref, k, kind);
        check_topk(dlion::topk_fast, "fast", x, ref, k, kind);
      }
    }
  }
}

void test_topk_errors() {
  std::vector<float> x(100000, 1.0f);
  std::vector<std::uint32_t> idx(x.size());
  std::vector<float> val(x.size());
  for (Kernel kernel : {dlion::topk_exact, dlion::topk_fast}) {
    auto msg = error_of([&] { kernel(x.data(), 3, 4, idx.data(), val.data()); });
    CHECK(msg.find("k = 4") != std::string::npos, "k > n: '%s'", msg.c_str());
    for (std::size_t at : {std::size_t{0}, std::size_t{77}, x.size() - 1}) {
      for (float bad : {std::numeric_limits<float>::quiet_NaN(),
                        -std::numeric_limits<float>::infinity()}) {
        auto y = x;
        y[at] = bad;
        y[at + 1 < y.size() ? at + 1 : 0] = bad;  // a later one (or an earlier, at the end)
        const std::size_t first = at + 1 < y.size() ? at : 0;
        for (std::size_t k : {std::size_t{1}, std::size_t{1000}, y.size()}) {
          msg = error_of([&] { kernel(y.data(), y.size(), k, idx.data(), val.data()); });
          const std::string want = "x[" + std::to_string(first) + "]";
          CHECK(msg.find(want) != std::string::npos, "non-finite at %zu, k=%zu: '%s'", first, k,
                msg.c_str());
        }
      }
    }
    kernel(nullptr, 0, 0, nullptr, nullptr);  // n = k = 0: nothing to read or write
  }
}

void test_randomk() {
  for (std::size_t n : {0, 1, 10, 1000, 100003}) {
    for (std::size_t k : {std::size_t{0}, std::size_t{1}, n / 3, n}) {
      if (k > n) continue;
      std::vector<std::uint32_t> a(k), b(k), c(k);
      dlion::randomk(n, k, 7, a.data());
      dlion::randomk(n, k, 7, b.data());
      dlion::randomk(n, k, 8, c.data());
      CHECK(a == b, "randomk not reproducible n=%zu k=%zu", n, k);
      for (std::size_t i = 0; i < k; ++i) {
        CHECK(a[i] < n, "randomk out of range n=%zu", n);
        CHECK(i == 0 || a[i - 1] < a[i], "randomk not strictly ascending n=%zu k=%zu", n, k);
      }
      if (k > 10 && k < n) CHECK(a != c, "randomk ignores the seed n=%zu k=%zu", n, k);
    }
  }
  // Every index equally likely: 3 of 10, 30000 draws, each index ~9000 times.
  std::vector<int> hits(10, 0);
  std::uint32_t idx[3];
  for (std::uint64_t seed = 0; seed < 30000; ++seed) {
    dlion::randomk(10, 3, seed, idx);
    for (std::uint32_t i : idx) ++hits[i];
  }
  for (int h : hits) CHECK(std::abs(h - 9000) < 450, "randomk not uniform: %d of 9000", h);
  const auto msg = error_of([&] { dlion::randomk(3, 4, 0, idx); });
  CHECK(msg.find("k = 4") != std::string::npos, "randomk k > n: '%s'", msg.c_str());
}

void test_gather_scatter(std::mt19937_64& rng) {
  const auto x = make("normal", 5000, rng);
  const std::size_t k = 50;
  std::vector<std::uint32_t> idx(k);
  std::vector<float> val(k);
  dlion::topk_fast(x.data(), x.size(), k, idx.data(), val.data());
  std::vector<float> again(k);
  dlion::gather(x.data(), idx.data(), k, again.data());
  CHECK(again == val, "gather differs from topk's values");
  std::vector<float> out(x.size(), 0.0f);
  dlion::scatter_add(idx.data(), val.data(), k, out.data(), out.size());
  std::size_t j = 0;
  for (std::size_t i = 0; i < x.size(); ++i) {
    const bool chosen = j < k && idx[j] == i;
    CHECK(out[i] == (chosen ? x[i] : 0.0f), "scatter_add at %zu", i);
    j += chosen;
  }
  const std::uint32_t rep[] = {3, 3, 1};
  const float add[] = {1.0f, 2.0f, 4.0f};
  std::vector<float> small(4, 0.5f);
  dlion::scatter_add(rep, add, 3, small.data(), small.size());
  CHECK(small[3] == 3.5f && small[1] == 4.5f && small[0] == 0.5f, "repeated indices accumulate");
  const std::uint32_t bad[] = {0, 1, 4};
  const auto before = small;
  const auto msg = error_of([&] { dlion::scatter_add(bad, add, 3, small.data(), small.size()); });
  CHECK(msg.find("idx[2] = 4") != std::string::npos, "scatter_add bad index: '%s'", msg.c_str());
  CHECK(small == before, "scatter_add wrote before failing");
}

}  // namespace

int main() {
  std::mt19937_64 rng(42);
  test_topk_matches_reference(rng);
  test_topk_errors();
  test_randomk();
  test_gather_scatter(rng);
  std::printf("topk_test: ok\n");
  return 0;
}
