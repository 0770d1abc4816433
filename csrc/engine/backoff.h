// Backoff: how long the collective engine's progress thread waits before it polls an operation
// again, after a poll found nothing new. The contract, in order:
//   1. while the operation's transfer is known to be moving (Algorithm::moving(): its peers
//      are in the operation and data is under way, which MPI moves only inside our calls),
//      poll again after a yield, for up to kMovingSpin (200 us) since the last progress;
//   2. for spin_us (at most backoff_spin_us) after the last progress, poll after a yield, so a
//      peer about to arrive is served at once;
//   3. otherwise sleep, doubling from kFirstNap, capped at a quarter of the time already waited
//      (so a late peer is noticed at most ~25% later than it arrived), at least backoff_max_us
//      and at most max(backoff_max_us, idle_poll_us): a wait for a peer that is still computing
//      costs a few wake-ups, not a spinning core;
//   4. never past `release` (the next paced send of an emulated link).
// A yield is a nap of zero. The policy is a pure function of the clock (tested in engine_test).
#pragma once

#include <algorithm>
#include <chrono>

#include "common/config.h"

namespace dlion {

class Backoff {
 public:
  using Clock = std::chrono::steady_clock;
  static constexpr auto kMovingSpin = std::chrono::microseconds(200);
  static constexpr auto kFirstNap = std::chrono::microseconds(16);
  static constexpr int kSpinUs = 50;  // longest yield-spin after progress

  Backoff(const EngineConfig& config, Clock::time_point now)
      : spin_(std::min(config.backoff_spin_us, kSpinUs)),
        floor_(config.backoff_max_us),
        cap_(std::max(config.backoff_max_us, config.idle_poll_us)),
        since_(now) {}

  void progressed(Clock::time_point now) {
    since_ = now;
    naps_ = 0;
  }

  // How long to wait before the next poll; zero: yield and poll again.
  Clock::duration next(Clock::time_point now, bool moving,
                       Clock::time_point release = Clock::time_point::max()) {
    const Clock::duration idle = now - since_;
    if ((moving && idle < kMovingSpin) || idle < spin_) return Clock::duration::zero();
    const Clock::duration limit = std::clamp<Clock::duration>(idle / 4, floor_, cap_);
    Clock::duration nap = std::min<Clock::duration>(kFirstNap * (1L << std::min(naps_, 20)), limit);
    ++naps_;
    if (release != Clock::time_point::max()) nap = std::min(nap, release - now);
    return std::max(nap, Clock::duration::zero());
  }

 private:
  std::chrono::microseconds spin_, floor_, cap_;
  Clock::time_point since_;
  int naps_ = 0;
};

}  // namespace dlion
