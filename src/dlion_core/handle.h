// Shared by the engine bindings: the Python Handle (waits with the GIL released and keeps the
// operation's buffers alive while the engine may touch them) and the communicator handover.
#pragma once

#include <pybind11/pybind11.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <optional>
#include <string>

#include "common/error.h"
#include "engine/handle.h"

#include <mpi.h>

namespace py = pybind11;

namespace dlion_py {

using dlion::HandlePtr;

class PyHandle {
 public:
  PyHandle(HandlePtr h, py::object keep, double grace_s)
      : h_(std::move(h)), keep_(std::move(keep)), grace_s_(grace_s) {}
  PyHandle(const PyHandle&) = delete;
  PyHandle& operator=(const PyHandle&) = delete;

  ~PyHandle() {
    if (!keep_ || !h_) return;
    if (!h_->done()) {
      // Dropped while in flight: the engine still uses the buffer, so wait for it (bounded).
      py::gil_scoped_release release;
      try {
        h_->wait(grace_s_);
      } catch (...) {
      }
    }
    if (h_->buffer_in_use()) keep_.release();  // MPI may still write there: never free it
  }

  // Waits in short slices with the GIL released, so Ctrl-C works. timeout None: no limit
  // (the engine itself fails a stalled operation after its stall timeout).
  bool wait(std::optional<double> timeout) {
    const auto start = std::chrono::steady_clock::now();
    for (;;) {
      double slice = 0.2;
      if (timeout) {
        const double left =
            *timeout - std::chrono::duration<double>(std::chrono::steady_clock::now() - start)
                           .count();
        if (left <= 0) return h_->done() ? finish(0.0) : false;
        slice = std::min(slice, left);
      }
      bool ready = false;
      {
        py::gil_scoped_release release;
        ready = h_->wait(slice);
      }
      if (ready) return finish(0.0);
      if (PyErr_CheckSignals() != 0) throw py::error_already_set();
    }
  }

  bool done() const { return h_->done(); }
  std::uint64_t seq() const { return h_->seq(); }
  std::string name() const { return h_->name(); }

  // Allgather result: one bytes object per rank.
  py::list chunks() {
    DLION_CHECK(h_->done(), dlion::InvalidArgument, "'", h_->name(),
                "': result() before the operation completed; call wait() first");
    h_->wait(0.0);  // rethrows a stored error
    py::list out;
    const auto& data = h_->output();
    std::size_t offset = 0;
    for (auto n : h_->output_counts()) {
      out.append(py::bytes(reinterpret_cast<const char*>(data.data()) + offset, n));
      offset += n;
    }
    return out;
  }

 private:
  bool finish(double) {
    py::gil_scoped_release release;
    return h_->wait(0.0);
  }

  HandlePtr h_;
  py::object keep_;
  double grace_s_;
};

inline MPI_Comm comm_from_mpi4py(const py::object& comm) {
  py::module_ mpi = py::module_::import("mpi4py.MPI");
  if (!py::isinstance(comm, mpi.attr("Comm")))
    throw dlion::InvalidArgument("comm must be an mpi4py.MPI.Comm, got " +
                                 py::str(py::type::of(comm)).cast<std::string>());
  auto address = mpi.attr("_addressof")(comm).cast<std::uintptr_t>();
  return *reinterpret_cast<MPI_Comm*>(address);
}

}  // namespace dlion_py
