// PeerEngine bindings: per-link peer exchange of float32 numpy buffers. Link plans arrive as
// plain tuples (Python's exchange policies build them); statistics leave as plain dicts.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdint>
#include <memory>
#include <string>
#include <tuple>
#include <vector>

#include "common/error.h"
#include "engine/peer_engine.h"
#include "caps.h"
#include "handle.h"

using dlion::PeerEngine;

namespace {


// A float32, C-contiguous array (writable when `write`), else InvalidArgument naming it.
py::array check_f32(const py::array& a, const char* what, const std::string& name, bool write) {
  if (!a.dtype().equal(py::dtype::of<float>()) || !(a.flags() & py::array::c_style) ||
      (write && !a.writeable()))
    throw dlion::InvalidArgument("peer exchange '" + name + "': " + what + " must be a " +
                                 (write ? "writable " : "") +
                                 "C-contiguous float32 array, not " +
                                 py::str(a.dtype()).cast<std::string>() +
                                 (a.flags() & py::array::c_style ? "" : " (non-contiguous)"));
  return a;
}

// (encoding, k, bits, bucket, error_feedback[, select, threshold, offset]).
dlion::LinkPlan plan_of(const py::tuple& t) {
  DLION_CHECK(t.size() == 5 || t.size() == 8 || t.size() == 9, dlion::InvalidArgument,
              "a link plan is (encoding, k, bits, bucket, error_feedback[, select, threshold, "
              "offset[, send]]), got ", t.size(), " fields");
  const int encoding = t[0].cast<int>();
  DLION_CHECK(encoding >= 1 && encoding <= 7, dlion::InvalidArgument, "unknown encoding ",
              encoding, "; see dlion_core.WIRE_ENCODINGS");
  dlion::LinkPlan p;
  p.codec.encoding = static_cast<dlion::wire::Encoding>(encoding);
  p.codec.k = t[1].cast<std::uint64_t>();
  p.codec.bits = t[2].cast<int>();
  p.codec.bucket = t[3].cast<std::uint32_t>();
  p.error_feedback = t[4].cast<bool>();
  if (t.size() == 9) p.send = t[8].cast<bool>();
  if (t.size() >= 8) {
    const int select = t[5].cast<int>();
    DLION_CHECK(select >= 0 && select <= 2, dlion::InvalidArgument, "unknown selection ",
                select, "; 0 top-k, 1 threshold, 2 range");
    p.codec.select = static_cast<dlion::wire::Select>(select);
    p.codec.threshold = t[6].cast<float>();
    p.codec.offset = t[7].cast<std::uint64_t>();
  }
  return p;
}

py::dict stats_dict(const dlion::LinkStats& s) {
  py::dict d;
  d["bytes_sent"] = s.bytes_sent, d["messages_sent"] = s.messages_sent;
  d["bytes_received"] = s.bytes_received, d["messages_received"] = s.messages_received;
  d["control_bytes_sent"] = s.control_bytes_sent;
  d["bandwidth_Bps"] = s.bandwidth_Bps, d["latency_s"] = s.latency_s;
  d["bandwidth_samples"] = s.bandwidth_samples, d["latency_samples"] = s.latency_samples;
  d["timed_bytes"] = s.timed_bytes, d["timed_seconds"] = s.timed_seconds;
  d["last_k"] = s.last_k, d["last_step_received"] = s.last_step_received;
  d["staleness_last"] = s.staleness_last, d["staleness_max"] = s.staleness_max;
  d["emulated_bandwidth_Bps"] = s.emulated_bandwidth_Bps;
  d["emulated_latency_s"] = s.emulated_latency_s;
  d["emulated_shared"] = s.emulated_shared;
  return d;
}

}  // namespace

void bind_peer(py::module_& m) {
  using dlion::SiteClocks;
  py::class_<SiteClocks, std::shared_ptr<SiteClocks>>(
      m, "SiteClocks",
      "Pacing clocks of emulated links shared by several senders, in POSIX shared memory that "
      "the processes of one host map (csrc/engine/site_clocks.h).")
      .def_static("open", &SiteClocks::open, py::arg("name"), py::arg("slots"),
                  "Open (creating if needed) and map the shared table `name` of `slots` clocks.")
      .def_static("local", &SiteClocks::local, py::arg("slots"),
                  "A table of `slots` clocks in this process only.")
      .def_static("unlink", &SiteClocks::unlink, py::arg("name"),
                  "Remove the name (mappings stay); False when it was already gone.")
      .def_property_readonly("slots", &SiteClocks::slots)
      .def_property_readonly("shared", &SiteClocks::shared);
  py::class_<PeerEngine>(m, "PeerEngine",
                         "Asynchronous per-link peer exchange on a duplicate of an mpi4py "
                         "communicator (csrc/engine/peer_engine.h).")
      .def(py::init([](const py::object& comm, const dlion::EngineConfig& config) {
             MPI_Comm c = dlion_py::comm_from_mpi4py(comm);
             py::gil_scoped_release release;
             return std::make_unique<PeerEngine>(c, config);
           }),
           py::arg("comm"), py::arg("config") = dlion::EngineConfig())
      .def_property_readonly("rank", &PeerEngine::rank)
      .def_property_readonly("size", &PeerEngine::size)
      .def(
          "exchange",
          [](PeerEngine& e, const py::array& grad, const py::array& out, std::uint32_t group,
             std::uint64_t step, const std::vector<py::tuple>& links, float weight,
             int staleness, bool sync, const std::string& name, const py::object& reference,
             const std::vector<bool>& expect) {
            check_f32(grad, "grad", name, false);
            check_f32(out, "out", name, true);
            DLION_CHECK(grad.size() == out.size(), dlion::InvalidArgument, "peer exchange '",
                        name, "': grad has ", grad.size(), " elements but out has ", out.size());
            py::object ref = py::none();
            if (!reference.is_none()) {
              ref = check_f32(reference.cast<py::array>(), "reference", name, false);
              DLION_CHECK(py::array(ref).size() == grad.size(), dlion::InvalidArgument,
                          "peer exchange '", name, "': reference has ",
                          py::array(ref).size(), " elements but grad has ", grad.size());
            }
            dlion::ExchangeRequest req;
            req.group = group, req.step = step, req.weight = weight;
            req.grad = static_cast<const float*>(grad.data());
            req.out = static_cast<float*>(py::array(out).mutable_data());
            req.n = static_cast<std::size_t>(grad.size());
            req.staleness = staleness, req.sync = sync, req.name = name;
            if (!ref.is_none()) req.reference = static_cast<const float*>(py::array(ref).data());
            req.links.reserve(links.size());
            for (const auto& t : links) req.links.push_back(plan_of(t));
            req.expect.assign(expect.begin(), expect.end());
            dlion::HandlePtr h = e.exchange(std::move(req));
            return std::make_unique<dlion_py::PyHandle>(
                std::move(h), py::make_tuple(grad, out, ref), 2 * e.config().stall_timeout_s);
          },
          py::arg("grad"), py::arg("out"), py::arg("group"), py::arg("step"), py::arg("links"),
          py::arg("weight") = 1.0f, py::arg("staleness") = 0, py::arg("sync") = false,
          py::arg("name") = "peer_exchange", py::arg("reference") = py::none(),
          py::arg("expect") = std::vector<bool>(),
          "Queue one exchange of float32 grad; out (may be grad) receives the weighted "
          "aggregate. links: one (encoding, k, bits, bucket, error_feedback[, select, "
          "threshold, offset[, send]]) per rank (own entry ignored); select 0 top-k, 1 |x| > "
          "threshold * |reference| (reference: float32, n elements), 2 the range [offset, "
          "offset + k); send False: nothing on that link. expect: one flag per rank, the peers "
          "whose message of this step is awaited and applied (default: every peer). "
          "Keep grad, out and reference untouched until the handle's wait() returns.")
      .def(
          "probe",
          [](PeerEngine& e) {
            return std::make_unique<dlion_py::PyHandle>(e.probe(), py::none(),
                                                        2 * e.config().stall_timeout_s);
          },
          "Measure every link (collective).")
      .def(
          "set_caps",
          [](PeerEngine& e, const std::vector<py::tuple>& caps) {
            e.set_caps(dlion_py::caps_of(caps));
          },
          py::arg("caps"),
          "Emulated (bandwidth bytes/s, latency s[, wire]) per rank; 0 bandwidth: unlimited; "
          "wire: the clock of the share_wires table the link is paced on (-1: its own).")
      .def("share_wires", &PeerEngine::share_wires, py::arg("clocks"),
           "The SiteClocks table whose clocks caps may share (once).")
      .def("link_stats",
           [](const PeerEngine& e) {
             py::list out;
             for (const auto& s : e.link_stats()) out.append(stats_dict(s));
             return out;
           },
           "One dict of link statistics per rank (own entry all zero).")
      .def(
          "residual",
          [](const PeerEngine& e, std::uint32_t group, int peer) {
            std::vector<float> r = e.residual(group, peer);
            py::array_t<float> a(static_cast<py::ssize_t>(r.size()));
            std::copy(r.begin(), r.end(), a.mutable_data());
            return a;
          },
          py::arg("group"), py::arg("peer"), "A copy of a link's residual (empty if none).")
      .def(
          "set_residual",
          [](PeerEngine& e, std::uint32_t group, int peer, const py::array& values) {
            check_f32(values, "values", "set_residual", false);
            const auto* p = static_cast<const float*>(values.data());
            e.set_residual(group, peer, std::vector<float>(p, p + values.size()));
          },
          py::arg("group"), py::arg("peer"), py::arg("values"))
      .def("shutdown", &PeerEngine::shutdown, py::call_guard<py::gil_scoped_release>())
      .def("poisoned", &PeerEngine::poisoned)
      .def(
          "set_site_names",
          [](PeerEngine& p, std::vector<std::string> names) {
            p.liveness()->set_sites(std::move(names));
          },
          py::arg("names"), "The site of every rank, named in liveness errors and warnings.")
      .def(
          "liveness",
          [](const PeerEngine& p) {
            const auto& l = *p.liveness();
            py::dict d;
            d["timeout_s"] = l.timeout_s();
            d["interval_s"] = l.interval_s();
            d["lost"] = l.lost();
            d["collective_ops"] = l.entered();
            return d;
          },
          "Liveness state: timeout, heartbeat interval, the lost-peer message (empty: none).")
      .def("thread_cpu_seconds", &PeerEngine::thread_cpu_seconds,
           "CPU seconds used so far by the peer engine's progress thread (per-thread clock).");
}
