// HierarchicalAllreduce: the site-aware allreduce for micro-clouds, where links inside a site
// are fast and links between sites are slow. A flat ring sends 2(p-1)/p of the data over each
// wide-area hop it crosses, at least twice; this sends each site's data across sites once.
//
//   1. reduce:    every rank of a site sends its buffer to the site's leader (its lowest rank),
//                 which adds them up, one member after the other;
//   2. ring:      the leaders (one per site) run the pipelined ring allreduce among themselves;
//                 average scales by 1/world size there, once per chunk;
//   3. broadcast: each leader sends the result to the members of its site.
// Every rank ends with the leader ring's bit-identical result. Each phase uses its own tags;
// nothing blocks: sends and receives are tested on each poll. Emulated links: the ring of
// leaders, which carries all of the cross-site traffic, is paced on `ring_pace` (the link to the
// next leader, ring_allreduce.h); the phases inside a site are not paced.
#pragma once

#include <mpi.h>

#include <memory>
#include <string>
#include <vector>

#include "engine/algorithm.h"
#include "engine/op.h"
#include "engine/ring_allreduce.h"

namespace dlion {

struct SiteLayout {
  std::vector<int> members;  // ranks of this rank's site, ascending; members[0] leads it
  std::vector<int> leaders;  // the leader of every site, ascending
  int leader_index = -1;     // this rank's index in leaders, -1 for a non-leader
  // True when the hierarchy helps: at least two sites, and some site with two ranks or more.
  bool useful = false;

  // From the site of every rank (any integer labels).
  static SiteLayout of(const std::vector<int>& site_of_rank, int rank);
};

class HierarchicalAllreduce : public Algorithm {
 public:
  HierarchicalAllreduce(MPI_Comm comm, int rank, int world_size, SiteLayout layout,
                        const OpRequest& req, std::size_t segment_bytes,
                        std::vector<unsigned char>& scratch,
                        std::vector<unsigned char>& ring_scratch, Link* ring_pace = nullptr);
  ~HierarchicalAllreduce() override;
  HierarchicalAllreduce(const HierarchicalAllreduce&) = delete;
  HierarchicalAllreduce& operator=(const HierarchicalAllreduce&) = delete;

  bool poll(bool& progressed) override;
  std::string waiting_on() const override;
  bool abandon() override;
  bool moving() const override;
  Clock::time_point release() const override;

 private:
  enum class Phase { Reduce, Ring, Broadcast, Done };

  bool leader() const { return layout_.leader_index >= 0; }
  void post_reduce_recv();
  void start_ring();
  void start_broadcast();
  int count() const { return static_cast<int>(req_.count); }

  MPI_Comm comm_;
  int rank_, world_size_;
  SiteLayout layout_;
  OpRequest req_;
  std::size_t segment_bytes_;
  std::vector<unsigned char>& scratch_;
  std::vector<unsigned char>& ring_scratch_;
  Phase phase_ = Phase::Reduce;
  std::size_t next_member_ = 1;        // leader: the member whose buffer it adds next
  std::vector<MPI_Request> recv_{MPI_REQUEST_NULL};  // the one receive in flight
  std::vector<MPI_Request> sends_;
  std::unique_ptr<RingAllreduce> ring_;
  Link* ring_pace_;
};

}  // namespace dlion
