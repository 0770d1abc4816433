#include "engine/liveness.h"

#include <algorithm>
#include <cmath>
#include <cstdio>

#include "common/error.h"

namespace dlion {

namespace {

std::string name_of(int rank, const std::vector<std::string>& sites) {
  const auto r = static_cast<std::size_t>(rank);
  if (r < sites.size() && !sites[r].empty())
    return detail::concat("rank ", rank, " (site ", sites[r], ")");
  return detail::concat("rank ", rank);
}

std::string seconds_text(double s) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f", s);
  return buf;
}

}  // namespace

Liveness::Liveness(int rank, int size, double timeout_s)
    : rank_(rank), size_(size), timeout_s_(timeout_s) {
  DLION_CHECK(timeout_s > 0, InvalidArgument, "liveness_timeout_s must be > 0, got ", timeout_s);
  peers_.resize(static_cast<std::size_t>(size));
  const auto now = Clock::now();
  for (Peer& p : peers_) p.last_heard = now;
}

double Liveness::interval_s() const { return std::clamp(timeout_s_ / 8.0, 0.02, 1.0); }

void Liveness::set_sites(std::vector<std::string> names) {
  DLION_CHECK(names.size() == static_cast<std::size_t>(size_), InvalidArgument, "rank ", rank_,
              ": liveness needs one site name per rank (", size_, "), got ", names.size());
  std::lock_guard<std::mutex> lock(mu_);
  sites_ = std::move(names);
}

std::string Liveness::who(int rank) const {
  std::lock_guard<std::mutex> lock(mu_);
  return name_of(rank, sites_);
}

void Liveness::entered(std::uint64_t ops) {
  std::lock_guard<std::mutex> lock(mu_);
  entered_ = std::max(entered_, ops);
}

std::uint64_t Liveness::entered() const {
  std::lock_guard<std::mutex> lock(mu_);
  return entered_;
}

void Liveness::heard(int peer, Clock::time_point now) {
  std::lock_guard<std::mutex> lock(mu_);
  Peer& p = peers_.at(static_cast<std::size_t>(peer));
  p.last_heard = std::max(p.last_heard, now);
}

void Liveness::heartbeat(int peer, std::uint64_t ops, bool final, Clock::time_point now) {
  std::lock_guard<std::mutex> lock(mu_);
  Peer& p = peers_.at(static_cast<std::size_t>(peer));
  p.last_heard = std::max(p.last_heard, now);
  p.ops = std::max(p.ops, ops);
  p.beat = true;
  p.left = p.left || final;
}

std::string Liveness::check(Clock::time_point now) {
  std::lock_guard<std::mutex> lock(mu_);
  if (!lost_.empty() || !std::isfinite(timeout_s_)) return lost_;
  std::string names;
  double silent_max = 0.0;
  int count = 0;
  for (int r = 0; r < size_; ++r) {
    Peer& p = peers_[static_cast<std::size_t>(r)];
    if (r == rank_ || p.left) continue;
    const double silent = std::chrono::duration<double>(now - p.last_heard).count();
    if (silent < timeout_s_) continue;
    p.lost = true;
    silent_max = std::max(silent_max, silent);
    names += detail::concat(count++ ? ", " : "", name_of(r, sites_));
  }
  if (count == 0) return lost_;
  lost_ = detail::concat(
      "rank ", rank_, ": lost ", names, ": no heartbeat for ", seconds_text(silent_max),
      " s (liveness_timeout_s=", timeout_s_, "). ", count == 1 ? "Its" : "Their",
      " process died, was frozen or is cut off from this rank (a dead wide-area link); "
      "heartbeats come from dlion's own thread, so a rank that is only slow is never lost");
  return lost_;
}

std::string Liveness::lost() const {
  std::lock_guard<std::mutex> lock(mu_);
  return lost_;
}

bool Liveness::left(int peer) const {
  std::lock_guard<std::mutex> lock(mu_);
  return peers_.at(static_cast<std::size_t>(peer)).left;
}

bool Liveness::all_left() const {
  std::lock_guard<std::mutex> lock(mu_);
  for (int r = 0; r < size_; ++r)
    if (r != rank_ && !peers_[static_cast<std::size_t>(r)].left) return false;
  return true;
}

std::string Liveness::behind(std::uint64_t seq, Clock::time_point now) const {
  std::lock_guard<std::mutex> lock(mu_);
  std::string out;
  for (int r = 0; r < size_; ++r) {
    const Peer& p = peers_[static_cast<std::size_t>(r)];
    if (r == rank_ || !p.beat || p.ops > seq) continue;
    const double ago = std::chrono::duration<double>(now - p.last_heard).count();
    out += detail::concat(out.empty() ? "" : "; ", name_of(r, sites_), " has started ", p.ops,
                          " collective operations (this one is number ", seq + 1,
                          "), alive: heard from ", seconds_text(ago), " s ago",
                          p.left ? ", and it has shut down dlion" : "");
  }
  return out;
}

std::string Liveness::departed_before(std::uint64_t seq) const {
  std::lock_guard<std::mutex> lock(mu_);
  std::string out;
  for (int r = 0; r < size_; ++r) {
    const Peer& p = peers_[static_cast<std::size_t>(r)];
    if (r == rank_ || !p.left || p.ops > seq) continue;
    out += detail::concat(out.empty() ? "" : ", ", name_of(r, sites_), " (it ran ", p.ops,
                          " collective operations)");
  }
  return out;
}

}  // namespace dlion
