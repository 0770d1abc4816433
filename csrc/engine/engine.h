// Engine: owns a duplicate of the caller's communicator, a queue of submitted operations and
// the one progress thread that makes every MPI call on that communicator (the queue, the
// thread and the poisoned state are a Worker, worker.h, as in PeerEngine). The constructor
// starts the thread; shutdown() (or the destructor) drains the queue and joins it.
// Other threads only submit() and get a Handle back.
#pragma once

#include <mpi.h>

#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "common/config.h"
#include "engine/algorithm.h"
#include "engine/handle.h"
#include "engine/hierarchical_allreduce.h"
#include "engine/link.h"
#include "engine/liveness.h"
#include "engine/op.h"
#include "engine/site_clocks.h"
#include "engine/small_allreduce.h"
#include "engine/worker.h"

namespace dlion {

struct EngineStats {
  std::uint64_t ops_completed = 0;
  std::uint64_t ops_failed = 0;
  std::uint64_t bytes_reduced = 0;   // payload bytes of completed allreduces
  std::uint64_t ring_allreduces = 0;          // completed with the flat ring
  std::uint64_t hierarchical_allreduces = 0;  // completed with the site-aware hierarchy
  std::uint64_t fused_allreduces = 0;  // small: data in the negotiation's round (one block)
  double busy_seconds = 0.0;         // time the progress thread spent with an operation active
};

class Engine {
 public:
  // Duplicates `comm` (collective over it; fails with PeerTimeout after stall_timeout_s).
  // Requires MPI initialised with MPI_THREAD_MULTIPLE.
  Engine(MPI_Comm comm, const EngineConfig& config);
  ~Engine();
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  // Checks the request, then queues it. The caller keeps `req.data` alive and untouched until
  // the handle is done. Throws InvalidArgument or EngineShutdown.
  HandlePtr submit(OpRequest req);

  // The site of every rank (any integer labels, one per rank), the same list on every rank;
  // call it at the same point on every rank (dlion.init does, right after it learns the
  // sites), before submitting more work. Large allreduces then become site-aware.
  void set_sites(const std::vector<int>& site_of_rank);

  // Emulated links (link.h), as the peer engine has them (PeerEngine::set_caps, share_wires):
  // the ring allreduces (flat, and the hierarchical one's ring of site leaders) pace their
  // sends on them, on the same shared site-pair wires as the peer engine's messages. MPI's own
  // collectives (small allreduces, broadcasts, allgathers) and the hierarchical allreduce's
  // phases inside a site are not paced. Caps apply from the next operation on.
  void set_caps(const std::vector<LinkCap>& caps);
  void share_wires(std::shared_ptr<SiteClocks> clocks);  // once, before caps that name wires

  // The peer engine's view of which ranks are alive (dlion.init connects them). From then on
  // a stalled operation's warning names the ranks that have not reached it, and a lost rank
  // (or one that shut down before reaching an operation) fails it with PeerLost at once.
  void set_liveness(std::shared_ptr<Liveness> liveness);

  // Lets queued work finish (each op bounded by the stall timeout), stops the progress thread,
  // frees the communicator. Idempotent.
  void shutdown();

  int rank() const { return rank_; }
  int size() const { return size_; }
  MPI_Comm comm() const { return comm_; }
  const EngineConfig& config() const { return config_; }
  EngineStats stats() const;
  // Empty while healthy; the first fatal error's message once the engine refuses work.
  std::string poisoned() const;
  // CPU seconds used so far by the progress thread (sub-microsecond resolution).
  double thread_cpu_seconds() const { return worker_.cpu_seconds(); }

 private:
  struct Pending {
    OpRequest req;
    HandlePtr handle;
  };

  void run();                      // progress.cc: the loop
  void execute(Pending& op);       // progress.cc: one operation, negotiation then data
  std::unique_ptr<Algorithm> make_allreduce(const OpRequest& req,
                                            std::uint64_t EngineStats::*& counter);
  Link* pace(int peer);  // progress.cc: the emulated link to peer, null when it has no cap
  void record(const OpRequest& req, bool ok, std::uint64_t EngineStats::*counter,
              double busy_s);
  void poison(const std::string& why);  // the first fatal error; fails every queued operation

  EngineConfig config_;
  MPI_Comm comm_ = MPI_COMM_NULL;
  int rank_ = 0, size_ = 1;

  mutable std::mutex mu_;  // guards the fields below marked so (the queue is the worker's)
  EngineStats stats_;                   // guarded by mu_

  SiteLayout sites_;                    // guarded by mu_
  std::vector<LinkCap> caps_;           // guarded by mu_; empty: nothing emulated
  bool caps_changed_ = false;           // guarded by mu_
  std::shared_ptr<SiteClocks> clocks_;  // guarded by mu_
  std::vector<Link> links_;             // progress thread only: the paced links
  std::shared_ptr<Liveness> liveness_;  // guarded by mu_; null until set_liveness
  std::vector<unsigned char> scratch_;  // progress thread only
  std::vector<unsigned char> scratch2_;  // progress thread only
  std::unique_ptr<SmallBlocks> small_;   // progress thread only; created on first use
  Worker<Pending> worker_{"dlion-engine"};  // last: its thread stops before the rest goes
};

}  // namespace dlion
