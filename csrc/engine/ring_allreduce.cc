#include "engine/ring_allreduce.h"

#include <algorithm>
#include <climits>

#include "common/error.h"
#include "compress/reduce.h"
#include "engine/collective.h"
#include "engine/mpi_check.h"
#include "engine/requests.h"

namespace dlion {

namespace {
int mod(int a, int p) { return ((a % p) + p) % p; }
}  // namespace

std::size_t RingAllreduce::max_segments(int size, int base_tag) {
  // Tags must stay below 32767, the smallest MPI_TAG_UB the standard allows.
  const int stages = 2 * (size - 1);
  return static_cast<std::size_t>(std::max(1, (32767 - base_tag) / std::max(1, stages)));
}

std::vector<int> RingAllreduce::all_ranks(int size) {
  std::vector<int> ring(static_cast<std::size_t>(size));
  for (int r = 0; r < size; ++r) ring[static_cast<std::size_t>(r)] = r;
  return ring;
}

RingAllreduce::RingAllreduce(MPI_Comm comm, const std::vector<int>& ring, int index,
                             const OpRequest& req, double scale, std::size_t segment_bytes,
                             int base_tag, std::vector<unsigned char>& scratch, Link* pace)
    : comm_(comm),
      rank_(index),
      size_(static_cast<int>(ring.size())),
      left_(ring[static_cast<std::size_t>(mod(index - 1, size_))]),
      right_(ring[static_cast<std::size_t>(mod(index + 1, size_))]),
      req_(req),
      scale_(scale),
      type_(mpi_type(req.dtype)),
      esize_(dtype_size(req.dtype)),
      base_tag_(base_tag),
      pace_(pace) {
  const int size = size_;
  DLION_CHECK(size >= 2 && req.count >= static_cast<std::size_t>(size) && index >= 0 &&
                  index < size,
              InvalidArgument, "ring allreduce of '", req.name,
              "' needs at least 2 ranks and one element each");
  const std::size_t max_chunk = (req.count + static_cast<std::size_t>(size) - 1) /
                                static_cast<std::size_t>(size);
  const std::size_t seg_elems = std::max<std::size_t>(1, segment_bytes / esize_);
  nseg_ = std::min((max_chunk + seg_elems - 1) / seg_elems, max_segments(size, base_tag));
  seg_cap_ = (max_chunk + nseg_ - 1) / nseg_ + 1;
  DLION_CHECK(seg_cap_ <= static_cast<std::size_t>(INT_MAX), InvalidArgument, "tensor '",
              req.name, "' is too large for the ring's segment count; split it");
  if (scratch.size() < nseg_ * seg_cap_ * esize_) scratch.resize(nseg_ * seg_cap_ * esize_);
  scratch_ = scratch.data();
  const int stages = 2 * (size - 1);
  stage_.assign(nseg_, 0);
  recvs_.assign(nseg_, MPI_REQUEST_NULL);
  sends_.assign(nseg_ * static_cast<std::size_t>(stages), MPI_REQUEST_NULL);
  posted_.assign(sends_.size(), 0);
  done_idx_.resize(nseg_);
  segments_left_ = nseg_;
  for (std::size_t j = 0; j < nseg_; ++j) post_stage(j, 0);
}

RingAllreduce::~RingAllreduce() { abandon(); }

RingAllreduce::Range RingAllreduce::segment(int chunk, std::size_t seg) const {
  const std::size_t n = req_.count, p = static_cast<std::size_t>(size_);
  const std::size_t c = static_cast<std::size_t>(chunk);
  const std::size_t begin = n * c / p, len = n * (c + 1) / p - begin;
  const std::size_t lo = len * seg / nseg_, hi = len * (seg + 1) / nseg_;
  return {begin + lo, hi - lo};
}

int RingAllreduce::tag(int stage, std::size_t seg) const {
  return base_tag_ + stage * static_cast<int>(nseg_) + static_cast<int>(seg);
}

unsigned char* RingAllreduce::at(std::size_t element) const {
  return static_cast<unsigned char*>(req_.data) + element * esize_;
}

void RingAllreduce::post_stage(std::size_t seg, int stage) {
  const int p = size_, r = rank_;
  const bool reduce_phase = stage < p - 1;
  const int g = stage - (p - 1);
  const Range in = segment(reduce_phase ? mod(r - stage - 1, p) : mod(r - g, p), seg);
  if (reduce_phase) {
    DLION_MPI(MPI_Irecv(scratch_ + seg * seg_cap_ * esize_, static_cast<int>(in.len), type_,
                        left_, tag(stage, seg), comm_, &recvs_[seg]));
  } else {
    deferred_.push_back(seg);  // posted by post_deferred() once the region is free
  }
  if (pace_ != nullptr) {
    const auto now = Clock::now();
    const Range out = segment(reduce_phase ? mod(r - stage, p) : mod(r + 1 - g, p), seg);
    const Clock::time_point release = pace_->schedule(out.len * esize_, now).release;
    if (release > now)
      held_.push_back({seg, stage, release});  // posted by post_held() once due
    else
      post_send(seg, stage);
  } else {
    post_send(seg, stage);
  }
  if (!reduce_phase) post_deferred();
}

void RingAllreduce::post_send(std::size_t seg, int stage) {
  const int p = size_, r = rank_;
  const int g = stage - (p - 1);
  const Range out = segment(stage < p - 1 ? mod(r - stage, p) : mod(r + 1 - g, p), seg);
  const std::size_t i = static_cast<std::size_t>(stage) * nseg_ + seg;
  DLION_MPI(MPI_Isend(at(out.begin), static_cast<int>(out.len), type_, right_, tag(stage, seg),
                      comm_, &sends_[i]));
  posted_[i] = 1;
}

bool RingAllreduce::post_held() {
  const auto now = Clock::now();
  bool posted = false;
  for (std::size_t i = 0; i < held_.size();) {
    if (held_[i].release > now) {
      ++i;
      continue;
    }
    post_send(held_[i].seg, held_[i].stage);
    held_.erase(held_.begin() + static_cast<std::ptrdiff_t>(i));
    posted = true;
  }
  return posted;
}

bool RingAllreduce::post_deferred() {
  // An allgather receive of stage g lands on the region the reduce-scatter send of stage g read:
  // it is posted only once that send completed (tested, never waited for: a dead peer must not
  // block the progress thread).
  bool posted = false;
  for (std::size_t i = 0; i < deferred_.size();) {
    const std::size_t seg = deferred_[i];
    const int g = stage_[seg] - (size_ - 1);
    const std::size_t e = static_cast<std::size_t>(g) * nseg_ + seg;
    int flag = 0;
    if (posted_[e]) DLION_MPI(MPI_Test(&sends_[e], &flag, MPI_STATUS_IGNORE));  // else: held
    if (!flag) {
      ++i;
      continue;
    }
    const Range in = segment(mod(rank_ - g, size_), seg);
    DLION_MPI(MPI_Irecv(at(in.begin), static_cast<int>(in.len), type_, left_,
                        tag(stage_[seg], seg), comm_, &recvs_[seg]));
    deferred_[i] = deferred_.back();
    deferred_.pop_back();
    posted = true;
  }
  return posted;
}

void RingAllreduce::finish_stage(std::size_t seg, int stage) {
  const int p = size_;
  if (stage < p - 1) {
    const Range in = segment(mod(rank_ - stage - 1, p), seg);
    const unsigned char* src = scratch_ + seg * seg_cap_ * esize_;
    const bool last = stage == p - 2 && scale_ != 1.0;
    if (req_.dtype == DType::Float32) {
      auto* d = reinterpret_cast<float*>(at(in.begin));
      add_inplace(d, reinterpret_cast<const float*>(src), in.len);
      if (last) scale_inplace(d, in.len, scale_);
    } else {
      auto* d = reinterpret_cast<double*>(at(in.begin));
      add_inplace(d, reinterpret_cast<const double*>(src), in.len);
      if (last) scale_inplace(d, in.len, scale_);
    }
  }
  const int next = stage + 1;
  stage_[seg] = next;
  if (next < 2 * (p - 1))
    post_stage(seg, next);
  else
    --segments_left_;
}

bool RingAllreduce::poll(bool& progressed) {
  if (!held_.empty() && post_held()) progressed = true;
  if (!deferred_.empty() && post_deferred()) progressed = true;
  if (segments_left_ > 0) {
    int outcount = 0;
    DLION_MPI(MPI_Testsome(static_cast<int>(nseg_), recvs_.data(), &outcount, done_idx_.data(),
                           MPI_STATUSES_IGNORE));
    if (outcount == MPI_UNDEFINED || outcount == 0) return false;
    progressed = true;
    heard_ = true;
    for (int i = 0; i < outcount; ++i) {
      const auto seg = static_cast<std::size_t>(done_idx_[static_cast<std::size_t>(i)]);
      finish_stage(seg, stage_[seg]);
    }
    if (segments_left_ > 0) return false;
  }
  if (!held_.empty()) return false;
  int flag = 0;
  DLION_MPI(MPI_Testall(static_cast<int>(sends_.size()), sends_.data(), &flag,
                        MPI_STATUSES_IGNORE));
  if (flag) progressed = true;
  return flag != 0;
}

std::string RingAllreduce::waiting_on() const {
  const int min_stage = *std::min_element(stage_.begin(), stage_.end());
  return detail::concat("rank ", left_, " (left ring neighbour) to send stage ", min_stage, " of ",
                        2 * (size_ - 1), " of allreduce '", req_.name, "'",
                        held_.empty() ? "" : " (and the emulated link to carry this rank's)");
}

Clock::time_point RingAllreduce::release() const {
  Clock::time_point next = Clock::time_point::max();
  for (const Held& h : held_) next = std::min(next, h.release);
  return next;
}

bool RingAllreduce::abandon() { return release_requests(recvs_, sends_); }

}  // namespace dlion
