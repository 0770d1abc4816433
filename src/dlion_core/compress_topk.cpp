// Sparsification bindings (csrc/compress/topk.h): top-k, random-k and scatter-add on numpy
// arrays. Arguments are checked first (dtype, contiguity, writability; any shape is read as its
// flattened C-order view, without a copy), results are fresh numpy arrays, and the GIL is
// released while a kernel runs.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstdint>
#include <string>

#include "common/error.h"
#include "compress/topk.h"
#include "views.h"

namespace py = pybind11;

namespace {

// k as a count: 0 <= k <= n, and n small enough for 32-bit indices (checked before any output
// is allocated).
std::size_t checked_k(std::int64_t k, std::size_t n, const char* fn) {
  DLION_CHECK(n <= 0xffffffffu, dlion::InvalidArgument, fn, ": x has ", n,
              " elements; indices are 32-bit, so split it into pieces under 2^32");
  DLION_CHECK(k >= 0, dlion::InvalidArgument, fn, ": k = ", k,
              " is negative; pass 0 <= k <= x.size");
  DLION_CHECK(static_cast<std::uint64_t>(k) <= n, dlion::InvalidArgument, fn, ": k = ", k,
              " is larger than the ", n, " elements of x; pass k <= x.size");
  return static_cast<std::size_t>(k);
}

py::tuple topk(const py::array& x, std::int64_t k_arg, bool exact) {
  const float* data = dlion_bind::input<float>(x, "topk", "x", "float32");
  const auto n = static_cast<std::size_t>(x.size());
  const std::size_t k = checked_k(k_arg, n, "topk");
  py::array_t<std::uint32_t> idx(static_cast<py::ssize_t>(k));
  py::array_t<float> val(static_cast<py::ssize_t>(k));
  std::uint32_t* idx_out = idx.mutable_data();
  float* val_out = val.mutable_data();
  {
    py::gil_scoped_release release;
    if (exact)
      dlion::topk_exact(data, n, k, idx_out, val_out);
    else
      dlion::topk_fast(data, n, k, idx_out, val_out);
  }
  return py::make_tuple(idx, val);
}

py::tuple topk_compensate(py::array& residual, const py::array& grad, std::int64_t k_arg) {
  float* res = dlion_bind::writable<float>(residual, "topk_compensate", "residual", "float32");
  const float* g = dlion_bind::input<float>(grad, "topk_compensate", "grad", "float32");
  const auto n = static_cast<std::size_t>(residual.size());
  dlion_bind::check_size(static_cast<std::size_t>(grad.size()), n, "topk_compensate", "grad",
                         "one gradient entry per residual entry");
  DLION_CHECK(!residual.is(grad), dlion::InvalidArgument,
              "topk_compensate: residual and grad are the same array; pass distinct ones");
  const std::size_t k = checked_k(k_arg, n, "topk_compensate");
  py::array_t<std::uint32_t> idx(static_cast<py::ssize_t>(k));
  py::array_t<float> val(static_cast<py::ssize_t>(k));
  std::uint32_t* idx_out = idx.mutable_data();
  float* val_out = val.mutable_data();
  {
    py::gil_scoped_release release;
    dlion::topk_compensate(res, g, n, k, idx_out, val_out);
  }
  return py::make_tuple(idx, val);
}

py::tuple randomk(const py::array& x, std::int64_t k_arg, std::uint64_t seed) {
  const float* data = dlion_bind::input<float>(x, "randomk", "x", "float32");
  const auto n = static_cast<std::size_t>(x.size());
  const std::size_t k = checked_k(k_arg, n, "randomk");
  py::array_t<std::uint32_t> idx(static_cast<py::ssize_t>(k));
  py::array_t<float> val(static_cast<py::ssize_t>(k));
  std::uint32_t* idx_out = idx.mutable_data();
  float* val_out = val.mutable_data();
  {
    py::gil_scoped_release release;
    dlion::randomk(n, k, seed, idx_out);
    dlion::gather(data, idx_out, k, val_out);
  }
  return py::make_tuple(idx, val);
}

void scatter_add(const py::array& idx, const py::array& values, py::array& out) {
  const std::uint32_t* i = dlion_bind::input<std::uint32_t>(idx, "scatter_add", "idx", "uint32");
  const float* v = dlion_bind::input<float>(values, "scatter_add", "values", "float32");
  float* o = dlion_bind::writable<float>(out, "scatter_add", "out", "float32");
  DLION_CHECK(idx.size() == values.size(), dlion::InvalidArgument, "scatter_add: idx has ",
              idx.size(), " elements but values has ", values.size(),
              "; pass the (idx, values) pair returned by topk or randomk");
  const auto k = static_cast<std::size_t>(idx.size());
  const auto n = static_cast<std::size_t>(out.size());
  py::gil_scoped_release release;
  dlion::scatter_add(i, v, k, o, n);
}

}  // namespace

void bind_topk(py::module_& m) {
  m.def("topk", &topk, py::arg("x"), py::arg("k"), py::arg("exact") = true,
        "The k entries of largest |x| of a float32 C-contiguous array (any shape, read as its "
        "flattened view; read-only is fine) as (idx uint32, values float32), idx ascending. "
        "Ties in |x| go to the lower index; NaN/Inf raise InvalidArgumentError. exact=False "
        "uses a sampled threshold (same result, usually faster).");
  m.def("topk_compensate", &topk_compensate, py::arg("residual"), py::arg("grad"), py::arg("k"),
        "Error feedback's compensate and select in one pass: residual += grad in place (both "
        "float32 C-contiguous, same size, distinct), then topk(residual, k) of the updated "
        "residual (same result and contract).");
  m.def("randomk", &randomk, py::arg("x"), py::arg("k"), py::arg("seed"),
        "k distinct uniformly random indices of x (float32 C-contiguous, flattened), ascending, "
        "and their values; reproducible for a seed on every platform.");
  m.def("scatter_add", &scatter_add, py::arg("idx"), py::arg("values"), py::arg("out"),
        "out.flat[idx[i]] += values[i] in place (out: writable float32 C-contiguous; idx: "
        "uint32). An index out of range raises InvalidArgumentError before anything is written.");
}
