#include "engine/link.h"

#include <algorithm>

namespace dlion {

namespace {

void ewma(double& avg, std::uint64_t& samples, double x) {
  avg = samples == 0 ? x : (1.0 - Link::kEwma) * avg + Link::kEwma * x;
  ++samples;
}

Clock::duration seconds(double s) {
  return std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(s));
}

}  // namespace

Link::Slot Link::schedule(std::size_t bytes, Clock::time_point now) {
  if (cap_.bandwidth_Bps <= 0.0 && cap_.latency_s <= 0.0) return {now, now};
  const Clock::time_point start = std::max(now, free_at_);
  const Clock::duration wire = seconds(
      cap_.bandwidth_Bps > 0.0 ? static_cast<double>(bytes) / cap_.bandwidth_Bps : 0.0);
  if (wire_ == nullptr || cap_.bandwidth_Bps <= 0.0) {
    free_at_ = start + wire;
  } else {
    // Take the shared wire from when it is free (or from `start`, if that is later) for
    // `wire`; retry if another sender took it meanwhile. The stamp is the only shared datum,
    // so relaxed ordering is enough: every update is one atomic read-modify-write.
    using ns = std::chrono::nanoseconds;
    const std::int64_t from = std::chrono::duration_cast<ns>(start.time_since_epoch()).count();
    const std::int64_t len = std::chrono::duration_cast<ns>(wire).count();
    std::int64_t free = wire_->load(std::memory_order_relaxed);
    std::int64_t begin = 0;
    do {
      begin = std::max(from, free);
    } while (!wire_->compare_exchange_weak(free, begin + len, std::memory_order_relaxed));
    free_at_ = Clock::time_point(std::chrono::duration_cast<Clock::duration>(ns(begin + len)));
  }
  return {start, free_at_ + seconds(cap_.latency_s)};
}

Link::Slot Link::control(Clock::time_point now) const {
  return {now, now + seconds(cap_.latency_s)};
}

void Link::sent(std::uint32_t group, std::uint64_t step, std::size_t bytes,
                Clock::time_point start, bool timed) {
  unacked_.push_back({group, step, bytes, start, timed});
}

bool Link::acked(std::uint32_t group, std::uint64_t step, Clock::time_point now,
                 LinkStats& stats) {
  auto it = std::find_if(unacked_.begin(), unacked_.end(), [&](const Unacked& u) {
    return u.group == group && u.step == step;
  });
  if (it == unacked_.end()) return false;
  const Unacked u = *it;
  unacked_.erase(it);
  if (!u.timed) return true;
  const double t = std::chrono::duration<double>(now - u.start).count();
  if (u.bytes <= kLatencyBytes) {
    ewma(stats.latency_s, stats.latency_samples, t / 2.0);
  } else if (u.bytes >= kBandwidthBytes) {
    double transfer = t - 2.0 * stats.latency_s;
    // On a loaded host the latency estimate is noisy: a round trip shorter than two of them
    // gives no sample, and a link never measured would count as 0 B/s (a LAN as a WAN). Its
    // first sample then takes half the round trip as the transfer (a lower bound on the rate).
    if (transfer <= 0.0 && stats.bandwidth_samples == 0) transfer = t / 2.0;
    if (transfer > 0.0) {
      ewma(stats.bandwidth_Bps, stats.bandwidth_samples, static_cast<double>(u.bytes) / transfer);
      stats.timed_bytes += static_cast<double>(u.bytes);
      stats.timed_seconds += transfer;
    }
  }
  return true;
}

bool Link::awaiting(std::uint32_t group) const {
  return std::any_of(unacked_.begin(), unacked_.end(),
                     [&](const Unacked& u) { return u.group == group; });
}

}  // namespace dlion
