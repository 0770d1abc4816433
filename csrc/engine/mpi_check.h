// Every MPI call of the engine goes through DLION_MPI: a non-success code becomes MpiError
// naming the call, the MPI error string and the rank.
#pragma once

#include <mpi.h>

namespace dlion {

[[noreturn]] void throw_mpi_error(const char* call, int code, const char* file, int line);

}  // namespace dlion

#define DLION_MPI(call)                                                   \
  do {                                                                    \
    int dlion_mpi_rc_ = (call);                                           \
    if (dlion_mpi_rc_ != MPI_SUCCESS)                                     \
      ::dlion::throw_mpi_error(#call, dlion_mpi_rc_, __FILE__, __LINE__); \
  } while (0)
