// Setting up an engine's communicator: checks that MPI is usable from a progress thread, and
// duplicates the caller's communicator without ever blocking past a timeout.
#pragma once

#include <mpi.h>

namespace dlion {

// InvalidArgument unless MPI is initialised (and not finalised) with MPI_THREAD_MULTIPLE and
// comm is not MPI_COMM_NULL.
void check_mpi_ready(MPI_Comm comm);

// A duplicate of comm (collective over comm) with MPI_ERRORS_RETURN set, made with
// MPI_Comm_idup and polled: PeerTimeout after timeout_s when some rank does not take part.
MPI_Comm duplicate_comm(MPI_Comm comm, double timeout_s);

// Names the calling thread (Linux: /proc/self/task/<tid>/comm, shown by top -H and gdb) so that
// its CPU use can be told apart from the training's; a no-op elsewhere.
void name_this_thread(const char* name);

}  // namespace dlion
