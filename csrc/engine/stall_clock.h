// StallClock: the schedule both engines keep for an operation that waits on its peers, and the
// wording they report it with. A wait that began at `start` gets a warning on stderr every
// stall_warning_s (naming what it waits for) and, once stall_timeout_s have passed, fails with
// PeerTimeout; what it waits for, and what the error adds as advice, are the engine's.
#pragma once

#include <chrono>
#include <string>

#include "common/config.h"

namespace dlion {

using Clock = std::chrono::steady_clock;  // as link.h has it

class StallClock {
 public:
  enum class Due { kNothing, kWarning, kTimeout };

  explicit StallClock(const EngineConfig& config);

  // When the first warning of a wait that began at `start` is due.
  Clock::time_point first_warning(Clock::time_point start) const;
  // kTimeout once stall_timeout_s passed since `start`; else kWarning when `next_warning` has
  // come (and moves it on by stall_warning_s); else kNothing.
  Due due(Clock::time_point start, Clock::time_point& next_warning, Clock::time_point now) const;

  // "rank R: <what> did not complete within T s (stall_timeout_s): still waiting for <for>";
  // the caller appends its advice.
  std::string timeout_text(int rank, const std::string& what,
                           const std::string& waiting_for) const;
  // Writes "[dlion rank R] WARNING: stalled N s on <what>: waiting for <for>" to stderr.
  static void warn(int rank, Clock::time_point start, Clock::time_point now,
                   const std::string& what, const std::string& waiting_for);

 private:
  double timeout_s_;
  Clock::duration warning_, timeout_;
};

}  // namespace dlion
