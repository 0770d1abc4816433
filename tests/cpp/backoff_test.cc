// The collective engine's wait policy (engine/backoff.h) on a synthetic clock: yields right
// after progress and while a transfer moves, then naps that double from 16 us, stay within a
// quarter of the wait (at least backoff_max_us), reach max(backoff_max_us, idle_poll_us) on a
// long wait, never pass the next paced release, and start over after progress.
#include <chrono>
#include <cstdio>

#include "check.h"
#include "engine/backoff.h"

using namespace dlion;
using us = std::chrono::microseconds;

namespace {

long as_us(Backoff::Clock::duration d) {
  return static_cast<long>(std::chrono::duration_cast<us>(d).count());
}

void test_policy() {
  EngineConfig c;  // backoff_spin_us 200 (the collective engine: 50), max 200, idle poll 1000
  const auto t0 = Backoff::Clock::time_point{} + std::chrono::seconds(100);
  Backoff b(c, t0);
  CHECK(as_us(b.next(t0 + us(10), false)) == 0, "yield right after progress");
  CHECK(as_us(b.next(t0 + us(49), false)) == 0, "yield within the spin");
  CHECK(as_us(b.next(t0 + us(60), false)) == 16, "first nap");
  CHECK(as_us(b.next(t0 + us(100), false)) == 32, "doubling");
  CHECK(as_us(b.next(t0 + us(150), true)) == 0, "a moving transfer: yield");
  CHECK(as_us(b.next(t0 + us(250), true)) > 0, "moving, but nothing for 200 us: nap");
  long last = 0;
  for (int i = 0; i < 20; ++i) last = as_us(b.next(t0 + us(2000), false));
  CHECK(last == 500, "a quarter of 2 ms: %ld", last);
  CHECK(as_us(b.next(t0 + us(300), false)) == 200, "at least backoff_max_us: %ld",
        as_us(b.next(t0 + us(300), false)));
  CHECK(as_us(b.next(t0 + std::chrono::seconds(1), false)) == 1000, "long wait: idle_poll_us");
  CHECK(as_us(b.next(t0 + std::chrono::seconds(1), false,
                     t0 + std::chrono::seconds(1) + us(70))) == 70,
        "not past the next release");
  b.progressed(t0 + std::chrono::seconds(2));
  CHECK(as_us(b.next(t0 + std::chrono::seconds(2) + us(20), false)) == 0, "after progress");
  CHECK(as_us(b.next(t0 + std::chrono::seconds(2) + us(80), false)) == 16, "naps start over");
  c.backoff_spin_us = 0;
  Backoff none(c, t0);
  CHECK(as_us(none.next(t0 + us(1), false)) == 16, "no spin at all");
}

}  // namespace

int main() {
  test_policy();
  std::printf("backoff_test: ok\n");
  return 0;
}
