#include "engine/engine.h"

#include <cmath>

#include "common/error.h"
#include "engine/comm.h"
#include "engine/mpi_check.h"

namespace dlion {

Engine::Engine(MPI_Comm comm, const EngineConfig& config) : config_(config) {
  check_config(config_);
  check_mpi_ready(comm);
  comm_ = duplicate_comm(comm, config_.stall_timeout_s);
  DLION_MPI(MPI_Comm_rank(comm_, &rank_));
  DLION_MPI(MPI_Comm_size(comm_, &size_));
  worker_.start([this] { run(); });
}

Engine::~Engine() { shutdown(); }

HandlePtr Engine::submit(OpRequest req) {
  DLION_CHECK(req.count == 0 || req.data != nullptr, InvalidArgument, "rank ", rank_, ": '",
              req.name, "': null buffer with ", req.count, " elements");
  if (req.kind == OpKind::Allreduce) {
    DLION_CHECK(req.dtype == DType::Float32 || req.dtype == DType::Float64, InvalidArgument,
                "rank ", rank_, ": allreduce of '", req.name,
                "' supports float32 and float64, not ", to_string(req.dtype));
    DLION_CHECK(req.reduce == ReduceOp::Sum || req.reduce == ReduceOp::Average,
                InvalidArgument, "rank ", rank_, ": allreduce of '", req.name,
                "' needs op sum or average");
  }
  if (req.kind == OpKind::Broadcast) {
    DLION_CHECK(req.root >= 0 && req.root < size_, InvalidArgument, "rank ", rank_,
                ": broadcast of '", req.name, "' from root ", req.root, ", but there are ",
                size_, " ranks (valid roots: 0..", size_ - 1, ")");
  }
  if (req.kind == OpKind::Allgather) {
    DLION_CHECK(req.dtype == DType::Byte, InvalidArgument, "allgather takes bytes");
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (liveness_) {
      const std::string lost = liveness_->lost();
      DLION_CHECK(lost.empty(), PeerLost, lost, "; '", req.name, "' was not run");
    }
  }
  const auto refuse = [&](const std::string* poisoned) {
    return poisoned ? detail::concat("rank ", rank_,
                                     ": the engine stopped after an earlier fatal error, so '",
                                     req.name, "' was not run: ", *poisoned)
                    : detail::concat("rank ", rank_, ": the engine was shut down; '", req.name,
                                     "' was not run (call dlion.init() again)");
  };
  // The handle copies the name before make() moves the request.
  return worker_.push(req.name, refuse,
                      [&](HandlePtr handle) { return Pending{std::move(req), std::move(handle)}; });
}

void Engine::set_liveness(std::shared_ptr<Liveness> liveness) {
  std::lock_guard<std::mutex> lock(mu_);
  liveness_ = std::move(liveness);
}

void Engine::set_sites(const std::vector<int>& site_of_rank) {
  DLION_CHECK(site_of_rank.size() == static_cast<std::size_t>(size_), InvalidArgument, "rank ",
              rank_, ": set_sites needs one site per rank (", size_, "), got ",
              site_of_rank.size());
  SiteLayout layout = SiteLayout::of(site_of_rank, rank_);
  std::lock_guard<std::mutex> lock(mu_);
  sites_ = std::move(layout);
}

void Engine::set_caps(const std::vector<LinkCap>& caps) {
  DLION_CHECK(caps.size() == static_cast<std::size_t>(size_), InvalidArgument, "rank ", rank_,
              ": set_caps needs one cap per rank (", size_, "), got ", caps.size());
  std::lock_guard<std::mutex> lock(mu_);
  const std::size_t wires = clocks_ ? clocks_->slots() : 0;
  for (std::size_t p = 0; p < caps.size(); ++p) {
    const LinkCap& c = caps[p];
    DLION_CHECK(std::isfinite(c.bandwidth_Bps) && c.bandwidth_Bps >= 0 &&
                    std::isfinite(c.latency_s) && c.latency_s >= 0 &&
                    (c.wire == -1 || (c.wire >= 0 && static_cast<std::size_t>(c.wire) < wires)),
                InvalidArgument, "rank ", rank_, ": emulated link to rank ", p,
                ": bandwidth and latency must be finite and >= 0 and the wire one of the ",
                wires, " shared ones or -1 (got ", c.bandwidth_Bps, " B/s, ", c.latency_s,
                " s, wire ", c.wire, ")");
  }
  caps_ = caps;
  caps_changed_ = true;
}

void Engine::share_wires(std::shared_ptr<SiteClocks> clocks) {
  DLION_CHECK(clocks != nullptr, InvalidArgument, "rank ", rank_, ": share_wires needs a table");
  std::lock_guard<std::mutex> lock(mu_);
  // Once only: the progress thread's links keep pointers into the table.
  DLION_CHECK(!clocks_, InvalidArgument, "rank ", rank_, ": share_wires was already called");
  clocks_ = std::move(clocks);
}

void Engine::shutdown() {
  if (!worker_.stop()) return;  // already stopped
  std::lock_guard<std::mutex> lock(mu_);
  // A poisoned engine may have requests MPI still holds; leave the communicator to MPI_Finalize.
  if (worker_.poisoned().empty() && comm_ != MPI_COMM_NULL) MPI_Comm_free(&comm_);
}

EngineStats Engine::stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  return stats_;
}

std::string Engine::poisoned() const { return worker_.poisoned(); }

void Engine::poison(const std::string& why) {
  const std::size_t failed = worker_.poison(why, [&](Pending& op) {
    op.handle->fail(std::make_exception_ptr(EngineShutdown(detail::concat(
                        "rank ", rank_, ": '", op.req.name, "' (op #", op.handle->seq(),
                        ") was not run because an earlier operation failed: ", why))),
                    false);
  });
  std::lock_guard<std::mutex> lock(mu_);
  stats_.ops_failed += failed;
}

}  // namespace dlion
