// dlion_core: thin pybind11 bindings of csrc/. This file registers the error types (mirrored in
// dlion/errors.py), the engine bindings (engine.cpp), the codec kernels (compress_quant.cpp)
// the sparsification kernels (compress_topk.cpp), the wire format (wire.cpp) and the peer
// engine (peer.cpp).
#include <pybind11/pybind11.h>

#include "common/error.h"

namespace py = pybind11;

void bind_engine(py::module_& m);
void bind_quantize(py::module_& m);
void bind_topk(py::module_& m);
void bind_wire(py::module_& m);
void bind_peer(py::module_& m);

PYBIND11_MODULE(dlion_core, m) {
  m.doc() = "dlion's C++ core: the MPI progress engine and its operations";
  // mpi4py must be imported (and MPI initialised by it) before the engine is used.
  py::module_::import("mpi4py.MPI");

  static py::exception<dlion::Error> base(m, "DlionError", PyExc_RuntimeError);
  static py::exception<dlion::InvalidArgument> invalid(
      m, "InvalidArgumentError", py::make_tuple(base, py::handle(PyExc_ValueError)));
  static py::exception<dlion::MismatchError> mismatch(m, "MismatchError", base);
  static py::exception<dlion::PeerTimeout> timeout(
      m, "PeerTimeoutError", py::make_tuple(base, py::handle(PyExc_TimeoutError)));
  static py::exception<dlion::PeerLost> lost(m, "RankLostError", timeout);
  static py::exception<dlion::EngineShutdown> shutdown(m, "EngineShutdownError", base);
  static py::exception<dlion::MpiError> mpi(m, "MpiError", base);
  static py::exception<dlion::ProtocolError> protocol(m, "ProtocolError", base);
  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const dlion::InvalidArgument& e) {
      py::set_error(invalid, e.what());
    } catch (const dlion::MismatchError& e) {
      py::set_error(mismatch, e.what());
    } catch (const dlion::PeerLost& e) {
      py::set_error(lost, e.what());
    } catch (const dlion::PeerTimeout& e) {
      py::set_error(timeout, e.what());
    } catch (const dlion::EngineShutdown& e) {
      py::set_error(shutdown, e.what());
    } catch (const dlion::MpiError& e) {
      py::set_error(mpi, e.what());
    } catch (const dlion::ProtocolError& e) {
      py::set_error(protocol, e.what());
    } catch (const dlion::Error& e) {
      py::set_error(base, e.what());
    }
  });

  bind_engine(m);
  bind_quantize(m);
  bind_topk(m);
  bind_wire(m);
  bind_peer(m);
}
