// Bindings of the wire format (csrc/wire): build a message from numpy arrays (for tests and
// tools), and validate + apply a received one. Arguments are checked first, then the GIL is
// released while the codec runs. Encodings and kinds are plain ints (WIRE_ENCODINGS, WIRE_KINDS).
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "common/error.h"
#include "wire/checksum.h"
#include "wire/codec.h"

namespace py = pybind11;
namespace wire = dlion::wire;

namespace {

std::string dtype_name(const py::array& a) { return py::str(a.dtype()).cast<std::string>(); }

// One payload section filled from one argument array.
struct Section {
  std::size_t offset;
  std::size_t count;
  std::size_t itemsize;
  const char* what;  // e.g. "float32 values[n]"
  bool first_only = false;  // CONTIGUOUS indices: only idx[0] goes in, as the `first` word
};

wire::Encoding encoding_of(int encoding) {
  DLION_CHECK(encoding >= 1 && encoding <= 7, dlion::InvalidArgument,
              "wire_encode: unknown encoding ", encoding, "; see dlion_core.WIRE_ENCODINGS");
  return static_cast<wire::Encoding>(encoding);
}

// The indices a sparse encoding takes (idx[k]); a CONTIGUOUS layout keeps the first one only.
Section idx_section(const wire::Layout& l, std::size_t k) {
  if (l.first != wire::kAbsent) return {l.first, k, 4, "uint32 idx[k]", true};
  return {l.idx, k, 4, "uint32 idx[k]"};
}

std::vector<Section> sections(wire::Encoding e, const wire::Layout& l, std::size_t n,
                              std::size_t k) {
  using E = wire::Encoding;
  switch (e) {
    case E::kDenseF32:
      return {{l.values, n, 4, "float32 values[n]"}};
    case E::kSparseF32:
      return {idx_section(l, k), {l.values, k, 4, "float32 values[k]"}};
    case E::kSparseQsgd8:
      return {idx_section(l, k),
              {l.packed, k, 1, "int8/uint8 levels[k]"},
              {l.scales, l.n_scales, 4, "float32 scales[ceil(k / bucket)]"}};
    case E::kQsgd:
      return {{l.packed, l.packed_bytes, 1, "uint8 packed[ceil(n * bits / 8)]"},
              {l.scales, l.n_scales, 4, "float32 scales[ceil(n / bucket)]"}};
    case E::kSign:
      return {{l.packed, l.packed_bytes, 1, "uint8 signs[ceil(n / 8)]"},
              {l.scales, 1, 4, "float32 scale[1]"}};
    case E::kFp16:
    case E::kBf16:
      return {{l.values, n, 2, "uint16 values[n]"}};
  }
  return {};
}

// The array's bytes, after checking it is C-contiguous with the section's item size and count.
const void* section_data(const py::handle& h, const Section& s, std::size_t i) {
  if (!py::isinstance<py::array>(h))
    throw dlion::InvalidArgument("wire_encode: array " + std::to_string(i) +
                                 " is not a numpy array; pass " + s.what);
  auto a = py::reinterpret_borrow<py::array>(h);
  if (!(a.flags() & py::array::c_style) || static_cast<std::size_t>(a.itemsize()) != s.itemsize ||
      static_cast<std::size_t>(a.size()) != s.count)
    throw dlion::InvalidArgument(
        "wire_encode: array " + std::to_string(i) + " has dtype " + dtype_name(a) + " and " +
        std::to_string(a.size()) + " elements; pass a C-contiguous " + s.what + " with " +
        std::to_string(s.count) + " elements");
  return a.data();
}

// CONTIGUOUS or 0 for a sparse message with these indices (arrays[0]): as the engine's encoder
// does, CONTIGUOUS whenever they are consecutive (contiguous=None); True insists on it, False
// keeps the explicit idx[k] section.
std::uint8_t sparse_flags(const py::args& arrays, std::size_t k, const py::object& contiguous) {
  if (arrays.size() == 0 || k == 0) return 0;  // the section checks below say what is wrong
  const auto* idx =
      static_cast<const std::uint32_t*>(section_data(arrays[0], {0, k, 4, "uint32 idx[k]"}, 0));
  const bool run = wire::consecutive(idx, k);
  if (contiguous.is_none()) return run ? wire::kFlagContiguous : 0;
  if (!contiguous.cast<bool>()) return 0;
  DLION_CHECK(run, dlion::InvalidArgument,
              "wire_encode: contiguous=True but the indices are not consecutive (idx[0] = ",
              idx[0], ", k = ", k, ")");
  return wire::kFlagContiguous;
}

py::bytes wire_encode(int kind, std::uint32_t sender, std::uint64_t step, std::uint32_t group,
                      int encoding, std::uint64_t n, float weight, const py::args& arrays,
                      int bits, std::uint32_t bucket, const py::object& contiguous) {
  wire::Fields f;
  DLION_CHECK(kind >= 1 && kind <= 4, dlion::InvalidArgument, "wire_encode: kind = ", kind,
              "; use 1 (gradient), 2 (parameters), 3 (probe) or 4 (ack)");
  f.kind = static_cast<wire::Kind>(kind);
  f.sender = sender, f.step = step, f.group = group, f.n = n, f.weight = weight;
  f.encoding = encoding_of(encoding);
  f.bits = bits != 0 ? bits : wire::required_bits(f.encoding, 0);
  f.bucket = wire::is_bucketed(f.encoding) ? bucket : 0;
  f.k = n;
  if (wire::is_sparse(f.encoding) && arrays.size() > 0)
    f.k = static_cast<std::uint64_t>(py::len(arrays[0]));
  if (wire::is_sparse(f.encoding)) {
    f.flags = sparse_flags(arrays, static_cast<std::size_t>(f.k), contiguous);
  } else {
    DLION_CHECK(contiguous.is_none() || !contiguous.cast<bool>(), dlion::InvalidArgument,
                "wire_encode: contiguous=True needs a sparse encoding (2 or 3)");
  }
  const wire::Layout l = wire::layout(f.encoding, f.n, f.k, f.bits, f.bucket, f.flags);
  const auto secs = sections(f.encoding, l, static_cast<std::size_t>(n),
                             static_cast<std::size_t>(f.k));
  DLION_CHECK(arrays.size() == secs.size(), dlion::InvalidArgument, "wire_encode: encoding ",
              encoding, " takes ", secs.size(), " arrays, got ", arrays.size());
  const std::size_t len = wire::kHeaderBytes + l.total;
  std::vector<std::uint8_t> msg(len);
  for (std::size_t i = 0; i < secs.size(); ++i) {
    const void* src = section_data(arrays[i], secs[i], i);
    std::memcpy(msg.data() + wire::kHeaderBytes + secs[i].offset, src,
                (secs[i].first_only ? 1 : secs[i].count) * secs[i].itemsize);
  }
  wire::encode_header(f, msg.data(), len);
  return py::bytes(reinterpret_cast<const char*>(msg.data()), len);
}

py::dict header_dict(const wire::Decoded& d) {
  const wire::Header& h = d.header();
  py::dict r;
  r["kind"] = h.kind, r["sender"] = h.sender, r["step"] = h.step, r["group"] = h.group;
  r["encoding"] = h.encoding, r["bits"] = h.bits, r["flags"] = h.flags, r["n"] = h.n;
  r["k"] = h.k, r["payload_bytes"] = h.payload_bytes, r["weight"] = h.weight;
  r["checksum"] = h.checksum, r["bucket"] = d.bucket();
  r["first"] = d.contiguous() ? py::object(py::int_(d.first())) : py::object(py::none());
  return r;
}

py::dict wire_apply(const py::buffer& msg, int expected_sender, std::uint32_t group,
                    std::uint64_t n, py::array& out, const py::object& weight) {
  if (!out.dtype().equal(py::dtype::of<float>()) || !(out.flags() & py::array::c_style) ||
      !out.writeable())
    throw dlion::InvalidArgument("wire_apply: out must be a writable C-contiguous float32 "
                                 "array, not " + dtype_name(out));
  DLION_CHECK(static_cast<std::uint64_t>(out.size()) == n, dlion::InvalidArgument,
              "wire_apply: out has ", out.size(), " elements but n = ", n);
  const py::buffer_info info = msg.request();
  DLION_CHECK(info.ndim <= 1 && info.itemsize == 1, dlion::InvalidArgument,
              "wire_apply: msg must be bytes (or a 1-d byte buffer)");
  const auto len = static_cast<std::size_t>(info.size);
  const auto* p = static_cast<const std::uint8_t*>(info.ptr);
  std::vector<std::uint64_t> aligned;  // validate() needs 8-byte alignment
  if (reinterpret_cast<std::uintptr_t>(p) % 8 != 0) {
    aligned.resize((len + 7) / 8);
    std::memcpy(aligned.data(), p, len);
    p = reinterpret_cast<const std::uint8_t*>(aligned.data());
  }
  float* o = static_cast<float*>(out.mutable_data());
  const bool own_weight = !weight.is_none();
  const float w = own_weight ? weight.cast<float>() : 0.0f;
  py::gil_scoped_release release;
  const wire::Decoded d = wire::validate(p, len, expected_sender, group, n);
  wire::apply_add(d, o, static_cast<std::size_t>(n), own_weight ? w : d.weight());
  py::gil_scoped_acquire acquire;
  return header_dict(d);
}

std::uint64_t wire_checksum(const py::buffer& data, std::uint64_t seed) {
  const py::buffer_info info = data.request();
  const auto len = static_cast<std::size_t>(info.size * info.itemsize);
  py::gil_scoped_release release;
  return wire::hash64(info.ptr, len, seed);
}

}  // namespace

void bind_wire(py::module_& m) {
  py::dict enc;
  enc["dense_f32"] = 1, enc["sparse_f32"] = 2, enc["sparse_qsgd8"] = 3, enc["qsgd"] = 4;
  enc["sign"] = 5, enc["fp16"] = 6, enc["bf16"] = 7;
  py::dict kinds;
  kinds["gradient"] = 1, kinds["parameters"] = 2, kinds["probe"] = 3, kinds["ack"] = 4;
  kinds["heartbeat"] = 5;
  m.attr("WIRE_ENCODINGS") = enc;
  m.attr("WIRE_KINDS") = kinds;
  m.attr("WIRE_HEADER_BYTES") = wire::kHeaderBytes;
  m.def("wire_encode", &wire_encode, py::arg("kind"), py::arg("sender"), py::arg("step"),
        py::arg("group"), py::arg("encoding"), py::arg("n"), py::arg("weight"),
        py::kw_only(), py::arg("bits") = 0, py::arg("bucket") = 512,
        py::arg("contiguous") = py::none(),
        "A wire message (csrc/wire/format.h) from the payload arrays of the encoding, in order: "
        "dense_f32 (values), sparse_f32 (idx, values), sparse_qsgd8 (idx, levels, scales), "
        "qsgd (packed, scales), sign (signs, scale[1]), fp16/bf16 (uint16 values). bits=0 "
        "means the encoding's own (qsgd needs 2, 4 or 8); bucket is for qsgd/sparse_qsgd8. "
        "Sparse indices that are consecutive go as flags CONTIGUOUS (their first one only), "
        "as the engine sends them; contiguous=False keeps the idx[k] section, True requires "
        "consecutive indices. Index order is not checked (wire_apply does that).");
  m.def("wire_apply", &wire_apply, py::arg("msg"), py::arg("expected_sender"), py::arg("group"),
        py::arg("n"), py::arg("out"), py::arg("weight") = py::none(),
        "Validates msg as sent by rank expected_sender for (group, n), then adds weight * its "
        "decoded values into out (float32, n elements; weight=None: the header's). Returns the "
        "header fields (first: the first index of a CONTIGUOUS message, else None). A bad "
        "message raises ProtocolError and leaves out untouched.");
  m.def("wire_checksum", &wire_checksum, py::arg("data"), py::arg("seed") = 0,
        "XXH64 of a buffer's bytes (the wire checksum's hash).");
  m.def("wire_payload_bytes",
        [](int encoding, std::uint64_t n, std::uint64_t k, int bits, std::uint64_t bucket,
           std::uint8_t flags) {
          return wire::payload_bytes(encoding_of(encoding), n, k, bits, bucket, flags);
        },
        py::arg("encoding"), py::arg("n"), py::arg("k"), py::arg("bits"), py::arg("bucket") = 0,
        py::arg("flags") = 0,
        "Payload bytes of a message (format.h section 4); flags=1: CONTIGUOUS.");
  m.attr("WIRE_FLAG_CONTIGUOUS") = wire::kFlagContiguous;
  m.attr("WIRE_VERSION") = wire::kWireVersion;
}
