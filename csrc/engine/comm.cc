#include "engine/comm.h"

#include <chrono>
#include <thread>

#ifdef __linux__
#include <pthread.h>
#endif

#include "common/error.h"
#include "engine/mpi_check.h"

namespace dlion {

void check_mpi_ready(MPI_Comm comm) {
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
}

MPI_Comm duplicate_comm(MPI_Comm comm, double timeout_s) {
  MPI_Comm dup = MPI_COMM_NULL;
  MPI_Request req = MPI_REQUEST_NULL;
  DLION_MPI(MPI_Comm_idup(comm, &dup, &req));
  const auto deadline =
      std::chrono::steady_clock::now() + std::chrono::duration<double>(timeout_s);
  int flag = 0;
  int rank = 0;
  MPI_Comm_rank(comm, &rank);
  for (int polls = 0; !flag; ++polls) {
    DLION_MPI(MPI_Test(&req, &flag, MPI_STATUS_IGNORE));
    if (flag) break;
    DLION_CHECK(std::chrono::steady_clock::now() < deadline, PeerTimeout, "rank ", rank,
                ": not every rank called dlion.init() within ", timeout_s,
                " s (stall_timeout_s); check that all ranks start and initialise dlion");
    std::this_thread::sleep_for(std::chrono::microseconds(polls < 100 ? 10 : 1000));
  }
  DLION_MPI(MPI_Comm_set_errhandler(dup, MPI_ERRORS_RETURN));
  return dup;
}

void name_this_thread(const char* name) {
#ifdef __linux__
  pthread_setname_np(pthread_self(), name);  // at most 15 characters
#else
  (void)name;
#endif
}

}  // namespace dlion
