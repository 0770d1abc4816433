// Bindings of the quantization, cast and error-feedback kernels (csrc/compress/quantize.h,
// cast.h, residual.h) and of their instruction-set choice (simd.h). Inputs are numpy arrays of
// any shape, used in place without copies (read-only ones too) when they have the right dtype
// and are C-contiguous; anything else is an InvalidArgumentError that says what to pass.
// Arguments are checked first, then the GIL is released for the kernel. Results are new arrays,
// or the `out=` array where there is one.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "common/error.h"
#include "compress/cast.h"
#include "compress/quantize.h"
#include "compress/residual.h"
#include "compress/simd.h"
#include "views.h"

namespace py = pybind11;
using namespace dlion_bind;  // NOLINT: the shared argument checks

namespace {

// The `out=` array of a function whose result has `n` elements of `dtype` (named `want`), or a
// new array of `shape` when out is None.
py::array result_array(const py::object& out, const py::dtype& dtype,
                       std::vector<py::ssize_t> shape, std::size_t n, const char* fn,
                       const char* want) {
  if (out.is_none()) return py::array(dtype, std::move(shape));
  if (!py::isinstance<py::array>(out))
    throw dlion::InvalidArgument(std::string(fn) + ": out must be a numpy array or None");
  auto arr = py::reinterpret_borrow<py::array>(out);
  writable_view(arr, dtype, fn, "out", want);
  check_size(static_cast<std::size_t>(arr.size()), n, fn, "out", "one per element");
  return arr;
}

py::tuple qsgd_encode(const py::array& x, int bits, std::uint64_t seed, std::size_t bucket,
                      const py::object& packed_out, const py::object& scales_out) {
  const float* xp = input<float>(x, "qsgd_encode", "x", "float32");
  const auto n = static_cast<std::size_t>(x.size());
  const std::size_t nbytes = dlion::qsgd_packed_bytes(n, bits);  // validates bits and bucket
  const std::size_t nscales = dlion::qsgd_buckets(n, bucket);
  py::array packed = result_array(packed_out, py::dtype::of<std::uint8_t>(),
                                  {static_cast<py::ssize_t>(nbytes)}, nbytes, "qsgd_encode",
                                  "uint8, ceil(n * bits / 8) bytes");
  py::array scales = result_array(scales_out, py::dtype::of<float>(),
                                  {static_cast<py::ssize_t>(nscales)}, nscales, "qsgd_encode",
                                  "float32, one per bucket");
  auto* pp = static_cast<std::uint8_t*>(packed.mutable_data());
  auto* sp = static_cast<float*>(scales.mutable_data());
  {
    py::gil_scoped_release release;
    dlion::qsgd_encode(xp, n, bits, bucket, seed, pp, sp);
  }
  return py::make_tuple(std::move(packed), std::move(scales));
}

py::array qsgd_decode(const py::array& packed, const py::array& scales, std::size_t n, int bits,
                      std::size_t bucket, const py::object& out) {
  const auto* pp = input<std::uint8_t>(packed, "qsgd_decode", "packed", "uint8");
  const float* sp = input<float>(scales, "qsgd_decode", "scales", "float32");
  check_size(static_cast<std::size_t>(packed.size()), dlion::qsgd_packed_bytes(n, bits),
             "qsgd_decode", "packed", "ceil(n * bits / 8) bytes");
  check_size(static_cast<std::size_t>(scales.size()), dlion::qsgd_buckets(n, bucket),
             "qsgd_decode", "scales", "one per bucket: ceil(n / bucket)");
  py::array res = result_array(out, py::dtype::of<float>(),
                                      {static_cast<py::ssize_t>(n)}, n, "qsgd_decode", "float32");
  auto* op = static_cast<float*>(res.mutable_data());
  {
    py::gil_scoped_release release;
    dlion::qsgd_decode(pp, sp, n, bits, bucket, op);
  }
  return res;
}

py::tuple sign_encode(const py::array& x) {
  const float* xp = input<float>(x, "sign_encode", "x", "float32");
  const auto n = static_cast<std::size_t>(x.size());
  py::array_t<std::uint8_t> bits(static_cast<py::ssize_t>(dlion::sign_packed_bytes(n)));
  std::uint8_t* bp = bits.mutable_data();
  float scale = 0.0f;
  {
    py::gil_scoped_release release;
    dlion::sign_encode(xp, n, bp, &scale);
  }
  return py::make_tuple(std::move(bits), scale);
}

py::array sign_decode(const py::array& bits, float scale, std::size_t n, const py::object& out) {
  const auto* bp = input<std::uint8_t>(bits, "sign_decode", "bits", "uint8");
  check_size(static_cast<std::size_t>(bits.size()), dlion::sign_packed_bytes(n), "sign_decode",
             "bits", "ceil(n / 8) bytes");
  py::array res = result_array(out, py::dtype::of<float>(),
                                      {static_cast<py::ssize_t>(n)}, n, "sign_decode", "float32");
  auto* op = static_cast<float*>(res.mutable_data());
  {
    py::gil_scoped_release release;
    dlion::sign_decode(bp, scale, n, op);
  }
  return res;
}

// An element-wise cast In -> Out keeping the input's shape.
template <typename In, typename Out>
py::array cast(const py::array& x, const py::object& out, const py::dtype& in_dtype,
               const char* in_name, const py::dtype& out_dtype, const char* out_name,
               void (*kernel)(const In*, std::size_t, Out*), const char* fn) {
  check_array(x, in_dtype, fn, "x", in_name);
  const auto* xp = static_cast<const In*>(x.data());
  const auto n = static_cast<std::size_t>(x.size());
  py::array res = result_array(out, out_dtype, shape_of(x), n, fn, out_name);
  auto* op = static_cast<Out*>(res.mutable_data());
  {
    py::gil_scoped_release release;
    kernel(xp, n, op);
  }
  return res;
}

// residual (writable float32) and its partner (float32 of the same size).
void ef_dense(py::array& residual, const py::array& other, const char* fn, const char* arg,
              void (*kernel)(float*, const float*, std::size_t)) {
  float* rp = writable<float>(residual, fn, "residual", "float32");
  const float* gp = input<float>(other, fn, arg, "float32");
  const auto n = static_cast<std::size_t>(residual.size());
  check_size(static_cast<std::size_t>(other.size()), n, fn, arg, "one per residual element");
  py::gil_scoped_release release;
  kernel(rp, gp, n);
}

void ef_after_sparse(py::array& residual, const py::array& idx) {
  float* rp = writable<float>(residual, "ef_after_sparse", "residual", "float32");
  const auto* ip = input<std::uint32_t>(idx, "ef_after_sparse", "idx", "uint32");
  const auto n = static_cast<std::size_t>(residual.size());
  const auto k = static_cast<std::size_t>(idx.size());
  py::gil_scoped_release release;
  dlion::ef_after_sparse(rp, ip, k, n);
}

void set_simd(const std::string& mode) {
  if (mode != "auto" && mode != "baseline")
    throw dlion::InvalidArgument("set_simd: mode must be 'auto' or 'baseline', got '" + mode +
                                 "' (the dlion option simd, DLION_SIMD)");
  dlion::detail::simd_force_baseline(mode == "baseline");
}

}  // namespace

void bind_quantize(py::module_& m) {
  m.def("set_simd", &set_simd, py::arg("mode"),
        "Instruction set of the element-wise kernels: 'auto' (AVX2 when the CPU has it) or "
        "'baseline' (SSE2); both give identical bits. dlion.init applies the option simd.");
  m.def(
      "simd", [] { return std::string(dlion::detail::simd_avx2() ? "avx2" : "baseline"); },
      "The variant the element-wise kernels run now: 'avx2' or 'baseline'.");
  const auto bucket = static_cast<std::size_t>(dlion::kDefaultQsgdBucket);
  m.def("qsgd_encode", &qsgd_encode, py::arg("x"), py::arg("bits"), py::arg("seed"),
        py::arg("bucket") = bucket, py::kw_only(), py::arg("packed_out") = py::none(),
        py::arg("scales_out") = py::none(),
        "QSGD stochastic quantization of float32 x (flattened) to 8, 4 or 2 bits per element in "
        "buckets of `bucket` elements. Returns (packed uint8, scales float32), written into "
        "packed_out / scales_out when given.");
  m.def("qsgd_decode", &qsgd_decode, py::arg("packed"), py::arg("scales"), py::arg("n"),
        py::arg("bits"), py::arg("bucket") = bucket, py::kw_only(), py::arg("out") = py::none(),
        "Inverse of qsgd_encode: n float32 values (into `out` when given).");
  m.def("sign_encode", &sign_encode, py::arg("x"),
        "1 bit per element (1: x >= 0) and scale = mean |x|. Returns (bits uint8, scale).");
  m.def("sign_decode", &sign_decode, py::arg("bits"), py::arg("scale"), py::arg("n"),
        py::kw_only(), py::arg("out") = py::none(), "n float32 values +-scale.");
  const py::dtype f32 = py::dtype::of<float>();
  const py::dtype f16("float16");
  const py::dtype u16 = py::dtype::of<std::uint16_t>();
  m.def(
      "to_fp16",
      [f32, f16](const py::array& x, const py::object& out) {
        return cast<float, std::uint16_t>(x, out, f32, "float32", f16, "float16", dlion::to_fp16,
                                          "to_fp16");
      },
      py::arg("x"), py::kw_only(), py::arg("out") = py::none(),
      "float32 -> float16 (round to nearest even), same shape.");
  m.def(
      "from_fp16",
      [f32, f16](const py::array& h, const py::object& out) {
        return cast<std::uint16_t, float>(h, out, f16, "float16", f32, "float32",
                                          dlion::from_fp16, "from_fp16");
      },
      py::arg("h"), py::kw_only(), py::arg("out") = py::none(), "float16 -> float32 (exact).");
  m.def(
      "to_bf16",
      [f32, u16](const py::array& x, const py::object& out) {
        return cast<float, std::uint16_t>(x, out, f32, "float32", u16, "uint16", dlion::to_bf16,
                                          "to_bf16");
      },
      py::arg("x"), py::kw_only(), py::arg("out") = py::none(),
      "float32 -> bfloat16 bits as uint16 (round to nearest even; NaN stays NaN).");
  m.def(
      "from_bf16",
      [f32, u16](const py::array& b, const py::object& out) {
        return cast<std::uint16_t, float>(b, out, u16, "uint16", f32, "float32", dlion::from_bf16,
                                          "from_bf16");
      },
      py::arg("b"), py::kw_only(), py::arg("out") = py::none(),
      "bfloat16 bits (uint16) -> float32 (exact).");
  m.def(
      "ef_compensate",
      [](py::array& residual, const py::array& grad) {
        ef_dense(residual, grad, "ef_compensate", "grad", dlion::ef_compensate);
      },
      py::arg("residual"), py::arg("grad"), "In place: residual += grad.");
  m.def(
      "ef_after_dense",
      [](py::array& residual, const py::array& sent) {
        ef_dense(residual, sent, "ef_after_dense", "sent_decoded", dlion::ef_after_dense);
      },
      py::arg("residual"), py::arg("sent_decoded"), "In place: residual -= sent_decoded.");
  m.def("ef_after_sparse", &ef_after_sparse, py::arg("residual"), py::arg("idx"),
        "In place: residual[idx] = 0 (idx: uint32, every entry < residual.size).");
}
