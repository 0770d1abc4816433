// Element-wise reduction kernels against plain loops, on random data of many sizes and offsets.
#include <cmath>
#include <cstdio>
#include <random>
#include <vector>

#include "check.h"
#include "compress/reduce.h"

template <typename T>
void run(std::mt19937_64& rng) {
  std::normal_distribution<double> normal;
  for (std::size_t n : {0, 1, 2, 3, 7, 15, 16, 17, 63, 64, 65, 1000, 4099, 100003}) {
    for (std::size_t offset : {0, 1, 3}) {  // unaligned starts
      std::vector<T> a(n + offset), b(n + offset), ref(n + offset);
      for (std::size_t i = 0; i < n + offset; ++i) {
        a[i] = static_cast<T>(normal(rng));
        b[i] = static_cast<T>(normal(rng));
        ref[i] = a[i];
      }
      for (std::size_t i = offset; i < n + offset; ++i) ref[i] = static_cast<T>(a[i] + b[i]);
      dlion::add_inplace(a.data() + offset, b.data() + offset, n);
      for (std::size_t i = 0; i < n + offset; ++i)
        CHECK(a[i] == ref[i], "add n=%zu offset=%zu i=%zu", n, offset, i);
      const double f = 0.37;
      for (std::size_t i = offset; i < n + offset; ++i) ref[i] = static_cast<T>(a[i] * static_cast<T>(f));
      dlion::scale_inplace(a.data() + offset, n, f);
      for (std::size_t i = 0; i < n + offset; ++i)
        CHECK(a[i] == ref[i], "scale n=%zu offset=%zu i=%zu", n, offset, i);
    }
  }
}

int main() {
  std::mt19937_64 rng(42);
  run<float>(rng);
  run<double>(rng);
  std::printf("reduce_test: ok\n");
  return 0;
}
