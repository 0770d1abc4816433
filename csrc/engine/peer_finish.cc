// Finishing the peer engine's requests: a probe once every peer answered every round, an
// exchange once every awaited peer has sent far enough (step 2 of peer_engine.h), with the
// weighted aggregate of step 3.
#include <algorithm>
#include <mutex>
#include <utility>

#include "compress/reduce.h"
#include "engine/peer_engine.h"
#include "engine/peer_wire.h"

namespace dlion {

using namespace peer;

bool PeerEngine::try_finish(Task& task, Clock::time_point now) {
  if (task.is_probe) {
    for (;;) {
      const std::uint32_t g = kProbeGroup + static_cast<std::uint32_t>(task.round);
      for (int p = 0; p < size_; ++p) {
        if (p == rank_) continue;
        const auto pp = static_cast<std::size_t>(p);
        if (links_[pp].awaiting(g) || probes_seen_[static_cast<std::size_t>(task.round)][pp] <
                                          probes_started_)
          return false;
      }
      if (++task.round == kProbeRounds) break;
      start_probe_round(task, now);
    }
    task.handle->complete();
    return true;
  }
  const ExchangeRequest& r = task.req;
  std::lock_guard<std::mutex> lock(groups_mu_);
  Group& g = groups_.at(r.group);
  const std::int64_t step = static_cast<std::int64_t>(r.step);
  const std::int64_t need = r.sync ? step : step - r.staleness;
  for (int p = 0; p < size_; ++p)
    if (p != rank_ && expects(r, p) && g.latest[static_cast<std::size_t>(p)] < need) return false;

  // Weighted sum in rank order, so that ranks holding the same messages get the same bits:
  // ((0 + the terms of the ranks before this one) + w_i * grad) + the later ranks' terms. Only
  // the earlier terms need a scratch sum (out may be grad, which the middle term reads); the
  // own term writes out in one pass, and the later terms add into out in place.
  auto due = [&](int p) {
    const auto& box = g.inbox[static_cast<std::size_t>(p)];
    return !box.empty() && static_cast<std::int64_t>(box.front().step) <= step;
  };
  auto apply_due = [&](int p, float* into) {
    auto& box = g.inbox[static_cast<std::size_t>(p)];
    while (due(p)) {
      const Arrived& a = box.front();
      wire::apply_add(a.dec, into, r.n, a.dec.weight());
      const std::int64_t lag = step - static_cast<std::int64_t>(a.step);
      {
        std::lock_guard<std::mutex> slock(mu_);
        LinkStats& st = stats_[static_cast<std::size_t>(p)];
        st.staleness_last = lag;
        st.staleness_max = std::max(st.staleness_max, lag);
      }
      give(std::move(box.front().msg));
      box.pop_front();
    }
  };
  // A lone dense float32 message next to the own term (two ranks, dense) joins its pass.
  auto lone_dense = [&](int p) -> const float* {
    const auto& box = g.inbox[static_cast<std::size_t>(p)];
    const bool one = due(p) && (box.size() == 1 || static_cast<std::int64_t>(box[1].step) > step);
    return one && box.front().dec.encoding() == wire::Encoding::kDenseF32
               ? box.front().dec.values().data
               : nullptr;
  };
  auto pop_applied = [&](int p) {  // the lone message, applied by a fused pass
    auto& box = g.inbox[static_cast<std::size_t>(p)];
    {
      std::lock_guard<std::mutex> slock(mu_);
      LinkStats& st = stats_[static_cast<std::size_t>(p)];
      st.staleness_last = step - static_cast<std::int64_t>(box.front().step);
      st.staleness_max = std::max(st.staleness_max, st.staleness_last);
    }
    give(std::move(box.front().msg));
    box.pop_front();
  };
  int earlier = 0, first_earlier = -1;
  for (int p = 0; p < rank_; ++p) {
    if (!due(p)) continue;
    first_earlier = first_earlier < 0 ? p : first_earlier;
    ++earlier;
  }
  int next = rank_ + 1;  // the first later rank still to apply
  while (next < size_ && !due(next)) ++next;
  const float* m = nullptr;
  if (earlier == 1 && (m = lone_dense(first_earlier)) != nullptr) {
    scaled_sum2(r.out, m, g.inbox[static_cast<std::size_t>(first_earlier)].front().dec.weight(),
                r.grad, r.weight, r.n);
    pop_applied(first_earlier);
  } else if (earlier == 0 && next < size_ && (m = lone_dense(next)) != nullptr) {
    scaled_sum2(r.out, r.grad, r.weight, m,
                g.inbox[static_cast<std::size_t>(next)].front().dec.weight(), r.n);
    pop_applied(next++);
  } else {
    const float* base = nullptr;
    if (earlier > 0) {
      g.acc.assign(r.n, 0.0f);
      for (int p = 0; p < rank_; ++p) apply_due(p, g.acc.data());
      base = g.acc.data();
    }
    scaled_sum(r.out, base, r.grad, r.n, r.weight);
  }
  for (int p = next; p < size_; ++p) apply_due(p, r.out);
  task.handle->complete();
  return true;
}

}  // namespace dlion
