// Typed errors of the dlion core. Mirrored one to one in dlion/errors.py.
//
//   Error                 base of everything the core throws on purpose
//   ├── InvalidArgument   bad input from the caller: dtype, size, option value
//   ├── MismatchError     ranks disagree on what they submitted (op kind, name, count, dtype, root)
//   ├── PeerTimeout       a peer did not take part in an operation within the stall timeout
//   │   └── PeerLost      a peer's process is gone: no heartbeat within the liveness timeout
//   ├── EngineShutdown    the engine was shut down (or poisoned by an earlier fatal error)
//   ├── MpiError          an MPI call returned an error code
//   └── ProtocolError     a peer's wire message failed validation (csrc/wire); it was not applied
//
// Messages say what, where (rank, op, step) and what to do about it.
#pragma once

#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>

namespace dlion {

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& what) : std::runtime_error(what) {}
};

class InvalidArgument : public Error {
 public:
  using Error::Error;
};

class MismatchError : public Error {
 public:
  using Error::Error;
};

class PeerTimeout : public Error {
 public:
  using Error::Error;
};

class PeerLost : public PeerTimeout {
 public:
  using PeerTimeout::PeerTimeout;
};

class EngineShutdown : public Error {
 public:
  using Error::Error;
};

class MpiError : public Error {
 public:
  using Error::Error;
};

class ProtocolError : public Error {
 public:
  using Error::Error;
};

namespace detail {
template <typename... Args>
std::string concat(Args&&... args) {
  std::ostringstream out;
  (out << ... << std::forward<Args>(args));
  return out.str();
}
}  // namespace detail

// The message of the exception being handled (call it inside a catch block only).
inline std::string describe_current_exception() {
  try {
    throw;
  } catch (const std::exception& e) {
    return e.what();
  } catch (...) {
    return "unknown error";
  }
}

}  // namespace dlion

// DLION_CHECK(cond, ErrorType, message parts...): throws ErrorType with the parts joined.
#define DLION_CHECK(cond, ErrorType, ...)                      \
  do {                                                         \
    if (!(cond)) throw ErrorType(::dlion::detail::concat(__VA_ARGS__)); \
  } while (0)
