// What a started request of the peer engine still waits for, and what happens while it does:
// a warning every stall_warning_s naming the missing peers, PeerTimeout after stall_timeout_s,
// PeerLost at once when a peer it waits for has shut down (it will never send).
#include <mutex>
#include <string>

#include "common/error.h"
#include "engine/peer_engine.h"
#include "engine/peer_wire.h"
#include "engine/stall_clock.h"

namespace dlion {

using namespace peer;

std::string PeerEngine::missing(const Task& task) const {
  std::string out;
  if (task.is_probe) {
    const std::uint32_t g = kProbeGroup + static_cast<std::uint32_t>(task.round);
    for (int p = 0; p < size_; ++p) {
      const auto pp = static_cast<std::size_t>(p);
      if (p != rank_ && (links_[pp].awaiting(g) ||
                         probes_seen_[static_cast<std::size_t>(task.round)][pp] < probes_started_))
        out += detail::concat(out.empty() ? "" : ", ", "rank ", p);
    }
    return out + " (link probe round " + std::to_string(task.round) + ")";
  }
  const ExchangeRequest& r = task.req;
  std::lock_guard<std::mutex> lock(groups_mu_);
  const Group& g = groups_.at(r.group);
  const std::int64_t step = static_cast<std::int64_t>(r.step);
  const std::int64_t need = r.sync ? step : step - r.staleness;
  for (int p = 0; p < size_; ++p) {
    const std::int64_t got = g.latest[static_cast<std::size_t>(p)];
    if (p == rank_ || got >= need || !expects(r, p)) continue;
    out += detail::concat(out.empty() ? "" : ", ", "rank ", p, " (",
                          got < 0 ? std::string("nothing received yet")
                                  : "last sent step " + std::to_string(got),
                          ")");
  }
  return detail::concat(out, " to send step ", need, " of group ", r.group);
}

void PeerEngine::check_stall(Task& task, Clock::time_point now) {
  const std::string what =
      task.is_probe ? std::string("link probe")
                    : detail::concat("peer exchange '", task.req.name, "' (group ",
                                     task.req.group, ", step ", task.req.step, ")");
  if (!task.is_probe) {
    // A peer that said goodbye (shut down) will never send what this task waits for.
    std::string gone;
    {
      std::lock_guard<std::mutex> lock(groups_mu_);
      const Group& g = groups_.at(task.req.group);
      const auto step = static_cast<std::int64_t>(task.req.step);
      const std::int64_t need = task.req.sync ? step : step - task.req.staleness;
      for (int p = 0; p < size_; ++p)
        if (p != rank_ && expects(task.req, p) && g.latest[static_cast<std::size_t>(p)] < need &&
            liveness_->left(p))
          gone += detail::concat(gone.empty() ? "" : ", ", liveness_->who(p));
    }
    if (!gone.empty())
      throw PeerLost(detail::concat("rank ", rank_, ": ", what, " can never complete: ", gone,
                                    " shut down dlion before sending what it waits for (",
                                    missing(task), ")"));
  }
  switch (stall_.due(task.started, task.next_warning, now)) {
    case StallClock::Due::kTimeout:
      throw PeerTimeout(detail::concat(stall_.timeout_text(rank_, what, missing(task)),
                                       ". A rank may have died, hung or stopped exchanging"));
    case StallClock::Due::kWarning:
      StallClock::warn(rank_, task.started, now, what, missing(task));
      break;
    case StallClock::Due::kNothing:
      break;
  }
}

}  // namespace dlion
