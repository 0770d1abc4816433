// RingAllreduce: pipelined ring allreduce (reduce-scatter then allgather) over Isend/Irecv,
// in place, for float32/float64 sums and averages.
//
// The ring is any ordered list of p ranks (all of them, or one leader per site).
// The buffer is cut into p chunks (one per rank) and each chunk into nseg segments. Every
// segment flows on its own through 2(p-1) stages, so that the reduction of one segment overlaps
// the transfer of the others:
//   stage s < p-1 (reduce-scatter): send chunk (r-s) to the right neighbour, receive chunk
//     (r-s-1) from the left into scratch and add it in. After stage p-2, chunk (r+1) holds the
//     full sum on this rank (average: scaled by 1/p here, once).
//   stage s = p-1+g (allgather): send chunk (r+1-g) to the right, receive chunk (r-g) from the
//     left straight into the buffer.
// Each (stage, segment) has its own tag, so segments may complete in any order.
// Emulated links (link.h): with `pace`, the link to the right neighbour, each send is held until
// that link would have carried it (Link::schedule) and posted by the poll that finds it due;
// a send held back counts as not yet complete for the deferred receives below.
// Before the allgather receives chunk (r-g) into the buffer, the reduce-scatter send that read
// that region (stage g) must be complete: until it is, that receive is deferred (tested on each
// poll, never waited for, so a dead peer cannot block the progress thread).
#pragma once

#include <mpi.h>

#include <cstddef>
#include <string>
#include <vector>

#include "engine/algorithm.h"
#include "engine/link.h"
#include "engine/op.h"

namespace dlion {

class RingAllreduce : public Algorithm {
 public:
  // The ring is `ring` (ranks of comm, in ring order; this rank is ring[index]). Each fully
  // reduced chunk is multiplied by `scale` once, at its owner (1/p for an average).
  // scratch is the engine's reusable buffer; it is grown here if needed and must outlive us.
  // pace: the emulated link to the right neighbour, or null (both must outlive us).
  RingAllreduce(MPI_Comm comm, const std::vector<int>& ring, int index, const OpRequest& req,
                double scale, std::size_t segment_bytes, int base_tag,
                std::vector<unsigned char>& scratch, Link* pace = nullptr);
  ~RingAllreduce() override;
  RingAllreduce(const RingAllreduce&) = delete;
  RingAllreduce& operator=(const RingAllreduce&) = delete;

  bool poll(bool& progressed) override;
  std::string waiting_on() const override;
  bool abandon() override;
  bool moving() const override { return heard_; }  // the left neighbour is in the ring
  Clock::time_point release() const override;

  // Most segments per chunk the tag space allows for `size` ranks.
  static std::size_t max_segments(int size, int base_tag);
  // 0, 1, ..., size-1: the ring over the whole communicator.
  static std::vector<int> all_ranks(int size);

 private:
  struct Range {
    std::size_t begin, len;  // in elements
  };
  struct Held {  // a send the emulated link does not carry yet
    std::size_t seg;
    int stage;
    Clock::time_point release;
  };
  Range segment(int chunk, std::size_t seg) const;
  void post_stage(std::size_t seg, int stage);
  void post_send(std::size_t seg, int stage);
  bool post_held();  // posts the held sends that are due; true when it posted any
  void finish_stage(std::size_t seg, int stage);
  bool post_deferred();
  int tag(int stage, std::size_t seg) const;
  unsigned char* at(std::size_t element) const;

  MPI_Comm comm_;
  int rank_, size_, left_, right_;  // rank_ and size_: position in and length of the ring
  OpRequest req_;
  double scale_;
  MPI_Datatype type_;
  std::size_t esize_;
  std::size_t nseg_ = 1, seg_cap_ = 0;
  int base_tag_;
  unsigned char* scratch_;
  std::vector<int> stage_;             // current stage of each segment (2(p-1) = done)
  std::vector<MPI_Request> recvs_;     // one per segment
  std::vector<MPI_Request> sends_;     // (stage, segment) flattened
  std::vector<char> posted_;           // (stage, segment): its send was handed to MPI
  Link* pace_;
  std::vector<Held> held_;
  std::vector<int> done_idx_;
  std::vector<std::size_t> deferred_;  // segments whose allgather receive is not posted yet
  std::size_t segments_left_;
  bool heard_ = false;  // a segment has arrived
};

}  // namespace dlion
