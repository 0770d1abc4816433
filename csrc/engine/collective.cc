#include "engine/collective.h"

#include <climits>

#include "common/error.h"
#include "compress/reduce.h"
#include "engine/mpi_check.h"

namespace dlion {

MPI_Datatype mpi_type(DType t) {
  switch (t) {
    case DType::Float32: return MPI_FLOAT;
    case DType::Float64: return MPI_DOUBLE;
    case DType::Byte: return MPI_BYTE;
  }
  return MPI_BYTE;
}

namespace {
int checked_int(std::uint64_t n, const std::string& name) {
  DLION_CHECK(n <= static_cast<std::uint64_t>(INT_MAX), InvalidArgument, "'", name, "': ", n,
              " elements exceed the 2^31-1 limit of one MPI collective; split the tensor");
  return static_cast<int>(n);
}
}  // namespace

Collective::Collective(std::string what, const OpRequest& req, double scale)
    : what_(std::move(what)), op_(req), scale_(scale) {}

std::unique_ptr<Collective> Collective::allreduce(MPI_Comm comm, const OpRequest& req, int size) {
  double scale = req.reduce == ReduceOp::Average ? 1.0 / size : 1.0;
  auto c = std::make_unique<Collective>("MPI_Iallreduce", req, scale);
  DLION_MPI(MPI_Iallreduce(MPI_IN_PLACE, req.data, checked_int(req.count, req.name),
                           mpi_type(req.dtype), MPI_SUM, comm, &c->req_));
  return c;
}

std::unique_ptr<Collective> Collective::broadcast(MPI_Comm comm, const OpRequest& req) {
  auto c = std::make_unique<Collective>("MPI_Ibcast", req, 1.0);
  DLION_MPI(MPI_Ibcast(req.data, checked_int(req.count, req.name), mpi_type(req.dtype), req.root,
                       comm, &c->req_));
  return c;
}

std::unique_ptr<Collective> Collective::allgather(MPI_Comm comm, const OpRequest& req,
                                                  const std::vector<std::uint64_t>& counts,
                                                  std::vector<std::uint8_t>& out) {
  auto c = std::make_unique<Collective>("MPI_Iallgatherv", req, 1.0);
  std::uint64_t total = 0;
  for (auto n : counts) {
    c->counts_.push_back(checked_int(n, req.name));
    c->displs_.push_back(checked_int(total, req.name));
    total += n;
  }
  out.resize(total);
  DLION_MPI(MPI_Iallgatherv(req.data, checked_int(req.count, req.name), MPI_BYTE, out.data(),
                            c->counts_.data(), c->displs_.data(), MPI_BYTE, comm, &c->req_));
  return c;
}

bool Collective::poll(bool& progressed) {
  int flag = 0;
  DLION_MPI(MPI_Test(&req_, &flag, MPI_STATUS_IGNORE));
  if (!flag) return false;
  progressed = true;
  if (scale_ != 1.0) {
    if (op_.dtype == DType::Float32)
      scale_inplace(static_cast<float*>(op_.data), op_.count, scale_);
    else
      scale_inplace(static_cast<double*>(op_.data), op_.count, scale_);
  }
  return true;
}

std::string Collective::waiting_on() const {
  return "the other ranks to complete " + what_ + " of '" + op_.name + "'";
}

bool Collective::abandon() {
  // A collective cannot be cancelled: MPI may still write into the buffer.
  return req_ != MPI_REQUEST_NULL;
}

}  // namespace dlion
