// Finishing the peer engine's requests: a probe once every peer answered every round, an
// exchange once every awaited peer has sent far enough (step 2 of peer_engine.h), with the
// weighted aggregate of step 3.
#include <algorithm>
#include <mutex>
#include <utility>
#include <vector>

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
  // ((0 + the terms of the ranks before this one) + w_i * grad) + the later ranks' terms, each
  // pass element-wise, so out may be grad. Two terms commute exactly (and 0 + a + b == 0 + b + a
  // with signed zeros too), so with at most one earlier term the own term writes out first and
  // every other term adds into it in place; a dense float32 term next to the own one joins its
  // pass (two dense ranks: one read of each tensor). Only two or more earlier terms need a
  // scratch sum, which then meets the own term in one pass.
  auto due = [&](int p) {
    const auto& box = g.inbox[static_cast<std::size_t>(p)];
    return !box.empty() && static_cast<std::int64_t>(box.front().step) <= step;
  };
  auto due_count = [&](int p) {
    std::size_t c = 0;
    for (const Arrived& a : g.inbox[static_cast<std::size_t>(p)])
      c += static_cast<std::int64_t>(a.step) <= step;  // in step order: a prefix
    return c;
  };
  auto pop = [&](int p) {  // the front message, once applied
    auto& box = g.inbox[static_cast<std::size_t>(p)];
    const std::int64_t lag = step - static_cast<std::int64_t>(box.front().step);
    {
      std::lock_guard<std::mutex> slock(mu_);
      LinkStats& st = stats_[static_cast<std::size_t>(p)];
      st.staleness_last = lag;
      st.staleness_max = std::max(st.staleness_max, lag);
    }
    give(std::move(box.front().msg));
    box.pop_front();
  };
  auto apply_due = [&](int p, float* into) {
    while (due(p)) {
      const wire::Decoded& d = g.inbox[static_cast<std::size_t>(p)].front().dec;
      wire::apply_add(d, into, r.n, d.weight());
      pop(p);
    }
  };
  auto dense = [&](int p) -> const wire::Decoded* {  // p's front message if dense float32
    const wire::Decoded& d = g.inbox[static_cast<std::size_t>(p)].front().dec;
    return d.encoding() == wire::Encoding::kDenseF32 ? &d : nullptr;
  };
  std::size_t earlier = 0;
  int first = -1;  // the earlier rank with a term
  for (int p = 0; p < rank_; ++p) {
    const std::size_t c = due_count(p);
    if (c > 0 && first < 0) first = p;
    earlier += c;
  }
  int next = rank_ + 1;  // the first later rank with a term
  while (next < size_ && !due(next)) ++next;
  const wire::Decoded* d = nullptr;
  if (earlier == 1 && (d = dense(first)) != nullptr) {
    scaled_sum2(r.out, d->values().data, d->weight(), r.grad, r.weight, r.n);
    pop(first);
  } else if (earlier == 0 && next < size_ && due_count(next) == 1 &&
             (d = dense(next)) != nullptr) {
    scaled_sum2(r.out, r.grad, r.weight, d->values().data, d->weight(), r.n);
    pop(next++);
  } else if (earlier <= 1) {
    scaled_sum(r.out, nullptr, r.grad, r.n, r.weight);
    if (earlier == 1) apply_due(first, r.out);
  } else {
    // The scratch sum is not zeroed first (a 40 MB pass per step at 1e7): its first terms
    // write it, 0 + w * v for a dense float32 one (the bits adding into zeros gives), and two
    // dense ones in one pass; only a compressed first term needs the zeros.
    std::vector<int> order;  // the senders of the earlier terms, in the order they are added
    for (int p = 0; p < rank_; ++p) order.insert(order.end(), due_count(p), p);
    g.acc.reset(r.n * sizeof(float));  // message storage: huge pages when large
    float* acc = reinterpret_cast<float*>(g.acc.data());
    std::size_t i = 0;
    const wire::Decoded* a = dense(order[0]);
    const wire::Decoded* b = order[1] != order[0] ? dense(order[1]) : nullptr;
    if (a != nullptr && b != nullptr) {
      scaled_sum2(acc, a->values().data, a->weight(), b->values().data, b->weight(), r.n);
      pop(order[0]), pop(order[1]), i = 2;
    } else if (a != nullptr) {
      scaled_sum(acc, nullptr, a->values().data, r.n, a->weight());
      pop(order[0]), i = 1;
    } else {
      std::fill(acc, acc + r.n, 0.0f);
    }
    for (; i < order.size(); ++i) {
      const wire::Decoded& d2 = g.inbox[static_cast<std::size_t>(order[i])].front().dec;
      wire::apply_add(d2, acc, r.n, d2.weight());
      pop(order[i]);
    }
    scaled_sum(r.out, acc, r.grad, r.n, r.weight);
  }
  for (int p = next; p < size_; ++p) apply_due(p, r.out);
  task.handle->complete();
  return true;
}

}  // namespace dlion
