// PeerEngine: construction, the caller-facing checks and queries. The progress thread is in
// peer_progress.cc and the files peer_wire.h lists.
#include "engine/peer_engine.h"

#include <cmath>

#include "common/error.h"
#include "engine/comm.h"
#include "engine/mpi_check.h"

namespace dlion {

PeerEngine::PeerEngine(MPI_Comm comm, const EngineConfig& config) : config_(config) {
  check_config(config_);
  check_mpi_ready(comm);
  comm_ = duplicate_comm(comm, config_.stall_timeout_s);
  DLION_MPI(MPI_Comm_rank(comm_, &rank_));
  DLION_MPI(MPI_Comm_size(comm_, &size_));
  stats_.resize(static_cast<std::size_t>(size_));
  caps_.resize(static_cast<std::size_t>(size_));
  links_.resize(static_cast<std::size_t>(size_));
  probes_seen_.assign(3, std::vector<std::uint64_t>(static_cast<std::size_t>(size_), 0));
  liveness_ = std::make_shared<Liveness>(rank_, size_, config_.liveness_timeout_s);
  beat_in_flight_.assign(static_cast<std::size_t>(size_), 0);
  final_sent_.assign(static_cast<std::size_t>(size_), 0);
  worker_.start([this] { run(); });
}

PeerEngine::~PeerEngine() { shutdown(); }

HandlePtr PeerEngine::exchange(ExchangeRequest req) {
  const std::string where = detail::concat("rank ", rank_, ": peer exchange '", req.name,
                                           "' (group ", req.group, ", step ", req.step, ")");
  DLION_CHECK(req.group < kMaxGroups, InvalidArgument, where, ": group must be < ", kMaxGroups);
  DLION_CHECK(req.n == 0 || (req.grad != nullptr && req.out != nullptr), InvalidArgument, where,
              ": null buffer with ", req.n, " elements");
  DLION_CHECK(req.n < (std::size_t{1} << 32), InvalidArgument, where, ": ", req.n,
              " elements; a tensor group must stay under 2^32 (split it)");
  DLION_CHECK(std::isfinite(req.weight) && req.weight >= 0.0f, InvalidArgument, where,
              ": weight must be finite and >= 0, got ", req.weight);
  DLION_CHECK(req.staleness >= 0, InvalidArgument, where, ": staleness must be >= 0, got ",
              req.staleness);
  DLION_CHECK(req.links.size() == static_cast<std::size_t>(size_), InvalidArgument, where,
              ": needs one link plan per rank (", size_, "), got ", req.links.size());
  DLION_CHECK(req.expect.empty() || req.expect.size() == static_cast<std::size_t>(size_),
              InvalidArgument, where, ": expect needs one flag per rank (", size_, "), got ",
              req.expect.size());
  for (std::size_t p = 0; p < req.links.size(); ++p) {
    if (static_cast<int>(p) == rank_) continue;
    const wire::Codec& c = req.links[p].codec;
    try {
      const int bits = c.bits != 0 ? c.bits : wire::required_bits(c.encoding, 0);
      DLION_CHECK(bits == wire::required_bits(c.encoding, bits), InvalidArgument, "bits ", bits,
                  " do not fit encoding ", static_cast<int>(c.encoding));
      DLION_CHECK(!wire::is_bucketed(c.encoding) || c.bucket >= 1, InvalidArgument,
                  "bucket must be >= 1");
      if (wire::is_sparse(c.encoding) && c.select == wire::Select::kThreshold) {
        DLION_CHECK(req.reference != nullptr || req.n == 0, InvalidArgument,
                    "threshold selection needs a reference tensor");
        DLION_CHECK(std::isfinite(c.threshold) && c.threshold >= 0.0f, InvalidArgument,
                    "threshold must be finite and >= 0, got ", c.threshold);
      }
      if (wire::is_sparse(c.encoding) && c.select == wire::Select::kRange)
        DLION_CHECK(c.offset <= req.n, InvalidArgument, "range offset ", c.offset,
                    " beyond the ", req.n, " elements");
    } catch (const InvalidArgument& e) {
      throw InvalidArgument(detail::concat(where, ": link to rank ", p, ": ", e.what()));
    }
  }
  const std::string lost = liveness_->lost();
  DLION_CHECK(lost.empty(), PeerLost, lost, "; ", where, " was not run");
  auto task = std::make_unique<Task>();
  const auto refuse = [&](const std::string* poisoned) {
    return poisoned ? detail::concat(where, " was not run: the peer engine stopped after an "
                                            "earlier error: ", *poisoned)
                    : detail::concat(where, " was not run: the peer engine was shut down (call "
                                            "dlion.init() again)");
  };
  // The handle copies the name before the request moves.
  return worker_.push(req.name, refuse, [&](HandlePtr handle) {
    task->handle = std::move(handle);
    task->req = std::move(req);
    return std::move(task);
  });
}

HandlePtr PeerEngine::probe() {
  auto task = std::make_unique<Task>();
  task->is_probe = true;
  task->req.name = "link probe";
  const auto refuse = [&](const std::string* poisoned) {
    return poisoned ? detail::concat("rank ", rank_, ": link probe was not run: the peer engine "
                                     "stopped after an earlier error: ", *poisoned)
                    : detail::concat("rank ", rank_,
                                     ": link probe was not run: the peer engine was shut down");
  };
  return worker_.push(task->req.name, refuse, [&](HandlePtr handle) {
    task->handle = std::move(handle);
    return std::move(task);
  });
}

void PeerEngine::set_caps(const std::vector<LinkCap>& caps) {
  DLION_CHECK(caps.size() == static_cast<std::size_t>(size_), InvalidArgument, "rank ", rank_,
              ": set_caps needs one cap per rank (", size_, "), got ", caps.size());
  for (std::size_t p = 0; p < caps.size(); ++p) {
    DLION_CHECK(std::isfinite(caps[p].bandwidth_Bps) && caps[p].bandwidth_Bps >= 0 &&
                    std::isfinite(caps[p].latency_s) && caps[p].latency_s >= 0,
                InvalidArgument, "rank ", rank_, ": emulated link to rank ", p,
                ": bandwidth and latency must be finite and >= 0 (got ", caps[p].bandwidth_Bps,
                " B/s, ", caps[p].latency_s, " s)");
  }
  std::lock_guard<std::mutex> lock(mu_);
  const std::size_t wires = clocks_ ? clocks_->slots() : 0;
  for (std::size_t p = 0; p < caps.size(); ++p)
    DLION_CHECK(caps[p].wire == -1 ||
                    (caps[p].wire >= 0 && static_cast<std::size_t>(caps[p].wire) < wires),
                InvalidArgument, "rank ", rank_, ": emulated link to rank ", p,
                " is paced on shared wire ", caps[p].wire, ", but there are ", wires,
                " (share_wires)");
  caps_ = caps;
  caps_changed_ = true;
  for (std::size_t p = 0; p < caps.size(); ++p) {
    const bool own = static_cast<int>(p) == rank_;
    stats_[p].emulated_bandwidth_Bps = own ? 0 : caps[p].bandwidth_Bps;
    stats_[p].emulated_latency_s = own ? 0 : caps[p].latency_s;
    stats_[p].emulated_shared = !own && caps[p].wire >= 0;
  }
  worker_.poke();  // the thread takes the caps at its next turn
}

void PeerEngine::share_wires(std::shared_ptr<SiteClocks> clocks) {
  DLION_CHECK(clocks != nullptr, InvalidArgument, "rank ", rank_, ": share_wires needs a table");
  std::lock_guard<std::mutex> lock(mu_);
  // Once only: the progress thread's links keep pointers into the table.
  DLION_CHECK(!clocks_, InvalidArgument, "rank ", rank_, ": share_wires was already called");
  clocks_ = std::move(clocks);
}

std::vector<LinkStats> PeerEngine::link_stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  return stats_;
}

std::vector<float> PeerEngine::residual(std::uint32_t group, int peer) const {
  DLION_CHECK(peer >= 0 && peer < size_, InvalidArgument, "rank ", rank_, ": residual of peer ",
              peer, ", but ranks are 0..", size_ - 1);
  std::lock_guard<std::mutex> lock(groups_mu_);
  auto it = groups_.find(group);
  if (it == groups_.end()) return {};
  const auto& r = it->second.residual[static_cast<std::size_t>(peer)];
  return r ? *r : std::vector<float>{};
}

void PeerEngine::set_residual(std::uint32_t group, int peer, std::vector<float> values) {
  DLION_CHECK(peer >= 0 && peer < size_ && peer != rank_, InvalidArgument, "rank ", rank_,
              ": set_residual of peer ", peer, "; peers are the other ranks of 0..", size_ - 1);
  DLION_CHECK(group < kMaxGroups, InvalidArgument, "rank ", rank_, ": group must be < ",
              kMaxGroups);
  std::lock_guard<std::mutex> lock(groups_mu_);
  auto it = groups_.find(group);
  if (it != groups_.end()) {
    DLION_CHECK(values.empty() || values.size() == it->second.n, InvalidArgument, "rank ", rank_,
                ": residual for group ", group, " has ", values.size(),
                " elements; the group has ", it->second.n);
  }
  Group& g = groups_[group];
  if (it == groups_.end()) {
    g.n = values.size();
    g.inbox.resize(static_cast<std::size_t>(size_));
    g.latest.assign(static_cast<std::size_t>(size_), -1);
    g.residual.resize(static_cast<std::size_t>(size_));
  }
  g.residual[static_cast<std::size_t>(peer)] =
      values.empty() ? nullptr : std::make_shared<std::vector<float>>(std::move(values));
}

void PeerEngine::shutdown() {
  if (!worker_.stop()) return;  // already stopped
  std::lock_guard<std::mutex> lock(mu_);
  // A communicator with traffic still owed to it is left to MPI_Finalize (see drain()).
  if (worker_.poisoned().empty() && in_flight_.empty() && receiving_.empty() && all_acked() &&
      comm_ != MPI_COMM_NULL)
    MPI_Comm_free(&comm_);
}

std::string PeerEngine::poisoned() const { return worker_.poisoned(); }

}  // namespace dlion
