#include "engine/mpi_check.h"

#include <string>

#include "common/error.h"

namespace dlion {

void throw_mpi_error(const char* call, int code, const char* file, int line) {
  char text[MPI_MAX_ERROR_STRING] = {0};
  int len = 0;
  MPI_Error_string(code, text, &len);
  int rank = -1;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  throw MpiError(detail::concat("rank ", rank, ": ", call, " failed with code ", code, " (",
                                std::string(text, static_cast<std::size_t>(len)), ") at ", file,
                                ":", line));
}

}  // namespace dlion
