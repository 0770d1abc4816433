#include "engine/hierarchical_allreduce.h"

#include <algorithm>
#include <climits>
#include <map>

#include "common/error.h"
#include "compress/reduce.h"
#include "engine/collective.h"
#include "engine/mpi_check.h"
#include "engine/requests.h"

namespace dlion {

namespace {
constexpr int kReduceTag = 40;
constexpr int kBroadcastTag = 41;
constexpr int kLeaderRingBaseTag = 64;
}  // namespace

SiteLayout SiteLayout::of(const std::vector<int>& site_of_rank, int rank) {
  SiteLayout out;
  std::map<int, int> leader_of_site;  // site label -> lowest rank
  for (int r = 0; r < static_cast<int>(site_of_rank.size()); ++r) {
    const int site = site_of_rank[static_cast<std::size_t>(r)];
    leader_of_site.emplace(site, r);  // ranks ascend: the first seen is the lowest
    if (site == site_of_rank[static_cast<std::size_t>(rank)]) out.members.push_back(r);
  }
  for (const auto& [site, leader] : leader_of_site) out.leaders.push_back(leader);
  std::sort(out.leaders.begin(), out.leaders.end());
  const auto it = std::find(out.leaders.begin(), out.leaders.end(), rank);
  if (it != out.leaders.end()) out.leader_index = static_cast<int>(it - out.leaders.begin());
  out.useful = out.leaders.size() >= 2 && out.leaders.size() < site_of_rank.size();
  return out;
}

HierarchicalAllreduce::HierarchicalAllreduce(MPI_Comm comm, int rank, int world_size,
                                             SiteLayout layout, const OpRequest& req,
                                             std::size_t segment_bytes,
                                             std::vector<unsigned char>& scratch,
                                             std::vector<unsigned char>& ring_scratch,
                                             Link* ring_pace)
    : comm_(comm),
      rank_(rank),
      world_size_(world_size),
      layout_(std::move(layout)),
      req_(req),
      segment_bytes_(segment_bytes),
      scratch_(scratch),
      ring_scratch_(ring_scratch),
      ring_pace_(ring_pace) {
  DLION_CHECK(req.count <= static_cast<std::size_t>(INT_MAX), InvalidArgument, "'", req.name,
              "': ", req.count, " elements exceed one message (2^31-1); split the tensor");
  DLION_CHECK(req.count >= layout_.leaders.size(), InvalidArgument, "'", req.name,
              "': fewer elements than sites; use the flat allreduce");
  if (leader()) {
    const std::size_t bytes = req.count * dtype_size(req.dtype);
    if (scratch_.size() < bytes) scratch_.resize(bytes);
    post_reduce_recv();
  } else {
    sends_.assign(1, MPI_REQUEST_NULL);
    DLION_MPI(MPI_Isend(req_.data, count(), mpi_type(req_.dtype), layout_.members[0],
                        kReduceTag, comm_, &sends_[0]));
  }
}

HierarchicalAllreduce::~HierarchicalAllreduce() { abandon(); }

void HierarchicalAllreduce::post_reduce_recv() {
  if (next_member_ >= layout_.members.size()) {
    start_ring();
    return;
  }
  DLION_MPI(MPI_Irecv(scratch_.data(), count(), mpi_type(req_.dtype),
                      layout_.members[next_member_], kReduceTag, comm_, &recv_[0]));
}

void HierarchicalAllreduce::start_ring() {
  phase_ = Phase::Ring;
  const double scale = req_.reduce == ReduceOp::Average ? 1.0 / world_size_ : 1.0;
  ring_ = std::make_unique<RingAllreduce>(comm_, layout_.leaders, layout_.leader_index, req_,
                                          scale, segment_bytes_, kLeaderRingBaseTag,
                                          ring_scratch_, ring_pace_);
}

void HierarchicalAllreduce::start_broadcast() {
  phase_ = Phase::Broadcast;
  if (leader()) {
    sends_.assign(layout_.members.size() - 1, MPI_REQUEST_NULL);
    for (std::size_t i = 1; i < layout_.members.size(); ++i)
      DLION_MPI(MPI_Isend(req_.data, count(), mpi_type(req_.dtype), layout_.members[i],
                          kBroadcastTag, comm_, &sends_[i - 1]));
  } else {
    DLION_MPI(MPI_Irecv(req_.data, count(), mpi_type(req_.dtype), layout_.members[0],
                        kBroadcastTag, comm_, &recv_[0]));
  }
}

bool HierarchicalAllreduce::poll(bool& progressed) {
  int flag = 0;
  if (phase_ == Phase::Reduce && leader()) {
    DLION_MPI(MPI_Test(&recv_[0], &flag, MPI_STATUS_IGNORE));
    if (!flag) return false;
    progressed = true;
    if (req_.dtype == DType::Float32)
      add_inplace(static_cast<float*>(req_.data),
                  reinterpret_cast<const float*>(scratch_.data()), req_.count);
    else
      add_inplace(static_cast<double*>(req_.data),
                  reinterpret_cast<const double*>(scratch_.data()), req_.count);
    ++next_member_;
    post_reduce_recv();
  } else if (phase_ == Phase::Reduce) {
    // A member may receive the result into its buffer only once its own send has left it.
    DLION_MPI(MPI_Test(&sends_[0], &flag, MPI_STATUS_IGNORE));
    if (!flag) return false;
    progressed = true;
    start_broadcast();
  }
  if (phase_ == Phase::Ring) {
    if (!ring_->poll(progressed)) return false;
    ring_.reset();
    start_broadcast();
  }
  if (phase_ == Phase::Broadcast) {
    if (leader()) {
      DLION_MPI(MPI_Testall(static_cast<int>(sends_.size()), sends_.data(), &flag,
                            MPI_STATUSES_IGNORE));
    } else {
      DLION_MPI(MPI_Test(&recv_[0], &flag, MPI_STATUS_IGNORE));
    }
    if (!flag) return false;
    progressed = true;
    phase_ = Phase::Done;
  }
  return phase_ == Phase::Done;
}

bool HierarchicalAllreduce::moving() const {
  if (phase_ == Phase::Ring) return ring_->moving();
  // A leader that has heard from a member, or sends the result to members that wait for it.
  return leader() && ((phase_ == Phase::Reduce && next_member_ > 1) || phase_ == Phase::Broadcast);
}

Clock::time_point HierarchicalAllreduce::release() const {
  return phase_ == Phase::Ring ? ring_->release() : Clock::time_point::max();
}

std::string HierarchicalAllreduce::waiting_on() const {
  switch (phase_) {
    case Phase::Reduce:
      return leader() ? detail::concat("rank ", layout_.members[next_member_],
                                       " (same site) to send its part of allreduce '",
                                       req_.name, "' to this site's leader")
                      : detail::concat("site leader rank ", layout_.members[0],
                                       " to take this rank's part of allreduce '", req_.name,
                                       "'");
    case Phase::Ring:
      return ring_->waiting_on() + " (ring of site leaders)";
    case Phase::Broadcast:
      return leader() ? detail::concat("the members of this site to take the result of '",
                                       req_.name, "'")
                      : detail::concat("site leader rank ", layout_.members[0],
                                       " to send the result of allreduce '", req_.name, "'");
    case Phase::Done:
      break;
  }
  return "nothing";
}

bool HierarchicalAllreduce::abandon() {
  const bool ring_in_use = ring_ ? ring_->abandon() : false;
  return release_requests(recv_, sends_) || ring_in_use;
}

}  // namespace dlion
