// Engine and Handle bindings. Arguments are checked here (dtype, contiguity, writability), then
// the GIL is released for anything that can wait. A Python Handle keeps the buffers of its
// operation alive until the engine no longer touches them.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdint>
#include <string>

#include "common/config.h"
#include "common/error.h"
#include "engine/engine.h"
#include "engine/peer_engine.h"
#include "caps.h"
#include "handle.h"

namespace py = pybind11;
using dlion::DType;
using dlion::Engine;
using dlion::EngineConfig;
using dlion::HandlePtr;
using dlion::OpKind;
using dlion::OpRequest;
using dlion_py::comm_from_mpi4py;
using dlion_py::PyHandle;
using dlion::ReduceOp;

namespace {

// "int32[4, 2]": the dtype and shape, which ranks must agree on (negotiated as the layout).
std::string layout_of(const py::array& arr) {
  std::string out = py::str(arr.dtype()).cast<std::string>() + "[";
  for (py::ssize_t i = 0; i < arr.ndim(); ++i)
    out += (i ? "," : "") + std::to_string(arr.shape(i));
  return out + "]";
}

// A writable, C-contiguous numpy array viewed as (pointer, element count, dtype). Float32 and
// float64 keep their dtype; any other dtype travels as raw bytes when allow_bytes, except
// dtypes that hold Python objects: their bytes are pointers, meaningless on another rank.
OpRequest view_array(py::array arr, const std::string& name, bool allow_bytes) {
  if (arr.dtype().attr("hasobject").cast<bool>())
    throw dlion::InvalidArgument("'" + name + "': dtype " +
                                 py::str(arr.dtype()).cast<std::string>() +
                                 " holds Python objects, which cannot travel as bytes; use "
                                 "dlion.broadcast_object / allgather_object");
  if (!(arr.flags() & py::array::c_style))
    throw dlion::InvalidArgument("'" + name +
                                 "': the array is not C-contiguous; pass np.ascontiguousarray(x)");
  if (!arr.writeable())
    throw dlion::InvalidArgument("'" + name +
                                 "': the array is read-only; the operation writes its result in "
                                 "place, so pass a writable array (e.g. x.copy())");
  OpRequest req;
  req.name = name;
  req.layout = layout_of(arr);
  req.data = arr.mutable_data();
  if (arr.dtype().equal(py::dtype::of<float>())) {
    req.dtype = DType::Float32;
    req.count = static_cast<std::size_t>(arr.size());
  } else if (arr.dtype().equal(py::dtype::of<double>())) {
    req.dtype = DType::Float64;
    req.count = static_cast<std::size_t>(arr.size());
  } else if (allow_bytes) {
    req.dtype = DType::Byte;
    req.count = static_cast<std::size_t>(arr.nbytes());
  } else {
    throw dlion::InvalidArgument("'" + name + "': dtype " +
                                 py::str(arr.dtype()).cast<std::string>() +
                                 " is not supported; use float32 or float64");
  }
  return req;
}

std::unique_ptr<PyHandle> submit(Engine& engine, OpRequest req, py::object keep) {
  HandlePtr h = engine.submit(std::move(req));
  return std::make_unique<PyHandle>(std::move(h), std::move(keep),
                                    2 * engine.config().stall_timeout_s);
}

}  // namespace

void bind_engine(py::module_& m) {
  py::class_<EngineConfig>(m, "EngineConfig", "Every engine knob with its default.")
      .def(py::init<>())
      .def_readwrite("stall_warning_s", &EngineConfig::stall_warning_s)
      .def_readwrite("stall_timeout_s", &EngineConfig::stall_timeout_s)
      .def_readwrite("liveness_timeout_s", &EngineConfig::liveness_timeout_s)
      .def_readwrite("ring_threshold_bytes", &EngineConfig::ring_threshold_bytes)
      .def_readwrite("ring_segment_bytes", &EngineConfig::ring_segment_bytes)
      .def_readwrite("hierarchical", &EngineConfig::hierarchical)
      .def_readwrite("backoff_spin_us", &EngineConfig::backoff_spin_us)
      .def_readwrite("backoff_max_us", &EngineConfig::backoff_max_us)
      .def_readwrite("probe_bytes", &EngineConfig::probe_bytes)
      .def_readwrite("idle_poll_us", &EngineConfig::idle_poll_us);

  py::class_<PyHandle>(m, "Handle", "One submitted operation.")
      .def("wait", &PyHandle::wait, py::arg("timeout") = py::none(),
           "Wait for completion (GIL released). Returns False on timeout; raises the "
           "operation's error.")
      .def("done", &PyHandle::done)
      .def("result", &PyHandle::chunks, "Allgather: the bytes of every rank, in rank order.")
      .def_property_readonly("seq", &PyHandle::seq)
      .def_property_readonly("name", &PyHandle::name);

  py::class_<Engine>(m, "Engine", "The progress engine on a duplicate of an mpi4py communicator.")
      .def(py::init([](const py::object& comm, const EngineConfig& config) {
             MPI_Comm c = comm_from_mpi4py(comm);
             py::gil_scoped_release release;  // MPI_Comm_idup waits for the other ranks
             return std::make_unique<Engine>(c, config);
           }),
           py::arg("comm"), py::arg("config") = EngineConfig())
      .def_property_readonly("rank", &Engine::rank)
      .def_property_readonly("size", &Engine::size)
      .def_property_readonly("config", &Engine::config)
      .def(
          "allreduce",
          [](Engine& e, const py::array& arr, const std::string& op, const std::string& name,
             std::uint64_t signature) {
            OpRequest req = view_array(arr, name, false);
            req.kind = OpKind::Allreduce;
            if (op == "sum")
              req.reduce = ReduceOp::Sum;
            else if (op == "average")
              req.reduce = ReduceOp::Average;
            else
              throw dlion::InvalidArgument("'" + name + "': op must be 'sum' or 'average', not '" +
                                           op + "'");
            req.signature = signature;
            return submit(e, std::move(req), arr);
          },
          py::arg("array"), py::arg("op") = "average", py::arg("name") = "allreduce",
          py::arg("signature") = 0, "In-place allreduce of a float32/float64 numpy array.")
      .def(
          "broadcast",
          [](Engine& e, const py::array& arr, int root, const std::string& name,
             std::uint64_t signature) {
            OpRequest req = view_array(arr, name, true);
            req.kind = OpKind::Broadcast;
            req.root = root;
            req.signature = signature;
            return submit(e, std::move(req), arr);
          },
          py::arg("array"), py::arg("root") = 0, py::arg("name") = "broadcast",
          py::arg("signature") = 0, "In-place broadcast of a numpy array from root.")
      .def(
          "allgather",
          [](Engine& e, const py::bytes& data, const std::string& name,
             const std::string& layout) {
            OpRequest req;
            req.kind = OpKind::Allgather;
            req.dtype = DType::Byte;
            req.name = name;
            req.layout = layout;
            char* ptr = nullptr;
            Py_ssize_t len = 0;
            if (PyBytes_AsStringAndSize(data.ptr(), &ptr, &len) != 0)
              throw py::error_already_set();
            req.data = ptr;
            req.count = static_cast<std::size_t>(len);
            return submit(e, std::move(req), data);
          },
          py::arg("data"), py::arg("name") = "allgather", py::arg("layout") = "",
          "Gather every rank's bytes (any length) on every rank; result() after wait(). "
          "layout says in words what the bytes hold (shown in mismatch errors, not compared).")
      .def(
          "barrier",
          [](Engine& e, const std::string& name) {
            OpRequest req;
            req.kind = OpKind::Barrier;
            req.name = name;
            return submit(e, std::move(req), py::none());
          },
          py::arg("name") = "barrier")
      .def("set_sites", &Engine::set_sites, py::arg("site_of_rank"),
           "The site (an integer label) of every rank; large allreduces become site-aware.")
      .def(
          "set_caps",
          [](Engine& e, const std::vector<py::tuple>& caps) {
            e.set_caps(dlion_py::caps_of(caps));
          },
          py::arg("caps"),
          "Emulated (bandwidth bytes/s, latency s[, wire]) per rank, as PeerEngine.set_caps: "
          "the ring allreduces pace their sends on them.")
      .def("share_wires", &Engine::share_wires, py::arg("clocks"),
           "The SiteClocks table whose clocks caps may share (once).")
      .def(
          "watch_liveness",
          [](Engine& e, const dlion::PeerEngine& peers) { e.set_liveness(peers.liveness()); },
          py::arg("peers"),
          "Use the peer engine's heartbeats: stall warnings name the ranks behind, and a lost "
          "rank fails the waiting operation with RankLostError at once.")
      .def("shutdown", &Engine::shutdown, py::call_guard<py::gil_scoped_release>())
      .def("poisoned", &Engine::poisoned)
      .def("thread_cpu_seconds", &Engine::thread_cpu_seconds,
           "CPU seconds used so far by the engine's progress thread (per-thread clock).")
      .def("stats", [](const Engine& e) {
        auto s = e.stats();
        py::dict d;
        d["ops_completed"] = s.ops_completed;
        d["ops_failed"] = s.ops_failed;
        d["bytes_reduced"] = s.bytes_reduced;
        d["ring_allreduces"] = s.ring_allreduces;
        d["hierarchical_allreduces"] = s.hierarchical_allreduces;
        d["busy_seconds"] = s.busy_seconds;
        return d;
      });
}
