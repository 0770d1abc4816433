// Argument checks shared by the bindings: numpy arrays viewed as (pointer, size) without copies.
// Every failure is an InvalidArgument that names the function and argument and says what to pass.
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <string>
#include <vector>

#include "common/error.h"

namespace dlion_bind {

namespace py = pybind11;

inline std::string dtype_name(const py::array& a) {
  return py::str(a.dtype()).cast<std::string>();
}

// Checks the dtype (named `want`, e.g. "float32") and C-contiguity of argument `arg` of `fn`.
inline void check_array(const py::array& a, const py::dtype& dtype, const char* fn,
                        const char* arg, const char* want) {
  if (!a.dtype().equal(dtype))
    throw dlion::InvalidArgument(std::string(fn) + ": " + arg + " has dtype " + dtype_name(a) +
                                 "; pass a " + want + " array (" + arg + ".astype(np." + want +
                                 "))");
  if (!(a.flags() & py::array::c_style))
    throw dlion::InvalidArgument(std::string(fn) + ": " + arg +
                                 " is not C-contiguous; pass np.ascontiguousarray(" + arg + ")");
}

// A read-only view of a C-contiguous array of T (any shape, flattened).
template <typename T>
const T* input(const py::array& a, const char* fn, const char* arg, const char* want) {
  check_array(a, py::dtype::of<T>(), fn, arg, want);
  return static_cast<const T*>(a.data());
}

// A writable view (the array is written in place).
inline void* writable_view(py::array& a, const py::dtype& dtype, const char* fn, const char* arg,
                           const char* want) {
  check_array(a, dtype, fn, arg, want);
  if (!a.writeable())
    throw dlion::InvalidArgument(std::string(fn) + ": " + arg +
                                 " is read-only and is written in place; pass a writable array "
                                 "(e.g. " + arg + ".copy())");
  return a.mutable_data();
}

template <typename T>
T* writable(py::array& a, const char* fn, const char* arg, const char* want) {
  return static_cast<T*>(writable_view(a, py::dtype::of<T>(), fn, arg, want));
}

inline void check_size(std::size_t got, std::size_t want, const char* fn, const char* arg,
                       const std::string& why) {
  if (got != want)
    throw dlion::InvalidArgument(std::string(fn) + ": " + arg + " has " + std::to_string(got) +
                                 " elements, expected " + std::to_string(want) + " (" + why + ")");
}

inline std::vector<py::ssize_t> shape_of(const py::array& a) {
  return std::vector<py::ssize_t>(a.shape(), a.shape() + a.ndim());
}

}  // namespace dlion_bind
