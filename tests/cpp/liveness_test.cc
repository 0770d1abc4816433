// Liveness on its own, with a clock the test controls: a peer silent for the timeout is lost
// (named with its site, sticky), one heard from is not, one that said goodbye is never lost
// but fails the collective operations it will never reach, and stall text names late ranks.
#include <chrono>
#include <cmath>
#include <string>

#include "check.h"
#include "engine/liveness.h"

using namespace dlion;
using Clock = Liveness::Clock;

static bool has(const std::string& s, const std::string& part) {
  return s.find(part) != std::string::npos;
}

int main() {
  const auto t0 = Clock::now();
  auto at = [&](double s) {
    return t0 + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(s));
  };
  Liveness l(0, 4, 2.0);
  CHECK(l.interval_s() == 0.25, "interval %g", l.interval_s());
  CHECK(Liveness(0, 2, 600.0).interval_s() == 1.0, "interval is at most 1 s");
  CHECK(Liveness(0, 2, 0.01).interval_s() == 0.02, "interval is at least 20 ms");
  CHECK(!error_of([] { Liveness(0, 2, 0.0); }).empty(), "timeout 0 is refused");
  l.set_sites({"A", "A", "B", "B"});
  CHECK(l.who(2) == "rank 2 (site B)", "%s", l.who(2).c_str());

  l.entered(5);
  l.heartbeat(1, 5, false, at(1.5));
  l.heartbeat(2, 3, false, at(1.5));
  l.heartbeat(3, 7, true, at(0.5));  // rank 3 said goodbye after 7 operations
  CHECK(l.check(at(1.9)).empty(), "nobody is silent for 2 s yet");
  // Operation number 5 (0-based 4): rank 2 has started only 3.
  const std::string behind = l.behind(4, at(1.9));
  CHECK(has(behind, "rank 2 (site B) has started 3") && !has(behind, "rank 1"), "%s",
        behind.c_str());
  CHECK(l.departed_before(6).empty(), "rank 3 started operation 7 (0-based 6)");
  CHECK(has(l.departed_before(7), "rank 3 (site B)"), "rank 3 never reaches operation 8");
  CHECK(l.left(3) && !l.left(1) && !l.all_left(), "left");

  l.heard(1, at(3.0));  // any message counts
  const std::string lost = l.check(at(3.6));
  CHECK(has(lost, "lost rank 2 (site B)") && !has(lost, "rank 1") && !has(lost, "rank 3"),
        "%s", lost.c_str());
  CHECK(has(lost, "liveness_timeout_s=2"), "%s", lost.c_str());
  l.heartbeat(2, 9, false, at(3.7));  // too late: lost stays lost
  CHECK(l.check(at(3.8)) == lost && l.lost() == lost, "lost is sticky");

  Liveness never(1, 2, INFINITY);
  CHECK(never.check(at(1e6)).empty(), "an infinite timeout never loses anyone");
  std::printf("liveness_test: ok\n");
  return 0;
}
