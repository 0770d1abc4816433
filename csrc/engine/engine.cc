#include "engine/engine.h"

#include <chrono>

#include "common/error.h"
#include "engine/mpi_check.h"

namespace dlion {

namespace {

void check_config(const EngineConfig& c) {
  DLION_CHECK(c.stall_warning_s > 0 && c.stall_timeout_s > 0, InvalidArgument,
              "stall_warning_s and stall_timeout_s must be > 0 seconds (got ",
              c.stall_warning_s, " and ", c.stall_timeout_s, ")");
  DLION_CHECK(c.ring_segment_bytes >= 1024, InvalidArgument,
              "ring_segment_bytes must be at least 1024 (got ", c.ring_segment_bytes, ")");
  DLION_CHECK(c.backoff_spin_us >= 0 && c.backoff_max_us >= 1, InvalidArgument,
              "backoff_spin_us must be >= 0 and backoff_max_us >= 1 (got ", c.backoff_spin_us, " and ",
              c.backoff_max_us, ")");
}

}  // namespace

Engine::Engine(MPI_Comm comm, const EngineConfig& config) : config_(config) {
  check_config(config_);
  int initialized = 0, finalized = 0;
  MPI_Initialized(&initialized);
  MPI_Finalized(&finalized);
  DLION_CHECK(initialized && !finalized, InvalidArgument,
              "MPI is not initialised (or already finalised); import mpi4py.MPI first");
  int level = 0;
  DLION_MPI(MPI_Query_thread(&level));
  DLION_CHECK(level == MPI_THREAD_MULTIPLE, InvalidArgument,
              "MPI was initialised with thread level ", level,
              "; dlion's progress thread needs MPI_THREAD_MULTIPLE (mpi4py's default: leave "
              "mpi4py.rc.thread_level at 'multiple')");
  DLION_CHECK(comm != MPI_COMM_NULL, InvalidArgument, "the communicator is MPI_COMM_NULL");

  // Duplicate without blocking forever: MPI_Comm_idup, polled up to the stall timeout.
  MPI_Request req = MPI_REQUEST_NULL;
  DLION_MPI(MPI_Comm_idup(comm, &comm_, &req));
  const auto deadline = std::chrono::steady_clock::now() +
                        std::chrono::duration<double>(config_.stall_timeout_s);
  int flag = 0;
  int world_rank = 0;
  MPI_Comm_rank(comm, &world_rank);
  for (int polls = 0; !flag; ++polls) {
    DLION_MPI(MPI_Test(&req, &flag, MPI_STATUS_IGNORE));
    if (flag) break;
    DLION_CHECK(std::chrono::steady_clock::now() < deadline, PeerTimeout, "rank ", world_rank,
                ": not every rank called dlion.init() within ", config_.stall_timeout_s,
                " s (stall_timeout_s); check that all ranks start and initialise dlion");
    std::this_thread::sleep_for(std::chrono::microseconds(polls < 100 ? 10 : 1000));
  }
  DLION_MPI(MPI_Comm_set_errhandler(comm_, MPI_ERRORS_RETURN));
  DLION_MPI(MPI_Comm_rank(comm_, &rank_));
  DLION_MPI(MPI_Comm_size(comm_, &size_));
  thread_ = std::thread([this] { run(); });
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
  std::lock_guard<std::mutex> lock(mu_);
  DLION_CHECK(poisoned_.empty(), EngineShutdown, "rank ", rank_,
              ": the engine stopped after an earlier fatal error, so '", req.name,
              "' was not run: ", poisoned_);
  DLION_CHECK(!stopping_, EngineShutdown, "rank ", rank_, ": the engine was shut down; '",
              req.name, "' was not run (call dlion.init() again)");
  auto handle = std::make_shared<Handle>(next_seq_++, req.name);
  queue_.push_back(Pending{std::move(req), handle});
  cv_.notify_one();
  return handle;
}

void Engine::set_sites(const std::vector<int>& site_of_rank) {
  DLION_CHECK(site_of_rank.size() == static_cast<std::size_t>(size_), InvalidArgument, "rank ",
              rank_, ": set_sites needs one site per rank (", size_, "), got ",
              site_of_rank.size());
  SiteLayout layout = SiteLayout::of(site_of_rank, rank_);
  std::lock_guard<std::mutex> lock(mu_);
  sites_ = std::move(layout);
}

void Engine::shutdown() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stopping_ && !thread_.joinable()) return;
    stopping_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
  std::lock_guard<std::mutex> lock(mu_);
  // A poisoned engine may have requests MPI still holds; leave the communicator to MPI_Finalize.
  if (poisoned_.empty() && comm_ != MPI_COMM_NULL) MPI_Comm_free(&comm_);
}

EngineStats Engine::stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  return stats_;
}

std::string Engine::poisoned() const {
  std::lock_guard<std::mutex> lock(mu_);
  return poisoned_;
}

void Engine::poison(const std::string& why) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (poisoned_.empty()) poisoned_ = why;
  }
  fail_queued(why);
}

void Engine::fail_queued(const std::string& why) {
  std::deque<Pending> dropped;
  {
    std::lock_guard<std::mutex> lock(mu_);
    dropped.swap(queue_);
    stats_.ops_failed += dropped.size();
  }
  for (auto& op : dropped) {
    op.handle->fail(std::make_exception_ptr(EngineShutdown(detail::concat(
                        "rank ", rank_, ": '", op.req.name, "' (op #", op.handle->seq(),
                        ") was not run because an earlier operation failed: ", why))),
                    false);
  }
}

}  // namespace dlion
