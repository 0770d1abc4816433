// Giving up on in-flight MPI requests (when an operation fails or times out).
#pragma once

#include <mpi.h>

#include <vector>

namespace dlion {

// Cancels and frees pending receives, frees pending sends (a send cannot be cancelled
// portably; freeing lets it finish on its own). Returns true when any was still pending: MPI
// may then still read or write the memory behind it.
inline bool release_requests(std::vector<MPI_Request>& recvs, std::vector<MPI_Request>& sends) {
  bool pending = false;
  for (auto& req : recvs) {
    if (req == MPI_REQUEST_NULL) continue;
    MPI_Cancel(&req);
    MPI_Request_free(&req);
    pending = true;  // a cancelled receive may still have landed partially
  }
  for (auto& req : sends) {
    if (req == MPI_REQUEST_NULL) continue;
    MPI_Request_free(&req);
    pending = true;
  }
  return pending;
}

}  // namespace dlion
