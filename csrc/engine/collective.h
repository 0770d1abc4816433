// Collective: one MPI non-blocking collective (Iallreduce, Ibcast, Iallgatherv) on the engine's
// communicator, driven by MPI_Test, with an optional scaling pass when it completes (average).
#pragma once

#include <mpi.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "engine/algorithm.h"
#include "engine/op.h"

namespace dlion {

MPI_Datatype mpi_type(DType t);

class Collective : public Algorithm {
 public:
  // Small allreduce, in place. Average divides by the communicator size when the sum is done.
  static std::unique_ptr<Collective> allreduce(MPI_Comm comm, const OpRequest& req, int size);
  static std::unique_ptr<Collective> broadcast(MPI_Comm comm, const OpRequest& req);
  // Gathers every rank's bytes into `out` (resized here), rank order; counts from negotiation.
  static std::unique_ptr<Collective> allgather(MPI_Comm comm, const OpRequest& req,
                                               const std::vector<std::uint64_t>& counts,
                                               std::vector<std::uint8_t>& out);

  // Use the factories above; they post the request.
  Collective(std::string what, const OpRequest& req, double scale);

  bool poll(bool& progressed) override;
  std::string waiting_on() const override;
  bool abandon() override;

 private:
  MPI_Request req_ = MPI_REQUEST_NULL;
  std::string what_;
  OpRequest op_;
  double scale_;
  std::vector<int> counts_, displs_;  // allgather only; must outlive the request
};

}  // namespace dlion
