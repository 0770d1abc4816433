#include "engine/stall_clock.h"

#include <chrono>
#include <cstdio>

#include "common/error.h"

namespace dlion {

namespace {

Clock::duration to_duration(double s) {
  return std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(s));
}

}  // namespace

StallClock::StallClock(const EngineConfig& config)
    : timeout_s_(config.stall_timeout_s),
      warning_(to_duration(config.stall_warning_s)),
      timeout_(to_duration(config.stall_timeout_s)) {}

Clock::time_point StallClock::first_warning(Clock::time_point start) const {
  return start + warning_;
}

StallClock::Due StallClock::due(Clock::time_point start, Clock::time_point& next_warning,
                                Clock::time_point now) const {
  if (now - start >= timeout_) return Due::kTimeout;
  if (now < next_warning) return Due::kNothing;
  next_warning += warning_;
  return Due::kWarning;
}

std::string StallClock::timeout_text(int rank, const std::string& what,
                                     const std::string& waiting_for) const {
  return detail::concat("rank ", rank, ": ", what, " did not complete within ", timeout_s_,
                        " s (stall_timeout_s): still waiting for ", waiting_for);
}

void StallClock::warn(int rank, Clock::time_point start, Clock::time_point now,
                      const std::string& what, const std::string& waiting_for) {
  const double waited = std::chrono::duration<double>(now - start).count();
  std::fprintf(stderr, "[dlion rank %d] WARNING: stalled %.0f s on %s: waiting for %s\n", rank,
               waited, what.c_str(), waiting_for.c_str());
  std::fflush(stderr);
}

}  // namespace dlion
